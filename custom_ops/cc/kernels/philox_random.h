// Philox-4x32-10, the counter-based random number generator of every draw of
// the alias ops (CPU loop, CUDA kernel, GPU harness, standalone test). No
// TensorFlow in here: nvcc and a plain g++ compile it too.
//
// ALGORITHM
//   Philox-4x32-10 maps a 128-bit counter and a 64-bit key through ten rounds
//   of 32x32 -> 64-bit multiplications and key-schedule xors to four 32-bit
//   words. The key is the seed's low halves and the two high counter words are
//   its high halves (MakeKey); the low 64 bits of the counter are the index of
//   the block, so block p gives draws 2p and 2p + 1 (DrawPair: two 64-bit
//   words). Draw t therefore depends only on (seed, t): the output does not
//   depend on how the work is split between threads, on the CPU's instruction
//   set, or on the device.
//
// COST
//   One block: 10 rounds of 2 multiplications; two draws per block. No state
//   beyond the key: any draw is computed on its own, O(1).
//
// SOURCE
//   J. K. Salmon, M. A. Moraes, R. O. Dror, D. E. Shaw, "Parallel random
//   numbers: as easy as 1, 2, 3", SC 2011 (Random123's philox4x32_R, R = 10);
//   TF keeps its version in tensorflow/core/lib/random/philox_random.h.

#ifndef TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_PHILOX_RANDOM_H_
#define TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_PHILOX_RANDOM_H_

#include <stdint.h>

// Host and device (nvcc) functions share one definition.
#ifndef TFS_HD
#if defined(__CUDACC__)
#define TFS_HD __host__ __device__ __forceinline__
#else
#define TFS_HD inline
#endif
#endif

namespace tf_sampling {
namespace alias {

struct PhiloxKey {
  uint32_t k0, k1;  // the key
  uint32_t c2, c3;  // high counter words (fixed per seed)
};

// A seed of two integers, as TF's stateless ops take; int32 seeds are
// sign-extended first so that the same numbers give the same stream whatever
// the seed's dtype.
TFS_HD PhiloxKey MakeKey(int64_t s0, int64_t s1) {
  PhiloxKey key;
  key.k0 = static_cast<uint32_t>(static_cast<uint64_t>(s0));
  key.k1 = static_cast<uint32_t>(static_cast<uint64_t>(s1));
  key.c2 = static_cast<uint32_t>(static_cast<uint64_t>(s0) >> 32);
  key.c3 = static_cast<uint32_t>(static_cast<uint64_t>(s1) >> 32);
  return key;
}

TFS_HD void MulHiLo32(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

// Philox-4x32-10 (Random123's philox4x32_R with R = 10).
TFS_HD void Philox4x32x10(const uint32_t in[4], uint32_t k0, uint32_t k1,
                          uint32_t out[4]) {
  uint32_t c0 = in[0], c1 = in[1], c2 = in[2], c3 = in[3];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    MulHiLo32(0xD2511F53u, c0, &hi0, &lo0);
    MulHiLo32(0xCD9E8D57u, c2, &hi1, &lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

// The two 64-bit words of draw pair `pair` (draws 2*pair and 2*pair + 1).
TFS_HD void DrawPair(const PhiloxKey& key, uint64_t pair, uint64_t* x0,
                     uint64_t* x1) {
  const uint32_t ctr[4] = {static_cast<uint32_t>(pair),
                           static_cast<uint32_t>(pair >> 32), key.c2, key.c3};
  uint32_t r[4];
  Philox4x32x10(ctr, key.k0, key.k1, r);
  *x0 = (static_cast<uint64_t>(r[1]) << 32) | r[0];
  *x1 = (static_cast<uint64_t>(r[3]) << 32) | r[2];
}

TFS_HD uint64_t MulHi64(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(a, b);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
#endif
}

}  // namespace alias
}  // namespace tf_sampling

#endif  // TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_PHILOX_RANDOM_H_
