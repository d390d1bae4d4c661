// CUDA kernels for alias tables: the parallel build (the split method of
// Huebschle-Schneider & Sanders, see distribution_sampler.h) and the sampler. No
// TensorFlow in here: alias_kernels.cu.cc wraps these for the TF op, and
// custom_ops/gpu_harness tests and times them on their own.
//
// Build, for n classes (all passes O(n) work, deterministic: every sum has a
// fixed association, and the prefix sums are integers):
//   1. SumKernel / FinishSumKernel: W = sum of weights (double, fixed tree),
//      and the first invalid weight. Later passes stop early if one was found.
//   2. CountKernel: per block of 4096 classes, the number of lights and the
//      fixed-point deficit and excess sums.
//   3. ScanBlocksKernel: exclusive prefix sums of those over the blocks.
//   4. ScatterKernel: the list of lights and of heavies in index order, and
//      the prefix sums DL (deficits of lights) and EH (excesses of heavies).
//   5. SplitKernel: for every section of kSection buckets, the state of the
//      sequential sweep at its start, by binary search (FindSplit).
//   6. SweepKernel: one thread per section runs the sweep (SweepSection),
//      writing the packed entries (PackEntry) of its buckets.
// The result is the table that the sequential CPU sweep makes from the same W,
// bit for bit: the same uint64 entries.
//
// Sampling: one thread per pair of draws, one Philox block per pair, the same
// stream as the CPU kernel (DrawPair / DrawOne), so CPU and GPU draw the same
// ids for the same table and seed. The entry packs alias and threshold, so a
// draw is one random 8-byte load: one memory transaction instead of two.

#ifndef TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_ALIAS_GPU_CU_H_
#define TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_ALIAS_GPU_CU_H_

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/distribution_sampler.h"

