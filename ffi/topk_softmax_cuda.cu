// CUDA handler of the top-k softmax router (XLA FFI target "jax_moe_topk_softmax", platform "CUDA").
//
// Two kernels, both with no host synchronisation and no atomics:
// - RegisterRouter: E <= 512 without grouped selection. TPR threads own one row, each holding VPT
//   consecutive logits in registers (16-byte loads when the row allows); softmax sums and the k
//   argmax rounds are butterfly shuffles inside the TPR lanes.
// - SharedRouter: any E up to kMaxSharedExperts, and grouped selection. One warp owns one row whose
//   keys and scores live in shared memory.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "topk_softmax.h"

namespace jax_moe {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 128;
constexpr int64_t kMaxRegisterExperts = 512;
constexpr int64_t kMaxSharedExperts = 16384;

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

// Arguments shared by both kernels.
struct RouterArgs {
  const void* logits;
  const float* bias;
  float* weights;
  int32_t* ids;
  int32_t* token_expert_indices;
  RoutingProblem p;
};

// Writes slot j of `row`: the expert id, its unscaled score and the source-row index.
__device__ __forceinline__ void WriteSlot(const RouterArgs& a, int64_t row, int64_t j, int32_t id,
                                          float score) {
  const int64_t at = row * a.p.k + j;
  a.ids[at] = id;
  a.weights[at] = score;
  a.token_expert_indices[at] = static_cast<int32_t>(j * a.p.tokens + row % a.p.tokens);
}

// Renormalizes / scales the k weights of `row` already written by this thread (slots first, first +
// stride, ...).
__device__ __forceinline__ void ScaleSlots(const RouterArgs& a, int64_t row, int64_t first,
                                           int64_t stride, float total) {
  if (!a.p.renormalize && a.p.scale == 1.0f) return;
  const float factor = a.p.renormalize ? a.p.scale / (total + kRenormEpsilon) : a.p.scale;
  for (int64_t j = first; j < a.p.k; j += stride) a.weights[row * a.p.k + j] *= factor;
}

template <typename In, int VPT, int TPR>
__global__ void __launch_bounds__(kThreads) RegisterRouter(RouterArgs a) {
  constexpr int kRowsPerBlock = kThreads / TPR;
  const int lane_in_row = threadIdx.x % TPR;
  const int64_t unclamped_row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / TPR;
  // Lanes past the last row recompute the last row without writing it, so that every lane of the
  // warp takes part in the shuffles.
  const bool writes = unclamped_row < a.p.rows();
  const int64_t row = writes ? unclamped_row : a.p.rows() - 1;
  const int64_t E = a.p.experts;
  const int first = lane_in_row * VPT;
  const In* src = static_cast<const In*>(a.logits) + row * E + first;

  float x[VPT];
  constexpr int kVectorBytes = VPT * sizeof(In);
  const bool vector_ok = (kVectorBytes % 16 == 0) && ((E * sizeof(In)) % 16 == 0) && first + VPT <= E;
  if (vector_ok) {
    In buf[VPT];
#pragma unroll
    for (int v = 0; v < kVectorBytes / 16; ++v) {
      reinterpret_cast<uint4*>(buf)[v] = __ldg(reinterpret_cast<const uint4*>(src) + v);
    }
#pragma unroll
    for (int i = 0; i < VPT; ++i) x[i] = ToFloat(buf[i]);
  } else {
#pragma unroll
    for (int i = 0; i < VPT; ++i) x[i] = first + i < E ? ToFloat(src[i]) : -INFINITY;
  }
  // Bit i set: slot i is padding or already chosen.
  uint32_t taken = 0;
#pragma unroll
  for (int i = 0; i < VPT; ++i) taken |= (first + i < E ? 0u : 1u) << i;

  float score[VPT];
  if (a.p.scoring == kSoftmax) {
    float max_logit = -INFINITY;
#pragma unroll
    for (int i = 0; i < VPT; ++i) max_logit = fmaxf(max_logit, x[i]);
#pragma unroll
    for (int offset = TPR / 2; offset > 0; offset /= 2) {
      max_logit = fmaxf(max_logit, __shfl_xor_sync(0xffffffffu, max_logit, offset, TPR));
    }
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < VPT; ++i) {
      score[i] = first + i < E ? expf(x[i] - max_logit) : 0.0f;
      sum += score[i];
    }
#pragma unroll
    for (int offset = TPR / 2; offset > 0; offset /= 2) {
      sum += __shfl_xor_sync(0xffffffffu, sum, offset, TPR);
    }
#pragma unroll
    for (int i = 0; i < VPT; ++i) score[i] = score[i] / sum;
  } else {
#pragma unroll
    for (int i = 0; i < VPT; ++i) score[i] = Sigmoid(x[i]);
  }
  float key[VPT];
  const float* bias = a.bias + (a.p.bias_batch == 1 ? 0 : row / a.p.tokens) * E + first;
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    const float raw = a.p.logit_keys() ? x[i] : score[i] + (first + i < E ? bias[i] : 0.0f);
    key[i] = CanonicalKey(raw);
  }

  float total = 0.0f;
  for (int64_t j = 0; j < a.p.k; ++j) {
    float best_key = -INFINITY;
    int32_t best_id = kNoExpert;
    float best_score = 0.0f;
#pragma unroll
    for (int i = 0; i < VPT; ++i) {
      if (!((taken >> i) & 1u) && Beats(key[i], first + i, best_key, best_id)) {
        best_key = key[i];
        best_id = first + i;
        best_score = score[i];
      }
    }
#pragma unroll
    for (int offset = TPR / 2; offset > 0; offset /= 2) {
      const float other_key = __shfl_xor_sync(0xffffffffu, best_key, offset, TPR);
      const int32_t other_id = __shfl_xor_sync(0xffffffffu, best_id, offset, TPR);
      const float other_score = __shfl_xor_sync(0xffffffffu, best_score, offset, TPR);
      if (Beats(other_key, other_id, best_key, best_id)) {
        best_key = other_key;
        best_id = other_id;
        best_score = other_score;
      }
    }
    if (best_id >= first && best_id < first + VPT) taken |= 1u << (best_id - first);
    if (writes && j % TPR == lane_in_row) WriteSlot(a, row, j, best_id, best_score);
    total += best_score;
  }
  if (writes) ScaleSlots(a, row, lane_in_row, TPR, total);
}

