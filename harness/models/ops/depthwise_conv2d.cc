// Depthwise 2-D convolution for Paddle on CPU: forward and both gradients.
//
// Contract (NCHW, float32, one filter per channel, no bias):
//   out[n, c, oy, ox] = sum_{ky, kx} w[c, 0, ky, kx] * x[n, c, oy*s - pt + ky, ox*s - pl + kx]
// with s = strides[0] (= strides[1]), paddings = {top, bottom, left, right}, and
// samples outside x counting as zero. Out has H_out = (H + top + bottom - K) / s + 1.
//
// Paddle's CPU kernel runs a depthwise convolution as one small im2col + GEMM per
// channel, which dominates an EfficientNet/MobileNet training step on CPU. Here each
// (n, c) plane is an independent direct loop: the innermost loop walks a contiguous
// output row, so the compiler vectorises it, and planes are spread over OpenMP threads.

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
  const float* wp = wc.data<float>();
  float* op = out.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t plane = 0; plane < g.n * g.c; ++plane) {
    const int64_t ch = plane % g.c;
    ForwardPlane(xp + plane * g.h * g.w, wp + ch * g.k * g.k, op + plane * g.ho * g.wo, g);
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
  const float* wp = wc.data<float>();
  const float* dp = dc.data<float>();
  float* dxp = dx.data<float>();
  float* dwp = dw.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t plane = 0; plane < g.n * g.c; ++plane) {
    const int64_t ch = plane % g.c;
    InputGradPlane(dp + plane * g.ho * g.wo, wp + ch * g.k * g.k, dxp + plane * g.h * g.w, g);
  }
  // One thread per channel owns its filter gradient, so no two threads add to the same value.
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
