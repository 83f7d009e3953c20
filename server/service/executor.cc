#include "server/service/executor.h"

namespace glassbox {

Executor::Executor() : worker_([this] { Work(); }) {}

Executor::~Executor() { Shutdown(); }

bool Executor::Submit(std::function<void()> job) {
  std::lock_guard lock(mu_);
  if (stopping_) return false;
  jobs_.push_back(std::move(job));
  cv_.notify_one();
  return true;
}

void Executor::Shutdown() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (worker_.joinable()) worker_.join();
}

size_t Executor::queued() const {
  std::lock_guard lock(mu_);
  return jobs_.size();
}

void Executor::Work() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping and drained
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

}  // namespace glassbox
