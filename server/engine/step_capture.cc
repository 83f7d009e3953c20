#include "server/engine/step_capture.h"

#include <algorithm>

namespace glassbox {
namespace {

int AxisNamed(const HookInfo& info, std::initializer_list<const char*> names) {
  for (size_t a = 0; a < info.dim_names.size(); ++a) {
    for (const char* name : names) {
      if (info.dim_names[a] == name) return static_cast<int>(a);
    }
  }
  return -1;
}

}  // namespace

Tensor CutStepCapture(const HookInfo& info, const Tensor& value, const StepLayout& layout) {
  const Shape& in = value.shape();
  const int query_axis = AxisNamed(info, {"pos", "query_pos"});
  const int key_axis = AxisNamed(info, {"key_pos"});
  Shape out_shape = in;
  const int64_t in_queries = query_axis >= 0 ? in[query_axis] : 1;
  const int64_t queries = layout.whole_prompt ? in_queries : 1;
  if (query_axis >= 0) out_shape[query_axis] = queries;
  Tensor out = Tensor::ZerosHost(DType::kF32, out_shape);
  if (out.numel() == 0) return out;

  // Row-major strides of the input, to map each output index to its source element.
  std::vector<int64_t> stride(in.size(), 1);
  for (int a = static_cast<int>(in.size()) - 2; a >= 0; --a) stride[a] = stride[a + 1] * in[a + 1];
  std::vector<int64_t> index(out_shape.size(), 0);
  const float* src = value.data<float>();
  float* dst = out.data<float>();
  for (int64_t i = 0; i < out.numel(); ++i) {
    const int64_t b = index[0];
    bool inside = layout.lengths[b] > 0;
    int64_t offset = 0;
    for (size_t a = 0; a < index.size() && inside; ++a) {
      int64_t at = index[a];
      if (static_cast<int>(a) == query_axis) {
        // The reported queries: the last one, or every real prompt token from the row's first.
        at = layout.whole_prompt ? at + layout.pad[b] : in_queries - 1;
        inside = layout.whole_prompt ? index[a] < layout.lengths[b] : true;
      } else if (static_cast<int>(a) == key_axis) {
        at += layout.pad[b];
        inside = at < in[a];
      }
      offset += at * stride[a];
    }
    if (inside) dst[i] = src[offset];
    for (int a = static_cast<int>(index.size()) - 1; a >= 0; --a) {
      if (++index[a] < out_shape[a]) break;
      index[a] = 0;
    }
  }
  return out;
}

}  // namespace glassbox
