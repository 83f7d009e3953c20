#include "server/engine/jacobian.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/engine/backward_walk.h"
#include "server/engine/gradients.h"
#include "server/engine/hook_plan.h"
#include "server/engine/host_captures.h"
#include "server/engine/host_math.h"

namespace glassbox {
namespace {

// The hooks a Jacobian can start from: the per-token activations the backward walk fills (not
// attention scores and patterns, which are per query and key, nor the final norm's).
bool IsPerTokenInput(HookKind kind) {
  switch (kind) {
    case HookKind::kEmbed:
    case HookKind::kPosEmbed:
    case HookKind::kResidPre:
    case HookKind::kLn1Scale:
    case HookKind::kLn1Normalized:
    case HookKind::kQ:
    case HookKind::kK:
    case HookKind::kV:
    case HookKind::kQNormScale:
    case HookKind::kQNormNormalized:
    case HookKind::kKNormScale:
    case HookKind::kKNormNormalized:
    case HookKind::kRotQ:
    case HookKind::kRotK:
    case HookKind::kZ:
    case HookKind::kResult:
    case HookKind::kLn1PostScale:
    case HookKind::kLn1PostNormalized:
    case HookKind::kAttnOut:
    case HookKind::kResidMid:
    case HookKind::kLn2Scale:
    case HookKind::kLn2Normalized:
    case HookKind::kMlpPre:
    case HookKind::kMlpPreLinear:
    case HookKind::kMlpPost:
    case HookKind::kLn2PostScale:
    case HookKind::kLn2PostNormalized:
    case HookKind::kMlpOut:
    case HookKind::kResidPost:
      return true;
    default:
      return false;
  }
}

// Where a hook sits in the forward order, for "at or below": (layer, stage). The embeddings come
// first; within a block resid_pre, then the attention's hooks, resid_mid, the MLP's, resid_post.
std::pair<int, int> Place(const HookInfo& info) {
  if (info.layer < 0) return {-1, 0};
  switch (info.kind) {
    case HookKind::kResidPre:
      return {info.layer, 0};
    case HookKind::kResidMid:
      return {info.layer, 2};
    case HookKind::kResidPost:
      return {info.layer, 4};
    case HookKind::kLn2Normalized:
    case HookKind::kLn2Scale:
    case HookKind::kMlpPre:
    case HookKind::kMlpPreLinear:
    case HookKind::kMlpPost:
    case HookKind::kLn2PostNormalized:
    case HookKind::kLn2PostScale:
    case HookKind::kMlpOut:
      return {info.layer, 3};
    default:  // the attention's hooks, its norm and attn_out
      return {info.layer, 1};
  }
}

int64_t ElementsAtOnePosition(const HookInfo& info) {
  const Shape shape = info.ShapeFor(1, 1);
  int64_t n = 1;
  for (size_t d = 2; d < shape.size(); ++d) n *= shape[d];
  return n;
}

absl::StatusOr<std::vector<int64_t>> Resolve(const std::vector<int32_t>& positions,
                                             const std::vector<int64_t>& lengths,
                                             const char* what) {
  if (positions.size() != lengths.size())
    return absl::InvalidArgumentError(absl::StrCat(what, " has ", positions.size(),
                                                   " positions for ", lengths.size(),
                                                   " rows: give one per row"));
  std::vector<int64_t> out;
  for (size_t b = 0; b < lengths.size(); ++b) {
    const int64_t p = positions[b], n = lengths[b];
    if (p < -n || p >= n)
      return absl::InvalidArgumentError(
          absl::StrCat(what, " position ", p, " is outside rows of ", n, " tokens"));
    out.push_back(p >= 0 ? p : n + p);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::pair<int64_t, int64_t>> JacobianSize(const Transformer& model, HookId in,
                                                         HookId out) {
  const HookRegistry& hooks = model.hooks();
  if (in < 0 || in >= hooks.size() || out < 0 || out >= hooks.size())
    return absl::InvalidArgumentError("a Jacobian needs two hooks the model has");
  const HookInfo& from = hooks.info(in);
  const HookInfo& to = hooks.info(out);
  if (!IsMetricHookKind(to.kind))
    return absl::InvalidArgumentError(absl::StrCat(
        "a Jacobian's output is a token activation (the residual stream, attn_out, mlp_out, "
        "hook_q/k/v/z, the MLP's pre/post, the embeddings); ",
        to.name, " is not one"));
  if (!IsPerTokenInput(from.kind))
    return absl::InvalidArgumentError(
        absl::StrCat("a Jacobian's input is a per-token activation at or below its output; ",
                     from.name, " is not one"));
  if (Place(from) > Place(to))
    return absl::InvalidArgumentError(absl::StrCat(from.name, " comes after ", to.name,
                                                   " in the forward pass: nothing flows back"));
  return std::make_pair(ElementsAtOnePosition(to), ElementsAtOnePosition(from));
}

absl::StatusOr<JacobianResult> ComputeJacobian(const Transformer& model,
                                               const JacobianRequest& request) {
  const Tensor& tokens = request.tokens;
  if (tokens.rank() != 2 || tokens.dtype() != DType::kI32 || tokens.dim(0) < 1 || tokens.dim(1) < 1)
    return absl::InvalidArgumentError("a Jacobian needs tokens as i32 [batch, seq], not empty");
  GB_ASSIGN_OR_RETURN(auto size, JacobianSize(model, request.in, request.out));
  const auto [n_out, n_in] = size;
  const int64_t batch = tokens.dim(0), seq = tokens.dim(1);
  GB_ASSIGN_OR_RETURN(std::vector<int64_t> lengths, RowLengths(tokens, request.attention_mask));
  GB_ASSIGN_OR_RETURN(std::vector<int64_t> p, Resolve(request.in_positions, lengths, "in"));
  GB_ASSIGN_OR_RETURN(std::vector<int64_t> q, Resolve(request.out_positions, lengths, "out"));
  if (request.max_rows_per_pass < 1)
    return absl::InvalidArgumentError("max_rows_per_pass must be >= 1");
  const HookInfo& to = model.hooks().info(request.out);
  const HookInfo& from = model.hooks().info(request.in);
  const int lowest = std::max(from.layer, 0);

  JacobianResult result;
  result.jacobian = Tensor::ZerosHost(DType::kF32, {batch, n_out, n_in});
  result.out_value = Tensor::EmptyHost(DType::kF32, {batch, n_out});
  result.in_value = Tensor::EmptyHost(DType::kF32, {batch, n_in});
  // Output elements per pass: each takes a copy of every row.
  const int64_t per_pass = std::max<int64_t>(1, request.max_rows_per_pass / batch);
  for (int64_t first = 0; first < n_out; first += per_pass) {
    const int64_t count = std::min(per_pass, n_out - first);
    const int64_t rows = count * batch;  // row r: element first + r / batch of row r % batch
    const Tensor repeated = RepeatRows(tokens, count);
    const Tensor mask = RepeatRows(request.attention_mask, count);
    HookPlan plan(model.hooks());
    for (HookId id : BackwardInputs(model, to.layer, /*final_norm=*/false)) plan.CaptureId(id);
    plan.CaptureId(request.in);
    plan.CaptureId(request.out);
    HostCaptures captured(model.backend());
    GB_RETURN_IF_ERROR(model
                           .Forward({.tokens = repeated, .attention_mask = mask}, plan, &captured,
                                    {.logits = LogitsMode::kNone,
                                     .stop_at_layer = to.layer + 1,
                                     .cancelled = request.cancelled})
                           .status());
    // One output element of one copy of each row seeded with 1 at `out`.
    Tensor seed = Tensor::ZerosHost(DType::kF32, to.ShapeFor(rows, seq));
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = r % batch, element = first + r / batch;
      seed.data<float>()[(r * seq + q[b]) * n_out + element] = 1;
    }
    BackwardWalk walk(model, captured, rows, seq, {request.in});
    walk.AddSeed(request.out, std::move(seed));
    GB_RETURN_IF_ERROR(walk.FromSeeds(to.layer, lowest));
    const Tensor& grad = walk.gradient(request.in);
    if (!grad.defined())
      return absl::InternalError("the backward walk did not reach the input hook");
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = r % batch, element = first + r / batch;
      std::copy_n(grad.data<float>() + (r * seq + p[b]) * n_in, n_in,
                  result.jacobian.data<float>() + (b * n_out + element) * n_in);
    }
    if (first == 0) {  // the values, from the first copy of each row
      const Tensor& out_value = captured.at(request.out);
      const Tensor& in_value = captured.at(request.in);
      for (int64_t b = 0; b < batch; ++b) {
        std::copy_n(out_value.data<float>() + (b * seq + q[b]) * n_out, n_out,
                    result.out_value.data<float>() + b * n_out);
        std::copy_n(in_value.data<float>() + (b * seq + p[b]) * n_in, n_in,
                    result.in_value.data<float>() + b * n_in);
      }
    }
    ++result.passes;
  }
  return result;
}

}  // namespace glassbox
