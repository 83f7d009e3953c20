// The SAE RPCs: list the SAEs the server holds, encode a model's activations at an SAE's hook,
// decode feature activations. Splicing and steering are part of Run (run_plan_sae.cc).
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/engine/sae_encode.h"
#include "server/service/glassbox_service.h"
#include "server/service/status_util.h"

namespace glassbox {
namespace {

namespace pb = ::glassbox::v1;

void FillSaeInfo(const ServedSae& served, pb::SaeInfo* info) {
  const SaeConfig& c = served.sae->config();
  info->set_name(served.name);
  info->set_model(served.served_model->name);
  info->set_hook(served.hook_name);
  info->set_architecture(std::string(SaeArchitectureName(c.architecture)));
  info->set_d_in(c.d_in);
  info->set_d_sae(c.d_sae);
  info->set_normalization(std::string(SaeNormalizationName(c.normalization)));
  info->set_dtype(c.dtype);
  info->set_apply_b_dec_to_input(c.apply_b_dec_to_input);
  info->set_reshape_hook_z(c.reshape_hook_z);
  info->set_k(c.k);
  info->set_rescale_acts_by_decoder_norm(c.rescale_acts_by_decoder_norm);
  info->set_path(served.path);
  info->set_neuronpedia_id(c.neuronpedia_id);
  info->set_sae_lens_version(c.sae_lens_version);
  info->set_metadata_json(c.metadata_json);
  for (const std::string& w : c.warnings) info->add_warnings(w);
  info->set_resident_bytes(served.sae->ResidentBytes());
}

void FillStats(const SaeReconstructionStats& s, pb::SaeReconstructionStats* out) {
  out->set_tokens(s.tokens);
  out->set_mse(s.mse);
  out->set_mean_squared_error_norm(s.mean_squared_error_norm);
  out->set_explained_variance(s.explained_variance);
  out->set_mean_l0(s.mean_l0);
}

// The request's activations as CSR rows or a dense [n, d_sae] tensor (exactly one is set).
absl::Status ReadDecodeInput(const pb::SaeDecodeRequest& request, int64_t d_sae, SparseActs& sparse,
                             Tensor& dense) {
  const bool has_sparse = request.offsets_size() > 0, has_dense = request.dense_size() > 0;
  if (has_sparse == has_dense) {
    return absl::InvalidArgumentError(
        "give the activations either sparse (offsets, indices, values) or dense");
  }
  if (has_dense) {
    if (request.dense_size() % d_sae != 0) {
      return absl::InvalidArgumentError(absl::StrCat("dense has ", request.dense_size(),
                                                     " values, not a multiple of d_sae = ", d_sae));
    }
    for (int i = 0; i < request.dense_size(); ++i) {
      if (!std::isfinite(request.dense(i))) {
        return absl::InvalidArgumentError(absl::StrCat("dense[", i, "] is not finite"));
      }
    }
    const int64_t n = request.dense_size() / d_sae;
    dense = Tensor::FromHost(std::span<const float>(request.dense().data(), request.dense_size()),
                             {n, d_sae});
    return absl::OkStatus();
  }
  const int64_t nnz = request.indices_size();
  if (request.values_size() != nnz || request.offsets(0) != 0 ||
      request.offsets(request.offsets_size() - 1) != nnz) {
    return absl::InvalidArgumentError(
        "sparse activations need as many values as indices, offsets starting at 0 and ending at "
        "the number of indices");
  }
  for (int i = 1; i < request.offsets_size(); ++i) {
    if (request.offsets(i) < request.offsets(i - 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("offsets must not decrease (offsets[", i, "])"));
    }
  }
  for (int i = 0; i < nnz; ++i) {
    if (request.indices(i) < 0 || request.indices(i) >= d_sae) {
      return absl::InvalidArgumentError(
          absl::StrCat("feature index ", request.indices(i), " is outside [0, ", d_sae, ")"));
    }
  }
  for (int i = 0; i < nnz; ++i) {
    if (!std::isfinite(request.values(i))) {
      return absl::InvalidArgumentError(absl::StrCat("values[", i, "] is not finite"));
    }
  }
  sparse.d_sae = d_sae;
  sparse.row_offsets.assign(request.offsets().begin(), request.offsets().end());
  sparse.leading_shape = {sparse.rows()};
  sparse.indices.assign(request.indices().begin(), request.indices().end());
  sparse.values.assign(request.values().begin(), request.values().end());
  return absl::OkStatus();
}

}  // namespace

grpc::Status GlassboxService::ListSaes(grpc::ServerContext* context,
                                       const pb::ListSaesRequest* request,
                                       pb::ListSaesResponse* response) {
  auto caller = Admit(context, CallKind::kHost);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (!request->model().empty()) {
    if (auto model = store_.Find(request->model()); !model.ok())
      return ToGrpcStatus(model.status());
  }
  for (const auto& [name, served] : store_.saes()) {
    if (request->model().empty() || served->served_model->name == request->model()) {
      FillSaeInfo(*served, response->add_saes());
    }
  }
  return grpc::Status::OK;
}

grpc::Status GlassboxService::SaeEncode(grpc::ServerContext* context,
                                        const pb::SaeEncodeRequest* request,
                                        pb::SaeEncodeResponse* response) {
  auto caller = Admit(context, CallKind::kDevice);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  const ServiceLimits& limits = caller->limits();
  auto served = store_.FindSae(request->sae());
  if (!served.ok()) return ToGrpcStatus(served.status());
  const ServedSae& sae = **served;
  if (!request->model().empty() && request->model() != sae.served_model->name) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("SAE \"", request->sae(), "\" is attached to model \"",
                                     sae.served_model->name, "\", not \"", request->model(), "\""));
  }
  if (request->top_k() < 0 || request->top_k() > sae.sae->d_sae()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("top_k must be in [0, ", sae.sae->d_sae(),
                                     "] (0 = every nonzero feature), got ", request->top_k()));
  }
  auto batch = BuildBatch(request->inputs(), *sae.served_model, limits);
  if (!batch.ok()) return ToGrpcStatus(batch.status());
  const int64_t dense_bytes = request->dense() ? batch->tokens.numel() * sae.sae->d_sae() * 4 : 0;
  if (absl::Status fits =
          limits.CheckResponseBytes(dense_bytes, "dense activations", "ask for sparse ones");
      !fits.ok())
    return ToGrpcStatus(fits);
  if (absl::Status charged = caller->ChargeTokens(batch->tokens.numel()); !charged.ok()) {
    return ToGrpcStatus(charged);
  }
  std::atomic<bool> cancelled{false};
  SaeEncodeResult result;
  absl::Status status = OnDevice(context, *caller, "SaeEncode", sae.served_model->name, batch->tokens.numel(), [&]() -> absl::Status {
    if (context->IsCancelled()) return absl::CancelledError("cancelled while queued");
    GB_ASSIGN_OR_RETURN(result, RunSaeEncode(*sae.served_model->model, *sae.sae, sae.hook,
                                             {.tokens = batch->tokens,
                                              .attention_mask = batch->attention_mask,
                                              .top_k = request->top_k(),
                                              .dense = request->dense(),
                                              .cancelled = &cancelled}));
    return absl::OkStatus();
  });
  if (!status.ok()) return ToGrpcStatus(status);
  // Sparse activations are sized by what fired: check them once they are known.
  const int64_t sparse_bytes = static_cast<int64_t>(result.acts.indices.size()) * 8;
  if (absl::Status fits = limits.CheckResponseBytes(
          sparse_bytes + dense_bytes,
          request->dense() ? "the active features and the dense activations"
                           : "the active features",
          "set top_k or send fewer tokens");
      !fits.ok())
    return ToGrpcStatus(fits);
  for (size_t r = 0; r < batch->rows.size(); ++r) {
    response->add_sequence_lengths(batch->lengths[r]);
    response->add_tokens()->mutable_ids()->Add(batch->rows[r].begin(), batch->rows[r].end());
  }
  response->mutable_offsets()->Add(result.acts.row_offsets.begin(), result.acts.row_offsets.end());
  response->mutable_indices()->Add(result.acts.indices.begin(), result.acts.indices.end());
  response->mutable_values()->Add(result.acts.values.begin(), result.acts.values.end());
  response->set_d_sae(sae.sae->d_sae());
  if (result.dense.defined()) {
    auto* dense = response->mutable_dense();
    dense->mutable_shape()->Add(result.dense.shape().begin(), result.dense.shape().end());
    for (const char* d : {"batch", "pos", "d_sae"}) dense->add_dim_names(d);
    dense->mutable_values()->Add(result.dense.data<float>(),
                                 result.dense.data<float>() + result.dense.numel());
  }
  FillStats(result.stats, response->mutable_stats());
  return grpc::Status::OK;
}

