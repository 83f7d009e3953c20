// The CPU backend's activation functions, one value at a time, inline so that loops over them
// vectorize. tanh is a rational approximation rather than libm's tanhf: tanhf is a scalar call
// with branches, and in a small GPT-2's forward pass (the demo model, 39 x 24 tokens) GELU's
// tanhf took half the instructions (callgrind). Exact GELU, SiLU and quick GELU keep libm.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "base/activation.h"

namespace glassbox {

// tanh(x) as Eigen 3.4's generic_fast_tanh_float: an odd degree-13 over an even degree-6
// polynomial in x clamped to +-7.90531 (where tanh is 1 in f32 to within an ulp). Its error is
// below 4e-7 absolute everywhere (3.6e-7 at worst, near |x| = 5.9, a few ulp of values near 1;
// tests/kernels/cpu_activation_test.cc checks it against double tanh on a dense grid); in GELU
// that is below 2e-7 of |x|, under what the parity tests against HF allow.
inline float RationalTanh(float x) {
  x = std::clamp(x, -7.90531110763549805f, 7.90531110763549805f);
  const float x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * x;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return p / q;
}

// exp(x) without libm, inline so that loops over it vectorize (softmax rows): Cephes' expf,
// exp(x) = 2^n exp(r) with n = round(x / ln 2), r = x - n ln 2 (ln 2 split in two, so r is
// exact) and a degree-6 polynomial for exp(r) on [-ln2/2, ln2/2]; 2^n goes straight into the
// exponent bits. Relative error below 3e-7 for x in [-87.3, 88] (tests/kernels/
// cpu_activation_test.cc checks it against double exp); below -87.3 it is 0 (exp is subnormal
// there), above 88 it stays exp(88). Softmax only exponentiates s - max <= 0.
inline float VectorExp(float x) {
  const float clamped = std::min(std::max(x, -87.3365447f), 88.0f);
  // round(x log2 e) with the 1.5 * 2^23 trick: adding it leaves the rounded integer in the low
  // mantissa bits (round to nearest even, the default mode), and vectorizes everywhere.
  constexpr float kShift = 12582912.0f;
  const float shifted = clamped * 1.44269504088896341f + kShift;
  const float n = shifted - kShift;
  float r = clamped - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // n is in [-126, 127]
  float two_to_n;
  static_assert(sizeof(two_to_n) == sizeof(bits));
  __builtin_memcpy(&two_to_n, &bits, sizeof(two_to_n));
  return x < -87.3365447f ? 0.0f : p * two_to_n;
}

// HF's gelu_new / gelu_pytorch_tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
inline float GeluTanh(float x) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  return 0.5f * x * (1.0f + RationalTanh(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
}

// One value; shared by the CPU ops and by tests.
inline float ApplyActivation(Activation act, float x) {
  switch (act) {
    case Activation::kIdentity:
      return x;
    case Activation::kGeluTanh:
      return GeluTanh(x);
    case Activation::kGeluExact:
      return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f));
    case Activation::kGeluQuick:
      return x / (1.0f + std::exp(-1.702f * x));
    case Activation::kRelu:
      return x > 0 ? x : 0;
    case Activation::kSilu:
      return x / (1.0f + std::exp(-x));
  }
  return x;
}

// out[i] = act(in[i] + bias[i]) for i < n (bias may be null; out may be in). The activation is
// chosen outside the loop so that the tanh GELU loop, the hot one, vectorizes.
inline void ActivateRun(Activation act, const float* in, const float* bias, float* out, int64_t n) {
  if (act == Activation::kGeluTanh) {
    if (bias == nullptr) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) out[i] = GeluTanh(in[i]);
    } else {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) out[i] = GeluTanh(in[i] + bias[i]);
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = ApplyActivation(act, bias ? in[i] + bias[i] : in[i]);
}

}  // namespace glassbox
