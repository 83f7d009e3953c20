#include "client/cpp/cli.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <map>
#include <set>
#include <span>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "base/safetensors.h"
#include "base/status_macros.h"
#include "client/cpp/sae_spec.h"

namespace glassbox::cli {
namespace {

using client::ReceivedTensor;
using client::RunResult;

// ---- command-line parsing ----

enum class FlagKind {
  kValue,     // --name VALUE or --name=VALUE; the last occurrence wins
  kRepeated,  // as kValue, every occurrence kept
  kBool,      // --name, --noname, --name=true|false
};

// Which commands accept a flag (bit per Command).
constexpr uint32_t Bit(Command c) { return 1u << static_cast<int>(c); }
constexpr uint32_t kAll = ~0u;
constexpr uint32_t kRunOnly = Bit(Command::kRun);
constexpr uint32_t kPatchOnly = Bit(Command::kPatch);
// Commands that take one batch of --text / --tokens rows.
constexpr uint32_t kRowInputs =
    kRunOnly | Bit(Command::kLogitLens) | Bit(Command::kDla) | Bit(Command::kAttnNorms);
constexpr uint32_t kWithOut = kRowInputs | kPatchOnly;
constexpr uint32_t kSaeEncodeOnly = Bit(Command::kSaeEncode);

struct FlagSpec {
  std::string_view name;
  FlagKind kind;
  uint32_t commands;
};

constexpr FlagSpec kFlags[] = {
    {"help", FlagKind::kBool, kAll},
    {"server", FlagKind::kValue, kAll},
    {"api_key", FlagKind::kValue, kAll},
    {"tls", FlagKind::kBool, kAll},
    {"tls_root_cert", FlagKind::kValue, kAll},
    {"timeout", FlagKind::kValue, kAll},
    {"prepend_bos", FlagKind::kBool, Bit(Command::kTokenize) | kWithOut | kSaeEncodeOnly},
    {"split_special_tokens", FlagKind::kBool, Bit(Command::kTokenize)},
    {"skip_special_tokens", FlagKind::kBool, Bit(Command::kDetokenize)},
    {"model", FlagKind::kValue, kWithOut | Bit(Command::kSaes)},
    {"text", FlagKind::kRepeated, kRowInputs | kSaeEncodeOnly},
    {"tokens", FlagKind::kRepeated, kRowInputs | kSaeEncodeOnly},
    {"intervene", FlagKind::kRepeated, kRunOnly},
    {"capture", FlagKind::kRepeated, kRunOnly},
    {"positions", FlagKind::kRepeated, kRunOnly},
    {"heads", FlagKind::kRepeated, kRunOnly},
    {"layers", FlagKind::kRepeated, kRunOnly | Bit(Command::kAttnNorms)},
    {"dtype", FlagKind::kValue, kRunOnly},
    {"reduce", FlagKind::kValue, kRunOnly},
    {"k", FlagKind::kValue, kRunOnly},
    {"logits", FlagKind::kValue, kRunOnly},
    {"logits_k", FlagKind::kValue, kRunOnly},
    {"loss", FlagKind::kBool, kRunOnly},
    {"target_tokens", FlagKind::kRepeated, kRunOnly},
    {"stop_at_layer", FlagKind::kValue, kRunOnly},
    {"chunk_bytes", FlagKind::kValue, kRunOnly},
    {"sae_splice", FlagKind::kRepeated, kRunOnly},
    {"sae_edit", FlagKind::kRepeated, kRunOnly},
    {"sae_steer", FlagKind::kRepeated, kRunOnly},
    {"cache_as", FlagKind::kValue, kRunOnly},
    {"cache_hook", FlagKind::kRepeated, kRunOnly},
    {"ttl", FlagKind::kValue, kRunOnly},
    {"out", FlagKind::kValue, kWithOut | kSaeEncodeOnly},
    // patch
    {"clean_text", FlagKind::kRepeated, kPatchOnly},
    {"corrupted_text", FlagKind::kRepeated, kPatchOnly},
    {"clean_tokens", FlagKind::kRepeated, kPatchOnly},
    {"corrupted_tokens", FlagKind::kRepeated, kPatchOnly},
    {"kind", FlagKind::kValue, kPatchOnly},
    {"metric", FlagKind::kValue, kPatchOnly},
    {"normalized", FlagKind::kBool, kPatchOnly},
    {"max_rows_per_pass", FlagKind::kValue, kPatchOnly},
    // logit-lens, dla
    {"top_k", FlagKind::kValue, Bit(Command::kLogitLens) | kSaeEncodeOnly},
    {"targets", FlagKind::kRepeated, Bit(Command::kLogitLens)},
    {"position", FlagKind::kValue, Bit(Command::kLogitLens) | Bit(Command::kDla)},
    {"token", FlagKind::kValue, Bit(Command::kDla)},
    {"minus", FlagKind::kValue, Bit(Command::kDla)},
    {"top", FlagKind::kValue, Bit(Command::kDla)},
    // sae-encode
    {"sae", FlagKind::kValue, kSaeEncodeOnly},
    {"dense", FlagKind::kBool, kSaeEncodeOnly},
};

const FlagSpec* FindFlag(std::string_view name) {
  for (const FlagSpec& spec : kFlags) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

absl::Status UsageError(absl::string_view message) { return absl::InvalidArgumentError(message); }

// Flags as given, before interpretation.
struct RawCommandLine {
  std::map<std::string, std::vector<std::string>, std::less<>> flags;
  std::vector<std::string> positional;

  bool Has(std::string_view name) const { return flags.find(name) != flags.end(); }
  std::optional<std::string> Value(std::string_view name) const {
    auto it = flags.find(name);
    if (it == flags.end()) return std::nullopt;
    return it->second.back();
  }
  std::vector<std::string> Values(std::string_view name) const {
    auto it = flags.find(name);
    return it == flags.end() ? std::vector<std::string>() : it->second;
  }
};

absl::StatusOr<bool> ParseBool(std::string_view flag, std::string_view text) {
  const std::string lower = absl::AsciiStrToLower(absl::string_view(text.data(), text.size()));
  if (lower == "true" || lower == "1" || lower == "yes") return true;
  if (lower == "false" || lower == "0" || lower == "no") return false;
  return UsageError(absl::StrFormat("--%s: \"%s\" is not true or false", flag, text));
}

absl::StatusOr<RawCommandLine> Tokenize(const std::vector<std::string>& args) {
  RawCommandLine raw;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      raw.positional.insert(raw.positional.end(), args.begin() + i + 1, args.end());
      break;
    }
    // "-1" and "-" are values, not flags.
    const bool is_flag = arg.size() >= 2 && arg[0] == '-' &&
                         (absl::ascii_isalpha(arg[1]) ||
                          (arg[1] == '-' && arg.size() > 2 && absl::ascii_isalpha(arg[2])));
    if (!is_flag) {
      raw.positional.push_back(arg);
      continue;
    }
    std::string_view body = arg;
    body.remove_prefix(arg[1] == '-' ? 2 : 1);
    std::optional<std::string> inline_value;
    if (size_t eq = body.find('='); eq != std::string_view::npos) {
      inline_value = std::string(body.substr(eq + 1));
      body = body.substr(0, eq);
    }
    // --clean-text and --clean_text are the same flag.
    std::string name(body);
    std::replace(name.begin(), name.end(), '-', '_');
    if (name == "h") name = "help";
    const FlagSpec* spec = FindFlag(name);
    bool negated = false;
    if (spec == nullptr && absl::StartsWith(name, "no")) {
      std::string_view positive_name = std::string_view(name).substr(2);
      if (!positive_name.empty() && positive_name[0] == '_') positive_name.remove_prefix(1);
      const FlagSpec* positive = FindFlag(positive_name);
      if (positive != nullptr && positive->kind == FlagKind::kBool) {
        spec = positive;
        negated = true;
        name = std::string(positive->name);
      }
    }
    if (spec == nullptr) return UsageError(absl::StrFormat("unknown flag %s", arg));
    std::string value;
    if (spec->kind == FlagKind::kBool) {
      bool on = !negated;
      if (inline_value.has_value()) {
        if (negated) return UsageError(absl::StrFormat("%s takes no value", arg));
        GB_ASSIGN_OR_RETURN(on, ParseBool(name, *inline_value));
      }
      value = on ? "true" : "false";
    } else if (inline_value.has_value()) {
      value = *inline_value;
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return UsageError(absl::StrFormat("--%s needs a value", name));
    }
    raw.flags[name].push_back(std::move(value));
  }
  return raw;
}

constexpr char kCommandList[] =
    "models, info, tokenize, detokenize, run, patch, logit-lens, dla, attn-norms, saes, "
    "sae-encode, cached, release";

absl::StatusOr<Command> ParseCommand(std::string_view word) {
  if (word == "models") return Command::kModels;
  if (word == "info") return Command::kInfo;
  if (word == "tokenize") return Command::kTokenize;
  if (word == "detokenize") return Command::kDetokenize;
  if (word == "run") return Command::kRun;
  if (word == "patch") return Command::kPatch;
  if (word == "logit-lens" || word == "logit_lens") return Command::kLogitLens;
  if (word == "dla") return Command::kDla;
  if (word == "attn-norms" || word == "attn_norms") return Command::kAttnNorms;
  if (word == "saes") return Command::kSaes;
  if (word == "sae-encode" || word == "sae_encode") return Command::kSaeEncode;
  if (word == "cached") return Command::kCached;
  if (word == "release") return Command::kRelease;
  if (word == "help") return Command::kHelp;
  return UsageError(absl::StrFormat("unknown command \"%s\" (commands: %s)", word, kCommandList));
}

std::string_view CommandName(Command command) {
  switch (command) {
    case Command::kHelp:
      return "help";
    case Command::kModels:
      return "models";
    case Command::kInfo:
      return "info";
    case Command::kTokenize:
      return "tokenize";
    case Command::kDetokenize:
      return "detokenize";
    case Command::kRun:
      return "run";
    case Command::kPatch:
      return "patch";
    case Command::kLogitLens:
      return "logit-lens";
    case Command::kDla:
      return "dla";
    case Command::kAttnNorms:
      return "attn-norms";
    case Command::kSaes:
      return "saes";
    case Command::kSaeEncode:
      return "sae-encode";
    case Command::kCached:
      return "cached";
    case Command::kRelease:
      return "release";
  }
  return "?";
}

absl::StatusOr<int64_t> ParseInt(std::string_view flag, std::string_view text, int64_t min,
                                 int64_t max) {
  int64_t value;
  if (!absl::SimpleAtoi(absl::string_view(text.data(), text.size()), &value)) {
    return UsageError(absl::StrFormat("--%s: \"%s\" is not an integer", flag, text));
  }
  if (value < min || value > max) {
    return UsageError(absl::StrFormat("--%s: %d is out of range [%d, %d]", flag, value, min, max));
  }
  return value;
}

// "1,2,3" (several occurrences concatenate).
absl::StatusOr<std::vector<int32_t>> ParseIntList(std::string_view flag,
                                                  const std::vector<std::string>& texts,
                                                  int64_t min = INT32_MIN) {
  std::vector<int32_t> values;
  for (const std::string& text : texts) {
    for (absl::string_view piece : absl::StrSplit(text, ',')) {
      piece = absl::StripAsciiWhitespace(piece);
      if (piece.empty()) {
        return UsageError(absl::StrFormat("--%s: \"%s\" has an empty entry", flag, text));
      }
      GB_ASSIGN_OR_RETURN(
          int64_t value,
          ParseInt(flag, std::string_view(piece.data(), piece.size()), min, INT32_MAX));
      values.push_back(static_cast<int32_t>(value));
    }
  }
  return values;
}

absl::StatusOr<absl::Duration> ParseTimeout(const std::string& text) {
  absl::Duration duration;
  double seconds;
  if (absl::SimpleAtod(text, &seconds)) {
    duration = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, &duration)) {
    return UsageError(absl::StrFormat(
        "--timeout: \"%s\" is not a duration (seconds, or like \"30s\", \"2m\")", text));
  }
  if (duration <= absl::ZeroDuration()) return UsageError("--timeout must be positive");
  return duration;
}

