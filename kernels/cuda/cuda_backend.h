// The CUDA implementation of the Backend contract (kernels/backend.h), with the CPU backend's
// semantics (kernels/cpu/cpu_backend.cc) and checked against it by tests/gpu.
//
// Tensors live in device memory from a caching allocator. Every op is queued on the backend's
// one stream and returns as soon as it is queued; CopyToHost and Synchronize wait for the stream
// and report anything that went wrong on the device since the last wait. Floating ops take f32,
// f16 or bf16 tensors (one dtype per op's activations; norm weights, biases and rotary tables may
// have any floating dtype) and compute in f32. Linear and HeadProjection may write f32 from
// f16/bf16 inputs (the engine's logits).
//
// This header includes no CUDA headers, so the server and tests can include it in any build;
// builds without nvcc link cuda_backend_disabled.cc, whose CreateCudaBackend says so.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/cuda/caching_allocator.h"
#include "kernels/cuda/thread_slots.h"

struct CUstream_st;

namespace glassbox {

namespace cuda_internal {
class GemmRunner;
struct GemmProblem;
}  // namespace cuda_internal

struct CudaBackendOptions {
  // Let cuBLASLt apply ReLU, and GELU-tanh for f16/bf16 outputs, in the GEMM epilogue.
  bool gemm_activation_epilogues = true;
  // Use the online-softmax attention kernel for layers whose scores and pattern are not wanted.
  bool flash_attention = true;
  size_t gemm_workspace_bytes = size_t{32} << 20;
  // Upper bound on the f32 score buffer of materialised attention; (batch, head) pairs are
  // processed in chunks that fit (at least one pair at a time).
  size_t attention_work_bytes = size_t{256} << 20;
  // Upper bound on TopK's sort buffers; rows are sorted in chunks that fit (at least one row).
  size_t top_k_work_bytes = size_t{256} << 20;
};

class CudaBackend final : public Backend {
 public:
  // FAILED_PRECONDITION when the machine has no usable CUDA device or driver (with the probe's
  // explanation), INVALID_ARGUMENT for a device index that does not exist.
  static absl::StatusOr<std::shared_ptr<CudaBackend>> Create(int device,
                                                             CudaBackendOptions options = {});
  ~CudaBackend() override;

  std::string name() const override { return name_; }

  // How the ops behave here (their contract is Backend's):
  // - Copies are synchronous for now: the host buffer may be reused as soon as they return.
  //   Pinned staging buffers and a copy stream (so captures overlap later layers) are the planned
  //   change; they belong here and in a CopyToHostAsync that hands back an event.
  // - An Embedding id, a Rotary position or a GatherColumns column outside its range cannot fail
  //   the call that is merely queued: it writes zeros and the next CopyToHost / Synchronize
  //   *of the thread that queued it* returns INTERNAL naming the op. Each thread has its own
  //   device error word (up to kErrorWords - 1 threads at once; beyond that they share one), so
  //   concurrent requests never receive each other's errors.

  // ---- CUDA-specific ----
  // Waits for all queued work; reports device errors and invalid inputs seen by kernels.
  absl::Status Synchronize();
  // Returns cached device memory to the driver (after a burst of large requests, say).
  absl::Status EmptyCache();
  CachingDeviceAllocator::Stats allocator_stats() const { return allocator_->stats(); }
  int device_index() const { return device_; }
  const CudaBackendOptions& options() const { return options_; }
  // Which implementation each GEMM and attention call took, counted since Create. The fast
  // paths are cuBLASLt and the flash kernel; the benchmark prints these and the GPU tests assert
  // them, so a silent fall to a slow path shows.
  struct PathCounts {
    int64_t gemm_lt = 0;        // cuBLASLt
    int64_t gemm_fallback = 0;  // cublasGemmStridedBatchedEx + a bias/activation kernel
    int64_t attention_flash = 0;
    int64_t attention_materialized = 0;  // scores/pattern wanted, or flash unsupported
  };
  PathCounts path_counts() const;

  static constexpr int kErrorWords = 1024;

 private:
  CudaBackend(int device, CudaBackendOptions options);

