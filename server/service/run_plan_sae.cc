// The SAE parts of a RunRequest: splices (with feature edits and hook_sae_* captures) and
// decoder-direction steering, checked and translated into engine terms.
#include <algorithm>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/engine/sae_hooks.h"
#include "server/service/run_plan.h"

namespace glassbox {
namespace {

namespace pb = ::glassbox::v1;

// The SAE a splice or steering entry names, which must be attached to the request's model.
absl::StatusOr<const ServedSae*> FindSaeFor(const ModelStore& store, const RunPlan& plan,
                                            const std::string& name, absl::string_view where) {
  auto sae = store.FindSae(name);
  if (!sae.ok()) return absl::NotFoundError(absl::StrCat(where, ": ", sae.status().message()));
  if ((*sae)->served_model != plan.model) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": SAE \"", name, "\" is attached to model \"",
                     (*sae)->served_model->name, "\", not \"", plan.model->name, "\""));
  }
  return *sae;
}

absl::Status CheckFeatures(const google::protobuf::RepeatedField<int32_t>& features, const Sae& sae,
                           absl::string_view where) {
  if (features.empty())
    return absl::InvalidArgumentError(absl::StrCat(where, ": list at least one feature"));
  for (int32_t f : features) {
    if (f < 0 || f >= sae.d_sae()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": feature ", f, " is outside [0, ",
                                                     sae.d_sae(), ") (d_sae of this SAE)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<FeatureEditKind> FromProtoEditKind(pb::FeatureEditKind kind,
                                                  absl::string_view where) {
  switch (kind) {
    case pb::FEATURE_EDIT_ZERO:
      return FeatureEditKind::kZero;
    case pb::FEATURE_EDIT_CLAMP:
      return FeatureEditKind::kClamp;
    case pb::FEATURE_EDIT_SCALE:
      return FeatureEditKind::kScale;
    case pb::FEATURE_EDIT_ADD:
      return FeatureEditKind::kAdd;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": set kind (ZERO, CLAMP, SCALE or ADD)"));
  }
}

std::vector<int32_t> Ints(const google::protobuf::RepeatedField<int32_t>& values) {
  return {values.begin(), values.end()};
}

bool IsGlob(absl::string_view pattern) {
  return pattern.find_first_of("*?") != absl::string_view::npos;
}

}  // namespace

bool IsSaeCapture(absl::string_view pattern) { return absl::StrContains(pattern, ".hook_sae_"); }

absl::Status AddSaeSteering(const pb::RunRequest& request, const ModelStore& store, RunPlan& plan) {
  const TokenLayout layout = TokenLayout::FromMask(plan.attention_mask);
  for (int i = 0; i < request.sae_steering_size(); ++i) {
    const pb::SaeSteering& steer = request.sae_steering(i);
    const std::string where = absl::StrCat("sae_steering[", i, "] \"", steer.sae(), "\"");
    GB_ASSIGN_OR_RETURN(const ServedSae* served, FindSaeFor(store, plan, steer.sae(), where));
    GB_RETURN_IF_ERROR(CheckFeatures(steer.features(), *served->sae, where));
    if (steer.coefficients_size() != steer.features_size()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": give one coefficient per feature (",
                                                     steer.features_size(), " features, ",
                                                     steer.coefficients_size(), " coefficients)"));
    }
    std::vector<std::pair<int32_t, float>> terms;
    for (int j = 0; j < steer.features_size(); ++j)
      terms.push_back({steer.features(j), steer.coefficients(j)});
    Intervention edit{.hook = served->hook,
                      .kind = InterventionKind::kAdd,
                      .select = {.rows = Ints(steer.rows()), .positions = Ints(steer.positions())}};
    GB_ASSIGN_OR_RETURN(edit.value, served->sae->SteeringVector(terms));
    const HookInfo& info = plan.model->model->hooks().info(served->hook);
    if (absl::Status s =
            ValidateIntervention(edit, info, plan.tokens.dim(0), plan.tokens.dim(1), layout);
        !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", s.message()));
    }
    plan.interventions.push_back(std::move(edit));
  }
  return absl::OkStatus();
}