absl::StatusOr<std::string> RequiredModel(const RawCommandLine& raw, std::string_view command) {
  const std::optional<std::string> model = raw.Value("model");
  if (!model.has_value() || model->empty()) {
    return UsageError(absl::StrFormat("%s needs --model MODEL", command));
  }
  return *model;
}

// One batch of rows from --TEXT_FLAG / --TOKENS_FLAG (each repeatable, one row each, one kind).
// --prepend_bos applies when the rows are texts.
absl::Status ParseRowInputs(const RawCommandLine& raw, std::string_view command,
                            std::string_view text_flag, std::string_view tokens_flag,
                            glassbox::v1::Inputs& inputs) {
  const std::vector<std::string> texts = raw.Values(text_flag);
  const std::vector<std::string> token_rows = raw.Values(tokens_flag);
  if (texts.empty() == token_rows.empty()) {
    return UsageError(absl::StrFormat(
        "%s needs inputs as --%s TEXT or as --%s IDS (either may be repeated, one row each), "
        "not both",
        command, text_flag, tokens_flag));
  }
  for (const std::string& text : texts) inputs.add_texts(text);
  for (const std::string& row : token_rows) {
    GB_ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseIntList(tokens_flag, {row}, 0));
    if (ids.empty()) {
      return UsageError(absl::StrFormat("--%s: a row needs at least one token id", tokens_flag));
    }
    inputs.add_token_ids()->mutable_ids()->Add(ids.begin(), ids.end());
  }
  if (std::optional<std::string> bos = raw.Value("prepend_bos")) {
    if (texts.empty()) {
      if (command == "patch" && (raw.Has("clean_text") || raw.Has("corrupted_text"))) {
        return absl::OkStatus();  // applies to the other side of the pairs
      }
      return UsageError(absl::StrFormat("--prepend_bos applies to --%s inputs only", text_flag));
    }
    inputs.set_prepend_bos(*bos == "true");
  }
  return absl::OkStatus();
}

absl::Status ParseOut(const RawCommandLine& raw, Invocation& inv) {
  inv.out_path = raw.Value("out").value_or("");
  if (raw.Has("out") && inv.out_path.empty()) return UsageError("--out needs a file name");
  return absl::OkStatus();
}

absl::Status ParseRun(const RawCommandLine& raw, const Environment& env, Invocation& inv) {
  glassbox::v1::RunRequest& request = inv.run;
  GB_ASSIGN_OR_RETURN(std::string model, RequiredModel(raw, "run"));
  request.set_model(model);
  GB_RETURN_IF_ERROR(ParseRowInputs(raw, "run", "text", "tokens", *request.mutable_inputs()));
  const ValueLoader load = env.load_value ? env.load_value : ValueLoader(&LoadValueFile);
  for (const std::string& spec : raw.Values("intervene")) {
    GB_ASSIGN_OR_RETURN(*request.add_interventions(), ParseInterventionSpec(spec, load));
  }
  GB_RETURN_IF_ERROR(AddSaeFlags(raw.Values("sae_splice"), raw.Values("sae_edit"),
                                 raw.Values("sae_steer"), request));

  // Capture options apply to every --capture.
  glassbox::v1::Capture capture_template;
  GB_ASSIGN_OR_RETURN(std::vector<int32_t> positions,
                      ParseIntList("positions", raw.Values("positions")));
  GB_ASSIGN_OR_RETURN(std::vector<int32_t> heads, ParseIntList("heads", raw.Values("heads"), 0));
  GB_ASSIGN_OR_RETURN(std::vector<int32_t> layers, ParseIntList("layers", raw.Values("layers"), 0));
  capture_template.mutable_positions()->Add(positions.begin(), positions.end());
  capture_template.mutable_heads()->Add(heads.begin(), heads.end());
  capture_template.mutable_layers()->Add(layers.begin(), layers.end());
  if (std::optional<std::string> dtype = raw.Value("dtype")) {
    std::optional<glassbox::v1::DType> parsed = client::ParseDType(*dtype);
    if (!parsed.has_value() || *parsed == glassbox::v1::DTYPE_I32) {
      return UsageError(absl::StrFormat("--dtype: \"%s\" is not one of f32, f16, bf16", *dtype));
    }
    capture_template.set_dtype(*parsed);
  }
  const std::string reduce = raw.Value("reduce").value_or("none");
  if (reduce == "none") {
    capture_template.set_reduction(glassbox::v1::REDUCTION_NONE);
  } else if (reduce == "mean_pos") {
    capture_template.set_reduction(glassbox::v1::REDUCTION_MEAN_POS);
  } else if (reduce == "top_k") {
    capture_template.set_reduction(glassbox::v1::REDUCTION_TOP_K);
  } else if (reduce == "norm") {
    capture_template.set_reduction(glassbox::v1::REDUCTION_NORM);
  } else {
    return UsageError(
        absl::StrFormat("--reduce: \"%s\" is not one of none, mean_pos, top_k, norm", reduce));
  }
  if (std::optional<std::string> k = raw.Value("k")) {
    if (reduce != "top_k") return UsageError("--k applies to --reduce top_k only");
    GB_ASSIGN_OR_RETURN(int64_t value, ParseInt("k", *k, 1, INT32_MAX));
    capture_template.set_k(static_cast<int32_t>(value));
  } else if (reduce == "top_k") {
    return UsageError("--reduce top_k needs --k N");
  }
  const std::vector<std::string> patterns = raw.Values("capture");
  if (patterns.empty()) {
    for (std::string_view flag : {"positions", "heads", "layers", "dtype", "reduce", "k"}) {
      if (raw.Has(flag)) {
        return UsageError(absl::StrFormat("--%s applies to captures; add --capture PATTERN", flag));
      }
    }
  }
  for (const std::string& pattern : patterns) {
    if (pattern.empty()) return UsageError("--capture needs a hook name or glob");
    glassbox::v1::Capture& capture = *request.add_captures();
    capture = capture_template;
    capture.set_hook(pattern);
  }

  glassbox::v1::Outputs& outputs = *request.mutable_outputs();
  const std::string logits = raw.Value("logits").value_or("none");
  if (logits == "none") {
    outputs.set_logits(glassbox::v1::LOGITS_NONE);
  } else if (logits == "last") {
    outputs.set_logits(glassbox::v1::LOGITS_LAST);
  } else if (logits == "all") {
    outputs.set_logits(glassbox::v1::LOGITS_ALL);
  } else if (logits == "top_k") {
    outputs.set_logits(glassbox::v1::LOGITS_TOP_K);
  } else {
    return UsageError(
        absl::StrFormat("--logits: \"%s\" is not one of none, last, all, top_k", logits));
  }
  if (std::optional<std::string> k = raw.Value("logits_k")) {
    if (logits != "top_k") return UsageError("--logits_k applies to --logits top_k only");
    GB_ASSIGN_OR_RETURN(int64_t value, ParseInt("logits_k", *k, 1, INT32_MAX));
    outputs.set_logits_k(static_cast<int32_t>(value));
  } else if (logits == "top_k") {
    return UsageError("--logits top_k needs --logits_k N");
  }
  outputs.set_loss_per_token(raw.Value("loss").value_or("false") == "true");
  GB_ASSIGN_OR_RETURN(std::vector<int32_t> targets,
                      ParseIntList("target_tokens", raw.Values("target_tokens"), 0));
  outputs.mutable_target_tokens()->Add(targets.begin(), targets.end());

  if (std::optional<std::string> stop = raw.Value("stop_at_layer")) {
    GB_ASSIGN_OR_RETURN(int64_t value, ParseInt("stop_at_layer", *stop, 0, INT32_MAX));
    request.set_stop_at_layer(static_cast<int32_t>(value));
    if (outputs.logits() != glassbox::v1::LOGITS_NONE || outputs.loss_per_token() ||
        !targets.empty()) {
      return UsageError(
          "--stop_at_layer stops before the unembedding: it cannot be combined with --logits, "
          "--loss or --target_tokens");
    }
  }
  if (std::optional<std::string> chunk = raw.Value("chunk_bytes")) {
    GB_ASSIGN_OR_RETURN(int64_t value, ParseInt("chunk_bytes", *chunk, 1, UINT32_MAX));
    request.set_chunk_bytes(static_cast<uint32_t>(value));
  }
  if (std::optional<std::string> name = raw.Value("cache_as")) {
    auto* keep = request.mutable_keep();
    keep->set_name(*name);
    for (const std::string& hook : raw.Values("cache_hook")) keep->add_hooks(hook);
    if (std::optional<std::string> ttl = raw.Value("ttl")) {
      GB_ASSIGN_OR_RETURN(int64_t value, ParseInt("ttl", *ttl, 1, INT32_MAX));
      keep->set_ttl_seconds(value);
    }
  } else if (!raw.Values("cache_hook").empty() || raw.Value("ttl")) {
    return UsageError("--cache_hook and --ttl apply to a run kept with --cache_as NAME");
  }
  return ParseOut(raw, inv);
}

