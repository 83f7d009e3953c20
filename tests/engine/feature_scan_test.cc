// Dataset scans against a brute-force reference written plainly here: the full activation
// matrix of every target, sorted and counted directly. First TargetAccumulator on its own
// (uneven chunks, zeros and ties injected), then the checkpoint format, then ScanContexts end to
// end on the tiny GPT-2 fixture (neurons, directions and SAE features), then the plan checks.
#include "server/engine/feature_scan.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/hook_plan.h"
#include "server/engine/host_math.h"
#include "server/engine/sae/sae.h"
#include "server/engine/scan_accumulator.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::glassbox::testing::FixturePath;
using ::testing::HasSubstr;

// ---------------------------------------------------------------------------------------------
// The reference: everything computed from the whole [contexts, L] matrix of one target.

struct RefRecord {
  int64_t context = 0;
  int32_t position = 0;
  float value = 0;
  uint64_t priority = 0;
  int32_t window_start = 0;
  std::vector<float> activations;
};

struct Reference {
  int64_t n = 0;
  double mean = 0, variance = 0, skewness = 0, kurtosis = 0;
  float max = -std::numeric_limits<float>::infinity();
  float min = std::numeric_limits<float>::infinity();
  float min_nonzero = std::numeric_limits<float>::infinity();
  float max_nonzero = -std::numeric_limits<float>::infinity();
  int64_t positive = 0, nonzero = 0;
  std::vector<RefRecord> top, random;
  std::vector<int64_t> histogram;
  std::vector<std::vector<RefRecord>> quantiles;
};

Reference BruteForce(const std::vector<float>& acts, int64_t contexts, uint64_t target,
                     const ScanOptions& o) {
  const int64_t len = o.context_length, f = o.first_counted_position;
  EXPECT_EQ(static_cast<int64_t>(acts.size()), contexts * len);
  Reference r;
  // Moments, two-pass in long double.
  std::vector<float> counted;
  for (int64_t c = 0; c < contexts; ++c) {
    for (int64_t p = f; p < len; ++p) counted.push_back(acts[c * len + p]);
  }
  r.n = static_cast<int64_t>(counted.size());
  long double sum = 0;
  for (float v : counted) sum += v;
  const long double mean = sum / r.n;
  long double s2 = 0, s3 = 0, s4 = 0;
  for (float v : counted) {
    const long double d = v - mean;
    s2 += d * d, s3 += d * d * d, s4 += d * d * d * d;
  }
  r.mean = static_cast<double>(mean);
  r.variance = static_cast<double>(s2 / r.n);
  if (r.variance > 0) {
    r.skewness = static_cast<double>((s3 / r.n) / std::pow(s2 / r.n, 1.5L));
    r.kurtosis = static_cast<double>((s4 / r.n) / ((s2 / r.n) * (s2 / r.n)) - 3);
  }
  r.max = *std::max_element(counted.begin(), counted.end());
  r.min = *std::min_element(counted.begin(), counted.end());
  for (float v : counted) {
    if (v > 0) ++r.positive;
    if (v != 0) {
      ++r.nonzero;
      r.min_nonzero = std::min(r.min_nonzero, v);
      r.max_nonzero = std::max(r.max_nonzero, v);
    }
  }

  // Each context's record: the first largest counted activation.
  auto record = [&](int64_t c, uint64_t priority) {
    const float* a = acts.data() + c * len;
    const float* best = std::max_element(a + f, a + len);  // the first of equal maxima
    RefRecord rec{.context = c, .position = static_cast<int32_t>(best - a), .value = *best,
                  .priority = priority};
    const int64_t start =
        o.window_before < 0 ? 0 : std::max<int64_t>(0, rec.position - o.window_before);
    const int64_t end = o.window_after < 0
                            ? len
                            : std::min<int64_t>(len, rec.position + o.window_after + 1);
    rec.window_start = static_cast<int32_t>(start);
    rec.activations.assign(a + start, a + end);
    return rec;
  };
  std::vector<RefRecord> all;
  for (int64_t c = 0; c < contexts; ++c) all.push_back(record(c, 0));

  // Top: value descending, then the lower context.
  std::vector<RefRecord> by_value = all;
  std::sort(by_value.begin(), by_value.end(), [](const RefRecord& a, const RefRecord& b) {
    if (a.value != b.value) return a.value > b.value;
    return a.context < b.context;
  });
  by_value.resize(std::min<int64_t>(o.top_k, contexts));
  r.top = by_value;

  // Random: the smallest priorities (salt 1), ties by context.
  auto by_priority = [](const RefRecord& a, const RefRecord& b) {
    if (a.priority != b.priority) return a.priority < b.priority;
    return a.context < b.context;
  };
  std::vector<RefRecord> drawn;
  for (int64_t c = 0; c < contexts; ++c)
    drawn.push_back(record(c, ScanPriority(o.seed, target, 1, c)));
  std::sort(drawn.begin(), drawn.end(), by_priority);
  drawn.resize(std::min<int64_t>(o.random_k, contexts));
  r.random = drawn;

  // Quantile bins over (0, max] of the records' values, salt 2.
  if (r.max > 0 && o.quantile_bins > 0) {
    const int64_t q = o.quantile_bins;
    r.quantiles.resize(q);
    for (int64_t c = 0; c < contexts; ++c) {
      RefRecord rec = record(c, ScanPriority(o.seed, target, 2, c));
      if (!(rec.value > 0)) continue;
      const int64_t bin = std::min<int64_t>(
          static_cast<int64_t>(static_cast<double>(rec.value) * (q / static_cast<double>(r.max))),
          q - 1);
      r.quantiles[bin].push_back(rec);
    }
    for (auto& bin : r.quantiles) {
      std::sort(bin.begin(), bin.end(), by_priority);
      if (static_cast<int64_t>(bin.size()) > o.per_quantile_k) bin.resize(o.per_quantile_k);
    }
  }

  // Histogram of the nonzero counted activations, equal width over [min_nonzero, max_nonzero].
  if (r.nonzero > 0 && o.histogram_bins > 0) {
    const int64_t b = o.histogram_bins;
    r.histogram.assign(b, 0);
    const double lo = r.min_nonzero, hi = r.max_nonzero;
    for (float v : counted) {
      if (v == 0) continue;
      const int64_t bin = hi > lo ? static_cast<int64_t>((v - lo) * (b / (hi - lo))) : 0;
      ++r.histogram[std::clamp<int64_t>(bin, 0, b - 1)];
    }
  }
  return r;
}

// |actual - expected| <= rel * max(|expected|, floor).
void ExpectNearRel(double actual, double expected, double rel, const std::string& what,
                   double floor = 1e-3) {
  EXPECT_LE(std::abs(actual - expected), rel * std::max(std::abs(expected), floor))
      << what << ": " << actual << " vs expected " << expected;
}

void ExpectFloatNear(float actual, float expected, double rel, const std::string& what) {
  if (rel == 0) {
    EXPECT_EQ(actual, expected) << what;
  } else {
    EXPECT_LE(std::abs(double{actual} - expected),
              rel * std::max(std::abs(double{expected}), 1e-6))
        << what << ": " << actual << " vs expected " << expected;
  }
}

