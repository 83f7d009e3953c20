// Sae::Splice: the SAE at its hook during a forward pass, with feature edits, the error term and
// the hook_sae_* captures. Follows sae_lens's SAE.forward:
//
//   feature_acts = encode(x)            hooks: input, acts_pre, acts_post (the edits act here)
//   sae_out = decode(feature_acts)      hook: recons
//   if use_error_term:
//     clean = decode(encode(x)) with hooks disabled (no edits)
//     sae_out = sae_out + hook_sae_error(x − clean)
//   return hook_sae_output(sae_out)
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/engine/sae/sae.h"
#include "server/engine/sae/sae_stats.h"

namespace glassbox {
namespace {

// An edit resolved for fast application: sorted unique features, and which tokens it touches.
struct ResolvedEdit {
  FeatureEditKind kind;
  float value;
  std::vector<int32_t> features;
  std::vector<uint8_t> token_mask;  // empty = every token
};

absl::StatusOr<std::vector<ResolvedEdit>> ResolveEdits(const std::vector<FeatureEdit>& edits,
                                                       int64_t d_sae, int64_t tokens) {
  std::vector<ResolvedEdit> out;
  for (size_t e = 0; e < edits.size(); ++e) {
    const FeatureEdit& edit = edits[e];
    const std::string where = absl::StrCat("feature edit ", e, ": ");
    if (edit.features.empty()) {
      return absl::InvalidArgumentError(where + "names no features");
    }
    if (edit.kind != FeatureEditKind::kZero && !std::isfinite(edit.value)) {
      return absl::InvalidArgumentError(where + "value is not finite");
    }
    ResolvedEdit r{edit.kind, edit.value, edit.features, {}};
    for (int32_t f : r.features) {
      if (f < 0 || f >= d_sae) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "feature ", f, " is out of range [0, ", d_sae, ")"));
      }
    }
    std::sort(r.features.begin(), r.features.end());
    r.features.erase(std::unique(r.features.begin(), r.features.end()), r.features.end());
    if (!edit.tokens.empty()) {
      r.token_mask.assign(tokens, 0);
      for (int64_t t : edit.tokens) {
        if (t < 0 || t >= tokens) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, "token ", t, " is out of range [0, ", tokens,
              ") (tokens index the input's rows flattened over its leading dims)"));
        }
        r.token_mask[t] = 1;
      }
    }
    out.push_back(std::move(r));
  }
  return out;
}

void ApplyEdits(const std::vector<ResolvedEdit>& edits, int64_t r0, int64_t n, int64_t d_sae,
                float* acts) {
  for (const ResolvedEdit& e : edits) {
    for (int64_t r = 0; r < n; ++r) {
      if (!e.token_mask.empty() && !e.token_mask[r0 + r]) continue;
      float* a = acts + r * d_sae;
      for (int32_t f : e.features) {
        switch (e.kind) {
          case FeatureEditKind::kZero: a[f] = 0.0f; break;
          case FeatureEditKind::kClamp: a[f] = e.value; break;
          case FeatureEditKind::kScale: a[f] *= e.value; break;
          case FeatureEditKind::kAdd: a[f] += e.value; break;
        }
      }
    }
  }
}

Shape WithLast(Shape lead, int64_t last) {
  lead.push_back(last);
  return lead;
}

}  // namespace

