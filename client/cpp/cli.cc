#include "client/cpp/cli.h"

#include <google/protobuf/util/json_util.h>

#include <cstdlib>
#include <iostream>
#include <map>
#include <set>
#include <span>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "server/model/safetensors.h"
#include "server/util/status_macros.h"

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
    {"prepend_bos", FlagKind::kBool, Bit(Command::kTokenize) | kRunOnly},
    {"split_special_tokens", FlagKind::kBool, Bit(Command::kTokenize)},
    {"skip_special_tokens", FlagKind::kBool, Bit(Command::kDetokenize)},
    {"model", FlagKind::kValue, kRunOnly},
    {"text", FlagKind::kRepeated, kRunOnly},
    {"tokens", FlagKind::kRepeated, kRunOnly},
    {"capture", FlagKind::kRepeated, kRunOnly},
    {"positions", FlagKind::kRepeated, kRunOnly},
    {"heads", FlagKind::kRepeated, kRunOnly},
    {"layers", FlagKind::kRepeated, kRunOnly},
    {"dtype", FlagKind::kValue, kRunOnly},
    {"reduce", FlagKind::kValue, kRunOnly},
    {"k", FlagKind::kValue, kRunOnly},
    {"logits", FlagKind::kValue, kRunOnly},
    {"logits_k", FlagKind::kValue, kRunOnly},
    {"loss", FlagKind::kBool, kRunOnly},
    {"target_tokens", FlagKind::kRepeated, kRunOnly},
    {"stop_at_layer", FlagKind::kValue, kRunOnly},
    {"chunk_bytes", FlagKind::kValue, kRunOnly},
    {"out", FlagKind::kValue, kRunOnly},
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
    std::string name(body);
    if (name == "h") name = "help";
    const FlagSpec* spec = FindFlag(name);
    bool negated = false;
    if (spec == nullptr && absl::StartsWith(name, "no")) {
      const FlagSpec* positive = FindFlag(std::string_view(name).substr(2));
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

absl::StatusOr<Command> ParseCommand(std::string_view word) {
  if (word == "models") return Command::kModels;
  if (word == "info") return Command::kInfo;
  if (word == "tokenize") return Command::kTokenize;
  if (word == "detokenize") return Command::kDetokenize;
  if (word == "run") return Command::kRun;
  if (word == "help") return Command::kHelp;
  return UsageError(absl::StrFormat(
      "unknown command \"%s\" (commands: models, info, tokenize, detokenize, run)", word));
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

absl::Status ParseRun(const RawCommandLine& raw, Invocation& inv) {
  glassbox::v1::RunRequest& request = inv.run;
  const std::optional<std::string> model = raw.Value("model");
  if (!model.has_value() || model->empty()) return UsageError("run needs --model MODEL");
  request.set_model(*model);

  glassbox::v1::Inputs& inputs = *request.mutable_inputs();
  const std::vector<std::string> texts = raw.Values("text");
  const std::vector<std::string> token_rows = raw.Values("tokens");
  if (texts.empty() == token_rows.empty()) {
    return UsageError(
        "run needs inputs as --text TEXT or as --tokens IDS (either may be repeated, one row "
        "each), not both");
  }
  for (const std::string& text : texts) inputs.add_texts(text);
  for (const std::string& row : token_rows) {
    GB_ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseIntList("tokens", {row}, 0));
    if (ids.empty()) return UsageError("--tokens: a row needs at least one token id");
    inputs.add_token_ids()->mutable_ids()->Add(ids.begin(), ids.end());
  }
  if (std::optional<std::string> bos = raw.Value("prepend_bos")) {
    if (texts.empty()) return UsageError("--prepend_bos applies to --text inputs only");
    inputs.set_prepend_bos(*bos == "true");
  }

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
  inv.out_path = raw.Value("out").value_or("");
  if (raw.Has("out") && inv.out_path.empty()) return UsageError("--out needs a file name");
  return absl::OkStatus();
}

// ---- execution ----

constexpr char kLocalPayloadUrl[] = "type.glassbox.dev/glassbox.cli.local";

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
  if (!inv.out_path.empty()) {
    absl::StatusOr<int> written = WriteRunSafetensors(inv.out_path, inv.run, result, err);
    if (!written.ok()) return MarkLocal(written.status());
    out << absl::StrFormat("wrote %d tensors to %s\n", *written, inv.out_path);
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
    return UsageError("no command given (commands: models, info, tokenize, detokenize, run)");
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
      GB_RETURN_IF_ERROR(ParseRun(raw, inv));
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
                              [--out FILE.safetensors]
  glassbox --help

Commands:
  models      one line per loaded model: name, architecture, layers, d_model, heads, vocab,
              device, dtype
  info        the model's dimensions and every hook point with its shape (per-request
              dimensions by name: [batch, pos, 64])
  tokenize    token ids and their strings, one per line: 15496 'Hello'
  detokenize  the text of comma-separated token ids
  run         one hooked forward pass; prints what came back and writes it with --out

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
  --out FILE               write the results to this safetensors file (see below)

The --out file holds every captured tensor under its hook name (dtype as received: F32, F16,
BF16, or I32 for top-k indices), "logits" (top-k: plus "logits.indices"), "loss_per_token",
"target_log_probs", "input_ids" ([batch, max_len] I32, right-padded with 0) and
"sequence_lengths" ([batch] I32), and the request as JSON in the "glassbox.request" metadata.
Open it with safetensors: safetensors.numpy.load_file(FILE) or safetensors.torch.load_file(FILE).

Exit codes:
  0  success
  1  any other failure (writing the output file, authentication, a malformed response, ...)
  2  usage error: the command line is wrong
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

int ExitCodeForStatus(const absl::Status& status) {
  if (status.ok()) return kExitOk;
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
