// A unit of device work as the scheduler sees it: who asked (for fair share), what it costs (for
// fair share and admission), and whether it may share a forward pass with other queued work.
// The scheduler knows nothing of requests, models or streams; the service's jobs implement this.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace glassbox {

struct TaskInfo {
  std::string owner;  // the API key's name ("" on an open server): the fair-share flow
  std::string rpc;    // "Run", "Generate", "PatchingSweep", ...: for the queue listing
  std::string model;
  int64_t tokens = 1;        // the fair-share cost: padded tokens (a task counts at least 1)
  int64_t memory_bytes = 0;  // estimated device memory the task needs while it runs
  // Tasks with one non-empty batch_key may run in one forward pass (dynamic batching); "" runs
  // alone. rows and padded_length bound a batch's size.
  std::string batch_key;
  int64_t rows = 0;
  int64_t padded_length = 0;
  // Background work (a dataset scan's batches) runs only when no other task is queued, in FIFO
  // order: an interactive request waits at most for the one background pass on the device.
  bool background = false;
};

class Task {
 public:
  explicit Task(TaskInfo info) : info_(std::move(info)) {}
  virtual ~Task() = default;
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;

  const TaskInfo& info() const { return info_; }

  // Runs on the device's worker. `batch` holds this task first, then the tasks merged into its
  // pass (all of this task's batch_key); just this task when it runs alone. This task runs and
  // completes them all.
  virtual void Run(std::span<Task* const> batch) = 0;
  // The task will not run (withdrawn while queued: cancelled or past its deadline); it must
  // complete with `why`. Called once, on the thread that withdrew it.
  virtual void Abandon(const absl::Status& why) = 0;

  // Set by the scheduler when the task is queued.
  absl::Time enqueued() const { return enqueued_; }

 private:
  friend class Scheduler;
  const TaskInfo info_;
  absl::Time enqueued_;
};

}  // namespace glassbox
