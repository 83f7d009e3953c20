#include "server/service/array_proto.h"

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

}  // namespace glassbox
