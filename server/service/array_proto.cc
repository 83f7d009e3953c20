#include "server/service/array_proto.h"

#include "absl/strings/str_cat.h"

namespace glassbox {

void ToArray(const Tensor& t, const std::vector<std::string>& dim_names, glassbox::v1::Array* array) {
  if (!t.defined()) return;
  array->mutable_shape()->Add(t.shape().begin(), t.shape().end());
  for (const std::string& d : dim_names) array->add_dim_names(d);
  if (t.dtype() == DType::kI32) {
    array->mutable_indices()->Add(t.data<int32_t>(), t.data<int32_t>() + t.numel());
  } else {
    array->mutable_values()->Add(t.data<float>(), t.data<float>() + t.numel());
  }
}

absl::StatusOr<Tensor> FloatArrayToTensor(const glassbox::v1::Array& array, absl::string_view what) {
  if (array.shape_size() == 0 && array.values_size() == 0 && array.indices_size() == 0) {
    return Tensor();
  }
  if (array.indices_size() > 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, " takes float values, not indices"));
  }
  Shape shape(array.shape().begin(), array.shape().end());
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d < 1 || d > (int64_t{1} << 31)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": shape ", ShapeToString(shape), " has a dimension outside [1, 2^31]"));
    }
    count *= d;
    if (count > array.values_size()) break;
  }
  if (shape.empty() || count != array.values_size()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": shape ", ShapeToString(shape),
                                                   " does not hold its ", array.values_size(),
                                                   " values"));
  }
  return Tensor::FromHost(std::span<const float>(array.values().data(), array.values_size()),
                          shape);
}

}  // namespace glassbox
