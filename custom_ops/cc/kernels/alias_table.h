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
//   sum) and the final float32 probabilities are rounded; the table represents
//   the weights to about 1e-7 relative per class. A class of weight 0 gets
//   prob 0 and is never an alias target, so it is never drawn.
//
//   Sampling: one Philox-4x32-10 block (Salmon et al., "Parallel random
//   numbers: as easy as 1, 2, 3", SC 2011) keyed by the seed and counted by the
//   draw index gives two 64-bit words, one per draw. For a word x,
//   floor(x * n / 2^64) is the bucket and the low 64 bits of x * n are a
//   uniform coin independent of it, compared with prob[bucket] at 2^-53
//   resolution. Draw t depends only on (seed, t): the output does not depend on
//   how the work is split between threads or on the device.
//
// COST
//   Build: O(n) time, sequential reads, no extra memory (sweep); O(n) work and
//   O(n) extra memory, O(n / p + log n) depth (split). Draw: O(1), two random
//   reads per sample. Unique draws: O(1) expected per draw, with a hash set.
//
// SOURCE
//   M. D. Vose, "A linear algorithm for generating random numbers with a given
//   distribution", IEEE TSE 1991; L. Huebschle-Schneider and P. Sanders, above;
//   J. K. Salmon, M. A. Moraes, R. O. Dror, D. E. Shaw, above. The layout
//   follows tensorflow/core/lib/random/distribution_sampler.h.

#ifndef TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_ALIAS_TABLE_H_
#define TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_ALIAS_TABLE_H_

#include <stdint.h>

#if defined(__CUDACC__)
#define TFS_HD __host__ __device__ __forceinline__
#else
#define TFS_HD inline
#endif

#include <algorithm>
#include <cmath>
#include <cstdio>
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

// One draw from the table for the random word x. The bucket is
// floor(x * n / 2^64); the low half of x * n is a uniform coin given the
// bucket. An alias outside [0, n) (a corrupted table) gives the bucket itself
// and sets *bad, so that no out-of-range read ever happens.
TFS_HD int64_t DrawOne(uint64_t x, uint64_t n, const float* prob,
                       const int32_t* alias, bool* bad) {
  const uint64_t j = MulHi64(x, n);
  const uint64_t frac = x * n;
  const double coin = static_cast<double>(static_cast<int64_t>(frac >> 11));
  const uint32_t a = static_cast<uint32_t>(alias[j]);
  const bool alias_ok = a < n;
  *bad |= !alias_ok;
  const bool keep = coin < static_cast<double>(prob[j]) * kTwoPow53;
  // Branch-free select: the coin is unpredictable by design.
  const int64_t use_alias = static_cast<int64_t>(!keep & alias_ok);
  const int64_t jj = static_cast<int64_t>(j);
  return jj + ((static_cast<int64_t>(a) - jj) & -use_alias);
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
                         int64_t i_end, int64_t j, int64_t j_end, float* prob,
                         int32_t* alias) {
  // Remaining mass of heavy j is 1 + slack / 2^32.
  int64_t slack = j < b ? EH[j + 1] - DL[i] : 0;
  while (i < i_end || j < j_end) {
    const bool close_heavy =
        j < j_end && (i == i_end || i == a || (j + 1 < b && slack <= 0));
    if (close_heavy) {
      const int32_t h = heavy[j];
      if (j + 1 >= b) {
        prob[h] = 1.0f;
        alias[h] = h;
      } else {
        prob[h] = ClampProb(1.0 + static_cast<double>(slack) * kInvFixedOne);
        alias[h] = heavy[j + 1];
      }
      ++j;
      if (j < b) slack += EH[j + 1] - EH[j];
    } else {
      const int32_t l = light[i];
      prob[l] = ClampProb(Scaled(static_cast<double>(w[l]), scale));
      alias[l] = heavy[j < b ? j : b - 1];
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

// Sequential sweep build (see the top of the file). prob and alias have n
// entries. Makes exactly the table of BuildSplit.
template <typename T>
void BuildSweepWithTotal(const T* w, int64_t n, double total, float* prob,
                         int32_t* alias);

template <typename T>
BuildStatus BuildSweep(const T* w, int64_t n, float* prob, int32_t* alias) {
  double total = 0.0;
  BuildStatus st = CheckAndSum(w, n, &total);
  if (st.code == kBuildOk) BuildSweepWithTotal(w, n, total, prob, alias);
  return st;
}

// The sweep for checked weights of sum `total` (the GPU harness passes the
// GPU's sum to compare tables bit for bit).
template <typename T>
void BuildSweepWithTotal(const T* w, int64_t n, double total, float* prob,
                         int32_t* alias) {
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
      prob[k] = 1.0f;
      alias[k] = static_cast<int32_t>(k);
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
        prob[j] = 1.0f;
        alias[j] = static_cast<int32_t>(j);
        break;
      }
      prob[j] = ClampProb(1.0 + static_cast<double>(slack) * kInvFixedOne);
      alias[j] = static_cast<int32_t>(jn);
      j = jn;
      jn = next_heavy(j + 1);
      slack += Excess(q(j));
    } else {
      const double qi = q(i);
      prob[i] = ClampProb(qi);
      alias[i] = static_cast<int32_t>(j);
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
                       float* prob, int32_t* alias,
                       const ParallelFor& parallel_for) {
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
      prob[k] = 1.0f;
      alias[k] = static_cast<int32_t>(k);
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
                   k1 - split[p + 1], prob, alias);
    }
  });
  return st;
}

