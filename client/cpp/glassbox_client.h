// C++ client for a Glassbox server (glassboxd): model listing and info, tokenization, hooked
// forward passes (with interventions) whose captured tensors stream back and are reassembled
// here, and the server-side analyses (patching sweeps, logit lens, direct logit attribution,
// attention norms), SAEs, and dataset-scan jobs.
//
//   glassbox::client::ClientOptions options;
//   options.api_key = key;
//   auto client = glassbox::client::Client::Connect("gpu-box:50051", options);
//   glassbox::v1::RunRequest request;  // model, inputs, captures, outputs
//   auto run = (*client)->Run(request);
//   const ReceivedTensor* resid = run->Find("blocks.3.hook_resid_post");
//
// Every method returns the server's gRPC status as an absl::Status with the same code and
// message; a stream that breaks the protocol is INTERNAL. A Client is thread-safe.
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/cpp/arrays.h"
#include "client/cpp/jobs.h"
#include "client/cpp/run_stream.h"
#include "client/cpp/status_conversion.h"
#include "client/cpp/tensor_decode.h"
#include "glassbox/v1/glassbox.grpc.pb.h"
#include "glassbox/v1/glassbox.pb.h"

namespace glassbox::client {

struct ClientOptions {
  // Sent as `authorization: Bearer <api_key>` metadata on every call when not empty.
  std::string api_key;
  // TLS instead of plaintext. `tls_root_cert_path` is a PEM file of root certificates to trust;
  // empty means the system's roots.
  bool tls = false;
  std::string tls_root_cert_path;
  // A client certificate chain and its private key (PEM files), for servers that require one
  // (glassboxd --tls_client_ca: mutual TLS). Both or neither; either implies TLS.
  std::string tls_client_cert_path;
  std::string tls_client_key_path;
  // Deadline of each call, counted from its start. Infinite: none.
  absl::Duration deadline = absl::InfiniteDuration();
  // When positive, Connect waits this long for the channel to become ready and fails with
  // UNAVAILABLE if it does not; otherwise connecting is lazy and the first call reports an
  // unreachable server as UNAVAILABLE.
  absl::Duration connect_timeout = absl::ZeroDuration();
};

class Client {
 public:
  // `address` is a gRPC target: "host:port", "dns:///host:port", "unix:///path".
  // INVALID_ARGUMENT for an empty address; an unreadable root certificate file is NOT_FOUND.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const std::string& address,
                                                         ClientOptions options = {});
  // Over an existing channel (in-process servers, custom channel arguments).
  static std::unique_ptr<Client> FromChannel(std::shared_ptr<grpc::Channel> channel,
                                             ClientOptions options = {});

  // Every model the server has loaded (hook_points empty; see GetModelInfo).
  absl::StatusOr<std::vector<glassbox::v1::ModelInfo>> ListModels();
  // One model with all of its hook points, in forward order.
  absl::StatusOr<glassbox::v1::ModelInfo> GetModelInfo(const std::string& model);

  // `prepend_bos` unset: the tokenizer's default.
  absl::StatusOr<glassbox::v1::TokenizeResponse> Tokenize(
      const std::string& model, const std::string& text,
      std::optional<bool> prepend_bos = std::nullopt);
  absl::StatusOr<glassbox::v1::TokenizeResponse> Tokenize(
      const glassbox::v1::TokenizeRequest& request);
  absl::StatusOr<glassbox::v1::DetokenizeResponse> Detokenize(const std::string& model,
                                                              const std::vector<int32_t>& ids);
  absl::StatusOr<glassbox::v1::DetokenizeResponse> Detokenize(
      const glassbox::v1::DetokenizeRequest& request);

  // One hooked forward pass, with every captured tensor held in memory. Interventions
  // (ablation, steering, patching between rows) go in request.interventions.
  absl::StatusOr<RunResult> Run(const glassbox::v1::RunRequest& request);
  // The same pass, handing the header, each tensor as soon as it is complete, and the summary
  // to `callbacks`, so that captures larger than memory can go straight to disk. A callback
  // error cancels the call and is returned.
  absl::Status RunStreaming(const glassbox::v1::RunRequest& request, RunCallbacks callbacks);

  // Generation (docs/generation.md): `on_step` sees each step as it arrives (a callback error
  // cancels the call and is returned); the result is the header (the prompts as they ran) and
  // the summary (each row's new tokens, text and finish reason).
  struct GenerateResult {
    glassbox::v1::Header header;
    glassbox::v1::GenerateSummary summary;
  };
  absl::StatusOr<GenerateResult> Generate(
      const glassbox::v1::GenerateRequest& request,
      const std::function<absl::Status(const glassbox::v1::GenerateStep&)>& on_step = nullptr);

