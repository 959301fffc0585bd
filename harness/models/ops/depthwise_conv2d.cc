// Depthwise 2-D convolution for Paddle on CPU: forward and both gradients.
//
// Contract (NCHW, float32, one filter per channel, no bias):
//   out[n, c, oy, ox] = sum_{ky, kx} w[c, 0, ky, kx] * x[n, c, oy*s - pt + ky, ox*s - pl + kx]
// with s = strides[0] (= strides[1]), paddings = {top, bottom, left, right}, and
// samples outside x counting as zero. Out has H_out = (H + top + bottom - K) / s + 1.
//
// Paddle's CPU kernel runs a depthwise convolution as one small im2col + GEMM per
// channel, which dominates an EfficientNet/MobileNet training step on CPU. Two direct
// layouts are used here, chosen per call by the output's size against the channel count:
// - large planes (early layers): each (n, c) plane is an independent loop whose innermost
//   loop walks a contiguous output row; planes are spread over OpenMP threads;
// - small planes (the 3x3 to 12x12 maps of the layers that train at 96-128 px, where a row
//   is too short to vectorise): each sample is copied to channels-last scratch so the
//   innermost loop runs over channels; samples are spread over threads.
// Both sum a tap's products in (ky, kx) order, so their forwards agree bit for bit; the
// filter gradient is summed over samples in sample order, whatever the thread count.

#include <algorithm>
#include <cstring>
#include <vector>

#include "paddle/extension.h"

