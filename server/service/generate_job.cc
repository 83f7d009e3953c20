#include "server/service/generate_job.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/engine/capture.h"
#include "server/engine/host_captures.h"

namespace glassbox {

absl::Status GenerateJob::AddCaptures(
    HookId hook, const Tensor& value, const std::vector<int32_t>& lengths,
    google::protobuf::RepeatedPtrField<glassbox::v1::StepTensor>* out) {
  // Cut by every capture that asked for this hook (request order within a hook).
  for (const ResolvedCapture& rc : plan_.captures) {
    if (rc.hook != hook) continue;
    const std::vector<Tensor> outputs = ApplyCapture(rc, value, lengths);
    for (size_t j = 0; j < outputs.size(); ++j) {
      auto* tensor = out->Add();
      tensor->set_name(rc.outputs[j].name);
      tensor->mutable_shape()->Add(outputs[j].shape().begin(), outputs[j].shape().end());
      for (const std::string& dim : rc.outputs[j].dim_names) tensor->add_dim_names(dim);
      tensor->set_dtype(ToProtoDType(outputs[j].dtype()));
      tensor->set_data(outputs[j].raw_data(), outputs[j].nbytes());
      bytes_sent_ += static_cast<int64_t>(outputs[j].nbytes());
    }
  }
  if (bytes_sent_ > max_response_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the captures reached ", bytes_sent_, " bytes, over the server's max_response_bytes (",
        max_response_bytes_, ", ", max_response_bytes_source_,
        "); capture fewer hooks, select heads, reduce, or generate fewer tokens"));
  }
  return absl::OkStatus();
}

absl::Status GenerateJob::CaptureAtEnd(const HookPlan& hook_plan, const GenerateResult& result,
                                       bool unsteered) {
  const Transformer& model = *plan_.model->model;
  const int64_t rows = static_cast<int64_t>(plan_.rows.size());
  std::vector<int32_t> lengths;
  int64_t longest = 0;
  for (int64_t r = 0; r < rows; ++r) {
    lengths.push_back(static_cast<int32_t>(plan_.rows[r].size() + result.generated[r].size()));
    longest = std::max<int64_t>(longest, lengths.back());
  }
  Tensor tokens = Tensor::ZerosHost(DType::kI32, {rows, longest});
  Tensor mask = Tensor::ZerosHost(DType::kI32, {rows, longest});
  for (int64_t r = 0; r < rows; ++r) {
    int32_t* t = tokens.data<int32_t>() + r * longest;
    t = std::copy(plan_.rows[r].begin(), plan_.rows[r].end(), t);
    std::copy(result.generated[r].begin(), result.generated[r].end(), t);
    std::fill_n(mask.data<int32_t>() + r * longest, lengths[r], 1);
  }
  HostCaptures sink(model.backend(), /*copy_host_values=*/true);
  GB_RETURN_IF_ERROR(model.Forward({.tokens = tokens, .attention_mask = mask}, hook_plan, &sink,
                                   {.logits = LogitsMode::kNone, .cancelled = &cancelled_})
                         .status());
  glassbox::v1::GenerateResponse message;
  auto* out = message.mutable_final_captures();
  out->mutable_sequence_lengths()->Add(lengths.begin(), lengths.end());
  out->set_unsteered(unsteered);
  for (const HostCaptures::Value& captured : sink.values()) {
    GB_RETURN_IF_ERROR(AddCaptures(captured.id, captured.value, lengths, out->mutable_captures()));
  }
  const size_t bytes = message.ByteSizeLong();
  return Emit(std::move(message), bytes);
}

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
  if (!capture_at_end_) {
    for (const StepCapture& captured : step.captures) {
      GB_RETURN_IF_ERROR(AddCaptures(captured.hook, captured.value, step.capture_lengths,
                                     out->mutable_captures()));
    }
  }
  const size_t bytes = message.ByteSizeLong();
  return Emit(std::move(message), bytes);
}

absl::StatusOr<GenerateResult> GenerateJob::GenerateOnce(bool unsteered) {
  const Transformer& model = *plan_.model->model;
  // The plan with the captures (every step's, or the pass at the end's) and the one without.
  HookPlan capturing(model.hooks()), plain(model.hooks());
  for (const ResolvedCapture& rc : plan_.captures) {
    // hook_sae_* captures (ids past the registry) travel with their splice instead.
    if (rc.hook < model.hooks().size()) capturing.CaptureId(rc.hook);
  }
  if (!unsteered) {
    GB_RETURN_IF_ERROR(AddEdits(plan_, capturing));
    GB_RETURN_IF_ERROR(AddEdits(plan_, plain));
  }
  const HookPlan& hook_plan = capture_at_end_ ? plain : capturing;
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
  GB_ASSIGN_OR_RETURN(
      GenerateResult result,
      Generate(model, plan_.rows, hook_plan, params,
               [this, unsteered](const GeneratedStep& step) { return OnStep(step, unsteered); }));
  if (capture_at_end_ && !plan_.captures.empty()) {
    GB_RETURN_IF_ERROR(CaptureAtEnd(capturing, result, unsteered));
  }
  return result;
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
