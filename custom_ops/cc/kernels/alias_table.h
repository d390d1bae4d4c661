// Alias tables: build one from non-negative weights, and draw from it with a
// counter-based random number generator. No TensorFlow in here, so that the
// algorithm is unit-tested on its own (alias_table_test.cc) and shared by the
// CPU kernels, the CUDA kernels and the standalone GPU harness.
//
// ALGORITHM
//   An alias table over n classes has n buckets, each of mass 1/n. Bucket i
//   keeps class i with probability prob[i] and gives class alias[i] otherwise,
//   so P(class c) = (prob[c] + sum_{i: alias[i] = c} (1 - prob[i])) / n.
//   With q_i = n * w_i / W, "light" classes (q < 1) have a deficit 1 - q to be
//   filled and "heavy" ones (q >= 1) an excess q - 1 to give away.
//
//   Layout: one uint64 per bucket (a TF int64 tensor), alias[i] in the high
//   and a keep threshold in the low 32 bits (PackEntry): bucket i keeps class
//   i iff a uniform 32-bit coin < threshold, so prob[i] = threshold / 2^32,
//   and a bucket that always keeps has alias[i] = i. A draw reads one 8-byte
//   entry, one cache line: with two arrays it took two random reads, and at
//   1e6+ classes those cache misses are what a draw costs.
//
//   Build: the "sweep" variant of Vose's method (Huebschle-Schneider & Sanders,
//   "Parallel Weighted Random Sampling", ESA 2019 / ACM TOMS 2022, Sec. 4.1):
//   two cursors walk the lights and the heavies in index order; the current
//   heavy fills the next light's deficit, and once its remaining mass drops to
//   <= 1 its own bucket is closed with the next heavy. Unlike the textbook
//   two-stack version it needs no work lists and reads memory in order.
//   The parallel "split" variant (same paper, Sec. 4.2) cuts the sweep into
//   independent sections: the state of the sweep after k buckets is found by a
//   binary search over prefix sums of deficits and excesses, so each section
//   (and each GPU thread) runs the sweep on its own range.
//
//   Numerics: deficits and excesses are rounded down to fixed point with
//   2^-32 resolution and all the bookkeeping (remaining mass of the current
//   heavy, prefix sums) is done in int64. Integer sums are exact, so the
//   sequential sweep, the split method with any number of sections, the CUDA
//   build and the TensorFlow fallback make the same decisions and the same
//   table for the same weights, whatever the thread count. Only W (a double
//   sum) and the keep probabilities are rounded, to float32 and then up to a
//   multiple of 2^-32 (the threshold); the table represents the weights to
//   about 1e-7 relative per class. A class of weight 0 gets threshold 0 and is
//   never an alias target, so it is never drawn.
//
//   Sampling: one Philox-4x32-10 block (Salmon et al., "Parallel random
//   numbers: as easy as 1, 2, 3", SC 2011) keyed by the seed and counted by the
//   draw index gives two 64-bit words, one per draw. For a word x,
//   j = floor(x * n / 2^64) is the bucket, and the next 32 bits of x * n (the
//   fraction x * n / 2^64 - j, truncated) are a uniform 32-bit coin given j;
//   the bucket keeps its class iff coin < threshold[j]. Draw t depends only
//   on (seed, t): the output does not depend on how the work is split between
//   threads, on the CPU's instruction set, or on the device.
//
//   Exactness of the draws: the bucket is uniform up to n / 2^64 relative; the
//   keep probability of a bucket is threshold / 2^32 exactly, where threshold
//   = ceil(p * 2^32) for the float32 keep probability p of the build: at most
//   2^-32 above p (never below; 0 exactly, and 1 by alias[j] = j). The float32
//   p itself is rounded by up to 2^-25. So the 32-bit coin moves at most
//   2^-32 / n of each bucket's mass from its alias to its own class: at most
//   2^-32 in total variation over the whole table, and a zero-weight class is
//   still never drawn.
//
//   The CPU loop is blocked (see DrawRangeWith): 64 draws' words, buckets and
//   coins at a time (with AVX2 where the CPU has it, chosen at run time: no
//   -march flag), prefetches of their table entries, and a branch-free select
//   one block behind, so that cache misses overlap.
//
// COST
//   Build: O(n) time, sequential reads, no extra memory (sweep); O(n) work and
//   O(n) extra memory, O(n / p + log n) depth (split). Draw: O(1), one random
//   8-byte read per sample; the table takes 8n bytes. Unique draws: O(1)
//   expected per draw, with a bitmap of the n classes or, when that would be
//   larger, a hash set; at most a bound of draws (see "draw bound" below),
//   and O(n) once more for that bound when a stream passes 2^20 draws.
//
// SOURCE
//   M. D. Vose, "A linear algorithm for generating random numbers with a given
//   distribution", IEEE TSE 1991; L. Huebschle-Schneider and P. Sanders, above;
//   J. K. Salmon, M. A. Moraes, R. O. Dror, D. E. Shaw, above. The layout of
//   this comment follows tensorflow/core/lib/random/distribution_sampler.h,
//   whose table also packs each bucket's (prob, alias) pair.