namespace {

struct Geometry {
  int64_t n, c, h, w, k, s, pt, pl, ho, wo;
};

Geometry MakeGeometry(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& w_shape,
                      const std::vector<int>& strides, const std::vector<int>& paddings) {
  PD_CHECK(x_shape.size() == 4, "tl_depthwise_conv2d: x must be NCHW, got rank ", x_shape.size());
  PD_CHECK(w_shape.size() == 4 && w_shape[1] == 1 && w_shape[2] == w_shape[3],
           "tl_depthwise_conv2d: weight must be [C, 1, K, K]");
  PD_CHECK(w_shape[0] == x_shape[1], "tl_depthwise_conv2d: weight has ", w_shape[0], " filters for ", x_shape[1],
           " channels");
  PD_CHECK(strides.size() == 2 && strides[0] == strides[1] && strides[0] >= 1,
           "tl_depthwise_conv2d: strides must be two equal positive values");
  PD_CHECK(paddings.size() == 4, "tl_depthwise_conv2d: paddings must be {top, bottom, left, right}");
  for (int p : paddings) PD_CHECK(p >= 0, "tl_depthwise_conv2d: paddings must be >= 0");
  Geometry g;
  g.n = x_shape[0];
  g.c = x_shape[1];
  g.h = x_shape[2];
  g.w = x_shape[3];
  g.k = w_shape[2];
  g.s = strides[0];
  g.pt = paddings[0];
  g.pl = paddings[2];
  g.ho = (g.h + paddings[0] + paddings[1] - g.k) / g.s + 1;
  g.wo = (g.w + paddings[2] + paddings[3] - g.k) / g.s + 1;
  PD_CHECK(g.ho > 0 && g.wo > 0, "tl_depthwise_conv2d: the kernel is larger than the padded input");
  return g;
}

// Output columns [lo, hi) whose input column ox*s - pl + kx lies inside [0, w).
inline void ValidRange(int64_t kx, const Geometry& g, int64_t* lo, int64_t* hi) {
  const int64_t off = kx - g.pl;
  *lo = off >= 0 ? 0 : (-off + g.s - 1) / g.s;
  const int64_t last = g.w - 1 - off;  // largest ox*s allowed
  *hi = last < 0 ? 0 : std::min<int64_t>(g.wo, last / g.s + 1);
  if (*hi < *lo) *hi = *lo;
}

void ForwardPlane(const float* x, const float* wk, float* out, const Geometry& g) {
  std::fill(out, out + g.ho * g.wo, 0.0f);
  for (int64_t oy = 0; oy < g.ho; ++oy) {
    float* orow = out + oy * g.wo;
    for (int64_t ky = 0; ky < g.k; ++ky) {
      const int64_t iy = oy * g.s - g.pt + ky;
      if (iy < 0 || iy >= g.h) continue;
      const float* irow = x + iy * g.w;
      for (int64_t kx = 0; kx < g.k; ++kx) {
        const float wv = wk[ky * g.k + kx];
        int64_t lo, hi;
        ValidRange(kx, g, &lo, &hi);
        const float* src = irow + kx - g.pl;
        if (g.s == 1) {
#pragma omp simd
          for (int64_t ox = lo; ox < hi; ++ox) orow[ox] += wv * src[ox];
        } else {
#pragma omp simd
          for (int64_t ox = lo; ox < hi; ++ox) orow[ox] += wv * src[ox * g.s];
        }
      }
    }
  }
}

void InputGradPlane(const float* dout, const float* wk, float* dx, const Geometry& g) {
  std::fill(dx, dx + g.h * g.w, 0.0f);
  for (int64_t oy = 0; oy < g.ho; ++oy) {
    const float* drow = dout + oy * g.wo;
    for (int64_t ky = 0; ky < g.k; ++ky) {
      const int64_t iy = oy * g.s - g.pt + ky;
      if (iy < 0 || iy >= g.h) continue;
      float* xrow = dx + iy * g.w;
      for (int64_t kx = 0; kx < g.k; ++kx) {
        const float wv = wk[ky * g.k + kx];
        int64_t lo, hi;
        ValidRange(kx, g, &lo, &hi);
        float* dst = xrow + kx - g.pl;
        if (g.s == 1) {
#pragma omp simd
          for (int64_t ox = lo; ox < hi; ++ox) dst[ox] += wv * drow[ox];
        } else {
#pragma omp simd
          for (int64_t ox = lo; ox < hi; ++ox) dst[ox * g.s] += wv * drow[ox];
        }
      }
    }
  }
}

// Adds this plane's contribution to the K*K filter gradient of its channel.
void WeightGradPlane(const float* x, const float* dout, float* dw, const Geometry& g) {
  for (int64_t ky = 0; ky < g.k; ++ky) {
    for (int64_t kx = 0; kx < g.k; ++kx) {
      int64_t lo, hi;
      ValidRange(kx, g, &lo, &hi);
      float acc = 0.0f;
      for (int64_t oy = 0; oy < g.ho; ++oy) {
        const int64_t iy = oy * g.s - g.pt + ky;
        if (iy < 0 || iy >= g.h) continue;
        const float* src = x + iy * g.w + kx - g.pl;
        const float* drow = dout + oy * g.wo;
        // The simd reduction lets the compiler reorder this float sum into vector lanes.
        if (g.s == 1) {
#pragma omp simd reduction(+ : acc)
          for (int64_t ox = lo; ox < hi; ++ox) acc += drow[ox] * src[ox];
        } else {
#pragma omp simd reduction(+ : acc)
          for (int64_t ox = lo; ox < hi; ++ox) acc += drow[ox] * src[ox * g.s];
        }
      }
      dw[ky * g.k + kx] += acc;
    }
  }
}

// Channels-last scratch layout: every (sample, row, column) holds its C channel values
// contiguously, so the inner loops run over channels (hundreds in the layers that train)
// instead of over output columns (3 to 12 of them at 96 px), and vectorise fully.

// dst = src transposed: src is [rows][cols], dst is [cols][rows], copied in cache-sized tiles.
// One sample goes CHW -> HWC with (rows, cols) = (C, H*W) and back with (H*W, C).
void Transpose(const float* src, float* dst, int64_t rows, int64_t cols) {
  constexpr int64_t kTile = 32;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    const int64_t r1 = std::min(rows, r0 + kTile);
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t c1 = std::min(cols, c0 + kTile);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t col = c0; col < c1; ++col) dst[col * rows + r] = src[r * cols + col];
    }
  }
}

// Filter taps as [K][K][C] so that one tap's weights for all channels are contiguous.
std::vector<float> TapsChannelLast(const float* w, const Geometry& g) {
  std::vector<float> taps(g.k * g.k * g.c);
  Transpose(w, taps.data(), g.c, g.k * g.k);
  return taps;
}

// One sample, channels last: out[oy, ox, :] = sum over valid taps of w[ky, kx, :] * x[iy, ix, :],
// the taps taken in (ky, kx) order.
void ForwardSample(const float* xt, const float* taps, float* ot, const Geometry& g) {
  const int64_t c = g.c;
  std::fill(ot, ot + g.ho * g.wo * c, 0.0f);
  for (int64_t oy = 0; oy < g.ho; ++oy) {
    for (int64_t ox = 0; ox < g.wo; ++ox) {
      float* o = ot + (oy * g.wo + ox) * c;
      for (int64_t ky = 0; ky < g.k; ++ky) {
        const int64_t iy = oy * g.s - g.pt + ky;
        if (iy < 0 || iy >= g.h) continue;
        for (int64_t kx = 0; kx < g.k; ++kx) {
          const int64_t ix = ox * g.s - g.pl + kx;
          if (ix < 0 || ix >= g.w) continue;
          const float* xi = xt + (iy * g.w + ix) * c;
          const float* wk = taps + (ky * g.k + kx) * c;
#pragma omp simd
          for (int64_t ch = 0; ch < c; ++ch) o[ch] += wk[ch] * xi[ch];
        }
      }
    }
  }
}

