// The aligned (training) layout of jax_moe.permutation.align_to_tiles(aligned_experts=True), built
// from the routing kernel's outputs (XLA FFI target "jax_moe_aligned_layout", CPU and CUDA):
//
//   ids            int32 [n]               each (token, slot) row's expert; outside [0, E): not routed
//   rank_in_chunk  int32 [>= n]            the rows before it in its chunk with its expert
//   counts         int32 [chunks, columns] each chunk's rows per expert (columns >= E)
//   weights        f32   [n]               routing weights
// ->
//   row_token, row_weight  int32 / f32 [rows]  (0 in rows no routed row takes)
//   slot_row               int32 [n]           sorted row of each (token, slot); rows if not routed
//   slot_routed            bool  [n]           whether it is routed (its id in [0, E))
//   tile_expert, tile_start, tile_lo, tile_size  int32 [num_tiles]
//   expert_start, expert_size, tile_end          int32 [E]
//   chunk_start            int32 [chunks, columns]  rows of each expert in the earlier chunks
//                                                   (the CUDA handler's scratch)
// Every expert starts on the ALIGN_ROWS grid; its rank-r row is row expert_start + r; its tiles are
// block_m-row blocks from its start, numbered after the earlier experts' tiles.
#ifndef JAX_MOE_FFI_ALIGNED_LAYOUT_H_
#define JAX_MOE_FFI_ALIGNED_LAYOUT_H_

#include <cstdint>
#include <string>
#include <utility>

#include "xla/ffi/api/ffi.h"