#ifndef TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_ALIAS_TABLE_H_
#define TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_ALIAS_TABLE_H_

#include <stdint.h>

#if defined(__CUDACC__)
#define TFS_HD __host__ __device__ __forceinline__
#else
#define TFS_HD inline
#endif

// The CPU draw loop has an AVX2 version, chosen at run time (host code only).
#if !defined(__CUDACC__) && defined(__x86_64__) && \
    (defined(__GNUC__) || defined(__clang__))
#define TF_SAMPLING_ALIAS_AVX2 1
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace tf_sampling {
namespace alias {

// Fixed-point scale of deficits and excesses (2^32).
constexpr double kFixedOne = 4294967296.0;
constexpr double kInvFixedOne = 1.0 / 4294967296.0;
constexpr double kTwoPow53 = 9007199254740992.0;
// Largest table: alias entries are int32.
constexpr int64_t kMaxClasses = (int64_t{1} << 31) - 1;

// ---------------------------------------------------------------- Philox

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

// The bucket and the coin of the random word x: j = floor(x * n / 2^64), and
// the coin is bits 32..63 of x * n mod 2^64 (the fraction x * n / 2^64 - j,
// truncated to 32 bits), uniform given j up to n / 2^64.
TFS_HD void BucketAndCoin(uint64_t x, uint64_t n, uint64_t* j, uint32_t* coin) {
  *j = MulHi64(x, n);
  *coin = static_cast<uint32_t>((x * n) >> 32);
}

// ---------------------------------------------------------------- entries

constexpr uint32_t kAlwaysKeep = 0xFFFFFFFFu;

// ceil(p * 2^32) for a float p in (0, 1), from p's bits with integer
// operations only: p * 2^32 = M * 2^s with M the 24-bit significand. The
// floating-point way (convert, multiply, truncate, convert back, compare) is
// a long dependency chain that the sweep's mispredicted branches expose: it
// made the build at 1e6 classes ~40% slower, and libm's ceil more still.
TFS_HD uint32_t CeilTimesTwoTo32(float p) {
  uint32_t bits;
  memcpy(&bits, &p, sizeof(bits));
  const int e = static_cast<int>(bits >> 23);  // p > 0: no sign bit
  const uint32_t m = bits & 0x7FFFFFu;
  const uint32_t significand = e != 0 ? (m | 0x800000u) : m;
  const int s = (e != 0 ? e : 1) - 118;  // 127 + 23 - 32; s <= 8 for p < 1
  if (s >= 0) return significand << s;
  if (s <= -24) return 1;  // 0 < p * 2^32 <= 1 (significand < 2^24)
  return (significand + (1u << -s) - 1) >> -s;
}

// The entry of a bucket i that always gives class i: its own alias, so the
// coin does not matter (no threshold reaches 2^32).
TFS_HD uint64_t AlwaysKeepEntry(int64_t i) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(i)) << 32) | kAlwaysKeep;
}

// The table entry of bucket i with keep probability p and alias a (see the
// top of the file): threshold ceil(p * 2^32), so that
// coin < threshold <=> coin < p * 2^32; p >= 1 gives AlwaysKeepEntry(i) and
// p <= 0 threshold 0 (never kept).
TFS_HD uint64_t PackEntry(int64_t i, float p, int32_t a) {
  if (p >= 1.0f) return AlwaysKeepEntry(i);
  const uint32_t threshold = p > 0.0f ? CeilTimesTwoTo32(p) : 0u;
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | threshold;
}

TFS_HD uint32_t EntryThreshold(uint64_t e) { return static_cast<uint32_t>(e); }
TFS_HD uint32_t EntryAlias(uint64_t e) { return static_cast<uint32_t>(e >> 32); }

// Bucket j, or its alias a. Branch-free: the coin is unpredictable by design.
// An alias outside [0, n) (a corrupted table) gives the bucket itself and sets
// *bad; the table is only ever read at j < n.
TFS_HD int64_t SelectAlias(uint64_t j, uint32_t a, bool keep, uint64_t n,
                           bool* bad) {
  const bool alias_ok = a < n;
  *bad |= !alias_ok;
  const int64_t use_alias = static_cast<int64_t>(!keep & alias_ok);
  const int64_t jj = static_cast<int64_t>(j);
  return jj + ((static_cast<int64_t>(a) - jj) & -use_alias);
}

