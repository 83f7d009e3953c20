// `glassbox patch`: an activation-patching sweep (clean vs corrupted, batched on the server);
// prints the metric per cell, rows = layers. `glassbox attrib-patch` (or `patch --method
// attribution`): the same sweep estimated by attribution patching.
#include <algorithm>
#include <any>
#include <cmath>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "client/cpp/arrays.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/errors.h"
#include "client/cpp/cli/out_file.h"
#include "client/cpp/cli/rows.h"
#include "client/cpp/cli/table.h"
#include "client/cpp/commands/patch_spec.h"

namespace glassbox::cli {
namespace {

using glassbox::v1::PatchingSweepRequest;

constexpr Flag kFlags[] = {
    kModelFlag,
    kPrependBosFlag,
    {"clean_text", FlagKind::kRepeated,
     "--clean-text T, --corrupted-text T, --clean-tokens IDS, --corrupted-tokens IDS"},
    {"corrupted_text", FlagKind::kRepeated},
    {"clean_tokens", FlagKind::kRepeated},
    {"corrupted_tokens", FlagKind::kRepeated},
    {"kind", FlagKind::kValue, "--kind KIND",
     "resid_pre, resid_mid, resid_post, attn_out, mlp_out ([layer, pos]);\n"
     "head_out ([layer, head], hook_z at all positions);\n"
     "head_out_by_pos ([layer, pos, head]); q, k, v ([layer, head]);\n"
     "pattern ([layer, head], hook_pattern: every query and key);\n"
     "mlp_post ([layer, neuron], one neuron at every position);\n"
     "sae_features ([pos, feature] of --sae NAME; attribution only)"},
    {"sae", FlagKind::kValue, "--sae NAME",
     "the SAE of --kind sae_features (`glassbox saes` lists them)"},
    {"method", FlagKind::kValue, "--method METHOD",
     "exact (default: a patched forward pass per cell) or attribution\n"
     "(AtP: (clean - corrupted) . gradient, 2 forward + 1 backward passes)"},
    {"metric", FlagKind::kValue, "--metric METRIC",
     "logit_diff:A,B (logit[A] - logit[B] at the last position),\n"
     "log_prob:A (log p(A) at the last position), loss (mean next-token\n"
     "loss); averaged over the pairs"},
    {"normalized", FlagKind::kBool, "--normalized",
     "print (m - m_corrupted) / (m_clean - m_corrupted) instead of m"},
    {"max_rows_per_pass", FlagKind::kValue, "--max_rows_per_pass N",
     "rows per batched forward pass (default: the server's)"},
    {"out", FlagKind::kValue, "--out FILE",
     "\"values\", \"normalized\", \"clean_metric\", \"corrupted_metric\""},
};

int InputRows(const glassbox::v1::Inputs& inputs) {
  return inputs.texts_size() + inputs.token_ids_size();
}

// The clean and corrupted rows, in pairs. --prepend_bos applies to whichever side has texts.
absl::Status ParsePairs(const CommandLine& line, PatchingSweepRequest& request) {
  const bool any_text = line.raw.Has("clean_text") || line.raw.Has("corrupted_text");
  GB_RETURN_IF_ERROR(
      ParseRowInputs(line, {"clean_text", "clean_tokens"}, *request.mutable_clean(), any_text));
  GB_RETURN_IF_ERROR(ParseRowInputs(line, {"corrupted_text", "corrupted_tokens"},
                                    *request.mutable_corrupted(), any_text));
  const int clean_rows = InputRows(request.clean());
  const int corrupted_rows = InputRows(request.corrupted());
  if (clean_rows != corrupted_rows) {
    return UsageError(
        absl::StrFormat("patch pairs clean and corrupted rows: got %d clean and %d corrupted",
                        clean_rows, corrupted_rows));
  }
  return absl::OkStatus();
}

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  const RawCommandLine& raw = line.raw;
  PatchingSweepRequest& request = invocation.request.emplace<PatchingSweepRequest>();
  GB_ASSIGN_OR_RETURN(std::string model, RequiredModel(line));
  request.set_model(model);
  GB_RETURN_IF_ERROR(ParsePairs(line, request));
  const std::optional<std::string> kind = raw.Value("kind");
  if (!kind.has_value()) {
    return UsageError(absl::StrFormat("patch needs --kind (%s)", SweepKindNames()));
  }
  std::optional<glassbox::v1::SweepKind> sweep = ParseSweepKind(*kind);
  if (!sweep.has_value()) {
    return UsageError(absl::StrFormat("--kind: \"%s\" is not one of %s", *kind, SweepKindNames()));
  }
  request.set_kind(*sweep);
  if (raw.Has("sae")) request.set_sae(*raw.Value("sae"));
  if ((*sweep == glassbox::v1::SWEEP_SAE_FEATURES) != raw.Has("sae")) {
    return UsageError("--kind sae_features and --sae NAME go together");
  }
  const std::optional<std::string> metric = raw.Value("metric");
  if (!metric.has_value()) {
    return UsageError("patch needs --metric (logit_diff:A,B, log_prob:A or loss)");
  }
  GB_ASSIGN_OR_RETURN(*request.mutable_metric(), ParsePatchingMetric(*metric));
  if (const std::optional<std::string> method = raw.Value("method"); method.has_value()) {
    if (*method == "attribution" || *method == "atp") {
      request.set_method(glassbox::v1::PATCHING_ATTRIBUTION);
    } else if (*method != "exact") {
      return UsageError(absl::StrFormat("--method: \"%s\" is not exact or attribution", *method));
    }
  }
  invocation.print_normalized = raw.IsTrue("normalized");
  if (raw.Has("max_rows_per_pass")) {
    GB_ASSIGN_OR_RETURN(int32_t rows, ParseInt32Flag(raw, "max_rows_per_pass", "", 1));
    request.set_max_rows_per_pass(rows);
  }
  return ParseOutPath(line, invocation);
}

std::string MetricString(const glassbox::v1::PatchingMetric& metric) {
  switch (metric.kind()) {
    case glassbox::v1::PatchingMetric::LOGIT_DIFF:
      return absl::StrFormat("logit[%d] - logit[%d] at the last position", metric.token_a(),
                             metric.token_b());
    case glassbox::v1::PatchingMetric::LOG_PROB:
      return absl::StrFormat("log p(%d) at the last position", metric.token_a());
    case glassbox::v1::PatchingMetric::LOSS:
      return "mean next-token loss";
    default:
      return "?";
  }
}

// The [layer, col] or [layer, middle, col] matrix, a table row per layer (and middle index).
void PrintMatrix(const glassbox::v1::Array& shown, std::ostream& out) {
  const int rank = shown.shape_size();
  auto dim_name = [&](int d, std::string_view fallback) {
    return d < shown.dim_names_size() ? shown.dim_names(d) : std::string(fallback);
  };
  const std::string col = dim_name(rank - 1, rank == 3 ? "head" : "pos");
  const int64_t layers = shown.shape(0);
  const int64_t cols = shown.shape(rank - 1);
  const int64_t middle = rank == 3 ? shown.shape(1) : 1;
  std::vector<std::vector<std::string>> table;
  std::vector<std::string> header = {rank == 3 ? absl::StrCat("layer ", dim_name(1, "pos"))
                                               : std::string("layer")};
  for (int64_t c = 0; c < cols; ++c) header.push_back(absl::StrCat(col, " ", c));
  table.push_back(header);
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t m = 0; m < middle; ++m) {
      std::vector<std::string> row = {rank == 3 ? absl::StrCat(l, " ", m) : absl::StrCat(l)};
      for (int64_t c = 0; c < cols; ++c) {
        row.push_back(
            Number(rank == 3 ? client::FloatAt(shown, {l, m, c}) : client::FloatAt(shown, {l, c})));
      }
      table.push_back(std::move(row));
    }
  }
  PrintTable(table, out);
}

