// CPU handler of the top-k softmax router (XLA FFI target "jax_moe_topk_softmax", platform "cpu").
#include <algorithm>
#include <cstring>
#include <vector>

#include "topk_softmax.h"

namespace jax_moe {
namespace {

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1fu) {  // inf / NaN
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // zero
    bits = sign;
  } else {  // subnormal: renormalize
    uint32_t e = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

float BFloat16ToFloat(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

void LoadRow(ffi::DataType type, const void* base, int64_t row, int64_t experts, float* out) {
  const int64_t offset = row * experts;
  if (type == ffi::DataType::F32) {
    std::memcpy(out, static_cast<const float*>(base) + offset, experts * sizeof(float));
    return;
  }
  const uint16_t* src = static_cast<const uint16_t*>(base) + offset;
  for (int64_t e = 0; e < experts; ++e) {
    out[e] = type == ffi::DataType::F16 ? HalfToFloat(src[e]) : BFloat16ToFloat(src[e]);
  }
}

// Writes the ids of the k best entries of keys[0, n) (larger key first, ties to the lower id; NaN
// entries skipped) to ids[0, k),
// best first: one pass with a sorted insertion buffer. Returns how many were found.
int64_t TopK(const float* keys, int64_t n, int64_t k, int32_t* ids) {
  int64_t count = 0;
  for (int64_t e = 0; e < n; ++e) {
    const float key = keys[e];
    if (key != key) continue;
    // Scanning ids upward, an equal key never passes an earlier (lower) id.
    if (count == k && !(key > keys[ids[k - 1]])) continue;
    int64_t at = count < k ? count++ : k - 1;
    while (at > 0 && key > keys[ids[at - 1]]) {
      ids[at] = ids[at - 1];
      --at;
    }
    ids[at] = static_cast<int32_t>(e);
  }
  return count;
}

// Marks (as NaN keys) the experts outside the topk_groups best groups.
void ExcludeGroups(const RoutingProblem& p, float* keys, float* group_scores, int32_t* chosen) {
  const int64_t group_size = p.experts / p.num_groups;
  for (int64_t g = 0; g < p.num_groups; ++g) {
    float first = -INFINITY, second = -INFINITY;
    for (int64_t i = g * group_size; i < (g + 1) * group_size; ++i) {
      if (keys[i] > first) {
        second = first;
        first = keys[i];
      } else if (keys[i] > second) {
        second = keys[i];
      }
    }
    group_scores[g] = CanonicalKey(group_size > 1 ? first + second : first);
  }
  TopK(group_scores, p.num_groups, p.topk_groups, chosen);
  for (int64_t j = 0; j < p.topk_groups; ++j) group_scores[chosen[j]] = NAN;  // NaN marks a chosen group
  for (int64_t e = 0; e < p.experts; ++e) {
    if (group_scores[e / group_size] == group_scores[e / group_size]) keys[e] = NAN;
  }
}

void RouteRow(const RoutingProblem& p, float* x, const float* bias, float* keys,
              float* group_scores, int32_t* chosen_groups, float* weights, int32_t* ids,
              int32_t* token_expert_indices, int64_t token) {
  const int64_t E = p.experts;
  if (p.scoring == kSoftmax) {
    float max_logit = -INFINITY;
    for (int64_t e = 0; e < E; ++e) max_logit = std::fmax(max_logit, x[e]);
    float sum = 0.0f;
    for (int64_t e = 0; e < E; ++e) {
      keys[e] = std::exp(x[e] - max_logit);
      sum += keys[e];
    }
    for (int64_t e = 0; e < E; ++e) {
      const float score = keys[e] / sum;
      keys[e] = CanonicalKey(p.logit_keys() ? x[e] : score + bias[e]);
      x[e] = score;
    }
  } else {
    for (int64_t e = 0; e < E; ++e) {
      const float score = Sigmoid(x[e]);
      keys[e] = CanonicalKey(score + bias[e]);
      x[e] = score;
    }
  }
  if (p.num_groups > 0) ExcludeGroups(p, keys, group_scores, chosen_groups);

  TopK(keys, E, p.k, ids);  // finds k: DescribeProblem checked that enough experts are allowed
  float total = 0.0f;
  for (int64_t j = 0; j < p.k; ++j) {
    weights[j] = x[ids[j]];
    token_expert_indices[j] = static_cast<int32_t>(j * p.tokens + token);
    total += weights[j];
  }
  const float factor = p.renormalize ? p.scale / (total + kRenormEpsilon) : p.scale;
  if (p.renormalize || p.scale != 1.0f) {
    for (int64_t j = 0; j < p.k; ++j) weights[j] *= factor;
  }
}

ffi::Error TopkSoftmaxCpu(ffi::AnyBuffer logits, ffi::AnyBuffer bias,
                          ffi::Result<ffi::AnyBuffer> weights, ffi::Result<ffi::AnyBuffer> ids,
                          ffi::Result<ffi::AnyBuffer> token_expert_indices, int64_t k,
                          int64_t scoring, bool has_bias, bool renormalize, int64_t num_groups,
                          int64_t topk_groups, float scale) {
  RoutingProblem p;
  ffi::Error error = DescribeProblem(logits, bias, *weights, k, scoring, has_bias, renormalize,
                                     num_groups, topk_groups, scale, &p);
  if (error.failure()) return error;

  std::vector<float> x(p.experts), keys(p.experts), group_scores(std::max<int64_t>(num_groups, 1));
  std::vector<int32_t> chosen_groups(std::max<int64_t>(topk_groups, 1));
  const float* bias_data = static_cast<const float*>(bias.untyped_data());
  float* w = static_cast<float*>(weights->untyped_data());
  int32_t* id = static_cast<int32_t*>(ids->untyped_data());
  int32_t* tei = static_cast<int32_t*>(token_expert_indices->untyped_data());
  for (int64_t row = 0; row < p.rows(); ++row) {
    const int64_t b = row / p.tokens;
    LoadRow(logits.element_type(), logits.untyped_data(), row, p.experts, x.data());
    RouteRow(p, x.data(), bias_data + (p.bias_batch == 1 ? 0 : b) * p.experts, keys.data(),
             group_scores.data(), chosen_groups.data(), w + row * k, id + row * k, tei + row * k,
             row % p.tokens);
  }
  return ffi::Error::Success();
}

}  // namespace
}  // namespace jax_moe

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxMoeTopkSoftmaxCpu, jax_moe::TopkSoftmaxCpu,
                              jax_moe::BindTopkSoftmax(xla::ffi::Ffi::Bind()));
