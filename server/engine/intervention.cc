#include "server/engine/intervention.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace glassbox {
namespace {

// The [batch, pos, M, D] view of an editable hook's value.
struct View {
  int64_t batch, seq, m, d;
  int64_t Offset(int64_t b, int64_t p, int64_t mi, int64_t di) const {
    return ((b * seq + p) * m + mi) * d + di;
  }
};

View ViewOf(const Shape& shape) {
  View v{shape[0], shape[1], 1, shape.back()};
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

bool IsEditableHook(HookKind kind) {
  switch (kind) {
    case HookKind::kLn1Scale:
    case HookKind::kLn1Normalized:
    case HookKind::kLn2Scale:
    case HookKind::kLn2Normalized:
    case HookKind::kLnFinalScale:
    case HookKind::kLnFinalNormalized:
    case HookKind::kAttnScores:
    case HookKind::kPattern:
    case HookKind::kResult:
      return false;
    default:
      return true;
  }
}

absl::Status ValidateIntervention(const Intervention& edit, const HookInfo& info, int64_t batch,
                                  int64_t seq, const TokenLayout& layout) {
  if (!IsEditableHook(info.kind)) {
    return Bad(info, "this hook can be captured but not edited yet; edit hook_z, hook_attn_out, "
                     "hook_resid_*, hook_mlp_out, mlp.hook_post or another activation that flows on");
  }
  const View v = ViewOf(info.ShapeFor(batch, seq));
  for (int32_t r : edit.select.rows) {
    if (r < 0 || r >= batch) return Bad(info, absl::StrCat("row ", r, " is outside the batch [0, ", batch, ")"));
  }
  for (int32_t p : edit.select.positions) {
    for (int64_t b = 0; b < batch; ++b) {
      if (layout.Index(b, p) < 0) {
        return Bad(info, absl::StrCat("position ", p, " is outside row ", b, " (",
                                      layout.real[b].size(), " tokens)"));
      }
    }
  }
  if (!edit.select.heads.empty() && v.m == 1 && info.dims.size() != 4) {
    return Bad(info, "heads are selected but this hook has no head axis");
  }
  for (int32_t h : edit.select.heads) {
    if (h < 0 || h >= v.m) return Bad(info, absl::StrCat("head ", h, " is outside [0, ", v.m, ")"));
  }
  for (int32_t d : edit.select.dims) {
    if (d < 0 || d >= v.d) return Bad(info, absl::StrCat("index ", d, " is outside the last axis [0, ", v.d, ")"));
  }
  if (edit.kind == InterventionKind::kAdd || edit.kind == InterventionKind::kSet) {
    const int64_t n = edit.value.defined() ? edit.value.numel() : 0;
    if (n != v.d && n != v.m * v.d && n != v.seq * v.m * v.d && n != v.batch * v.seq * v.m * v.d) {
      return Bad(info, absl::StrCat("the value has ", n, " elements; it must be [", v.d, "], [", v.m, ",",
                                    v.d, "], one row [", v.seq, ",", v.m, ",", v.d,
                                    "] or the hook's full shape ", ShapeToString(info.ShapeFor(batch, seq))));
    }
  }
  if (edit.kind == InterventionKind::kPatchRow || edit.kind == InterventionKind::kPatchFrom) {
    int64_t source_batch = batch;
    if (edit.kind == InterventionKind::kPatchFrom) {
      const int64_t row = v.seq * v.m * v.d;
      if (!edit.value.defined() || edit.value.rank() < 1 || edit.value.numel() != edit.value.dim(0) * row) {
        return Bad(info, absl::StrCat("the patch source must be [rows, ", v.seq, ", ...] with ", row,
                                      " values per row"));
      }
      source_batch = edit.value.dim(0);
    }
    if (static_cast<int64_t>(edit.source_rows.size()) != batch) {
      return Bad(info, absl::StrCat("patching needs a source row for each of the ", batch, " rows"));
    }
    for (int32_t r : edit.source_rows) {
      if (r < 0 || r >= source_batch) return Bad(info, absl::StrCat("source row ", r, " is outside the source batch"));
    }
    if (!edit.source_lengths.empty()) {
      if (static_cast<int64_t>(edit.source_lengths.size()) != source_batch) {
        return Bad(info, "the patch source needs one length per source row");
      }
      for (int32_t b : AllOr(edit.select.rows, batch)) {
        const int32_t source_row = edit.source_rows[b], n = edit.source_lengths[source_row];
        for (int32_t p : edit.select.positions) {
          if (p >= n || p < -n) {
            return Bad(info, absl::StrCat("position ", p, " is outside source row ", source_row,
                                          " (", n, " tokens), which row ", b, " patches from"));
          }
        }
      }
    }
  }
  return absl::OkStatus();
}

void ApplyIntervention(const Intervention& edit, const TokenLayout& layout, Tensor& value) {
  const View v = ViewOf(value.shape());
  float* x = value.data<float>();
  const std::vector<int32_t> rows = AllOr(edit.select.rows, v.batch);
  const std::vector<int32_t> heads = AllOr(edit.select.heads, v.m);
  const std::vector<int32_t> dims = AllOr(edit.select.dims, v.d);

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
    if (value_n == v.seq * v.m * v.d) return w[v.Offset(0, p, mi, di)];
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
    return layout.real[b].empty() ? 0.0f : static_cast<float>(sum / static_cast<double>(layout.real[b].size()));
  };

  for (int32_t b : rows) {
    // (padded index in row b, padded index of the same position in the patch source row)
    std::vector<std::pair<int32_t, int32_t>> positions;
    const bool patch = edit.kind == InterventionKind::kPatchRow || edit.kind == InterventionKind::kPatchFrom;
    const int32_t source_row = patch ? edit.source_rows[b] : b;
    if (edit.select.positions.empty()) {
      for (int32_t p = 0; p < v.seq; ++p) positions.push_back({p, p});
    } else {
      for (int32_t p : edit.select.positions) {
        // A kPatchFrom source is unpadded or right-padded: its position p is at index p, and
        // p < 0 at its row's length + p.
        const int32_t source_len = edit.source_lengths.empty() ? static_cast<int32_t>(v.seq)
                                                               : edit.source_lengths[source_row];
        const int32_t source_p = edit.kind == InterventionKind::kPatchFrom
                                     ? (p < 0 ? source_len + p : p)
                                     : layout.Index(source_row, p);
        positions.push_back({layout.Index(b, p), source_p});
      }
    }
    for (const auto& [p, source_p] : positions) {
      for (int32_t mi : heads) {
        for (int32_t di : dims) {
          float& e = x[v.Offset(b, p, mi, di)];
          switch (edit.kind) {
            case InterventionKind::kZero: e = 0; break;
            case InterventionKind::kScale: e *= edit.coefficient; break;
            case InterventionKind::kAdd: e += edit.coefficient * given(b, p, mi, di); break;
            case InterventionKind::kSet: e = given(b, p, mi, di); break;
            case InterventionKind::kMeanBatch: e = mean_over_batch(p, mi, di); break;
            case InterventionKind::kMeanPos: e = mean_over_positions(b, mi, di); break;
            case InterventionKind::kPatchRow: e = src[v.Offset(source_row, source_p, mi, di)]; break;
            case InterventionKind::kPatchFrom:
              e = edit.value.data<float>()[v.Offset(source_row, source_p, mi, di)];
              break;
          }
        }
      }
    }
  }
}

}  // namespace glassbox
