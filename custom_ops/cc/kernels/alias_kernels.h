// The interface between the TF kernels (alias_kernels.cc, built by g++) and
// the CUDA code (alias_kernels.cu.cc, built by nvcc). Plain pointers and an
// opaque stream only, so that neither side needs the other's headers.

#ifndef TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_ALIAS_KERNELS_H_
#define TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_ALIAS_KERNELS_H_

#include <stddef.h>
#include <stdint.h>

#include "kernels/distribution_sampler.h"

namespace tf_sampling {
namespace gpu_launch {

// Device scratch bytes for building a table of n classes.
size_t BuildScratchBytes(int64_t n);

// Builds the table on `stream` (a cudaStream_t) and waits for it, to report
// invalid weights in *status. Returns a cudaError_t (0 on success).
template <typename T>
int Build(const T* weights, int64_t n, uint64_t* table, void* scratch,
          void* stream, alias::BuildStatus* status);

// Enqueues num draws on `stream`. Returns a cudaError_t.
int Sample(const uint64_t* table, int64_t n, alias::PhiloxKey key, int64_t num,
           int64_t* out, void* stream);

const char* ErrorString(int error);

}  // namespace gpu_launch
}  // namespace tf_sampling

#endif  // TF_SAMPLING_CUSTOM_OPS_CC_KERNELS_ALIAS_KERNELS_H_
