// Linked instead of the CUDA backend when the build has no CUDA compiler, so callers need no
// #ifdef: asking for the backend is an error that says why.
#include "kernels/cuda/cuda_backend.h"

namespace glassbox {

absl::StatusOr<std::shared_ptr<Backend>> CreateCudaBackend(int device, CudaBackendOptions options) {
  return absl::FailedPreconditionError(
      "this build has no CUDA backend (configured without nvcc); use the CPU backend");
}

absl::StatusOr<CudaBackend::PathCounts> CudaPathCounts(const Backend&) {
  return absl::FailedPreconditionError("this build has no CUDA backend (configured without nvcc)");
}

}  // namespace glassbox
