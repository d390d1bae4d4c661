// Op registrations of the alias-table sampler, and the variable gather that
// DynamicAliasSampler reads its weights with. Kernels: kernels/alias_kernels.cc
// (CPU, and GPU with GOOGLE_CUDA), algorithm: kernels/distribution_sampler.h
// (table), kernels/range_sampler.h (mixture and unique draws).

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

// Input 0 (table): a vector; input `seed_input`: [2].
absl::Status CheckTableAndSeed(InferenceContext* c, int seed_input) {
  ShapeHandle table, seed;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 1, &table));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(seed_input), 1, &seed));
  DimensionHandle two;
  return c->WithValue(c->Dim(seed, 0), 2, &two);
}

// table, num_samples (scalar), seed.
absl::Status CheckSampleInputs(InferenceContext* c) {
  ShapeHandle unused;
  TF_RETURN_IF_ERROR(CheckTableAndSeed(c, 2));
  return c->WithRank(c->input(1), 0, &unused);
}

// The mixture ops: table, table_mass (scalar), extra_ids and extra_cum
// (vectors of one length), num_samples (scalar), seed.
absl::Status CheckMixtureInputs(InferenceContext* c) {
  ShapeHandle unused, ids, cum, extra;
  TF_RETURN_IF_ERROR(CheckTableAndSeed(c, 5));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 0, &unused));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &ids));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &cum));
  TF_RETURN_IF_ERROR(c->Merge(ids, cum, &extra));
  return c->WithRank(c->input(4), 0, &unused);
}

// Output 0 is a vector of the length given by scalar input `num_input`;
// output 1 (num_tries) a scalar.
absl::Status DrawsShape(InferenceContext* c, int num_input) {
  DimensionHandle num;
  TF_RETURN_IF_ERROR(c->MakeDimForScalarInput(num_input, &num));
  c->set_output(0, c->Vector(num));
  c->set_output(1, c->Scalar());
  return absl::OkStatus();
}

absl::Status SampleShape(InferenceContext* c) {
  TF_RETURN_IF_ERROR(CheckSampleInputs(c));
  return DrawsShape(c, 1);
}

absl::Status MixtureSampleShape(InferenceContext* c) {
  TF_RETURN_IF_ERROR(CheckMixtureInputs(c));
  return DrawsShape(c, 4);
}

}  // namespace

// The outputs and attributes of both sampling ops, which differ only in their
// inputs.
#define SAMPLE_OUTPUTS_AND_ATTRS               \
  Output("samples: int64")                     \
      .Output("num_tries: int64")              \
      .Attr("unique: bool = false")            \
      .Attr("Tnum: {int32, int64} = DT_INT32") \
      .Attr("Tseed: {int32, int64} = DT_INT64")

REGISTER_OP("TfSampling>AliasBuild")
    .Input("weights: T")
    .Output("table: int64")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle w;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 1, &w));
      c->set_output(0, w);
      return absl::OkStatus();
    })
    .Doc(R"doc(
Builds an alias table from non-negative weights (sweep variant of Vose's
method; see distribution_sampler.h). Entry i packs bucket i's alias (high 32
bits) and keep threshold t (low 32 bits, unsigned): the bucket keeps class i
with probability t / 2^32 and gives its alias otherwise. Negative, NaN, infinite
or all-zero weights are InvalidArgument; zero weights are never drawn.
)doc");

REGISTER_OP("TfSampling>AliasSample")
    .Input("table: int64")
    .Input("num_samples: Tnum")
    .Input("seed: Tseed")
    .SAMPLE_OUTPUTS_AND_ATTRS
    .SetShapeFn(SampleShape)
    .Doc(R"doc(
Draws class ids from an alias table. Draw t of the stream uses the
Philox-4x32-10 block (t / 2) keyed by `seed`, so the stream depends only on
the table, the seed and t: not on the thread count or the device.

unique = false: samples are the first num_samples draws of the stream (i.i.d.)
and num_tries = num_samples. unique = true: samples are its first num_samples
distinct ids, in order of first appearance, and num_tries the number of draws
that took; the expected count of a class of probability p is then
1 - (1 - p)^num_tries. InvalidArgument if fewer than num_samples classes have
a positive probability. Only unique = false has a GPU kernel (unique sampling
is sequential by nature; the placer picks the CPU kernel for it).
)doc");

REGISTER_OP("TfSampling>AliasMixtureSample")
    .Input("table: int64")
    .Input("table_mass: double")
    .Input("extra_ids: int64")
    .Input("extra_cum: double")
    .Input("num_samples: Tnum")
    .Input("seed: Tseed")
    .SAMPLE_OUTPUTS_AND_ATTRS
    .SetShapeFn(MixtureSampleShape)
    .Doc(R"doc(
AliasSample for the mixture of an alias table of mass `table_mass` and a
weighted list (`extra_ids`, with running weight sums `extra_cum`): a draw is
from the table with probability table_mass / (table_mass + extra_cum[-1]),
else the list entry k with probability proportional to its weight. With an
empty list this is AliasSample's stream. DynamicAliasSampler keeps its weight
increments since the last table build in the list. A separate op because the
list has no GPU kernel: AliasSample keeps its GPU placement.
)doc");

#undef SAMPLE_OUTPUTS_AND_ATTRS

REGISTER_OP("TfSampling>VariableGather")
    .Input("resource: resource")
    .Input("indices: int64")
    .Output("output: dtype")
    .Attr("dtype: {float, double, int64}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(1));
      return absl::OkStatus();
    })
    .Doc(R"doc(
The entries at `indices` (any shape) of a vector resource variable, read as
ResourceGather reads them (under the variable's shared lock, without copying
the variable). The entries are prefetched some indices ahead, which at
millions of entries makes random gathers several times faster than
ResourceGather's loop. InvalidArgument for an index outside [0, n). CPU only.
)doc");

}  // namespace tensorflow
