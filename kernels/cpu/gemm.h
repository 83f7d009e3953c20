// Single-precision matrix products on the CPU, through oneDNN (chosen by measurement over
// OpenBLAS and BLIS: bench/gemm/gemm_libraries.sh). Row-major throughout. oneDNN runs on OpenMP,
// the same thread pool as the CPU backend's own loops, so there is one pool for everything.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/activation.h"

namespace glassbox::cpu {

// c[m, n] = alpha · a[m, k] · op(b) + beta · c, op(b) = b[n, k]ᵀ (trans_b) or b[k, n]. k = 0
// gives beta · c (an empty sum).
absl::Status Sgemm(bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                   int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// A weight w[n, k] laid out once in the blocked order oneDNN's matmul reads it in, which the
// matmul otherwise copies out of w on every call: the same products, bit for bit, 1.03-1.19x
// faster at GPT-2-small's shapes with 128 rows and ~1.5x at the demo model's with 24
// (bench/gemm/packed_weights_bench.cc). The layout does not depend on the number of rows. Below
// 16 rows Linear keeps sgemm, which reads w itself: a packed matmul would be ~1.9x faster there
// but sums in another order, about twice as far from the exact product. Defined in gemm.cc.
struct PackedWeight;
absl::StatusOr<std::shared_ptr<const PackedWeight>> PackWeight(int64_t n, int64_t k,
                                                               const float* w);
int64_t PackedWeightBytes(const PackedWeight& packed);

// The linear layer y[m, n] = act(x[m, k] · w[n, k]ᵀ + bias[n]) (bias may be null): the bias is
// added inside the product (a oneDNN matmul, built once per shape) where that pays, the
// activation in a pass over y (the same one Activate applies, so that capturing hook_pre, which
// splits the two, changes no value). `packed` (may be null) is w packed by PackWeight; the
// matmul then reads it instead of w.
absl::Status Linear(int64_t m, int64_t n, int64_t k, const float* x, const float* w,
                    const PackedWeight* packed, const float* bias, Activation act, float* y);

// y[rows, cols] = act(y + bias[col]) in place (bias may be null).
void BiasActivation(float* y, int64_t rows, int64_t cols, const float* bias, Activation act);

}  // namespace glassbox::cpu
