// PlanGemm (the CUDA backend's GEMM planning, gemm_plan.h) on the host: argument checks, which
// part of bias + activation cuBLASLt's epilogue takes, operand alignments and the split-K
// reduction restriction. No GPU needed; the plans' numerics are checked by tests/gpu.
#include "kernels/cuda/gemm_plan.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace glassbox::cuda_internal {
namespace {

const void* At(uintptr_t address) { return reinterpret_cast<const void*>(address); }

GemmProblem Dense(DType in, DType out) {
  GemmProblem p;
  p.rows = 7;
  p.cols = 64;
  p.inner = 32;
  p.x = At(0x10000);
  p.ldx = 32;
  p.w = At(0x20000);
  p.ldw = 32;
  p.out = reinterpret_cast<void*>(0x30000);
  p.ldo = 64;
  p.input_type = in;
  p.out_type = out;
  return p;
}

TEST(GemmPlanTest, BiasOfTheOutputsTypeGoesIntoTheEpilogue) {
  GemmProblem p = Dense(DType::kBF16, DType::kBF16);
  p.bias = At(0x40000);
  p.bias_type = DType::kBF16;
  auto plan = PlanGemm(p, true);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->epilogue, GemmEpilogue::kBias);
  EXPECT_FALSE(plan->bias_after);
  EXPECT_EQ(plan->act_after, Activation::kIdentity);
}

TEST(GemmPlanTest, BiasOfAnotherTypeOrMisalignedRunsAfter) {
  GemmProblem p = Dense(DType::kBF16, DType::kF32);  // logits: bf16 in, f32 out
  p.bias = At(0x40000);
  p.bias_type = DType::kBF16;
  p.act = Activation::kRelu;
  auto plan = PlanGemm(p, true);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->epilogue, GemmEpilogue::kNone);  // ReLU must follow the bias, so it waits too
  EXPECT_TRUE(plan->bias_after);
  EXPECT_EQ(plan->act_after, Activation::kRelu);

  p = Dense(DType::kF32, DType::kF32);
  p.bias = At(0x40004);  // a view 4 bytes in
  p.bias_type = DType::kF32;
  plan = PlanGemm(p, true);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->epilogue, GemmEpilogue::kNone);
  EXPECT_TRUE(plan->bias_after);
}

TEST(GemmPlanTest, ActivationEpiloguesOnlyWhereTheyComputeTheModelsFunction) {
  struct Case {
    DType out;
    Activation act;
    bool bias;
    bool allow;
    GemmEpilogue epilogue;
    Activation after;
  };
  const Case cases[] = {
      {DType::kF32, Activation::kRelu, false, true, GemmEpilogue::kRelu, Activation::kIdentity},
      {DType::kF32, Activation::kRelu, true, true, GemmEpilogue::kReluBias, Activation::kIdentity},
      {DType::kF32, Activation::kGeluTanh, true, true, GemmEpilogue::kBias, Activation::kGeluTanh},
      {DType::kBF16, Activation::kGeluTanh, true, true, GemmEpilogue::kGeluBias,
       Activation::kIdentity},
      {DType::kF16, Activation::kGeluTanh, false, true, GemmEpilogue::kGelu, Activation::kIdentity},
      {DType::kBF16, Activation::kGeluExact, true, true, GemmEpilogue::kBias, Activation::kGeluExact},
      {DType::kBF16, Activation::kSilu, false, true, GemmEpilogue::kNone, Activation::kSilu},
      {DType::kBF16, Activation::kRelu, true, false, GemmEpilogue::kBias, Activation::kRelu},
  };
  for (const Case& c : cases) {
    GemmProblem p = Dense(c.out == DType::kF32 ? DType::kF32 : c.out, c.out);
    p.act = c.act;
    if (c.bias) {
      p.bias = At(0x40000);
      p.bias_type = c.out;
    }
    auto plan = PlanGemm(p, c.allow);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->epilogue, c.epilogue) << DTypeName(c.out) << " act " << static_cast<int>(c.act);
    EXPECT_EQ(plan->act_after, c.after) << DTypeName(c.out) << " act " << static_cast<int>(c.act);
    EXPECT_FALSE(plan->bias_after);
  }
}