namespace tf_sampling {
namespace gpu {

using alias::BuildStatus;
using alias::PhiloxKey;

constexpr int kThreads = 256;
constexpr int kItems = 16;
constexpr int64_t kChunk = kThreads * kItems;  // classes per block
constexpr int kFinishThreads = 1024;
constexpr int64_t kDefaultSection = 64;  // buckets per sweep thread

struct DeviceState {
  BuildStatus status;
  double total;
  double scale;
  int64_t num_light;
};

// Scratch memory of a build, carved out of one caller-provided buffer.
struct BuildScratch {
  DeviceState* state;
  double* block_sum;
  int64_t* block_bad;
  int64_t* block_count;   // [3 * blocks]: lights, deficit, excess
  int32_t* order;         // [n]: lights, then heavies
  int64_t* prefix;        // [n + 2]: DL[0..a], then EH[0..b]
  int64_t* split;         // [sections + 1]
};

inline size_t AlignUp(size_t x) { return (x + 255) & ~size_t{255}; }

inline int64_t NumBlocks(int64_t n) { return (n + kChunk - 1) / kChunk; }

// Carves `base` into a BuildScratch; returns the bytes needed (base may be
// null to ask for the size).
inline size_t LayoutScratch(int64_t n, int64_t section, void* base,
                            BuildScratch* s) {
  const int64_t blocks = NumBlocks(n);
  const int64_t sections = (n + section - 1) / section;
  char* p = static_cast<char*>(base);
  size_t off = 0;
  auto take = [&](size_t bytes) {
    char* r = p ? p + off : nullptr;
    off += AlignUp(bytes);
    return r;
  };
  BuildScratch t;
  t.state = reinterpret_cast<DeviceState*>(take(sizeof(DeviceState)));
  t.block_sum = reinterpret_cast<double*>(take(blocks * sizeof(double)));
  t.block_bad = reinterpret_cast<int64_t*>(take(blocks * sizeof(int64_t)));
  t.block_count = reinterpret_cast<int64_t*>(take(3 * blocks * sizeof(int64_t)));
  t.order = reinterpret_cast<int32_t*>(take(n * sizeof(int32_t)));
  t.prefix = reinterpret_cast<int64_t*>(take((n + 2) * sizeof(int64_t)));
  t.split = reinterpret_cast<int64_t*>(take((sections + 1) * sizeof(int64_t)));
  if (s) *s = t;
  return off;
}

// ------------------------------------------------------------ block helpers

// Exclusive scan of three int64 values over the block (in thread order);
// returns the block totals in tot[]. Integer sums: order does not matter.
template <int kBlock>
__device__ void BlockExclusiveScan3(int64_t v[3], int64_t tot[3]) {
  constexpr int kWarps = kBlock / 32;
  __shared__ int64_t warp_sums[3][kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int64_t inc[3] = {v[0], v[1], v[2]};
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
#pragma unroll
    for (int c = 0; c < 3; ++c) {
      const int64_t up = __shfl_up_sync(0xffffffffu, inc[c], d);
      if (lane >= d) inc[c] += up;
    }
  }
  if (lane == 31) {
    for (int c = 0; c < 3; ++c) warp_sums[c][warp] = inc[c];
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int c = 0; c < 3; ++c) {
      int64_t x = lane < kWarps ? warp_sums[c][lane] : 0;
#pragma unroll
      for (int d = 1; d < 32; d <<= 1) {
        const int64_t up = __shfl_up_sync(0xffffffffu, x, d);
        if (lane >= d) x += up;
      }
      if (lane < kWarps) warp_sums[c][lane] = x;  // inclusive over warps
    }
  }
  __syncthreads();
#pragma unroll
  for (int c = 0; c < 3; ++c) {
    const int64_t before = warp > 0 ? warp_sums[c][warp - 1] : 0;
    tot[c] = warp_sums[c][kWarps - 1];
    v[c] = before + inc[c] - v[c];
  }
  __syncthreads();
}

__device__ __forceinline__ bool StateBad(const DeviceState* st) {
  return st->status.code != alias::kBuildOk;
}

// ------------------------------------------------------------ build kernels

// Block-wide sum of the threads' s and minimum of their bad into sums[0] and
// bads[0] (shared arrays of kN entries), over a fixed tree: the same
// association every run, so the sum is deterministic.
template <int kN>
__device__ __forceinline__ void ReduceSumAndMin(double s, long long bad,
                                                double* sums, long long* bads) {
  sums[threadIdx.x] = s;
  bads[threadIdx.x] = bad;
  __syncthreads();
  for (int d = kN / 2; d > 0; d >>= 1) {
    if (threadIdx.x < d) {
      sums[threadIdx.x] += sums[threadIdx.x + d];
      const long long o = bads[threadIdx.x + d];
      if (o < bads[threadIdx.x]) bads[threadIdx.x] = o;
    }
    __syncthreads();
  }
}

template <typename T>
__global__ void SumKernel(const T* __restrict__ w, int64_t n,
                          double* __restrict__ block_sum,
                          int64_t* __restrict__ block_bad) {
  __shared__ double sums[kThreads];
  __shared__ long long bads[kThreads];
  const int64_t base = blockIdx.x * kChunk;
  double s = 0.0;
  long long bad = INT64_MAX;
  for (int m = 0; m < kItems; ++m) {  // coalesced, fixed order
    const int64_t i = base + m * kThreads + threadIdx.x;
    if (i < n) {
      const double v = static_cast<double>(w[i]);
      if (!(v >= 0.0) || !alias::WeightIsFinite(v)) bad = bad < i ? bad : i;
      s += v;
    }
  }
  ReduceSumAndMin<kThreads>(s, bad, sums, bads);
  if (threadIdx.x == 0) {
    block_sum[blockIdx.x] = sums[0];
    block_bad[blockIdx.x] = bads[0];
  }
}

template <typename T>
__global__ void FinishSumKernel(const T* __restrict__ w, int64_t n,
                                const double* __restrict__ block_sum,
                                const int64_t* __restrict__ block_bad,
                                int64_t blocks, DeviceState* state) {
  __shared__ double sums[kFinishThreads];
  __shared__ long long bads[kFinishThreads];
  double s = 0.0;
  long long bad = INT64_MAX;
  for (int64_t b = threadIdx.x; b < blocks; b += kFinishThreads) {
    s += block_sum[b];
    const long long o = block_bad[b];
    bad = o < bad ? o : bad;
  }
  ReduceSumAndMin<kFinishThreads>(s, bad, sums, bads);
  if (threadIdx.x == 0) {
    BuildStatus st{alias::kBuildOk, -1, 0.0};
    const double total = sums[0];
    if (bads[0] != INT64_MAX) {
      const double v = static_cast<double>(w[bads[0]]);
      st.code = alias::WeightIsFinite(v) ? alias::kBuildNegative
                                         : alias::kBuildNotFinite;
      st.index = bads[0];
      st.value = v;
    } else if (!alias::WeightIsFinite(total)) {
      st.code = alias::kBuildSumOverflow;
    } else if (total <= 0.0) {
      st.code = alias::kBuildZeroSum;
    }
    state->status = st;
    state->total = total;
    state->scale = static_cast<double>(n) / total;
  }
}

// Per-thread totals over its kItems consecutive classes.
template <typename T>
__device__ __forceinline__ void ThreadCounts(const T* __restrict__ w,
                                             int64_t n, double scale,
                                             int64_t first, int64_t c[3]) {
  c[0] = c[1] = c[2] = 0;
  for (int m = 0; m < kItems; ++m) {
    const int64_t i = first + m;
    if (i < n) {
      const double q = alias::Scaled(static_cast<double>(w[i]), scale);
      if (q < 1.0) {
        c[0] += 1;
        c[1] += alias::Deficit(q);
      } else {
        c[2] += alias::Excess(q);
      }
    }
  }
}

template <typename T>
__global__ void CountKernel(const T* __restrict__ w, int64_t n,
                            const DeviceState* state,
                            int64_t* __restrict__ block_count,
                            int64_t blocks) {
  if (StateBad(state)) return;
  int64_t c[3], tot[3];
  ThreadCounts(w, n, state->scale, blockIdx.x * kChunk + threadIdx.x * kItems,
               c);
  BlockExclusiveScan3<kThreads>(c, tot);
  if (threadIdx.x == 0) {
    for (int k = 0; k < 3; ++k) block_count[k * blocks + blockIdx.x] = tot[k];
  }
}

// Exclusive scan over the blocks' counts, in place; writes a, DL[a], EH[0].
__global__ void ScanBlocksKernel(int64_t n, int64_t* block_count,
                                 int64_t blocks, DeviceState* state,
                                 int64_t* prefix) {
  if (StateBad(state)) return;
  const int64_t per = (blocks + kFinishThreads - 1) / kFinishThreads;
  const int64_t b0 = threadIdx.x * per;
  const int64_t b1 = b0 + per < blocks ? b0 + per : blocks;
  int64_t v[3] = {0, 0, 0}, tot[3];
  for (int64_t b = b0; b < b1; ++b) {
    for (int k = 0; k < 3; ++k) v[k] += block_count[k * blocks + b];
  }
  BlockExclusiveScan3<kFinishThreads>(v, tot);
  for (int64_t b = b0; b < b1; ++b) {
    for (int k = 0; k < 3; ++k) {
      const int64_t x = block_count[k * blocks + b];
      block_count[k * blocks + b] = v[k];
      v[k] += x;
    }
  }
  if (threadIdx.x == 0) {
    const int64_t a = tot[0];
    state->num_light = a;
    prefix[a] = tot[1];  // DL[a]: all deficits
    prefix[a + 1] = 0;   // EH[0]
  }
}

template <typename T>
__global__ void ScatterKernel(const T* __restrict__ w, int64_t n,
                              const DeviceState* state,
                              const int64_t* __restrict__ block_count,
                              int64_t blocks, int32_t* __restrict__ order,
                              int64_t* __restrict__ prefix) {
  if (StateBad(state)) return;
  const double scale = state->scale;
  const int64_t a = state->num_light;
  const int64_t first = blockIdx.x * kChunk + threadIdx.x * kItems;
  int64_t c[3], tot[3];
  ThreadCounts(w, n, scale, first, c);
  BlockExclusiveScan3<kThreads>(c, tot);
  int64_t pos_l = block_count[blockIdx.x] + c[0];
  int64_t dl = block_count[blocks + blockIdx.x] + c[1];
  int64_t eh = block_count[2 * blocks + blockIdx.x] + c[2];
  // Heavies before this thread's first one: its index minus the lights.
  int64_t pos_h = first - pos_l;
  int64_t* DL = prefix;
  int64_t* EH = prefix + a + 1;
  for (int m = 0; m < kItems; ++m) {
    const int64_t i = first + m;
    if (i >= n) break;
    const double q = alias::Scaled(static_cast<double>(w[i]), scale);
    if (q < 1.0) {
      order[pos_l] = static_cast<int32_t>(i);
      DL[pos_l] = dl;
      dl += alias::Deficit(q);
      ++pos_l;
    } else {
      order[a + pos_h] = static_cast<int32_t>(i);
      eh += alias::Excess(q);
      EH[pos_h + 1] = eh;
      ++pos_h;
    }
  }
}

__global__ void SplitKernel(int64_t n, const DeviceState* state,
                            const int64_t* __restrict__ prefix,
                            int64_t section, int64_t sections,
                            int64_t* __restrict__ split) {
  if (StateBad(state)) return;
  const int64_t a = state->num_light, b = n - a;
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p > sections) return;
  const int64_t k = p * section < n ? p * section : n;
  split[p] = b == 0 ? k : alias::FindSplit(k, prefix, a, prefix + a + 1, b);
}

