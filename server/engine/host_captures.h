// The one CaptureSink that keeps what a pass captures on the host, as f32, in capture order: what
// the analyses, scans, explanation scores, SAE encodes and generation steps read after a pass.
#pragma once

#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "server/engine/transformer.h"

namespace glassbox {

class HostCaptures : public CaptureSink {
 public:
  struct Value {
    HookId id = -1;
    HookInfo info;
    Tensor value;  // host f32, the hook's shape
  };

  // A host f32 value is kept as it is (shared, as CaptureSink allows) unless `copy_host_values`:
  // a pass over a KV cache reuses its buffers at the next step, so generation keeps copies.
  explicit HostCaptures(Backend& backend, bool copy_host_values = false)
      : backend_(backend), copy_host_values_(copy_host_values) {}

  absl::Status OnCapture(HookId id, const HookInfo& info, const Tensor& value) override;

  const std::vector<Value>& values() const { return values_; }
  std::vector<Value> TakeValues() { return std::move(values_); }
  // The last value captured at the hook; undefined when there is none.
  const Tensor& at(HookId id) const;
  const Tensor& at(std::string_view name) const;
  bool has(std::string_view name) const { return at(name).defined(); }

 private:
  Backend& backend_;
  const bool copy_host_values_;
  std::vector<Value> values_;
};

}  // namespace glassbox
