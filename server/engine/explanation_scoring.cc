#include "server/engine/explanation_scoring.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/engine/host_captures.h"
#include "server/engine/host_math.h"
#include "server/engine/intervention.h"
#include "server/engine/sae_encode.h"
#include "server/engine/sae_hooks.h"

namespace glassbox {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Logits held at once per pass: rows x positions x vocab f32 (128 MiB).
constexpr int64_t kLogitValues = int64_t{32} << 20;

// Excerpts [first, first + n) right-padded: tokens and mask [n, longest].
std::pair<Tensor, Tensor> PadRows(const std::vector<ScoredExcerpt>& excerpts, size_t first,
                                  size_t n, int64_t longest) {
  Tensor tokens = Tensor::ZerosHost(DType::kI32, {static_cast<int64_t>(n), longest});
  Tensor mask = Tensor::ZerosHost(DType::kI32, {static_cast<int64_t>(n), longest});
  for (size_t r = 0; r < n; ++r) {
    const auto& t = excerpts[first + r].tokens;
    std::copy(t.begin(), t.end(), tokens.data<int32_t>() + r * longest);
    std::fill_n(mask.data<int32_t>() + r * longest, t.size(), 1);
  }
  return {tokens, mask};
}

// Row-wise log-softmax of host logits [rows, vocab], in place.
void LogSoftmaxRows(Tensor& logits) {
  const int64_t vocab = logits.dim(logits.rank() - 1), rows = logits.numel() / vocab;
  float* x = logits.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * vocab;
    const auto lse = static_cast<float>(LogSumExp(row, vocab));
    for (int64_t j = 0; j < vocab; ++j) row[j] -= lse;
  }
}

// The target unit's activation replaced by `wanted[r][p]` at every real position of the chunk's
// rows, nothing else changed, as edits added to `plan`:
// - a neuron: set (kSet of that element);
// - an SAE feature: the SAE spliced in with its error term, the feature clamped token by token,
//   so the hook's value moves by (wanted - f_i(x)) along the feature's decoder row (and through
//   the SAE's own normalisation, where it has one);
// - a direction v: x += (wanted - x.v) v / |v|^2, so that x.v becomes `wanted`.
absl::Status ReplaceUnit(const Transformer& model, const ScanTargetGroup& group, int32_t unit,
                         const std::vector<std::vector<float>>& wanted,
                         const std::vector<std::vector<float>>& truth, int64_t longest,
                         const TokenLayout& layout, HookPlan& plan) {
  const HookInfo& info = model.hooks().info(group.hook);
  const int64_t n = static_cast<int64_t>(wanted.size());
  int64_t width = 1;
  for (size_t d = 2; d < info.dims.size(); ++d) width *= info.dims[d].size;
  switch (group.kind) {
    case ScanTargetGroup::Kind::kSaeFeatures: {
      SaeSplice splice{.sae = group.sae, .options = {.use_error_term = true}};
      for (int64_t r = 0; r < n; ++r) {
        for (size_t p = 0; p < wanted[r].size(); ++p) {
          splice.options.edits.push_back({.kind = FeatureEditKind::kClamp,
                                          .features = {unit},
                                          .value = wanted[r][p],
                                          .tokens = {r * longest + static_cast<int64_t>(p)}});
        }
      }
      return plan.AddSaeSplice(group.hook, std::move(splice));
    }
    case ScanTargetGroup::Kind::kNeurons:
    case ScanTargetGroup::Kind::kDirections: {
      Tensor value = Tensor::ZerosHost(DType::kF32, info.ShapeFor(n, longest));
      float* out = value.data<float>();
      Intervention edit{.hook = group.hook};
      if (group.kind == ScanTargetGroup::Kind::kNeurons) {
        for (int64_t r = 0; r < n; ++r) {
          for (size_t p = 0; p < wanted[r].size(); ++p) {
            out[(r * longest + static_cast<int64_t>(p)) * width + unit] = wanted[r][p];
          }
        }
        // The unit counts across the hook's trailing axes; at a head hook ([.., head, d_head])
        // the edit selects the head and the index within it.
        edit.kind = InterventionKind::kSet;
        if (info.dims.size() == 4) {
          const int32_t d_head = static_cast<int32_t>(info.dims[3].size);
          edit.select = {.heads = {unit / d_head}, .dims = {unit % d_head}};
        } else {
          edit.select = {.dims = {unit}};
        }
      } else {
        const float* v = group.directions.data<float>() + int64_t{unit} * width;
        double norm2 = 0;
        for (int64_t i = 0; i < width; ++i) norm2 += double{v[i]} * v[i];
        if (norm2 == 0) return absl::InvalidArgumentError("the direction is zero: its activation cannot be set");
        for (int64_t r = 0; r < n; ++r) {
          for (size_t p = 0; p < wanted[r].size(); ++p) {
            const double scale = (double{wanted[r][p]} - truth[r][p]) / norm2;
            float* x = out + (r * longest + static_cast<int64_t>(p)) * width;
            for (int64_t i = 0; i < width; ++i) x[i] = static_cast<float>(scale * v[i]);
          }
        }
        edit.kind = InterventionKind::kAdd;
      }
      edit.value = std::move(value);
      GB_RETURN_IF_ERROR(ValidateIntervention(edit, info, n, longest, layout));
      return plan.AddIntervention(std::move(edit));
    }
    case ScanTargetGroup::Kind::kHeadNorms:
    case ScanTargetGroup::Kind::kAttentionTo:
      break;
  }
  return absl::InvalidArgumentError("a head's norm or attention cannot be set");
}

}  // namespace

