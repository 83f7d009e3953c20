#include "server/service/run_job.h"

#include <algorithm>

#include "base/status_macros.h"
#include "server/engine/capture.h"

namespace glassbox {

RunJob::RunJob(TaskInfo info, RunPlan plan, size_t buffer_bytes, absl::Duration stall)
    : StreamingJob(std::move(info), buffer_bytes, stall), plan_(std::move(plan)) {
  // hook_sae_* captures have ids past the registry's (AddSaeSplices).
  HookId ids = plan_.model->model->hooks().size();
  for (const ResolvedCapture& rc : plan_.captures) ids = std::max(ids, rc.hook + 1);
  by_hook_.resize(ids);
  keep_.resize(ids, 0);
  int next_id = 0;
  for (size_t i = 0; i < plan_.captures.size(); ++i) {
    by_hook_[plan_.captures[i].hook].push_back({i, next_id});
    next_id += static_cast<int>(plan_.captures[i].outputs.size());
  }
  if (plan_.keep) {
    for (HookId id : plan_.keep->hooks) keep_[id] = 1;
  }
}

absl::Status RunJob::Deliver(HookId id, const HookInfo& info, const Tensor& host) {
  if (keep_[id]) {
    // A copy: the host value may alias a buffer the forward pass goes on to reuse.
    Tensor kept = Tensor::EmptyHost(DType::kF32, host.shape());
    std::copy_n(host.data<float>(), host.numel(), kept.data<float>());
    kept_[info.name] = std::move(kept);
  }
  for (const auto& [capture_index, first_tensor_id] : by_hook_[id]) {
    std::vector<Tensor> outputs = ApplyCapture(plan_.captures[capture_index], host, plan_.lengths);
    for (size_t j = 0; j < outputs.size(); ++j) {
      GB_RETURN_IF_ERROR(Stream(first_tensor_id + static_cast<int>(j), outputs[j]));
    }
  }
  return absl::OkStatus();
}

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
    GB_RETURN_IF_ERROR(Emit(std::move(response), static_cast<size_t>(n) + 64));
    offset += n;
  } while (offset < total);
  return absl::OkStatus();
}

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

}  // namespace glassbox
