// The CUDA kernels of aligned_layout.h's two FFI targets and their launches, apart from the handlers
// (aligned_layout_cuda.cu) so that tests/cuda_host can also run them on CPU threads:
//   1. ChunkStarts: per expert, its rows in the earlier chunks (an exclusive scan over the chunks,
//      32 experts a block, 32 chunk groups each) and its row count.
//   2. PlaceRows: every block scans the E <= 512 counts into the experts' starts and tiles,
//      then places its rows (row_token, row_weight, slot_row, slot_routed), fills the gaps after
//      each expert and the rows past the last one with zeros, and writes its share of the tile
//      tables.
//   3. SlotDots ("jax_moe_slot_dots"): one thread a (token, slot).
// No atomics: every output element is written by exactly one thread (deterministic).
// Built by nvcc, or by a host compiler after tests/cuda_host/cuda_host.h (JAX_MOE_CUDA_ON_HOST),
// which defines what this file takes from CUDA: the thread indexes, __syncthreads, cub::BlockScan
// and JAX_MOE_LAUNCH.
#ifndef JAX_MOE_FFI_ALIGNED_LAYOUT_KERNELS_CUH_
#define JAX_MOE_FFI_ALIGNED_LAYOUT_KERNELS_CUH_

#include <algorithm>
#include <cstdint>

#ifndef JAX_MOE_CUDA_ON_HOST
#include <cuda_runtime.h>

#include <cub/block/block_scan.cuh>
#define JAX_MOE_LAUNCH(kernel, grid, block, stream) kernel<<<(grid), (block), 0, (stream)>>>
#endif

#include "aligned_layout.h"

namespace jax_moe {
namespace layout_kernels {

constexpr int kLanes = 32;   // experts a ChunkStarts block
constexpr int kGroups = 32;  // chunk groups a ChunkStarts block
constexpr int kPlaceThreads = 256;
constexpr int kScanItems = kMaxLayoutExperts / kPlaceThreads;

__global__ void ChunkStarts(const int32_t* __restrict__ counts, int32_t* __restrict__ before,
                            int32_t* __restrict__ size, int chunks, int columns, int experts) {
  __shared__ int32_t partial[kGroups][kLanes + 1];
  const int e = blockIdx.x * kLanes + threadIdx.x;
  const int per_group = (chunks + kGroups - 1) / kGroups;
  const int c0 = threadIdx.y * per_group, c1 = min(chunks, c0 + per_group);
  int32_t sum = 0;
  if (e < columns) {
#pragma unroll 8
    for (int c = c0; c < c1; ++c) sum += counts[static_cast<int64_t>(c) * columns + e];
  }
  partial[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0) {
    int32_t running = 0;
    for (int g = 0; g < kGroups; ++g) {
      const int32_t here = partial[g][threadIdx.x];
      partial[g][threadIdx.x] = running;
      running += here;
    }
    if (e < experts) size[e] = running;
  }
  __syncthreads();
  if (e < columns) {
    int32_t running = e < experts ? partial[threadIdx.y][threadIdx.x] : 0;
#pragma unroll 8
    for (int c = c0; c < c1; ++c) {
      const int64_t at = static_cast<int64_t>(c) * columns + e;
      before[at] = running;
      if (e < experts) running += counts[at];
    }
  }
}

// The layout's device buffers (a handler's, or a test's host arrays).
struct LayoutBuffers {
  const int32_t* ids;
  const int32_t* rank_in_chunk;
  const int32_t* counts;
  const float* weights;
  int32_t* row_token;
  float* row_weight;
  int32_t* slot_row;
  bool* slot_routed;
  int32_t* tile_expert;
  int32_t* tile_start;
  int32_t* tile_lo;
  int32_t* tile_size;
  int32_t* expert_start;
  int32_t* expert_size;
  int32_t* tile_end;
  int32_t* chunk_start;
};

struct PlaceArgs {
  LayoutBuffers b;
  int n, top_k, experts, block_m, chunk, columns, rows, num_tiles;
};

__global__ void __launch_bounds__(kPlaceThreads) PlaceRows(PlaceArgs a) {
  using Scan = cub::BlockScan<int32_t, kPlaceThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ int32_t start[kMaxLayoutExperts], count[kMaxLayoutExperts], end[kMaxLayoutExperts];
  __shared__ int32_t total_span;

  // The experts' starts (exclusive scan of their rows rounded up to the grid) and tile ends
  // (inclusive scan of their tiles), kScanItems consecutive experts a thread.
  int32_t span[kScanItems], tiles[kScanItems];
  for (int j = 0; j < kScanItems; ++j) {
    const int e = threadIdx.x * kScanItems + j;
    const int32_t c = e < a.experts ? a.b.expert_size[e] : 0;
    span[j] = (c + kAlignRows - 1) / kAlignRows * kAlignRows;
    tiles[j] = (c + a.block_m - 1) / a.block_m;
    if (e < kMaxLayoutExperts) count[e] = c;
  }
  int32_t spans_total;
  Scan(scan_storage).ExclusiveSum(span, span, spans_total);
  __syncthreads();
  Scan(scan_storage).InclusiveSum(tiles, tiles);
  for (int j = 0; j < kScanItems; ++j) {
    const int e = threadIdx.x * kScanItems + j;
    start[e] = span[j];
    end[e] = tiles[j];
  }
  if (threadIdx.x == 0) total_span = spans_total;
  __syncthreads();

  const int stride = gridDim.x * blockDim.x;
  const int first = blockIdx.x * blockDim.x + threadIdx.x;
  if (blockIdx.x == 0) {
    for (int e = threadIdx.x; e < a.experts; e += blockDim.x) {
      a.b.expert_start[e] = start[e];
      a.b.tile_end[e] = end[e];
    }
  }
  // The tile tables: tile t is the expert's whose tiles end first after t.
  const int used_tiles = end[a.experts - 1];
  for (int t = first; t < a.num_tiles; t += stride) {
    int32_t expert = -1, tile_row = 0, rows_here = 0;
    if (t < used_tiles) {
      int lo = 0, hi = a.experts - 1;
      while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (end[mid] > t) hi = mid; else lo = mid + 1;
      }
      const int32_t offset = (t - (end[lo] - (count[lo] + a.block_m - 1) / a.block_m)) * a.block_m;
      expert = lo;
      tile_row = start[lo] + offset;
      rows_here = min(a.block_m, count[lo] - offset);
    }
    a.b.tile_expert[t] = expert;
    a.b.tile_start[t] = tile_row;
    a.b.tile_lo[t] = 0;
    a.b.tile_size[t] = rows_here;
  }
  // The routed rows, each to its expert's start + its rank.
  for (int i = first; i < a.n; i += stride) {
    const int32_t e = a.b.ids[i];
    const bool routed = e >= 0 && e < a.experts;
    int32_t row = a.rows;
    if (routed) {
      row = start[e] + a.b.chunk_start[static_cast<int64_t>(i / a.chunk) * a.columns + e] +
            a.b.rank_in_chunk[i];
      a.b.row_token[row] = i / a.top_k;
      a.b.row_weight[row] = a.b.weights[i];
    }
    a.b.slot_row[i] = row;
    a.b.slot_routed[i] = routed;
  }
  // Zeros in the rows no routed row takes: each expert's gap up to the grid, then the rest.
  for (int e = first; e < a.experts; e += stride) {
    for (int32_t r = start[e] + count[e]; r < start[e] + (count[e] + kAlignRows - 1) / kAlignRows * kAlignRows; ++r) {
      a.b.row_token[r] = 0;
      a.b.row_weight[r] = 0.0f;
    }
  }
  for (int r = total_span + first; r < a.rows; r += stride) {
    a.b.row_token[r] = 0;
    a.b.row_weight[r] = 0.0f;
  }
}

// One thread a (token, slot): its row's tile, then the n-blocks' values summed in order.
__global__ void SlotDots(const float* __restrict__ tile_dots, const int32_t* __restrict__ ids,
                         const int32_t* __restrict__ slot_row, const int32_t* __restrict__ expert_start,
                         const int32_t* __restrict__ expert_size, const int32_t* __restrict__ tile_end,
                         float* __restrict__ out, int n, int experts, int block_m, int n_blocks) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int32_t e = ids[i];
  float sum = 0.0f;
  if (e >= 0 && e < experts) {
    const int32_t r = slot_row[i] - expert_start[e];
    const int32_t tile = tile_end[e] - (expert_size[e] + block_m - 1) / block_m + r / block_m;
    const float* values = tile_dots + static_cast<int64_t>(tile) * n_blocks * block_m + r % block_m;
    for (int b = 0; b < n_blocks; ++b) sum += values[static_cast<int64_t>(b) * block_m];
  }
  out[i] = sum;
}

