// Attribution patching beside the exact batched patching sweep it estimates, and one
// forward + backward pass, with the engine on the CPU: printed as JSON lines for
// bench/attribution.sh to set beside torch's backward on the same weights and threads.
//
//   attribution_bench --model DIR [--pairs 2] [--seq 16] [--repeats 3]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/attribution_patching.h"
#include "server/engine/gradients.h"
#include "server/engine/patching.h"

ABSL_FLAG(std::string, model, "", "HuggingFace model directory");
ABSL_FLAG(int, pairs, 2, "clean/corrupted prompt pairs (the batch of the backward pass)");
ABSL_FLAG(int, seq, 16, "tokens per prompt");
ABSL_FLAG(int, repeats, 3, "timed repetitions of the forward + backward pass (median)");

namespace glassbox {
namespace {

double Seconds(const std::function<void()>& fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::vector<double> Ranks(const std::vector<double>& x) {
  std::vector<size_t> order(x.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
  std::vector<double> ranks(x.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && x[order[j + 1]] == x[order[i]]) ++j;
    for (size_t k = i; k <= j; ++k) ranks[order[k]] = (i + j) / 2.0;  // ties share their mean rank
    i = j + 1;
  }
  return ranks;
}

// Spearman's rank correlation: Pearson's on the ranks.
double Spearman(const Tensor& a, const Tensor& b) {
  std::vector<double> x(a.span<float>().begin(), a.span<float>().end());
  std::vector<double> y(b.span<float>().begin(), b.span<float>().end());
  x = Ranks(x);
  y = Ranks(y);
  const double n = static_cast<double>(x.size());
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n;
  const double my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  return sxy / std::sqrt(sxx * syy);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Main() {
  auto model = Transformer::Load(absl::GetFlag(FLAGS_model), std::make_shared<CpuBackend>());
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 1;
  }
  const int pairs = absl::GetFlag(FLAGS_pairs), seq = absl::GetFlag(FLAGS_seq);
  const int32_t vocab = static_cast<int32_t>((*model)->config().vocab_size);
  // Seeded by position; the corrupted prompt differs at two positions, as an IOI pair differs
  // in its names.
  std::vector<int32_t> clean(pairs * seq), corrupted;
  for (int i = 0; i < pairs * seq; ++i) clean[i] = (i * 7919 + 13) % vocab;
  corrupted = clean;
  for (int p = 0; p < pairs; ++p) {
    for (int pos : {2, seq / 2}) corrupted[p * seq + pos] = (clean[p * seq + pos] + 1) % vocab;
  }
  const Tensor clean_t = Tensor::FromHost(clean, {pairs, seq});
  const Tensor corrupted_t = Tensor::FromHost(corrupted, {pairs, seq});
  const PatchingMetric metric{.token_a = 17, .token_b = 42};

  for (SweepKind kind : {SweepKind::kResidPre, SweepKind::kHeadOutAllPos}) {
    const PatchingRequest request{.clean = clean_t, .corrupted = corrupted_t, .kind = kind,
                                  .metric = metric, .max_rows_per_pass = 64};
    absl::StatusOr<PatchingResult> exact, atp;
    const double exact_s = Seconds([&] { exact = RunPatchingSweep(**model, request); });
    const double atp_s = Seconds([&] { atp = RunAttributionPatching(**model, request); });
    if (!exact.ok() || !atp.ok()) {
      std::fprintf(stderr, "%s %s\n", exact.status().ToString().c_str(),
                   atp.status().ToString().c_str());
      return 1;
    }
    std::printf("{\"what\":\"sweep\", \"kind\":\"%s\", \"cells\":%lld, \"exact_seconds\":%.4f, "
                "\"exact_passes\":%d, \"atp_seconds\":%.4f, \"spearman\":%.4f}\n",
                kind == SweepKind::kResidPre ? "resid_pre" : "head_out_all_pos",
                static_cast<long long>(exact->values.numel()), exact_s, exact->forward_passes,
                atp_s, Spearman(exact->normalized, atp->normalized));
  }

  // One forward + backward pass: the logit difference at the last position, differentiated at
  // every block's input (as torch computes it for the same model in bench/torch_backward.py).
  std::vector<HookId> hooks;
  for (int l = 0; l < (*model)->config().n_layers; ++l) {
    hooks.push_back((*model)->hooks().Find(HookKind::kResidPre, l));
  }
  const GradientRequest request{.tokens = clean_t,
                                .metric = {.kind = GradientMetric::Kind::kLogitDiff,
                                           .token_a = 17, .token_b = 42},
                                .hooks = hooks};
  std::vector<double> backward_s, forward_s;
  for (int r = 0; r <= absl::GetFlag(FLAGS_repeats); ++r) {  // the first is a warm-up
    absl::StatusOr<GradientResult> grads;
    const double s = Seconds([&] { grads = ComputeGradients(**model, request); });
    if (!grads.ok()) {
      std::fprintf(stderr, "%s\n", grads.status().ToString().c_str());
      return 1;
    }
    HookPlan plan((*model)->hooks());
    const double f = Seconds([&] {
      (void)(*model)->Forward({.tokens = clean_t}, plan, nullptr, {.logits = LogitsMode::kLast});
    });
    if (r > 0) {
      backward_s.push_back(s);
      forward_s.push_back(f);
    }
  }
  std::printf("{\"what\":\"backward\", \"batch\":%d, \"seq\":%d, \"forward_backward_seconds\":%.4f, "
              "\"forward_seconds\":%.4f}\n",
              pairs, seq, Median(backward_s), Median(forward_s));
  return 0;
}

}  // namespace
}  // namespace glassbox

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return glassbox::Main();
}
