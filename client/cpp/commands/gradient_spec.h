// The --metric flag of the gradient commands (grad, ig): a metric of each row's logits.
#pragma once

#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/cpp/cli/command.h"
#include "glassbox/v1/glassbox.pb.h"

namespace glassbox::cli {

inline constexpr Flag kGradientMetricFlag = {
    "metric", FlagKind::kValue, "--metric KIND:TOKENS",
    "logit_diff:A:B (logit A − logit B), logit:T or log_prob:T, at\n"
    "--position of each row; loss (the row's mean next-token loss); or\n"
    "sae:NAME:FEATURE (that feature of a loaded SAE, at its hook and --position)"};
inline constexpr Flag kGradientPositionFlag = {
    "position", FlagKind::kValue, "--position P",
    "the metric's position (default -1, each row's last token)"};

// --metric (required) and --position into `metric`; the position also into
// `invocation.position`. `command` names the command in the usage error.
absl::Status ParseGradientMetricFlags(const CommandLine& line, std::string_view command,
                                      glassbox::v1::GradientMetric& metric,
                                      Invocation& invocation);

// "logit_diff:A:B", "logit:T", "log_prob:T" or "loss"; a usage error naming the spec otherwise.
absl::StatusOr<glassbox::v1::GradientMetric> ParseGradientMetric(absl::string_view spec);

// Row `row` of a [batch, pos, ...] array summed per position over its other axes (of a
// [batch, head, query, key] pattern or scores array, per query position), `seq` positions;
// `squared` sums the squares (take the root for a norm).
std::vector<double> PositionSums(const glassbox::v1::Array& array, int row, int64_t seq,
                                 bool squared);

}  // namespace glassbox::cli
