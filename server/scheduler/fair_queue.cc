#include "server/scheduler/fair_queue.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace glassbox {

absl::Status FairQueue::Push(std::shared_ptr<Task> task) {
  const TaskInfo& info = task->info();
  if (options_.memory_budget_bytes > 0 && info.memory_bytes > options_.memory_budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "this ", info.rpc, " needs an estimated ", info.memory_bytes,
        " bytes of device memory and the server's budget for one pass is ",
        options_.memory_budget_bytes,
        " (--memory_budget_bytes); it can never run here: send fewer rows or tokens, or "
        "capture less"));
  }
  if (info.background) {
    background_.push_back(std::move(task));
    ++size_;
    return absl::OkStatus();
  }
  Flow& flow = flows_[info.owner];
  // A flow that left the ring kept only its debt (RetireFlow); it rejoins at the end.
  if (flow.tasks.empty()) ring_.push_back(info.owner);
  flow.tasks.push_back(std::move(task));
  ++size_;
  return absl::OkStatus();
}

bool FairQueue::Remove(const Task* task) {
  if (task->info().background) {
    auto it = std::find_if(background_.begin(), background_.end(),
                           [&](const auto& t) { return t.get() == task; });
    if (it == background_.end()) return false;
    background_.erase(it);
    --size_;
    return true;
  }
  auto flow = flows_.find(task->info().owner);
  if (flow == flows_.end()) return false;
  auto& tasks = flow->second.tasks;
  auto it =
      std::find_if(tasks.begin(), tasks.end(), [&](const auto& t) { return t.get() == task; });
  if (it == tasks.end()) return false;
  tasks.erase(it);
  --size_;
  if (tasks.empty()) {
    RetireFlow(std::find(ring_.begin(), ring_.end(), flow->first) - ring_.begin());
  }
  return true;
}

void FairQueue::RetireFlow(size_t index) {
  if (index < cursor_) {
    --cursor_;
  } else if (index == cursor_) {
    in_turn_ = false;  // the next flow's turn starts fresh
  }
  Flow& flow = flows_[ring_[index]];
  // A flow that leaves forgets its credit (DRR's rule) but not what it overdrew by batching.
  flow.deficit = std::min<int64_t>(flow.deficit, 0);
  ring_.erase(ring_.begin() + static_cast<std::ptrdiff_t>(index));
  if (cursor_ >= ring_.size()) cursor_ = 0;
}

std::shared_ptr<Task> FairQueue::PopNext() {
  if (ring_.empty()) return nullptr;
  for (;;) {
    Flow& flow = flows_[ring_[cursor_]];
    if (!in_turn_) {
      flow.deficit += options_.quantum_tokens;
      in_turn_ = true;
    }
    const int64_t cost = CostOf(*flow.tasks.front());
    if (cost <= flow.deficit) {
      flow.deficit -= cost;
      std::shared_ptr<Task> task = std::move(flow.tasks.front());
      flow.tasks.pop_front();
      --size_;
      if (flow.tasks.empty()) RetireFlow(cursor_);
      return task;
    }
    in_turn_ = false;
    cursor_ = (cursor_ + 1) % ring_.size();
  }
}

void FairQueue::MergeInto(std::vector<std::shared_ptr<Task>>& batch) {
  const TaskInfo& lead = batch.front()->info();
  int64_t rows = lead.rows;
  int64_t longest = lead.padded_length;
  int64_t memory = lead.memory_bytes;
  auto fits = [&](const TaskInfo& info) {
    const int64_t new_rows = rows + info.rows;
    const int64_t new_longest = std::max(longest, info.padded_length);
    return static_cast<int64_t>(batch.size()) < options_.max_batch_tasks &&
           new_rows <= options_.max_batch_rows &&
           new_rows * new_longest <= options_.max_batch_tokens &&
           (options_.memory_budget_bytes <= 0 ||
            memory + info.memory_bytes <= options_.memory_budget_bytes);
  };
  // Flows in turn order from the current one; within each, FIFO.
  std::vector<std::string> order;
  for (size_t step = 0; step < ring_.size(); ++step)
    order.push_back(ring_[(cursor_ + step) % ring_.size()]);
  for (const std::string& owner : order) {
    Flow& flow = flows_[owner];
    for (auto it = flow.tasks.begin(); it != flow.tasks.end();) {
      const TaskInfo& info = (*it)->info();
      if (info.batch_key != lead.batch_key || !fits(info)) {
        ++it;
        continue;
      }
      rows += info.rows;
      longest = std::max(longest, info.padded_length);
      memory += info.memory_bytes;
      flow.deficit -= CostOf(**it);
      batch.push_back(std::move(*it));
      it = flow.tasks.erase(it);
      --size_;
    }
  }
  for (const std::string& owner : order) {
    if (flows_[owner].tasks.empty()) {
      RetireFlow(std::find(ring_.begin(), ring_.end(), owner) - ring_.begin());
    }
  }
}

std::vector<std::shared_ptr<Task>> FairQueue::PopBatch() {
  std::vector<std::shared_ptr<Task>> batch;
  std::shared_ptr<Task> first = PopNext();
  if (!first && !background_.empty()) {
    first = std::move(background_.front());
    background_.pop_front();
    --size_;
    batch.push_back(std::move(first));
    return batch;
  }
  if (!first) return batch;
  batch.push_back(std::move(first));
  if (!batch.front()->info().batch_key.empty() && options_.max_batch_tokens > 0) MergeInto(batch);
  return batch;
}

std::vector<const Task*> FairQueue::Queued() const {
  std::vector<const Task*> queued;
  for (size_t step = 0; step < ring_.size(); ++step) {
    const Flow& flow = flows_.at(ring_[(cursor_ + step) % ring_.size()]);
    for (const auto& task : flow.tasks) queued.push_back(task.get());
  }
  for (const auto& task : background_) queued.push_back(task.get());
  return queued;
}

}  // namespace glassbox
