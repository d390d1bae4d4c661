// The CPU draw loop of an alias table: draws [begin, end) of the stream for a
// seed, the same bytes as DrawOne (distribution_sampler.h) draw by draw,
// faster. No TensorFlow in here (alias_table_test.cc tests it on its own).
//
// ALGORITHM
//   The loop is blocked (see DrawRangeWith): 64 draws' words, buckets and
//   coins at a time (with AVX2 where the CPU has it, chosen at run time: no
//   -march flag), prefetches of their table entries, and a branch-free select
//   one block behind, so that cache misses overlap.
//
// COST
//   O(1) per draw: half a Philox block and one random 8-byte read of the
//   table, whose latency the prefetches of the next block hide.
//
// SOURCE
//   Philox and the table are in philox_random.h and distribution_sampler.h;
//   the vectorized Philox computes eight of Random123's blocks per AVX2
//   instruction, lane by lane the same arithmetic.

#ifndef TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_ALIAS_DRAW_CPU_H_
#define TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_ALIAS_DRAW_CPU_H_

#include <stdint.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

// The CPU draw loop has an AVX2 version, chosen at run time (host code only).
#if !defined(__CUDACC__) && defined(__x86_64__) && \
    (defined(__GNUC__) || defined(__clang__))
#define TF_SAMPLING_ALIAS_AVX2 1
#include <immintrin.h>
#endif

#include "kernels/distribution_sampler.h"
#include "kernels/philox_random.h"

