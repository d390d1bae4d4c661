// Mixture and unique sampling from an alias table: draws from a table
// together with a weighted list of extra ids (DynamicAliasSampler's pending
// weight increments), and the first k distinct ids of a draw stream with the
// number of draws that took. No TensorFlow in here (alias_table_test.cc tests
// it on its own).
//
// ALGORITHM
//   Mixture: with an empty list, the table's stream (DrawRange). Otherwise
//   draw t uses Philox block t: 53 bits of its first word choose the
//   component (the table with probability table_mass / total), the second
//   word draws from it (DrawOne for the table, a search of the running sums
//   for the list).
//   Unique: the stream is drawn in rounds (NextRoundLength) of parallel pieces
//   and deduplicated in stream order (SeenIds: a bitmap of the n classes or,
//   when that would be larger, a hash set), so the result is the same whatever
//   the rounds and pieces. The number of draws is bounded (see "draw bound"
//   below): a skewed or corrupted distribution is an error, never an endless
//   loop.
//
// COST
//   Mixture: O(1) per table draw, O(log m) per list draw. Unique: O(1)
//   expected per draw, at most a bound of draws, and O(n) once more for that
//   bound when a stream passes 2^20 draws; memory O(min(bound, 2^22) + k)
//   plus the set of seen ids.
//
// SOURCE
//   The draw bound is S. Janson, "Tail bounds for sums of geometric and
//   exponential variables", Statist. Probab. Lett. 135, 2018, Thm 2.1. The
//   contract of a batch of distinct ids (num_tries, expected count
//   1 - (1 - p)^num_tries) is that of TF's RangeSampler
//   (tensorflow/core/kernels/range_sampler.h, SampleBatchGetExpectedCount).

#ifndef TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_RANGE_SAMPLER_H_
#define TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_RANGE_SAMPLER_H_

#include <stdint.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/alias_draw_cpu.h"
#include "kernels/distribution_sampler.h"
#include "kernels/philox_random.h"

namespace tf_sampling {
namespace alias {

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
  // Blocks of kBlockPairs draws, pipelined as in DrawRangeWith: a block is
  // staged (its words, its list draws, the buckets and coins of its table
  // draws and prefetches of their table rows) before the block staged
  // earlier is resolved, so that its table misses overlap the work between.
  uint32_t bucket[2][kBlockPairs], coin[2][kBlockPairs];
  bool from_table[2][kBlockPairs];
  auto stage = [&](int s, int64_t t0) {
    uint64_t words[kBlockDraws];
    const int len = static_cast<int>(std::min<int64_t>(kBlockPairs, end - t0));
    int64_t* dst = out + (t0 - begin);
    f.words(key, static_cast<uint64_t>(t0), words);
    for (int i = 0; i < len; ++i) {
      const double u =
          static_cast<double>(static_cast<int64_t>(words[2 * i] >> 11)) * scale;
      from_table[s][i] = u < mix.table_mass;
      if (from_table[s][i]) {
        uint64_t j;
        BucketAndCoin(words[2 * i + 1], un, &j, &coin[s][i]);
        bucket[s][i] = static_cast<uint32_t>(j);
        __builtin_prefetch(table + j);
      } else {
        const double v = u - mix.table_mass;
        int64_t k = std::upper_bound(mix.cum, mix.cum + mix.m, v) - mix.cum;
        if (k >= mix.m) k = mix.m - 1;  // v rounded up to the total
        const int64_t id = mix.ids[k];
        const bool ok = id >= 0 && id < n;
        bad |= !ok;
        dst[i] = ok ? id : 0;
      }
    }
  };
  auto resolve = [&](int s, int64_t t0) {
    const int len = static_cast<int>(std::min<int64_t>(kBlockPairs, end - t0));
    int64_t* dst = out + (t0 - begin);
    for (int i = 0; i < len; ++i) {
      if (from_table[s][i]) {
        const uint32_t j = bucket[s][i];
        dst[i] = Resolve(j, coin[s][i], table[j], un, &bad);
      }
    }
  };
  if (begin < end) stage(0, begin);
  int s = 0;
  for (int64_t t0 = begin; t0 < end; t0 += kBlockPairs, s ^= 1) {
    if (t0 + kBlockPairs < end) stage(s ^ 1, t0 + kBlockPairs);
    resolve(s, t0);
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
// O(log) rounds, and at most kMaxRoundDraws. The first round, with no rate
// known yet, is k and a sixteenth more: a flat distribution repeats few ids
// (k^2 / 2n of them among n classes), and a skewed one goes on by rate. Even,
// so that the rounds start on Philox pairs.
inline int64_t NextRoundLength(int64_t want, int64_t last_len, int64_t last_new,
                               int64_t pos) {
  int64_t len;
  if (last_len == 0) {
    len = want + want / 16 + 64;
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

#endif  // TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_RANGE_SAMPLER_H_
