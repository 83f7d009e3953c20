// The CUDA backend's matrix products: cuBLASLt with f32 accumulation (CUBLAS_COMPUTE_32F, never
// TF32), a bias epilogue where the bias has the output's type, and activation epilogues only
// where they compute the model's function (see Run). Falls back to cublasGemmStridedBatchedEx
// plus a bias/activation kernel when cuBLASLt's heuristic has no algorithm for a layout.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/dtype.h"
#include "kernels/backend.h"

struct cublasLtContext;
struct cublasContext;

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

class GemmRunner {
 public:
  // `allow_activation_epilogues`: let cuBLASLt apply ReLU (exact) and, for f16/bf16 outputs,
  // GELU-tanh (its GELU is the tanh form; its rounding error is far below a half-precision
  // output's, but not guaranteed below f32's, so f32 outputs take the separate kernel).
  static absl::StatusOr<std::unique_ptr<GemmRunner>> Create(int device, cudaStream_t stream,
                                                            size_t workspace_bytes,
                                                            bool allow_activation_epilogues);
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  absl::Status Run(const GemmProblem& p);

  // How many products went through each path (for tests and logs).
  int64_t lt_calls() const { return lt_calls_; }
  int64_t fallback_calls() const { return fallback_calls_; }

 private:
  GemmRunner() = default;
  absl::Status RunLt(const GemmProblem& p, bool bias_in_epilogue, bool act_in_epilogue,
                     bool* ran);
  absl::Status RunFallback(const GemmProblem& p);

  cudaStream_t stream_ = nullptr;
  cublasLtContext* lt_ = nullptr;
  cublasContext* blas_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  bool allow_activation_epilogues_ = true;

  // cuBLASLt's heuristic answer per problem signature (an algorithm, or "none": use the
  // fallback), so the heuristic runs once per shape rather than once per call.
  struct CachedAlgo {
    bool found = false;
    std::array<uint64_t, 8> algo{};  // a cublasLtMatmulAlgo_t, stored opaquely
  };
  std::mutex mu_;  // guards the cache and serialises use of the handles
  std::map<std::array<int64_t, 18>, CachedAlgo> algo_cache_;
  int64_t lt_calls_ = 0, fallback_calls_ = 0;
};

}  // namespace glassbox::cuda_internal