namespace tf_sampling {
namespace alias {

// The CPU draws in blocks of kBlockDraws = 64 draws (32 Philox blocks):
// first the random words of a whole block, with their buckets and coins
// (vectorized; with AVX2, picked at run time, 8 Philox blocks per
// instruction), and prefetches of the table rows they hit; then the previous
// block, whose rows were prefetched a block earlier, is resolved. Each draw
// is exactly DrawOne's, whatever the path: the output depends only on
// (table, seed, draw index).

constexpr int kBlockPairs = 32;
constexpr int kBlockDraws = 2 * kBlockPairs;

// The words of Philox blocks [p0, p0 + kBlockPairs), in draw order:
// words[2m], words[2m + 1] = DrawPair(key, p0 + m).
inline void BlockWordsGeneric(const PhiloxKey& key, uint64_t p0,
                              uint64_t* words) {
  for (int m = 0; m < kBlockPairs; ++m) {
    DrawPair(key, p0 + m, &words[2 * m], &words[2 * m + 1]);
  }
}

// Buckets and coins (BucketAndCoin) of draws [2 p0, 2 p0 + kBlockDraws) for
// a table of n <= kMaxClasses classes.
inline void BlockBucketsGeneric(const PhiloxKey& key, uint64_t p0, uint64_t n,
                                uint32_t* bucket, uint32_t* coin) {
  uint64_t words[kBlockDraws];
  BlockWordsGeneric(key, p0, words);
  for (int m = 0; m < kBlockDraws; ++m) {
    uint64_t j;
    BucketAndCoin(words[m], n, &j, &coin[m]);
    bucket[m] = static_cast<uint32_t>(j);
  }
}

// Resolves draws [0, len) of a block: out[m] = bucket[m] or its alias.
// Returns false if an alias was out of range.
inline bool ResolveGeneric(const uint64_t* table, uint64_t n,
                           const uint32_t* bucket, const uint32_t* coin,
                           int len, int64_t* out) {
  bool bad = false;
  for (int m = 0; m < len; ++m) {
    const uint32_t j = bucket[m];
    out[m] = Resolve(j, coin[m], table[j], n, &bad);
  }
  return !bad;
}

#ifdef TF_SAMPLING_ALIAS_AVX2

// The same with AVX2 (the functions are compiled for AVX2 whatever the
// compiler flags, and only called where the CPU has it: no -march needed).
#define TFS_AVX2 __attribute__((target("avx2"), always_inline)) inline
namespace avx2 {

constexpr int kVectors = kBlockPairs / 8;

// Philox-4x32-10 of the 32 counters p0 .. p0 + 31 (lane l of vector v is
// counter p0 + 8 v + l); c[w][v] holds output word w. The caller makes sure
// that the low counter word does not wrap inside the block.
TFS_AVX2 void Philox(const PhiloxKey& key, uint64_t p0,
                     __m256i (&c)[4][kVectors]) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const uint32_t lo = static_cast<uint32_t>(p0);
  for (int v = 0; v < kVectors; ++v) {
    c[0][v] = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(lo + 8 * v)),
                               lane);
    c[1][v] = _mm256_set1_epi32(static_cast<int>(p0 >> 32));
    c[2][v] = _mm256_set1_epi32(static_cast<int>(key.c2));
    c[3][v] = _mm256_set1_epi32(static_cast<int>(key.c3));
  }
  const __m256i ma = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i mb = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  uint32_t k0 = key.k0, k1 = key.k1;
  for (int r = 0; r < 10; ++r) {
    const __m256i key0 = _mm256_set1_epi32(static_cast<int>(k0));
    const __m256i key1 = _mm256_set1_epi32(static_cast<int>(k1));
    for (int v = 0; v < kVectors; ++v) {
      // 32x32 -> 64-bit products of the even and of the odd lanes.
      const __m256i ae = _mm256_mul_epu32(c[0][v], ma);
      const __m256i ao = _mm256_mul_epu32(_mm256_srli_epi64(c[0][v], 32), ma);
      const __m256i be = _mm256_mul_epu32(c[2][v], mb);
      const __m256i bo = _mm256_mul_epu32(_mm256_srli_epi64(c[2][v], 32), mb);
      const __m256i a_lo = _mm256_blend_epi32(ae, _mm256_slli_epi64(ao, 32), 0xAA);
      const __m256i a_hi = _mm256_blend_epi32(_mm256_srli_epi64(ae, 32), ao, 0xAA);
      const __m256i b_lo = _mm256_blend_epi32(be, _mm256_slli_epi64(bo, 32), 0xAA);
      const __m256i b_hi = _mm256_blend_epi32(_mm256_srli_epi64(be, 32), bo, 0xAA);
      c[0][v] = _mm256_xor_si256(_mm256_xor_si256(b_hi, c[1][v]), key0);
      c[2][v] = _mm256_xor_si256(_mm256_xor_si256(a_hi, c[3][v]), key1);
      c[1][v] = b_lo;
      c[3][v] = a_lo;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

// Stores the 32-bit lanes of even (e) and odd (o) draws of 8 Philox blocks
// to dst[0 .. 16) in draw order: e0 o0 e1 o1 ...
TFS_AVX2 void StoreInterleaved32(const __m256i& e, const __m256i& o,
                                 uint32_t* dst) {
  const __m256i lo = _mm256_unpacklo_epi32(e, o);  // blocks 0 1 | 4 5
  const __m256i hi = _mm256_unpackhi_epi32(e, o);  // blocks 2 3 | 6 7
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst),
                      _mm256_permute2x128_si256(lo, hi, 0x20));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8),
                      _mm256_permute2x128_si256(lo, hi, 0x31));
}

// Bucket and coin of the words x = hi:lo of 8 draws (32-bit halves in the
// lanes of lo and hi). x * n = s * 2^32 + (lo * n mod 2^32) with
// s = hi * n + floor(lo * n / 2^32) < 2^64, so the bucket floor(x n / 2^64)
// is the high and the coin the low half of s: BucketAndCoin, exactly.
TFS_AVX2 void BucketsAndCoins(const __m256i& lo, const __m256i& hi,
                              const __m256i& n, __m256i* bucket,
                              __m256i* coin) {
  const __m256i se = _mm256_add_epi64(
      _mm256_mul_epu32(hi, n), _mm256_srli_epi64(_mm256_mul_epu32(lo, n), 32));
  const __m256i so = _mm256_add_epi64(
      _mm256_mul_epu32(_mm256_srli_epi64(hi, 32), n),
      _mm256_srli_epi64(_mm256_mul_epu32(_mm256_srli_epi64(lo, 32), n), 32));
  *bucket = _mm256_blend_epi32(_mm256_srli_epi64(se, 32), so, 0xAA);
  *coin = _mm256_blend_epi32(se, _mm256_slli_epi64(so, 32), 0xAA);
}

// True if the low counter word wraps inside the block (once per 2^32 blocks):
// the generic code handles that block.
inline bool CounterWraps(uint64_t p0) {
  return static_cast<uint32_t>(p0) > 0xFFFFFFFFu - kBlockPairs;
}