absl::Status ParsePatch(const RawCommandLine& raw, Invocation& inv) {
  glassbox::v1::PatchingSweepRequest& request = inv.patch;
  GB_ASSIGN_OR_RETURN(std::string model, RequiredModel(raw, "patch"));
  request.set_model(model);
  GB_RETURN_IF_ERROR(
      ParseRowInputs(raw, "patch", "clean_text", "clean_tokens", *request.mutable_clean()));
  GB_RETURN_IF_ERROR(ParseRowInputs(raw, "patch", "corrupted_text", "corrupted_tokens",
                                    *request.mutable_corrupted()));
  const int clean_rows = request.clean().texts_size() + request.clean().token_ids_size();
  const int corrupted_rows =
      request.corrupted().texts_size() + request.corrupted().token_ids_size();
  if (clean_rows != corrupted_rows) {
    return UsageError(absl::StrFormat(
        "patch pairs clean and corrupted rows: got %d clean and %d corrupted", clean_rows,
        corrupted_rows));
  }
  const std::optional<std::string> kind = raw.Value("kind");
  if (!kind.has_value()) {
    return UsageError(absl::StrFormat("patch needs --kind (%s)", SweepKindNames()));
  }
  std::optional<glassbox::v1::SweepKind> sweep = ParseSweepKind(*kind);
  if (!sweep.has_value()) {
    return UsageError(
        absl::StrFormat("--kind: \"%s\" is not one of %s", *kind, SweepKindNames()));
  }
  request.set_kind(*sweep);
  const std::optional<std::string> metric = raw.Value("metric");
  if (!metric.has_value()) {
    return UsageError("patch needs --metric (logit_diff:A,B, log_prob:A or loss)");
  }
  GB_ASSIGN_OR_RETURN(*request.mutable_metric(), ParsePatchingMetric(*metric));
  inv.print_normalized = raw.Value("normalized") == "true";
  if (std::optional<std::string> rows = raw.Value("max_rows_per_pass")) {
    GB_ASSIGN_OR_RETURN(int64_t value, ParseInt("max_rows_per_pass", *rows, 1, INT32_MAX));
    request.set_max_rows_per_pass(static_cast<int32_t>(value));
  }
  return ParseOut(raw, inv);
}

absl::StatusOr<int32_t> ParsePosition(const RawCommandLine& raw) {
  GB_ASSIGN_OR_RETURN(int64_t value,
                      ParseInt("position", raw.Value("position").value_or("-1"), INT32_MIN,
                               INT32_MAX));
  return static_cast<int32_t>(value);
}

absl::Status ParseLogitLens(const RawCommandLine& raw, Invocation& inv) {
  glassbox::v1::LogitLensRequest& request = inv.logit_lens;
  GB_ASSIGN_OR_RETURN(std::string model, RequiredModel(raw, "logit-lens"));
  request.set_model(model);
  GB_RETURN_IF_ERROR(
      ParseRowInputs(raw, "logit-lens", "text", "tokens", *request.mutable_inputs()));
  GB_ASSIGN_OR_RETURN(int64_t top_k, ParseInt("top_k", raw.Value("top_k").value_or("5"), 1,
                                              INT32_MAX));
  request.set_top_k(static_cast<int32_t>(top_k));
  GB_ASSIGN_OR_RETURN(std::vector<int32_t> targets,
                      ParseIntList("targets", raw.Values("targets"), 0));
  request.mutable_target_tokens()->Add(targets.begin(), targets.end());
  GB_ASSIGN_OR_RETURN(inv.position, ParsePosition(raw));
  return ParseOut(raw, inv);
}

absl::Status ParseDla(const RawCommandLine& raw, Invocation& inv) {
  glassbox::v1::DirectLogitAttributionRequest& request = inv.dla;
  GB_ASSIGN_OR_RETURN(std::string model, RequiredModel(raw, "dla"));
  request.set_model(model);
  GB_RETURN_IF_ERROR(ParseRowInputs(raw, "dla", "text", "tokens", *request.mutable_inputs()));
  const std::optional<std::string> token = raw.Value("token");
  if (!token.has_value()) return UsageError("dla needs --token ID (the logit to attribute)");
  GB_ASSIGN_OR_RETURN(int64_t token_id, ParseInt("token", *token, 0, INT32_MAX));
  request.set_token(static_cast<int32_t>(token_id));
  if (std::optional<std::string> minus = raw.Value("minus")) {
    GB_ASSIGN_OR_RETURN(int64_t minus_id, ParseInt("minus", *minus, 0, INT32_MAX));
    request.set_minus_token(static_cast<int32_t>(minus_id));
  }
  GB_ASSIGN_OR_RETURN(inv.position, ParsePosition(raw));
  request.set_position(inv.position);
  GB_ASSIGN_OR_RETURN(int64_t top, ParseInt("top", raw.Value("top").value_or("10"), 0,
                                            INT32_MAX));
  inv.top = static_cast<int32_t>(top);
  return ParseOut(raw, inv);
}

absl::Status ParseSaeEncode(const RawCommandLine& raw, Invocation& inv) {
  glassbox::v1::SaeEncodeRequest& request = inv.sae_encode;
  const std::optional<std::string> sae = raw.Value("sae");
  if (!sae.has_value() || sae->empty()) {
    return UsageError("sae-encode needs --sae NAME (see `glassbox saes`)");
  }
  request.set_sae(*sae);
  GB_RETURN_IF_ERROR(
      ParseRowInputs(raw, "sae-encode", "text", "tokens", *request.mutable_inputs()));
  GB_ASSIGN_OR_RETURN(int64_t top_k,
                      ParseInt("top_k", raw.Value("top_k").value_or("5"), 0, INT32_MAX));
  request.set_top_k(static_cast<int32_t>(top_k));
  request.set_dense(raw.Value("dense") == "true");
  return ParseOut(raw, inv);
}

absl::Status ParseAttnNorms(const RawCommandLine& raw, Invocation& inv) {
  glassbox::v1::AttentionNormsRequest& request = inv.attn_norms;
  GB_ASSIGN_OR_RETURN(std::string model, RequiredModel(raw, "attn-norms"));
  request.set_model(model);
  GB_RETURN_IF_ERROR(
      ParseRowInputs(raw, "attn-norms", "text", "tokens", *request.mutable_inputs()));
  GB_ASSIGN_OR_RETURN(std::vector<int32_t> layers, ParseIntList("layers", raw.Values("layers"), 0));
  request.mutable_layers()->Add(layers.begin(), layers.end());
  return ParseOut(raw, inv);
}

// ---- execution ----

constexpr char kLocalPayloadUrl[] = "type.glassbox.dev/glassbox.cli.local";
constexpr char kUsagePayloadUrl[] = "type.glassbox.dev/glassbox.cli.usage";

int Fail(const absl::Status& status, std::ostream& err) {
  err << "glassbox: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
      << "\n";
  return ExitCodeForStatus(status);
}

