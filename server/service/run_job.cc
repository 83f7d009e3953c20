#include "server/service/run_job.h"

#include <algorithm>

#include "base/status_macros.h"
#include "server/engine/capture.h"
#include "server/engine/host_math.h"
#include "server/engine/transformer.h"

namespace glassbox {

// Receives hook values from the forward pass, cuts each down to what was asked and streams it.
class StreamingSink : public CaptureSink {
 public:
  explicit StreamingSink(RunJob& job) : job_(job) {
    const RunPlan& plan = job.plan_;
    // hook_sae_* captures have ids past the registry's (AddSaeSplices).
    HookId ids = plan.model->model->hooks().size();
    for (const ResolvedCapture& rc : plan.captures) ids = std::max(ids, rc.hook + 1);
    by_hook_.resize(ids);
    int next_id = 0;
    for (size_t i = 0; i < plan.captures.size(); ++i) {
      by_hook_[plan.captures[i].hook].push_back({i, next_id});
      next_id += static_cast<int>(plan.captures[i].outputs.size());
    }
    keep_.resize(ids, 0);
    if (plan.keep) {
      for (HookId id : plan.keep->hooks) keep_[id] = 1;
    }
  }

  absl::Status OnCapture(HookId id, const HookInfo& info, const Tensor& value) override {
    GB_ASSIGN_OR_RETURN(Tensor host, CopyToHostF32(job_.plan_.model->model->backend(), value));
    const RunPlan& plan = job_.plan_;
    if (keep_[id]) {
      // A copy: the host value may alias a buffer the forward pass goes on to reuse.
      Tensor kept = Tensor::EmptyHost(DType::kF32, host.shape());
      std::copy_n(host.data<float>(), host.numel(), kept.data<float>());
      job_.kept_[info.name] = std::move(kept);
    }
    for (const auto& [capture_index, first_tensor_id] : by_hook_[id]) {
      std::vector<Tensor> outputs = ApplyCapture(plan.captures[capture_index], host, plan.lengths);
      for (size_t j = 0; j < outputs.size(); ++j) {
        GB_RETURN_IF_ERROR(job_.Stream(first_tensor_id + static_cast<int>(j), outputs[j]));
      }
    }
    return absl::OkStatus();
  }

 private:
  RunJob& job_;
  std::vector<std::vector<std::pair<size_t, int>>> by_hook_;  // hook -> (capture, first tensor id)
  std::vector<uint8_t> keep_;                                 // hook -> kept for RunRequest.keep
};

absl::Status RunJob::Stream(int tensor_id, const Tensor& host) {
  const auto* bytes = static_cast<const char*>(host.raw_data());
  const int64_t total = static_cast<int64_t>(host.nbytes());
  int64_t offset = 0;
  do {
    const int64_t n = std::min<int64_t>(plan_.chunk_bytes, total - offset);
    glassbox::v1::RunResponse response;
    auto* chunk = response.mutable_chunk();
    chunk->set_capture_id(tensor_id);
    chunk->set_offset(offset);
    chunk->set_data(bytes + offset, n);
    chunk->set_last(offset + n == total);
    if (!channel_.Push(std::move(response), static_cast<size_t>(n) + 64)) {
      return absl::CancelledError("the client stopped reading the stream");
    }
    offset += n;
  } while (offset < total);
  return absl::OkStatus();
}

namespace {

// The request's outputs as the engine's: it computes them on the device and returns exactly the
// tensors the stream carries.
ForwardOptions OutputOptions(const RunPlan& plan, const std::atomic<bool>* cancelled) {
  ForwardOptions options{.logits = LogitsMode::kNone,
                         .target_tokens = plan.target_tokens,
                         .loss_per_token = plan.loss_per_token,
                         .stop_at_layer = plan.stop_at_layer,
                         .cancelled = cancelled};
  switch (plan.logits_mode) {
    case glassbox::v1::LOGITS_LAST: options.logits = LogitsMode::kLast; break;
    case glassbox::v1::LOGITS_ALL: options.logits = LogitsMode::kAll; break;
    case glassbox::v1::LOGITS_TOP_K: options.top_k = plan.logits_k; break;
    default: break;
  }
  return options;
}

}  // namespace

// In plan.tensors' order after the captures: logits (or top-k values and indices), loss, target
// log-probs.
absl::Status RunJob::StreamOutputs(const ForwardOutput& out) {
  int id = 0;
  for (const ResolvedCapture& rc : plan_.captures) id += static_cast<int>(rc.outputs.size());
  switch (plan_.logits_mode) {
    case glassbox::v1::LOGITS_ALL:
    case glassbox::v1::LOGITS_LAST:
      GB_RETURN_IF_ERROR(Stream(id++, out.logits));
      break;
    case glassbox::v1::LOGITS_TOP_K:
      GB_RETURN_IF_ERROR(Stream(id++, out.top_k_values));
      GB_RETURN_IF_ERROR(Stream(id++, out.top_k_indices));
      break;
    default:
      break;
  }
  if (plan_.loss_per_token) GB_RETURN_IF_ERROR(Stream(id++, out.loss_per_token));
  if (!plan_.target_tokens.empty()) GB_RETURN_IF_ERROR(Stream(id++, out.target_log_probs));
  return absl::OkStatus();
}

absl::Status RunJob::Work() {
  const Transformer& model = *plan_.model->model;
  HookPlan hook_plan(model.hooks());
  for (const ResolvedCapture& rc : plan_.captures) {
    // hook_sae_* captures (ids past the registry) travel with their splice instead.
    if (rc.hook < model.hooks().size()) hook_plan.CaptureId(rc.hook);
  }
  if (plan_.keep) {
    for (HookId id : plan_.keep->hooks) hook_plan.CaptureId(id);
  }
  GB_RETURN_IF_ERROR(AddEdits(plan_, hook_plan));
  const ForwardOptions options = OutputOptions(plan_, &cancelled_);
  StreamingSink sink(*this);
  const auto start = std::chrono::steady_clock::now();
  auto out = model.Forward({.tokens = plan_.tokens, .attention_mask = plan_.attention_mask},
                           hook_plan, &sink, options);
  forward_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!out.ok()) return out.status();
  return StreamOutputs(*out);
}

}  // namespace glassbox
