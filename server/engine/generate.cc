#include "server/engine/generate.h"

#include <algorithm>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/engine/host_captures.h"
#include "server/engine/host_math.h"
#include "server/engine/kv_cache.h"
#include "server/engine/step_capture.h"

namespace glassbox {
namespace {

absl::Status Validate(const Transformer& model, const std::vector<std::vector<int32_t>>& prompts,
                      const HookPlan& plan, const GenerateParams& params) {
  const ModelConfig& c = model.config();
  if (prompts.empty()) return absl::InvalidArgumentError("generation needs at least one prompt");
  for (size_t r = 0; r < prompts.size(); ++r) {
    if (prompts[r].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("prompt ", r, " is empty"));
    }
    if (static_cast<int64_t>(prompts[r].size()) >= c.n_ctx) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt ", r, " has ", prompts[r].size(), " tokens; the model's context is ", c.n_ctx,
          ", leaving no room to generate"));
    }
  }
  if (params.max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens is ", params.max_new_tokens, "; it must be >= 1"));
  }
  GB_RETURN_IF_ERROR(ValidateSamplingParams(params.sampling));
  for (int32_t t : params.stop_tokens) {
    if (t < 0 || t >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("stop token ", t,
                                                     " is outside the vocabulary [0, ",
                                                     c.vocab_size, ")"));
    }
  }
  if (params.top_logprobs < 0 || params.top_logprobs > c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("top_logprobs ", params.top_logprobs,
                                                   " is outside [0, ", c.vocab_size, "]"));
  }
  if (!params.stop_strings.empty() && !params.append_text) {
    return absl::FailedPreconditionError("stop strings need the model's tokenizer");
  }
  for (const std::string& stop : params.stop_strings) {
    if (stop.empty()) return absl::InvalidArgumentError("a stop string is empty");
  }
  return absl::OkStatus();
}

// Whether `text` now ends in a stop string that its last `added` bytes helped complete.
bool CompletesStopString(const std::string& text, size_t added,
                         const std::vector<std::string>& stops) {
  for (const std::string& stop : stops) {
    // Only matches ending in the new bytes are new: earlier text was checked before.
    const size_t from = text.size() >= added + stop.size() ? text.size() - added - stop.size() + 1 : 0;
    if (added > 0 && text.find(stop, from) != std::string::npos) return true;
  }
  return false;
}

// The k most likely (token, log-prob) pairs, ties to the lower id (host_math's TopK).
std::vector<std::pair<int32_t, float>> TopLogProbs(const std::vector<float>& logprobs, int64_t k,
                                                   std::vector<int32_t>& scratch) {
  std::vector<float> values(k);
  std::vector<int32_t> ids(k);
  TopK(logprobs.data(), static_cast<int64_t>(logprobs.size()), k, values.data(), ids.data(), scratch);
  std::vector<std::pair<int32_t, float>> top;
  for (int64_t i = 0; i < k; ++i) top.emplace_back(ids[i], values[i]);
  return top;
}

}  // namespace

