// Standalone test of the alias-table headers (no TensorFlow): philox_random.h,
// distribution_sampler.h, alias_draw_cpu.h and range_sampler.h.
//   g++ -O2 -std=c++17 -I custom_ops/cc alias_table_test.cc && ./a.out
// tests/test_ops.py compiles and runs it. Prints one line per failure and
// exits non-zero if any check failed.

#include "kernels/range_sampler.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <vector>

using namespace tf_sampling::alias;

static int failures = 0;
#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      ++failures;                                          \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__);     \
      std::printf(__VA_ARGS__);                            \
      std::printf("\n");                                   \
    }                                                      \
  } while (0)

// Runs fn over [0, n) in pieces of 3, last piece first: a stand-in for a
// thread pool that splits and orders the work differently.
struct ShuffledFor {
  template <typename Fn>
  void operator()(int64_t n, const Fn& fn) const {
    for (int64_t e = n; e > 0; e -= 3) fn(e - 3 > 0 ? e - 3 : 0, e);
  }
};
struct SerialFor {
  template <typename Fn>
  void operator()(int64_t n, const Fn& fn) const {
    fn(0, n);
  }
};

static void TestPhiloxKnownAnswers() {
  // Known-answer vectors of Random123 (kat_vectors, philox4x32 10 rounds).
  struct Kat {
    uint32_t ctr[4], key[2], out[4];
  } kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& k : kats) {
    uint32_t out[4];
    Philox4x32x10(k.ctr, k.key[0], k.key[1], out);
    CHECK(std::memcmp(out, k.out, sizeof(out)) == 0,
          "philox KAT mismatch: %08x %08x %08x %08x", out[0], out[1], out[2],
          out[3]);
  }
}

// Validity of a table and its distance to the weights.
template <typename T>
static void CheckTable(const std::vector<T>& w, const std::vector<uint64_t>& table,
                       const char* what) {
  const int64_t n = static_cast<int64_t>(w.size());
  double total = 0;
  for (T v : w) total += static_cast<double>(v);
  // The build's own sum and scale, to know which classes are light.
  double build_total = 0;
  CheckAndSum(w.data(), n, &build_total);
  const double scale = static_cast<double>(n) / build_total;
  std::vector<char> heavy(n);
  for (int64_t i = 0; i < n; ++i) {
    heavy[i] = !(Scaled(static_cast<double>(w[i]), scale) < 1.0);
  }
  bool aliases_ok = true;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t thr = EntryThreshold(table[i]);
    const uint32_t a = EntryAlias(table[i]);
    const bool always = thr == kAlwaysKeep;
    aliases_ok &= a < static_cast<uint64_t>(n);
    CHECK(a < static_cast<uint64_t>(n), "%s: alias[%lld] = %u", what, (long long)i, a);
    // A bucket that always keeps names itself; any other alias target is a
    // heavy (only heavies give mass away), so never a zero-weight class.
    if (a < static_cast<uint64_t>(n)) {
      CHECK(always ? a == i : heavy[a] && a != i,
            "%s: bucket %lld (threshold %u) has alias %u", what, (long long)i, thr, a);
      CHECK(w[a] != 0, "%s: zero-weight class %u is the alias of bucket %lld", what, a,
            (long long)i);
    }
    // A zero-weight class never keeps its own bucket.
    if (w[i] == 0) CHECK(thr == 0, "%s: zero weight %lld has threshold %u", what, (long long)i, thr);
    // A light keeps its bucket with its scaled weight as a float32, rounded
    // up to the threshold ceil(p 2^32); exactly threshold / 2^32 at the draw.
    if (!heavy[i]) {
      const float f = ClampProb(Scaled(static_cast<double>(w[i]), scale));
      const uint32_t want = f >= 1.0f ? kAlwaysKeep
                                      : static_cast<uint32_t>(std::ceil(static_cast<double>(f) * 4294967296.0));
      CHECK(thr == want, "%s: light %lld has threshold %u, want %u (p = %.9g)", what,
            (long long)i, thr, want, f);
    }
  }
  if (!aliases_ok) return;  // ImpliedProbabilities needs valid aliases
  const std::vector<double> p = ImpliedProbabilities(table.data(), n);
  double tv = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double target = static_cast<double>(w[i]) / total;
    tv += 0.5 * std::fabs(p[i] - target);
    if (w[i] == 0) CHECK(p[i] == 0.0, "%s: zero weight %lld has p = %g", what, (long long)i, p[i]);
  }
  // Each bucket's keep probability is a float32 (error <= 2^-25 of a bucket of
  // mass 1/n) rounded up to a multiple of 2^-32 (the threshold), and each
  // bucket feeds two classes: TV <= 2^-24 + 2^-32 plus the fixed-point
  // truncation (2^-32 per bucket). 1e-6 leaves a margin of 16x.
  CHECK(tv <= 1e-6, "%s: total variation to the weights %g", what, tv);
}

