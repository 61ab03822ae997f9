// assay::decode_attention: attention of one new token per sequence over its KV cache, the step of a decoder.
// Built with the w8a8 kernel into one library by assay.llm.kernels, for the machine it runs on.
//
// Why by hand: the decode step's attention is a few thousand multiply-adds a head, but compiled by inductor
// from transformers' eager attention it ran as a reduction loop that recomputed the query's rotary
// embedding (a sine and a cosine per value) for every key position, 0.7 ms of a 6 ms SmolLM2-135M step,
// and from its SDPA no faster (docs/llm.md). Here each head is two passes over the positions its mask lets
// it see: the scores, then the weighted values.
//
//   q (B, H, 1, D), k and v (B, Hkv, L, D), H a multiple of Hkv (head h reads KV head h / (H / Hkv));
//   mask (B or 1, 1, 1, L) boolean, true where a position is seen (none: every position);
//   s[j] = scale * sum_d q[d] * k[j, d],  e[j] = exp(s[j] - max s)   (over the positions seen)
//   out (B, 1, H, D) = (sum_j e[j] * v[j]) / sum_j e[j]   (a head that sees no position gets zeros)

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/inductor/aoti_torch/utils.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kWork = int64_t{1} << 13;  // multiply-adds a thread takes on before another one is woken

// sum_d a[d] * b[d] in vector registers where the machine has them (gcc leaves a reduction scalar
// without -ffast-math, and that was five times slower than the rest of the attention together)
inline float dot(const float* a, const float* b, int64_t n) {
  int64_t d = 0;
  float sum = 0.f;
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  for (; d + 16 <= n; d += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(b + d), acc);
  sum = _mm512_reduce_add_ps(acc);
#elif defined(__AVX2__) && defined(__FMA__)
  __m256 acc = _mm256_setzero_ps();
  for (; d + 8 <= n; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), acc);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  sum = _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
#endif
  for (; d < n; ++d) sum += a[d] * b[d];
  return sum;
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::optional<at::Tensor>& mask, double scale) {
  TORCH_CHECK(q.dim() == 4 && q.size(2) == 1 && q.scalar_type() == at::kFloat,
              "decode_attention: q must be float32 of (batch, heads, 1, head_dim)");
  TORCH_CHECK(k.dim() == 4 && k.sizes() == v.sizes() && k.scalar_type() == at::kFloat &&
                  v.scalar_type() == at::kFloat && k.size(0) == q.size(0) && k.size(3) == q.size(3) &&
                  q.size(1) % k.size(1) == 0,
              "decode_attention: k and v must be float32 of (batch, kv_heads, positions, head_dim), "
              "with heads a multiple of kv_heads");
  const int64_t batch = q.size(0), heads = q.size(1), dim = q.size(3), kv_heads = k.size(1), length = k.size(2);
  const auto qc = q.contiguous();
  const auto kc = k.contiguous();
  const auto vc = v.contiguous();
  const bool* seen = nullptr;
  int64_t seen_batch_stride = 0, seen_stride = 0;
  if (mask.has_value()) {
    const at::Tensor& mc = *mask;  // the caller's: it outlives the call
    TORCH_CHECK(mc.scalar_type() == at::kBool && mc.dim() == 4 && mc.size(1) == 1 && mc.size(2) == 1 &&
                    mc.size(3) == length && (mc.size(0) == batch || mc.size(0) == 1),
                "decode_attention: mask must be boolean of (batch or 1, 1, 1, positions)");
    seen = mc.data_ptr<bool>();
    seen_batch_stride = mc.size(0) == 1 ? 0 : mc.stride(0);
    seen_stride = mc.stride(3);
  }
  auto out = at::empty({batch, 1, heads, dim}, qc.options());
  const float* qp = qc.data_ptr<float>();
  const float* kp = kc.data_ptr<float>();
  const float* vp = vc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t group = heads / kv_heads;
  const float s = static_cast<float>(scale);
  const int64_t grain = std::max<int64_t>(1, kWork / std::max<int64_t>(1, 2 * length * dim));
  at::parallel_for(0, batch * heads, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> p(length);
    std::vector<int64_t> positions(length);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / heads, h = i % heads;
      const float* qh = qp + i * dim;
      const float* kh = kp + (b * kv_heads + h / group) * length * dim;
      const float* vh = vp + (b * kv_heads + h / group) * length * dim;
      float* oh = op + i * dim;  // out is (batch, 1, heads, dim): row i
      int64_t n = 0;
      for (int64_t j = 0; j < length; ++j) {
        if (seen == nullptr || seen[b * seen_batch_stride + j * seen_stride]) positions[n++] = j;
      }
      std::fill(oh, oh + dim, 0.f);
      if (n == 0) continue;
      float top = -std::numeric_limits<float>::infinity();
      for (int64_t t = 0; t < n; ++t) {
        p[t] = dot(qh, kh + positions[t] * dim, dim) * s;
        top = std::max(top, p[t]);
      }
      float total = 0.f;
      for (int64_t t = 0; t < n; ++t) {
        p[t] = std::exp(p[t] - top);
        total += p[t];
      }
      for (int64_t t = 0; t < n; ++t) {
        const float* vj = vh + positions[t] * dim;
        const float w = p[t];
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) oh[d] += w * vj[d];
      }
      const float inverse = 1.f / total;
#pragma omp simd
      for (int64_t d = 0; d < dim; ++d) oh[d] *= inverse;
    }
  });
  return out;
}

}  // namespace

// The op as AOTInductor calls it directly (assay.llm.kernels.C_SHIMS), not boxed through its proxy executor
extern "C" AOTITorchError aoti_torch_cpu_decode_attention(AtenTensorHandle q, AtenTensorHandle k, AtenTensorHandle v,
                                                          AtenTensorHandle* mask, double scale, AtenTensorHandle* ret0) {
  using namespace torch::aot_inductor;
  AOTI_TORCH_CONVERT_EXCEPTION_TO_ERROR_CODE({
    *ret0 = new_tensor_handle(decode_attention(*tensor_handle_to_tensor_pointer(q), *tensor_handle_to_tensor_pointer(k),
                                               *tensor_handle_to_tensor_pointer(v), pointer_to_optional<at::Tensor>(mask),
                                               scale));
  });
}

#ifndef ASSAY_KERNELS_NAMESPACE
#define ASSAY_KERNELS_NAMESPACE assay
#endif
TORCH_LIBRARY_FRAGMENT(ASSAY_KERNELS_NAMESPACE, m) {
  m.def("decode_attention(Tensor q, Tensor k, Tensor v, Tensor? mask, float scale) -> Tensor");
}
TORCH_LIBRARY_IMPL(ASSAY_KERNELS_NAMESPACE, CPU, m) { m.impl("decode_attention", &decode_attention); }