double Pearson(const std::vector<double>& a, const std::vector<double>& b) {
  const size_t n = a.size();
  if (n < 2 || b.size() != n) return kNaN;
  double ma = 0, mb = 0;
  for (size_t i = 0; i < n; ++i) ma += a[i], mb += b[i];
  ma /= n, mb /= n;
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < n; ++i) {
    sab += (a[i] - ma) * (b[i] - mb), saa += (a[i] - ma) * (a[i] - ma), sbb += (b[i] - mb) * (b[i] - mb);
  }
  return saa > 0 && sbb > 0 ? sab / std::sqrt(saa * sbb) : kNaN;
}

double JensenShannon(const float* log_p, const float* log_q, int64_t n) {
  double jsd = 0;
  for (int64_t j = 0; j < n; ++j) {
    const double p = std::exp(double{log_p[j]}), q = std::exp(double{log_q[j]});
    const double m = 0.5 * (p + q);
    if (m <= 0) continue;
    const double log_m = std::log(m);
    if (p > 0) jsd += 0.5 * p * (log_p[j] - log_m);
    if (q > 0) jsd += 0.5 * q * (log_q[j] - log_m);
  }
  return std::max(0.0, jsd);
}

absl::StatusOr<ExplanationScores> ScoreExplanation(const Transformer& model,
                                                   const ExplanationScoreRequest& request) {
  const ScanTargetGroup& group = *request.target.group;
  const HookInfo& info = model.hooks().info(group.hook);
  const int32_t unit = request.target.unit;
  if (request.excerpts.empty()) return absl::InvalidArgumentError("no excerpts to score");
  int64_t longest = 0;
  for (size_t i = 0; i < request.excerpts.size(); ++i) {
    const ScoredExcerpt& e = request.excerpts[i];
    if (e.tokens.empty())
      return absl::InvalidArgumentError(absl::StrCat("excerpts[", i, "] has no tokens"));
    if (e.simulated.size() != e.tokens.size())
      return absl::InvalidArgumentError(absl::StrCat("excerpts[", i, "] has ", e.tokens.size(),
                                                     " tokens and ", e.simulated.size(),
                                                     " simulated activations"));
    for (float s : e.simulated) {
      if (!std::isfinite(s))
        return absl::InvalidArgumentError(absl::StrCat("excerpts[", i, "] simulates a non-finite activation"));
    }
    longest = std::max<int64_t>(longest, static_cast<int64_t>(e.tokens.size()));
  }
  if (longest > model.config().n_ctx)
    return absl::InvalidArgumentError(absl::StrCat("an excerpt of ", longest,
                                                   " tokens is longer than n_ctx ",
                                                   model.config().n_ctx));
  const bool ablate = request.ablation;
  const bool spliced = group.kind == ScanTargetGroup::Kind::kSaeFeatures;
  const bool head = group.kind == ScanTargetGroup::Kind::kHeadNorms ||
                    group.kind == ScanTargetGroup::Kind::kAttentionTo;
  if (ablate && (head || (!spliced && !IsEditableHook(info.kind))))
    return absl::InvalidArgumentError(absl::StrCat(
        "the ablation score replaces the unit's activation: it needs a neuron or direction at an "
        "editable hook (e.g. blocks.L.mlp.hook_post) or an SAE feature, not ",
        head ? "a head's norm or attention at " : "", info.name));
  if (ablate && group.kind == ScanTargetGroup::Kind::kDirections) {
    const int64_t width = group.directions.dim(1);
    const float* v = group.directions.data<float>() + int64_t{unit} * width;
    if (std::all_of(v, v + width, [](float x) { return x == 0.0f; }))
      return absl::InvalidArgumentError("the direction is zero: its activation cannot be set");
  }
  const int64_t vocab = model.config().vocab_size;
  const int64_t rows_per_pass =
      ablate ? std::max<int64_t>(1, kLogitValues / (longest * vocab)) : 64;

  ExplanationScores scores;
  std::vector<double> sim_all, true_all, sim_random, true_random;
  // Pass 1 per chunk: true activations (and the clean logits when ablating, kept for pass 2).
  std::vector<Tensor> clean_log_probs;
  const size_t total = request.excerpts.size();
  for (size_t first = 0; first < total; first += rows_per_pass) {
    const size_t n = std::min<size_t>(rows_per_pass, total - first);
    auto [tokens, mask] = PadRows(request.excerpts, first, n, longest);
    HookPlan plan(model.hooks());
    plan.CaptureId(group.hook);
    HostCaptures sink(model.backend());
    ForwardOptions options{.logits = ablate ? LogitsMode::kAll : LogitsMode::kNone,
                           .cancelled = request.cancelled};
    if (!ablate) options.stop_at_layer = StopAtLayerReaching(info, model.config());
    GB_ASSIGN_OR_RETURN(ForwardOutput out,
                        model.Forward({.tokens = tokens, .attention_mask = mask}, plan, &sink, options));
    GB_ASSIGN_OR_RETURN(Tensor acts, GroupActivations(group, info, sink.at(group.hook)));
    const int64_t full = acts.dim(1);
    for (size_t r = 0; r < n; ++r) {
      const ScoredExcerpt& e = request.excerpts[first + r];
      std::vector<float> truth(e.tokens.size());
      for (size_t p = 0; p < e.tokens.size(); ++p) {
        truth[p] = acts.data<float>()[(r * longest + p) * full + unit];
        sim_all.push_back(e.simulated[p]);
        true_all.push_back(truth[p]);
        if (e.random) sim_random.push_back(e.simulated[p]), true_random.push_back(truth[p]);
      }
      scores.true_activations.push_back(std::move(truth));
    }
    if (ablate) {
      LogSoftmaxRows(out.logits);
      clean_log_probs.push_back(std::move(out.logits));
    }
  }
  scores.correlation_all = Pearson(sim_all, true_all);
  scores.correlation_random = Pearson(sim_random, true_random);
  if (!ablate) return scores;

  // Calibration: least squares of the true activations on the simulated ones.
  const double count = static_cast<double>(sim_all.size());
  double ms = 0, mt = 0;
  for (size_t i = 0; i < sim_all.size(); ++i) ms += sim_all[i], mt += true_all[i];
  ms /= count, mt /= count;
  double sst = 0, sss = 0;
  for (size_t i = 0; i < sim_all.size(); ++i)
    sst += (sim_all[i] - ms) * (true_all[i] - mt), sss += (sim_all[i] - ms) * (sim_all[i] - ms);
  scores.slope = sss > 0 ? sst / sss : 0;
  scores.intercept = mt - scores.slope * ms;
  const float mean = request.mean_activation.value_or(static_cast<float>(mt));

  // Passes 2 and 3: the unit set to the calibrated simulation, then to the mean, at every real
  // position (ReplaceUnit); JSD against the clean distributions, averaged over every real
  // position.
  double jsd_sim = 0, jsd_mean = 0;
  for (size_t first = 0, chunk = 0; first < total; first += rows_per_pass, ++chunk) {
    const size_t n = std::min<size_t>(rows_per_pass, total - first);
    auto [tokens, mask] = PadRows(request.excerpts, first, n, longest);
    const TokenLayout layout = TokenLayout::FromMask(mask);
    std::vector<std::vector<float>> truth(scores.true_activations.begin() + first,
                                          scores.true_activations.begin() + first + n);
    for (int replacement = 0; replacement < 2; ++replacement) {
      std::vector<std::vector<float>> wanted(n);
      for (size_t r = 0; r < n; ++r) {
        const ScoredExcerpt& e = request.excerpts[first + r];
        for (float simulated : e.simulated) {
          wanted[r].push_back(replacement == 0
                                  ? static_cast<float>(scores.slope * simulated + scores.intercept)
                                  : mean);
        }
      }
      HookPlan plan(model.hooks());
      GB_RETURN_IF_ERROR(ReplaceUnit(model, group, unit, wanted, truth, longest, layout, plan));
      GB_ASSIGN_OR_RETURN(ForwardOutput out,
                          model.Forward({.tokens = tokens, .attention_mask = mask}, plan, nullptr,
                                        {.logits = LogitsMode::kAll, .cancelled = request.cancelled}));
      LogSoftmaxRows(out.logits);
      double& sum = replacement == 0 ? jsd_sim : jsd_mean;
      for (size_t r = 0; r < n; ++r) {
        for (size_t p = 0; p < request.excerpts[first + r].tokens.size(); ++p) {
          const int64_t at = (r * longest + p) * vocab;
          sum += JensenShannon(clean_log_probs[chunk].data<float>() + at,
                               out.logits.data<float>() + at, vocab);
        }
      }
    }
  }
  scores.jsd_simulation = jsd_sim / count;
  scores.jsd_mean = jsd_mean / count;
  scores.ablation_score =
      scores.jsd_mean > 0 ? 1 - scores.jsd_simulation / scores.jsd_mean : kNaN;
  return scores;
}

}  // namespace glassbox