template <typename T>
static void TestBuild(const std::vector<T>& w, const char* what) {
  const int64_t n = static_cast<int64_t>(w.size());
  // Poison (alias 0xFFFFFFFF, out of range): every entry must be written.
  const uint64_t kPoison = ~uint64_t{0};
  std::vector<uint64_t> table(n, kPoison), table2(n, kPoison);
  BuildStatus st = BuildSweep(w.data(), n, table.data());
  CHECK(st.code == kBuildOk, "%s: sweep failed: %s", what, BuildErrorMessage(st).c_str());
  if (st.code != kBuildOk) return;
  CheckTable(w, table, what);
  // The split method with any section size makes the very same table.
  const int64_t sizes[] = {1, 2, 3, 7, 64, 1000, n};
  for (int64_t s : sizes) {
    std::fill(table2.begin(), table2.end(), kPoison);
    st = BuildSplit(w.data(), n, s, table2.data(), ShuffledFor());
    CHECK(st.code == kBuildOk, "%s: split failed", what);
    int64_t diff = 0;
    for (int64_t i = 0; i < n; ++i) diff += table[i] != table2[i];
    CHECK(diff == 0, "%s: split(section=%lld) differs from sweep in %lld entries",
          what, (long long)s, (long long)diff);
  }
}

static void TestBuilds() {
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  for (int64_t n : {1, 2, 3, 10, 1000, 100003}) {
    std::vector<float> w(n);
    for (auto& v : w) v = static_cast<float>(unif(rng));
    TestBuild(w, "uniform random");
    std::vector<double> z(n);  // Zipf with zeros in it
    for (int64_t i = 0; i < n; ++i) z[i] = (i % 5 == 3) ? 0.0 : 1.0 / (i + 1.0);
    if (n > 3) TestBuild(z, "zipf with zeros (double)");
    std::vector<float> e(n, 2.5f);
    TestBuild(e, "all equal");
    std::vector<float> one(n, 0.0f);
    one[n / 2] = 3.0f;
    TestBuild(one, "single nonzero");
    // Exact ties between deficits and excesses (q = 0.5 / 1.5, and 0 / 2).
    std::vector<float> ties(n), ties0(n);
    for (int64_t i = 0; i < n; ++i) {
      ties[i] = (i % 2) ? 3.0f : 1.0f;
      ties0[i] = (i % 2) ? 2.0f : 0.0f;
    }
    if (n % 2 == 0) {
      TestBuild(ties, "exact ties");
      TestBuild(ties0, "exact ties with zeros");
    }
    std::vector<double> wide(n);  // 60 orders of magnitude
    for (int64_t i = 0; i < n; ++i) wide[i] = std::pow(10.0, -30.0 + 60.0 * unif(rng));
    TestBuild(wide, "wide dynamic range");
  }
  // Large integer counts (like learned unigram counts) in float64.
  std::vector<double> counts(50000);
  for (auto& c : counts) c = std::floor(1e12 * unif(rng) * unif(rng) * unif(rng));
  TestBuild(counts, "large counts");
}

static void TestErrors() {
  uint64_t table[4];
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    std::vector<float> w;
    int code;
    int64_t index;
  } cases[] = {
      {{1, -1, 2, 3}, kBuildNegative, 1},
      {{1, 2, nan, 3}, kBuildNotFinite, 2},
      {{inf, 1, 2, 3}, kBuildNotFinite, 0},
      {{0, 0, 0, 0}, kBuildZeroSum, -1},
      {{}, kBuildEmpty, -1},
  };
  for (const Case& c : cases) {
    BuildStatus st = BuildSweep(c.w.data(), static_cast<int64_t>(c.w.size()), table);
    CHECK(st.code == c.code && st.index == c.index, "error case: got code %d index %lld (%s)",
          st.code, (long long)st.index, BuildErrorMessage(st).c_str());
    CHECK(!BuildErrorMessage(st).empty(), "error case without a message");
  }
  std::vector<double> big(3, 1e308);
  BuildStatus st = BuildSweep(big.data(), 3, table);
  CHECK(st.code == kBuildSumOverflow, "overflowing sum not caught");
}

