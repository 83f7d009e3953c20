#include "kernels/cuda/caching_allocator.h"

#include <cuda_runtime.h>

#include <bit>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cuda/cuda_status.h"

namespace glassbox {

using cuda_internal::CudaStatus;
using cuda_internal::DeviceGuard;

std::shared_ptr<CachingDeviceAllocator> CachingDeviceAllocator::Create(int device) {
  return std::shared_ptr<CachingDeviceAllocator>(new CachingDeviceAllocator(device));
}

CachingDeviceAllocator::~CachingDeviceAllocator() {
  // Every block in use holds a reference to this allocator, so only cached blocks remain. At
  // process exit the CUDA runtime may already be unloading; its errors are not worth reporting.
  FreeCached().IgnoreError();
}

size_t CachingDeviceAllocator::BlockSize(size_t bytes) {
  constexpr size_t kMinBlock = 512;
  constexpr size_t kSmall = size_t{1} << 20;
  if (bytes <= kMinBlock) return kMinBlock;
  if (bytes < kSmall) return (bytes + kMinBlock - 1) / kMinBlock * kMinBlock;
  const size_t quarter = std::bit_floor(bytes) / 4;  // four buckets per power of two
  return (bytes + quarter - 1) / quarter * quarter;
}

absl::StatusOr<std::shared_ptr<Storage>> CachingDeviceAllocator::Allocate(size_t bytes) {
  const size_t block_bytes = BlockSize(bytes);
  void* block = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_blocks_.find(block_bytes);
    if (it != free_blocks_.end() && !it->second.empty()) {
      block = it->second.back();
      it->second.pop_back();
      ++stats_.cache_hits;
      stats_.bytes_cached -= static_cast<int64_t>(block_bytes);
    }
  }
  if (block == nullptr) {
    DeviceGuard guard(device_);
    GB_RETURN_IF_ERROR(guard.status());
    cudaError_t err = cudaMalloc(&block, block_bytes);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // out-of-memory is not sticky; clear it before retrying
      GB_RETURN_IF_ERROR(FreeCached());
      err = cudaMalloc(&block, block_bytes);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      const Stats s = stats();
      return absl::Status(
          CudaStatus(err, "").code(),
          absl::StrCat("cuda: cannot allocate ", block_bytes, " bytes of device memory (",
                       s.bytes_in_use, " bytes in use by tensors): ", cudaGetErrorString(err)));
    }
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.device_mallocs;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.bytes_in_use += static_cast<int64_t>(block_bytes);
  }
  std::shared_ptr<CachingDeviceAllocator> self = shared_from_this();
  return std::make_shared<Storage>(
      block, bytes, Device::kCuda,
      [self = std::move(self), block_bytes](void* p) { self->Release(p, block_bytes); });
}

void CachingDeviceAllocator::Release(void* block, size_t block_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  free_blocks_[block_bytes].push_back(block);
  stats_.bytes_in_use -= static_cast<int64_t>(block_bytes);
  stats_.bytes_cached += static_cast<int64_t>(block_bytes);
}

absl::Status CachingDeviceAllocator::FreeCached() {
  std::unordered_map<size_t, std::vector<void*>> blocks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    blocks.swap(free_blocks_);
  }
  if (blocks.empty()) return absl::OkStatus();
  DeviceGuard guard(device_);
  absl::Status status = guard.status();
  int64_t freed = 0, freed_bytes = 0;
  for (const auto& [size, list] : blocks) {
    for (void* block : list) {
      // cudaFree synchronises with the device, so no queued kernel still uses the block.
      const cudaError_t err = cudaFree(block);
      if (err != cudaSuccess && status.ok()) status = CudaStatus(err, "cudaFree");
      ++freed;
      freed_bytes += static_cast<int64_t>(size);
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  stats_.device_frees += freed;
  stats_.bytes_cached -= freed_bytes;
  return status;
}

absl::Status CachingDeviceAllocator::EmptyCache() { return FreeCached(); }

CachingDeviceAllocator::Stats CachingDeviceAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace glassbox
