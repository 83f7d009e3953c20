// `glassbox attn-norms`: per head, the attention weight on the first token beside the norms
// |a f(x)| of what it moves (Kobayashi et al. 2020): attention sinks.
#include <algorithm>
#include <ostream>
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

namespace glassbox::cli {
namespace {

using glassbox::v1::AttentionNormsRequest;

constexpr std::string_view kAliases[] = {"attn_norms"};

constexpr Flag kFlags[] = {
    kModelFlag,
    kTextFlag,
    kTokensFlag,
    kPrependBosFlag,
    {"layers", FlagKind::kRepeated, "--layers LIST", "layers to analyse (default all)"},
    {"out", FlagKind::kValue, "--out FILE",
     "\"blocks.L.weights\", \"blocks.L.head_norms\" [batch, head, query_pos,\n"
     "key_pos] and \"blocks.L.layer_norms\" [batch, query_pos, key_pos]"},
};

constexpr char kLegend[] =
    "attention norms on %s, %d row%s: what each head moves from the first token (key 0), "
    "averaged over query positions i >= 1\n"
    "  weight      mean a(i,0), the attention weight on the first token\n"
    "  norm share  mean |a(i,0) f(x_0)| / sum_j |a(i,j) f(x_j)|, its share of the weighted "
    "value norms\n"
    "  norm        mean |a(i,0) f(x_0)|;  mean norm: mean |a(i,j) f(x_j)| over all keys j <= i\n"
    "  (an attention sink: large weight, small norm share)\n";

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  AttentionNormsRequest& request = invocation.request.emplace<AttentionNormsRequest>();
  GB_RETURN_IF_ERROR(ParseModelAndRows(line, request));
  GB_ASSIGN_OR_RETURN(std::vector<int32_t> layers,
                      ParseIntList("layers", line.raw.Values("layers"), 0));
  request.mutable_layers()->Add(layers.begin(), layers.end());
  return ParseOutPath(line, invocation);
}

// A table row per head of `layer`: its means over every row's query positions i >= 1.
absl::Status AddLayerRows(const glassbox::v1::AttentionNormsLayer& layer, const TokenRows& rows,
                          std::vector<std::vector<std::string>>& table) {
  const glassbox::v1::Array& weights = layer.weights();
  const glassbox::v1::Array& norms = layer.head_norms();
  GB_RETURN_IF_ERROR(CheckResponseRows(weights.shape(0), rows.size()));
  for (int64_t h = 0; h < weights.shape(1); ++h) {
    double weight = 0, share = 0, norm = 0, all_norms = 0;
    int64_t queries = 0, pairs = 0;
    for (int64_t b = 0; b < weights.shape(0); ++b) {
      const int64_t len =
          std::min<int64_t>(static_cast<int64_t>(rows[b].size()), weights.shape(2));
      for (int64_t i = len > 1 ? 1 : 0; i < len; ++i) {
        double row_norms = 0;
        for (int64_t j = 0; j <= i; ++j) {
          const double n = client::FloatAt(norms, {b, h, i, j});
          row_norms += n;
          all_norms += n;
          ++pairs;
        }
        const double n0 = client::FloatAt(norms, {b, h, i, 0});
        weight += client::FloatAt(weights, {b, h, i, 0});
        norm += n0;
        share += row_norms > 0 ? n0 / row_norms : 0;
        ++queries;
      }
    }
    const double q = std::max<int64_t>(queries, 1);
    table.push_back({absl::StrCat(layer.layer()), absl::StrCat(h), Number(weight / q),
                     Number(share / q), Number(norm / q),
                     Number(all_norms / std::max<int64_t>(pairs, 1))});
  }
  return absl::OkStatus();
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream& err) {
  AttentionNormsRequest request = Request<AttentionNormsRequest>(invocation);
  GB_ASSIGN_OR_RETURN(TokenRows rows,
                      ResolveRows(client, request.model(), *request.mutable_inputs()));
  GB_ASSIGN_OR_RETURN(glassbox::v1::AttentionNormsResponse response,
                      client.AttentionNorms(request));
  out << absl::StrFormat(kLegend, request.model(), rows.size(), rows.size() == 1 ? "" : "s");
  std::vector<std::vector<std::string>> table = {
      {"layer", "head", "weight", "norm share", "norm", "mean norm"}};
  for (const glassbox::v1::AttentionNormsLayer& layer : response.layers()) {
    GB_RETURN_IF_ERROR(AddLayerRows(layer, rows, table));
  }
  PrintTable(table, out, 0);
  return WriteOutFile(invocation, request.model(), request, out, [&](SafetensorsBuilder& file) {
    for (const glassbox::v1::AttentionNormsLayer& layer : response.layers()) {
      const std::string prefix = absl::StrCat("blocks.", layer.layer(), ".");
      file.AddArray(prefix + "weights", layer.weights());
      file.AddArray(prefix + "head_norms", layer.head_norms());
      file.AddArray(prefix + "layer_norms", layer.layer_norms());
    }
    file.AddTokenRows(rows);
  });
}

}  // namespace

extern constinit const Command kAttnNormsCommand = {
    .name = "attn-norms",
    .aliases = kAliases,
    .brief = "attn-norms --model MODEL ...",
    .synopsis = "attn-norms --model MODEL (--text TEXT | --tokens IDS)...\n"
                "[--layers LIST] [--out FILE.safetensors]",
    .summary = "attention weights beside the norms |a f(x)| per head (Kobayashi et al. 2020)",
    .flags = kFlags,
    .flags_heading = "Attn-norms flags:",
    .flags_rank = 1,
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
