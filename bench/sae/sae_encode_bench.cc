// SAE encode throughput (tokens/s) on the CPU backend, with random weights made in-process.
// Prints one JSON line per mode; bench/sae/sae_encode.sh runs it beside sae_lens.
//
//   sae_encode_bench --d_in=768 --d_sae=24576 --tokens=2048 --modes=dense,sparse
//
// dense:  Sae::Encode, the [tokens, d_sae] activations (what sae_lens's encode returns)
// sparse: Sae::EncodeSparse with top_k = --top_k (the per-token top features a client gets)
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "server/engine/sae/sae.h"

ABSL_FLAG(int64_t, d_in, 768, "SAE input width");
ABSL_FLAG(int64_t, d_sae, 24576, "SAE features");
ABSL_FLAG(int64_t, tokens, 2048, "tokens per encode call");
ABSL_FLAG(std::string, architecture, "standard", "standard | jumprelu | topk | gated");
ABSL_FLAG(int64_t, k, 64, "topk architecture's k");
ABSL_FLAG(std::string, modes, "dense,sparse", "comma-separated: dense, sparse");
ABSL_FLAG(int64_t, top_k, 64, "features per token returned by the sparse mode");
ABSL_FLAG(double, min_seconds, 3.0, "time each mode for at least this long (after one warm-up)");
ABSL_FLAG(int, min_iters, 3, "and for at least this many calls");

namespace glassbox {
namespace {

// CPU seconds (user + system) of the whole process: under load from other processes this is a
// steadier measure of the work done than wall time.
double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
         1e-6 * (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

// Cheap, parallel, deterministic uniform(-scale, scale) fill (splitmix64 per element): random
// enough for a throughput benchmark and fast for 2^28-element matrices.
Tensor RandomTensor(Shape shape, float scale, uint64_t seed, float offset = 0.0f) {
  Tensor t = Tensor::EmptyHost(DType::kF32, std::move(shape));
  float* p = t.data<float>();
  const int64_t n = t.numel();
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = static_cast<float>(z >> 40) / static_cast<float>(1ull << 24);  // [0, 1)
    p[i] = offset + scale * (2.0f * u - 1.0f);
  }
  return t;
}

int Main() {
  SaeConfig config;
  const std::string arch = absl::GetFlag(FLAGS_architecture);
  config.architecture = arch == "jumprelu" ? SaeArchitecture::kJumpRelu
                        : arch == "topk"   ? SaeArchitecture::kTopK
                        : arch == "gated"  ? SaeArchitecture::kGated
                                           : SaeArchitecture::kStandard;
  config.d_in = absl::GetFlag(FLAGS_d_in);
  config.d_sae = absl::GetFlag(FLAGS_d_sae);
  config.k = absl::GetFlag(FLAGS_k);
  const int64_t d_in = config.d_in, d_sae = config.d_sae, tokens = absl::GetFlag(FLAGS_tokens);
  const float w_scale = std::sqrt(3.0f / static_cast<float>(d_in));  // unit-variance pre-acts

  SaeWeights w;
  w.W_enc = RandomTensor({d_in, d_sae}, w_scale, 1);
  w.W_dec = RandomTensor({d_sae, d_in}, w_scale, 2);
  w.b_dec = RandomTensor({d_in}, 0.1f, 3);
  if (config.architecture == SaeArchitecture::kGated) {
    w.b_gate = RandomTensor({d_sae}, 0.1f, 4, -0.5f);
    w.r_mag = RandomTensor({d_sae}, 0.1f, 5);
    w.b_mag = RandomTensor({d_sae}, 0.1f, 6);
  } else {
    w.b_enc = RandomTensor({d_sae}, 0.1f, 4, -0.5f);
  }
  if (config.architecture == SaeArchitecture::kJumpRelu) {
    w.threshold = RandomTensor({d_sae}, 0.2f, 7, 1.5f);
  }
  auto sae = Sae::Create(config, std::move(w));
  if (!sae.ok()) {
    std::fprintf(stderr, "%s\n", std::string(sae.status().message()).c_str());
    return 1;
  }
  Tensor x = RandomTensor({tokens, d_in}, std::sqrt(3.0f), 8);  // unit variance

  for (absl::string_view mode : absl::StrSplit(absl::GetFlag(FLAGS_modes), ',')) {
    const bool dense = mode == "dense";
    SparseEncodeOptions sparse_options;
    sparse_options.top_k = absl::GetFlag(FLAGS_top_k);
    double nnz = 0;
    auto run = [&](bool count) -> bool {
      if (dense) {
        auto acts = (*sae)->Encode(x);
        if (!acts.ok()) return false;
        if (count) {
          int64_t n = 0;
          for (float v : acts->span<float>()) n += v != 0.0f;
          nnz = static_cast<double>(n) / tokens;
        }
        return true;
      }
      auto acts = (*sae)->EncodeSparse(x, sparse_options);
      if (!acts.ok()) return false;
      nnz = static_cast<double>(acts->nnz()) / tokens;
      return true;
    };
    // Warm-up (untimed): pages in the weights, spins up the thread pools, counts features.
    if (!run(true)) return 1;
    int iters = 0;
    double seconds = 0;
    const double cpu_start = CpuSeconds();
    while (iters < absl::GetFlag(FLAGS_min_iters) || seconds < absl::GetFlag(FLAGS_min_seconds)) {
      const auto start = std::chrono::steady_clock::now();
      if (!run(false)) return 1;
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      ++iters;
    }
    const double cpu = CpuSeconds() - cpu_start;
    std::printf(
        "{\"impl\": \"glassbox\", \"mode\": \"%s\", \"architecture\": \"%s\", \"d_in\": %lld, "
        "\"d_sae\": %lld, \"tokens\": %lld, \"iters\": %d, \"seconds_per_call\": %.4f, "
        "\"tokens_per_s\": %.1f, \"tokens_per_cpu_s\": %.1f, \"features_per_token\": %.1f}\n",
        std::string(mode).c_str(), arch.c_str(), static_cast<long long>(d_in),
        static_cast<long long>(d_sae), static_cast<long long>(tokens), iters, seconds / iters,
        tokens * iters / seconds, tokens * iters / cpu, nnz);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace glassbox

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return glassbox::Main();
}
