// CUDA variant of the fused preprocessing kernel, with the contract of the CPU kernel
// (kernels/README.md): uint8 HxWx3 RGB images in device memory, of any sizes, to one NCHW float32
// or float16 batch in device memory, bit-exact with the numpy/OpenCV reference.
//
// Exposed as a small C ABI (no Python headers needed) so that any framework can call it with raw
// device pointers: kernels/cuda.py loads it with ctypes and passes CuPy / PyTorch pointers, and
// the output buffer can be handed on (DLPack, Paddle Inference's share_external_data) without a
// copy. One thread computes the three channels of one output pixel.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>

#include "geometry.h"

namespace {

// Images per launch: the per-image records travel as a kernel parameter (2 KiB), which avoids a
// device allocation and a host-to-device copy per call.
constexpr int kChunk = 32;

struct ImageRecord {
  const uint8_t* data;
  int64_t h;
  int64_t w;
  int64_t row_stride;  // bytes between rows (>= 3 * w); pixels and channels are packed
  int64_t top;
  int64_t left;
  double scale_y;
  double scale_x;
};

struct Batch {
  ImageRecord images[kChunk];
};

struct NormParams {
  float mean[3];
  float stdev[3];
  float scale;
  int crop;
};

template <typename OutT>
__device__ __forceinline__ void store(OutT* dst, float v);

template <>
__device__ __forceinline__ void store<float>(float* dst, float v) {
  *dst = v;
}

template <>
__device__ __forceinline__ void store<__half>(__half* dst, float v) {
  *dst = __float2half_rn(v);  // round to nearest even, as numpy's float32 -> float16 cast
}

template <typename OutT>
__global__ void preprocess_kernel(Batch batch, NormParams p, OutT* __restrict__ out) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  const int i = blockIdx.y * blockDim.y + threadIdx.y;
  const int crop = p.crop;
  if (i >= crop || j >= crop) return;
  const ImageRecord& img = batch.images[blockIdx.z];
  const tlb::Tap tx = tlb::linear_tap(img.left + j, img.scale_x, img.w, /*clamp_frac=*/true);
  const tlb::Tap ty = tlb::linear_tap(img.top + i, img.scale_y, img.h, /*clamp_frac=*/false);
  const uint8_t* r0 = img.data + ty.i0 * img.row_stride;
  const uint8_t* r1 = img.data + ty.i1 * img.row_stride;
  const int64_t c0 = tx.i0 * 3;
  const int64_t c1 = tx.i1 * 3;
  const size_t plane = static_cast<size_t>(crop) * crop;
  OutT* dst = out + static_cast<size_t>(blockIdx.z) * 3 * plane + static_cast<size_t>(i) * crop + j;
#pragma unroll
  for (int c = 0; c < 3; ++c) {
    const int h0 = tlb::horizontal(r0[c0 + c], r0[c1 + c], tx.w0, tx.w1);
    const int h1 = tlb::horizontal(r1[c0 + c], r1[c1 + c], tx.w0, tx.w1);
    const int v = tlb::vertical(h0, h1, ty.w0, ty.w1);
    store(dst + c * plane, tlb::normalize(v, p.scale, p.mean[c], p.stdev[c]));
  }
}

thread_local char g_error[512] = "";

int fail(int code, const char* message) {
  std::snprintf(g_error, sizeof g_error, "%s", message);
  return code;
}

}  // namespace

extern "C" {

// Message of the last failed call on this thread ("" after a successful one).
const char* tlb_cuda_last_error(void) { return g_error; }

// Version of this C ABI; kernels/cuda.py refuses a library with another one.
int tlb_cuda_abi_version(void) { return 1; }

// Preprocess `n` device images into `out` (device, C-contiguous n x 3 x crop x crop).
// image_ptrs/heights/widths/row_strides are host arrays of n entries; out_dtype is 0 for
// float32 and 1 for float16; stream is a cudaStream_t (0: the legacy default stream).
// The launch is asynchronous on `stream`. Returns 0, or a nonzero code with tlb_cuda_last_error():
// 1 invalid argument, 2 CUDA launch error.
int tlb_cuda_preprocess(const uint64_t* image_ptrs, const int64_t* heights, const int64_t* widths,
                        const int64_t* row_strides, int n, int resize_short, int crop,
                        const float* mean, const float* stdev, float scale, int out_dtype,
                        void* out, void* stream) {
  g_error[0] = '\0';
  if (n < 0 || crop < 1 || resize_short < crop) {
    return fail(1, "need n >= 0 and 1 <= crop_size <= resize_short");
  }
  if (out_dtype != 0 && out_dtype != 1) return fail(1, "out_dtype must be 0 (float32) or 1 (float16)");
  if (n > 0 && (out == nullptr || image_ptrs == nullptr)) return fail(1, "null pointer argument");
  NormParams p{};
  for (int c = 0; c < 3; ++c) {
    p.mean[c] = mean[c];
    p.stdev[c] = stdev[c];
  }
  p.scale = scale;
  p.crop = crop;
  const dim3 block(32, 8);
  const size_t per_image = static_cast<size_t>(3) * crop * crop;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  for (int first = 0; first < n; first += kChunk) {
    const int count = n - first < kChunk ? n - first : kChunk;
    Batch batch;
    std::memset(&batch, 0, sizeof batch);
    for (int k = 0; k < count; ++k) {
      const int idx = first + k;
      ImageRecord& r = batch.images[k];
      r.data = reinterpret_cast<const uint8_t*>(image_ptrs[idx]);
      r.h = heights[idx];
      r.w = widths[idx];
      r.row_stride = row_strides[idx];
      if (r.data == nullptr || r.h < 1 || r.w < 1 || r.row_stride < 3 * r.w) {
        char msg[160];
        std::snprintf(msg, sizeof msg, "image %d: bad pointer or shape (h=%lld w=%lld row_stride=%lld)",
                      idx, static_cast<long long>(r.h), static_cast<long long>(r.w),
                      static_cast<long long>(r.row_stride));
        return fail(1, msg);
      }
      tlb::Geometry g;
      if (!tlb::compute_geometry(r.h, r.w, resize_short, crop, &g)) {
        return fail(1, "crop_size does not fit the resized image");
      }
      r.top = g.top;
      r.left = g.left;
      r.scale_y = g.scale_y;
      r.scale_x = g.scale_x;
    }
    const dim3 grid((crop + block.x - 1) / block.x, (crop + block.y - 1) / block.y, count);
    if (out_dtype == 0) {
      preprocess_kernel<float><<<grid, block, 0, s>>>(batch, p, static_cast<float*>(out) + first * per_image);
    } else {
      preprocess_kernel<__half><<<grid, block, 0, s>>>(batch, p, static_cast<__half*>(out) + first * per_image);
    }
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return fail(2, cudaGetErrorString(err));
  }
  return 0;
}

}  // extern "C"
