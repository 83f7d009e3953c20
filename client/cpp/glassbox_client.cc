#include "client/cpp/glassbox_client.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/file.h"
#include "base/status_macros.h"

namespace glassbox::client {

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& address,
                                                        ClientOptions options) {
  if (address.empty()) return absl::InvalidArgumentError("no server address given");
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  const bool client_cert =
      !options.tls_client_cert_path.empty() || !options.tls_client_key_path.empty();
  if (client_cert &&
      (options.tls_client_cert_path.empty() || options.tls_client_key_path.empty())) {
    return absl::InvalidArgumentError(
        "a client certificate needs both its chain (tls_client_cert) and its key (tls_client_key)");
  }
  if (options.tls || !options.tls_root_cert_path.empty() || client_cert) {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_root_cert_path.empty()) {
      GB_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFileToString(options.tls_root_cert_path));
    }
    if (client_cert) {
      GB_ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadFileToString(options.tls_client_cert_path));
      GB_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadFileToString(options.tls_client_key_path));
    }
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments arguments;
  // Chunks are small, but a Summary carries whole logits ([batch, pos, vocab]) in one message,
  // far beyond gRPC's 4 MB default for large vocabularies.
  arguments.SetMaxReceiveMessageSize(-1);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(address, credentials, arguments);
  if (options.connect_timeout > absl::ZeroDuration()) {
    if (!channel->WaitForConnected(absl::ToChronoTime(absl::Now() + options.connect_timeout))) {
      return absl::UnavailableError(absl::StrFormat("could not connect to %s within %s", address,
                                                    absl::FormatDuration(options.connect_timeout)));
    }
  }
  return std::unique_ptr<Client>(new Client(std::move(channel), std::move(options)));
}

std::unique_ptr<Client> Client::FromChannel(std::shared_ptr<grpc::Channel> channel,
                                            ClientOptions options) {
  return std::unique_ptr<Client>(new Client(std::move(channel), std::move(options)));
}

Client::Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : channel_(std::move(channel)),
      stub_(glassbox::v1::Glassbox::NewStub(channel_)),
      options_(std::move(options)) {}

void Client::PrepareContext(grpc::ClientContext& context) const {
  if (!options_.api_key.empty()) {
    context.AddMetadata("authorization", absl::StrCat("Bearer ", options_.api_key));
  }
  if (options_.deadline != absl::InfiniteDuration()) {
    context.set_deadline(absl::ToChronoTime(absl::Now() + options_.deadline));
  }
}

absl::StatusOr<std::vector<glassbox::v1::ModelInfo>> Client::ListModels() {
  grpc::ClientContext context;
  PrepareContext(context);
  glassbox::v1::ListModelsResponse response;
  GB_RETURN_IF_ERROR(
      FromGrpcStatus(stub_->ListModels(&context, glassbox::v1::ListModelsRequest(), &response)));
  return std::vector<glassbox::v1::ModelInfo>(response.models().begin(), response.models().end());
}

absl::StatusOr<glassbox::v1::ModelInfo> Client::GetModelInfo(const std::string& model) {
  grpc::ClientContext context;
  PrepareContext(context);
  glassbox::v1::GetModelInfoRequest request;
  request.set_model(model);
  glassbox::v1::ModelInfo response;
  GB_RETURN_IF_ERROR(FromGrpcStatus(stub_->GetModelInfo(&context, request, &response)));
  return response;
}

absl::StatusOr<glassbox::v1::TokenizeResponse> Client::Tokenize(const std::string& model,
                                                                const std::string& text,
                                                                std::optional<bool> prepend_bos) {
  glassbox::v1::TokenizeRequest request;
  request.set_model(model);
  request.set_text(text);
  if (prepend_bos.has_value()) request.set_prepend_bos(*prepend_bos);
  return Tokenize(request);
}

absl::StatusOr<glassbox::v1::TokenizeResponse> Client::Tokenize(
    const glassbox::v1::TokenizeRequest& request) {
  grpc::ClientContext context;
  PrepareContext(context);
  glassbox::v1::TokenizeResponse response;
  GB_RETURN_IF_ERROR(FromGrpcStatus(stub_->Tokenize(&context, request, &response)));
  return response;
}

