// Gradients: a metric of each row's logits, differentiated at the requested hook points
// (server/engine/gradients.h) on the device's worker.
#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/engine/gradients.h"
#include "server/service/array_proto.h"
#include "server/service/glassbox_service.h"
#include "server/service/status_util.h"

namespace glassbox {
namespace {

namespace pb = ::glassbox::v1;

absl::StatusOr<GradientMetric> FromProto(const pb::GradientMetric& m) {
  GradientMetric out{.position = m.has_position() ? m.position() : -1,
                     .token_a = m.token_a(),
                     .token_b = m.token_b()};
  switch (m.kind()) {
    case pb::GradientMetric::LOGIT_DIFF: out.kind = GradientMetric::Kind::kLogitDiff; break;
    case pb::GradientMetric::LOGIT: out.kind = GradientMetric::Kind::kLogit; break;
    case pb::GradientMetric::LOG_PROB: out.kind = GradientMetric::Kind::kLogProb; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "metric.kind ", m.kind(), " is unknown; use LOGIT_DIFF, LOGIT or LOG_PROB"));
  }
  return out;
}

// The hooks named (names or globs), each once, in forward order.
absl::StatusOr<std::vector<HookId>> ResolveHooks(const HookRegistry& hooks,
                                                 const google::protobuf::RepeatedPtrField<std::string>& names) {
  if (names.empty())
    return absl::InvalidArgumentError(
        "name the hooks whose gradients you want (names, or globs such as "
        "blocks.*.hook_resid_pre)");
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

}  // namespace

grpc::Status GlassboxService::Gradients(grpc::ServerContext* context,
                                        const pb::GradientsRequest* request,
                                        pb::GradientsResponse* response) {
  auto caller = Admit(context, CallKind::kDevice);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  const ServiceLimits& limits = caller->limits();
  auto served = store_.Find(request->model());
  if (!served.ok()) return ToGrpcStatus(served.status());
  const Transformer& model = *(*served)->model;
  if (absl::Status s = CheckGradientsSupported(model.config()); !s.ok()) return ToGrpcStatus(s);
  auto batch = BuildBatch(request->inputs(), **served, limits);
  if (!batch.ok()) return ToGrpcStatus(batch.status());
  if (std::adjacent_find(batch->lengths.begin(), batch->lengths.end(),
                         std::not_equal_to<>()) != batch->lengths.end())
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "gradients take rows of one length for now (padding is not supported); "
                        "send rows of equal length or one request per length");
  auto metric = FromProto(request->metric());
  if (!metric.ok()) return ToGrpcStatus(metric.status());
  auto hooks = ResolveHooks(model.hooks(), request->hooks());
  if (!hooks.ok()) return ToGrpcStatus(hooks.status());
  const int64_t rows = batch->tokens.dim(0), seq = batch->tokens.dim(1);
  int64_t bytes = 0;
  for (HookId id : *hooks) bytes += NumElements(model.hooks().info(id).ShapeFor(rows, seq)) * 4;
  if (bytes > limits.max_response_bytes)
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("the gradients would take ", bytes, " bytes; ",
                                     limits.ResponseBytesAllowed(),
                                     ": ask for fewer hooks or fewer tokens"));
  // A backward pass costs about two forward passes: the tokens count three times.
  const int64_t tokens = batch->tokens.numel();
  if (absl::Status charged = caller->ChargeTokens(3 * tokens); !charged.ok()) {
    return ToGrpcStatus(charged);
  }
  absl::StatusOr<GradientResult> result;
  absl::Status status = OnDevice(context, *caller, "Gradients", request->model(), tokens, [&] {
    result = ComputeGradients(model, {.tokens = batch->tokens, .metric = *metric, .hooks = *hooks});
    return result.status();
  });
  if (!status.ok()) return ToGrpcStatus(status);
  response->mutable_metric()->Add(result->metric.begin(), result->metric.end());
  for (size_t i = 0; i < hooks->size(); ++i) {
    const HookInfo& info = model.hooks().info((*hooks)[i]);
    pb::HookGradient& out = *response->add_gradients();
    out.set_hook(info.name);
    ToArray(result->gradients[i], info.dim_names, out.mutable_gradient());
  }
  return grpc::Status::OK;
}

}  // namespace glassbox
