#include "client/cpp/commands/gradient_spec.h"

#include <climits>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "client/cpp/cli/errors.h"
#include "client/cpp/cli/flags.h"

namespace glassbox::cli {

using glassbox::v1::GradientMetric;

absl::StatusOr<GradientMetric> ParseGradientMetric(absl::string_view spec) {
  const std::vector<absl::string_view> parts = absl::StrSplit(spec, ':');
  GradientMetric metric;
  const bool diff = parts[0] == "logit_diff";
  if (parts[0] == "loss") {
    if (parts.size() != 1) {
      return UsageError(absl::StrFormat("--metric \"%s\": loss takes no tokens", spec));
    }
    metric.set_kind(GradientMetric::LOSS);
    return metric;
  }
  if (parts[0] == "sae") {
    int32_t feature = -1;
    if (parts.size() != 3 || parts[1].empty() || !absl::SimpleAtoi(parts[2], &feature) ||
        feature < 0) {
      return UsageError(absl::StrFormat("--metric \"%s\": expected sae:NAME:FEATURE", spec));
    }
    metric.set_kind(GradientMetric::SAE_FEATURE);
    metric.set_sae(std::string(parts[1]));
    metric.set_feature(feature);
    return metric;
  }
  if (parts[0] == "logit_diff") {
    metric.set_kind(GradientMetric::LOGIT_DIFF);
  } else if (parts[0] == "logit") {
    metric.set_kind(GradientMetric::LOGIT);
  } else if (parts[0] == "log_prob") {
    metric.set_kind(GradientMetric::LOG_PROB);
  } else {
    return UsageError(absl::StrFormat(
        "--metric \"%s\": the kind is logit_diff, logit, log_prob, loss or sae", spec));
  }
  if (parts.size() != (diff ? 3u : 2u)) {
    return UsageError(absl::StrFormat("--metric \"%s\": expected %s", spec,
                                      diff ? "logit_diff:A:B" : absl::StrCat(parts[0], ":T")));
  }
  int32_t a = -1, b = -1;
  if (!absl::SimpleAtoi(parts[1], &a) || a < 0 ||
      (diff && (!absl::SimpleAtoi(parts[2], &b) || b < 0))) {
    return UsageError(absl::StrFormat("--metric \"%s\": tokens are ids >= 0", spec));
  }
  metric.set_token_a(a);
  if (diff) metric.set_token_b(b);
  return metric;
}

absl::Status ParseGradientMetricFlags(const CommandLine& line, std::string_view command,
                                      GradientMetric& metric, Invocation& invocation) {
  const std::optional<std::string> spec = line.raw.Value("metric");
  if (!spec.has_value()) {
    return UsageError(
        absl::StrCat(absl::string_view(command.data(), command.size()),
                     " needs --metric logit_diff:A:B, logit:T, log_prob:T, loss or sae:NAME:FEATURE"));
  }
  GB_ASSIGN_OR_RETURN(metric, ParseGradientMetric(*spec));
  GB_ASSIGN_OR_RETURN(invocation.position, ParseInt32Flag(line.raw, "position", "-1", INT32_MIN));
  metric.set_position(invocation.position);
  return absl::OkStatus();
}

std::vector<double> PositionSums(const glassbox::v1::Array& a, int row, int64_t seq,
                                 bool squared) {
  const bool square = a.shape_size() == 4 && a.dim_names_size() == 4 && a.dim_names(1) == "head_index";
  int64_t per_row = 1;
  for (int d = 1; d < a.shape_size(); ++d) per_row *= a.shape(d);
  const float* values = a.values().data() + row * per_row;
  std::vector<double> sums(seq, 0.0);
  for (int64_t i = 0; i < per_row; ++i) {
    const int64_t p = square ? (i / a.shape(3)) % a.shape(2) : i / (per_row / a.shape(1));
    if (p < seq) sums[p] += squared ? double{values[i]} * values[i] : values[i];
  }
  return sums;
}

}  // namespace glassbox::cli
