#include "client/cpp/commands/patch_spec.h"

#include <algorithm>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "client/cpp/cli/errors.h"
#include "client/cpp/cli/flags.h"

namespace glassbox::cli {
namespace {

struct SweepName {
  std::string_view name;
  glassbox::v1::SweepKind kind;
};
// The first name of each kind is the one SweepKindName gives.
constexpr SweepName kSweepNames[] = {
    {"resid_pre", glassbox::v1::SWEEP_RESID_PRE},
    {"resid_mid", glassbox::v1::SWEEP_RESID_MID},
    {"resid_post", glassbox::v1::SWEEP_RESID_POST},
    {"attn_out", glassbox::v1::SWEEP_ATTN_OUT},
    {"mlp_out", glassbox::v1::SWEEP_MLP_OUT},
    {"head_out", glassbox::v1::SWEEP_HEAD_OUT_ALL_POS},
    {"head_out_all_pos", glassbox::v1::SWEEP_HEAD_OUT_ALL_POS},
    {"head_out_by_pos", glassbox::v1::SWEEP_HEAD_OUT_BY_POS},
    {"q", glassbox::v1::SWEEP_Q_ALL_POS},
    {"q_all_pos", glassbox::v1::SWEEP_Q_ALL_POS},
    {"k", glassbox::v1::SWEEP_K_ALL_POS},
    {"k_all_pos", glassbox::v1::SWEEP_K_ALL_POS},
    {"v", glassbox::v1::SWEEP_V_ALL_POS},
    {"v_all_pos", glassbox::v1::SWEEP_V_ALL_POS},
    {"pattern", glassbox::v1::SWEEP_ATTN_HEAD_PATTERN_ALL_POS},
    {"pattern_all_pos", glassbox::v1::SWEEP_ATTN_HEAD_PATTERN_ALL_POS},
    {"mlp_post", glassbox::v1::SWEEP_MLP_POST_ALL_POS},
    {"mlp_post_all_pos", glassbox::v1::SWEEP_MLP_POST_ALL_POS},
    {"sae_features", glassbox::v1::SWEEP_SAE_FEATURES},
};

}  // namespace

std::string SweepKindNames() {
  std::vector<std::string> names;
  for (const SweepName& s : kSweepNames) {
    if (SweepKindName(s.kind) == s.name) names.emplace_back(s.name);
  }
  return absl::StrJoin(names, ", ");
}

std::optional<glassbox::v1::SweepKind> ParseSweepKind(std::string_view name) {
  std::string lower = absl::AsciiStrToLower(absl::string_view(name.data(), name.size()));
  std::replace(lower.begin(), lower.end(), '-', '_');
  for (const SweepName& s : kSweepNames) {
    if (s.name == lower) return s.kind;
  }
  return std::nullopt;
}

std::string_view SweepKindName(glassbox::v1::SweepKind kind) {
  for (const SweepName& s : kSweepNames) {
    if (s.kind == kind) return s.name;
  }
  return "?";
}

absl::StatusOr<glassbox::v1::PatchingMetric> ParsePatchingMetric(std::string_view text) {
  glassbox::v1::PatchingMetric metric;
  const size_t colon = text.find(':');
  const std::string name = absl::AsciiStrToLower(
      absl::string_view(text.data(), colon == std::string_view::npos ? text.size() : colon));
  const std::string args =
      colon == std::string_view::npos ? "" : std::string(text.substr(colon + 1));
  auto tokens = [&](size_t n) -> absl::StatusOr<std::vector<int32_t>> {
    if (args.empty()) {
      return UsageError(absl::StrFormat("--metric %s needs %s", name,
                                        n == 2 ? "two token ids: logit_diff:A,B"
                                               : "a token id: log_prob:A"));
    }
    GB_ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseIntList("metric", {args}, 0));
    if (ids.size() != n) {
      return UsageError(absl::StrFormat("--metric %s takes %d token id%s, got %d", name, n,
                                        n == 1 ? "" : "s", ids.size()));
    }
    return ids;
  };
  if (name == "logit_diff") {
    GB_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tokens(2));
    metric.set_kind(glassbox::v1::PatchingMetric::LOGIT_DIFF);
    metric.set_token_a(ids[0]);
    metric.set_token_b(ids[1]);
  } else if (name == "log_prob") {
    GB_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tokens(1));
    metric.set_kind(glassbox::v1::PatchingMetric::LOG_PROB);
    metric.set_token_a(ids[0]);
  } else if (name == "loss") {
    if (!args.empty()) return UsageError("--metric loss takes no tokens");
    metric.set_kind(glassbox::v1::PatchingMetric::LOSS);
  } else {
    return UsageError(absl::StrFormat(
        "--metric: \"%s\" is not one of logit_diff:A,B, log_prob:A, loss", text));
  }
  return metric;
}

}  // namespace glassbox::cli