  absl::StatusOr<Tensor> DoAllocate(DType dtype, Shape shape) override;
  absl::Status DoCopyFromHost(int64_t bytes, const Tensor& host, Tensor& out) override;
  absl::Status DoCopyToHost(int64_t bytes, const Tensor& src, Tensor& host_out) override;
  absl::Status DoConvert(int64_t n, const Tensor& src, Tensor& out) override;
  absl::Status DoLinear(const LinearDims& d, const Tensor& x, const Tensor& w, const Tensor* bias,
                        Activation act, Tensor& out) override;
  absl::Status DoHeadProjection(const HeadProjectionDims& d, const Tensor& z, const Tensor& w,
                                Tensor& out) override;
  absl::Status DoLayerNorm(const RowsDims& d, const Tensor& x, const Tensor* weight,
                           const Tensor* bias, float eps, Tensor& out, Tensor* scale_out,
                           Tensor* unweighted_out) override;
  absl::Status DoRmsNorm(const RowsDims& d, const Tensor& x, const Tensor* weight, float eps,
                         Tensor& out, Tensor* scale_out, Tensor* unweighted_out) override;
  absl::Status DoScatterRows(const EmbeddingDims& d, const Tensor& src, const Tensor& rows,
                             Tensor& table) override;
  absl::Status DoEmbedding(const EmbeddingDims& d, const Tensor& table, const Tensor& ids,
                           Tensor& out) override;
  absl::Status DoRotary(const RotaryDims& d, const Tensor& x, const Tensor& cos, const Tensor& sin,
                        const Tensor& positions, int rotary_dim, Tensor& out) override;
  absl::Status DoAttention(const AttentionDims& d, const Tensor& q, const Tensor& k,
                           const Tensor& v, const Tensor& key_mask, float scale, Tensor& z,
                           Tensor* scores, Tensor* pattern,
                           const AttentionOptions& options) override;
  absl::Status DoAdd(int64_t n, const Tensor& a, const Tensor& b, Tensor& out) override;
  absl::Status DoMul(int64_t n, const Tensor& a, const Tensor& b, Tensor& out) override;
  absl::Status DoActivate(int64_t n, Activation act, const Tensor& x, Tensor& out) override;
  absl::Status DoScale(int64_t n, const Tensor& x, float factor, Tensor& out) override;
  absl::Status DoSoftCap(int64_t n, const Tensor& x, float cap, Tensor& out) override;
  absl::Status DoSplitQkv(const SplitQkvDims& d, const Tensor& qkv, Tensor& q, Tensor& k,
                          Tensor& v) override;
  absl::Status DoCrossEntropy(const RowsDims& d, const Tensor& logits, const Tensor& targets,
                              Tensor& loss) override;
  absl::Status DoLogSoftmax(const RowsDims& d, const Tensor& x, Tensor& out) override;
  absl::Status DoLogSumExp(const RowsDims& d, const Tensor& x, Tensor& lse) override;
  absl::Status DoGatherColumns(const GatherColumnsDims& d, const Tensor& x, const Tensor& columns,
                               const Tensor* shift, Tensor& out) override;
  // Rows are sorted in chunks within options().top_k_work_bytes (kernels/cuda/topk.cu).
  absl::Status DoTopK(const TopKDims& d, const Tensor& x, Tensor& values, Tensor& indices) override;
  // Queues a copy of the calling thread's device error word, waits for the stream, and turns a
  // raised bit into an error (clearing it).
  absl::Status WaitAndCheck(const char* what);
  // The calling thread's device error word, cleared (on the stream) on the thread's first use.
  absl::StatusOr<int*> ThreadErrorWord();
  // Runs a product into `out`: directly when cuBLAS writes its dtype, else through f32.
  absl::Status RunGemm(cuda_internal::GemmProblem& p, Tensor& out);

  const int device_;
  const CudaBackendOptions options_;
  std::string name_;
  CUstream_st* stream_ = nullptr;
  std::unique_ptr<cuda_internal::GemmRunner> gemm_;
  std::shared_ptr<CachingDeviceAllocator> allocator_;
  // kErrorWords words of kDeviceError* bits, one per thread slot (slot 0 shared), and their
  // pinned host copies, read after a wait.
  std::shared_ptr<ThreadSlots> error_slots_ = ThreadSlots::Create(kErrorWords);
  int* device_errors_ = nullptr;
  int* host_errors_ = nullptr;
  std::mutex shared_word_mu_;  // serialises the waits that read slot 0
  std::atomic<int64_t> attention_flash_calls_{0}, attention_materialized_calls_{0};
};

// The backend as the engine sees it; see CudaBackend::Create.
absl::StatusOr<std::shared_ptr<Backend>> CreateCudaBackend(int device,
                                                           CudaBackendOptions options = {});

// `backend`'s path counts when it is a CUDA backend (INVALID_ARGUMENT otherwise; in builds
// without CUDA, FAILED_PRECONDITION), for callers that hold it as a Backend.
absl::StatusOr<CudaBackend::PathCounts> CudaPathCounts(const Backend& backend);

}  // namespace glassbox
