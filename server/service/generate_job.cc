#include "server/service/generate_job.h"

#include "absl/strings/match.h"
#include "base/status_macros.h"

namespace glassbox {

absl::Status GenerateJob::OnStep(const GeneratedStep& step) {
  glassbox::v1::GenerateResponse message;
  auto* out = message.mutable_step();
  out->set_step(static_cast<int32_t>(step.step));
  out->mutable_tokens()->Add(step.tokens.begin(), step.tokens.end());
  out->mutable_logprobs()->Add(step.logprobs.begin(), step.logprobs.end());
  const Tokenizer* tokenizer = plan_.model->tokenizer.get();
  for (size_t r = 0; r < step.tokens.size(); ++r) {
    if (params_.top_logprobs > 0) {
      auto* top = out->add_top();
      for (const auto& [token, logprob] : step.top[r]) {
        top->add_tokens(token);
        top->add_logprobs(logprob);
      }
    }
    if (tokenizer == nullptr) continue;
    // The text a token adds is the growth of the whole continuation's text: decoding tokens one
    // by one would split multi-byte characters and drop merged spaces.
    std::string piece;
    if (step.tokens[r] >= 0) {
      generated_[r].push_back(step.tokens[r]);
      GB_ASSIGN_OR_RETURN(std::string text, tokenizer->Decode(generated_[r], false));
      if (absl::StartsWith(text, texts_[r])) piece = text.substr(texts_[r].size());
      texts_[r] = std::move(text);
    }
    out->add_texts(std::move(piece));
  }
  const size_t bytes = message.ByteSizeLong();
  if (!channel_.Push(std::move(message), bytes)) {
    return absl::CancelledError("the client went away during generation");
  }
  return absl::OkStatus();
}

absl::Status GenerateJob::Work() {
  const Transformer& model = *plan_.model->model;
  HookPlan hook_plan(model.hooks());
  GB_RETURN_IF_ERROR(AddEdits(plan_, hook_plan));
  generated_.assign(plan_.rows.size(), {});
  texts_.assign(plan_.rows.size(), "");
  const auto start = std::chrono::steady_clock::now();
  auto result = Generate(model, plan_.rows, hook_plan, params_,
                         [this](const GeneratedStep& step) { return OnStep(step); });
  seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!result.ok()) return result.status();
  result_ = *std::move(result);
  return absl::OkStatus();
}

}  // namespace glassbox
