#include "server/scheduler/scheduler.h"

#include <algorithm>
#include <future>

namespace glassbox {

Scheduler::Scheduler(SchedulerOptions options)
    : options_(options), queue_(options), worker_([this] { Work(); }) {}

Scheduler::~Scheduler() { Shutdown(); }

absl::StatusOr<int64_t> Scheduler::Submit(std::shared_ptr<Task> task) {
  std::lock_guard lock(mu_);
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  const auto position = static_cast<int64_t>(queue_.size());
  task->enqueued_ = absl::Now();
  if (absl::Status pushed = queue_.Push(std::move(task)); !pushed.ok()) return pushed;
  cv_.notify_one();
  return position;
}

bool Scheduler::Withdraw(const Task* task, const absl::Status& why) {
  {
    std::lock_guard lock(mu_);
    if (!queue_.Remove(task)) return false;
  }
  // Outside the lock: abandoning completes the task, which may wake the thread waiting on it.
  // The caller holds a reference, so the task outlives this call.
  const_cast<Task*>(task)->Abandon(why);
  return true;
}

void Scheduler::Shutdown() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (worker_.joinable()) worker_.join();
}

Scheduler::Stats Scheduler::GetStats() const {
  std::lock_guard lock(mu_);
  Stats stats{.running = running_,
              .passes = passes_,
              .tasks_run = tasks_run_,
              .largest_batch = largest_batch_};
  const absl::Time now = absl::Now();
  for (const Task* task : queue_.Queued()) {
    stats.queued.push_back({.info = task->info(), .waited = now - task->enqueued()});
  }
  return stats;
}

size_t Scheduler::queued() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

void Scheduler::Work() {
  if (options_.worker_init) options_.worker_init();
  for (;;) {
    std::vector<std::shared_ptr<Task>> batch;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      batch = queue_.PopBatch();
      running_.clear();
      for (const auto& task : batch) running_.push_back(task->info());
      ++passes_;
      tasks_run_ += static_cast<int64_t>(batch.size());
      largest_batch_ = std::max(largest_batch_, static_cast<int64_t>(batch.size()));
    }
    std::vector<Task*> members(batch.size());
    std::transform(batch.begin(), batch.end(), members.begin(),
                   [](const auto& t) { return t.get(); });
    members.front()->Run(members);
    std::lock_guard lock(mu_);
    running_.clear();
  }
}

absl::Status RunOnWorker(Scheduler& scheduler, TaskInfo info,
                         const std::function<absl::Status()>& work) {
  auto done = std::make_shared<std::promise<absl::Status>>();
  std::future<absl::Status> result = done->get_future();
  auto task = std::make_shared<FunctionTask>(
      std::move(info), [&work, done] { done->set_value(work()); },
      [done](const absl::Status& why) { done->set_value(why); });
  if (absl::StatusOr<int64_t> queued = scheduler.Submit(std::move(task)); !queued.ok()) {
    return queued.status();
  }
  return result.get();
}

}  // namespace glassbox
