// GetQueue: what the device's scheduler holds and what each key has used, for operators (admin
// keys) and for researchers on a server without keys who wonder why they wait.
#include <set>

#include "server/service/glassbox_service.h"
#include "server/service/status_util.h"

namespace glassbox {
namespace {

void FillQueued(const TaskInfo& info, absl::Duration waited, glassbox::v1::QueuedRequest* out) {
  out->set_owner(info.owner);
  out->set_rpc(info.rpc);
  out->set_model(info.model);
  out->set_tokens(info.tokens);
  out->set_estimated_bytes(info.memory_bytes);
  out->set_waited_seconds(absl::ToDoubleSeconds(waited));
  out->set_batchable(!info.batch_key.empty());
}

}  // namespace

grpc::Status GlassboxService::GetQueue(grpc::ServerContext* context,
                                       const glassbox::v1::GetQueueRequest*,
                                       glassbox::v1::GetQueueResponse* response) {
  auto caller = Admit(context, CallKind::kHost);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (caller->key() != nullptr && !caller->key()->admin) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        "GetQueue shows every key's requests and needs an admin key (\"admin\": "
                        "true in the keys file)");
  }
  const Scheduler::Stats stats = scheduler_.GetStats();
  std::map<std::string, int64_t> queued_by_owner;
  for (const Scheduler::QueuedTask& task : stats.queued) {
    FillQueued(task.info, task.waited, response->add_queued());
    ++queued_by_owner[task.info.owner];
  }
  for (const TaskInfo& info : stats.running)
    FillQueued(info, absl::ZeroDuration(), response->add_running());
  response->set_passes(stats.passes);
  response->set_requests_run(stats.tasks_run);
  response->set_largest_batch(stats.largest_batch);

  const std::map<std::string, QuotaTracker::Usage> usage = quotas_.AllUsage();
  std::set<std::string> names;
  for (const auto& [name, unused] : usage) names.insert(name);
  for (const auto& [name, unused] : queued_by_owner) names.insert(name);
  for (const std::string& name : names) {
    auto* key = response->add_usage();
    key->set_name(name);
    if (auto it = usage.find(name); it != usage.end()) {
      key->set_runs_in_flight(it->second.runs_in_flight);
      key->set_tokens_last_day(it->second.tokens_last_day);
    }
    key->set_queued(queued_by_owner[name]);
    key->set_cached_bytes(run_cache_.UsageOf(name).bytes);
  }
  return grpc::Status::OK;
}

std::string GlassboxService::MetricsText() {
  const Scheduler::Stats stats = scheduler_.GetStats();
  int64_t cache_bytes = 0;
  for (const auto& run : run_cache_.ListAll()) cache_bytes += run->nbytes();
  return metrics_.Exposition({
      {"glassbox_queue_length", "Requests queued for the device.",
       static_cast<double>(stats.queued.size())},
      {"glassbox_running_requests", "Requests in the forward pass on the device now.",
       static_cast<double>(stats.running.size())},
      {"glassbox_forward_passes_total", "Forward passes the device ran (a merged pass once).",
       static_cast<double>(stats.passes), "counter"},
      {"glassbox_cache_bytes", "Bytes of runs kept on the server (RunRequest.keep), all keys.",
       static_cast<double>(cache_bytes)},
  });
}

}  // namespace glassbox
