// The part of a Run that executes on the device's worker: the forward pass, captured tensors cut
// down and chunked into the stream as they are produced, then the outputs.
#pragma once

#include <map>
#include <string>

#include "absl/status/status.h"
#include "glassbox/v1/glassbox.pb.h"
#include "server/engine/transformer.h"
#include "server/service/run_plan.h"
#include "server/service/streaming_job.h"

namespace glassbox {

class RunJob : public StreamingJob<glassbox::v1::RunResponse> {
 public:
  RunJob(RunPlan plan, size_t buffer_bytes) : StreamingJob(buffer_bytes), plan_(std::move(plan)) {}

  const RunPlan& plan() const { return plan_; }
  double forward_seconds() const { return forward_seconds_; }
  // The values RunRequest.keep asked for, by hook name; complete once the job succeeded.
  std::map<std::string, Tensor> TakeKept() { return std::move(kept_); }

 private:
  absl::Status Work() override;
  absl::Status Stream(int tensor_id, const Tensor& host);
  absl::Status StreamOutputs(const ForwardOutput& out);

  friend class StreamingSink;
  RunPlan plan_;
  double forward_seconds_ = 0;
  std::map<std::string, Tensor> kept_;  // written by the worker, read after WaitDone
};

}  // namespace glassbox
