// Op registration of the fused log-normaliser. Kernel: kernels/softmax_stats_kernels.cc,
// algorithm: kernels/softmax_stats.h.

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

REGISTER_OP("TfSampling>SoftmaxStats")
    .Input("x: float")
    .Input("kernel: float")
    .Input("bias: float")
    .Output("lse: float")
    .Output("top_values: float")
    .Output("top_ids: int32")
    .Attr("k: int >= 0 = 0")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x, w, b;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &w));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &b));
      DimensionHandle dim;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 1), c->Dim(w, 1), &dim));
      int64_t k;
      TF_RETURN_IF_ERROR(c->GetAttr("k", &k));
      c->set_output(0, c->Vector(c->Dim(x, 0)));
      c->set_output(1, c->Matrix(c->Dim(x, 0), k));
      c->set_output(2, c->Matrix(c->Dim(x, 0), k));
      return absl::OkStatus();
    })
    .Doc(R"doc(
The log-normaliser of a linear output layer, lse[b] = log sum_c exp(x[b] . kernel[c]
+ bias[c]), computed tile by tile with a streaming maximum and sum, so that the
[batch, classes] logits never exist. bias: [classes], or [0] for no bias. With k > 0
also the k largest logits of each row and their class ids, best first (ties: the lower id
first, as tf.math.top_k). The result does not depend on the number of threads. CPU only.

x: [batch, dim].
kernel: [classes, dim].
lse: [batch].
top_values: [batch, k] logits.
top_ids: [batch, k] class ids; -1 where fewer than k classes have a logit above -inf.
)doc");

}  // namespace tensorflow
