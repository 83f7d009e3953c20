// `glassbox generate`: continues each row, printing the text as it arrives (one row) or each
// row's continuation when it is done (several), with the run command's interventions and SAE
// flags applied at every step.
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/errors.h"
#include "client/cpp/cli/rows.h"
#include "client/cpp/commands/run_request.h"

namespace glassbox::cli {
namespace {

using glassbox::v1::GenerateRequest;

constexpr Flag kFlags[] = {
    kModelFlag,
    kTextFlag,
    kTokensFlag,
    kPrependBosFlag,
    {"max_new_tokens", FlagKind::kValue, "--max_new_tokens N", "tokens to add per row (default 20)"},
    {"temperature", FlagKind::kValue, "--temperature T",
     "0 (the default) is greedy; > 0 samples from softmax(logits / T)"},
    {"top_k", FlagKind::kValue, "--top_k N", "sample among the N most likely tokens"},
    {"top_p", FlagKind::kValue, "--top_p P", "nucleus sampling: the smallest set reaching P"},
    {"min_p", FlagKind::kValue, "--min_p P", "drop tokens below P times the most likely's"},
    {"repetition_penalty", FlagKind::kValue, "--repetition_penalty R",
     "HF's penalty of tokens already in the row (1 = none)"},
    {"seed", FlagKind::kValue, "--seed N", "row r samples with seed N + r (default 0)"},
    {"stop_tokens", FlagKind::kRepeated, "--stop_tokens IDS", "a row stops after one of these"},
    {"stop_at_eos", FlagKind::kBool, "--stop_at_eos, --nostop_at_eos",
     "stop at the model's EOS token (default yes)"},
    {"stop_string", FlagKind::kRepeated, "--stop_string TEXT",
     "a row stops once its text contains TEXT (repeatable; needs a tokenizer)"},
    {"unsteered", FlagKind::kBool, "--unsteered",
     "also print the continuation without the edits, from the same prompt and seed"},
    {"intervene", FlagKind::kRepeated, "", ""},
    {"sae_splice", FlagKind::kRepeated, "", ""},
    {"sae_edit", FlagKind::kRepeated, "", ""},
    {"sae_steer", FlagKind::kRepeated, "", ""},
};

constexpr std::string_view kNotes =
    "  --intervene, --sae_splice, --sae_edit and --sae_steer are the run command's and apply at\n"
    "  every step to the whole sequence so far; their positions must be >= 0.\n";

absl::StatusOr<double> ParseNumber(const RawCommandLine& raw, std::string_view flag,
                                   double fallback) {
  const std::optional<std::string> text = raw.Value(flag);
  if (!text) return fallback;
  double value;
  if (!absl::SimpleAtod(*text, &value)) {
    return UsageError(absl::StrCat("--", std::string(flag), " must be a number, got \"", *text, "\""));
  }
  return value;
}

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  const RawCommandLine& raw = line.raw;
  // The prompts and edits are parsed as a run's, then moved into the GenerateRequest.
  glassbox::v1::RunRequest as_run;
  GB_RETURN_IF_ERROR(ParseRowsAndEdits(line, as_run));
  GenerateRequest& request = invocation.request.emplace<GenerateRequest>();
  request.set_model(as_run.model());
  *request.mutable_inputs() = as_run.inputs();
  *request.mutable_interventions() = as_run.interventions();
  *request.mutable_sae_splices() = as_run.sae_splices();
  *request.mutable_sae_steering() = as_run.sae_steering();
  GB_ASSIGN_OR_RETURN(int32_t max_new, ParseInt32Flag(raw, "max_new_tokens", "20", 1));
  request.set_max_new_tokens(max_new);
  glassbox::v1::Sampling& s = *request.mutable_sampling();
  GB_ASSIGN_OR_RETURN(double temperature, ParseNumber(raw, "temperature", 0));
  s.set_temperature(temperature);
  GB_ASSIGN_OR_RETURN(int32_t top_k, ParseInt32Flag(raw, "top_k", "0", 0));
  s.set_top_k(top_k);
  if (raw.Has("top_p")) {
    GB_ASSIGN_OR_RETURN(double top_p, ParseNumber(raw, "top_p", 1));
    s.set_top_p(top_p);
  }
  GB_ASSIGN_OR_RETURN(double min_p, ParseNumber(raw, "min_p", 0));
  s.set_min_p(min_p);
  if (raw.Has("repetition_penalty")) {
    GB_ASSIGN_OR_RETURN(double penalty, ParseNumber(raw, "repetition_penalty", 1));
    s.set_repetition_penalty(penalty);
  }
  if (raw.Has("seed")) {
    GB_ASSIGN_OR_RETURN(int64_t seed, ParseInt("seed", *raw.Value("seed"), 0, INT64_MAX));
    s.set_seed(static_cast<uint64_t>(seed));
  }
  GB_ASSIGN_OR_RETURN(std::vector<int32_t> stops,
                      ParseIntList("stop_tokens", raw.Values("stop_tokens"), 0));
  request.mutable_stop_token_ids()->Add(stops.begin(), stops.end());
  if (raw.Has("stop_at_eos")) request.set_stop_at_eos(raw.IsTrue("stop_at_eos"));
  for (const std::string& stop : raw.Values("stop_string")) {
    if (stop.empty()) return UsageError("--stop_string needs a non-empty TEXT");
    request.add_stop_strings(stop);
  }
  request.set_include_unsteered(raw.Has("unsteered") && raw.IsTrue("unsteered"));
  return absl::OkStatus();
}

std::string FinishName(glassbox::v1::FinishReason reason) {
  switch (reason) {
    case glassbox::v1::FINISH_REASON_LENGTH: return "max_new_tokens";
    case glassbox::v1::FINISH_REASON_STOP_TOKEN: return "a stop token";
    case glassbox::v1::FINISH_REASON_CONTEXT: return "the model's context";
    case glassbox::v1::FINISH_REASON_STOP_STRING: return "a stop string";
    default: return "unknown";
  }
}

// Each row's continuation and why it stopped; `label` names the steered or unsteered set.
void PrintSequences(const GenerateRequest& request,
                    const google::protobuf::RepeatedPtrField<glassbox::v1::GeneratedSequence>& sequences,
                    bool text_shown, std::string_view label, std::ostream& out) {
  for (int r = 0; r < sequences.size(); ++r) {
    const glassbox::v1::GeneratedSequence& s = sequences[r];
    if (!text_shown) {
      const std::string prompt =
          r < request.inputs().texts_size() ? request.inputs().texts(r) : std::string();
      out << absl::StrFormat("%srow %d: %s%s\n", label, r, prompt,
                             s.text().empty() ? absl::StrJoin(s.tokens(), ",") : s.text());
    }
    out << absl::StrFormat("  (%srow %d: %d new tokens [%s]; stopped by %s)\n", label, r,
                           s.tokens_size(), absl::StrJoin(s.tokens(), ","),
                           FinishName(s.finish_reason()));
  }
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream& err) {
  const GenerateRequest& request = Request<GenerateRequest>(invocation);
  const bool one_row = request.inputs().texts_size() + request.inputs().token_ids_size() == 1;
  // One row's text streams as it arrives: the steered continuation, then (--unsteered) the
  // unsteered one on a line of its own.
  bool streamed[2] = {false, false};
  auto on_step = [&](const glassbox::v1::GenerateStep& step) -> absl::Status {
    if (one_row && step.texts_size() == 1) {
      const int set = step.unsteered() ? 1 : 0;
      if (!streamed[set]) {
        if (set == 1) out << (streamed[0] ? "\n" : "") << "unsteered: ";
        if (request.inputs().texts_size() == 1) out << request.inputs().texts(0);
      }
      out << step.texts(0) << std::flush;
      streamed[set] = true;
    }
    return absl::OkStatus();
  };
  GB_ASSIGN_OR_RETURN(client::Client::GenerateResult result, client.Generate(request, on_step));
  if (streamed[0] || streamed[1]) out << "\n";
  PrintSequences(request, result.summary.sequences(), one_row && streamed[0], "", out);
  if (request.include_unsteered()) {
    PrintSequences(request, result.summary.unsteered_sequences(), one_row && streamed[1],
                   "unsteered ", out);
  }
  out << absl::StrFormat("%.3f s\n", result.summary.timings().total_seconds());
  return absl::OkStatus();
}

}  // namespace

extern constinit const Command kGenerateCommand = {
    .name = "generate",
    .brief = "generate --model MODEL ...",
    .synopsis = "generate --model MODEL (--text TEXT | --tokens IDS)...\n"
                "[--max_new_tokens 20] [--temperature 0] [--top_k N] [--top_p P]\n"
                "[--min_p P] [--repetition_penalty R] [--seed N] [--stop_tokens IDS]\n"
                "[--nostop_at_eos] [--stop_string TEXT]... [--unsteered]\n"
                "[--intervene SPEC]... [--sae_splice ...]",
    .summary = "continue each row (greedy unless --temperature), with edits at every step",
    .flags = kFlags,
    .flags_heading = "Generate flags:",
    .flags_notes = kNotes,
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
