#include "kernels/cuda/cuda_device_memory.h"

#include <cuda_runtime.h>

#include "kernels/cuda/cuda_status.h"

namespace glassbox {
namespace {

using cuda_internal::CudaStatus;
using cuda_internal::DeviceGuard;

class CudaDeviceMemory final : public DeviceMemory {
 public:
  explicit CudaDeviceMemory(int device) : device_(device) {}

  absl::StatusOr<void*> Malloc(size_t bytes) override {
    DeviceGuard guard(device_);
    if (!guard.status().ok()) return guard.status();
    void* block = nullptr;
    const cudaError_t err = cudaMalloc(&block, bytes);
    if (err != cudaSuccess) {
      cudaGetLastError();  // out-of-memory is not sticky; clear it so later calls start clean
      return CudaStatus(err, "cudaMalloc");
    }
    return block;
  }

  absl::Status Free(void* block) override {
    DeviceGuard guard(device_);
    if (!guard.status().ok()) return guard.status();
    return CudaStatus(cudaFree(block), "cudaFree");  // synchronises: no queued kernel uses it
  }

 private:
  const int device_;
};

}  // namespace

std::unique_ptr<DeviceMemory> CreateCudaDeviceMemory(int device) {
  return std::make_unique<CudaDeviceMemory>(device);
}

}  // namespace glassbox
