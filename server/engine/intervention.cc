#include "server/engine/intervention.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"

namespace glassbox {
namespace {

// An editable hook's value as [batch, seq, m, d] in the order of its EditAxes: token
// activations are [batch, pos, M, D]; scores and patterns are [batch, head, query, key], so
// `seq` is the query axis, `m` the heads and `d` the keys.
struct View {
  EditAxes axes;
  int64_t batch, seq, m, d;
  int64_t Offset(int64_t b, int64_t p, int64_t mi, int64_t di) const {
    return axes == EditAxes::kTokens ? ((b * seq + p) * m + mi) * d + di
                                     : ((b * m + mi) * seq + p) * d + di;
  }
  int64_t RowSize() const { return seq * m * d; }
  // Keys are token positions too: `dims` resolve through the layout like `positions`.
  bool DimsArePositions() const { return axes == EditAxes::kAttention; }
};

View ViewOf(EditAxes axes, const Shape& shape) {
  if (axes == EditAxes::kAttention) return {axes, shape[0], shape[2], shape[1], shape[3]};
  View v{axes, shape[0], shape[1], 1, shape.back()};
  if (shape.size() == 4) v.m = shape[2];
  return v;
}

std::vector<int32_t> AllOr(const std::vector<int32_t>& chosen, int64_t n) {
  if (!chosen.empty()) return chosen;
  std::vector<int32_t> all(n);
  std::iota(all.begin(), all.end(), 0);
  return all;
}

absl::Status Bad(const HookInfo& info, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("intervention at ", info.name, ": ", what));
}

bool IsPatch(InterventionKind kind) {
  return kind == InterventionKind::kPatchRow || kind == InterventionKind::kPatchFrom;
}

// Each selected position must be a real token of every row: the rows are ragged, and an edit
// that silently skipped the rows too short for it would be a wrong answer, not an error.
absl::Status CheckPositions(const HookInfo& info, absl::string_view what,
                            const std::vector<int32_t>& chosen, int64_t batch,
                            const TokenLayout& layout) {
  for (int32_t p : chosen) {
    for (int64_t b = 0; b < batch; ++b) {
      if (layout.Index(b, p) < 0) {
        return Bad(info, absl::StrCat(what, " ", p, " is outside row ", b, " (",
                                      layout.real[b].size(), " tokens)"));
      }
    }
  }
  return absl::OkStatus();
}

// With a right-padded patch source of known lengths, each selected position must also be real
// in the source row each patched row reads.
absl::Status CheckSourcePositions(const HookInfo& info, absl::string_view what,
                                  const std::vector<int32_t>& chosen, const Intervention& edit,
                                  int64_t batch) {
  for (int32_t b : AllOr(edit.select.rows, batch)) {
    const int32_t source_row = edit.source_rows[b], n = edit.source_lengths[source_row];
    for (int32_t p : chosen) {
      if (p >= n || p < -n) {
        return Bad(info, absl::StrCat(what, " ", p, " is outside source row ", source_row, " (", n,
                                      " tokens), which row ", b, " patches from"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CheckValueSize(const Intervention& edit, const HookInfo& info, const View& v,
                            int64_t batch, int64_t seq) {
  const int64_t n = edit.value.defined() ? edit.value.numel() : 0;
  if (n == v.d || n == v.m * v.d || n == v.RowSize() || n == v.batch * v.RowSize()) {
    return absl::OkStatus();
  }
  const std::string full = ShapeToString(info.ShapeFor(batch, seq));
  if (v.axes == EditAxes::kAttention) {
    return Bad(info, absl::StrCat("the value has ", n, " elements; it must be [key_pos] [", v.d,
                                  "], [head, key_pos] [", v.m, ",", v.d,
                                  "], one row [head, query_pos, key_pos] [", v.m, ",", v.seq, ",",
                                  v.d, "] or the hook's full shape ", full));
  }
  return Bad(info, absl::StrCat("the value has ", n, " elements; it must be [", v.d, "], [", v.m,
                                ",", v.d, "], one row [", v.seq, ",", v.m, ",", v.d,
                                "] or the hook's full shape ", full));
}

absl::Status CheckPatchSource(const Intervention& edit, const HookInfo& info, const View& v,
                              int64_t batch, int64_t seq) {
  int64_t source_batch = batch;
  if (edit.kind == InterventionKind::kPatchFrom) {
    const int64_t row = v.RowSize();
    if (!edit.value.defined() || edit.value.rank() < 1 ||
        edit.value.numel() != edit.value.dim(0) * row) {
      const Shape one_row = info.ShapeFor(1, seq);
      return Bad(info, absl::StrCat("the patch source must be [rows, ",
                                    absl::StrJoin(one_row.begin() + 1, one_row.end(), ", "), "] (",
                                    row, " values per row)"));
    }
    source_batch = edit.value.dim(0);
  }
  if (static_cast<int64_t>(edit.source_rows.size()) != batch) {
    return Bad(info, absl::StrCat("patching needs a source row for each of the ", batch, " rows"));
  }
  for (int32_t r : edit.source_rows) {
    if (r < 0 || r >= source_batch) {
      return Bad(info, absl::StrCat("source row ", r, " is outside the source batch"));
    }
  }
  if (edit.source_lengths.empty()) return absl::OkStatus();
  if (static_cast<int64_t>(edit.source_lengths.size()) != source_batch) {
    return Bad(info, "the patch source needs one length per source row");
  }
  const bool attention = v.DimsArePositions();
  GB_RETURN_IF_ERROR(CheckSourcePositions(info, attention ? "query position" : "position",
                                          edit.select.positions, edit, batch));
  if (!attention) return absl::OkStatus();
  return CheckSourcePositions(info, "key position", edit.select.dims, edit, batch);
}

// The padded index of each selected position of row b, paired with the index of the same
// position in the row it is read from (the patch source row; row b itself otherwise). No
// selection: every padded index, read from the same index.
// A directional edit's value, [d] or one per head [m, d], each direction scaled to unit norm.
std::vector<double> UnitDirections(const Tensor& value, int64_t d) {
  std::vector<double> unit(value.numel());
  for (int64_t m = 0; m < value.numel() / d; ++m) {
    const float* u = value.data<float>() + m * d;
    double norm = 0;
    for (int64_t j = 0; j < d; ++j) norm += double{u[j]} * u[j];
    norm = std::sqrt(norm);
    for (int64_t j = 0; j < d; ++j) unit[m * d + j] = u[j] / norm;
  }
  return unit;
}

std::vector<std::pair<int32_t, int32_t>> ResolvePositions(const std::vector<int32_t>& chosen,
                                                          int64_t n, const Intervention& edit,
                                                          const TokenLayout& layout, int64_t b,
                                                          int32_t source_row) {
  std::vector<std::pair<int32_t, int32_t>> resolved;
  if (chosen.empty()) {
    for (int32_t p = 0; p < n; ++p) resolved.push_back({p, p});
    return resolved;
  }
  for (int32_t p : chosen) {
    int32_t source_p;
    if (edit.kind == InterventionKind::kPatchFrom) {
      // A kPatchFrom source is another run (its rows are not this layout's), unpadded or
      // right-padded: its position p is at index p, and p < 0 at its row's length + p.
      const int32_t source_len =
          edit.source_lengths.empty() ? static_cast<int32_t>(n) : edit.source_lengths[source_row];
      source_p = p < 0 ? source_len + p : p;
    } else {
      source_p = layout.Index(source_row, p);
    }
    resolved.push_back({layout.Index(b, p), source_p});
  }
  return resolved;
}

}  // namespace

TokenLayout TokenLayout::FromMask(const Tensor& mask) {
  TokenLayout layout;
  const int64_t batch = mask.dim(0), seq = mask.dim(1);
  layout.real.resize(batch);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t s = 0; s < seq; ++s) {
      if (mask.data<int32_t>()[b * seq + s]) layout.real[b].push_back(static_cast<int32_t>(s));
    }
  }
  return layout;
}

int32_t TokenLayout::Index(int64_t b, int32_t p) const {
  const auto& row = real[b];
  const int64_t n = static_cast<int64_t>(row.size());
  const int64_t i = p < 0 ? n + p : p;
  return i >= 0 && i < n ? row[i] : -1;
}

bool IsDirectional(InterventionKind kind) {
  return kind == InterventionKind::kProjectOut || kind == InterventionKind::kOrthogonalDecomp ||
         kind == InterventionKind::kProjectionCap;
}

bool IsEditableHook(HookKind kind) {
  switch (kind) {
    case HookKind::kLn1Scale:
    case HookKind::kLn1Normalized:
    case HookKind::kLn2Scale:
    case HookKind::kLn2Normalized:
    case HookKind::kLnFinalScale:
    case HookKind::kLnFinalNormalized:
    case HookKind::kLn1PostScale:
    case HookKind::kLn1PostNormalized:
    case HookKind::kLn2PostScale:
    case HookKind::kLn2PostNormalized:
    case HookKind::kQNormScale:
    case HookKind::kQNormNormalized:
    case HookKind::kKNormScale:
    case HookKind::kKNormNormalized:
    case HookKind::kResult:
      return false;
    default:
      return true;
  }
}

EditAxes EditAxesOf(HookKind kind) {
  return kind == HookKind::kAttnScores || kind == HookKind::kPattern ? EditAxes::kAttention
                                                                     : EditAxes::kTokens;
}

absl::Status ValidateIntervention(const Intervention& edit, const HookInfo& info, int64_t batch,
                                  int64_t seq, const TokenLayout& layout) {
  if (!IsEditableHook(info.kind)) {
    return Bad(info,
               "this hook can be captured but not edited yet; edit hook_z, hook_attn_out, "
               "hook_resid_*, hook_mlp_out, mlp.hook_post, attn.hook_pattern or another "
               "activation that flows on");
  }
  const View v = ViewOf(EditAxesOf(info.kind), info.ShapeFor(batch, seq));
  const bool attention = v.DimsArePositions();
  for (int32_t r : edit.select.rows) {
    if (r < 0 || r >= batch)
      return Bad(info, absl::StrCat("row ", r, " is outside the batch [0, ", batch, ")"));
  }
  GB_RETURN_IF_ERROR(CheckPositions(info, attention ? "query position" : "position",
                                    edit.select.positions, batch, layout));
  if (!edit.select.heads.empty() && v.m == 1 && info.dims.size() != 4) {
    return Bad(info, "heads are selected but this hook has no head axis");
  }
  for (int32_t h : edit.select.heads) {
    if (h < 0 || h >= v.m) return Bad(info, absl::StrCat("head ", h, " is outside [0, ", v.m, ")"));
  }
  if (attention) {
    GB_RETURN_IF_ERROR(CheckPositions(info, "key position", edit.select.dims, batch, layout));
  } else {
    for (int32_t d : edit.select.dims) {
      if (d < 0 || d >= v.d)
        return Bad(info, absl::StrCat("index ", d, " is outside the last axis [0, ", v.d, ")"));
    }
  }
  if (edit.kind == InterventionKind::kAdd || edit.kind == InterventionKind::kSet) {
    GB_RETURN_IF_ERROR(CheckValueSize(edit, info, v, batch, seq));
  }
  if (IsDirectional(edit.kind)) {
    if (attention) return Bad(info, "directional edits act on activations, not attention");
    if (!edit.select.dims.empty()) {
      return Bad(info, "a directional edit uses the whole last axis; leave dims empty");
    }
    const int64_t n = edit.value.defined() ? edit.value.numel() : 0;
    if (n != v.d && n != v.m * v.d) {
      return Bad(info, absl::StrCat("the direction has ", n, " elements; it must be [", v.d,
                                    "] or one per head [", v.m, ",", v.d, "]"));
    }
    const float* u = edit.value.data<float>();
    for (int64_t m = 0; m < n / v.d; ++m) {
      double norm = 0;
      for (int64_t d = 0; d < v.d; ++d) norm += double{u[m * v.d + d]} * u[m * v.d + d];
      if (!(norm > 0) || !std::isfinite(norm)) {
        return Bad(info, "the direction must be finite and non-zero");
      }
    }
    if (edit.kind == InterventionKind::kProjectionCap) {
      if (std::isnan(edit.projection_min) || std::isnan(edit.projection_max) ||
          (std::isinf(edit.projection_min) && std::isinf(edit.projection_max))) {
        return Bad(info,
                   "a projection cap needs projection_min or projection_max (or both), finite");
      }
      if (edit.projection_min > edit.projection_max) {
        return Bad(info, absl::StrCat("projection_min ", edit.projection_min,
                                      " is above projection_max ", edit.projection_max));
      }
    }
  }
  if (IsPatch(edit.kind)) GB_RETURN_IF_ERROR(CheckPatchSource(edit, info, v, batch, seq));
  return absl::OkStatus();
}

void ApplyIntervention(const Intervention& edit, const HookInfo& info, const TokenLayout& layout,
                       Tensor& value) {
  const View v = ViewOf(EditAxesOf(info.kind), value.shape());
  float* x = value.data<float>();
  const std::vector<int32_t> rows = AllOr(edit.select.rows, v.batch);
  const std::vector<int32_t> heads = AllOr(edit.select.heads, v.m);
  // Feature indices are the same in every row; key positions are resolved per row below.
  std::vector<std::pair<int32_t, int32_t>> features;
  for (int32_t di : AllOr(edit.select.dims, v.d)) features.push_back({di, di});

  // Sources that must be read before any element is written.
  Tensor original;
  if (edit.kind == InterventionKind::kPatchRow || edit.kind == InterventionKind::kMeanBatch ||
      edit.kind == InterventionKind::kMeanPos) {
    original = Tensor::EmptyHost(DType::kF32, value.shape());
    std::copy_n(x, value.numel(), original.data<float>());
  }
  const float* src = original.defined() ? original.data<float>() : nullptr;
  const int64_t value_n = edit.value.defined() ? edit.value.numel() : 0;
  auto given = [&](int64_t b, int64_t p, int64_t mi, int64_t di) -> float {
    const float* w = edit.value.data<float>();
    if (value_n == v.d) return w[di];
    if (value_n == v.m * v.d) return w[mi * v.d + di];
    if (value_n == v.RowSize()) return w[v.Offset(0, p, mi, di)];
    return w[v.Offset(b, p, mi, di)];
  };
  auto mean_over_batch = [&](int64_t p, int64_t mi, int64_t di) {
    double sum = 0;
    for (int64_t b = 0; b < v.batch; ++b) sum += src[v.Offset(b, p, mi, di)];
    return static_cast<float>(sum / static_cast<double>(v.batch));
  };
  auto mean_over_positions = [&](int64_t b, int64_t mi, int64_t di) {
    double sum = 0;
    for (int32_t p : layout.real[b]) sum += src[v.Offset(b, p, mi, di)];
    return layout.real[b].empty()
               ? 0.0f
               : static_cast<float>(sum / static_cast<double>(layout.real[b].size()));
  };

  if (IsDirectional(edit.kind)) {
    // Per token (and head), along the whole last axis: the component x . u along the unit
    // direction u becomes f(x . u), the rest of x is kept.
    auto change_along = [&](double dot) {
      switch (edit.kind) {
        case InterventionKind::kProjectOut:
          return -edit.coefficient * dot;
        case InterventionKind::kOrthogonalDecomp:
          return (edit.coefficient - 1.0) * dot;
        default:
          return std::clamp(dot, double{edit.projection_min}, double{edit.projection_max}) - dot;
      }
    };
    const int64_t per_head = value_n == v.m * v.d;
    const std::vector<double> unit = UnitDirections(edit.value, v.d);
    for (int32_t b : rows) {
      for (const auto& [p, unused] :
           ResolvePositions(edit.select.positions, v.seq, edit, layout, b, b)) {
        for (int32_t mi : heads) {
          const double* u = unit.data() + (per_head ? mi * v.d : 0);
          float* e = x + v.Offset(b, p, mi, 0);
          double dot = 0;
          for (int64_t d = 0; d < v.d; ++d) dot += e[d] * u[d];
          const double change = change_along(dot);
          for (int64_t d = 0; d < v.d; ++d) e[d] += static_cast<float>(change * u[d]);
        }
      }
    }
    return;
  }

  for (int32_t b : rows) {
    const int32_t source_row = IsPatch(edit.kind) ? edit.source_rows[b] : b;
    const auto positions =
        ResolvePositions(edit.select.positions, v.seq, edit, layout, b, source_row);
    const auto dims = v.DimsArePositions()
                          ? ResolvePositions(edit.select.dims, v.d, edit, layout, b, source_row)
                          : features;
    for (const auto& [p, source_p] : positions) {
      for (int32_t mi : heads) {
        for (const auto& [di, source_d] : dims) {
          float& e = x[v.Offset(b, p, mi, di)];
          switch (edit.kind) {
            case InterventionKind::kZero:
              e = 0;
              break;
            case InterventionKind::kScale:
              e *= edit.coefficient;
              break;
            case InterventionKind::kAdd:
              e += edit.coefficient * given(b, p, mi, di);
              break;
            case InterventionKind::kSet:
              e = given(b, p, mi, di);
              break;
            case InterventionKind::kMeanBatch:
              e = mean_over_batch(p, mi, di);
              break;
            case InterventionKind::kMeanPos:
              e = mean_over_positions(b, mi, di);
              break;
            case InterventionKind::kPatchRow:
              e = src[v.Offset(source_row, source_p, mi, source_d)];
              break;
            case InterventionKind::kPatchFrom:
              e = edit.value.data<float>()[v.Offset(source_row, source_p, mi, source_d)];
              break;
            case InterventionKind::kProjectOut:
            case InterventionKind::kOrthogonalDecomp:
            case InterventionKind::kProjectionCap:
              break;  // handled above, per token
          }
        }
      }
    }
  }
}

bool BackwardReadsInput(const Intervention& edit) {
  return edit.kind == InterventionKind::kProjectionCap;
}

namespace {

// A projection cap's backward: at each selected token (and head) whose x · u the edit clamped,
// the gradient loses its component along u.
void ProjectionCapBackward(const Intervention& edit, const HookInfo& info,
                           const TokenLayout& layout, const Tensor& input, Tensor& grad) {
  const View v = ViewOf(EditAxesOf(info.kind), grad.shape());
  const int64_t n = edit.value.numel();
  const bool per_head = n == v.m * v.d;
  const std::vector<double> unit = UnitDirections(edit.value, v.d);
  for (int32_t b : AllOr(edit.select.rows, v.batch)) {
    for (const auto& [p, unused] :
         ResolvePositions(edit.select.positions, v.seq, edit, layout, b, b)) {
      for (int32_t mi : AllOr(edit.select.heads, v.m)) {
        const double* u = unit.data() + (per_head ? mi * v.d : 0);
        const float* x = input.data<float>() + v.Offset(b, p, mi, 0);
        double dot = 0;
        for (int64_t d = 0; d < v.d; ++d) dot += x[d] * u[d];
        if (dot >= edit.projection_min && dot <= edit.projection_max) continue;
        float* g = grad.data<float>() + v.Offset(b, p, mi, 0);
        double along = 0;
        for (int64_t d = 0; d < v.d; ++d) along += g[d] * u[d];
        for (int64_t d = 0; d < v.d; ++d) g[d] -= static_cast<float>(along * u[d]);
      }
    }
  }
}

}  // namespace

void InterventionBackward(const Intervention& edit, const HookInfo& info, const TokenLayout& layout,
                          Tensor& grad, const Tensor* input) {
  switch (edit.kind) {
    case InterventionKind::kAdd:
      return;
    case InterventionKind::kScale:
    case InterventionKind::kProjectOut:
    case InterventionKind::kOrthogonalDecomp:
      // Diagonal, or (I − P) and (I − P) + c P with P = u uᵀ: symmetric, so Aᵀ = A.
      ApplyIntervention(edit, info, layout, grad);
      return;
    case InterventionKind::kZero:
    case InterventionKind::kSet:
    case InterventionKind::kPatchFrom: {
      // A constant at the selected elements: nothing flows back through them.
      Intervention zero = edit;
      zero.kind = InterventionKind::kZero;
      ApplyIntervention(zero, info, layout, grad);
      return;
    }
    case InterventionKind::kProjectionCap:
      ProjectionCapBackward(edit, info, layout, *input, grad);
      return;
    case InterventionKind::kMeanBatch:
    case InterventionKind::kMeanPos:
    case InterventionKind::kPatchRow:
      break;
  }
  // Each selected element e was read from other elements: its gradient goes back to them, and
  // none to e's own value before the edit. The loops are ApplyIntervention's, transposed.
  const View v = ViewOf(EditAxesOf(info.kind), grad.shape());
  Tensor arriving = Tensor::EmptyHost(DType::kF32, grad.shape());
  std::copy_n(grad.data<float>(), grad.numel(), arriving.data<float>());
  const float* out = arriving.data<float>();
  float* g = grad.data<float>();
  Intervention zero = edit;
  zero.kind = InterventionKind::kZero;
  ApplyIntervention(zero, info, layout, grad);
  const std::vector<int32_t> rows = AllOr(edit.select.rows, v.batch);
  const std::vector<int32_t> heads = AllOr(edit.select.heads, v.m);
  std::vector<std::pair<int32_t, int32_t>> features;
  for (int32_t di : AllOr(edit.select.dims, v.d)) features.push_back({di, di});
  for (int32_t b : rows) {
    const int32_t source_row = IsPatch(edit.kind) ? edit.source_rows[b] : b;
    // An attention edit's dims are key positions, resolved per row as its positions are.
    const auto dims = v.DimsArePositions()
                          ? ResolvePositions(edit.select.dims, v.d, edit, layout, b, source_row)
                          : features;
    for (const auto& [p, source_p] :
         ResolvePositions(edit.select.positions, v.seq, edit, layout, b, source_row)) {
      for (int32_t mi : heads) {
        for (const auto& [di, source_d] : dims) {
          const float arrived = out[v.Offset(b, p, mi, di)];
          switch (edit.kind) {
            case InterventionKind::kMeanBatch:
              for (int64_t r = 0; r < v.batch; ++r) {
                g[v.Offset(r, p, mi, di)] += arrived / static_cast<float>(v.batch);
              }
              break;
            case InterventionKind::kMeanPos:
              for (int32_t t : layout.real[b]) {
                g[v.Offset(b, t, mi, di)] += arrived / static_cast<float>(layout.real[b].size());
              }
              break;
            default:  // kPatchRow
              g[v.Offset(source_row, source_p, mi, source_d)] += arrived;
              break;
          }
        }
      }
    }
  }
}

}  // namespace glassbox
