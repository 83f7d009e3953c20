// Gradients, IntegratedGradients and Jacobian: a metric of each row's logits, differentiated at the
// requested hook points (server/engine/gradients.h, integrated_gradients.h) on the device's
// worker.
#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/engine/gradients.h"
#include "server/engine/integrated_gradients.h"
#include "server/engine/jacobian.h"
#include "server/engine/sae/feature_gradient.h"
#include "server/service/array_proto.h"
#include "server/service/glassbox_service.h"
#include "server/service/run_plan.h"
#include "server/service/status_util.h"

namespace glassbox {
namespace {

namespace pb = ::glassbox::v1;

// The metric, its hook and SAE resolved against the served model and its SAEs.
absl::StatusOr<GradientMetric> FromProto(const pb::GradientMetric& m, const ModelStore& store,
                                         const ServedModel& served) {
  GradientMetric out{.position = m.has_position() ? m.position() : -1,
                     .token_a = m.token_a(),
                     .token_b = m.token_b()};
  switch (m.kind()) {
    case pb::GradientMetric::LOGIT_DIFF:
      out.kind = GradientMetric::Kind::kLogitDiff;
      break;
    case pb::GradientMetric::LOGIT:
      out.kind = GradientMetric::Kind::kLogit;
      break;
    case pb::GradientMetric::LOG_PROB:
      out.kind = GradientMetric::Kind::kLogProb;
      break;
    case pb::GradientMetric::LOSS:
      out.kind = GradientMetric::Kind::kLoss;
      break;
    case pb::GradientMetric::DIRECTION: {
      out.kind = GradientMetric::Kind::kDirection;
      if (m.hook().empty())
        return absl::InvalidArgumentError("a DIRECTION metric needs metric.hook");
      absl::StatusOr<HookId> hook = served.model->hooks().Resolve(m.hook());
      if (!hook.ok())
        return absl::InvalidArgumentError(absl::StrCat("metric.hook: ", hook.status().message()));
      out.hook = *hook;
      out.direction =
          Tensor::FromHost(std::span<const float>(m.direction().data(), m.direction_size()),
                           {static_cast<int64_t>(m.direction_size())});
      break;
    }
    case pb::GradientMetric::SAE_FEATURE: {
      out.kind = GradientMetric::Kind::kSaeFeature;
      GB_ASSIGN_OR_RETURN(const ServedSae* sae, store.FindSae(m.sae()));
      if (sae->served_model != &served)
        return absl::InvalidArgumentError(absl::StrCat(
            "SAE \"", m.sae(), "\" reads model \"", sae->served_model->name, "\", not this one"));
      out.hook = sae->hook;
      out.sae = sae->sae.get();
      out.feature = m.feature();
      if (out.feature < 0 || out.feature >= sae->sae->d_sae())
        return absl::InvalidArgumentError(absl::StrCat("metric.feature ", out.feature,
                                                       " is outside SAE \"", m.sae(), "\"'s [0, ",
                                                       sae->sae->d_sae(), ")"));
      break;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "metric.kind ", m.kind(),
          " is unknown; use LOGIT_DIFF, LOGIT, LOG_PROB, LOSS, DIRECTION or SAE_FEATURE"));
  }
  return out;
}

// The hooks named (names or globs), each once, in forward order.
absl::StatusOr<std::vector<HookId>> ResolveHooks(const HookRegistry& hooks,
                                                 const std::vector<std::string>& names) {
  absl::flat_hash_set<HookId> seen;
  std::vector<HookId> ids;
  for (const std::string& name : names) {
    GB_ASSIGN_OR_RETURN(std::vector<HookId> matched, hooks.Match(name));
    for (HookId id : matched) {
      if (seen.insert(id).second) ids.push_back(id);
    }
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

// The hook_sae_* points named (names or globs: "<hook>.hook_sae_acts_post") of the request's
// splices, each once, in forward order (the points of one splice in sae_lens's order).
absl::StatusOr<std::vector<SaeHookRef>> ResolveSaeHooks(
    const HookRegistry& hooks, const std::vector<std::pair<HookId, SaeSplice>>& splices,
    const std::vector<std::string>& names) {
  std::vector<SaeHookRef> refs;
  for (const std::string& pattern : names) {
    bool matched = false;
    for (size_t s = 0; s < splices.size(); ++s) {
      const auto& [hook, splice] = splices[s];
      for (int p = 0; p < kNumSaeHooks; ++p) {
        const SaeHook point = static_cast<SaeHook>(p);
        if (!GlobMatch(pattern, SaeHookPath(hooks.info(hook).name, point))) continue;
        if (point == SaeHook::kError && !splice.options.use_error_term) continue;
        matched = true;
        const SaeHookRef ref{.splice = static_cast<int>(s), .point = point};
        if (std::none_of(refs.begin(), refs.end(), [&](const SaeHookRef& r) {
              return r.splice == ref.splice && r.point == ref.point;
            })) {
          refs.push_back(ref);
        }
      }
    }
    if (!matched) {
      return absl::InvalidArgumentError(absl::StrCat(
          "hook \"", pattern, "\" matches no hook_sae_* point of this request's splices (",
          splices.empty() ? std::string("there are none; add sae_splices")
                          : absl::StrCat(splices.size(), " spliced"),
          "); names are <hook>.hook_sae_input|acts_pre|acts_post|recons|error|output, "
          "hook_sae_error only with use_error_term"));
    }
  }
  std::sort(refs.begin(), refs.end(), [&](const SaeHookRef& a, const SaeHookRef& b) {
    return std::make_pair(splices[a.splice].first, a.point) <
           std::make_pair(splices[b.splice].first, b.point);
  });
  return refs;
}

// The checks every gradient RPC makes before its own: a model the backward covers, inputs, a
// known metric.
struct GradientCall {
  const Transformer* model = nullptr;
  Batch batch;
  Tensor mask;  // defined when the rows are ragged
  GradientMetric metric;
};

absl::StatusOr<GradientCall> PrepareGradientCall(const ModelStore& store,
                                                 const ServiceLimits& limits,
                                                 const std::string& model_name,
                                                 const pb::Inputs& inputs,
                                                 const pb::GradientMetric& metric) {
  GB_ASSIGN_OR_RETURN(auto served, store.Find(model_name));
  GradientCall call{.model = served->model.get()};
  GB_ASSIGN_OR_RETURN(call.batch, BuildBatch(inputs, *served, limits));
  // Rows of one length run unpadded; ragged ones right-padded (BuildBatch's layout) with a mask.
  const std::vector<int32_t>& lengths = call.batch.lengths;
  if (std::adjacent_find(lengths.begin(), lengths.end(), std::not_equal_to<>()) != lengths.end()) {
    call.mask = call.batch.attention_mask;
  }
  GB_ASSIGN_OR_RETURN(call.metric, FromProto(metric, store, *served));
  return call;
}

// One position per row: `positions` has one per row, or one for every row.
absl::StatusOr<std::vector<int32_t>> PerRow(
    const google::protobuf::RepeatedField<int32_t>& positions, int64_t rows, const char* what) {
  if (positions.size() == 1) return std::vector<int32_t>(rows, positions[0]);
  if (positions.size() == rows) return std::vector<int32_t>(positions.begin(), positions.end());
  return absl::InvalidArgumentError(absl::StrCat(what, " has ", positions.size(), " entries for ",
                                                 rows, " rows: give one, or one per row"));
}

}  // namespace

grpc::Status GlassboxService::Gradients(grpc::ServerContext* context,
                                        const pb::GradientsRequest* request,
                                        pb::GradientsResponse* response) {
  auto caller = Admit(context, CallKind::kDevice);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  const ServiceLimits& limits = caller->limits();
  auto call =
      PrepareGradientCall(store_, limits, request->model(), request->inputs(), request->metric());
  if (!call.ok()) return ToGrpcStatus(call.status());
  const Transformer& model = *call->model;
  if (request->hooks().empty())
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "name the hooks whose gradients you want (names, or globs such as "
                        "blocks.*.hook_resid_pre; a splice's points as "
                        "<hook>.hook_sae_acts_post)");
  std::vector<std::string> model_names, sae_names;
  for (const std::string& name : request->hooks()) {
    (IsSaeCapture(name) ? sae_names : model_names).push_back(name);
  }
  auto hooks = ResolveHooks(model.hooks(), model_names);
  if (!hooks.ok()) return ToGrpcStatus(hooks.status());
  // Edits are resolved as a Run's (globs, PATCH_CACHED from the caller's kept runs), then
  // checked for a backward.
  std::vector<Intervention> edits;
  std::vector<std::pair<HookId, SaeSplice>> splices;
  if (request->interventions_size() > 0 || request->sae_splices_size() > 0 ||
      request->sae_steering_size() > 0) {
    pb::RunRequest as_run;
    as_run.set_model(request->model());
    *as_run.mutable_inputs() = request->inputs();
    *as_run.mutable_interventions() = request->interventions();
    *as_run.mutable_sae_splices() = request->sae_splices();
    *as_run.mutable_sae_steering() = request->sae_steering();
    auto plan = BuildRunPlan(as_run, store_, limits, caller->cache());
    if (!plan.ok()) return ToGrpcStatus(plan.status());
    edits = std::move(plan->interventions);
    splices = std::move(plan->splices);
  }
  auto sae_hooks = ResolveSaeHooks(model.hooks(), splices, sae_names);
  if (!sae_hooks.ok()) return ToGrpcStatus(sae_hooks.status());
  // What each answer is called and shaped, in forward order: a splice's points before its
  // hook's own gradient (the stream order of a Run's captures).
  struct Answer {
    HookInfo info;
    int index;  // into the model hooks' or the SAE points' gradients
    bool sae;
  };
  std::vector<Answer> answers;
  for (size_t i = 0; i < hooks->size(); ++i) {
    answers.push_back({model.hooks().info((*hooks)[i]), static_cast<int>(i), false});
  }
  for (size_t i = 0; i < sae_hooks->size(); ++i) {
    const auto& [hook, splice] = splices[(*sae_hooks)[i].splice];
    answers.push_back({SaeHookInfo(model.hooks().info(hook), *splice.sae, (*sae_hooks)[i].point),
                       static_cast<int>(i), true});
  }
  auto order = [&](const Answer& a) {
    if (!a.sae) return std::make_pair((*hooks)[a.index], kNumSaeHooks);
    const SaeHookRef& ref = (*sae_hooks)[a.index];
    return std::make_pair(splices[ref.splice].first, static_cast<int>(ref.point));
  };
  std::sort(answers.begin(), answers.end(),
            [&](const Answer& a, const Answer& b) { return order(a) < order(b); });
  const int64_t rows = call->batch.tokens.dim(0), seq = call->batch.tokens.dim(1);
  int64_t bytes = 0;
  for (const Answer& a : answers) bytes += NumElements(a.info.ShapeFor(rows, seq)) * 4;
  if (absl::Status fits =
          limits.CheckResponseBytes(bytes, "the gradients", "ask for fewer hooks or fewer tokens");
      !fits.ok())
    return ToGrpcStatus(fits);
  // A backward pass costs about two forward passes: the tokens count three times.
  const int64_t tokens = call->batch.tokens.numel();
  if (absl::Status charged = caller->ChargeTokens(3 * tokens); !charged.ok()) {
    return ToGrpcStatus(charged);
  }
  absl::StatusOr<GradientResult> result;
  absl::Status status = OnDevice(context, *caller, "Gradients", request->model(), tokens, [&] {
    result = ComputeGradients(model, {.tokens = call->batch.tokens,
                                      .attention_mask = call->mask,
                                      .metric = call->metric,
                                      .hooks = *hooks,
                                      .interventions = std::move(edits),
                                      .splices = std::move(splices),
                                      .sae_hooks = *sae_hooks});
    return result.status();
  });
  if (!status.ok()) return ToGrpcStatus(status);
  response->mutable_metric()->Add(result->metric.begin(), result->metric.end());
  for (const Answer& a : answers) {
    pb::HookGradient& out = *response->add_gradients();
    out.set_hook(a.info.name);
    ToArray(a.sae ? result->sae_gradients[a.index] : result->gradients[a.index], a.info.dim_names,
            out.mutable_gradient());
  }
  return grpc::Status::OK;
}

grpc::Status GlassboxService::IntegratedGradients(grpc::ServerContext* context,
                                                  const pb::IntegratedGradientsRequest* request,
                                                  pb::IntegratedGradientsResponse* response) {
  auto caller = Admit(context, CallKind::kDevice);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  const ServiceLimits& limits = caller->limits();
  auto call =
      PrepareGradientCall(store_, limits, request->model(), request->inputs(), request->metric());
  if (!call.ok()) return ToGrpcStatus(call.status());
  const Transformer& model = *call->model;
  auto resolved = model.hooks().Resolve(request->hook());
  if (!resolved.ok()) return ToGrpcStatus(resolved.status());
  const HookId hook = *resolved;
  IntegratedGradientsRequest ig{.tokens = call->batch.tokens,
                                .attention_mask = call->mask,
                                .metric = call->metric,
                                .hook = hook};
  switch (request->method()) {
    case pb::IntegratedGradientsRequest::INTEGRATED_GRADIENTS:
      break;
    case pb::IntegratedGradientsRequest::INPUT_X_GRADIENT:
      ig.method = IntegratedGradientsRequest::Method::kInputTimesGradient;
      break;
    default:
      return grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("method ", request->method(),
                       " is unknown; use INTEGRATED_GRADIENTS or INPUT_X_GRADIENT"));
  }
  if (request->steps() != 0) ig.steps = request->steps();
  const bool integrated = ig.method == IntegratedGradientsRequest::Method::kIntegratedGradients;
  if (integrated && (ig.steps < 1 || ig.steps > 1024)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("steps is ", ig.steps, "; it must be in [1, 1024] (0 = 20)"));
  }
  auto baseline = FloatArrayToTensor(request->baseline(), "baseline");
  if (!baseline.ok()) return ToGrpcStatus(baseline.status());
  ig.baseline = *std::move(baseline);
  const int64_t rows = call->batch.tokens.dim(0), seq = call->batch.tokens.dim(1);
  const int64_t bytes = NumElements(model.hooks().info(hook).ShapeFor(rows, seq)) * 4;
  if (absl::Status fits = limits.CheckResponseBytes(bytes, "the attributions", "send fewer tokens");
      !fits.ok())
    return ToGrpcStatus(fits);
  // Each path point is a forward and a backward pass over the batch (three passes' worth), plus
  // the plain and baseline runs.
  const int64_t tokens = call->batch.tokens.numel();
  const int64_t passes = integrated ? 3 * int64_t{ig.steps} + 2 : 4;
  if (absl::Status charged = caller->ChargeTokens(passes * tokens); !charged.ok()) {
    return ToGrpcStatus(charged);
  }
  ig.max_rows_per_pass = std::max<int64_t>(rows, limits.max_tokens_per_request / seq);
  std::atomic<bool> cancelled{false};
  ig.cancelled = &cancelled;
  absl::StatusOr<IntegratedGradientsResult> result;
  absl::Status status =
      OnDevice(context, *caller, "IntegratedGradients", request->model(), tokens, [&] {
        if (context->IsCancelled()) return absl::CancelledError("cancelled while queued");
        result = ComputeIntegratedGradients(model, ig);
        return result.status();
      });
  if (!status.ok()) return ToGrpcStatus(status);
  ToArray(result->attributions, model.hooks().info(hook).dim_names,
          response->mutable_attributions());
  response->mutable_metric()->Add(result->metric.begin(), result->metric.end());
  response->mutable_baseline_metric()->Add(result->baseline_metric.begin(),
                                           result->baseline_metric.end());
  response->set_forward_passes(result->forward_passes);
  response->set_backward_passes(result->backward_passes);
  return grpc::Status::OK;
}

