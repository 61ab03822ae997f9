// assay::w8a8_linear: y = x @ (w * scales).T with int8 weights (one scale per output row) and the
// activations rounded to int8 in blocks of 32 (one float scale per block, as llama.cpp's Q8_0), multiplied
// as int8 dot products. Built by assay.llm.kernels on the user's machine, for that machine (-march=native).
//
// Why by hand: a decode step at batch 1 reads every weight once, so it is bound by how fast the weights
// stream in. PyTorch's int8 weight kernel (_weight_int8pack_mm) converts each weight to float before its
// multiply-add and streams about 10-13 GB/s on a 2-core EPYC; an int8 dot product does 32 multiply-adds in
// one instruction, and software prefetching keeps the next rows in flight (docs/llm.md has the figures).
//
// The weights come packed (assay.llm.w8a8.pack): rows in groups of four (zero rows pad the last group),
// and within a group the row length cut in chunks of 64 values (the last one 32 where 64 does not divide
// it), the four rows' bytes of a chunk side by side. A group is then read front to back, one stream the
// hardware prefetcher follows, where four rows read side by side are four streams a page apart.
//
// Arithmetic, identical on every path:
//   d[b] = max|x[b*32 .. b*32+31]| / 127,  q[i] = round_half_even(x[i] / d[b])   (q = 0 where d = 0)
//   y[n] = scales[n] * sum_b d[b] * sum_{i in b} q[i] * w[n, i]
// The inner sums are exact in int32; only the sum over blocks is floating point (float32).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/inductor/aoti_torch/utils.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define ASSAY_W8A8_AVX2 1
#endif

namespace {

constexpr int64_t kBlock = 32;      // activation values per scale
constexpr int64_t kChunk = 64;      // values of a row side by side in the packed layout
constexpr int64_t kRows = 4;        // rows per group: each activation block is loaded once for four rows
constexpr int64_t kAhead = 4096;    // bytes prefetched ahead of the read (2,048 to 8,192 measured alike)

#if defined(__AVX2__) && defined(__FMA__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define ASSAY_W8A8_AVX512 1
#endif

// One block of 32 activations to int8 (q) and its scale (d): the arithmetic above, in vector registers where
// the machine has them (a few instructions for the block, where the plain loop divides and calls nearbyint
// once a value). Division and round-half-even are exact IEEE operations, so every path gives the same
// integers.
inline void quantize_block(const float* xb, int8_t* q, float* d) {
#if defined(ASSAY_W8A8_AVX512)
  const __m512 a = _mm512_loadu_ps(xb), b = _mm512_loadu_ps(xb + 16);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
  const float scale = amax / 127.f;
  *d = scale;
  if (!(scale > 0.f)) {
    std::fill(q, q + kBlock, int8_t{0});
    return;
  }
  const __m512 s = _mm512_set1_ps(scale);
  constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const __m512i qa = _mm512_cvt_roundps_epi32(_mm512_div_ps(a, s), kRound);
  const __m512i qb = _mm512_cvt_roundps_epi32(_mm512_div_ps(b, s), kRound);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtsepi32_epi8(qa));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), _mm512_cvtsepi32_epi8(qb));
#elif defined(__AVX2__) && defined(__FMA__)
  __m256 v[4];
  __m256 m = _mm256_setzero_ps();
  const __m256 sign = _mm256_set1_ps(-0.f);
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_loadu_ps(xb + 8 * i);
    m = _mm256_max_ps(_mm256_andnot_ps(sign, v[i]), m);
  }
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  const float scale = _mm_cvtss_f32(h) / 127.f;
  *d = scale;
  if (!(scale > 0.f)) {
    std::fill(q, q + kBlock, int8_t{0});
    return;
  }
  const __m256 s = _mm256_set1_ps(scale);
  __m256i r[4];
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_div_ps(v[i], s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  // packs interleave the 128-bit lanes; the permutation puts the 32 bytes back in order (as llama.cpp's Q8_0)
  const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                      _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
#else
  float amax = 0.f;
  for (int64_t i = 0; i < kBlock; ++i) amax = std::max(amax, std::fabs(xb[i]));
  const float scale = amax / 127.f;
  *d = scale;
  for (int64_t i = 0; i < kBlock; ++i) {
    // x / scale, not x * (1 / scale): the reference in the tests divides, and so must the kernel
    q[i] = scale > 0.f ? static_cast<int8_t>(std::nearbyint(xb[i] / scale)) : 0;
  }
#endif
}

