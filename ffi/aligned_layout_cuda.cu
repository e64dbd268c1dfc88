// CUDA handler of the aligned layout (XLA FFI target "jax_moe_aligned_layout", platform "CUDA"):
// aligned_layout.h's contract in two kernels, where XLA took ~15 small ones.
//   1. ChunkStarts: per expert, its rows in the earlier chunks (an exclusive scan over the chunks,
//      32 experts a block, 32 chunk groups each) and its row count.
//   2. PlaceRows: every block scans the E counts into the experts' starts and tiles (E <= 512),
//      then places its rows (row_token, row_weight, slot_row, slot_routed), fills the gaps after
//      each expert and the rows past the last one with zeros, and writes its share of the tile
//      tables.
// No atomics: every output element is written by exactly one thread (deterministic).
// Also the handler of "jax_moe_slot_dots" (aligned_layout.h): one thread a (token, slot).
#include <cuda_runtime.h>

#include <algorithm>

#include <cub/block/block_scan.cuh>

#include "aligned_layout.h"

namespace jax_moe {
namespace {

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

struct PlaceArgs {
  const int32_t* ids;
  const int32_t* rank;
  const float* weights;
  const int32_t* before;
  const int32_t* size;
  int32_t* row_token;
  float* row_weight;
  int32_t* slot_row;
  bool* slot_routed;
  int32_t* tile_expert;
  int32_t* tile_start;
  int32_t* tile_lo;
  int32_t* tile_size;
  int32_t* expert_start;
  int32_t* tile_end;
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
    const int32_t c = e < a.experts ? a.size[e] : 0;
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
      a.expert_start[e] = start[e];
      a.tile_end[e] = end[e];
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
    a.tile_expert[t] = expert;
    a.tile_start[t] = tile_row;
    a.tile_lo[t] = 0;
    a.tile_size[t] = rows_here;
  }
  // The routed rows, each to its expert's start + its rank.
  for (int i = first; i < a.n; i += stride) {
    const int32_t e = a.ids[i];
    const bool routed = e >= 0 && e < a.experts;
    int32_t row = a.rows;
    if (routed) {
      row = start[e] + a.before[static_cast<int64_t>(i / a.chunk) * a.columns + e] + a.rank[i];
      a.row_token[row] = i / a.top_k;
      a.row_weight[row] = a.weights[i];
    }
    a.slot_row[i] = row;
    a.slot_routed[i] = routed;
  }
  // Zeros in the rows no routed row takes: each expert's gap up to the grid, then the rest.
  for (int e = first; e < a.experts; e += stride) {
    for (int32_t r = start[e] + count[e]; r < start[e] + (count[e] + kAlignRows - 1) / kAlignRows * kAlignRows; ++r) {
      a.row_token[r] = 0;
      a.row_weight[r] = 0.0f;
    }
  }
  for (int r = total_span + first; r < a.rows; r += stride) {
    a.row_token[r] = 0;
    a.row_weight[r] = 0.0f;
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

ffi::Error SlotDotsCuda(cudaStream_t stream, ffi::Buffer<ffi::F32> tile_dots, ffi::Buffer<ffi::S32> ids,
                        ffi::Buffer<ffi::S32> slot_row, ffi::Buffer<ffi::S32> expert_start,
                        ffi::Buffer<ffi::S32> expert_size, ffi::Buffer<ffi::S32> tile_end, int64_t n_blocks,
                        ffi::Result<ffi::Buffer<ffi::F32>> out) {
  SlotDotsProblem p;
  ffi::Error error = DescribeSlotDots(tile_dots, ids, slot_row, expert_start, expert_size, tile_end, n_blocks, &p);
  if (error.failure()) return error;
  if (p.n == 0) return ffi::Error::Success();
  if (p.n > INT32_MAX) return ffi::Error::InvalidArgument("slot_dots: more rows than int32 indexes");
  constexpr int kThreads = 256;
  SlotDots<<<static_cast<unsigned>((p.n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      tile_dots.typed_data(), ids.typed_data(), slot_row.typed_data(), expert_start.typed_data(),
      expert_size.typed_data(), tile_end.typed_data(), out->typed_data(), static_cast<int>(p.n),
      static_cast<int>(p.experts), static_cast<int>(p.block_m), static_cast<int>(n_blocks));
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return ffi::Error::Internal(std::string("slot_dots CUDA launch failed: ") + cudaGetErrorString(err));
  }
  return ffi::Error::Success();
}

ffi::Error AlignedLayoutCuda(cudaStream_t stream, ffi::Buffer<ffi::S32> ids, ffi::Buffer<ffi::S32> rank_in_chunk,
                             ffi::Buffer<ffi::S32> counts, ffi::Buffer<ffi::F32> weights, int64_t top_k,
                             int64_t experts, int64_t block_m, int64_t chunk,
                             ffi::Result<ffi::Buffer<ffi::S32>> row_token,
                             ffi::Result<ffi::Buffer<ffi::F32>> row_weight,
                             ffi::Result<ffi::Buffer<ffi::S32>> slot_row,
                             ffi::Result<ffi::Buffer<ffi::PRED>> slot_routed,
                             ffi::Result<ffi::Buffer<ffi::S32>> tile_expert,
                             ffi::Result<ffi::Buffer<ffi::S32>> tile_start,
                             ffi::Result<ffi::Buffer<ffi::S32>> tile_lo,
                             ffi::Result<ffi::Buffer<ffi::S32>> tile_size,
                             ffi::Result<ffi::Buffer<ffi::S32>> expert_start,
                             ffi::Result<ffi::Buffer<ffi::S32>> expert_size,
                             ffi::Result<ffi::Buffer<ffi::S32>> tile_end,
                             ffi::Result<ffi::Buffer<ffi::S32>> chunk_start) {
  LayoutProblem p;
  ffi::Error error = DescribeLayout(ids, rank_in_chunk, counts, weights, top_k, experts, block_m, chunk,
                                    row_token, tile_expert, &p);
  if (error.failure()) return error;
  if (p.rows > INT32_MAX || p.chunks * p.columns > INT32_MAX) {
    return ffi::Error::InvalidArgument("aligned_layout: more rows than int32 indexes");
  }
  const dim3 starts_grid(static_cast<unsigned>((p.columns + kLanes - 1) / kLanes));
  ChunkStarts<<<starts_grid, dim3(kLanes, kGroups), 0, stream>>>(
      counts.typed_data(), chunk_start->typed_data(), expert_size->typed_data(), static_cast<int>(p.chunks),
      static_cast<int>(p.columns), static_cast<int>(experts));
  PlaceArgs a{ids.typed_data(), rank_in_chunk.typed_data(), weights.typed_data(), chunk_start->typed_data(),
              expert_size->typed_data(), row_token->typed_data(), row_weight->typed_data(),
              slot_row->typed_data(), slot_routed->typed_data(), tile_expert->typed_data(),
              tile_start->typed_data(), tile_lo->typed_data(), tile_size->typed_data(), expert_start->typed_data(),
              tile_end->typed_data(), static_cast<int>(p.n), static_cast<int>(top_k),
              static_cast<int>(experts), static_cast<int>(block_m), static_cast<int>(chunk),
              static_cast<int>(p.columns), static_cast<int>(p.rows), static_cast<int>(p.num_tiles)};
  const int64_t work = std::max<int64_t>(std::max(p.n, p.num_tiles), 1);
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((work + kPlaceThreads - 1) / kPlaceThreads, 1024));
  PlaceRows<<<blocks, kPlaceThreads, 0, stream>>>(a);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return ffi::Error::Internal(std::string("aligned_layout CUDA launch failed: ") + cudaGetErrorString(err));
  }
  return ffi::Error::Success();
}

}  // namespace
}  // namespace jax_moe

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxMoeAlignedLayoutCuda, jax_moe::AlignedLayoutCuda,
    jax_moe::BindAlignedLayout(xla::ffi::Ffi::Bind().Ctx<xla::ffi::PlatformStream<cudaStream_t>>()),
    {xla::ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxMoeSlotDotsCuda, jax_moe::SlotDotsCuda,
    jax_moe::BindSlotDots(xla::ffi::Ffi::Bind().Ctx<xla::ffi::PlatformStream<cudaStream_t>>()),
    {xla::ffi::Traits::kCmdBufferCompatible});
