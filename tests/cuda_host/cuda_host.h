// What ffi/*_kernels.cuh take from CUDA, on CPU threads, so that a host compiler builds the kernels
// as they are and the tests run them without a GPU (test_cuda_host.py):
//   - a launch runs its blocks one after another (in order, or in reverse), each block's threads as
//     std::threads: threadIdx, blockIdx, blockDim and gridDim are thread-local; __syncthreads is a
//     barrier of the block's threads;
//   - __shared__ variables are statics: one copy, which the blocks in turn use as theirs;
//   - cub::BlockScan's ExclusiveSum and InclusiveSum over items in the blocked arrangement, with
//     cub's contract on its TempStorage (a barrier before it is used again).
// Built with -fsanitize=thread, ThreadSanitizer reports any two threads of a block that touch the
// same memory without a barrier between them (a missing __syncthreads).
#ifndef JAX_MOE_TESTS_CUDA_HOST_H_
#define JAX_MOE_TESTS_CUDA_HOST_H_

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#define JAX_MOE_CUDA_ON_HOST 1
#define __global__
#define __shared__ static
#define __launch_bounds__(...)
#define __syncthreads() ::cuda_host::SyncThreads()

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using cudaStream_t = void*;

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

using std::max;
using std::min;

namespace cuda_host {

// Blocks run last to first when set: a kernel whose result depends on the blocks' order (two
// blocks writing one element) gives different outputs the two ways.
inline bool reverse_blocks = false;

class Barrier {
 public:
  explicit Barrier(int threads) : threads_(threads) {}
  void ArriveAndWait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const long generation = generation_;
    if (++arrived_ == threads_) {
      arrived_ = 0;
      ++generation_;
      all_arrived_.notify_all();
    } else {
      all_arrived_.wait(lock, [&] { return generation_ != generation; });
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable all_arrived_;
  const int threads_;
  int arrived_ = 0;
  long generation_ = 0;
};

inline thread_local Barrier* block_barrier = nullptr;

inline void SyncThreads() { block_barrier->ArriveAndWait(); }

template <typename Kernel>
class Launch {
 public:
  Launch(dim3 grid, dim3 block, Kernel kernel) : grid_(grid), block_(block), kernel_(kernel) {}

  template <typename... Args>
  void operator()(Args... args) const {
    const long blocks = static_cast<long>(grid_.x) * grid_.y * grid_.z;
    const int threads = static_cast<int>(block_.x * block_.y * block_.z);
    if (threads < 1 || threads > 1024) {
      std::fprintf(stderr, "cuda_host: %d threads a block\n", threads);
      std::abort();
    }
    Barrier barrier(threads);
    std::vector<std::thread> workers;
    workers.reserve(threads);
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        block_barrier = &barrier;
        blockDim = block_;
        gridDim = grid_;
        threadIdx = dim3(t % block_.x, t / block_.x % block_.y, t / (block_.x * block_.y));
        for (long i = 0; i < blocks; ++i) {
          const long b = reverse_blocks ? blocks - 1 - i : i;
          blockIdx = dim3(b % grid_.x, b / grid_.x % grid_.y, b / (static_cast<long>(grid_.x) * grid_.y));
          kernel_(args...);
          barrier.ArriveAndWait();  // the block ends: the next one takes over its __shared__ statics
        }
      });
    }
    for (std::thread& worker : workers) worker.join();
  }

 private:
  dim3 grid_, block_;
  Kernel kernel_;
};

}  // namespace cuda_host

#define JAX_MOE_LAUNCH(kernel, grid, block, stream) ::cuda_host::Launch((grid), (block), &(kernel))

namespace cub {

// cub::BlockScan<T, kThreads> for a 1-D block of kThreads threads, items in the blocked arrangement
// (thread t holds items t * kItems ...). Like cub's, it ends without a barrier.
template <typename T, int kThreads>
class BlockScan {
 public:
  struct TempStorage {
    T totals[kThreads];
  };

  explicit BlockScan(TempStorage& storage) : storage_(storage) {}

  template <int kItems>
  void ExclusiveSum(T (&input)[kItems], T (&output)[kItems], T& block_aggregate) {
    T running = ThreadPrefix(ThreadTotal(input), &block_aggregate);
    for (int j = 0; j < kItems; ++j) {
      const T here = input[j];
      output[j] = running;
      running += here;
    }
  }

  template <int kItems>
  void InclusiveSum(T (&input)[kItems], T (&output)[kItems]) {
    T block_aggregate;
    T running = ThreadPrefix(ThreadTotal(input), &block_aggregate);
    for (int j = 0; j < kItems; ++j) {
      running += input[j];
      output[j] = running;
    }
  }

 private:
  template <int kItems>
  static T ThreadTotal(const T (&input)[kItems]) {
    T total{};
    for (int j = 0; j < kItems; ++j) total += input[j];
    return total;
  }

  // The sum of the earlier threads' totals; block_aggregate: all of them.
  T ThreadPrefix(T total, T* block_aggregate) {
    if (static_cast<int>(blockDim.x * blockDim.y * blockDim.z) != kThreads || blockDim.y != 1) {
      std::fprintf(stderr, "cuda_host: BlockScan<%d> in a block of %u x %u threads\n", kThreads, blockDim.x,
                   blockDim.y);
      std::abort();
    }
    const int t = static_cast<int>(threadIdx.x);
    storage_.totals[t] = total;
    __syncthreads();
    T before{}, all{};
    for (int u = 0; u < kThreads; ++u) {
      if (u < t) before += storage_.totals[u];
      all += storage_.totals[u];
    }
    *block_aggregate = all;
    return before;
  }

  TempStorage& storage_;
};

}  // namespace cub

#endif  // JAX_MOE_TESTS_CUDA_HOST_H_
