// A byte-bounded queue between the worker that runs a forward pass (the producer) and the gRPC
// reactor that writes its stream (the consumer). The consumer never blocks: it takes what is
// queued and is called back (OnReady) when more arrives. When the client reads slowly the queue
// fills and Push waits, so server memory stays bounded; but the worker serves every caller of
// the device, so it waits at most a stall timeout before giving up on that one reader.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>

#include "absl/time/time.h"

namespace glassbox {

template <typename T>
class BoundedChannel {
 public:
  enum class PushResult { kQueued, kClosed, kStalled };

  explicit BoundedChannel(size_t capacity_bytes) : capacity_(capacity_bytes) {}

  // Waits while the queue holds `capacity` bytes or more (one item always fits, however large),
  // at most `stall`. kClosed: the consumer is gone; kStalled: the consumer took nothing for
  // `stall`. Either way the item is dropped.
  PushResult Push(T item, size_t bytes, absl::Duration stall = absl::InfiniteDuration()) {
    std::function<void()> ready;
    {
      std::unique_lock lock(mu_);
      auto room = [&] {
        return closed_ || queued_bytes_ == 0 || queued_bytes_ + bytes <= capacity_;
      };
      if (stall == absl::InfiniteDuration()) {
        can_push_.wait(lock, room);
      } else if (!can_push_.wait_for(lock, absl::ToChronoNanoseconds(stall), room)) {
        return PushResult::kStalled;
      }
      if (closed_) return PushResult::kClosed;
      queue_.emplace_back(std::move(item), bytes);
      queued_bytes_ += bytes;
      ready = ready_;
    }
    if (ready) ready();
    return PushResult::kQueued;
  }

  // The consumer's side: the item at the front, if any. With none, `*finished` says whether the
  // producer is done (no item will ever come) or the consumer should wait for OnReady's call.
  std::optional<T> TryPop(bool* finished) {
    std::lock_guard lock(mu_);
    *finished = queue_.empty() && (finished_ || closed_);
    if (queue_.empty()) return std::nullopt;
    auto [item, bytes] = std::move(queue_.front());
    queue_.pop_front();
    queued_bytes_ -= bytes;
    can_push_.notify_one();
    return std::move(item);
  }

  // `ready` runs (on the producer's thread, outside the lock) after every queued item and when
  // the producer finishes. Set it before the producer starts; it must not block.
  void OnReady(std::function<void()> ready) {
    std::lock_guard lock(mu_);
    ready_ = std::move(ready);
  }

  // Producer side: no more items will come.
  void Finish() {
    std::function<void()> ready;
    {
      std::lock_guard lock(mu_);
      finished_ = true;
      ready = ready_;
    }
    if (ready) ready();
  }

  // Producer side, giving up on the consumer: drops what is queued (Finish still follows).
  void Drop() {
    std::lock_guard lock(mu_);
    queue_.clear();
    queued_bytes_ = 0;
  }

  // Consumer side: stop accepting items, drop what is queued and release a waiting producer. No
  // OnReady call starts after Close returns (one already running may finish).
  void Close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    queue_.clear();
    queued_bytes_ = 0;
    ready_ = nullptr;
    can_push_.notify_all();
  }

  size_t queued_bytes() const {
    std::lock_guard lock(mu_);
    return queued_bytes_;
  }

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable can_push_;
  std::deque<std::pair<T, size_t>> queue_;
  size_t queued_bytes_ = 0;
  bool finished_ = false;
  bool closed_ = false;
  std::function<void()> ready_;
};

}  // namespace glassbox
