// CUDA handler of the top-k softmax router (XLA FFI target "jax_moe_topk_softmax", platform "CUDA").
//
// Three kernels, all with no host synchronisation and no atomics:
// - PackedWarpRouter (softmax ranked by f16 / bf16 logits, 64 < E <= 256, no groups, k <= 32): one
//   warp owns 16 / VPT rows, lane l holding logits [l * VPT, (l + 1) * VPT) of each. A 16-bit float
//   widened to f32 leaves the low 13 bits zero, so a key carries the expert id there and one 32-bit
//   redux.sync max per argmax round ranks by (logit, lower id); the lane holding the winner pops
//   its head (its keys are sorted once, so it never rescans).
// - RegisterRouter (the rest with E <= 512; grouped selection when a group spans whole lanes): TPR
//   threads own a row, each holding VPT consecutive logits in registers (vector loads where the row
//   allows). Keys are kept as order-preserving 32-bit integers; each lane keeps its best
//   kCandidates, and every argmax round is one butterfly max over (key, ~id) packed in 64 bits,
//   after which the winning lane pops its head (rescanning only when its candidates run out).
//   Lane j % TPR keeps slot j's winner in registers (k <= 4 * TPR); weights follow the rounds.
// - SharedRouter (any E up to kMaxSharedExperts, any grouping): one warp owns a row whose keys and
//   scores live in shared memory.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "topk_softmax.h"

