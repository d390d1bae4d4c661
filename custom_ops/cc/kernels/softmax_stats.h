// Fused log-normaliser of a linear output layer: lse[b] = log sum_c exp(x[b] . w[c] + bias[c])
// without materialising the [batch, classes] logits.
//
// Algorithm: the streaming ("online") softmax of Milakov & Gimelshein (2018), fused with the
// matrix product as in Cut Cross-Entropy (Wijmans et al., 2024). The classes are cut into
// tiles whose transposed weights [dim, tile] fit in L1/L2 (at most 64 KiB); for 6 rows of x
// at a time a register-blocked micro-kernel (6 rows x 16 classes of accumulators) writes the
// tile's logits to a small buffer, and each row's running maximum m and running sum
// s = sum exp(logit - m) absorb them (s *= exp(m - m'), then s += sum exp(tile - m')).
// exp is a vectorised polynomial (relative error below 3e-7, ExpNonPositive8) on AVX2+FMA
// machines, std::exp elsewhere; the AVX2 path is chosen at run time.
//
// Optionally the top k classes of each row as well: each row keeps a heap of its k best
// logits, and 8 logits at a time are compared with the heap's worst entry, so after the
// first tiles a tile costs one compare per 8 logits (a class enters only when it beats the
// current k-th best).
//
// Work is split into fixed tasks (a block of rows x a range of classes, independent of the
// thread count); each task leaves its partial (m, s) (and top-k heap) per row, and the
// partials are combined in task order, so the result does not depend on the number of
// threads.
//
// Cost: batch * classes * dim multiply-adds and batch * classes exps, one pass over the
// weights per block of rows; extra memory O(class ranges * batch * (1 + k)) plus 64 KiB
// per thread.

#ifndef TF_SAMPLING_SOFTMAX_STATS_H_
#define TF_SAMPLING_SOFTMAX_STATS_H_

#include <algorithm>
#include <utility>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TFS_SOFTMAX_X86 1
#endif