absl::StatusOr<glassbox::v1::DetokenizeResponse> Client::Detokenize(
    const std::string& model, const std::vector<int32_t>& ids) {
  glassbox::v1::DetokenizeRequest request;
  request.set_model(model);
  request.mutable_ids()->Add(ids.begin(), ids.end());
  return Detokenize(request);
}

absl::StatusOr<glassbox::v1::DetokenizeResponse> Client::Detokenize(
    const glassbox::v1::DetokenizeRequest& request) {
  grpc::ClientContext context;
  PrepareContext(context);
  glassbox::v1::DetokenizeResponse response;
  GB_RETURN_IF_ERROR(FromGrpcStatus(stub_->Detokenize(&context, request, &response)));
  return response;
}

template <typename Response, typename Request, typename Method>
absl::StatusOr<Response> Client::Unary(Method method, const Request& request,
                                       absl::Status (*check)(const Response&)) {
  grpc::ClientContext context;
  PrepareContext(context);
  Response response;
  GB_RETURN_IF_ERROR(FromGrpcStatus((stub_.get()->*method)(&context, request, &response)));
  GB_RETURN_IF_ERROR(check(response));
  return response;
}

absl::StatusOr<glassbox::v1::PatchingSweepResponse> Client::PatchingSweep(
    const glassbox::v1::PatchingSweepRequest& request) {
  return Unary<glassbox::v1::PatchingSweepResponse>(&glassbox::v1::Glassbox::Stub::PatchingSweep,
                                                    request, &CheckPatchingSweepResponse);
}

absl::StatusOr<glassbox::v1::GradientsResponse> Client::Gradients(
    const glassbox::v1::GradientsRequest& request) {
  return Unary<glassbox::v1::GradientsResponse>(&glassbox::v1::Glassbox::Stub::Gradients, request,
                                                &CheckGradientsResponse);
}

absl::StatusOr<glassbox::v1::IntegratedGradientsResponse> Client::IntegratedGradients(
    const glassbox::v1::IntegratedGradientsRequest& request) {
  return Unary<glassbox::v1::IntegratedGradientsResponse>(
      &glassbox::v1::Glassbox::Stub::IntegratedGradients, request,
      &CheckIntegratedGradientsResponse);
}

absl::StatusOr<glassbox::v1::JacobianResponse> Client::Jacobian(
    const glassbox::v1::JacobianRequest& request) {
  return Unary<glassbox::v1::JacobianResponse>(&glassbox::v1::Glassbox::Stub::Jacobian, request,
                                               &CheckJacobianResponse);
}

absl::StatusOr<glassbox::v1::LogitLensResponse> Client::LogitLens(
    const glassbox::v1::LogitLensRequest& request) {
  return Unary<glassbox::v1::LogitLensResponse>(&glassbox::v1::Glassbox::Stub::LogitLens, request,
                                                &CheckLogitLensResponse);
}

absl::StatusOr<glassbox::v1::DirectLogitAttributionResponse> Client::DirectLogitAttribution(
    const glassbox::v1::DirectLogitAttributionRequest& request) {
  return Unary<glassbox::v1::DirectLogitAttributionResponse>(
      &glassbox::v1::Glassbox::Stub::DirectLogitAttribution, request,
      &CheckDirectLogitAttributionResponse);
}

absl::StatusOr<glassbox::v1::AttentionNormsResponse> Client::AttentionNorms(
    const glassbox::v1::AttentionNormsRequest& request) {
  return Unary<glassbox::v1::AttentionNormsResponse>(
      &glassbox::v1::Glassbox::Stub::AttentionNorms, request, &CheckAttentionNormsResponse);
}

absl::StatusOr<RunResult> Client::Run(const glassbox::v1::RunRequest& request) {
  RunResult result;
  GB_RETURN_IF_ERROR(RunStreaming(request, CollectInto(result)));
  return result;
}

namespace {

// Our side gave up on a server stream (a malformed stream or a callback error): stop the
// server's work, then drain so that the call finishes cleanly, and return `failure`.
template <typename Response>
absl::Status CancelAndDrain(grpc::ClientContext& context, grpc::ClientReader<Response>& reader,
                            absl::Status failure) {
  context.TryCancel();
  Response ignored;
  while (reader.Read(&ignored)) {
  }
  (void)reader.Finish();
  return failure;
}

}  // namespace

