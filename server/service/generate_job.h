// The part of a Generate call that runs on the device's worker: the engine's Generate, each
// step turned into a GenerateStep message (with the text it adds) and queued for the gRPC thread.
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
  GenerateJob(RunPlan plan, GenerateParams params, size_t buffer_bytes)
      : StreamingJob(buffer_bytes), plan_(std::move(plan)), params_(std::move(params)) {
    params_.cancelled = &cancelled_;
  }

  const RunPlan& plan() const { return plan_; }
  // Valid after WaitDone.
  const GenerateResult& result() const { return result_; }
  const std::vector<std::string>& texts() const { return texts_; }
  double seconds() const { return seconds_; }

 private:
  absl::Status Work() override;
  absl::Status OnStep(const GeneratedStep& step);

  RunPlan plan_;
  GenerateParams params_;
  std::vector<std::vector<int32_t>> generated_;  // so far, per row, for incremental text
  std::vector<std::string> texts_;               // decoded so far, per row
  GenerateResult result_;
  double seconds_ = 0;
};

}  // namespace glassbox