namespace jax_moe {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 128;
constexpr int kValuesPerThread = 16;
// Slots of the k chosen experts a lane keeps in registers: RegisterRouter needs k <= 4 * TPR.
constexpr int kMaxLaneSlots = 4;
constexpr int64_t kMaxRegisterExperts = kWarp * kValuesPerThread;
constexpr int64_t kMaxSharedExperts = 16384;
// A PackedWarpRouter warp owns 16 / VPT rows: each lane holds 16 logits, which amortises the
// warp's fixed work and overlaps the rows' dependent reductions (E = 128, k = 8, T = 32768 on an
// H100: one row per warp 16.4 us, two 15.5 us, four 14.9 us; at E = 256, VPT = 8, two rows per
// warp 22.1 us against four 23.1 us).
constexpr int kPackedLogitsPerLane = 16;

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

// Arguments shared by the kernels.
struct RouterArgs {
  const void* logits;
  const float* bias;
  float* weights;
  int32_t* ids;
  int32_t* token_expert_indices;
  RoutingProblem p;
};

// Order-preserving map of non-NaN floats to unsigned ints; no float maps to 0, the "taken" mark.
// Branch-free: negative floats flip every bit, the others only the sign bit.
__device__ __forceinline__ uint32_t OrderedBits(float f) {
  const uint32_t u = __float_as_uint(f);
  return u ^ (static_cast<uint32_t>(static_cast<int32_t>(u) >> 31) | 0x80000000u);
}

// The float whose OrderedBits is `ordered` (ordered != 0).
__device__ __forceinline__ float KeyValue(uint32_t ordered) {
  return __uint_as_float((ordered & 0x80000000u) ? (ordered & 0x7fffffffu) : ~ordered);
}

// (key, id) packed so that the larger packed value is the better candidate (ties: lower id).
__device__ __forceinline__ uint64_t Pack(uint32_t ordered_key, uint32_t id) {
  return (static_cast<uint64_t>(ordered_key) << 32) | (0xffffffffu - id);
}
__device__ __forceinline__ uint32_t PackedId(uint64_t packed) {
  return 0xffffffffu - static_cast<uint32_t>(packed);
}

// x[i] = logit first + i of a row (`src` points at logit `first`), -inf past E; vector loads of
// 4 to 16 bytes where the row stride keeps them aligned.
template <int kBytes> struct VectorOf;
template <> struct VectorOf<4> { using type = uint32_t; };
template <> struct VectorOf<8> { using type = uint2; };
template <> struct VectorOf<16> { using type = uint4; };
template <typename In, int VPT>
__device__ __forceinline__ void LoadLogits(const In* src, int first, int E, float (&x)[VPT]) {
  constexpr int kBytes = VPT * sizeof(In);
  constexpr int kVector = kBytes < 16 ? kBytes : 16;
  if constexpr (kVector >= 4 && kBytes % kVector == 0 && (kVector & (kVector - 1)) == 0) {
    if ((E * sizeof(In)) % kVector == 0 && first + VPT <= E) {
      using Vector = typename VectorOf<kVector>::type;
      In buf[VPT];
#pragma unroll
      for (int v = 0; v < kBytes / kVector; ++v) {
        reinterpret_cast<Vector*>(buf)[v] = __ldg(reinterpret_cast<const Vector*>(src) + v);
      }
#pragma unroll
      for (int i = 0; i < VPT; ++i) x[i] = ToFloat(buf[i]);
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < VPT; ++i) x[i] = first + i < E ? ToFloat(src[i]) : -INFINITY;
}

// Packed keys of PackedWarpRouter: the order-preserving bits of a 16-bit logit widened to f32
// (canonical: NaN as -inf, -0.0 as +0.0), whose low 13 bits are always zero, with (kPackedIdMask -
// id) in those bits: the larger key is the better expert, ties toward the lower id. Never 0.
constexpr uint32_t kPackedIdMask = 0x1fffu;
__device__ __forceinline__ uint32_t PackedKey(float logit16, int id) {
  // CanonicalKey without branches: x + 0 folds -0.0 into +0.0, and fmaxf(NaN, -inf) = -inf.
  const uint32_t ordered = OrderedBits(fmaxf(logit16 + 0.0f, -INFINITY));
  return (ordered & ~kPackedIdMask) | (kPackedIdMask - static_cast<uint32_t>(id));
}
__device__ __forceinline__ int32_t PackedKeyId(uint32_t key) {
  return static_cast<int32_t>(kPackedIdMask - (key & kPackedIdMask));
}
// The canonical logit of a packed key: its low bits are zero in the float (ones in the ordered
// bits of a negative float).
__device__ __forceinline__ float PackedKeyLogit(uint32_t key) {
  return KeyValue((key & 0x80000000u) ? (key & ~kPackedIdMask) : (key | kPackedIdMask));
}

template <int TPR, typename T>
__device__ __forceinline__ T SegmentMax(T v) {
#pragma unroll
  for (int offset = TPR / 2; offset > 0; offset /= 2) {
    const T other = __shfl_xor_sync(0xffffffffu, v, offset, TPR);
    v = other > v ? other : v;
  }
  return v;
}

template <int TPR>
__device__ __forceinline__ float SegmentSum(float v) {
#pragma unroll
  for (int offset = TPR / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset, TPR);
  return v;
}

// A lane's best few (key, index) pairs, best first; key 0 marks an empty entry. The argmax rounds
// pop from it and rescan the lane's values only when it ran dry and its head is needed again
// (for E = 128, k = 8 a lane wins four of the eight slots about once in a hundred rows).
constexpr int kCandidates = 4;
struct Candidates {
  uint32_t key[kCandidates];
  int index[kCandidates];

  __device__ __forceinline__ uint64_t head(int first) const {
    return key[0] == 0 ? 0 : Pack(key[0], first + index[0]);
  }
  __device__ __forceinline__ void pop() {
#pragma unroll
    for (int c = 0; c + 1 < kCandidates; ++c) {
      key[c] = key[c + 1];
      index[c] = index[c + 1];
    }
    key[kCandidates - 1] = 0;
  }
};

// The best kCandidates of a lane's VPT ordered keys whose packed (key, id) is below `below`.
template <int VPT>
__device__ __forceinline__ Candidates BestCandidates(const uint32_t (&key)[VPT], int first, uint64_t below) {
  Candidates c;
#pragma unroll
  for (int j = 0; j < kCandidates; ++j) c.key[j] = 0, c.index[j] = 0;
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    uint32_t k = key[i];
    if (below != ~0ull && Pack(k, first + i) >= below) k = 0;
    // Insertion by (key desc, index asc); a displaced entry moves on down with its own index.
    int at = i;
#pragma unroll
    for (int j = 0; j < kCandidates; ++j) {
      if (k > c.key[j] || (k == c.key[j] && k != 0 && at < c.index[j])) {
        const uint32_t displaced_key = c.key[j];
        const int displaced_at = c.index[j];
        c.key[j] = k;
        c.index[j] = at;
        k = displaced_key;
        at = displaced_at;
      }
    }
  }
  return c;
}

template <typename In, int VPT, int ROWS>
__global__ void __launch_bounds__(kThreads) PackedWarpRouter(RouterArgs a) {
  static_assert(sizeof(In) == 2, "packed keys need 16-bit logits");
  const RoutingProblem& p = a.p;
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int64_t first_row = (static_cast<int64_t>(blockIdx.x) * (kThreads / kWarp) + warp) * ROWS;
  if (first_row >= p.rows()) return;  // the whole warp leaves together
  const int E = static_cast<int>(p.experts);
  const int k = static_cast<int>(p.k);
  const int first = lane * VPT;

  // Rows past the last one recompute the last row without writing it.
  float x[ROWS][VPT];
  uint32_t key[ROWS][VPT];  // 0: padding or taken
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    const int64_t row = min(first_row + r, p.rows() - 1);
    LoadLogits(static_cast<const In*>(a.logits) + row * p.experts + first, first, E, x[r]);
#pragma unroll
    for (int i = 0; i < VPT; ++i) {
      const uint32_t packed = PackedKey(x[r][i], first + i);  // padding's -inf gets a key too, dropped here
      key[r][i] = first + i < E ? packed : 0u;
    }
#pragma unroll
    for (int i = 0; i < VPT; ++i) {  // descending, a fixed compare-exchange network
#pragma unroll
      for (int j = VPT - 1; j > i; --j) {
        const uint32_t high = max(key[r][j - 1], key[r][j]);
        key[r][j] = min(key[r][j - 1], key[r][j]);
        key[r][j - 1] = high;
      }
    }
  }

