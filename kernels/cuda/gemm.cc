#include "kernels/cuda/gemm.h"

#include <cublasLt.h>
#include <cublas_v2.h>

#include <bit>
#include <climits>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/kernels.h"

namespace glassbox::cuda_internal {
namespace {

static_assert(sizeof(cublasLtMatmulAlgo_t) == sizeof(std::array<uint64_t, 8>));

cudaDataType_t CudaType(DType t) {
  switch (t) {
    case DType::kF16: return CUDA_R_16F;
    case DType::kBF16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
  }
}

cublasLtEpilogue_t LtEpilogue(GemmEpilogue e) {
  switch (e) {
    case GemmEpilogue::kBias: return CUBLASLT_EPILOGUE_BIAS;
    case GemmEpilogue::kRelu: return CUBLASLT_EPILOGUE_RELU;
    case GemmEpilogue::kReluBias: return CUBLASLT_EPILOGUE_RELU_BIAS;
    case GemmEpilogue::kGelu: return CUBLASLT_EPILOGUE_GELU;
    case GemmEpilogue::kGeluBias: return CUBLASLT_EPILOGUE_GELU_BIAS;
    case GemmEpilogue::kNone: break;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

template <typename T, cublasStatus_t (*Destroy)(T)>
struct LtHandle {
  T handle = nullptr;
  ~LtHandle() {
    if (handle != nullptr) Destroy(handle);
  }
};

cuda::AnyFloats AnyOf(const void* data, DType type) {
  return {data, type};
}

}  // namespace

absl::StatusOr<std::unique_ptr<GemmRunner>> GemmRunner::Create(int device, cudaStream_t stream,
                                                               size_t workspace_bytes,
                                                               bool allow_activation_epilogues) {
  DeviceGuard guard(device);
  GB_RETURN_IF_ERROR(guard.status());
  std::unique_ptr<GemmRunner> runner(new GemmRunner());
  runner->stream_ = stream;
  runner->allow_activation_epilogues_ = allow_activation_epilogues;
  GB_RETURN_IF_ERROR(CublasStatus(cublasLtCreate(&runner->lt_), "cublasLtCreate"));
  GB_RETURN_IF_ERROR(CublasStatus(cublasCreate(&runner->blas_), "cublasCreate"));
  GB_RETURN_IF_ERROR(CublasStatus(cublasSetStream(runner->blas_, stream), "cublasSetStream"));
  if (workspace_bytes > 0) {
    GB_RETURN_IF_ERROR(
        CudaStatus(cudaMalloc(&runner->workspace_, workspace_bytes), "GEMM workspace cudaMalloc"));
    runner->workspace_bytes_ = workspace_bytes;
    // Both libraries run on the one stream, so they can share the workspace.
    GB_RETURN_IF_ERROR(CublasStatus(
        cublasSetWorkspace(runner->blas_, runner->workspace_, workspace_bytes), "cublasSetWorkspace"));
  }
  return runner;
}

GemmRunner::~GemmRunner() {
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  if (blas_ != nullptr) cublasDestroy(blas_);
  if (lt_ != nullptr) cublasLtDestroy(lt_);
  if (workspace_ != nullptr) cudaFree(workspace_);
}

absl::Status GemmRunner::Run(const GemmProblem& p) {
  GB_ASSIGN_OR_RETURN(const GemmPlan plan, PlanGemm(p, allow_activation_epilogues_));
  if (plan.empty) return absl::OkStatus();
  if (plan.empty_sum) {  // zeros, then bias and activation
    const size_t es = static_cast<size_t>(DTypeSize(p.out_type));
    for (int64_t b = 0; b < p.batch; ++b) {
      GB_RETURN_IF_ERROR(CudaStatus(
          cudaMemset2DAsync(static_cast<char*>(p.out) + b * p.stride_o * es, p.ldo * es, 0,
                            p.cols * es, p.rows, stream_),
          "GEMM cudaMemset2DAsync"));
    }
    return CudaStatus(cuda::LaunchBiasActivation(p.out_type, p.out, p.rows, p.cols,
                                                 AnyOf(p.bias, p.bias_type), p.act, stream_),
                      "GEMM bias/activation kernel");
  }
  bool ran = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    GB_RETURN_IF_ERROR(RunLt(p, plan, &ran));
    if (ran) {
      ++lt_calls_;
    } else {
      GB_RETURN_IF_ERROR(RunFallback(p));
      ++fallback_calls_;
    }
  }
  // The fallback has no epilogue: the kernel then applies bias and activation both.
  const bool bias_after = ran ? plan.bias_after : p.bias != nullptr;
  const Activation act_after = ran ? plan.act_after : p.act;
  if (!bias_after && act_after == Activation::kIdentity) return absl::OkStatus();
  const cuda::AnyFloats bias = bias_after ? AnyOf(p.bias, p.bias_type) : cuda::AnyFloats{};
  return CudaStatus(cuda::LaunchBiasActivation(p.out_type, p.out, p.rows, p.cols, bias,
                                               act_after, stream_),
                    "GEMM bias/activation kernel");
}

absl::Status GemmRunner::RunLt(const GemmProblem& p, const GemmPlan& plan, bool* ran) {
  *ran = false;
  const uint32_t align_w = plan.align_w, align_x = plan.align_x, align_o = plan.align_out;
  const cublasLtEpilogue_t epilogue = LtEpilogue(plan.epilogue);
  const bool bias_in_epilogue = p.bias != nullptr && !plan.bias_after;

  // Column-major view: D^T [cols, rows] = W [cols, inner] . X^T [inner, rows], with W stored as
  // a column-major [inner, cols] matrix (ld = ldw) used transposed.
  LtHandle<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy> op;
  GB_RETURN_IF_ERROR(CublasStatus(cublasLtMatmulDescCreate(&op.handle, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                                       "cublasLtMatmulDescCreate"));
  const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
  GB_RETURN_IF_ERROR(CublasStatus(
      cublasLtMatmulDescSetAttribute(op.handle, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa)),
      "cublasLtMatmulDescSetAttribute(TRANSA)"));
  GB_RETURN_IF_ERROR(CublasStatus(
      cublasLtMatmulDescSetAttribute(op.handle, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof(transb)),
      "cublasLtMatmulDescSetAttribute(TRANSB)"));
  GB_RETURN_IF_ERROR(CublasStatus(
      cublasLtMatmulDescSetAttribute(op.handle, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)),
      "cublasLtMatmulDescSetAttribute(EPILOGUE)"));
  if (bias_in_epilogue) {
    GB_RETURN_IF_ERROR(CublasStatus(
        cublasLtMatmulDescSetAttribute(op.handle, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias, sizeof(p.bias)),
        "cublasLtMatmulDescSetAttribute(BIAS_POINTER)"));
  }

