#include "client/cpp/arrays.h"

#include <cassert>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "client/cpp/tensor_decode.h"

namespace glassbox::client {
namespace {

namespace pb = ::glassbox::v1;

absl::Status Malformed(absl::string_view what, absl::string_view problem) {
  return absl::InternalError(absl::StrCat("malformed response: ", what, " ", problem));
}

// INTERNAL unless `a` and `b` have the same shape.
absl::Status SameShape(const pb::Array& a, absl::string_view a_name, const pb::Array& b,
                       absl::string_view b_name) {
  if (ArrayShape(a) == ArrayShape(b)) return absl::OkStatus();
  return Malformed(a_name, absl::StrCat("has shape ", ShapeString(ArrayShape(a)), " but ", b_name,
                                        " has ", ShapeString(ArrayShape(b))));
}

}  // namespace

std::vector<int64_t> ArrayShape(const pb::Array& array) {
  return std::vector<int64_t>(array.shape().begin(), array.shape().end());
}

bool IsEmptyArray(const pb::Array& array) {
  return array.shape_size() == 0 && array.values_size() == 0 && array.indices_size() == 0;
}

absl::Status CheckArray(const pb::Array& array, absl::string_view what, ArrayKind kind,
                        std::optional<int> rank) {
  if (rank.has_value() && array.shape_size() != *rank) {
    return Malformed(what, absl::StrFormat("has %d dimensions, expected %d", array.shape_size(),
                                           *rank));
  }
  const std::vector<int64_t> shape = ArrayShape(array);
  absl::StatusOr<int64_t> numel = NumElements(shape);
  if (!numel.ok()) return Malformed(what, absl::StrCat("has shape ", ShapeString(shape)));
  if (array.dim_names_size() != 0 && array.dim_names_size() != array.shape_size()) {
    return Malformed(what, absl::StrFormat("has %d dim_names for %d dimensions",
                                           array.dim_names_size(), array.shape_size()));
  }
  const int64_t values = kind == ArrayKind::kFloat ? array.values_size() : array.indices_size();
  const int64_t others = kind == ArrayKind::kFloat ? array.indices_size() : array.values_size();
  if (values != *numel || others != 0) {
    return Malformed(what, absl::StrFormat("has shape %s (%d elements) but %d %s values and %d %s",
                                           ShapeString(shape), *numel, values,
                                           kind == ArrayKind::kFloat ? "float" : "integer", others,
                                           kind == ArrayKind::kFloat ? "integer" : "float"));
  }
  return absl::OkStatus();
}

int64_t FlatIndex(std::span<const int64_t> shape, std::initializer_list<int64_t> index) {
  assert(index.size() == shape.size());
  int64_t offset = 0;
  size_t d = 0;
  for (int64_t i : index) {
    assert(i >= 0 && i < shape[d]);
    offset = offset * shape[d] + i;
    ++d;
  }
  return offset;
}

float FloatAt(const pb::Array& array, std::initializer_list<int64_t> index) {
  return array.values(static_cast<int>(
      FlatIndex(std::span<const int64_t>(array.shape().data(), array.shape_size()), index)));
}

int32_t IntAt(const pb::Array& array, std::initializer_list<int64_t> index) {
  return array.indices(static_cast<int>(
      FlatIndex(std::span<const int64_t>(array.shape().data(), array.shape_size()), index)));
}

absl::Status CheckPatchingSweepResponse(const pb::PatchingSweepResponse& response) {
  const int rank = response.values().shape_size();
  if (rank != 2 && rank != 3) {
    return Malformed("values", absl::StrFormat("has %d dimensions, expected 2 or 3", rank));
  }
  GB_RETURN_IF_ERROR(CheckArray(response.values(), "values", ArrayKind::kFloat, rank));
  GB_RETURN_IF_ERROR(CheckArray(response.normalized(), "normalized", ArrayKind::kFloat, rank));
  return SameShape(response.normalized(), "normalized", response.values(), "values");
}

absl::Status CheckGradientsResponse(const pb::GradientsResponse& response) {
  for (const pb::HookGradient& g : response.gradients()) {
    const std::string what = absl::StrCat("gradients[", g.hook(), "]");
    const int rank = g.gradient().shape_size();
    if (rank < 2) return Malformed(what, absl::StrFormat("has %d dimensions, expected 2 or more", rank));
    GB_RETURN_IF_ERROR(CheckArray(g.gradient(), what, ArrayKind::kFloat, rank));
    if (g.gradient().shape(0) != response.metric_size()) {
      return Malformed(what, absl::StrFormat("has %d rows for %d metric values",
                                             g.gradient().shape(0), response.metric_size()));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckIntegratedGradientsResponse(const pb::IntegratedGradientsResponse& response) {
  const pb::Array& a = response.attributions();
  const int rank = a.shape_size();
  if (rank < 2) return Malformed("attributions", absl::StrFormat("has %d dimensions, expected 2 or more", rank));
  GB_RETURN_IF_ERROR(CheckArray(a, "attributions", ArrayKind::kFloat, rank));
  if (a.shape(0) != response.metric_size() || a.shape(0) != response.baseline_metric_size()) {
    return Malformed("attributions",
                     absl::StrFormat("has %d rows for %d metric and %d baseline metric values",
                                     a.shape(0), response.metric_size(),
                                     response.baseline_metric_size()));
  }
  return absl::OkStatus();
}

absl::Status CheckJacobianResponse(const pb::JacobianResponse& response) {
  const pb::Array& j = response.jacobian();
  GB_RETURN_IF_ERROR(CheckArray(j, "jacobian", ArrayKind::kFloat, 3));
  GB_RETURN_IF_ERROR(CheckArray(response.out_value(), "out_value", ArrayKind::kFloat, 2));
  GB_RETURN_IF_ERROR(CheckArray(response.in_value(), "in_value", ArrayKind::kFloat, 2));
  const auto& o = response.out_value();
  const auto& i = response.in_value();
  if (o.shape(0) != j.shape(0) || o.shape(1) != j.shape(1) || i.shape(0) != j.shape(0) ||
      i.shape(1) != j.shape(2)) {
    return Malformed("jacobian", absl::StrFormat(
                                     "is [%d, %d, %d] beside out_value [%d, %d] and in_value "
                                     "[%d, %d]",
                                     j.shape(0), j.shape(1), j.shape(2), o.shape(0), o.shape(1),
                                     i.shape(0), i.shape(1)));
  }
  return absl::OkStatus();
}

absl::Status CheckLogitLensResponse(const pb::LogitLensResponse& response) {
  GB_RETURN_IF_ERROR(
      CheckArray(response.top_log_probs(), "top_log_probs", ArrayKind::kFloat, 4));
  GB_RETURN_IF_ERROR(CheckArray(response.top_tokens(), "top_tokens", ArrayKind::kInt, 4));
  GB_RETURN_IF_ERROR(
      SameShape(response.top_tokens(), "top_tokens", response.top_log_probs(), "top_log_probs"));
  const int64_t layers = response.top_log_probs().shape(0);
  if (response.labels_size() != layers) {
    return Malformed("labels", absl::StrFormat("has %d entries for %d layers",
                                               response.labels_size(), layers));
  }
  if (!IsEmptyArray(response.target_log_probs())) {
    const pb::Array& targets = response.target_log_probs();
    GB_RETURN_IF_ERROR(CheckArray(targets, "target_log_probs", ArrayKind::kFloat, 4));
    for (int d = 0; d < 3; ++d) {
      if (targets.shape(d) != response.top_log_probs().shape(d)) {
        return SameShape(targets, "target_log_probs", response.top_log_probs(), "top_log_probs");
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CheckDirectLogitAttributionResponse(
    const pb::DirectLogitAttributionResponse& response) {
  GB_RETURN_IF_ERROR(
      CheckArray(response.attributions(), "attributions", ArrayKind::kFloat, 2));
  GB_RETURN_IF_ERROR(CheckArray(response.logit(), "logit", ArrayKind::kFloat, 1));
  GB_RETURN_IF_ERROR(CheckArray(response.constant(), "constant", ArrayKind::kFloat, 1));
  const int64_t components = response.attributions().shape(0);
  const int64_t batch = response.attributions().shape(1);
  if (response.labels_size() != components) {
    return Malformed("labels", absl::StrFormat("has %d entries for %d components",
                                               response.labels_size(), components));
  }
  if (response.logit().shape(0) != batch || response.constant().shape(0) != batch) {
    return Malformed("logit", absl::StrFormat("and constant must have the batch size %d", batch));
  }
  return absl::OkStatus();
}

absl::Status CheckAttentionNormsResponse(const pb::AttentionNormsResponse& response) {
  for (const pb::AttentionNormsLayer& layer : response.layers()) {
    const std::string where = absl::StrCat("layers[", layer.layer(), "].");
    GB_RETURN_IF_ERROR(
        CheckArray(layer.weights(), where + "weights", ArrayKind::kFloat, 4));
    GB_RETURN_IF_ERROR(
        CheckArray(layer.head_norms(), where + "head_norms", ArrayKind::kFloat, 4));
    GB_RETURN_IF_ERROR(
        SameShape(layer.head_norms(), where + "head_norms", layer.weights(), where + "weights"));
    GB_RETURN_IF_ERROR(
        CheckArray(layer.layer_norms(), where + "layer_norms", ArrayKind::kFloat, 3));
    const auto& w = layer.weights().shape();
    const auto& l = layer.layer_norms().shape();
    if (l[0] != w[0] || l[1] != w[2] || l[2] != w[3]) {
      return Malformed(where + "layer_norms",
                       absl::StrCat("has shape ", ShapeString(ArrayShape(layer.layer_norms())),
                                    "; weights are ", ShapeString(ArrayShape(layer.weights()))));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSaeEncodeResponse(const pb::SaeEncodeResponse& response) {
  const auto& offsets = response.offsets();
  if (offsets.empty() || offsets[0] != 0 ||
      offsets[offsets.size() - 1] != response.indices_size() ||
      response.values_size() != response.indices_size()) {
    return Malformed("offsets", "must start at 0 and end at the number of indices (= values)");
  }
  int64_t tokens = 0;
  for (int32_t length : response.sequence_lengths()) tokens += length;
  if (offsets.size() != tokens + 1) {
    return Malformed("offsets",
                     absl::StrCat("has ", offsets.size(), " entries for ", tokens, " tokens"));
  }
  for (int i = 1; i < offsets.size(); ++i) {
    if (offsets[i] < offsets[i - 1]) return Malformed("offsets", "decrease");
  }
  for (int32_t f : response.indices()) {
    if (f < 0 || f >= response.d_sae())
      return Malformed("indices", absl::StrCat("holds feature ", f));
  }
  if (!IsEmptyArray(response.dense())) {
    GB_RETURN_IF_ERROR(CheckArray(response.dense(), "dense", ArrayKind::kFloat, 3));
  }
  return absl::OkStatus();
}

absl::Status CheckSaeDecodeResponse(const pb::SaeDecodeResponse& response) {
  return CheckArray(response.vectors(), "vectors", ArrayKind::kFloat, 2);
}

}  // namespace glassbox::client
