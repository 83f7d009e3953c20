// Device memory for the CUDA backend without a cudaMalloc per request: freed blocks go to
// size-bucketed free lists and the next request of a size in the same bucket reuses one. The
// engine allocates the same shapes layer after layer and request after request, so after the
// first forward pass of a shape nearly every allocation is a cache hit.
//
// Blocks are handed out wrapped in a Storage whose deleter returns them to the cache; the
// deleter keeps the allocator alive, so tensors may outlive the backend that made them.
//
// Reuse is safe because the backend runs all its work on one stream: a block freed by the host
// while kernels that use it are still queued can only be handed to work queued after them. A
// second stream (the planned capture-copy stream) must record an event on release and wait on it
// before reuse, as PyTorch's record_stream does.
//
// Where blocks come from is a DeviceMemory: cudaMalloc/cudaFree on one device in the backend
// (cuda_device_memory.h), a fake with a budget in tests, so that everything here (free lists,
// statistics, the out-of-memory retry, trimming) is tested on machines without a GPU.
//
// Thread-safe. Plain C++ (no CUDA headers).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/tensor.h"

namespace glassbox {

// The allocator's source of blocks.
class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  // A block of `bytes` bytes, 256-byte aligned; RESOURCE_EXHAUSTED when the device is out of
  // memory (the allocator then empties its cache and retries once), other codes for other errors.
  virtual absl::StatusOr<void*> Malloc(size_t bytes) = 0;
  // Returns a block from Malloc. Must not be called while queued work may still use it (the CUDA
  // implementation's cudaFree synchronises with the device).
  virtual absl::Status Free(void* block) = 0;
};

class CachingDeviceAllocator : public std::enable_shared_from_this<CachingDeviceAllocator> {
 public:
  struct Stats {
    int64_t device_mallocs = 0;  // Malloc calls that succeeded
    int64_t device_frees = 0;    // Free calls (trimming, the out-of-memory retry, destruction)
    int64_t cache_hits = 0;      // allocations served from a free list
    int64_t oom_retries = 0;     // out-of-memory Mallocs retried after emptying the cache
    int64_t bytes_in_use = 0;    // bytes of blocks currently held by tensors
    int64_t bytes_cached = 0;    // bytes of blocks waiting in the free lists
    int64_t peak_bytes_in_use = 0;
  };

  static std::shared_ptr<CachingDeviceAllocator> Create(std::unique_ptr<DeviceMemory> memory);
  ~CachingDeviceAllocator();

  CachingDeviceAllocator(const CachingDeviceAllocator&) = delete;
  CachingDeviceAllocator& operator=(const CachingDeviceAllocator&) = delete;

  // A block of at least `bytes` bytes (a Storage on Device::kCuda). On out-of-memory the cache is
  // emptied and the allocation retried once; then RESOURCE_EXHAUSTED saying how much is in use.
  absl::StatusOr<std::shared_ptr<Storage>> Allocate(size_t bytes);

  // Frees cached (unused) blocks, largest first, until at most `keep_bytes` stay cached: a
  // long-running server trims after a request whose shapes will not come again.
  absl::Status Trim(int64_t keep_bytes);
  // Returns every cached block to the device: Trim(0).
  absl::Status EmptyCache() { return Trim(0); }

  Stats stats() const;

  // The block size serving a request: 512-byte multiples below 1 MiB, then four buckets per
  // power of two (at most 25% slack).
  static size_t BlockSize(size_t bytes);

 private:
  explicit CachingDeviceAllocator(std::unique_ptr<DeviceMemory> memory)
      : memory_(std::move(memory)) {}
  void Release(void* block, size_t block_bytes);

  const std::unique_ptr<DeviceMemory> memory_;
  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_blocks_;  // by block size
  Stats stats_;
};

}  // namespace glassbox
