// The analysis RPCs: translate the request, run the engine's analysis on the device's
// scheduler, and return its arrays.
#include <chrono>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/engine/analyses.h"
#include "server/engine/attribution_patching.h"
#include "server/engine/gradients.h"
#include "server/engine/patching.h"
#include "server/engine/sae/feature_gradient.h"
#include "server/service/array_proto.h"
#include "server/service/glassbox_service.h"
#include "server/service/status_util.h"

namespace glassbox {
namespace {

namespace pb = ::glassbox::v1;

absl::StatusOr<SweepKind> FromProtoSweep(pb::SweepKind kind) {
  switch (kind) {
    case pb::SWEEP_RESID_PRE:
      return SweepKind::kResidPre;
    case pb::SWEEP_RESID_MID:
      return SweepKind::kResidMid;
    case pb::SWEEP_RESID_POST:
      return SweepKind::kResidPost;
    case pb::SWEEP_ATTN_OUT:
      return SweepKind::kAttnOut;
    case pb::SWEEP_MLP_OUT:
      return SweepKind::kMlpOut;
    case pb::SWEEP_HEAD_OUT_ALL_POS:
      return SweepKind::kHeadOutAllPos;
    case pb::SWEEP_HEAD_OUT_BY_POS:
      return SweepKind::kHeadOutByPos;
    case pb::SWEEP_Q_ALL_POS:
      return SweepKind::kQAllPos;
    case pb::SWEEP_K_ALL_POS:
      return SweepKind::kKAllPos;
    case pb::SWEEP_V_ALL_POS:
      return SweepKind::kVAllPos;
    case pb::SWEEP_ATTN_HEAD_PATTERN_ALL_POS:
      return SweepKind::kPatternAllPos;
    case pb::SWEEP_MLP_POST_ALL_POS:
      return SweepKind::kMlpPostAllPos;
    default:
      return absl::InvalidArgumentError(
          "set kind: which activation to sweep (SWEEP_RESID_PRE, ...)");
  }
}

// Clean and corrupted batches for a sweep: same number of rows, every row the same length.
absl::Status CheckPairs(const Batch& clean, const Batch& corrupted) {
  if (clean.tokens.shape() != corrupted.tokens.shape()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "clean and corrupted inputs must have the same shape; got ",
        ShapeToString(clean.tokens.shape()), " and ", ShapeToString(corrupted.tokens.shape())));
  }
  for (const Batch* b : {&clean, &corrupted}) {
    for (int32_t len : b->lengths) {
      if (len != b->tokens.dim(1)) {
        return absl::InvalidArgumentError(
            "patching compares positions across prompts: every clean and corrupted row must have "
            "the same number of tokens");
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status GlassboxService::OnDevice(const grpc::ServerContext* context, const Caller& caller,
                                       std::string rpc, std::string model, int64_t tokens,
                                       const std::function<absl::Status()>& work) {
  if (draining_) return absl::UnavailableError("the server is shutting down");
  metrics_.Annotate(context, [&](RequestRecord& r) {
    r.model = model;
    r.tokens = tokens;
  });
  const auto queued_at = std::chrono::steady_clock::now();
  double queue_seconds = 0, run_seconds = 0;
  absl::Status status = RunOnWorker(
      scheduler_,
      {.owner = caller.cache().owner,
       .rpc = std::move(rpc),
       .model = std::move(model),
       .tokens = tokens},
      [&] {
        const auto start = std::chrono::steady_clock::now();
        queue_seconds = std::chrono::duration<double>(start - queued_at).count();
        absl::Status done = work();
        run_seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        return done;
      });
  metrics_.Annotate(context, [&](RequestRecord& r) {
    r.queue_seconds = queue_seconds;
    r.run_seconds = run_seconds;
    r.batch_requests = 1;
  });
  return status;
}

grpc::Status GlassboxService::PatchingSweep(grpc::ServerContext* context,
                                            const pb::PatchingSweepRequest* request,
                                            pb::PatchingSweepResponse* response) {
  const auto start = std::chrono::steady_clock::now();
  auto caller = Admit(context, CallKind::kDevice);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  const ServiceLimits& limits = caller->limits();
  auto served = store_.Find(request->model());
  if (!served.ok()) return ToGrpcStatus(served.status());
  auto clean = BuildBatch(request->clean(), **served, limits);
  if (!clean.ok())
    return ToGrpcStatus(
        absl::Status(clean.status().code(), absl::StrCat("clean: ", clean.status().message())));
  auto corrupted = BuildBatch(request->corrupted(), **served, limits);
  if (!corrupted.ok()) {
    return ToGrpcStatus(absl::Status(corrupted.status().code(),
                                     absl::StrCat("corrupted: ", corrupted.status().message())));
  }
  if (absl::Status s = CheckPairs(*clean, *corrupted); !s.ok()) return ToGrpcStatus(s);
  // An SAE's features are a sweep of their own: attribution patching with the SAE spliced in.
  const bool sae_features = request->kind() == pb::SWEEP_SAE_FEATURES;
  const ServedSae* sae = nullptr;
  if (sae_features) {
    if (request->method() != pb::PATCHING_ATTRIBUTION)
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "SWEEP_SAE_FEATURES is estimated by attribution patching only (an exact "
                          "sweep would run each position and feature alone): set method "
                          "PATCHING_ATTRIBUTION");
    auto found = store_.FindSae(request->sae());
    if (!found.ok()) return ToGrpcStatus(found.status());
    sae = *found;
    if (sae->served_model != *served)
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("SAE \"", request->sae(), "\" reads model \"",
                                       sae->served_model->name, "\", not this one"));
    const int64_t bytes = 2 * clean->tokens.dim(1) * sae->sae->d_sae() * 4;
    if (absl::Status fits =
            limits.CheckResponseBytes(bytes, "the feature map", "send fewer positions");
        !fits.ok())
      return ToGrpcStatus(fits);
  } else if (!request->sae().empty()) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        "sae names the SAE of a SWEEP_SAE_FEATURES sweep; this sweep is another kind");
  }
  auto kind = sae_features ? absl::StatusOr<SweepKind>(SweepKind::kResidPre)
                           : FromProtoSweep(request->kind());
  if (!kind.ok()) return ToGrpcStatus(kind.status());
  PatchingMetric metric{.token_a = request->metric().token_a(),
                        .token_b = request->metric().token_b()};
  switch (request->metric().kind()) {
    case pb::PatchingMetric::LOGIT_DIFF:
      metric.kind = PatchingMetric::Kind::kLogitDiff;
      break;
    case pb::PatchingMetric::LOG_PROB:
      metric.kind = PatchingMetric::Kind::kLogProb;
      break;
    case pb::PatchingMetric::LOSS:
      metric.kind = PatchingMetric::Kind::kLoss;
      break;
    default:
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("metric.kind ", request->metric().kind(),
                                       " is unknown; use LOGIT_DIFF, LOG_PROB or LOSS"));
  }
  if (request->max_rows_per_pass() < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("max_rows_per_pass is ", request->max_rows_per_pass(),
                                     "; it must be >= 0 (0 = the server's choice)"));
  }
  const bool attribution = request->method() == pb::PATCHING_ATTRIBUTION;
  if (!attribution && request->method() != pb::PATCHING_EXACT) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("method ", request->method(),
                                     " is unknown; use PATCHING_EXACT or PATCHING_ATTRIBUTION"));
  }
  const ModelConfig& config = (*served)->model->config();
  const int64_t seq = clean->tokens.dim(1);
  int64_t rows = 0;
  // Counted as --max_tokens counts them: each input's padded batch once; attribution patching's
  // backward pass counts as two more passes over the corrupted batch.
  int64_t tokens = clean->tokens.numel() + corrupted->tokens.numel();
  if (attribution) {
    tokens += 2 * corrupted->tokens.numel();
  } else {
    // An exact sweep's cost grows with its cells: the server bounds them.
    const int64_t cells = SweepCells(config, *kind, seq);
    if (cells > limits.max_sweep_cells) {
      return grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrCat("the sweep patches ", cells, " cells (", pb::SweepKind_Name(request->kind()),
                       " over ", seq, " positions); this server allows ", limits.max_sweep_cells,
                       " (--max_sweep_cells): sweep fewer positions, heads over all positions, "
                       "or estimate the sweep with method PATCHING_ATTRIBUTION"));
    }
    // One pass holds at most the server's token budget.
    rows = request->max_rows_per_pass() > 0 ? request->max_rows_per_pass() : 256;
    rows = std::max<int64_t>(clean->tokens.dim(0),
                             std::min(rows, limits.max_tokens_per_request / seq));
  }
  if (absl::Status charged = caller->ChargeTokens(tokens); !charged.ok()) {
    return ToGrpcStatus(charged);
  }
  std::atomic<bool> cancelled{false};
  PatchingResult result;
  absl::Status status =
      OnDevice(context, *caller, "PatchingSweep", request->model(), tokens, [&]() -> absl::Status {
        if (context->IsCancelled()) return absl::CancelledError("cancelled while queued");
        const PatchingRequest sweep{.clean = clean->tokens,
                                    .corrupted = corrupted->tokens,
                                    .kind = *kind,
                                    .metric = metric,
                                    .max_rows_per_pass = rows,
                                    .cancelled = &cancelled};
        if (sae != nullptr) {
          GB_ASSIGN_OR_RETURN(result, RunSaeFeatureAttributionPatching(*(*served)->model, sweep,
                                                                       sae->hook, *sae->sae));
        } else if (attribution) {
          GB_ASSIGN_OR_RETURN(result, RunAttributionPatching(*(*served)->model, sweep));
        } else {
          GB_ASSIGN_OR_RETURN(result, RunPatchingSweep(*(*served)->model, sweep));
        }
        return absl::OkStatus();
      });
  if (!status.ok()) return ToGrpcStatus(status);
  ToArray(result.values, result.dim_names, response->mutable_values());
  ToArray(result.normalized, result.dim_names, response->mutable_normalized());
  response->set_clean_metric(result.clean_metric);
  response->set_corrupted_metric(result.corrupted_metric);
  response->set_forward_passes(result.forward_passes);
  response->set_backward_passes(result.backward_passes);
  response->set_seconds(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return grpc::Status::OK;
}

