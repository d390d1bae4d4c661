// Kernels of the alias-table ops (registered in ops/alias_ops.cc).
//
// This file is compiled twice (custom_ops/Makefile): into the CPU library,
// which registers the CPU kernels and must not depend on CUDA, and with
// GOOGLE_CUDA=1 TF_SAMPLING_GPU_LIBRARY=1 into the GPU library, which
// registers only the GPU kernels and is loaded after the CPU one. The device
// code itself is in alias_kernels.cu.cc / alias_gpu.cu.h.

#define EIGEN_USE_THREADS

#include <atomic>
#include <cmath>
#include <functional>

#include "kernels/range_sampler.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/util/work_sharder.h"

#if GOOGLE_CUDA
#include "kernels/alias_kernels.h"
#include "xla/stream_executor/stream.h"
#endif

#ifndef TF_SAMPLING_TF_VERSION
#define TF_SAMPLING_TF_VERSION "unknown"
#endif

// The TensorFlow version this library was compiled against, for the Python
// loader to read from the file before loading it (C++ ops have no ABI
// stability across TF versions): tf_sampling/ops/_loader.py.
extern "C" __attribute__((used, visibility("default")))
const char tf_sampling_build_info[] =
    "TF_SAMPLING_BUILT_WITH_TF=" TF_SAMPLING_TF_VERSION ";";