static void TestSampling() {
  // Chi-square of 2e6 draws over 50 classes (6 of weight 0).
  const int n = 50;
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  std::vector<float> w(n);
  for (int i = 0; i < n; ++i) w[i] = (i % 8 == 5) ? 0.0f : static_cast<float>(unif(rng) * (i + 1));
  std::vector<uint64_t> table(n);
  BuildSweep(w.data(), n, table.data());
  const int64_t N = 2000000;
  std::vector<int64_t> draws(N);
  const PhiloxKey key = MakeKey(12345, -678);
  CHECK(DrawRange(table.data(), n, key, 0, N, draws.data()), "bad alias flagged");
  std::vector<double> counts(n, 0.0);
  for (int64_t d : draws) counts[d] += 1;
  double total = 0, chi2 = 0;
  int df = -1;
  for (float v : w) total += v;
  for (int i = 0; i < n; ++i) {
    if (w[i] == 0) {
      CHECK(counts[i] == 0, "zero-weight class %d drawn %g times", i, counts[i]);
      continue;
    }
    const double e = N * w[i] / total;
    chi2 += (counts[i] - e) * (counts[i] - e) / e;
    ++df;
  }
  // Under H0 chi2 has mean df and sd sqrt(2 df); df + 6 sd is exceeded with
  // probability < 1e-6 (the seed is fixed, so this either always passes or
  // flags a real bias).
  CHECK(chi2 < df + 6 * std::sqrt(2.0 * df), "chi-square %g with %d dof", chi2, df);

  // The stream does not depend on how it is cut into pieces.
  std::vector<int64_t> pieces(N);
  for (int64_t s = 0; s < 1000; s += 7) {
    const int64_t e = std::min<int64_t>(1000, s + 7);
    DrawRange(table.data(), n, key, s, e, pieces.data() + s);
  }
  CHECK(std::equal(pieces.begin(), pieces.begin() + 1000, draws.begin()),
        "stream depends on the chunking");
  // Another seed gives another stream; the same seed the same.
  std::vector<int64_t> other(1000), again(1000);
  DrawRange(table.data(), n, MakeKey(12345, -677), 0, 1000, other.data());
  DrawRange(table.data(), n, key, 0, 1000, again.data());
  CHECK(!std::equal(other.begin(), other.end(), draws.begin()), "seeds collide");
  CHECK(std::equal(again.begin(), again.end(), draws.begin()), "seed does not repeat");

  // A corrupted table is flagged, never read out of range: every bucket
  // gives its alias (threshold 0), and the alias is 2^30.
  const std::vector<uint64_t> bad_table(n, uint64_t{1} << 62);
  std::vector<int64_t> out(100);
  CHECK(!DrawRange(bad_table.data(), n, key, 0, 100, out.data()),
        "corrupted alias not flagged");
  for (int64_t d : out) CHECK(d >= 0 && d < n, "corrupted table gave id %lld", (long long)d);
}

