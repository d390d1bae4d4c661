// Standalone test and benchmark of the CUDA alias-table kernels
// (custom_ops/cc/kernels/alias_gpu.cu.h) without TensorFlow. Build and run:
//   custom_ops/gpu_harness/run.sh [OUT_DIR]
// Checks, on the GPU:
//   * the parallel (split-method) build makes bit for bit the table (the
//     packed uint64 entries) that the sequential CPU sweep makes from the same
//     weights and the same sum W, for several weight shapes and section
//     sizes, and the same table twice;
//   * invalid weights give the right status;
//   * GPU draws equal the CPU draws of the same stream (same table, seed), and
//     a histogram of 2^26 GPU draws passes a chi-square test against w / W;
//     zero-weight classes are never drawn.
// Times: draws per second for several table sizes and batch sizes, and the
// table build, next to the single-thread CPU build and CPU draws.
// Prints a markdown report; exits non-zero if a check failed.

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/alias_gpu.cu.h"
#include "kernels/range_sampler.h"

using namespace tf_sampling;
using alias::BuildStatus;

#define CUDA_CHECK(expr)                                                   \
  do {                                                                     \
    cudaError_t _e = (expr);                                               \
    if (_e != cudaSuccess) {                                               \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n",                 \
                   cudaGetErrorString(_e), __FILE__, __LINE__, #expr);     \
      std::exit(2);                                                        \
    }                                                                      \
  } while (0)

static int g_failures = 0;
static std::string g_report;

static void Report(const char* fmt, ...) {
  char buf[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, args);
  va_end(args);
  std::fputs(buf, stdout);
  std::fflush(stdout);
  g_report += buf;
}

static void Check(bool ok, const char* what) {
  if (!ok) {
    ++g_failures;
    Report("**FAIL**: %s\n", what);
  }
}

// ------------------------------------------------------------ weights

enum Shape { kZipfZeros, kUniform, kEqual, kSingle, kTies, kWide };
static const char* ShapeName(Shape s) {
  switch (s) {
    case kZipfZeros: return "zipf (shuffled), every 7th zero";
    case kUniform: return "uniform(0,1)";
    case kEqual: return "all equal";
    case kSingle: return "one nonzero";
    case kTies: return "0 / 2 alternating (exact ties)";
    case kWide: return "10^U(-30,30)";
  }
  return "?";
}

template <typename T>
static std::vector<T> MakeWeights(Shape s, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<T> w(n);
  switch (s) {
    case kZipfZeros: {
      std::vector<int64_t> rank(n);
      std::iota(rank.begin(), rank.end(), 0);
      std::shuffle(rank.begin(), rank.end(), rng);
      for (int64_t i = 0; i < n; ++i) {
        w[i] = (i % 7 == 3) ? T(0) : static_cast<T>(1.0 / (rank[i] + 1.0));
      }
      break;
    }
    case kUniform:
      for (auto& v : w) v = static_cast<T>(u(rng));
      break;
    case kEqual:
      for (auto& v : w) v = T(2.5);
      break;
    case kSingle:
      for (auto& v : w) v = T(0);
      w[n / 3] = T(7);
      break;
    case kTies:
      for (int64_t i = 0; i < n; ++i) w[i] = (i % 2) ? T(2) : T(0);
      break;
    case kWide:
      for (auto& v : w) v = static_cast<T>(std::pow(10.0, -30.0 + 60.0 * u(rng)));
      break;
  }
  return w;
}

// ------------------------------------------------------------ helpers

template <typename T>
struct DeviceTable {
  int64_t n = 0;
  T* w = nullptr;
  uint64_t* table = nullptr;  // packed entries (alias << 32 | threshold)
  void* scratch = nullptr;
  size_t scratch_bytes = 0;
  explicit DeviceTable(const std::vector<T>& host) {
    n = static_cast<int64_t>(host.size());
    CUDA_CHECK(cudaMalloc(&w, n * sizeof(T)));
    CUDA_CHECK(cudaMalloc(&table, n * sizeof(uint64_t)));
    scratch_bytes = gpu::BuildScratchBytes(n, 1);  // the largest (section 1)
    CUDA_CHECK(cudaMalloc(&scratch, scratch_bytes));
    CUDA_CHECK(cudaMemcpy(w, host.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceTable() {
    cudaFree(w);
    cudaFree(table);
    cudaFree(scratch);
  }
  gpu::DeviceState Build(int64_t section) {
    // Poison the output: every entry must be written (all ones is alias
    // 0xFFFFFFFF, out of range for any table, so never a valid entry).
    CUDA_CHECK(cudaMemset(table, 0xFF, n * sizeof(uint64_t)));
    gpu::DeviceState st;
    CUDA_CHECK(gpu::BuildSync(w, n, table, scratch, section, 0, &st));
    return st;
  }
  void Fetch(std::vector<uint64_t>* t) {
    t->resize(n);
    CUDA_CHECK(cudaMemcpy(t->data(), table, n * sizeof(uint64_t), cudaMemcpyDeviceToHost));
  }
};

static double TotalVariation(const std::vector<uint64_t>& table,
                             const std::vector<double>& target, bool* zero_ok) {
  const int64_t n = static_cast<int64_t>(table.size());
  for (int64_t i = 0; i < n; ++i) {
    // Every threshold is a valid keep probability; only the alias can be bad,
    // and a bucket that always keeps must name itself (PackEntry).
    const uint32_t a = alias::EntryAlias(table[i]);
    const bool always = alias::EntryThreshold(table[i]) == alias::kAlwaysKeep;
    if (a >= n || (always && a != i)) {
      *zero_ok = false;
      return 1.0;
    }
  }
  std::vector<double> p = alias::ImpliedProbabilities(table.data(), n);
  double tv = 0.0;
  *zero_ok = true;
  for (int64_t i = 0; i < n; ++i) {
    tv += 0.5 * std::fabs(p[i] - target[i]);
    if (target[i] == 0.0 && p[i] != 0.0) *zero_ok = false;
  }
  return tv;
}

template <typename T>
static std::vector<double> Target(const std::vector<T>& w) {
  double total = 0.0;
  for (T v : w) total += static_cast<double>(v);
  std::vector<double> t(w.size());
  for (size_t i = 0; i < w.size(); ++i) t[i] = static_cast<double>(w[i]) / total;
  return t;
}

// ------------------------------------------------------------ build checks

template <typename T>
static void CheckBuild(Shape shape, int64_t n, const char* dtype) {
  std::vector<T> w = MakeWeights<T>(shape, n, 1234 + n);
  DeviceTable<T> dt(w);
  gpu::DeviceState st = dt.Build(gpu::kDefaultSection);
  std::vector<uint64_t> gt, gt2, ct(n);
  dt.Fetch(&gt);
  Check(st.status.code == alias::kBuildOk, "GPU build status ok");
  // The CPU sweep from the GPU's W must make the identical table.
  alias::BuildSweepWithTotal(w.data(), n, st.total, ct.data());
  int64_t diff = 0;
  for (int64_t i = 0; i < n; ++i) diff += gt[i] != ct[i];
  // And again on the GPU: deterministic.
  dt.Build(gpu::kDefaultSection);
  dt.Fetch(&gt2);
  const bool same_twice = gt == gt2;
  bool zero_ok = false;
  const double tv = TotalVariation(gt, Target(w), &zero_ok);
  // Same bound as alias_table_test.cc: float32 keep probabilities rounded up
  // to 32-bit thresholds give TV <= 2^-24 + 2^-32 per the derivation there;
  // 1e-6 leaves a margin.
  const bool ok = diff == 0 && same_twice && zero_ok && tv <= 1e-6;
  Report("| %s | %s | %lld | %lld | %s | %.2e | %s | %s |\n", ShapeName(shape), dtype,
         (long long)n, (long long)diff, same_twice ? "yes" : "NO", tv,
         zero_ok ? "yes" : "NO", ok ? "ok" : "**FAIL**");
  if (!ok) ++g_failures;
}

static void CheckSections() {
  const int64_t n = 300007;
  std::vector<float> w = MakeWeights<float>(kZipfZeros, n, 99);
  DeviceTable<float> dt(w);
  std::vector<uint64_t> ref, t;
  dt.Build(1);
  dt.Fetch(&ref);
  for (int64_t s : std::vector<int64_t>{2, 7, 64, 256, 4096, n}) {
    dt.Build(s);
    dt.Fetch(&t);
    const bool same = t == ref;
    Report("| section size %lld vs 1 | %s |\n", (long long)s, same ? "identical" : "**DIFFERENT**");
    if (!same) ++g_failures;
  }
}

static void CheckErrors() {
  const float inf = INFINITY, nan = NAN;
  struct Case {
    const char* name;
    std::vector<float> w;
    int code;
    int64_t index;
  } cases[] = {
      {"negative", {1, 2, -1, 3, -5}, alias::kBuildNegative, 2},
      {"NaN", {1, 2, 3, nan}, alias::kBuildNotFinite, 3},
      {"inf", {inf, 1}, alias::kBuildNotFinite, 0},
      {"all zero", {0, 0, 0}, alias::kBuildZeroSum, -1},
  };
  for (const Case& c : cases) {
    DeviceTable<float> dt(c.w);
    gpu::DeviceState st = dt.Build(gpu::kDefaultSection);
    const bool ok = st.status.code == c.code && st.status.index == c.index;
    Report("| %s | code %d, index %lld | %s |\n", c.name, st.status.code,
           (long long)st.status.index, ok ? "ok" : "**FAIL**");
    if (!ok) ++g_failures;
  }
  // A large array with one NaN far inside.
  std::vector<float> big(5000000, 1.0f);
  big[4321987] = nan;
  DeviceTable<float> dt(big);
  gpu::DeviceState st = dt.Build(gpu::kDefaultSection);
  const bool ok = st.status.code == alias::kBuildNotFinite && st.status.index == 4321987;
  Report("| NaN at 4321987 of 5e6 | code %d, index %lld | %s |\n", st.status.code,
         (long long)st.status.index, ok ? "ok" : "**FAIL**");
  if (!ok) ++g_failures;
}

// ------------------------------------------------------------ sampling checks

__global__ void HistogramKernel(const int64_t* __restrict__ x, int64_t m, int64_t n,
                                unsigned long long* counts, unsigned long long* out_of_range) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < m;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t v = x[i];
    if (v < 0 || v >= n) {
      atomicAdd(out_of_range, 1ull);
    } else {
      atomicAdd(&counts[v], 1ull);
    }
  }
}

static void CheckSampling(int64_t n, Shape shape, int64_t N) {
  std::vector<float> w = MakeWeights<float>(shape, n, 77 + n);
  DeviceTable<float> dt(w);
  dt.Build(gpu::kDefaultSection);
  std::vector<uint64_t> table;
  dt.Fetch(&table);
  int64_t* d_out;
  CUDA_CHECK(cudaMalloc(&d_out, N * sizeof(int64_t)));
  CUDA_CHECK(cudaMemset(d_out, 0xFF, N * sizeof(int64_t)));
  const alias::PhiloxKey key = alias::MakeKey(20241123, -5);
  CUDA_CHECK(gpu::LaunchSample(dt.table, n, key, N, d_out, 0));
  CUDA_CHECK(cudaDeviceSynchronize());
  // Same stream as the CPU: compare the first 2^20 draws and a window far in.
  const int64_t M = int64_t{1} << 20;
  std::vector<int64_t> g(M), c(M);
  CUDA_CHECK(cudaMemcpy(g.data(), d_out, M * sizeof(int64_t), cudaMemcpyDeviceToHost));
  alias::DrawRange(table.data(), n, key, 0, M, c.data());
  bool same = g == c;
  const int64_t off = N - M - 3;  // odd offset: second half of a pair
  CUDA_CHECK(cudaMemcpy(g.data(), d_out + off, M * sizeof(int64_t), cudaMemcpyDeviceToHost));
  alias::DrawRange(table.data(), n, key, off, off + M, c.data());
  same = same && g == c;
  // Histogram of all N draws.
  unsigned long long *d_counts, *d_bad;
  CUDA_CHECK(cudaMalloc(&d_counts, n * sizeof(unsigned long long)));
  CUDA_CHECK(cudaMalloc(&d_bad, sizeof(unsigned long long)));
  CUDA_CHECK(cudaMemset(d_counts, 0, n * sizeof(unsigned long long)));
  CUDA_CHECK(cudaMemset(d_bad, 0, sizeof(unsigned long long)));
  HistogramKernel<<<1024, 256>>>(d_out, N, n, d_counts, d_bad);
  CUDA_CHECK(cudaGetLastError());
  std::vector<unsigned long long> counts(n);
  unsigned long long bad = 0;
  CUDA_CHECK(cudaMemcpy(counts.data(), d_counts, n * sizeof(unsigned long long), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(&bad, d_bad, sizeof(bad), cudaMemcpyDeviceToHost));
  const std::vector<double> t = Target(w);
  // Chi-square over classes with expected count >= 20, the others pooled
  // into one cell (the chi-square approximation needs large expected counts).
  double chi2 = 0, pool_e = 0, pool_o = 0, tv = 0;
  int64_t cells = 0, zero_drawn = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double e = t[i] * N, o = static_cast<double>(counts[i]);
    tv += 0.5 * std::fabs(o / N - t[i]);
    if (t[i] == 0.0) {
      zero_drawn += counts[i] != 0;
      continue;
    }
    if (e >= 20) {
      chi2 += (o - e) * (o - e) / e;
      ++cells;
    } else {
      pool_e += e;
      pool_o += o;
    }
  }
  if (pool_e > 0) {
    chi2 += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
    ++cells;
  }
  const double df = static_cast<double>(cells - 1);
  // Under H0 chi2 ~ df +- sqrt(2 df); df + 6 sd is exceeded with
  // probability < 1e-6 (fixed seed: a failure flags a real bias).
  const double bound = df + 6.0 * std::sqrt(2.0 * df);
  const bool ok = same && bad == 0 && zero_drawn == 0 && chi2 < bound;
  Report("| %lld | %s | %lld | %s | %.0f | %.0f | %.0f | %.2e | %lld | %s |\n", (long long)n,
         ShapeName(shape), (long long)N, same ? "yes" : "NO", chi2, df, bound, tv,
         (long long)zero_drawn, ok ? "ok" : "**FAIL**");
  if (!ok) ++g_failures;
  cudaFree(d_out);
  cudaFree(d_counts);
  cudaFree(d_bad);
}

// ------------------------------------------------------------ timing

static double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

static void TimeSampling() {
  const int64_t max_num = 100000000;
  int64_t* d_out;
  CUDA_CHECK(cudaMalloc(&d_out, max_num * sizeof(int64_t)));
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  for (int64_t n : {100000, 1000000, 10000000}) {
    std::vector<float> w = MakeWeights<float>(kZipfZeros, n, 5 + n);
    DeviceTable<float> dt(w);
    dt.Build(gpu::kDefaultSection);
    for (int64_t num : {8192, 1000000, 100000000}) {
      const int reps = num >= 100000000 ? 10 : 50;
      std::vector<double> ms;
      for (int r = -3; r < reps; ++r) {
        const alias::PhiloxKey key = alias::MakeKey(r, 11);
        CUDA_CHECK(cudaEventRecord(e0));
        CUDA_CHECK(gpu::LaunchSample(dt.table, n, key, num, d_out, 0));
        CUDA_CHECK(cudaEventRecord(e1));
        CUDA_CHECK(cudaEventSynchronize(e1));
        float t = 0;
        CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
        if (r >= 0) ms.push_back(t);
      }
      const double m = Median(ms);
      Report("| %lld | %lld | %.4f | %.0f |\n", (long long)n, (long long)num, m, num / (m * 1e-3) / 1e6);
    }
  }
  cudaFree(d_out);
}

static void TimeBuild() {
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  for (int64_t n : {100000, 1000000, 10000000}) {
    std::vector<float> w = MakeWeights<float>(kZipfZeros, n, 3 + n);
    DeviceTable<float> dt(w);
    for (int64_t section : {16, 64, 256}) {
      std::vector<double> ms;
      for (int r = -2; r < 15; ++r) {
        CUDA_CHECK(cudaEventRecord(e0));
        CUDA_CHECK(gpu::LaunchBuild(dt.w, n, dt.table, dt.scratch, section, 0, nullptr));
        CUDA_CHECK(cudaEventRecord(e1));
        CUDA_CHECK(cudaEventSynchronize(e1));
        float t = 0;
        CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
        if (r >= 0) ms.push_back(t);
      }
      // The CPU reference: the sequential sweep on one core of this host.
      std::vector<double> cpu_ms;
      if (section == 64) {
        std::vector<uint64_t> t(n);
        for (int r = 0; r < 5; ++r) {
          auto t0 = std::chrono::steady_clock::now();
          alias::BuildSweep(w.data(), n, t.data());
          cpu_ms.push_back(std::chrono::duration<double, std::milli>(
                               std::chrono::steady_clock::now() - t0).count());
        }
      }
      if (section == 64) {
        Report("| %lld | %lld | %.3f | %.2f |\n", (long long)n, (long long)section, Median(ms), Median(cpu_ms));
      } else {
        Report("| %lld | %lld | %.3f | |\n", (long long)n, (long long)section, Median(ms));
      }
    }
  }
}

static void TimeCpuSampling() {
  for (int64_t n : {100000, 1000000, 10000000}) {
    std::vector<float> w = MakeWeights<float>(kZipfZeros, n, 5 + n);
    std::vector<uint64_t> t(n);
    alias::BuildSweep(w.data(), n, t.data());
    const int64_t num = 1000000;
    std::vector<int64_t> out(num);
    std::vector<double> ms;
    for (int r = 0; r < 7; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      alias::DrawRange(t.data(), n, alias::MakeKey(r, 1), 0, num, out.data());
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    Report("| %lld | %lld | %.3f | %.0f |\n", (long long)n, (long long)num, Median(ms), num / (Median(ms) * 1e-3) / 1e6);
  }
}

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  int dev = 0;
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  int rt = 0, drv = 0;
  cudaRuntimeGetVersion(&rt);
  cudaDriverGetVersion(&drv);
  Report("# GPU alias-table harness%s\n\nDevice: %s, %d SMs, L2 %d MB, %.0f GB; CUDA runtime %d, driver %d\n\n",
         quick ? " (quick)" : "", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20,
         prop.totalGlobalMem / 1e9, rt, drv);

  Report("## Build: GPU table vs CPU sweep (same W)\n\n"
         "| weights | dtype | n | entries differing | same twice | TV to w/W | zero weights get 0 | |\n"
         "|---|---|---|---|---|---|---|---|\n");
  const std::vector<int64_t> sizes = quick ? std::vector<int64_t>{1, 2, 1000, 100003}
                                           : std::vector<int64_t>{1, 1000, 100003, 1000000, 10000000};
  for (int64_t n : sizes) CheckBuild<float>(kZipfZeros, n, "float32");
  const int64_t mid = quick ? 100000 : 1000000;
  CheckBuild<float>(kUniform, mid, "float32");
  CheckBuild<float>(kEqual, mid, "float32");
  CheckBuild<float>(kSingle, mid, "float32");
  CheckBuild<float>(kTies, mid, "float32");
  CheckBuild<double>(kWide, mid, "float64");
  CheckBuild<double>(kZipfZeros, mid, "float64");

  Report("\n## Build: section sizes (split method) give one table\n\n| check | result |\n|---|---|\n");
  CheckSections();

  Report("\n## Build: invalid weights\n\n| case | status | |\n|---|---|---|\n");
  CheckErrors();

  Report("\n## Sampling: GPU draws vs CPU stream, chi-square of all draws\n\n"
         "| n | weights | draws | = CPU stream | chi2 | df | bound | TV | zero-weight drawn | |\n"
         "|---|---|---|---|---|---|---|---|---|---|\n");
  const int64_t N = int64_t{1} << (quick ? 22 : 26);
  CheckSampling(1000, kZipfZeros, N);
  CheckSampling(50, kUniform, N);
  if (!quick) CheckSampling(1000000, kZipfZeros, N);

  if (!quick) {
    Report("\n## Sampling speed (median of CUDA-event timings)\n\n"
           "| n | draws per call | ms per call | Msamples/s |\n|---|---|---|---|\n");
    TimeSampling();
    Report("\n## Build time (median; GPU with CUDA events, CPU sweep on one host core)\n\n"
           "| n | section | GPU ms | CPU sweep ms |\n|---|---|---|---|\n");
    TimeBuild();
    Report("\n## CPU draws on one host core, for reference\n\n"
           "| n | draws | ms | Msamples/s |\n|---|---|---|---|\n");
    TimeCpuSampling();
  }
  Report("\n%s: %d failed checks\n", g_failures ? "FAILED" : "PASSED", g_failures);
  if (const char* out = std::getenv("HARNESS_REPORT")) {
    if (FILE* f = std::fopen(out, "w")) {
      std::fputs(g_report.c_str(), f);
      std::fclose(f);
    }
  }
  return g_failures ? 1 : 0;
}