// Best (key, id) among this lane's entries e = lane, lane + 32, ... of keys[0, n), NaN skipped,
// reduced over the warp. Every lane returns the winner.
__device__ __forceinline__ int32_t WarpBest(const float* keys, int64_t n, int lane) {
  float best_key = -INFINITY;
  int32_t best_id = kNoExpert;
  for (int64_t e = lane; e < n; e += kWarp) {
    const float key = keys[e];
    if (key == key && Beats(key, static_cast<int32_t>(e), best_key, best_id)) {
      best_key = key;
      best_id = static_cast<int32_t>(e);
    }
  }
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const float other_key = __shfl_xor_sync(0xffffffffu, best_key, offset);
    const int32_t other_id = __shfl_xor_sync(0xffffffffu, best_id, offset);
    if (Beats(other_key, other_id, best_key, best_id)) {
      best_key = other_key;
      best_id = other_id;
    }
  }
  return best_id;
}

template <typename In>
__global__ void __launch_bounds__(kThreads) SharedRouter(RouterArgs a, int warps_per_block) {
  extern __shared__ float shared[];
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * warps_per_block + warp;
  if (row >= a.p.rows()) return;  // the whole warp leaves together
  const int64_t E = a.p.experts;
  // Per warp: keys[E], scores[E], group_scores[num_groups].
  float* keys = shared + warp * (2 * E + a.p.num_groups);
  float* scores = keys + E;
  float* group_scores = scores + E;
  const In* src = static_cast<const In*>(a.logits) + row * E;
  const float* bias = a.bias + (a.p.bias_batch == 1 ? 0 : row / a.p.tokens) * E;

  float max_logit = -INFINITY;
  for (int64_t e = lane; e < E; e += kWarp) {
    const float x = ToFloat(src[e]);
    scores[e] = x;
    max_logit = fmaxf(max_logit, x);
  }
  float sum = 0.0f;
  if (a.p.scoring == kSoftmax) {
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      max_logit = fmaxf(max_logit, __shfl_xor_sync(0xffffffffu, max_logit, offset));
    }
    for (int64_t e = lane; e < E; e += kWarp) sum += expf(scores[e] - max_logit);
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    }
  }
  for (int64_t e = lane; e < E; e += kWarp) {
    const float x = scores[e];
    const float score = a.p.scoring == kSoftmax ? expf(x - max_logit) / sum : Sigmoid(x);
    scores[e] = score;
    keys[e] = CanonicalKey(a.p.logit_keys() ? x : score + bias[e]);
  }
  __syncwarp();

  if (a.p.num_groups > 0) {
    const int64_t group_size = E / a.p.num_groups;
    for (int64_t g = lane; g < a.p.num_groups; g += kWarp) {
      const float* group = keys + g * group_size;
      float first = -INFINITY, second = -INFINITY;
      for (int64_t i = 0; i < group_size; ++i) {
        const float v = group[i];
        if (v > first) {
          second = first;
          first = v;
        } else if (v > second) {
          second = v;
        }
      }
      group_scores[g] = CanonicalKey(group_size > 1 ? first + second : first);
    }
    __syncwarp();
    for (int64_t j = 0; j < a.p.topk_groups; ++j) {
      const int32_t chosen = WarpBest(group_scores, a.p.num_groups, lane);
      __syncwarp();
      if (lane == 0) group_scores[chosen] = NAN;  // NaN marks a chosen group
      __syncwarp();
    }
    for (int64_t e = lane; e < E; e += kWarp) {
      const float g = group_scores[e / group_size];
      if (g == g) keys[e] = NAN;
    }
    __syncwarp();
  }

  float total = 0.0f;
  for (int64_t j = 0; j < a.p.k; ++j) {
    const int32_t best = WarpBest(keys, E, lane);
    const float score = scores[best];
    __syncwarp();
    if (lane == 0) {
      keys[best] = NAN;
      WriteSlot(a, row, j, best, score);
    }
    __syncwarp();
    total += score;
  }
  if (lane == 0) ScaleSlots(a, row, 0, 1, total);
}

