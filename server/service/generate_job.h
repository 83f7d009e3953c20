// The part of a Generate call that runs on the device's worker: the engine's Generate (twice
// with include_unsteered), each step turned into a GenerateStep message (the text it adds, its
// captures cut as the request asked) and queued for the gRPC thread.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "glassbox/v1/glassbox.pb.h"
#include "server/engine/generate.h"
#include "server/service/run_plan.h"
#include "server/service/streaming_job.h"

namespace glassbox {

class GenerateJob : public StreamingJob<glassbox::v1::GenerateResponse> {
 public:
  // With capture_at_end, the plan's captures are reported once, over the finished sequences,
  // instead of with every step.
  GenerateJob(TaskInfo info, RunPlan plan, GenerateParams params, bool include_unsteered,
              bool capture_at_end, const ServiceLimits& limits)
      : StreamingJob(std::move(info), limits.stream_buffer_bytes, limits.stream_stall),
        plan_(std::move(plan)),
        params_(std::move(params)),
        include_unsteered_(include_unsteered),
        capture_at_end_(capture_at_end),
        max_response_bytes_(limits.max_response_bytes),
        max_response_bytes_source_(limits.max_response_bytes_source) {
    params_.cancelled = &cancelled_;
  }

  const RunPlan& plan() const { return plan_; }
  // Valid after WaitDone; unsteered() only with include_unsteered.
  const GenerateResult& steered() const { return steered_; }
  const GenerateResult& unsteered() const { return unsteered_; }
  double seconds() const { return seconds_; }
  int64_t bytes_sent() const { return bytes_sent_; }

 private:
  absl::Status Work() override;
  // One generation: the steered one with the request's edits, or the unsteered one without.
  absl::StatusOr<GenerateResult> GenerateOnce(bool unsteered);
  absl::Status OnStep(const GeneratedStep& step, bool unsteered);
  // capture_at_end: one forward pass over each row's prompt and continuation, its captures cut
  // as the request asked and pushed as one GenerateCaptures message.
  absl::Status CaptureAtEnd(const HookPlan& hook_plan, const GenerateResult& result,
                            bool unsteered);
  // Adds the outputs of every capture of `hook` that the request asked for; counts the bytes.
  absl::Status AddCaptures(HookId hook, const Tensor& value, const std::vector<int32_t>& lengths,
                           google::protobuf::RepeatedPtrField<glassbox::v1::StepTensor>* out);

  RunPlan plan_;
  GenerateParams params_;
  bool include_unsteered_;
  bool capture_at_end_;
  int64_t max_response_bytes_;
  std::string max_response_bytes_source_;
  std::vector<std::vector<int32_t>> generated_;  // so far, per row, for incremental text
  std::vector<std::string> texts_;               // decoded so far, per row
  GenerateResult steered_, unsteered_;
  double seconds_ = 0;
  int64_t bytes_sent_ = 0;
};

}  // namespace glassbox