// One sample, channels last: dx[iy, ix, :] += w[ky, kx, :] * dout[oy, ox, :] and this
// sample's filter gradient dw[ky, kx, :] += dout[oy, ox, :] * x[iy, ix, :].
void BackwardSample(const float* xt, const float* dt, const float* taps, float* dxt, float* dwt, const Geometry& g) {
  const int64_t c = g.c;
  std::fill(dxt, dxt + g.h * g.w * c, 0.0f);
  std::fill(dwt, dwt + g.k * g.k * c, 0.0f);
  for (int64_t oy = 0; oy < g.ho; ++oy) {
    for (int64_t ox = 0; ox < g.wo; ++ox) {
      const float* d = dt + (oy * g.wo + ox) * c;
      for (int64_t ky = 0; ky < g.k; ++ky) {
        const int64_t iy = oy * g.s - g.pt + ky;
        if (iy < 0 || iy >= g.h) continue;
        for (int64_t kx = 0; kx < g.k; ++kx) {
          const int64_t ix = ox * g.s - g.pl + kx;
          if (ix < 0 || ix >= g.w) continue;
          const int64_t tap = (ky * g.k + kx) * c;
          const int64_t at = (iy * g.w + ix) * c;
          const float* wk = taps + tap;
          const float* xi = xt + at;
          float* dxi = dxt + at;
          float* dwk = dwt + tap;
#pragma omp simd
          for (int64_t ch = 0; ch < c; ++ch) {
            dxi[ch] += wk[ch] * d[ch];
            dwk[ch] += d[ch] * xi[ch];
          }
        }
      }
    }
  }
}

// Channels-last pays for its two transposes once an output row is too short to vectorise:
// measured single-threaded, 3-14x faster than the plane loops at 3x3-12x12 outputs with
// 240-1152 channels, up to 2x slower at 24x24-48x48 outputs with 32-144 channels.
inline bool UseChannelsLast(const Geometry& g) { return g.ho * g.wo <= 2 * g.c; }

void CheckInputs(const paddle::Tensor& x, const paddle::Tensor& weight) {
  PD_CHECK(x.is_cpu() && weight.is_cpu(), "tl_depthwise_conv2d runs on CPU tensors only");
  PD_CHECK(x.dtype() == paddle::DataType::FLOAT32 && weight.dtype() == paddle::DataType::FLOAT32,
           "tl_depthwise_conv2d supports float32 only");
}

}  // namespace

std::vector<paddle::Tensor> DepthwiseForward(const paddle::Tensor& x, const paddle::Tensor& weight,
                                             const std::vector<int>& strides, const std::vector<int>& paddings) {
  CheckInputs(x, weight);
  const Geometry g = MakeGeometry(x.shape(), weight.shape(), strides, paddings);
  paddle::Tensor xc = x.contiguous();
  paddle::Tensor wc = weight.contiguous();
  auto out = paddle::empty({g.n, g.c, g.ho, g.wo}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  const float* xp = xc.data<float>();
  float* op = out.data<float>();
  if (!UseChannelsLast(g)) {
    const float* wp = wc.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t plane = 0; plane < g.n * g.c; ++plane) {
      const int64_t ch = plane % g.c;
      ForwardPlane(xp + plane * g.h * g.w, wp + ch * g.k * g.k, op + plane * g.ho * g.wo, g);
    }
    return {out};
  }
  const std::vector<float> taps = TapsChannelLast(wc.data<float>(), g);
  const int64_t in_size = g.c * g.h * g.w, out_size = g.c * g.ho * g.wo;
#pragma omp parallel
  {
    std::vector<float> xt(in_size), ot(out_size);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.n; ++n) {
      Transpose(xp + n * in_size, xt.data(), g.c, g.h * g.w);
      ForwardSample(xt.data(), taps.data(), ot.data(), g);
      Transpose(ot.data(), op + n * out_size, g.ho * g.wo, g.c);
    }
  }
  return {out};
}

