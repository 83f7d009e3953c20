// The vocabulary of `glassbox patch`: sweep kinds and patching metrics by their CLI names.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "glassbox/v1/glassbox.pb.h"

namespace glassbox::cli {

// A sweep kind by its CLI name: resid_pre, resid_mid, resid_post, attn_out, mlp_out, head_out
// (or head_out_all_pos), head_out_by_pos, q, k, v (or q_all_pos, ...), pattern (or
// pattern_all_pos). nullopt otherwise.
std::optional<glassbox::v1::SweepKind> ParseSweepKind(std::string_view name);
// The CLI name of a sweep kind ("head_out_by_pos").
std::string_view SweepKindName(glassbox::v1::SweepKind kind);
// Every kind's CLI name, comma-separated, for messages.
std::string SweepKindNames();
// A patching metric: "logit_diff:A,B", "log_prob:A" or "loss". INVALID_ARGUMENT otherwise.
absl::StatusOr<glassbox::v1::PatchingMetric> ParsePatchingMetric(std::string_view text);

}  // namespace glassbox::cli
