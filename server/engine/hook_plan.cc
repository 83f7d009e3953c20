#include "server/engine/hook_plan.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace glassbox {

absl::Status HookPlan::Capture(absl::string_view name_or_glob) {
  GB_ASSIGN_OR_RETURN(std::vector<HookId> ids, registry_->Match(name_or_glob));
  for (HookId id : ids) capture_[id] = 1;
  return absl::OkStatus();
}

absl::Status HookPlan::AddIntervention(Intervention edit) {
  if (edit.hook < 0 || edit.hook >= registry_->size()) {
    return absl::InvalidArgumentError("intervention names no hook point");
  }
  const HookInfo& info = registry_->info(edit.hook);
  if (!IsEditableHook(info.kind)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "intervention at ", info.name, ": this hook can be captured but not edited yet"));
  }
  edits_[edit.hook].push_back(std::move(edit));
  ++edit_count_;
  return absl::OkStatus();
}

absl::Status HookPlan::AddSaeSplice(HookId hook, SaeSplice splice) {
  if (hook < 0 || hook >= registry_->size() || splice.sae == nullptr) {
    return absl::InvalidArgumentError("SAE splice names no hook point or no SAE");
  }
  const HookInfo& info = registry_->info(hook);
  if (!IsEditableHook(info.kind)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SAE splice at ", info.name, ": this hook can be captured but not edited yet"));
  }
  // An SAE reads one activation vector per token; scores and patterns have none.
  if (EditAxesOf(info.kind) != EditAxes::kTokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SAE splice at ", info.name, ": an SAE reads [batch, pos, d] activations, and this hook is ",
        "[batch, head, query_pos, key_pos]"));
  }
  if (splices_[hook].sae != nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("two SAEs spliced at ", info.name, "; splice at most one per hook"));
  }
  splices_[hook] = std::move(splice);
  return absl::OkStatus();
}

std::vector<HookId> HookPlan::CapturedIds() const {
  std::vector<HookId> ids;
  for (HookId id = 0; id < static_cast<HookId>(capture_.size()); ++id) {
    if (capture_[id]) ids.push_back(id);
  }
  return ids;
}

}  // namespace glassbox
