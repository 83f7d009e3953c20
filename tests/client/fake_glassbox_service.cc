#include "tests/client/fake_glassbox_service.h"

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

namespace glassbox::testing {
namespace {

using glassbox::v1::RunResponse;

glassbox::v1::ModelInfo TinyInfo(bool with_hooks) {
  glassbox::v1::ModelInfo info;
  info.set_name("tiny");
  info.set_architecture("gpt2");
  info.set_n_layers(2);
  info.set_d_model(4);
  info.set_n_heads(2);
  info.set_n_kv_heads(2);
  info.set_d_head(2);
  info.set_d_mlp(16);
  info.set_vocab_size(10);
  info.set_n_ctx(8);
  info.set_dtype(glassbox::v1::DTYPE_F32);
  info.set_device("cpu");
  if (with_hooks) {
    auto add_hook = [&](const std::string& name, int layer,
                        std::vector<std::pair<std::string, int64_t>> dims) {
      glassbox::v1::HookPoint* hook = info.add_hook_points();
      hook->set_name(name);
      hook->set_layer(layer);
      for (const auto& [dim_name, size] : dims) {
        glassbox::v1::HookDim* dim = hook->add_dims();
        dim->set_name(dim_name);
        dim->set_size(size);
      }
    };
    add_hook("hook_embed", -1, {{"batch", 0}, {"pos", 0}, {"d_model", 4}});
    for (int l = 0; l < 2; ++l) {
      add_hook(absl::StrCat("blocks.", l, ".attn.hook_pattern"), l,
               {{"batch", 0}, {"head_index", 2}, {"query_pos", 0}, {"key_pos", 0}});
      add_hook(absl::StrCat("blocks.", l, ".hook_resid_post"), l,
               {{"batch", 0}, {"pos", 0}, {"d_model", 4}});
    }
  }
  return info;
}

// Streams `bytes` as the tensor `id` in chunks of `chunk` bytes.
bool StreamTensor(grpc::ServerWriter<RunResponse>* writer, int id, const std::string& bytes,
                  size_t chunk) {
  size_t offset = 0;
  do {
    const size_t n = std::min(chunk, bytes.size() - offset);
    RunResponse response;
    glassbox::v1::TensorChunk* c = response.mutable_chunk();
    c->set_capture_id(id);
    c->set_offset(static_cast<int64_t>(offset));
    c->set_data(bytes.substr(offset, n));
    offset += n;
    c->set_last(offset == bytes.size());
    if (!writer->Write(response)) return false;
  } while (offset < bytes.size());
  return true;
}

std::string FloatBytes(const std::vector<float>& values) {
  std::string bytes(values.size() * sizeof(float), '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

}  // namespace

void FakeGlassboxService::Record(grpc::ServerContext* context) {
  std::lock_guard<std::mutex> lock(mu_);
  authorization_.reset();
  const auto& metadata = context->client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    authorization_ = std::string(it->second.data(), it->second.size());
  }
}

grpc::Status FakeGlassboxService::ListModels(grpc::ServerContext* context,
                                             const glassbox::v1::ListModelsRequest*,
                                             glassbox::v1::ListModelsResponse* response) {
  Record(context);
  *response->add_models() = TinyInfo(false);
  glassbox::v1::ModelInfo* other = response->add_models();
  other->set_name("other");
  other->set_architecture("llama");
  other->set_n_layers(3);
  other->set_d_model(8);
  other->set_n_heads(4);
  other->set_vocab_size(20);
  other->set_dtype(glassbox::v1::DTYPE_BF16);
  other->set_device("cuda:0");
  return grpc::Status::OK;
}

grpc::Status FakeGlassboxService::GetModelInfo(grpc::ServerContext* context,
                                               const glassbox::v1::GetModelInfoRequest* request,
                                               glassbox::v1::ModelInfo* response) {
  Record(context);
  if (request->model() != "tiny") {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("no model \"", request->model(), "\"; models: tiny, other"));
  }
  *response = TinyInfo(true);
  return grpc::Status::OK;
}

grpc::Status FakeGlassboxService::Tokenize(grpc::ServerContext* context,
                                           const glassbox::v1::TokenizeRequest* request,
                                           glassbox::v1::TokenizeResponse* response) {
  Record(context);
  {
    std::lock_guard<std::mutex> lock(mu_);
    tokenize_request_ = *request;
  }
  if (request->model() != "tiny") {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such model");
  }
  if (request->prepend_bos()) {
    response->add_ids(0);
    response->add_str_tokens("<bos>");
  }
  for (unsigned char c : request->text()) {  // one token per byte
    response->add_ids(c);
    response->add_str_tokens(std::string(1, static_cast<char>(c)));
  }
  return grpc::Status::OK;
}

grpc::Status FakeGlassboxService::Detokenize(grpc::ServerContext* context,
                                             const glassbox::v1::DetokenizeRequest* request,
                                             glassbox::v1::DetokenizeResponse* response) {
  Record(context);
  std::string text;
  for (int id : request->ids()) {
    text += static_cast<char>(id);
    response->add_str_tokens(std::string(1, static_cast<char>(id)));
  }
  response->set_text(text);
  return grpc::Status::OK;
}

grpc::Status FakeGlassboxService::Run(grpc::ServerContext* context,
                                      const glassbox::v1::RunRequest* request,
                                      grpc::ServerWriter<RunResponse>* writer) {
  Record(context);
  std::vector<RunResponse> script;
  {
    std::lock_guard<std::mutex> lock(mu_);
    run_request_ = *request;
    run_cancelled_ = false;
    script = script_;
  }
  const std::string& model = request->model();
  if (model == "missing") return grpc::Status(grpc::StatusCode::NOT_FOUND, "no model \"missing\"");
  if (model == "busy") {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "request over the token limit");
  }
  if (model == "private") return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "not yours");
  if (model == "slow") std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  if (model == "scripted") {
    for (const RunResponse& response : script) {
      if (!writer->Write(response)) break;
    }
    return grpc::Status::OK;
  }

  std::vector<std::vector<int32_t>> rows;
  for (const auto& row : request->inputs().token_ids())
    rows.emplace_back(row.ids().begin(), row.ids().end());
  for (const std::string& text : request->inputs().texts()) {
    rows.emplace_back(text.begin(), text.end());
  }
  const int64_t batch = static_cast<int64_t>(rows.size());
  int64_t max_len = 0;
  for (const auto& row : rows) max_len = std::max<int64_t>(max_len, row.size());

  RunResponse header_message;
  glassbox::v1::Header& header = *header_message.mutable_header();
  header.set_model(model);
  for (const auto& row : rows) {
    header.add_sequence_lengths(static_cast<int32_t>(row.size()));
    header.add_tokens()->mutable_ids()->Add(row.begin(), row.end());
  }
  std::vector<std::string> payloads;
  auto add_tensor = [&](const std::string& name, std::vector<int64_t> shape,
                        std::vector<std::string> dims, std::vector<float> values) {
    glassbox::v1::CapturedTensorInfo* info = header.add_tensors();
    info->set_id(static_cast<int32_t>(payloads.size()) + 7);  // ids need not be indices
    info->set_name(name);
    info->mutable_shape()->Add(shape.begin(), shape.end());
    for (const std::string& dim : dims) info->add_dim_names(dim);
    info->set_dtype(glassbox::v1::DTYPE_F32);
    info->set_nbytes(static_cast<int64_t>(values.size() * sizeof(float)));
    payloads.push_back(FloatBytes(values));
  };
  for (const glassbox::v1::Capture& capture : request->captures()) {
    if (capture.hook().find("nonexistent") != std::string::npos) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("no hook matches \"", capture.hook(), "\""));
    }
    std::vector<float> values;
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t p = 0; p < max_len; ++p) {
        for (int64_t d = 0; d < 4; ++d) values.push_back(static_cast<float>(b * 100 + p * 10 + d));
      }
    }
    add_tensor(capture.hook(), {batch, max_len, 4}, {"batch", "pos", "d_model"}, values);
  }
  const glassbox::v1::Outputs& outputs = request->outputs();
  if (outputs.logits() == glassbox::v1::LOGITS_LAST ||
      outputs.logits() == glassbox::v1::LOGITS_ALL) {
    const bool all = outputs.logits() == glassbox::v1::LOGITS_ALL;
    std::vector<float> values;
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t p = 0; p < (all ? max_len : 1); ++p) {
        for (int64_t v = 0; v < 10; ++v)
          values.push_back(static_cast<float>(b * 1000 + p * 10 + v));
      }
    }
    if (all) {
      add_tensor("logits", {batch, max_len, 10}, {"batch", "pos", "d_vocab"}, values);
    } else {
      add_tensor("logits", {batch, 10}, {"batch", "d_vocab"}, values);
    }
  }
  if (outputs.loss_per_token()) {
    add_tensor("loss_per_token", {batch, std::max<int64_t>(max_len - 1, 0)}, {"batch", "pos"},
               std::vector<float>(batch * std::max<int64_t>(max_len - 1, 0), 1.5f));
  }
  if (!writer->Write(header_message)) return grpc::Status(grpc::StatusCode::CANCELLED, "gone");
  const size_t chunk = request->chunk_bytes() > 0 ? request->chunk_bytes() : 24;
  int64_t bytes_sent = 0;
  for (size_t i = 0; i < payloads.size(); ++i) {
    if (context->IsCancelled() ||
        !StreamTensor(writer, header.tensors(static_cast<int>(i)).id(), payloads[i], chunk)) {
      std::lock_guard<std::mutex> lock(mu_);
      run_cancelled_ = true;
      return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    }
    bytes_sent += static_cast<int64_t>(payloads[i].size());
    // Give a cancelling client time to be noticed between tensors.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  RunResponse summary;
  summary.mutable_summary()->set_bytes_sent(bytes_sent);
  summary.mutable_summary()->mutable_timings()->set_total_seconds(0.25);
  writer->Write(summary);
  return grpc::Status::OK;
}