// PackEntry and the keep rule: bucket i keeps its class iff coin < threshold,
// with threshold = ceil(p 2^32), so that the keep test is exactly the old
// coin < p * 2^32 (in double) and the keep probability is threshold / 2^32
// (at most 2^-32 above p). p <= 0 never keeps; p >= 1 always does, by an
// alias to the bucket itself (no threshold reaches 2^32).
static void TestPackEntry() {
  const double two32 = 4294967296.0;
  // Entries hold any index and alias below 2^31 (kMaxClasses).
  const int64_t idx[] = {0, 1, 777, kMaxClasses - 1};
  const int32_t als[] = {0, 5, 123456, static_cast<int32_t>(kMaxClasses - 1)};
  for (int64_t i : idx) {
    for (int32_t a : als) {
      // p = 0 (and below): threshold 0, never kept, the alias is kept as given.
      for (float p : {0.0f, -0.0f, -0.25f, -std::numeric_limits<float>::infinity()}) {
        const uint64_t e = PackEntry(i, p, a);
        CHECK(EntryThreshold(e) == 0 && EntryAlias(e) == static_cast<uint32_t>(a),
              "PackEntry(%lld, %g, %d) = %016llx", (long long)i, p, a, (unsigned long long)e);
        bool bad = false;
        CHECK(Resolve(static_cast<uint64_t>(i), 0u, e, uint64_t{1} << 31, &bad) == a && !bad,
              "p = %g keeps at coin 0", p);
      }
      // p = 1 (and above): alias i, threshold 0xFFFFFFFF: the bucket is class
      // i whatever the coin, also the largest.
      for (float p : {1.0f, 1.5f, std::numeric_limits<float>::infinity()}) {
        const uint64_t e = PackEntry(i, p, a);
        CHECK(EntryThreshold(e) == 0xFFFFFFFFu && EntryAlias(e) == static_cast<uint32_t>(i),
              "PackEntry(%lld, %g, %d) = %016llx", (long long)i, p, a, (unsigned long long)e);
        CHECK(e == ((static_cast<uint64_t>(i) << 32) | 0xFFFFFFFFull), "always-keep entry layout");
        for (uint32_t c : {0u, 0x80000000u, 0xFFFFFFFEu, 0xFFFFFFFFu}) {
          bool bad = false;
          CHECK(Resolve(static_cast<uint64_t>(i), c, e, uint64_t{1} << 31, &bad) == i && !bad,
                "p = %g does not keep at coin %u", p, c);
        }
      }
    }
  }
  // p in (0, 1): threshold ceil(p 2^32), alias as given, and the keep test
  // agrees with the double compare of the old format at the boundary.
  std::mt19937_64 rng(21);
  std::uniform_real_distribution<float> unif(0.0f, 1.0f);
  std::vector<float> probs = {0.5f, 0.25f, 0.75f, 1e-30f, 1e-40f, 1e-10f, 0.999999940f,
                              std::nextafter(1.0f, 0.0f), std::nextafter(0.0f, 1.0f),
                              std::nextafter(0.5f, 1.0f), std::nextafter(0.5f, 0.0f),
                              2.3283064e-10f, 2.3283064e-10f * 3.0f};
  for (int i = 0; i < 10000; ++i) {
    const float p = unif(rng) * std::pow(2.0f, -(i % 40));
    if (p > 0.0f && p < 1.0f) probs.push_back(p);
  }
  for (float p : probs) {
    const int64_t i = static_cast<int64_t>(rng() % kMaxClasses);
    const int32_t a = static_cast<int32_t>(rng() % kMaxClasses);
    const uint64_t e = PackEntry(i, p, a);
    const double want = std::ceil(static_cast<double>(p) * two32);
    CHECK(want >= 1.0 && want < two32, "ceil(p 2^32) out of (0, 2^32) for p=%g", p);
    CHECK(static_cast<double>(EntryThreshold(e)) == want,
          "PackEntry threshold %u != ceil(p 2^32) = %.0f for p=%.9g", EntryThreshold(e), want, p);
    CHECK(EntryAlias(e) == static_cast<uint32_t>(a), "PackEntry alias %u != %d", EntryAlias(e), a);
    const uint32_t thr = EntryThreshold(e);
    for (uint32_t c : {thr - 1, thr, 0u, 0xFFFFFFFFu}) {
      const bool old_keep = static_cast<double>(c) < static_cast<double>(p) * two32;
      CHECK((c < thr) == old_keep, "keep at coin %u disagrees with the double test, p=%.9g", c, p);
      bool bad = false;
      const int64_t got = Resolve(static_cast<uint64_t>(i), c, e, uint64_t{1} << 31, &bad);
      CHECK(got == (old_keep ? i : a) && !bad, "Resolve at coin %u, p=%.9g gives %lld", c, p,
            (long long)got);
    }
  }
  // CeilTimesTwoTo32 works on p's bits: compare it with the floating-point
  // ceil over every 7th float in (0, 1) (all exponents, subnormals included;
  // every float was checked once, in a scratch run: no mismatch), and over
  // every float next to a power of two.
  auto check_ceil = [&](uint32_t bits) {
    float p;
    std::memcpy(&p, &bits, sizeof(p));
    const double want = std::ceil(static_cast<double>(p) * two32);
    CHECK(static_cast<double>(CeilTimesTwoTo32(p)) == want,
          "CeilTimesTwoTo32(%.9g) = %u, want %.0f", p, CeilTimesTwoTo32(p), want);
  };
  const uint32_t one_bits = 0x3F800000u;
  for (uint32_t bits = 1; bits < one_bits; bits += 7) check_ceil(bits);
  for (uint32_t e = 0; e < 127; ++e) {
    for (uint32_t d = 0; d < 64; ++d) {
      const uint32_t at = e << 23;
      if (at + d > 0 && at + d < one_bits) check_ceil(at + d);
      if (at >= d + 1) check_ceil(at - d - 1);
    }
  }
}

// Reference stream, one DrawPair + DrawOne per draw.
static std::vector<int64_t> ScalarStream(const std::vector<uint64_t>& table,
                                         const PhiloxKey& key, int64_t begin,
                                         int64_t end) {
  std::vector<int64_t> out;
  const uint64_t n = table.size();
  bool bad = false;
  for (int64_t t = begin; t < end; ++t) {
    uint64_t x[2];
    DrawPair(key, static_cast<uint64_t>(t) >> 1, &x[0], &x[1]);
    out.push_back(DrawOne(x[t & 1], n, table.data(), &bad));
  }
  return out;
}

