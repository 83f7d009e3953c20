// The logits processors against their HF definitions on hand-made rows, and sampling against the
// distribution it claims: over many seeded draws of one step, the token frequencies match the
// softmax of the processed logits (a chi-square test at a fixed seed).
#include "server/engine/sampling.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace glassbox {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(Sampling, GreedyIsArgmaxWithTiesToTheLowestId) {
  std::mt19937_64 rng(0);
  EXPECT_EQ(ChooseToken({}, std::vector<float>{0.5f, 2.0f, 2.0f, -1.0f}, {}, rng), 1);
}

TEST(Sampling, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  const SamplingParams p{.repetition_penalty = 2.0};
  const std::vector<float> out = ProcessLogits(p, std::vector<float>{4, -4, 4}, std::vector<int32_t>{0, 1, 1});
  EXPECT_EQ(out, (std::vector<float>{2, -8, 4}));  // once per distinct token, as HF
}

TEST(Sampling, FrequencyPenaltyCountsOccurrences) {
  const SamplingParams p{.frequency_penalty = 0.5};
  const std::vector<float> out = ProcessLogits(p, std::vector<float>{1, 1, 1}, std::vector<int32_t>{2, 2, 0});
  EXPECT_EQ(out, (std::vector<float>{0.5f, 1, 0}));
}

TEST(Sampling, TopKKeepsTiesAtTheKthValue) {
  const SamplingParams p{.temperature = 1, .top_k = 2};
  const std::vector<float> out = ProcessLogits(p, std::vector<float>{3, 1, 2, 2}, {});
  EXPECT_EQ(out, (std::vector<float>{3, -kInf, 2, 2}));
}

TEST(Sampling, TopPDropsTheUnlikelyTailButKeepsTheBest) {
  // probabilities 0.5, 0.25, 0.125, 0.125: top_p 0.7 keeps the first two.
  const std::vector<float> logits = {std::log(4.0f), std::log(2.0f), 0, 0};
  const std::vector<float> out = ProcessLogits({.temperature = 1, .top_p = 0.7}, logits, {});
  EXPECT_EQ(out[0], logits[0]);
  EXPECT_EQ(out[1], logits[1]);
  EXPECT_EQ(out[2], -kInf);
  EXPECT_EQ(out[3], -kInf);
  const std::vector<float> tiny = ProcessLogits({.temperature = 1, .top_p = 0.01}, logits, {});
  EXPECT_EQ(tiny[0], logits[0]);
  EXPECT_EQ(tiny[1], -kInf);
}

TEST(Sampling, MinPIsRelativeToTheMostLikely) {
  const std::vector<float> logits = {std::log(4.0f), std::log(2.0f), 0, 0};
  const std::vector<float> out = ProcessLogits({.temperature = 1, .min_p = 0.3}, logits, {});
  EXPECT_EQ(out[1], logits[1]);  // 0.25 >= 0.3 * 0.5
  EXPECT_EQ(out[2], -kInf);      // 0.125 < 0.15
}

// Frequencies of 20000 draws against the processed softmax: chi-square with df = kept - 1 must
// stay below the 99.9% quantile (df 5: 20.52).
TEST(Sampling, DrawsFollowTheProcessedDistribution) {
  const std::vector<float> logits = {1.0f, 0.2f, -0.5f, 2.0f, 0.0f, 1.5f, -3.0f, 0.7f};
  const SamplingParams p{.temperature = 0.8, .top_k = 6, .seed = 1};
  const std::vector<float> processed = ProcessLogits(p, logits, {});
  double m = -kInf, total = 0;
  for (float v : processed) m = std::max<double>(m, v);
  std::vector<double> expected(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) total += expected[i] = std::exp(processed[i] - m);
  std::mt19937_64 rng(p.seed);
  const int draws = 20000;
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < draws; ++i) ++counts[ChooseToken(p, logits, {}, rng)];
  double chi2 = 0;
  int kept = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double e = draws * expected[i] / total;
    if (e == 0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " was filtered out";
      continue;
    }
    ++kept;
    chi2 += (counts[i] - e) * (counts[i] - e) / e;
  }
  EXPECT_EQ(kept, 6);
  EXPECT_LT(chi2, 20.52);
}

TEST(Sampling, LogSoftmaxSumsToOne) {
  const std::vector<float> out = LogSoftmax(std::vector<float>{100, 101, 99});
  double total = 0;
  for (float v : out) total += std::exp(v);
  EXPECT_NEAR(total, 1.0, 1e-6);
}

}  // namespace
}  // namespace glassbox
