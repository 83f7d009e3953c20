// The reference backend: plain loops (OpenMP across rows) and oneDNN for GEMM, f32 throughout
// with f32 accumulation (f64 where a reduction over a long axis would otherwise drift). Every
// CUDA kernel is tested against this.
#pragma once

#include <atomic>
#include <memory>

#include "kernels/backend.h"
#include "kernels/cpu/activations.h"  // ApplyActivation, for tests

namespace glassbox {

struct CpuBackendOptions {
  // PrepareLinearWeights keeps packed copies of a model's Linear weights (cpu::PackWeight: the
  // same products, faster) while all of them, with those already kept, fit in this many bytes;
  // a larger model is left unpacked, as memory matters more than speed there. 0: never.
  int64_t packed_weight_bytes = int64_t{1} << 30;
};

class CpuBackend final : public Backend {
 public:
  CpuBackend() : CpuBackend(CpuBackendOptions()) {}
  explicit CpuBackend(const CpuBackendOptions& options);
  std::string name() const override { return "cpu"; }
  // Bytes of packed weights kept now (for all models this backend prepared).
  int64_t packed_weight_bytes() const { return packed_bytes_->load(); }

 private:
  absl::StatusOr<Tensor> DoAllocate(DType dtype, Shape shape) override;
  absl::Status DoCopyFromHost(int64_t bytes, const Tensor& host, Tensor& out) override;
  absl::Status DoCopyToHost(int64_t bytes, const Tensor& src, Tensor& host_out) override;
  absl::Status DoConvert(int64_t n, const Tensor& src, Tensor& out) override;
  absl::Status DoLinear(const LinearDims& d, const Tensor& x, const Tensor& w, const Tensor* bias,
                        Activation act, Tensor& out) override;
  absl::StatusOr<int64_t> DoPrepareLinearWeights(std::span<const Tensor* const> weights) override;
  absl::Status DoHeadProjection(const HeadProjectionDims& d, const Tensor& z, const Tensor& w,
                                Tensor& out) override;
  absl::Status DoLayerNorm(const RowsDims& d, const Tensor& x, const Tensor* weight,
                           const Tensor* bias, float eps, Tensor& out, Tensor* scale_out,
                           Tensor* unweighted_out) override;
  absl::Status DoRmsNorm(const RowsDims& d, const Tensor& x, const Tensor* weight, float eps,
                         Tensor& out, Tensor* scale_out, Tensor* unweighted_out) override;
  // Ids outside the table fail the call (INTERNAL), before anything is read.
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
  absl::Status DoTopK(const TopKDims& d, const Tensor& x, Tensor& values, Tensor& indices) override;

  CpuBackendOptions options_;
  // Shared with each packed weight, which gives its bytes back when its storage goes.
  std::shared_ptr<std::atomic<int64_t>> packed_bytes_ = std::make_shared<std::atomic<int64_t>>(0);
};


}  // namespace glassbox
