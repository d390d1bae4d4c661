// Alias tables: their packed layout, their build from non-negative weights,
// and one draw from a random word. No TensorFlow in here, so that the
// algorithm is unit-tested on its own (alias_table_test.cc) and shared by the
// CPU kernels, the CUDA kernels (alias_gpu.cu.h) and the standalone GPU
// harness. The blocked CPU draw loop is alias_draw_cpu.h; mixtures and
// unique draws are range_sampler.h.
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
//   entry, one cache line (two arrays would take two random reads), and at
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
//   One draw: for a 64-bit random word x (philox_random.h),
//   j = floor(x * n / 2^64) is the bucket, and the next 32 bits of x * n (the
//   fraction x * n / 2^64 - j, truncated) are a uniform 32-bit coin given j;
//   the bucket keeps its class iff coin < threshold[j] (DrawOne).
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
// COST
//   Build: O(n) time, sequential reads, no extra memory (sweep); O(n) work and
//   O(n) extra memory, O(n / p + log n) depth (split). Draw: O(1), one random
//   8-byte read per sample; the table takes 8n bytes.
//
// SOURCE
//   M. D. Vose, "A linear algorithm for generating random numbers with a given
//   distribution", IEEE TSE 1991; L. Huebschle-Schneider and P. Sanders, above.
//   The layout of this comment follows
//   tensorflow/core/lib/random/distribution_sampler.h, whose table also packs
//   each bucket's (prob, alias) pair.

#ifndef TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_DISTRIBUTION_SAMPLER_H_
#define TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_DISTRIBUTION_SAMPLER_H_

#include <stdint.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/philox_random.h"

namespace tf_sampling {
namespace alias {

// Fixed-point scale of deficits and excesses (2^32).
constexpr double kFixedOne = 4294967296.0;
constexpr double kInvFixedOne = 1.0 / 4294967296.0;
constexpr double kTwoPow53 = 9007199254740992.0;
// Largest table: alias entries are int32.
constexpr int64_t kMaxClasses = (int64_t{1} << 31) - 1;

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

}  // namespace alias
}  // namespace tf_sampling

#endif  // TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_DISTRIBUTION_SAMPLER_H_
