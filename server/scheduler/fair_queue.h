// The scheduler's queue, without threads: deficit round robin between owners, weighted by token
// cost, and the choice of the next forward pass. Each owner (API key) is a flow with its own FIFO.
// Flows take turns; a flow's turn adds `quantum_tokens` to its deficit and serves its head tasks
// while their cost fits the deficit. An owner with many heavy tasks queued therefore gets the
// same token share as one with a few small ones, and a small task waits at most about one
// quantum of every other flow's work.
//
// Dynamic batching: when the task chosen has a batch_key, queued tasks of the same key are merged
// into its pass, flow by flow in turn order, while the batch stays within max_batch_tokens (rows
// x longest padded length), max_batch_rows, max_batch_tasks and the memory budget. Each merged
// task is charged to its own flow's deficit, which may go below zero: that flow then waits its
// turns out, so batching does not buy anyone a larger share.
//
// Background tasks (TaskInfo::background) wait in a FIFO of their own, served only when no flow
// has a task queued, and never merged.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "server/scheduler/task.h"

namespace glassbox {

struct SchedulerOptions {
  int64_t quantum_tokens = 2048;
  int64_t max_batch_tokens = 16384;  // rows x padded length of one merged pass; <= 0: no merging
  int64_t max_batch_rows = 256;
  int64_t max_batch_tasks = 64;
  // Estimated device memory one pass may use; 0: unlimited. A task estimated above it is refused
  // when queued (it could never run); merging stops where the next task would pass it.
  int64_t memory_budget_bytes = 0;
  // Runs first on the worker thread (e.g. to size its thread pool: the device's work runs there).
  std::function<void()> worker_init;
};

class FairQueue {
 public:
  explicit FairQueue(SchedulerOptions options) : options_(options) {}

  // RESOURCE_EXHAUSTED when the task's memory estimate exceeds the budget.
  absl::Status Push(std::shared_ptr<Task> task);
  // Removes a queued task; false when it is not queued (running, finished, or never queued).
  bool Remove(const Task* task);
  // The next pass: the task deficit round robin serves next, then any tasks merged into it.
  // Empty when nothing is queued.
  std::vector<std::shared_ptr<Task>> PopBatch();

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Every queued task, flow by flow in turn order, each flow's in FIFO order, then the
  // background tasks.
  std::vector<const Task*> Queued() const;
  const SchedulerOptions& options() const { return options_; }

 private:
  struct Flow {
    std::deque<std::shared_ptr<Task>> tasks;
    int64_t deficit = 0;
  };
  static int64_t CostOf(const Task& task) { return std::max<int64_t>(1, task.info().tokens); }
  std::shared_ptr<Task> PopNext();
  void MergeInto(std::vector<std::shared_ptr<Task>>& batch);
  // Drops flow `ring_[index]` from the ring once it has no tasks.
  void RetireFlow(size_t index);

  SchedulerOptions options_;
  std::map<std::string, Flow> flows_;
  std::vector<std::string> ring_;  // owners with queued tasks, in turn order
  std::deque<std::shared_ptr<Task>> background_;
  size_t cursor_ = 0;              // the flow whose turn it is
  bool in_turn_ = false;           // whether ring_[cursor_] has had this turn's quantum
  size_t size_ = 0;
};

}  // namespace glassbox
