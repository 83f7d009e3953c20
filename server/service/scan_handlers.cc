// The dataset-scan RPCs: thin translations onto ScanJobs (scan_jobs.h), which owns the jobs; and
// ScoreExplanation, which scores an explanation of one scan target on the device.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/engine/explanation_scoring.h"
#include "server/service/glassbox_service.h"
#include "server/service/job_stream.h"
#include "server/service/job_watch_stream.h"
#include "server/service/status_util.h"

namespace glassbox {

namespace pb = ::glassbox::v1;

absl::StatusOr<std::pair<ScanJobs*, JobCaller>> GlassboxService::JobsFor(
    const grpc::ServerContextBase* context) {
  absl::StatusOr<Caller> caller = Admit(context, CallKind::kHost);
  if (!caller.ok()) return caller.status();
  if (scan_jobs_ == nullptr) return absl::UnimplementedError("this server runs no scan jobs");
  return std::pair{scan_jobs_, JobCaller{.owner = caller->cache().owner,
                                         .admin = caller->cache().admin}};
}

grpc::Status GlassboxService::StartScan(grpc::ServerContext* context,
                                        const pb::StartScanRequest* request,
                                        pb::JobInfo* response) {
  absl::StatusOr<Caller> caller = Admit(context, CallKind::kHost);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (scan_jobs_ == nullptr)
    return ToGrpcStatus(absl::UnimplementedError("this server runs no scan jobs"));
  if (draining_) return ToGrpcStatus(absl::UnavailableError("the server is shutting down"));
  const JobCaller who{.owner = caller->cache().owner, .admin = caller->cache().admin};
  metrics_.Annotate(context, [&](RequestRecord& r) { r.model = request->model(); });
  // A scan's tokens (both passes) count against the key's tokens_per_day like a Run's.
  auto info = scan_jobs_->Start(who, *request,
                                [&](int64_t tokens) { return caller->ChargeTokens(tokens); });
  if (!info.ok()) return ToGrpcStatus(info.status());
  if (context->IsCancelled()) {
    // The caller gave up while the corpus was read: it will never learn the job's id.
    (void)scan_jobs_->Cancel(who, info->job_id());
    return grpc::Status(grpc::StatusCode::CANCELLED, "the call ended before the scan was queued");
  }
  *response = *std::move(info);
  return grpc::Status::OK;
}

grpc::ServerWriteReactor<pb::JobInfo>* GlassboxService::WatchJob(
    grpc::CallbackServerContext* context, const pb::WatchJobRequest* request) {
  auto jobs = JobsFor(context);
  if (!jobs.ok()) return Refuse<pb::JobInfo>(jobs.status());
  auto* stream = new JobWatchStream();
  auto watch = std::make_shared<ScanJobs::Watch>(
      [stream](const pb::JobInfo& info, bool final) { stream->Offer(info, final); });
  stream->Attach(watch);
  if (absl::Status status = jobs->first->Subscribe(jobs->second, request->job_id(), watch);
      !status.ok()) {
    stream->Refuse(ToGrpcStatus(status));
  }
  return stream;
}

grpc::Status GlassboxService::CancelJob(grpc::ServerContext* context,
                                        const pb::CancelJobRequest* request,
                                        pb::JobInfo* response) {
  auto jobs = JobsFor(context);
  if (!jobs.ok()) return ToGrpcStatus(jobs.status());
  auto info = jobs->first->Cancel(jobs->second, request->job_id());
  if (!info.ok()) return ToGrpcStatus(info.status());
  *response = *std::move(info);
  return grpc::Status::OK;
}

grpc::Status GlassboxService::ListJobs(grpc::ServerContext* context, const pb::ListJobsRequest*,
                                       pb::ListJobsResponse* response) {
  auto jobs = JobsFor(context);
  if (!jobs.ok()) return ToGrpcStatus(jobs.status());
  for (pb::JobInfo& info : jobs->first->List(jobs->second)) *response->add_jobs() = std::move(info);
  return grpc::Status::OK;
}

grpc::Status GlassboxService::GetScanResults(grpc::ServerContext* context,
                                             const pb::GetScanResultsRequest* request,
                                             pb::ScanResults* response) {
  auto jobs = JobsFor(context);
  if (!jobs.ok()) return ToGrpcStatus(jobs.status());
  auto results = jobs->first->Results(jobs->second, *request);
  if (!results.ok()) return ToGrpcStatus(results.status());
  *response = *std::move(results);
  return grpc::Status::OK;
}

}  // namespace glassbox

