// The part of a Run that executes on the device's worker: the forward pass, captured tensors cut
// down and chunked into the stream as they are produced, then the outputs. Compatible runs of
// different callers share one forward pass (run_batch.cc): each job then sees only its own rows.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "glassbox/v1/glassbox.pb.h"
#include "server/engine/transformer.h"
#include "server/service/run_plan.h"
#include "server/service/streaming_job.h"

namespace glassbox {

struct MergedCancel;

class RunJob : public StreamingJob<glassbox::v1::RunResponse> {
 public:
  RunJob(TaskInfo info, RunPlan plan, size_t buffer_bytes, absl::Duration stall);

  const RunPlan& plan() const { return plan_; }
  double forward_seconds() const { return forward_seconds_; }
  // How many requests shared this run's forward pass (1: it ran alone). Valid after WaitDone.
  int batch_requests() const { return batch_requests_; }
  // The values RunRequest.keep asked for, by hook name; complete once the job succeeded.
  std::map<std::string, Tensor> TakeKept() { return std::move(kept_); }

  // Alone, or (batch.size() > 1, all RunJobs of one batch key) one pass for them all.
  void Run(std::span<Task* const> batch) override;

 private:
  friend class MergedRun;
  absl::Status Work() override;
  void OnCancel() override;

  // Whether the pass must deliver hook `id`'s value to this job (captured or kept).
  bool Wants(HookId id) const {
    return id < static_cast<HookId>(keep_.size()) && (keep_[id] || !by_hook_[id].empty());
  }
  // Hook `id`'s value over this job's rows and padded length (host f32): kept, cut down to the
  // captures and streamed.
  absl::Status Deliver(HookId id, const HookInfo& info, const Tensor& host);
  absl::Status Stream(int tensor_id, const Tensor& host);
  // The outputs over this job's rows and padded length.
  absl::Status StreamOutputs(const ForwardOutput& out);
  // Joins a merged pass, which this job's Cancel then tells; false when already cancelled.
  bool JoinMerged(std::shared_ptr<MergedCancel> merged);
  void LeaveMerged();

  RunPlan plan_;
  std::vector<std::vector<std::pair<size_t, int>>> by_hook_;  // hook -> (capture, first tensor id)
  std::vector<uint8_t> keep_;                                 // hook -> kept for RunRequest.keep
  double forward_seconds_ = 0;
  int batch_requests_ = 1;
  std::map<std::string, Tensor> kept_;  // written by the worker, read after WaitDone
  std::mutex merged_mu_;
  std::shared_ptr<MergedCancel> merged_;  // the pass this job is in, while it runs merged
};

// The key under which a run may share a forward pass with others (TaskInfo::batch_key), or ""
// when it must run alone: SAE splices, batch-mean ablations (they couple rows) and values shaped
// by the request's own batch. Runs share a key when they have the same model, outputs and
// stop_at_layer; runs whose edits index padded positions (one-row values, attention edits with
// values, patches from kept runs) also need the same padded length.
std::string RunBatchKey(const RunPlan& plan);

// The estimated device memory of the run's forward pass: activations of one block, attention
// scores, the logits when any output needs them, and what is captured or kept. For admission.
int64_t EstimateRunBytes(const RunPlan& plan);

}  // namespace glassbox