// The blocked and vectorized (AVX2, where the CPU has it) draw code gives the
// scalar stream exactly, also where the low Philox counter word wraps.
static void TestBlockPaths() {
  const BlockFunctions generic = PickBlockFunctions(/*allow_simd=*/false);
  const BlockFunctions best = PickBlockFunctions();
  std::printf("block functions: %s\n", best.vectorized ? "AVX2" : "generic");
  const PhiloxKey key = MakeKey(0x123456789LL, -42);
  const uint64_t starts[] = {0, 1, 12345, 0xFFFFFFFFull - 40, 0xFFFFFFFFull - 31,
                             0xFFFFFFFFull - 5, (uint64_t{1} << 33) + 3,
                             0xFFFFFFFFFFFFFFFFull - 100};
  const uint64_t sizes[] = {1, 2, 7, 1000, 999999937, 2147483647};
  for (const BlockFunctions* f : {&generic, &best}) {
    for (uint64_t p0 : starts) {
      uint64_t words[kBlockDraws];
      f->words(key, p0, words);
      for (int m = 0; m < kBlockPairs; ++m) {
        uint64_t x0, x1;
        DrawPair(key, p0 + m, &x0, &x1);
        CHECK(words[2 * m] == x0 && words[2 * m + 1] == x1,
              "block words differ at p0=%llu m=%d", (unsigned long long)p0, m);
      }
      for (uint64_t n : sizes) {
        uint32_t bucket[kBlockDraws], coin[kBlockDraws];
        f->buckets(key, p0, n, bucket, coin);
        for (int m = 0; m < kBlockDraws; ++m) {
          uint64_t j;
          uint32_t c;
          BucketAndCoin(words[m], n, &j, &c);
          CHECK(bucket[m] == j && coin[m] == c,
                "block buckets differ at p0=%llu n=%llu m=%d", (unsigned long long)p0,
                (unsigned long long)n, m);
        }
      }
    }
  }
  // Whole ranges: odd and even starts, partial blocks, counter wrap.
  const int n = 777;
  std::vector<float> w(n);
  std::vector<uint64_t> table(n);
  for (int i = 0; i < n; ++i) w[i] = (i % 9 == 4) ? 0.0f : 1.0f / (1.0f + i);
  BuildSweep(w.data(), n, table.data());
  const int64_t wrap = int64_t{1} << 33;  // pair counter 2^32
  const int64_t ranges[][2] = {{0, 0},      {0, 1},         {1, 2},         {3, 200},
                               {64, 128},   {5, 5000},      {wrap - 101, wrap + 99},
                               {wrap - 64, wrap + 64}};
  for (const auto& r : ranges) {
    const std::vector<int64_t> ref = ScalarStream(table, key, r[0], r[1]);
    for (const BlockFunctions* f : {&generic, &best}) {
      std::vector<int64_t> out(r[1] - r[0]);
      CHECK(DrawRangeWith(*f, table.data(), n, key, r[0], r[1], out.data()),
            "valid table flagged");
      CHECK(out == ref, "DrawRange [%lld, %lld) differs from the scalar stream",
            (long long)r[0], (long long)r[1]);
    }
  }
  // The mixture stream: both block paths agree.
  std::vector<int64_t> ids = {3, 700, 4, 12};
  std::vector<double> cum = {0.5, 0.5, 2.0, 2.25};
  Mixture mix;
  mix.ids = ids.data();
  mix.cum = cum.data();
  mix.m = 4;
  mix.table_mass = 3.0;
  for (const auto& r : ranges) {
    std::vector<int64_t> a(r[1] - r[0]), b(r[1] - r[0]);
    DrawMixtureRangeWith(generic, table.data(), n, key, mix, r[0], r[1], a.data());
    DrawMixtureRangeWith(best, table.data(), n, key, mix, r[0], r[1], b.data());
    CHECK(a == b, "mixture block paths differ on [%lld, %lld)", (long long)r[0], (long long)r[1]);
  }
}

