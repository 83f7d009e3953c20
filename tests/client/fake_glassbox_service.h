// An in-process stand-in for glassboxd with canned behaviour, so that the client library and
// the CLI can be tested against a real gRPC server without the engine.
//
// Models: "tiny" (2 layers, d_model 4, 2 heads, vocab 10) and "other". Behaviour by model name
// in Run: "missing" -> NOT_FOUND, "busy" -> RESOURCE_EXHAUSTED, "private" -> PERMISSION_DENIED,
// "slow" -> sleeps 1.5 s first, "scripted" -> streams script() verbatim. Otherwise every capture
// pattern becomes one f32 tensor [batch, max_len, 4] with value b*100 + p*10 + d (chunked at
// request.chunk_bytes, default 24 bytes), then "logits" when requested ([batch, 10] or
// [batch, max_len, 10], value b*1000 + p*10 + v), then "loss_per_token" [batch, max_len - 1].
//
// PatchingSweep on "tiny": values [2 layers, pos] = l*10 + p with dim_names (layer, pos),
// normalized = values / 10, clean 1.5, corrupted -0.5, 4 forward passes. DirectLogitAttribution
// on "tiny": six components (embed, pos_embed, L0H0, L0H1, L0.attn_bias, L0.mlp_out) with
// attribution {0.1, -3, 2, 0.5, -0.2, 1}[c] + b for row b, constant 0.25, logit their sum.
// Both answer model "malformed" with arrays whose sizes contradict their shapes, and "missing"
// with NOT_FOUND. LogitLens and AttentionNorms are not faked (UNIMPLEMENTED).
//
// Scan jobs. StartScan: model "missing" -> NOT_FOUND; otherwise a QUEUED job of 2 passes over
// 4 contexts of 8 tokens (64 tokens) with one target per neuron index given, named by the model:
// "failing" -> "scan-failed", "cancelled" -> "scan-cancelled", "unwatchable" -> "malformed",
// anything else -> "scan-1". WatchJob streams, by job: "scan-1": queued; pass 1 at 16 and at 32
// tokens; pass 2 at 48; SUCCEEDED (64 tokens, 1.5 s). "scan-failed": running, then FAILED
// ("out of device memory"). "scan-cancelled": running, then CANCELLED. "malformed": running,
// then the stream ends. Others: NOT_FOUND. CancelJob: "scan-1" -> CANCELLED, "scan-done" ->
// SUCCEEDED, "scan-running" -> RUNNING, others NOT_FOUND. ListJobs: scan-1 (succeeded) and
// scan-2 (failed: "corpus line 3 is not UTF-8"). GetScanResults: "scan-1" has 3 targets
// blocks.0.hook_resid_post[t] (t = 0, 1, 2; paged by target_offset / target_limit), each with
// stats, two top records (the first with token strings 'The', ' cat', ' sat', max at ' cat'; the
// second with ids only) and one logit each way; "malformed" -> a record with fewer activations
// than tokens; "scan-running" -> FAILED_PRECONDITION; others NOT_FOUND.
#pragma once

#include <grpcpp/server.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "glassbox/v1/glassbox.grpc.pb.h"

namespace glassbox::testing {

class FakeGlassboxService final : public glassbox::v1::Glassbox::Service {
 public:
  grpc::Status ListModels(grpc::ServerContext* context,
                          const glassbox::v1::ListModelsRequest* request,
                          glassbox::v1::ListModelsResponse* response) override;
  grpc::Status GetModelInfo(grpc::ServerContext* context,
                            const glassbox::v1::GetModelInfoRequest* request,
                            glassbox::v1::ModelInfo* response) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const glassbox::v1::TokenizeRequest* request,
                        glassbox::v1::TokenizeResponse* response) override;
  grpc::Status Detokenize(grpc::ServerContext* context,
                          const glassbox::v1::DetokenizeRequest* request,
                          glassbox::v1::DetokenizeResponse* response) override;
  grpc::Status Run(grpc::ServerContext* context, const glassbox::v1::RunRequest* request,
                   grpc::ServerWriter<glassbox::v1::RunResponse>* writer) override;

  grpc::Status PatchingSweep(grpc::ServerContext* context,
                             const glassbox::v1::PatchingSweepRequest* request,
                             glassbox::v1::PatchingSweepResponse* response) override;
  grpc::Status DirectLogitAttribution(
      grpc::ServerContext* context, const glassbox::v1::DirectLogitAttributionRequest* request,
      glassbox::v1::DirectLogitAttributionResponse* response) override;

  grpc::Status StartScan(grpc::ServerContext* context,
                         const glassbox::v1::StartScanRequest* request,
                         glassbox::v1::JobInfo* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const glassbox::v1::WatchJobRequest* request,
                        grpc::ServerWriter<glassbox::v1::JobInfo>* writer) override;
  grpc::Status CancelJob(grpc::ServerContext* context,
                         const glassbox::v1::CancelJobRequest* request,
                         glassbox::v1::JobInfo* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const glassbox::v1::ListJobsRequest* request,
                        glassbox::v1::ListJobsResponse* response) override;
  grpc::Status GetScanResults(grpc::ServerContext* context,
                              const glassbox::v1::GetScanResultsRequest* request,
                              glassbox::v1::ScanResults* response) override;

  // What the last call carried.
  std::optional<std::string> last_authorization() const;
  glassbox::v1::RunRequest last_run_request() const;
  glassbox::v1::TokenizeRequest last_tokenize_request() const;
  glassbox::v1::PatchingSweepRequest last_patching_request() const;
  glassbox::v1::DirectLogitAttributionRequest last_dla_request() const;
  glassbox::v1::StartScanRequest last_scan_request() const;
  // Whether the last Run saw its context cancelled while it was streaming.
  bool last_run_cancelled() const;

  void set_script(std::vector<glassbox::v1::RunResponse> script);

 private:
  void Record(grpc::ServerContext* context);

  mutable std::mutex mu_;
  std::optional<std::string> authorization_;
  glassbox::v1::RunRequest run_request_;
  glassbox::v1::TokenizeRequest tokenize_request_;
  glassbox::v1::PatchingSweepRequest patching_request_;
  glassbox::v1::DirectLogitAttributionRequest dla_request_;
  glassbox::v1::StartScanRequest scan_request_;
  bool run_cancelled_ = false;
  std::vector<glassbox::v1::RunResponse> script_;
};

// The fake served on 127.0.0.1 at a free port.
class FakeServer {
 public:
  FakeServer();
  ~FakeServer();
  std::string address() const;
  FakeGlassboxService& service() { return service_; }

 private:
  FakeGlassboxService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace glassbox::testing
