// CUDA side of the alias-table ops: thin wrappers around alias_gpu.cu.h, built
// by nvcc into the separate GPU library (see custom_ops/Makefile).

#if GOOGLE_CUDA

#include "kernels/alias_kernels.h"

#include "kernels/alias_gpu.cu.h"

namespace tf_sampling {
namespace gpu_launch {

size_t BuildScratchBytes(int64_t n) { return gpu::BuildScratchBytes(n); }

template <typename T>
int Build(const T* weights, int64_t n, uint64_t* table, void* scratch,
          void* stream, alias::BuildStatus* status) {
  gpu::DeviceState state;
  const cudaError_t err = gpu::BuildSync(
      weights, n, table, scratch, gpu::kDefaultSection,
      static_cast<cudaStream_t>(stream), &state);
  *status = state.status;
  return static_cast<int>(err);
}

template int Build<float>(const float*, int64_t, uint64_t*, void*, void*,
                          alias::BuildStatus*);
template int Build<double>(const double*, int64_t, uint64_t*, void*, void*,
                           alias::BuildStatus*);

int Sample(const uint64_t* table, int64_t n, alias::PhiloxKey key, int64_t num,
           int64_t* out, void* stream) {
  return static_cast<int>(gpu::LaunchSample(
      table, n, key, num, out, static_cast<cudaStream_t>(stream)));
}

const char* ErrorString(int error) {
  return cudaGetErrorString(static_cast<cudaError_t>(error));
}

}  // namespace gpu_launch
}  // namespace tf_sampling

#endif  // GOOGLE_CUDA
