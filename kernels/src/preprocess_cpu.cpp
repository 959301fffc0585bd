// kernels._C: the fused CPU preprocessing kernel.
//
// For every output pixel of every image: bilinear sample of the center crop of the virtual
// resize-short-side image (cv2.resize INTER_LINEAR arithmetic, see geometry.h), normalize, and
// store planar (NCHW) float32 or float16 into a caller-provided buffer. The resized image is
// never materialised: each output row needs two horizontally interpolated source rows, which are
// computed once and cached while consecutive output rows share them. Images are handed out to
// worker threads one at a time (sizes differ, so dynamic scheduling), with the GIL released.
//
// The Python wrapper (kernels/fused.py) validates arguments and fixes dtype/contiguity; this
// module checks again only what would make it read or write out of bounds.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "geometry.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define TLB_HAVE_AVX2_PATH 1
#endif

namespace nb = nanobind;

namespace {

// x86-64 builds carry an AVX2 clone of the hot loops, picked at load time; the generic clone is
// what every other target compiles. Results are identical: no FMA contraction (-ffp-contract=off)
// and only IEEE single operations.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define TLB_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TLB_CLONES
#endif

// float -> IEEE half, round to nearest even, with subnormals, overflow to inf and NaN kept.
inline uint16_t float_to_half(float value) {
  uint32_t f;
  std::memcpy(&f, &value, sizeof f);
  const uint32_t sign = (f >> 16) & 0x8000u;
  f &= 0x7fffffffu;
  if (f >= 0x47800000u) {  // >= 65536 (also inf and NaN)
    return static_cast<uint16_t>(sign | (f > 0x7f800000u ? 0x7e00u : 0x7c00u));
  }
  if (f < 0x38800000u) {  // below the smallest normal half: the FPU does the rounding
    const uint32_t magic_bits = (127u - 15u + 23u - 10u + 1u) << 23;
    float magic, x;
    std::memcpy(&magic, &magic_bits, sizeof magic);
    std::memcpy(&x, &f, sizeof x);
    x += magic;
    uint32_t r;
    std::memcpy(&r, &x, sizeof r);
    return static_cast<uint16_t>(sign | (r - magic_bits));
  }
  const uint32_t mant_odd = (f >> 13) & 1u;
  f += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + mant_odd;
  // 65520 <= x < 65536 rounds up into the exponent: that is inf, as it should be.
  return static_cast<uint16_t>(sign | (f >> 13));
}

struct Params {
  int resize_short;
  int crop;
  float mean[3];
  float stdev[3];
  float scale;
  bool simd;
};

struct Image {
  const uint8_t* data;
  int64_t h;
  int64_t w;
};

// Per-thread scratch: column taps of the current image and two cached horizontal rows.
struct Scratch {
  std::vector<int64_t> x0, x1;  // byte offsets of the two taps of each crop column
  std::vector<int32_t> a0, a1;
  // AVX2 path: weights of each group of 4 columns, in the lane order horizontal_row_avx2 loads.
  std::vector<int16_t> wgroups;
  int vec_columns = 0;  // leading columns (a multiple of 4) safe for 16-byte loads
  std::vector<int16_t> rows[2];  // 3 planes of `crop` values each
  int64_t cached[2] = {-1, -1};
};

// `n` columns starting at dst; the three planes are `plane` values apart.
TLB_CLONES void horizontal_row(const uint8_t* __restrict row, const int64_t* __restrict x0,
                               const int64_t* __restrict x1, const int32_t* __restrict a0,
                               const int32_t* __restrict a1, int n, int plane,
                               int16_t* __restrict dst) {
  int16_t* __restrict r = dst;
  int16_t* __restrict g = dst + plane;
  int16_t* __restrict b = dst + 2 * plane;
  for (int j = 0; j < n; ++j) {
    const uint8_t* p0 = row + x0[j];
    const uint8_t* p1 = row + x1[j];
    const int w0 = a0[j], w1 = a1[j];
    r[j] = static_cast<int16_t>(tlb::horizontal(p0[0], p1[0], w0, w1));
    g[j] = static_cast<int16_t>(tlb::horizontal(p0[1], p1[1], w0, w1));
    b[j] = static_cast<int16_t>(tlb::horizontal(p0[2], p1[2], w0, w1));
  }
}

TLB_CLONES void vertical_row_f32(const int16_t* __restrict h0, const int16_t* __restrict h1, int w0,
                                 int w1, int n, float scale, float mean, float stdev,
                                 float* __restrict dst) {
  const int16_t b0 = static_cast<int16_t>(w0), b1 = static_cast<int16_t>(w1);
  for (int j = 0; j < n; ++j) {
    dst[j] = tlb::normalize(tlb::vertical(h0[j], h1[j], b0, b1), scale, mean, stdev);
  }
}

TLB_CLONES void vertical_row_f16(const int16_t* __restrict h0, const int16_t* __restrict h1, int w0,
                                 int w1, int n, float scale, float mean, float stdev,
                                 uint16_t* __restrict dst) {
  const int16_t b0 = static_cast<int16_t>(w0), b1 = static_cast<int16_t>(w1);
  for (int j = 0; j < n; ++j) {
    dst[j] = float_to_half(tlb::normalize(tlb::vertical(h0[j], h1[j], b0, b1), scale, mean, stdev));
  }
}

#if TLB_HAVE_AVX2_PATH
// Four columns per step: each 128-bit lane holds the 16 source bytes starting at one column's
// left tap, shuffled to (left, right) 16-bit pairs per channel, so pmaddwd gives the exact
// horizontal sums [R, G, B, 0] of that column. Lanes are ordered (0, 2 | 1, 3) so that a pack
// and one cross-lane permute leave R0..R3 G0..G3 B0..B3 for the planar stores.
__attribute__((target("avx2"))) void horizontal_row_avx2(const uint8_t* __restrict row,
                                                         const int64_t* __restrict x0,
                                                         const int16_t* __restrict wgroups,
                                                         int columns, int crop,
                                                         int16_t* __restrict dst) {
  const __m256i pairs = _mm256_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1,
                                         0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1);
  const __m256i planar = _mm256_setr_epi8(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15,
                                          0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15);
  const __m256i lanes = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int16_t* r = dst;
  int16_t* g = dst + crop;
  int16_t* b = dst + 2 * crop;
  for (int j = 0; j < columns; j += 4) {
    const __m256i px02 = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + x0[j]))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + x0[j + 2])), 1);
    const __m256i px13 = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + x0[j + 1]))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + x0[j + 3])), 1);
    const __m256i w02 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wgroups + 8 * j));
    const __m256i w13 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wgroups + 8 * j + 16));
    const __m256i s02 = _mm256_srai_epi32(_mm256_madd_epi16(_mm256_shuffle_epi8(px02, pairs), w02), 4);
    const __m256i s13 = _mm256_srai_epi32(_mm256_madd_epi16(_mm256_shuffle_epi8(px13, pairs), w13), 4);
    // [R0 G0 B0 0 R1 G1 B1 0 | R2 G2 B2 0 R3 G3 B3 0] -> [R0..R3 G0..G3 | B0..B3 0 0 0 0]
    const __m256i packed = _mm256_packs_epi32(s02, s13);
    const __m256i out = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(packed, planar), lanes);
    const __m128i lo = _mm256_castsi256_si128(out);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(r + j), lo);
    _mm_storeh_pd(reinterpret_cast<double*>(g + j), _mm_castsi128_pd(lo));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(b + j), _mm256_extracti128_si256(out, 1));
  }
}

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#endif