// A [layer, neuron] map is too wide for a table: its largest cells, by |normalized effect|.
// `error_column`: the last index of the second axis is an SAE's error node, shown as "error".
void PrintTopCells(const glassbox::v1::Array& shown, const glassbox::v1::Array& normalized,
                   bool error_column, std::ostream& out) {
  constexpr int64_t kShown = 20;
  const int64_t layers = shown.shape(0), neurons = shown.shape(1);
  std::vector<std::pair<int64_t, int64_t>> cells;
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t n = 0; n < neurons; ++n) cells.emplace_back(l, n);
  }
  auto effect = [&](const std::pair<int64_t, int64_t>& c) {
    return std::abs(client::FloatAt(normalized, {c.first, c.second}));
  };
  const int64_t count = std::min<int64_t>(kShown, static_cast<int64_t>(cells.size()));
  std::partial_sort(cells.begin(), cells.begin() + count, cells.end(),
                    [&](const auto& a, const auto& b) { return effect(a) > effect(b); });
  out << absl::StrFormat("the %d largest of %d cells:\n", count, cells.size());
  std::vector<std::vector<std::string>> table = {{shown.dim_names(0), shown.dim_names(1), "value"}};
  for (int64_t i = 0; i < count; ++i) {
    const bool error = error_column && cells[i].second == neurons - 1;
    table.push_back({absl::StrCat(cells[i].first),
                     error ? std::string("error") : absl::StrCat(cells[i].second),
                     Number(client::FloatAt(shown, {cells[i].first, cells[i].second}))});
  }
  PrintTable(table, out);
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream& err) {
  const PatchingSweepRequest& request = Request<PatchingSweepRequest>(invocation);
  GB_ASSIGN_OR_RETURN(glassbox::v1::PatchingSweepResponse response, client.PatchingSweep(request));
  const int pairs = InputRows(request.clean());
  const bool attribution = request.method() == glassbox::v1::PATCHING_ATTRIBUTION;
  out << absl::StrFormat(
      "%s %s on %s: %d prompt pair%s, metric %s\n",
      attribution ? "attribution patching (AtP estimate of the sweep)" : "patching sweep",
      SweepKindName(request.kind()), request.model(), pairs, pairs == 1 ? "" : "s",
      MetricString(request.metric()));
  const std::string passes =
      response.backward_passes() > 0
          ? absl::StrFormat("%d forward and %d backward passes", response.forward_passes(),
                            response.backward_passes())
          : absl::StrFormat("%d forward passes", response.forward_passes());
  out << absl::StrFormat("clean %.4f, corrupted %.4f; %s, %.3f s\n", response.clean_metric(),
                         response.corrupted_metric(), passes, response.seconds());
  const glassbox::v1::Array& shown =
      invocation.print_normalized ? response.normalized() : response.values();
  out << (invocation.print_normalized
              ? "normalized effect (m - m_corrupted) / (m_clean - m_corrupted)"
              : "metric m with the cell's clean activation patched into the corrupted run")
      << (attribution ? " (estimated)" : "")
      << absl::StrFormat(", [%s]:\n", absl::StrJoin(shown.dim_names(), ", "));
  if (request.kind() == glassbox::v1::SWEEP_MLP_POST_ALL_POS ||
      request.kind() == glassbox::v1::SWEEP_SAE_FEATURES) {
    PrintTopCells(shown, response.normalized(), request.kind() == glassbox::v1::SWEEP_SAE_FEATURES,
                  out);
  } else {
    PrintMatrix(shown, out);
  }
  return WriteOutFile(invocation, request.model(), request, out, [&](SafetensorsBuilder& file) {
    file.AddArray("values", response.values());
    file.AddArray("normalized", response.normalized());
    file.AddFloats("clean_metric", {1}, {static_cast<float>(response.clean_metric())});
    file.AddFloats("corrupted_metric", {1}, {static_cast<float>(response.corrupted_metric())});
    file.AddLabels("glassbox.dim_names", response.values().dim_names());
    file.metadata["glassbox.forward_passes"] = absl::StrCat(response.forward_passes());
    file.metadata["glassbox.method"] = attribution ? "attribution" : "exact";
  });
}