std::optional<std::string> FakeGlassboxService::last_authorization() const {
  std::lock_guard<std::mutex> lock(mu_);
  return authorization_;
}

glassbox::v1::RunRequest FakeGlassboxService::last_run_request() const {
  std::lock_guard<std::mutex> lock(mu_);
  return run_request_;
}

glassbox::v1::TokenizeRequest FakeGlassboxService::last_tokenize_request() const {
  std::lock_guard<std::mutex> lock(mu_);
  return tokenize_request_;
}

glassbox::v1::PatchingSweepRequest FakeGlassboxService::last_patching_request() const {
  std::lock_guard<std::mutex> lock(mu_);
  return patching_request_;
}

glassbox::v1::DirectLogitAttributionRequest FakeGlassboxService::last_dla_request() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dla_request_;
}

grpc::Status FakeGlassboxService::PatchingSweep(grpc::ServerContext* context,
                                                const glassbox::v1::PatchingSweepRequest* request,
                                                glassbox::v1::PatchingSweepResponse* response) {
  Record(context);
  {
    std::lock_guard<std::mutex> lock(mu_);
    patching_request_ = *request;
  }
  if (request->model() != "tiny" && request->model() != "malformed") {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("no model \"", request->model(), "\""));
  }
  int64_t pos = 1;
  if (request->clean().token_ids_size() > 0) pos = request->clean().token_ids(0).ids_size();
  if (request->clean().texts_size() > 0) pos = static_cast<int64_t>(request->clean().texts(0).size());
  for (glassbox::v1::Array* array : {response->mutable_values(), response->mutable_normalized()}) {
    array->add_shape(2);
    array->add_shape(pos);
    array->add_dim_names("layer");
    array->add_dim_names("pos");
  }
  for (int64_t l = 0; l < 2; ++l) {
    for (int64_t p = 0; p < pos; ++p) {
      response->mutable_values()->add_values(static_cast<float>(l * 10 + p));
      response->mutable_normalized()->add_values(static_cast<float>(l * 10 + p) / 10);
    }
  }
  if (request->model() == "malformed") response->mutable_normalized()->add_values(0);
  response->set_clean_metric(1.5);
  response->set_corrupted_metric(-0.5);
  response->set_forward_passes(4);
  response->set_seconds(0.01);
  return grpc::Status::OK;
}

