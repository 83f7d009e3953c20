// What every streaming RPC's job shares: a task queued on the device's scheduler that produces
// responses into a bounded channel, which a gRPC reactor writes to the client (job_stream.h).
// A client that goes away or a passed deadline cancels the work between layers.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <span>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/scheduler/scheduler.h"
#include "server/service/bounded_channel.h"

namespace glassbox {

template <typename Response>
class StreamingJob : public Task {
 public:
  // `buffer_bytes` are buffered for the client before the worker waits, at most `stall` (see
  // Emit).
  StreamingJob(TaskInfo info, size_t buffer_bytes, absl::Duration stall)
      : Task(std::move(info)), channel_(buffer_bytes), buffer_bytes_(buffer_bytes), stall_(stall) {}

  // Queues the job on `scheduler` (which must outlive it); Cancel then also withdraws it from
  // the queue. Returns the queue position, or why it was not queued.
  static absl::StatusOr<int64_t> Submit(Scheduler& scheduler,
                                        const std::shared_ptr<StreamingJob>& job) {
    job->scheduler_ = &scheduler;
    return scheduler.Submit(job);
  }

  // The scheduler runs a streaming job alone unless it overrides this (RunJob merges).
  void Run(std::span<Task* const>) override { Execute(); }
  void Abandon(const absl::Status& why) override { Complete(why); }

  BoundedChannel<Response>& channel() { return channel_; }
  // The consumer went away: drop the job from the queue, or stop it between layers, and drop
  // what is buffered.
  void Cancel() {
    if (cancelled_.exchange(true)) return;
    channel_.Close();
    OnCancel();
    if (scheduler_ != nullptr) scheduler_->Withdraw(this, absl::CancelledError("cancelled while queued"));
  }
  void WaitDone() {
    std::unique_lock lock(mu_);
    done_cv_.wait(lock, [&] { return done_; });
  }
  // Valid after WaitDone.
  absl::Status status() const { return status_; }
  double queue_seconds() const { return queue_seconds_; }
  bool cancelled() const { return cancelled_; }

 protected:
  // The job's work, on the worker; it pushes responses into channel() and checks cancelled_.
  virtual absl::Status Work() = 0;
  // Called once, on the cancelling thread, when the job is cancelled.
  virtual void OnCancel() {}

  // On the worker: Work(), then Complete.
  void Execute() {
    Started();
    Complete(cancelled_ ? absl::CancelledError("cancelled while queued") : Work());
  }
  // The job leaves the queue for the device: its queue time ends.
  void Started() {
    queue_seconds_ = absl::ToDoubleSeconds(absl::Now() - enqueued());
  }
  // The job is marked done with `status`, then the channel finished (exactly once): a consumer
  // that sees the channel finished can read status() at once.
  void Complete(const absl::Status& status) {
    {
      std::lock_guard lock(mu_);
      status_ = status;
      done_ = true;
      done_cv_.notify_all();
    }
    channel_.Finish();
  }

  // Queues `item` (`bytes` of it) for the client. The worker serves every caller of the device,
  // so it waits for a slow reader only `stall`: past that the reader's stream is given up
  // (RESOURCE_EXHAUSTED, what it had buffered dropped) and the pass goes on for the others.
  absl::Status Emit(Response item, size_t bytes) {
    switch (channel_.Push(std::move(item), bytes, stall_)) {
      case BoundedChannel<Response>::PushResult::kQueued:
        return absl::OkStatus();
      case BoundedChannel<Response>::PushResult::kClosed:
        return absl::CancelledError("the client went away");
      case BoundedChannel<Response>::PushResult::kStalled:
        channel_.Drop();
        return absl::ResourceExhaustedError(absl::StrCat(
            "the client read nothing for ", absl::FormatDuration(stall_), " while its stream's ",
            buffer_bytes_ >> 20, " MiB buffer was full; the device serves other callers and "
            "does not wait longer for one reader (--stream_stall_seconds, --stream_buffer_bytes)"));
    }
    return absl::InternalError("unknown push result");
  }

  std::atomic<bool> cancelled_{false};
  BoundedChannel<Response> channel_;

 private:
  const size_t buffer_bytes_;
  const absl::Duration stall_;
  Scheduler* scheduler_ = nullptr;
  double queue_seconds_ = 0;
  absl::Status status_;
  std::mutex mu_;
  std::condition_variable done_cv_;
  bool done_ = false;
};

}  // namespace glassbox