__attribute__((target("avx2"))) inline void BlockWords(const PhiloxKey& key,
                                                       uint64_t p0,
                                                       uint64_t* words) {
  if (CounterWraps(p0)) return BlockWordsGeneric(key, p0, words);
  __m256i c[4][kVectors];
  Philox(key, p0, c);
  for (int v = 0; v < kVectors; ++v) {
    // 64-bit words c1:c0 (even draws) and c3:c2 (odd draws) of 8 blocks.
    alignas(32) uint32_t even[16], odd[16];
    StoreInterleaved32(c[0][v], c[1][v], even);
    StoreInterleaved32(c[2][v], c[3][v], odd);
    for (int m = 0; m < 8; ++m) {
      words[16 * v + 2 * m] = (static_cast<uint64_t>(even[2 * m + 1]) << 32) | even[2 * m];
      words[16 * v + 2 * m + 1] = (static_cast<uint64_t>(odd[2 * m + 1]) << 32) | odd[2 * m];
    }
  }
}

__attribute__((target("avx2"))) inline void BlockBuckets(const PhiloxKey& key,
                                                         uint64_t p0,
                                                         uint64_t n,
                                                         uint32_t* bucket,
                                                         uint32_t* coin) {
  if (CounterWraps(p0)) return BlockBucketsGeneric(key, p0, n, bucket, coin);
  __m256i c[4][kVectors];
  Philox(key, p0, c);
  const __m256i nv = _mm256_set1_epi64x(static_cast<int64_t>(n));
  for (int v = 0; v < kVectors; ++v) {
    __m256i je, ce, jo, co;
    BucketsAndCoins(c[0][v], c[1][v], nv, &je, &ce);  // draws 2m
    BucketsAndCoins(c[2][v], c[3][v], nv, &jo, &co);  // draws 2m + 1
    StoreInterleaved32(je, jo, bucket + 16 * v);
    StoreInterleaved32(ce, co, coin + 16 * v);
  }
}

// Resolves draws [0, len) of a block: out[m] = bucket[m] or its alias, exactly
// as Resolve decides. Returns false if an alias was out of range.
__attribute__((target("avx2"))) inline bool Resolve(
    const uint64_t* table, uint64_t n, const uint32_t* bucket,
    const uint32_t* coin, int len, int64_t* out) {
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i n_biased = _mm256_set1_epi32(
      static_cast<int>(static_cast<uint32_t>(n) ^ 0x80000000u));
  const long long* base = reinterpret_cast<const long long*>(table);
  int bad = 0;
  int m = 0;
  for (; m + 8 <= len; m += 8) {
    const __m256i j =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bucket + m));
    const __m256i c =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(coin + m));
    // Entries of draws 0-3 and 4-7: 64-bit lanes (threshold | alias << 32).
    const __m256i e0 = _mm256_i32gather_epi64(base, _mm256_castsi256_si128(j), 8);
    const __m256i e1 =
        _mm256_i32gather_epi64(base, _mm256_extracti128_si256(j, 1), 8);
    // Low halves (thresholds) and high halves (aliases) in draw order: the
    // shuffle gives e0[0] e0[1] e1[0] e1[1] | e0[2] e0[3] e1[2] e1[3].
    const __m256 f0 = _mm256_castsi256_ps(e0);
    const __m256 f1 = _mm256_castsi256_ps(e1);
    const __m256i thr = _mm256_permute4x64_epi64(
        _mm256_castps_si256(_mm256_shuffle_ps(f0, f1, _MM_SHUFFLE(2, 0, 2, 0))),
        _MM_SHUFFLE(3, 1, 2, 0));
    const __m256i a = _mm256_permute4x64_epi64(
        _mm256_castps_si256(_mm256_shuffle_ps(f0, f1, _MM_SHUFFLE(3, 1, 3, 1))),
        _MM_SHUFFLE(3, 1, 2, 0));
    // Unsigned compares through the sign bit: keep = coin < threshold.
    const __m256i keep = _mm256_cmpgt_epi32(_mm256_xor_si256(thr, sign),
                                            _mm256_xor_si256(c, sign));
    const __m256i ok =
        _mm256_cmpgt_epi32(n_biased, _mm256_xor_si256(a, sign));  // a < n
    bad |= _mm256_movemask_ps(_mm256_castsi256_ps(ok)) ^ 0xFF;
    const __m256i r = _mm256_blendv_epi8(j, a, _mm256_andnot_si256(keep, ok));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + m),
                        _mm256_cvtepu32_epi64(_mm256_castsi256_si128(r)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + m + 4),
                        _mm256_cvtepu32_epi64(_mm256_extracti128_si256(r, 1)));
  }
  return ResolveGeneric(table, n, bucket + m, coin + m, len - m, out + m) &&
         bad == 0;
}

}  // namespace avx2
#undef TFS_AVX2
#endif  // x86-64 host