void ExpectRecordsMatch(const std::vector<ScanRecord>& actual,
                        const std::vector<RefRecord>& expected, double value_rel,
                        const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < expected.size(); ++i) {
    const std::string at = what + "[" + std::to_string(i) + "]";
    EXPECT_EQ(actual[i].context, expected[i].context) << at;
    EXPECT_EQ(actual[i].position, expected[i].position) << at;
    ExpectFloatNear(actual[i].value, expected[i].value, value_rel, at + ".value");
    EXPECT_EQ(actual[i].priority, expected[i].priority) << at;
    EXPECT_EQ(actual[i].window_start, expected[i].window_start) << at;
    ASSERT_EQ(actual[i].activations.size(), expected[i].activations.size()) << at;
    for (size_t k = 0; k < expected[i].activations.size(); ++k) {
      ExpectFloatNear(actual[i].activations[k], expected[i].activations[k], value_rel,
                      at + ".activations[" + std::to_string(k) + "]");
    }
  }
}

// `value_rel` 0: the accumulator saw exactly the reference's floats.
void ExpectMatchesReference(const TargetAccumulator& acc, const Reference& r, double moment_rel,
                            double value_rel, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(acc.moments().n, r.n);
  ExpectNearRel(acc.moments().mean, r.mean, moment_rel, "mean");
  ExpectNearRel(acc.moments().Variance(), r.variance, moment_rel, "variance", 1e-6);
  ExpectNearRel(acc.moments().Skewness(), r.skewness, moment_rel, "skewness");
  ExpectNearRel(acc.moments().ExcessKurtosis(), r.kurtosis, moment_rel, "excess kurtosis");
  ExpectFloatNear(acc.max(), r.max, value_rel, "max");
  ExpectFloatNear(acc.min(), r.min, value_rel, "min");
  EXPECT_EQ(acc.positive(), r.positive);
  EXPECT_EQ(acc.nonzero(), r.nonzero);
  if (r.nonzero > 0) {
    ExpectFloatNear(acc.min_nonzero(), r.min_nonzero, value_rel, "min_nonzero");
    ExpectFloatNear(acc.max_nonzero(), r.max_nonzero, value_rel, "max_nonzero");
  }
  ExpectRecordsMatch(acc.top(), r.top, value_rel, "top");
  ExpectRecordsMatch(acc.random(), r.random, value_rel, "random");
  EXPECT_EQ(acc.histogram(), r.histogram);
  ASSERT_EQ(acc.quantiles().size(), r.quantiles.size());
  for (size_t b = 0; b < r.quantiles.size(); ++b) {
    ExpectRecordsMatch(acc.quantiles()[b], r.quantiles[b], value_rel,
                       "quantile bin " + std::to_string(b));
  }
}

// ---------------------------------------------------------------------------------------------
// TargetAccumulator on its own.

constexpr int64_t kContexts = 37;
constexpr int32_t kLength = 9;

// Normal values with exact zeros, a huge value at position 0 (BOS: counted only when
// first_counted_position is 0), ties inside a context and across contexts, and contexts whose
// counted values are all <= 0.
std::vector<float> MakeActivations(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::vector<float> a(kContexts * kLength);
  for (float& v : a) {
    v = normal(rng);
    if (unit(rng) < 0.12f) v = 0.0f;
    v = std::min(v, 3.0f);  // leaves room above for the planted maxima
  }
  auto at = [&](int64_t c, int32_t p) -> float& { return a[c * kLength + p]; };
  at(3, 0) = 50.0f;
  at(4, 0) = -50.0f;
  // A tie inside context 7: its record sits at the first of the two.
  at(7, 2) = 3.5f;
  at(7, 6) = 3.5f;
  // Ties across contexts at the top, straddling a top_k of 3.
  at(30, 4) = 3.25f;
  at(10, 5) = 3.25f;
  at(20, 1) = 3.25f;
  at(20, 8) = 3.25f;
  // Context 12: every counted value <= 0; context 13: every counted value 0.
  for (int32_t p = 1; p < kLength; ++p) at(12, p) = -std::abs(at(12, p));
  for (int32_t p = 1; p < kLength; ++p) at(13, p) = 0.0f;
  // A value equal to another context's maximum inside a quantile bin.
  at(25, 3) = 2.0f;
  at(26, 7) = 2.0f;
  return a;
}

// Feeds `acts` through both passes in the given chunks (each summing to kContexts).
void RunAccumulator(TargetAccumulator& acc, const std::vector<float>& acts, uint64_t target,
                    const ScanOptions& o, const std::vector<int64_t>& first_chunks,
                    const std::vector<int64_t>& second_chunks) {
  int64_t c0 = 0;
  for (int64_t n : first_chunks) {
    acc.ObserveFirstPass(acts.data() + c0 * o.context_length, c0, n, target, o);
    c0 += n;
  }
  ASSERT_EQ(c0, kContexts);
  if (o.NeedsSecondPass()) {
    acc.BeginSecondPass(o);
    c0 = 0;
    for (int64_t n : second_chunks) {
      acc.ObserveSecondPass(acts.data() + c0 * o.context_length, c0, n, target, o);
      c0 += n;
    }
    ASSERT_EQ(c0, kContexts);
  }
  acc.Finish();
}

struct AccumulatorCase {
  std::string name;
  ScanOptions options;
};

std::vector<AccumulatorCase> AccumulatorCases() {
  std::vector<AccumulatorCase> cases;
  ScanOptions base;
  base.context_length = kLength;
  {
    ScanOptions o = base;
    o.first_counted_position = 1;
    o.top_k = 3, o.random_k = 7, o.quantile_bins = 4, o.per_quantile_k = 2;
    o.histogram_bins = 11, o.window_before = -1, o.window_after = -1, o.seed = 99;
    cases.push_back({"WholeContextWindows", o});
  }
  {
    ScanOptions o = base;
    o.first_counted_position = 1;
    o.top_k = 50, o.random_k = 0, o.quantile_bins = 3, o.per_quantile_k = 100;
    o.histogram_bins = 1, o.window_before = 2, o.window_after = 3, o.seed = 7;
    cases.push_back({"ClippedWindowsKeepEverything", o});
  }
  {
    ScanOptions o = base;
    o.first_counted_position = 0;  // BOS counted: the planted 50 and -50 are the range
    o.top_k = 6, o.random_k = 37, o.quantile_bins = 0, o.per_quantile_k = 5;
    o.histogram_bins = 0, o.window_before = 0, o.window_after = -1, o.seed = 1234567;
    cases.push_back({"OnePassBosCounted", o});
  }
  {
    ScanOptions o = base;
    o.first_counted_position = 3;
    o.top_k = 10, o.random_k = 5, o.quantile_bins = 7, o.per_quantile_k = 1;
    o.histogram_bins = 50, o.window_before = 2, o.window_after = 3, o.seed = 0;
    cases.push_back({"LateFirstPosition", o});
  }
  {
    ScanOptions o = base;
    o.first_counted_position = 1;
    o.top_k = 1, o.random_k = 1, o.quantile_bins = 100, o.per_quantile_k = 3;
    o.histogram_bins = 10000, o.window_before = 0, o.window_after = 0, o.seed = ~uint64_t{0};
    cases.push_back({"ManyBinsOneTokenWindows", o});
  }
  return cases;
}

