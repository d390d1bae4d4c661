// CPU kernel of TfSampling>SoftmaxStats (registered in ops/softmax_stats_ops.cc); the
// algorithm is in kernels/softmax_stats.h. CPU only: on a GPU the Python side uses its
// XLA-compiled chunk loop instead.

#define EIGEN_USE_THREADS

#include <cstdlib>
#include <limits>
#include <string>

#include "kernels/softmax_stats.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tensorflow {
namespace tf_sampling_ops {

namespace ss = ::tf_sampling::softmax_stats;

class SoftmaxStatsOp : public OpKernel {
 public:
  explicit SoftmaxStatsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("k", &k_));
    // TF_SAMPLING_NO_AVX2=1 forces the portable path, as for the alias draws.
    const char* env = std::getenv("TF_SAMPLING_NO_AVX2");
    task_ = ss::PickTask(!(env != nullptr && std::string(env) == "1"));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& w = ctx->input(1);
    const Tensor& bias = ctx->input(2);
    OP_REQUIRES(ctx, TensorShapeUtils::IsMatrix(x.shape()),
                errors::InvalidArgument("x must be [batch, dim], got ",
                                        x.shape().DebugString()));
    OP_REQUIRES(ctx, TensorShapeUtils::IsMatrix(w.shape()),
                errors::InvalidArgument("kernel must be [classes, dim], got ",
                                        w.shape().DebugString()));
    OP_REQUIRES(ctx, x.dim_size(1) == w.dim_size(1),
                errors::InvalidArgument("x is [batch, ", x.dim_size(1),
                                        "] but the kernel is [classes, ", w.dim_size(1), "]"));
    OP_REQUIRES(ctx, TensorShapeUtils::IsVector(bias.shape()) &&
                         (bias.dim_size(0) == 0 || bias.dim_size(0) == w.dim_size(0)),
                errors::InvalidArgument("bias must be [classes] or [0] (no bias), got ",
                                        bias.shape().DebugString(), " for ", w.dim_size(0),
                                        " classes"));
    ss::Problem p;
    p.x = x.flat<float>().data();
    p.w = w.flat<float>().data();
    p.bias = bias.dim_size(0) ? bias.flat<float>().data() : nullptr;
    p.batch = x.dim_size(0);
    p.dim = x.dim_size(1);
    p.classes = w.dim_size(0);
    p.k = k_;
    OP_REQUIRES(ctx, p.classes <= std::numeric_limits<int32_t>::max(),
                errors::InvalidArgument("at most 2^31 - 1 classes, got ", p.classes));
    OP_REQUIRES(ctx, k_ <= p.classes,
                errors::InvalidArgument("k = ", k_, " is larger than the number of classes, ",
                                        p.classes));

    Tensor *lse = nullptr, *top_v = nullptr, *top_i = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({p.batch}), &lse));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({p.batch, k_}), &top_v));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({p.batch, k_}), &top_i));
    if (p.batch == 0) return;
    const ss::Split split(p);
    Tensor partial, heaps_v, heaps_i;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(DT_FLOAT,
                                           TensorShape({2, split.class_tasks, p.batch}),
                                           &partial));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(DT_FLOAT,
                                           TensorShape({split.class_tasks, p.batch, k_}),
                                           &heaps_v));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(DT_INT32,
                                           TensorShape({split.class_tasks, p.batch, k_}),
                                           &heaps_i));
    float* pm = partial.flat<float>().data();
    float* ps = pm + split.class_tasks * p.batch;
    float* hv = heaps_v.flat<float>().data();
    int32_t* hi = heaps_i.flat<int32_t>().data();
    const ss::TaskFn fn = task_;
    auto work = [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) ss::RunTask(fn, p, split, t, pm, ps, hv, hi);
    };
    const int64_t tasks = split.tasks();
    // Cost per task: its multiply-adds and exps, in rough cycles.
    const int64_t rows = std::min<int64_t>(p.batch, ss::kRowBlock);
    const int64_t classes = std::min<int64_t>(p.classes, split.task_classes);
    const int64_t cost = rows * classes * (p.dim + 4);
    if (tasks == 1) {
      work(0, 1);
    } else {
      auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
      Shard(workers->num_threads, workers->workers, tasks, cost, work);
    }
    ss::Combine(p, split, pm, ps, hv, hi, lse->flat<float>().data(),
                top_v->flat<float>().data(), top_i->flat<int32_t>().data());
  }

 private:
  ss::TaskFn task_;
  int64_t k_ = 0;
};

REGISTER_KERNEL_BUILDER(Name("TfSampling>SoftmaxStats").Device(DEVICE_CPU), SoftmaxStatsOp);

}  // namespace tf_sampling_ops
}  // namespace tensorflow
