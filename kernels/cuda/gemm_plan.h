// How the CUDA backend runs one matrix product, decided on the host without touching the device:
// the argument checks, which parts of bias + activation cuBLASLt's epilogue computes and which a
// separate kernel does, the operand alignments cuBLASLt may assume, and the split-K reduction
// schemes it may use. A pure function of the problem, so it is unit-tested on machines without a
// GPU (tests/kernels/gemm_plan_test.cc); gemm.cc only translates the plan into cuBLASLt calls.
// Plain C++ (no CUDA headers).
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "base/dtype.h"
#include "kernels/backend.h"

namespace glassbox::cuda_internal {

// out[b][t, n] = act(sum_k x[b][t, k] * w[b][n, k] + bias[n]) for b < batch, all row-major with
// leading dimensions (elements between rows) and batch strides (elements between matrices).
struct GemmProblem {
  int64_t rows = 0;   // t
  int64_t cols = 0;   // n
  int64_t inner = 0;  // k
  int64_t batch = 1;
  const void* x = nullptr;
  int64_t ldx = 0, stride_x = 0;
  const void* w = nullptr;
  int64_t ldw = 0, stride_w = 0;
  void* out = nullptr;
  int64_t ldo = 0, stride_o = 0;
  DType input_type = DType::kF32;  // x and w
  DType out_type = DType::kF32;    // f32, or input_type
  const void* bias = nullptr;      // [cols]; batch == 1 and ldo == cols when set
  DType bias_type = DType::kF32;
  Activation act = Activation::kIdentity;  // batch == 1 and ldo == cols unless kIdentity
};

// cuBLASLt's epilogues this backend uses (gemm.cc maps them to cublasLtEpilogue_t).
enum class GemmEpilogue { kNone, kBias, kRelu, kReluBias, kGelu, kGeluBias };

struct GemmPlan {
  bool empty = false;      // rows, cols or batch is 0: nothing to do
  bool empty_sum = false;  // inner is 0: zero the output, then bias and activation
  GemmEpilogue epilogue = GemmEpilogue::kNone;
  // What the separate bias/activation kernel still applies after the product (if cuBLASLt's
  // heuristic finds no algorithm, the fallback GEMM has no epilogue and the kernel does both).
  bool bias_after = false;
  Activation act_after = Activation::kIdentity;
  // The alignment (bytes, a power of two <= 256) cuBLASLt may assume for each operand.
  uint32_t align_x = 0, align_w = 0, align_out = 0;
  // Split-K partial sums must be added in f32 (CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE or none),
  // never in a half-precision output buffer: gemm.h promises f32 accumulation.
  bool reduce_in_compute_type_only = false;
};

// `allow_activation_epilogues`: let cuBLASLt apply ReLU (exact) and, for f16/bf16 outputs,
// GELU-tanh (its GELU is the tanh form; its rounding error is far below a half-precision
// output's, but not guaranteed below f32's, so f32 outputs take the separate kernel). A bias goes
// into the epilogue only when it has the output's type and is 16-byte aligned.
absl::StatusOr<GemmPlan> PlanGemm(const GemmProblem& p, bool allow_activation_epilogues);

// The largest power of two (at most 256) dividing the address and the row and batch strides in
// bytes (a zero stride does not constrain).
uint32_t OperandAlignment(const void* ptr, int64_t ld_bytes, int64_t stride_bytes);

}  // namespace glassbox::cuda_internal
