// cudaMalloc / cudaFree on one device, as the caching allocator's DeviceMemory.
#pragma once

#include <memory>

#include "kernels/cuda/caching_allocator.h"

namespace glassbox {

std::unique_ptr<DeviceMemory> CreateCudaDeviceMemory(int device);

}  // namespace glassbox
