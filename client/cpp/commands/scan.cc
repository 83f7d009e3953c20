// `glassbox scan MODEL`: starts a dataset scan on the server (a job: docs/scans.md) and, unless
// --detach, follows it to its end with a progress line, then prints a summary and exits with the
// job's outcome.
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/status_macros.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/errors.h"
#include "client/cpp/cli/job_progress.h"
#include "client/cpp/intervention_spec.h"

namespace glassbox::cli {
namespace {

using glassbox::v1::JobInfo;
using glassbox::v1::ScanCorpus;
using glassbox::v1::StartScanRequest;

constexpr Flag kFlags[] = {
    {"corpus", FlagKind::kValue, "--corpus PATH",
     "a file under the server's --corpus_dir: .jsonl (the --text_field of\n"
     "each line's object), .txt (a document per line) or .npy token ids\n"
     "(int32/int64; [contexts, context_length] or 1-D as a stream)"},
    {"text", FlagKind::kRepeated, "--text TEXT",
     "a document to upload instead, tokenized by the server (repeatable)"},
    {"tokens", FlagKind::kRepeated, "--tokens IDS", "a document as token ids: 1,2,3 (repeatable)"},
    {"text_field", FlagKind::kValue, "--text_field FIELD",
     "the field of a .jsonl corpus holding the text (default \"text\")"},
    {"max_contexts", FlagKind::kValue, "--max_contexts N",
     "scan at most N contexts (default: every whole one, up to the server's\n"
     "--scan_max_contexts)"},
    {"neurons", FlagKind::kRepeated, "--neurons HOOK[:LIST]",
     "units of a hook's last axis: blocks.1.mlp.hook_post:0,5,10-19\n"
     "(no LIST: every one); repeatable"},
    {"sae_features", FlagKind::kRepeated, "--sae_features SAE[:LIST]",
     "features of a loaded SAE (see `glassbox saes`; no LIST: every one);\n"
     "repeatable"},
    {"direction", FlagKind::kRepeated, "--direction HOOK:value=V[:name=NAME]",
     "the projection onto a direction at a hook (V: the hook's width in\n"
     "numbers, @FILE.npy or @FILE.safetensors#NAME); repeatable"},
    {"heads", FlagKind::kRepeated, "--heads LAYER[:LIST][:key_position=P|:key_offset=K]",
     "attention heads of a layer (no LIST: every one): each head's output\n"
     "norm, or the attention it pays to key position P (0: BOS) or to the\n"
     "key K tokens back (1: the previous token); repeatable"},
    {"context_length", FlagKind::kValue, "--context_length N", "tokens per context (default 64)"},
    {"bos", FlagKind::kBool, "--nobos",
     "scan raw token runs; by default each context opens with the model's\n"
     "BOS, which also joins documents and is left out of every statistic"},
    {"top_k", FlagKind::kValue, "--top_k N",
     "top-activating contexts kept per target (default 20; 0 = none)"},
    {"random_k", FlagKind::kValue, "--random_k N",
     "contexts kept at random per target (default 20; 0 = none)"},
    {"quantile_bins", FlagKind::kValue, "--quantile_bins N",
     "bins of (0, max] with contexts drawn from each (default 10; 0 = none)"},
    {"per_quantile_k", FlagKind::kValue, "--per_quantile_k N", "contexts per bin (default 5)"},
    {"histogram_bins", FlagKind::kValue, "--histogram_bins N",
     "bins of the histogram of nonzero activations (default 50; 0 = none)"},
    {"logit_k", FlagKind::kValue, "--logit_k N",
     "top and bottom logit effects per target (default 10; 0 = none)"},
    {"window_before", FlagKind::kValue, "--window_before N",
     "tokens kept before each record's max (default: to the context's start)"},
    {"window_after", FlagKind::kValue, "--window_after N",
     "tokens kept after it (default: to the context's end)"},
    {"seed", FlagKind::kValue, "--seed N", "seed of the random records (default 0)"},
    {"batch_contexts", FlagKind::kValue, "--batch_contexts N",
     "contexts per forward pass (default: the server's choice)"},
    {"detach", FlagKind::kBool, "--detach",
     "print the job id and return once the scan is queued (follow it with\n"
     "`glassbox job watch ID`)"},
};

constexpr char kNotes[] =
    "  Give at least one target. Targets are numbered neurons first, then SAE features, then\n"
    "  directions, then heads, each in command-line order. Without --detach the scan's progress is shown on\n"
    "  stderr until it ends; the exit code is then the job's (0 succeeded, 1 failed or\n"
    "  cancelled); Ctrl-C stops watching, not the scan (`glassbox job cancel ID`).\n";

// "0,5,10-19": indices >= 0, ranges inclusive.
absl::StatusOr<std::vector<int32_t>> ParseUnitList(absl::string_view flag, absl::string_view spec,
                                                   absl::string_view list) {
  constexpr int64_t kMaxRange = int64_t{1} << 20;
  std::vector<int32_t> units;
  if (list.empty()) {
    return SpecError(flag, spec, "no indices after ':' (leave \":LIST\" out for every one)");
  }
  for (absl::string_view piece : absl::StrSplit(list, ',')) {
    piece = absl::StripAsciiWhitespace(piece);
    if (piece.empty()) return SpecError(flag, spec, "an empty entry in the list");
    const size_t dash = piece.find('-', 1);
    int32_t first, last;
    if (dash == absl::string_view::npos) {
      if (!absl::SimpleAtoi(piece, &first)) {
        return SpecError(flag, spec, absl::StrFormat("\"%s\" is not an index", piece));
      }
      last = first;
    } else if (!absl::SimpleAtoi(piece.substr(0, dash), &first) ||
               !absl::SimpleAtoi(piece.substr(dash + 1), &last)) {
      return SpecError(flag, spec, absl::StrFormat("\"%s\" is not a range K-L", piece));
    }
    if (first < 0 || last < 0) {
      return SpecError(flag, spec, absl::StrFormat("\"%s\": indices are >= 0", piece));
    }
    if (last < first) {
      return SpecError(flag, spec, absl::StrFormat("the range %s runs backwards", piece));
    }
    if (int64_t{last} - first >= kMaxRange) {
      return SpecError(flag, spec,
                       absl::StrFormat("the range %s holds more than %d indices (leave the "
                                       "list out for every one)",
                                       piece, kMaxRange));
    }
    for (int64_t unit = first; unit <= last; ++unit) units.push_back(static_cast<int32_t>(unit));
  }
  return units;
}

// "NAME[:LIST]": the name, and the units (empty: every one).
absl::StatusOr<std::pair<std::string, std::vector<int32_t>>> ParseUnits(absl::string_view flag,
                                                                        absl::string_view spec,
                                                                        absl::string_view what) {
  const size_t colon = spec.rfind(':');
  const absl::string_view name = spec.substr(0, colon);
  if (name.empty()) return SpecError(flag, spec, absl::StrCat("needs ", what));
  std::vector<int32_t> units;
  if (colon != absl::string_view::npos) {
    GB_ASSIGN_OR_RETURN(units, ParseUnitList(flag, spec, spec.substr(colon + 1)));
  }
  return std::pair{std::string(name), std::move(units)};
}

absl::StatusOr<glassbox::v1::DirectionTarget> ParseDirection(const std::string& spec,
                                                             const ValueLoader& load) {
  const std::vector<std::string> parts = absl::StrSplit(spec, ':');
  if (parts[0].empty()) {
    return SpecError("direction", spec,
                     "expected HOOK:value=V[:name=NAME] (e.g. "
                     "blocks.1.hook_resid_post:value=@dir.npy:name=honesty)");
  }
  glassbox::v1::DirectionTarget direction;
  direction.set_hook(parts[0]);
  GB_ASSIGN_OR_RETURN(auto keys, ParseSpecKeys("direction", spec, parts, 1));
  bool has_value = false;
  for (const auto& [key, value] : keys) {
    if (key == "value") {
      GB_ASSIGN_OR_RETURN(std::vector<float> v, ParseSpecValues("direction", spec, value, load));
      direction.mutable_vector()->Add(v.begin(), v.end());
      has_value = true;
    } else if (key == "name") {
      if (value.empty()) return SpecError("direction", spec, "name= needs a name");
      direction.set_name(value);
    } else {
      return SpecError("direction", spec, absl::StrFormat("unknown key \"%s\" (value, name)", key));
    }
  }
  if (!has_value) {
    return SpecError("direction", spec,
                     "needs value=V (numbers, @FILE.npy or @FILE.safetensors#NAME)");
  }
  return direction;
}

// "LAYER[:LIST][:key_position=P|:key_offset=K]".
absl::StatusOr<glassbox::v1::HeadTargets> ParseHeads(absl::string_view spec) {
  using glassbox::v1::HeadTargets;
  const std::vector<absl::string_view> parts = absl::StrSplit(spec, ':');
  HeadTargets heads;
  int32_t layer = -1;
  if (!absl::SimpleAtoi(parts[0], &layer) || layer < 0) {
    return SpecError("heads", spec, "needs a layer number (>= 0) first");
  }
  heads.set_layer(layer);
  bool listed = false, keyed = false;
  for (size_t i = 1; i < parts.size(); ++i) {
    const size_t eq = parts[i].find('=');
    if (eq == absl::string_view::npos) {
      if (listed) return SpecError("heads", spec, "two lists of heads");
      GB_ASSIGN_OR_RETURN(std::vector<int32_t> units, ParseUnitList("heads", spec, parts[i]));
      heads.mutable_heads()->Add(units.begin(), units.end());
      listed = true;
      continue;
    }
    const absl::string_view key = parts[i].substr(0, eq), value = parts[i].substr(eq + 1);
    if (key != "key_position" && key != "key_offset") {
      return SpecError("heads", spec,
                       absl::StrFormat("unknown key \"%s\" (key_position, key_offset)", key));
    }
    if (keyed) return SpecError("heads", spec, "one key: key_position=P or key_offset=K");
    int32_t k = -1;
    if (!absl::SimpleAtoi(value, &k) || k < 0) {
      return SpecError("heads", spec, absl::StrFormat("%s= needs a number >= 0", key));
    }
    heads.set_measure(key == "key_position" ? HeadTargets::ATTENTION_TO_POSITION
                                            : HeadTargets::ATTENTION_TO_OFFSET);
    heads.set_key(k);
    keyed = true;
  }
  return heads;
}

absl::Status ParseTargets(const CommandLine& line, StartScanRequest& request) {
  const RawCommandLine& raw = line.raw;
  for (const std::string& spec : raw.Values("neurons")) {
    GB_ASSIGN_OR_RETURN(auto units, ParseUnits("neurons", spec, "a hook name"));
    glassbox::v1::NeuronTargets& neurons = *request.add_targets()->mutable_neurons();
    neurons.set_hook(units.first);
    neurons.mutable_indices()->Add(units.second.begin(), units.second.end());
  }
  for (const std::string& spec : raw.Values("sae_features")) {
    GB_ASSIGN_OR_RETURN(auto units, ParseUnits("sae_features", spec, "an SAE name"));
    glassbox::v1::SaeFeatureTargets& features = *request.add_targets()->mutable_sae_features();
    features.set_sae(units.first);
    features.mutable_features()->Add(units.second.begin(), units.second.end());
  }
  const ValueLoader load = line.env.load_value ? line.env.load_value : ValueLoader(&LoadValueFile);
  for (const std::string& spec : raw.Values("direction")) {
    GB_ASSIGN_OR_RETURN(*request.add_targets()->mutable_direction(), ParseDirection(spec, load));
  }
  for (const std::string& spec : raw.Values("heads")) {
    GB_ASSIGN_OR_RETURN(*request.add_targets()->mutable_heads(), ParseHeads(spec));
  }
  if (request.targets().empty()) {
    return UsageError(
        "scan needs targets: --neurons HOOK[:LIST], --sae_features SAE[:LIST], --direction "
        "HOOK:value=V or --heads LAYER[:LIST] (each repeatable)");
  }
  return absl::OkStatus();
}

absl::Status ParseCorpus(const RawCommandLine& raw, ScanCorpus& corpus) {
  const std::optional<std::string> path = raw.Value("corpus");
  const std::vector<std::string> texts = raw.Values("text");
  const std::vector<std::string> token_rows = raw.Values("tokens");
  const bool documents = !texts.empty() || !token_rows.empty();
  if (path.has_value() && documents) {
    return UsageError(
        "scan reads one corpus: --corpus PATH or documents uploaded as --text / --tokens, not "
        "both");
  }
  if (!path.has_value() && !documents) {
    return UsageError(
        "scan needs a corpus: --corpus PATH (a file under the server's --corpus_dir) or "
        "documents to upload as --text TEXT / --tokens IDS (each repeatable)");
  }
  if (path.has_value()) {
    if (path->empty()) return UsageError("--corpus needs a file name");
    corpus.set_path(*path);
  }
  for (const std::string& text : texts) corpus.mutable_documents()->add_texts(text);
  for (const std::string& row : token_rows) {
    GB_ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseIntList("tokens", {row}, 0));
    if (ids.empty()) return UsageError("--tokens: a document needs at least one token id");
    corpus.mutable_documents()->add_token_sequences()->mutable_ids()->Add(ids.begin(), ids.end());
  }
  if (std::optional<std::string> field = raw.Value("text_field")) {
    if (!path.has_value() || !absl::EndsWithIgnoreCase(*path, ".jsonl")) {
      return UsageError("--text_field applies to a --corpus .jsonl file");
    }
    if (field->empty()) return UsageError("--text_field needs a field name");
    corpus.set_text_field(*field);
  }
  if (std::optional<std::string> max = raw.Value("max_contexts")) {
    GB_ASSIGN_OR_RETURN(int64_t n, ParseInt("max_contexts", *max, 1, INT64_MAX));
    corpus.set_max_contexts(n);
  }
  return absl::OkStatus();
}

// A count the server defaults when 0 and leaves out at -1: not given -> 0, 0 -> -1, N -> N.
absl::StatusOr<int32_t> CountFlag(const RawCommandLine& raw, std::string_view flag) {
  if (!raw.Has(flag)) return 0;
  GB_ASSIGN_OR_RETURN(int32_t n, ParseInt32Flag(raw, flag, "", 0));
  return n == 0 ? -1 : n;
}

// A size the server defaults when 0: not given -> 0, else N >= 1.
absl::StatusOr<int32_t> SizeFlag(const RawCommandLine& raw, std::string_view flag) {
  if (!raw.Has(flag)) return 0;
  return ParseInt32Flag(raw, flag, "", 1);
}

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  const RawCommandLine& raw = line.raw;
  StartScanRequest& request = invocation.request.emplace<StartScanRequest>();
  if (line.operands[0].empty()) return UsageError("scan needs a MODEL (see `glassbox models`)");
  request.set_model(line.operands[0]);
  GB_RETURN_IF_ERROR(ParseCorpus(raw, *request.mutable_corpus()));
  GB_RETURN_IF_ERROR(ParseTargets(line, request));
  GB_ASSIGN_OR_RETURN(int32_t context_length, SizeFlag(raw, "context_length"));
  request.set_context_length(context_length);
  request.set_no_bos(raw.Value("bos") == "false");
  GB_ASSIGN_OR_RETURN(int32_t top_k, CountFlag(raw, "top_k"));
  request.set_top_k(top_k);
  GB_ASSIGN_OR_RETURN(int32_t random_k, CountFlag(raw, "random_k"));
  request.set_random_k(random_k);
  GB_ASSIGN_OR_RETURN(int32_t quantile_bins, CountFlag(raw, "quantile_bins"));
  request.set_quantile_bins(quantile_bins);
  if (quantile_bins < 0 && raw.Has("per_quantile_k")) {
    return UsageError(
        "--per_quantile_k applies to quantile bins, which --quantile_bins 0 leaves out");
  }
  GB_ASSIGN_OR_RETURN(int32_t per_quantile_k, SizeFlag(raw, "per_quantile_k"));
  request.set_per_quantile_k(per_quantile_k);
  GB_ASSIGN_OR_RETURN(int32_t histogram_bins, CountFlag(raw, "histogram_bins"));
  request.set_histogram_bins(histogram_bins);
  GB_ASSIGN_OR_RETURN(int32_t logit_k, CountFlag(raw, "logit_k"));
  request.set_logit_k(logit_k);
  GB_ASSIGN_OR_RETURN(int32_t window_before, SizeFlag(raw, "window_before"));
  request.set_window_before(window_before);
  GB_ASSIGN_OR_RETURN(int32_t window_after, SizeFlag(raw, "window_after"));
  request.set_window_after(window_after);
  if (std::optional<std::string> seed = raw.Value("seed")) {
    GB_ASSIGN_OR_RETURN(int64_t value, ParseInt("seed", *seed, 0, INT64_MAX));
    request.set_seed(static_cast<uint64_t>(value));
  }
  GB_ASSIGN_OR_RETURN(int32_t batch_contexts, SizeFlag(raw, "batch_contexts"));
  request.set_batch_contexts(batch_contexts);
  invocation.detach = raw.IsTrue("detach");
  return absl::OkStatus();
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream& err) {
  GB_ASSIGN_OR_RETURN(JobInfo info, client.StartScan(Request<StartScanRequest>(invocation)));
  const std::string plan = absl::StrFormat(
      "%d targets, %d contexts, %d tokens in %d pass%s", info.targets(), info.contexts_total(),
      info.tokens_total(), info.passes(), info.passes() == 1 ? "" : "es");
  if (invocation.detach) {
    out << info.job_id() << "\n";
    err << absl::StrFormat("queued %s: %s; follow it with `glassbox job watch %s`\n", info.job_id(),
                           plan, info.job_id());
    return absl::OkStatus();
  }
  err << absl::StrFormat(
      "started %s: %s (Ctrl-C stops watching, not the scan: glassbox job cancel %s)\n",
      info.job_id(), plan, info.job_id());
  return WatchToEnd(client, info.job_id(), invocation.progress_in_place, out, err);
}

}  // namespace

extern constinit const Command kScanCommand = {
    .name = "scan",
    .operands = 1,
    .brief = "scan MODEL (--corpus PATH | --text TEXT...) --neurons HOOK[:LIST]...",
    .synopsis =
        "scan MODEL (--corpus PATH | (--text TEXT | --tokens IDS)...)\n"
        "(--neurons HOOK[:LIST] | --sae_features SAE[:LIST] |\n"
        " --direction HOOK:value=V[:name=NAME] | --heads LAYER[:LIST][:KEY])...\n"
        "[scan flags] [--detach]",
    .summary =
        "a dataset scan on the server (a job): per neuron, SAE feature, direction or\n"
        "attention head its statistics and top-activating contexts; shows progress until\n"
        "it ends",
    .flags = kFlags,
    .flags_heading = "Scan flags (docs/scans.md; LIST: indices and ranges, 0,5,10-19):",
    .flags_notes = kNotes,
    .synopsis_rank = 2,
    .flags_rank = 2,
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
