// What every streaming RPC's job shares: work queued on the device's executor that produces
// responses into a bounded channel, which the gRPC thread relays to the client (Relay below).
// A client that goes away or a passed deadline cancels the work between layers.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "server/service/bounded_channel.h"
#include "server/service/status_util.h"

namespace glassbox {

template <typename Response>
class StreamingJob {
 public:
  explicit StreamingJob(size_t buffer_bytes) : channel_(buffer_bytes) {}
  virtual ~StreamingJob() = default;

  // Runs on the worker: Work(), then the channel is finished and the job marked done (always).
  void Execute() {
    queue_seconds_ =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - created_).count();
    const absl::Status status = cancelled_ ? absl::CancelledError("cancelled while queued") : Work();
    channel_.Finish();
    std::lock_guard lock(mu_);
    status_ = status;
    done_ = true;
    done_cv_.notify_all();
  }

  BoundedChannel<Response>& channel() { return channel_; }
  // The consumer went away: stop between layers and drop what is queued.
  void Cancel() {
    cancelled_ = true;
    channel_.Close();
  }
  void WaitDone() {
    std::unique_lock lock(mu_);
    done_cv_.wait(lock, [&] { return done_; });
  }
  // Valid after WaitDone.
  absl::Status status() const { return status_; }
  double queue_seconds() const { return queue_seconds_; }

 protected:
  // The job's work, on the worker; it pushes responses into channel() and checks cancelled_.
  virtual absl::Status Work() = 0;

  std::atomic<bool> cancelled_{false};
  BoundedChannel<Response> channel_;

 private:
  std::chrono::steady_clock::time_point created_ = std::chrono::steady_clock::now();
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
