// What a forward pass does at its hook points. Today: which hooks to capture. Interventions
// (ablate, patch, steer, SAE splice) attach here too, per hook, so the forward pass has a single
// place where it asks "does anyone need this value?" — and capturing nothing costs nothing.
#pragma once

#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "server/engine/hook_points.h"

namespace glassbox {

class HookPlan {
 public:
  explicit HookPlan(const HookRegistry& registry)
      : registry_(&registry), capture_(registry.size(), 0) {}

  // Captures the hook(s) a name or glob names; INVALID_ARGUMENT when none exists.
  absl::Status Capture(absl::string_view name_or_glob);
  void CaptureId(HookId id) { capture_[id] = 1; }

  bool Captures(HookId id) const { return id >= 0 && capture_[id] != 0; }
  // Whether the forward pass must materialise the hook's value; optional work (per-head results,
  // attention patterns, unweighted RMS outputs) is skipped otherwise.
  bool Touches(HookId id) const { return Captures(id); }

  std::vector<HookId> CapturedIds() const;
  const HookRegistry& registry() const { return *registry_; }

 private:
  const HookRegistry* registry_;
  std::vector<uint8_t> capture_;
};

}  // namespace glassbox
