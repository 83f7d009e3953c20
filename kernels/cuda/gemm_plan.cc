#include "kernels/cuda/gemm_plan.h"

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace glassbox::cuda_internal {

uint32_t OperandAlignment(const void* ptr, int64_t ld_bytes, int64_t stride_bytes) {
  uint64_t bits = reinterpret_cast<uintptr_t>(ptr) | 256u | static_cast<uint64_t>(ld_bytes);
  if (stride_bytes != 0) bits |= static_cast<uint64_t>(stride_bytes);
  return static_cast<uint32_t>(bits & (~bits + 1));  // lowest set bit
}

absl::StatusOr<GemmPlan> PlanGemm(const GemmProblem& p, bool allow_activation_epilogues) {
  for (int64_t v : {p.rows, p.cols, p.inner, p.batch}) {
    if (v < 0) return absl::InternalError("cuda GEMM: negative dimension");
  }
  if (p.ldx < p.inner || p.ldw < p.inner || p.ldo < p.cols) {
    return absl::InternalError(absl::StrCat("cuda GEMM: leading dimensions (x ", p.ldx, ", w ",
                                            p.ldw, ", out ", p.ldo, ") below the row lengths (",
                                            p.inner, ", ", p.inner, ", ", p.cols, ")"));
  }
  const bool single_dense_output = p.batch == 1 && p.ldo == p.cols;
  if ((p.bias != nullptr || p.act != Activation::kIdentity) && !single_dense_output) {
    return absl::InternalError("cuda GEMM: bias and activation need one dense output matrix");
  }
  if (p.out_type != DType::kF32 && p.out_type != p.input_type) {
    return absl::InternalError(absl::StrCat("cuda GEMM: no ", DTypeName(p.input_type), " x ",
                                            DTypeName(p.input_type), " -> ",
                                            DTypeName(p.out_type), " product"));
  }
  GemmPlan plan;
  if (p.rows == 0 || p.cols == 0 || p.batch == 0) {
    plan.empty = true;
    return plan;
  }
  if (p.inner == 0) {
    plan.empty_sum = true;
    plan.bias_after = p.bias != nullptr;
    plan.act_after = p.act;
    return plan;
  }

  const bool bias_in_epilogue = p.bias != nullptr && p.bias_type == p.out_type &&
                                reinterpret_cast<uintptr_t>(p.bias) % 16 == 0;
  bool relu = false, gelu = false;
  if (allow_activation_epilogues && (p.bias == nullptr || bias_in_epilogue)) {
    relu = p.act == Activation::kRelu;
    gelu = p.act == Activation::kGeluTanh && p.out_type != DType::kF32;
  }
  if (bias_in_epilogue) {
    plan.epilogue = relu ? GemmEpilogue::kReluBias
                         : gelu ? GemmEpilogue::kGeluBias : GemmEpilogue::kBias;
  } else if (relu) {
    plan.epilogue = GemmEpilogue::kRelu;
  } else if (gelu) {
    plan.epilogue = GemmEpilogue::kGelu;
  }
  plan.bias_after = p.bias != nullptr && !bias_in_epilogue;
  plan.act_after = (relu || gelu) ? Activation::kIdentity : p.act;

  const int64_t in_es = DTypeSize(p.input_type), out_es = DTypeSize(p.out_type);
  const bool batched = p.batch > 1;
  plan.align_w = OperandAlignment(p.w, p.ldw * in_es, batched ? p.stride_w * in_es : 0);
  plan.align_x = OperandAlignment(p.x, p.ldx * in_es, batched ? p.stride_x * in_es : 0);
  plan.align_out = OperandAlignment(p.out, p.ldo * out_es, batched ? p.stride_o * out_es : 0);
  plan.reduce_in_compute_type_only = p.out_type != DType::kF32;
  return plan;
}

}  // namespace glassbox::cuda_internal
