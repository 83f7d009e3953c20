// The CUDA backend's matrix products: cuBLASLt with f32 accumulation (CUBLAS_COMPUTE_32F, never
// TF32), a bias epilogue where the bias has the output's type, and activation epilogues only
// where they compute the model's function (see Run). Falls back to cublasGemmStridedBatchedEx
// plus a bias/activation kernel when cuBLASLt's heuristic has no algorithm for a layout.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/dtype.h"
#include "kernels/backend.h"
#include "kernels/cuda/gemm_plan.h"

struct cublasLtContext;
struct cublasContext;

namespace glassbox::cuda_internal {

class GemmRunner {
 public:
  // `allow_activation_epilogues`: see PlanGemm (gemm_plan.h).
  static absl::StatusOr<std::unique_ptr<GemmRunner>> Create(int device, cudaStream_t stream,
                                                            size_t workspace_bytes,
                                                            bool allow_activation_epilogues);
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  absl::Status Run(const GemmProblem& p);

  // How many products went through each path (for tests and logs).
  int64_t lt_calls() const { return lt_calls_.load(); }
  int64_t fallback_calls() const { return fallback_calls_.load(); }

 private:
  GemmRunner() = default;
  absl::Status RunLt(const GemmProblem& p, const GemmPlan& plan, bool* ran);
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
  std::atomic<int64_t> lt_calls_{0}, fallback_calls_{0};  // read by other threads
};

}  // namespace glassbox::cuda_internal
