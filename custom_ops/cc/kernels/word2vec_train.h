// Fused skip-gram training: word2vec's inner loop, on raw arrays. No
// TensorFlow in here; the op (word2vec_kernels.cc) checks the inputs, locks
// the two embedding variables and has `num_threads` threads train blocks of it.
//
// ALGORITHM
//   Skip-gram of Mikolov et al. 2013, exactly as word2vec.c and gensim train
//   it, with plain SGD and "Hogwild" threads (Recht et al. 2011) that update
//   the shared matrices without locks:
//   - frequent words are dropped with word2vec's keep probability (given);
//   - each kept center word draws a reduced window b in [1, window] and is
//     paired with the kept words at distance <= b inside its sentence;
//   - for a pair (center c, context x), the context's input row v = w_in[x]
//     is trained to predict c: with negative sampling against label 1 for c
//     and label 0 for `negative` draws from the noise table (a draw equal to
//     c is skipped, as word2vec does); with hierarchical softmax against the
//     binary codes of c's path in the tree. For each target row u:
//       g = (label - sigmoid(v.u)) * alpha;  e += g u;  u += g v,
//     then v += e. sigmoid comes from word2vec's 1000-entry table on
//     [-6, 6]; outside it negative sampling uses the saturated gradient
//     (word2vec.c) and hierarchical softmax skips the node (word2vec.c,
//     gensim);
//   - alpha decays linearly from alpha_start to alpha_end over the corpus;
//     the op cuts it into blocks of ~10k words that idle threads take in
//     order, each block trained by `TrainSentences` with its slice of the ramp.
//
// COST
//   O(pairs * (negative + 1) * dim) for negative sampling, O(pairs * depth *
//   dim) for hierarchical softmax; noise draws are O(1) from an alias table
//   (distribution_sampler.h). Memory: none beyond the inputs.
//
// SOURCE
//   T. Mikolov et al., "Distributed representations of words and phrases and
//   their compositionality", NIPS 2013, and word2vec.c; the layout follows
//   TensorFlow's retired word2vec_kernels.cc (NegTrainWord2vec), which this
//   extends with subsampling, windows, threads and hierarchical softmax.

#ifndef TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_WORD2VEC_TRAIN_H_
#define TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_WORD2VEC_TRAIN_H_

#include <stdint.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/distribution_sampler.h"

// The training loop is compiled once per instruction set (see
// word2vec_kernels.cc); everything it calls must be inlined into each copy.
#if defined(__GNUC__)
#define TFS_W2V_INLINE inline __attribute__((always_inline))
#else
#define TFS_W2V_INLINE inline
#endif

namespace tf_sampling {
namespace word2vec {

constexpr int kExpTableSize = 1000;
constexpr float kMaxExp = 6.0f;

// sigmoid and log(sigmoid) on kExpTableSize points of [-kMaxExp, kMaxExp),
// as word2vec.c's expTable (the log table is for the reported loss).
struct SigmoidTable {
  float sigmoid[kExpTableSize];
  float log_sigmoid[kExpTableSize];
  SigmoidTable() {
    for (int i = 0; i < kExpTableSize; ++i) {
      const double x = (2.0 * i / kExpTableSize - 1.0) * kMaxExp;
      const double s = 1.0 / (1.0 + std::exp(-x));
      sigmoid[i] = static_cast<float>(s);
      log_sigmoid[i] = static_cast<float>(std::log(s));
    }
  }
  static TFS_W2V_INLINE int Index(float f) {
    return static_cast<int>((f + kMaxExp) * (kExpTableSize / kMaxExp / 2));
  }
};

// splitmix64 (Steele, Lea & Flood 2014): a fast, well-mixed stream per
// block. Training is Hogwild, so its results depend on thread timing anyway;
// with one thread a seed gives the same model on every run.
struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed) {}
  TFS_W2V_INLINE uint64_t Next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) by multiply-shift (Lemire), for n < 2^32.
  TFS_W2V_INLINE uint32_t Below(uint32_t n) {
    return static_cast<uint32_t>(((Next() >> 32) * n) >> 32);
  }
  // Uniform in [0, 1) with 24 bits, enough for a keep probability.
  TFS_W2V_INLINE float Unit() { return static_cast<float>(Next() >> 40) * (1.0f / 16777216.0f); }
};

