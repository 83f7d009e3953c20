// `glassbox logit-lens`: per layer, the top tokens and target log-probs that the residual stream
// predicts at one position of each row.
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "client/cpp/arrays.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/out_file.h"
#include "client/cpp/cli/rows.h"
#include "client/cpp/cli/table.h"
#include "client/cpp/cli/tokens.h"

namespace glassbox::cli {
namespace {

using glassbox::v1::LogitLensRequest;

constexpr std::string_view kAliases[] = {"logit_lens"};

constexpr Flag kFlags[] = {
    kModelFlag,
    kTextFlag,
    kTokensFlag,
    kPrependBosFlag,
    {"top_k", FlagKind::kValue, "--top_k N", "tokens per layer (default 5)"},
    {"targets", FlagKind::kRepeated, "--targets IDS", "also the log-probs of these tokens"},
    {"position", FlagKind::kValue, "--position P",
     "position shown (default -1, each row's last token)"},
    {"out", FlagKind::kValue, "--out FILE",
     "\"top_log_probs\", \"top_tokens\" [layer, batch, pos, k],\n"
     "\"target_log_probs\" [layer, batch, pos, target], all positions"},
};

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  LogitLensRequest& request = invocation.request.emplace<LogitLensRequest>();
  GB_RETURN_IF_ERROR(ParseModelAndRows(line, request));
  GB_ASSIGN_OR_RETURN(int32_t top_k, ParseInt32Flag(line.raw, "top_k", "5", 1));
  request.set_top_k(top_k);
  GB_ASSIGN_OR_RETURN(std::vector<int32_t> targets,
                      ParseIntList("targets", line.raw.Values("targets"), 0));
  request.mutable_target_tokens()->Add(targets.begin(), targets.end());
  GB_ASSIGN_OR_RETURN(invocation.position,
                      ParseInt32Flag(line.raw, "position", "-1", INT32_MIN));
  return ParseOutPath(line, invocation);
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream& err) {
  LogitLensRequest request = Request<LogitLensRequest>(invocation);
  GB_ASSIGN_OR_RETURN(TokenRows rows,
                      ResolveRows(client, request.model(), *request.mutable_inputs()));
  GB_ASSIGN_OR_RETURN(std::vector<int64_t> positions, RowPositions(rows, invocation.position));
  GB_ASSIGN_OR_RETURN(glassbox::v1::LogitLensResponse response, client.LogitLens(request));
  const glassbox::v1::Array& top = response.top_log_probs();
  const glassbox::v1::Array& ids = response.top_tokens();
  const glassbox::v1::Array& targets = response.target_log_probs();
  const int64_t layers = top.shape(0), k = top.shape(3);
  GB_RETURN_IF_ERROR(CheckResponseRows(top.shape(1), rows.size()));
  const int64_t n_targets = client::IsEmptyArray(targets) ? 0 : targets.shape(3);
  std::set<int32_t> wanted(request.target_tokens().begin(), request.target_tokens().end());
  for (size_t b = 0; b < rows.size(); ++b) {
    wanted.insert(rows[b][positions[b]]);
    for (int64_t l = 0; l < layers; ++l) {
      for (int64_t j = 0; j < k; ++j) {
        wanted.insert(client::IntAt(ids, {l, static_cast<int64_t>(b), positions[b], j}));
      }
    }
  }
  GB_ASSIGN_OR_RETURN(auto strings, TokenStrings(client, request.model(), wanted));
  out << absl::StrFormat(
      "logit lens on %s: the next-token predictions of the residual stream before each block and "
      "after the last (final norm and unembedding applied to each); token (log-prob)\n",
      request.model());
  for (size_t b = 0; b < rows.size(); ++b) {
    const int64_t p = positions[b];
    out << absl::StrFormat("row %d, position %d of %d (token %s):\n", b, p, rows[b].size(),
                           TokenLabel(rows[b][p], strings));
    std::vector<std::vector<std::string>> table;
    std::vector<std::string> header = {"layer"};
    for (int64_t j = 0; j < k; ++j) header.push_back(absl::StrCat("top ", j + 1));
    for (int64_t t = 0; t < n_targets; ++t) {
      header.push_back(absl::StrCat("log p(", request.target_tokens(static_cast<int>(t)), ")"));
    }
    table.push_back(header);
    const int64_t row = static_cast<int64_t>(b);
    for (int64_t l = 0; l < layers; ++l) {
      std::vector<std::string> cells = {response.labels(static_cast<int>(l))};
      for (int64_t j = 0; j < k; ++j) {
        cells.push_back(absl::StrCat(TokenLabel(client::IntAt(ids, {l, row, p, j}), strings),
                                     " (", Number(client::FloatAt(top, {l, row, p, j})), ")"));
      }
      for (int64_t t = 0; t < n_targets; ++t) {
        cells.push_back(Number(client::FloatAt(targets, {l, row, p, t})));
      }
      table.push_back(std::move(cells));
    }
    PrintTable(table, out);
  }
  return WriteOutFile(invocation, request.model(), request, out, [&](SafetensorsBuilder& file) {
    file.AddArray("top_log_probs", top);
    file.AddArray("top_tokens", ids);
    file.AddArray("target_log_probs", targets);
    file.AddTokenRows(rows);
    file.AddLabels("glassbox.labels", response.labels());
  });
}

}  // namespace

extern constinit const Command kLogitLensCommand = {
    .name = "logit-lens",
    .aliases = kAliases,
    .brief = "logit-lens --model MODEL ...",
    .synopsis = "logit-lens --model MODEL (--text TEXT | --tokens IDS)...\n"
                "[--top_k 5] [--targets IDS] [--position -1]\n"
                "[--out FILE.safetensors]",
    .summary = "per layer, the top tokens and target log-probs the residual stream predicts",
    .flags = kFlags,
    .flags_heading = "Logit-lens flags:",
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