// Bucket j's class for a coin, given its table entry e.
TFS_HD int64_t Resolve(uint64_t j, uint32_t coin, uint64_t e, uint64_t n,
                       bool* bad) {
  return SelectAlias(j, EntryAlias(e), coin < EntryThreshold(e), n, bad);
}

// One draw from the table for the random word x (the GPU kernel and the
// scalar paths; DrawRange is the blocked CPU version of the same).
TFS_HD int64_t DrawOne(uint64_t x, uint64_t n, const uint64_t* table,
                       bool* bad) {
  uint64_t j;
  uint32_t coin;
  BucketAndCoin(x, n, &j, &coin);
  return Resolve(j, coin, table[j], n, bad);
}

// ---------------------------------------------------------------- build

enum BuildErrorCode {
  kBuildOk = 0,
  kBuildEmpty = 1,       // n == 0
  kBuildTooLarge = 2,    // n > kMaxClasses
  kBuildNegative = 3,    // a weight < 0 (index, value)
  kBuildNotFinite = 4,   // a weight is NaN or infinite (index, value)
  kBuildZeroSum = 5,     // all weights are zero
  kBuildSumOverflow = 6  // the sum of the weights overflows
};

struct BuildStatus {
  int32_t code;
  int64_t index;  // first bad weight, or -1
  double value;   // its value
};

TFS_HD bool WeightIsFinite(double w) {
  return w - w == 0.0;  // false for NaN and +-inf
}

// Scaled weight q = w * n / W; a class is light iff q < 1. On the GPU the
// product is rounded on its own (no fused multiply-add into 1 - q), so that
// every implementation classifies and rounds identically.
TFS_HD double Scaled(double w, double scale) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(w, scale);
#else
  return w * scale;
#endif
}

TFS_HD int64_t Deficit(double q) {  // for a light
  return static_cast<int64_t>((1.0 - q) * kFixedOne);
}

TFS_HD int64_t Excess(double q) {  // for a heavy
  return static_cast<int64_t>((q - 1.0) * kFixedOne);
}

TFS_HD float ClampProb(double p) {
  return p <= 0.0 ? 0.0f : (p >= 1.0 ? 1.0f : static_cast<float>(p));
}

