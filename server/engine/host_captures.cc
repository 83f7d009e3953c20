#include "server/engine/host_captures.h"

#include <algorithm>

#include "base/status_macros.h"
#include "server/engine/host_math.h"

namespace glassbox {
namespace {

const Tensor& Undefined() {
  static const Tensor* none = new Tensor();
  return *none;
}

}  // namespace

absl::Status HostCaptures::OnCapture(HookId id, const HookInfo& info, const Tensor& value) {
  GB_ASSIGN_OR_RETURN(Tensor host, CopyToHostF32(backend_, value));
  if (copy_host_values_ && host.raw_data() == value.raw_data()) {
    Tensor copy = Tensor::EmptyHost(DType::kF32, host.shape());
    std::copy_n(host.data<float>(), host.numel(), copy.data<float>());
    host = std::move(copy);
  }
  values_.push_back({.id = id, .info = info, .value = std::move(host)});
  return absl::OkStatus();
}

const Tensor& HostCaptures::at(HookId id) const {
  for (auto it = values_.rbegin(); it != values_.rend(); ++it) {
    if (it->id == id) return it->value;
  }
  return Undefined();
}

const Tensor& HostCaptures::at(std::string_view name) const {
  for (auto it = values_.rbegin(); it != values_.rend(); ++it) {
    if (it->info.name == name) return it->value;
  }
  return Undefined();
}

}  // namespace glassbox
