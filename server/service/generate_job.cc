#include "server/service/generate_job.h"

#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/engine/capture.h"

namespace glassbox {

absl::Status GenerateJob::OnStep(const GeneratedStep& step, bool unsteered) {
  glassbox::v1::GenerateResponse message;
  auto* out = message.mutable_step();
  out->set_step(static_cast<int32_t>(step.step));
  out->set_unsteered(unsteered);
  out->mutable_tokens()->Add(step.tokens.begin(), step.tokens.end());
  out->mutable_logprobs()->Add(step.logprobs.begin(), step.logprobs.end());
  for (size_t r = 0; r < step.tokens.size(); ++r) {
    if (params_.top_logprobs > 0) {
      auto* top = out->add_top();
      for (const auto& [token, logprob] : step.top[r]) {
        top->add_tokens(token);
        top->add_logprobs(logprob);
      }
    }
    if (plan_.model->tokenizer) out->add_texts(step.texts[r]);
  }
  // Each captured hook, cut by every capture that asked for it (request order within a hook).
  for (const StepCapture& captured : step.captures) {
    for (const ResolvedCapture& rc : plan_.captures) {
      if (rc.hook != captured.hook) continue;
      const std::vector<Tensor> outputs = ApplyCapture(rc, captured.value, step.capture_lengths);
      for (size_t j = 0; j < outputs.size(); ++j) {
        auto* tensor = out->add_captures();
        tensor->set_name(rc.outputs[j].name);
        tensor->mutable_shape()->Add(outputs[j].shape().begin(), outputs[j].shape().end());
        for (const std::string& dim : rc.outputs[j].dim_names) tensor->add_dim_names(dim);
        tensor->set_dtype(ToProtoDType(outputs[j].dtype()));
        tensor->set_data(outputs[j].raw_data(), outputs[j].nbytes());
        bytes_sent_ += static_cast<int64_t>(outputs[j].nbytes());
      }
    }
  }
  if (bytes_sent_ > max_response_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the per-step captures reached ", bytes_sent_, " bytes at step ", step.step,
        ", over the server's max_response_bytes (", max_response_bytes_,
        "); capture fewer hooks, select heads, reduce, or generate fewer tokens"));
  }
  const size_t bytes = message.ByteSizeLong();
  if (!channel_.Push(std::move(message), bytes)) {
    return absl::CancelledError("the client went away during generation");
  }
  return absl::OkStatus();
}

absl::StatusOr<GenerateResult> GenerateJob::GenerateOnce(bool unsteered) {
  const Transformer& model = *plan_.model->model;
  HookPlan hook_plan(model.hooks());
  for (const ResolvedCapture& rc : plan_.captures) {
    // hook_sae_* captures (ids past the registry) travel with their splice instead.
    if (rc.hook < model.hooks().size()) hook_plan.CaptureId(rc.hook);
  }
  if (!unsteered) GB_RETURN_IF_ERROR(AddEdits(plan_, hook_plan));
  GenerateParams params = params_;
  if (const Tokenizer* tokenizer = plan_.model->tokenizer.get()) {
    generated_.assign(plan_.rows.size(), {});
    texts_.assign(plan_.rows.size(), "");
    // The text a token adds is the growth of the whole continuation's text: decoding tokens one
    // by one would split multi-byte characters and drop merged spaces.
    params.append_text = [this, tokenizer](int64_t row, int32_t token) -> absl::StatusOr<std::string> {
      generated_[row].push_back(token);
      GB_ASSIGN_OR_RETURN(std::string text, tokenizer->Decode(generated_[row], false));
      std::string piece;
      if (absl::StartsWith(text, texts_[row])) piece = text.substr(texts_[row].size());
      texts_[row] = std::move(text);
      return piece;
    };
  }
  return Generate(model, plan_.rows, hook_plan, params,
                  [this, unsteered](const GeneratedStep& step) { return OnStep(step, unsteered); });
}

absl::Status GenerateJob::Work() {
  const auto start = std::chrono::steady_clock::now();
  GB_ASSIGN_OR_RETURN(steered_, GenerateOnce(false));
  if (include_unsteered_) {
    GB_ASSIGN_OR_RETURN(unsteered_, GenerateOnce(true));
  }
  seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return absl::OkStatus();
}

}  // namespace glassbox
