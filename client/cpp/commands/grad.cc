// `glassbox grad`: the gradient of a metric of each row's logits at one position with respect to
// the activations at chosen hook points (docs/gradients.md); printed as the gradient's L2 norm at
// each position, hook by hook, and written whole with --out.
#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/errors.h"
#include "client/cpp/cli/out_file.h"
#include "client/cpp/cli/rows.h"
#include "client/cpp/cli/table.h"
#include "client/cpp/commands/gradient_spec.h"
#include "client/cpp/intervention_spec.h"
#include "client/cpp/sae_spec.h"

namespace glassbox::cli {
namespace {

using glassbox::v1::GradientMetric;
using glassbox::v1::GradientsRequest;

constexpr Flag kFlags[] = {
    kModelFlag,
    kTextFlag,
    kTokensFlag,
    kPrependBosFlag,
    kGradientMetricFlag,
    kGradientPositionFlag,
    {"hooks", FlagKind::kRepeated, "--hooks HOOK",
     "a hook name or glob whose gradient is wanted (repeatable), e.g.\n"
     "'blocks.*.hook_resid_pre', or a splice's point: '<hook>.hook_sae_acts_post'"},
    {"intervene", FlagKind::kRepeated, "--intervene SPEC",
     "an edit of the forward pass, as run's (repeatable; docs/interventions.md); the\n"
     "backward goes through it, whatever its kind"},
    {"sae_splice", FlagKind::kRepeated, "--sae_splice NAME[:error_term]",
     "splice SAE NAME in at its hook, as run's (repeatable); the backward goes\n"
     "through its features (nothing reaches the input through the error term, as\n"
     "in sae_lens; its hook_sae_error point has the output's gradient)"},
    {"sae_edit", FlagKind::kRepeated, "--sae_edit NAME:KIND:features=LIST[...]",
     "edit the spliced SAE's features, as run's"},
    {"sae_steer", FlagKind::kRepeated, "--sae_steer NAME:features=LIST[...]",
     "add decoder directions at NAME's hook, as run's"},
    {"out", FlagKind::kValue, "--out FILE",
     "every gradient in full (\"<hook>\", the hook's shape) and \"metric\" [batch]"},
};

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  GradientsRequest& request = invocation.request.emplace<GradientsRequest>();
  GB_RETURN_IF_ERROR(ParseModelAndRows(line, request));
  GB_RETURN_IF_ERROR(
      ParseGradientMetricFlags(line, "grad", *request.mutable_metric(), invocation));
  for (const std::string& hook : line.raw.Values("hooks")) request.add_hooks(hook);
  const ValueLoader load = line.env.load_value ? line.env.load_value : ValueLoader(&LoadValueFile);
  for (const std::string& spec : line.raw.Values("intervene")) {
    GB_ASSIGN_OR_RETURN(*request.add_interventions(), ParseInterventionSpec(spec, load));
  }
  glassbox::v1::RunRequest saes;  // the run command's SAE flags, parsed as run parses them
  GB_RETURN_IF_ERROR(AddSaeFlags(line.raw.Values("sae_splice"), line.raw.Values("sae_edit"),
                                 line.raw.Values("sae_steer"), saes));
  *request.mutable_sae_splices() = saes.sae_splices();
  *request.mutable_sae_steering() = saes.sae_steering();
  if (request.hooks().empty()) {
    return UsageError("grad needs --hooks HOOK (a name or glob, repeatable)");
  }
  return ParseOutPath(line, invocation);
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream&) {
  GradientsRequest request = Request<GradientsRequest>(invocation);
  GB_ASSIGN_OR_RETURN(TokenRows rows,
                      ResolveRows(client, request.model(), *request.mutable_inputs()));
  GB_ASSIGN_OR_RETURN(glassbox::v1::GradientsResponse response, client.Gradients(request));
  GB_RETURN_IF_ERROR(CheckResponseRows(response.metric_size(), rows.size()));
  out << absl::StrFormat(
      "gradients on %s of the metric at position %d of each row; each cell is the L2 norm of "
      "d metric / d activation at one position (summed over the hook's other axes)\n",
      request.model(), invocation.position);
  for (int b = 0; b < response.metric_size(); ++b) {
    out << absl::StrFormat("row %d: metric %s\n", b, Number(response.metric(b)));
    std::vector<std::vector<std::string>> table;
    std::vector<std::string> header = {"hook"};
    const int64_t seq = static_cast<int64_t>(rows[b].size());
    for (int64_t p = 0; p < seq; ++p) header.push_back(absl::StrCat("pos ", p));
    table.push_back(header);
    for (const glassbox::v1::HookGradient& g : response.gradients()) {
      std::vector<std::string> cells = {g.hook()};
      // A norm per position (per query position for patterns and scores).
      const std::vector<double> norms = PositionSums(g.gradient(), b, seq, /*squared=*/true);
      for (double n : norms) cells.push_back(Number(std::sqrt(n)));
      table.push_back(std::move(cells));
    }
    PrintTable(table, out);
  }
  return WriteOutFile(invocation, request.model(), request, out, [&](SafetensorsBuilder& file) {
    const int64_t rows_out = response.metric_size();
    file.AddFloats("metric", {rows_out},
                   std::vector<float>(response.metric().begin(), response.metric().end()));
    for (const glassbox::v1::HookGradient& g : response.gradients()) {
      file.AddArray(g.hook(), g.gradient());
    }
    file.AddTokenRows(rows);
  });
}

}  // namespace

extern constinit const Command kGradCommand = {
    .name = "grad",
    .brief = "grad --model MODEL ... --metric KIND:TOKENS --hooks HOOK...",
    .synopsis = "grad --model MODEL (--text TEXT | --tokens IDS)...\n"
                "--metric (logit_diff:A:B | logit:T | log_prob:T | loss) [--position -1]\n"
                "--hooks HOOK... [--out FILE.safetensors]",
    .summary = "the gradient of a logit metric at chosen hook points (per-position norms)",
    .flags = kFlags,
    .flags_heading = "Grad flags:",
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
