// The CPU reference rotary embedding against its definition in double precision: each pair of
// features is a complex number multiplied by e^{i·pos·theta_j}, the pairs chosen by the style
// ((j, j + rotary_dim / 2) in rotate-half, (2j, 2j + 1) in GPT-J's adjacent pairs), and the
// features past rotary_dim pass through. Model parity tests cover both styles through HF (Llama
// and Pythia, GPT-J); this pins the op itself, partial dims and in-place use included.
// tests/gpu checks the CUDA kernel against this backend.
#include <cmath>
#include <complex>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"

namespace glassbox {
namespace {

struct Case {
  int64_t tokens, heads, d_head, rotary_dim;
  RotaryStyle style;
  bool in_place;
};

class CpuRotaryTest : public ::testing::TestWithParam<Case> {};

TEST_P(CpuRotaryTest, MatchesTheDefinition) {
  const Case c = GetParam();
  const int64_t n_ctx = 50, half = c.rotary_dim / 2;
  std::mt19937 rng(7 + static_cast<unsigned>(c.d_head * 31 + c.rotary_dim));
  std::uniform_real_distribution<float> dist(-2, 2);
  Tensor x = Tensor::EmptyHost(DType::kF32, {c.tokens, c.heads, c.d_head});
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = dist(rng);
  const std::vector<float> original(x.data<float>(), x.data<float>() + x.numel());

  std::vector<double> theta(half);
  for (int64_t j = 0; j < half; ++j) theta[j] = std::pow(10000.0, -2.0 * j / c.rotary_dim);
  Tensor cos = Tensor::EmptyHost(DType::kF32, {n_ctx, half});
  Tensor sin = Tensor::EmptyHost(DType::kF32, {n_ctx, half});
  for (int64_t p = 0; p < n_ctx; ++p) {
    for (int64_t j = 0; j < half; ++j) {
      cos.data<float>()[p * half + j] = static_cast<float>(std::cos(p * theta[j]));
      sin.data<float>()[p * half + j] = static_cast<float>(std::sin(p * theta[j]));
    }
  }
  Tensor positions = Tensor::EmptyHost(DType::kI32, {c.tokens});
  std::uniform_int_distribution<int32_t> pick(0, n_ctx - 1);
  for (int64_t t = 0; t < c.tokens; ++t) positions.data<int32_t>()[t] = pick(rng);

  CpuBackend backend;
  Tensor out = c.in_place ? x : Tensor::EmptyHost(DType::kF32, x.shape());
  ASSERT_TRUE(
      backend.Rotary(x, cos, sin, positions, static_cast<int>(c.rotary_dim), out, c.style).ok());

  const bool adjacent = c.style == RotaryStyle::kAdjacentPairs;
  double worst = 0;
  for (int64_t t = 0; t < c.tokens; ++t) {
    const double pos = positions.data<int32_t>()[t];
    for (int64_t h = 0; h < c.heads; ++h) {
      const float* in = original.data() + (t * c.heads + h) * c.d_head;
      const float* o = out.data<float>() + (t * c.heads + h) * c.d_head;
      std::vector<double> expected(in, in + c.d_head);
      for (int64_t j = 0; j < half; ++j) {
        const int64_t a = adjacent ? 2 * j : j, b = adjacent ? 2 * j + 1 : j + half;
        const std::complex<double> z =
            std::complex<double>(in[a], in[b]) * std::polar(1.0, pos * theta[j]);
        expected[a] = z.real();
        expected[b] = z.imag();
      }
      for (int64_t f = 0; f < c.d_head; ++f) {
        worst = std::max(worst, std::abs(o[f] - expected[f]));
        if (f >= c.rotary_dim) EXPECT_EQ(o[f], in[f]) << "feature " << f << " must pass through";
      }
    }
  }
  EXPECT_LT(worst, 2e-6);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CpuRotaryTest,
                         ::testing::Values(Case{5, 3, 16, 16, RotaryStyle::kHalf, false},
                                           Case{5, 3, 16, 4, RotaryStyle::kHalf, false},
                                           Case{5, 3, 16, 16, RotaryStyle::kAdjacentPairs, false},
                                           Case{5, 3, 16, 8, RotaryStyle::kAdjacentPairs, false},
                                           Case{7, 2, 12, 6, RotaryStyle::kAdjacentPairs, true},
                                           Case{7, 2, 12, 6, RotaryStyle::kHalf, true},
                                           Case{3, 1, 8, 0, RotaryStyle::kAdjacentPairs, false}),
                         [](const auto& info) {
                           const Case& c = info.param;
                           return std::string(c.style == RotaryStyle::kHalf ? "half" : "adjacent") +
                                  "_dh" + std::to_string(c.d_head) + "_rd" +
                                  std::to_string(c.rotary_dim) + (c.in_place ? "_inplace" : "");
                         });

// The two styles rotate different pairs: on the same input they differ (so a style mixed up
// anywhere between the engine and the kernel cannot pass the parity tests by accident).
TEST(CpuRotary, StylesDiffer) {
  CpuBackend backend;
  Tensor x = Tensor::EmptyHost(DType::kF32, {1, 1, 4});
  for (int i = 0; i < 4; ++i) x.data<float>()[i] = static_cast<float>(i + 1);
  Tensor cos = Tensor::EmptyHost(DType::kF32, {2, 2}), sin = Tensor::EmptyHost(DType::kF32, {2, 2});
  for (int i = 0; i < 4; ++i) {
    cos.data<float>()[i] = 0.6f;
    sin.data<float>()[i] = 0.8f;
  }
  Tensor positions = Tensor::EmptyHost(DType::kI32, {1});
  positions.data<int32_t>()[0] = 1;
  Tensor half = Tensor::EmptyHost(DType::kF32, {1, 1, 4});
  Tensor adjacent = Tensor::EmptyHost(DType::kF32, {1, 1, 4});
  ASSERT_TRUE(backend.Rotary(x, cos, sin, positions, 4, half, RotaryStyle::kHalf).ok());
  ASSERT_TRUE(
      backend.Rotary(x, cos, sin, positions, 4, adjacent, RotaryStyle::kAdjacentPairs).ok());
  // Rotate-half pairs (1, 3) and (2, 4); adjacent pairs (1, 2) and (3, 4).
  EXPECT_FLOAT_EQ(half.data<float>()[0], 1 * 0.6f - 3 * 0.8f);
  EXPECT_FLOAT_EQ(half.data<float>()[2], 3 * 0.6f + 1 * 0.8f);
  EXPECT_FLOAT_EQ(adjacent.data<float>()[0], 1 * 0.6f - 2 * 0.8f);
  EXPECT_FLOAT_EQ(adjacent.data<float>()[1], 2 * 0.6f + 1 * 0.8f);
}

}  // namespace
}  // namespace glassbox
