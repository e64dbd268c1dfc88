// CPU handler of the aligned layout (XLA FFI target "jax_moe_aligned_layout", platform "cpu"):
// aligned_layout.h's contract, one pass at a time.
#include <algorithm>
#include <vector>

#include "aligned_layout.h"

namespace jax_moe {
namespace {

ffi::Error AlignedLayoutCpu(ffi::Buffer<ffi::S32> ids, ffi::Buffer<ffi::S32> rank_in_chunk,
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
  const int32_t* id = ids.typed_data();
  const int32_t* rank = rank_in_chunk.typed_data();
  const int32_t* count = counts.typed_data();
  int32_t* before = chunk_start->typed_data();
  int32_t* size = expert_size->typed_data();
  int32_t* start = expert_start->typed_data();
  int32_t* end = tile_end->typed_data();

  // Each expert's rows in the earlier chunks, and in all of them.
  std::fill(size, size + experts, 0);
  for (int64_t c = 0; c < p.chunks; ++c) {
    for (int64_t e = 0; e < p.columns; ++e) {
      before[c * p.columns + e] = e < experts ? size[e] : 0;
      if (e < experts) size[e] += count[c * p.columns + e];
    }
  }
  // Experts' starts on the grid and their tiles.
  int32_t next_row = 0, next_tile = 0;
  for (int64_t e = 0; e < experts; ++e) {
    start[e] = next_row;
    next_row += static_cast<int32_t>((size[e] + kAlignRows - 1) / kAlignRows * kAlignRows);
    next_tile += static_cast<int32_t>((size[e] + block_m - 1) / block_m);
    end[e] = next_tile;
  }
  std::fill(tile_expert->typed_data(), tile_expert->typed_data() + p.num_tiles, -1);
  std::fill(tile_start->typed_data(), tile_start->typed_data() + p.num_tiles, 0);
  std::fill(tile_lo->typed_data(), tile_lo->typed_data() + p.num_tiles, 0);
  std::fill(tile_size->typed_data(), tile_size->typed_data() + p.num_tiles, 0);
  for (int64_t e = 0; e < experts; ++e) {
    const int32_t first = e == 0 ? 0 : end[e - 1];
    for (int32_t t = first; t < end[e]; ++t) {
      const int32_t offset = static_cast<int32_t>((t - first) * block_m);
      tile_expert->typed_data()[t] = static_cast<int32_t>(e);
      tile_start->typed_data()[t] = start[e] + offset;
      tile_size->typed_data()[t] = std::min(static_cast<int32_t>(block_m), size[e] - offset);
    }
  }
  // The rows.
  std::fill(row_token->typed_data(), row_token->typed_data() + p.rows, 0);
  std::fill(row_weight->typed_data(), row_weight->typed_data() + p.rows, 0.0f);
  for (int64_t i = 0; i < p.n; ++i) {
    const int32_t e = id[i];
    const bool routed = e >= 0 && e < experts;
    slot_routed->typed_data()[i] = routed;
    if (!routed) {
      slot_row->typed_data()[i] = static_cast<int32_t>(p.rows);
      continue;
    }
    const int32_t row = start[e] + before[(i / chunk) * p.columns + e] + rank[i];
    row_token->typed_data()[row] = static_cast<int32_t>(i / top_k);
    row_weight->typed_data()[row] = weights.typed_data()[i];
    slot_row->typed_data()[i] = row;
  }
  return ffi::Error::Success();
}

ffi::Error SlotDotsCpu(ffi::Buffer<ffi::F32> tile_dots, ffi::Buffer<ffi::S32> ids, ffi::Buffer<ffi::S32> slot_row,
                       ffi::Buffer<ffi::S32> expert_start, ffi::Buffer<ffi::S32> expert_size,
                       ffi::Buffer<ffi::S32> tile_end, int64_t n_blocks, ffi::Result<ffi::Buffer<ffi::F32>> out) {
  SlotDotsProblem p;
  ffi::Error error = DescribeSlotDots(tile_dots, ids, slot_row, expert_start, expert_size, tile_end, n_blocks, &p);
  if (error.failure()) return error;
  for (int64_t i = 0; i < p.n; ++i) {
    const int32_t e = ids.typed_data()[i];
    float sum = 0.0f;
    if (e >= 0 && e < p.experts) {
      const int64_t r = slot_row.typed_data()[i] - expert_start.typed_data()[e];
      const int64_t tiles = (expert_size.typed_data()[e] + p.block_m - 1) / p.block_m;
      const int64_t tile = tile_end.typed_data()[e] - tiles + r / p.block_m;
      if (r < 0 || tile < 0 || (tile + 1) * n_blocks > p.tile_rows) {
        return ffi::Error::InvalidArgument("slot_dots: a row outside its expert's tiles");
      }
      for (int64_t b = 0; b < n_blocks; ++b) sum += tile_dots.typed_data()[(tile * n_blocks + b) * p.block_m + r % p.block_m];
    }
    out->typed_data()[i] = sum;
  }
  return ffi::Error::Success();
}

}  // namespace
}  // namespace jax_moe

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxMoeSlotDotsCpu, jax_moe::SlotDotsCpu, jax_moe::BindSlotDots(xla::ffi::Ffi::Bind()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxMoeAlignedLayoutCpu, jax_moe::AlignedLayoutCpu,
                              jax_moe::BindAlignedLayout(xla::ffi::Ffi::Bind()));
