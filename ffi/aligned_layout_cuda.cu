// CUDA handlers of "jax_moe_aligned_layout" and "jax_moe_slot_dots" (aligned_layout.h's contracts;
// platform "CUDA"): checks, then the kernels of aligned_layout_kernels.cuh, where XLA took ~15 small
// ones for the layout and a zero fill, a scatter and a gather for slot_dots.
#include <cuda_runtime.h>

#include <string>

#include "aligned_layout.h"
#include "aligned_layout_kernels.cuh"

namespace jax_moe {
namespace {

ffi::Error SlotDotsCuda(cudaStream_t stream, ffi::Buffer<ffi::F32> tile_dots, ffi::Buffer<ffi::S32> ids,
                        ffi::Buffer<ffi::S32> slot_row, ffi::Buffer<ffi::S32> expert_start,
                        ffi::Buffer<ffi::S32> expert_size, ffi::Buffer<ffi::S32> tile_end, int64_t n_blocks,
                        ffi::Result<ffi::Buffer<ffi::F32>> out) {
  SlotDotsProblem p;
  ffi::Error error = DescribeSlotDots(tile_dots, ids, slot_row, expert_start, expert_size, tile_end, n_blocks, &p);
  if (error.failure()) return error;
  if (p.n == 0) return ffi::Error::Success();
  if (p.n > INT32_MAX) return ffi::Error::InvalidArgument("slot_dots: more rows than int32 indexes");
  layout_kernels::LaunchSlotDots(stream, p, tile_dots.typed_data(), ids.typed_data(), slot_row.typed_data(),
                                 expert_start.typed_data(), expert_size.typed_data(), tile_end.typed_data(),
                                 out->typed_data());
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
  const layout_kernels::LayoutBuffers buffers{
      ids.typed_data(), rank_in_chunk.typed_data(), counts.typed_data(), weights.typed_data(),
      row_token->typed_data(), row_weight->typed_data(), slot_row->typed_data(), slot_routed->typed_data(),
      tile_expert->typed_data(), tile_start->typed_data(), tile_lo->typed_data(), tile_size->typed_data(),
      expert_start->typed_data(), expert_size->typed_data(), tile_end->typed_data(), chunk_start->typed_data()};
  layout_kernels::LaunchAlignedLayout(stream, p, buffers);
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