namespace tensorflow {
namespace tf_sampling_ops {

namespace alias = ::tf_sampling::alias;

// Draws per unit of parallel work: small calls stay on the calling thread.
constexpr int64_t kDrawsPerShard = 16384;

// The inputs of the sampling ops: table, [table_mass, extra_ids, extra_cum,]
// num_samples, seed (the bracketed ones for AliasMixtureSample).
struct SampleArgs {
  const uint64_t* table = nullptr;
  int64_t n = 0;
  int64_t num = 0;
  alias::PhiloxKey key;
  alias::Mixture mix;  // m == 0 unless AliasMixtureSample has extra ids
};

// Checks and reads the inputs; on bad input sets the context's status
// (callers return if !ctx->status().ok()).
template <typename Tnum, typename Tseed>
void ReadSampleArgs(OpKernelContext* ctx, bool mixture, SampleArgs* args) {
  const Tensor& table = ctx->input(0);
  const int num_index = mixture ? 4 : 1;
  const Tensor& num_t = ctx->input(num_index);
  const Tensor& seed = ctx->input(num_index + 1);
  OP_REQUIRES(ctx, TensorShapeUtils::IsVector(table.shape()),
              errors::InvalidArgument("`table` must be a vector, got shape ",
                                      table.shape().DebugString()));
  args->n = table.NumElements();
  OP_REQUIRES(ctx, args->n >= 1,
              errors::InvalidArgument("the alias table is empty"));
  OP_REQUIRES(ctx, args->n <= alias::kMaxClasses,
              errors::InvalidArgument("the alias table has more than 2^31 - 1 "
                                      "classes"));
  OP_REQUIRES(ctx, TensorShapeUtils::IsScalar(num_t.shape()),
              errors::InvalidArgument("`num_samples` must be a scalar, got "
                                      "shape ",
                                      num_t.shape().DebugString()));
  args->num = static_cast<int64_t>(num_t.scalar<Tnum>()());
  OP_REQUIRES(ctx, args->num >= 0,
              errors::InvalidArgument("`num_samples` must be >= 0, got ",
                                      args->num));
  OP_REQUIRES(ctx, seed.shape() == TensorShape({2}),
              errors::InvalidArgument("`seed` must have shape [2], got ",
                                      seed.shape().DebugString()));
  const auto s = seed.flat<Tseed>();
  args->key =
      alias::MakeKey(static_cast<int64_t>(s(0)), static_cast<int64_t>(s(1)));
  // The int64 entries are read as the uint64 bit patterns they hold.
  args->table = reinterpret_cast<const uint64_t*>(table.flat<int64_t>().data());
  if (!mixture) return;
  const Tensor& mass = ctx->input(1);
  const Tensor& ids = ctx->input(2);
  const Tensor& cum = ctx->input(3);
  OP_REQUIRES(ctx, TensorShapeUtils::IsScalar(mass.shape()),
              errors::InvalidArgument("`table_mass` must be a scalar"));
  OP_REQUIRES(ctx,
              TensorShapeUtils::IsVector(ids.shape()) && ids.shape() == cum.shape(),
              errors::InvalidArgument(
                  "`extra_ids` and `extra_cum` must be vectors of one length, "
                  "got shapes ", ids.shape().DebugString(), " and ",
                  cum.shape().DebugString()));
  args->mix.table_mass = mass.scalar<double>()();
  args->mix.m = ids.NumElements();
  args->mix.ids = ids.flat<int64_t>().data();
  args->mix.cum = cum.flat<double>().data();
  const double total =
      args->mix.table_mass +
      (args->mix.m > 0 ? args->mix.cum[args->mix.m - 1] : 0.0);
  OP_REQUIRES(ctx,
              args->mix.table_mass >= 0.0 && std::isfinite(total) &&
                  (args->mix.m == 0 || total > 0.0),
              errors::InvalidArgument(
                  "`table_mass` must be >= 0 and the total mass finite and "
                  "positive, got table_mass = ", args->mix.table_mass,
                  " and total ", total));
}

// Checks the weights' shape and allocates the table output of a build op
// into *table (null for an empty one); false if the context now holds an
// error.
bool AllocateTable(OpKernelContext* ctx, const Tensor& w, uint64_t** table) {
  if (!TensorShapeUtils::IsVector(w.shape())) {
    ctx->CtxFailure(__FILE__, __LINE__,
                    errors::InvalidArgument("`weights` must be a vector, got shape ",
                                            w.shape().DebugString()));
    return false;
  }
  Tensor* t = nullptr;
  const absl::Status s = ctx->allocate_output(0, w.shape(), &t);
  if (!s.ok()) {
    ctx->CtxFailureWithWarning(__FILE__, __LINE__, s);
    return false;
  }
  *table = reinterpret_cast<uint64_t*>(t->flat<int64_t>().data());
  return true;
}

#if !TF_SAMPLING_GPU_LIBRARY

template <typename T>
class AliasBuildOp : public OpKernel {
 public:
  explicit AliasBuildOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& w = ctx->input(0);
    uint64_t* table = nullptr;
    if (!AllocateTable(ctx, w, &table)) return;
    // One thread: the sweep is sequential and reads memory in order; at 1e6
    // classes it takes a few milliseconds.
    const alias::BuildStatus st =
        alias::BuildSweep(w.flat<T>().data(), w.NumElements(), table);
    OP_REQUIRES(ctx, st.code == alias::kBuildOk,
                errors::InvalidArgument(alias::BuildErrorMessage(st)));
  }
};

// The error for alias entries or extra ids outside [0, n).
absl::Status CorruptTableError(int64_t n) {
  return errors::InvalidArgument("`table` has aliases or `extra_ids` has ids "
                                 "outside [0, ", n,
                                 "): not a table made by alias_build");
}

// The CPU kernels of AliasSample and AliasMixtureSample, which differ only
// in the inputs (kMixture); the `unique` attribute says whether the draws
// are deduplicated.
template <typename Tnum, typename Tseed, bool kMixture>
class AliasSampleOp : public OpKernel {
 public:
  explicit AliasSampleOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("unique", &unique_));
  }

  void Compute(OpKernelContext* ctx) override {
    SampleArgs a;
    ReadSampleArgs<Tnum, Tseed>(ctx, kMixture, &a);
    if (!ctx->status().ok()) return;
    if (unique_) {
      ComputeUnique(ctx, a);
    } else {
      ComputeDraws(ctx, a);
    }
  }

 private:
  bool unique_ = false;

  // Runs fn(begin, end) over [0, units) on the intra-op pool (a single unit
  // on the calling thread).
  static void ParallelFor(OpKernelContext* ctx, int64_t units,
                          int64_t cost_per_unit,
                          const std::function<void(int64_t, int64_t)>& fn) {
    if (units <= 1) {
      fn(0, units);
      return;
    }
    auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
    Shard(workers->num_threads, workers->workers, units, cost_per_unit, fn);
  }

  void ComputeDraws(OpKernelContext* ctx, const SampleArgs& a) {
    Tensor* out = nullptr;
    Tensor* tries = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({a.num}), &out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({}), &tries));
    tries->scalar<int64_t>()() = a.num;
    int64_t* dst = out->flat<int64_t>().data();
    std::atomic<bool> ok(true);
    // Draw t depends only on (seed, t), so any split of [0, num) gives the
    // same output.
    auto work = [&](int64_t begin, int64_t end) {
      const int64_t lo = begin * kDrawsPerShard;
      const int64_t hi = std::min(a.num, end * kDrawsPerShard);
      if (!alias::DrawMixtureRange(a.table, a.n, a.key, a.mix, lo, hi,
                                   dst + lo)) {
        ok.store(false);
      }
    };
    const int64_t units = (a.num + kDrawsPerShard - 1) / kDrawsPerShard;
    ParallelFor(ctx, units, /*cost_per_unit=*/kDrawsPerShard * 40, work);
    OP_REQUIRES(ctx, ok.load(), CorruptTableError(a.n));
  }

  void ComputeUnique(OpKernelContext* ctx, const SampleArgs& a) {
    OP_REQUIRES(ctx, a.num <= a.n,
                errors::InvalidArgument("`num_samples` = ", a.num,
                                        " distinct classes requested from a "
                                        "table of ", a.n, " classes"));
    Tensor* out = nullptr;
    Tensor* tries = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({a.num}), &out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({}), &tries));
    auto parallel_for = [ctx](int64_t pieces,
                              const std::function<void(int64_t, int64_t)>& fn) {
      ParallelFor(ctx, pieces, /*cost_per_unit=*/alias::kUniquePiece * 40, fn);
    };
    alias::UniqueStats stats;
    const int rc = alias::SampleUniqueBounded(
        a.table, a.n, a.key, a.mix, a.num, out->flat<int64_t>().data(), &stats,
        parallel_for);
    tries->scalar<int64_t>()() = stats.num_tries;
    OP_REQUIRES(ctx, rc != alias::kUniqueBadAlias, CorruptTableError(a.n));
    OP_REQUIRES(ctx, rc != alias::kUniqueTooFew,
                errors::InvalidArgument(
                    "only ", stats.support, " classes have a positive "
                    "probability; cannot draw `num_samples` = ", a.num,
                    " distinct ones"));
    OP_REQUIRES(ctx, rc != alias::kUniqueBoundTooLarge,
                errors::InvalidArgument(
                    "unique sampling of ", a.num, " distinct classes from this "
                    "distribution needs up to ", stats.bound, " draws (a bound "
                    "exceeded with probability < 2^-40), more than the limit "
                    "of 2^32: a few classes hold almost all of the mass. Use "
                    "unique=False, fewer samples, or a flatter distribution "
                    "(e.g. a distortion below 1)"));
    OP_REQUIRES(ctx, rc == alias::kUniqueOk,
                errors::InvalidArgument(
                    "no ", a.num, " distinct classes after ", stats.bound,
                    " draws, the bound that a stream of this distribution "
                    "passes with probability < 2^-40: the table or the extra "
                    "ids do not describe the distribution drawn (corrupted)"));
  }
};

