// What a forward pass returns from its unembedding, computed on the backend's device: the logits
// (every position or each row's last real token), their top-k, the log-probs of chosen tokens and
// the per-token loss. Only the tensors asked for are made, and each is copied to the host once
// (on the CPU backend, not at all: its tensors already live on the host).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace glassbox {

// Which logits are returned.
enum class LogitsMode : uint8_t { kNone, kLast, kAll };

// Where top-k and target log-probs are taken: at every position ([batch, pos, ...]) or at each
// row's last real token ([batch, ...], the rows LogitsMode::kLast returns).
enum class OutputPositions : uint8_t { kAll, kLast };

// The outputs requested (the logits part of ForwardOptions).
struct LogitsRequest {
  LogitsMode logits = LogitsMode::kNone;
  int64_t top_k = 0;                        // > 0: values and i32 indices of the top_k logits
  std::span<const int32_t> target_tokens;   // log_softmax(logits)[..., target_tokens]
  OutputPositions outputs_at = OutputPositions::kAll;
  bool loss_per_token = false;

  bool any() const {
    return logits != LogitsMode::kNone || top_k > 0 || !target_tokens.empty() || loss_per_token;
  }
};

// INVALID_ARGUMENT for a top_k outside [0, vocab] or a target token outside [0, vocab).
absl::Status ValidateLogitsRequest(const LogitsRequest& request, int64_t vocab);

// Host tensors; each is defined only when requested. `lead` is [batch, pos] for outputs at every
// position and [batch] at the last real token.
struct LogitsOutputs {
  Tensor logits;            // f32 [batch, pos, vocab] (kAll) or [batch, vocab] (kLast)
  Tensor top_k_values;      // f32 lead + [k], largest first, ties to the lower token id
  Tensor top_k_indices;     // i32 lead + [k]
  Tensor target_log_probs;  // f32 lead + [n targets]
  Tensor loss_per_token;    // f32 [batch, pos - 1]: -log p(token[t+1] | ..t); 0 at padding
};

// The pass's side of the unembedding, on the backend's device.
struct UnembedInputs {
  const Tensor* normalized = nullptr;    // ln_final output [batch * pos, d_model]
  const Tensor* unembed = nullptr;       // [vocab, d_model]
  const Tensor* unembed_bias = nullptr;  // [vocab] (GPT-J's b_U), or null
  const Tensor* last_index = nullptr;    // i32 [batch]: row of each sequence's last real token
  const Tensor* next_targets = nullptr;  // i32 [batch * pos]: the next real token, or -1
  int64_t batch = 0, seq = 0, vocab = 0;
  float softcap = 0;  // > 0: logits = softcap · tanh(logits / softcap) (Gemma-2)
};

absl::StatusOr<LogitsOutputs> ComputeLogitsOutputs(Backend& backend, const UnembedInputs& in,
                                                   const LogitsRequest& request);

// log_softmax(logits)[r, columns[j]] for logits [rows, vocab] on the backend: LogSumExp, then
// GatherColumns less it. Returns f32 [rows, columns.size()] on the backend's device. The engine's
// target log-probs are this; tools that hold logits use it too.
absl::StatusOr<Tensor> LogProbsAt(Backend& backend, const Tensor& logits,
                                  std::span<const int32_t> columns);

}  // namespace glassbox
