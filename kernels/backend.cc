// The public ops: the contract, then the backend's work when there is any.
#include "kernels/backend.h"

#include "base/status_macros.h"
#include "kernels/op_profile.h"

namespace glassbox {

absl::StatusOr<Tensor> Backend::Allocate(DType dtype, Shape shape) {
  GB_RETURN_IF_ERROR(CheckAllocate(target_, shape));
  return DoAllocate(dtype, std::move(shape));
}

absl::Status Backend::CopyFromHost(const Tensor& host, Tensor& out) {
  GB_ASSIGN_OR_RETURN(const int64_t bytes, CheckCopyFromHost(target_, host, out));
  const ScopedOpTimer timer("CopyFromHost");
  return DoCopyFromHost(bytes, host, out);
}

absl::Status Backend::CopyToHost(const Tensor& src, Tensor& host_out) {
  GB_ASSIGN_OR_RETURN(const int64_t bytes, CheckCopyToHost(target_, src, host_out));
  const ScopedOpTimer timer("CopyToHost");
  return DoCopyToHost(bytes, src, host_out);
}

absl::Status Backend::Convert(const Tensor& src, Tensor& out) {
  GB_ASSIGN_OR_RETURN(const int64_t n, CheckConvert(target_, src, out));
  const ScopedOpTimer timer("Convert");
  return n == 0 ? absl::OkStatus() : DoConvert(n, src, out);
}

absl::Status Backend::Linear(const Tensor& x, const Tensor& w, const Tensor* bias, Activation act,
                             Tensor& out) {
  GB_ASSIGN_OR_RETURN(const LinearDims d, CheckLinear(target_, x, w, bias, out));
  const ScopedOpTimer timer("Linear");
  return d.empty ? absl::OkStatus() : DoLinear(d, x, w, bias, act, out);
}

absl::StatusOr<int64_t> Backend::PrepareLinearWeights(std::span<const Tensor* const> weights) {
  for (const Tensor* w : weights) {
    if (w == nullptr || !w->defined() || w->rank() != 2 || w->device() != device())
      return absl::InternalError(
          "PrepareLinearWeights: each weight must be a defined rank-2 tensor on the backend");
  }
  return DoPrepareLinearWeights(weights);
}

absl::Status Backend::HeadProjection(const Tensor& z, const Tensor& w, Tensor& out) {
  GB_ASSIGN_OR_RETURN(const HeadProjectionDims d, CheckHeadProjection(target_, z, w, out));
  const ScopedOpTimer timer("HeadProjection");
  return d.empty ? absl::OkStatus() : DoHeadProjection(d, z, w, out);
}

absl::Status Backend::LayerNorm(const Tensor& x, const Tensor* weight, const Tensor* bias,
                                float eps, Tensor& out, Tensor* scale_out, Tensor* unweighted_out) {
  GB_ASSIGN_OR_RETURN(const RowsDims d,
                      CheckLayerNorm(target_, x, weight, bias, out, scale_out, unweighted_out));
  if (d.empty) return absl::OkStatus();
  const ScopedOpTimer timer("LayerNorm");
  return DoLayerNorm(d, x, weight, bias, eps, out, scale_out, unweighted_out);
}

absl::Status Backend::RmsNorm(const Tensor& x, const Tensor* weight, float eps, Tensor& out,
                              Tensor* scale_out, Tensor* unweighted_out) {
  GB_ASSIGN_OR_RETURN(const RowsDims d,
                      CheckRmsNorm(target_, x, weight, out, scale_out, unweighted_out));
  const ScopedOpTimer timer("RmsNorm");
  return d.empty ? absl::OkStatus() : DoRmsNorm(d, x, weight, eps, out, scale_out, unweighted_out);
}

absl::Status Backend::ScatterRows(const Tensor& src, const Tensor& rows, Tensor& table) {
  GB_ASSIGN_OR_RETURN(const EmbeddingDims d, CheckScatterRows(target_, src, rows, table));
  const ScopedOpTimer timer("ScatterRows");
  return d.empty ? absl::OkStatus() : DoScatterRows(d, src, rows, table);
}

absl::Status Backend::Embedding(const Tensor& table, const Tensor& ids, Tensor& out) {
  GB_ASSIGN_OR_RETURN(const EmbeddingDims d, CheckEmbedding(target_, table, ids, out));
  const ScopedOpTimer timer("Embedding");
  return d.empty ? absl::OkStatus() : DoEmbedding(d, table, ids, out);
}

absl::Status Backend::Rotary(const Tensor& x, const Tensor& cos, const Tensor& sin,
                             const Tensor& positions, int rotary_dim, Tensor& out,
                             RotaryStyle style) {
  GB_ASSIGN_OR_RETURN(RotaryDims d, CheckRotary(target_, x, cos, sin, positions, rotary_dim, out));
  d.style = style;
  const ScopedOpTimer timer("Rotary");
  return d.empty ? absl::OkStatus() : DoRotary(d, x, cos, sin, positions, rotary_dim, out);
}

absl::Status Backend::Attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                const Tensor& key_mask, float scale, Tensor& z, Tensor* scores,
                                Tensor* pattern, const AttentionOptions& options) {
  GB_ASSIGN_OR_RETURN(AttentionDims d,
                      CheckAttention(target_, q, k, v, key_mask, z, scores, pattern));
  GB_RETURN_IF_ERROR(CheckAttentionOptions(target_, options.window, options.softcap,
                                           options.query_offset, d));
  const ScopedOpTimer timer("Attention");
  return d.empty ? absl::OkStatus()
                 : DoAttention(d, q, k, v, key_mask, scale, z, scores, pattern, options);
}