std::string DimsString(const glassbox::v1::HookPoint& hook) {
  std::vector<std::string> dims;
  for (const glassbox::v1::HookDim& dim : hook.dims()) {
    dims.push_back(dim.size() > 0 ? absl::StrCat(dim.size()) : dim.name());
  }
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

absl::Status ListModels(client::Client& client, std::ostream& out) {
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

absl::Status ShowInfo(client::Client& client, const std::string& model, std::ostream& out) {
  GB_ASSIGN_OR_RETURN(glassbox::v1::ModelInfo m, client.GetModelInfo(model));
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
  out << absl::StrFormat("tokenizer     %s\n", m.has_tokenizer() ? "yes" : "no");
  out << absl::StrFormat("hook points   %d\n", m.hook_points_size());
  for (const glassbox::v1::HookPoint& hook : m.hook_points()) {
    out << "  " << hook.name() << " " << DimsString(hook) << "\n";
  }
  return absl::OkStatus();
}

absl::Status TokenizeText(client::Client& client, const glassbox::v1::TokenizeRequest& request,
                          std::ostream& out) {
  GB_ASSIGN_OR_RETURN(glassbox::v1::TokenizeResponse response, client.Tokenize(request));
  for (int i = 0; i < response.ids_size(); ++i) {
    out << response.ids(i);
    if (i < response.str_tokens_size()) out << " " << QuoteToken(response.str_tokens(i));
    out << "\n";
  }
  return absl::OkStatus();
}

absl::Status DetokenizeIds(client::Client& client, const glassbox::v1::DetokenizeRequest& request,
                           std::ostream& out) {
  GB_ASSIGN_OR_RETURN(glassbox::v1::DetokenizeResponse response, client.Detokenize(request));
  out << response.text() << "\n";
  return absl::OkStatus();
}

absl::Status RunModel(client::Client& client, const Invocation& inv, std::ostream& out,
                      std::ostream& err) {
  GB_ASSIGN_OR_RETURN(RunResult result, client.Run(inv.run));
  const glassbox::v1::Header& header = result.header;
  const glassbox::v1::Summary& summary = result.summary;
  out << absl::StrFormat("model %s: batch %d, tokens per row [%s]\n", header.model(),
                         header.sequence_lengths_size(),
                         absl::StrJoin(header.sequence_lengths(), ", "));
  for (const glassbox::v1::Intervention& intervention : inv.run.interventions()) {
    out << "  intervene " << FormatIntervention(intervention) << "\n";
  }
  for (const glassbox::v1::SaeSplice& splice : inv.run.sae_splices()) {
    out << "  sae splice " << FormatSaeSplice(splice) << "\n";
  }
  for (const glassbox::v1::SaeSteering& steering : inv.run.sae_steering()) {
    out << "  sae steer " << FormatSaeSteering(steering) << "\n";
  }
  size_t width = 0;
  for (const ReceivedTensor& t : result.tensors) width = std::max(width, t.name.size());
  int64_t total_bytes = 0;
  for (const ReceivedTensor& t : result.tensors) {
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
  if (!inv.out_path.empty()) {
    absl::StatusOr<int> written = WriteRunSafetensors(inv.out_path, inv.run, result, err);
    if (!written.ok()) return MarkLocal(written.status());
    out << absl::StrFormat("wrote %d tensors to %s\n", *written, inv.out_path);
  }
  return absl::OkStatus();
}

// ---- analyses ----

// Columns padded to their widest cell: the first `left` columns left-aligned, the others
// right-aligned (numbers).
void PrintTable(const std::vector<std::vector<std::string>>& rows, std::ostream& out,
                size_t left = 1, std::string_view indent = "  ") {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
  }
  for (const auto& row : rows) {
    std::string line(indent);
    for (size_t c = 0; c < row.size(); ++c) {
      if (c > 0) line += "  ";
      const std::string pad(widths[c] - row[c].size(), ' ');
      line += c < left ? row[c] + pad : pad + row[c];
    }
    out << std::string(absl::StripTrailingAsciiWhitespace(line)) << "\n";
  }
}

// Four decimals; a value that rounds to zero prints as 0.0000, never -0.0000.
std::string Number(double value) {
  std::string text = absl::StrFormat("%.4f", value);
  if (text == "-0.0000") text = "0.0000";
  return text;
}

// Every row's token ids: --tokens rows as given, --text rows tokenized by the server (with the
// same prepend_bos). `inputs` is rewritten to the token rows, so that what runs is what the
// output describes.
absl::StatusOr<std::vector<std::vector<int32_t>>> ResolveRows(client::Client& client,
                                                              const std::string& model,
                                                              glassbox::v1::Inputs& inputs) {
  std::vector<std::vector<int32_t>> rows;
  for (const auto& row : inputs.token_ids()) rows.emplace_back(row.ids().begin(), row.ids().end());
  if (inputs.texts_size() == 0) return rows;
  for (const std::string& text : inputs.texts()) {
    glassbox::v1::TokenizeRequest request;
    request.set_model(model);
    request.set_text(text);
    if (inputs.has_prepend_bos()) request.set_prepend_bos(inputs.prepend_bos());
    GB_ASSIGN_OR_RETURN(glassbox::v1::TokenizeResponse response, client.Tokenize(request));
    rows.emplace_back(response.ids().begin(), response.ids().end());
  }
  inputs.clear_texts();
  inputs.clear_prepend_bos();
  for (const auto& row : rows) inputs.add_token_ids()->mutable_ids()->Add(row.begin(), row.end());
  return rows;
}

// Position `p` of a row of `length` tokens (negative counts from the end); usage error when
// it is outside the row.
absl::StatusOr<int64_t> RowPosition(int32_t p, size_t row, size_t length) {
  const int64_t index = p < 0 ? static_cast<int64_t>(length) + p : p;
  if (index < 0 || index >= static_cast<int64_t>(length)) {
    return MarkUsage(absl::InvalidArgumentError(absl::StrFormat(
        "--position %d is outside row %d (%d tokens)", p, row, length)));
  }
  return index;
}

// Each id decoded alone, when the model has a tokenizer; empty otherwise.
absl::StatusOr<std::map<int32_t, std::string>> TokenStrings(client::Client& client,
                                                            const std::string& model,
                                                            const std::set<int32_t>& ids) {
  std::map<int32_t, std::string> strings;
  if (ids.empty()) return strings;
  glassbox::v1::DetokenizeRequest request;
  request.set_model(model);
  request.mutable_ids()->Add(ids.begin(), ids.end());
  absl::StatusOr<glassbox::v1::DetokenizeResponse> response = client.Detokenize(request);
  if (!response.ok()) {
    if (response.status().code() == absl::StatusCode::kFailedPrecondition) return strings;
    return response.status();
  }
  if (response->str_tokens_size() != request.ids_size()) return strings;
  for (int i = 0; i < request.ids_size(); ++i) strings[request.ids(i)] = response->str_tokens(i);
  return strings;
}

std::string TokenLabel(int32_t id, const std::map<int32_t, std::string>& strings) {
  auto it = strings.find(id);
  return it == strings.end() ? absl::StrCat(id) : absl::StrCat(id, " ", QuoteToken(it->second));
}

// Tensors for a safetensors file, from response arrays and small host vectors.
class SafetensorsBuilder {
 public:
  void AddArray(const std::string& name, const glassbox::v1::Array& array) {
    if (client::IsEmptyArray(array)) return;
    std::vector<int64_t> shape = client::ArrayShape(array);
    if (array.indices_size() > 0) {
      tensors_.push_back({.name = name, .dtype = SafetensorsDtype::kI32, .shape = std::move(shape),
                          .bytes = std::as_bytes(std::span<const int32_t>(
                              array.indices().data(), array.indices_size()))});
    } else {
      tensors_.push_back({.name = name, .dtype = SafetensorsDtype::kF32, .shape = std::move(shape),
                          .bytes = std::as_bytes(std::span<const float>(array.values().data(),
                                                                        array.values_size()))});
    }
  }
  void AddFloats(const std::string& name, std::vector<int64_t> shape, std::vector<float> values) {
    floats_.push_back(std::move(values));
    tensors_.push_back({.name = name, .dtype = SafetensorsDtype::kF32, .shape = std::move(shape),
                        .bytes = std::as_bytes(std::span<const float>(floats_.back()))});
  }
  void AddInts(const std::string& name, std::vector<int64_t> shape, std::vector<int32_t> values) {
    ints_.push_back(std::move(values));
    tensors_.push_back({.name = name, .dtype = SafetensorsDtype::kI32, .shape = std::move(shape),
                        .bytes = std::as_bytes(std::span<const int32_t>(ints_.back()))});
  }
  // "input_ids" ([batch, max_len] i32, right-padded with 0) and "sequence_lengths" ([batch]).
  void AddTokenRows(const std::vector<std::vector<int32_t>>& rows) {
    size_t max_len = 0;
    for (const auto& row : rows) max_len = std::max(max_len, row.size());
    std::vector<int32_t> ids(rows.size() * max_len, 0), lengths;
    for (size_t b = 0; b < rows.size(); ++b) {
      std::copy(rows[b].begin(), rows[b].end(), ids.begin() + b * max_len);
      lengths.push_back(static_cast<int32_t>(rows[b].size()));
    }
    AddInts("input_ids", {static_cast<int64_t>(rows.size()), static_cast<int64_t>(max_len)},
            std::move(ids));
    AddInts("sequence_lengths", {static_cast<int64_t>(rows.size())}, std::move(lengths));
  }
  template <typename Message>
  void AddRequest(const std::string& model, const Message& request) {
    metadata["glassbox.model"] = model;
    std::string json;
    if (google::protobuf::util::MessageToJsonString(request, &json).ok()) {
      metadata["glassbox.request"] = json;
    }
  }
  // A JSON array of strings (labels, dim names) as a metadata entry.
  void AddLabels(const std::string& key, const auto& labels) {
    std::vector<std::string> quoted;
    for (const std::string& label : labels) {
      quoted.push_back(absl::StrCat("\"", absl::CEscape(label), "\""));
    }
    metadata[key] = absl::StrCat("[", absl::StrJoin(quoted, ","), "]");
  }
  // Writes the file; a failure is local. Prints "wrote N tensors to PATH".
  absl::Status Write(const std::string& path, std::ostream& out) {
    absl::Status status = WriteSafetensors(path, tensors_, metadata);
    if (!status.ok()) return MarkLocal(status);
    out << absl::StrFormat("wrote %d tensors to %s\n", tensors_.size(), path);
    return absl::OkStatus();
  }

  std::map<std::string, std::string> metadata;

 private:
  std::deque<std::vector<float>> floats_;  // a deque: growing it never moves an element
  std::deque<std::vector<int32_t>> ints_;
  std::vector<TensorToWrite> tensors_;
};

std::string MetricString(const glassbox::v1::PatchingMetric& metric) {
  switch (metric.kind()) {
    case glassbox::v1::PatchingMetric::LOGIT_DIFF:
      return absl::StrFormat("logit[%d] - logit[%d] at the last position", metric.token_a(),
                             metric.token_b());
    case glassbox::v1::PatchingMetric::LOG_PROB:
      return absl::StrFormat("log p(%d) at the last position", metric.token_a());
    case glassbox::v1::PatchingMetric::LOSS:
      return "mean next-token loss";
    default:
      return "?";
  }
}

int InputRows(const glassbox::v1::Inputs& inputs) {
  return inputs.texts_size() + inputs.token_ids_size();
}

absl::Status RunPatch(client::Client& client, const Invocation& inv, std::ostream& out) {
  const glassbox::v1::PatchingSweepRequest& request = inv.patch;
  GB_ASSIGN_OR_RETURN(glassbox::v1::PatchingSweepResponse response,
                      client.PatchingSweep(request));
  out << absl::StrFormat("patching sweep %s on %s: %d prompt pair%s, metric %s\n",
                         SweepKindName(request.kind()), request.model(),
                         InputRows(request.clean()), InputRows(request.clean()) == 1 ? "" : "s",
                         MetricString(request.metric()));
  out << absl::StrFormat("clean %.4f, corrupted %.4f; %d forward passes, %.3f s\n",
                         response.clean_metric(), response.corrupted_metric(),
                         response.forward_passes(), response.seconds());
  const glassbox::v1::Array& shown =
      inv.print_normalized ? response.normalized() : response.values();
  const int rank = shown.shape_size();
  auto dim_name = [&](int d, std::string_view fallback) {
    return d < shown.dim_names_size() ? shown.dim_names(d) : std::string(fallback);
  };
  out << (inv.print_normalized
              ? "normalized effect (m - m_corrupted) / (m_clean - m_corrupted)"
              : "metric m with the cell's clean activation patched into the corrupted run")
      << absl::StrFormat(", [%s]:\n", absl::StrJoin(shown.dim_names(), ", "));
  const std::string col = dim_name(rank - 1, rank == 3 ? "head" : "pos");
  const int64_t layers = shown.shape(0);
  const int64_t cols = shown.shape(rank - 1);
  const int64_t middle = rank == 3 ? shown.shape(1) : 1;
  std::vector<std::vector<std::string>> table;
  std::vector<std::string> header = {rank == 3 ? absl::StrCat("layer ", dim_name(1, "pos"))
                                               : std::string("layer")};
  for (int64_t c = 0; c < cols; ++c) header.push_back(absl::StrCat(col, " ", c));
  table.push_back(header);
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t m = 0; m < middle; ++m) {
      std::vector<std::string> row = {rank == 3 ? absl::StrCat(l, " ", m) : absl::StrCat(l)};
      for (int64_t c = 0; c < cols; ++c) {
        row.push_back(Number(rank == 3 ? client::FloatAt(shown, {l, m, c})
                                       : client::FloatAt(shown, {l, c})));
      }
      table.push_back(std::move(row));
    }
  }
  PrintTable(table, out);
  if (!inv.out_path.empty()) {
    SafetensorsBuilder file;
    file.AddArray("values", response.values());
    file.AddArray("normalized", response.normalized());
    file.AddFloats("clean_metric", {1}, {static_cast<float>(response.clean_metric())});
    file.AddFloats("corrupted_metric", {1}, {static_cast<float>(response.corrupted_metric())});
    file.AddRequest(request.model(), request);
    file.AddLabels("glassbox.dim_names", response.values().dim_names());
    file.metadata["glassbox.forward_passes"] = absl::StrCat(response.forward_passes());
    GB_RETURN_IF_ERROR(file.Write(inv.out_path, out));
  }
  return absl::OkStatus();
}

