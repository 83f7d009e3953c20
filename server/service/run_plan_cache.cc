// The cached-run parts of a Run request: patching from a run kept on the server, and keeping
// this run's activations (docs/interventions.md, "Patching from a cached run").
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "server/service/run_plan.h"

namespace glassbox {
namespace {

absl::Status NoCache(absl::string_view what) {
  return absl::FailedPreconditionError(absl::StrCat(what, ": this server keeps no cached runs"));
}

int64_t UnixMillis(absl::Time t) { return absl::ToUnixMillis(t); }

}  // namespace

std::pair<std::string, std::string> CacheAccess::Locate(const std::string& name) const {
  if (const size_t slash = name.find('/'); admin && slash != std::string::npos) {
    return {name.substr(0, slash), name.substr(slash + 1)};
  }
  return {owner, name};
}

absl::Status ResolveCachedPatch(const glassbox::v1::Intervention& in, const HookInfo& info,
                                const RunPlan& plan, const CacheAccess& cache, Intervention& edit) {
  const std::string where = absl::StrCat("intervention at ", info.name,
                                         " (patch from cached run \"", in.cached_run(), "\")");
  if (cache.cache == nullptr) return NoCache(where);
  const auto [owner, name] = cache.Locate(in.cached_run());
  GB_ASSIGN_OR_RETURN(std::shared_ptr<const CachedRun> run, cache.cache->Get(owner, name));
  if (run->model != plan.model->name) {
    return absl::FailedPreconditionError(absl::StrCat(where, ": it was cached from model \"",
                                                      run->model, "\", and this run is on \"",
                                                      plan.model->name, "\""));
  }
  auto it = run->values.find(info.name);
  if (it == run->values.end()) {
    std::vector<std::string> kept;
    for (const auto& [hook, value] : run->values) kept.push_back(hook);
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": that run kept ", absl::StrJoin(kept, ", "), ", not ", info.name));
  }
  const Tensor& value = it->second;
  const int64_t batch = plan.tokens.dim(0), seq = plan.tokens.dim(1);
  const Shape target = info.ShapeFor(batch, seq);
  const bool same = value.rank() == static_cast<int64_t>(target.size()) &&
                    std::equal(target.begin() + 1, target.end(), value.shape().begin() + 1);
  if (!same) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": the cached value is ", ShapeToString(value.shape()),
                     " and this run's is ", ShapeToString(target),
                     "; all but the batch must agree (pad or trim the inputs so that the "
                     "longest rows have the same length)"));
  }
  const int64_t cached_batch = value.dim(0);
  if (edit.source_rows.empty()) {
    if (cached_batch != batch && cached_batch != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": the cached run has ", cached_batch, " rows and this run ", batch,
                       "; give source_rows (one cached row per row of this run)"));
    }
    edit.source_rows.resize(batch);
    for (int64_t b = 0; b < batch; ++b)
      edit.source_rows[b] = cached_batch == 1 ? 0 : static_cast<int32_t>(b);
  }
  edit.value = value;  // shares the cached storage: a concurrent release frees it after this run
  edit.source_lengths = run->lengths;
  return absl::OkStatus();
}

absl::Status AddKeep(const glassbox::v1::RunRequest& request, const CacheAccess& cache,
                     RunPlan& plan) {
  if (!request.has_keep()) return absl::OkStatus();
  const auto& keep = request.keep();
  if (cache.cache == nullptr) return NoCache("keep");
  GB_RETURN_IF_ERROR(RunCache::ValidateName(keep.name()));
  KeepPlan kept{.name = keep.name()};
  GB_ASSIGN_OR_RETURN(kept.ttl, cache.cache->TtlFor(keep.ttl_seconds()));
  const HookRegistry& hooks = plan.model->model->hooks();
  std::vector<uint8_t> chosen(hooks.size(), 0);
  for (const std::string& pattern : keep.hooks()) {
    auto ids = hooks.Match(pattern);
    if (!ids.ok())
      return absl::InvalidArgumentError(
          absl::StrCat("keep.hooks \"", pattern, "\": ", ids.status().message()));
    for (HookId id : *ids) {
      if (ReachedWith(hooks.info(id), plan.stop_at_layer)) {
        chosen[id] = 1;
      } else if (pattern.find_first_of("*?") == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "keep.hooks: ", pattern, " is never reached with stop_at_layer ", plan.stop_at_layer));
      }
    }
  }
  if (keep.hooks().empty()) {
    // hook_sae_* captures have ids past the registry's and cannot be patched: not kept.
    for (const ResolvedCapture& rc : plan.captures) {
      if (rc.hook < hooks.size()) chosen[rc.hook] = 1;
    }
  }
  const int64_t batch = plan.tokens.dim(0), seq = plan.tokens.dim(1);
  for (HookId id = 0; id < hooks.size(); ++id) {
    if (!chosen[id]) continue;
    kept.hooks.push_back(id);
    kept.bytes +=
        NumElements(hooks.info(id).ShapeFor(batch, seq)) * static_cast<int64_t>(sizeof(float));
  }
  if (kept.hooks.empty()) {
    return absl::InvalidArgumentError(
        "keep: no hooks to keep; name them in keep.hooks or capture them in this request");
  }
  GB_RETURN_IF_ERROR(cache.cache->CheckFits(cache.owner, kept.name, kept.bytes, cache.quota_bytes));
  plan.keep = std::move(kept);
  return absl::OkStatus();
}

void FillCachedRunInfo(const CachedRun& run, glassbox::v1::CachedRunInfo* info) {
  info->set_name(run.name);
  info->set_owner(run.owner);
  info->set_model(run.model);
  for (const auto& [hook, value] : run.values) info->add_hooks(hook);
  info->mutable_sequence_lengths()->Add(run.lengths.begin(), run.lengths.end());
  info->set_nbytes(run.nbytes());
  info->set_created_unix_ms(UnixMillis(run.created));
  info->set_expires_unix_ms(UnixMillis(run.expires));
}

absl::StatusOr<glassbox::v1::CachedRunInfo> StoreKept(const RunPlan& plan, const CacheAccess& cache,
                                                      std::map<std::string, Tensor> values) {
  CachedRun run{.name = plan.keep->name,
                .model = plan.model->name,
                .lengths = plan.lengths,
                .values = std::move(values)};
  GB_ASSIGN_OR_RETURN(
      std::shared_ptr<const CachedRun> stored,
      cache.cache->Put(cache.owner, std::move(run), plan.keep->ttl, cache.quota_bytes));
  glassbox::v1::CachedRunInfo info;
  FillCachedRunInfo(*stored, &info);
  return info;
}

}  // namespace glassbox