// The position on the sweep after k buckets: the number of lights i (the
// heavies closed are k - i). Smallest i in [max(0, k - b), min(k, a)] with
// cond(i) = (i == a) || (k - i < b && EH[k - i] <= DL[i]), where DL[i] is the
// sum of the deficits of the first i lights and EH[j] the sum of the excesses
// of the first j heavies. cond is monotone in i. The last heavy is closed only
// after every light (it takes whatever rounding leaves over).
TFS_HD int64_t FindSplit(int64_t k, const int64_t* DL, int64_t a,
                         const int64_t* EH, int64_t b) {
  int64_t lo = k - b > 0 ? k - b : 0;
  int64_t hi = k < a ? k : a;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    const int64_t j = k - mid;
    const bool cond = (mid == a) || (j < b && EH[j] <= DL[mid]);
    if (cond) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

// Runs the sweep from state (i, j) until lights [i, i_end) and heavies
// [j, j_end) have their buckets. `light` and `heavy` list the class ids of
// lights and heavies in index order; DL has a + 1 entries, EH has b + 1.
// Requires b >= 1.
template <typename T>
TFS_HD void SweepSection(const T* w, double scale, const int32_t* light,
                         const int32_t* heavy, const int64_t* DL, int64_t a,
                         const int64_t* EH, int64_t b, int64_t i,
                         int64_t i_end, int64_t j, int64_t j_end,
                         uint64_t* table) {
  // Remaining mass of heavy j is 1 + slack / 2^32.
  int64_t slack = j < b ? EH[j + 1] - DL[i] : 0;
  while (i < i_end || j < j_end) {
    const bool close_heavy =
        j < j_end && (i == i_end || i == a || (j + 1 < b && slack <= 0));
    if (close_heavy) {
      const int32_t h = heavy[j];
      if (j + 1 >= b) {
        table[h] = AlwaysKeepEntry(h);
      } else {
        table[h] = PackEntry(
            h, ClampProb(1.0 + static_cast<double>(slack) * kInvFixedOne),
            heavy[j + 1]);
      }
      ++j;
      if (j < b) slack += EH[j + 1] - EH[j];
    } else {
      const int32_t l = light[i];
      table[l] = PackEntry(l, ClampProb(Scaled(static_cast<double>(w[l]), scale)),
                           heavy[j < b ? j : b - 1]);
      slack -= DL[i + 1] - DL[i];
      ++i;
    }
  }
}

// ---------------------------------------------------------------- host only

inline std::string BuildErrorMessage(const BuildStatus& s,
                                     const char* name = "weights") {
  const std::string arg = std::string("`") + name + "`";
  char value[64];
  std::snprintf(value, sizeof(value), "%.9g", s.value);
  const std::string entry =
      std::string(name) + "[" + std::to_string(s.index) + "] = " + value;
  switch (s.code) {
    case kBuildOk:
      return "";
    case kBuildEmpty:
      return arg + " is empty; an alias table needs at least one class.";
    case kBuildTooLarge:
      return arg + " has more than 2^31 - 1 classes.";
    case kBuildNegative:
      return arg + " must be non-negative, got " + entry + ".";
    case kBuildNotFinite:
      return arg + " must be finite, got " + entry + ".";
    case kBuildZeroSum:
      return arg + " are all zero; at least one weight must be positive.";
    case kBuildSumOverflow:
      return "the sum of " + arg + " overflows a double.";
  }
  return "unknown alias-table build error";
}

// Checks the weights and returns their sum (sequentially, in double).
template <typename T>
BuildStatus CheckAndSum(const T* w, int64_t n, double* total) {
  BuildStatus st{kBuildOk, -1, 0.0};
  if (n <= 0) {
    st.code = kBuildEmpty;
    return st;
  }
  if (n > kMaxClasses) {
    st.code = kBuildTooLarge;
    return st;
  }
  double sum = 0.0;
  bool all_ok = true;
  for (int64_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(w[i]);
    all_ok &= (v >= 0.0) & WeightIsFinite(v);
    sum += v;
  }
  if (!all_ok) {  // second pass only to name the first bad entry
    for (int64_t i = 0; i < n; ++i) {
      const double v = static_cast<double>(w[i]);
      if (!WeightIsFinite(v)) {
        st.code = kBuildNotFinite;
      } else if (v < 0.0) {
        st.code = kBuildNegative;
      } else {
        continue;
      }
      st.index = i;
      st.value = v;
      return st;
    }
  }
  if (!WeightIsFinite(sum)) {
    st.code = kBuildSumOverflow;
    return st;
  }
  if (sum <= 0.0) {
    st.code = kBuildZeroSum;
    return st;
  }
  *total = sum;
  return st;
}

// Sequential sweep build (see the top of the file) into table[0, n). Makes
// exactly the table of BuildSplit.
template <typename T>
void BuildSweepWithTotal(const T* w, int64_t n, double total, uint64_t* table);

template <typename T>
BuildStatus BuildSweep(const T* w, int64_t n, uint64_t* table) {
  double total = 0.0;
  BuildStatus st = CheckAndSum(w, n, &total);
  if (st.code == kBuildOk) BuildSweepWithTotal(w, n, total, table);
  return st;
}

// The sweep for checked weights of sum `total` (the GPU harness passes the
// GPU's sum to compare tables bit for bit).
template <typename T>
void BuildSweepWithTotal(const T* w, int64_t n, double total, uint64_t* table) {
  const double scale = static_cast<double>(n) / total;
  auto q = [&](int64_t k) { return Scaled(static_cast<double>(w[k]), scale); };
  auto next_light = [&](int64_t k) {
    while (k < n && !(q(k) < 1.0)) ++k;
    return k;
  };
  auto next_heavy = [&](int64_t k) {
    while (k < n && q(k) < 1.0) ++k;
    return k;
  };
  int64_t j = next_heavy(0);
  if (j == n) {  // all q < 1 only by rounding: the weights are all equal
    for (int64_t k = 0; k < n; ++k) {
      table[k] = AlwaysKeepEntry(k);
    }
    return;
  }
  int64_t i = next_light(0);
  int64_t jn = next_heavy(j + 1);
  int64_t slack = Excess(q(j));
  while (true) {
    const bool close_heavy = i == n || (jn < n && slack <= 0);
    if (close_heavy) {
      if (jn == n) {  // the last heavy, after every light
        table[j] = AlwaysKeepEntry(j);
        break;
      }
      table[j] = PackEntry(
          j, ClampProb(1.0 + static_cast<double>(slack) * kInvFixedOne),
          static_cast<int32_t>(jn));
      j = jn;
      jn = next_heavy(j + 1);
      slack += Excess(q(j));
    } else {
      const double qi = q(i);
      table[i] = PackEntry(i, ClampProb(qi), static_cast<int32_t>(j));
      slack -= Deficit(qi);
      i = next_light(i + 1);
    }
  }
}

// The split method on the CPU: the prefix arrays, then `num_sections`
// independent sweeps, run through parallel_for(num_sections, fn(begin, end)).
// Used by the tests as the reference for the CUDA build, which runs the same
// SweepSection per thread.
template <typename T, typename ParallelFor>
BuildStatus BuildSplit(const T* w, int64_t n, int64_t section_size,
                       uint64_t* table, const ParallelFor& parallel_for) {
  double total = 0.0;
  BuildStatus st = CheckAndSum(w, n, &total);
  if (st.code != kBuildOk) return st;
  const double scale = static_cast<double>(n) / total;
  std::vector<int32_t> light, heavy;
  std::vector<int64_t> DL(1, 0), EH(1, 0);
  for (int64_t k = 0; k < n; ++k) {
    const double qk = Scaled(static_cast<double>(w[k]), scale);
    if (qk < 1.0) {
      light.push_back(static_cast<int32_t>(k));
      DL.push_back(DL.back() + Deficit(qk));
    } else {
      heavy.push_back(static_cast<int32_t>(k));
      EH.push_back(EH.back() + Excess(qk));
    }
  }
  const int64_t a = static_cast<int64_t>(light.size());
  const int64_t b = static_cast<int64_t>(heavy.size());
  if (b == 0) {
    for (int64_t k = 0; k < n; ++k) {
      table[k] = AlwaysKeepEntry(k);
    }
    return st;
  }
  const int64_t sections = (n + section_size - 1) / section_size;
  std::vector<int64_t> split(sections + 1);
  for (int64_t p = 0; p <= sections; ++p) {
    const int64_t k = std::min(p * section_size, n);
    split[p] = FindSplit(k, DL.data(), a, EH.data(), b);
  }
  parallel_for(sections, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t k0 = std::min(p * section_size, n);
      const int64_t k1 = std::min((p + 1) * section_size, n);
      SweepSection(w, scale, light.data(), heavy.data(), DL.data(), a,
                   EH.data(), b, split[p], split[p + 1], k0 - split[p],
                   k1 - split[p + 1], table);
    }
  });
  return st;
}

