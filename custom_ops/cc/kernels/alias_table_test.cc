// Standalone test of alias_table.h (no TensorFlow):
//   g++ -O2 -std=c++17 -I custom_ops/cc alias_table_test.cc && ./a.out
// tests/test_ops.py compiles and runs it. Prints one line per failure and
// exits non-zero if any check failed.

#include "kernels/alias_table.h"

#include <cmath>
#include <cstdio>
#include <cstring>
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
static void CheckTable(const std::vector<T>& w, const std::vector<float>& prob,
                       const std::vector<int32_t>& alias, const char* what) {
  const int64_t n = static_cast<int64_t>(w.size());
  double total = 0;
  for (T v : w) total += static_cast<double>(v);
  for (int64_t i = 0; i < n; ++i) {
    CHECK(prob[i] >= 0.0f && prob[i] <= 1.0f, "%s: prob[%lld] = %g", what,
          (long long)i, prob[i]);
    CHECK(alias[i] >= 0 && alias[i] < n, "%s: alias[%lld] = %d", what,
          (long long)i, alias[i]);
  }
  const std::vector<double> p = ImpliedProbabilities(prob.data(), alias.data(), n);
  double tv = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double target = static_cast<double>(w[i]) / total;
    tv += 0.5 * std::fabs(p[i] - target);
    if (w[i] == 0) CHECK(p[i] == 0.0, "%s: zero weight %lld has p = %g", what, (long long)i, p[i]);
  }
  // Each bucket's keep probability is a float32 (error <= 2^-25 of a bucket of
  // mass 1/n), and each bucket feeds two classes: TV <= 2^-24 plus the
  // fixed-point truncation (2^-32 per bucket). 1e-6 leaves a margin of 16x.
  CHECK(tv <= 1e-6, "%s: total variation to the weights %g", what, tv);
}

template <typename T>
static void TestBuild(const std::vector<T>& w, const char* what) {
  const int64_t n = static_cast<int64_t>(w.size());
  std::vector<float> prob(n, -1.0f), prob2(n, -1.0f);
  std::vector<int32_t> alias(n, -1), alias2(n, -1);
  BuildStatus st = BuildSweep(w.data(), n, prob.data(), alias.data());
  CHECK(st.code == kBuildOk, "%s: sweep failed: %s", what, BuildErrorMessage(st).c_str());
  if (st.code != kBuildOk) return;
  CheckTable(w, prob, alias, what);
  // The split method with any section size makes the very same table.
  const int64_t sizes[] = {1, 2, 3, 7, 64, 1000, n};
  for (int64_t s : sizes) {
    std::fill(prob2.begin(), prob2.end(), -1.0f);
    std::fill(alias2.begin(), alias2.end(), -1);
    st = BuildSplit(w.data(), n, s, prob2.data(), alias2.data(), ShuffledFor());
    CHECK(st.code == kBuildOk, "%s: split failed", what);
    int64_t diff = 0;
    for (int64_t i = 0; i < n; ++i) diff += prob[i] != prob2[i] || alias[i] != alias2[i];
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
  float prob[4];
  int32_t alias[4];
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
    BuildStatus st = BuildSweep(c.w.data(), static_cast<int64_t>(c.w.size()), prob, alias);
    CHECK(st.code == c.code && st.index == c.index, "error case: got code %d index %lld (%s)",
          st.code, (long long)st.index, BuildErrorMessage(st).c_str());
    CHECK(!BuildErrorMessage(st).empty(), "error case without a message");
  }
  std::vector<double> big(3, 1e308);
  BuildStatus st = BuildSweep(big.data(), 3, prob, alias);
  CHECK(st.code == kBuildSumOverflow, "overflowing sum not caught");
}