  // The best key holds the largest logit: the softmax's max.
  float max_logit[ROWS], sum[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    max_logit[r] = PackedKeyLogit(__reduce_max_sync(0xffffffffu, key[r][0]));
    sum[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < VPT; ++i) sum[r] += expf(x[r][i] - max_logit[r]);  // padding: exp(-inf) = 0
    sum[r] = SegmentSum<kWarp>(sum[r]);
  }

  // k argmax rounds; lane 0 stores slot j's winner (a warp-uniform value) for lane j.
  __shared__ uint32_t winners[kThreads / kWarp][ROWS][kWarp];
  for (int j = 0; j < k; ++j) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const uint32_t best = __reduce_max_sync(0xffffffffu, key[r][0]);
      if (key[r][0] == best) {  // the lane holding the winner pops it
#pragma unroll
        for (int i = 0; i + 1 < VPT; ++i) key[r][i] = key[r][i + 1];
        key[r][VPT - 1] = 0;
      }
      if (lane == 0) winners[warp][r][j] = best;
    }
  }
  __syncwarp();

  const bool scaled = p.renormalize || p.scale != 1.0f;
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    const int64_t row = first_row + r;
    const bool has_slot = lane < k;
    const uint32_t slot_key = has_slot ? winners[warp][r][lane] : 0u;
    const float score = has_slot ? expf(PackedKeyLogit(slot_key) - max_logit[r]) / sum[r] : 0.0f;
    const float total = p.renormalize ? SegmentSum<kWarp>(score) : 0.0f;
    const float factor = p.renormalize ? p.scale / (total + kRenormEpsilon) : p.scale;
    if (has_slot && row < p.rows()) {
      const int64_t at = row * k + lane;
      a.ids[at] = PackedKeyId(slot_key);
      a.weights[at] = scaled ? score * factor : score;
      a.token_expert_indices[at] = static_cast<int32_t>(lane * p.tokens + (p.batch == 1 ? row : row % p.tokens));
    }
  }
}