// ---------------------------------------------------------------- sample
//
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

// A weighted list of extra ids drawn together with a table: a draw comes from
// the table with probability table_mass / (table_mass + cum[m - 1]), else it is
// ids[k] with probability (cum[k] - cum[k - 1]) / cum[m - 1] (cum is the
// running sum of the entries' weights). DynamicAliasSampler keeps its weight
// increments since the last table build in such a list: table + list = the
// current weights, exactly.
struct Mixture {
  const int64_t* ids = nullptr;
  const double* cum = nullptr;
  int64_t m = 0;  // 0: the table alone
  double table_mass = 1.0;
};

// Draws [begin, end) of the mixture stream. With m == 0 this is DrawRange's
// stream; otherwise draw t uses Philox block t: 53 bits of its first word
// choose the component, the second word draws from it (DrawOne for the
// table). Returns false if a corrupted alias entry or an extra id outside
// [0, n) was met (such draws give the bucket / id 0).
inline bool DrawMixtureRangeWith(const BlockFunctions& f,
                                 const uint64_t* table, int64_t n,
                                 const PhiloxKey& key, const Mixture& mix,
                                 int64_t begin, int64_t end, int64_t* out) {
  if (mix.m == 0) return DrawRangeWith(f, table, n, key, begin, end, out);
  const uint64_t un = static_cast<uint64_t>(n);
  const double scale = (mix.table_mass + mix.cum[mix.m - 1]) / kTwoPow53;
  bool bad = false;
  // Per block of kBlockPairs draws: the words, then the list draws and the
  // prefetches of the table rows, then the table draws.
  uint64_t words[kBlockDraws];
  uint32_t bucket[kBlockPairs], coin[kBlockPairs];
  bool from_table[kBlockPairs];
  for (int64_t t0 = begin; t0 < end; t0 += kBlockPairs) {
    const int len = static_cast<int>(std::min<int64_t>(kBlockPairs, end - t0));
    f.words(key, static_cast<uint64_t>(t0), words);
    for (int i = 0; i < len; ++i) {
      const double u =
          static_cast<double>(static_cast<int64_t>(words[2 * i] >> 11)) * scale;
      from_table[i] = u < mix.table_mass;
      if (from_table[i]) {
        uint64_t j;
        BucketAndCoin(words[2 * i + 1], un, &j, &coin[i]);
        bucket[i] = static_cast<uint32_t>(j);
        __builtin_prefetch(table + j);
      } else {
        const double v = u - mix.table_mass;
        int64_t k = std::upper_bound(mix.cum, mix.cum + mix.m, v) - mix.cum;
        if (k >= mix.m) k = mix.m - 1;  // v rounded up to the total
        const int64_t id = mix.ids[k];
        const bool ok = id >= 0 && id < n;
        bad |= !ok;
        out[i] = ok ? id : 0;
      }
    }
    for (int i = 0; i < len; ++i) {
      if (from_table[i]) {
        const uint32_t j = bucket[i];
        out[i] = Resolve(j, coin[i], table[j], un, &bad);
      }
    }
    out += len;
  }
  return !bad;
}

