#include "server/engine/logit_effects.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/engine/host_math.h"

namespace glassbox {
namespace {

// Hooks whose value is (a sum of) what goes into the residual stream, in d_model.
bool WritesResidual(HookKind kind) {
  switch (kind) {
    case HookKind::kEmbed:
    case HookKind::kPosEmbed:
    case HookKind::kResidPre:
    case HookKind::kResidMid:
    case HookKind::kResidPost:
    case HookKind::kAttnOut:
    case HookKind::kMlpOut:
      return true;
    default:
      return false;
  }
}

// The k largest of each row of `values` (device, the model's dtype) as host f32 and ids.
absl::StatusOr<std::pair<Tensor, Tensor>> TopOf(Backend& backend, const Tensor& values, int64_t k) {
  const int64_t n = values.dim(0);
  GB_ASSIGN_OR_RETURN(Tensor top, backend.Allocate(values.dtype(), {n, k}));
  GB_ASSIGN_OR_RETURN(Tensor ids, backend.Allocate(DType::kI32, {n, k}));
  GB_RETURN_IF_ERROR(backend.TopK(values, k, top, ids));
  GB_ASSIGN_OR_RETURN(Tensor top_host, CopyToHostF32(backend, top));
  Tensor ids_host = Tensor::EmptyHost(DType::kI32, {n, k});
  GB_RETURN_IF_ERROR(backend.CopyToHost(ids, ids_host));
  return std::pair{top_host, ids_host};
}

}  // namespace

absl::StatusOr<std::pair<Tensor, std::vector<bool>>> OutputDirections(
    const Transformer& model, const std::vector<TargetUnit>& units) {
  const int64_t n = static_cast<int64_t>(units.size()), d_model = model.config().d_model;
  Tensor out = Tensor::ZerosHost(DType::kF32, {n, d_model});
  std::vector<bool> defined(n, false);
  std::map<int, Tensor> out_w;  // W_out of each layer, host f32 [d_model, d_mlp], read once
  for (int64_t i = 0; i < n; ++i) {
    const ScanTargetGroup& g = *units[i].group;
    const HookInfo& info = model.hooks().info(g.hook);
    float* row = out.data<float>() + i * d_model;
    const int32_t unit = units[i].unit;
    switch (g.kind) {
      case ScanTargetGroup::Kind::kNeurons:
        if (info.kind == HookKind::kMlpPost) {
          auto it = out_w.find(info.layer);
          if (it == out_w.end()) {
            GB_ASSIGN_OR_RETURN(Tensor w, CopyToHostF32(model.backend(),
                                                        model.weights().blocks[info.layer].out_w));
            it = out_w.emplace(info.layer, std::move(w)).first;
          }
          const int64_t d_mlp = it->second.dim(1);
          for (int64_t r = 0; r < d_model; ++r) row[r] = it->second.data<float>()[r * d_mlp + unit];
          defined[i] = true;
        } else if (WritesResidual(info.kind)) {
          row[unit] = 1;
          defined[i] = true;
        }
        break;
      case ScanTargetGroup::Kind::kSaeFeatures:
        if (WritesResidual(info.kind)) {
          GB_ASSIGN_OR_RETURN(Tensor decoder, g.sae->DecoderDirection(unit));
          std::copy_n(decoder.data<float>(), d_model, row);
          defined[i] = true;
        }
        break;
      case ScanTargetGroup::Kind::kDirections:
        if (WritesResidual(info.kind)) {
          std::copy_n(g.directions.data<float>() + int64_t{unit} * d_model, d_model, row);
          defined[i] = true;
        }
        break;
      case ScanTargetGroup::Kind::kHeadNorms:  // a norm, an attention weight: no one direction
      case ScanTargetGroup::Kind::kAttentionTo:
        break;
    }
  }
  return std::pair{out, defined};
}

absl::StatusOr<std::vector<LogitEffects>> ComputeLogitEffects(const Transformer& model,
                                                              const Tensor& directions, int64_t k) {
  const int64_t n = directions.dim(0), d_model = model.config().d_model;
  const Tensor& unembed = model.weights().unembed;
  const int64_t vocab = unembed.dim(0);
  k = std::min(k, vocab);
  std::vector<LogitEffects> effects(n);
  if (n == 0 || k <= 0) return effects;
  if (directions.rank() != 2 || directions.dim(1) != d_model)
    return absl::InvalidArgumentError(absl::StrCat("directions must be [n, ", d_model, "]"));
  Backend& backend = model.backend();
  GB_ASSIGN_OR_RETURN(Tensor x32, backend.Allocate(DType::kF32, {n, d_model}));
  GB_RETURN_IF_ERROR(backend.CopyFromHost(directions, x32));
  Tensor x = x32;
  if (unembed.dtype() != DType::kF32) {
    GB_ASSIGN_OR_RETURN(x, backend.Allocate(unembed.dtype(), {n, d_model}));
    GB_RETURN_IF_ERROR(backend.Convert(x32, x));
  }
  GB_ASSIGN_OR_RETURN(Tensor logits, backend.Allocate(unembed.dtype(), {n, vocab}));
  GB_RETURN_IF_ERROR(backend.Linear(x, unembed, nullptr, Activation::kIdentity, logits));
  GB_ASSIGN_OR_RETURN(auto top, TopOf(backend, logits, k));
  GB_ASSIGN_OR_RETURN(Tensor negated, backend.Allocate(unembed.dtype(), {n, vocab}));
  GB_RETURN_IF_ERROR(backend.Scale(logits, -1.0f, negated));
  GB_ASSIGN_OR_RETURN(auto bottom, TopOf(backend, negated, k));
  for (int64_t i = 0; i < n; ++i) {
    LogitEffects& e = effects[i];
    for (int64_t j = 0; j < k; ++j) {
      e.top_tokens.push_back(top.second.data<int32_t>()[i * k + j]);
      e.top_values.push_back(top.first.data<float>()[i * k + j]);
      e.bottom_tokens.push_back(bottom.second.data<int32_t>()[i * k + j]);
      e.bottom_values.push_back(-bottom.first.data<float>()[i * k + j]);
    }
  }
  return effects;
}

}  // namespace glassbox
