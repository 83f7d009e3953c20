#include "server/engine/capture.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/float16.h"
#include "base/status_macros.h"
#include "server/engine/host_math.h"

namespace glassbox {
namespace {

int FindAxis(const HookInfo& info, std::initializer_list<absl::string_view> names) {
  for (size_t i = 0; i < info.dim_names.size(); ++i) {
    for (absl::string_view n : names) {
      if (info.dim_names[i] == n) return static_cast<int>(i);
    }
  }
  return -1;
}

absl::Status SpecError(const CaptureSpec& spec, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("capture \"", spec.hook, "\": ", what));
}

// Copies `t` with axis `axis` replaced by `count` entries; entry i of row b comes from source
// index source(b, i) along that axis.
template <typename SourceFn>
Tensor GatherAxis(const Tensor& t, int axis, int64_t count, SourceFn source) {
  Shape shape = t.shape();
  const int64_t axis_size = shape[axis];
  const int64_t inner = NumElements(std::span(shape).subspan(axis + 1));
  const int64_t per_row = NumElements(std::span(shape).subspan(1, axis - 1));  // dims between batch and axis
  const int64_t outer = NumElements(std::span(shape).subspan(0, axis));
  shape[axis] = count;
  Tensor out = Tensor::EmptyHost(DType::kF32, shape);
  const float* src = t.data<float>();
  float* dst = out.data<float>();
  for (int64_t o = 0; o < outer; ++o) {
    const int64_t b = axis == 0 ? 0 : o / std::max<int64_t>(per_row, 1);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t s = source(b, i);
      std::copy_n(src + (o * axis_size + s) * inner, inner, dst + (o * count + i) * inner);
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<ResolvedCapture> ResolveCaptureAt(HookId id, const HookInfo& info,
                                                 const CaptureSpec& spec, int64_t batch,
                                                 int64_t padded_length, int32_t shortest) {
  if (spec.dtype != DType::kF32 && spec.dtype != DType::kF16 && spec.dtype != DType::kBF16) {
    return SpecError(spec, "the wire dtype must be f32, f16 or bf16");
  }
  ResolvedCapture rc{.hook = id, .spec = spec};
  rc.position_axis = FindAxis(info, {"pos", "query_pos"});
  rc.head_axis = FindAxis(info, {"head_index", "kv_head_index"});
  Shape shape = info.ShapeFor(batch, padded_length);
  std::vector<std::string> dims = info.dim_names;
  if (!spec.positions.empty()) {
    if (rc.position_axis < 0)
      return SpecError(spec, absl::StrCat(info.name, " has no position axis"));
    for (int32_t p : spec.positions) {
      // -p in 64 bits: INT32_MIN has no 32-bit negation (found by request_fuzz).
      if (p >= padded_length || -int64_t{p} > shortest) {
        return SpecError(spec, absl::StrCat("position ", p, " is outside the inputs (longest row ",
                                            padded_length, " tokens, shortest ", shortest, ")"));
      }
    }
    shape[rc.position_axis] = static_cast<int64_t>(spec.positions.size());
  }
  if (!spec.heads.empty()) {
    if (rc.head_axis < 0) return SpecError(spec, absl::StrCat(info.name, " has no head axis"));
    for (int32_t h : spec.heads) {
      if (h < 0 || h >= shape[rc.head_axis]) {
        return SpecError(spec, absl::StrCat("head ", h, " is outside [0, ", shape[rc.head_axis],
                                            ") for ", info.name));
      }
    }
    shape[rc.head_axis] = static_cast<int64_t>(spec.heads.size());
  }
  switch (spec.reduction) {
    case CaptureReduction::kNone:
      rc.outputs.push_back({info.name, shape, dims, spec.dtype});
      break;
    case CaptureReduction::kMeanPos:
      if (rc.position_axis < 0)
        return SpecError(spec, absl::StrCat(info.name, " has no position axis"));
      shape.erase(shape.begin() + rc.position_axis);
      dims.erase(dims.begin() + rc.position_axis);
      rc.outputs.push_back({info.name, shape, dims, spec.dtype});
      break;
    case CaptureReduction::kNorm:
      shape.pop_back();
      dims.pop_back();
      rc.outputs.push_back({info.name, shape, dims, spec.dtype});
      break;
    case CaptureReduction::kTopK:
      if (spec.k < 1 || spec.k > shape.back()) {
        return SpecError(spec, absl::StrCat("top-k needs 1 <= k <= ", shape.back(),
                                            " (the last axis of ", info.name, "), got ", spec.k));
      }
      shape.back() = spec.k;
      dims.back() = "k";
      rc.outputs.push_back({info.name, shape, dims, spec.dtype});
      rc.outputs.push_back({info.name + ".indices", shape, dims, DType::kI32});
      break;
  }
  return rc;
}

absl::StatusOr<std::vector<ResolvedCapture>> ResolveCaptures(
    const HookRegistry& registry, const std::vector<CaptureSpec>& specs,
    const std::vector<int32_t>& sequence_lengths, int64_t padded_length) {
  const int64_t batch = static_cast<int64_t>(sequence_lengths.size());
  const int32_t shortest = sequence_lengths.empty()
                               ? 0 : *std::min_element(sequence_lengths.begin(), sequence_lengths.end());
  std::vector<std::vector<ResolvedCapture>> by_hook(registry.size());
  for (const CaptureSpec& spec : specs) {
    auto matched = registry.Match(spec.hook);
    if (!matched.ok()) return matched.status();
    std::vector<HookId> ids;
    for (HookId id : *matched) {
      const int layer = registry.info(id).layer;
      if (spec.layers.empty() ||
          std::find(spec.layers.begin(), spec.layers.end(), layer) != spec.layers.end()) {
        ids.push_back(id);
      }
    }
    if (ids.empty()) {
      return SpecError(spec, absl::StrCat("no hook matches in layers [", absl::StrJoin(spec.layers, ","), "]"));
    }
    for (HookId id : ids) {
      GB_ASSIGN_OR_RETURN(ResolvedCapture rc, ResolveCaptureAt(id, registry.info(id), spec, batch,
                                                               padded_length, shortest));
      by_hook[id].push_back(std::move(rc));
    }
  }
  std::vector<ResolvedCapture> resolved;
  for (auto& list : by_hook) {
    for (auto& rc : list) resolved.push_back(std::move(rc));
  }
  return resolved;
}

std::vector<Tensor> ApplyCapture(const ResolvedCapture& capture, const Tensor& value,
                                 const std::vector<int32_t>& sequence_lengths) {
  const CaptureSpec& spec = capture.spec;
  Tensor t = value;
  // Which source position each (row, selected position) came from; padding beyond a row's
  // length is excluded from means.
  auto source_position = [&](int64_t b, int64_t i) -> int64_t {
    if (spec.positions.empty()) return i;
    const int32_t p = spec.positions[i];
    return p >= 0 ? p : sequence_lengths[b] + p;
  };
  if (!spec.positions.empty()) {
    t = GatherAxis(t, capture.position_axis, static_cast<int64_t>(spec.positions.size()), source_position);
  }
  if (!spec.heads.empty()) {
    t = GatherAxis(t, capture.head_axis, static_cast<int64_t>(spec.heads.size()),
                   [&](int64_t, int64_t i) { return static_cast<int64_t>(spec.heads[i]); });
  }
  const Shape& shape = t.shape();
  std::vector<Tensor> outputs;
  switch (spec.reduction) {
    case CaptureReduction::kNone:
      outputs.push_back(t);
      break;
    case CaptureReduction::kMeanPos: {
      const int axis = capture.position_axis;
      const int64_t positions = shape[axis];
      const int64_t inner = NumElements(std::span(shape).subspan(axis + 1));
      const int64_t per_row = NumElements(std::span(shape).subspan(1, axis - 1));
      const int64_t outer = NumElements(std::span(shape).subspan(0, axis));
      Shape reduced = shape;
      reduced.erase(reduced.begin() + axis);
      Tensor out = Tensor::ZerosHost(DType::kF32, reduced);
      for (int64_t o = 0; o < outer; ++o) {
        const int64_t b = o / std::max<int64_t>(per_row, 1);
        std::vector<double> sum(inner, 0.0);
        int64_t count = 0;
        for (int64_t i = 0; i < positions; ++i) {
          if (source_position(b, i) >= sequence_lengths[b]) continue;
          ++count;
          const float* row = t.data<float>() + (o * positions + i) * inner;
          for (int64_t j = 0; j < inner; ++j) sum[j] += row[j];
        }
        for (int64_t j = 0; j < inner; ++j) {
          out.data<float>()[o * inner + j] = count ? static_cast<float>(sum[j] / count) : 0.0f;
        }
      }
      outputs.push_back(out);
      break;
    }
    case CaptureReduction::kNorm: {
      const int64_t last = shape.back(), rows = t.numel() / std::max<int64_t>(last, 1);
      Tensor out = Tensor::EmptyHost(DType::kF32, Shape(shape.begin(), shape.end() - 1));
      for (int64_t r = 0; r < rows; ++r) {
        double sum = 0;
        for (int64_t j = 0; j < last; ++j) {
          const double v = t.data<float>()[r * last + j];
          if (std::isfinite(v)) sum += v * v;  // masked attention scores are -inf
        }
        out.data<float>()[r] = static_cast<float>(std::sqrt(sum));
      }
      outputs.push_back(out);
      break;
    }
    case CaptureReduction::kTopK: {
      const int64_t last = shape.back(), rows = t.numel() / std::max<int64_t>(last, 1);
      const int64_t k = spec.k;
      Shape top = shape;
      top.back() = k;
      Tensor values = Tensor::EmptyHost(DType::kF32, top);
      Tensor indices = Tensor::EmptyHost(DType::kI32, top);
      std::vector<int32_t> scratch;
      for (int64_t r = 0; r < rows; ++r) {
        TopK(t.data<float>() + r * last, last, k, values.data<float>() + r * k,
             indices.data<int32_t>() + r * k, scratch);
      }
      outputs.push_back(values);
      outputs.push_back(indices);
      break;
    }
  }
  outputs[0] = ToWireDType(outputs[0], spec.dtype);
  return outputs;
}

Tensor ToWireDType(const Tensor& f32, DType dtype) {
  if (dtype == DType::kF32) return f32;
  Tensor out = Tensor::EmptyHost(dtype, f32.shape());
  const int64_t n = f32.numel();
  for (int64_t i = 0; i < n; ++i) {
    const float v = f32.data<float>()[i];
    out.data<uint16_t>()[i] = dtype == DType::kF16 ? FloatToHalf(v) : FloatToBFloat16(v);
  }
  return out;
}

}  // namespace glassbox