namespace tf_sampling {
namespace softmax_stats {

constexpr int kRows = 6;        // rows of x per micro-kernel call
constexpr int kCols = 16;       // classes per micro-kernel call (two 8-float vectors)
constexpr int64_t kTileBytes = 64 * 1024;
constexpr int64_t kMaxTile = 512;
// Rows per task: each task reads its class range of the weights once for all its rows,
// so a batch of up to kRowBlock rows reads the weights once in all.
constexpr int64_t kRowBlock = 1024;
// Classes per task: at most kMaxTaskClasses, and few enough that there are at least
// kMinTasks class ranges to share among threads; a multiple of kMaxTile. A function of the
// shapes only, never of the thread count.
constexpr int64_t kMaxTaskClasses = 32768;
constexpr int64_t kMinTasks = 16;

// Classes per tile for width `dim`: a multiple of kCols whose [dim, tile] floats fit in
// kTileBytes.
inline int64_t TileClasses(int64_t dim) {
  int64_t t = kTileBytes / (4 * std::max<int64_t>(dim, 1));
  t = std::min(kMaxTile, std::max<int64_t>(kCols, t / kCols * kCols));
  return t;
}

struct Problem {
  const float* x;     // [batch, dim]
  const float* w;     // [classes, dim]
  const float* bias;  // [classes] or nullptr
  int64_t batch, dim, classes;
  int64_t k = 0;      // top k per row as well (0: only the log-normaliser)
};

// A row's running top k: a heap of k (value, id) entries whose root is the worst entry
// (lowest value; among equal values the highest id, which tf.math.top_k ranks last).
// Classes arrive in increasing id order within a task, so a class ties with an entry only
// to lose: it enters only with a strictly greater value than the root.
inline bool Worse(float va, int32_t ia, float vb, int32_t ib) {
  return va < vb || (va == vb && ia > ib);
}

inline void HeapReplaceRoot(float* hv, int32_t* hi, int64_t k, float v, int32_t id) {
  int64_t i = 0;
  for (;;) {
    const int64_t l = 2 * i + 1, r = l + 1;
    int64_t w = i;
    float wv = v;
    int32_t wi = id;
    if (l < k && Worse(hv[l], hi[l], wv, wi)) { w = l; wv = hv[l]; wi = hi[l]; }
    if (r < k && Worse(hv[r], hi[r], wv, wi)) { w = r; }
    if (w == i) break;
    hv[i] = hv[w];
    hi[i] = hi[w];
    i = w;
  }
  hv[i] = v;
  hi[i] = id;
}

// Offers the logits l[0..n) of classes first_id.. to a row's top-k heap.
inline void OfferScalar(const float* l, int64_t n, int64_t first_id, float* hv, int32_t* hi,
                        int64_t k) {
  for (int64_t j = 0; j < n; ++j) {
    if (l[j] > hv[0]) HeapReplaceRoot(hv, hi, k, l[j], static_cast<int32_t>(first_id + j));
  }
}

// Running (m, s) of one row after the logits l[0..n).
inline void AbsorbScalar(const float* l, int64_t n, float* m, float* s) {
  float mx = *m;
  bool nan = false;
  for (int64_t j = 0; j < n; ++j) {
    mx = std::max(mx, l[j]);
    nan |= std::isnan(l[j]);
  }
  if (nan) {  // a NaN logit makes the row's result NaN
    *s = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  if (mx == -std::numeric_limits<float>::infinity()) return;  // s stays 0
  float acc = 0.f;
  for (int64_t j = 0; j < n; ++j) acc += std::exp(l[j] - mx);
  *s = *s * std::exp(*m - mx) + acc;
  *m = mx;
}

// Portable path: logits of rows [r0, r1) x classes [c0, c1) into `buf`, one row at a time.
inline void TaskGeneric(const Problem& p, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                        float* m, float* s, float* tv, int32_t* ti) {
  const int64_t tile = TileClasses(p.dim);
  std::vector<float> buf(tile);
  for (int64_t c = c0; c < c1; c += tile) {
    const int64_t n = std::min(tile, c1 - c);
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = p.x + r * p.dim;
      for (int64_t j = 0; j < n; ++j) {
        const float* wj = p.w + (c + j) * p.dim;
        float acc = 0.f;
        for (int64_t k = 0; k < p.dim; ++k) acc += xr[k] * wj[k];
        buf[j] = p.bias ? acc + p.bias[c + j] : acc;
      }
      AbsorbScalar(buf.data(), n, &m[r - r0], &s[r - r0]);
      if (p.k) OfferScalar(buf.data(), n, c, tv + (r - r0) * p.k, ti + (r - r0) * p.k, p.k);
    }
  }
}

#ifdef TFS_SOFTMAX_X86
#define TFS_AVX2_FMA __attribute__((target("avx2,fma")))

// exp of 8 floats x <= 0 (x - max: never positive here; NaN inputs are flagged by the
// caller). x is clamped at -86 (exp(-86) = 4e-38 is below any sum's rounding, and keeps
// 2^n normal); n = round(x / ln 2), r = x - n ln 2 (two-constant Cody-Waite, |r| <= 0.35),
// exp(r) by its degree-6 Taylor polynomial (truncation error r^7 / 7! < 1.3e-7 relative),
// and 2^n added to the exponent bits. 14 instructions, relative error below 3e-7.
TFS_AVX2_FMA inline __m256 ExpNonPositive8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-86.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}

TFS_AVX2_FMA inline float HMax8(__m256 v) {
  __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_max_ps(a, _mm_movehl_ps(a, a));
  a = _mm_max_ss(a, _mm_movehdup_ps(a));
  return _mm_cvtss_f32(a);
}

TFS_AVX2_FMA inline float HSum8(__m256 v) {
  __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_add_ps(a, _mm_movehl_ps(a, a));
  a = _mm_add_ss(a, _mm_movehdup_ps(a));
  return _mm_cvtss_f32(a);
}

// Running (m, s) of one row after the logits l[0..n), n a multiple of 8 plus a tail.
TFS_AVX2_FMA inline void Absorb8(const float* l, int64_t n, float* m, float* s) {
  const int64_t n8 = n / 8 * 8;
  __m256 vmax = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 unordered = _mm256_setzero_ps();
  for (int64_t j = 0; j < n8; j += 8) {
    const __m256 v = _mm256_loadu_ps(l + j);
    vmax = _mm256_max_ps(v, vmax);
    unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  float mx = std::max(*m, HMax8(vmax));
  bool nan = _mm256_movemask_ps(unordered) != 0;
  for (int64_t j = n8; j < n; ++j) {
    mx = std::max(mx, l[j]);
    nan |= std::isnan(l[j]);
  }
  if (nan) {  // a NaN logit makes the row's result NaN
    *s = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  if (mx == -std::numeric_limits<float>::infinity()) return;  // s stays 0
  const __m256 vm = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t j = 0; j < n8; j += 8) {
    acc = _mm256_add_ps(acc, ExpNonPositive8(_mm256_sub_ps(_mm256_loadu_ps(l + j), vm)));
  }
  float sum = HSum8(acc);
  for (int64_t j = n8; j < n; ++j) sum += std::exp(l[j] - mx);
  *s = *s * std::exp(*m - mx) + sum;
  *m = mx;
}

// OfferScalar, comparing 8 logits at a time with the heap's root.
TFS_AVX2_FMA inline void Offer8(const float* l, int64_t n, int64_t first_id, float* hv,
                                int32_t* hi, int64_t k) {
  const int64_t n8 = n / 8 * 8;
  for (int64_t j = 0; j < n8; j += 8) {
    int mask = _mm256_movemask_ps(
        _mm256_cmp_ps(_mm256_loadu_ps(l + j), _mm256_set1_ps(hv[0]), _CMP_GT_OQ));
    while (mask) {
      const int q = __builtin_ctz(mask);
      mask &= mask - 1;
      if (l[j + q] > hv[0]) {
        HeapReplaceRoot(hv, hi, k, l[j + q], static_cast<int32_t>(first_id + j + q));
      }
    }
  }
  OfferScalar(l + n8, n - n8, first_id + n8, hv, hi, k);
}

// AVX2 path. Per tile of classes: the weights transposed to wt[k][j] (zero-padded to a
// multiple of kCols), then 6 rows x 16 classes of logits per micro-kernel call.
TFS_AVX2_FMA inline void TaskAvx2(const Problem& p, int64_t r0, int64_t r1, int64_t c0,
                                  int64_t c1, float* m, float* s, float* tv, int32_t* ti) {
  const int64_t tile = TileClasses(p.dim);
  const int64_t d = p.dim;
  std::vector<float> wt(static_cast<size_t>(d * tile));
  std::vector<float> buf(static_cast<size_t>(kRows * tile));
  for (int64_t c = c0; c < c1; c += tile) {
    const int64_t n = std::min(tile, c1 - c);
    const int64_t npad = (n + kCols - 1) / kCols * kCols;
    for (int64_t j = 0; j < npad; ++j) {
      const float* wj = p.w + (c + j) * d;
      for (int64_t k = 0; k < d; ++k) wt[k * tile + j] = j < n ? wj[k] : 0.f;
    }
    for (int64_t r = r0; r < r1; r += kRows) {
      const int64_t rows = std::min<int64_t>(kRows, r1 - r);
      // Rows past the end repeat the last row (their results are not used).
      const float* xr[kRows];
      for (int q = 0; q < kRows; ++q) xr[q] = p.x + (r + std::min<int64_t>(q, rows - 1)) * d;
      for (int64_t j = 0; j < npad; j += kCols) {
        __m256 acc[kRows][2];
        for (int q = 0; q < kRows; ++q) acc[q][0] = acc[q][1] = _mm256_setzero_ps();
        const float* col = wt.data() + j;
        for (int64_t k = 0; k < d; ++k) {
          const __m256 w0 = _mm256_loadu_ps(col + k * tile);
          const __m256 w1 = _mm256_loadu_ps(col + k * tile + 8);
          for (int q = 0; q < kRows; ++q) {
            const __m256 b = _mm256_broadcast_ss(xr[q] + k);
            acc[q][0] = _mm256_fmadd_ps(b, w0, acc[q][0]);
            acc[q][1] = _mm256_fmadd_ps(b, w1, acc[q][1]);
          }
        }
        __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
        if (p.bias != nullptr) {
          // Classes past the end read no bias (their logits are not used).
          float bb[kCols];
          for (int q = 0; q < kCols; ++q) bb[q] = j + q < n ? p.bias[c + j + q] : 0.f;
          b0 = _mm256_loadu_ps(bb);
          b1 = _mm256_loadu_ps(bb + 8);
        }
        for (int q = 0; q < kRows; ++q) {
          float* o = buf.data() + q * tile + j;
          _mm256_storeu_ps(o, _mm256_add_ps(acc[q][0], b0));
          _mm256_storeu_ps(o + 8, _mm256_add_ps(acc[q][1], b1));
        }
      }
      for (int64_t q = 0; q < rows; ++q) {
        Absorb8(buf.data() + q * tile, n, &m[r - r0 + q], &s[r - r0 + q]);
        if (p.k) {
          const int64_t row = r - r0 + q;
          Offer8(buf.data() + q * tile, n, c, tv + row * p.k, ti + row * p.k, p.k);
        }
      }
    }
  }
}
#endif  // TFS_SOFTMAX_X86

using TaskFn = void (*)(const Problem&, int64_t, int64_t, int64_t, int64_t, float*, float*,
                        float*, int32_t*);

// The AVX2+FMA task where the CPU has both and `allow_simd`, else the portable one.
inline TaskFn PickTask(bool allow_simd) {
#ifdef TFS_SOFTMAX_X86
  __builtin_cpu_init();
  if (allow_simd && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return &TaskAvx2;
  }
#endif
  (void)allow_simd;
  return &TaskGeneric;
}

// Task t of the fixed split: row block t % row_blocks, class range t / row_blocks.
struct Split {
  int64_t row_blocks, task_classes, class_tasks;
  explicit Split(const Problem& p)
      : row_blocks((p.batch + kRowBlock - 1) / kRowBlock),
        task_classes(std::min(kMaxTaskClasses,
                              std::max<int64_t>(1, (p.classes / kMinTasks + kMaxTile - 1) /
                                                       kMaxTile) * kMaxTile)),
        class_tasks(std::max<int64_t>(1, (p.classes + task_classes - 1) / task_classes)) {}
  int64_t tasks() const { return row_blocks * class_tasks; }
};

// Runs task t, writing its partial (m, s) of its rows to pm/ps + (class range) * batch + r0
// and, with k, its top-k heaps to tv/ti + ((class range) * batch + r0) * k.
inline void RunTask(TaskFn fn, const Problem& p, const Split& split, int64_t t, float* pm,
                    float* ps, float* tv, int32_t* ti) {
  const int64_t rb = t % split.row_blocks, ct = t / split.row_blocks;
  const int64_t r0 = rb * kRowBlock, r1 = std::min(p.batch, r0 + kRowBlock);
  const int64_t c0 = ct * split.task_classes;
  const int64_t c1 = std::min(p.classes, c0 + split.task_classes);
  float* m = pm + ct * p.batch + r0;
  float* s = ps + ct * p.batch + r0;
  for (int64_t r = 0; r < r1 - r0; ++r) {
    m[r] = -std::numeric_limits<float>::infinity();
    s[r] = 0.f;
  }
  float* hv = nullptr;
  int32_t* hi = nullptr;
  if (p.k) {
    hv = tv + (ct * p.batch + r0) * p.k;
    hi = ti + (ct * p.batch + r0) * p.k;
    std::fill(hv, hv + (r1 - r0) * p.k, -std::numeric_limits<float>::infinity());
    std::fill(hi, hi + (r1 - r0) * p.k, -1);
  }
  if (c1 > c0) fn(p, r0, r1, c0, c1, m, s, hv, hi);
}

// lse[b] from the partials, combined in class-range order; with k, the top k of all the
// ranges' heaps, best first (ties: the lower id first, as tf.math.top_k), into top_v/top_i
// [batch, k]. Classes with a -inf (or NaN) logit never enter a heap: their slots keep
// (-inf, -1), as in the chunk loop of tf_sampling._chunked.
inline void Combine(const Problem& p, const Split& split, const float* pm, const float* ps,
                    const float* tv, const int32_t* ti, float* lse, float* top_v,
                    int32_t* top_i) {
  std::vector<std::pair<float, int32_t>> cand;
  for (int64_t b = 0; b < p.batch; ++b) {
    if (p.k) {
      cand.clear();
      for (int64_t ct = 0; ct < split.class_tasks; ++ct) {
        const int64_t at = (ct * p.batch + b) * p.k;
        for (int64_t q = 0; q < p.k; ++q) cand.emplace_back(tv[at + q], ti[at + q]);
      }
      std::partial_sort(cand.begin(), cand.begin() + p.k, cand.end(),
                        [](const std::pair<float, int32_t>& a,
                           const std::pair<float, int32_t>& c) {
                          if (a.first != c.first) return a.first > c.first;
                          // (-inf, -1) fillers after every real class of the same value.
                          if ((a.second < 0) != (c.second < 0)) return c.second < 0;
                          return a.second < c.second;
                        });
      for (int64_t q = 0; q < p.k; ++q) {
        top_v[b * p.k + q] = cand[q].first;
        top_i[b * p.k + q] = cand[q].second;
      }
    }
    float mx = -std::numeric_limits<float>::infinity();
    bool nan = false;
    for (int64_t ct = 0; ct < split.class_tasks; ++ct) {
      mx = std::max(mx, pm[ct * p.batch + b]);
      nan |= std::isnan(ps[ct * p.batch + b]);
    }
    if (nan) {
      lse[b] = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    if (std::isinf(mx) && mx < 0) {
      lse[b] = mx;  // no classes, or every logit -inf
      continue;
    }
    double sum = 0.0;
    for (int64_t ct = 0; ct < split.class_tasks; ++ct) {
      sum += static_cast<double>(ps[ct * p.batch + b]) *
             std::exp(static_cast<double>(pm[ct * p.batch + b]) - mx);
    }
    lse[b] = mx + static_cast<float>(std::log(sum));
  }
}

}  // namespace softmax_stats
}  // namespace tf_sampling

#endif  // TF_SAMPLING_SOFTMAX_STATS_H_