void quantize_row(const float* x, int64_t k, int8_t* q, float* d) {
  for (int64_t b = 0; b < k / kBlock; ++b) quantize_block(x + b * kBlock, q + b * kBlock, d + b);
}

#ifdef ASSAY_W8A8_AVX2
inline __m256i dot_block(__m256i aq, __m256i sw) {
  // aq = |q| (unsigned), sw = w with q's sign: their product is q * w, 4 bytes summed per int32 lane.
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), aq, sw);
#else
  // maddubs cannot saturate here: |q|, |w| <= 127, so a pair sums to at most 32,258 < 32,767
  return _mm256_madd_epi16(_mm256_maddubs_epi16(aq, sw), _mm256_set1_epi16(1));
#endif
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// out[j] = sum_b d[b] * dot(q[b], w[j, b]) for the four rows of one packed group `g` (k values a row),
// for one activation row. `prefetch_end`: bytes of the packed tensor past g's start that may be prefetched.
void group_dots(const int8_t* q, const float* d, int64_t k, const int8_t* g, int64_t prefetch_end, float* out) {
  for (int j = 0; j < kRows; ++j) out[j] = 0.f;
#ifdef ASSAY_W8A8_AVX2
  __m256 acc[kRows];
  for (int j = 0; j < kRows; ++j) acc[j] = _mm256_setzero_ps();
#endif
#ifdef ASSAY_W8A8_AVX512
  __m512 wide[kRows];
  for (int j = 0; j < kRows; ++j) wide[j] = _mm512_setzero_ps();
#endif
  for (int64_t start = 0; start < k; start += kChunk) {
    const int64_t length = std::min(kChunk, k - start);
    const int8_t* chunk = g + kRows * start;  // row j's bytes of this chunk start at chunk + j * length
    for (int64_t line = 0; line < kRows * length; line += 64) {
      if (kRows * start + line + kAhead < prefetch_end) __builtin_prefetch(chunk + line + kAhead);
    }
#ifdef ASSAY_W8A8_AVX512
    if (length == kChunk) {
      // Two blocks at once: dpbusd's lanes 0-7 sum the first 32 bytes, lanes 8-15 the next 32, so each
      // half is scaled by its own block's d. Half the instructions of the 32-byte steps below.
      const __m512i qv = _mm512_loadu_si512(q + start);
      const __m512i aq = _mm512_abs_epi8(qv);
      const __mmask64 negative = _mm512_movepi8_mask(qv);
      const int64_t b = start / kBlock;
      const __m512 db = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(d[b])), _mm256_set1_ps(d[b + 1]), 1);
      for (int j = 0; j < kRows; ++j) {
        const __m512i wv = _mm512_loadu_si512(chunk + j * kChunk);
        const __m512i sw = _mm512_mask_sub_epi8(wv, negative, _mm512_setzero_si512(), wv);
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aq, sw);
        wide[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), db, wide[j]);
      }
      continue;
    }
#endif
    for (int64_t half = 0; half < length; half += kBlock) {
      const int64_t b = (start + half) / kBlock;
#ifdef ASSAY_W8A8_AVX2
      const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + start + half));
      const __m256i aq = _mm256_sign_epi8(qv, qv);
      const __m256 db = _mm256_set1_ps(d[b]);
      for (int j = 0; j < kRows; ++j) {
        const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(chunk + j * length + half));
        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_block(aq, _mm256_sign_epi8(wv, qv))), db, acc[j]);
      }
