#include "kernels/cuda/caching_allocator.h"

#include <algorithm>
#include <bit>
#include <utility>

#include "absl/strings/str_cat.h"

namespace glassbox {

std::shared_ptr<CachingDeviceAllocator> CachingDeviceAllocator::Create(
    std::unique_ptr<DeviceMemory> memory) {
  return std::shared_ptr<CachingDeviceAllocator>(new CachingDeviceAllocator(std::move(memory)));
}

CachingDeviceAllocator::~CachingDeviceAllocator() {
  // Every block in use holds a reference to this allocator, so only cached blocks remain. At
  // process exit the CUDA runtime may already be unloading; its errors are not worth reporting.
  EmptyCache().IgnoreError();
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
    absl::StatusOr<void*> fresh = memory_->Malloc(block_bytes);
    if (absl::IsResourceExhausted(fresh.status())) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.oom_retries;
      }
      if (absl::Status trimmed = EmptyCache(); !trimmed.ok()) return trimmed;
      fresh = memory_->Malloc(block_bytes);
    }
    if (!fresh.ok()) {
      const Stats s = stats();
      return absl::Status(fresh.status().code(),
                          absl::StrCat("cannot allocate ", block_bytes, " bytes of device memory (",
                                       s.bytes_in_use, " bytes in use by tensors, ",
                                       s.bytes_cached, " cached): ", fresh.status().message()));
    }
    block = *fresh;
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.device_mallocs;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.bytes_in_use += static_cast<int64_t>(block_bytes);
    stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
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

absl::Status CachingDeviceAllocator::Trim(int64_t keep_bytes) {
  // Take the blocks to free out of the lists under the lock, free them without it (a device
  // free may synchronise, and other threads keep allocating from what stays cached).
  std::vector<std::pair<void*, size_t>> to_free;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<size_t> sizes;
    for (const auto& [size, list] : free_blocks_) {
      if (!list.empty()) sizes.push_back(size);
    }
    std::sort(sizes.begin(), sizes.end(), std::greater<>());
    for (size_t size : sizes) {
      std::vector<void*>& list = free_blocks_[size];
      while (!list.empty() && stats_.bytes_cached > keep_bytes) {
        to_free.emplace_back(list.back(), size);
        list.pop_back();
        stats_.bytes_cached -= static_cast<int64_t>(size);
      }
      if (list.empty()) free_blocks_.erase(size);
      if (stats_.bytes_cached <= keep_bytes) break;
    }
    stats_.device_frees += static_cast<int64_t>(to_free.size());
  }
  absl::Status status;
  for (const auto& [block, size] : to_free) {
    if (absl::Status freed = memory_->Free(block); !freed.ok() && status.ok()) status = freed;
  }
  return status;
}

CachingDeviceAllocator::Stats CachingDeviceAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace glassbox
