// The `glassbox` command line: parsing (a pure function, tested without a server), execution
// against a server, and the mapping of statuses to exit codes.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/cpp/glassbox_client.h"
#include "client/cpp/intervention_spec.h"
#include "glassbox/v1/glassbox.pb.h"

namespace glassbox::cli {

// Exit codes, documented in UsageText() and client/cpp/README.md.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;        // anything else (local I/O, auth, internal)
inline constexpr int kExitUsage = 2;        // bad command line
inline constexpr int kExitBadRequest = 3;   // INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
                                            // OUT_OF_RANGE from the server
inline constexpr int kExitUnavailable = 4;  // UNAVAILABLE, DEADLINE_EXCEEDED
inline constexpr int kExitExhausted = 5;    // RESOURCE_EXHAUSTED

enum class Command {
  kHelp,
  kModels,
  kInfo,
  kTokenize,
  kDetokenize,
  kRun,
  kPatch,      // patch: PatchingSweep
  kLogitLens,  // logit-lens: LogitLens
  kDla,        // dla: DirectLogitAttribution
  kAttnNorms,  // attn-norms: AttentionNorms
  kSaes,       // saes: ListSaes
  kSaeEncode,  // sae-encode: SaeEncode
  kCached,     // cached: ListCachedRuns
  kRelease,    // release NAME: ReleaseCachedRun
};

// A parsed command line.
struct Invocation {
  Command command = Command::kHelp;
  std::string server;
  client::ClientOptions client;
  // info, tokenize, detokenize
  std::string model;
  // release
  std::string cached_run;
  // tokenize
  glassbox::v1::TokenizeRequest tokenize;
  // detokenize
  glassbox::v1::DetokenizeRequest detokenize;
  // run: the request as it will be sent (interventions included).
  glassbox::v1::RunRequest run;
  // patch
  glassbox::v1::PatchingSweepRequest patch;
  bool print_normalized = false;  // print the normalised matrix instead of the raw metric
  // logit-lens (texts are tokenized first, then sent as token ids)
  glassbox::v1::LogitLensRequest logit_lens;
  int32_t position = -1;  // logit-lens: the position printed; negative counts from the end
  // dla
  glassbox::v1::DirectLogitAttributionRequest dla;
  int32_t top = 10;  // components printed per row; 0 = all
  // attn-norms
  glassbox::v1::AttentionNormsRequest attn_norms;
  // saes: the model whose SAEs to list ("" = all)
  // sae-encode (top_k: features printed and returned per token; 0 = every nonzero one)
  glassbox::v1::SaeEncodeRequest sae_encode;
  // run, patch, logit-lens, dla, attn-norms, sae-encode: where to write the results ("" =
  // nowhere).
  std::string out_path;
};

// What the command line falls back on. Kept apart from the process so that tests control it.
struct Environment {
  std::optional<std::string> api_key;  // GLASSBOX_API_KEY
  std::optional<std::string> server;   // GLASSBOX_SERVER
  // Reads the value files of --intervene ...:value=@FILE; empty: LoadValueFile.
  ValueLoader load_value;
};
Environment EnvironmentFromProcess();

// Parses the arguments after the program name. Any error is INVALID_ARGUMENT with a message fit
// for the user (the caller prints it with the usage and exits with kExitUsage).
absl::StatusOr<Invocation> ParseCommandLine(const std::vector<std::string>& args,
                                            const Environment& env);

std::string UsageText();

// Exit code for a failed command: by status code for the server's statuses, kExitError for
// failures on this side (marked with MarkLocal).
int ExitCodeForStatus(const absl::Status& status);
// Tags a status as a usage error found only after the command line was parsed (e.g. a
// --position past the end of a --text row once it is tokenized): exit code kExitUsage.
absl::Status MarkUsage(absl::Status status);
// Tags a status as a local failure (e.g. writing the output file), so that its code, which may
// be NOT_FOUND or the like, is not mistaken for the server's verdict on the request.
absl::Status MarkLocal(absl::Status status);
bool IsLocal(const absl::Status& status);

// Runs a parsed command; results go to `out`, "glassbox: <CODE>: <message>" errors to `err`.
// Returns the exit code.
int Execute(const Invocation& invocation, std::ostream& out, std::ostream& err);

// The whole program: parse, print usage on errors, execute.
int Main(int argc, char** argv);

// A sweep kind by its CLI name: resid_pre, resid_mid, resid_post, attn_out, mlp_out, head_out
// (or head_out_all_pos), head_out_by_pos, q, k, v (or q_all_pos, ...), pattern (or
// pattern_all_pos). nullopt otherwise.
std::optional<glassbox::v1::SweepKind> ParseSweepKind(std::string_view name);
// The CLI name of a sweep kind ("head_out_by_pos").
std::string_view SweepKindName(glassbox::v1::SweepKind kind);
// Every kind's CLI name, comma-separated, for messages.
std::string SweepKindNames();
// A patching metric: "logit_diff:A,B", "log_prob:A" or "loss". INVALID_ARGUMENT otherwise.
absl::StatusOr<glassbox::v1::PatchingMetric> ParsePatchingMetric(std::string_view text);

// Python-style quoting of a token string for display: 'Hello', ' world\n'.
std::string QuoteToken(const std::string& token);

// Writes a run's tensors to a safetensors file: every streamed tensor under its name (captures
// by hook name, then "logits", "logits.indices", "loss_per_token", "target_log_probs" as
// requested), then "input_ids" ([batch, max_len] i32, right-padded with 0) and
// "sequence_lengths" ([batch] i32).
// The request goes into the "glassbox.request" metadata entry as JSON. Returns the number of
// tensors written.
absl::StatusOr<int> WriteRunSafetensors(const std::string& path,
                                        const glassbox::v1::RunRequest& request,
                                        const client::RunResult& result, std::ostream& err);

}  // namespace glassbox::cli
