// The CPU backend's Linear (kernels/cpu/gemm.h) with the weight as it is beside the same weight
// packed once (cpu::PackWeight, what a loaded model's Linear weights get), at the shapes a
// forward pass multiplies: GPT-2-small's with 128 and 512 tokens, the demo model's with 24, and a
// few rows (decoding a batch; below 16 rows Linear runs sgemm on w either way, so those rows show
// that path unchanged). Rounds alternate the two sides and keep each side's best, so that load
// from other processes hits both alike. Prints GFLOP/s and the ratio.
//
//   OMP_NUM_THREADS=2 build/bench/packed_weights_bench
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "kernels/cpu/gemm.h"

namespace {

struct Shape {
  int64_t m, n, k;
  const char* what;
};

// Seconds per call over a quarter-second run.
template <typename F>
double SecondsPerCall(F&& call) {
  int reps = 0;
  double seconds = 0;
  const auto start = std::chrono::steady_clock::now();
  while (seconds < 0.25) {
    call();
    ++reps;
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return seconds / reps;
}

}  // namespace

int main() {
  using glassbox::Activation;
  namespace cpu = glassbox::cpu;
  const Shape shapes[] = {
      {128, 2304, 768, "gpt2-small qkv, 128 tokens"},
      {128, 768, 768, "gpt2-small attn out"},
      {128, 3072, 768, "gpt2-small mlp in"},
      {128, 768, 3072, "gpt2-small mlp out"},
      {128, 50257, 768, "gpt2-small unembed"},
      {512, 2304, 768, "qkv, 512 tokens"},
      {24, 768, 256, "demo qkv, 24 tokens"},
      {24, 1024, 256, "demo mlp in"},
      {24, 256, 1024, "demo mlp out"},
      {8, 2304, 768, "qkv, decoding 8 rows"},
      {4, 3072, 768, "mlp in, decoding 4 rows"},
      {1, 2304, 768, "qkv, decoding 1 row"},
  };
  constexpr int kRounds = 3;
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  std::printf("%5s %6s %5s %12s %12s %7s  %s\n", "M", "N", "K", "plain GF/s", "packed GF/s",
              "ratio", "shape");
  for (const Shape& s : shapes) {
    std::vector<float> x(s.m * s.k), w(s.n * s.k), b(s.n), y(s.m * s.n);
    for (float& v : x) v = normal(rng);
    for (float& v : w) v = normal(rng);
    for (float& v : b) v = normal(rng);
    auto packed = cpu::PackWeight(s.n, s.k, w.data());
    if (!packed.ok()) {
      std::fprintf(stderr, "packed_weights_bench: %s\n", packed.status().ToString().c_str());
      return 1;
    }
    auto linear = [&](const cpu::PackedWeight* p) {
      return [&, p] {
        (void)cpu::Linear(s.m, s.n, s.k, x.data(), w.data(), p, b.data(), Activation::kIdentity,
                          y.data());
      };
    };
    double plain = 1e30, fast = 1e30;
    for (int r = 0; r < kRounds; ++r) {
      plain = std::min(plain, SecondsPerCall(linear(nullptr)));
      fast = std::min(fast, SecondsPerCall(linear(packed->get())));
    }
    const double gflop = 2.0 * s.m * s.n * s.k / 1e9;
    std::printf("%5lld %6lld %5lld %12.1f %12.1f %6.2fx  %s\n", static_cast<long long>(s.m),
                static_cast<long long>(s.n), static_cast<long long>(s.k), gflop / plain,
                gflop / fast, plain / fast, s.what);
  }
  return 0;
}