  // Server-side analyses (definitions in docs/methods.md; docs/patching.md, docs/analyses.md). Each
  // response is checked before it is returned (arrays.h: every array well formed, shapes
  // consistent with each other and with the labels); a malformed one is INTERNAL.
  //
  // Activation patching, batched: values [layer, pos], [layer, head] or [layer, pos, head].
  absl::StatusOr<glassbox::v1::PatchingSweepResponse> PatchingSweep(
      const glassbox::v1::PatchingSweepRequest& request);
  // Top-k tokens and target log-probs of the accumulated residual stream, per layer.
  absl::StatusOr<glassbox::v1::LogitLensResponse> LogitLens(
      const glassbox::v1::LogitLensRequest& request);
  // d(metric of each row's logits) / d(activations) at the requested hooks (docs/gradients.md).
  absl::StatusOr<glassbox::v1::GradientsResponse> Gradients(
      const glassbox::v1::GradientsRequest& request);
  absl::StatusOr<glassbox::v1::IntegratedGradientsResponse> IntegratedGradients(
      const glassbox::v1::IntegratedGradientsRequest& request);
  // d out_hook[b, q_b] / d in_hook[b, p_b] per row, with both values.
  absl::StatusOr<glassbox::v1::JacobianResponse> Jacobian(
      const glassbox::v1::JacobianRequest& request);
  // Per-component contributions to a logit (difference) at one position.
  absl::StatusOr<glassbox::v1::DirectLogitAttributionResponse> DirectLogitAttribution(
      const glassbox::v1::DirectLogitAttributionRequest& request);
  // Attention weights beside the norms of the weighted value vectors (Kobayashi et al., 2020).
  absl::StatusOr<glassbox::v1::AttentionNormsResponse> AttentionNorms(
      const glassbox::v1::AttentionNormsRequest& request);

  // SAEs (docs/saes.md): those attached to `model` ("" = all), encoding at an SAE's hook
  // (sparse per token, optionally dense, with reconstruction statistics), decoding. Splices,
  // feature edits and decoder steering go in RunRequest.sae_splices / sae_steering.
  absl::StatusOr<std::vector<glassbox::v1::SaeInfo>> ListSaes(const std::string& model = "");
  absl::StatusOr<glassbox::v1::SaeEncodeResponse> SaeEncode(
      const glassbox::v1::SaeEncodeRequest& request);
  absl::StatusOr<glassbox::v1::SaeDecodeResponse> SaeDecode(
      const glassbox::v1::SaeDecodeRequest& request);

  // Runs kept on the server (RunRequest.keep; docs/interventions.md): list, and free one now.
  absl::StatusOr<glassbox::v1::ListCachedRunsResponse> ListCachedRuns();
  absl::StatusOr<int64_t> ReleaseCachedRun(const std::string& name);

  // The device queue and per-key usage (docs/service.md, "The scheduler"); admin keys only on a
  // server with keys.
  absl::StatusOr<glassbox::v1::GetQueueResponse> GetQueue();

  // Dataset scans (docs/scans.md): jobs that run a corpus through the model on the server, at a
  // lower priority than interactive requests, keeping per target (neuron, SAE feature,
  // direction) its statistics and top-activating contexts. A job belongs to the key that
  // started it (an admin key sees every key's); an unknown or another key's job is NOT_FOUND.
  //
  // Queues a scan; the JobInfo has the job's id, its targets and tokens_total.
  absl::StatusOr<glassbox::v1::JobInfo> StartScan(const glassbox::v1::StartScanRequest& request);
  // Follows the job until it ends: `on_update` sees its state now and at each change (the latest
  // only, never a backlog), the final state last; a callback error cancels the watch (not the
  // job) and is returned. Returns the final state (succeeded, failed or cancelled); a stream
  // that ends before the job does, or that carries another job, is INTERNAL.
  absl::StatusOr<glassbox::v1::JobInfo> WatchJob(
      const std::string& job_id,
      const std::function<absl::Status(const glassbox::v1::JobInfo&)>& on_update = nullptr);
  // Asks the job to stop: a queued job is cancelled at once, a running one within its current
  // batch; an ended job is left as it is. Returns its state after the request.
  absl::StatusOr<glassbox::v1::JobInfo> CancelJob(const std::string& job_id);
  // The caller's jobs (every key's for an admin key), oldest first.
  absl::StatusOr<std::vector<glassbox::v1::JobInfo>> ListJobs();
  // A page of a succeeded scan's targets (FAILED_PRECONDITION before it has succeeded), checked
  // (jobs.h: CheckScanResults) before it is returned.
  absl::StatusOr<glassbox::v1::ScanResults> GetScanResults(
      const glassbox::v1::GetScanResultsRequest& request);
  // Scores an explanation of one unit by its simulated activations on excerpts (docs/methods.md,
  // "Scoring explanations"); the response has a row of true activations per excerpt.
  absl::StatusOr<glassbox::v1::ScoreExplanationResponse> ScoreExplanation(
      const glassbox::v1::ScoreExplanationRequest& request);

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  glassbox::v1::Glassbox::Stub& stub() { return *stub_; }

  // Applies the options (authorization metadata, deadline) to a context for a raw stub call.
  void PrepareContext(grpc::ClientContext& context) const;

 private:
  Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options);

  // A unary call of `method` whose response passes `check`.
  template <typename Response, typename Request, typename Method>
  absl::StatusOr<Response> Unary(Method method, const Request& request,
                                 absl::Status (*check)(const Response&));

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<glassbox::v1::Glassbox::Stub> stub_;
  ClientOptions options_;
};

}  // namespace glassbox::client