void PrintTo(const AccumulatorCase& c, std::ostream* os) { *os << c.name; }

class AccumulatorTest : public ::testing::TestWithParam<AccumulatorCase> {};

TEST_P(AccumulatorTest, UnevenChunksEqualBruteForce) {
  const ScanOptions& o = GetParam().options;
  for (uint64_t target : {uint64_t{0}, uint64_t{5}, uint64_t{1000003}}) {
    const std::vector<float> acts = MakeActivations(static_cast<uint32_t>(17 + target));
    const Reference ref = BruteForce(acts, kContexts, target, o);
    // The reference itself must see the planted cases.
    if (o.first_counted_position == 1) {
      EXPECT_EQ(ref.max, 3.5f);
      EXPECT_LT(ref.max, 50.0f);
    }
    TargetAccumulator chunked;
    RunAccumulator(chunked, acts, target, o, {1, 5, 13, 2, 16}, {7, 11, 19});
    ExpectMatchesReference(chunked, ref, 1e-9, 0, "chunked, target " + std::to_string(target));
    TargetAccumulator whole;
    RunAccumulator(whole, acts, target, o, {kContexts}, {kContexts});
    ExpectMatchesReference(whole, ref, 1e-9, 0, "at once, target " + std::to_string(target));
    TargetAccumulator singles;
    RunAccumulator(singles, acts, target, o, std::vector<int64_t>(kContexts, 1),
                   std::vector<int64_t>(kContexts, 1));
    ExpectMatchesReference(singles, ref, 1e-9, 0, "one by one, target " + std::to_string(target));
  }
}

INSTANTIATE_TEST_SUITE_P(Options, AccumulatorTest, ::testing::ValuesIn(AccumulatorCases()),
                         [](const auto& info) { return info.param.name; });

TEST(TargetAccumulatorTest, PlantedTiesFallToTheLowerContextAndFirstPosition) {
  ScanOptions o = AccumulatorCases()[0].options;  // top_k 3, whole windows
  const std::vector<float> acts = MakeActivations(17);
  TargetAccumulator acc;
  RunAccumulator(acc, acts, 0, o, {4, 33}, {37});
  ASSERT_EQ(acc.top().size(), 3u);
  EXPECT_EQ(acc.top()[0].context, 7);
  EXPECT_EQ(acc.top()[0].position, 2);
  EXPECT_EQ(acc.top()[0].value, 3.5f);
  EXPECT_EQ(acc.top()[1].context, 10);
  EXPECT_EQ(acc.top()[1].value, 3.25f);
  EXPECT_EQ(acc.top()[2].context, 20);
  EXPECT_EQ(acc.top()[2].position, 1);
  EXPECT_EQ(acc.top()[2].window_start, 0);
  EXPECT_EQ(acc.top()[2].activations.size(), static_cast<size_t>(kLength));
  // Context 3's BOS value (50) is in its window but in no statistic.
  EXPECT_EQ(acc.max(), 3.5f);
  EXPECT_GT(acc.min(), -50.0f);
  // Contexts 12 and 13 (max <= 0) are in no quantile bin.
  for (const auto& bin : acc.quantiles()) {
    for (const ScanRecord& r : bin) {
      EXPECT_NE(r.context, 12);
      EXPECT_NE(r.context, 13);
      EXPECT_GT(r.value, 0);
    }
  }
}

TEST(TargetAccumulatorTest, ConstantAndNonPositiveTargets) {
  ScanOptions o = AccumulatorCases()[0].options;
  {
    SCOPED_TRACE("all zeros");
    const std::vector<float> zeros(kContexts * kLength, 0.0f);
    TargetAccumulator acc;
    RunAccumulator(acc, zeros, 3, o, {10, 27}, {37});
    ExpectMatchesReference(acc, BruteForce(zeros, kContexts, 3, o), 1e-9, 0, "zeros");
    EXPECT_EQ(acc.moments().Variance(), 0);
    EXPECT_EQ(acc.moments().Skewness(), 0);
    EXPECT_EQ(acc.moments().ExcessKurtosis(), 0);
    EXPECT_EQ(acc.nonzero(), 0);
    EXPECT_TRUE(acc.histogram().empty());
    EXPECT_TRUE(acc.quantiles().empty());
    // Ties everywhere: the top records are the first contexts, at the first counted position.
    ASSERT_EQ(acc.top().size(), 3u);
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(acc.top()[i].context, i);
      EXPECT_EQ(acc.top()[i].position, 1);
    }
  }
  {
    SCOPED_TRACE("negative");
    std::vector<float> negative = MakeActivations(5);
    for (float& v : negative) v = -std::abs(v) - 0.25f;
    TargetAccumulator acc;
    RunAccumulator(acc, negative, 4, o, {36, 1}, {2, 35});
    ExpectMatchesReference(acc, BruteForce(negative, kContexts, 4, o), 1e-9, 0, "negative");
    EXPECT_TRUE(acc.quantiles().empty());
    EXPECT_EQ(acc.histogram().size(), static_cast<size_t>(o.histogram_bins));
    EXPECT_EQ(acc.positive(), 0);
  }
  {
    SCOPED_TRACE("one nonzero value");
    std::vector<float> one(kContexts * kLength, 0.0f);
    one[11 * kLength + 4] = 0.75f;
    TargetAccumulator acc;
    RunAccumulator(acc, one, 4, o, {37}, {37});
    ExpectMatchesReference(acc, BruteForce(one, kContexts, 4, o), 1e-9, 0, "one");
    ASSERT_EQ(acc.histogram().size(), static_cast<size_t>(o.histogram_bins));
    EXPECT_EQ(acc.histogram()[0], 1);
    ASSERT_EQ(acc.quantiles().size(), static_cast<size_t>(o.quantile_bins));
    ASSERT_EQ(acc.quantiles().back().size(), 1u);
    EXPECT_EQ(acc.quantiles().back()[0].context, 11);
  }
}

TEST(TargetAccumulatorTest, PrioritiesDependOnEveryInput) {
  const uint64_t p = ScanPriority(1, 2, 1, 3);
  EXPECT_EQ(p, ScanPriority(1, 2, 1, 3));
  EXPECT_NE(p, ScanPriority(0, 2, 1, 3));
  EXPECT_NE(p, ScanPriority(1, 3, 1, 3));
  EXPECT_NE(p, ScanPriority(1, 2, 2, 3));
  EXPECT_NE(p, ScanPriority(1, 2, 1, 4));
}

