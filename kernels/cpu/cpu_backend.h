// The reference backend: plain loops (OpenMP across rows) and OpenBLAS for GEMM, f32 throughout
// with f32 accumulation (f64 where a reduction over a long axis would otherwise drift). Every
// CUDA kernel is tested against this.
#pragma once

#include "kernels/backend.h"

namespace glassbox {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::kCpu; }
  std::string name() const override { return "cpu"; }

  absl::StatusOr<Tensor> Allocate(DType dtype, Shape shape) override;
  absl::Status CopyFromHost(const Tensor& host, Tensor& out) override;
  absl::Status CopyToHost(const Tensor& src, Tensor& host_out) override;
  absl::Status Convert(const Tensor& src, Tensor& out) override;

  absl::Status Linear(const Tensor& x, const Tensor& w, const Tensor* bias, Activation act,
                      Tensor& out) override;
  absl::Status HeadProjection(const Tensor& z, const Tensor& w, Tensor& out) override;

  absl::Status LayerNorm(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps,
                         Tensor& out, Tensor* scale_out, Tensor* unweighted_out) override;
  absl::Status RmsNorm(const Tensor& x, const Tensor* weight, float eps, Tensor& out,
                       Tensor* scale_out, Tensor* unweighted_out) override;

  absl::Status Embedding(const Tensor& table, const Tensor& ids, Tensor& out) override;
  absl::Status Rotary(const Tensor& x, const Tensor& cos, const Tensor& sin,
                      const Tensor& positions, int rotary_dim, Tensor& out) override;

  absl::Status Attention(const Tensor& q, const Tensor& k, const Tensor& v,
                         const Tensor& key_mask, float scale, Tensor& z, Tensor* scores,
                         Tensor* pattern) override;

  absl::Status Add(const Tensor& a, const Tensor& b, Tensor& out) override;
  absl::Status Mul(const Tensor& a, const Tensor& b, Tensor& out) override;
  absl::Status Activate(Activation act, const Tensor& x, Tensor& out) override;

  absl::Status SplitQkv(const Tensor& qkv, Tensor& q, Tensor& k, Tensor& v) override;

  absl::Status CrossEntropy(const Tensor& logits, const Tensor& targets, Tensor& loss) override;
  absl::Status LogSoftmax(const Tensor& x, Tensor& out) override;
};

// Applies `act` to one value; shared by the CPU ops and by tests.
float ApplyActivation(Activation act, float x);

}  // namespace glassbox
