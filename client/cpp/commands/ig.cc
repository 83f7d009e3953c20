// `glassbox ig`: integrated gradients (or input x gradient) of a metric of each row's logits at
// one hook point (docs/gradients.md); printed per row as the attribution summed at each position
// beside the completeness check, and written whole with --out.
#include <cmath>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/errors.h"
#include "client/cpp/cli/out_file.h"
#include "client/cpp/cli/rows.h"
#include "client/cpp/cli/table.h"
#include "client/cpp/commands/gradient_spec.h"

namespace glassbox::cli {
namespace {

using glassbox::v1::IntegratedGradientsRequest;

constexpr Flag kFlags[] = {
    kModelFlag,
    kTextFlag,
    kTokensFlag,
    kPrependBosFlag,
    kGradientMetricFlag,
    kGradientPositionFlag,
    {"hook", FlagKind::kValue, "--hook HOOK",
     "the hook point to attribute to (default hook_embed: the token embeddings)"},
    {"steps", FlagKind::kValue, "--steps N", "points on the path (default 20, at most 1024)"},
    {"method", FlagKind::kValue, "--method METHOD",
     "ig (integrated gradients, the default) or input_x_grad"},
    {"out", FlagKind::kValue, "--out FILE",
     "\"attributions\" (the hook's shape), \"metric\", \"baseline_metric\" [batch]"},
};

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  IntegratedGradientsRequest& request = invocation.request.emplace<IntegratedGradientsRequest>();
  GB_RETURN_IF_ERROR(ParseModelAndRows(line, request));
  GB_RETURN_IF_ERROR(
      ParseGradientMetricFlags(line, "ig", *request.mutable_metric(), invocation));
  request.set_hook(line.raw.Value("hook").value_or("hook_embed"));
  if (line.raw.Has("steps")) {
    GB_ASSIGN_OR_RETURN(int32_t steps, ParseInt32Flag(line.raw, "steps", "", 1));
    request.set_steps(steps);
  }
  const std::string method = line.raw.Value("method").value_or("ig");
  if (method == "input_x_grad") {
    request.set_method(IntegratedGradientsRequest::INPUT_X_GRADIENT);
  } else if (method != "ig") {
    return UsageError(absl::StrFormat("--method: \"%s\" is not ig or input_x_grad", method));
  }
  return ParseOutPath(line, invocation);
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream&) {
  IntegratedGradientsRequest request = Request<IntegratedGradientsRequest>(invocation);
  GB_ASSIGN_OR_RETURN(TokenRows rows,
                      ResolveRows(client, request.model(), *request.mutable_inputs()));
  GB_ASSIGN_OR_RETURN(glassbox::v1::IntegratedGradientsResponse response,
                      client.IntegratedGradients(request));
  GB_RETURN_IF_ERROR(CheckResponseRows(response.metric_size(), rows.size()));
  const bool ig = request.method() == IntegratedGradientsRequest::INTEGRATED_GRADIENTS;
  const glassbox::v1::Array& a = response.attributions();
  out << absl::StrFormat(
      "%s at %s on %s, baseline zeros%s; %d forward and %d backward passes\n",
      ig ? "integrated gradients" : "input x gradient", request.hook(), request.model(),
      ig ? absl::StrFormat(", %d steps", request.steps() > 0 ? request.steps() : 20) : "",
      response.forward_passes(), response.backward_passes());
  for (int b = 0; b < response.metric_size(); ++b) {
    const int64_t seq = static_cast<int64_t>(rows[b].size());
    const std::vector<double> sums = PositionSums(a, b, seq, /*squared=*/false);
    double total = 0;  // padding included: 0 there
    int64_t per_row = 1;
    for (int d = 1; d < a.shape_size(); ++d) per_row *= a.shape(d);
    for (int64_t i = 0; i < per_row; ++i) total += a.values(b * per_row + i);
    const double gap = response.metric(b) - response.baseline_metric(b);
    out << absl::StrFormat(
        "row %d: metric %s, at the baseline %s: difference %s; attributions sum to %s\n", b,
        Number(response.metric(b)), Number(response.baseline_metric(b)), Number(gap),
        Number(total));
    std::vector<std::vector<std::string>> table = {{"pos"}, {"token"}, {"attribution"}};
    for (int64_t p = 0; p < seq; ++p) {
      table[0].push_back(absl::StrCat(p));
      table[1].push_back(absl::StrCat(rows[b][p]));
      table[2].push_back(Number(sums[p]));
    }
    PrintTable(table, out);
  }
  return WriteOutFile(invocation, request.model(), request, out, [&](SafetensorsBuilder& file) {
    const int64_t n = response.metric_size();
    file.AddArray("attributions", a);
    file.AddFloats("metric", {n}, std::vector<float>(response.metric().begin(), response.metric().end()));
    file.AddFloats("baseline_metric", {n}, std::vector<float>(response.baseline_metric().begin(),
                                                              response.baseline_metric().end()));
    file.AddTokenRows(rows);
  });
}

}  // namespace

extern constinit const Command kIgCommand = {
    .name = "ig",
    .brief = "ig --model MODEL ... --metric KIND:TOKENS [--hook HOOK]",
    .synopsis = "ig --model MODEL (--text TEXT | --tokens IDS)...\n"
                "--metric (logit_diff:A:B | logit:T | log_prob:T | loss) [--position -1]\n"
                "[--hook hook_embed] [--steps 20] [--method ig|input_x_grad]\n"
                "[--out FILE.safetensors]",
    .summary = "integrated gradients (or input x gradient) of a logit metric at one hook point,\n"
               "summed per position, with the completeness check",
    .flags = kFlags,
    .flags_heading = "Ig flags:",
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