const int16_t* cached_row(const Image& img, int64_t y, const Params& p, Scratch& s, int64_t keep) {
  for (int k = 0; k < 2; ++k) {
    if (s.cached[k] == y) return s.rows[k].data();
  }
  // Evict the slot that does not hold the other row this output row needs.
  const int slot = s.cached[0] == keep ? 1 : 0;
  const uint8_t* row = img.data + y * img.w * 3;
  int16_t* dst = s.rows[slot].data();
  int done = 0;
#if TLB_HAVE_AVX2_PATH
  if (s.vec_columns > 0) {
    horizontal_row_avx2(row, s.x0.data(), s.wgroups.data(), s.vec_columns, p.crop, dst);
    done = s.vec_columns;
  }
#endif
  if (done < p.crop) {
    horizontal_row(row, s.x0.data() + done, s.x1.data() + done, s.a0.data() + done,
                   s.a1.data() + done, p.crop - done, p.crop, dst + done);
  }
  s.cached[slot] = y;
  return s.rows[slot].data();
}

inline void prefetch_span(const Image& img, int64_t y, int64_t begin, int64_t end) {
#if defined(__GNUC__)
  const uint8_t* row = img.data + y * img.w * 3;
  for (int64_t o = begin; o < end; o += 64) __builtin_prefetch(row + o, 0, 3);
#else
  (void)img, (void)y, (void)begin, (void)end;
#endif
}

