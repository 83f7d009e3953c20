// Explanation scores (Bills et al. 2023) against a plain reference written here: every excerpt
// run ALONE (one row, no padding) through Transformer::Forward, capturing the target's hook for
// the true activations, and again with a kSet intervention putting the calibrated simulation
// (then the mean) on the neuron at every position; log-softmax, Jensen-Shannon divergence,
// Pearson correlation and the least-squares calibration written out in double. ScoreExplanation
// runs the excerpts right-padded in batches, so excerpts of different lengths check the padding.
#include "server/engine/explanation_scoring.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/hook_plan.h"
#include "server/engine/host_math.h"
#include "server/engine/intervention.h"
#include "server/engine/sae/sae.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::testing::HasSubstr;

std::string DemoDir() { return std::string(GLASSBOX_FIXTURES_DIR) + "/../../models/demo"; }

// |actual - expected| <= max(rel |expected|, abs).
void ExpectClose(double actual, double expected, const std::string& what, double rel = 1e-5,
                 double abs = 1e-9) {
  if (std::isnan(expected)) {
    EXPECT_TRUE(std::isnan(actual)) << what << ": " << actual << ", expected NaN";
    return;
  }
  EXPECT_LE(std::abs(actual - expected), std::max(rel * std::abs(expected), abs))
      << what << ": " << actual << " vs expected " << expected;
}

// ---- the reference, in double ----

std::vector<double> LogSoftmax(const float* logits, int64_t n) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < n; ++j) m = std::max(m, double{logits[j]});
  double sum = 0;
  for (int64_t j = 0; j < n; ++j) sum += std::exp(double{logits[j]} - m);
  const double lse = m + std::log(sum);
  std::vector<double> out(n);
  for (int64_t j = 0; j < n; ++j) out[j] = double{logits[j]} - lse;
  return out;
}

// JSD(P || Q) = ½ KL(P || M) + ½ KL(Q || M), M = ½ (P + Q), natural log.
double Jsd(const std::vector<double>& log_p, const std::vector<double>& log_q) {
  double jsd = 0;
  for (size_t j = 0; j < log_p.size(); ++j) {
    const double p = std::exp(log_p[j]), q = std::exp(log_q[j]), m = 0.5 * (p + q);
    if (m <= 0) continue;
    if (p > 0) jsd += 0.5 * p * std::log(p / m);
    if (q > 0) jsd += 0.5 * q * std::log(q / m);
  }
  return jsd;
}

double Mean(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v;
  return s / static_cast<double>(x.size());
}

double PearsonRef(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() < 2) return std::numeric_limits<double>::quiet_NaN();
  const double mx = Mean(x), my = Mean(y);
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  if (sxx == 0 || syy == 0) return std::numeric_limits<double>::quiet_NaN();
  return sxy / std::sqrt(sxx * syy);
}

struct Target {
  std::string hook;
  int32_t unit = 0;
  std::vector<float> direction;  // non-empty: a direction target (unit 0)
  bool sae_feature = false;      // feature `unit` of the test's SAE (at kSaeHook)
};

constexpr char kSaeHook[] = "blocks.1.hook_resid_post";

struct Reference {
  std::vector<std::vector<float>> truth;
  double correlation_all = 0, correlation_random = 0;
  double slope = 0, intercept = 0;
  double jsd_simulation = 0, jsd_mean = 0, ablation_score = 0;
};

class ExplanationScoringTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = Transformer::Load(DemoDir(), std::make_shared<CpuBackend>());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
    // A standard (ReLU, unnormalised) SAE of random weights: its decoding is linear, so setting
    // feature i to a moves the hook's value by (a - f_i) W_dec[i] (the reference's edit).
    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto random = [&](Shape shape, float scale) {
      Tensor t = Tensor::EmptyHost(DType::kF32, std::move(shape));
      for (float& v : t.span<float>()) v = scale * normal(rng);
      return t;
    };
    const int64_t d = model_->config().d_model;
    SaeConfig config;
    config.d_in = d;
    config.d_sae = 32;
    config.hook_name = kSaeHook;
    SaeWeights w{.W_enc = random({d, 32}, 0.2f), .W_dec = random({32, d}, 0.3f),
                 .b_enc = random({32}, 0.5f), .b_dec = random({d}, 0.1f)};
    sae_decoder_ = new Tensor(w.W_dec);
    auto sae = Sae::Create(config, std::move(w));
    ASSERT_TRUE(sae.ok()) << sae.status();
    sae_ = sae->release();
  }
  static void TearDownTestSuite() {
    delete sae_;
    delete sae_decoder_;
    delete model_;
  }

  static HookId Hook(const std::string& name) {
    absl::StatusOr<HookId> id = model_->hooks().Resolve(name);
    EXPECT_TRUE(id.ok()) << id.status();
    return id.value_or(-1);
  }

  // One excerpt alone, with `edit` (when set) applied: the hook's value [len, width] and the
  // log-probabilities at every position.
  struct Alone {
    std::vector<float> value;
    int64_t width = 0;
    std::vector<std::vector<double>> log_probs;
  };
  static Alone RunAlone(const std::string& hook, const std::vector<int32_t>& tokens,
                        std::optional<Intervention> edit = std::nullopt) {
    Alone out;
    const int64_t len = static_cast<int64_t>(tokens.size());
    HookPlan plan(model_->hooks());
    plan.CaptureId(Hook(hook));
    if (edit) {
      absl::Status added = plan.AddIntervention(*std::move(edit));
      EXPECT_TRUE(added.ok()) << added;
    }
    ::glassbox::testing::CollectingSink sink;
    absl::StatusOr<ForwardOutput> forward =
        model_->Forward({.tokens = Tensor::FromHost(std::span<const int32_t>(tokens), {1, len})},
                        plan, &sink, {.logits = LogitsMode::kAll});
    EXPECT_TRUE(forward.ok()) << forward.status();
    if (!forward.ok()) return out;
    absl::StatusOr<Tensor> value = CopyToHostF32(model_->backend(), sink.values.at(hook));
    EXPECT_TRUE(value.ok()) << value.status();
    out.width = value->numel() / len;
    out.value.assign(value->data<float>(), value->data<float>() + value->numel());
    const int64_t vocab = model_->config().vocab_size;
    EXPECT_EQ(forward->logits.numel(), len * vocab);
    for (int64_t p = 0; p < len; ++p) {
      out.log_probs.push_back(LogSoftmax(forward->logits.data<float>() + p * vocab, vocab));
    }
    return out;
  }

  // The target's element set to values[p] at every position p, and nothing else: unit u of a
  // hook [batch, pos, d] is x[0, p, u]; of a hook with a head axis [batch, pos, head, d_head]
  // (hook_q/k/v/z), u counts over head x d_head, so it is x[0, p, u / d_head, u % d_head].
  static Intervention SetNeuron(const std::string& hook, int32_t unit, int64_t width,
                                const std::vector<float>& values) {
    const int64_t len = static_cast<int64_t>(values.size());
    const HookId id = Hook(hook);
    const Shape shape = model_->hooks().info(id).ShapeFor(1, len);
    Tensor value = Tensor::ZerosHost(DType::kF32, shape);
    EXPECT_EQ(value.numel(), len * width);
    for (int64_t p = 0; p < len; ++p) value.data<float>()[p * width + unit] = values[p];
    InterventionSelector select;
    if (shape.size() == 4) {
      const int32_t d_head = static_cast<int32_t>(shape[3]);
      select = {.heads = {unit / d_head}, .dims = {unit % d_head}};
    } else {
      select = {.dims = {unit}};
    }
    return Intervention{.hook = id,
                        .kind = InterventionKind::kSet,
                        .select = std::move(select),
                        .value = std::move(value)};
  }

  // The hook's value moved by scale[p] * u at every position p: x + (a - x.v) v / |v|^2 sets a
  // direction's activation to a; x + (a - f_i) W_dec[i] an SAE feature's, with the error term.
  static Intervention AddAlong(const std::string& hook, const std::vector<float>& u,
                               const std::vector<double>& scale) {
    const int64_t len = static_cast<int64_t>(scale.size()), width = static_cast<int64_t>(u.size());
    const HookId id = Hook(hook);
    Tensor value = Tensor::ZerosHost(DType::kF32, model_->hooks().info(id).ShapeFor(1, len));
    for (int64_t p = 0; p < len; ++p) {
      for (int64_t i = 0; i < width; ++i) {
        value.data<float>()[p * width + i] = static_cast<float>(scale[p] * u[i]);
      }
    }
    return Intervention{.hook = id, .kind = InterventionKind::kAdd, .value = std::move(value)};
  }

  // The edit that puts `values` on the target at every position of one excerpt.
  static Intervention SetTarget(const Target& target, int64_t width, const std::vector<float>& truth,
                                const std::vector<float>& values) {
    if (!target.sae_feature && target.direction.empty()) {
      return SetNeuron(target.hook, target.unit, width, values);
    }
    std::vector<float> u;
    double norm2 = 1;
    if (target.sae_feature) {
      const float* row = sae_decoder_->data<float>() + int64_t{target.unit} * width;
      u.assign(row, row + width);
    } else {
      u = target.direction;
      norm2 = 0;
      for (float v : u) norm2 += double{v} * v;
    }
    std::vector<double> scale(values.size());
    for (size_t p = 0; p < values.size(); ++p) {
      scale[p] = (double{values[p]} - truth[p]) / norm2;
    }
    return AddAlong(target.hook, u, scale);
  }

  static Reference ComputeReference(const Target& target,
                                    const std::vector<ScoredExcerpt>& excerpts, bool ablation,
                                    std::optional<float> mean_activation) {
    Reference ref;
    std::vector<double> sim_all, true_all, sim_random, true_random;
    std::vector<Alone> clean;
    for (const ScoredExcerpt& e : excerpts) {
      clean.push_back(RunAlone(target.hook, e.tokens));
      const Alone& alone = clean.back();
      std::vector<float> truth(e.tokens.size());
      for (size_t p = 0; p < e.tokens.size(); ++p) {
        const float* x = alone.value.data() + p * alone.width;
        if (target.sae_feature) {
          absl::StatusOr<Tensor> f = sae_->Encode(
              Tensor::FromHost(std::span<const float>(x, alone.width), {1, alone.width}));
          EXPECT_TRUE(f.ok()) << f.status();
          truth[p] = f->data<float>()[target.unit];
        } else if (target.direction.empty()) {
          truth[p] = x[target.unit];
        } else {
          double dot = 0;
          for (int64_t i = 0; i < alone.width; ++i) dot += double{x[i]} * target.direction[i];
          truth[p] = static_cast<float>(dot);
        }
        sim_all.push_back(e.simulated[p]);
        true_all.push_back(truth[p]);
        if (e.random) {
          sim_random.push_back(e.simulated[p]);
          true_random.push_back(truth[p]);
        }
      }
      ref.truth.push_back(std::move(truth));
    }
    ref.correlation_all = PearsonRef(sim_all, true_all);
    ref.correlation_random = PearsonRef(sim_random, true_random);
    if (!ablation) return ref;

    // true ≈ slope · simulated + intercept, by least squares.
    const double ms = Mean(sim_all), mt = Mean(true_all);
    double sst = 0, sss = 0;
    for (size_t i = 0; i < sim_all.size(); ++i) {
      sst += (sim_all[i] - ms) * (true_all[i] - mt);
      sss += (sim_all[i] - ms) * (sim_all[i] - ms);
    }
    ref.slope = sss > 0 ? sst / sss : 0;
    ref.intercept = mt - ref.slope * ms;
    const float mean = mean_activation.value_or(static_cast<float>(mt));

    double jsd_sim = 0, jsd_mean = 0;
    int64_t positions = 0;
    for (size_t i = 0; i < excerpts.size(); ++i) {
      const ScoredExcerpt& e = excerpts[i];
      const int64_t len = static_cast<int64_t>(e.tokens.size());
      std::vector<float> calibrated(len), means(len, mean);
      for (int64_t p = 0; p < len; ++p) {
        calibrated[p] = static_cast<float>(ref.slope * e.simulated[p] + ref.intercept);
      }
      const int64_t width = clean[i].width;
      const Alone with_sim = RunAlone(target.hook, e.tokens,
                                      SetTarget(target, width, ref.truth[i], calibrated));
      const Alone with_mean =
          RunAlone(target.hook, e.tokens, SetTarget(target, width, ref.truth[i], means));
      for (int64_t p = 0; p < len; ++p) {
        // The edit took: the captured value is the one set (a direction's, to rounding).
        if (!target.direction.empty()) {
          double sim_dot = 0, mean_dot = 0;
          for (int64_t j = 0; j < width; ++j) {
            sim_dot += double{with_sim.value[p * width + j]} * target.direction[j];
            mean_dot += double{with_mean.value[p * width + j]} * target.direction[j];
          }
          EXPECT_NEAR(sim_dot, calibrated[p], 1e-4 * (1 + std::abs(calibrated[p])));
          EXPECT_NEAR(mean_dot, mean, 1e-4 * (1 + std::abs(mean)));
        } else if (!target.sae_feature) {
          EXPECT_EQ(with_sim.value[p * width + target.unit], calibrated[p]);
          EXPECT_EQ(with_mean.value[p * width + target.unit], mean);
        }
        jsd_sim += Jsd(clean[i].log_probs[p], with_sim.log_probs[p]);
        jsd_mean += Jsd(clean[i].log_probs[p], with_mean.log_probs[p]);
        ++positions;
      }
    }
    ref.jsd_simulation = jsd_sim / positions;
    ref.jsd_mean = jsd_mean / positions;
    ref.ablation_score = 1 - ref.jsd_simulation / ref.jsd_mean;
    return ref;
  }

  // ScoreExplanation against the reference. `rel` for the scores; true activations to rel 1e-5
  // of their largest magnitude (a padded batch and a lone row round differently).
  static void ExpectMatchesReference(const Target& target,
                                     const std::vector<ScoredExcerpt>& excerpts, bool ablation,
                                     std::optional<float> mean_activation) {
    ScanTargetGroup group;
    group.hook = Hook(target.hook);
    if (target.sae_feature) {
      group.kind = ScanTargetGroup::Kind::kSaeFeatures;
      group.sae = sae_;
      group.indices = {target.unit};
    } else if (target.direction.empty()) {
      group.kind = ScanTargetGroup::Kind::kNeurons;
      group.indices = {target.unit};
    } else {
      group.kind = ScanTargetGroup::Kind::kDirections;
      group.directions = Tensor::FromHost(std::span<const float>(target.direction),
                                          {1, static_cast<int64_t>(target.direction.size())});
    }
    ExplanationScoreRequest request{.target = {.group = &group, .unit = target.unit},
                                    .excerpts = excerpts,
                                    .ablation = ablation,
                                    .mean_activation = mean_activation};
    absl::StatusOr<ExplanationScores> got = ScoreExplanation(*model_, request);
    ASSERT_TRUE(got.ok()) << got.status();
    const Reference ref = ComputeReference(target, excerpts, ablation, mean_activation);

    ASSERT_EQ(got->true_activations.size(), excerpts.size());
    float largest = 0;
    for (const auto& row : ref.truth) {
      for (float v : row) largest = std::max(largest, std::abs(v));
    }
    for (size_t i = 0; i < excerpts.size(); ++i) {
      ASSERT_EQ(got->true_activations[i].size(), excerpts[i].tokens.size()) << "excerpt " << i;
      for (size_t p = 0; p < excerpts[i].tokens.size(); ++p) {
        ExpectClose(got->true_activations[i][p], ref.truth[i][p],
                    "true activation " + std::to_string(i) + "," + std::to_string(p), 1e-5,
                    1e-5 * largest);
      }
    }
    // Tolerances. ScoreExplanation runs the excerpts right-padded in batches and the reference
    // each alone, so the true activations and logits differ in f32 rounding (~1e-7 relative);
    // the scores that cancel are compared on the scale of what cancels:
    // - correlations: 1e-5 relative, or 1e-5 absolute (r is in [-1, 1]);
    // - the intercept mean(t) - slope * mean(s): 1e-5 of |mean(t)| + |slope * mean(s)|;
    // - a JSD: 1e-5 relative, or 1e-6 * sqrt(JSD): the server keeps f32 log-probabilities, and an
    //   error e in log p moves JSD ~ delta^2 / 8 by ~ delta e / 4, delta ~ sqrt(8 JSD);
    // - the ablation score 1 - jsd_sim / jsd_mean: the ratio to the two JSDs' relative errors.
    ExpectClose(got->correlation_all, ref.correlation_all, "correlation_all", 1e-5, 1e-5);
    ExpectClose(got->correlation_random, ref.correlation_random, "correlation_random", 1e-5, 1e-5);
    if (!ablation) {
      EXPECT_EQ(got->slope, 0);
      EXPECT_EQ(got->intercept, 0);
      EXPECT_EQ(got->jsd_simulation, 0);
      EXPECT_EQ(got->jsd_mean, 0);
      EXPECT_EQ(got->ablation_score, 0);
      return;
    }
    double ms = 0, mt = 0, count = 0;
    for (size_t i = 0; i < excerpts.size(); ++i) {
      for (size_t p = 0; p < excerpts[i].tokens.size(); ++p) {
        ms += excerpts[i].simulated[p], mt += ref.truth[i][p], ++count;
      }
    }
    ms /= count, mt /= count;
    ExpectClose(got->slope, ref.slope, "slope");
    ExpectClose(got->intercept, ref.intercept, "intercept", 1e-5,
                1e-5 * (std::abs(mt) + std::abs(ref.slope * ms)));
    auto jsd_tolerance = [](double jsd) { return std::max(1e-5 * jsd, 1e-6 * std::sqrt(jsd)); };
    const double tol_sim = jsd_tolerance(ref.jsd_simulation),
                 tol_mean = jsd_tolerance(ref.jsd_mean);
    ExpectClose(got->jsd_simulation, ref.jsd_simulation, "jsd_simulation", 0, tol_sim);
    ExpectClose(got->jsd_mean, ref.jsd_mean, "jsd_mean", 0, tol_mean);
    const double ratio = ref.jsd_simulation / ref.jsd_mean;
    ExpectClose(got->ablation_score, ref.ablation_score, "ablation_score", 0,
                ratio * (tol_sim / ref.jsd_simulation + tol_mean / ref.jsd_mean) + 1e-12);
    EXPECT_GT(ref.jsd_mean, 0);  // the neuron matters to the output
  }

  static std::vector<int32_t> RandomTokens(int64_t n, std::mt19937& rng) {
    std::uniform_int_distribution<int32_t> token(
        1, static_cast<int32_t>(model_->config().vocab_size) - 1);
    std::vector<int32_t> t(n);
    for (int32_t& x : t) x = token(rng);
    return t;
  }

  // Excerpts of the given lengths (BOS first), `random` for those flagged, simulated uniform in
  // [0, 10].
  static std::vector<ScoredExcerpt> Excerpts(const std::vector<int64_t>& lengths,
                                             const std::vector<bool>& random, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> sim(0.0f, 10.0f);
    std::vector<ScoredExcerpt> out;
    for (size_t i = 0; i < lengths.size(); ++i) {
      ScoredExcerpt e{.tokens = RandomTokens(lengths[i], rng), .random = random[i]};
      e.tokens[0] = 0;
      for (size_t p = 0; p < e.tokens.size(); ++p) e.simulated.push_back(sim(rng));
      out.push_back(std::move(e));
    }
    return out;
  }

  // Simulations that follow the true activations (3 · truth + noise), as a decent explanation's.
  static void SimulateFromTruth(const Target& target, std::vector<ScoredExcerpt>& excerpts,
                                uint32_t seed) {
    const Reference ref = ComputeReference(target, excerpts, false, std::nullopt);
    std::mt19937 rng(seed);
    std::normal_distribution<float> noise(0.0f, 0.3f);
    for (size_t i = 0; i < excerpts.size(); ++i) {
      for (size_t p = 0; p < excerpts[i].tokens.size(); ++p) {
        excerpts[i].simulated[p] = 3 * ref.truth[i][p] + noise(rng);
      }
    }
  }

  static inline Transformer* model_ = nullptr;
  static inline Sae* sae_ = nullptr;
  static inline Tensor* sae_decoder_ = nullptr;  // the SAE's W_dec [d_sae, d_model]
};