TEST(GemmPlanTest, HalfPrecisionOutputsReduceSplitKInF32) {
  for (DType t : {DType::kF16, DType::kBF16}) {
    auto plan = PlanGemm(Dense(t, t), true);
    ASSERT_TRUE(plan.ok());
    EXPECT_TRUE(plan->reduce_in_compute_type_only) << DTypeName(t);
    plan = PlanGemm(Dense(t, DType::kF32), true);
    ASSERT_TRUE(plan.ok());
    EXPECT_FALSE(plan->reduce_in_compute_type_only) << DTypeName(t) << " -> f32";
  }
}

TEST(GemmPlanTest, AlignmentsAreTheLargestPowerOfTwoDividingAddressAndStrides) {
  EXPECT_EQ(OperandAlignment(At(0x10000), 4096, 0), 256u);
  EXPECT_EQ(OperandAlignment(At(0x10008), 4096, 0), 8u);
  EXPECT_EQ(OperandAlignment(At(0x10000), 4 * 33, 0), 4u);  // f32 rows of 33
  EXPECT_EQ(OperandAlignment(At(0x10000), 2 * 64, 2 * 12), 8u);  // a batch stride of 12 bf16
  GemmProblem p = Dense(DType::kBF16, DType::kBF16);
  p.ldx = 33;  // a column slice of a wider matrix
  p.inner = 32;
  p.out = reinterpret_cast<void*>(0x30002);
  auto plan = PlanGemm(p, true);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->align_x, 2u);
  EXPECT_EQ(plan->align_w, 64u);  // 32 bf16 = 64-byte rows
  EXPECT_EQ(plan->align_out, 2u);
  // Strides count only for batched products.
  GemmProblem h = Dense(DType::kF32, DType::kF32);
  h.batch = 12;
  h.ldx = h.ldw = 12 * 32;
  h.stride_x = h.stride_w = 32;
  h.ldo = 12 * 64;
  h.stride_o = 64;
  plan = PlanGemm(h, true);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->align_x, 128u);  // 32 floats between heads
  EXPECT_EQ(plan->align_out, 256u);
}

TEST(GemmPlanTest, EmptyProblems) {
  GemmProblem p = Dense(DType::kF32, DType::kF32);
  p.rows = 0;
  auto plan = PlanGemm(p, true);
  ASSERT_TRUE(plan.ok());
  EXPECT_TRUE(plan->empty);
  p = Dense(DType::kF32, DType::kF32);
  p.inner = 0;
  p.bias = At(0x40000);
  p.act = Activation::kGeluTanh;
  plan = PlanGemm(p, true);
  ASSERT_TRUE(plan.ok());
  EXPECT_TRUE(plan->empty_sum);  // zeros, then the kernel adds the bias and applies GELU
  EXPECT_TRUE(plan->bias_after);
  EXPECT_EQ(plan->act_after, Activation::kGeluTanh);
}

TEST(GemmPlanTest, RefusesWhatNoKernelComputes) {
  GemmProblem p = Dense(DType::kBF16, DType::kF16);
  EXPECT_EQ(PlanGemm(p, true).status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(PlanGemm(p, true).status().message().find("no bf16 x bf16 -> f16 product"),
            std::string::npos)
      << PlanGemm(p, true).status();
  p = Dense(DType::kF32, DType::kF32);
  p.batch = 2;
  p.stride_x = p.stride_w = 0;
  p.stride_o = 7 * 64;
  p.bias = At(0x40000);
  EXPECT_NE(PlanGemm(p, true).status().message().find("one dense output matrix"),
            std::string::npos);
  p = Dense(DType::kF32, DType::kF32);
  p.ldo = 63;
  EXPECT_NE(PlanGemm(p, true).status().message().find("leading dimensions"), std::string::npos);
}

}  // namespace
}  // namespace glassbox::cuda_internal
