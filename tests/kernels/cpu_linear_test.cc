// The CPU Linear op against its definition in double precision, and its packed weights
// (cpu::PackWeight, CpuBackend::PrepareLinearWeights): the same products bit for bit at every
// row count, kept all-or-none within the backend's budget and given back with their storage.
// Model parity tests cover Linear through HF; this pins the op and the packing themselves.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/gemm.h"

namespace glassbox {
namespace {

Tensor Random(Shape shape, std::mt19937& rng) {
  std::normal_distribution<float> dist;
  Tensor t = Tensor::EmptyHost(DType::kF32, std::move(shape));
  for (float& v : t.span<float>()) v = dist(rng);
  return t;
}

bool SameBits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

struct Shape3 {
  int64_t m, n, k;
};

class CpuLinearTest : public ::testing::TestWithParam<Shape3> {};

TEST_P(CpuLinearTest, MatchesTheDefinition) {
  const auto [m, n, k] = GetParam();
  std::mt19937 rng(static_cast<unsigned>(m * 7919 + n * 31 + k));
  const Tensor x = Random({m, k}, rng), w = Random({n, k}, rng), bias = Random({n}, rng);
  CpuBackend backend;
  if (m % 2 == 1) {  // half the shapes through packed weights
    const Tensor* weights[] = {&w};
    ASSERT_TRUE(backend.PrepareLinearWeights(weights).ok());
  }
  Tensor y = Tensor::EmptyHost(DType::kF32, {m, n});
  ASSERT_TRUE(backend.Linear(x, w, &bias, Activation::kIdentity, y).ok());
  double err = 0, norm = 0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double want = bias.data<float>()[j];
      for (int64_t p = 0; p < k; ++p)
        want += double{x.data<float>()[i * k + p]} * w.data<float>()[j * k + p];
      const double got = y.data<float>()[i * n + j];
      err += (got - want) * (got - want), norm += want * want;
    }
  }
  EXPECT_LT(std::sqrt(err / norm), 1e-6);
}

// Packing changes where the matmul reads w from, not what it computes: every row count (below
// 16 rows the sgemm path, which reads w itself; above, the matmul) gives the very same bits.
TEST_P(CpuLinearTest, PackedWeightsGiveTheSameBits) {
  const auto [m, n, k] = GetParam();
  std::mt19937 rng(static_cast<unsigned>(m + n * 131 + k * 17));
  const Tensor x = Random({m, k}, rng), w = Random({n, k}, rng), bias = Random({n}, rng);
  auto packed = cpu::PackWeight(n, k, w.data<float>());
  ASSERT_TRUE(packed.ok()) << packed.status();
  for (Activation act : {Activation::kIdentity, Activation::kGeluTanh}) {
    for (const Tensor* b : {&bias, static_cast<const Tensor*>(nullptr)}) {
      Tensor plain = Tensor::EmptyHost(DType::kF32, {m, n});
      Tensor fast = Tensor::EmptyHost(DType::kF32, {m, n});
      const float* bias_data = b != nullptr ? b->data<float>() : nullptr;
      ASSERT_TRUE(cpu::Linear(m, n, k, x.data<float>(), w.data<float>(), nullptr, bias_data, act,
                              plain.data<float>())
                      .ok());
      ASSERT_TRUE(cpu::Linear(m, n, k, x.data<float>(), w.data<float>(), packed->get(), bias_data,
                              act, fast.data<float>())
                      .ok());
      EXPECT_TRUE(SameBits(plain, fast)) << m << "x" << n << "x" << k;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CpuLinearTest,
                         ::testing::Values(Shape3{1, 64, 32}, Shape3{2, 96, 48}, Shape3{15, 96, 48},
                                           Shape3{16, 96, 48}, Shape3{24, 1024, 256},
                                           Shape3{24, 256, 1024}, Shape3{129, 300, 64},
                                           Shape3{40, 1000, 333}, Shape3{200, 77, 130}));

TEST(CpuPackedWeightsTest, PreparedWeightsAreUsedCountedAndGivenBack) {
  std::mt19937 rng(3);
  CpuBackend backend;
  const Tensor x = Random({32, 256}, rng);
  Tensor before = Tensor::EmptyHost(DType::kF32, {32, 512});
  Tensor after = Tensor::EmptyHost(DType::kF32, {32, 512});
  {
    const Tensor w1 = Random({512, 256}, rng), w2 = Random({256, 512}, rng);
    ASSERT_TRUE(backend.Linear(x, w1, nullptr, Activation::kIdentity, before).ok());
    const Tensor* weights[] = {&w1, &w2};
    auto kept = backend.PrepareLinearWeights(weights);
    ASSERT_TRUE(kept.ok()) << kept.status();
    EXPECT_GE(*kept, static_cast<int64_t>(w1.nbytes() + w2.nbytes()));
    EXPECT_EQ(backend.packed_weight_bytes(), *kept);
    EXPECT_NE(w1.derived(), nullptr);
    EXPECT_NE(w2.derived(), nullptr);
    // A view of other rows is another view: nothing of w1's form applies to it.
    EXPECT_EQ(w1.Slice0(0, 256).derived(), nullptr);
    ASSERT_TRUE(backend.Linear(x, w1, nullptr, Activation::kIdentity, after).ok());
    EXPECT_TRUE(SameBits(before, after));
    // Preparing again keeps nothing more.
    auto again = backend.PrepareLinearWeights(weights);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, 0);
    EXPECT_EQ(backend.packed_weight_bytes(), *kept);
  }
  // The weights' storage is gone, and their packed forms with it.
  EXPECT_EQ(backend.packed_weight_bytes(), 0);
}

TEST(CpuPackedWeightsTest, AllOrNoneWithinTheBudget) {
  std::mt19937 rng(5);
  const Tensor w1 = Random({512, 256}, rng), w2 = Random({512, 256}, rng);
  const Tensor* weights[] = {&w1, &w2};
  CpuBackend small({.packed_weight_bytes = static_cast<int64_t>(w1.nbytes()) + 1});
  auto kept = small.PrepareLinearWeights(weights);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(*kept, 0);
  EXPECT_EQ(w1.derived(), nullptr);
  EXPECT_EQ(w2.derived(), nullptr);
  CpuBackend off({.packed_weight_bytes = 0});
  ASSERT_TRUE(off.PrepareLinearWeights(weights).ok());
  EXPECT_EQ(w1.derived(), nullptr);
}

TEST(CpuPackedWeightsTest, RefusesWhatIsNotAWeight) {
  CpuBackend backend;
  const Tensor vector = Tensor::ZerosHost(DType::kF32, {8});
  const Tensor undefined;
  for (const Tensor* bad : {&vector, &undefined}) {
    const Tensor* weights[] = {bad};
    EXPECT_EQ(backend.PrepareLinearWeights(weights).status().code(), absl::StatusCode::kInternal);
  }
}

}  // namespace
}  // namespace glassbox