absl::Status Client::RunStreaming(const glassbox::v1::RunRequest& request, RunCallbacks callbacks) {
  grpc::ClientContext context;
  PrepareContext(context);
  std::unique_ptr<grpc::ClientReader<glassbox::v1::RunResponse>> reader =
      stub_->Run(&context, request);
  RunStreamAssembler assembler(std::move(callbacks));
  glassbox::v1::RunResponse response;
  absl::Status failure;
  while (reader->Read(&response)) {
    failure = assembler.Add(response);
    if (!failure.ok()) break;
  }
  if (!failure.ok()) return CancelAndDrain(context, *reader, failure);
  GB_RETURN_IF_ERROR(FromGrpcStatus(reader->Finish()));
  return assembler.Finish();
}

absl::StatusOr<Client::GenerateResult> Client::Generate(
    const glassbox::v1::GenerateRequest& request,
    const std::function<absl::Status(const glassbox::v1::GenerateStep&)>& on_step) {
  grpc::ClientContext context;
  PrepareContext(context);
  std::unique_ptr<grpc::ClientReader<glassbox::v1::GenerateResponse>> reader =
      stub_->Generate(&context, request);
  GenerateResult result;
  bool have_header = false, have_summary = false;
  glassbox::v1::GenerateResponse response;
  absl::Status failure;
  while (failure.ok() && reader->Read(&response)) {
    switch (response.kind_case()) {
      case glassbox::v1::GenerateResponse::kHeader:
        have_header = true;
        result.header = response.header();
        break;
      case glassbox::v1::GenerateResponse::kStep:
        if (!have_header) {
          failure = absl::InternalError("malformed Generate stream: a step before the header");
        } else if (on_step) {
          failure = on_step(response.step());
        }
        break;
      case glassbox::v1::GenerateResponse::kSummary:
        have_summary = true;
        result.summary = response.summary();
        break;
      default:
        failure = absl::InternalError("malformed Generate stream: an empty message");
    }
  }
  if (!failure.ok()) return CancelAndDrain(context, *reader, failure);
  GB_RETURN_IF_ERROR(FromGrpcStatus(reader->Finish()));
  if (!have_header || !have_summary) {
    return absl::InternalError("malformed Generate stream: no header or no summary");
  }
  return result;
}

absl::StatusOr<std::vector<glassbox::v1::SaeInfo>> Client::ListSaes(const std::string& model) {
  grpc::ClientContext context;
  PrepareContext(context);
  glassbox::v1::ListSaesRequest request;
  request.set_model(model);
  glassbox::v1::ListSaesResponse response;
  GB_RETURN_IF_ERROR(FromGrpcStatus(stub_->ListSaes(&context, request, &response)));
  return std::vector<glassbox::v1::SaeInfo>(response.saes().begin(), response.saes().end());
}