absl::Status ParseAttribution(const CommandLine& line, Invocation& invocation) {
  if (line.raw.Has("method")) {
    return UsageError("attrib-patch is patch --method attribution: drop --method");
  }
  GB_RETURN_IF_ERROR(Parse(line, invocation));
  std::any_cast<PatchingSweepRequest>(&invocation.request)
      ->set_method(glassbox::v1::PATCHING_ATTRIBUTION);
  return absl::OkStatus();
}

}  // namespace

extern constinit const Command kPatchCommand = {
    .name = "patch",
    .brief = "patch --model MODEL ...",
    .synopsis =
        "patch --model MODEL\n"
        "(--clean-text T --corrupted-text T |\n"
        " --clean-tokens IDS --corrupted-tokens IDS)...\n"
        "--kind KIND --metric METRIC [--normalized]\n"
        "[--method exact|attribution] [--max_rows_per_pass N]\n"
        "[--out FILE.safetensors]",
    .summary =
        "activation-patching sweep (clean vs corrupted, batched on the server): prints\n"
        "the metric per cell, rows = layers",
    .flags = kFlags,
    .flags_heading =
        "Patch flags (each --clean-* and --corrupted-* row pairs up with the one in "
        "the same place;\nall rows must have the same number of tokens):",
    .parse = Parse,
    .run = Run,
};

extern constinit const Command kAttribPatchCommand = {
    .name = "attrib-patch",
    .brief = "attrib-patch --model MODEL ...",
    .synopsis =
        "attrib-patch --model MODEL\n"
        "(--clean-text T --corrupted-text T |\n"
        " --clean-tokens IDS --corrupted-tokens IDS)...\n"
        "--kind KIND --metric METRIC [--normalized] [--out FILE.safetensors]",
    .summary =
        "attribution patching: the patching sweep estimated from two forward passes and\n"
        "one backward pass, (clean - corrupted) . gradient per cell",
    .flags = kFlags,
    .flags_heading = "Flags as patch's (--method is attribution):",
    .parse = ParseAttribution,
    .run = Run,
};

}  // namespace glassbox::cli