absl::StatusOr<GenerateResult> Generate(const Transformer& model,
                                        const std::vector<std::vector<int32_t>>& prompts,
                                        const HookPlan& plan, const GenerateParams& params,
                                        const StepCallback& on_step) {
  GB_RETURN_IF_ERROR(Validate(model, prompts, plan, params));
  const ModelConfig& c = model.config();
  const int64_t rows = static_cast<int64_t>(prompts.size());
  size_t longest = 0;
  for (const auto& p : prompts) longest = std::max(longest, p.size());

  // Each row's sequence, left-padded to a common length; finished rows grow by padding.
  std::vector<std::vector<int32_t>> tokens(rows), mask(rows), history(prompts);
  for (int64_t r = 0; r < rows; ++r) {
    const size_t pad = longest - prompts[r].size();
    tokens[r].assign(pad, 0);
    mask[r].assign(pad, 0);
    tokens[r].insert(tokens[r].end(), prompts[r].begin(), prompts[r].end());
    mask[r].insert(mask[r].end(), prompts[r].size(), 1);
  }
  std::vector<std::mt19937_64> rngs;
  for (int64_t r = 0; r < rows; ++r) rngs.emplace_back(params.sampling.seed + r);

  GenerateResult result;
  result.generated.resize(rows);
  result.texts.resize(rows);
  result.finish.assign(rows, FinishReason::kLength);
  std::vector<bool> done(rows, false);
  std::vector<int32_t> top_scratch;
  const ForwardOptions options{.logits = LogitsMode::kLast, .cancelled = params.cancelled};
  std::optional<KvCache> cache;
  if (params.use_kv_cache && CheckPlanForCache(plan).ok()) {
    // Rows stop at the model's context, so the cache never needs more slots than it has.
    const int64_t capacity =
        std::min<int64_t>(static_cast<int64_t>(longest) + params.max_new_tokens, c.n_ctx);
    GB_ASSIGN_OR_RETURN(cache, KvCache::Create(model.backend(), c, model.dtype(), rows, capacity));
  }
  for (int64_t step = 0; step < params.max_new_tokens; ++step) {
    // The whole sequence so far, or over a cache the tokens it does not hold yet (the prompts,
    // then each step's one token).
    const int64_t width = static_cast<int64_t>(tokens[0].size());
    const int64_t from = cache ? cache->length() : 0;
    Tensor ids = Tensor::EmptyHost(DType::kI32, {rows, width - from});
    Tensor attention = Tensor::EmptyHost(DType::kI32, {rows, width - from});
    for (int64_t r = 0; r < rows; ++r) {
      std::copy(tokens[r].begin() + from, tokens[r].end(), ids.data<int32_t>() + r * (width - from));
      std::copy(mask[r].begin() + from, mask[r].end(), attention.data<int32_t>() + r * (width - from));
    }
    HostCaptures sink(model.backend(), /*copy_host_values=*/true);
    auto forward = model.Forward(
        {.tokens = ids, .attention_mask = attention, .cache = cache ? &*cache : nullptr}, plan,
        &sink, options);
    if (!forward.ok() && cache && step == 0 &&
        forward.status().code() == absl::StatusCode::kUnimplemented) {
      // The backend cannot attend over cached keys here (CUDA without its flash kernel):
      // recompute every step instead.
      cache.reset();
      --step;
      continue;
    }
    GB_ASSIGN_OR_RETURN(ForwardOutput out, std::move(forward));
    GeneratedStep emitted{.step = step, .tokens = std::vector<int32_t>(rows, -1),
                          .logprobs = std::vector<float>(rows, 0), .top = {}, .texts = {},
                          .captures = {}, .capture_lengths = {}};
    emitted.top.resize(rows);
    emitted.texts.resize(rows);
    if (!sink.values().empty()) {
      StepLayout layout{.whole_prompt = step == 0 && params.capture_prompt};
      for (int64_t r = 0; r < rows; ++r) {
        layout.pad.push_back(static_cast<int64_t>(longest - prompts[r].size()));
        layout.lengths.push_back(layout.whole_prompt ? static_cast<int32_t>(prompts[r].size())
                                                     : done[r] ? 0 : 1);
      }
      for (HostCaptures::Value& captured : sink.TakeValues()) {
        emitted.captures.push_back(
            {.hook = captured.id, .info = captured.info,
             .value = CutStepCapture(captured.info, captured.value, layout)});
      }
      emitted.capture_lengths = layout.lengths;
    }
    for (int64_t r = 0; r < rows; ++r) {
      int32_t next = 0;
      if (!done[r]) {
        const std::span<const float> logits(out.logits.data<float>() + r * c.vocab_size,
                                            static_cast<size_t>(c.vocab_size));
        next = ChooseToken(params.sampling, logits, history[r], rngs[r]);
        const std::vector<float> logprobs = LogSoftmax(logits);
        emitted.tokens[r] = next;
        emitted.logprobs[r] = logprobs[next];
        if (params.top_logprobs > 0) {
          emitted.top[r] = TopLogProbs(logprobs, params.top_logprobs, top_scratch);
        }
        result.generated[r].push_back(next);
        history[r].push_back(next);
        if (params.append_text) {
          GB_ASSIGN_OR_RETURN(emitted.texts[r], params.append_text(r, next));
          result.texts[r] += emitted.texts[r];
        }
        const bool stop = std::find(params.stop_tokens.begin(), params.stop_tokens.end(), next) !=
                          params.stop_tokens.end();
        if (stop) {
          done[r] = true;
          result.finish[r] = FinishReason::kStopToken;
        } else if (CompletesStopString(result.texts[r], emitted.texts[r].size(), params.stop_strings)) {
          done[r] = true;
          result.finish[r] = FinishReason::kStopString;
        } else if (static_cast<int64_t>(history[r].size()) >= c.n_ctx) {
          done[r] = true;
          result.finish[r] = FinishReason::kContext;
        }
      }
      tokens[r].push_back(next);
      mask[r].push_back(emitted.tokens[r] >= 0 ? 1 : 0);
    }
    if (on_step) GB_RETURN_IF_ERROR(on_step(emitted));
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
  }
  return result;
}

}  // namespace glassbox
