// Greedy decode throughput of the engine's Generate on a HuggingFace model directory, printed as
// one JSON line so bench/generate.sh can set it beside HF generate's figure from the same run.
// The prompts and the steering direction are what bench/hf_generate.py uses (seeded the same).
//
//   generate_bench --model DIR --batch 1 --prompt 16 --new 64 [--steer] [--no_cache]
// Thread count: OMP_NUM_THREADS (one OpenMP pool for the loops and oneDNN).
#include <chrono>
#include <cmath>
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/generate.h"

ABSL_FLAG(std::string, model, "", "HuggingFace model directory");
ABSL_FLAG(int, batch, 1, "rows generated together");
ABSL_FLAG(int, prompt, 16, "prompt tokens per row");
ABSL_FLAG(int, new_tokens, 64, "tokens generated per row");
ABSL_FLAG(int, repeats, 3, "timed generations (the best is reported)");
ABSL_FLAG(bool, steer, false, "add a direction to blocks.1.hook_resid_pre at every step");
ABSL_FLAG(bool, no_cache, false, "recompute the sequence every step instead of a KV cache");

namespace glassbox {
namespace {

int Main() {
  auto model = Transformer::Load(absl::GetFlag(FLAGS_model), std::make_shared<CpuBackend>());
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 1;
  }
  const ModelConfig& c = (*model)->config();
  const int batch = absl::GetFlag(FLAGS_batch), prompt = absl::GetFlag(FLAGS_prompt);
  const int new_tokens = absl::GetFlag(FLAGS_new_tokens);
  // Prompt ids 1 + (17 r + 31 s) mod (vocab - 1), as bench/hf_generate.py builds them.
  std::vector<std::vector<int32_t>> prompts(batch);
  for (int r = 0; r < batch; ++r) {
    for (int s = 0; s < prompt; ++s) {
      prompts[r].push_back(static_cast<int32_t>(1 + (17 * r + 31 * s) % (c.vocab_size - 1)));
    }
  }
  HookPlan plan((*model)->hooks());
  if (absl::GetFlag(FLAGS_steer)) {
    Tensor direction = Tensor::EmptyHost(DType::kF32, {c.d_model});
    for (int64_t i = 0; i < c.d_model; ++i) direction.data<float>()[i] = std::sin(0.1f * i);
    const absl::Status added = plan.AddIntervention({.hook = (*model)->hooks().Find(HookKind::kResidPre, 1),
                                                     .kind = InterventionKind::kAdd,
                                                     .coefficient = 2.0f,
                                                     .value = direction});
    if (!added.ok()) return 1;
  }
  GenerateParams params{.max_new_tokens = new_tokens};
  params.use_kv_cache = !absl::GetFlag(FLAGS_no_cache);
  double best = 1e30;
  for (int i = 0; i < absl::GetFlag(FLAGS_repeats) + 1; ++i) {  // the first run warms up
    const auto start = std::chrono::steady_clock::now();
    auto out = Generate(**model, prompts, plan, params, nullptr);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!out.ok()) {
      std::fprintf(stderr, "%s\n", out.status().ToString().c_str());
      return 1;
    }
    if (i > 0) best = std::min(best, seconds);
  }
  std::printf("{\"impl\":\"glassbox\", \"tokens_per_s\":%.1f, \"batch\":%d, \"new_tokens\":%d}\n",
              static_cast<double>(batch) * new_tokens / best, batch, new_tokens);
  return 0;
}

}  // namespace
}  // namespace glassbox

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return glassbox::Main();
}
