// The gRPC handlers. They admit the caller (API key and quotas, caller.h), validate and translate
// requests, queue forward passes on the device's scheduler, and stream results back with bounded
// buffering.
#pragma once

#include <atomic>
#include <functional>
#include <memory>

#include "glassbox/v1/glassbox.grpc.pb.h"
#include "server/scheduler/scheduler.h"
#include "server/service/api_keys.h"
#include "server/service/caller.h"
#include "server/service/metrics.h"
#include "server/service/model_store.h"
#include "server/service/run_plan.h"
#include "server/service/scan_jobs.h"
#include "server/service/stream_limit.h"

namespace glassbox {

// Run and Generate use gRPC's callback API (job_stream.h: no thread waits on a stream); the
// unary RPCs the synchronous one.
using GlassboxServiceBase = glassbox::v1::Glassbox::WithCallbackMethod_Run<
    glassbox::v1::Glassbox::WithCallbackMethod_Generate<
        glassbox::v1::Glassbox::WithCallbackMethod_WatchJob<glassbox::v1::Glassbox::Service>>>;

class GlassboxService final : public GlassboxServiceBase {
 public:
  // `clock` is the cached runs' and the quotas' clock (tests pass a fake one). `keys` null: every
  // RPC is open and every caller is one anonymous owner; otherwise each needs a key of `keys`,
  // which must outlive the service (it may be reloaded meanwhile).
  GlassboxService(const ModelStore& store, Scheduler& scheduler, ServiceLimits limits,
                  RunCache::Clock clock = &absl::Now, const ApiKeyStore* keys = nullptr)
      : store_(store),
        scheduler_(scheduler),
        limits_(std::move(limits)),
        run_cache_(limits_.cache, clock),
        quotas_(clock),
        gatekeeper_(keys, &quotas_, &limits_, &run_cache_),
        streams_(limits_.max_concurrent_streams) {}

  // The dataset-scan jobs the job RPCs reach (UNIMPLEMENTED without); must outlive the service.
  void SetScanJobs(ScanJobs* jobs) { scan_jobs_ = jobs; }

  // New runs are refused with UNAVAILABLE; in-flight ones finish.
  void StartDraining() { draining_ = true; }

  // What every RPC annotates for the request observer (request_observer.h), and the Prometheus
  // exposition of it with the scheduler's and the cache's gauges (queue_handler.cc).
  ServiceMetrics& metrics() { return metrics_; }
  std::string MetricsText();