#else
      for (int j = 0; j < kRows; ++j) {
        const int8_t* wr = chunk + j * length + half;
        int32_t dot = 0;
        for (int64_t i = 0; i < kBlock; ++i) dot += int32_t(q[start + half + i]) * int32_t(wr[i]);
        out[j] += float(dot) * d[b];
      }
#endif
    }
  }
#ifdef ASSAY_W8A8_AVX2
  for (int j = 0; j < kRows; ++j) out[j] += hsum(acc[j]);
#endif
#ifdef ASSAY_W8A8_AVX512
  for (int j = 0; j < kRows; ++j) out[j] += _mm512_reduce_add_ps(wide[j]);
#endif
}

at::Tensor w8a8_linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "w8a8_linear: x must be a float32 matrix");
  TORCH_CHECK(x.size(1) % kBlock == 0, "w8a8_linear: in_features must be a multiple of 32");
  TORCH_CHECK(scales.dim() == 1 && scales.scalar_type() == at::kFloat, "w8a8_linear: scales must be float32");
  const int64_t m = x.size(0), k = x.size(1), n = scales.size(0), nb = k / kBlock;
  const int64_t groups = (n + kRows - 1) / kRows;
  TORCH_CHECK(packed.scalar_type() == at::kChar && packed.dim() == 2 && packed.size(0) == groups &&
                  packed.size(1) == kRows * k,
              "w8a8_linear: packed must be int8 of (ceil(out / 4), 4 * in_features), as w8a8.pack makes it");
  const auto xc = x.contiguous();
  const auto wc = packed.contiguous();
  const auto sc = scales.contiguous();
  std::unique_ptr<int8_t[]> q(new int8_t[m * k]);  // written in full below: no zero-fill
  std::unique_ptr<float[]> d(new float[m * nb]);
  for (int64_t i = 0; i < m; ++i) quantize_row(xc.data_ptr<float>() + i * k, k, q.get() + i * k, d.get() + i * nb);
  auto y = at::empty({m, n}, xc.options());
  const int8_t* wp = wc.data_ptr<int8_t>();
  const float* sp = sc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t group_bytes = kRows * k;
  at::parallel_for(0, groups, 16, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t rows = std::min(kRows, n - g * kRows);
      for (int64_t i = 0; i < m; ++i) {
        float out[kRows];
        group_dots(q.get() + i * k, d.get() + i * nb, k, wp + g * group_bytes, (groups - g) * group_bytes, out);
        for (int64_t j = 0; j < rows; ++j) yp[i * n + g * kRows + j] = out[j] * sp[g * kRows + j];
      }
    }
  });
  return y;
}

}  // namespace

// The op as AOTInductor calls it directly (assay.llm.kernels.C_SHIMS), not boxed through its proxy executor
extern "C" AOTITorchError aoti_torch_cpu_w8a8_linear(AtenTensorHandle x, AtenTensorHandle packed,
                                                     AtenTensorHandle scales, AtenTensorHandle* ret0) {
  using namespace torch::aot_inductor;
  AOTI_TORCH_CONVERT_EXCEPTION_TO_ERROR_CODE({
    *ret0 = new_tensor_handle(w8a8_linear(*tensor_handle_to_tensor_pointer(x), *tensor_handle_to_tensor_pointer(packed),
                                          *tensor_handle_to_tensor_pointer(scales)));
  });
}

// The op's namespace: `assay` for the build for this machine; the tests also build the AVX2 and the plain
// C++ paths (-march=x86-64-v3, -march=x86-64) under names of their own, beside it.
#ifndef ASSAY_KERNELS_NAMESPACE
#define ASSAY_KERNELS_NAMESPACE assay
#endif
TORCH_LIBRARY(ASSAY_KERNELS_NAMESPACE, m) { m.def("w8a8_linear(Tensor x, Tensor packed, Tensor scales) -> Tensor"); }
TORCH_LIBRARY_IMPL(ASSAY_KERNELS_NAMESPACE, CPU, m) { m.impl("w8a8_linear", &w8a8_linear); }