const Target kNeuron{.hook = "blocks.2.mlp.hook_post", .unit = 100};

TEST_F(ExplanationScoringTest, NeuronWithAblationAndPaddedExcerpts) {
  // Lengths differ: the batch is right-padded to 20.
  std::vector<ScoredExcerpt> excerpts =
      Excerpts({12, 7, 20, 3, 16}, {false, false, true, true, true}, 1);
  ExpectMatchesReference(kNeuron, excerpts, /*ablation=*/true, std::nullopt);
}

TEST_F(ExplanationScoringTest, GoodSimulationWithAblation) {
  std::vector<ScoredExcerpt> excerpts = Excerpts({16, 9, 24, 5}, {false, true, false, true}, 2);
  SimulateFromTruth(kNeuron, excerpts, 3);
  ExpectMatchesReference(kNeuron, excerpts, /*ablation=*/true, std::nullopt);
}

TEST_F(ExplanationScoringTest, MeanActivationGiven) {
  std::vector<ScoredExcerpt> excerpts = Excerpts({10, 14, 6}, {false, true, true}, 4);
  ExpectMatchesReference(kNeuron, excerpts, /*ablation=*/true, 0.25f);
  ExpectMatchesReference(kNeuron, excerpts, /*ablation=*/true, -1.5f);
}

