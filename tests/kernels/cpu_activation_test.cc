// The CPU backend's rational tanh against double-precision tanh on a dense grid, and the tanh
// GELU built on it against the formula in double: what lets the backend drop libm's tanhf.
#include <cmath>
#include <limits>

#include "gtest/gtest.h"
#include "kernels/cpu/activations.h"
#include "kernels/cpu/cpu_backend.h"

namespace glassbox {
namespace {

TEST(CpuActivationTest, RationalTanhIsWithin4e7OfTanh) {
  double worst = 0, worst_at = 0;
  for (double x = -12; x <= 12; x += 1.0 / 4096) {
    const double err = std::abs(double{RationalTanh(static_cast<float>(x))} -
                                std::tanh(double{static_cast<float>(x)}));
    if (err > worst) worst = err, worst_at = x;
  }
  EXPECT_LT(worst, 4e-7) << "at x = " << worst_at;  // 3.6e-7 at x = -5.92
  EXPECT_EQ(RationalTanh(0.0f), 0.0f);
  EXPECT_FLOAT_EQ(RationalTanh(1e-3f), std::tanh(1e-3f));
  EXPECT_EQ(RationalTanh(100.0f), RationalTanh(7.90531110763549805f));  // clamped, not NaN
  EXPECT_NEAR(RationalTanh(100.0f), 1.0f, 1e-6f);
}

TEST(CpuActivationTest, GeluTanhMatchesTheFormulaInDouble) {
  double worst = 0, worst_at = 0;
  for (double x = -10; x <= 10; x += 1.0 / 1024) {
    const double xf = static_cast<float>(x);
    const double exact =
        0.5 * xf * (1 + std::tanh(std::sqrt(2 / M_PI) * (xf + 0.044715 * xf * xf * xf)));
    // Relative to the value's scale: |x| (and 1 near 0), where f32 rounding itself is ~6e-8.
    const double err =
        std::abs(GeluTanh(static_cast<float>(x)) - exact) / std::max(1.0, std::abs(xf));
    if (err > worst) worst = err, worst_at = x;
  }
  EXPECT_LT(worst, 5e-7) << "at x = " << worst_at;
  EXPECT_EQ(ApplyActivation(Activation::kGeluTanh, 0.75f), GeluTanh(0.75f));
}

TEST(CpuActivationTest, VectorExpIsWithin3e7OfExp) {
  double worst = 0, worst_at = 0;
  for (double x = -87.3; x <= 88; x += 1.0 / 1024) {
    const double xf = static_cast<float>(x);
    const double exact = std::exp(xf);
    const double err = std::abs(double{VectorExp(static_cast<float>(x))} - exact) / exact;
    if (err > worst) worst = err, worst_at = x;
  }
  EXPECT_LT(worst, 3e-7) << "at x = " << worst_at;
  EXPECT_EQ(VectorExp(0.0f), 1.0f);
  EXPECT_EQ(VectorExp(-100.0f), 0.0f);
  EXPECT_EQ(VectorExp(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_TRUE(std::isfinite(VectorExp(1000.0f)));
}

}  // namespace
}  // namespace glassbox
