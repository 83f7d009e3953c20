// `glassbox models`: one line per model the server has loaded.
#include <algorithm>
#include <ostream>
#include <vector>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/tensor_decode.h"

namespace glassbox::cli {
namespace {

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  invocation.request = glassbox::v1::ListModelsRequest();
  return absl::OkStatus();
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream& err) {
  GB_ASSIGN_OR_RETURN(std::vector<glassbox::v1::ModelInfo> models, client.ListModels());
  size_t name_width = 0, arch_width = 0;
  for (const auto& m : models) {
    name_width = std::max(name_width, m.name().size());
    arch_width = std::max(arch_width, m.architecture().size());
  }
  for (const auto& m : models) {
    out << absl::StrFormat(
        "%-*s  %-*s  layers=%d d_model=%d heads=%d vocab=%d device=%s dtype=%s\n", name_width,
        m.name(), arch_width, m.architecture(), m.n_layers(), m.d_model(), m.n_heads(),
        m.vocab_size(), m.device(), client::DTypeName(m.dtype()));
  }
  return absl::OkStatus();
}

}  // namespace

extern constinit const Command kModelsCommand = {
    .name = "models",
    .brief = "models",
    .synopsis = "models",
    .summary = "one line per loaded model: name, architecture, layers, d_model, heads, vocab,\n"
               "device, dtype",
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