// Everything one call trains on. Rows are `dim` floats; w_out has
// vocab_size rows (negative sampling) or vocab_size - 1 (inner tree nodes).
struct Problem {
  float* w_in = nullptr;
  float* w_out = nullptr;
  int64_t dim = 0;
  int64_t vocab_size = 0;
  const int32_t* corpus = nullptr;
  const int64_t* sentence_splits = nullptr;  // [num_sentences + 1]
  const float* keep_prob = nullptr;          // [vocab_size]
  int64_t window = 5;
  // Negative sampling (negative > 0): an alias table over the noise weights.
  int64_t negative = 0;
  const uint64_t* noise_table = nullptr;  // distribution_sampler.h's entries
  // Hierarchical softmax (negative == 0): per class c, the inner nodes and
  // branch codes of its path are entries [hs_splits[c], hs_splits[c + 1]).
  const int32_t* hs_nodes = nullptr;
  const int32_t* hs_codes = nullptr;
  const int64_t* hs_splits = nullptr;
  float alpha_start = 0.025f;
  float alpha_end = 0.025f;
};

// What a block did: words kept after subsampling, pairs trained, and the
// sum of the pairs' losses (-log sigmoid, from the table; NaN-free).
struct PartStats {
  int64_t words = 0;
  int64_t pairs = 0;
  double loss = 0.0;
};

// The vectors are short (~100 floats); written as plain loops that the
// compiler vectorizes for whichever instruction set the caller is built for.
TFS_W2V_INLINE float Dot(const float* a, const float* b, int64_t n) {
  // Eight partial sums: strict IEEE order forbids the compiler to split one
  // sum across vector lanes by itself.
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
  }
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}
TFS_W2V_INLINE void Axpy(float g, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += g * x[i];
}

// One (row v, target row u, label) step; adds g*u to e and g*v to u.
TFS_W2V_INLINE void Step(const SigmoidTable& t, float* v, float* u, float* e,
                 float label, float alpha, bool skip_saturated, int64_t dim,
                 double* loss) {
  const float f = Dot(v, u, dim);
  float g;
  if (f >= kMaxExp || f <= -kMaxExp) {
    if (skip_saturated) return;
    const bool wrong = (f > 0) != (label > 0.5f);
    if (wrong) *loss += std::fabs(f);  // -log sigmoid(-|f|) ~= |f|
    g = (label - (f > 0 ? 1.0f : 0.0f)) * alpha;
  } else {
    const int k = SigmoidTable::Index(f);
    const float s = t.sigmoid[k];
    // loss of label 1 is -log s(f); of label 0, -log s(-f) (mirror index)
    *loss -= label > 0.5f ? t.log_sigmoid[k]
                          : t.log_sigmoid[kExpTableSize - 1 - k];
    g = (label - s) * alpha;
  }
  Axpy(g, u, e, dim);
  Axpy(g, v, u, dim);
}

TFS_W2V_INLINE int32_t DrawNoise(const Problem& p, Rng* rng) {
  // The alias draw of distribution_sampler.h with a 64-bit word: the high half picks
  // the bucket, the low half is the 32-bit coin.
  const uint64_t x = rng->Next();
  const uint32_t j = static_cast<uint32_t>(
      ((x >> 32) * static_cast<uint64_t>(p.vocab_size)) >> 32);
  const uint64_t e = p.noise_table[j];
  return static_cast<uint32_t>(x) < alias::EntryThreshold(e)
             ? static_cast<int32_t>(j)
             : static_cast<int32_t>(alias::EntryAlias(e));
}