template <typename OutT>
void process_image(const Image& img, const Params& p, Scratch& s, OutT* out) {
  tlb::Geometry g;
  tlb::compute_geometry(img.h, img.w, p.resize_short, p.crop, &g);  // validated by the caller
  const int crop = p.crop;
  s.x0.resize(crop);
  s.x1.resize(crop);
  s.a0.resize(crop);
  s.a1.resize(crop);
  for (int k = 0; k < 2; ++k) {
    s.rows[k].resize(static_cast<size_t>(3) * crop);
    s.cached[k] = -1;
  }
  for (int j = 0; j < crop; ++j) {
    const tlb::Tap t = tlb::linear_tap(g.left + j, g.scale_x, img.w, /*clamp_frac=*/true);
    s.x0[j] = t.i0 * 3;
    s.x1[j] = t.i1 * 3;
    s.a0[j] = t.w0;
    s.a1[j] = t.w1;
  }
  s.vec_columns = 0;
#if TLB_HAVE_AVX2_PATH
  if (p.simd && cpu_has_avx2()) {
    // A column can take the vector path when its 16-byte load stays inside the image and its
    // right tap is the next pixel (or has weight 0); such columns form a prefix.
    const int64_t row_bytes = img.w * 3;
    int ok = 0;
    while (ok < crop && s.x0[ok] + 16 <= row_bytes && (s.x1[ok] == s.x0[ok] + 3 || s.a1[ok] == 0)) ++ok;
    s.vec_columns = ok & ~3;
    s.wgroups.assign(static_cast<size_t>(s.vec_columns) * 8, 0);
    for (int j = 0; j < s.vec_columns; ++j) {
      // Group of 4 columns: lane order 0, 2, 1, 3 (see horizontal_row_avx2).
      static const int kSlot[4] = {0, 2, 1, 3};
      int16_t* w = s.wgroups.data() + 8 * ((j & ~3) + kSlot[j & 3]);
      for (int c = 0; c < 3; ++c) {
        w[2 * c] = static_cast<int16_t>(s.a0[j]);
        w[2 * c + 1] = static_cast<int16_t>(s.a1[j]);
      }
    }
  }
#endif
  const size_t plane = static_cast<size_t>(crop) * crop;
  // Bytes of a source row that the crop columns touch; prefetched one output row ahead because
  // downscaled images need two fresh, non-adjacent source rows per output row and the hardware
  // prefetcher only ramps up after several misses in each.
  const int64_t span_begin = s.x0[0];
  const int64_t span_end = s.x1[crop - 1] + 3;
  for (int i = 0; i < crop; ++i) {
    const tlb::Tap t = tlb::linear_tap(g.top + i, g.scale_y, img.h, /*clamp_frac=*/false);
    if (i + 1 < crop) {
      const tlb::Tap next = tlb::linear_tap(g.top + i + 1, g.scale_y, img.h, /*clamp_frac=*/false);
      // Only rows that the cache will not already hold after this output row.
      if (next.i0 != t.i0 && next.i0 != t.i1) prefetch_span(img, next.i0, span_begin, span_end);
      if (next.i1 != next.i0 && next.i1 != t.i0 && next.i1 != t.i1) {
        prefetch_span(img, next.i1, span_begin, span_end);
      }
    }
    const int16_t* h0 = cached_row(img, t.i0, p, s, /*keep=*/t.i1);
    const int16_t* h1 = cached_row(img, t.i1, p, s, /*keep=*/t.i0);
    for (int c = 0; c < 3; ++c) {
      OutT* dst = out + c * plane + static_cast<size_t>(i) * crop;
      if constexpr (std::is_same_v<OutT, float>) {
        vertical_row_f32(h0 + c * crop, h1 + c * crop, t.w0, t.w1, crop, p.scale, p.mean[c],
                         p.stdev[c], dst);
      } else {
        vertical_row_f16(h0 + c * crop, h1 + c * crop, t.w0, t.w1, crop, p.scale, p.mean[c],
                         p.stdev[c], dst);
      }
    }
  }
}

