// Scoring an explanation of a scan target (a neuron, SAE feature, direction or head) by its
// simulated activations (Bills et al. 2023, "Language models can explain neurons in language
// models"; docs/methods.md, "Scoring explanations"): correlation scores against the true
// activations, and the ablation score, from batched forward passes with the unit replaced.
#pragma once

#include <atomic>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/logit_effects.h"
#include "server/engine/transformer.h"

namespace glassbox {

struct ScoredExcerpt {
  std::vector<int32_t> tokens;
  std::vector<float> simulated;  // one per token
  bool random = false;           // a random excerpt (else top-activating)
};

struct ExplanationScoreRequest {
  TargetUnit target;
  std::vector<ScoredExcerpt> excerpts;
  bool ablation = false;                 // neurons, SAE features and directions (not heads)
  std::optional<float> mean_activation;  // unset: the mean true activation over the excerpts
  const std::atomic<bool>* cancelled = nullptr;
};

struct ExplanationScores {
  double correlation_all = 0;     // Pearson over every token of every excerpt
  double correlation_random = 0;  // over the random excerpts' tokens; NaN without any
  std::vector<std::vector<float>> true_activations;
  double slope = 0, intercept = 0;  // the calibration: true ≈ slope · simulated + intercept
  double jsd_simulation = 0, jsd_mean = 0, ablation_score = 0;
};

// Pearson correlation; NaN when either side is constant or there are fewer than two values.
double Pearson(const std::vector<double>& a, const std::vector<double>& b);
// Jensen-Shannon divergence (natural log) of two distributions given as log-probabilities.
double JensenShannon(const float* log_p, const float* log_q, int64_t n);

absl::StatusOr<ExplanationScores> ScoreExplanation(const Transformer& model,
                                                   const ExplanationScoreRequest& request);

}  // namespace glassbox
