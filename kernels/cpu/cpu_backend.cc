#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/float16.h"
#include "base/status_macros.h"
#include "kernels/cpu/activations.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/row_reductions.h"
#include "kernels/op_contract.h"

namespace glassbox {
namespace {

// What the contract checks every op against (kernels/backend.h applies it before each Do<Op>).
constexpr OpTarget kTarget{"cpu", Device::kCpu, /*half_precision=*/false};

float ReadAsFloat(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kF32:
      return t.data<float>()[i];
    case DType::kF16:
      return HalfToFloat(t.data<uint16_t>()[i]);
    case DType::kBF16:
      return BFloat16ToFloat(t.data<uint16_t>()[i]);
    case DType::kI32:
      return static_cast<float>(t.data<int32_t>()[i]);
    case DType::kI64:
      return static_cast<float>(t.data<int64_t>()[i]);
  }
  return 0;
}

// What PrepareLinearWeights attaches to a weight's storage: its packed form, counted against the
// backend's budget for as long as it lives.
struct CountedPackedWeight {
  CountedPackedWeight(std::shared_ptr<const cpu::PackedWeight> packed,
                      std::shared_ptr<std::atomic<int64_t>> held)
      : packed(std::move(packed)),
        bytes(cpu::PackedWeightBytes(*this->packed)),
        held(std::move(held)) {
    this->held->fetch_add(bytes);
  }
  ~CountedPackedWeight() { held->fetch_sub(bytes); }
  CountedPackedWeight(const CountedPackedWeight&) = delete;
  CountedPackedWeight& operator=(const CountedPackedWeight&) = delete;

  const std::shared_ptr<const cpu::PackedWeight> packed;
  const int64_t bytes;
  const std::shared_ptr<std::atomic<int64_t>> held;
};

const cpu::PackedWeight* PackedFormOf(const Tensor& w) {
  const auto* counted = static_cast<const CountedPackedWeight*>(w.derived());
  return counted != nullptr ? counted->packed.get() : nullptr;
}

}  // namespace

CpuBackend::CpuBackend(const CpuBackendOptions& options) : Backend(kTarget), options_(options) {}

absl::StatusOr<int64_t> CpuBackend::DoPrepareLinearWeights(std::span<const Tensor* const> weights) {
  int64_t wanted = 0;
  for (const Tensor* w : weights) {
    if (w->dtype() != DType::kF32) return 0;
    if (w->derived() == nullptr) wanted += static_cast<int64_t>(w->nbytes());
  }
  // All or none, so that a model is either as fast as it can be or costs no extra memory.
  if (packed_bytes_->load() + wanted > options_.packed_weight_bytes) return 0;
  std::vector<std::pair<const Tensor*, std::shared_ptr<const cpu::PackedWeight>>> packed;
  int64_t bytes = 0;
  for (const Tensor* w : weights) {
    if (w->derived() != nullptr) continue;
    GB_ASSIGN_OR_RETURN(auto form, cpu::PackWeight(w->dim(0), w->dim(1), w->data<float>()));
    if (form == nullptr) continue;  // already in the layout the matmul reads
    bytes += cpu::PackedWeightBytes(*form);
    packed.emplace_back(w, std::move(form));
  }
  for (auto& [w, form] : packed) {
    w->AttachDerived(std::make_shared<const CountedPackedWeight>(std::move(form), packed_bytes_));
  }
  return bytes;
}

absl::StatusOr<Tensor> CpuBackend::DoAllocate(DType dtype, Shape shape) {
  return Tensor::EmptyHost(dtype, std::move(shape));
}

