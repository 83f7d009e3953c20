// `glassbox sae-encode`: runs the SAE's model to its hook and prints each token's top features,
// with the reconstruction's L0, MSE and explained variance.
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/errors.h"
#include "client/cpp/cli/out_file.h"
#include "client/cpp/cli/rows.h"
#include "client/cpp/cli/table.h"
#include "client/cpp/cli/tokens.h"

namespace glassbox::cli {
namespace {

using glassbox::v1::SaeEncodeRequest;
using glassbox::v1::SaeEncodeResponse;

constexpr std::string_view kAliases[] = {"sae_encode"};

constexpr Flag kFlags[] = {
    kTextFlag,
    kTokensFlag,
    kPrependBosFlag,
    {"sae", FlagKind::kValue, "--sae NAME", "an SAE the server has loaded (see `glassbox saes`)"},
    {"top_k", FlagKind::kValue, "--top_k N",
     "features per token, largest first (default 5; 0 = every active one)"},
    {"dense", FlagKind::kBool, "--dense",
     "also fetch every activation [batch, pos, d_sae] (for --out)"},
    {"out", FlagKind::kValue, "--out FILE",
     "\"offsets\" (I32, tokens + 1), \"indices\" (I32), \"values\" (F32): token\n"
     "t's features are indices[offsets[t]:offsets[t+1]], tokens row after\n"
     "row; \"dense\" with --dense; statistics in \"glassbox.stats\" metadata"},
};

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  SaeEncodeRequest& request = invocation.request.emplace<SaeEncodeRequest>();
  const std::optional<std::string> sae = line.raw.Value("sae");
  if (!sae.has_value() || sae->empty()) {
    return UsageError("sae-encode needs --sae NAME (see `glassbox saes`)");
  }
  request.set_sae(*sae);
  GB_RETURN_IF_ERROR(ParseRowInputs(line, {}, *request.mutable_inputs()));
  GB_ASSIGN_OR_RETURN(int32_t top_k, ParseInt32Flag(line.raw, "top_k", "5", 0));
  request.set_top_k(top_k);
  request.set_dense(line.raw.IsTrue("dense"));
  return ParseOutPath(line, invocation);
}

// The SAE's entry in the server's list (empty if it is not there).
absl::StatusOr<glassbox::v1::SaeInfo> FindSae(client::Client& client, const std::string& name) {
  GB_ASSIGN_OR_RETURN(std::vector<glassbox::v1::SaeInfo> saes, client.ListSaes());
  glassbox::v1::SaeInfo info;
  for (const glassbox::v1::SaeInfo& sae : saes) {
    if (sae.name() == name) info = sae;
  }
  return info;
}

// A table row per token: its features as index=activation.
void PrintFeatures(const SaeEncodeResponse& response, const TokenRows& rows,
                   const std::map<int32_t, std::string>& strings, std::ostream& out) {
  int64_t token = 0;
  std::vector<std::vector<std::string>> table = {{"row", "pos", "token", "features"}};
  for (size_t b = 0; b < rows.size(); ++b) {
    for (size_t p = 0; p < rows[b].size(); ++p, ++token) {
      std::vector<std::string> features;
      for (int64_t j = response.offsets(token); j < response.offsets(token + 1); ++j) {
        features.push_back(absl::StrCat(response.indices(j), "=", Number(response.values(j))));
      }
      table.push_back({absl::StrCat(b), absl::StrCat(p), TokenLabel(rows[b][p], strings),
                       features.empty() ? "-" : absl::StrJoin(features, " ")});
    }
  }
  PrintTable(table, out, 4);
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream& err) {
  const SaeEncodeRequest& request = Request<SaeEncodeRequest>(invocation);
  GB_ASSIGN_OR_RETURN(SaeEncodeResponse response, client.SaeEncode(request));
  GB_ASSIGN_OR_RETURN(glassbox::v1::SaeInfo info, FindSae(client, request.sae()));
  TokenRows rows;
  std::set<int32_t> ids;
  for (const auto& row : response.tokens()) {
    rows.emplace_back(row.ids().begin(), row.ids().end());
    ids.insert(row.ids().begin(), row.ids().end());
  }
  GB_ASSIGN_OR_RETURN(auto strings, TokenStrings(client, info.model(), ids));
  const glassbox::v1::SaeReconstructionStats& stats = response.stats();
  out << absl::StrFormat(
      "SAE %s on %s at %s: %d tokens, L0 %.2f, MSE %.6g, explained variance %.4f\n", request.sae(),
      info.model(), info.hook(), stats.tokens(), stats.mean_l0(), stats.mse(),
      stats.explained_variance());
  out << (request.top_k() > 0 ? absl::StrFormat("top %d features per token", request.top_k())
                              : std::string("every active feature per token"))
      << " (feature=activation):\n";
  PrintFeatures(response, rows, strings, out);
  return WriteOutFile(invocation, info.model(), request, out, [&](SafetensorsBuilder& file) {
    const int64_t n = response.indices_size();
    file.AddInts("offsets", {response.offsets_size()},
                 std::vector<int32_t>(response.offsets().begin(), response.offsets().end()));
    file.AddInts("indices", {n}, {response.indices().begin(), response.indices().end()});
    file.AddFloats("values", {n}, {response.values().begin(), response.values().end()});
    file.AddArray("dense", response.dense());
    file.AddTokenRows(rows);
    file.metadata["glassbox.stats"] = absl::StrFormat(
        "{\"tokens\": %d, \"mse\": %.9g, \"mean_squared_error_norm\": %.9g, "
        "\"explained_variance\": %.9g, \"mean_l0\": %.9g}",
        stats.tokens(), stats.mse(), stats.mean_squared_error_norm(), stats.explained_variance(),
        stats.mean_l0());
  });
}

}  // namespace

extern constinit const Command kSaeEncodeCommand = {
    .name = "sae-encode",
    .aliases = kAliases,
    .brief = "sae-encode --sae NAME ...",
    .synopsis = "sae-encode --sae NAME (--text TEXT | --tokens IDS)...\n"
                "[--top_k 5] [--dense] [--out FILE.safetensors]",
    .summary = "run the SAE's model to its hook and print each token's top features, with the\n"
               "reconstruction's L0, MSE and explained variance",
    .flags = kFlags,
    .flags_heading = "Sae-encode flags (the SAE's model tokenizes --text rows):",
    .synopsis_rank = 1,
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