// The block resolve step of both paths, on entries of every kind: PackEntry of
// probabilities of every kind (also invalid ones: > 1, negative, NaN, inf,
// denormal), raw thresholds at the edges of the unsigned range (the AVX2 path
// compares through the sign bit), coins at and around each threshold, and
// corrupted entries whose alias is out of range (also with the sign bit set,
// and on always-keep entries). Both paths must give the same bytes and the
// same flag as the rule itself: class j iff coin < threshold or the alias is
// out of range, else the alias; flagged iff some alias is out of range.
static void TestResolvePaths() {
  const BlockFunctions generic = PickBlockFunctions(/*allow_simd=*/false);
  const BlockFunctions best = PickBlockFunctions();
  std::mt19937_64 rng(33);
  std::uniform_real_distribution<float> unif(0.0f, 1.0f);
  const float special[] = {0.0f, 1.0f, 0.5f, 0.25f, 0.75f, 1e-30f, 1e-40f, 2.3283064e-10f,
                           std::nextafter(1.0f, 0.0f), std::nextafter(0.5f, 1.0f),
                           std::nextafter(0.5f, 0.0f), 1.5f, -0.25f, -0.0f,
                           std::numeric_limits<float>::quiet_NaN(),
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity()};
  const uint32_t raw_thresholds[] = {0u, 1u, 2u, 0x7FFFFFFEu, 0x7FFFFFFFu, 0x80000000u,
                                     0x80000001u, 0xFFFFFF00u, 0xFFFFFFFEu, 0xFFFFFFFFu};
  const int s = sizeof(special) / sizeof(special[0]);
  const int r = sizeof(raw_thresholds) / sizeof(raw_thresholds[0]);
  const int n = 4096;
  std::vector<uint64_t> table(n);
  for (int i = 0; i < n; ++i) {
    const int32_t a = static_cast<int32_t>(rng() % n);
    if (i < 4 * s) {
      table[i] = PackEntry(i, special[i % s], a);
    } else if (i < 4 * s + 4 * r) {
      table[i] = (static_cast<uint64_t>(a) << 32) | raw_thresholds[(i - 4 * s) % r];
    } else {
      table[i] = PackEntry(i, unif(rng) * std::pow(2.0f, -(i % 34)), a);
    }
    // Some corrupted aliases: just past n, far past it, and with the sign bit.
    if (i % 97 == 5 || i % 89 == 7 || i % 83 == 11) {
      const uint32_t bad = i % 97 == 5 ? static_cast<uint32_t>(n + i)
                           : i % 89 == 7 ? 0x80000000u + static_cast<uint32_t>(i)
                                         : 0xFFFFFFFFu;
      table[i] = (static_cast<uint64_t>(bad) << 32) | EntryThreshold(table[i]);
    }
  }
  int corrupted = 0;
  for (int i = 0; i < n; ++i) corrupted += EntryAlias(table[i]) >= static_cast<uint32_t>(n);
  CHECK(corrupted > 50, "only %d corrupted entries", corrupted);
  // n as the table size, and as the largest one (the table is only read at
  // the buckets, all < 4096): aliases past 4096 are then valid, those with
  // the sign bit still not.
  for (const uint64_t tn : {uint64_t{n}, static_cast<uint64_t>(kMaxClasses)}) {
    int flagged_blocks = 0;
    for (int rep = 0; rep < 200; ++rep) {
      uint32_t bucket[kBlockDraws], coin[kBlockDraws];
      for (int m = 0; m < kBlockDraws; ++m) {
        bucket[m] = static_cast<uint32_t>(rng() % n);
        const int64_t near = EntryThreshold(table[bucket[m]]);
        const int64_t c = (rep % 3 == 0) ? static_cast<int64_t>(rng() >> 32)
                                         : near + static_cast<int64_t>(rng() % 3) - 1;
        coin[m] = static_cast<uint32_t>(std::min<int64_t>(std::max<int64_t>(c, 0), 0xFFFFFFFFll));
      }
      for (int len : {kBlockDraws, 13, 8, 1}) {
        std::vector<int64_t> want(len), a(len, -7), b(len, -7);
        bool want_bad = false;
        for (int m = 0; m < len; ++m) {
          const uint32_t j = bucket[m];
          const uint32_t al = EntryAlias(table[j]);
          const bool alias_ok = al < tn;
          want_bad |= !alias_ok;
          want[m] = (coin[m] < EntryThreshold(table[j]) || !alias_ok) ? j : al;
        }
        flagged_blocks += want_bad;
        const bool ok_a = generic.resolve(table.data(), tn, bucket, coin, len, a.data());
        const bool ok_b = best.resolve(table.data(), tn, bucket, coin, len, b.data());
        CHECK(a == b && ok_a == ok_b, "resolve paths differ (n %llu, rep %d, len %d)",
              (unsigned long long)tn, rep, len);
        CHECK(a == want && ok_a == !want_bad, "resolve differs from the rule (n %llu, rep %d, len %d)",
              (unsigned long long)tn, rep, len);
      }
    }
    CHECK(flagged_blocks > 0, "no corrupted entry was met (n %llu)", (unsigned long long)tn);
  }
  // Whole ranges over a corrupted table: both paths give the same bytes and
  // flag it.
  const PhiloxKey key = MakeKey(5, 6);
  std::vector<int64_t> a(5000), b(5000);
  const bool ok_a = DrawRangeWith(generic, table.data(), n, key, 3, 5003, a.data());
  const bool ok_b = DrawRangeWith(best, table.data(), n, key, 3, 5003, b.data());
  CHECK(!ok_a && !ok_b, "corrupted table not flagged (generic %d, best %d)", ok_a, ok_b);
  CHECK(a == b, "block paths differ on a corrupted table");
  for (int64_t d : a) CHECK(d >= 0 && d < n, "corrupted table gave id %lld", (long long)d);
}

