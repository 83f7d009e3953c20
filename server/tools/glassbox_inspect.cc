// glassbox-inspect: runs one hooked forward pass of a local model with the engine library, no
// server involved. Prints each captured hook's shape and norm and the next-token prediction,
// and optionally writes the captures to a safetensors file that numpy and torch can open.
//
//   glassbox-inspect --model DIR --tokens 5,17,42 --capture 'blocks.*.hook_resid_post'
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/safetensors.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/transformer.h"

ABSL_FLAG(std::string, model, "", "HuggingFace model directory");
ABSL_FLAG(std::string, tokens, "", "comma-separated token ids of one sequence");
ABSL_FLAG(std::vector<std::string>, capture, {}, "hook names or globs to capture (comma-separated)");
ABSL_FLAG(int, top_k, 5, "how many next-token predictions to print");
ABSL_FLAG(std::string, out, "", "write captures and logits to this .safetensors file");

namespace glassbox {
namespace {

class KeepingSink : public CaptureSink {
 public:
  absl::Status OnCapture(HookId, const HookInfo& info, const Tensor& value) override {
    captured.emplace_back(info.name, value);
    return absl::OkStatus();
  }
  std::vector<std::pair<std::string, Tensor>> captured;
};

double L2Norm(const Tensor& t) {
  double sum = 0;
  for (float v : t.span<float>()) {
    if (std::isfinite(v)) sum += static_cast<double>(v) * v;
  }
  return std::sqrt(sum);
}

absl::Status Run() {
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) return absl::InvalidArgumentError("--model is required");
  std::vector<int32_t> ids;
  for (absl::string_view piece : absl::StrSplit(absl::GetFlag(FLAGS_tokens), ',', absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(piece, &id)) {
      return absl::InvalidArgumentError(absl::StrFormat("--tokens: \"%s\" is not an integer", piece));
    }
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError("--tokens needs at least one token id");

  auto model = Transformer::Load(model_dir, std::make_shared<CpuBackend>());
  if (!model.ok()) return model.status();
  const ModelConfig& c = (*model)->config();
  std::printf("model %s: %s, %lld layers, d_model %lld, %lld heads (%lld kv), vocab %lld\n",
              model_dir.c_str(), c.model_type.c_str(), static_cast<long long>(c.n_layers),
              static_cast<long long>(c.d_model), static_cast<long long>(c.n_heads),
              static_cast<long long>(c.n_kv_heads), static_cast<long long>(c.vocab_size));

  HookPlan plan((*model)->hooks());
  for (const std::string& pattern : absl::GetFlag(FLAGS_capture)) {
    if (absl::Status s = plan.Capture(pattern); !s.ok()) return s;
  }
  KeepingSink sink;
  ForwardInput input{.tokens = Tensor::FromHost(ids, {1, static_cast<int64_t>(ids.size())})};
  const int64_t vocab = c.vocab_size, seq = static_cast<int64_t>(ids.size());
  const int64_t k = std::clamp<int64_t>(absl::GetFlag(FLAGS_top_k), 0, vocab);
  // The engine computes the last position's top-k on the backend; all logits are kept for --out.
  auto out = (*model)->Forward(input, plan, &sink,
                               {.logits = LogitsMode::kAll, .top_k = k,
                                .outputs_at = OutputPositions::kLast, .loss_per_token = true});
  if (!out.ok()) return out.status();

  std::printf("\n%-36s %-18s %12s\n", "hook", "shape", "L2 norm");
  for (const auto& [name, value] : sink.captured) {
    std::printf("%-36s %-18s %12.4f\n", name.c_str(), ShapeToString(value.shape()).c_str(), L2Norm(value));
  }

  if (k > 0) {
    // Their probabilities: log-probs through the backend's log-sum-exp, as the engine's target
    // log-probs (the model runs on the CPU backend, so the host logits are its tensors).
    const Tensor last = out->logits.Reshape({seq, vocab}).Slice0(seq - 1, seq);
    auto log_probs = LogProbsAt((*model)->backend(), last, out->top_k_indices.span<int32_t>());
    if (!log_probs.ok()) return log_probs.status();
    std::printf("\nnext token after position %lld:\n", static_cast<long long>(seq - 1));
    for (int64_t i = 0; i < k; ++i) {
      std::printf("  id %6d  p = %.4f  logit = %.4f\n", out->top_k_indices.data<int32_t>()[i],
                  std::exp(log_probs->data<float>()[i]), out->top_k_values.data<float>()[i]);
    }
  }
  if (seq > 1) {
    const auto loss = out->loss_per_token.span<float>();
    std::printf("mean loss over %lld predictions: %.4f\n", static_cast<long long>(loss.size()),
                std::accumulate(loss.begin(), loss.end(), 0.0) / loss.size());
  }

  if (const std::string path = absl::GetFlag(FLAGS_out); !path.empty()) {
    std::vector<TensorToWrite> tensors;
    auto add = [&](const std::string& name, const Tensor& t) {
      tensors.push_back({name, SafetensorsDtype::kF32, t.shape(),
                         {static_cast<const std::byte*>(t.raw_data()), t.nbytes()}});
    };
    for (const auto& [name, value] : sink.captured) add(name, value);
    add("logits", out->logits);
    if (absl::Status s = WriteSafetensors(path, tensors); !s.ok()) return s;
    std::printf("wrote %zu tensors to %s\n", tensors.size(), path.c_str());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace glassbox

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Runs one hooked forward pass of a local HuggingFace model.\n"
      "  glassbox-inspect --model DIR --tokens 5,17,42 --capture 'blocks.*.hook_resid_post'");
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s = glassbox::Run(); !s.ok()) {
    std::fprintf(stderr, "glassbox-inspect: %s\n", std::string(s.message()).c_str());
    return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