namespace {
template <typename Response>
absl::Status NoCheck(const Response&) {
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<glassbox::v1::ListCachedRunsResponse> Client::ListCachedRuns() {
  return Unary<glassbox::v1::ListCachedRunsResponse>(
      &glassbox::v1::Glassbox::Stub::ListCachedRuns, glassbox::v1::ListCachedRunsRequest(),
      &NoCheck<glassbox::v1::ListCachedRunsResponse>);
}

absl::StatusOr<glassbox::v1::GetQueueResponse> Client::GetQueue() {
  return Unary<glassbox::v1::GetQueueResponse>(&glassbox::v1::Glassbox::Stub::GetQueue,
                                               glassbox::v1::GetQueueRequest(),
                                               &NoCheck<glassbox::v1::GetQueueResponse>);
}

absl::StatusOr<glassbox::v1::JobInfo> Client::StartScan(
    const glassbox::v1::StartScanRequest& request) {
  return Unary<glassbox::v1::JobInfo>(&glassbox::v1::Glassbox::Stub::StartScan, request,
                                      &NoCheck<glassbox::v1::JobInfo>);
}

absl::StatusOr<glassbox::v1::JobInfo> Client::WatchJob(
    const std::string& job_id,
    const std::function<absl::Status(const glassbox::v1::JobInfo&)>& on_update) {
  grpc::ClientContext context;
  PrepareContext(context);
  glassbox::v1::WatchJobRequest request;
  request.set_job_id(job_id);
  std::unique_ptr<grpc::ClientReader<glassbox::v1::JobInfo>> reader =
      stub_->WatchJob(&context, request);
  glassbox::v1::JobInfo info, last;
  bool seen = false;
  absl::Status failure;
  while (failure.ok() && reader->Read(&info)) {
    if (info.job_id() != job_id) {
      failure = absl::InternalError(absl::StrFormat(
          "malformed WatchJob stream: job \"%s\" arrived watching \"%s\"", info.job_id(), job_id));
    } else if (seen && JobEnded(last.state())) {
      failure = absl::InternalError(
          absl::StrFormat("malformed WatchJob stream: an update after the final state (%s)",
                          JobStateName(last.state())));
    } else {
      seen = true;
      last = info;
      if (on_update) failure = on_update(info);
    }
  }
  if (!failure.ok()) return CancelAndDrain(context, *reader, failure);
  GB_RETURN_IF_ERROR(FromGrpcStatus(reader->Finish()));
  if (!seen || !JobEnded(last.state())) {
    return absl::InternalError(
        absl::StrFormat("malformed WatchJob stream: it ended while the job was %s",
                        seen ? JobStateName(last.state()) : std::string_view("unreported")));
  }
  return last;
}

absl::StatusOr<glassbox::v1::JobInfo> Client::CancelJob(const std::string& job_id) {
  glassbox::v1::CancelJobRequest request;
  request.set_job_id(job_id);
  return Unary<glassbox::v1::JobInfo>(&glassbox::v1::Glassbox::Stub::CancelJob, request,
                                      &NoCheck<glassbox::v1::JobInfo>);
}

absl::StatusOr<std::vector<glassbox::v1::JobInfo>> Client::ListJobs() {
  GB_ASSIGN_OR_RETURN(auto response,
                      Unary<glassbox::v1::ListJobsResponse>(
                          &glassbox::v1::Glassbox::Stub::ListJobs, glassbox::v1::ListJobsRequest(),
                          &NoCheck<glassbox::v1::ListJobsResponse>));
  return std::vector<glassbox::v1::JobInfo>(response.jobs().begin(), response.jobs().end());
}

absl::StatusOr<glassbox::v1::ScanResults> Client::GetScanResults(
    const glassbox::v1::GetScanResultsRequest& request) {
  return Unary<glassbox::v1::ScanResults>(&glassbox::v1::Glassbox::Stub::GetScanResults, request,
                                          &CheckScanResults);
}

absl::StatusOr<glassbox::v1::ScoreExplanationResponse> Client::ScoreExplanation(
    const glassbox::v1::ScoreExplanationRequest& request) {
  GB_ASSIGN_OR_RETURN(auto response, Unary<glassbox::v1::ScoreExplanationResponse>(
                                         &glassbox::v1::Glassbox::Stub::ScoreExplanation, request,
                                         &NoCheck<glassbox::v1::ScoreExplanationResponse>));
  GB_RETURN_IF_ERROR(CheckScoreExplanationResponse(request, response));
  return response;
}

absl::StatusOr<int64_t> Client::ReleaseCachedRun(const std::string& name) {
  glassbox::v1::ReleaseCachedRunRequest request;
  request.set_name(name);
  GB_ASSIGN_OR_RETURN(auto response,
                      Unary<glassbox::v1::ReleaseCachedRunResponse>(
                          &glassbox::v1::Glassbox::Stub::ReleaseCachedRun, request,
                          &NoCheck<glassbox::v1::ReleaseCachedRunResponse>));
  return response.released_bytes();
}

absl::StatusOr<glassbox::v1::SaeEncodeResponse> Client::SaeEncode(
    const glassbox::v1::SaeEncodeRequest& request) {
  return Unary<glassbox::v1::SaeEncodeResponse>(&glassbox::v1::Glassbox::Stub::SaeEncode, request,
                                                &CheckSaeEncodeResponse);
}

absl::StatusOr<glassbox::v1::SaeDecodeResponse> Client::SaeDecode(
    const glassbox::v1::SaeDecodeRequest& request) {
  return Unary<glassbox::v1::SaeDecodeResponse>(&glassbox::v1::Glassbox::Stub::SaeDecode, request,
                                                &CheckSaeDecodeResponse);
}

}  // namespace glassbox::client
