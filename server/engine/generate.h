// Autoregressive generation with the hooked forward pass: every step applies the plan (its
// interventions, SAE splices and steering) to prompt and generated positions alike, exactly as
// a Run over the sequence so far would. With a KV cache (the default) the prompt runs once and
// each step runs only the new tokens; plans whose edits need the whole sequence (position
// selectors, mean ablations, patches, attention scores or patterns) recompute it every step
// instead, with the same results (see docs/generation.md).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/hook_plan.h"
#include "server/engine/sampling.h"
#include "server/engine/transformer.h"

namespace glassbox {

// The text a row's new token adds to its continuation (incremental detokenization; the service
// binds the model's tokenizer). May return "" while a character is incomplete.
using TextAppender = std::function<absl::StatusOr<std::string>(int64_t row, int32_t token)>;

struct GenerateParams {
  int64_t max_new_tokens = 16;
  SamplingParams sampling;
  // A row stops after producing one of these (included in its output).
  std::vector<int32_t> stop_tokens;
  // A row stops once its text contains one of these (the completing token is kept); needs
  // append_text.
  std::vector<std::string> stop_strings;
  TextAppender append_text;  // null: steps carry no text
  // With captures in the plan: step 0 reports every prompt position, not only the last.
  bool capture_prompt = false;
  // Per step, the top_logprobs most likely tokens and their log-probs (0 = none).
  int64_t top_logprobs = 0;
  const std::atomic<bool>* cancelled = nullptr;  // checked between steps and layers
  // Decode over a KV cache when the plan allows it; false recomputes every step (the reference
  // the cached path is tested against).
  bool use_kv_cache = true;
};

enum class FinishReason : uint8_t { kLength, kStopToken, kContext, kStopString };

// A hook the plan captures, as one step reports it (CutStepCapture): host f32, the hook's
// shape with the query axis cut to this step's reported positions.
struct StepCapture {
  HookId hook = -1;
  HookInfo info;
  Tensor value;
};

// One step's new token per row. Rows that already finished have token -1.
struct GeneratedStep {
  int64_t step = 0;
  std::vector<int32_t> tokens;
  // log p(token) under the model (log_softmax of the raw logits, before any sampling
  // processor), 0 for finished rows.
  std::vector<float> logprobs;
  // [rows][top_logprobs] (token, log-prob), most likely first; empty for finished rows.
  std::vector<std::vector<std::pair<int32_t, float>>> top;
  std::vector<std::string> texts;  // per row, the text the token adds (with append_text)
  // The plan's captures in forward order, and the real positions each row has in them.
  std::vector<StepCapture> captures;
  std::vector<int32_t> capture_lengths;
};

struct GenerateResult {
  std::vector<std::vector<int32_t>> generated;  // per row, the new tokens only
  std::vector<std::string> texts;               // per row, their text (with append_text)
  std::vector<FinishReason> finish;
};

// Called after each step, on the generating thread; an error stops the generation with it.
using StepCallback = std::function<absl::Status(const GeneratedStep&)>;

// Generates from `prompts` (rows of token ids, each non-empty; batched left-padded, so every row
// equals its run alone). Each row's seed stream is seeded by params.sampling.seed + row. A row
// stops at a stop token or stop string, at max_new_tokens, or when it reaches the model's
// context (n_ctx). What `plan` captures is reported with every step (GeneratedStep.captures).
absl::StatusOr<GenerateResult> Generate(const Transformer& model,
                                        const std::vector<std::vector<int32_t>>& prompts,
                                        const HookPlan& plan, const GenerateParams& params,
                                        const StepCallback& on_step);

}  // namespace glassbox