TEST_F(ExplanationScoringTest, NeuronOfAResidualHookWithAblation) {
  std::vector<ScoredExcerpt> excerpts = Excerpts({8, 13}, {false, true}, 5);
  ExpectMatchesReference({.hook = "blocks.1.hook_resid_mid", .unit = 17}, excerpts, true,
                         std::nullopt);
}

// A neuron of a hook with a head axis: its unit counts over head x d_head, as the scan's and the
// true activations' do, so the ablation must edit that one element (head unit / d_head, index
// unit % d_head) and nothing in the other heads. Fails today: ScoreExplanation selects
// {.dims = {unit}}, i.e. index `unit` of EVERY head (the other heads' set to 0), and a unit past
// d_head is refused as "index 40 is outside the last axis [0, 32)".
TEST_F(ExplanationScoringTest, NeuronOfAHeadHookWithAblation) {
  std::vector<ScoredExcerpt> excerpts = Excerpts({9, 14}, {false, true}, 13);
  for (int32_t unit : {3, 40}) {  // head 0; head 1 (d_head 32)
    SCOPED_TRACE("blocks.0.attn.hook_z unit " + std::to_string(unit));
    ExpectMatchesReference({.hook = "blocks.0.attn.hook_z", .unit = unit}, excerpts, true,
                           std::nullopt);
  }
}