grpc::Status GlassboxService::SaeDecode(grpc::ServerContext* context,
                                        const pb::SaeDecodeRequest* request,
                                        pb::SaeDecodeResponse* response) {
  auto caller = Admit(context, CallKind::kDevice);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  const ServiceLimits& limits = caller->limits();
  auto served = store_.FindSae(request->sae());
  if (!served.ok()) return ToGrpcStatus(served.status());
  const Sae& sae = *(*served)->sae;
  const SaeNormalization norm = sae.config().normalization;
  if (norm == SaeNormalization::kConstantNormRescale || norm == SaeNormalization::kLayerNorm) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("SAE \"", request->sae(), "\" normalises with ", SaeNormalizationName(norm),
                     ", which needs the input's statistics to decode; splice it in a Run "
                     "and capture hook_sae_recons or hook_sae_output instead"));
  }
  // Rows cost d_in floats each whatever they hold: bound them before decoding.
  const int64_t rows = request->dense_size() > 0 ? request->dense_size() / sae.d_sae()
                                                 : std::max(0, request->offsets_size() - 1);
  const int64_t bytes = rows * sae.d_in() * 4;
  if (absl::Status fits = limits.CheckResponseBytes(bytes, absl::StrCat("decoding ", rows, " rows"),
                                                    "decode fewer rows per request");
      !fits.ok())
    return ToGrpcStatus(fits);
  SparseActs sparse;
  Tensor dense;
  if (absl::Status s = ReadDecodeInput(*request, sae.d_sae(), sparse, dense); !s.ok())
    return ToGrpcStatus(s);
  // On the device's worker, like all work on the model's weights: decoding runs OpenMP teams,
  // which must stay on that one thread (glassboxd_main.cc says why).
  absl::StatusOr<Tensor> decoded;
  if (absl::Status status =
          OnDevice(context, *caller, "SaeDecode", (*served)->served_model->name, 0,
                   [&]() -> absl::Status {
                     decoded = dense.defined() ? sae.Decode(dense) : sae.DecodeSparse(sparse);
                     return decoded.status();
                   });
      !status.ok())
    return ToGrpcStatus(status);
  auto* vectors = response->mutable_vectors();
  vectors->mutable_shape()->Add(decoded->shape().begin(), decoded->shape().end());
  vectors->add_dim_names("vector");
  vectors->add_dim_names("d_in");
  vectors->mutable_values()->Add(decoded->data<float>(), decoded->data<float>() + decoded->numel());
  return grpc::Status::OK;
}

}  // namespace glassbox