inline bool DrawMixtureRange(const uint64_t* table, int64_t n,
                             const PhiloxKey& key, const Mixture& mix,
                             int64_t begin, int64_t end, int64_t* out) {
  return DrawMixtureRangeWith(CpuBlockFunctions(), table, n, key, mix, begin,
                              end, out);
}

// Number of classes with positive probability under the table (and the
// extra ids of positive weight).
inline int64_t SupportSize(const uint64_t* table, int64_t n,
                           const Mixture& mix = Mixture()) {
  std::vector<char> hit(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    // A threshold below 2^32 leaves the alias at least 2^-32 of the bucket.
    const uint32_t a = EntryAlias(table[i]);
    if (EntryThreshold(table[i]) > 0) hit[i] = 1;
    if (a < static_cast<uint64_t>(n)) hit[a] = 1;
  }
  if (!(mix.table_mass > 0.0)) std::fill(hit.begin(), hit.end(), 0);
  for (int64_t k = 0; k < mix.m; ++k) {
    const double before = k > 0 ? mix.cum[k - 1] : 0.0;
    const int64_t id = mix.ids[k];
    if (mix.cum[k] > before && id >= 0 && id < n) hit[id] = 1;
  }
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += hit[i];
  return count;
}

// P(class) implied by a table, in double (for tests, diagnostics and the
// unique-draw bound). A corrupted alias (outside [0, n)) is skipped.
inline std::vector<double> ImpliedProbabilities(const uint64_t* table,
                                                int64_t n) {
  std::vector<double> p(n, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const double keep = EntryThreshold(table[i]) * kInvFixedOne;
    p[i] += keep;
    const uint32_t a = EntryAlias(table[i]);
    if (a < static_cast<uint64_t>(n)) p[a] += 1.0 - keep;  // else corrupted
  }
  for (double& v : p) v /= static_cast<double>(n);
  return p;
}

// The distinct ids met so far, out of [0, n): a bitmap when it is no larger
// than a hash set for `capacity` ids would be (then an insertion is one
// branch-free read-modify-write), else an open-addressing hash set.
class SeenIds {
 public:
  SeenIds(int64_t n, int64_t capacity) {
    int64_t slots = 16;
    while (slots < 2 * capacity) slots <<= 1;
    if ((n + 63) / 64 <= slots) {
      bits_.assign((n + 63) / 64, 0);
    } else {
      slots_.assign(slots, -1);
      mask_ = static_cast<uint64_t>(slots - 1);
    }
  }

  // Appends the ids of draws[0, len) not met before to out[*found, k), until
  // *found == k. Returns the index in draws of the id that made *found reach
  // k, or -1. Ids must be in [0, n).
  int64_t AddNew(const int64_t* draws, int64_t len, int64_t k, int64_t* out,
                 int64_t* found) {
    int64_t f = *found;
    int64_t done = -1;
    if (!bits_.empty()) {
      uint64_t* bits = bits_.data();
      for (int64_t m = 0; m < len; ++m) {
        const uint64_t id = static_cast<uint64_t>(draws[m]);
        const uint64_t bit = uint64_t{1} << (id & 63);
        const uint64_t word = bits[id >> 6];
        bits[id >> 6] = word | bit;
        out[f] = static_cast<int64_t>(id);  // kept only if new: f < k here
        f += (word & bit) == 0;
        if (f == k) {
          done = m;
          break;
        }
      }
    } else {
      for (int64_t m = 0; m < len; ++m) {
        if (Insert(draws[m])) {
          out[f++] = draws[m];
          if (f == k) {
            done = m;
            break;
          }
        }
      }
    }
    *found = f;
    return done;
  }

 private:
  bool Insert(int64_t id) {  // true if the id is new
    uint64_t h = (static_cast<uint64_t>(id) * 0x9E3779B97F4A7C15ull) >> 20;
    while (true) {
      int64_t& s = slots_[h & mask_];
      if (s == id) return false;
      if (s < 0) {
        s = id;
        return true;
      }
      ++h;
    }
  }

  std::vector<uint64_t> bits_;
  std::vector<int64_t> slots_;
  uint64_t mask_ = 0;
};

enum UniqueStatus {
  kUniqueOk = 0,
  kUniqueBadAlias = 1,      // a corrupted alias entry or extra id was met
  kUniqueTooFew = 2,        // fewer than k classes have positive probability
  kUniqueTooManyTries = 3,  // the draw bound was reached without k distinct ids
  kUniqueBoundTooLarge = 4  // the draw bound exceeds kMaxUniqueDraws
};