std::vector<paddle::Tensor> DepthwiseBackward(const paddle::Tensor& x, const paddle::Tensor& weight,
                                              const paddle::Tensor& out_grad, const std::vector<int>& strides,
                                              const std::vector<int>& paddings) {
  CheckInputs(x, weight);
  const Geometry g = MakeGeometry(x.shape(), weight.shape(), strides, paddings);
  PD_CHECK(out_grad.shape() == std::vector<int64_t>({g.n, g.c, g.ho, g.wo}),
           "tl_depthwise_conv2d_grad: output gradient has the wrong shape");
  paddle::Tensor xc = x.contiguous();
  paddle::Tensor wc = weight.contiguous();
  paddle::Tensor dc = out_grad.contiguous();
  auto dx = paddle::empty({g.n, g.c, g.h, g.w}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto dw = paddle::empty({g.c, 1, g.k, g.k}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  const float* xp = xc.data<float>();
  const float* dp = dc.data<float>();
  float* dxp = dx.data<float>();
  float* dwp = dw.data<float>();
  if (!UseChannelsLast(g)) {
    const float* wp = wc.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t plane = 0; plane < g.n * g.c; ++plane) {
      const int64_t ch = plane % g.c;
      InputGradPlane(dp + plane * g.ho * g.wo, wp + ch * g.k * g.k, dxp + plane * g.h * g.w, g);
    }
    // One thread per channel owns its filter gradient, summed over samples in order.
#pragma omp parallel for schedule(static)
    for (int64_t ch = 0; ch < g.c; ++ch) {
      float* dwc = dwp + ch * g.k * g.k;
      std::fill(dwc, dwc + g.k * g.k, 0.0f);
      for (int64_t n = 0; n < g.n; ++n) {
        const int64_t plane = n * g.c + ch;
        WeightGradPlane(xp + plane * g.h * g.w, dp + plane * g.ho * g.wo, dwc, g);
      }
    }
    return {dx, dw};
  }
  const std::vector<float> taps = TapsChannelLast(wc.data<float>(), g);
  const int64_t in_size = g.c * g.h * g.w, out_size = g.c * g.ho * g.wo, taps_size = g.k * g.k * g.c;
  // Each sample's filter gradient is kept apart and the samples are summed in order afterwards,
  // so the result does not depend on the number of threads.
  std::vector<float> per_sample(g.n * taps_size);
#pragma omp parallel
  {
    std::vector<float> xt(in_size), dt(out_size), dxt(in_size);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.n; ++n) {
      Transpose(xp + n * in_size, xt.data(), g.c, g.h * g.w);
      Transpose(dp + n * out_size, dt.data(), g.c, g.ho * g.wo);
      BackwardSample(xt.data(), dt.data(), taps.data(), dxt.data(), per_sample.data() + n * taps_size, g);
      Transpose(dxt.data(), dxp + n * in_size, g.h * g.w, g.c);
    }
#pragma omp for schedule(static)
    for (int64_t i = 0; i < taps_size; ++i) {
      float acc = 0.0f;
      for (int64_t n = 0; n < g.n; ++n) acc += per_sample[n * taps_size + i];
      // per_sample is [K][K][C]; dw is [C][1][K][K].
      const int64_t tap = i / g.c, ch = i % g.c;
      dwp[ch * g.k * g.k + tap] = acc;
    }
  }
  return {dx, dw};
}

std::vector<std::vector<int64_t>> DepthwiseInferShape(const std::vector<int64_t>& x_shape,
                                                      const std::vector<int64_t>& w_shape,
                                                      const std::vector<int>& strides,
                                                      const std::vector<int>& paddings) {
  PD_CHECK(x_shape.size() == 4 && w_shape.size() == 4, "tl_depthwise_conv2d: x and weight must be rank 4");
  PD_CHECK(strides.size() == 2 && paddings.size() == 4, "tl_depthwise_conv2d: bad strides/paddings");
  auto extent = [&](int64_t n, int pad0, int pad1) -> int64_t {
    return n < 0 ? -1 : (n + pad0 + pad1 - w_shape[2]) / strides[0] + 1;
  };
  return {{x_shape[0], x_shape[1], extent(x_shape[2], paddings[0], paddings[1]),
           extent(x_shape[3], paddings[2], paddings[3])}};
}

std::vector<paddle::DataType> DepthwiseInferDtype(const paddle::DataType& x_dtype, const paddle::DataType&) {
  return {x_dtype};
}

PD_BUILD_OP(tl_depthwise_conv2d)
    .Inputs({"X", "W"})
    .Outputs({"Out"})
    .Attrs({"strides: std::vector<int>", "paddings: std::vector<int>"})
    .SetKernelFn(PD_KERNEL(DepthwiseForward))
    .SetInferShapeFn(PD_INFER_SHAPE(DepthwiseInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(DepthwiseInferDtype));

PD_BUILD_GRAD_OP(tl_depthwise_conv2d)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W")})
    .Attrs({"strides: std::vector<int>", "paddings: std::vector<int>"})
    .SetKernelFn(PD_KERNEL(DepthwiseBackward));