// Trains sentences [s_begin, s_end). `scratch` holds 2*dim floats plus room
// for the longest sentence (kept ids), sized by the caller.
TFS_W2V_INLINE PartStats TrainSentences(const Problem& p, const SigmoidTable& t,
                                    int64_t s_begin, int64_t s_end,
                                    uint64_t seed, float* e,
                                    std::vector<int32_t>* kept) {
  PartStats stats;
  Rng rng(seed);
  const int64_t dim = p.dim;
  const int64_t first = p.sentence_splits[s_begin];
  const int64_t total = std::max<int64_t>(1, p.sentence_splits[s_end] - first);
  const bool hs = p.negative == 0;
  float alpha = p.alpha_start;
  int64_t next_alpha_update = 0;
  for (int64_t s = s_begin; s < s_end; ++s) {
    const int64_t lo = p.sentence_splits[s], hi = p.sentence_splits[s + 1];
    if (lo - first >= next_alpha_update) {  // word2vec updates every 10k words
      const float done = static_cast<float>(lo - first) / total;
      alpha = p.alpha_start + (p.alpha_end - p.alpha_start) * done;
      next_alpha_update = lo - first + 10000;
    }
    kept->clear();
    for (int64_t i = lo; i < hi; ++i) {
      const int32_t w = p.corpus[i];
      if (p.keep_prob[w] >= 1.0f || rng.Unit() < p.keep_prob[w]) kept->push_back(w);
    }
    const int64_t n = static_cast<int64_t>(kept->size());
    stats.words += n;
    const int32_t* ids = kept->data();
    for (int64_t i = 0; i < n; ++i) {
      const int32_t center = ids[i];
      const int64_t b = 1 + rng.Below(static_cast<uint32_t>(p.window));
      const int64_t j0 = std::max<int64_t>(0, i - b);
      const int64_t j1 = std::min<int64_t>(n - 1, i + b);
      for (int64_t j = j0; j <= j1; ++j) {
        if (j == i) continue;
        float* v = p.w_in + static_cast<int64_t>(ids[j]) * dim;
        std::fill(e, e + dim, 0.0f);
        if (hs) {
          for (int64_t k = p.hs_splits[center]; k < p.hs_splits[center + 1]; ++k) {
            float* u = p.w_out + static_cast<int64_t>(p.hs_nodes[k]) * dim;
            // word2vec's convention: code 0 is the "positive" branch.
            Step(t, v, u, e, 1.0f - static_cast<float>(p.hs_codes[k]), alpha,
                 /*skip_saturated=*/true, dim, &stats.loss);
          }
        } else {
          Step(t, v, p.w_out + static_cast<int64_t>(center) * dim, e, 1.0f,
               alpha, false, dim, &stats.loss);
          for (int64_t d = 0; d < p.negative; ++d) {
            const int32_t noise = DrawNoise(p, &rng);
            if (noise == center) continue;
            Step(t, v, p.w_out + static_cast<int64_t>(noise) * dim, e, 0.0f,
                 alpha, false, dim, &stats.loss);
          }
        }
        Axpy(1.0f, e, v, dim);
        ++stats.pairs;
      }
    }
  }
  return stats;
}

// Cuts sentences [0, num_sentences) into `parts` contiguous ranges of about
// equal word counts; returns their boundaries (parts + 1 sentence indices).
inline std::vector<int64_t> SplitSentences(const int64_t* splits,
                                           int64_t num_sentences, int parts) {
  std::vector<int64_t> bounds(parts + 1, num_sentences);
  bounds[0] = 0;
  const int64_t total = splits[num_sentences] - splits[0];
  for (int k = 1; k < parts; ++k) {
    const int64_t target = splits[0] + total * k / parts;
    const int64_t* it = std::lower_bound(splits, splits + num_sentences + 1, target);
    bounds[k] = std::max(bounds[k - 1],
                         std::min<int64_t>(num_sentences, it - splits));
  }
  return bounds;
}

}  // namespace word2vec
}  // namespace tf_sampling

#endif  // TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_WORD2VEC_TRAIN_H_