// Random reads into a large vector miss the caches. ResourceGather took 300-500
// us for 8,192 random entries of 1e6 doubles in a DynamicAliasSampler step,
// about 5x NumPy's take; prefetching each entry kPrefetchAhead indices before
// it is read keeps many misses in flight (under 100 us there).
template <typename T>
class VariableGatherOp : public OpKernel {
 public:
  explicit VariableGatherOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    core::RefCountPtr<Var> var;
    OP_REQUIRES_OK(ctx, LookupResource(ctx, HandleFromInput(ctx, 0), &var));
    const Tensor& indices = ctx->input(1);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, indices.shape(), &out));
    tf_shared_lock lock(*var->mu());
    const Tensor& params = *var->tensor();
    OP_REQUIRES(ctx, var->is_initialized,
                errors::FailedPrecondition("the variable is not initialized"));
    OP_REQUIRES(ctx,
                params.dtype() == DataTypeToEnum<T>::v() &&
                    TensorShapeUtils::IsVector(params.shape()),
                errors::InvalidArgument("the variable must be a vector of ",
                                        DataTypeString(DataTypeToEnum<T>::v()),
                                        ", got ", var->DebugString()));
    const T* p = params.flat<T>().data();
    const uint64_t n = static_cast<uint64_t>(params.NumElements());
    const int64_t* idx = indices.flat<int64_t>().data();
    const int64_t m = indices.NumElements();
    T* o = out->flat<T>().data();
    constexpr int64_t kPrefetchAhead = 32;
    for (int64_t i = 0; i < std::min(m, kPrefetchAhead); ++i) {
      const uint64_t j = static_cast<uint64_t>(idx[i]);
      if (j < n) __builtin_prefetch(p + j);
    }
    for (int64_t i = 0; i < m; ++i) {
      if (i + kPrefetchAhead < m) {
        const uint64_t ahead = static_cast<uint64_t>(idx[i + kPrefetchAhead]);
        if (ahead < n) __builtin_prefetch(p + ahead);
      }
      const uint64_t j = static_cast<uint64_t>(idx[i]);
      OP_REQUIRES(ctx, j < n,
                  errors::InvalidArgument("indices[", i, "] = ", idx[i],
                                          " is not in [0, ", n, ")"));
      o[i] = p[j];
    }
  }
};