absl::Status RunLogitLens(client::Client& client, const Invocation& inv, std::ostream& out) {
  glassbox::v1::LogitLensRequest request = inv.logit_lens;
  GB_ASSIGN_OR_RETURN(std::vector<std::vector<int32_t>> rows,
                      ResolveRows(client, request.model(), *request.mutable_inputs()));
  std::vector<int64_t> positions;
  for (size_t b = 0; b < rows.size(); ++b) {
    GB_ASSIGN_OR_RETURN(int64_t p, RowPosition(inv.position, b, rows[b].size()));
    positions.push_back(p);
  }
  GB_ASSIGN_OR_RETURN(glassbox::v1::LogitLensResponse response, client.LogitLens(request));
  const glassbox::v1::Array& top = response.top_log_probs();
  const glassbox::v1::Array& ids = response.top_tokens();
  const glassbox::v1::Array& targets = response.target_log_probs();
  const int64_t layers = top.shape(0), k = top.shape(3);
  if (top.shape(1) != static_cast<int64_t>(rows.size())) {
    return absl::InternalError(absl::StrFormat("malformed response: %d rows for %d inputs",
                                               top.shape(1), rows.size()));
  }
  const int64_t n_targets = client::IsEmptyArray(targets) ? 0 : targets.shape(3);
  std::set<int32_t> wanted(request.target_tokens().begin(), request.target_tokens().end());
  for (size_t b = 0; b < rows.size(); ++b) {
    wanted.insert(rows[b][positions[b]]);
    for (int64_t l = 0; l < layers; ++l) {
      for (int64_t j = 0; j < k; ++j) {
        wanted.insert(client::IntAt(ids, {l, static_cast<int64_t>(b), positions[b], j}));
      }
    }
  }
  GB_ASSIGN_OR_RETURN(auto strings, TokenStrings(client, request.model(), wanted));
  out << absl::StrFormat(
      "logit lens on %s: the next-token predictions of the residual stream before each block and "
      "after the last (final norm and unembedding applied to each); token (log-prob)\n",
      request.model());
  for (size_t b = 0; b < rows.size(); ++b) {
    const int64_t p = positions[b];
    out << absl::StrFormat("row %d, position %d of %d (token %s):\n", b, p, rows[b].size(),
                           TokenLabel(rows[b][p], strings));
    std::vector<std::vector<std::string>> table;
    std::vector<std::string> header = {"layer"};
    for (int64_t j = 0; j < k; ++j) header.push_back(absl::StrCat("top ", j + 1));
    for (int64_t t = 0; t < n_targets; ++t) {
      header.push_back(absl::StrCat("log p(", request.target_tokens(static_cast<int>(t)), ")"));
    }
    table.push_back(header);
    const int64_t row = static_cast<int64_t>(b);
    for (int64_t l = 0; l < layers; ++l) {
      std::vector<std::string> line = {response.labels(static_cast<int>(l))};
      for (int64_t j = 0; j < k; ++j) {
        line.push_back(absl::StrCat(TokenLabel(client::IntAt(ids, {l, row, p, j}), strings), " (",
                                    Number(client::FloatAt(top, {l, row, p, j})), ")"));
      }
      for (int64_t t = 0; t < n_targets; ++t) {
        line.push_back(Number(client::FloatAt(targets, {l, row, p, t})));
      }
      table.push_back(std::move(line));
    }
    PrintTable(table, out);
  }
  if (!inv.out_path.empty()) {
    SafetensorsBuilder file;
    file.AddArray("top_log_probs", top);
    file.AddArray("top_tokens", ids);
    file.AddArray("target_log_probs", targets);
    file.AddTokenRows(rows);
    file.AddRequest(request.model(), request);
    file.AddLabels("glassbox.labels", response.labels());
    GB_RETURN_IF_ERROR(file.Write(inv.out_path, out));
  }
  return absl::OkStatus();
}

absl::Status RunDla(client::Client& client, const Invocation& inv, std::ostream& out) {
  glassbox::v1::DirectLogitAttributionRequest request = inv.dla;
  GB_ASSIGN_OR_RETURN(std::vector<std::vector<int32_t>> rows,
                      ResolveRows(client, request.model(), *request.mutable_inputs()));
  std::vector<int64_t> positions;
  for (size_t b = 0; b < rows.size(); ++b) {
    GB_ASSIGN_OR_RETURN(int64_t p, RowPosition(inv.position, b, rows[b].size()));
    positions.push_back(p);
  }
  GB_ASSIGN_OR_RETURN(glassbox::v1::DirectLogitAttributionResponse response,
                      client.DirectLogitAttribution(request));
  const glassbox::v1::Array& attributions = response.attributions();
  const int64_t components = attributions.shape(0);
  if (attributions.shape(1) != static_cast<int64_t>(rows.size())) {
    return absl::InternalError(absl::StrFormat("malformed response: %d rows for %d inputs",
                                               attributions.shape(1), rows.size()));
  }
  std::set<int32_t> wanted = {request.token()};
  if (request.has_minus_token()) wanted.insert(request.minus_token());
  for (size_t b = 0; b < rows.size(); ++b) wanted.insert(rows[b][positions[b]]);
  GB_ASSIGN_OR_RETURN(auto strings, TokenStrings(client, request.model(), wanted));
  std::string what = absl::StrCat("logit[", TokenLabel(request.token(), strings), "]");
  if (request.has_minus_token()) {
    absl::StrAppend(&what, " - logit[", TokenLabel(request.minus_token(), strings), "]");
  }
  out << absl::StrFormat("direct logit attribution on %s: %s\n", request.model(), what);
  for (size_t b = 0; b < rows.size(); ++b) {
    const int64_t row = static_cast<int64_t>(b);
    std::vector<std::pair<float, int64_t>> order;
    double sum = 0;
    for (int64_t c = 0; c < components; ++c) {
      const float a = client::FloatAt(attributions, {c, row});
      sum += a;
      order.push_back({a, c});
    }
    std::stable_sort(order.begin(), order.end(), [](const auto& x, const auto& y) {
      return std::fabs(x.first) > std::fabs(y.first);
    });
    out << absl::StrFormat(
        "row %d, position %d (token %s): logit %s = components %s + constant %s\n", b,
        positions[b], TokenLabel(rows[b][positions[b]], strings),
        Number(client::FloatAt(response.logit(), {row})), Number(sum),
        Number(client::FloatAt(response.constant(), {row})));
    const int64_t shown = inv.top > 0 ? std::min<int64_t>(inv.top, components) : components;
    std::vector<std::vector<std::string>> table = {{"component", "attribution"}};
    for (int64_t i = 0; i < shown; ++i) {
      table.push_back({response.labels(static_cast<int>(order[i].second)),
                       Number(order[i].first)});
    }
    PrintTable(table, out);
    if (shown < components) {
      out << absl::StrFormat("  ... %d more, |attribution| <= %s (--top 0 shows all)\n",
                             components - shown, Number(std::fabs(order[shown].first)));
    }
  }
  if (!inv.out_path.empty()) {
    SafetensorsBuilder file;
    file.AddArray("attributions", attributions);
    file.AddArray("logit", response.logit());
    file.AddArray("constant", response.constant());
    file.AddTokenRows(rows);
    file.AddRequest(request.model(), request);
    file.AddLabels("glassbox.labels", response.labels());
    GB_RETURN_IF_ERROR(file.Write(inv.out_path, out));
  }
  return absl::OkStatus();
}