namespace glassbox {

grpc::Status GlassboxService::ScoreExplanation(grpc::ServerContext* context,
                                               const pb::ScoreExplanationRequest* request,
                                               pb::ScoreExplanationResponse* response) {
  auto caller = Admit(context, CallKind::kDevice);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  const pb::ScanTarget& target = request->target();
  const bool one_unit = (target.has_neurons() && target.neurons().indices_size() == 1) ||
                        (target.has_sae_features() && target.sae_features().features_size() == 1) ||
                        target.has_direction() ||
                        (target.has_heads() && target.heads().heads_size() == 1);
  if (!one_unit)
    return ToGrpcStatus(absl::InvalidArgumentError(
        "ScoreExplanation scores one unit: a neuron (one index), an SAE feature (one index), a "
        "direction or a head (one index)"));
  // The target resolved as a scan's would be, over contexts as long as the longest excerpt (an
  // attention target's key must fit in it).
  int32_t longest = 1;
  for (const pb::ScoredExcerpt& e : request->excerpts()) longest = std::max(longest, e.tokens_size());
  pb::StartScanRequest as_scan;
  as_scan.set_model(request->model());
  if (auto served = store_.Find(request->model()); served.ok()) {
    longest = std::min<int32_t>(longest, static_cast<int32_t>((*served)->model->config().n_ctx));
  }
  as_scan.set_context_length(longest);
  as_scan.set_no_bos(true);
  *as_scan.add_targets() = target;
  auto scan = ResolveScan(store_, as_scan);
  if (!scan.ok()) return ToGrpcStatus(scan.status());
  ExplanationScoreRequest score{.target = LocateTarget(*scan, 0),
                                .ablation = request->ablation()};
  if (request->has_mean_activation()) score.mean_activation = request->mean_activation();
  int64_t tokens = 0;
  const int32_t vocab = static_cast<int32_t>(scan->served->model->config().vocab_size);
  for (int i = 0; i < request->excerpts_size(); ++i) {
    const pb::ScoredExcerpt& e = request->excerpts(i);
    for (int32_t id : e.tokens()) {
      if (id < 0 || id >= vocab)
        return ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
            "excerpts[", i, "] has token id ", id, " outside the vocabulary [0, ", vocab, ")")));
    }
    score.excerpts.push_back({.tokens = {e.tokens().begin(), e.tokens().end()},
                              .simulated = {e.simulated().begin(), e.simulated().end()},
                              .random = e.random()});
    tokens += e.tokens_size();
  }
  if (tokens > caller->limits().max_tokens_per_request)
    return ToGrpcStatus(absl::ResourceExhaustedError(absl::StrCat(
        "the excerpts hold ", tokens, " tokens; this server allows ",
        caller->limits().max_tokens_per_request, " per request (--max_tokens)")));
  if (auto charged = caller->ChargeTokens(tokens * (request->ablation() ? 3 : 1)); !charged.ok())
    return ToGrpcStatus(charged);
  absl::StatusOr<ExplanationScores> scores;
  absl::Status status = OnDevice(context, *caller, "ScoreExplanation", request->model(), tokens,
                                 [&] {
                                   scores = glassbox::ScoreExplanation(*scan->served->model, score);
                                   return scores.status();
                                 });
  if (!status.ok()) return ToGrpcStatus(status);
  response->set_correlation_top_and_random(scores->correlation_all);
  response->set_correlation_random_only(scores->correlation_random);
  for (const auto& row : scores->true_activations)
    response->add_true_activations()->mutable_values()->Assign(row.begin(), row.end());
  response->set_calibration_slope(scores->slope);
  response->set_calibration_intercept(scores->intercept);
  response->set_jsd_simulation(scores->jsd_simulation);
  response->set_jsd_mean(scores->jsd_mean);
  response->set_ablation_score(scores->ablation_score);
  return grpc::Status::OK;
}

}  // namespace glassbox