static void TestUnique() {
  const int n = 1000;
  std::vector<float> w(n);
  for (int i = 0; i < n; ++i) w[i] = (i % 10 == 0) ? 0.0f : 1.0f / (i + 1);
  std::vector<uint64_t> table(n);
  BuildSweep(w.data(), n, table.data());
  const PhiloxKey key = MakeKey(3, 4);
  for (int64_t k : {1, 17, 300, 900}) {
    std::vector<int64_t> a(k), b(k);
    int64_t tries_a = 0, tries_b = 0, support = -1;
    CHECK(SampleUnique(table.data(), n, key, k, a.data(), &tries_a, &support,
                       SerialFor()) == kUniqueOk, "unique k=%lld failed", (long long)k);
    SampleUnique(table.data(), n, key, k, b.data(), &tries_b, &support, ShuffledFor());
    CHECK(a == b && tries_a == tries_b, "unique sample depends on the chunking");
    // Reference: the first k distinct ids of the plain stream.
    std::vector<int64_t> stream(tries_a);
    DrawRange(table.data(), n, key, 0, tries_a, stream.data());
    std::vector<int64_t> ref;
    std::vector<char> seen(n, 0);
    for (int64_t d : stream) if (!seen[d]) { seen[d] = 1; ref.push_back(d); }
    CHECK(ref == a, "unique k=%lld is not the first k distinct draws", (long long)k);
    CHECK(seen[stream.back()] && std::count(stream.begin(), stream.end(), stream.back()) == 1,
          "num_tries does not end at the last new id");
  }
  // A large table and few ids: SeenIds uses its hash set (bitmap otherwise).
  {
    const int64_t big = 300007;
    std::vector<float> wb(big);
    for (int64_t i = 0; i < big; ++i) wb[i] = (i % 3 == 0) ? 0.0f : 1.0f / (1.0f + i % 1000);
    std::vector<uint64_t> tb(big);
    BuildSweep(wb.data(), big, tb.data());
    for (int64_t k : {1, 5, 100, 5000}) {
      std::vector<int64_t> got(k);
      int64_t tries = 0, support = -1;
      CHECK(SampleUnique(tb.data(), big, key, k, got.data(), &tries, &support,
                         ShuffledFor()) == kUniqueOk, "unique (big table) k=%lld failed",
            (long long)k);
      std::vector<int64_t> stream(tries), ref;
      DrawRange(tb.data(), big, key, 0, tries, stream.data());
      std::vector<char> seen(big, 0);
      for (int64_t d : stream) if (!seen[d]) { seen[d] = 1; ref.push_back(d); }
      CHECK(ref == got, "unique (big table) k=%lld is not the first k distinct draws",
            (long long)k);
      for (int64_t d : got) CHECK(wb[d] > 0, "zero-weight class %lld drawn", (long long)d);
    }
  }
  // 900 classes have positive weight: asking for 901 distinct ones fails.
  std::vector<int64_t> out(901);
  int64_t tries = 0, support = -1;
  CHECK(SampleUnique(table.data(), n, key, 901, out.data(), &tries, &support,
                     SerialFor()) == kUniqueTooFew && support == 900,
        "too-small support not detected (support %lld)", (long long)support);
}

static void TestMixture() {
  // Table over w_table; extra list of increments; target = w_table + increments.
  const int n = 60;
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  std::vector<double> w(n), target(n);
  for (int i = 0; i < n; ++i) w[i] = (i % 6 == 1) ? 0.0 : unif(rng);
  std::vector<uint64_t> table(n);
  BuildSweep(w.data(), n, table.data());
  double table_mass = 0;
  for (double v : w) table_mass += v;
  target = w;
  std::vector<int64_t> ids;
  std::vector<double> cum;
  double run = 0;
  for (int k = 0; k < 40; ++k) {
    const int64_t id = (k * 7) % n;  // hits some zero-weight classes of the table
    const double amount = (k % 5 == 0) ? 0.0 : 0.3 * unif(rng);
    ids.push_back(id);
    run += amount;
    cum.push_back(run);
    target[id] += amount;
  }
  Mixture mix;
  mix.ids = ids.data();
  mix.cum = cum.data();
  mix.m = static_cast<int64_t>(ids.size());
  mix.table_mass = table_mass;
  const PhiloxKey key = MakeKey(77, 78);
  const int64_t N = 2000000;
  std::vector<int64_t> draws(N);
  CHECK(DrawMixtureRange(table.data(), n, key, mix, 0, N, draws.data()),
        "mixture flagged a bad id");
  std::vector<double> counts(n, 0.0);
  for (int64_t d : draws) counts[d] += 1;
  double total = 0, chi2 = 0;
  int df = -1;
  for (double v : target) total += v;
  for (int i = 0; i < n; ++i) {
    if (target[i] == 0) {
      CHECK(counts[i] == 0, "mixture: zero-weight class %d drawn", i);
      continue;
    }
    const double e = N * target[i] / total;
    chi2 += (counts[i] - e) * (counts[i] - e) / e;
    ++df;
  }
  CHECK(chi2 < df + 6 * std::sqrt(2.0 * df), "mixture chi-square %g with %d dof", chi2, df);
  // Pieces give the same stream; m == 0 is the table's stream.
  std::vector<int64_t> pieces(999);
  for (int64_t s = 0; s < 999; s += 10) {
    DrawMixtureRange(table.data(), n, key, mix, s, std::min<int64_t>(999, s + 10),
                     pieces.data() + s);
  }
  CHECK(std::equal(pieces.begin(), pieces.end(), draws.begin()), "mixture stream chunking");
  std::vector<int64_t> a(500), b(500);
  DrawMixtureRange(table.data(), n, key, Mixture(), 0, 500, a.data());
  DrawRange(table.data(), n, key, 0, 500, b.data());
  CHECK(a == b, "empty mixture differs from the table stream");
  // Unique draws from the mixture: the first k distinct of its stream.
  int64_t support = -1, tries = 0;
  const int64_t positive = std::count_if(target.begin(), target.end(), [](double v) { return v > 0; });
  CHECK(SupportSize(table.data(), n, mix) == positive, "mixture support");
  std::vector<int64_t> u(positive);
  CHECK(SampleUnique(table.data(), n, key, mix, positive, u.data(), &tries,
                     &support, ShuffledFor()) == kUniqueOk, "mixture unique failed");
  std::vector<int64_t> stream(tries), ref;
  DrawMixtureRange(table.data(), n, key, mix, 0, tries, stream.data());
  std::vector<char> seen(n, 0);
  for (int64_t d : stream) if (!seen[d]) { seen[d] = 1; ref.push_back(d); }
  CHECK(ref == u, "mixture unique is not the first distinct draws");
  std::vector<int64_t> too_many(positive + 1);
  CHECK(SampleUnique(table.data(), n, key, mix, positive + 1, too_many.data(),
                     &tries, &support, SerialFor()) == kUniqueTooFew, "mixture support check");
  // An extra id out of range is flagged.
  std::vector<int64_t> bad_ids(ids.size(), n + 5);
  Mixture bad = mix;
  bad.ids = bad_ids.data();
  bad.table_mass = 1e-300;  // nearly always the list
  std::vector<int64_t> out(100);
  CHECK(!DrawMixtureRange(table.data(), n, key, bad, 0, 100, out.data()),
        "bad extra id not flagged");
}

