#include "server/service/run_plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace glassbox {
namespace {

using glassbox::v1::RunRequest;

absl::StatusOr<DType> FromProtoDType(glassbox::v1::DType dtype, absl::string_view where) {
  switch (dtype) {
    case glassbox::v1::DTYPE_UNSPECIFIED:
    case glassbox::v1::DTYPE_F32: return DType::kF32;
    case glassbox::v1::DTYPE_F16: return DType::kF16;
    case glassbox::v1::DTYPE_BF16: return DType::kBF16;
    default:
      return absl::InvalidArgumentError(absl::StrCat(where, ": the wire dtype must be f32, f16 or bf16"));
  }
}

absl::StatusOr<CaptureReduction> FromProtoReduction(glassbox::v1::Reduction r, absl::string_view where) {
  switch (r) {
    case glassbox::v1::REDUCTION_NONE: return CaptureReduction::kNone;
    case glassbox::v1::REDUCTION_MEAN_POS: return CaptureReduction::kMeanPos;
    case glassbox::v1::REDUCTION_TOP_K: return CaptureReduction::kTopK;
    case glassbox::v1::REDUCTION_NORM: return CaptureReduction::kNorm;
    default: return absl::InvalidArgumentError(absl::StrCat(where, ": unknown reduction ", r));
  }
}

absl::Status BuildRows(const glassbox::v1::Inputs& inputs, const ServedModel& served, Batch& plan) {
  const bool has_texts = inputs.texts_size() > 0, has_ids = inputs.token_ids_size() > 0;
  if (has_texts == has_ids) {
    return absl::InvalidArgumentError("inputs: give exactly one of texts or token_ids");
  }
  if (has_texts) {
    if (served.tokenizer == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model \"", served.name, "\" has no tokenizer (no tokenizer.json or vocab.json in ",
          served.directory, "); send token_ids instead"));
    }
    EncodeOptions options;
    if (inputs.has_prepend_bos()) options.add_special_tokens = inputs.prepend_bos();
    for (int i = 0; i < inputs.texts_size(); ++i) {
      auto ids = served.tokenizer->Encode(inputs.texts(i), options);
      if (!ids.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("inputs.texts[", i, "]: ", ids.status().message()));
      }
      plan.rows.push_back(*std::move(ids));
    }
  } else {
    for (const auto& seq : inputs.token_ids()) plan.rows.emplace_back(seq.ids().begin(), seq.ids().end());
  }
  const int64_t vocab = served.model->config().vocab_size;
  for (size_t r = 0; r < plan.rows.size(); ++r) {
    if (plan.rows[r].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("inputs row ", r, " has no tokens"));
    }
    for (size_t s = 0; s < plan.rows[r].size(); ++s) {
      const int32_t id = plan.rows[r][s];
      if (id < 0 || id >= vocab) {
        return absl::InvalidArgumentError(absl::StrCat("inputs row ", r, " position ", s, ": token id ", id,
                                                       " is outside the vocabulary [0, ", vocab, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<InterventionKind> FromProtoKind(glassbox::v1::InterventionKind kind, absl::string_view where) {
  switch (kind) {
    case glassbox::v1::INTERVENTION_ZERO: return InterventionKind::kZero;
    case glassbox::v1::INTERVENTION_SCALE: return InterventionKind::kScale;
    case glassbox::v1::INTERVENTION_ADD: return InterventionKind::kAdd;
    case glassbox::v1::INTERVENTION_SET: return InterventionKind::kSet;
    case glassbox::v1::INTERVENTION_MEAN_BATCH: return InterventionKind::kMeanBatch;
    case glassbox::v1::INTERVENTION_MEAN_POS: return InterventionKind::kMeanPos;
    case glassbox::v1::INTERVENTION_PATCH_ROW: return InterventionKind::kPatchRow;
    case glassbox::v1::INTERVENTION_PATCH_CACHED:
      return InterventionKind::kPatchFrom;
    case glassbox::v1::INTERVENTION_PROJECT_OUT: return InterventionKind::kProjectOut;
    case glassbox::v1::INTERVENTION_ORTHOGONAL_DECOMP: return InterventionKind::kOrthogonalDecomp;
    case glassbox::v1::INTERVENTION_PROJECTION_CAP: return InterventionKind::kProjectionCap;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": set kind (ZERO, SCALE, ADD, SET, ",
                       "MEAN_BATCH, MEAN_POS, PATCH_ROW, PATCH_CACHED, PROJECT_OUT, ORTHOGONAL_DECOMP or "
                       "PROJECTION_CAP)"));
  }
}

absl::Status AddInterventions(const glassbox::v1::RunRequest& request, const CacheAccess& cache,
                              RunPlan& plan) {
  const HookRegistry& hooks = plan.model->model->hooks();
  const TokenLayout layout = TokenLayout::FromMask(plan.attention_mask);
  for (int i = 0; i < request.interventions_size(); ++i) {
    const auto& in = request.interventions(i);
    const std::string where = absl::StrCat("interventions[", i, "] \"", in.hook(), "\"");
    Intervention edit;
    GB_ASSIGN_OR_RETURN(edit.kind, FromProtoKind(in.kind(), where));
    edit.select = {.rows = {in.rows().begin(), in.rows().end()},
                   .positions = {in.positions().begin(), in.positions().end()},
                   .heads = {in.heads().begin(), in.heads().end()},
                   .dims = {in.dims().begin(), in.dims().end()}};
    edit.coefficient = in.has_coefficient() ? in.coefficient() : 1.0f;
    if (in.value_size() > 0) {
      edit.value = Tensor::FromHost(std::span<const float>(in.value().data(), in.value_size()),
                                    {static_cast<int64_t>(in.value_size())});
    }
    edit.source_rows.assign(in.source_rows().begin(), in.source_rows().end());
    if (in.has_projection_min()) edit.projection_min = in.projection_min();
    if (in.has_projection_max()) edit.projection_max = in.projection_max();
    if ((in.has_projection_min() || in.has_projection_max()) &&
        in.kind() != glassbox::v1::INTERVENTION_PROJECTION_CAP) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": projection_min / projection_max apply to PROJECTION_CAP only"));
    }
    auto ids = hooks.Match(in.hook());
    if (!ids.ok()) return absl::InvalidArgumentError(absl::StrCat(where, ": ", ids.status().message()));
    for (HookId id : *ids) {
      edit.hook = id;
      if (in.kind() == glassbox::v1::INTERVENTION_PATCH_CACHED) {
        GB_RETURN_IF_ERROR(ResolveCachedPatch(in, hooks.info(id), plan, cache, edit));
      }
      GB_RETURN_IF_ERROR(ValidateIntervention(edit, hooks.info(id), plan.tokens.dim(0),
                                              plan.tokens.dim(1), layout));
      plan.interventions.push_back(edit);
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool ReachedWith(const HookInfo& info, int stop_at_layer) {
  if (stop_at_layer < 0) return true;
  return info.layer < 0 ? info.kind == HookKind::kEmbed || info.kind == HookKind::kPosEmbed
                        : info.layer < stop_at_layer;
}

glassbox::v1::DType ToProtoDType(DType dtype) {
  switch (dtype) {
    case DType::kF32: return glassbox::v1::DTYPE_F32;
    case DType::kF16: return glassbox::v1::DTYPE_F16;
    case DType::kBF16: return glassbox::v1::DTYPE_BF16;
    case DType::kI32: return glassbox::v1::DTYPE_I32;
    case DType::kI64: return glassbox::v1::DTYPE_UNSPECIFIED;
  }
  return glassbox::v1::DTYPE_UNSPECIFIED;
}

absl::StatusOr<Batch> BuildBatch(const glassbox::v1::Inputs& inputs, const ServedModel& served,
                                 const ServiceLimits& limits) {
  Batch plan;
  const ModelConfig& config = served.model->config();
  GB_RETURN_IF_ERROR(BuildRows(inputs, served, plan));
  const int64_t batch = static_cast<int64_t>(plan.rows.size());
  int64_t longest = 0;
  for (const auto& row : plan.rows) {
    plan.lengths.push_back(static_cast<int32_t>(row.size()));
    longest = std::max<int64_t>(longest, row.size());
  }
  if (batch > limits.max_batch) {
    return absl::ResourceExhaustedError(absl::StrCat("the batch has ", batch,
                                                     " rows; this server allows ", limits.max_batch,
                                                     " (--max_batch)"));
  }
  if (batch * longest > limits.max_tokens_per_request) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the padded batch holds ", batch * longest, " tokens (", batch, " rows x ", longest,
        "); this server allows ", limits.max_tokens_per_request, " per request (--max_tokens)"));
  }
  if (longest > config.n_ctx) {
    return absl::InvalidArgumentError(absl::StrCat("the longest row has ", longest,
                                                   " tokens; the model's context is ", config.n_ctx));
  }
  plan.tokens = Tensor::ZerosHost(DType::kI32, {batch, longest});
  plan.attention_mask = Tensor::ZerosHost(DType::kI32, {batch, longest});
  for (int64_t b = 0; b < batch; ++b) {
    std::copy(plan.rows[b].begin(), plan.rows[b].end(), plan.tokens.data<int32_t>() + b * longest);
    std::fill_n(plan.attention_mask.data<int32_t>() + b * longest, plan.rows[b].size(), 1);
  }
  return plan;
}

