// Op registration of the fused skip-gram trainer. Kernel:
// kernels/word2vec_kernels.cc, algorithm: kernels/word2vec_train.h.

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace {

using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

absl::Status SkipGramTrainShape(InferenceContext* c) {
  ShapeHandle unused;
  for (int i = 2; i <= 8; ++i) {  // corpus ... hs_splits: vectors
    TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 1, &unused));
  }
  ShapeHandle alpha, seed;
  shape_inference::DimensionHandle two;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(9), 1, &alpha));
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(alpha, 0), 2, &two));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(10), 1, &seed));
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(seed, 0), 2, &two));
  c->set_output(0, c->Scalar());
  c->set_output(1, c->Scalar());
  c->set_output(2, c->Scalar());
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("TfSampling>SkipGramTrain")
    .Input("w_in: resource")
    .Input("w_out: resource")
    .Input("corpus: int32")
    .Input("sentence_splits: int64")
    .Input("keep_prob: float")
    .Input("noise_weights: float")
    .Input("hs_nodes: int32")
    .Input("hs_codes: int32")
    .Input("hs_splits: int64")
    .Input("alpha: float")
    .Input("seed: int64")
    .Output("words: int64")
    .Output("pairs: int64")
    .Output("loss: double")
    .Attr("window: int >= 1")
    .Attr("negative: int >= 0")
    .Attr("num_threads: int >= 1 = 1")
    .SetIsStateful()
    .SetShapeFn(SkipGramTrainShape)
    .Doc(R"doc(
Trains skip-gram word vectors in place over a corpus, as word2vec.c does:
subsampling, reduced windows, and negative sampling (negative > 0, noise drawn
from `noise_weights`) or hierarchical softmax (negative == 0, paths given by
hs_nodes/hs_codes/hs_splits). Hogwild SGD on `num_threads` threads with a
learning rate decaying linearly from alpha[0] to alpha[1] over the call.

w_in: [vocab_size, dim] float32 variable (input vectors).
w_out: [vocab_size, dim] (negative sampling) or [vocab_size - 1, dim]
  (hierarchical softmax) float32 variable (output vectors).
corpus: word ids in [0, vocab_size).
sentence_splits: sentence s is corpus[splits[s]:splits[s + 1]]; starts at 0,
  non-decreasing, ends at len(corpus). Windows never cross sentences.
keep_prob: per word, the probability of keeping an occurrence.
noise_weights: [vocab_size] non-negative noise weights (negative > 0), else [].
hs_nodes, hs_codes: the inner nodes and 0/1 branch codes of every word's path,
  word c owning entries [hs_splits[c], hs_splits[c + 1]); [] for negative > 0.
alpha: [start, end] learning rates. seed: [2].
words: words kept after subsampling. pairs: (center, context) pairs trained.
loss: sum over pairs of the -log sigmoid losses of their targets.
)doc");

}  // namespace tensorflow