grpc::Status GlassboxService::LogitLens(grpc::ServerContext* context,
                                        const pb::LogitLensRequest* request,
                                        pb::LogitLensResponse* response) {
  auto caller = Admit(context, CallKind::kDevice);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  const ServiceLimits& limits = caller->limits();
  auto served = store_.Find(request->model());
  if (!served.ok()) return ToGrpcStatus(served.status());
  auto batch = BuildBatch(request->inputs(), **served, limits);
  if (!batch.ok()) return ToGrpcStatus(batch.status());
  const ModelConfig& c = (*served)->model->config();
  const int64_t top_k = request->top_k() != 0 ? request->top_k() : 5;
  if (top_k < 1 || top_k > c.vocab_size) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("top_k is ", request->top_k(), "; it must be in [1, ",
                                     c.vocab_size, "] (0 = 5)"));
  }
  // Per layer and token: k log-probs and k token ids, and one log-prob per target.
  const int64_t bytes =
      (c.n_layers + 1) * batch->tokens.numel() * (2 * top_k + request->target_tokens_size()) * 4;
  if (absl::Status fits = limits.CheckResponseBytes(bytes, "the logit lens",
                                                    "ask for a smaller top_k or fewer tokens");
      !fits.ok())
    return ToGrpcStatus(fits);
  if (absl::Status charged = caller->ChargeTokens(batch->tokens.numel()); !charged.ok()) {
    return ToGrpcStatus(charged);
  }
  LogitLensResult result;
  absl::Status status = OnDevice(
      context, *caller, "LogitLens", request->model(), batch->tokens.numel(),
      [&]() -> absl::Status {
        GB_ASSIGN_OR_RETURN(
            result,
            RunLogitLens(*(*served)->model, {.tokens = batch->tokens,
                                             .attention_mask = batch->attention_mask,
                                             .top_k = static_cast<int32_t>(top_k),
                                             .target_tokens = {request->target_tokens().begin(),
                                                               request->target_tokens().end()}}));
        return absl::OkStatus();
      });
  if (!status.ok()) return ToGrpcStatus(status);
  for (const std::string& label : result.labels) response->add_labels(label);
  const std::vector<std::string> dims = {"layer", "batch", "pos", "k"};
  ToArray(result.top_log_probs, dims, response->mutable_top_log_probs());
  ToArray(result.top_tokens, dims, response->mutable_top_tokens());
  ToArray(result.target_log_probs, {"layer", "batch", "pos", "target"},
          response->mutable_target_log_probs());
  return grpc::Status::OK;
}