namespace jax_moe {

namespace ffi = xla::ffi;

constexpr int64_t kAlignRows = 8;        // jax_moe.permutation.ALIGN_ROWS
constexpr int64_t kMaxLayoutExperts = 512;

struct LayoutProblem {
  int64_t n;          // routed (token, slot) rows: T * k
  int64_t top_k;
  int64_t experts;    // E
  int64_t block_m;
  int64_t chunk;      // rows per chunk of the routing kernel
  int64_t chunks;
  int64_t columns;
  int64_t rows;       // row_token's length
  int64_t num_tiles;
};

inline ffi::Error DescribeLayout(ffi::Buffer<ffi::S32> ids, ffi::Buffer<ffi::S32> rank_in_chunk,
                                 ffi::Buffer<ffi::S32> counts, ffi::Buffer<ffi::F32> weights,
                                 int64_t top_k, int64_t experts, int64_t block_m, int64_t chunk,
                                 ffi::Result<ffi::Buffer<ffi::S32>> row_token,
                                 ffi::Result<ffi::Buffer<ffi::S32>> tile_expert,
                                 LayoutProblem* p) {
  if (ids.dimensions().size() != 1 || weights.dimensions().size() != 1 ||
      rank_in_chunk.dimensions().size() != 1 || counts.dimensions().size() != 2) {
    return ffi::Error::InvalidArgument("aligned_layout: ids, rank_in_chunk, weights [n], counts [chunks, columns]");
  }
  p->n = ids.dimensions()[0];
  p->top_k = top_k;
  p->experts = experts;
  p->block_m = block_m;
  p->chunk = chunk;
  p->chunks = counts.dimensions()[0];
  p->columns = counts.dimensions()[1];
  p->rows = row_token->dimensions()[0];
  p->num_tiles = tile_expert->dimensions()[0];
  if (experts < 1 || experts > kMaxLayoutExperts || p->columns < experts) {
    return ffi::Error::InvalidArgument("aligned_layout: need 1 <= E <= 512 and columns >= E");
  }
  if (top_k < 1 || p->n % top_k != 0 || weights.dimensions()[0] != p->n || block_m < 1 ||
      block_m % kAlignRows != 0 || chunk < 1 || p->chunks * chunk < p->n ||
      rank_in_chunk.dimensions()[0] < p->n) {
    return ffi::Error::InvalidArgument("aligned_layout: inconsistent sizes");
  }
  // Every routed row with its expert's alignment gap fits, and every expert's tiles do (at most
  // n // block_m + m tiles for m experts with rows).
  const int64_t used = experts < p->n ? experts : p->n;
  if (p->rows < p->n + (kAlignRows - 1) * used || p->num_tiles < p->n / block_m + used) {
    return ffi::Error::InvalidArgument("aligned_layout: rows or num_tiles too small");
  }
  return ffi::Error::Success();
}

template <typename Binding>
auto BindAlignedLayout(Binding binding) {
  return std::move(binding)
      .template Arg<ffi::Buffer<ffi::S32>>()             // ids
      .template Arg<ffi::Buffer<ffi::S32>>()             // rank_in_chunk
      .template Arg<ffi::Buffer<ffi::S32>>()             // counts
      .template Arg<ffi::Buffer<ffi::F32>>()             // weights
      .template Attr<int64_t>("top_k")
      .template Attr<int64_t>("num_experts")
      .template Attr<int64_t>("block_m")
      .template Attr<int64_t>("chunk")
      .template Ret<ffi::Buffer<ffi::S32>>()             // row_token
      .template Ret<ffi::Buffer<ffi::F32>>()             // row_weight
      .template Ret<ffi::Buffer<ffi::S32>>()             // slot_row
      .template Ret<ffi::Buffer<ffi::PRED>>()            // slot_routed
      .template Ret<ffi::Buffer<ffi::S32>>()             // tile_expert
      .template Ret<ffi::Buffer<ffi::S32>>()             // tile_start
      .template Ret<ffi::Buffer<ffi::S32>>()             // tile_lo
      .template Ret<ffi::Buffer<ffi::S32>>()             // tile_size
      .template Ret<ffi::Buffer<ffi::S32>>()             // expert_start
      .template Ret<ffi::Buffer<ffi::S32>>()             // expert_size
      .template Ret<ffi::Buffer<ffi::S32>>()             // tile_end
      .template Ret<ffi::Buffer<ffi::S32>>();            // chunk_start
}

// "jax_moe_slot_dots": each (token, slot) row's value from down_backward's per-(tile, n-block) row
// values on an aligned layout, summed over the n-blocks in order:
//   tile_dots  f32 [num_tiles * n_blocks, block_m]  row (tile * n_blocks + b) holds the tile's rows
//   ids, slot_row  int32 [n];  expert_start, expert_size, tile_end  int32 [E]  (the layout's)
// -> f32 [n]  (0 for out-of-range ids). The row r of expert e lies in tile
// tile_end[e] - ceil(expert_size[e] / block_m) + (r - expert_start[e]) / block_m.
template <typename Binding>
auto BindSlotDots(Binding binding) {
  return std::move(binding)
      .template Arg<ffi::Buffer<ffi::F32>>()             // tile_dots
      .template Arg<ffi::Buffer<ffi::S32>>()             // ids
      .template Arg<ffi::Buffer<ffi::S32>>()             // slot_row
      .template Arg<ffi::Buffer<ffi::S32>>()             // expert_start
      .template Arg<ffi::Buffer<ffi::S32>>()             // expert_size
      .template Arg<ffi::Buffer<ffi::S32>>()             // tile_end
      .template Attr<int64_t>("n_blocks")
      .template Ret<ffi::Buffer<ffi::F32>>();            // per (token, slot)
}

struct SlotDotsProblem {
  int64_t n, experts, block_m, n_blocks, tile_rows;
};

inline ffi::Error DescribeSlotDots(ffi::Buffer<ffi::F32> tile_dots, ffi::Buffer<ffi::S32> ids,
                                   ffi::Buffer<ffi::S32> slot_row, ffi::Buffer<ffi::S32> expert_start,
                                   ffi::Buffer<ffi::S32> expert_size, ffi::Buffer<ffi::S32> tile_end,
                                   int64_t n_blocks, SlotDotsProblem* p) {
  if (tile_dots.dimensions().size() != 2 || ids.dimensions().size() != 1 ||
      slot_row.dimensions().size() != 1 || ids.dimensions()[0] != slot_row.dimensions()[0] ||
      expert_start.dimensions().size() != 1 || expert_size.element_count() != expert_start.element_count() ||
      tile_end.element_count() != expert_start.element_count() || n_blocks < 1 ||
      tile_dots.dimensions()[0] % n_blocks != 0) {
    return ffi::Error::InvalidArgument("slot_dots: inconsistent sizes");
  }
  p->n = ids.dimensions()[0];
  p->experts = expert_start.dimensions()[0];
  p->block_m = tile_dots.dimensions()[1];
  p->n_blocks = n_blocks;
  p->tile_rows = tile_dots.dimensions()[0];
  return ffi::Error::Success();
}

}  // namespace jax_moe

#endif  // JAX_MOE_FFI_ALIGNED_LAYOUT_H_
