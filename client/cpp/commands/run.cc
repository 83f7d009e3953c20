// `glassbox run`: one hooked forward pass, with interventions; prints what came back and
// writes it with --out.
#include <algorithm>
#include <ostream>
#include <string>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/errors.h"
#include "client/cpp/cli/out_file.h"
#include "client/cpp/cli/run_safetensors.h"
#include "client/cpp/commands/run_request.h"
#include "client/cpp/intervention_spec.h"
#include "client/cpp/sae_spec.h"
#include "client/cpp/tensor_decode.h"

namespace glassbox::cli {
namespace {

using glassbox::v1::RunRequest;

constexpr Flag kFlags[] = {
    {"model", FlagKind::kValue, "--model MODEL",
     "a model the server has loaded (see `glassbox models`)"},
    {"text", FlagKind::kRepeated, "--text TEXT", "a text row, tokenized by the server"},
    {"tokens", FlagKind::kRepeated, "--tokens IDS", "a row of token ids: 1,2,3"},
    {"prepend_bos", FlagKind::kBool, "--prepend_bos, --noprepend_bos",
     "add BOS to --text rows or not (default: the tokenizer's)"},
    {"capture", FlagKind::kRepeated, "--capture PATTERN",
     "hook name or glob: 'blocks.*.hook_resid_post'"},
    {"positions", FlagKind::kRepeated, "--positions LIST",
     "capture only these positions; negative counts from each row's last\n"
     "real token (-1 = last)"},
    {"heads", FlagKind::kRepeated, "--heads LIST", "capture only these heads"},
    {"layers", FlagKind::kRepeated, "--layers LIST",
     "keep only these layers of what a glob matches"},
    {"dtype", FlagKind::kValue, "--dtype f32|f16|bf16",
     "wire dtype of captured values (default f32)"},
    {"reduce", FlagKind::kValue, "--reduce none|mean_pos|top_k|norm",
     "reduce captured values: mean over positions, top-k along the last\n"
     "axis (needs --k N; adds \"<hook>.indices\"), or L2 norm of it"},
    {"k", FlagKind::kValue, "--k N", "for --reduce top_k"},
    {"logits", FlagKind::kValue, "--logits none|last|all|top_k",
     "logits to return (default none; top_k needs --logits_k N)"},
    {"logits_k", FlagKind::kValue, "--logits_k N", "for --logits top_k"},
    {"loss", FlagKind::kBool, "--loss", "return the loss per token, -log p(token[t+1] | ..t)"},
    {"target_tokens", FlagKind::kRepeated, "--target_tokens IDS",
     "return the log-probs of these tokens at every position"},
    {"stop_at_layer", FlagKind::kValue, "--stop_at_layer N",
     "run blocks [0, N) only (then no logits, loss or target tokens)"},
    {"chunk_bytes", FlagKind::kValue, "--chunk_bytes N",
     "largest chunk the server sends (default: the server's, 1 MiB)"},
    {"intervene", FlagKind::kRepeated, "--intervene SPEC",
     "edit an activation during the pass (repeatable; applied in order):\n"
     "KIND:HOOK[:KEY=VALUE]..., see \"Interventions\" below"},
    {"sae_splice", FlagKind::kRepeated, "--sae_splice NAME[:error_term]",
     "splice SAE NAME in at its hook (repeatable; with the error term the\n"
     "model sees x + (edited - clean reconstruction)); capture its points\n"
     "as --capture '<hook>.hook_sae_*' (input, acts_pre, acts_post, recons,\n"
     "error, output)"},
    {"sae_edit", FlagKind::kRepeated,
     "--sae_edit NAME:KIND:features=LIST[:value=X][:rows=LIST][:positions=LIST]",
     "edit the spliced SAE's features: zero, clamp (a = X), scale (a *= X),\n"
     "add (a += X); repeatable, applied in order"},
    {"sae_steer", FlagKind::kRepeated,
     "--sae_steer NAME:features=LIST[:coef=LIST][:rows=LIST][:positions=LIST]",
     "add sum coef_i * W_dec[feature_i] at NAME's hook (coef default 1;\n"
     "one for all features or one each)"},
    {"cache_as", FlagKind::kValue, "--cache_as NAME",
     "keep this run's activations on the server as NAME, for later runs'\n"
     "patch_cached (replaces a run kept under NAME; see `glassbox cached`,\n"
     "`glassbox release NAME`)"},
    {"cache_hook", FlagKind::kRepeated, "--cache_hook HOOK",
     "what --cache_as keeps (repeatable; globs; default: the --capture hooks)"},
    {"ttl", FlagKind::kValue, "--ttl SECONDS",
     "how long the server keeps it (default: the server's, 600 s)"},
    {"out", FlagKind::kValue, "--out FILE",
     "write the results to this safetensors file (see below)"},
};

// The --out file and the --intervene syntax, after the flags.
constexpr char kNotes[] = R"(
The --out file holds every captured tensor under its hook name (dtype as received: F32, F16,
BF16, or I32 for top-k indices), "logits" (top-k: plus "logits.indices"), "loss_per_token",
"target_log_probs", "input_ids" ([batch, max_len] I32, right-padded with 0) and
"sequence_lengths" ([batch] I32), and the request as JSON in the "glassbox.request" metadata.
Open it with safetensors: safetensors.numpy.load_file(FILE) or safetensors.torch.load_file(FILE).

Interventions (--intervene KIND:HOOK[:KEY=VALUE]...; docs/interventions.md):
  KIND   zero        x[S] = 0
         scale       x[S] *= coef                        (needs coef=X)
         add         x[S] += coef * value (steering)     (needs value=V; coef default 1)
         set         x[S] = value                        (needs value=V)
         mean_batch  x[S] = mean of x over the batch rows, per position
         mean_pos    x[S] = mean of x over each row's real positions
         patch_row   x[b, S] = x[source_rows[b], S]      (needs source_rows=LIST, one per row)
         patch_cached x[b, S] = c[source_rows[b], S], c = the run kept as NAME (--cache_as) at
                     the same hook  (needs from=NAME; source_rows default: row b, or row 0 of a
                     one-row cached run; positions count from 0 in both runs)
         project_out x[t] -= coef (x[t] . u) u, u = value/|value|  (needs value=V; coef default 1)
         orthogonal_decomp  x[t] = (I - uu^T) x[t] + coef (x[t] . u) u  (needs value=V, coef=X)
         projection_cap     x[t] += (clamp(x[t] . u, min, max) - x[t] . u) u
                     (needs value=V and min=X, max=X or both)
  HOOK   a hook name or glob (blocks.0.attn.hook_z, 'blocks.*.hook_resid_pre')
  S      the selection: rows=LIST positions=LIST (negative: from each row's end; also pos=)
         heads=LIST dims=LIST (last axis: neuron / d_model / d_head index); omitted = all
  V      numbers (0.5,-1,2) or @FILE.safetensors#NAME or @FILE.npy, broadcast over S: [D],
         [heads, D], [pos, heads, D] or the hook's whole shape
  e.g.   zero:blocks.0.attn.hook_z:heads=1
         add:blocks.6.hook_resid_pre:positions=-1:coef=4:value=@steer.safetensors#v
         patch_row:blocks.1.hook_attn_out:positions=4:source_rows=2,0,1
         patch_cached:blocks.0.hook_resid_pre:positions=2:from=clean
)";

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  GB_RETURN_IF_ERROR(ParseRunRequest(line, invocation.request.emplace<RunRequest>()));
  return ParseOutPath(line, invocation);
}

// The edits the run applies, one line each.
void PrintEdits(const RunRequest& request, std::ostream& out) {
  for (const glassbox::v1::Intervention& intervention : request.interventions()) {
    out << "  intervene " << FormatIntervention(intervention) << "\n";
  }
  for (const glassbox::v1::SaeSplice& splice : request.sae_splices()) {
    out << "  sae splice " << FormatSaeSplice(splice) << "\n";
  }
  for (const glassbox::v1::SaeSteering& steering : request.sae_steering()) {
    out << "  sae steer " << FormatSaeSteering(steering) << "\n";
  }
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream& err) {
  const RunRequest& request = Request<RunRequest>(invocation);
  GB_ASSIGN_OR_RETURN(client::RunResult result, client.Run(request));
  const glassbox::v1::Header& header = result.header;
  const glassbox::v1::Summary& summary = result.summary;
  out << absl::StrFormat("model %s: batch %d, tokens per row [%s]\n", header.model(),
                         header.sequence_lengths_size(),
                         absl::StrJoin(header.sequence_lengths(), ", "));
  PrintEdits(request, out);
  size_t width = 0;
  for (const client::ReceivedTensor& t : result.tensors) width = std::max(width, t.name.size());
  int64_t total_bytes = 0;
  for (const client::ReceivedTensor& t : result.tensors) {
    out << absl::StrFormat("  %-*s  %-4s %s\n", width, t.name, client::DTypeName(t.dtype),
                           client::ShapeString(t.shape));
    total_bytes += static_cast<int64_t>(t.bytes.size());
  }
  out << absl::StrFormat("%d tensors, %d bytes; queue %.3f s, forward %.3f s, total %.3f s\n",
                         result.tensors.size(), total_bytes, summary.timings().queue_seconds(),
                         summary.timings().forward_seconds(), summary.timings().total_seconds());
  if (summary.has_kept()) {
    out << absl::StrFormat(
        "kept as \"%s\" on the server: %s, %d bytes, expires %s\n", summary.kept().name(),
        absl::StrJoin(summary.kept().hooks(), ", "), summary.kept().nbytes(),
        absl::FormatTime(absl::FromUnixMillis(summary.kept().expires_unix_ms())));
  }
  if (invocation.out_path.empty()) return absl::OkStatus();
  absl::StatusOr<int> written = WriteRunSafetensors(invocation.out_path, request, result, err);
  if (!written.ok()) return MarkLocal(written.status());
  out << absl::StrFormat("wrote %d tensors to %s\n", *written, invocation.out_path);
  return absl::OkStatus();
}

}  // namespace

extern constinit const Command kRunCommand = {
    .name = "run",
    .brief = "run --model MODEL ...",
    .synopsis = "run --model MODEL (--text TEXT | --tokens IDS)... [run flags]\n"
                "[--intervene SPEC]... [--out FILE.safetensors]",
    .summary = "one hooked forward pass, with interventions; prints what came back and writes\n"
               "it with --out",
    .flags = kFlags,
    .flags_heading =
        "Run flags (--text, --tokens and --capture may be repeated; each --text or --tokens is "
        "one row\nof the batch, rows are right-padded to the longest):",
    .flags_notes = kNotes,
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
