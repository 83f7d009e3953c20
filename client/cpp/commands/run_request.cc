#include "client/cpp/commands/run_request.h"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "client/cpp/cli/errors.h"
#include "client/cpp/cli/flags.h"
#include "client/cpp/cli/rows.h"
#include "client/cpp/intervention_spec.h"
#include "client/cpp/sae_spec.h"
#include "client/cpp/tensor_decode.h"

namespace glassbox::cli {
namespace {

template <typename Enum>
struct Choice {
  std::string_view name;
  Enum value;
};

// The value of --FLAG, one of `choices`; the first when the flag is not given.
template <typename Enum, size_t N>
absl::StatusOr<Enum> ParseChoice(const RawCommandLine& raw, std::string_view flag,
                                 const Choice<Enum> (&choices)[N]) {
  const std::string text = raw.Value(flag).value_or(std::string(choices[0].name));
  std::vector<std::string> names;
  for (const Choice<Enum>& choice : choices) {
    if (choice.name == text) return choice.value;
    names.emplace_back(choice.name);
  }
  return UsageError(absl::StrFormat("--%s: \"%s\" is not one of %s", flag, text,
                                    absl::StrJoin(names, ", ")));
}

// --K_FLAG N, which the top_k choice of --MODE_FLAG needs and nothing else takes.
absl::StatusOr<std::optional<int32_t>> ParseTopK(const RawCommandLine& raw,
                                                 std::string_view k_flag,
                                                 std::string_view mode_flag, bool top_k) {
  if (raw.Has(k_flag)) {
    if (!top_k) {
      return UsageError(absl::StrFormat("--%s applies to --%s top_k only", k_flag, mode_flag));
    }
    GB_ASSIGN_OR_RETURN(int32_t k, ParseInt32Flag(raw, k_flag, "", 1));
    return k;
  }
  if (top_k) return UsageError(absl::StrFormat("--%s top_k needs --%s N", mode_flag, k_flag));
  return std::nullopt;
}

constexpr Choice<glassbox::v1::Reduction> kReductions[] = {
    {"none", glassbox::v1::REDUCTION_NONE},
    {"mean_pos", glassbox::v1::REDUCTION_MEAN_POS},
    {"top_k", glassbox::v1::REDUCTION_TOP_K},
    {"norm", glassbox::v1::REDUCTION_NORM},
};

constexpr Choice<glassbox::v1::LogitsMode> kLogitsModes[] = {
    {"none", glassbox::v1::LOGITS_NONE},
    {"last", glassbox::v1::LOGITS_LAST},
    {"all", glassbox::v1::LOGITS_ALL},
    {"top_k", glassbox::v1::LOGITS_TOP_K},
};

// Every --capture, with the capture options (which apply to all of them).
absl::Status ParseCaptures(const RawCommandLine& raw, glassbox::v1::RunRequest& request) {
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
  GB_ASSIGN_OR_RETURN(glassbox::v1::Reduction reduction, ParseChoice(raw, "reduce", kReductions));
  capture_template.set_reduction(reduction);
  GB_ASSIGN_OR_RETURN(std::optional<int32_t> k,
                      ParseTopK(raw, "k", "reduce", reduction == glassbox::v1::REDUCTION_TOP_K));
  if (k.has_value()) capture_template.set_k(*k);
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
  return absl::OkStatus();
}

// --logits, --loss, --target_tokens, and --stop_at_layer, which rules them out.
absl::Status ParseOutputs(const RawCommandLine& raw, glassbox::v1::RunRequest& request) {
  glassbox::v1::Outputs& outputs = *request.mutable_outputs();
  GB_ASSIGN_OR_RETURN(glassbox::v1::LogitsMode logits, ParseChoice(raw, "logits", kLogitsModes));
  outputs.set_logits(logits);
  GB_ASSIGN_OR_RETURN(std::optional<int32_t> k,
                      ParseTopK(raw, "logits_k", "logits", logits == glassbox::v1::LOGITS_TOP_K));
  if (k.has_value()) outputs.set_logits_k(*k);
  outputs.set_loss_per_token(raw.IsTrue("loss"));
  GB_ASSIGN_OR_RETURN(std::vector<int32_t> targets,
                      ParseIntList("target_tokens", raw.Values("target_tokens"), 0));
  outputs.mutable_target_tokens()->Add(targets.begin(), targets.end());
  if (raw.Has("stop_at_layer")) {
    GB_ASSIGN_OR_RETURN(int32_t stop, ParseInt32Flag(raw, "stop_at_layer", "", 0));
    request.set_stop_at_layer(stop);
    if (outputs.logits() != glassbox::v1::LOGITS_NONE || outputs.loss_per_token() ||
        !targets.empty()) {
      return UsageError(
          "--stop_at_layer stops before the unembedding: it cannot be combined with --logits, "
          "--loss or --target_tokens");
    }
  }
  return absl::OkStatus();
}

// --cache_as NAME and what it keeps for how long.
absl::Status ParseKeep(const RawCommandLine& raw, glassbox::v1::RunRequest& request) {
  std::optional<std::string> name = raw.Value("cache_as");
  if (!name.has_value()) {
    if (raw.Has("cache_hook") || raw.Has("ttl")) {
      return UsageError("--cache_hook and --ttl apply to a run kept with --cache_as NAME");
    }
    return absl::OkStatus();
  }
  glassbox::v1::KeepActivations& keep = *request.mutable_keep();
  keep.set_name(*name);
  for (const std::string& hook : raw.Values("cache_hook")) keep.add_hooks(hook);
  if (raw.Has("ttl")) {
    GB_ASSIGN_OR_RETURN(int32_t ttl, ParseInt32Flag(raw, "ttl", "", 1));
    keep.set_ttl_seconds(ttl);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseRowsAndEdits(const CommandLine& line, glassbox::v1::RunRequest& request) {
  const RawCommandLine& raw = line.raw;
  GB_RETURN_IF_ERROR(ParseModelAndRows(line, request));
  const ValueLoader load = line.env.load_value ? line.env.load_value : ValueLoader(&LoadValueFile);
  for (const std::string& spec : raw.Values("intervene")) {
    GB_ASSIGN_OR_RETURN(*request.add_interventions(), ParseInterventionSpec(spec, load));
  }
  return AddSaeFlags(raw.Values("sae_splice"), raw.Values("sae_edit"), raw.Values("sae_steer"),
                     request);
}

absl::Status ParseRunRequest(const CommandLine& line, glassbox::v1::RunRequest& request) {
  const RawCommandLine& raw = line.raw;
  GB_RETURN_IF_ERROR(ParseRowsAndEdits(line, request));
  GB_RETURN_IF_ERROR(ParseCaptures(raw, request));
  GB_RETURN_IF_ERROR(ParseOutputs(raw, request));
  if (raw.Has("chunk_bytes")) {
    GB_ASSIGN_OR_RETURN(int64_t bytes,
                        ParseInt("chunk_bytes", *raw.Value("chunk_bytes"), 1, UINT32_MAX));
    request.set_chunk_bytes(static_cast<uint32_t>(bytes));
  }
  return ParseKeep(raw, request);
}

}  // namespace glassbox::cli