// ---------------------------------------------------------------- sample

// Draws [begin, end) of the stream for `key` into out[0 .. end - begin).
// Returns false if a corrupted alias entry was met.
//
// Speed: the table reads miss the cache once the table outgrows L2, and each
// draw is too long a chain of instructions for the out-of-order window to
// overlap many of them. So the random words are made a block ahead (the
// Philox loop vectorizes), and each draw prefetches the bucket of the draw
// kPrefetch places later: about twice the throughput at 1e6 classes.
inline bool DrawRange(const float* prob, const int32_t* alias, int64_t n,
                      const PhiloxKey& key, int64_t begin, int64_t end,
                      int64_t* out) {
  const uint64_t un = static_cast<uint64_t>(n);
  bool bad = false;
  int64_t t = begin;
  uint64_t x0, x1;
  if (t < end && (t & 1)) {  // odd start: second half of a pair
    DrawPair(key, static_cast<uint64_t>(t) >> 1, &x0, &x1);
    *out++ = DrawOne(x1, un, prob, alias, &bad);
    ++t;
  }
  constexpr int kPairs = 32, kBlock = 2 * kPairs, kPrefetch = 32;
  const int64_t blocks = (end - t) / kBlock;
  if (blocks > 0) {
    uint64_t ring[2 * kBlock];
    auto fill = [&](uint64_t* dst, int64_t start) {
      const uint64_t p0 = static_cast<uint64_t>(start) >> 1;
      for (int m = 0; m < kPairs; ++m) {
        DrawPair(key, p0 + m, &dst[2 * m], &dst[2 * m + 1]);
      }
    };
    auto prefetch = [&](uint64_t x) {
      const uint64_t j = MulHi64(x, un);
      __builtin_prefetch(prob + j);
      __builtin_prefetch(alias + j);
    };
    fill(ring, t);
    for (int m = 0; m < kPrefetch; ++m) prefetch(ring[m]);
    for (int64_t b = 0; b < blocks; ++b) {
      uint64_t* cur = ring + (b & 1) * kBlock;
      uint64_t* next = ring + ((b + 1) & 1) * kBlock;
      const bool more = b + 1 < blocks;
      if (more) fill(next, t + kBlock);
      for (int m = 0; m < kBlock; ++m) {
        if (m + kPrefetch < kBlock) {
          prefetch(cur[m + kPrefetch]);
        } else if (more) {
          prefetch(next[m + kPrefetch - kBlock]);
        }
        out[m] = DrawOne(cur[m], un, prob, alias, &bad);
      }
      out += kBlock;
      t += kBlock;
    }
  }
  while (t < end) {
    DrawPair(key, static_cast<uint64_t>(t) >> 1, &x0, &x1);
    *out++ = DrawOne(x0, un, prob, alias, &bad);
    ++t;
    if (t < end) {
      *out++ = DrawOne(x1, un, prob, alias, &bad);
      ++t;
    }
  }
  return !bad;
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
// stream; otherwise draw t uses Philox block t: 53 bits choose the component,
// the other word draws from it. Returns false if a corrupted alias entry or an
// extra id outside [0, n) was met (such draws give the bucket / id 0).
inline bool DrawMixtureRange(const float* prob, const int32_t* alias, int64_t n,
                             const PhiloxKey& key, const Mixture& mix,
                             int64_t begin, int64_t end, int64_t* out) {
  if (mix.m == 0) return DrawRange(prob, alias, n, key, begin, end, out);
  const uint64_t un = static_cast<uint64_t>(n);
  const double scale = (mix.table_mass + mix.cum[mix.m - 1]) / kTwoPow53;
  bool bad = false;
  // Blocks: words first, then the list draws and prefetches of the table
  // buckets, then the table draws (see DrawRange for why).
  constexpr int kBlock = 64;
  uint64_t xs[kBlock];
  bool from_table[kBlock];
  for (int64_t t0 = begin; t0 < end; t0 += kBlock) {
    const int len = static_cast<int>(std::min<int64_t>(kBlock, end - t0));
    for (int i = 0; i < len; ++i) {
      uint64_t x0;
      DrawPair(key, static_cast<uint64_t>(t0 + i), &x0, &xs[i]);
      const double u =
          static_cast<double>(static_cast<int64_t>(x0 >> 11)) * scale;
      from_table[i] = u < mix.table_mass;
      if (from_table[i]) {
        const uint64_t j = MulHi64(xs[i], un);
        __builtin_prefetch(prob + j);
        __builtin_prefetch(alias + j);
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
      if (from_table[i]) out[i] = DrawOne(xs[i], un, prob, alias, &bad);
    }
    out += len;
  }
  return !bad;
}

// Number of classes with positive probability under the table (and the
// extra ids of positive weight).
inline int64_t SupportSize(const float* prob, const int32_t* alias, int64_t n,
                           const Mixture& mix = Mixture()) {
  std::vector<char> hit(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (prob[i] > 0.0f) hit[i] = 1;
    const uint32_t a = static_cast<uint32_t>(alias[i]);
    if (prob[i] < 1.0f && a < static_cast<uint64_t>(n)) hit[a] = 1;
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

// P(class) implied by a table, in double (for tests and diagnostics).
inline std::vector<double> ImpliedProbabilities(const float* prob,
                                                const int32_t* alias,
                                                int64_t n) {
  std::vector<double> p(n, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    p[i] += prob[i];
    p[alias[i]] += 1.0 - static_cast<double>(prob[i]);
  }
  for (double& v : p) v /= static_cast<double>(n);
  return p;
}

// Set of int64 ids; open addressing, sized for `capacity` insertions.
class IdSet {
 public:
  explicit IdSet(int64_t capacity) {
    int64_t size = 16;
    while (size < 2 * capacity) size <<= 1;
    slots_.assign(size, -1);
    mask_ = static_cast<uint64_t>(size - 1);
  }
  // True if the id was not in the set.
  bool Insert(int64_t id) {
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

 private:
  std::vector<int64_t> slots_;
  uint64_t mask_;
};

enum UniqueStatus {
  kUniqueOk = 0,
  kUniqueBadAlias = 1,      // a corrupted alias entry or extra id was met
  kUniqueTooFew = 2,        // fewer than k classes have positive probability
  kUniqueTooManyTries = 3   // 2^36 draws did not find k distinct classes
};

// The first k distinct ids of the (mixture) draw stream, in order of first
// appearance, and *num_tries = the stream position of the last one + 1: the
// number of i.i.d. draws it took, so that the expected count of class c in the
// result is 1 - (1 - p_c)^num_tries. The stream is DrawMixtureRange's, drawn in
// chunks through parallel_for(num_pieces, fn(begin, end)).
template <typename ParallelFor>
int SampleUnique(const float* prob, const int32_t* alias, int64_t n,
                 const PhiloxKey& key, const Mixture& mix, int64_t k,
                 int64_t* out, int64_t* num_tries, int64_t* support,
                 const ParallelFor& parallel_for) {
  IdSet seen(k);
  int64_t found = 0, pos = 0;
  bool support_checked = false;
  std::vector<int64_t> buf;
  while (true) {
    // A little more than the ids still wanted (repeats), and at least half as
    // many as so far, so that a long tail (classes of tiny probability) takes
    // O(log) rounds; the stream is counter-based, so rounds cost no accuracy.
    const int64_t want = k - found;
    const int64_t len =
        std::max<int64_t>(std::max<int64_t>(want + want / 4 + 64, 1024), pos / 2) &
        ~int64_t{1};
    buf.resize(len);
    bool ok = true;
    // Each piece writes its own slice; pieces are aligned on pairs.
    const int64_t piece = 4096;
    const int64_t pieces = (len + piece - 1) / piece;
    std::vector<char> piece_ok(pieces, 1);
    parallel_for(pieces, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p) {
        const int64_t s = p * piece, t = std::min(len, s + piece);
        piece_ok[p] = DrawMixtureRange(prob, alias, n, key, mix, pos + s,
                                       pos + t, buf.data() + s);
      }
    });
    for (char c : piece_ok) ok &= c != 0;
    if (!ok) return kUniqueBadAlias;
    for (int64_t m = 0; m < len; ++m) {
      if (seen.Insert(buf[m])) {
        out[found++] = buf[m];
        if (found == k) {
          *num_tries = pos + m + 1;
          return kUniqueOk;
        }
      }
    }
    pos += len;
    // Slow progress may mean that fewer than k classes can be drawn at all.
    if (!support_checked && pos > 64 * k + (int64_t{1} << 20)) {
      support_checked = true;
      *support = SupportSize(prob, alias, n, mix);
      if (*support < k) return kUniqueTooFew;
    }
    if (pos > (int64_t{1} << 36)) return kUniqueTooManyTries;
  }
}

// The table alone.
template <typename ParallelFor>
int SampleUnique(const float* prob, const int32_t* alias, int64_t n,
                 const PhiloxKey& key, int64_t k, int64_t* out,
                 int64_t* num_tries, int64_t* support,
                 const ParallelFor& parallel_for) {
  return SampleUnique(prob, alias, n, key, Mixture(), k, out, num_tries,
                      support, parallel_for);
}

}  // namespace alias
}  // namespace tf_sampling

#endif  // TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_ALIAS_TABLE_H_