template <typename T>
__global__ void SweepKernel(const T* __restrict__ w, int64_t n,
                            const DeviceState* state,
                            const int32_t* __restrict__ order,
                            const int64_t* __restrict__ prefix,
                            const int64_t* __restrict__ split,
                            int64_t section, int64_t sections,
                            uint64_t* __restrict__ table) {
  if (StateBad(state)) return;
  const int64_t a = state->num_light, b = n - a;
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= sections) return;
  const int64_t k0 = p * section;
  const int64_t k1 = k0 + section < n ? k0 + section : n;
  if (b == 0) {  // all weights equal (up to rounding): every bucket keeps
    for (int64_t k = k0; k < k1; ++k) {
      table[k] = alias::AlwaysKeepEntry(k);
    }
    return;
  }
  const int64_t i0 = split[p], i1 = split[p + 1];
  alias::SweepSection(w, state->scale, order, order + a, prefix, a,
                      prefix + a + 1, b, i0, i1, k0 - i0, k1 - i1, table);
}

// ------------------------------------------------------------ sampling

__global__ void SampleKernel(const uint64_t* __restrict__ table, uint64_t n,
                             PhiloxKey key, int64_t num,
                             int64_t* __restrict__ out) {
  const int64_t pairs = (num + 1) / 2;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       p < pairs; p += stride) {
    uint64_t x0, x1;
    alias::DrawPair(key, static_cast<uint64_t>(p), &x0, &x1);
    bool bad = false;  // a corrupted table gives bucket ids, never bad reads
    const int64_t d0 = alias::DrawOne(x0, n, table, &bad);
    if (2 * p + 1 < num) {
      const int64_t d1 = alias::DrawOne(x1, n, table, &bad);
      reinterpret_cast<longlong2*>(out)[p] = make_longlong2(d0, d1);
    } else {
      out[2 * p] = d0;
    }
  }
}

