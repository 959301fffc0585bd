// Coordinate mapping and fixed-point arithmetic of the fused preprocessing kernels.
//
// One header shared by the C++ (CPU) and CUDA kernels so that both follow the same contract:
// the resize-short-side geometry of PaddleClas's ResizeImage (Python round-half-even of the
// target size), the center-crop offset of CropImage ((side - crop) // 2), and the arithmetic of
// OpenCV's cv::resize(INTER_LINEAR) on 8-bit images: half-pixel-center mapping computed in
// double then rounded to float, 11-bit fixed-point weights, horizontal taps summed exactly in
// int32, vertical blend with OpenCV's SIMD rounding (>>4, 16-bit mulhi, (t + 2) >> 2). The last
// detail is why the kernels are bit-exact with cv2.resize: the plain "(sum + 2^21) >> 22"
// rounding differs from it by one uint8 level on about 12 % of the pixels.
//
// Every floating-point expression here must be evaluated without fused multiply-add, exactly as
// written: the C++ build uses -ffp-contract=off and the CUDA path the __*_rn intrinsics.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define TLB_HD __host__ __device__ __forceinline__
#else
#define TLB_HD inline
#endif

namespace tlb {

// OpenCV's INTER_RESIZE_COEF_BITS: weights are integers summing to 2^11.
constexpr int kCoefBits = 11;
constexpr float kCoefScale = static_cast<float>(1 << kCoefBits);

TLB_HD double dmul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

TLB_HD double dsub(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}

TLB_HD double round_half_even(double v) {
#if defined(__CUDA_ARCH__)
  return rint(v);
#else
  return std::nearbyint(v);
#endif
}

TLB_HD float floor_f(float v) {
#if defined(__CUDA_ARCH__)
  return floorf(v);
#else
  return std::floor(v);
#endif
}

TLB_HD int round_to_int(float v) {
#if defined(__CUDA_ARCH__)
  return __float2int_rn(v);
#else
  return static_cast<int>(std::nearbyint(v));  // round half to even, like cvRound
#endif
}

// Where the crop lies inside the virtual resized image, and the source/destination scale.
struct Geometry {
  int64_t resized_h;
  int64_t resized_w;
  int64_t top;   // first resized row of the crop
  int64_t left;  // first resized column of the crop
  double scale_y;  // source pixels per resized pixel, as OpenCV computes it: 1 / (dst / src)
  double scale_x;
};

// Fills `g` for an h x w image; returns false when the crop does not fit the resized image.
TLB_HD bool compute_geometry(int64_t h, int64_t w, int resize_short, int crop, Geometry* g) {
  const double percent = static_cast<double>(resize_short) / static_cast<double>(h < w ? h : w);
  // Python's round() on a double: round half to even (nearbyint in the default rounding mode).
  g->resized_w = static_cast<int64_t>(round_half_even(dmul(static_cast<double>(w), percent)));
  g->resized_h = static_cast<int64_t>(round_half_even(dmul(static_cast<double>(h), percent)));
  g->top = (g->resized_h - crop) / 2;
  g->left = (g->resized_w - crop) / 2;
  g->scale_x = 1.0 / (static_cast<double>(g->resized_w) / static_cast<double>(w));
  g->scale_y = 1.0 / (static_cast<double>(g->resized_h) / static_cast<double>(h));
  return g->resized_h >= crop && g->resized_w >= crop;
}

// Two source taps and their fixed-point weights for one destination coordinate.
struct Tap {
  int64_t i0;
  int64_t i1;
  int w0;
  int w1;
};

// OpenCV's mapping: f = float((d + 0.5) * scale - 0.5), i = floor(f), frac = f - i.
// Columns (clamp_frac = true) pin both the index and the fraction at the borders; rows keep the
// fraction and clamp only the indices, which gives the same value because w0 + w1 = 2048.
TLB_HD Tap linear_tap(int64_t d, double scale, int64_t src_len, bool clamp_frac) {
  float f = static_cast<float>(dsub(dmul(static_cast<double>(d) + 0.5, scale), 0.5));
  int64_t i = static_cast<int64_t>(floor_f(f));
  f -= static_cast<float>(i);
  if (clamp_frac) {
    if (i < 0) {
      i = 0;
      f = 0.f;
    }
    if (i >= src_len - 1) {
      i = src_len - 1;
      f = 0.f;
    }
  }
  Tap t;
  t.i0 = i < 0 ? 0 : (i > src_len - 1 ? src_len - 1 : i);
  t.i1 = i + 1 < 0 ? 0 : (i + 1 > src_len - 1 ? src_len - 1 : i + 1);
  t.w0 = round_to_int((1.f - f) * kCoefScale);
  t.w1 = round_to_int(f * kCoefScale);
  return t;
}

// Horizontal pass of one channel: the exact int sum, kept as OpenCV's SIMD path keeps it (>> 4,
// fits int16).
TLB_HD int horizontal(int s0, int s1, int w0, int w1) { return (s0 * w0 + s1 * w1) >> 4; }

// Vertical pass: 16-bit mulhi of each row by its weight, then a rounding shift and saturation.
TLB_HD int vertical(int h0, int h1, int w0, int w1) {
  int t = ((h0 * w0) >> 16) + ((h1 * w1) >> 16);
  t = (t + 2) >> 2;
  return t < 0 ? 0 : (t > 255 ? 255 : t);
}

// (v * scale - mean) / std in float32, the order and rounding of PaddleClas's NormalizeImage.
TLB_HD float normalize(int v, float scale, float mean, float stdev) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(__fsub_rn(__fmul_rn(static_cast<float>(v), scale), mean), stdev);
#else
  return (static_cast<float>(v) * scale - mean) / stdev;
#endif
}

}  // namespace tlb
