// A byte-bounded queue between the worker that runs a forward pass and the gRPC thread that
// writes its stream. When the client reads slowly the queue fills and Push blocks, so the slow
// reader holds back its own request and server memory stays bounded.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>

namespace glassbox {

template <typename T>
class BoundedChannel {
 public:
  explicit BoundedChannel(size_t capacity_bytes) : capacity_(capacity_bytes) {}

  // Blocks while the queue holds `capacity` bytes or more (one item always fits, however
  // large). False when the channel was closed: the consumer is gone and the item is dropped.
  bool Push(T item, size_t bytes) {
    std::unique_lock lock(mu_);
    can_push_.wait(lock, [&] { return closed_ || queued_bytes_ == 0 || queued_bytes_ + bytes <= capacity_; });
    if (closed_) return false;
    queue_.emplace_back(std::move(item), bytes);
    queued_bytes_ += bytes;
    can_pop_.notify_one();
    return true;
  }

  // The next item; nullopt once the producer has finished (or the channel closed) and the queue
  // is empty. Waits at most `timeout` so the caller can poll for cancellation.
  template <typename Duration>
  std::optional<T> Pop(Duration timeout, bool* timed_out) {
    std::unique_lock lock(mu_);
    *timed_out = !can_pop_.wait_for(lock, timeout, [&] { return !queue_.empty() || finished_ || closed_; });
    if (*timed_out || queue_.empty()) return std::nullopt;
    auto [item, bytes] = std::move(queue_.front());
    queue_.pop_front();
    queued_bytes_ -= bytes;
    can_push_.notify_one();
    return std::move(item);
  }

  // Producer side: no more items will come.
  void Finish() {
    std::lock_guard lock(mu_);
    finished_ = true;
    can_pop_.notify_all();
  }

  // Consumer side: stop accepting items and release a blocked producer.
  void Close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    queue_.clear();
    queued_bytes_ = 0;
    can_push_.notify_all();
    can_pop_.notify_all();
  }

  size_t queued_bytes() const {
    std::lock_guard lock(mu_);
    return queued_bytes_;
  }

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable can_push_, can_pop_;
  std::deque<std::pair<T, size_t>> queue_;
  size_t queued_bytes_ = 0;
  bool finished_ = false;
  bool closed_ = false;
};

}  // namespace glassbox
