// What a forward pass does at its hook points. Today: which hooks to capture. Interventions
// (ablate, patch, steer, SAE splice) attach here too, per hook, so the forward pass has a single
// place where it asks "does anyone need this value?" — and capturing nothing costs nothing.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/engine/hook_points.h"
#include "server/engine/intervention.h"
#include "server/engine/sae_hooks.h"

namespace glassbox {

class HookPlan {
 public:
  explicit HookPlan(const HookRegistry& registry)
      : registry_(&registry),
        capture_(registry.size(), 0),
        edits_(registry.size()),
        splices_(registry.size()),
        before_edits_(registry.size(), -1) {}

  // Captures the hook(s) a name or glob names; INVALID_ARGUMENT when none exists.
  absl::Status Capture(absl::string_view name_or_glob);
  void CaptureId(HookId id) { capture_.at(id) = 1; }

  // Adds an edit at its hook, after those already there. INVALID_ARGUMENT for hooks that cannot
  // be edited.
  absl::Status AddIntervention(Intervention edit);

  // Splices an SAE at its hook, after the hook's interventions; one SAE per hook. INVALID_ARGUMENT
  // for hooks that cannot be edited or that already have one.
  absl::Status AddSaeSplice(HookId hook, SaeSplice splice);
  const SaeSplice* SaeSpliceAt(HookId id) const {
    return id >= 0 && splices_[id].sae != nullptr ? &splices_[id] : nullptr;
  }

  // Also hands the hook's value before its edits to the capture sink, under `capture_id` (an id
  // past the registry, the caller's to number): a backward through edits that read it.
  void CaptureBeforeEdits(HookId id, HookId capture_id) { before_edits_.at(id) = capture_id; }
  HookId BeforeEditsCaptureId(HookId id) const { return id >= 0 ? before_edits_[id] : -1; }

  bool Captures(HookId id) const { return id >= 0 && capture_[id] != 0; }
  const std::vector<Intervention>& Edits(HookId id) const { return edits_[id]; }
  bool HasEdits(HookId id) const { return id >= 0 && !edits_[id].empty(); }
  // Whether the forward pass must materialise the hook's value; optional work (per-head results,
  // attention patterns, unweighted norm outputs, separate pre-activations) is skipped otherwise.
  bool Touches(HookId id) const {
    return Captures(id) || HasEdits(id) || SaeSpliceAt(id) != nullptr;
  }
  bool HasAnyEdits() const { return edit_count_ > 0; }

  std::vector<HookId> CapturedIds() const;
  const HookRegistry& registry() const { return *registry_; }

 private:
  const HookRegistry* registry_;
  std::vector<uint8_t> capture_;
  std::vector<std::vector<Intervention>> edits_;
  std::vector<SaeSplice> splices_;    // sae == nullptr: none at that hook
  std::vector<HookId> before_edits_;  // -1: not captured
  int edit_count_ = 0;
};

}  // namespace glassbox
