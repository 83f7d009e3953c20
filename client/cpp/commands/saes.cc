// `glassbox saes`: the SAEs the server has loaded (for one model, or all).
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/rows.h"
#include "client/cpp/cli/table.h"

namespace glassbox::cli {
namespace {

using glassbox::v1::ListSaesRequest;

constexpr Flag kFlags[] = {kModelFlag};

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  invocation.request.emplace<ListSaesRequest>().set_model(line.raw.Value("model").value_or(""));
  return absl::OkStatus();
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream& err) {
  const std::string& model = Request<ListSaesRequest>(invocation).model();
  GB_ASSIGN_OR_RETURN(std::vector<glassbox::v1::SaeInfo> saes, client.ListSaes(model));
  if (saes.empty()) {
    out << "no SAEs loaded" << (model.empty() ? "" : " for " + model)
        << " (glassboxd --sae NAME=PATH@MODEL)\n";
    return absl::OkStatus();
  }
  std::vector<std::vector<std::string>> table = {
      {"name", "model", "hook", "architecture", "d_in", "d_sae", "normalization", "MiB"}};
  for (const glassbox::v1::SaeInfo& sae : saes) {
    std::string arch = sae.architecture();
    if (sae.architecture() == "topk") absl::StrAppend(&arch, " k=", sae.k());
    table.push_back({sae.name(), sae.model(), sae.hook(), arch, absl::StrCat(sae.d_in()),
                     absl::StrCat(sae.d_sae()), sae.normalization(),
                     absl::StrFormat("%.1f", sae.resident_bytes() / 1048576.0)});
  }
  PrintTable(table, out, 4, "");
  for (const glassbox::v1::SaeInfo& sae : saes) {
    for (const std::string& warning : sae.warnings()) {
      out << "warning: " << sae.name() << ": " << warning << "\n";
    }
  }
  return absl::OkStatus();
}

}  // namespace

extern constinit const Command kSaesCommand = {
    .name = "saes",
    .brief = "saes [--model MODEL]",
    .synopsis = "saes [--model MODEL]",
    .summary = "the SAEs the server loaded: name, model, hook, architecture, d_in, d_sae, ...",
    .flags = kFlags,
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