TEST(MomentsTest, MergeEqualsOnePass) {
  std::mt19937 rng(3);
  std::gamma_distribution<double> skewed(0.7, 2.0);
  std::vector<double> x(1001);
  for (double& v : x) v = skewed(rng) + 5;  // a mean far from 0 stresses the merge
  auto one = [](const double* v, int64_t n) {
    Moments m;
    m.n = n;
    for (int64_t i = 0; i < n; ++i) m.mean += v[i];
    m.mean /= n;
    for (int64_t i = 0; i < n; ++i) {
      const double d = v[i] - m.mean;
      m.m2 += d * d, m.m3 += d * d * d, m.m4 += d * d * d * d;
    }
    return m;
  };
  const Moments all = one(x.data(), 1001);
  Moments merged;
  int64_t begin = 0;
  for (int64_t n : {1, 3, 9, 27, 81, 243, 637}) {
    merged.Merge(one(x.data() + begin, n));
    begin += n;
  }
  EXPECT_EQ(merged.n, 1001);
  ExpectNearRel(merged.mean, all.mean, 1e-12, "mean");
  ExpectNearRel(merged.Variance(), all.Variance(), 1e-10, "variance");
  ExpectNearRel(merged.Skewness(), all.Skewness(), 1e-9, "skewness");
  ExpectNearRel(merged.ExcessKurtosis(), all.ExcessKurtosis(), 1e-9, "kurtosis");
  Moments empty;
  empty.Merge(Moments{});
  EXPECT_EQ(empty.n, 0);
  Moments copy = all;
  copy.Merge(Moments{});
  EXPECT_EQ(copy.m4, all.m4);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints.

constexpr int64_t kStateTargets = 3;

// Drives a ScanState by hand through both passes, optionally round-tripping it through
// Serialize / Deserialize after the given chunk of each pass.
std::string RunState(const std::vector<std::vector<float>>& acts, const ScanOptions& o,
                     const std::vector<int64_t>& chunks, int interrupt_after) {
  ScanState state;
  state.targets.resize(kStateTargets);
  for (int pass = 1; pass <= 2; ++pass) {
    int chunk_index = 0;
    for (int64_t n : chunks) {
      for (int64_t t = 0; t < kStateTargets; ++t) {
        const float* a = acts[t].data() + state.next_context * o.context_length;
        if (pass == 1) {
          state.targets[t].ObserveFirstPass(a, state.next_context, n, t, o);
        } else {
          state.targets[t].ObserveSecondPass(a, state.next_context, n, t, o);
        }
      }
      state.next_context += n;
      if (chunk_index++ == interrupt_after) {
        const std::string bytes = state.Serialize();
        absl::StatusOr<ScanState> restored = ScanState::Deserialize(bytes, kStateTargets);
        EXPECT_TRUE(restored.ok()) << restored.status();
        if (!restored.ok()) return "";
        EXPECT_EQ(restored->pass, pass);
        EXPECT_EQ(restored->next_context, state.next_context);
        EXPECT_EQ(restored->Serialize(), bytes);
        state = *std::move(restored);
      }
    }
    if (pass == 1) {
      for (auto& t : state.targets) t.BeginSecondPass(o);
      state.pass = 2;
    } else {
      for (auto& t : state.targets) t.Finish();
      state.pass = 3;
    }
    state.next_context = 0;
  }
  return state.Serialize();
}

TEST(ScanStateTest, ResumedScanIsByteIdentical) {
  const ScanOptions o = AccumulatorCases()[3].options;  // windows 2/3, 7 quantile bins
  std::vector<std::vector<float>> acts;
  for (int64_t t = 0; t < kStateTargets; ++t) acts.push_back(MakeActivations(40 + t));
  const std::vector<int64_t> chunks = {5, 3, 11, 1, 17};
  const std::string uninterrupted = RunState(acts, o, chunks, -1);
  ASSERT_FALSE(uninterrupted.empty());
  for (int interrupt : {0, 2, 4}) {
    SCOPED_TRACE(interrupt);
    EXPECT_EQ(RunState(acts, o, chunks, interrupt), uninterrupted);
  }
  // The finished state holds what the reference says.
  absl::StatusOr<ScanState> done = ScanState::Deserialize(uninterrupted, kStateTargets);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->pass, 3);
  for (int64_t t = 0; t < kStateTargets; ++t) {
    ExpectMatchesReference(done->targets[t], BruteForce(acts[t], kContexts, t, o), 1e-9, 0,
                           "target " + std::to_string(t));
  }
}

TEST(ScanStateTest, DamagedStatesAreDataLoss) {
  const ScanOptions o = AccumulatorCases()[0].options;
  std::vector<std::vector<float>> acts;
  for (int64_t t = 0; t < kStateTargets; ++t) acts.push_back(MakeActivations(60 + t));
  // A state mid pass 1 (heaps unordered) and a finished one.
  ScanState mid;
  mid.targets.resize(kStateTargets);
  for (int64_t t = 0; t < kStateTargets; ++t)
    mid.targets[t].ObserveFirstPass(acts[t].data(), 0, 20, t, o);
  mid.next_context = 20;
  const std::string finished = RunState(acts, o, {37}, -1);
  for (const std::string& bytes : {mid.Serialize(), finished}) {
    ASSERT_TRUE(ScanState::Deserialize(bytes, kStateTargets).ok());
    for (size_t cut = 0; cut < bytes.size(); ++cut) {
      const auto status = ScanState::Deserialize(bytes.substr(0, cut), kStateTargets).status();
      ASSERT_EQ(status.code(), absl::StatusCode::kDataLoss) << "cut at " << cut << ": " << status;
    }
    std::string magic = bytes;
    magic[0] = 'X';
    EXPECT_EQ(ScanState::Deserialize(magic, kStateTargets).status().code(),
              absl::StatusCode::kDataLoss);
    for (int64_t targets : {kStateTargets - 1, kStateTargets + 1, int64_t{0}}) {
      const auto status = ScanState::Deserialize(bytes, targets).status();
      EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
      EXPECT_THAT(std::string(status.message()), HasSubstr("3 targets"));
    }
    EXPECT_EQ(ScanState::Deserialize(bytes + '\0', kStateTargets).status().code(),
              absl::StatusCode::kDataLoss);
    // The first target's top-record count (after the magic, the header, the moments, four
    // floats and two counts), made huge and negative.
    constexpr size_t kTopCount = 8 + 24 + 40 + 16 + 16;
    for (int64_t bad : {std::numeric_limits<int64_t>::max(), int64_t{-1},
                        static_cast<int64_t>(bytes.size())}) {
      std::string damaged = bytes;
      std::memcpy(damaged.data() + kTopCount, &bad, sizeof(bad));
      EXPECT_EQ(ScanState::Deserialize(damaged, kStateTargets).status().code(),
                absl::StatusCode::kDataLoss)
          << bad;
    }
  }
  EXPECT_EQ(ScanState::Deserialize("", 0).status().code(), absl::StatusCode::kDataLoss);
}

// ---------------------------------------------------------------------------------------------
// ScanContexts end to end on the tiny GPT-2 fixture.

class FeatureScanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = Transformer::Load(FixturePath("models/tiny-gpt2"), std::make_shared<CpuBackend>());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
  }

  HookId Hook(const std::string& name) {
    absl::StatusOr<HookId> id = model_->hooks().Resolve(name);
    EXPECT_TRUE(id.ok()) << id.status();
    return id.ok() ? *id : -1;
  }

  static Tensor RandomTensor(Shape shape, std::mt19937& rng, float scale = 1.0f) {
    std::normal_distribution<float> normal(0.0f, scale);
    Tensor t = Tensor::EmptyHost(DType::kF32, std::move(shape));
    for (float& v : t.span<float>()) v = normal(rng);
    return t;
  }

  Tensor RandomContexts(int64_t n, int64_t len, std::mt19937& rng) {
    const int32_t vocab = static_cast<int32_t>(model_->config().vocab_size);
    std::uniform_int_distribution<int32_t> token(0, vocab - 1);
    std::vector<int32_t> ids(n * len);
    for (int32_t& t : ids) t = token(rng);
    return Tensor::FromHost(ids, {n, len});
  }

  // Runs the plan over `contexts` in the given batches, both passes; optionally round-trips the
  // state through its checkpoint bytes after every batch.
  absl::StatusOr<ScanState> Scan(const ScanPlan& plan, const Tensor& contexts,
                                 const std::vector<int64_t>& batches, bool checkpoint) {
    ScanState state = NewScanState(*model_, plan);
    const int64_t targets = ScanTargetCount(*model_, plan);
    while (state.pass != 3) {
      int64_t c0 = 0;
      for (int64_t n : batches) {
        if (absl::Status s = ScanContexts(*model_, plan, contexts.Slice0(c0, c0 + n), state);
            !s.ok()) {
          return s;
        }
        c0 += n;
        if (checkpoint) {
          absl::StatusOr<ScanState> restored = ScanState::Deserialize(state.Serialize(), targets);
          if (!restored.ok()) return restored.status();
          state = *std::move(restored);
        }
      }
      EXPECT_EQ(state.next_context, contexts.dim(0));
      EndScanPass(plan, state);
    }
    return state;
  }

  // Every target's activations [contexts * L], target by target as the plan numbers them,
  // computed from a plain forward pass per batch (the same batches, so the same floats).
  std::vector<std::vector<float>> BruteForceActivations(const ScanPlan& plan,
                                                        const Tensor& contexts,
                                                        const std::vector<int64_t>& batches) {
    const int64_t n = contexts.dim(0), len = contexts.dim(1);
    const int64_t targets = ScanTargetCount(*model_, plan);
    std::vector<std::vector<float>> acts(targets, std::vector<float>(n * len));
    int64_t c0 = 0;
    for (int64_t bn : batches) {
      HookPlan hooks(model_->hooks());
      for (const ScanTargetGroup& g : plan.groups) hooks.CaptureId(g.hook);
      ::glassbox::testing::CollectingSink sink;
      auto out = model_->Forward({.tokens = contexts.Slice0(c0, c0 + bn)}, hooks, &sink,
                                 {.logits = LogitsMode::kNone});
      EXPECT_TRUE(out.ok()) << out.status();
      int64_t target0 = 0;
      for (const ScanTargetGroup& g : plan.groups) {
        const HookInfo& info = model_->hooks().info(g.hook);
        absl::StatusOr<Tensor> value = CopyToHostF32(model_->backend(), sink.values.at(info.name));
        EXPECT_TRUE(value.ok());
        const int64_t rows = bn * len;
        const int64_t width = value->numel() / rows;
        const Tensor x = value->Reshape({rows, width});
        // The group's full activations [rows, full].
        std::vector<float> full_acts;
        int64_t full = 0;
        switch (g.kind) {
          case ScanTargetGroup::Kind::kNeurons:
            full = width;
            full_acts.assign(x.data<float>(), x.data<float>() + rows * width);
            break;
          case ScanTargetGroup::Kind::kDirections: {
            full = g.directions.dim(0);
            full_acts.resize(rows * full);
            const float* dirs = g.directions.data<float>();
            for (int64_t r = 0; r < rows; ++r) {
              for (int64_t j = 0; j < full; ++j) {
                double dot = 0;
                for (int64_t i = 0; i < width; ++i)
                  dot += double{x.data<float>()[r * width + i]} * double{dirs[j * width + i]};
                full_acts[r * full + j] = static_cast<float>(dot);
              }
            }
            break;
          }
          case ScanTargetGroup::Kind::kSaeFeatures: {
            full = g.sae->d_sae();
            absl::StatusOr<Tensor> encoded = g.sae->Encode(x);
            EXPECT_TRUE(encoded.ok()) << encoded.status();
            full_acts.assign(encoded->data<float>(), encoded->data<float>() + rows * full);
            break;
          }
          case ScanTargetGroup::Kind::kHeadNorms: {  // [rows, head, d]
            full = value->dim(2);
            const int64_t d = value->dim(3);
            full_acts.resize(rows * full);
            for (int64_t r = 0; r < rows; ++r) {
              for (int64_t h = 0; h < full; ++h) {
                double sum = 0;
                for (int64_t i = 0; i < d; ++i) {
                  const double v = value->data<float>()[(r * full + h) * d + i];
                  sum += v * v;
                }
                full_acts[r * full + h] = static_cast<float>(std::sqrt(sum));
              }
            }
            break;
          }
          case ScanTargetGroup::Kind::kAttentionTo: {  // [batch, head, query, key]
            full = value->dim(1);
            full_acts.assign(rows * full, 0.0f);
            for (int64_t b = 0; b < bn; ++b) {
              for (int64_t h = 0; h < full; ++h) {
                for (int64_t q = 0; q < len; ++q) {
                  const int64_t k = g.key_position >= 0 ? g.key_position : q - g.key_offset;
                  if (k < 0 || k > q) continue;  // not visible: 0
                  full_acts[(b * len + q) * full + h] =
                      value->data<float>()[((b * full + h) * len + q) * len + k];
                }
              }
            }
            break;
          }
        }
        const int64_t count = g.indices.empty() ? full : static_cast<int64_t>(g.indices.size());
        for (int64_t j = 0; j < count; ++j) {
          const int64_t source = g.indices.empty() ? j : g.indices[j];
          for (int64_t r = 0; r < rows; ++r)
            acts[target0 + j][c0 * len + r] = full_acts[r * full + source];
        }
        target0 += count;
      }
      c0 += bn;
    }
    return acts;
  }

  void ExpectScanMatchesBruteForce(const ScanPlan& plan, const Tensor& contexts,
                                   const std::vector<int64_t>& batches) {
    ASSERT_TRUE(ValidateScanPlan(*model_, plan).ok()) << ValidateScanPlan(*model_, plan);
    absl::StatusOr<ScanState> state = Scan(plan, contexts, batches, /*checkpoint=*/false);
    ASSERT_TRUE(state.ok()) << state.status();
    EXPECT_EQ(state->pass, 3);
    const std::vector<std::vector<float>> acts = BruteForceActivations(plan, contexts, batches);
    ASSERT_EQ(state->targets.size(), acts.size());
    int64_t interesting = 0;
    for (size_t t = 0; t < acts.size(); ++t) {
      const Reference ref = BruteForce(acts[t], contexts.dim(0), t, plan.options);
      ExpectMatchesReference(state->targets[t], ref, 1e-9, 1e-5, "target " + std::to_string(t));
      interesting +=
          ref.nonzero > 0 && (!ref.quantiles.empty() || !plan.options.NeedsSecondPass());
      // The same activations fed to one accumulator at once.
      TargetAccumulator once;
      once.ObserveFirstPass(acts[t].data(), 0, contexts.dim(0), t, plan.options);
      if (plan.options.NeedsSecondPass()) {
        once.BeginSecondPass(plan.options);
        once.ObserveSecondPass(acts[t].data(), 0, contexts.dim(0), t, plan.options);
      }
      once.Finish();
      ExpectMatchesReference(once, ref, 1e-9, 1e-5,
                             "one accumulator, target " + std::to_string(t));
      if (::testing::Test::HasFailure()) {
        ADD_FAILURE() << "stopping at target " << t;
        return;
      }
    }
    EXPECT_GT(interesting, 0);
    // A scan checkpointed after every batch ends in the same bytes.
    absl::StatusOr<ScanState> resumed = Scan(plan, contexts, batches, /*checkpoint=*/true);
    ASSERT_TRUE(resumed.ok()) << resumed.status();
    EXPECT_EQ(resumed->Serialize(), state->Serialize());
  }

  std::unique_ptr<Transformer> model_;
};