TEST_F(ExplanationScoringTest, CorrelationsOnly) {
  // Only top excerpts: the random-only correlation is NaN; nothing of the ablation is computed.
  std::vector<ScoredExcerpt> excerpts = Excerpts({12, 7, 20}, {false, false, false}, 6);
  ExpectMatchesReference(kNeuron, excerpts, /*ablation=*/false, std::nullopt);
  absl::StatusOr<ExplanationScores> got = [&] {
    ScanTargetGroup group{.kind = ScanTargetGroup::Kind::kNeurons, .hook = Hook(kNeuron.hook)};
    return ScoreExplanation(
        *model_, {.target = {.group = &group, .unit = kNeuron.unit}, .excerpts = excerpts});
  }();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(std::isnan(got->correlation_random));
  EXPECT_FALSE(std::isnan(got->correlation_all));
}

TEST_F(ExplanationScoringTest, ManyExcerptsInSeveralPasses) {
  // More than one pass's rows (64 without ablation).
  std::vector<int64_t> lengths;
  std::vector<bool> random;
  for (int i = 0; i < 70; ++i) {
    lengths.push_back(2 + i % 9);
    random.push_back(i % 3 == 0);
  }
  ExpectMatchesReference(kNeuron, Excerpts(lengths, random, 7), /*ablation=*/false, std::nullopt);
}

