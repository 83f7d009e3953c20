// What every streaming RPC's job shares: a task queued on the device's scheduler that produces
// responses into a bounded channel, which the gRPC thread relays to the client (Relay below).
// A client that goes away or a passed deadline cancels the work between layers.
#pragma once

#include <grpcpp/grpcpp.h>

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
#include "absl/time/time.h"
#include "server/scheduler/scheduler.h"
#include "server/service/bounded_channel.h"
#include "server/service/status_util.h"

namespace glassbox {

template <typename Response>
class StreamingJob : public Task {
 public:
  StreamingJob(TaskInfo info, size_t buffer_bytes) : Task(std::move(info)), channel_(buffer_bytes) {}

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
  // The channel is finished and the job marked done with `status` (exactly once).
  void Complete(const absl::Status& status) {
    channel_.Finish();
    std::lock_guard lock(mu_);
    status_ = status;
    done_ = true;
    done_cv_.notify_all();
  }

  std::atomic<bool> cancelled_{false};
  BoundedChannel<Response> channel_;

 private:
  Scheduler* scheduler_ = nullptr;
  double queue_seconds_ = 0;
  absl::Status status_;
  std::mutex mu_;
  std::condition_variable done_cv_;
  bool done_ = false;
};

// Relays `job`'s responses to `writer` until the job has finished (`on_item` sees each one
// first). Polling lets a cancelled or expired call stop the worker even while nothing flows.
// Returns CANCELLED or DEADLINE_EXCEEDED (naming `what`, e.g. "the run") when the client went
// away, the job's own error, or OK.
template <typename Response>
grpc::Status Relay(grpc::ServerContext* context, grpc::ServerWriter<Response>* writer,
                   StreamingJob<Response>& job, const std::string& what,
                   const std::function<void(const Response&)>& on_item = nullptr) {
  using namespace std::chrono_literals;
  bool client_gone = false;
  for (;;) {
    bool timed_out = false;
    auto item = job.channel().Pop(50ms, &timed_out);
    if (context->IsCancelled()) {
      client_gone = true;
      break;
    }
    if (timed_out) continue;
    if (!item) break;
    if (on_item) on_item(*item);
    if (!writer->Write(*item)) {
      client_gone = true;
      break;
    }
  }
  if (client_gone) job.Cancel();
  job.WaitDone();
  if (client_gone) {
    const bool expired = context->deadline() <= std::chrono::system_clock::now();
    return expired ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                  "the deadline passed during " + what)
                   : grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled " + what);
  }
  return ToGrpcStatus(job.status());
}

}  // namespace glassbox