absl::Status Backend::Add(const Tensor& a, const Tensor& b, Tensor& out) {
  GB_ASSIGN_OR_RETURN(const int64_t n, CheckAdd(target_, a, b, out));
  const ScopedOpTimer timer("Add");
  return n == 0 ? absl::OkStatus() : DoAdd(n, a, b, out);
}

absl::Status Backend::Mul(const Tensor& a, const Tensor& b, Tensor& out) {
  GB_ASSIGN_OR_RETURN(const int64_t n, CheckMul(target_, a, b, out));
  const ScopedOpTimer timer("Mul");
  return n == 0 ? absl::OkStatus() : DoMul(n, a, b, out);
}

absl::Status Backend::Activate(Activation act, const Tensor& x, Tensor& out) {
  GB_ASSIGN_OR_RETURN(const int64_t n, CheckActivate(target_, x, out));
  const ScopedOpTimer timer("Activate");
  return n == 0 ? absl::OkStatus() : DoActivate(n, act, x, out);
}

absl::Status Backend::Scale(const Tensor& x, float factor, Tensor& out) {
  GB_ASSIGN_OR_RETURN(const int64_t n, CheckScale(target_, x, factor, out));
  const ScopedOpTimer timer("Scale");
  return n == 0 ? absl::OkStatus() : DoScale(n, x, factor, out);
}

absl::Status Backend::SoftCap(const Tensor& x, float cap, Tensor& out) {
  GB_ASSIGN_OR_RETURN(const int64_t n, CheckSoftCap(target_, x, cap, out));
  const ScopedOpTimer timer("SoftCap");
  return n == 0 ? absl::OkStatus() : DoSoftCap(n, x, cap, out);
}

absl::Status Backend::SplitQkv(const Tensor& qkv, Tensor& q, Tensor& k, Tensor& v) {
  GB_ASSIGN_OR_RETURN(const SplitQkvDims d, CheckSplitQkv(target_, qkv, q, k, v));
  const ScopedOpTimer timer("SplitQkv");
  return d.empty ? absl::OkStatus() : DoSplitQkv(d, qkv, q, k, v);
}

absl::Status Backend::CrossEntropy(const Tensor& logits, const Tensor& targets, Tensor& loss) {
  GB_ASSIGN_OR_RETURN(const RowsDims d, CheckCrossEntropy(target_, logits, targets, loss));
  const ScopedOpTimer timer("CrossEntropy");
  return d.empty ? absl::OkStatus() : DoCrossEntropy(d, logits, targets, loss);
}

absl::Status Backend::LogSoftmax(const Tensor& x, Tensor& out) {
  GB_ASSIGN_OR_RETURN(const RowsDims d, CheckLogSoftmax(target_, x, out));
  const ScopedOpTimer timer("LogSoftmax");
  return d.empty ? absl::OkStatus() : DoLogSoftmax(d, x, out);
}

absl::Status Backend::LogSumExp(const Tensor& x, Tensor& lse) {
  GB_ASSIGN_OR_RETURN(const RowsDims d, CheckLogSumExp(target_, x, lse));
  const ScopedOpTimer timer("LogSumExp");
  return d.empty ? absl::OkStatus() : DoLogSumExp(d, x, lse);
}

absl::Status Backend::GatherColumns(const Tensor& x, const Tensor& columns, const Tensor* shift,
                                    Tensor& out) {
  GB_ASSIGN_OR_RETURN(const GatherColumnsDims d,
                      CheckGatherColumns(target_, x, columns, shift, out));
  const ScopedOpTimer timer("GatherColumns");
  return d.empty ? absl::OkStatus() : DoGatherColumns(d, x, columns, shift, out);
}

absl::Status Backend::TopK(const Tensor& x, int64_t k, Tensor& values, Tensor& indices) {
  GB_ASSIGN_OR_RETURN(const TopKDims d, CheckTopK(target_, x, k, values, indices));
  const ScopedOpTimer timer("TopK");
  return d.empty ? absl::OkStatus() : DoTopK(d, x, values, indices);
}

}  // namespace glassbox