static void TestUniqueBound() {
  // The bound for a uniform distribution: mu is the coupon collector's expectation,
  // r_min = (n - k + 1) / n (see "draw bound" in range_sampler.h).
  {
    const int64_t n = 1000, k = 300;
    std::vector<double> p(n, 2.5);
    const double got = UniqueDrawBoundFromProbabilities(p.data(), n, k);
    double mu = 0.0;
    for (int64_t j = 0; j < k; ++j) mu += static_cast<double>(n) / (n - j);
    const double c = kUniqueLogInvDelta / ((n - k + 1.0) / n * mu);
    const double want = (1.0 + 2.0 * c + std::sqrt(2.0 * c)) * mu;
    CHECK(std::fabs(got / want - 1.0) < 1e-12, "uniform bound %g, want %g", got, want);
    std::vector<double> q = {1.0, 0.0, 2.0};
    CHECK(std::isinf(UniqueDrawBoundFromProbabilities(q.data(), 3, 3)),
          "bound with too small a support must be infinite");
  }
  // One class of weight 1e12 among 10^4 of weight 1: 100 distinct ids need ~1e10
  // draws, so the request is refused after at most kUniqueFreeDraws draws, with the
  // bound reported; the buffer never grew past them.
  {
    const int64_t n = 10000, k = 100;
    std::vector<double> w(n, 1.0);
    w[0] = 1e12;
    std::vector<uint64_t> table(n);
    BuildSweep(w.data(), n, table.data());
    std::vector<int64_t> out(k);
    UniqueStats stats;
    int64_t most = 0;
    auto counting_for = [&most](int64_t pieces, const std::function<void(int64_t, int64_t)>& fn) {
      most = std::max(most, pieces * kUniquePiece);
      fn(0, pieces);
    };
    const int rc = SampleUniqueBounded(table.data(), n, MakeKey(1, 2), Mixture(), k,
                                       out.data(), &stats, counting_for);
    CHECK(rc == kUniqueBoundTooLarge, "skewed request not refused (rc %d)", rc);
    CHECK(stats.bound > 1e10 && stats.bound < 1e11, "bound %g", stats.bound);
    CHECK(most <= kUniqueFreeDraws, "a round of %lld draws", (long long)most);
  }
  // Rounds never exceed kMaxRoundDraws, however slow the progress.
  CHECK(NextRoundLength(10, int64_t{1} << 40, 0, int64_t{1} << 40) == kMaxRoundDraws,
        "round length not capped");
}

int main() {
  TestPhiloxKnownAnswers();
  TestPackEntry();
  TestBlockPaths();
  TestResolvePaths();
  TestBuilds();
  TestErrors();
  TestSampling();
  TestUnique();
  TestMixture();
  TestUniqueBound();
  if (failures == 0) std::printf("alias_table_test: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
