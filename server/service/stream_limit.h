// A server-wide bound on the streaming RPCs (Run, Generate) open at once
// (--max_concurrent_streams). Each holds a gRPC thread and a stream buffer for as long as its
// reader takes, so without a bound slow or stalled readers could take every thread; past it a
// new stream is RESOURCE_EXHAUSTED at once instead of waiting.
#pragma once

#include <atomic>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace glassbox {

class StreamLimit {
 public:
  // One open stream, counted until destroyed (or moved from).
  class Slot {
   public:
    Slot(Slot&& other) noexcept : open_(other.open_) { other.open_ = nullptr; }
    Slot& operator=(Slot&&) = delete;
    Slot(const Slot&) = delete;
    ~Slot() {
      if (open_ != nullptr) open_->fetch_sub(1);
    }

   private:
    friend class StreamLimit;
    explicit Slot(std::atomic<int64_t>* open) : open_(open) {}
    std::atomic<int64_t>* open_;
  };

  explicit StreamLimit(int64_t max_open) : max_open_(max_open) {}

  absl::StatusOr<Slot> Acquire() {
    const int64_t before = open_.fetch_add(1);
    if (before >= max_open_) {
      open_.fetch_sub(1);
      return absl::ResourceExhaustedError(
          absl::StrCat(before, " streams (Run, Generate) are open; this server allows ", max_open_,
                       " at once (--max_concurrent_streams); retry when one has finished"));
    }
    return Slot(&open_);
  }

  int64_t open() const { return open_.load(); }

 private:
  const int64_t max_open_;
  std::atomic<int64_t> open_{0};
};

}  // namespace glassbox
