// One device's scheduler: tasks queue here from the service's threads and a single worker runs
// them, one forward pass at a time, in the order FairQueue chooses (fair share between API keys,
// compatible runs merged into one pass). A task withdrawn while queued (its client cancelled or
// its deadline passed) leaves the queue at once; a running one stops between layers on its own.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/scheduler/fair_queue.h"
#include "server/scheduler/task.h"

namespace glassbox {

class Scheduler {
 public:
  explicit Scheduler(SchedulerOptions options = {});
  ~Scheduler();  // Shutdown()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues `task`. Returns its queue position: the tasks queued ahead of it on arrival (0: it
  // runs next); fair share may serve it sooner. RESOURCE_EXHAUSTED when it could never fit the
  // memory budget, UNAVAILABLE once shutting down; the task is then not queued.
  absl::StatusOr<int64_t> Submit(std::shared_ptr<Task> task);
  // Takes `task` out of the queue and abandons it with `why`; false (and nothing happens) when it
  // is not queued: it is running or done.
  bool Withdraw(const Task* task, const absl::Status& why);
  // Stops accepting tasks, runs the queued ones, joins the worker.
  void Shutdown();

  struct QueuedTask {
    TaskInfo info;
    absl::Duration waited;
  };
  struct Stats {
    std::vector<QueuedTask> queued;  // in the order fair share would consider them
    std::vector<TaskInfo> running;   // the pass now on the device (several when merged)
    int64_t passes = 0;              // forward passes run (a merged pass counts once)
    int64_t tasks_run = 0;           // tasks run, merged or alone
    int64_t largest_batch = 0;       // the most tasks one pass has held
  };
  Stats GetStats() const;
  size_t queued() const;
  const SchedulerOptions& options() const { return options_; }

 private:
  void Work();

  const SchedulerOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  FairQueue queue_;
  std::vector<TaskInfo> running_;
  int64_t passes_ = 0;
  int64_t tasks_run_ = 0;
  int64_t largest_batch_ = 0;
  bool stopping_ = false;
  std::thread worker_;  // last: starts once the members above exist
};

// A task that runs `run` alone and calls `abandon` if withdrawn: the service's non-streaming
// device work (analyses, SAE encodes) and anything else that never merges.
class FunctionTask : public Task {
 public:
  FunctionTask(TaskInfo info, std::function<void()> run,
               std::function<void(const absl::Status&)> abandon)
      : Task(std::move(info)), run_(std::move(run)), abandon_(std::move(abandon)) {}
  void Run(std::span<Task* const>) override { run_(); }
  void Abandon(const absl::Status& why) override { abandon_(why); }

 private:
  std::function<void()> run_;
  std::function<void(const absl::Status&)> abandon_;
};

// Runs `work` alone on the scheduler's worker (a FunctionTask) and waits for it: returns its
// status, why it was abandoned, or why it could not be queued. `work` may read and write the
// caller's locals: the caller blocks until it has run or never will.
absl::Status RunOnWorker(Scheduler& scheduler, TaskInfo info,
                         const std::function<absl::Status()>& work);

}  // namespace glassbox