TEST_F(FeatureScanTest, NeuronsDirectionsAndSaeFeaturesEqualBruteForce) {
  std::mt19937 rng(2024);
  const int64_t d_model = model_->config().d_model;
  SaeConfig sae_config;
  sae_config.d_in = d_model;
  sae_config.d_sae = 48;
  sae_config.hook_name = "blocks.1.hook_resid_post";
  SaeWeights w;
  w.W_enc = RandomTensor({d_model, 48}, rng, 0.3f);
  w.W_dec = RandomTensor({48, d_model}, rng, 0.3f);
  w.b_enc = RandomTensor({48}, rng, 0.5f);
  w.b_dec = RandomTensor({d_model}, rng, 0.1f);
  absl::StatusOr<std::unique_ptr<Sae>> sae = Sae::Create(sae_config, std::move(w));
  ASSERT_TRUE(sae.ok()) << sae.status();

  ScanPlan plan;
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kNeurons,
                         .hook = Hook("blocks.1.mlp.hook_post"),
                         // Over two tiles of 16 targets, in no order.
                         .indices = {200, 3, 17, 255, 0, 128, 64, 65, 31, 99, 7, 180, 240, 12,
                                     13, 150, 77, 201, 5, 222, 111}});
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kNeurons,
                         .hook = Hook("blocks.0.attn.hook_z")});  // all 4 x 16
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kDirections,
                         .hook = Hook("blocks.0.hook_resid_post"),
                         .directions = RandomTensor({5, d_model}, rng)});
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kSaeFeatures,
                         .hook = Hook("blocks.1.hook_resid_post"),
                         .indices = {5, 0, 47, 31, 12, 9, 40, 22},
                         .sae = sae->get()});
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kDirections,
                         .hook = Hook("ln_final.hook_normalized"),
                         .indices = {3, 0},
                         .directions = RandomTensor({4, d_model}, rng)});
  plan.options.context_length = 12;
  plan.options.top_k = 4;
  plan.options.random_k = 5;
  plan.options.quantile_bins = 5;
  plan.options.per_quantile_k = 2;
  plan.options.histogram_bins = 16;
  plan.options.window_before = 2;
  plan.options.window_after = 3;
  plan.options.seed = 42;
  EXPECT_EQ(ScanTargetCount(*model_, plan), 21 + 64 + 5 + 8 + 2);
  const Tensor contexts = RandomContexts(23, 12, rng);
  ExpectScanMatchesBruteForce(plan, contexts, {8, 9, 6});
}

TEST_F(FeatureScanTest, HeadOutputNormsAndAttentionToAKeyEqualBruteForce) {
  std::mt19937 rng(31);
  ScanPlan plan;
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kHeadNorms,
                         .hook = Hook("blocks.1.attn.hook_result"), .indices = {3, 0}});
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kHeadNorms,
                         .hook = Hook("blocks.0.attn.hook_z")});  // every head
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kAttentionTo,
                         .hook = Hook("blocks.0.attn.hook_pattern"), .key_position = 0});
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kAttentionTo,
                         .hook = Hook("blocks.1.attn.hook_pattern"), .indices = {2, 1},
                         .key_offset = 1});
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kAttentionTo,
                         .hook = Hook("blocks.1.attn.hook_pattern"), .indices = {0},
                         .key_position = 3});  // 0 before query 3
  plan.options.context_length = 10;
  plan.options.top_k = 3;
  plan.options.random_k = 4;
  plan.options.quantile_bins = 4;
  plan.options.per_quantile_k = 2;
  plan.options.histogram_bins = 12;
  plan.options.window_before = 2;
  plan.options.window_after = 2;
  plan.options.seed = 5;
  const int64_t heads = model_->config().n_heads;
  EXPECT_EQ(ScanTargetCount(*model_, plan), 2 + heads + heads + 2 + 1);
  const Tensor contexts = RandomContexts(19, 10, rng);
  ExpectScanMatchesBruteForce(plan, contexts, {7, 5, 7});
}

TEST_F(FeatureScanTest, EarlyHooksWholeWindowsBosCounted) {
  // Only embedding and block-0 hooks: the pass stops after block 0.
  std::mt19937 rng(77);
  const int64_t d_model = model_->config().d_model;
  ScanPlan plan;
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kDirections,
                         .hook = Hook("blocks.0.hook_resid_pre"),
                         .directions = RandomTensor({3, d_model}, rng)});
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kNeurons,
                         .hook = Hook("blocks.0.mlp.hook_pre"), .indices = {7, 100}});
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kNeurons, .hook = Hook("hook_embed"),
                         .indices = {63, 1, 30}});
  plan.options.context_length = 7;
  plan.options.first_counted_position = 0;
  plan.options.top_k = 3;
  plan.options.random_k = 3;
  plan.options.quantile_bins = 3;
  plan.options.per_quantile_k = 3;
  plan.options.histogram_bins = 9;
  plan.options.seed = 5;
  const Tensor contexts = RandomContexts(15, 7, rng);
  ExpectScanMatchesBruteForce(plan, contexts, {1, 10, 4});
}

TEST_F(FeatureScanTest, EmbeddingHooksOnlyRunNoBlock) {
  // Every hook before block 0: the pass stops at layer 0.
  std::mt19937 rng(31);
  ScanPlan plan;
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kNeurons, .hook = Hook("hook_pos_embed"),
                         .indices = {2, 40}});
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kDirections, .hook = Hook("hook_embed"),
                         .directions = RandomTensor({2, model_->config().d_model}, rng)});
  plan.options.context_length = 10;
  plan.options.top_k = 2;
  plan.options.random_k = 2;
  plan.options.quantile_bins = 2;
  plan.options.per_quantile_k = 2;
  plan.options.histogram_bins = 4;
  const Tensor contexts = RandomContexts(9, 10, rng);
  ExpectScanMatchesBruteForce(plan, contexts, {4, 5});
}

