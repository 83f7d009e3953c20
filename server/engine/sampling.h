// Choosing the next token from one row of logits, as HuggingFace's generate does: logits
// processors in its order (repetition penalty, then temperature, top-k, top-p, min-p), then
// argmax (greedy) or a draw from the softmax of what is left. Host f32 in, deterministic given the
// generator's state.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace glassbox {

struct SamplingParams {
  // 0 = greedy (argmax; ties to the lowest id, as torch.argmax). > 0 divides the logits.
  double temperature = 0;
  int64_t top_k = 0;          // > 0: keep the k largest logits
  double top_p = 1;           // < 1: keep the smallest set whose probability reaches top_p
  double min_p = 0;           // > 0: keep tokens with p >= min_p · p_max
  // HF's repetition penalty (CTRL): a logit of a token already in the sequence is divided by it
  // when positive and multiplied by it when negative. 1 = none.
  double repetition_penalty = 1;
  // OpenAI's frequency penalty: logit -= frequency_penalty · (times the token occurred). 0 = none.
  double frequency_penalty = 0;
  uint64_t seed = 0;
};

// INVALID_ARGUMENT naming the field for temperature < 0, top_k < 0, top_p outside (0, 1],
// min_p outside [0, 1], repetition_penalty <= 0 and non-finite values.
absl::Status ValidateSamplingParams(const SamplingParams& params);

// The processed logits of one row (what the draw uses): `history` is the sequence so far, for
// the penalties; filtered-out entries are -inf. Greedy runs only the penalties.
std::vector<float> ProcessLogits(const SamplingParams& params, std::span<const float> logits,
                                 std::span<const int32_t> history);

// The next token for one row.
int32_t ChooseToken(const SamplingParams& params, std::span<const float> logits,
                    std::span<const int32_t> history, std::mt19937_64& rng);

// log_softmax(logits) in double precision, f32 out.
std::vector<float> LogSoftmax(std::span<const float> logits);

}  // namespace glassbox