// The block functions of the CPU draw loop: generic or AVX2 (same results).
struct BlockFunctions {
  void (*words)(const PhiloxKey&, uint64_t, uint64_t*);
  void (*buckets)(const PhiloxKey&, uint64_t, uint64_t, uint32_t*, uint32_t*);
  bool (*resolve)(const uint64_t*, uint64_t, const uint32_t*, const uint32_t*,
                  int, int64_t*);
  bool vectorized;
};

inline BlockFunctions PickBlockFunctions(bool allow_simd = true) {
#ifdef TF_SAMPLING_ALIAS_AVX2
  __builtin_cpu_init();
  if (allow_simd && __builtin_cpu_supports("avx2")) {
    return {&avx2::BlockWords, &avx2::BlockBuckets, &avx2::Resolve, true};
  }
#endif
  (void)allow_simd;
  return {&BlockWordsGeneric, &BlockBucketsGeneric, &ResolveGeneric, false};
}

// The block functions for this CPU, chosen once; TF_SAMPLING_NO_AVX2=1 in the
// environment forces the generic ones (the tests check that both give the
// same bytes).
inline const BlockFunctions& CpuBlockFunctions() {
  static const BlockFunctions f = PickBlockFunctions(
      std::getenv("TF_SAMPLING_NO_AVX2") == nullptr ||
      std::string(std::getenv("TF_SAMPLING_NO_AVX2")) != "1");
  return f;
}

// Draws [begin, end) of the stream for `key` into out[0 .. end - begin), with
// the block functions `f`. Returns false if a corrupted alias entry was met.
inline bool DrawRangeWith(const BlockFunctions& f, const uint64_t* table,
                          int64_t n, const PhiloxKey& key, int64_t begin,
                          int64_t end, int64_t* out) {
  const uint64_t un = static_cast<uint64_t>(n);
  bool bad = false;
  int64_t t = begin;
  if (t < end && (t & 1)) {  // odd start: second half of a pair
    uint64_t x0, x1;
    DrawPair(key, static_cast<uint64_t>(t) >> 1, &x0, &x1);
    *out++ = DrawOne(x1, un, table, &bad);
    ++t;
  }
  const int64_t blocks = (end - t + kBlockDraws - 1) / kBlockDraws;
  if (blocks == 0) return !bad;
  alignas(32) uint32_t bucket[2][kBlockDraws], coin[2][kBlockDraws];
  // Buckets, coins and prefetches of the block that starts at draw `start`
  // (even) into slot s; the last block may be partial.
  auto stage = [&](int s, int64_t start) {
    f.buckets(key, static_cast<uint64_t>(start) >> 1, un, bucket[s], coin[s]);
    const int len = static_cast<int>(std::min<int64_t>(kBlockDraws, end - start));
    for (int m = 0; m < len; ++m) {
      __builtin_prefetch(table + bucket[s][m]);
    }
  };
  stage(0, t);
  for (int64_t b = 0; b < blocks; ++b) {
    const int s = static_cast<int>(b & 1);
    if (b + 1 < blocks) stage(s ^ 1, t + kBlockDraws);
    const int len = static_cast<int>(std::min<int64_t>(kBlockDraws, end - t));
    if (!f.resolve(table, un, bucket[s], coin[s], len, out)) bad = true;
    out += len;
    t += len;
  }
  return !bad;
}

inline bool DrawRange(const uint64_t* table, int64_t n, const PhiloxKey& key,
                      int64_t begin, int64_t end, int64_t* out) {
  return DrawRangeWith(CpuBlockFunctions(), table, n, key, begin, end, out);
}

}  // namespace alias
}  // namespace tf_sampling

#endif  // TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_ALIAS_DRAW_CPU_H_
