#include "server/engine/sae_hooks.h"

#include "absl/strings/str_cat.h"

namespace glassbox {

HookInfo SaeHookInfo(const HookInfo& base, const Sae& sae, SaeHook point) {
  HookInfo info{.name = SaeHookPath(base.name, point), .kind = base.kind, .layer = base.layer};
  const HookDim batch{HookDim::Symbol::kBatch}, pos{HookDim::Symbol::kPos};
  switch (point) {
    case SaeHook::kInput:
    case SaeHook::kRecons:
      info.dims = {batch, pos, {HookDim::Symbol::kFixed, sae.d_in()}};
      info.dim_names = {"batch", "pos", "d_in"};
      break;
    case SaeHook::kActsPre:
    case SaeHook::kActsPost:
      info.dims = {batch, pos, {HookDim::Symbol::kFixed, sae.d_sae()}};
      info.dim_names = {"batch", "pos", "d_sae"};
      break;
    case SaeHook::kError:
    case SaeHook::kOutput:
      info.dims = base.dims;
      info.dim_names = base.dim_names;
      break;
  }
  return info;
}

absl::StatusOr<std::vector<int64_t>> SaeEditTokens(const std::vector<int32_t>& rows,
                                                   const std::vector<int32_t>& positions,
                                                   const TokenLayout& layout, int64_t seq) {
  std::vector<int64_t> tokens;
  if (rows.empty() && positions.empty()) return tokens;
  const int64_t batch = static_cast<int64_t>(layout.real.size());
  std::vector<int32_t> chosen = rows;
  if (chosen.empty()) {
    for (int32_t b = 0; b < batch; ++b) chosen.push_back(b);
  }
  for (int32_t b : chosen) {
    if (b < 0 || b >= batch) {
      return absl::InvalidArgumentError(
          absl::StrCat("row ", b, " is outside the batch [0, ", batch, ")"));
    }
    if (positions.empty()) {
      for (int64_t p = 0; p < seq; ++p) tokens.push_back(b * seq + p);
      continue;
    }
    for (int32_t p : positions) {
      const int32_t index = layout.Index(b, p);
      if (index < 0) {
        return absl::InvalidArgumentError(absl::StrCat("position ", p, " is outside row ", b, " (",
                                                       layout.real[b].size(), " tokens)"));
      }
      tokens.push_back(b * seq + index);
    }
  }
  return tokens;
}

}  // namespace glassbox