grpc::Status FakeGlassboxService::DirectLogitAttribution(
    grpc::ServerContext* context, const glassbox::v1::DirectLogitAttributionRequest* request,
    glassbox::v1::DirectLogitAttributionResponse* response) {
  Record(context);
  {
    std::lock_guard<std::mutex> lock(mu_);
    dla_request_ = *request;
  }
  if (request->model() != "tiny" && request->model() != "malformed") {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("no model \"", request->model(), "\""));
  }
  const int64_t batch = request->inputs().texts_size() + request->inputs().token_ids_size();
  const std::vector<std::string> labels = {"embed", "pos_embed", "L0H0", "L0H1", "L0.attn_bias",
                                           "L0.mlp_out"};
  const std::vector<float> base = {0.1f, -3.0f, 2.0f, 0.5f, -0.2f, 1.0f};
  for (const std::string& label : labels) response->add_labels(label);
  glassbox::v1::Array* attributions = response->mutable_attributions();
  attributions->add_shape(static_cast<int64_t>(labels.size()));
  attributions->add_shape(batch);
  std::vector<float> sums(batch, 0.25f);
  for (size_t c = 0; c < labels.size(); ++c) {
    for (int64_t b = 0; b < batch; ++b) {
      attributions->add_values(base[c] + static_cast<float>(b));
      sums[b] += base[c] + static_cast<float>(b);
    }
  }
  response->mutable_logit()->add_shape(batch);
  response->mutable_constant()->add_shape(batch);
  for (int64_t b = 0; b < batch; ++b) {
    response->mutable_logit()->add_values(sums[b]);
    response->mutable_constant()->add_values(0.25f);
  }
  if (request->model() == "malformed") response->mutable_labels()->RemoveLast();
  return grpc::Status::OK;
}

