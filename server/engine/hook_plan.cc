#include "server/engine/hook_plan.h"

#include "server/util/status_macros.h"

namespace glassbox {

absl::Status HookPlan::Capture(absl::string_view name_or_glob) {
  GB_ASSIGN_OR_RETURN(std::vector<HookId> ids, registry_->Match(name_or_glob));
  for (HookId id : ids) capture_[id] = 1;
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
