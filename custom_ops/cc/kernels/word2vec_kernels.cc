// Kernel of TfSampling>SkipGramTrain (registered in ops/word2vec_ops.cc): reads
// and checks the inputs, locks the two embedding variables, builds the noise
// table, and runs the loop of word2vec_train.h on `num_threads` threads.
//
// The variables are updated in place, as TensorFlow's own training ops do: if
// a read still holds the variable's buffer, the buffer is copied first (copy
// on write), so that values already read never change under the reader.

#define EIGEN_USE_THREADS

#include <atomic>
#include <cstring>
#include <vector>

#include "kernels/distribution_sampler.h"
#include "kernels/word2vec_train.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/platform/blocking_counter.h"

namespace tensorflow {
namespace tf_sampling_ops {
namespace {

namespace w2v = ::tf_sampling::word2vec;
namespace alias = ::tf_sampling::alias;

// The training loop built for AVX2+FMA and for baseline x86-64; the dynamic
// loader picks one at run time (GCC function multiversioning), so the shipped
// library needs no host-specific flags and still uses wide vectors.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
w2v::PartStats TrainPart(const w2v::Problem& p, const w2v::SigmoidTable& t,
                         int64_t s_begin, int64_t s_end, uint64_t seed,
                         float* e, std::vector<int32_t>* kept) {
  return w2v::TrainSentences(p, t, s_begin, s_end, seed, e, kept);
}

const w2v::SigmoidTable& Table() {
  static const w2v::SigmoidTable* table = new w2v::SigmoidTable();
  return *table;
}

// Words per block of work (gensim's jobs are 10000 words too).
constexpr int64_t kBlockWords = 10000;

uint64_t Mix(uint64_t a, uint64_t b) {
  w2v::Rng r(a ^ (b * 0xD6E8FEB86659FD93ull));
  return r.Next();
}

// Makes `var`'s buffer exclusively ours (copy on write), under its lock.
absl::Status PrepareToUpdate(OpKernelContext* ctx, Var* var) {
  Tensor* t = var->tensor();
  if (var->copy_on_read_mode.load() || !t->RefCountIsOne()) {
    Tensor copy;
    TF_RETURN_IF_ERROR(ctx->allocate_temp(t->dtype(), t->shape(), &copy));
    std::memcpy(copy.data(), t->data(), t->TotalBytes());
    *t = copy;
  }
  return absl::OkStatus();
}

class SkipGramTrainOp : public OpKernel {
 public:
  explicit SkipGramTrainOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("window", &window_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("negative", &negative_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_threads", &num_threads_));
  }

  void Compute(OpKernelContext* ctx) override {
    core::RefCountPtr<Var> w_in, w_out;
    OP_REQUIRES_OK(ctx, LookupResource(ctx, HandleFromInput(ctx, 0), &w_in));
    OP_REQUIRES_OK(ctx, LookupResource(ctx, HandleFromInput(ctx, 1), &w_out));
    OP_REQUIRES(ctx, w_in.get() != w_out.get(),
                errors::InvalidArgument("`w_in` and `w_out` must be different variables."));
    // Lock in address order, as TF's training ops do, so two calls never deadlock.
    Var* first = w_in.get() < w_out.get() ? w_in.get() : w_out.get();
    Var* second = first == w_in.get() ? w_out.get() : w_in.get();
    mutex_lock l1(*first->mu());
    mutex_lock l2(*second->mu());
    OP_REQUIRES(ctx, w_in->is_initialized && w_out->is_initialized,
                errors::FailedPrecondition("the embedding variables are not initialized."));
    const Tensor& in = *w_in->tensor();
    const Tensor& out = *w_out->tensor();
    OP_REQUIRES(ctx, in.dtype() == DT_FLOAT && out.dtype() == DT_FLOAT,
                errors::InvalidArgument("`w_in` and `w_out` must be float32 variables."));
    OP_REQUIRES(ctx, in.dims() == 2 && out.dims() == 2 && in.dim_size(1) == out.dim_size(1),
                errors::InvalidArgument(
                    "`w_in` and `w_out` must be matrices with the same number of columns, got ",
                    in.shape().DebugString(), " and ", out.shape().DebugString(), "."));
    const int64_t vocab = in.dim_size(0);
    const int64_t dim = in.dim_size(1);
    const bool hs = negative_ == 0;
    const int64_t out_rows = hs ? vocab - 1 : vocab;
    OP_REQUIRES(ctx, vocab >= 2 && vocab <= alias::kMaxClasses,
                errors::InvalidArgument("`w_in` must have between 2 and 2^31 - 1 rows, got ",
                                        vocab, "."));
    OP_REQUIRES(ctx, out.dim_size(0) == out_rows,
                errors::InvalidArgument(
                    "`w_out` must have ", out_rows, " rows (", hs ? "vocab_size - 1 inner tree "
                    "nodes for hierarchical softmax" : "vocab_size for negative sampling",
                    "), got ", out.dim_size(0), "."));

    const Tensor& corpus = ctx->input(2);
    const Tensor& splits = ctx->input(3);
    const Tensor& keep = ctx->input(4);
    const Tensor& noise = ctx->input(5);
    const Tensor& hs_nodes = ctx->input(6);
    const Tensor& hs_codes = ctx->input(7);
    const Tensor& hs_splits = ctx->input(8);
    const Tensor& alpha = ctx->input(9);
    const Tensor& seed = ctx->input(10);
    OP_REQUIRES(ctx, alpha.NumElements() == 2 && seed.NumElements() == 2,
                errors::InvalidArgument("`alpha` and `seed` must have 2 elements."));

    const int64_t n = corpus.NumElements();
    const auto ids = corpus.flat<int32>();
    for (int64_t i = 0; i < n; ++i) {
      OP_REQUIRES(ctx, ids(i) >= 0 && ids(i) < vocab,
                  errors::InvalidArgument("`corpus[", i, "]` = ", ids(i),
                                          " is out of range [0, ", vocab, ")."));
    }
    const int64_t num_sentences = splits.NumElements() - 1;
    OP_REQUIRES(ctx, num_sentences >= 0,
                errors::InvalidArgument("`sentence_splits` must not be empty."));
    const auto sp = splits.flat<int64_t>();
    OP_REQUIRES(ctx, sp(0) == 0 && sp(num_sentences) == n,
                errors::InvalidArgument("`sentence_splits` must start at 0 and end at "
                                        "len(corpus) = ", n, "."));
    for (int64_t s = 0; s < num_sentences; ++s) {
      OP_REQUIRES(ctx, sp(s) <= sp(s + 1),
                  errors::InvalidArgument("`sentence_splits` must be non-decreasing, but "
                                          "splits[", s, "] > splits[", s + 1, "]."));
    }
    OP_REQUIRES(ctx, keep.NumElements() == vocab,
                errors::InvalidArgument("`keep_prob` must have vocab_size = ", vocab,
                                        " elements, got ", keep.NumElements(), "."));
    const auto kp = keep.flat<float>();
    for (int64_t w = 0; w < vocab; ++w) {
      OP_REQUIRES(ctx, kp(w) >= 0.0f && kp(w) <= 1.0f,  // false for NaN
                  errors::InvalidArgument("`keep_prob[", w, "]` = ", kp(w),
                                          " is not a probability."));
    }
    const float a0 = alpha.flat<float>()(0), a1 = alpha.flat<float>()(1);
    OP_REQUIRES(ctx, a0 >= 0.0f && a1 >= 0.0f && std::isfinite(a0) && std::isfinite(a1),
                errors::InvalidArgument("`alpha` must be finite and non-negative."));

    w2v::Problem p;
    p.dim = dim;
    p.vocab_size = vocab;
    p.corpus = ids.data();
    p.sentence_splits = sp.data();
    p.keep_prob = kp.data();
    p.window = window_;
    p.negative = negative_;
    p.alpha_start = a0;
    p.alpha_end = a1;

    std::vector<uint64_t> noise_table;
    if (hs) {
      OP_REQUIRES(ctx, hs_splits.NumElements() == vocab + 1 &&
                           hs_nodes.NumElements() == hs_codes.NumElements(),
                  errors::InvalidArgument(
                      "hierarchical softmax (negative = 0) needs `hs_splits` of vocab_size + 1 "
                      "= ", vocab + 1, " elements and `hs_nodes`, `hs_codes` of one length."));
      const auto hsp = hs_splits.flat<int64_t>();
      const auto nodes = hs_nodes.flat<int32>();
      const auto codes = hs_codes.flat<int32>();
      OP_REQUIRES(ctx, hsp(0) == 0 && hsp(vocab) == hs_nodes.NumElements(),
                  errors::InvalidArgument("`hs_splits` must start at 0 and end at "
                                          "len(hs_nodes)."));
      for (int64_t c = 0; c < vocab; ++c) {
        OP_REQUIRES(ctx, hsp(c) <= hsp(c + 1),
                    errors::InvalidArgument("`hs_splits` must be non-decreasing."));
      }
      for (int64_t k = 0; k < hs_nodes.NumElements(); ++k) {
        OP_REQUIRES(ctx, nodes(k) >= 0 && nodes(k) < out_rows && (codes(k) & ~1) == 0,
                    errors::InvalidArgument("`hs_nodes[", k, "]` = ", nodes(k),
                                            " must be in [0, ", out_rows, ") and `hs_codes[",
                                            k, "]` = ", codes(k), " must be 0 or 1."));
      }
      p.hs_nodes = nodes.data();
      p.hs_codes = codes.data();
      p.hs_splits = hsp.data();
    } else {
      OP_REQUIRES(ctx, noise.NumElements() == vocab,
                  errors::InvalidArgument("negative sampling needs `noise_weights` of "
                                          "vocab_size = ", vocab, " elements, got ",
                                          noise.NumElements(), "."));
      noise_table.resize(vocab);
      const alias::BuildStatus st =
          alias::BuildSweep(noise.flat<float>().data(), vocab, noise_table.data());
      OP_REQUIRES(ctx, st.code == alias::kBuildOk,
                  errors::InvalidArgument(alias::BuildErrorMessage(st, "noise_weights")));
      p.noise_table = noise_table.data();
    }

    OP_REQUIRES_OK(ctx, PrepareToUpdate(ctx, w_in.get()));
    OP_REQUIRES_OK(ctx, PrepareToUpdate(ctx, w_out.get()));
    p.w_in = w_in->tensor()->flat<float>().data();
    p.w_out = w_out->tensor()->flat<float>().data();

    // Blocks of about kBlockWords words, handed to the threads in corpus order as
    // they free up (as gensim's job queue does), so that a thread slowed by
    // other work on the machine does not hold the others up. Each block has its
    // own random stream and its own slice of the learning-rate ramp.
    const int64_t total_words = std::max<int64_t>(1, n);
    const int64_t num_blocks = std::max<int64_t>(
        1, std::min<int64_t>(num_sentences, (n + kBlockWords - 1) / kBlockWords));
    const std::vector<int64_t> bounds =
        w2v::SplitSentences(sp.data(), num_sentences, static_cast<int>(num_blocks));
    const int threads = static_cast<int>(std::min<int64_t>(num_threads_, num_blocks));
    std::vector<w2v::PartStats> stats(threads);
    const uint64_t base = Mix(static_cast<uint64_t>(seed.flat<int64_t>()(0)),
                              static_cast<uint64_t>(seed.flat<int64_t>()(1)));
    std::atomic<int64_t> next_block{0};
    auto run = [&](int thread) {
      std::vector<float> e(dim);
      std::vector<int32_t> kept;
      for (int64_t b = next_block++; b < num_blocks; b = next_block++) {
        w2v::Problem block = p;
        const float x0 = static_cast<float>(sp(bounds[b])) / total_words;
        const float x1 = static_cast<float>(sp(bounds[b + 1])) / total_words;
        block.alpha_start = a0 + (a1 - a0) * x0;
        block.alpha_end = a0 + (a1 - a0) * x1;
        const w2v::PartStats s = TrainPart(block, Table(), bounds[b], bounds[b + 1],
                                           Mix(base, b + 1), e.data(), &kept);
        stats[thread].words += s.words;
        stats[thread].pairs += s.pairs;
        stats[thread].loss += s.loss;
      }
    };
    // Hogwild: the threads update the shared matrices without locks.
    auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    BlockingCounter done(threads - 1);
    for (int k = 1; k < threads; ++k) {
      workers->Schedule([&run, &done, k] {
        run(k);
        done.DecrementCount();
      });
    }
    run(0);
    done.Wait();

    w2v::PartStats total;
    for (const auto& s : stats) {
      total.words += s.words;
      total.pairs += s.pairs;
      total.loss += s.loss;
    }
    Tensor* t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &t));
    t->scalar<int64_t>()() = total.words;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({}), &t));
    t->scalar<int64_t>()() = total.pairs;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({}), &t));
    t->scalar<double>()() = total.loss;
  }

 private:
  int64_t window_;
  int64_t negative_;
  int64_t num_threads_;
};

REGISTER_KERNEL_BUILDER(Name("TfSampling>SkipGramTrain")
                            .Device(DEVICE_CPU)
                            .HostMemory("w_in")
                            .HostMemory("w_out"),
                        SkipGramTrainOp);

}  // namespace
}  // namespace tf_sampling_ops
}  // namespace tensorflow
