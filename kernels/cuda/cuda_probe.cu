#include <cuda_runtime.h>

#include <string>

#include "kernels/cuda/cuda_probe.h"

namespace glassbox {

CudaProbe ProbeCuda() {
  CudaProbe probe;
  probe.compiled = true;
  int count = 0;
  // cudaGetDeviceCount returns an error (not a crash) when there is no driver or no device.
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    probe.detail = std::string("no CUDA device: ") + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return probe;
  }
  probe.device_count = count;
  probe.detail = std::to_string(count) + " CUDA device(s)";
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) == cudaSuccess) {
      probe.detail += std::string("; ") + std::to_string(i) + ": " + prop.name + " (sm_" +
                      std::to_string(prop.major * 10 + prop.minor) + ", " +
                      std::to_string(prop.totalGlobalMem >> 20) + " MiB)";
    }
  }
  return probe;
}

}  // namespace glassbox