TEST_F(ExplanationScoringTest, DirectionTarget) {
  std::mt19937 rng(8);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Target direction{.hook = "blocks.1.hook_resid_post"};
  for (int i = 0; i < model_->config().d_model; ++i) direction.direction.push_back(normal(rng));
  std::vector<ScoredExcerpt> excerpts = Excerpts({9, 15, 4}, {true, false, true}, 9);
  ExpectMatchesReference(direction, excerpts, /*ablation=*/false, std::nullopt);
  SimulateFromTruth(direction, excerpts, 10);
  ExpectMatchesReference(direction, excerpts, /*ablation=*/false, std::nullopt);
}

TEST_F(ExplanationScoringTest, DirectionWithAblation) {
  std::mt19937 rng(18);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Target direction{.hook = "blocks.2.hook_resid_mid"};
  for (int i = 0; i < model_->config().d_model; ++i) direction.direction.push_back(0.3f * normal(rng));
  std::vector<ScoredExcerpt> excerpts = Excerpts({7, 12, 5}, {false, false, true}, 19);
  SimulateFromTruth(direction, excerpts, 20);
  ExpectMatchesReference(direction, excerpts, /*ablation=*/true, std::nullopt);
  ExpectMatchesReference(direction, excerpts, /*ablation=*/true, 2.0f);
}

