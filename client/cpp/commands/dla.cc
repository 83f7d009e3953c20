// `glassbox dla`: direct logit attribution, each component's share of a logit (difference) at
// one position of each row.
#include <algorithm>
#include <cmath>
#include <map>
#include <ostream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "client/cpp/arrays.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/errors.h"
#include "client/cpp/cli/out_file.h"
#include "client/cpp/cli/rows.h"
#include "client/cpp/cli/table.h"
#include "client/cpp/cli/tokens.h"

namespace glassbox::cli {
namespace {

using glassbox::v1::DirectLogitAttributionRequest;
using glassbox::v1::DirectLogitAttributionResponse;

constexpr Flag kFlags[] = {
    kModelFlag,
    kTextFlag,
    kTokensFlag,
    kPrependBosFlag,
    {"token", FlagKind::kValue, "--token ID", "the logit to attribute"},
    {"minus", FlagKind::kValue, "--minus ID", "attribute logit[token] - logit[minus] instead"},
    {"position", FlagKind::kValue, "--position P", "position (default -1, each row's last token)"},
    {"top", FlagKind::kValue, "--top N",
     "components printed per row, largest |attribution| first (default\n10; 0 = all)"},
    {"out", FlagKind::kValue, "--out FILE",
     "\"attributions\" [component, batch], \"logit\", \"constant\" [batch];\n"
     "component labels in the \"glassbox.labels\" metadata"},
};

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  const RawCommandLine& raw = line.raw;
  DirectLogitAttributionRequest& request =
      invocation.request.emplace<DirectLogitAttributionRequest>();
  GB_RETURN_IF_ERROR(ParseModelAndRows(line, request));
  if (!raw.Has("token")) return UsageError("dla needs --token ID (the logit to attribute)");
  GB_ASSIGN_OR_RETURN(int32_t token, ParseInt32Flag(raw, "token", "", 0));
  request.set_token(token);
  if (raw.Has("minus")) {
    GB_ASSIGN_OR_RETURN(int32_t minus, ParseInt32Flag(raw, "minus", "", 0));
    request.set_minus_token(minus);
  }
  GB_ASSIGN_OR_RETURN(invocation.position, ParseInt32Flag(raw, "position", "-1", INT32_MIN));
  request.set_position(invocation.position);
  GB_ASSIGN_OR_RETURN(invocation.top, ParseInt32Flag(raw, "top", "10", 0));
  return ParseOutPath(line, invocation);
}

// "logit[17 'x'] - logit[42 'y']"
std::string Attributed(const DirectLogitAttributionRequest& request,
                       const std::map<int32_t, std::string>& strings) {
  std::string what = absl::StrCat("logit[", TokenLabel(request.token(), strings), "]");
  if (request.has_minus_token()) {
    absl::StrAppend(&what, " - logit[", TokenLabel(request.minus_token(), strings), "]");
  }
  return what;
}

// Row `row`'s components, largest |attribution| first, the first `top` of them (0 = all).
void PrintRow(const DirectLogitAttributionResponse& response, int64_t row, int32_t top,
              std::ostream& out) {
  const glassbox::v1::Array& attributions = response.attributions();
  const int64_t components = attributions.shape(0);
  std::vector<std::pair<float, int64_t>> order;
  for (int64_t c = 0; c < components; ++c) {
    order.push_back({client::FloatAt(attributions, {c, row}), c});
  }
  std::stable_sort(order.begin(), order.end(), [](const auto& x, const auto& y) {
    return std::fabs(x.first) > std::fabs(y.first);
  });
  const int64_t shown = top > 0 ? std::min<int64_t>(top, components) : components;
  std::vector<std::vector<std::string>> table = {{"component", "attribution"}};
  for (int64_t i = 0; i < shown; ++i) {
    table.push_back(
        {response.labels(static_cast<int>(order[i].second)), Number(order[i].first)});
  }
  PrintTable(table, out);
  if (shown < components) {
    out << absl::StrFormat("  ... %d more, |attribution| <= %s (--top 0 shows all)\n",
                           components - shown, Number(std::fabs(order[shown].first)));
  }
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream& err) {
  DirectLogitAttributionRequest request = Request<DirectLogitAttributionRequest>(invocation);
  GB_ASSIGN_OR_RETURN(TokenRows rows,
                      ResolveRows(client, request.model(), *request.mutable_inputs()));
  GB_ASSIGN_OR_RETURN(std::vector<int64_t> positions, RowPositions(rows, invocation.position));
  GB_ASSIGN_OR_RETURN(DirectLogitAttributionResponse response,
                      client.DirectLogitAttribution(request));
  const glassbox::v1::Array& attributions = response.attributions();
  GB_RETURN_IF_ERROR(CheckResponseRows(attributions.shape(1), rows.size()));
  std::set<int32_t> wanted = {request.token()};
  if (request.has_minus_token()) wanted.insert(request.minus_token());
  for (size_t b = 0; b < rows.size(); ++b) wanted.insert(rows[b][positions[b]]);
  GB_ASSIGN_OR_RETURN(auto strings, TokenStrings(client, request.model(), wanted));
  out << absl::StrFormat("direct logit attribution on %s: %s\n", request.model(),
                         Attributed(request, strings));
  for (size_t b = 0; b < rows.size(); ++b) {
    const int64_t row = static_cast<int64_t>(b);
    double sum = 0;
    for (int64_t c = 0; c < attributions.shape(0); ++c) {
      sum += client::FloatAt(attributions, {c, row});
    }
    out << absl::StrFormat(
        "row %d, position %d (token %s): logit %s = components %s + constant %s\n", b,
        positions[b], TokenLabel(rows[b][positions[b]], strings),
        Number(client::FloatAt(response.logit(), {row})), Number(sum),
        Number(client::FloatAt(response.constant(), {row})));
    PrintRow(response, row, invocation.top, out);
  }
  return WriteOutFile(invocation, request.model(), request, out, [&](SafetensorsBuilder& file) {
    file.AddArray("attributions", attributions);
    file.AddArray("logit", response.logit());
    file.AddArray("constant", response.constant());
    file.AddTokenRows(rows);
    file.AddLabels("glassbox.labels", response.labels());
  });
}

}  // namespace

extern constinit const Command kDlaCommand = {
    .name = "dla",
    .brief = "dla --model MODEL ...",
    .synopsis = "dla --model MODEL (--text TEXT | --tokens IDS)... --token ID\n"
                "[--minus ID] [--position -1] [--top 10] [--out FILE.safetensors]",
    .summary = "direct logit attribution: each component's share of a logit (difference)",
    .flags = kFlags,
    .flags_heading = "Dla flags:",
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