// ---------------------------------------------------------------- draw bound
//
// Unique sampling draws until k distinct ids were seen. Its number of draws T
// is bounded so that a skewed distribution (one class with almost all the
// mass) or a corrupted one can neither run without end nor exhaust memory:
//
//   With S_j the sum of the j largest class probabilities, after j distinct
//   ids a draw is new with probability >= r_j = 1 - S_j, so T is
//   stochastically below X = sum_{j<k} Geom(r_j), of mean mu = sum_j 1 / r_j.
//   Janson ("Tail bounds for sums of geometric and exponential variables",
//   Statist. Probab. Lett. 135, 2018, Thm 2.1): for lambda >= 1,
//   P(X >= lambda mu) <= exp(-r_{k-1} mu (lambda - 1 - ln lambda)).
//   With c = ln(2^40) / (r_{k-1} mu) and lambda = 1 + 2c + sqrt(2c), which has
//   lambda - 1 - ln lambda >= c for every c > 0, P(T >= lambda mu) <= 2^-40.
//
//   The bound is max(kUniqueFreeDraws, 2k, lambda mu) draws. Past it a stream
//   of the table's own distribution fails with probability below 2^-40, so
//   reaching it means a corrupted distribution: an error, never more draws.
//   A bound above kMaxUniqueDraws (e.g. 100 distinct ids of 10^4 classes when
//   one class has weight 10^12 and the others 1: about 10^10 draws) is an
//   error as soon as the bound is computed.
//
// The bound costs O(n) (the class probabilities and a partial sort of the k
// largest), so it is only computed once a stream has used kUniqueFreeDraws
// draws (8 MB of buffer); below that no check is needed. A round of draws has
// at most kMaxRoundDraws entries, so the memory stays
// O(min(bound, kMaxRoundDraws) + k) whatever the bound.

constexpr int64_t kUniqueFreeDraws = int64_t{1} << 20;
constexpr int64_t kMaxUniqueDraws = int64_t{1} << 32;
constexpr int64_t kMaxRoundDraws = int64_t{1} << 22;
// ln(2^40): the bound fails a correct stream with probability <= 2^-40.
constexpr double kUniqueLogInvDelta = 27.725887222397812;

// lambda * mu of the comment above, for k distinct ids out of class
// probabilities p[0, n) (any positive scale; they are normalized here); +inf
// if fewer than k classes have positive probability. p is reordered.
inline double UniqueDrawBoundFromProbabilities(double* p, int64_t n,
                                               int64_t k) {
  if (k <= 0) return 0.0;
  if (k > n) return HUGE_VAL;
  // The k largest first (descending), the rest after them.
  std::nth_element(p, p + (k - 1), p + n, [](double a, double b) { return a > b; });
  std::sort(p, p + k, [](double a, double b) { return a > b; });
  double rest = 0.0;  // summed directly: 1 - S_j would cancel
  for (int64_t i = k; i < n; ++i) rest += p[i];
  double total = rest;
  for (int64_t i = 0; i < k; ++i) total += p[i];
  if (!(total > 0.0)) return HUGE_VAL;
  double mu = 0.0, r = rest;
  for (int64_t j = k - 1; j >= 0; --j) {
    r += p[j];  // r = sum of p outside the j largest = total * r_j
    if (!(r > 0.0)) return HUGE_VAL;
    mu += total / r;
  }
  const double r_min = (rest + p[k - 1]) / total;
  if (!(r_min > 0.0)) return HUGE_VAL;
  const double c = kUniqueLogInvDelta / (r_min * mu);
  const double lambda = 1.0 + 2.0 * c + std::sqrt(2.0 * c);
  return lambda * mu;
}

// The draw bound of the (mixture) stream of a valid table, as above: the
// larger of kUniqueFreeDraws, 2k and lambda * mu, or +inf with *support < k.
inline double UniqueDrawBound(const uint64_t* table, int64_t n,
                              const Mixture& mix, int64_t k,
                              int64_t* support) {
  std::vector<double> p = ImpliedProbabilities(table, n);
  const double table_mass = mix.m > 0 ? mix.table_mass : 1.0;
  for (double& v : p) v *= table_mass;
  for (int64_t i = 0; i < mix.m; ++i) {
    const double before = i > 0 ? mix.cum[i - 1] : 0.0;
    const int64_t id = mix.ids[i];
    if (id >= 0 && id < n && mix.cum[i] > before) p[id] += mix.cum[i] - before;
  }
  int64_t positive = 0;
  for (double v : p) positive += v > 0.0;
  *support = positive;
  if (positive < k) return HUGE_VAL;
  const double b = UniqueDrawBoundFromProbabilities(p.data(), n, k);
  return std::max(b, static_cast<double>(std::max(kUniqueFreeDraws, 2 * k)));
}

