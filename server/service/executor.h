// One worker thread per device: requests queue here rather than running on gRPC threads, so a
// scheduler can later add fair share and batching in one place, and the device runs one forward
// pass at a time.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace glassbox {

class Executor {
 public:
  Executor();
  ~Executor();  // runs what is queued, then joins
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // False when the executor is shutting down and will not run `job`.
  bool Submit(std::function<void()> job);
  // Stops accepting jobs, runs the queued ones, joins the worker.
  void Shutdown();
  size_t queued() const;

 private:
  void Work();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace glassbox