TEST_F(ExplanationScoringTest, SaeFeatureWithAblation) {
  // Two features that fire on some tokens and not on others (one that never fires would leave
  // nothing to ablate: both JSDs 0 up to rounding).
  const std::vector<ScoredExcerpt> excerpts = Excerpts({9, 6, 13}, {false, true, true}, 30);
  std::vector<int32_t> features;
  for (int32_t f = 0; f < 32 && features.size() < 2; ++f) {
    const Reference ref = ComputeReference({.hook = kSaeHook, .unit = f, .sae_feature = true},
                                           excerpts, false, std::nullopt);
    int64_t fired = 0, tokens = 0;
    for (const auto& row : ref.truth) {
      for (float v : row) fired += v > 0, ++tokens;
    }
    if (fired > 2 && fired < tokens - 2) features.push_back(f);
  }
  ASSERT_EQ(features.size(), 2u) << "the random SAE has too few features that fire sometimes";
  for (int32_t feature : features) {
    SCOPED_TRACE(feature);
    const Target target{.hook = kSaeHook, .unit = feature, .sae_feature = true};
    std::vector<ScoredExcerpt> simulated = excerpts;
    SimulateFromTruth(target, simulated, 40 + feature);
    ExpectMatchesReference(target, simulated, /*ablation=*/true, std::nullopt);
    ExpectMatchesReference(target, simulated, /*ablation=*/true, 0.75f);
  }
}

TEST_F(ExplanationScoringTest, ConstantSimulation) {
  // No correlation to speak of (NaN); the calibration is the mean, so both ablations set the
  // neuron to the same value and the score is 0.
  std::vector<ScoredExcerpt> excerpts = Excerpts({6, 11}, {true, true}, 11);
  for (auto& e : excerpts) std::fill(e.simulated.begin(), e.simulated.end(), 2.0f);
  ExpectMatchesReference(kNeuron, excerpts, /*ablation=*/true, std::nullopt);
  ScanTargetGroup group{.kind = ScanTargetGroup::Kind::kNeurons, .hook = Hook(kNeuron.hook)};
  absl::StatusOr<ExplanationScores> got = ScoreExplanation(
      *model_,
      {.target = {.group = &group, .unit = kNeuron.unit}, .excerpts = excerpts, .ablation = true});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(std::isnan(got->correlation_all));
  EXPECT_EQ(got->slope, 0);
  EXPECT_NEAR(got->ablation_score, 0, 1e-12);
}