#define REGISTER_VARIABLE_GATHER(T)                         \
  REGISTER_KERNEL_BUILDER(Name("TfSampling>VariableGather") \
                              .Device(DEVICE_CPU)           \
                              .TypeConstraint<T>("dtype"),  \
                          VariableGatherOp<T>);
REGISTER_VARIABLE_GATHER(float)
REGISTER_VARIABLE_GATHER(double)
REGISTER_VARIABLE_GATHER(int64_t)
#undef REGISTER_VARIABLE_GATHER

REGISTER_KERNEL_BUILDER(Name("TfSampling>AliasBuild")
                            .Device(DEVICE_CPU)
                            .TypeConstraint<float>("T"),
                        AliasBuildOp<float>);
REGISTER_KERNEL_BUILDER(Name("TfSampling>AliasBuild")
                            .Device(DEVICE_CPU)
                            .TypeConstraint<double>("T"),
                        AliasBuildOp<double>);

#define REGISTER_SAMPLE_CPU_OP(name, Tnum, Tseed, mixture)     \
  REGISTER_KERNEL_BUILDER(Name(name)                           \
                              .Device(DEVICE_CPU)              \
                              .TypeConstraint<Tnum>("Tnum")    \
                              .TypeConstraint<Tseed>("Tseed"), \
                          AliasSampleOp<Tnum, Tseed, mixture>);
#define REGISTER_SAMPLE_CPU(Tnum, Tseed)                               \
  REGISTER_SAMPLE_CPU_OP("TfSampling>AliasSample", Tnum, Tseed, false) \
  REGISTER_SAMPLE_CPU_OP("TfSampling>AliasMixtureSample", Tnum, Tseed, true)

REGISTER_SAMPLE_CPU(int32, int32)
REGISTER_SAMPLE_CPU(int32, int64_t)
REGISTER_SAMPLE_CPU(int64_t, int32)
REGISTER_SAMPLE_CPU(int64_t, int64_t)
#undef REGISTER_SAMPLE_CPU
#undef REGISTER_SAMPLE_CPU_OP

#endif  // !TF_SAMPLING_GPU_LIBRARY

#if GOOGLE_CUDA

namespace {
void* GpuStream(OpKernelContext* ctx) {
  return ctx->op_device_context()->stream()->platform_specific_handle().stream;
}
}  // namespace