template <typename In, int VPT, int TPR>
cudaError_t LaunchRegister(cudaStream_t stream, const RouterArgs& args) {
  constexpr int64_t kRowsPerBlock = kThreads / TPR;
  const int64_t blocks = (args.p.rows() + kRowsPerBlock - 1) / kRowsPerBlock;
  RegisterRouter<In, VPT, TPR><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

// Picks VPT (values per thread) and TPR (threads per row) with VPT * TPR >= E.
template <typename In, int VPT>
cudaError_t DispatchThreadsPerRow(cudaStream_t stream, const RouterArgs& args) {
  const int64_t threads = (args.p.experts + VPT - 1) / VPT;
  if (threads <= 1) return LaunchRegister<In, VPT, 1>(stream, args);
  if (threads <= 2) return LaunchRegister<In, VPT, 2>(stream, args);
  if (threads <= 4) return LaunchRegister<In, VPT, 4>(stream, args);
  if (threads <= 8) return LaunchRegister<In, VPT, 8>(stream, args);
  if (threads <= 16) return LaunchRegister<In, VPT, 16>(stream, args);
  return LaunchRegister<In, VPT, 32>(stream, args);
}

template <typename In>
cudaError_t Launch(cudaStream_t stream, const RouterArgs& args) {
  const RoutingProblem& p = args.p;
  constexpr int kVectorValues = 16 / sizeof(In);
  if (p.num_groups == 0 && p.experts <= kWarp * kVectorValues) {
    return DispatchThreadsPerRow<In, kVectorValues>(stream, args);
  }
  if (p.num_groups == 0 && p.experts <= kMaxRegisterExperts) {
    return DispatchThreadsPerRow<In, kMaxRegisterExperts / kWarp>(stream, args);
  }
  const int64_t per_warp_bytes = (2 * p.experts + p.num_groups) * sizeof(float);
  const int warps = static_cast<int>(std::clamp<int64_t>(48 * 1024 / per_warp_bytes, 1, kThreads / kWarp));
  const int64_t smem = warps * per_warp_bytes;
  if (smem > 48 * 1024) {
    cudaError_t err = cudaFuncSetAttribute(SharedRouter<In>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  const int64_t blocks = (p.rows() + warps - 1) / warps;
  SharedRouter<In><<<static_cast<unsigned>(blocks), warps * kWarp, smem, stream>>>(args, warps);
  return cudaGetLastError();
}

ffi::Error TopkSoftmaxCuda(cudaStream_t stream, ffi::AnyBuffer logits, ffi::AnyBuffer bias,
                           ffi::Result<ffi::AnyBuffer> weights, ffi::Result<ffi::AnyBuffer> ids,
                           ffi::Result<ffi::AnyBuffer> token_expert_indices, int64_t k,
                           int64_t scoring, bool has_bias, bool renormalize, int64_t num_groups,
                           int64_t topk_groups, float scale) {
  RouterArgs args;
  ffi::Error error = DescribeProblem(logits, bias, *weights, k, scoring, has_bias, renormalize,
                                     num_groups, topk_groups, scale, &args.p);
  if (error.failure()) return error;
  if (args.p.experts > kMaxSharedExperts) {
    return ffi::Error::InvalidArgument("topk_softmax: the CUDA router supports E <= 16384");
  }
  if (args.p.rows() == 0) return ffi::Error::Success();
  args.logits = logits.untyped_data();
  args.bias = static_cast<const float*>(bias.untyped_data());
  args.weights = static_cast<float*>(weights->untyped_data());
  args.ids = static_cast<int32_t*>(ids->untyped_data());
  args.token_expert_indices = static_cast<int32_t*>(token_expert_indices->untyped_data());

  cudaError_t err;
  switch (logits.element_type()) {
    case ffi::DataType::F32: err = Launch<float>(stream, args); break;
    case ffi::DataType::F16: err = Launch<__half>(stream, args); break;
    case ffi::DataType::BF16: err = Launch<__nv_bfloat16>(stream, args); break;
    default: return ffi::Error::InvalidArgument("topk_softmax: logits must be f32, f16 or bf16");
  }
  if (err != cudaSuccess) {
    return ffi::Error::Internal(std::string("topk_softmax CUDA launch failed: ") + cudaGetErrorString(err));
  }
  return ffi::Error::Success();
}

}  // namespace
}  // namespace jax_moe

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxMoeTopkSoftmaxCuda, jax_moe::TopkSoftmaxCuda,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Ret<xla::ffi::AnyBuffer>()
                                  .Ret<xla::ffi::AnyBuffer>()
                                  .Ret<xla::ffi::AnyBuffer>()
                                  .Attr<int64_t>("k")
                                  .Attr<int64_t>("scoring")
                                  .Attr<bool>("has_bias")
                                  .Attr<bool>("renormalize")
                                  .Attr<int64_t>("num_groups")
                                  .Attr<int64_t>("topk_groups")
                                  .Attr<float>("routed_scaling_factor"),
                              {xla::ffi::Traits::kCmdBufferCompatible});