  grpc::Status ListModels(grpc::ServerContext* context, const glassbox::v1::ListModelsRequest* request,
                          glassbox::v1::ListModelsResponse* response) override;
  grpc::Status GetModelInfo(grpc::ServerContext* context,
                            const glassbox::v1::GetModelInfoRequest* request,
                            glassbox::v1::ModelInfo* response) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const glassbox::v1::TokenizeRequest* request,
                        glassbox::v1::TokenizeResponse* response) override;
  grpc::Status Detokenize(grpc::ServerContext* context,
                          const glassbox::v1::DetokenizeRequest* request,
                          glassbox::v1::DetokenizeResponse* response) override;
  grpc::ServerWriteReactor<glassbox::v1::RunResponse>* Run(
      grpc::CallbackServerContext* context, const glassbox::v1::RunRequest* request) override;
  // generate_handler.cc
  grpc::ServerWriteReactor<glassbox::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const glassbox::v1::GenerateRequest* request) override;

  // Cached runs (RunRequest.keep, INTERVENTION_PATCH_CACHED).
  grpc::Status ListCachedRuns(grpc::ServerContext* context,
                              const glassbox::v1::ListCachedRunsRequest* request,
                              glassbox::v1::ListCachedRunsResponse* response) override;
  grpc::Status ReleaseCachedRun(grpc::ServerContext* context,
                                const glassbox::v1::ReleaseCachedRunRequest* request,
                                glassbox::v1::ReleaseCachedRunResponse* response) override;

  // Analyses (analysis_handlers.cc): validated here, computed on the device's scheduler.
  grpc::Status PatchingSweep(grpc::ServerContext* context,
                             const glassbox::v1::PatchingSweepRequest* request,
                             glassbox::v1::PatchingSweepResponse* response) override;
  grpc::Status LogitLens(grpc::ServerContext* context, const glassbox::v1::LogitLensRequest* request,
                         glassbox::v1::LogitLensResponse* response) override;
  grpc::Status DirectLogitAttribution(grpc::ServerContext* context,
                                      const glassbox::v1::DirectLogitAttributionRequest* request,
                                      glassbox::v1::DirectLogitAttributionResponse* response) override;
  grpc::Status AttentionNorms(grpc::ServerContext* context,
                              const glassbox::v1::AttentionNormsRequest* request,
                              glassbox::v1::AttentionNormsResponse* response) override;

  // SAEs (sae_handlers.cc).
  grpc::Status ListSaes(grpc::ServerContext* context, const glassbox::v1::ListSaesRequest* request,
                        glassbox::v1::ListSaesResponse* response) override;
  grpc::Status SaeEncode(grpc::ServerContext* context,
                         const glassbox::v1::SaeEncodeRequest* request,
                         glassbox::v1::SaeEncodeResponse* response) override;
  grpc::Status SaeDecode(grpc::ServerContext* context,
                         const glassbox::v1::SaeDecodeRequest* request,
                         glassbox::v1::SaeDecodeResponse* response) override;

  // The device queue and per-key usage (admin keys only on a server with keys).
  grpc::Status GetQueue(grpc::ServerContext* context, const glassbox::v1::GetQueueRequest* request,
                        glassbox::v1::GetQueueResponse* response) override;

  // Dataset scans (job_handlers.cc).
  grpc::Status StartScan(grpc::ServerContext* context,
                         const glassbox::v1::StartScanRequest* request,
                         glassbox::v1::JobInfo* response) override;
  grpc::ServerWriteReactor<glassbox::v1::JobInfo>* WatchJob(
      grpc::CallbackServerContext* context, const glassbox::v1::WatchJobRequest* request) override;
  grpc::Status CancelJob(grpc::ServerContext* context,
                         const glassbox::v1::CancelJobRequest* request,
                         glassbox::v1::JobInfo* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const glassbox::v1::ListJobsRequest* request,
                        glassbox::v1::ListJobsResponse* response) override;
  grpc::Status GetScanResults(grpc::ServerContext* context,
                              const glassbox::v1::GetScanResultsRequest* request,
                              glassbox::v1::ScanResults* response) override;
  grpc::Status ScoreExplanation(grpc::ServerContext* context,
                                const glassbox::v1::ScoreExplanationRequest* request,
                                glassbox::v1::ScoreExplanationResponse* response) override;
  grpc::Status Gradients(grpc::ServerContext* context,
                         const glassbox::v1::GradientsRequest* request,
                         glassbox::v1::GradientsResponse* response) override;
  grpc::Status IntegratedGradients(grpc::ServerContext* context,
                                   const glassbox::v1::IntegratedGradientsRequest* request,
                                   glassbox::v1::IntegratedGradientsResponse* response) override;
  grpc::Status Jacobian(grpc::ServerContext* context, const glassbox::v1::JacobianRequest* request,
                        glassbox::v1::JacobianResponse* response) override;

 private:
  // The caller's jobs, or UNIMPLEMENTED when this service runs none.
  absl::StatusOr<std::pair<ScanJobs*, JobCaller>> JobsFor(const grpc::ServerContextBase* context);

  // Every handler starts here: UNAUTHENTICATED or RESOURCE_EXHAUSTED before any other check.
  absl::StatusOr<Caller> Admit(const grpc::ServerContextBase* context, CallKind kind) const {
    absl::StatusOr<Caller> caller = gatekeeper_.Admit(context->client_metadata(), kind);
    if (caller.ok() && caller->key() != nullptr) {
      metrics_.Annotate(context, [&](RequestRecord& r) { r.key = caller->key()->name; });
    }
    return caller;
  }

  // Queues `work` on the device's scheduler as the caller's, costing `tokens`, and waits for it;
  // UNAVAILABLE while draining.
  absl::Status OnDevice(const grpc::ServerContext* context, const Caller& caller, std::string rpc,
                        std::string model, int64_t tokens,
                        const std::function<absl::Status()>& work);

  const ModelStore& store_;
  Scheduler& scheduler_;
  const ServiceLimits limits_;
  RunCache run_cache_;
  QuotaTracker quotas_;
  Gatekeeper gatekeeper_;
  StreamLimit streams_;
  std::atomic<bool> draining_{false};
  ScanJobs* scan_jobs_ = nullptr;
  mutable ServiceMetrics metrics_;
};

}  // namespace glassbox