  const cudaDataType_t in_type = CudaType(p.input_type), out_type = CudaType(p.out_type);
  LtHandle<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy> a, b, c;
  GB_RETURN_IF_ERROR(CublasStatus(
      cublasLtMatrixLayoutCreate(&a.handle, in_type, p.inner, p.cols, p.ldw), "cublasLtMatrixLayoutCreate(W)"));
  GB_RETURN_IF_ERROR(CublasStatus(
      cublasLtMatrixLayoutCreate(&b.handle, in_type, p.inner, p.rows, p.ldx), "cublasLtMatrixLayoutCreate(X)"));
  GB_RETURN_IF_ERROR(CublasStatus(
      cublasLtMatrixLayoutCreate(&c.handle, out_type, p.cols, p.rows, p.ldo), "cublasLtMatrixLayoutCreate(out)"));
  if (p.batch > 1) {
    if (p.batch > INT32_MAX) return absl::InternalError("cuda GEMM: batch count too large");
    const int32_t count = static_cast<int32_t>(p.batch);
    const std::pair<cublasLtMatrixLayout_t, int64_t> layouts[] = {
        {a.handle, p.stride_w}, {b.handle, p.stride_x}, {c.handle, p.stride_o}};
    for (const auto& [layout, stride] : layouts) {
      GB_RETURN_IF_ERROR(CublasStatus(
          cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)),
          "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)"));
      GB_RETURN_IF_ERROR(CublasStatus(
          cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                           sizeof(stride)),
          "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)"));
    }
  }

  const std::array<int64_t, 18> key = {
      p.rows, p.cols, p.inner, p.batch, p.ldx, p.stride_x, p.ldw, p.stride_w, p.ldo, p.stride_o,
      static_cast<int64_t>(p.input_type), static_cast<int64_t>(p.out_type),
      static_cast<int64_t>(epilogue), align_x, align_w, align_o,
      static_cast<int64_t>(plan.reduce_in_compute_type_only), 0};
  auto it = algo_cache_.find(key);
  if (it == algo_cache_.end()) {
    LtHandle<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy> pref;
    GB_RETURN_IF_ERROR(CublasStatus(cublasLtMatmulPreferenceCreate(&pref.handle),
                                         "cublasLtMatmulPreferenceCreate"));
    const uint64_t workspace = workspace_bytes_;
    GB_RETURN_IF_ERROR(CublasStatus(
        cublasLtMatmulPreferenceSetAttribute(pref.handle, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &workspace, sizeof(workspace)),
        "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)"));
    // Split-K partial sums in f32 (or no split): INPLACE and OUTPUT_TYPE would add them in a
    // bf16/f16 output, breaking gemm.h's f32-accumulation promise.
    const uint32_t reductions =
        plan.reduce_in_compute_type_only
            ? uint32_t{CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE}
            : uint32_t{CUBLASLT_REDUCTION_SCHEME_MASK};
    GB_RETURN_IF_ERROR(CublasStatus(
        cublasLtMatmulPreferenceSetAttribute(pref.handle, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                             &reductions, sizeof(reductions)),
        "cublasLtMatmulPreferenceSetAttribute(REDUCTION_SCHEME_MASK)"));
    const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> alignments[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_w},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_x},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_o},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_o}};
    for (const auto& [attribute, value] : alignments) {
      GB_RETURN_IF_ERROR(CublasStatus(
          cublasLtMatmulPreferenceSetAttribute(pref.handle, attribute, &value, sizeof(value)),
          "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT)"));
    }
    cublasLtMatmulHeuristicResult_t result{};
    int count = 0;
    const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
        lt_, op.handle, a.handle, b.handle, c.handle, c.handle, pref.handle, 1, &result, &count);
    CachedAlgo cached;
    if (status == CUBLAS_STATUS_SUCCESS && count > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
      cached.found = true;
      std::memcpy(cached.algo.data(), &result.algo, sizeof(result.algo));
    } else if (status != CUBLAS_STATUS_SUCCESS && status != CUBLAS_STATUS_NOT_SUPPORTED) {
      return CublasStatus(status, "cublasLtMatmulAlgoGetHeuristic");
    }
    it = algo_cache_.emplace(key, cached).first;
  }
  if (!it->second.found) return absl::OkStatus();  // the caller takes the fallback

  cublasLtMatmulAlgo_t algo;
  std::memcpy(&algo, it->second.algo.data(), sizeof(algo));
  const float alpha = 1.0f, beta = 0.0f;
  GB_RETURN_IF_ERROR(CublasStatus(
      cublasLtMatmul(lt_, op.handle, &alpha, p.w, a.handle, p.x, b.handle, &beta, p.out, c.handle,
                     p.out, c.handle, &algo, workspace_, workspace_bytes_, stream_),
      "cublasLtMatmul"));
  *ran = true;
  return CudaStatus(cudaGetLastError(), "cublasLtMatmul launch");
}

absl::Status GemmRunner::RunFallback(const GemmProblem& p) {
  for (int64_t v : {p.rows, p.cols, p.inner, p.ldx, p.ldw, p.ldo, p.batch}) {
    if (v > INT_MAX) return absl::InternalError("cuda GEMM: dimension too large for cuBLAS");
  }
  const float alpha = 1.0f, beta = 0.0f;
  const cudaDataType_t in_type = CudaType(p.input_type), out_type = CudaType(p.out_type);
  GB_RETURN_IF_ERROR(CublasStatus(
      cublasGemmStridedBatchedEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(p.cols),
                                 static_cast<int>(p.rows), static_cast<int>(p.inner), &alpha, p.w,
                                 in_type, static_cast<int>(p.ldw), p.stride_w, p.x, in_type,
                                 static_cast<int>(p.ldx), p.stride_x, &beta, p.out, out_type,
                                 static_cast<int>(p.ldo), p.stride_o, static_cast<int>(p.batch),
                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      "cublasGemmStridedBatchedEx"));
  return CudaStatus(cudaGetLastError(), "cublasGemmStridedBatchedEx launch");
}

}  // namespace glassbox::cuda_internal