namespace {

using glassbox::v1::JobInfo;

JobInfo Job(const std::string& id, glassbox::v1::JobState state, int32_t pass,
            int64_t tokens_done) {
  JobInfo info;
  info.set_job_id(id);
  info.set_model("tiny");
  info.set_state(state);
  info.set_current_pass(pass);
  info.set_passes(2);
  info.set_contexts_done((tokens_done / 8) % 4);
  info.set_contexts_total(4);
  info.set_tokens_done(tokens_done);
  info.set_tokens_total(64);
  info.set_targets(3);
  if (state == glassbox::v1::JOB_RUNNING && tokens_done > 0) {
    info.set_tokens_per_second(32);
    info.set_eta_seconds(static_cast<double>(64 - tokens_done) / 32);
  }
  info.set_elapsed_seconds(tokens_done / 32.0);
  info.set_created_unix_seconds(1700000000);
  return info;
}

glassbox::v1::ScanRecord MakeRecord(int64_t context, int32_t position, float value,
                                    std::vector<int32_t> tokens, std::vector<std::string> strings) {
  glassbox::v1::ScanRecord record;
  record.set_context(context);
  record.set_position(position);
  record.set_value(value);
  record.set_window_start(1);
  record.mutable_tokens()->Add(tokens.begin(), tokens.end());
  for (const std::string& s : strings) record.add_token_strings(s);
  for (size_t i = 0; i < tokens.size(); ++i) {
    record.add_activations(static_cast<int>(i) + 1 == position ? value : 0.5f);
  }
  return record;
}

grpc::Status NoJob(const std::string& id) {
  return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("no job \"", id, "\""));
}

}  // namespace

glassbox::v1::StartScanRequest FakeGlassboxService::last_scan_request() const {
  std::lock_guard<std::mutex> lock(mu_);
  return scan_request_;
}

grpc::Status FakeGlassboxService::StartScan(grpc::ServerContext* context,
                                            const glassbox::v1::StartScanRequest* request,
                                            JobInfo* response) {
  Record(context);
  {
    std::lock_guard<std::mutex> lock(mu_);
    scan_request_ = *request;
  }
  const std::string& model = request->model();
  if (model == "missing") return grpc::Status(grpc::StatusCode::NOT_FOUND, "no model \"missing\"");
  const std::string id = model == "failing"       ? "scan-failed"
                         : model == "cancelled"   ? "scan-cancelled"
                         : model == "unwatchable" ? "malformed"
                                                  : "scan-1";
  *response = Job(id, glassbox::v1::JOB_QUEUED, 1, 0);
  response->set_model(model);
  int64_t targets = 0;
  for (const auto& target : request->targets()) targets += target.neurons().indices_size();
  response->set_targets(targets);
  return grpc::Status::OK;
}

grpc::Status FakeGlassboxService::WatchJob(grpc::ServerContext* context,
                                           const glassbox::v1::WatchJobRequest* request,
                                           grpc::ServerWriter<JobInfo>* writer) {
  Record(context);
  const std::string& id = request->job_id();
  std::vector<JobInfo> updates;
  if (id == "scan-1") {
    updates = {Job(id, glassbox::v1::JOB_QUEUED, 1, 0), Job(id, glassbox::v1::JOB_RUNNING, 1, 16),
               Job(id, glassbox::v1::JOB_RUNNING, 1, 32), Job(id, glassbox::v1::JOB_RUNNING, 2, 48),
               Job(id, glassbox::v1::JOB_SUCCEEDED, 2, 64)};
    updates.back().set_elapsed_seconds(1.5);
  } else if (id == "scan-failed") {
    updates = {Job(id, glassbox::v1::JOB_RUNNING, 1, 16), Job(id, glassbox::v1::JOB_FAILED, 1, 16)};
    updates.back().set_error("out of device memory");
  } else if (id == "scan-cancelled") {
    updates = {Job(id, glassbox::v1::JOB_RUNNING, 1, 16),
               Job(id, glassbox::v1::JOB_CANCELLED, 1, 24)};
  } else if (id == "malformed") {
    updates = {Job(id, glassbox::v1::JOB_RUNNING, 1, 16)};
  } else {
    return NoJob(id);
  }
  for (const JobInfo& info : updates) {
    if (!writer->Write(info)) return grpc::Status(grpc::StatusCode::CANCELLED, "gone");
  }
  return grpc::Status::OK;
}