TEST_F(ExplanationScoringTest, BadRequests) {
  ScanTargetGroup neuron{.kind = ScanTargetGroup::Kind::kNeurons, .hook = Hook(kNeuron.hook)};
  ScanTargetGroup direction{.kind = ScanTargetGroup::Kind::kDirections,
                            .hook = Hook("blocks.1.hook_resid_post"),
                            .directions = Tensor::ZerosHost(DType::kF32, {1, 128})};
  ScanTargetGroup normalized{.kind = ScanTargetGroup::Kind::kNeurons,
                             .hook = Hook("blocks.0.ln1.hook_normalized")};
  ScanTargetGroup head{.kind = ScanTargetGroup::Kind::kHeadNorms,
                       .hook = Hook("blocks.0.attn.hook_result")};
  const std::vector<ScoredExcerpt> good = Excerpts({4, 3}, {false, true}, 12);
  struct Case {
    std::string name;
    const ScanTargetGroup* group;
    std::function<void(std::vector<ScoredExcerpt>&)> edit;
    bool ablation;
    std::string phrase;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<Case> cases = {
      {"ablation of a zero direction", &direction, [](auto&) {}, true,
       "the direction is zero: its activation cannot be set"},
      {"ablation of a head's norm", &head, [](auto&) {}, true,
       "the ablation score replaces the unit's activation: it needs a neuron or direction at an "
       "editable hook (e.g. blocks.L.mlp.hook_post) or an SAE feature, not a head's norm or "
       "attention at blocks.0.attn.hook_result"},
      {"ablation at a hook that cannot be edited", &normalized, [](auto&) {}, true,
       "not blocks.0.ln1.hook_normalized"},
      {"fewer simulated than tokens", &neuron, [](auto& e) { e[1].simulated.pop_back(); }, false,
       "excerpts[1] has 3 tokens and 2 simulated activations"},
      {"more simulated than tokens", &neuron, [](auto& e) { e[0].simulated.push_back(1); }, true,
       "excerpts[0] has 4 tokens and 5 simulated activations"},
      {"no excerpts", &neuron, [](auto& e) { e.clear(); }, false, "no excerpts to score"},
      {"an empty excerpt", &neuron,
       [](auto& e) {
         e[1].tokens.clear();
         e[1].simulated.clear();
       },
       false, "excerpts[1] has no tokens"},
      {"NaN simulated", &neuron, [nan](auto& e) { e[0].simulated[2] = nan; }, false,
       "excerpts[0] simulates a non-finite activation"},
      {"infinite simulated", &neuron, [inf](auto& e) { e[1].simulated[0] = -inf; }, true,
       "excerpts[1] simulates a non-finite activation"},
      {"longer than n_ctx", &neuron,
       [](auto& e) {
         e[0].tokens.assign(129, 1);
         e[0].simulated.assign(129, 0);
       },
       false, "an excerpt of 129 tokens is longer than n_ctx 128"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<ScoredExcerpt> excerpts = good;
    c.edit(excerpts);
    absl::StatusOr<ExplanationScores> got = ScoreExplanation(
        *model_,
        {.target = {.group = c.group, .unit = 0}, .excerpts = excerpts, .ablation = c.ablation});
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << got.status();
    EXPECT_THAT(std::string(got.status().message()), HasSubstr(c.phrase));
  }
  // The same requests are fine without the fault.
  EXPECT_TRUE(ScoreExplanation(*model_, {.target = {.group = &direction}, .excerpts = good}).ok());
  EXPECT_TRUE(
      ScoreExplanation(*model_, {.target = {.group = &neuron}, .excerpts = good, .ablation = true})
          .ok());
}

}  // namespace
}  // namespace glassbox