absl::StatusOr<SpliceResult> Sae::Splice(const Tensor& x, const SpliceOptions& options) const {
  GB_ASSIGN_OR_RETURN(auto token_shape, TokenShape(x));
  auto [rows, lead] = std::move(token_shape);
  GB_ASSIGN_OR_RETURN(std::vector<ResolvedEdit> edits, ResolveEdits(options.edits, d_sae(), rows));
  const bool has_edits = !edits.empty();
  const int64_t d = d_in(), f = d_sae();
  auto wants = [&](SaeHook h) { return options.capture[static_cast<int>(h)]; };

  SpliceResult result;
  result.output = Tensor::EmptyHost(DType::kF32, x.shape());
  Tensor& cap_input = result.captured[static_cast<int>(SaeHook::kInput)];
  Tensor& cap_pre = result.captured[static_cast<int>(SaeHook::kActsPre)];
  Tensor& cap_post = result.captured[static_cast<int>(SaeHook::kActsPost)];
  Tensor& cap_recons = result.captured[static_cast<int>(SaeHook::kRecons)];
  Tensor& cap_error = result.captured[static_cast<int>(SaeHook::kError)];
  if (wants(SaeHook::kInput)) {
    cap_input = Tensor::EmptyHost(DType::kF32, WithLast(lead, d));
    std::memcpy(cap_input.raw_data(), x.raw_data(), x.nbytes());
  }
  if (wants(SaeHook::kActsPre)) cap_pre = Tensor::EmptyHost(DType::kF32, WithLast(lead, f));
  if (wants(SaeHook::kActsPost)) cap_post = Tensor::EmptyHost(DType::kF32, WithLast(lead, f));
  if (wants(SaeHook::kRecons)) cap_recons = Tensor::EmptyHost(DType::kF32, WithLast(lead, d));
  if (wants(SaeHook::kError) && options.use_error_term) {
    cap_error = Tensor::EmptyHost(DType::kF32, x.shape());
  }

  const bool need_clean = options.use_error_term || options.compute_stats;
  const int64_t tile = std::min(TileRows(), std::max<int64_t>(rows, 1));
  std::vector<float> sae_in(tile * d), scale(tile), shift(tile);
  std::vector<float> clean(tile * f);
  std::vector<float> edited(has_edits && !wants(SaeHook::kActsPost) ? tile * f : 0);
  std::vector<float> recons_scratch(wants(SaeHook::kRecons) ? 0 : tile * d);
  std::vector<float> clean_out(need_clean && has_edits ? tile * d : 0);
  std::vector<int64_t> l0(tile);
  ReconstructionStatsAccumulator stats(d);

  const float* xs = x.data<float>();
  float* out = result.output.data<float>();
  for (int64_t r0 = 0; r0 < rows; r0 += tile) {
    const int64_t n = std::min(tile, rows - r0);
    const float* x_rows = xs + r0 * d;
    float* out_rows = out + r0 * d;
    PrepareInput(x_rows, n, sae_in.data(), scale.data(), shift.data());

    // acts_pre goes to its capture (else is computed in place); the clean acts_post to `clean`.
    float* pre = wants(SaeHook::kActsPre) ? cap_pre.data<float>() + r0 * f : clean.data();
    EncodeRows(sae_in.data(), n, pre, clean.data());

    // hook_sae_acts_post: the edited activations.
    float* post = clean.data();
    if (wants(SaeHook::kActsPost) || has_edits) {
      post = wants(SaeHook::kActsPost) ? cap_post.data<float>() + r0 * f : edited.data();
      std::memcpy(post, clean.data(), n * f * sizeof(float));
      ApplyEdits(edits, r0, n, f, post);
    }

    // hook_sae_recons, then the output normalisation undone: the SAE's output.
    float* recons = wants(SaeHook::kRecons) ? cap_recons.data<float>() + r0 * d
                                            : recons_scratch.data();
    DecodeRows(post, n, recons);
    std::memcpy(out_rows, recons, n * d * sizeof(float));
    UndoNorm(out_rows, n, scale.data(), shift.data());

    if (!need_clean) continue;
    // The clean reconstruction (hooks disabled in sae_lens): the same as the output when there
    // are no edits.
    const float* clean_rows = out_rows;
    if (has_edits) {
      DecodeRows(clean.data(), n, clean_out.data());
      UndoNorm(clean_out.data(), n, scale.data(), shift.data());
      clean_rows = clean_out.data();
    }
    if (options.compute_stats) {
      for (int64_t r = 0; r < n; ++r) {
        int64_t count = 0;
        for (int64_t j = 0; j < f; ++j) count += clean[r * f + j] != 0.0f;
        l0[r] = count;
      }
      stats.Add(x_rows, clean_rows, n, std::span<const int64_t>(l0.data(), n));
    }
    if (options.use_error_term) {
      float* error = cap_error.defined() ? cap_error.data<float>() + r0 * d : nullptr;
      for (int64_t i = 0; i < n * d; ++i) {
        const float e = x_rows[i] - clean_rows[i];
        if (error) error[i] = e;
        out_rows[i] += e;  // clean_rows may alias out_rows: e is read before the write
      }
    }
  }
  if (options.compute_stats) result.stats = stats.Finish();
  result.captured[static_cast<int>(SaeHook::kOutput)] = result.output;
  return result;
}

}  // namespace glassbox