absl::Status RunAttnNorms(client::Client& client, const Invocation& inv, std::ostream& out) {
  glassbox::v1::AttentionNormsRequest request = inv.attn_norms;
  GB_ASSIGN_OR_RETURN(std::vector<std::vector<int32_t>> rows,
                      ResolveRows(client, request.model(), *request.mutable_inputs()));
  GB_ASSIGN_OR_RETURN(glassbox::v1::AttentionNormsResponse response,
                      client.AttentionNorms(request));
  out << absl::StrFormat(
      "attention norms on %s, %d row%s: what each head moves from the first token (key 0), "
      "averaged over query positions i >= 1\n"
      "  weight      mean a(i,0), the attention weight on the first token\n"
      "  norm share  mean |a(i,0) f(x_0)| / sum_j |a(i,j) f(x_j)|, its share of the weighted "
      "value norms\n"
      "  norm        mean |a(i,0) f(x_0)|;  mean norm: mean |a(i,j) f(x_j)| over all keys j <= i\n"
      "  (an attention sink: large weight, small norm share)\n",
      request.model(), rows.size(), rows.size() == 1 ? "" : "s");
  std::vector<std::vector<std::string>> table = {
      {"layer", "head", "weight", "norm share", "norm", "mean norm"}};
  for (const glassbox::v1::AttentionNormsLayer& layer : response.layers()) {
    const glassbox::v1::Array& weights = layer.weights();
    const glassbox::v1::Array& norms = layer.head_norms();
    if (weights.shape(0) != static_cast<int64_t>(rows.size())) {
      return absl::InternalError(absl::StrFormat("malformed response: %d rows for %d inputs",
                                                 weights.shape(0), rows.size()));
    }
    for (int64_t h = 0; h < weights.shape(1); ++h) {
      double weight = 0, share = 0, norm = 0, all_norms = 0;
      int64_t queries = 0, pairs = 0;
      for (int64_t b = 0; b < weights.shape(0); ++b) {
        const int64_t len = std::min<int64_t>(static_cast<int64_t>(rows[b].size()),
                                              weights.shape(2));
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
  }
  PrintTable(table, out, 0);
  if (!inv.out_path.empty()) {
    SafetensorsBuilder file;
    for (const glassbox::v1::AttentionNormsLayer& layer : response.layers()) {
      const std::string prefix = absl::StrCat("blocks.", layer.layer(), ".");
      file.AddArray(prefix + "weights", layer.weights());
      file.AddArray(prefix + "head_norms", layer.head_norms());
      file.AddArray(prefix + "layer_norms", layer.layer_norms());
    }
    file.AddTokenRows(rows);
    file.AddRequest(request.model(), request);
    GB_RETURN_IF_ERROR(file.Write(inv.out_path, out));
  }
  return absl::OkStatus();
}

absl::Status ListSaes(client::Client& client, const std::string& model, std::ostream& out) {
  GB_ASSIGN_OR_RETURN(std::vector<glassbox::v1::SaeInfo> saes, client.ListSaes(model));
  std::vector<std::vector<std::string>> table = {
      {"name", "model", "hook", "architecture", "d_in", "d_sae", "normalization", "MiB"}};
  for (const glassbox::v1::SaeInfo& sae : saes) {
    std::string arch = sae.architecture();
    if (sae.architecture() == "topk") absl::StrAppend(&arch, " k=", sae.k());
    table.push_back({sae.name(), sae.model(), sae.hook(), arch, absl::StrCat(sae.d_in()),
                     absl::StrCat(sae.d_sae()), sae.normalization(),
                     absl::StrFormat("%.1f", sae.resident_bytes() / 1048576.0)});
  }
  if (saes.empty()) {
    out << "no SAEs loaded" << (model.empty() ? "" : " for " + model)
        << " (glassboxd --sae NAME=PATH@MODEL)\n";
    return absl::OkStatus();
  }
  PrintTable(table, out, 4, "");
  for (const glassbox::v1::SaeInfo& sae : saes) {
    for (const std::string& warning : sae.warnings()) {
      out << "warning: " << sae.name() << ": " << warning << "\n";
    }
  }
  return absl::OkStatus();
}

// ---- cached runs ----

absl::Status ListCachedRuns(client::Client& client, std::ostream& out) {
  GB_ASSIGN_OR_RETURN(glassbox::v1::ListCachedRunsResponse response, client.ListCachedRuns());
  out << absl::StrFormat("%d cached runs, %d of %d bytes, at most %d runs\n", response.runs_size(),
                         response.used_bytes(), response.max_bytes(), response.max_entries());
  if (response.runs().empty()) return absl::OkStatus();
  std::vector<std::vector<std::string>> table = {
      {"name", "model", "rows", "bytes", "expires", "hooks"}};
  for (const glassbox::v1::CachedRunInfo& run : response.runs()) {
    table.push_back({run.name(), run.model(), absl::StrCat(run.sequence_lengths_size()),
                     absl::StrCat(run.nbytes()),
                     absl::FormatTime(absl::FromUnixMillis(run.expires_unix_ms())),
                     absl::StrJoin(run.hooks(), ",")});
  }
  PrintTable(table, out, 2, "");
  return absl::OkStatus();
}

absl::Status ReleaseCachedRun(client::Client& client, const std::string& name, std::ostream& out) {
  GB_ASSIGN_OR_RETURN(int64_t bytes, client.ReleaseCachedRun(name));
  out << absl::StrFormat("released cached run \"%s\" (%d bytes)\n", name, bytes);
  return absl::OkStatus();
}

absl::Status RunSaeEncode(client::Client& client, const Invocation& inv, std::ostream& out) {
  const glassbox::v1::SaeEncodeRequest& request = inv.sae_encode;
  GB_ASSIGN_OR_RETURN(glassbox::v1::SaeEncodeResponse response, client.SaeEncode(request));
  GB_ASSIGN_OR_RETURN(std::vector<glassbox::v1::SaeInfo> saes, client.ListSaes());
  glassbox::v1::SaeInfo info;
  for (const glassbox::v1::SaeInfo& sae : saes) {
    if (sae.name() == request.sae()) info = sae;
  }
  std::vector<std::vector<int32_t>> rows;
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
  if (!inv.out_path.empty()) {
    SafetensorsBuilder file;
    const int64_t n = response.indices_size();
    file.AddInts("offsets", {response.offsets_size()},
                 std::vector<int32_t>(response.offsets().begin(), response.offsets().end()));
    file.AddInts("indices", {n}, {response.indices().begin(), response.indices().end()});
    file.AddFloats("values", {n}, {response.values().begin(), response.values().end()});
    file.AddArray("dense", response.dense());
    file.AddTokenRows(rows);
    file.AddRequest(info.model(), request);
    file.metadata["glassbox.stats"] = absl::StrFormat(
        "{\"tokens\": %d, \"mse\": %.9g, \"mean_squared_error_norm\": %.9g, "
        "\"explained_variance\": %.9g, \"mean_l0\": %.9g}",
        stats.tokens(), stats.mse(), stats.mean_squared_error_norm(), stats.explained_variance(),
        stats.mean_l0());
    GB_RETURN_IF_ERROR(file.Write(inv.out_path, out));
  }
  return absl::OkStatus();
}

std::optional<SafetensorsDtype> ToSafetensorsDtype(glassbox::v1::DType dtype) {
  switch (dtype) {
    case glassbox::v1::DTYPE_F32:
      return SafetensorsDtype::kF32;
    case glassbox::v1::DTYPE_F16:
      return SafetensorsDtype::kF16;
    case glassbox::v1::DTYPE_BF16:
      return SafetensorsDtype::kBF16;
    case glassbox::v1::DTYPE_I32:
      return SafetensorsDtype::kI32;
    default:
      return std::nullopt;
  }
}

std::span<const std::byte> AsBytes(const std::string& bytes) {
  return std::as_bytes(std::span<const char>(bytes.data(), bytes.size()));
}

// The "Usage:" block of UsageText(), shown after a usage error.
std::string Synopsis() {
  const std::string usage = UsageText();
  const size_t begin = usage.find("Usage:");
  const size_t end = usage.find("\nCommands:");
  return usage.substr(begin, end - begin);
}

}  // namespace

Environment EnvironmentFromProcess() {
  Environment env;
  if (const char* key = std::getenv("GLASSBOX_API_KEY"); key != nullptr && *key != '\0') {
    env.api_key = key;
  }
  if (const char* server = std::getenv("GLASSBOX_SERVER"); server != nullptr && *server != '\0') {
    env.server = server;
  }
  return env;
}

absl::StatusOr<Invocation> ParseCommandLine(const std::vector<std::string>& args,
                                            const Environment& env) {
  GB_ASSIGN_OR_RETURN(RawCommandLine raw, Tokenize(args));
  Invocation inv;
  if (raw.Value("help") == "true") {
    inv.command = Command::kHelp;
    return inv;
  }
  if (raw.positional.empty()) {
    return UsageError(absl::StrCat("no command given (commands: ", kCommandList, ")"));
  }
  GB_ASSIGN_OR_RETURN(inv.command, ParseCommand(raw.positional.front()));
  if (inv.command == Command::kHelp) return inv;
  const std::vector<std::string> operands(raw.positional.begin() + 1, raw.positional.end());
  for (const auto& [name, values] : raw.flags) {
    if ((FindFlag(name)->commands & Bit(inv.command)) == 0) {
      return UsageError(
          absl::StrFormat("--%s is not a flag of the %s command", name, CommandName(inv.command)));
    }
  }

  inv.server = raw.Value("server").value_or(env.server.value_or(""));
  if (inv.server.empty()) {
    return UsageError("--server ADDR is required (or set GLASSBOX_SERVER)");
  }
  inv.client.api_key = raw.Value("api_key").value_or(env.api_key.value_or(""));
  inv.client.tls = raw.Value("tls") == "true";
  if (std::optional<std::string> cert = raw.Value("tls_root_cert")) {
    if (cert->empty()) return UsageError("--tls_root_cert needs a file name");
    inv.client.tls_root_cert_path = *cert;
    inv.client.tls = true;
  }
  if (std::optional<std::string> timeout = raw.Value("timeout")) {
    GB_ASSIGN_OR_RETURN(inv.client.deadline, ParseTimeout(*timeout));
  }

  auto expect_operands = [&](size_t n, std::string_view synopsis) -> absl::Status {
    if (operands.size() == n) return absl::OkStatus();
    return UsageError(absl::StrFormat("%s takes %d argument%s: glassbox %s (got %d)",
                                      CommandName(inv.command), n, n == 1 ? "" : "s", synopsis,
                                      operands.size()));
  };
  switch (inv.command) {
    case Command::kHelp:
      break;
    case Command::kModels:
      GB_RETURN_IF_ERROR(expect_operands(0, "models"));
      break;
    case Command::kInfo:
      GB_RETURN_IF_ERROR(expect_operands(1, "info MODEL"));
      inv.model = operands[0];
      break;
    case Command::kTokenize:
      GB_RETURN_IF_ERROR(expect_operands(2, "tokenize MODEL TEXT"));
      inv.model = operands[0];
      inv.tokenize.set_model(operands[0]);
      inv.tokenize.set_text(operands[1]);
      if (std::optional<std::string> bos = raw.Value("prepend_bos")) {
        inv.tokenize.set_prepend_bos(*bos == "true");
      }
      inv.tokenize.set_split_special_tokens(raw.Value("split_special_tokens") == "true");
      break;
    case Command::kDetokenize: {
      if (operands.size() < 2) {
        GB_RETURN_IF_ERROR(expect_operands(2, "detokenize MODEL ID[,ID...]"));
      }
      inv.model = operands[0];
      inv.detokenize.set_model(operands[0]);
      GB_ASSIGN_OR_RETURN(
          std::vector<int32_t> ids,
          ParseIntList("ids", std::vector<std::string>(operands.begin() + 1, operands.end()), 0));
      inv.detokenize.mutable_ids()->Add(ids.begin(), ids.end());
      inv.detokenize.set_skip_special_tokens(raw.Value("skip_special_tokens") == "true");
      break;
    }
    case Command::kRun:
      GB_RETURN_IF_ERROR(expect_operands(0, "run --model MODEL ..."));
      GB_RETURN_IF_ERROR(ParseRun(raw, env, inv));
      break;
    case Command::kPatch:
      GB_RETURN_IF_ERROR(expect_operands(0, "patch --model MODEL ..."));
      GB_RETURN_IF_ERROR(ParsePatch(raw, inv));
      break;
    case Command::kLogitLens:
      GB_RETURN_IF_ERROR(expect_operands(0, "logit-lens --model MODEL ..."));
      GB_RETURN_IF_ERROR(ParseLogitLens(raw, inv));
      break;
    case Command::kDla:
      GB_RETURN_IF_ERROR(expect_operands(0, "dla --model MODEL ..."));
      GB_RETURN_IF_ERROR(ParseDla(raw, inv));
      break;
    case Command::kAttnNorms:
      GB_RETURN_IF_ERROR(expect_operands(0, "attn-norms --model MODEL ..."));
      GB_RETURN_IF_ERROR(ParseAttnNorms(raw, inv));
      break;
    case Command::kSaes:
      GB_RETURN_IF_ERROR(expect_operands(0, "saes [--model MODEL]"));
      inv.model = raw.Value("model").value_or("");
      break;
    case Command::kSaeEncode:
      GB_RETURN_IF_ERROR(expect_operands(0, "sae-encode --sae NAME ..."));
      GB_RETURN_IF_ERROR(ParseSaeEncode(raw, inv));
      break;
    case Command::kCached:
      GB_RETURN_IF_ERROR(expect_operands(0, "cached"));
      break;
    case Command::kRelease:
      GB_RETURN_IF_ERROR(expect_operands(1, "release NAME"));
      inv.cached_run = operands[0];
      break;
  }
  return inv;
}

std::string UsageText() {
  return R"(glassbox: command-line client of a Glassbox interpretability server (glassboxd).

Usage:
  glassbox [global flags] models
  glassbox [global flags] info MODEL
  glassbox [global flags] tokenize MODEL TEXT [--prepend_bos | --noprepend_bos]
                                              [--split_special_tokens]
  glassbox [global flags] detokenize MODEL ID[,ID...] [--skip_special_tokens]
  glassbox [global flags] run --model MODEL (--text TEXT | --tokens IDS)... [run flags]
                              [--intervene SPEC]... [--out FILE.safetensors]
  glassbox [global flags] patch --model MODEL
                                (--clean-text T --corrupted-text T |
                                 --clean-tokens IDS --corrupted-tokens IDS)...
                                --kind KIND --metric METRIC [--normalized]
                                [--max_rows_per_pass N] [--out FILE.safetensors]
  glassbox [global flags] logit-lens --model MODEL (--text TEXT | --tokens IDS)...
                                     [--top_k 5] [--targets IDS] [--position -1]
                                     [--out FILE.safetensors]
  glassbox [global flags] dla --model MODEL (--text TEXT | --tokens IDS)... --token ID
                              [--minus ID] [--position -1] [--top 10] [--out FILE.safetensors]
  glassbox [global flags] attn-norms --model MODEL (--text TEXT | --tokens IDS)...
                                     [--layers LIST] [--out FILE.safetensors]
  glassbox [global flags] saes [--model MODEL]
  glassbox [global flags] cached
  glassbox [global flags] release NAME
  glassbox [global flags] sae-encode --sae NAME (--text TEXT | --tokens IDS)...
                                     [--top_k 5] [--dense] [--out FILE.safetensors]
  glassbox --help

Commands:
  models      one line per loaded model: name, architecture, layers, d_model, heads, vocab,
              device, dtype
  info        the model's dimensions and every hook point with its shape (per-request
              dimensions by name: [batch, pos, 64])
  tokenize    token ids and their strings, one per line: 15496 'Hello'
  detokenize  the text of comma-separated token ids
  run         one hooked forward pass, with interventions; prints what came back and writes
              it with --out
  patch       activation-patching sweep (clean vs corrupted, batched on the server): prints
              the metric per cell, rows = layers
  logit-lens  per layer, the top tokens and target log-probs the residual stream predicts
  dla         direct logit attribution: each component's share of a logit (difference)
  attn-norms  attention weights beside the norms |a f(x)| per head (Kobayashi et al. 2020)
  saes        the SAEs the server loaded: name, model, hook, architecture, d_in, d_sae, ...
  sae-encode  run the SAE's model to its hook and print each token's top features, with the
              reconstruction's L0, MSE and explained variance
  cached      list the runs kept on the server (run --cache_as), their bytes and expiry
  release     free a cached run now

Global flags:
  --server ADDR         server address, host:port (default: $GLASSBOX_SERVER)
  --api_key KEY         API key, sent as "authorization: Bearer KEY" (default:
                        $GLASSBOX_API_KEY)
  --tls                 connect with TLS, trusting the system's root certificates
  --tls_root_cert FILE  connect with TLS, trusting the root certificates in this PEM file
  --timeout DURATION    deadline of the call: seconds, or "30s", "2m" (default: none)

Run flags (--text, --tokens and --capture may be repeated; each --text or --tokens is one row
of the batch, rows are right-padded to the longest):
  --model MODEL            a model the server has loaded (see `glassbox models`)
  --text TEXT              a text row, tokenized by the server
  --tokens IDS             a row of token ids: 1,2,3
  --prepend_bos, --noprepend_bos
                           add BOS to --text rows or not (default: the tokenizer's)
  --capture PATTERN        hook name or glob: 'blocks.*.hook_resid_post'
  --positions LIST         capture only these positions; negative counts from each row's last
                           real token (-1 = last)
  --heads LIST             capture only these heads
  --layers LIST            keep only these layers of what a glob matches
  --dtype f32|f16|bf16     wire dtype of captured values (default f32)
  --reduce none|mean_pos|top_k|norm
                           reduce captured values: mean over positions, top-k along the last
                           axis (needs --k N; adds "<hook>.indices"), or L2 norm of it
  --k N                    for --reduce top_k
  --logits none|last|all|top_k
                           logits to return (default none; top_k needs --logits_k N)
  --logits_k N             for --logits top_k
  --loss                   return the loss per token, -log p(token[t+1] | ..t)
  --target_tokens IDS      return the log-probs of these tokens at every position
  --stop_at_layer N        run blocks [0, N) only (then no logits, loss or target tokens)
  --chunk_bytes N          largest chunk the server sends (default: the server's, 1 MiB)
  --intervene SPEC         edit an activation during the pass (repeatable; applied in order):
                           KIND:HOOK[:KEY=VALUE]..., see "Interventions" below
  --sae_splice NAME[:error_term]
                           splice SAE NAME in at its hook (repeatable; with the error term the
                           model sees x + (edited - clean reconstruction)); capture its points
                           as --capture '<hook>.hook_sae_*' (input, acts_pre, acts_post, recons,
                           error, output)
  --sae_edit NAME:KIND:features=LIST[:value=X][:rows=LIST][:positions=LIST]
                           edit the spliced SAE's features: zero, clamp (a = X), scale (a *= X),
                           add (a += X); repeatable, applied in order
  --sae_steer NAME:features=LIST[:coef=LIST][:rows=LIST][:positions=LIST]
                           add sum coef_i * W_dec[feature_i] at NAME's hook (coef default 1;
                           one for all features or one each)
  --cache_as NAME          keep this run's activations on the server as NAME, for later runs'
                           patch_cached (replaces a run kept under NAME; see `glassbox cached`,
                           `glassbox release NAME`)
  --cache_hook HOOK        what --cache_as keeps (repeatable; globs; default: the --capture hooks)
  --ttl SECONDS            how long the server keeps it (default: the server's, 600 s)
  --out FILE               write the results to this safetensors file (see below)

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
  HOOK   a hook name or glob (blocks.0.attn.hook_z, 'blocks.*.hook_resid_pre')
  S      the selection: rows=LIST positions=LIST (negative: from each row's end; also pos=)
         heads=LIST dims=LIST (last axis: neuron / d_model / d_head index); omitted = all
  V      numbers (0.5,-1,2) or @FILE.safetensors#NAME or @FILE.npy, broadcast over S: [D],
         [heads, D], [pos, heads, D] or the hook's whole shape
  e.g.   zero:blocks.0.attn.hook_z:heads=1
         add:blocks.6.hook_resid_pre:positions=-1:coef=4:value=@steer.safetensors#v
         patch_row:blocks.1.hook_attn_out:positions=4:source_rows=2,0,1
         patch_cached:blocks.0.hook_resid_pre:positions=2:from=clean

Patch flags (each --clean-* and --corrupted-* row pairs up with the one in the same place;
all rows must have the same number of tokens):
  --clean-text T, --corrupted-text T, --clean-tokens IDS, --corrupted-tokens IDS
  --kind KIND              resid_pre, resid_mid, resid_post, attn_out, mlp_out ([layer, pos]);
                           head_out ([layer, head], hook_z at all positions);
                           head_out_by_pos ([layer, pos, head]); q, k, v ([layer, head]);
                           pattern ([layer, head], hook_pattern: every query and key)
  --metric METRIC          logit_diff:A,B (logit[A] - logit[B] at the last position),
                           log_prob:A (log p(A) at the last position), loss (mean next-token
                           loss); averaged over the pairs
  --normalized             print (m - m_corrupted) / (m_clean - m_corrupted) instead of m
  --max_rows_per_pass N    rows per batched forward pass (default: the server's)
  --out FILE               "values", "normalized", "clean_metric", "corrupted_metric"

Logit-lens flags:
  --top_k N                tokens per layer (default 5)
  --targets IDS            also the log-probs of these tokens
  --position P             position shown (default -1, each row's last token)
  --out FILE               "top_log_probs", "top_tokens" [layer, batch, pos, k],
                           "target_log_probs" [layer, batch, pos, target], all positions

Dla flags:
  --token ID               the logit to attribute
  --minus ID               attribute logit[token] - logit[minus] instead
  --position P             position (default -1, each row's last token)
  --top N                  components printed per row, largest |attribution| first (default
                           10; 0 = all)
  --out FILE               "attributions" [component, batch], "logit", "constant" [batch];
                           component labels in the "glassbox.labels" metadata

Sae-encode flags (the SAE's model tokenizes --text rows):
  --sae NAME               an SAE the server has loaded (see `glassbox saes`)
  --top_k N                features per token, largest first (default 5; 0 = every active one)
  --dense                  also fetch every activation [batch, pos, d_sae] (for --out)
  --out FILE               "offsets" (I32, tokens + 1), "indices" (I32), "values" (F32): token
                           t's features are indices[offsets[t]:offsets[t+1]], tokens row after
                           row; "dense" with --dense; statistics in "glassbox.stats" metadata

Attn-norms flags:
  --layers LIST            layers to analyse (default all)
  --out FILE               "blocks.L.weights", "blocks.L.head_norms" [batch, head, query_pos,
                           key_pos] and "blocks.L.layer_norms" [batch, query_pos, key_pos]

logit-lens, dla and attn-norms tokenize --text rows first (Tokenize) and send the ids; their
--out files also hold "input_ids" and "sequence_lengths". Flags may be written with - or _
(--clean-text = --clean_text).

Exit codes:
  0  success
  1  any other failure (writing the output file, authentication, a malformed response, ...)
  2  usage error: the command line is wrong (including an --intervene SPEC or value file that
     cannot be read, or a --position outside a row)
  3  the server rejected the request: INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION or
     OUT_OF_RANGE (unknown model or hook, token id out of range, ...)
  4  the server could not be reached or did not answer in time: UNAVAILABLE,
     DEADLINE_EXCEEDED
  5  the request is over one of the server's limits: RESOURCE_EXHAUSTED
Errors are printed on stderr as "glassbox: <CODE>: <message>".
)";
}

absl::Status MarkLocal(absl::Status status) {
  if (!status.ok()) status.SetPayload(kLocalPayloadUrl, absl::Cord("1"));
  return status;
}

bool IsLocal(const absl::Status& status) { return status.GetPayload(kLocalPayloadUrl).has_value(); }

absl::Status MarkUsage(absl::Status status) {
  if (!status.ok()) status.SetPayload(kUsagePayloadUrl, absl::Cord("1"));
  return status;
}

int ExitCodeForStatus(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  if (status.GetPayload(kUsagePayloadUrl).has_value()) return kExitUsage;
  if (IsLocal(status)) return kExitError;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return kExitBadRequest;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return kExitUnavailable;
    case absl::StatusCode::kResourceExhausted:
      return kExitExhausted;
    default:
      return kExitError;
  }
}

std::string QuoteToken(const std::string& token) {
  std::string quoted = "'";
  for (char c : token) {
    const unsigned char u = static_cast<unsigned char>(c);
    switch (c) {
      case '\\':
        quoted += "\\\\";
        break;
      case '\'':
        quoted += "\\'";
        break;
      case '\n':
        quoted += "\\n";
        break;
      case '\r':
        quoted += "\\r";
        break;
      case '\t':
        quoted += "\\t";
        break;
      default:
        if (u < 0x20 || u == 0x7f) {
          quoted += absl::StrFormat("\\x%02x", u);
        } else {
          quoted += c;  // printable ASCII and UTF-8 bytes as they are
        }
    }
  }
  quoted += "'";
  return quoted;
}

namespace {
struct SweepName {
  std::string_view name;
  glassbox::v1::SweepKind kind;
};
// The first name of each kind is the one SweepKindName gives.
constexpr SweepName kSweepNames[] = {
    {"resid_pre", glassbox::v1::SWEEP_RESID_PRE},
    {"resid_mid", glassbox::v1::SWEEP_RESID_MID},
    {"resid_post", glassbox::v1::SWEEP_RESID_POST},
    {"attn_out", glassbox::v1::SWEEP_ATTN_OUT},
    {"mlp_out", glassbox::v1::SWEEP_MLP_OUT},
    {"head_out", glassbox::v1::SWEEP_HEAD_OUT_ALL_POS},
    {"head_out_all_pos", glassbox::v1::SWEEP_HEAD_OUT_ALL_POS},
    {"head_out_by_pos", glassbox::v1::SWEEP_HEAD_OUT_BY_POS},
    {"q", glassbox::v1::SWEEP_Q_ALL_POS},
    {"q_all_pos", glassbox::v1::SWEEP_Q_ALL_POS},
    {"k", glassbox::v1::SWEEP_K_ALL_POS},
    {"k_all_pos", glassbox::v1::SWEEP_K_ALL_POS},
    {"v", glassbox::v1::SWEEP_V_ALL_POS},
    {"v_all_pos", glassbox::v1::SWEEP_V_ALL_POS},
    {"pattern", glassbox::v1::SWEEP_ATTN_HEAD_PATTERN_ALL_POS},
    {"pattern_all_pos", glassbox::v1::SWEEP_ATTN_HEAD_PATTERN_ALL_POS},
};
}  // namespace

std::string SweepKindNames() {
  std::vector<std::string> names;
  for (const SweepName& s : kSweepNames) {
    if (SweepKindName(s.kind) == s.name) names.emplace_back(s.name);
  }
  return absl::StrJoin(names, ", ");
}

std::optional<glassbox::v1::SweepKind> ParseSweepKind(std::string_view name) {
  std::string lower = absl::AsciiStrToLower(absl::string_view(name.data(), name.size()));
  std::replace(lower.begin(), lower.end(), '-', '_');
  for (const SweepName& s : kSweepNames) {
    if (s.name == lower) return s.kind;
  }
  return std::nullopt;
}

std::string_view SweepKindName(glassbox::v1::SweepKind kind) {
  for (const SweepName& s : kSweepNames) {
    if (s.kind == kind) return s.name;
  }
  return "?";
}

absl::StatusOr<glassbox::v1::PatchingMetric> ParsePatchingMetric(std::string_view text) {
  glassbox::v1::PatchingMetric metric;
  const size_t colon = text.find(':');
  const std::string name = absl::AsciiStrToLower(
      absl::string_view(text.data(), colon == std::string_view::npos ? text.size() : colon));
  const std::string args =
      colon == std::string_view::npos ? "" : std::string(text.substr(colon + 1));
  auto tokens = [&](size_t n) -> absl::StatusOr<std::vector<int32_t>> {
    if (args.empty()) {
      return UsageError(absl::StrFormat("--metric %s needs %s", name,
                                        n == 2 ? "two token ids: logit_diff:A,B"
                                               : "a token id: log_prob:A"));
    }
    GB_ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseIntList("metric", {args}, 0));
    if (ids.size() != n) {
      return UsageError(absl::StrFormat("--metric %s takes %d token id%s, got %d", name, n,
                                        n == 1 ? "" : "s", ids.size()));
    }
    return ids;
  };
  if (name == "logit_diff") {
    GB_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tokens(2));
    metric.set_kind(glassbox::v1::PatchingMetric::LOGIT_DIFF);
    metric.set_token_a(ids[0]);
    metric.set_token_b(ids[1]);
  } else if (name == "log_prob") {
    GB_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tokens(1));
    metric.set_kind(glassbox::v1::PatchingMetric::LOG_PROB);
    metric.set_token_a(ids[0]);
  } else if (name == "loss") {
    if (!args.empty()) return UsageError("--metric loss takes no tokens");
    metric.set_kind(glassbox::v1::PatchingMetric::LOSS);
  } else {
    return UsageError(absl::StrFormat(
        "--metric: \"%s\" is not one of logit_diff:A,B, log_prob:A, loss", text));
  }
  return metric;
}

absl::StatusOr<int> WriteRunSafetensors(const std::string& path,
                                        const glassbox::v1::RunRequest& request,
                                        const RunResult& result, std::ostream& err) {
  std::vector<TensorToWrite> tensors;
  std::set<std::string> names;
  // Names must be unique in the file; if two captures resolve to the same name, keep both.
  auto unique_name = [&](const std::string& name) {
    std::string candidate = name;
    for (int n = 2; names.contains(candidate); ++n) candidate = absl::StrCat(name, "#", n);
    if (candidate != name) {
      err << "glassbox: warning: tensor \"" << name
          << "\" came back twice; the second is saved as \"" << candidate << "\"\n";
    }
    names.insert(candidate);
    return candidate;
  };
  auto add = [&](const std::string& name, glassbox::v1::DType dtype, std::vector<int64_t> shape,
                 std::span<const std::byte> bytes) -> absl::Status {
    std::optional<SafetensorsDtype> st_dtype = ToSafetensorsDtype(dtype);
    if (!st_dtype.has_value()) {
      return absl::InternalError(
          absl::StrFormat("tensor \"%s\" has unknown dtype %d", name, static_cast<int>(dtype)));
    }
    tensors.push_back(TensorToWrite{
        .name = unique_name(name), .dtype = *st_dtype, .shape = std::move(shape), .bytes = bytes});
    return absl::OkStatus();
  };
  for (const ReceivedTensor& t : result.tensors) {
    GB_RETURN_IF_ERROR(add(t.name, t.dtype, t.shape, AsBytes(t.bytes)));
  }
  // The ids that ran, so that text inputs can be interpreted.
  const glassbox::v1::Header& header = result.header;
  const int64_t batch = header.tokens_size();
  int64_t max_len = 0;
  for (const auto& row : header.tokens()) max_len = std::max<int64_t>(max_len, row.ids_size());
  std::vector<int32_t> input_ids(static_cast<size_t>(batch * max_len), 0);
  std::vector<int32_t> lengths;
  for (int64_t b = 0; b < batch; ++b) {
    const auto& ids = header.tokens(static_cast<int>(b)).ids();
    std::copy(ids.begin(), ids.end(), input_ids.begin() + b * max_len);
    lengths.push_back(ids.size());
  }
  if (batch > 0) {
    GB_RETURN_IF_ERROR(add("input_ids", glassbox::v1::DTYPE_I32, {batch, max_len},
                           std::as_bytes(std::span<const int32_t>(input_ids))));
    GB_RETURN_IF_ERROR(add("sequence_lengths", glassbox::v1::DTYPE_I32, {batch},
                           std::as_bytes(std::span<const int32_t>(lengths))));
  }

  std::map<std::string, std::string> metadata;
  metadata["glassbox.model"] = header.model();
  std::string request_json;
  if (google::protobuf::util::MessageToJsonString(request, &request_json).ok()) {
    metadata["glassbox.request"] = request_json;
  }
  GB_RETURN_IF_ERROR(WriteSafetensors(path, tensors, metadata));
  return static_cast<int>(tensors.size());
}

int Execute(const Invocation& inv, std::ostream& out, std::ostream& err) {
  if (inv.command == Command::kHelp) {
    out << UsageText();
    return kExitOk;
  }
  absl::StatusOr<std::unique_ptr<client::Client>> connected =
      client::Client::Connect(inv.server, inv.client);
  if (!connected.ok()) return Fail(MarkLocal(connected.status()), err);
  client::Client& client = **connected;
  absl::Status status;
  switch (inv.command) {
    case Command::kHelp:
      break;
    case Command::kModels:
      status = ListModels(client, out);
      break;
    case Command::kInfo:
      status = ShowInfo(client, inv.model, out);
      break;
    case Command::kTokenize:
      status = TokenizeText(client, inv.tokenize, out);
      break;
    case Command::kDetokenize:
      status = DetokenizeIds(client, inv.detokenize, out);
      break;
    case Command::kRun:
      status = RunModel(client, inv, out, err);
      break;
    case Command::kPatch:
      status = RunPatch(client, inv, out);
      break;
    case Command::kLogitLens:
      status = RunLogitLens(client, inv, out);
      break;
    case Command::kDla:
      status = RunDla(client, inv, out);
      break;
    case Command::kAttnNorms:
      status = RunAttnNorms(client, inv, out);
      break;
    case Command::kSaes:
      status = ListSaes(client, inv.model, out);
      break;
    case Command::kSaeEncode:
      status = RunSaeEncode(client, inv, out);
      break;
    case Command::kCached:
      status = ListCachedRuns(client, out);
      break;
    case Command::kRelease:
      status = ReleaseCachedRun(client, inv.cached_run, out);
      break;
  }
  out.flush();
  if (!status.ok()) return Fail(status, err);
  return kExitOk;
}

int Main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<Invocation> inv = ParseCommandLine(args, EnvironmentFromProcess());
  if (!inv.ok()) {
    std::cerr << "glassbox: " << absl::StatusCodeToString(inv.status().code()) << ": "
              << inv.status().message() << "\n\n"
              << Synopsis() << "\nRun 'glassbox --help' for all flags and the exit codes.\n";
    return kExitUsage;
  }
  return Execute(*inv, std::cout, std::cerr);
}

}  // namespace glassbox::cli