// Renormalizes / scales the k weights of `row` (already written).
__device__ __forceinline__ void ScaleSlots(const RouterArgs& a, int64_t row, float total) {
  const float factor = a.p.renormalize ? a.p.scale / (total + kRenormEpsilon) : a.p.scale;
  for (int64_t j = 0; j < a.p.k; ++j) a.weights[row * a.p.k + j] *= factor;
}

template <typename In, int VPT, int TPR>
__global__ void __launch_bounds__(kThreads, 8) RegisterRouter(RouterArgs a) {
  constexpr int kRowsPerBlock = kThreads / TPR;
  const RoutingProblem& p = a.p;
  const int lane_in_row = threadIdx.x % TPR;
  const int64_t unclamped_row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / TPR;
  // Lanes past the last row recompute the last row without writing it, so that every lane of the
  // warp takes part in the shuffles.
  const bool writes = unclamped_row < p.rows();
  const int64_t row = writes ? unclamped_row : p.rows() - 1;
  const int64_t batch_index = row / p.tokens;
  const int32_t token = static_cast<int32_t>(row - batch_index * p.tokens);
  const int E = static_cast<int>(p.experts);
  const int first = lane_in_row * VPT;
  const In* src = static_cast<const In*>(a.logits) + row * p.experts + first;

  float x[VPT];
  LoadLogits(src, first, E, x);

  float max_logit = 0.0f, sum = 1.0f;
  if (p.scoring == kSoftmax) {
    max_logit = -INFINITY;
#pragma unroll
    for (int i = 0; i < VPT; ++i) max_logit = fmaxf(max_logit, x[i]);
    max_logit = SegmentMax<TPR>(max_logit);
    sum = 0.0f;
#pragma unroll
    for (int i = 0; i < VPT; ++i) sum += expf(x[i] - max_logit);  // padding: exp(-inf) = 0
    sum = SegmentSum<TPR>(sum);
  }
  auto score_of = [&](float logit) {
    return p.scoring == kSoftmax ? expf(logit - max_logit) / sum : Sigmoid(logit);
  };

  // Keys: logits, or score + bias; NaN ranks as -inf. key 0 marks padding and taken experts.
  const float* bias = a.bias + (p.bias_batch == 1 ? 0 : batch_index) * p.experts + first;
  float key_value[VPT];
  uint32_t key[VPT];
  if (p.logit_keys()) {  // a uniform branch: no score is computed for ranking
#pragma unroll
    for (int i = 0; i < VPT; ++i) key_value[i] = CanonicalKey(x[i]);
  } else {
#pragma unroll
    for (int i = 0; i < VPT; ++i) key_value[i] = CanonicalKey(score_of(x[i]) + (first + i < E ? bias[i] : 0.0f));
  }
#pragma unroll
  for (int i = 0; i < VPT; ++i) key[i] = first + i < E ? OrderedBits(key_value[i]) : 0u;

  if (p.num_groups > 1) {
    // Groups span whole lanes (the dispatcher checked it): a group's score is the sum of its two
    // best keys, merged over its lanes; topk_groups rounds of a max over (group score, ~group).
    const int group_size = E / static_cast<int>(p.num_groups);
    const int lanes_per_group = group_size / VPT;
    float top1 = -INFINITY, top2 = -INFINITY;
#pragma unroll
    for (int i = 0; i < VPT; ++i) {
      const float v = first + i < E ? key_value[i] : -INFINITY;
      top2 = v > top1 ? top1 : fmaxf(top2, v);
      top1 = fmaxf(top1, v);
    }
    for (int offset = 1; offset < lanes_per_group; offset *= 2) {
      const float other1 = __shfl_xor_sync(0xffffffffu, top1, offset, TPR);
      const float other2 = __shfl_xor_sync(0xffffffffu, top2, offset, TPR);
      top2 = fmaxf(fminf(top1, other1), fmaxf(top2, other2));
      top1 = fmaxf(top1, other1);
    }
    const uint32_t group = static_cast<uint32_t>(first / group_size);
    const float group_score = CanonicalKey(group_size > 1 ? top1 + top2 : top1);
    uint64_t candidate = first < E ? Pack(OrderedBits(group_score), group) : 0;
    bool chosen = false;
    for (int64_t j = 0; j < p.topk_groups; ++j) {
      if (PackedId(SegmentMax<TPR>(candidate)) == group && candidate != 0) {
        chosen = true;
        candidate = 0;
      }
    }
    if (!chosen) {
#pragma unroll
      for (int i = 0; i < VPT; ++i) key[i] = 0;
    }
  }

  // k argmax rounds: one butterfly max of the lanes' best candidates; the winning lane pops it,
  // and lane j % TPR keeps slot j's winner in registers.
  Candidates candidates = BestCandidates(key, first, ~0ull);
  uint64_t slot_best[kMaxLaneSlots];
#pragma unroll
  for (int t = 0; t < kMaxLaneSlots; ++t) slot_best[t] = 0;
  uint64_t rescan_below = 0;  // nonzero: the candidates ran dry after popping this winner
  for (int64_t j = 0; j < p.k; ++j) {
    if (rescan_below != 0) {
      candidates = BestCandidates(key, first, rescan_below);
      rescan_below = 0;
    }
    const uint64_t mine = candidates.head(first);
    const uint64_t best = SegmentMax<TPR>(mine);
    if (best == mine) {
      candidates.pop();
      if (candidates.key[0] == 0) rescan_below = best;
    }
    if (j % TPR == lane_in_row) {
#pragma unroll
      for (int t = 0; t < kMaxLaneSlots; ++t) {
        if (t == j / TPR) slot_best[t] = best;
      }
    }
  }

  // Weights of this lane's slots j = lane_in_row + t * TPR. Softmax without bias ranks by the
  // logit itself, so the winner's key is its (canonical) logit; otherwise reload the logit.
  const In* row_logits = static_cast<const In*>(a.logits) + row * p.experts;
  float score[kMaxLaneSlots];
  float total = 0.0f;
#pragma unroll
  for (int t = 0; t < kMaxLaneSlots; ++t) {
    score[t] = 0.0f;
    if (lane_in_row + t * TPR < p.k) {
      const float logit = p.logit_keys() ? KeyValue(static_cast<uint32_t>(slot_best[t] >> 32))
                                         : ToFloat(row_logits[PackedId(slot_best[t])]);
      score[t] = score_of(logit);
      total += score[t];
    }
  }
  const bool scaled = p.renormalize || p.scale != 1.0f;
  if (p.renormalize) total = SegmentSum<TPR>(total);
  const float factor = p.renormalize ? p.scale / (total + kRenormEpsilon) : p.scale;
  if (writes) {
#pragma unroll
    for (int t = 0; t < kMaxLaneSlots; ++t) {
      const int64_t j = lane_in_row + t * TPR;
      if (j < p.k) {
        const int64_t at = row * p.k + j;
        a.ids[at] = static_cast<int32_t>(PackedId(slot_best[t]));
        a.weights[at] = scaled ? score[t] * factor : score[t];
        a.token_expert_indices[at] = static_cast<int32_t>(j * p.tokens + token);
      }
    }
  }
}