TEST_F(FeatureScanTest, CancelledScanObservesNothing) {
  std::mt19937 rng(8);
  ScanPlan plan;
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kNeurons,
                         .hook = Hook("blocks.1.mlp.hook_post"), .indices = {1, 2}});
  plan.options.context_length = 6;
  ScanState state = NewScanState(*model_, plan);
  const std::string before = state.Serialize();
  const std::atomic<bool> cancelled{true};
  EXPECT_EQ(ScanContexts(*model_, plan, RandomContexts(3, 6, rng), state, &cancelled).code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(state.Serialize(), before);
}

TEST_F(FeatureScanTest, WideGroupsAreCutIntoChunksOfContexts) {
  // 300000 directions over a one-wide hook: each batch's activations are cut into chunks of a
  // few contexts (kChunkValues / (L x width)), and every chunk must land on its own contexts.
  std::mt19937 rng(9);
  ScanPlan plan;
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kDirections,
                         .hook = Hook("blocks.0.ln1.hook_scale"),
                         .indices = {299999, 0, 123456, 7, 8},
                         .directions = RandomTensor({300000, 1}, rng)});
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kNeurons,
                         .hook = Hook("blocks.0.mlp.hook_post"), .indices = {9}});
  plan.options.context_length = 8;
  plan.options.top_k = 3;
  plan.options.random_k = 4;
  plan.options.quantile_bins = 2;
  plan.options.per_quantile_k = 2;
  plan.options.histogram_bins = 5;
  plan.options.window_before = 1;
  plan.options.window_after = 0;
  plan.options.seed = 11;
  const Tensor contexts = RandomContexts(16, 8, rng);
  ExpectScanMatchesBruteForce(plan, contexts, {7, 5, 4});
}

TEST_F(FeatureScanTest, OnePassScanFinishesAfterPassOne) {
  std::mt19937 rng(1);
  ScanPlan plan;
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kNeurons,
                         .hook = Hook("blocks.1.mlp.hook_post"), .indices = {1, 2}});
  plan.options.context_length = 5;
  plan.options.quantile_bins = 0;
  plan.options.histogram_bins = 0;
  plan.options.top_k = 2;
  plan.options.random_k = 2;
  const Tensor contexts = RandomContexts(6, 5, rng);
  ScanState state = NewScanState(*model_, plan);
  ASSERT_TRUE(ScanContexts(*model_, plan, contexts, state).ok());
  EXPECT_EQ(state.next_context, 6);
  EndScanPass(plan, state);
  EXPECT_EQ(state.pass, 3);
  EXPECT_EQ(ScanContexts(*model_, plan, contexts, state).code(),
            absl::StatusCode::kFailedPrecondition);
  ExpectScanMatchesBruteForce(plan, contexts, {6});
}

// The second pass reading the first pass's activations back (ScanReplay) ends in the same
// state, byte for byte, as running the model again; a replay that cannot hold every batch from
// context 0 (too small, or starting part-way) is dropped and the model runs again.
TEST_F(FeatureScanTest, ReplayedSecondPassEqualsRunningTheModelAgain) {
  std::mt19937 rng(5);
  ScanPlan plan;
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kNeurons,
                         .hook = Hook("blocks.1.mlp.hook_post"), .indices = {3, 1, 40, 17}});
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kNeurons,
                         .hook = Hook("blocks.0.hook_resid_post")});
  plan.options.context_length = 7;
  plan.options.quantile_bins = 3;
  plan.options.histogram_bins = 6;
  plan.options.seed = 3;
  const Tensor contexts = RandomContexts(11, 7, rng);
  const std::vector<int64_t> batches = {4, 4, 3};
  auto run = [&](ScanReplay* replay, int64_t start_pass1_at) -> ScanState {
    ScanState state = NewScanState(*model_, plan);
    state.next_context = start_pass1_at;  // a scan resumed part-way: contexts before are skipped
    for (int pass = 1; pass <= 2; ++pass) {
      for (int64_t c0 = 0, b = 0; c0 < 11; c0 += batches[b++]) {
        if (c0 < state.next_context) continue;
        EXPECT_TRUE(ScanContexts(*model_, plan, contexts.Slice0(c0, c0 + batches[b]), state, nullptr,
                                 replay).ok());
      }
      EndScanPass(plan, state);
    }
    return state;
  };
  const std::string plain = run(nullptr, 0).Serialize();
  const int64_t targets = ScanTargetCount(*model_, plan);
  ScanReplay replay(int64_t{1} << 30);
  EXPECT_EQ(run(&replay, 0).Serialize(), plain);
  EXPECT_EQ(replay.bytes(), targets * 11 * 7 * static_cast<int64_t>(sizeof(float)));
  // With a budget short of the whole corpus, the replay is dropped at the batch that overflows.
  ScanReplay small(targets * 8 * 7 * static_cast<int64_t>(sizeof(float)));
  EXPECT_EQ(run(&small, 0).Serialize(), plain);
  EXPECT_EQ(small.bytes(), 0);
  EXPECT_EQ(small.Find(0, targets * 4 * 7), nullptr);
  // Resumed in the first pass: the replay would miss batches, so the model runs again.
  ScanReplay resumed(int64_t{1} << 30);
  const ScanState partial = run(&resumed, 4);
  EXPECT_EQ(resumed.Find(4, targets * 4 * 7), nullptr);
  ScanState from_four = run(nullptr, 4);
  EXPECT_EQ(partial.Serialize(), from_four.Serialize());
}