grpc::Status GlassboxService::DirectLogitAttribution(
    grpc::ServerContext* context, const pb::DirectLogitAttributionRequest* request,
    pb::DirectLogitAttributionResponse* response) {
  auto caller = Admit(context, CallKind::kDevice);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  const ServiceLimits& limits = caller->limits();
  auto served = store_.Find(request->model());
  if (!served.ok()) return ToGrpcStatus(served.status());
  auto batch = BuildBatch(request->inputs(), **served, limits);
  if (!batch.ok()) return ToGrpcStatus(batch.status());
  if (absl::Status charged = caller->ChargeTokens(batch->tokens.numel()); !charged.ok()) {
    return ToGrpcStatus(charged);
  }
  DlaRequest dla{.tokens = batch->tokens,
                 .attention_mask = batch->attention_mask,
                 .position = request->has_position() ? request->position() : -1,
                 .token = request->token()};
  if (request->has_minus_token()) dla.minus_token = request->minus_token();
  DlaResult result;
  absl::Status status =
      OnDevice(context, *caller, "DirectLogitAttribution", request->model(), batch->tokens.numel(),
               [&]() -> absl::Status {
                 GB_ASSIGN_OR_RETURN(result, RunDirectLogitAttribution(*(*served)->model, dla));
                 return absl::OkStatus();
               });
  if (!status.ok()) return ToGrpcStatus(status);
  for (const std::string& label : result.labels) response->add_labels(label);
  ToArray(result.attributions, {"component", "batch"}, response->mutable_attributions());
  ToArray(result.logit, {"batch"}, response->mutable_logit());
  ToArray(result.residual_constant, {"batch"}, response->mutable_constant());
  return grpc::Status::OK;
}