absl::Status AddSaeSplices(const pb::RunRequest& request, const ModelStore& store,
                           const std::vector<CaptureSpec>& sae_captures, RunPlan& plan) {
  const HookRegistry& hooks = plan.model->model->hooks();
  const TokenLayout layout = TokenLayout::FromMask(plan.attention_mask);
  const int64_t batch = plan.tokens.dim(0), seq = plan.tokens.dim(1);
  const int32_t shortest = *std::min_element(plan.lengths.begin(), plan.lengths.end());
  for (int i = 0; i < request.sae_splices_size(); ++i) {
    const pb::SaeSplice& in = request.sae_splices(i);
    const std::string where = absl::StrCat("sae_splices[", i, "] \"", in.sae(), "\"");
    GB_ASSIGN_OR_RETURN(const ServedSae* served, FindSaeFor(store, plan, in.sae(), where));
    const HookInfo& info = hooks.info(served->hook);
    if (plan.stop_at_layer >= 0 && info.layer >= plan.stop_at_layer) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": its hook ", info.name,
                                                     " is never reached with stop_at_layer ",
                                                     plan.stop_at_layer));
    }
    for (const auto& [hook, other] : plan.splices) {
      if (hook == served->hook) {
        return absl::InvalidArgumentError(absl::StrCat(where,
                                                       ": another SAE is already spliced at ",
                                                       info.name, "; splice at most one per hook"));
      }
    }
    SaeSplice splice{.sae = served->sae.get()};
    splice.options.use_error_term = in.use_error_term();
    for (int j = 0; j < in.edits_size(); ++j) {
      const pb::FeatureEdit& e = in.edits(j);
      const std::string edit_where = absl::StrCat(where, " edits[", j, "]");
      FeatureEdit edit{.value = e.value()};
      GB_ASSIGN_OR_RETURN(edit.kind, FromProtoEditKind(e.kind(), edit_where));
      GB_RETURN_IF_ERROR(CheckFeatures(e.features(), *served->sae, edit_where));
      edit.features = Ints(e.features());
      auto tokens = SaeEditTokens(Ints(e.rows()), Ints(e.positions()), layout, seq);
      if (!tokens.ok())
        return absl::InvalidArgumentError(
            absl::StrCat(edit_where, ": ", tokens.status().message()));
      edit.tokens = *std::move(tokens);
      splice.options.edits.push_back(std::move(edit));
    }
    plan.splices.push_back({served->hook, std::move(splice)});
  }

  // hook_sae_* captures: ids past the registry's, hooks.size() + kNumSaeHooks * splice + point.
  for (const CaptureSpec& spec : sae_captures) {
    bool matched = false;
    for (size_t s = 0; s < plan.splices.size(); ++s) {
      auto& [hook, splice] = plan.splices[s];
      const HookInfo& base = hooks.info(hook);
      for (int p = 0; p < kNumSaeHooks; ++p) {
        const SaeHook point = static_cast<SaeHook>(p);
        const std::string name = SaeHookPath(base.name, point);
        if (!GlobMatch(spec.hook, name)) continue;
        if (!spec.layers.empty() &&
            std::find(spec.layers.begin(), spec.layers.end(), base.layer) == spec.layers.end()) {
          continue;
        }
        if (point == SaeHook::kError && !splice.options.use_error_term) {
          if (!IsGlob(spec.hook)) {
            return absl::InvalidArgumentError(absl::StrCat(
                "capture \"", spec.hook, "\": hook_sae_error exists only with use_error_term"));
          }
          continue;
        }
        matched = true;
        const HookId id = hooks.size() + static_cast<HookId>(s) * kNumSaeHooks + p;
        splice.capture_ids[p] = id;
        splice.capture_infos[p] = SaeHookInfo(base, *splice.sae, point);
        splice.options.capture[p] = true;
        GB_ASSIGN_OR_RETURN(ResolvedCapture rc, ResolveCaptureAt(id, splice.capture_infos[p], spec,
                                                                 batch, seq, shortest));
        plan.captures.push_back(std::move(rc));
      }
    }
    if (!matched) {
      return absl::InvalidArgumentError(absl::StrCat(
          "capture \"", spec.hook, "\" matches no hook_sae_* point of this request's splices (",
          plan.splices.empty() ? std::string("there are none; add sae_splices")
                               : absl::StrCat(plan.splices.size(), " spliced"),
          "); names are <hook>.hook_sae_input|acts_pre|acts_post|recons|error|output"));
    }
  }
  // Stream order is forward order: at a spliced hook its hook_sae_* points come first (in
  // sae_lens's order), then the hook's own captures, which see the spliced value.
  auto order = [&](const ResolvedCapture& rc) {
    if (rc.hook < hooks.size()) return std::make_tuple(rc.hook, kNumSaeHooks);
    const int virtual_index = rc.hook - hooks.size();
    return std::make_tuple(plan.splices[virtual_index / kNumSaeHooks].first,
                           virtual_index % kNumSaeHooks);
  };
  std::stable_sort(
      plan.captures.begin(), plan.captures.end(),
      [&](const ResolvedCapture& a, const ResolvedCapture& b) { return order(a) < order(b); });
  return absl::OkStatus();
}

}  // namespace glassbox