// ChunkStarts, then PlaceRows, on stream. p: DescribeLayout's, with rows and chunks * columns in int32.
inline void LaunchAlignedLayout(cudaStream_t stream, const LayoutProblem& p, const LayoutBuffers& b) {
  const dim3 starts_grid(static_cast<unsigned>((p.columns + kLanes - 1) / kLanes));
  JAX_MOE_LAUNCH(ChunkStarts, starts_grid, dim3(kLanes, kGroups), stream)(
      b.counts, b.chunk_start, b.expert_size, static_cast<int>(p.chunks), static_cast<int>(p.columns),
      static_cast<int>(p.experts));
  const PlaceArgs a{b, static_cast<int>(p.n), static_cast<int>(p.top_k), static_cast<int>(p.experts),
                   static_cast<int>(p.block_m), static_cast<int>(p.chunk), static_cast<int>(p.columns),
                   static_cast<int>(p.rows), static_cast<int>(p.num_tiles)};
  const int64_t work = std::max<int64_t>(std::max(p.n, p.num_tiles), 1);
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((work + kPlaceThreads - 1) / kPlaceThreads, 1024));
  JAX_MOE_LAUNCH(PlaceRows, dim3(blocks), dim3(kPlaceThreads), stream)(a);
}

// SlotDots on stream. p: DescribeSlotDots', with n >= 1 in int32.
inline void LaunchSlotDots(cudaStream_t stream, const SlotDotsProblem& p, const float* tile_dots,
                           const int32_t* ids, const int32_t* slot_row, const int32_t* expert_start,
                           const int32_t* expert_size, const int32_t* tile_end, float* out) {
  constexpr int kThreads = 256;
  JAX_MOE_LAUNCH(SlotDots, dim3(static_cast<unsigned>((p.n + kThreads - 1) / kThreads)), dim3(kThreads), stream)(
      tile_dots, ids, slot_row, expert_start, expert_size, tile_end, out, static_cast<int>(p.n),
      static_cast<int>(p.experts), static_cast<int>(p.block_m), static_cast<int>(p.n_blocks));
}

}  // namespace layout_kernels
}  // namespace jax_moe

#endif  // JAX_MOE_FFI_ALIGNED_LAYOUT_KERNELS_CUH_