static void TestSampling() {
  // Chi-square of 2e6 draws over 50 classes (6 of weight 0).
  const int n = 50;
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  std::vector<float> w(n);
  for (int i = 0; i < n; ++i) w[i] = (i % 8 == 5) ? 0.0f : static_cast<float>(unif(rng) * (i + 1));
  std::vector<float> prob(n);
  std::vector<int32_t> alias(n);
  BuildSweep(w.data(), n, prob.data(), alias.data());
  const int64_t N = 2000000;
  std::vector<int64_t> draws(N);
  const PhiloxKey key = MakeKey(12345, -678);
  CHECK(DrawRange(prob.data(), alias.data(), n, key, 0, N, draws.data()), "bad alias flagged");
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
    DrawRange(prob.data(), alias.data(), n, key, s, e, pieces.data() + s);
  }
  CHECK(std::equal(pieces.begin(), pieces.begin() + 1000, draws.begin()),
        "stream depends on the chunking");
  // Another seed gives another stream; the same seed the same.
  std::vector<int64_t> other(1000), again(1000);
  DrawRange(prob.data(), alias.data(), n, MakeKey(12345, -677), 0, 1000, other.data());
  DrawRange(prob.data(), alias.data(), n, key, 0, 1000, again.data());
  CHECK(!std::equal(other.begin(), other.end(), draws.begin()), "seeds collide");
  CHECK(std::equal(again.begin(), again.end(), draws.begin()), "seed does not repeat");

  // A corrupted table is flagged, never read out of range.
  std::vector<int32_t> bad_alias(n, 1 << 30);
  std::vector<float> zero_prob(n, 0.0f);
  std::vector<int64_t> out(100);
  CHECK(!DrawRange(zero_prob.data(), bad_alias.data(), n, key, 0, 100, out.data()),
        "corrupted alias not flagged");
}

// The keep rule: bucket j keeps its class iff coin < prob * 2^32, so the keep
// probability is ceil(prob * 2^32) / 2^32 (at most 2^-32 above prob); 0 and 1
// are exact.
static void TestKeepRule() {
  std::mt19937_64 rng(21);
  std::uniform_real_distribution<float> unif(0.0f, 1.0f);
  std::vector<float> probs = {0.0f, 1.0f, 0.5f, 1e-30f, 1e-10f, 0.999999940f,
                              std::nextafter(1.0f, 0.0f), 2.3283064e-10f};
  for (int i = 0; i < 10000; ++i) probs.push_back(unif(rng) * std::pow(2.0f, -(i % 40)));
  for (float p : probs) {
    const double thr = std::ceil(static_cast<double>(p) * 4294967296.0);
    if (thr > 0) {
      CHECK(KeepBucket(static_cast<uint32_t>(thr - 1), p), "coin below ceil(p 2^32) not kept, p=%g", p);
    }
    if (thr < 4294967296.0) {
      CHECK(!KeepBucket(static_cast<uint32_t>(thr), p), "coin at ceil(p 2^32) kept, p=%g", p);
    }
  }
  CHECK(!KeepBucket(0u, 0.0f), "prob 0 keeps");
  CHECK(KeepBucket(0xFFFFFFFFu, 1.0f), "prob 1 does not keep");
}

