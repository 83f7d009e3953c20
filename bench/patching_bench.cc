// A full activation-patching sweep with the engine (batched), timed, printed as one JSON line
// for bench/patching.sh to set beside transformer_lens.patching on the same weights.
//
//   patching_bench --model DIR --kind resid_pre|head_out_all_pos [--pairs 1] [--seq 16]
#include <chrono>
#include <cstdio>
#include <random>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/patching.h"

ABSL_FLAG(std::string, model, "", "HuggingFace model directory");
ABSL_FLAG(std::string, kind, "resid_pre", "resid_pre or head_out_all_pos");
ABSL_FLAG(int, pairs, 1, "clean/corrupted prompt pairs");
ABSL_FLAG(int, seq, 16, "tokens per prompt");
ABSL_FLAG(int, max_rows, 64, "rows per batched forward pass");

namespace glassbox {
namespace {

int Main() {
  auto model = Transformer::Load(absl::GetFlag(FLAGS_model), std::make_shared<CpuBackend>());
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 1;
  }
  const int pairs = absl::GetFlag(FLAGS_pairs), seq = absl::GetFlag(FLAGS_seq);
  // The same token ids bench/tl_patching.py uses: seeded by position, corrupted at position 2.
  std::vector<int32_t> clean(pairs * seq), corrupted;
  for (int i = 0; i < pairs * seq; ++i) clean[i] = (i * 7919 + 13) % 50000;
  corrupted = clean;
  for (int p = 0; p < pairs; ++p) corrupted[p * seq + 2] = (clean[p * seq + 2] + 1) % 50000;
  const std::string kind = absl::GetFlag(FLAGS_kind);
  PatchingRequest request{.clean = Tensor::FromHost(clean, {pairs, seq}),
                          .corrupted = Tensor::FromHost(corrupted, {pairs, seq}),
                          .kind = kind == "resid_pre" ? SweepKind::kResidPre : SweepKind::kHeadOutAllPos,
                          .metric = {.token_a = 17, .token_b = 42},
                          .max_rows_per_pass = absl::GetFlag(FLAGS_max_rows)};
  const auto start = std::chrono::steady_clock::now();
  auto result = RunPatchingSweep(**model, request);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!result.ok()) {
    std::fprintf(stderr, "%s\n", result.status().ToString().c_str());
    return 1;
  }
  std::printf("{\"impl\":\"glassbox\", \"kind\":\"%s\", \"seconds\":%.3f, \"cells\":%lld, \"passes\":%d, "
              "\"first\":%.6f}\n",
              kind.c_str(), seconds, static_cast<long long>(result->values.numel()), result->forward_passes,
              result->values.data<float>()[0]);
  return 0;
}

}  // namespace
}  // namespace glassbox

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return glassbox::Main();
}
