// `glassbox info MODEL`: the model's dimensions and every hook point with its shape.
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/tensor_decode.h"

namespace glassbox::cli {
namespace {

using glassbox::v1::GetModelInfoRequest;

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  invocation.request.emplace<GetModelInfoRequest>().set_model(line.operands[0]);
  return absl::OkStatus();
}

// [batch, pos, 64]: per-request dimensions by name.
std::string DimsString(const glassbox::v1::HookPoint& hook) {
  std::vector<std::string> dims;
  for (const glassbox::v1::HookDim& dim : hook.dims()) {
    dims.push_back(dim.size() > 0 ? absl::StrCat(dim.size()) : dim.name());
  }
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream& err) {
  GB_ASSIGN_OR_RETURN(glassbox::v1::ModelInfo m,
                      client.GetModelInfo(Request<GetModelInfoRequest>(invocation).model()));
  out << absl::StrFormat("model         %s\n", m.name());
  out << absl::StrFormat("architecture  %s\n", m.architecture());
  out << absl::StrFormat("layers        %d\n", m.n_layers());
  out << absl::StrFormat("d_model       %d\n", m.d_model());
  out << absl::StrFormat("heads         %d (kv heads %d, d_head %d)\n", m.n_heads(), m.n_kv_heads(),
                         m.d_head());
  out << absl::StrFormat("d_mlp         %d\n", m.d_mlp());
  out << absl::StrFormat("vocab         %d\n", m.vocab_size());
  out << absl::StrFormat("n_ctx         %d\n", m.n_ctx());
  out << absl::StrFormat("dtype         %s\n", client::DTypeName(m.dtype()));
  out << absl::StrFormat("device        %s\n", m.device());
  if (m.rotary_dim() > 0) out << absl::StrFormat("rotary dim    %d\n", m.rotary_dim());
  if (m.rotary_adjacent_pairs()) out << "rotary pairs  adjacent (2j, 2j+1), as GPT-J\n";
  if (m.rope_local_theta() > 0) {
    out << absl::StrFormat("rope bases    %g (global layers), %g (sliding-window layers)\n",
                           m.rope_theta(), m.rope_local_theta());
  }
  if (m.unembed_bias()) out << "unembed       with a bias (b_U)\n";
  if (m.attention_windows_size() > 0) {
    out << absl::StrFormat("windows       %s (per layer; 0 = full attention)\n",
                           absl::StrJoin(m.attention_windows(), " "));
  }
  if (m.attn_softcap() > 0 || m.final_softcap() > 0) {
    out << absl::StrFormat("soft caps     attention %g, logits %g (0 = none)\n", m.attn_softcap(),
                           m.final_softcap());
  }
  if (m.parallel_attn_mlp()) out << "block         attention and MLP in parallel (no resid_mid)\n";
  out << absl::StrFormat("tokenizer     %s\n", m.has_tokenizer() ? "yes" : "no");
  out << absl::StrFormat("hook points   %d\n", m.hook_points_size());
  for (const glassbox::v1::HookPoint& hook : m.hook_points()) {
    out << "  " << hook.name() << " " << DimsString(hook) << "\n";
  }
  return absl::OkStatus();
}

}  // namespace

extern constinit const Command kInfoCommand = {
    .name = "info",
    .operands = 1,
    .brief = "info MODEL",
    .synopsis = "info MODEL",
    .summary = "the model's dimensions and every hook point with its shape (per-request\n"
               "dimensions by name: [batch, pos, 64])",
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