template <typename T>
class AliasBuildGpuOp : public OpKernel {
 public:
  explicit AliasBuildGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& w = ctx->input(0);
    uint64_t* table = nullptr;
    if (!AllocateTable(ctx, w, &table)) return;
    const int64_t n = w.NumElements();
    alias::BuildStatus st{alias::kBuildOk, -1, 0.0};
    if (n == 0) st.code = alias::kBuildEmpty;
    if (n > alias::kMaxClasses) st.code = alias::kBuildTooLarge;
    OP_REQUIRES(ctx, st.code == alias::kBuildOk,
                errors::InvalidArgument(alias::BuildErrorMessage(st)));
    Tensor scratch;
    const int64_t bytes =
        static_cast<int64_t>(::tf_sampling::gpu_launch::BuildScratchBytes(n));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(DT_INT8, TensorShape({bytes}),
                                           &scratch));
    // Waits for the stream: invalid weights must become an error here.
    const int err = ::tf_sampling::gpu_launch::Build<T>(
        w.flat<T>().data(), n, table, scratch.flat<int8>().data(),
        GpuStream(ctx), &st);
    OP_REQUIRES(ctx, err == 0,
                errors::Internal("alias build on the GPU failed: ",
                                 ::tf_sampling::gpu_launch::ErrorString(err)));
    OP_REQUIRES(ctx, st.code == alias::kBuildOk,
                errors::InvalidArgument(alias::BuildErrorMessage(st)));
  }
};

template <typename Tnum, typename Tseed>
class AliasSampleGpuOp : public OpKernel {
 public:
  explicit AliasSampleGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    SampleArgs a;
    ReadSampleArgs<Tnum, Tseed>(ctx, /*mixture=*/false, &a);
    if (!ctx->status().ok()) return;
    Tensor* out = nullptr;
    Tensor* tries = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({a.num}), &out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({}), &tries));
    tries->scalar<int64_t>()() = a.num;  // in host memory (registration)
    // A corrupted alias entry yields the bucket id on the GPU (no error is
    // reported, to avoid a device-to-host sync per call; no bad read happens).
    const int err = ::tf_sampling::gpu_launch::Sample(
        a.table, a.n, a.key, a.num, out->flat<int64_t>().data(),
        GpuStream(ctx));
    OP_REQUIRES(ctx, err == 0,
                errors::Internal("alias sampling on the GPU failed: ",
                                 ::tf_sampling::gpu_launch::ErrorString(err)));
  }
};

REGISTER_KERNEL_BUILDER(Name("TfSampling>AliasBuild")
                            .Device(DEVICE_GPU)
                            .TypeConstraint<float>("T"),
                        AliasBuildGpuOp<float>);
REGISTER_KERNEL_BUILDER(Name("TfSampling>AliasBuild")
                            .Device(DEVICE_GPU)
                            .TypeConstraint<double>("T"),
                        AliasBuildGpuOp<double>);

// num_samples and seed are read, and num_tries written, on the host. Unique
// sampling (sequential by nature) and the mixture have only CPU kernels,
// which the placer picks automatically.
#define REGISTER_SAMPLE_GPU(Tnum, Tseed)                             \
  REGISTER_KERNEL_BUILDER(Name("TfSampling>AliasSample")             \
                              .Device(DEVICE_GPU)                    \
                              .HostMemory("num_samples")             \
                              .HostMemory("seed")                    \
                              .HostMemory("num_tries")               \
                              .AttrConstraint<bool>("unique", false) \
                              .TypeConstraint<Tnum>("Tnum")          \
                              .TypeConstraint<Tseed>("Tseed"),       \
                          AliasSampleGpuOp<Tnum, Tseed>);

REGISTER_SAMPLE_GPU(int32, int32)
REGISTER_SAMPLE_GPU(int32, int64_t)
REGISTER_SAMPLE_GPU(int64_t, int32)
REGISTER_SAMPLE_GPU(int64_t, int64_t)
#undef REGISTER_SAMPLE_GPU

#endif  // GOOGLE_CUDA

}  // namespace tf_sampling_ops
}  // namespace tensorflow