// ------------------------------------------------------------ launchers

inline int SampleGrid(int64_t pairs) {
  static int max_blocks = 0;
  if (max_blocks == 0) {
    int dev = 0, sms = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    max_blocks = (sms > 0 ? sms : 80) * 16;
  }
  const int64_t want = (pairs + kThreads - 1) / kThreads;
  return static_cast<int>(want < max_blocks ? (want > 0 ? want : 1) : max_blocks);
}

// `out` must be 16-byte aligned (cudaMalloc and TF's allocator are).
inline cudaError_t LaunchSample(const uint64_t* table, int64_t n,
                                PhiloxKey key, int64_t num, int64_t* out,
                                cudaStream_t stream) {
  if (num <= 0) return cudaSuccess;
  const int64_t pairs = (num + 1) / 2;
  SampleKernel<<<SampleGrid(pairs), kThreads, 0, stream>>>(
      table, static_cast<uint64_t>(n), key, num, out);
  return cudaGetLastError();
}

inline size_t BuildScratchBytes(int64_t n, int64_t section = kDefaultSection) {
  return LayoutScratch(n, section, nullptr, nullptr);
}

// Enqueues the build; the status (and W) land in scratch.state on the
// device. Requires 1 <= n <= kMaxClasses and `scratch` of BuildScratchBytes.
template <typename T>
cudaError_t LaunchBuild(const T* w, int64_t n, uint64_t* table, void* scratch,
                        int64_t section, cudaStream_t stream,
                        DeviceState** state_out) {
  BuildScratch s;
  LayoutScratch(n, section, scratch, &s);
  const int64_t blocks = NumBlocks(n);
  const int64_t sections = (n + section - 1) / section;
  SumKernel<T><<<blocks, kThreads, 0, stream>>>(w, n, s.block_sum, s.block_bad);
  FinishSumKernel<T><<<1, kFinishThreads, 0, stream>>>(
      w, n, s.block_sum, s.block_bad, blocks, s.state);
  CountKernel<T><<<blocks, kThreads, 0, stream>>>(w, n, s.state, s.block_count,
                                                  blocks);
  ScanBlocksKernel<<<1, kFinishThreads, 0, stream>>>(n, s.block_count, blocks,
                                                     s.state, s.prefix);
  ScatterKernel<T><<<blocks, kThreads, 0, stream>>>(
      w, n, s.state, s.block_count, blocks, s.order, s.prefix);
  const int64_t split_blocks = (sections + 1 + kThreads - 1) / kThreads;
  SplitKernel<<<split_blocks, kThreads, 0, stream>>>(n, s.state, s.prefix,
                                                     section, sections, s.split);
  const int64_t sweep_blocks = (sections + kThreads - 1) / kThreads;
  SweepKernel<T><<<sweep_blocks, kThreads, 0, stream>>>(
      w, n, s.state, s.order, s.prefix, s.split, section, sections, table);
  if (state_out) *state_out = s.state;
  return cudaGetLastError();
}

// LaunchBuild, then waits for the stream and copies the status to the host.
template <typename T>
cudaError_t BuildSync(const T* w, int64_t n, uint64_t* table, void* scratch,
                      int64_t section, cudaStream_t stream,
                      DeviceState* host_state) {
  DeviceState* d_state = nullptr;
  cudaError_t err =
      LaunchBuild(w, n, table, scratch, section, stream, &d_state);
  if (err != cudaSuccess) return err;
  err = cudaMemcpyAsync(host_state, d_state, sizeof(DeviceState),
                        cudaMemcpyDeviceToHost, stream);
  if (err != cudaSuccess) return err;
  return cudaStreamSynchronize(stream);
}

}  // namespace gpu
}  // namespace tf_sampling

#endif  // TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_ALIAS_GPU_CU_H_