grpc::Status GlassboxService::Jacobian(grpc::ServerContext* context,
                                       const pb::JacobianRequest* request,
                                       pb::JacobianResponse* response) {
  auto caller = Admit(context, CallKind::kDevice);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  const ServiceLimits& limits = caller->limits();
  // No metric: the preamble's default one (a logit difference of token 0) is never read.
  auto call = PrepareGradientCall(store_, limits, request->model(), request->inputs(),
                                  pb::GradientMetric());
  if (!call.ok()) return ToGrpcStatus(call.status());
  const Transformer& model = *call->model;
  auto in = model.hooks().Resolve(request->in_hook());
  if (!in.ok()) return ToGrpcStatus(in.status());
  auto out = model.hooks().Resolve(request->out_hook());
  if (!out.ok()) return ToGrpcStatus(out.status());
  auto size = JacobianSize(model, *in, *out);
  if (!size.ok()) return ToGrpcStatus(size.status());
  const int64_t rows = call->batch.tokens.dim(0), seq = call->batch.tokens.dim(1);
  auto in_positions = PerRow(request->in_positions(), rows, "in_positions");
  if (!in_positions.ok()) return ToGrpcStatus(in_positions.status());
  auto out_positions = PerRow(request->out_positions(), rows, "out_positions");
  if (!out_positions.ok()) return ToGrpcStatus(out_positions.status());
  const auto [n_out, n_in] = *size;
  const int64_t bytes = rows * (n_out * n_in + n_out + n_in) * 4;
  if (absl::Status fits = limits.CheckResponseBytes(
          bytes, absl::StrCat("the Jacobian [", rows, ", ", n_out, ", ", n_in, "]"),
          "send fewer rows");
      !fits.ok())
    return ToGrpcStatus(fits);
  // Each output element is a forward and a backward pass over the rows (three passes' worth).
  const int64_t tokens = call->batch.tokens.numel();
  if (absl::Status charged = caller->ChargeTokens(3 * n_out * tokens); !charged.ok()) {
    return ToGrpcStatus(charged);
  }
  JacobianRequest jacobian{
      .tokens = call->batch.tokens,
      .attention_mask = call->mask,
      .in = *in,
      .in_positions = *std::move(in_positions),
      .out = *out,
      .out_positions = *std::move(out_positions),
      .max_rows_per_pass = std::max<int64_t>(rows, limits.max_tokens_per_request / seq)};
  std::atomic<bool> cancelled{false};
  jacobian.cancelled = &cancelled;
  absl::StatusOr<JacobianResult> result;
  absl::Status status = OnDevice(context, *caller, "Jacobian", request->model(), tokens, [&] {
    if (context->IsCancelled()) return absl::CancelledError("cancelled while queued");
    result = ComputeJacobian(model, jacobian);
    return result.status();
  });
  if (!status.ok()) return ToGrpcStatus(status);
  ToArray(result->jacobian, {"batch", "out", "in"}, response->mutable_jacobian());
  ToArray(result->out_value, {"batch", "out"}, response->mutable_out_value());
  ToArray(result->in_value, {"batch", "in"}, response->mutable_in_value());
  response->set_passes(result->passes);
  return grpc::Status::OK;
}

}  // namespace glassbox