template <typename OutT>
void run_batch(const std::vector<Image>& images, const Params& p, OutT* out, int threads) {
  const size_t per_image = static_cast<size_t>(3) * p.crop * p.crop;
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&]() {
    try {
      Scratch scratch;
      for (size_t i = next++; i < images.size(); i = next++) {
        process_image(images[i], p, scratch, out + i * per_image);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  };
  const int n = std::max(1, std::min<int>(threads, static_cast<int>(images.size())));
  if (n == 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    pool.reserve(n - 1);
    for (int t = 0; t < n - 1; ++t) pool.emplace_back(worker);
    worker();
    for (auto& th : pool) th.join();
  }
  if (error) std::rethrow_exception(error);
}

using ImageArray = nb::ndarray<const uint8_t, nb::ndim<3>, nb::c_contig, nb::device::cpu>;
using OutArray = nb::ndarray<nb::ndim<4>, nb::c_contig, nb::device::cpu>;

void preprocess(const std::vector<ImageArray>& arrays, OutArray out, int resize_short, int crop,
                std::vector<float> mean, std::vector<float> stdev, float scale, int threads,
                bool simd) {
  if (crop < 1 || resize_short < crop) {
    throw std::invalid_argument("need 1 <= crop_size <= resize_short, got crop_size=" +
                                std::to_string(crop) + " resize_short=" + std::to_string(resize_short));
  }
  if (mean.size() != 3 || stdev.size() != 3) {
    throw std::invalid_argument("mean and std need 3 values each");
  }
  const size_t n = arrays.size();
  if (out.shape(0) != n || out.shape(1) != 3 || out.shape(2) != static_cast<size_t>(crop) ||
      out.shape(3) != static_cast<size_t>(crop)) {
    throw std::invalid_argument("out must have shape (" + std::to_string(n) + ", 3, " +
                                std::to_string(crop) + ", " + std::to_string(crop) + ")");
  }
  const bool is_f32 = out.dtype() == nb::dtype<float>();
  const bool is_f16 = out.dtype().code == static_cast<uint8_t>(nb::dlpack::dtype_code::Float) &&
                      out.dtype().bits == 16 && out.dtype().lanes == 1;
  if (!is_f32 && !is_f16) throw std::invalid_argument("out must be float32 or float16");

  Params p{resize_short, crop, {mean[0], mean[1], mean[2]}, {stdev[0], stdev[1], stdev[2]}, scale,
           simd};
  std::vector<Image> images;
  images.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const ImageArray& a = arrays[i];
    if (a.shape(2) != 3 || a.shape(0) == 0 || a.shape(1) == 0) {
      throw std::invalid_argument("images[" + std::to_string(i) + "] must be a non-empty HxWx3 array");
    }
    images.push_back({a.data(), static_cast<int64_t>(a.shape(0)), static_cast<int64_t>(a.shape(1))});
  }
  void* dst = out.data();
  nb::gil_scoped_release release;
  if (is_f32) {
    run_batch(images, p, static_cast<float*>(dst), threads);
  } else {
    run_batch(images, p, static_cast<uint16_t*>(dst), threads);
  }
}

nb::ndarray<nb::numpy, uint16_t, nb::ndim<1>> float_to_half_bits(
    nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu> values) {
  const size_t n = values.shape(0);
  auto* bits = new uint16_t[n];
  for (size_t i = 0; i < n; ++i) bits[i] = float_to_half(values.data()[i]);
  nb::capsule owner(bits, [](void* ptr) noexcept { delete[] static_cast<uint16_t*>(ptr); });
  return nb::ndarray<nb::numpy, uint16_t, nb::ndim<1>>(bits, {n}, owner);
}

}  // namespace

NB_MODULE(_C, m) {
  m.doc() = "Fused resize-short / center-crop / normalize / HWC->CHW kernel (CPU). "
            "Call it through kernels.preprocess, which validates arguments.";
  m.def("preprocess", &preprocess, nb::arg("images"), nb::arg("out"), nb::arg("resize_short"),
        nb::arg("crop_size"), nb::arg("mean"), nb::arg("std"), nb::arg("scale"), nb::arg("threads"),
        nb::arg("simd") = true,
        "Write the preprocessed batch into `out` (N x 3 x crop x crop, float32 or float16). "
        "simd=False forces the portable loops (same results; for tests).");
  m.def("float_to_half_bits", &float_to_half_bits, nb::arg("values"),
        "IEEE half bit patterns of float32 values, as the kernel rounds them (for tests).");
}
