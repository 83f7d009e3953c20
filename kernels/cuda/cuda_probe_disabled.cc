// Linked instead of cuda_probe.cu when the build has no CUDA compiler.
#include "kernels/cuda/cuda_probe.h"

namespace glassbox {

CudaProbe ProbeCuda() {
  return CudaProbe{.compiled = false, .device_count = 0,
                   .detail = "this build has no CUDA backend (configured without nvcc)"};
}

}  // namespace glassbox
