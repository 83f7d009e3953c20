// The part of a Run that executes on the device's worker: the forward pass, captured tensors cut
// down and chunked into the stream as they are produced, then the outputs.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "glassbox/v1/glassbox.pb.h"
#include "server/engine/transformer.h"
#include "server/service/bounded_channel.h"
#include "server/service/run_plan.h"

namespace glassbox {

class RunJob {
 public:
  RunJob(RunPlan plan, size_t buffer_bytes) : plan_(std::move(plan)), channel_(buffer_bytes) {}

  // Runs on the worker. Always ends by finishing the channel and marking the job done.
  void Execute();

  BoundedChannel<glassbox::v1::RunResponse>& channel() { return channel_; }
  const RunPlan& plan() const { return plan_; }
  // The consumer went away: stop between layers and drop what is queued.
  void Cancel() {
    cancelled_ = true;
    channel_.Close();
  }
  void WaitDone();
  absl::Status status() const { return status_; }
  double forward_seconds() const { return forward_seconds_; }
  double queue_seconds() const { return queue_seconds_; }
  // The values RunRequest.keep asked for, by hook name; complete once the job succeeded.
  std::map<std::string, Tensor> TakeKept() { return std::move(kept_); }

 private:
  absl::Status Stream(int tensor_id, const Tensor& host);
  absl::Status RunForward();
  absl::Status StreamOutputs(const ForwardOutput& out);

  friend class StreamingSink;
  RunPlan plan_;
  BoundedChannel<glassbox::v1::RunResponse> channel_;
  std::atomic<bool> cancelled_{false};
  std::chrono::steady_clock::time_point created_ = std::chrono::steady_clock::now();
  double queue_seconds_ = 0, forward_seconds_ = 0;
  absl::Status status_;
  std::map<std::string, Tensor> kept_;  // written by the worker, read after WaitDone
  std::mutex mu_;
  std::condition_variable done_cv_;
  bool done_ = false;
};

}  // namespace glassbox