absl::Status CpuBackend::DoCopyFromHost(int64_t bytes, const Tensor& host, Tensor& out) {
  if (bytes > 0) std::memcpy(out.raw_data(), host.raw_data(), bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::DoCopyToHost(int64_t bytes, const Tensor& src, Tensor& host_out) {
  if (bytes > 0) std::memcpy(host_out.raw_data(), src.raw_data(), bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::DoConvert(int64_t n, const Tensor& src, Tensor& out) {
  if (src.dtype() == out.dtype()) {
    std::memcpy(out.raw_data(), src.raw_data(), src.nbytes());
    return absl::OkStatus();
  }
  switch (out.dtype()) {
    case DType::kF32:
      for (int64_t i = 0; i < n; ++i) out.data<float>()[i] = ReadAsFloat(src, i);
      break;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) out.data<uint16_t>()[i] = FloatToHalf(ReadAsFloat(src, i));
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i)
        out.data<uint16_t>()[i] = FloatToBFloat16(ReadAsFloat(src, i));
      break;
    case DType::kI32:  // from i64 (the contract allows no other integer pair)
      for (int64_t i = 0; i < n; ++i)
        out.data<int32_t>()[i] = static_cast<int32_t>(src.data<int64_t>()[i]);
      break;
    case DType::kI64:  // from i32
      for (int64_t i = 0; i < n; ++i) out.data<int64_t>()[i] = src.data<int32_t>()[i];
      break;
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoLinear(const LinearDims& d, const Tensor& x, const Tensor& w,
                                  const Tensor* bias, Activation act, Tensor& out) {
  return cpu::Linear(d.rows, d.cols, d.inner, x.data<float>(), w.data<float>(), PackedFormOf(w),
                     bias ? bias->data<float>() : nullptr, act, out.data<float>());
}

absl::Status CpuBackend::DoHeadProjection(const HeadProjectionDims& d, const Tensor& z,
                                          const Tensor& w, Tensor& out) {
  if (d.d_head == 0) {
    std::fill_n(out.data<float>(), out.numel(), 0.0f);
    return absl::OkStatus();
  }
  // For head h: out[:, h, :] (row stride H·N) = z[:, h, :] (row stride H·Dh) · w[:, h·Dh :
  // (h+1)·Dh]ᵀ.
  const int t = static_cast<int>(d.rows), n = static_cast<int>(d.cols),
            dh = static_cast<int>(d.d_head);
  const int width = static_cast<int>(d.heads * d.d_head),
            out_stride = static_cast<int>(d.heads * d.cols);
  for (int64_t h = 0; h < d.heads; ++h) {
    GB_RETURN_IF_ERROR(cpu::Sgemm(/*trans_b=*/true, t, n, dh, 1.0f, z.data<float>() + h * dh,
                                  width, w.data<float>() + h * dh, width, 0.0f,
                                  out.data<float>() + h * n, out_stride));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoLayerNorm(const RowsDims& dims, const Tensor& x, const Tensor* weight,
                                     const Tensor* bias, float eps, Tensor& out, Tensor* scale_out,
                                     Tensor* unweighted_out) {
  const int64_t d = dims.cols, t = dims.rows;
  const float* w = weight ? weight->data<float>() : nullptr;
  const float* b = bias ? bias->data<float>() : nullptr;
#pragma omp parallel for
  for (int64_t r = 0; r < t; ++r) {
    const float* in = x.data<float>() + r * d;
    float* o = out.data<float>() + r * d;
    float* u = unweighted_out ? unweighted_out->data<float>() + r * d : nullptr;
    double mean = 0;
    for (int64_t j = 0; j < d; ++j) mean += in[j];
    mean /= static_cast<double>(d);
    double var = 0;
    for (int64_t j = 0; j < d; ++j) var += (in[j] - mean) * (in[j] - mean);
    var /= static_cast<double>(d);
    const double scale = std::sqrt(var + eps);
    for (int64_t j = 0; j < d; ++j) {
      const float normalized = static_cast<float>((in[j] - mean) / scale);
      if (u) u[j] = normalized;
      float v = normalized;
      if (w) v *= w[j];
      if (b) v += b[j];
      o[j] = v;
    }
    if (scale_out) scale_out->data<float>()[r] = static_cast<float>(scale);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoRmsNorm(const RowsDims& dims, const Tensor& x, const Tensor* weight,
                                   float eps, Tensor& out, Tensor* scale_out,
                                   Tensor* unweighted_out) {
  const int64_t d = dims.cols, t = dims.rows;
  const float* w = weight ? weight->data<float>() : nullptr;
#pragma omp parallel for
  for (int64_t r = 0; r < t; ++r) {
    const float* in = x.data<float>() + r * d;
    double sum_sq = 0;
    for (int64_t j = 0; j < d; ++j) sum_sq += static_cast<double>(in[j]) * in[j];
    const double scale = std::sqrt(sum_sq / static_cast<double>(d) + eps);
    float* o = out.data<float>() + r * d;
    float* u = unweighted_out ? unweighted_out->data<float>() + r * d : nullptr;
    for (int64_t j = 0; j < d; ++j) {
      const float normalized = static_cast<float>(in[j] / scale);
      if (u) u[j] = normalized;
      o[j] = w ? normalized * w[j] : normalized;
    }
    if (scale_out) scale_out->data<float>()[r] = static_cast<float>(scale);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoEmbedding(const EmbeddingDims& d, const Tensor& table, const Tensor& ids,
                                     Tensor& out) {
  // Rows of raw elements: any dtype (activation rows, logits rows and losses are gathered too).
  const size_t row_bytes = static_cast<size_t>(d.dim * DTypeSize(table.dtype()));
  const auto* src = static_cast<const std::byte*>(table.raw_data());
  auto* dst = static_cast<std::byte*>(out.raw_data());
  for (int64_t i = 0; i < d.tokens; ++i) {
    const int32_t id = ids.data<int32_t>()[i];
    if (id < 0 || id >= d.vocab) {
      return absl::InternalError(
          absl::StrCat("cpu Embedding: id ", id, " out of range [0, ", d.vocab, ")"));
    }
    std::memcpy(dst + i * row_bytes, src + id * row_bytes, row_bytes);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoScatterRows(const EmbeddingDims& d, const Tensor& src,
                                       const Tensor& rows, Tensor& table) {
  const size_t row_bytes = static_cast<size_t>(d.dim * DTypeSize(table.dtype()));
  const auto* from = static_cast<const std::byte*>(src.raw_data());
  auto* to = static_cast<std::byte*>(table.raw_data());
  for (int64_t i = 0; i < d.tokens; ++i) {
    const int32_t row = rows.data<int32_t>()[i];
    if (row < 0 || row >= d.vocab) {
      return absl::InternalError(
          absl::StrCat("cpu ScatterRows: row ", row, " out of range [0, ", d.vocab, ")"));
    }
    std::memcpy(to + row * row_bytes, from + i * row_bytes, row_bytes);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoRotary(const RotaryDims& d, const Tensor& x, const Tensor& cos,
                                  const Tensor& sin, const Tensor& positions, int rotary_dim,
                                  Tensor& out) {
  const int64_t t = d.tokens, heads = d.heads, d_head = d.d_head, half = d.half;
  for (int64_t i = 0; i < t; ++i) {
    const int32_t pos = positions.data<int32_t>()[i];
    if (pos < 0 || pos >= d.n_ctx) {
      return absl::InternalError(
          absl::StrCat("cpu Rotary: position ", pos, " outside the table [0, ", d.n_ctx, ")"));
    }
  }
#pragma omp parallel for
  for (int64_t i = 0; i < t; ++i) {
    const int32_t pos = positions.data<int32_t>()[i];
    const float* c = cos.data<float>() + pos * half;
    const float* s = sin.data<float>() + pos * half;
    for (int64_t h = 0; h < heads; ++h) {
      const float* in = x.data<float>() + (i * heads + h) * d_head;
      float* o = out.data<float>() + (i * heads + h) * d_head;
      // Features a and b of pair j rotate by angle j: (j, j + half) or (2j, 2j + 1).
      const bool adjacent = d.style == RotaryStyle::kAdjacentPairs;
      for (int64_t j = 0; j < half; ++j) {
        const int64_t a = adjacent ? 2 * j : j, b = adjacent ? 2 * j + 1 : j + half;
        const float x1 = in[a], x2 = in[b];
        o[a] = x1 * c[j] - x2 * s[j];
        o[b] = x2 * c[j] + x1 * s[j];
      }
      for (int64_t j = rotary_dim; j < d_head; ++j) o[j] = in[j];
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoAttention(const AttentionDims& d, const Tensor& q, const Tensor& k,
                                     const Tensor& v, const Tensor& key_mask, float scale,
                                     Tensor& z, Tensor* scores, Tensor* pattern,
                                     const AttentionOptions& options) {
  // z always from the blocked kernel, so that a captured pattern changes nothing downstream;
  // scores and the pattern only when a hook wants them (kernels/cpu/attention.h).
  GB_RETURN_IF_ERROR(cpu::AttendBlocked(d, q.data<float>(), k.data<float>(), v.data<float>(),
                                        key_mask.data<int32_t>(), scale, options,
                                        z.data<float>()));
  if (scores == nullptr && pattern == nullptr) return absl::OkStatus();
  return cpu::MaterializeScores(d, q.data<float>(), k.data<float>(), key_mask.data<int32_t>(),
                                scale, options, scores ? scores->data<float>() : nullptr,
                                pattern ? pattern->data<float>() : nullptr);
}

absl::Status CpuBackend::DoAdd(int64_t n, const Tensor& a, const Tensor& b, Tensor& out) {
  const float* x = a.data<float>();
  const float* y = b.data<float>();
  float* o = out.data<float>();
#pragma omp parallel for if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) o[i] = x[i] + y[i];
  return absl::OkStatus();
}

absl::Status CpuBackend::DoMul(int64_t n, const Tensor& a, const Tensor& b, Tensor& out) {
  const float* x = a.data<float>();
  const float* y = b.data<float>();
  float* o = out.data<float>();
#pragma omp parallel for if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) o[i] = x[i] * y[i];
  return absl::OkStatus();
}

absl::Status CpuBackend::DoActivate(int64_t n, Activation act, const Tensor& x, Tensor& out) {
  const float* in = x.data<float>();
  float* o = out.data<float>();
  constexpr int64_t kBlock = 1 << 12;
#pragma omp parallel for if (n > (1 << 14))
  for (int64_t i = 0; i < n; i += kBlock) ActivateRun(act, in + i, nullptr, o + i, std::min(kBlock, n - i));
  return absl::OkStatus();
}

absl::Status CpuBackend::DoScale(int64_t n, const Tensor& x, float factor, Tensor& out) {
  const float* in = x.data<float>();
  float* o = out.data<float>();
#pragma omp parallel for if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) o[i] = in[i] * factor;
  return absl::OkStatus();
}

absl::Status CpuBackend::DoSoftCap(int64_t n, const Tensor& x, float cap, Tensor& out) {
  const float* in = x.data<float>();
  float* o = out.data<float>();
#pragma omp parallel for if (n > (1 << 14))
  for (int64_t i = 0; i < n; ++i) o[i] = cap * std::tanh(in[i] / cap);
  return absl::OkStatus();
}

absl::Status CpuBackend::DoSplitQkv(const SplitQkvDims& d, const Tensor& qkv, Tensor& q, Tensor& k,
                                    Tensor& v) {
  const int64_t qw = d.q_cols, kw = d.kv_cols;
  for (int64_t r = 0; r < d.rows; ++r) {
    const float* in = qkv.data<float>() + r * d.width;
    std::memcpy(q.data<float>() + r * qw, in, qw * sizeof(float));
    std::memcpy(k.data<float>() + r * kw, in + qw, kw * sizeof(float));
    std::memcpy(v.data<float>() + r * kw, in + qw + kw, kw * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoCrossEntropy(const RowsDims& d, const Tensor& logits,
                                        const Tensor& targets, Tensor& loss) {
  const int64_t vocab = d.cols;
#pragma omp parallel for
  for (int64_t r = 0; r < d.rows; ++r) {
    const int32_t target = targets.data<int32_t>()[r];
    if (target < 0 || target >= vocab) {
      loss.data<float>()[r] = 0;
      continue;
    }
    const float* row = logits.data<float>() + r * vocab;
    loss.data<float>()[r] = static_cast<float>(RowLogSumExp(row, vocab) - row[target]);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoLogSoftmax(const RowsDims& d, const Tensor& x, Tensor& out) {
  const int64_t n = d.cols;
#pragma omp parallel for
  for (int64_t r = 0; r < d.rows; ++r) {
    const float* row = x.data<float>() + r * n;
    float* o = out.data<float>() + r * n;
    const double log_sum = RowLogSumExp(row, n);
    for (int64_t j = 0; j < n; ++j) o[j] = static_cast<float>(row[j] - log_sum);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoLogSumExp(const RowsDims& d, const Tensor& x, Tensor& lse) {
#pragma omp parallel for
  for (int64_t r = 0; r < d.rows; ++r) {
    lse.data<float>()[r] = static_cast<float>(RowLogSumExp(x.data<float>() + r * d.cols, d.cols));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoGatherColumns(const GatherColumnsDims& d, const Tensor& x,
                                         const Tensor& columns, const Tensor* shift, Tensor& out) {
  const int32_t* cols = columns.data<int32_t>();
  for (int64_t j = 0; j < d.count; ++j) {
    if (cols[j] < 0 || cols[j] >= d.cols) {
      return absl::InternalError(
          absl::StrCat("cpu GatherColumns: column ", cols[j], " out of range [0, ", d.cols, ")"));
    }
  }
#pragma omp parallel for if (d.rows * d.count > (1 << 14))
  for (int64_t r = 0; r < d.rows; ++r) {
    const float* row = x.data<float>() + r * d.cols;
    const double s = shift ? shift->data<float>()[r] : 0.0;
    float* o = out.data<float>() + r * d.count;
    for (int64_t j = 0; j < d.count; ++j) o[j] = static_cast<float>(row[cols[j]] - s);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoTopK(const TopKDims& d, const Tensor& x, Tensor& values,
                                Tensor& indices) {
  const int64_t k = d.k;
#pragma omp parallel
  {
    std::vector<int32_t> scratch;
#pragma omp for
    for (int64_t r = 0; r < d.rows; ++r) {
      RowTopK(x.data<float>() + r * d.cols, d.cols, k, values.data<float>() + r * k,
              indices.data<int32_t>() + r * k, scratch);
    }
  }
  return absl::OkStatus();
}

}  // namespace glassbox