absl::StatusOr<RunPlan> BuildRunPlan(const RunRequest& request, const ModelStore& store,
                                     const ServiceLimits& limits, const CacheAccess& cache) {
  RunPlan plan;
  GB_ASSIGN_OR_RETURN(plan.model, store.Find(request.model()));
  const ModelConfig& config = plan.model->model->config();
  GB_ASSIGN_OR_RETURN(static_cast<Batch&>(plan), BuildBatch(request.inputs(), *plan.model, limits));
  const int64_t batch = plan.tokens.dim(0), longest = plan.tokens.dim(1);

  GB_RETURN_IF_ERROR(AddInterventions(request, cache, plan));
  GB_RETURN_IF_ERROR(AddSaeSteering(request, store, plan));

  std::vector<CaptureSpec> specs, sae_specs;
  for (int i = 0; i < request.captures_size(); ++i) {
    const auto& c = request.captures(i);
    const std::string where = absl::StrCat("captures[", i, "] \"", c.hook(), "\"");
    CaptureSpec spec{.hook = c.hook(),
                     .positions = {c.positions().begin(), c.positions().end()},
                     .heads = {c.heads().begin(), c.heads().end()},
                     .layers = {c.layers().begin(), c.layers().end()},
                     .k = c.k()};
    GB_ASSIGN_OR_RETURN(spec.dtype, FromProtoDType(c.dtype(), where));
    GB_ASSIGN_OR_RETURN(spec.reduction, FromProtoReduction(c.reduction(), where));
    (IsSaeCapture(spec.hook) ? sae_specs : specs).push_back(std::move(spec));
  }
  GB_ASSIGN_OR_RETURN(plan.captures,
                      ResolveCaptures(plan.model->model->hooks(), specs, plan.lengths, longest));
  if (request.has_stop_at_layer()) {
    plan.stop_at_layer = request.stop_at_layer();
    if (plan.stop_at_layer < 0 || plan.stop_at_layer > config.n_layers) {
      return absl::InvalidArgumentError(absl::StrCat("stop_at_layer ", plan.stop_at_layer,
                                                     " is outside [0, ", config.n_layers, "]"));
    }
    // A glob keeps the hooks the shortened pass reaches; a hook named exactly must be reached.
    std::vector<ResolvedCapture> reached;
    for (ResolvedCapture& rc : plan.captures) {
      const HookInfo& info = plan.model->model->hooks().info(rc.hook);
      if (ReachedWith(info, plan.stop_at_layer)) {
        reached.push_back(std::move(rc));
      } else if (rc.spec.hook.find_first_of("*?") == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "capture ", info.name, " is never reached with stop_at_layer ", plan.stop_at_layer));
      }
    }
    for (const CaptureSpec& spec : specs) {
      const bool any = std::any_of(reached.begin(), reached.end(),
                                   [&](const ResolvedCapture& rc) { return rc.spec.hook == spec.hook; });
      if (!any) {
        return absl::InvalidArgumentError(absl::StrCat("capture \"", spec.hook,
                                                       "\" matches no hook before stop_at_layer ",
                                                       plan.stop_at_layer));
      }
    }
    plan.captures = std::move(reached);
  }
  GB_RETURN_IF_ERROR(AddSaeSplices(request, store, sae_specs, plan));
  GB_RETURN_IF_ERROR(AddKeep(request, cache, plan));
  for (const ResolvedCapture& rc : plan.captures) {
    for (const CaptureOutputInfo& o : rc.outputs) plan.tensors.push_back({o.name, o.shape, o.dim_names, o.dtype});
  }

  const auto& outputs = request.outputs();
  plan.logits_mode = outputs.logits();
  plan.loss_per_token = outputs.loss_per_token();
  plan.target_tokens.assign(outputs.target_tokens().begin(), outputs.target_tokens().end());
  const bool any_output = plan.logits_mode != glassbox::v1::LOGITS_NONE || plan.loss_per_token ||
                          !plan.target_tokens.empty();
  if (plan.stop_at_layer >= 0 && any_output) {
    return absl::InvalidArgumentError(
        "outputs (logits, loss, target log-probs) need the whole forward pass; leave them empty "
        "when setting stop_at_layer");
  }
  const int64_t vocab = config.vocab_size;
  switch (plan.logits_mode) {
    case glassbox::v1::LOGITS_NONE: break;
    case glassbox::v1::LOGITS_LAST:
      plan.tensors.push_back({"logits", {batch, vocab}, {"batch", "d_vocab"}, DType::kF32});
      break;
    case glassbox::v1::LOGITS_ALL:
      plan.tensors.push_back({"logits", {batch, longest, vocab}, {"batch", "pos", "d_vocab"}, DType::kF32});
      break;
    case glassbox::v1::LOGITS_TOP_K:
      plan.logits_k = outputs.logits_k();
      if (plan.logits_k < 1 || plan.logits_k > vocab) {
        return absl::InvalidArgumentError(absl::StrCat("outputs.logits_k must be in [1, ", vocab,
                                                       "] for LOGITS_TOP_K, got ", plan.logits_k));
      }
      plan.tensors.push_back({"logits", {batch, longest, plan.logits_k}, {"batch", "pos", "k"}, DType::kF32});
      plan.tensors.push_back({"logits.indices", {batch, longest, plan.logits_k}, {"batch", "pos", "k"}, DType::kI32});
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown outputs.logits mode ", plan.logits_mode));
  }
  if (plan.loss_per_token) {
    plan.tensors.push_back({"loss_per_token", {batch, longest - 1}, {"batch", "pos"}, DType::kF32});
  }
  for (int32_t t : plan.target_tokens) {
    if (t < 0 || t >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("outputs.target_tokens: token id ", t,
                                                     " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  if (!plan.target_tokens.empty()) {
    plan.tensors.push_back({"target_log_probs",
                            {batch, longest, static_cast<int64_t>(plan.target_tokens.size())},
                            {"batch", "pos", "target"}, DType::kF32});
  }

  for (const OutputTensorInfo& t : plan.tensors) plan.total_bytes += t.nbytes();
  if (plan.total_bytes > limits.max_response_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the response would carry ", plan.total_bytes, " bytes; ", limits.ResponseBytesAllowed(),
        ". Select positions/heads, use a reduction or a 16-bit dtype, or split the batch"));
  }
  plan.chunk_bytes = request.chunk_bytes() == 0 ? limits.default_chunk_bytes
                                                : std::min(request.chunk_bytes(), limits.max_chunk_bytes);
  return plan;
}

absl::Status AddEdits(const RunPlan& plan, HookPlan& hook_plan) {
  for (const Intervention& edit : plan.interventions) {
    GB_RETURN_IF_ERROR(hook_plan.AddIntervention(edit));
  }
  for (const auto& [hook, splice] : plan.splices) {
    GB_RETURN_IF_ERROR(hook_plan.AddSaeSplice(hook, splice));
  }
  return absl::OkStatus();
}

}  // namespace glassbox
