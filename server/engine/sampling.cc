#include "server/engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace glassbox {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

int32_t ArgMax(std::span<const float> x) {
  return static_cast<int32_t>(std::max_element(x.begin(), x.end()) - x.begin());
}

// Softmax in double over the finite entries.
std::vector<double> Softmax(std::span<const float> x) {
  const float m = *std::max_element(x.begin(), x.end());
  std::vector<double> p(x.size());
  double total = 0;
  for (size_t i = 0; i < x.size(); ++i) total += p[i] = std::isinf(x[i]) ? 0 : std::exp(double{x[i]} - m);
  for (double& v : p) v /= total;
  return p;
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  auto bad = [](absl::string_view field, double value, absl::string_view rule) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is ", value, "; it must be ", rule));
  };
  if (!std::isfinite(p.temperature) || p.temperature < 0) {
    return bad("temperature", p.temperature, ">= 0 (0 = greedy)");
  }
  if (p.top_k < 0) return bad("top_k", static_cast<double>(p.top_k), ">= 0 (0 = off)");
  if (!(p.top_p > 0 && p.top_p <= 1)) return bad("top_p", p.top_p, "in (0, 1] (1 = off)");
  if (!(p.min_p >= 0 && p.min_p <= 1)) return bad("min_p", p.min_p, "in [0, 1] (0 = off)");
  if (!(p.repetition_penalty > 0) || !std::isfinite(p.repetition_penalty)) {
    return bad("repetition_penalty", p.repetition_penalty, "> 0 (1 = off)");
  }
  if (!std::isfinite(p.frequency_penalty)) {
    return bad("frequency_penalty", p.frequency_penalty, "finite (0 = off)");
  }
  return absl::OkStatus();
}

std::vector<float> ProcessLogits(const SamplingParams& p, std::span<const float> logits,
                                 std::span<const int32_t> history) {
  std::vector<float> x(logits.begin(), logits.end());
  const int64_t n = static_cast<int64_t>(x.size());
  if (p.repetition_penalty != 1 || p.frequency_penalty != 0) {
    absl::flat_hash_map<int32_t, int> counts;
    for (int32_t t : history) {
      if (t >= 0 && t < n) ++counts[t];
    }
    const float rep = static_cast<float>(p.repetition_penalty);
    for (const auto& [t, count] : counts) {
      float& v = x[t];
      if (p.repetition_penalty != 1) v = v < 0 ? v * rep : v / rep;
      v -= static_cast<float>(p.frequency_penalty * count);
    }
  }
  if (p.temperature == 0) return x;
  const float t = static_cast<float>(p.temperature);
  for (float& v : x) v /= t;
  if (p.top_k > 0 && p.top_k < n) {
    // HF TopKLogitsWarper: everything below the k-th largest value goes (ties at it stay).
    std::vector<float> sorted = x;
    std::nth_element(sorted.begin(), sorted.begin() + (p.top_k - 1), sorted.end(), std::greater<>());
    const float kth = sorted[p.top_k - 1];
    for (float& v : x) {
      if (v < kth) v = kNegInf;
    }
  }
  if (p.top_p < 1) {
    // HF TopPLogitsWarper: sort ascending, drop the prefix whose cumulative probability is
    // <= 1 - top_p, always keeping the most likely token.
    const std::vector<double> probs = Softmax(x);
    std::vector<int32_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return x[a] < x[b]; });
    double cumulative = 0;
    for (int64_t i = 0; i + 1 < n; ++i) {
      cumulative += probs[order[i]];
      if (cumulative <= 1 - p.top_p) x[order[i]] = kNegInf;
    }
  }
  if (p.min_p > 0) {
    const std::vector<double> probs = Softmax(x);
    const double keep = p.min_p * *std::max_element(probs.begin(), probs.end());
    for (int64_t i = 0; i < n; ++i) {
      if (probs[i] < keep) x[i] = kNegInf;
    }
  }
  return x;
}

int32_t ChooseToken(const SamplingParams& p, std::span<const float> logits,
                    std::span<const int32_t> history, std::mt19937_64& rng) {
  const std::vector<float> x = ProcessLogits(p, logits, history);
  if (p.temperature == 0) return ArgMax(x);
  const std::vector<double> probs = Softmax(x);
  // One uniform draw in [0, 1) and the inverse CDF: the same seed gives the same token.
  const double u = std::uniform_real_distribution<double>(0, 1)(rng);
  double cumulative = 0;
  int32_t last = ArgMax(x);
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] == 0) continue;
    cumulative += probs[i];
    last = static_cast<int32_t>(i);
    if (u < cumulative) return last;
  }
  return last;  // rounding left u above the total
}

std::vector<float> LogSoftmax(std::span<const float> logits) {
  const float m = *std::max_element(logits.begin(), logits.end());
  double total = 0;
  for (float v : logits) total += std::exp(double{v} - m);
  const double lse = m + std::log(total);
  std::vector<float> out(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = static_cast<float>(logits[i] - lse);
  return out;
}

}  // namespace glassbox
