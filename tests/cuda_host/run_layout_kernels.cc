// ffi/aligned_layout_kernels.cuh's launches on CPU threads (cuda_host.h), for test_cuda_host.py:
//
//   run_layout_kernels aligned_layout DIR REVERSE n top_k experts block_m chunk chunks columns rows num_tiles
//   run_layout_kernels slot_dots DIR REVERSE n experts block_m n_blocks tile_rows
//
// reads the inputs from DIR/NAME.bin (raw little-endian arrays, aligned_layout.h's names), fills
// every output with 0xa5 bytes (so that an element no thread writes shows), runs the kernels with
// the blocks in order (REVERSE 0) or last to first (1), and writes DIR/NAME.out.
#include "cuda_host.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "aligned_layout_kernels.cuh"

namespace {

std::string dir;

template <typename T>
std::vector<T> Read(const std::string& name, int64_t count) {
  std::vector<T> values(static_cast<size_t>(count));
  std::ifstream file(dir + "/" + name + ".bin", std::ios::binary);
  file.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(count * sizeof(T)));
  if (!file || file.peek() != std::ifstream::traits_type::eof()) {
    std::fprintf(stderr, "%s.bin: not %lld elements\n", name.c_str(), static_cast<long long>(count));
    std::exit(2);
  }
  return values;
}

template <typename T>
std::vector<T> Unwritten(int64_t count) {
  std::vector<T> values(static_cast<size_t>(count));
  std::memset(values.data(), 0xa5, values.size() * sizeof(T));
  return values;
}

template <typename T>
void Write(const std::string& name, const std::vector<T>& values) {
  std::ofstream file(dir + "/" + name + ".out", std::ios::binary);
  file.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(T)));
}

int AlignedLayout(char** arg) {
  jax_moe::LayoutProblem p;
  p.n = std::stoll(arg[0]);
  p.top_k = std::stoll(arg[1]);
  p.experts = std::stoll(arg[2]);
  p.block_m = std::stoll(arg[3]);
  p.chunk = std::stoll(arg[4]);
  p.chunks = std::stoll(arg[5]);
  p.columns = std::stoll(arg[6]);
  p.rows = std::stoll(arg[7]);
  p.num_tiles = std::stoll(arg[8]);
  const auto ids = Read<int32_t>("ids", p.n), rank_in_chunk = Read<int32_t>("rank_in_chunk", p.n);
  const auto counts = Read<int32_t>("counts", p.chunks * p.columns);
  const auto weights = Read<float>("weights", p.n);
  auto row_token = Unwritten<int32_t>(p.rows), slot_row = Unwritten<int32_t>(p.n);
  auto row_weight = Unwritten<float>(p.rows);
  auto slot_routed = Unwritten<uint8_t>(p.n);  // bool's bytes (std::vector<bool> packs bits)
  auto tile_expert = Unwritten<int32_t>(p.num_tiles), tile_start = Unwritten<int32_t>(p.num_tiles),
       tile_lo = Unwritten<int32_t>(p.num_tiles), tile_size = Unwritten<int32_t>(p.num_tiles);
  auto expert_start = Unwritten<int32_t>(p.experts), expert_size = Unwritten<int32_t>(p.experts),
       tile_end = Unwritten<int32_t>(p.experts);
  auto chunk_start = Unwritten<int32_t>(p.chunks * p.columns);
  jax_moe::layout_kernels::LaunchAlignedLayout(
      nullptr, p,
      {ids.data(), rank_in_chunk.data(), counts.data(), weights.data(), row_token.data(), row_weight.data(),
       slot_row.data(), reinterpret_cast<bool*>(slot_routed.data()), tile_expert.data(), tile_start.data(),
       tile_lo.data(), tile_size.data(), expert_start.data(), expert_size.data(), tile_end.data(),
       chunk_start.data()});
  Write("row_token", row_token);
  Write("row_weight", row_weight);
  Write("slot_row", slot_row);
  Write("slot_routed", slot_routed);
  Write("tile_expert", tile_expert);
  Write("tile_start", tile_start);
  Write("tile_lo", tile_lo);
  Write("tile_size", tile_size);
  Write("expert_start", expert_start);
  Write("expert_size", expert_size);
  Write("tile_end", tile_end);
  Write("chunk_start", chunk_start);
  return 0;
}

int SlotDots(char** arg) {
  jax_moe::SlotDotsProblem p;
  p.n = std::stoll(arg[0]);
  p.experts = std::stoll(arg[1]);
  p.block_m = std::stoll(arg[2]);
  p.n_blocks = std::stoll(arg[3]);
  p.tile_rows = std::stoll(arg[4]);
  const auto tile_dots = Read<float>("tile_dots", p.tile_rows * p.block_m);
  const auto ids = Read<int32_t>("ids", p.n), slot_row = Read<int32_t>("slot_row", p.n);
  const auto expert_start = Read<int32_t>("expert_start", p.experts),
             expert_size = Read<int32_t>("expert_size", p.experts), tile_end = Read<int32_t>("tile_end", p.experts);
  auto out = Unwritten<float>(p.n);
  jax_moe::layout_kernels::LaunchSlotDots(nullptr, p, tile_dots.data(), ids.data(), slot_row.data(),
                                          expert_start.data(), expert_size.data(), tile_end.data(), out.data());
  Write("out", out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string target = argc > 3 ? argv[1] : "";
  if (argc > 3) {
    dir = argv[2];
    cuda_host::reverse_blocks = std::string(argv[3]) == "1";
  }
  if (target == "aligned_layout" && argc == 13) return AlignedLayout(argv + 4);
  if (target == "slot_dots" && argc == 9) return SlotDots(argv + 4);
  std::fprintf(stderr, "usage: see the top of run_layout_kernels.cc\n");
  return 2;
}