// Length of the next round of draws for unique sampling: the draws that the
// `want` ids still missing should take at the last round's rate of new ids
// (which only falls as the sample fills, so rounds rather stop short than
// overshoot; an extra round costs little, wasted draws cost their time), at
// least 512, and at most 4x the draws so far, so that a long tail takes
// O(log) rounds, and at most kMaxRoundDraws. Even, so that the rounds start
// on Philox pairs.
inline int64_t NextRoundLength(int64_t want, int64_t last_len, int64_t last_new,
                               int64_t pos) {
  int64_t len;
  if (last_len == 0) {  // first round: a little more than k, for repeats
    len = want + want / 4 + 64;
  } else if (last_new == 0) {
    len = 2 * pos;
  } else {
    const double est = static_cast<double>(want) *
                       static_cast<double>(last_len) /
                       static_cast<double>(last_new);
    len = static_cast<int64_t>(std::min(est * 1.125, 4.0 * pos + 1024.0)) + 64;
  }
  len = std::min(std::max<int64_t>(len, 512), kMaxRoundDraws);
  return (len + 1) & ~int64_t{1};
}

// Draws per piece of parallel work in SampleUnique (even: the pieces start on
// Philox pairs).
constexpr int64_t kUniquePiece = 4096;

// What SampleUnique reports besides the ids.
struct UniqueStats {
  int64_t num_tries = 0;  // draws used (the position of the last id + 1)
  int64_t support = -1;   // classes of positive probability, if computed
  double bound = -1.0;    // the draw bound, if computed
};

// The first k distinct ids of the (mixture) draw stream, in order of first
// appearance, and stats->num_tries = the stream position of the last one + 1:
// the number of i.i.d. draws it took, so that the expected count of class c
// in the result is 1 - (1 - p_c)^num_tries. The stream is DrawMixtureRange's,
// drawn in rounds (NextRoundLength), each in pieces through
// parallel_for(num_pieces, fn(begin, end)); the result does not depend on
// the rounds or pieces. At most the draw bound is drawn (see above).
template <typename ParallelFor>
int SampleUniqueBounded(const uint64_t* table, int64_t n, const PhiloxKey& key,
                        const Mixture& mix, int64_t k, int64_t* out,
                        UniqueStats* stats, const ParallelFor& parallel_for) {
  stats->num_tries = 0;
  if (k <= 0) return kUniqueOk;
  const BlockFunctions& f = CpuBlockFunctions();
  SeenIds seen(n, k);
  int64_t found = 0, pos = 0, len = 0, last_new = 0;
  // Draws allowed before the bound is known, then the bound.
  int64_t limit = std::max(kUniqueFreeDraws, 2 * k);
  bool bound_known = false;
  std::vector<int64_t> buf;
  std::vector<char> piece_ok;
  while (true) {
    if (pos >= limit) {
      if (bound_known) return kUniqueTooManyTries;
      bound_known = true;
      stats->bound = UniqueDrawBound(table, n, mix, k, &stats->support);
      if (stats->support < k) return kUniqueTooFew;
      if (!(stats->bound <= static_cast<double>(kMaxUniqueDraws))) {
        return kUniqueBoundTooLarge;
      }
      limit = static_cast<int64_t>(std::ceil(stats->bound));
      continue;
    }
    len = NextRoundLength(k - found, len, last_new, pos);
    len = std::min(len, limit - pos);
    buf.resize(len);
    const int64_t pieces = (len + kUniquePiece - 1) / kUniquePiece;
    piece_ok.assign(pieces, 1);
    parallel_for(pieces, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p) {
        const int64_t s = p * kUniquePiece;
        const int64_t t = std::min(len, s + kUniquePiece);
        piece_ok[p] = DrawMixtureRangeWith(f, table, n, key, mix, pos + s,
                                           pos + t, buf.data() + s);
      }
    });
    for (char c : piece_ok) {
      if (!c) return kUniqueBadAlias;
    }
    const int64_t before = found;
    const int64_t m = seen.AddNew(buf.data(), len, k, out, &found);
    if (m >= 0) {
      stats->num_tries = pos + m + 1;
      return kUniqueOk;
    }
    last_new = found - before;
    pos += len;
  }
}

template <typename ParallelFor>
int SampleUnique(const uint64_t* table, int64_t n, const PhiloxKey& key,
                 const Mixture& mix, int64_t k, int64_t* out,
                 int64_t* num_tries, int64_t* support,
                 const ParallelFor& parallel_for) {
  UniqueStats stats;
  const int rc =
      SampleUniqueBounded(table, n, key, mix, k, out, &stats, parallel_for);
  *num_tries = stats.num_tries;
  *support = stats.support;
  return rc;
}

// The table alone.
template <typename ParallelFor>
int SampleUnique(const uint64_t* table, int64_t n, const PhiloxKey& key,
                 int64_t k, int64_t* out, int64_t* num_tries, int64_t* support,
                 const ParallelFor& parallel_for) {
  return SampleUnique(table, n, key, Mixture(), k, out, num_tries, support,
                      parallel_for);
}

}  // namespace alias
}  // namespace tf_sampling

#endif  // TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_ALIAS_TABLE_H_
