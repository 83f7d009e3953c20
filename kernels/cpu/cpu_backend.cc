#include "kernels/cpu/cpu_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/float16.h"

namespace glassbox {
namespace {

// Ops check their arguments: a mismatch here is a bug in the caller, reported as INTERNAL
// instead of reading out of bounds.
absl::Status Expect(bool ok, absl::string_view op, absl::string_view what) {
  if (ok) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("cpu ", op, ": ", what));
}

absl::Status ExpectF32(absl::string_view op, std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors) {
    if (t == nullptr) continue;
    if (!t->defined() || t->device() != Device::kCpu || t->dtype() != DType::kF32) {
      return absl::InternalError(absl::StrCat("cpu ", op, ": expected a defined f32 host tensor, got ",
                                              t->defined() ? t->DebugString() : "undefined"));
    }
  }
  return absl::OkStatus();
}

// Rows of a tensor seen as [rows, last].
int64_t Rows(const Tensor& t) { return t.rank() == 0 ? 1 : t.numel() / t.dim(-1); }

float ReadAsFloat(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kF32: return t.data<float>()[i];
    case DType::kF16: return HalfToFloat(t.data<uint16_t>()[i]);
    case DType::kBF16: return BFloat16ToFloat(t.data<uint16_t>()[i]);
    case DType::kI32: return static_cast<float>(t.data<int32_t>()[i]);
    case DType::kI64: return static_cast<float>(t.data<int64_t>()[i]);
  }
  return 0;
}

}  // namespace

float ApplyActivation(Activation act, float x) {
  switch (act) {
    case Activation::kIdentity: return x;
    case Activation::kGeluTanh: {
      constexpr float kSqrt2OverPi = 0.7978845608028654f;
      return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
    }
    case Activation::kGeluExact: return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f));
    case Activation::kGeluQuick: return x / (1.0f + std::exp(-1.702f * x));
    case Activation::kRelu: return x > 0 ? x : 0;
    case Activation::kSilu: return x / (1.0f + std::exp(-x));
  }
  return x;
}

absl::StatusOr<Tensor> CpuBackend::Allocate(DType dtype, Shape shape) {
  for (int64_t d : shape) {
    if (d < 0) return absl::InternalError("cpu Allocate: negative dimension " + ShapeToString(shape));
  }
  return Tensor::EmptyHost(dtype, std::move(shape));
}

absl::Status CpuBackend::CopyFromHost(const Tensor& host, Tensor& out) {
  if (host.numel() != out.numel() || host.dtype() != out.dtype()) {
    return absl::InternalError("cpu CopyFromHost: " + host.DebugString() + " into " + out.DebugString());
  }
  std::memcpy(out.raw_data(), host.raw_data(), host.nbytes());
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyToHost(const Tensor& src, Tensor& host_out) {
  return CopyFromHost(src, host_out);
}

absl::Status CpuBackend::Convert(const Tensor& src, Tensor& out) {
  if (src.numel() != out.numel()) {
    return absl::InternalError("cpu Convert: " + src.DebugString() + " into " + out.DebugString());
  }
  const int64_t n = src.numel();
  if (src.dtype() == out.dtype()) {
    std::memcpy(out.raw_data(), src.raw_data(), src.nbytes());
    return absl::OkStatus();
  }
  switch (out.dtype()) {
    case DType::kF32:
      for (int64_t i = 0; i < n; ++i) out.data<float>()[i] = ReadAsFloat(src, i);
      return absl::OkStatus();
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) out.data<uint16_t>()[i] = FloatToHalf(ReadAsFloat(src, i));
      return absl::OkStatus();
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) out.data<uint16_t>()[i] = FloatToBFloat16(ReadAsFloat(src, i));
      return absl::OkStatus();
    case DType::kI32:
      if (src.dtype() != DType::kI64) break;
      for (int64_t i = 0; i < n; ++i) out.data<int32_t>()[i] = static_cast<int32_t>(src.data<int64_t>()[i]);
      return absl::OkStatus();
    case DType::kI64:
      if (src.dtype() != DType::kI32) break;
      for (int64_t i = 0; i < n; ++i) out.data<int64_t>()[i] = src.data<int32_t>()[i];
      return absl::OkStatus();
  }
  return absl::InternalError(absl::StrCat("cpu Convert: unsupported ", DTypeName(src.dtype()),
                                          " -> ", DTypeName(out.dtype())));
}

