#include "server/service/glassbox_service.h"

#include <chrono>
#include <climits>

#include "absl/strings/str_cat.h"
#include "server/service/job_stream.h"
#include "server/service/run_job.h"
#include "server/service/status_util.h"

namespace glassbox {
namespace {

using namespace std::chrono_literals;

void FillModelInfo(const ServedModel& served, bool with_hooks, glassbox::v1::ModelInfo* info) {
  const ModelConfig& c = served.model->config();
  info->set_name(served.name);
  info->set_architecture(c.model_type);
  info->set_n_layers(c.n_layers);
  info->set_d_model(c.d_model);
  info->set_n_heads(c.n_heads);
  info->set_n_kv_heads(c.n_kv_heads);
  info->set_d_head(c.d_head);
  info->set_d_mlp(c.d_mlp);
  info->set_vocab_size(c.vocab_size);
  info->set_n_ctx(c.n_ctx);
  info->set_dtype(ToProtoDType(served.model->dtype()));
  info->set_device(served.device);
  info->set_has_tokenizer(served.tokenizer != nullptr);
  info->set_parallel_attn_mlp(c.parallel_attn_mlp);
  if (c.positional == PositionalKind::kRotary) {
    info->set_rotary_dim(c.rotary_dim);
    info->set_rotary_adjacent_pairs(c.rotary_adjacent_pairs);
    info->set_rope_theta(c.rope_theta);
    info->set_rope_local_theta(c.rope_local_theta);
  }
  info->set_unembed_bias(c.unembed_bias);
  info->set_attn_softcap(c.attn_softcap);
  info->set_final_softcap(c.final_softcap);
  if (c.sliding_window > 0) {
    for (int layer = 0; layer < c.n_layers; ++layer) info->add_attention_windows(c.WindowOf(layer));
  }
  if (!with_hooks) return;
  for (const HookInfo& hook : served.model->hooks().hooks()) {
    auto* point = info->add_hook_points();
    point->set_name(hook.name);
    point->set_layer(hook.layer);
    for (size_t i = 0; i < hook.dims.size(); ++i) {
      auto* dim = point->add_dims();
      dim->set_name(hook.dim_names[i]);
      dim->set_size(hook.dims[i].symbol == HookDim::Symbol::kFixed ? hook.dims[i].size : 0);
    }
  }
}

absl::StatusOr<const Tokenizer*> TokenizerOf(const ServedModel& served) {
  if (served.tokenizer) return served.tokenizer.get();
  return absl::FailedPreconditionError(absl::StrCat("model \"", served.name, "\" has no tokenizer (",
                                                    served.directory, " has no tokenizer.json or vocab.json)"));
}

}  // namespace

grpc::Status GlassboxService::ListModels(grpc::ServerContext* context,
                                         const glassbox::v1::ListModelsRequest*,
                                         glassbox::v1::ListModelsResponse* response) {
  auto caller = Admit(context, CallKind::kHost);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  for (const auto& [name, served] : store_.models()) FillModelInfo(*served, false, response->add_models());
  return grpc::Status::OK;
}

grpc::Status GlassboxService::GetModelInfo(grpc::ServerContext* context,
                                           const glassbox::v1::GetModelInfoRequest* request,
                                           glassbox::v1::ModelInfo* response) {
  auto caller = Admit(context, CallKind::kHost);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  auto served = store_.Find(request->model());
  if (!served.ok()) return ToGrpcStatus(served.status());
  FillModelInfo(**served, true, response);
  return grpc::Status::OK;
}

grpc::Status GlassboxService::Tokenize(grpc::ServerContext* context,
                                       const glassbox::v1::TokenizeRequest* request,
                                       glassbox::v1::TokenizeResponse* response) {
  auto caller = Admit(context, CallKind::kHost);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  auto served = store_.Find(request->model());
  if (!served.ok()) return ToGrpcStatus(served.status());
  auto tokenizer = TokenizerOf(**served);
  if (!tokenizer.ok()) return ToGrpcStatus(tokenizer.status());
  EncodeOptions options{.split_special_tokens = request->split_special_tokens()};
  if (request->has_prepend_bos()) options.add_special_tokens = request->prepend_bos();
  auto ids = (*tokenizer)->Encode(request->text(), options);
  if (!ids.ok()) return ToGrpcStatus(ids.status());
  auto pieces = (*tokenizer)->ToStrTokens(*ids);
  if (!pieces.ok()) return ToGrpcStatus(pieces.status());
  response->mutable_ids()->Add(ids->begin(), ids->end());
  for (std::string& piece : *pieces) response->add_str_tokens(std::move(piece));
  return grpc::Status::OK;
}

grpc::Status GlassboxService::Detokenize(grpc::ServerContext* context,
                                         const glassbox::v1::DetokenizeRequest* request,
                                         glassbox::v1::DetokenizeResponse* response) {
  auto caller = Admit(context, CallKind::kHost);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  auto served = store_.Find(request->model());
  if (!served.ok()) return ToGrpcStatus(served.status());
  auto tokenizer = TokenizerOf(**served);
  if (!tokenizer.ok()) return ToGrpcStatus(tokenizer.status());
  const std::vector<int32_t> ids(request->ids().begin(), request->ids().end());
  auto text = (*tokenizer)->Decode(ids, request->skip_special_tokens());
  if (!text.ok()) return ToGrpcStatus(text.status());
  auto pieces = (*tokenizer)->ToStrTokens(ids);
  if (!pieces.ok()) return ToGrpcStatus(pieces.status());
  response->set_text(*std::move(text));
  for (std::string& piece : *pieces) response->add_str_tokens(std::move(piece));
  return grpc::Status::OK;
}

grpc::ServerWriteReactor<glassbox::v1::RunResponse>* GlassboxService::Run(
    grpc::CallbackServerContext* context, const glassbox::v1::RunRequest* request) {
  using Response = glassbox::v1::RunResponse;
  const auto start = std::chrono::steady_clock::now();
  if (draining_) return Refuse<Response>(absl::UnavailableError("the server is shutting down"));
  auto admitted = Admit(context, CallKind::kDevice);
  if (!admitted.ok()) return Refuse<Response>(admitted.status());
  // The caller's run slot is held until the stream ends: the summary (kept by the stream) owns it.
  auto caller = std::make_shared<const Caller>(*std::move(admitted));
  auto stream = streams_.Acquire();
  if (!stream.ok()) return Refuse<Response>(stream.status());
  const CacheAccess& cache = caller->cache();
  auto plan = BuildRunPlan(*request, store_, caller->limits(), cache);
  if (!plan.ok()) return Refuse<Response>(plan.status());
  if (absl::Status charged = caller->ChargeTokens(plan->tokens.numel()); !charged.ok()) {
    return Refuse<Response>(charged);
  }

  const int64_t rows = static_cast<int64_t>(plan->rows.size());
  const int64_t padded = plan->tokens.dim(1);
  TaskInfo task{.owner = cache.owner, .rpc = "Run", .model = request->model(),
                .tokens = plan->tokens.numel(), .memory_bytes = EstimateRunBytes(*plan),
                .batch_key = RunBatchKey(*plan), .rows = rows, .padded_length = padded};
  Response header_message;
  auto* header = header_message.mutable_header();
  header->set_model(request->model());
  for (size_t r = 0; r < plan->rows.size(); ++r) {
    header->add_sequence_lengths(plan->lengths[r]);
    header->add_tokens()->mutable_ids()->Add(plan->rows[r].begin(), plan->rows[r].end());
  }
  for (size_t i = 0; i < plan->tensors.size(); ++i) {
    const OutputTensorInfo& t = plan->tensors[i];
    auto* info = header->add_tensors();
    info->set_id(static_cast<int32_t>(i));
    info->set_name(t.name);
    info->mutable_shape()->Add(t.shape.begin(), t.shape.end());
    for (const std::string& d : t.dim_names) info->add_dim_names(d);
    info->set_dtype(ToProtoDType(t.dtype));
    info->set_nbytes(t.nbytes());
  }

  auto job = std::make_shared<RunJob>(std::move(task), *std::move(plan),
                                      limits_.stream_buffer_bytes, limits_.stream_stall);
  // The stream and its summary share this: bytes counted as they are written.
  auto bytes_sent = std::make_shared<int64_t>(0);
  auto summarize = [this, context, job, bytes_sent, start, caller,
                    model = request->model()]() -> absl::StatusOr<Response> {
    Response summary_message;
    auto* summary = summary_message.mutable_summary();
    if (job->plan().keep) {
      auto kept = StoreKept(job->plan(), caller->cache(), job->TakeKept());
      if (!kept.ok()) return kept.status();
      *summary->mutable_kept() = *std::move(kept);
    }
    summary->set_bytes_sent(*bytes_sent);
    metrics_.Annotate(context, [&](RequestRecord& r) {
      r.model = model;
      r.tokens = job->plan().tokens.numel();
      r.queue_seconds = job->queue_seconds();
      r.run_seconds = job->forward_seconds();
      r.bytes = *bytes_sent;
      r.batch_requests = job->batch_requests();
    });
    auto* timings = summary->mutable_timings();
    timings->set_queue_seconds(job->queue_seconds());
    timings->set_forward_seconds(job->forward_seconds());
    timings->set_batch_requests(job->batch_requests());
    timings->set_total_seconds(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return summary_message;
  };
  auto* reactor = new JobStream<Response>(
      context, job, *std::move(stream), "the run", std::move(summarize),
      [bytes_sent](const Response& item) { *bytes_sent += std::ssize(item.chunk().data()); });
  auto position = RunJob::Submit(scheduler_, job);
  if (!position.ok()) {
    reactor->Refuse(position.status());
    return reactor;
  }
  header->set_queue_position(static_cast<int32_t>(std::min<int64_t>(*position, INT32_MAX)));
  reactor->Begin(std::move(header_message));
  return reactor;
}

}  // namespace glassbox

namespace glassbox {

grpc::Status GlassboxService::ListCachedRuns(grpc::ServerContext* context,
                                             const glassbox::v1::ListCachedRunsRequest*,
                                             glassbox::v1::ListCachedRunsResponse* response) {
  auto caller = Admit(context, CallKind::kHost);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  const CacheAccess& cache = caller->cache();
  for (const auto& run : cache.admin ? run_cache_.ListAll() : run_cache_.List(cache.owner))
    FillCachedRunInfo(*run, response->add_runs());
  response->set_used_bytes(run_cache_.UsageOf(cache.owner).bytes);
  response->set_max_bytes(run_cache_.MaxBytesFor(cache.quota_bytes));
  response->set_max_entries(run_cache_.limits().max_entries);
  return grpc::Status::OK;
}

grpc::Status GlassboxService::ReleaseCachedRun(grpc::ServerContext* context,
                                               const glassbox::v1::ReleaseCachedRunRequest* request,
                                               glassbox::v1::ReleaseCachedRunResponse* response) {
  auto caller = Admit(context, CallKind::kHost);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  const auto [owner, name] = caller->cache().Locate(request->name());
  auto released = run_cache_.Release(owner, name);
  if (!released.ok()) return ToGrpcStatus(released.status());
  response->set_released_bytes(*released);
  return grpc::Status::OK;
}

}  // namespace glassbox
