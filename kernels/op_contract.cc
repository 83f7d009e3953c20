#include "kernels/op_contract.h"

#include <cmath>
#include <initializer_list>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "base/status_macros.h"

namespace glassbox {
namespace {

const char* DeviceName(Device device) { return device == Device::kCpu ? "host" : "CUDA"; }

// Product of all dimensions but the last `axes` (1 when there are none).
int64_t Leading(const Tensor& t, int axes) {
  int64_t n = 1;
  for (int i = 0; i + axes < t.rank(); ++i) n *= t.shape()[i];
  return n;
}

// A tensor argument with the name the messages use.
struct Arg {
  const Tensor* tensor;  // null: an optional argument that was not given
  const char* name;
};

// The checks of one op call; every failure is INTERNAL "<backend> <op>: <what>".
class Checker {
 public:
  Checker(const OpTarget& target, absl::string_view op) : target_(target), op_(op) {}

  absl::Status Fail(absl::string_view what) const {
    return absl::InternalError(absl::StrCat(target_.backend, " ", op_, ": ", what));
  }
  absl::Status Require(bool ok, absl::string_view what) const {
    return ok ? absl::OkStatus() : Fail(what);
  }

  // Every given tensor is defined and on `device` (the backend's unless said otherwise).
  absl::Status Present(std::initializer_list<Arg> args) const {
    return PresentOn(target_.device, args);
  }
  absl::Status PresentOn(Device device, std::initializer_list<Arg> args) const {
    for (const Arg& a : args) {
      if (a.tensor == nullptr) continue;
      if (!a.tensor->defined()) return Fail(absl::StrCat(a.name, " is undefined"));
      if (a.tensor->device() != device) {
        return Fail(absl::StrCat(a.name, " is ", a.tensor->DebugString(), "; expected a ",
                                 DeviceName(device), " tensor"));
      }
    }
    return absl::OkStatus();
  }

  // Every given tensor has a floating dtype this backend computes in.
  absl::Status Floating(std::initializer_list<Arg> args) const {
    for (const Arg& a : args) {
      if (a.tensor == nullptr) continue;
      const DType d = a.tensor->dtype();
      if (!IsFloating(d)) {
        return Fail(
            absl::StrCat(a.name, " is ", a.tensor->DebugString(), "; expected a floating tensor"));
      }
      if (d != DType::kF32 && !target_.half_precision) {
        return Fail(absl::StrCat(a.name, " is ", a.tensor->DebugString(),
                                 "; this backend computes in f32"));
      }
    }
    return absl::OkStatus();
  }

  // Every given tensor has dtype `want` (the dtype of `like_name` when that is set).
  absl::Status DTypeIs(DType want, std::initializer_list<Arg> args,
                       const char* like_name = nullptr) const {
    for (const Arg& a : args) {
      if (a.tensor == nullptr || a.tensor->dtype() == want) continue;
      return Fail(absl::StrCat(a.name, " is ", a.tensor->DebugString(), "; expected ",
                               DTypeName(want),
                               like_name ? absl::StrCat(" like ", like_name) : ""));
    }
    return absl::OkStatus();
  }

  // Checked before any dim() of `t` is read: a rank-0 tensor has no axes to read.
  absl::Status RankAtLeast(const Tensor& t, int rank, const char* name,
                           absl::string_view layout) const {
    if (t.rank() >= rank) return absl::OkStatus();
    return Fail(absl::StrCat(name, " must be ", layout, ", got ", t.DebugString()));
  }
  absl::Status RankIs(const Tensor& t, int rank, const char* name, absl::string_view layout) const {
    if (t.rank() == rank) return absl::OkStatus();
    return Fail(absl::StrCat(name, " must be ", layout, ", got ", t.DebugString()));
  }

  // A given tensor holds `want` elements (tokens dimensions may be flattened, so only the count
  // is checked).
  absl::Status Elements(const Tensor* t, int64_t want, const char* name) const {
    if (t == nullptr || t->numel() == want) return absl::OkStatus();
    return Fail(absl::StrCat(name, " has ", t->numel(), " elements (", t->DebugString(),
                             "); expected ", want));
  }

  // A reduction over the last axis has no value for a row when that axis is empty.
  absl::Status ReducedAxis(const Tensor& x, int64_t rows, const char* name) const {
    if (rows == 0 || x.dim(-1) > 0) return absl::OkStatus();
    return Fail(absl::StrCat(name, " ", x.DebugString(), " has an empty last axis to reduce over"));
  }

