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
// Thread-safe. Plain C++ (no CUDA headers) so that tests and the server can include it.
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

class CachingDeviceAllocator : public std::enable_shared_from_this<CachingDeviceAllocator> {
 public:
  struct Stats {
    int64_t device_mallocs = 0;  // cudaMalloc calls that succeeded
    int64_t device_frees = 0;    // cudaFree calls (EmptyCache, destruction)
    int64_t cache_hits = 0;      // allocations served from a free list
    int64_t bytes_in_use = 0;    // bytes of blocks currently held by tensors
    int64_t bytes_cached = 0;    // bytes of blocks waiting in the free lists
  };

  static std::shared_ptr<CachingDeviceAllocator> Create(int device);
  ~CachingDeviceAllocator();

  CachingDeviceAllocator(const CachingDeviceAllocator&) = delete;
  CachingDeviceAllocator& operator=(const CachingDeviceAllocator&) = delete;

  // A block of at least `bytes` bytes (256-byte aligned). On device out-of-memory the cache is
  // emptied and the allocation retried once; then RESOURCE_EXHAUSTED.
  absl::StatusOr<std::shared_ptr<Storage>> Allocate(size_t bytes);

  // Returns every cached (unused) block to the driver.
  absl::Status EmptyCache();

  Stats stats() const;

  // The block size serving a request: 512-byte multiples below 1 MiB, then four buckets per
  // power of two (at most 25% slack).
  static size_t BlockSize(size_t bytes);

 private:
  explicit CachingDeviceAllocator(int device) : device_(device) {}
  void Release(void* block, size_t block_bytes);
  // Frees the cached blocks; mu_ must not be held.
  absl::Status FreeCached();

  const int device_;
  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_blocks_;  // by block size
  Stats stats_;
};

}  // namespace glassbox