// Best (key, id) among this lane's entries e = lane, lane + 32, ... of keys[0, n), NaN skipped,
// reduced over the warp. Every lane returns the winner.
__device__ __forceinline__ int32_t WarpBest(const float* keys, int64_t n, int lane) {
  uint64_t best = 0;
  for (int64_t e = lane; e < n; e += kWarp) {
    const float key = keys[e];
    if (key == key) {
      const uint64_t candidate = Pack(OrderedBits(key), static_cast<uint32_t>(e));
      best = candidate > best ? candidate : best;
    }
  }
  return static_cast<int32_t>(PackedId(SegmentMax<kWarp>(best)));
}

template <typename In>
__global__ void __launch_bounds__(kThreads) SharedRouter(RouterArgs a, int warps_per_block) {
  extern __shared__ float shared[];
  const RoutingProblem& p = a.p;
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * warps_per_block + warp;
  if (row >= p.rows()) return;  // the whole warp leaves together
  const int64_t batch_index = row / p.tokens;
  const int32_t token = static_cast<int32_t>(row - batch_index * p.tokens);
  const int64_t E = p.experts;
  // Per warp: keys[E], scores[E], group_scores[num_groups].
  float* keys = shared + warp * (2 * E + p.num_groups);
  float* scores = keys + E;
  float* group_scores = scores + E;
  const In* src = static_cast<const In*>(a.logits) + row * E;
  const float* bias = a.bias + (p.bias_batch == 1 ? 0 : batch_index) * E;

  float max_logit = -INFINITY;
  for (int64_t e = lane; e < E; e += kWarp) {
    const float x = ToFloat(src[e]);
    scores[e] = x;
    max_logit = fmaxf(max_logit, x);
  }
  float sum = 0.0f;
  if (p.scoring == kSoftmax) {
    max_logit = SegmentMax<kWarp>(max_logit);
    for (int64_t e = lane; e < E; e += kWarp) sum += expf(scores[e] - max_logit);
    sum = SegmentSum<kWarp>(sum);
  }
  for (int64_t e = lane; e < E; e += kWarp) {
    const float x = scores[e];
    const float score = p.scoring == kSoftmax ? expf(x - max_logit) / sum : Sigmoid(x);
    scores[e] = score;
    keys[e] = CanonicalKey(p.logit_keys() ? x : score + bias[e]);
  }
  __syncwarp();

  if (p.num_groups > 1) {
    const int64_t group_size = E / p.num_groups;
    for (int64_t g = lane; g < p.num_groups; g += kWarp) {
      const float* group = keys + g * group_size;
      float first = -INFINITY, second = -INFINITY;
      for (int64_t i = 0; i < group_size; ++i) {
        const float v = group[i];
        second = v > first ? first : fmaxf(second, v);
        first = fmaxf(first, v);
      }
      group_scores[g] = CanonicalKey(group_size > 1 ? first + second : first);
    }
    __syncwarp();
    for (int64_t j = 0; j < p.topk_groups; ++j) {
      const int32_t chosen = WarpBest(group_scores, p.num_groups, lane);
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
  for (int64_t j = 0; j < p.k; ++j) {
    const int32_t best = WarpBest(keys, E, lane);
    const float score = scores[best];
    __syncwarp();
    if (lane == 0) {
      keys[best] = NAN;
      const int64_t at = row * p.k + j;
      a.ids[at] = best;
      a.weights[at] = score;
      a.token_expert_indices[at] = static_cast<int32_t>(j * p.tokens + token);
    }
    __syncwarp();
    total += score;
  }
  if (lane == 0 && (p.renormalize || p.scale != 1.0f)) ScaleSlots(a, row, total);
}

template <typename In, int VPT, int TPR>
cudaError_t LaunchRegister(cudaStream_t stream, const RouterArgs& args) {
  constexpr int64_t kRowsPerBlock = kThreads / TPR;
  const int64_t blocks = (args.p.rows() + kRowsPerBlock - 1) / kRowsPerBlock;
  RegisterRouter<In, VPT, TPR><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

// Threads per row of RegisterRouter: one for E <= 16 (VPT = E rounded up to a power of two), else
// 16 values per thread and ceil(E / 16) threads rounded up to a power of two.
int64_t ThreadsPerRow(int64_t experts) {
  int64_t threads = 1;
  while (threads * kValuesPerThread < experts) threads *= 2;
  return threads;
}

template <typename In>
cudaError_t DispatchRegister(cudaStream_t stream, const RouterArgs& args) {
  const int64_t E = args.p.experts;
  switch (ThreadsPerRow(E)) {
    case 1:
      if (E <= 1) return LaunchRegister<In, 1, 1>(stream, args);
      if (E <= 2) return LaunchRegister<In, 2, 1>(stream, args);
      if (E <= 4) return LaunchRegister<In, 4, 1>(stream, args);
      if (E <= 8) return LaunchRegister<In, 8, 1>(stream, args);
      return LaunchRegister<In, 16, 1>(stream, args);
    case 2: return LaunchRegister<In, 16, 2>(stream, args);
    case 4: return LaunchRegister<In, 16, 4>(stream, args);
    case 8: return LaunchRegister<In, 16, 8>(stream, args);
    case 16: return LaunchRegister<In, 16, 16>(stream, args);
    default: return LaunchRegister<In, 16, 32>(stream, args);
  }
}

// Whether RegisterRouter can run the problem: E fits, each lane keeps at most kMaxLaneSlots of the
// k slots, and groups (if any) span whole lanes.
bool FitsRegisters(const RoutingProblem& p) {
  if (p.experts > kMaxRegisterExperts || p.k > kMaxLaneSlots * ThreadsPerRow(p.experts)) return false;
  if (p.num_groups <= 1) return true;
  const int64_t group_size = p.experts / p.num_groups;
  if (p.experts <= kValuesPerThread || group_size % kValuesPerThread) return false;
  const int64_t lanes_per_group = group_size / kValuesPerThread;
  return (lanes_per_group & (lanes_per_group - 1)) == 0;
}

// Whether PackedWarpRouter runs the problem (besides 16-bit logits). At E <= 64 RegisterRouter,
// with several rows per warp, was as fast or faster (E = 60, k = 4: 11.0 vs 11.3 us on an H100).
bool FitsPackedWarp(const RoutingProblem& p) {
  return p.logit_keys() && p.num_groups <= 1 && p.experts > 2 * kWarp && p.experts <= 8 * kWarp && p.k <= kWarp;
}

template <typename In, int VPT>
cudaError_t LaunchPackedWarp(cudaStream_t stream, const RouterArgs& args) {
  constexpr int kRowsPerWarp = kPackedLogitsPerLane / VPT;
  constexpr int64_t kRowsPerBlock = kThreads / kWarp * kRowsPerWarp;
  const int64_t blocks = (args.p.rows() + kRowsPerBlock - 1) / kRowsPerBlock;
  PackedWarpRouter<In, VPT, kRowsPerWarp><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

template <typename In>
cudaError_t Launch(cudaStream_t stream, const RouterArgs& args) {
  const RoutingProblem& p = args.p;
  if constexpr (sizeof(In) == 2) {
    if (FitsPackedWarp(p)) {
      if (p.experts <= 4 * kWarp) return LaunchPackedWarp<In, 4>(stream, args);
      return LaunchPackedWarp<In, 8>(stream, args);
    }
  }
  if (FitsRegisters(p)) return DispatchRegister<In>(stream, args);
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxMoeTopkSoftmaxCuda, jax_moe::TopkSoftmaxCuda,
    jax_moe::BindTopkSoftmax(xla::ffi::Ffi::Bind().Ctx<xla::ffi::PlatformStream<cudaStream_t>>()),
    {xla::ffi::Traits::kCmdBufferCompatible});