grpc::Status FakeGlassboxService::CancelJob(grpc::ServerContext* context,
                                            const glassbox::v1::CancelJobRequest* request,
                                            JobInfo* response) {
  Record(context);
  const std::string& id = request->job_id();
  if (id == "scan-1") {
    *response = Job(id, glassbox::v1::JOB_CANCELLED, 1, 16);
  } else if (id == "scan-done") {
    *response = Job(id, glassbox::v1::JOB_SUCCEEDED, 2, 64);
  } else if (id == "scan-running") {
    *response = Job(id, glassbox::v1::JOB_RUNNING, 1, 16);
  } else {
    return NoJob(id);
  }
  return grpc::Status::OK;
}

grpc::Status FakeGlassboxService::ListJobs(grpc::ServerContext* context,
                                           const glassbox::v1::ListJobsRequest*,
                                           glassbox::v1::ListJobsResponse* response) {
  Record(context);
  *response->add_jobs() = Job("scan-1", glassbox::v1::JOB_SUCCEEDED, 2, 64);
  JobInfo& failed = *response->add_jobs() = Job("scan-2", glassbox::v1::JOB_FAILED, 1, 0);
  failed.set_error("corpus line 3 is not UTF-8");
  return grpc::Status::OK;
}

grpc::Status FakeGlassboxService::GetScanResults(grpc::ServerContext* context,
                                                 const glassbox::v1::GetScanResultsRequest* request,
                                                 glassbox::v1::ScanResults* response) {
  Record(context);
  const std::string& id = request->job_id();
  if (id == "scan-running") {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "job \"scan-running\" is JOB_RUNNING; results exist once it has succeeded");
  }
  if (id != "scan-1" && id != "malformed") return NoJob(id);
  *response->mutable_job() = Job(id, glassbox::v1::JOB_SUCCEEDED, 2, 64);
  response->set_targets_total(3);
  const int64_t limit = request->target_limit() > 0 ? request->target_limit() : 64;
  for (int64_t t = request->target_offset();
       t < std::min<int64_t>(3, request->target_offset() + limit); ++t) {
    glassbox::v1::ScanTargetResult& target = *response->add_targets();
    target.set_index(t);
    target.set_kind("neuron");
    target.set_hook("blocks.0.hook_resid_post");
    target.set_unit(static_cast<int32_t>(t));
    target.set_name(absl::StrCat("blocks.0.hook_resid_post[", t, "]"));
    glassbox::v1::ScanTargetStats& stats = *target.mutable_stats();
    stats.set_count(60);
    stats.set_mean(0.25 + t);
    stats.set_variance(0.5);
    stats.set_max(3.5f);
    stats.set_min(-1);
    stats.set_firing_frequency(0.125);
    stats.set_nonzero(30);
    *target.add_top() = MakeRecord(2, 2, 3.5f, {84, 99, 115}, {"The", " cat", " sat\n"});
    *target.add_top() = MakeRecord(0, 3, 1.25f, {5, 6, 7}, {});
    glassbox::v1::ScanLogit& up = *target.add_top_logits();
    up.set_token(99);
    up.set_token_string(" cat");
    up.set_value(0.75f);
    glassbox::v1::ScanLogit& down = *target.add_bottom_logits();
    down.set_token(7);
    down.set_value(-0.5f);
  }
  if (id == "malformed" && !response->targets().empty()) {
    response->mutable_targets(0)->mutable_top(0)->mutable_activations()->RemoveLast();
  }
  return grpc::Status::OK;
}

bool FakeGlassboxService::last_run_cancelled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return run_cancelled_;
}

void FakeGlassboxService::set_script(std::vector<RunResponse> script) {
  std::lock_guard<std::mutex> lock(mu_);
  script_ = std::move(script);
}

FakeServer::FakeServer() {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
  builder.RegisterService(&service_);
  server_ = builder.BuildAndStart();
}

FakeServer::~FakeServer() {
  if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
}

std::string FakeServer::address() const { return absl::StrCat("127.0.0.1:", port_); }

}  // namespace glassbox::testing