grpc::Status GlassboxService::AttentionNorms(grpc::ServerContext* context,
                                             const pb::AttentionNormsRequest* request,
                                             pb::AttentionNormsResponse* response) {
  auto caller = Admit(context, CallKind::kDevice);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  const ServiceLimits& limits = caller->limits();
  auto served = store_.Find(request->model());
  if (!served.ok()) return ToGrpcStatus(served.status());
  auto batch = BuildBatch(request->inputs(), **served, limits);
  if (!batch.ok()) return ToGrpcStatus(batch.status());
  const ModelConfig& c = (*served)->model->config();
  const int64_t seq = batch->tokens.dim(1);
  const int64_t layers = request->layers_size() > 0 ? request->layers_size() : c.n_layers;
  const int64_t bytes = layers * batch->tokens.dim(0) * (2 * c.n_heads + 1) * seq * seq * 4;
  if (absl::Status fits =
          limits.CheckResponseBytes(bytes, "the attention norms", "ask for fewer layers");
      !fits.ok())
    return ToGrpcStatus(fits);
  if (absl::Status charged = caller->ChargeTokens(batch->tokens.numel()); !charged.ok()) {
    return ToGrpcStatus(charged);
  }
  std::vector<AttentionNormsLayer> result;
  absl::Status status = OnDevice(
      context, *caller, "AttentionNorms", request->model(), batch->tokens.numel(),
      [&]() -> absl::Status {
        GB_ASSIGN_OR_RETURN(
            result, RunAttentionNorms(*(*served)->model, {.tokens = batch->tokens,
                                                          .attention_mask = batch->attention_mask,
                                                          .layers = {request->layers().begin(),
                                                                     request->layers().end()}}));
        return absl::OkStatus();
      });
  if (!status.ok()) return ToGrpcStatus(status);
  const std::vector<std::string> head_dims = {"batch", "head", "query_pos", "key_pos"};
  for (const AttentionNormsLayer& layer : result) {
    auto* out = response->add_layers();
    out->set_layer(layer.layer);
    ToArray(layer.weights, head_dims, out->mutable_weights());
    ToArray(layer.head_norms, head_dims, out->mutable_head_norms());
    ToArray(layer.layer_norms, {"batch", "query_pos", "key_pos"}, out->mutable_layer_norms());
  }
  return grpc::Status::OK;
}

}  // namespace glassbox