absl::Status CpuBackend::Linear(const Tensor& x, const Tensor& w, const Tensor* bias,
                                Activation act, Tensor& out) {
  if (auto s = ExpectF32("Linear", {&x, &w, bias, &out}); !s.ok()) return s;
  const int64_t k = x.dim(-1), n = w.dim(0), t = Rows(x);
  if (auto s = Expect(w.rank() == 2 && w.dim(1) == k && out.numel() == t * n &&
                          (bias == nullptr || bias->numel() == n),
                      "Linear", "shape mismatch: x " + x.DebugString() + " w " + w.DebugString() +
                                    " out " + out.DebugString());
      !s.ok()) {
    return s;
  }
  float* y = out.data<float>();
  if (t > 0 && n > 0) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(t), static_cast<int>(n),
                static_cast<int>(k), 1.0f, x.data<float>(), static_cast<int>(k), w.data<float>(),
                static_cast<int>(k), 0.0f, y, static_cast<int>(n));
  }
  if (bias == nullptr && act == Activation::kIdentity) return absl::OkStatus();
  const float* b = bias ? bias->data<float>() : nullptr;
#pragma omp parallel for
  for (int64_t r = 0; r < t; ++r) {
    float* row = y + r * n;
    for (int64_t j = 0; j < n; ++j) row[j] = ApplyActivation(act, b ? row[j] + b[j] : row[j]);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::HeadProjection(const Tensor& z, const Tensor& w, Tensor& out) {
  if (auto s = ExpectF32("HeadProjection", {&z, &w, &out}); !s.ok()) return s;
  const int64_t heads = z.dim(-2), d_head = z.dim(-1), t = z.numel() / (heads * d_head);
  const int64_t n = w.dim(0);
  if (auto s = Expect(w.rank() == 2 && w.dim(1) == heads * d_head && out.numel() == t * heads * n,
                      "HeadProjection", "shape mismatch");
      !s.ok()) {
    return s;
  }
  // For head h: out[:, h, :] (row stride H·N) = z[:, h, :] (row stride H·Dh) · w[:, h·Dh : (h+1)·Dh]ᵀ.
  for (int64_t h = 0; h < heads; ++h) {
    if (t == 0 || n == 0) break;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(t), static_cast<int>(n),
                static_cast<int>(d_head), 1.0f, z.data<float>() + h * d_head,
                static_cast<int>(heads * d_head), w.data<float>() + h * d_head,
                static_cast<int>(heads * d_head), 0.0f, out.data<float>() + h * n,
                static_cast<int>(heads * n));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::LayerNorm(const Tensor& x, const Tensor* weight, const Tensor* bias,
                                   float eps, Tensor& out, Tensor* scale_out,
                                   Tensor* unweighted_out) {
  if (auto s = ExpectF32("LayerNorm", {&x, weight, bias, &out, scale_out, unweighted_out}); !s.ok()) {
    return s;
  }
  const int64_t d = x.dim(-1), t = Rows(x);
  if (auto s = Expect(out.numel() == x.numel() && (!weight || weight->numel() == d) &&
                          (!bias || bias->numel() == d) && (!scale_out || scale_out->numel() == t) &&
                          (!unweighted_out || unweighted_out->numel() == x.numel()),
                      "LayerNorm", "shape mismatch");
      !s.ok()) {
    return s;
  }
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

absl::Status CpuBackend::RmsNorm(const Tensor& x, const Tensor* weight, float eps, Tensor& out,
                                 Tensor* scale_out, Tensor* unweighted_out) {
  if (auto s = ExpectF32("RmsNorm", {&x, weight, &out, scale_out, unweighted_out}); !s.ok()) return s;
  const int64_t d = x.dim(-1), t = Rows(x);
  if (auto s = Expect(out.numel() == x.numel() && (!weight || weight->numel() == d) &&
                          (!scale_out || scale_out->numel() == t) &&
                          (!unweighted_out || unweighted_out->numel() == x.numel()),
                      "RmsNorm", "shape mismatch");
      !s.ok()) {
    return s;
  }
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

absl::Status CpuBackend::Embedding(const Tensor& table, const Tensor& ids, Tensor& out) {
  if (auto s = ExpectF32("Embedding", {&table, &out}); !s.ok()) return s;
  const int64_t d = table.dim(1), vocab = table.dim(0), t = ids.numel();
  if (auto s = Expect(ids.dtype() == DType::kI32 && out.numel() == t * d, "Embedding", "shape mismatch");
      !s.ok()) {
    return s;
  }
  for (int64_t i = 0; i < t; ++i) {
    const int32_t id = ids.data<int32_t>()[i];
    if (id < 0 || id >= vocab) {
      return absl::InternalError(absl::StrCat("cpu Embedding: id ", id, " out of range [0, ", vocab, ")"));
    }
    std::memcpy(out.data<float>() + i * d, table.data<float>() + id * d, d * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Rotary(const Tensor& x, const Tensor& cos, const Tensor& sin,
                                const Tensor& positions, int rotary_dim, Tensor& out) {
  if (auto s = ExpectF32("Rotary", {&x, &cos, &sin, &out}); !s.ok()) return s;
  const int64_t heads = x.dim(-2), d_head = x.dim(-1), t = x.numel() / (heads * d_head);
  const int64_t half = rotary_dim / 2, n_ctx = cos.dim(0);
  if (auto s = Expect(positions.dtype() == DType::kI32 && positions.numel() == t &&
                          out.numel() == x.numel() && rotary_dim % 2 == 0 && rotary_dim <= d_head &&
                          cos.dim(1) == half && sin.dim(1) == half,
                      "Rotary", "shape mismatch");
      !s.ok()) {
    return s;
  }
  for (int64_t i = 0; i < t; ++i) {
    const int32_t pos = positions.data<int32_t>()[i];
    if (pos < 0 || pos >= n_ctx) {
      return absl::InternalError(absl::StrCat("cpu Rotary: position ", pos, " outside the table [0, ", n_ctx, ")"));
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
      for (int64_t j = 0; j < half; ++j) {
        const float x1 = in[j], x2 = in[j + half];
        o[j] = x1 * c[j] - x2 * s[j];
        o[j + half] = x2 * c[j] + x1 * s[j];
      }
      for (int64_t j = rotary_dim; j < d_head; ++j) o[j] = in[j];
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                   const Tensor& key_mask, float scale, Tensor& z,
                                   Tensor* scores, Tensor* pattern) {
  if (auto s = ExpectF32("Attention", {&q, &k, &v, &z, scores, pattern}); !s.ok()) return s;
  if (auto s = Expect(q.rank() == 4 && k.rank() == 4 && v.rank() == 4, "Attention", "rank != 4");
      !s.ok()) {
    return s;
  }
  const int64_t batch = q.dim(0), seq = q.dim(1), heads = q.dim(2), d_head = q.dim(3);
  const int64_t kv_heads = k.dim(2);
  if (auto s = Expect(kv_heads > 0 && heads % kv_heads == 0 && k.shape() == v.shape() &&
                          k.dim(0) == batch && k.dim(1) == seq && k.dim(3) == d_head &&
                          key_mask.dtype() == DType::kI32 && key_mask.numel() == batch * seq &&
                          z.numel() == q.numel() &&
                          (!scores || scores->numel() == batch * heads * seq * seq) &&
                          (!pattern || pattern->numel() == batch * heads * seq * seq),
                      "Attention", "shape mismatch");
      !s.ok()) {
    return s;
  }
  const int64_t group = heads / kv_heads;
  const float kNegInf = -std::numeric_limits<float>::infinity();
  const int q_stride = static_cast<int>(heads * d_head), kv_stride = static_cast<int>(kv_heads * d_head);
  const int n = static_cast<int>(seq), dh = static_cast<int>(d_head);
  // Per (batch, head): S = scale·Q·Kᵀ and Z = P·V as two GEMMs reading the [B, S, H, Dh] layout
  // in place through leading dimensions. The masked upper triangle is computed and discarded:
  // still far cheaper than scalar dot products.
  std::vector<float> probs(static_cast<size_t>(seq * seq));
  for (int64_t b = 0; b < batch; ++b) {
    const int32_t* mask = key_mask.data<int32_t>() + b * seq;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t kvh = h / group;
      const float* qh = q.data<float>() + b * seq * heads * d_head + h * d_head;
      const float* kh = k.data<float>() + b * seq * kv_heads * d_head + kvh * d_head;
      const float* vh = v.data<float>() + b * seq * kv_heads * d_head + kvh * d_head;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, dh, scale, qh, q_stride, kh,
                  kv_stride, 0.0f, probs.data(), n);
      const int64_t score_base = (b * heads + h) * seq * seq;
#pragma omp parallel for if (seq >= 256)
      for (int64_t i = 0; i < seq; ++i) {
        float* row = probs.data() + i * seq;
        float max_score = kNegInf;
        for (int64_t j = 0; j < seq; ++j) {
          if (j > i || mask[j] == 0) row[j] = kNegInf;
          max_score = std::max(max_score, row[j]);
        }
        if (scores) std::memcpy(scores->data<float>() + score_base + i * seq, row, seq * sizeof(float));
        double denom = 0;
        for (int64_t j = 0; j < seq; ++j) {
          row[j] = row[j] == kNegInf ? 0.0f : std::exp(row[j] - max_score);
          denom += row[j];
        }
        // A query with no visible key (padding before the first real token) keeps a zero row.
        const float inv = denom > 0 ? static_cast<float>(1.0 / denom) : 0.0f;
        for (int64_t j = 0; j < seq; ++j) row[j] *= inv;
        if (pattern) std::memcpy(pattern->data<float>() + score_base + i * seq, row, seq * sizeof(float));
      }
      float* zh = z.data<float>() + b * seq * heads * d_head + h * d_head;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dh, n, 1.0f, probs.data(), n, vh,
                  kv_stride, 0.0f, zh, q_stride);
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Add(const Tensor& a, const Tensor& b, Tensor& out) {
  if (auto s = ExpectF32("Add", {&a, &b, &out}); !s.ok()) return s;
  if (auto s = Expect(a.numel() == b.numel() && a.numel() == out.numel(), "Add", "shape mismatch");
      !s.ok()) {
    return s;
  }
  const float* x = a.data<float>();
  const float* y = b.data<float>();
  float* o = out.data<float>();
  const int64_t n = a.numel();
#pragma omp parallel for if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) o[i] = x[i] + y[i];
  return absl::OkStatus();
}

absl::Status CpuBackend::Mul(const Tensor& a, const Tensor& b, Tensor& out) {
  if (auto s = ExpectF32("Mul", {&a, &b, &out}); !s.ok()) return s;
  if (auto s = Expect(a.numel() == b.numel() && a.numel() == out.numel(), "Mul", "shape mismatch");
      !s.ok()) {
    return s;
  }
  const float* x = a.data<float>();
  const float* y = b.data<float>();
  float* o = out.data<float>();
  const int64_t n = a.numel();
#pragma omp parallel for if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) o[i] = x[i] * y[i];
  return absl::OkStatus();
}

absl::Status CpuBackend::Activate(Activation act, const Tensor& x, Tensor& out) {
  if (auto s = ExpectF32("Activate", {&x, &out}); !s.ok()) return s;
  if (auto s = Expect(x.numel() == out.numel(), "Activate", "shape mismatch"); !s.ok()) return s;
  const float* in = x.data<float>();
  float* o = out.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for if (n > (1 << 14))
  for (int64_t i = 0; i < n; ++i) o[i] = ApplyActivation(act, in[i]);
  return absl::OkStatus();
}

absl::Status CpuBackend::SplitQkv(const Tensor& qkv, Tensor& q, Tensor& k, Tensor& v) {
  if (auto s = ExpectF32("SplitQkv", {&qkv, &q, &k, &v}); !s.ok()) return s;
  const int64_t t = Rows(qkv), width = qkv.dim(-1);
  const int64_t qw = q.numel() / std::max<int64_t>(t, 1), kw = k.numel() / std::max<int64_t>(t, 1);
  if (auto s = Expect(width == qw + 2 * kw && v.numel() == k.numel(), "SplitQkv", "shape mismatch");
      !s.ok()) {
    return s;
  }
  for (int64_t r = 0; r < t; ++r) {
    const float* in = qkv.data<float>() + r * width;
    std::memcpy(q.data<float>() + r * qw, in, qw * sizeof(float));
    std::memcpy(k.data<float>() + r * kw, in + qw, kw * sizeof(float));
    std::memcpy(v.data<float>() + r * kw, in + qw + kw, kw * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::CrossEntropy(const Tensor& logits, const Tensor& targets, Tensor& loss) {
  if (auto s = ExpectF32("CrossEntropy", {&logits, &loss}); !s.ok()) return s;
  const int64_t vocab = logits.dim(-1), t = Rows(logits);
  if (auto s = Expect(targets.dtype() == DType::kI32 && targets.numel() == t && loss.numel() == t,
                      "CrossEntropy", "shape mismatch");
      !s.ok()) {
    return s;
  }
#pragma omp parallel for
  for (int64_t r = 0; r < t; ++r) {
    const int32_t target = targets.data<int32_t>()[r];
    if (target < 0 || target >= vocab) {
      loss.data<float>()[r] = 0;
      continue;
    }
    const float* row = logits.data<float>() + r * vocab;
    const float max_logit = *std::max_element(row, row + vocab);
    double sum = 0;
    for (int64_t j = 0; j < vocab; ++j) sum += std::exp(static_cast<double>(row[j]) - max_logit);
    loss.data<float>()[r] = static_cast<float>(std::log(sum) + max_logit - row[target]);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::LogSoftmax(const Tensor& x, Tensor& out) {
  if (auto s = ExpectF32("LogSoftmax", {&x, &out}); !s.ok()) return s;
  if (auto s = Expect(x.numel() == out.numel(), "LogSoftmax", "shape mismatch"); !s.ok()) return s;
  const int64_t n = x.dim(-1), t = Rows(x);
#pragma omp parallel for
  for (int64_t r = 0; r < t; ++r) {
    const float* row = x.data<float>() + r * n;
    float* o = out.data<float>() + r * n;
    const float max_value = *std::max_element(row, row + n);
    double sum = 0;
    for (int64_t j = 0; j < n; ++j) sum += std::exp(static_cast<double>(row[j]) - max_value);
    const double log_sum = std::log(sum) + max_value;
    for (int64_t j = 0; j < n; ++j) o[j] = static_cast<float>(row[j] - log_sum);
  }
  return absl::OkStatus();
}

}  // namespace glassbox