TEST_F(FeatureScanTest, ScanContextsRejectsBadContexts) {
  ScanPlan plan;
  plan.groups.push_back({.kind = ScanTargetGroup::Kind::kNeurons,
                         .hook = Hook("blocks.0.mlp.hook_post"), .indices = {1}});
  plan.options.context_length = 5;
  ScanState state = NewScanState(*model_, plan);
  const Tensor wrong_length = Tensor::FromHost(std::vector<int32_t>(12, 1), {2, 6});
  EXPECT_EQ(ScanContexts(*model_, plan, wrong_length, state).code(),
            absl::StatusCode::kInvalidArgument);
  const Tensor flat = Tensor::FromHost(std::vector<int32_t>(5, 1), {5});
  EXPECT_EQ(ScanContexts(*model_, plan, flat, state).code(), absl::StatusCode::kInvalidArgument);
  const Tensor floats = Tensor::FromHost(std::vector<float>(10, 1.0f), {2, 5});
  EXPECT_EQ(ScanContexts(*model_, plan, floats, state).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(state.next_context, 0);
}

// ---------------------------------------------------------------------------------------------
// Plan validation.

TEST_F(FeatureScanTest, ValidateScanPlanNamesTheProblem) {
  const int64_t d_model = model_->config().d_model;
  std::mt19937 rng(3);
  auto valid = [&] {
    ScanPlan plan;
    plan.groups.push_back({.kind = ScanTargetGroup::Kind::kNeurons,
                           .hook = Hook("blocks.1.mlp.hook_post"), .indices = {0, 255}});
    plan.groups.push_back({.kind = ScanTargetGroup::Kind::kDirections,
                           .hook = Hook("blocks.0.hook_resid_post"),
                           .directions = RandomTensor({2, d_model}, rng)});
    plan.options.context_length = 32;
    return plan;
  };
  EXPECT_TRUE(ValidateScanPlan(*model_, valid()).ok()) << ValidateScanPlan(*model_, valid());

  auto expect_invalid = [&](const ScanPlan& plan, const std::string& substring) {
    const absl::Status status = ValidateScanPlan(*model_, plan);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << substring << ": " << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(substring));
  };
  {
    ScanPlan plan = valid();
    plan.groups.push_back({.kind = ScanTargetGroup::Kind::kNeurons,
                           .hook = Hook("blocks.0.attn.hook_pattern")});
    expect_invalid(plan, "blocks.0.attn.hook_pattern has no activation per token");
  }
  {
    ScanPlan plan = valid();
    plan.groups[0].indices = {0, 256};
    expect_invalid(plan, "target index 256 at blocks.1.mlp.hook_post is out of range [0, 256)");
  }
  {
    ScanPlan plan = valid();
    plan.groups[0].indices = {-1};
    expect_invalid(plan, "target index -1");
  }
  {
    ScanPlan plan = valid();
    plan.groups[0].indices = {4, 9, 4};
    expect_invalid(plan, "target index 4 at blocks.1.mlp.hook_post is listed twice");
  }
  {
    ScanPlan plan = valid();
    plan.groups[1].indices = {2};  // two directions: index 2 is out of range
    expect_invalid(plan, "out of range [0, 2)");
  }
  {
    ScanPlan plan = valid();
    plan.options.context_length = 33;
    expect_invalid(plan, "context_length 33 must be in [1, 32]");
  }
  {
    ScanPlan plan = valid();
    plan.options.context_length = 0;
    expect_invalid(plan, "context_length 0");
  }
  {
    ScanPlan plan = valid();
    plan.groups[1].directions = RandomTensor({2, d_model - 1}, rng);
    expect_invalid(plan, "directions at blocks.0.hook_resid_post must be f32 [n, 64]");
  }
  {
    ScanPlan plan = valid();
    plan.groups[1].directions = RandomTensor({d_model}, rng);
    expect_invalid(plan, "must be f32 [n, 64]");
  }
  {
    ScanPlan plan = valid();
    plan.groups[1].directions = Tensor();
    expect_invalid(plan, "must be f32 [n, 64]");
  }
  {
    ScanPlan plan = valid();
    plan.groups[0].hook = -1;
    expect_invalid(plan, "names no hook");
  }
  {
    ScanPlan plan = valid();
    plan.groups[0].hook = model_->hooks().size();
    expect_invalid(plan, "names no hook");
  }
  {
    ScanPlan plan = valid();
    plan.groups.clear();
    expect_invalid(plan, "at least one target");
  }
  {
    ScanPlan plan = valid();
    plan.options.first_counted_position = 32;
    expect_invalid(plan, "first counted position 32");
  }
  {
    ScanPlan plan = valid();
    plan.options.top_k = 1001;
    expect_invalid(plan, "top_k is 1001");
  }
  {
    ScanPlan plan = valid();
    plan.options.histogram_bins = -1;
    expect_invalid(plan, "histogram_bins is -1");
  }
  {
    ScanPlan plan = valid();
    plan.options.window_after = -2;
    expect_invalid(plan, "window_before and window_after");
  }
  {
    ScanPlan plan = valid();
    plan.groups.push_back({.kind = ScanTargetGroup::Kind::kSaeFeatures,
                           .hook = Hook("blocks.0.hook_resid_post")});
    expect_invalid(plan, "has no SAE");
  }
  {
    SaeConfig c;
    c.d_in = 32;
    c.d_sae = 8;
    SaeWeights w;
    w.W_enc = RandomTensor({32, 8}, rng);
    w.W_dec = RandomTensor({8, 32}, rng);
    w.b_enc = RandomTensor({8}, rng);
    w.b_dec = RandomTensor({32}, rng);
    absl::StatusOr<std::unique_ptr<Sae>> sae = Sae::Create(c, std::move(w));
    ASSERT_TRUE(sae.ok()) << sae.status();
    ScanPlan plan = valid();
    plan.groups.push_back({.kind = ScanTargetGroup::Kind::kSaeFeatures,
                           .hook = Hook("blocks.0.hook_resid_post"), .sae = sae->get()});
    expect_invalid(plan, "the SAE's d_in 32 differs from blocks.0.hook_resid_post's width 64");
    plan.groups.back().hook = Hook("blocks.0.attn.hook_z");  // 4 x 16 = 64 wide
    plan.groups.back().indices = {8};
    expect_invalid(plan, "differs from blocks.0.attn.hook_z's width 64");
  }
  // Head targets.
  auto with = [&](ScanTargetGroup group) {
    ScanPlan plan = valid();
    plan.groups.push_back(std::move(group));
    return plan;
  };
  using Kind = ScanTargetGroup::Kind;
  EXPECT_TRUE(ValidateScanPlan(*model_, with({.kind = Kind::kAttentionTo,
                                              .hook = Hook("blocks.1.attn.hook_pattern"),
                                              .key_offset = 31}))
                  .ok());
  expect_invalid(with({.kind = Kind::kHeadNorms, .hook = Hook("blocks.1.hook_resid_post")}),
                 "head norms read a per-head hook [batch, pos, head, d] such as "
                 "blocks.L.attn.hook_result (the head's output) or hook_z, not "
                 "blocks.1.hook_resid_post");
  expect_invalid(with({.kind = Kind::kHeadNorms, .hook = Hook("blocks.1.attn.hook_result"),
                       .indices = {4}}),
                 "target index 4 at blocks.1.attn.hook_result is out of range [0, 4)");
  expect_invalid(with({.kind = Kind::kAttentionTo, .hook = Hook("blocks.1.attn.hook_z"),
                       .key_position = 0}),
                 "attention targets read blocks.L.attn.hook_pattern, not blocks.1.attn.hook_z");
  expect_invalid(with({.kind = Kind::kAttentionTo, .hook = Hook("blocks.1.attn.hook_pattern")}),
                 "needs one key");
  expect_invalid(with({.kind = Kind::kAttentionTo, .hook = Hook("blocks.1.attn.hook_pattern"),
                       .key_position = 0, .key_offset = 1}),
                 "needs one key");
  expect_invalid(with({.kind = Kind::kAttentionTo, .hook = Hook("blocks.1.attn.hook_pattern"),
                       .key_position = 32}),
                 "the attention target's key position 32 is outside a context of 32 tokens");
  expect_invalid(with({.kind = Kind::kAttentionTo, .hook = Hook("blocks.1.attn.hook_pattern"),
                       .key_offset = 40}),
                 "key offset 40 is outside");
}

}  // namespace
}  // namespace glassbox
