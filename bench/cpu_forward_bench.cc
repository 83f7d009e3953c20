// CPU forward throughput of the engine on a HuggingFace model directory, printed as one JSON
// line so bench/cpu_forward.sh can set it beside PyTorch's figure from the same run.
//
//   cpu_forward_bench --model DIR --batch 1 --seq 128 [--capture_resid]
// Thread count: OMP_NUM_THREADS and OPENBLAS_NUM_THREADS (the runner sets both).
#include <chrono>
#include <cstdio>
#include <random>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/transformer.h"

ABSL_FLAG(std::string, model, "", "HuggingFace model directory");
ABSL_FLAG(int, batch, 1, "sequences per forward pass");
ABSL_FLAG(int, seq, 128, "tokens per sequence");
ABSL_FLAG(int, warmup, 3, "untimed forward passes");
ABSL_FLAG(int, repeats, 10, "timed forward passes");
ABSL_FLAG(bool, capture_resid, false, "capture every blocks.*.hook_resid_post, as a researcher would");

namespace glassbox {
namespace {

class KeepingSink : public CaptureSink {
 public:
  absl::Status OnCapture(HookId, const HookInfo&, const Tensor& value) override {
    kept.push_back(value);
    return absl::OkStatus();
  }
  std::vector<Tensor> kept;
};

int Main() {
  auto model = Transformer::Load(absl::GetFlag(FLAGS_model), std::make_shared<CpuBackend>());
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 1;
  }
  const int batch = absl::GetFlag(FLAGS_batch), seq = absl::GetFlag(FLAGS_seq);
  std::mt19937 rng(0);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>((*model)->config().vocab_size - 1));
  std::vector<int32_t> ids(static_cast<size_t>(batch) * seq);
  for (int32_t& id : ids) id = token(rng);
  ForwardInput input{.tokens = Tensor::FromHost(ids, {batch, seq})};
  HookPlan plan((*model)->hooks());
  if (absl::GetFlag(FLAGS_capture_resid)) {
    if (!plan.Capture("blocks.*.hook_resid_post").ok()) return 1;
  }
  auto run = [&] {
    KeepingSink sink;
    auto out = (*model)->Forward(input, plan, &sink, {.logits = LogitsMode::kAll});
    if (!out.ok()) {
      std::fprintf(stderr, "%s\n", out.status().ToString().c_str());
      std::exit(1);
    }
  };
  for (int i = 0; i < absl::GetFlag(FLAGS_warmup); ++i) run();
  const int repeats = absl::GetFlag(FLAGS_repeats);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < repeats; ++i) run();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("{\"impl\":\"glassbox\", \"tokens_per_s\":%.1f, \"batch\":%d, \"seq\":%d, "
              "\"capture_resid\":%s}\n",
              static_cast<double>(repeats) * batch * seq / seconds, batch, seq,
              absl::GetFlag(FLAGS_capture_resid) ? "true" : "false");
  return 0;
}

}  // namespace
}  // namespace glassbox

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return glassbox::Main();
}