 private:
  const OpTarget& target_;
  absl::string_view op_;
};

// `x` as [rows, cols] for ops over its last axis.
absl::StatusOr<RowsDims> Rows(const Checker& check, const Tensor& x, const char* name) {
  GB_RETURN_IF_ERROR(check.RankAtLeast(x, 1, name, "[..., n] (rank >= 1)"));
  RowsDims d{.rows = Leading(x, 1), .cols = x.dim(-1)};
  d.empty = d.rows == 0;
  return d;
}

absl::StatusOr<RowsDims> CheckNorm(const OpTarget& target, absl::string_view op, const Tensor& x,
                                   const Tensor* weight, const Tensor* bias, const Tensor& out,
                                   const Tensor* scale_out, const Tensor* unweighted_out) {
  const Checker check(target, op);
  GB_RETURN_IF_ERROR(check.Present({{&x, "x"},
                                    {weight, "weight"},
                                    {bias, "bias"},
                                    {&out, "out"},
                                    {scale_out, "scale_out"},
                                    {unweighted_out, "unweighted_out"}}));
  GB_RETURN_IF_ERROR(check.Floating({{&x, "x"}, {weight, "weight"}, {bias, "bias"}}));
  GB_RETURN_IF_ERROR(check.DTypeIs(
      x.dtype(), {{&out, "out"}, {scale_out, "scale_out"}, {unweighted_out, "unweighted_out"}},
      "x"));
  GB_ASSIGN_OR_RETURN(const RowsDims d, Rows(check, x, "x"));
  GB_RETURN_IF_ERROR(check.ReducedAxis(x, d.rows, "x"));
  GB_RETURN_IF_ERROR(check.Elements(&out, x.numel(), "out"));
  GB_RETURN_IF_ERROR(check.Elements(weight, d.cols, "weight"));
  GB_RETURN_IF_ERROR(check.Elements(bias, d.cols, "bias"));
  GB_RETURN_IF_ERROR(check.Elements(scale_out, d.rows, "scale_out"));
  GB_RETURN_IF_ERROR(check.Elements(unweighted_out, x.numel(), "unweighted_out"));
  return d;
}

absl::StatusOr<int64_t> CheckBinary(const OpTarget& target, absl::string_view op, const Tensor& a,
                                    const Tensor& b, const Tensor& out) {
  const Checker check(target, op);
  GB_RETURN_IF_ERROR(check.Present({{&a, "a"}, {&b, "b"}, {&out, "out"}}));
  GB_RETURN_IF_ERROR(check.Floating({{&a, "a"}}));
  GB_RETURN_IF_ERROR(check.DTypeIs(a.dtype(), {{&b, "b"}, {&out, "out"}}, "a"));
  GB_RETURN_IF_ERROR(check.Elements(&b, a.numel(), "b"));
  GB_RETURN_IF_ERROR(check.Elements(&out, a.numel(), "out"));
  return a.numel();
}

// Copies move bytes between the host and the backend's device, unchanged.
absl::StatusOr<int64_t> CheckCopy(const OpTarget& target, absl::string_view op, const Tensor& src,
                                  Device src_device, const Tensor& dst, Device dst_device) {
  const Checker check(target, op);
  GB_RETURN_IF_ERROR(check.PresentOn(src_device, {{&src, "source"}}));
  GB_RETURN_IF_ERROR(check.PresentOn(dst_device, {{&dst, "destination"}}));
  GB_RETURN_IF_ERROR(check.Require(src.dtype() == dst.dtype() && src.numel() == dst.numel(),
                                   absl::StrCat(src.DebugString(), " into ", dst.DebugString())));
  return static_cast<int64_t>(src.nbytes());
}

}  // namespace

absl::Status CheckAllocate(const OpTarget& target, const Shape& shape) {
  for (int64_t d : shape) {
    if (d < 0)
      return Checker(target, "Allocate").Fail("negative dimension " + ShapeToString(shape));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> CheckCopyFromHost(const OpTarget& target, const Tensor& host,
                                          const Tensor& out) {
  return CheckCopy(target, "CopyFromHost", host, Device::kCpu, out, target.device);
}

absl::StatusOr<int64_t> CheckCopyToHost(const OpTarget& target, const Tensor& src,
                                        const Tensor& host_out) {
  return CheckCopy(target, "CopyToHost", src, target.device, host_out, Device::kCpu);
}

absl::StatusOr<int64_t> CheckConvert(const OpTarget& target, const Tensor& src, const Tensor& out) {
  const Checker check(target, "Convert");
  GB_RETURN_IF_ERROR(check.Present({{&src, "src"}, {&out, "out"}}));
  GB_RETURN_IF_ERROR(check.Elements(&out, src.numel(), "out"));
  // Anything to a floating type (every backend converts to f16/bf16, whatever it computes in),
  // and i32 <-> i64.
  const DType from = src.dtype(), to = out.dtype();
  const bool supported = from == to || IsFloating(to) ||
                         (to == DType::kI32 && from == DType::kI64) ||
                         (to == DType::kI64 && from == DType::kI32);
  GB_RETURN_IF_ERROR(check.Require(
      supported, absl::StrCat("unsupported ", DTypeName(from), " -> ", DTypeName(to))));
  return src.numel();
}

absl::StatusOr<LinearDims> CheckLinear(const OpTarget& target, const Tensor& x, const Tensor& w,
                                       const Tensor* bias, const Tensor& out) {
  const Checker check(target, "Linear");
  GB_RETURN_IF_ERROR(check.Present({{&x, "x"}, {&w, "w"}, {bias, "bias"}, {&out, "out"}}));
  GB_RETURN_IF_ERROR(check.Floating({{&x, "x"}, {bias, "bias"}, {&out, "out"}}));
  GB_RETURN_IF_ERROR(check.DTypeIs(x.dtype(), {{&w, "w"}}, "x"));
  GB_RETURN_IF_ERROR(check.RankAtLeast(x, 1, "x", "[..., in_features] (rank >= 1)"));
  GB_RETURN_IF_ERROR(check.RankIs(w, 2, "w", "[out_features, in_features]"));
  LinearDims d{.rows = Leading(x, 1), .inner = x.dim(-1), .cols = w.dim(0)};
  GB_RETURN_IF_ERROR(check.Require(
      w.dim(1) == d.inner,
      absl::StrCat("x ", x.DebugString(), " and w ", w.DebugString(), " disagree on in_features")));
  GB_RETURN_IF_ERROR(check.Elements(&out, d.rows * d.cols, "out"));
  GB_RETURN_IF_ERROR(check.Elements(bias, d.cols, "bias"));
  d.empty = d.rows == 0 || d.cols == 0;
  return d;
}

absl::StatusOr<HeadProjectionDims> CheckHeadProjection(const OpTarget& target, const Tensor& z,
                                                       const Tensor& w, const Tensor& out) {
  const Checker check(target, "HeadProjection");
  GB_RETURN_IF_ERROR(check.Present({{&z, "z"}, {&w, "w"}, {&out, "out"}}));
  GB_RETURN_IF_ERROR(check.Floating({{&z, "z"}, {&out, "out"}}));
  GB_RETURN_IF_ERROR(check.DTypeIs(z.dtype(), {{&w, "w"}}, "z"));
  GB_RETURN_IF_ERROR(check.RankAtLeast(z, 2, "z", "[..., heads, d_head]"));
  GB_RETURN_IF_ERROR(check.RankIs(w, 2, "w", "[out_features, heads * d_head]"));
  HeadProjectionDims d{
      .rows = Leading(z, 2), .heads = z.dim(-2), .d_head = z.dim(-1), .cols = w.dim(0)};
  GB_RETURN_IF_ERROR(
      check.Require(w.dim(1) == d.heads * d.d_head,
                    absl::StrCat("w ", w.DebugString(), " does not take z ", z.DebugString())));
  GB_RETURN_IF_ERROR(check.Elements(&out, d.rows * d.heads * d.cols, "out"));
  d.empty = d.rows == 0 || d.heads == 0 || d.cols == 0;
  return d;
}

absl::StatusOr<RowsDims> CheckLayerNorm(const OpTarget& target, const Tensor& x,
                                        const Tensor* weight, const Tensor* bias, const Tensor& out,
                                        const Tensor* scale_out, const Tensor* unweighted_out) {
  return CheckNorm(target, "LayerNorm", x, weight, bias, out, scale_out, unweighted_out);
}

absl::StatusOr<RowsDims> CheckRmsNorm(const OpTarget& target, const Tensor& x, const Tensor* weight,
                                      const Tensor& out, const Tensor* scale_out,
                                      const Tensor* unweighted_out) {
  return CheckNorm(target, "RmsNorm", x, weight, nullptr, out, scale_out, unweighted_out);
}

absl::StatusOr<EmbeddingDims> CheckEmbedding(const OpTarget& target, const Tensor& table,
                                             const Tensor& ids, const Tensor& out) {
  const Checker check(target, "Embedding");
  GB_RETURN_IF_ERROR(check.Present({{&table, "table"}, {&ids, "ids"}, {&out, "out"}}));
  GB_RETURN_IF_ERROR(check.RankIs(table, 2, "table", "[vocab, dim]"));
  GB_RETURN_IF_ERROR(check.DTypeIs(DType::kI32, {{&ids, "ids"}}));
  GB_RETURN_IF_ERROR(check.DTypeIs(table.dtype(), {{&out, "out"}}, "table"));
  EmbeddingDims d{.tokens = ids.numel(), .vocab = table.dim(0), .dim = table.dim(1)};
  GB_RETURN_IF_ERROR(check.Elements(&out, d.tokens * d.dim, "out"));
  d.empty = d.tokens == 0 || d.dim == 0;
  return d;
}

absl::StatusOr<EmbeddingDims> CheckScatterRows(const OpTarget& target, const Tensor& src,
                                               const Tensor& rows, const Tensor& table) {
  const Checker check(target, "ScatterRows");
  GB_RETURN_IF_ERROR(check.Present({{&src, "src"}, {&rows, "rows"}, {&table, "table"}}));
  GB_RETURN_IF_ERROR(check.RankIs(table, 2, "table", "[rows, dim]"));
  GB_RETURN_IF_ERROR(check.DTypeIs(DType::kI32, {{&rows, "rows"}}));
  GB_RETURN_IF_ERROR(check.DTypeIs(table.dtype(), {{&src, "src"}}, "table"));
  EmbeddingDims d{.tokens = rows.numel(), .vocab = table.dim(0), .dim = table.dim(1)};
  GB_RETURN_IF_ERROR(check.Elements(&src, d.tokens * d.dim, "src"));
  d.empty = d.tokens == 0 || d.dim == 0;
  return d;
}

absl::StatusOr<RotaryDims> CheckRotary(const OpTarget& target, const Tensor& x, const Tensor& cos,
                                       const Tensor& sin, const Tensor& positions, int rotary_dim,
                                       const Tensor& out) {
  const Checker check(target, "Rotary");
  GB_RETURN_IF_ERROR(check.Present(
      {{&x, "x"}, {&cos, "cos"}, {&sin, "sin"}, {&positions, "positions"}, {&out, "out"}}));
  GB_RETURN_IF_ERROR(check.Floating({{&x, "x"}, {&cos, "cos"}, {&sin, "sin"}}));
  GB_RETURN_IF_ERROR(check.DTypeIs(x.dtype(), {{&out, "out"}}, "x"));
  GB_RETURN_IF_ERROR(check.DTypeIs(DType::kI32, {{&positions, "positions"}}));
  GB_RETURN_IF_ERROR(check.RankAtLeast(x, 2, "x", "[..., heads, d_head]"));
  GB_RETURN_IF_ERROR(check.RankIs(cos, 2, "cos", "[n_ctx, rotary_dim / 2]"));
  RotaryDims d{.tokens = Leading(x, 2),
               .heads = x.dim(-2),
               .d_head = x.dim(-1),
               .half = rotary_dim / 2,
               .n_ctx = cos.dim(0)};
  GB_RETURN_IF_ERROR(
      check.Require(rotary_dim >= 0 && rotary_dim % 2 == 0 && rotary_dim <= d.d_head,
                    absl::StrCat("rotary_dim ", rotary_dim,
                                 " must be even and in [0, d_head = ", d.d_head, "]")));
  GB_RETURN_IF_ERROR(
      check.Require(cos.dim(1) == d.half && sin.shape() == cos.shape(),
                    absl::StrCat("cos ", cos.DebugString(), " and sin ", sin.DebugString(),
                                 " must be [n_ctx, ", d.half, "]")));
  GB_RETURN_IF_ERROR(check.Elements(&positions, d.tokens, "positions"));
  GB_RETURN_IF_ERROR(check.Elements(&out, x.numel(), "out"));
  d.empty = x.numel() == 0;
  return d;
}

absl::Status CheckAttentionOptions(const OpTarget& target, int64_t window, float softcap,
                                   int64_t query_offset, AttentionDims& d) {
  const Checker check(target, "Attention");
  GB_RETURN_IF_ERROR(check.Require(window >= 0, absl::StrCat("window is ", window)));
  GB_RETURN_IF_ERROR(check.Require(std::isfinite(softcap) && softcap >= 0,
                                   absl::StrCat("softcap is ", softcap)));
  GB_RETURN_IF_ERROR(check.Require(
      query_offset >= 0 && query_offset + d.seq <= d.kv_seq,
      absl::StrCat("queries ", query_offset, "..", query_offset + d.seq, " do not lie within the ",
                   d.kv_seq, " keys")));
  d.query_offset = query_offset;
  return absl::OkStatus();
}

absl::StatusOr<AttentionDims> CheckAttention(const OpTarget& target, const Tensor& q,
                                             const Tensor& k, const Tensor& v,
                                             const Tensor& key_mask, const Tensor& z,
                                             const Tensor* scores, const Tensor* pattern) {
  const Checker check(target, "Attention");
  GB_RETURN_IF_ERROR(check.Present({{&q, "q"},
                                    {&k, "k"},
                                    {&v, "v"},
                                    {&key_mask, "key_mask"},
                                    {&z, "z"},
                                    {scores, "scores"},
                                    {pattern, "pattern"}}));
  GB_RETURN_IF_ERROR(check.Floating({{&q, "q"}}));
  GB_RETURN_IF_ERROR(check.DTypeIs(
      q.dtype(), {{&k, "k"}, {&v, "v"}, {&z, "z"}, {scores, "scores"}, {pattern, "pattern"}}, "q"));
  GB_RETURN_IF_ERROR(check.DTypeIs(DType::kI32, {{&key_mask, "key_mask"}}));
  GB_RETURN_IF_ERROR(check.RankIs(q, 4, "q", "[batch, seq, heads, d_head]"));
  GB_RETURN_IF_ERROR(check.RankIs(k, 4, "k", "[batch, seq, kv_heads, d_head]"));
  AttentionDims d{.batch = q.dim(0),
                  .seq = q.dim(1),
                  .heads = q.dim(2),
                  .kv_heads = k.dim(2),
                  .d_head = q.dim(3),
                  .kv_seq = k.dim(1)};
  GB_RETURN_IF_ERROR(check.Require(
      d.heads > 0 && d.kv_heads > 0 && d.heads % d.kv_heads == 0,
      absl::StrCat(d.heads, " query heads cannot share ", d.kv_heads,
                   " KV heads: both must be positive and kv_heads must divide heads")));
  GB_RETURN_IF_ERROR(check.Require(d.d_head > 0, "d_head must be positive"));
  GB_RETURN_IF_ERROR(check.Require(
      k.dim(0) == d.batch && k.dim(1) >= d.seq && k.dim(3) == d.d_head && v.shape() == k.shape(),
      absl::StrCat("q ", q.DebugString(), ", k ", k.DebugString(), " and v ", v.DebugString(),
                   " disagree")));
  GB_RETURN_IF_ERROR(check.Elements(&key_mask, d.batch * d.kv_seq, "key_mask"));
  GB_RETURN_IF_ERROR(check.Elements(&z, q.numel(), "z"));
  const int64_t squares = d.batch * d.heads * d.seq * d.kv_seq;
  GB_RETURN_IF_ERROR(check.Elements(scores, squares, "scores"));
  GB_RETURN_IF_ERROR(check.Elements(pattern, squares, "pattern"));
  d.empty = d.batch == 0 || d.seq == 0;
  return d;
}

absl::StatusOr<int64_t> CheckAdd(const OpTarget& target, const Tensor& a, const Tensor& b,
                                 const Tensor& out) {
  return CheckBinary(target, "Add", a, b, out);
}

absl::StatusOr<int64_t> CheckMul(const OpTarget& target, const Tensor& a, const Tensor& b,
                                 const Tensor& out) {
  return CheckBinary(target, "Mul", a, b, out);
}

namespace {

// One floating input and an output of its dtype and element count.
absl::StatusOr<int64_t> CheckUnary(const Checker& check, const Tensor& x, const Tensor& out) {
  GB_RETURN_IF_ERROR(check.Present({{&x, "x"}, {&out, "out"}}));
  GB_RETURN_IF_ERROR(check.Floating({{&x, "x"}}));
  GB_RETURN_IF_ERROR(check.DTypeIs(x.dtype(), {{&out, "out"}}, "x"));
  GB_RETURN_IF_ERROR(check.Elements(&out, x.numel(), "out"));
  return x.numel();
}

}  // namespace

absl::StatusOr<int64_t> CheckActivate(const OpTarget& target, const Tensor& x, const Tensor& out) {
  return CheckUnary(Checker(target, "Activate"), x, out);
}

absl::StatusOr<int64_t> CheckScale(const OpTarget& target, const Tensor& x, float factor,
                                   const Tensor& out) {
  const Checker check(target, "Scale");
  GB_RETURN_IF_ERROR(check.Require(std::isfinite(factor), absl::StrCat("factor is ", factor)));
  return CheckUnary(check, x, out);
}

absl::StatusOr<int64_t> CheckSoftCap(const OpTarget& target, const Tensor& x, float cap,
                                     const Tensor& out) {
  const Checker check(target, "SoftCap");
  GB_RETURN_IF_ERROR(
      check.Require(std::isfinite(cap) && cap > 0, absl::StrCat("cap is ", cap)));
  return CheckUnary(check, x, out);
}

absl::StatusOr<SplitQkvDims> CheckSplitQkv(const OpTarget& target, const Tensor& qkv,
                                           const Tensor& q, const Tensor& k, const Tensor& v) {
  const Checker check(target, "SplitQkv");
  GB_RETURN_IF_ERROR(check.Present({{&qkv, "qkv"}, {&q, "q"}, {&k, "k"}, {&v, "v"}}));
  GB_RETURN_IF_ERROR(check.Floating({{&qkv, "qkv"}}));
  GB_RETURN_IF_ERROR(check.DTypeIs(qkv.dtype(), {{&q, "q"}, {&k, "k"}, {&v, "v"}}, "qkv"));
  GB_ASSIGN_OR_RETURN(const RowsDims rows, Rows(check, qkv, "qkv"));
  SplitQkvDims d{.rows = rows.rows, .width = rows.cols};
  const std::string shapes =
      absl::StrCat("qkv ", qkv.DebugString(), " does not split into q ", q.DebugString(), ", k ",
                   k.DebugString(), " and v ", v.DebugString());
  if (d.rows == 0) {
    GB_RETURN_IF_ERROR(check.Require(q.numel() == 0 && k.numel() == 0 && v.numel() == 0, shapes));
    d.empty = true;
    return d;
  }
  GB_RETURN_IF_ERROR(check.Require(q.numel() % d.rows == 0 && k.numel() % d.rows == 0, shapes));
  d.q_cols = q.numel() / d.rows;
  d.kv_cols = k.numel() / d.rows;
  GB_RETURN_IF_ERROR(
      check.Require(d.width == d.q_cols + 2 * d.kv_cols && v.numel() == k.numel(), shapes));
  d.empty = d.width == 0;
  return d;
}

absl::StatusOr<RowsDims> CheckCrossEntropy(const OpTarget& target, const Tensor& logits,
                                           const Tensor& targets, const Tensor& loss) {
  const Checker check(target, "CrossEntropy");
  GB_RETURN_IF_ERROR(check.Present({{&logits, "logits"}, {&targets, "targets"}, {&loss, "loss"}}));
  GB_RETURN_IF_ERROR(check.Floating({{&logits, "logits"}, {&loss, "loss"}}));
  GB_RETURN_IF_ERROR(check.DTypeIs(DType::kI32, {{&targets, "targets"}}));
  GB_ASSIGN_OR_RETURN(const RowsDims d, Rows(check, logits, "logits"));
  GB_RETURN_IF_ERROR(check.ReducedAxis(logits, d.rows, "logits"));
  GB_RETURN_IF_ERROR(check.Elements(&targets, d.rows, "targets"));
  GB_RETURN_IF_ERROR(check.Elements(&loss, d.rows, "loss"));
  return d;
}

absl::StatusOr<RowsDims> CheckLogSoftmax(const OpTarget& target, const Tensor& x,
                                         const Tensor& out) {
  const Checker check(target, "LogSoftmax");
  GB_RETURN_IF_ERROR(check.Present({{&x, "x"}, {&out, "out"}}));
  GB_RETURN_IF_ERROR(check.Floating({{&x, "x"}}));
  GB_RETURN_IF_ERROR(check.DTypeIs(x.dtype(), {{&out, "out"}}, "x"));
  GB_ASSIGN_OR_RETURN(const RowsDims d, Rows(check, x, "x"));
  GB_RETURN_IF_ERROR(check.ReducedAxis(x, d.rows, "x"));
  GB_RETURN_IF_ERROR(check.Elements(&out, x.numel(), "out"));
  return d;
}

absl::StatusOr<RowsDims> CheckLogSumExp(const OpTarget& target, const Tensor& x,
                                        const Tensor& lse) {
  const Checker check(target, "LogSumExp");
  GB_RETURN_IF_ERROR(check.Present({{&x, "x"}, {&lse, "lse"}}));
  GB_RETURN_IF_ERROR(check.Floating({{&x, "x"}}));
  GB_RETURN_IF_ERROR(check.DTypeIs(DType::kF32, {{&lse, "lse"}}));
  GB_ASSIGN_OR_RETURN(const RowsDims d, Rows(check, x, "x"));
  GB_RETURN_IF_ERROR(check.ReducedAxis(x, d.rows, "x"));
  GB_RETURN_IF_ERROR(check.Elements(&lse, d.rows, "lse"));
  return d;
}

absl::StatusOr<GatherColumnsDims> CheckGatherColumns(const OpTarget& target, const Tensor& x,
                                                     const Tensor& columns, const Tensor* shift,
                                                     const Tensor& out) {
  const Checker check(target, "GatherColumns");
  GB_RETURN_IF_ERROR(
      check.Present({{&x, "x"}, {&columns, "columns"}, {shift, "shift"}, {&out, "out"}}));
  GB_RETURN_IF_ERROR(check.Floating({{&x, "x"}}));
  GB_RETURN_IF_ERROR(check.DTypeIs(DType::kI32, {{&columns, "columns"}}));
  GB_RETURN_IF_ERROR(check.DTypeIs(DType::kF32, {{shift, "shift"}, {&out, "out"}}));
  GB_ASSIGN_OR_RETURN(const RowsDims rows, Rows(check, x, "x"));
  GatherColumnsDims d{.rows = rows.rows, .cols = rows.cols, .count = columns.numel()};
  GB_RETURN_IF_ERROR(check.Elements(shift, d.rows, "shift"));
  GB_RETURN_IF_ERROR(check.Elements(&out, d.rows * d.count, "out"));
  d.empty = d.rows == 0 || d.count == 0;
  GB_RETURN_IF_ERROR(check.Require(
      d.empty || d.cols > 0, absl::StrCat("x ", x.DebugString(), " has no columns to gather")));
  return d;
}

absl::StatusOr<TopKDims> CheckTopK(const OpTarget& target, const Tensor& x, int64_t k,
                                   const Tensor& values, const Tensor& indices) {
  const Checker check(target, "TopK");
  GB_RETURN_IF_ERROR(check.Present({{&x, "x"}, {&values, "values"}, {&indices, "indices"}}));
  GB_RETURN_IF_ERROR(check.Floating({{&x, "x"}}));
  GB_RETURN_IF_ERROR(check.DTypeIs(x.dtype(), {{&values, "values"}}, "x"));
  GB_RETURN_IF_ERROR(check.DTypeIs(DType::kI32, {{&indices, "indices"}}));
  GB_ASSIGN_OR_RETURN(const RowsDims rows, Rows(check, x, "x"));
  TopKDims d{.rows = rows.rows, .cols = rows.cols, .k = k};
  GB_RETURN_IF_ERROR(check.Require(
      k >= 0 && k <= d.cols,
      absl::StrCat("k = ", k, " is outside [0, ", d.cols, "] for x ", x.DebugString())));
  GB_RETURN_IF_ERROR(check.Elements(&values, d.rows * k, "values"));
  GB_RETURN_IF_ERROR(check.Elements(&indices, d.rows * k, "indices"));
  d.empty = d.rows == 0 || k == 0;
  return d;
}

}  // namespace glassbox
