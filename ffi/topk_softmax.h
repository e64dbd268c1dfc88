// Shared definitions of the top-k softmax router for the CPU and CUDA handlers.
//
// Semantics (identical to jax_moe.reference.topk_softmax):
//   logits  [..., T, E] (f32 / f16 / bf16), bias [..., E] f32 (leading size 1 or the logits' batch)
//   score   = softmax(logits) over E in fp32, or sigmoid(logits)
//   key     = logit (softmax without bias: the same order as the probabilities, free of exp rounding),
//             otherwise score + bias; NaN keys rank as -inf; -0.0 is folded to +0.0
//   groups  : a group's score is the sum of its two best keys (one when groups hold one expert);
//             only experts of the topk_groups best groups may be chosen
//   choice  : the k best keys, ties toward the lower expert id (groups likewise)
//   weights = score of each chosen expert, divided by (sum + 1e-20) when renormalizing,
//             times routed_scaling_factor
//   outputs : weights f32 [..., T, k], ids s32 [..., T, k], token_expert_indices s32 = j * T + t
#ifndef JAX_MOE_FFI_TOPK_SOFTMAX_H_
#define JAX_MOE_FFI_TOPK_SOFTMAX_H_

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include "xla/ffi/api/ffi.h"

#if defined(__CUDACC__)
#define JAX_MOE_HD __host__ __device__ __forceinline__
#else
#define JAX_MOE_HD inline
#endif

namespace jax_moe {

namespace ffi = xla::ffi;

enum Scoring : int64_t { kSoftmax = 0, kSigmoid = 1 };

constexpr float kRenormEpsilon = 1e-20f;

// Everything a kernel needs to route `rows` = batch * T rows of E logits.
struct RoutingProblem {
  int64_t batch;        // product of the leading dims of logits
  int64_t tokens;       // T
  int64_t experts;      // E
  int64_t k;
  int64_t bias_batch;   // 1 (shared bias) or batch
  int64_t scoring;      // Scoring
  bool has_bias;
  bool renormalize;
  int64_t num_groups;   // 0: no grouped selection
  int64_t topk_groups;
  float scale;          // routed_scaling_factor

  JAX_MOE_HD int64_t rows() const { return batch * tokens; }
  JAX_MOE_HD bool logit_keys() const { return scoring == kSoftmax && !has_bias; }
};

// NaN ranks as -inf; -0.0 and +0.0 are one key.
JAX_MOE_HD float CanonicalKey(float key) {
  if (key != key) return -INFINITY;
  return key == 0.0f ? 0.0f : key;
}

JAX_MOE_HD float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Validates the buffers and attributes against each other and fills `problem`.
inline ffi::Error DescribeProblem(ffi::AnyBuffer logits, ffi::AnyBuffer bias,
                                  ffi::AnyBuffer weights, int64_t k, int64_t scoring,
                                  bool has_bias, bool renormalize, int64_t num_groups,
                                  int64_t topk_groups, float scale, RoutingProblem* problem) {
  auto dims = logits.dimensions();
  if (dims.size() < 2) {
    return ffi::Error::InvalidArgument("topk_softmax: logits must have rank >= 2 ([..., T, E])");
  }
  auto type = logits.element_type();
  if (type != ffi::DataType::F32 && type != ffi::DataType::F16 && type != ffi::DataType::BF16) {
    return ffi::Error::InvalidArgument("topk_softmax: logits must be f32, f16 or bf16");
  }
  RoutingProblem p;
  p.experts = dims[dims.size() - 1];
  p.tokens = dims[dims.size() - 2];
  p.batch = 1;
  for (size_t i = 0; i + 2 < dims.size(); ++i) p.batch *= dims[i];
  p.k = k;
  p.scoring = scoring;
  p.has_bias = has_bias;
  p.renormalize = renormalize;
  p.num_groups = num_groups;
  p.topk_groups = topk_groups;
  p.scale = scale;
  if (p.experts < 1 || k < 1 || k > p.experts) {
    return ffi::Error::InvalidArgument("topk_softmax: need 1 <= k <= E");
  }
  if (scoring != kSoftmax && scoring != kSigmoid) {
    return ffi::Error::InvalidArgument("topk_softmax: unknown scoring");
  }
  if (num_groups != 0) {
    if (num_groups < 0 || p.experts % num_groups != 0 || topk_groups < 1 ||
        topk_groups > num_groups || k > topk_groups * (p.experts / num_groups)) {
      return ffi::Error::InvalidArgument("topk_softmax: inconsistent grouped selection");
    }
  }
  auto bias_dims = bias.dimensions();
  if (bias.element_type() != ffi::DataType::F32 || bias_dims.size() < 1 ||
      bias_dims[bias_dims.size() - 1] != p.experts) {
    return ffi::Error::InvalidArgument("topk_softmax: bias must be f32 [..., E]");
  }
  p.bias_batch = 1;
  for (size_t i = 0; i + 1 < bias_dims.size(); ++i) p.bias_batch *= bias_dims[i];
  if (p.bias_batch != 1 && p.bias_batch != p.batch) {
    return ffi::Error::InvalidArgument("topk_softmax: bias batch must be 1 or the logits' batch");
  }
  if (static_cast<int64_t>(weights.element_count()) != p.rows() * k) {
    return ffi::Error::InvalidArgument("topk_softmax: output shape mismatch");
  }
  if (p.tokens * k > std::numeric_limits<int32_t>::max()) {
    return ffi::Error::InvalidArgument("topk_softmax: T * k must fit in int32");
  }
  *problem = p;
  return ffi::Error::Success();
}

// Operands, results and attributes of both handlers, appended to `binding` (which holds any
// context, e.g. the CUDA stream): logits, bias -> weights, ids, token_expert_indices.
template <typename Binding>
auto BindTopkSoftmax(Binding binding) {
  return std::move(binding)
      .template Arg<ffi::AnyBuffer>()
      .template Arg<ffi::AnyBuffer>()
      .template Ret<ffi::AnyBuffer>()
      .template Ret<ffi::AnyBuffer>()
      .template Ret<ffi::AnyBuffer>()
      .template Attr<int64_t>("k")
      .template Attr<int64_t>("scoring")
      .template Attr<bool>("has_bias")
      .template Attr<bool>("renormalize")
      .template Attr<int64_t>("num_groups")
      .template Attr<int64_t>("topk_groups")
      .template Attr<float>("routed_scaling_factor");
}

}  // namespace jax_moe

#endif  // JAX_MOE_FFI_TOPK_SOFTMAX_H_