// Reference stream, one DrawPair + DrawOne per draw.
static std::vector<int64_t> ScalarStream(const std::vector<float>& prob,
                                         const std::vector<int32_t>& alias,
                                         const PhiloxKey& key, int64_t begin,
                                         int64_t end) {
  std::vector<int64_t> out;
  const uint64_t n = prob.size();
  bool bad = false;
  for (int64_t t = begin; t < end; ++t) {
    uint64_t x[2];
    DrawPair(key, static_cast<uint64_t>(t) >> 1, &x[0], &x[1]);
    out.push_back(DrawOne(x[t & 1], n, prob.data(), alias.data(), &bad));
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
  std::vector<float> w(n), prob(n);
  std::vector<int32_t> alias(n);
  for (int i = 0; i < n; ++i) w[i] = (i % 9 == 4) ? 0.0f : 1.0f / (1.0f + i);
  BuildSweep(w.data(), n, prob.data(), alias.data());
  const int64_t wrap = int64_t{1} << 33;  // pair counter 2^32
  const int64_t ranges[][2] = {{0, 0},      {0, 1},         {1, 2},         {3, 200},
                               {64, 128},   {5, 5000},      {wrap - 101, wrap + 99},
                               {wrap - 64, wrap + 64}};
  for (const auto& r : ranges) {
    const std::vector<int64_t> ref = ScalarStream(prob, alias, key, r[0], r[1]);
    for (const BlockFunctions* f : {&generic, &best}) {
      std::vector<int64_t> out(r[1] - r[0]);
      CHECK(DrawRangeWith(*f, prob.data(), alias.data(), n, key, r[0], r[1], out.data()),
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
    DrawMixtureRangeWith(generic, prob.data(), alias.data(), n, key, mix, r[0], r[1], a.data());
    DrawMixtureRangeWith(best, prob.data(), alias.data(), n, key, mix, r[0], r[1], b.data());
    CHECK(a == b, "mixture block paths differ on [%lld, %lld)", (long long)r[0], (long long)r[1]);
  }
}

// The block resolve step of both paths, on probabilities of every kind (also
// invalid ones: > 1, negative, NaN, inf, denormal) and coins at and around
// each threshold ceil(prob 2^32), and on aliases out of range.
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
  const int n = 4096;
  std::vector<float> prob(n);
  std::vector<int32_t> alias(n);
  for (int i = 0; i < n; ++i) {
    const int s = sizeof(special) / sizeof(special[0]);
    prob[i] = i < 4 * s ? special[i % s] : unif(rng) * std::pow(2.0f, -(i % 34));
    alias[i] = (i % 97 == 5) ? n + i : static_cast<int32_t>(rng() % n);  // some bad
  }
  for (int rep = 0; rep < 200; ++rep) {
    uint32_t bucket[kBlockDraws], coin[kBlockDraws];
    for (int m = 0; m < kBlockDraws; ++m) {
      bucket[m] = static_cast<uint32_t>(rng() % n);
      const double t = std::ceil(static_cast<double>(prob[bucket[m]]) * 4294967296.0);
      const int64_t near = t >= 0 && t <= 4294967296.0 ? static_cast<int64_t>(t) : 0;
      const int64_t c = (rep % 3 == 0) ? static_cast<int64_t>(rng() >> 32)
                                       : near + static_cast<int64_t>(rng() % 3) - 1;
      coin[m] = static_cast<uint32_t>(std::min<int64_t>(std::max<int64_t>(c, 0), 0xFFFFFFFFll));
    }
    for (int len : {kBlockDraws, 13, 8, 1}) {
      std::vector<int64_t> a(len, -7), b(len, -7);
      const bool ok_a = generic.resolve(prob.data(), alias.data(), n, bucket, coin, len, a.data());
      const bool ok_b = best.resolve(prob.data(), alias.data(), n, bucket, coin, len, b.data());
      CHECK(a == b && ok_a == ok_b, "resolve paths differ (rep %d, len %d)", rep, len);
    }
  }
}

static void TestUnique() {
  const int n = 1000;
  std::vector<float> w(n);
  for (int i = 0; i < n; ++i) w[i] = (i % 10 == 0) ? 0.0f : 1.0f / (i + 1);
  std::vector<float> prob(n);
  std::vector<int32_t> alias(n);
  BuildSweep(w.data(), n, prob.data(), alias.data());
  const PhiloxKey key = MakeKey(3, 4);
  for (int64_t k : {1, 17, 300, 900}) {
    std::vector<int64_t> a(k), b(k);
    int64_t tries_a = 0, tries_b = 0, support = -1;
    CHECK(SampleUnique(prob.data(), alias.data(), n, key, k, a.data(), &tries_a, &support,
                       SerialFor()) == kUniqueOk, "unique k=%lld failed", (long long)k);
    SampleUnique(prob.data(), alias.data(), n, key, k, b.data(), &tries_b, &support,
                 ShuffledFor());
    CHECK(a == b && tries_a == tries_b, "unique sample depends on the chunking");
    // Reference: the first k distinct ids of the plain stream.
    std::vector<int64_t> stream(tries_a);
    DrawRange(prob.data(), alias.data(), n, key, 0, tries_a, stream.data());
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
    std::vector<float> pb(big);
    std::vector<int32_t> ab(big);
    BuildSweep(wb.data(), big, pb.data(), ab.data());
    for (int64_t k : {1, 5, 100, 5000}) {
      std::vector<int64_t> got(k);
      int64_t tries = 0, support = -1;
      CHECK(SampleUnique(pb.data(), ab.data(), big, key, k, got.data(), &tries, &support,
                         ShuffledFor()) == kUniqueOk, "unique (big table) k=%lld failed",
            (long long)k);
      std::vector<int64_t> stream(tries), ref;
      DrawRange(pb.data(), ab.data(), big, key, 0, tries, stream.data());
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
  CHECK(SampleUnique(prob.data(), alias.data(), n, key, 901, out.data(), &tries, &support,
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
  std::vector<float> prob(n);
  std::vector<int32_t> alias(n);
  BuildSweep(w.data(), n, prob.data(), alias.data());
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
  CHECK(DrawMixtureRange(prob.data(), alias.data(), n, key, mix, 0, N, draws.data()),
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
    DrawMixtureRange(prob.data(), alias.data(), n, key, mix, s, std::min<int64_t>(999, s + 10),
                     pieces.data() + s);
  }
  CHECK(std::equal(pieces.begin(), pieces.end(), draws.begin()), "mixture stream chunking");
  std::vector<int64_t> a(500), b(500);
  DrawMixtureRange(prob.data(), alias.data(), n, key, Mixture(), 0, 500, a.data());
  DrawRange(prob.data(), alias.data(), n, key, 0, 500, b.data());
  CHECK(a == b, "empty mixture differs from the table stream");
  // Unique draws from the mixture: the first k distinct of its stream.
  int64_t support = -1, tries = 0;
  const int64_t positive = std::count_if(target.begin(), target.end(), [](double v) { return v > 0; });
  CHECK(SupportSize(prob.data(), alias.data(), n, mix) == positive, "mixture support");
  std::vector<int64_t> u(positive);
  CHECK(SampleUnique(prob.data(), alias.data(), n, key, mix, positive, u.data(), &tries,
                     &support, ShuffledFor()) == kUniqueOk, "mixture unique failed");
  std::vector<int64_t> stream(tries), ref;
  DrawMixtureRange(prob.data(), alias.data(), n, key, mix, 0, tries, stream.data());
  std::vector<char> seen(n, 0);
  for (int64_t d : stream) if (!seen[d]) { seen[d] = 1; ref.push_back(d); }
  CHECK(ref == u, "mixture unique is not the first distinct draws");
  std::vector<int64_t> too_many(positive + 1);
  CHECK(SampleUnique(prob.data(), alias.data(), n, key, mix, positive + 1, too_many.data(),
                     &tries, &support, SerialFor()) == kUniqueTooFew, "mixture support check");
  // An extra id out of range is flagged.
  std::vector<int64_t> bad_ids(ids.size(), n + 5);
  Mixture bad = mix;
  bad.ids = bad_ids.data();
  bad.table_mass = 1e-300;  // nearly always the list
  std::vector<int64_t> out(100);
  CHECK(!DrawMixtureRange(prob.data(), alias.data(), n, key, bad, 0, 100, out.data()),
        "bad extra id not flagged");
}

int main() {
  TestPhiloxKnownAnswers();
  TestKeepRule();
  TestBlockPaths();
  TestResolvePaths();
  TestBuilds();
  TestErrors();
  TestSampling();
  TestUnique();
  TestMixture();
  if (failures == 0) std::printf("alias_table_test: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
