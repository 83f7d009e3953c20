// Builds Tokenizers from tokenizer.json, or GPT-2's vocab.json + merges.txt, plus the optional
// tokenizer_config.json. All JSON access happens here or in the *FromJson functions this calls;
// nlohmann exceptions are caught at this boundary and become INVALID_ARGUMENT.
#include <filesystem>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/model/tokenizer/string_view_compat.h"
#include "server/model/tokenizer/tokenizer.h"
#include "server/model/tokenizer/tokenizer_parts.h"

namespace glassbox {
namespace {

using nlohmann::json;
using tokenizer::AddedToken;
using tokenizer::BpeConfig;
using tokenizer::TokenizerParts;

absl::StatusOr<json> ParseJson(std::string_view text, std::string_view what) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    return absl::InvalidArgumentError(absl::StrCat(tokenizer::AsAbsl(what), " is not valid JSON"));
  return j;
}

// A token named in tokenizer_config.json: a string, an AddedToken-like object, or null.
std::optional<std::string> ConfigToken(const json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return std::nullopt;
  const json& v = config.at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content")) return v.at("content").get<std::string>();
  return std::nullopt;
}

absl::StatusOr<BpeConfig> BpeConfigFromJson(const json& model) {
  const std::string type = model.value("type", model.contains("merges") ? "BPE" : "");
  if (type != "BPE") {
    return absl::UnimplementedError(
        absl::StrCat("unsupported model type '", type, "': only BPE tokenizers are implemented"));
  }
  if (model.contains("dropout") && !model.at("dropout").is_null() &&
      model.at("dropout").get<double>() > 0) {
    return absl::UnimplementedError("BPE dropout is random and not supported");
  }
  if (!model.at("vocab").is_object() || !model.at("merges").is_array()) {
    return absl::InvalidArgumentError(
        "malformed BPE model: vocab must be an object, merges a list");
  }
  BpeConfig config;
  for (const auto& [token, id] : model.at("vocab").items()) {
    config.vocab.emplace(token, id.get<int32_t>());
  }
  for (const auto& m : model.at("merges")) {
    if (m.is_string()) {
      // "a b": HF splits on the space; tokens themselves hold no plain spaces in this format.
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("bad merge '", s, "'"));
      }
      config.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2) {
      config.merges.emplace_back(m.at(0).get<std::string>(), m.at(1).get<std::string>());
    } else {
      return absl::InvalidArgumentError(absl::StrCat("bad merge ", m.dump()));
    }
  }
  auto optional_string = [&model](const char* key) -> std::optional<std::string> {
    if (!model.contains(key) || model.at(key).is_null()) return std::nullopt;
    return model.at(key).get<std::string>();
  };
  config.unk_token = optional_string("unk_token");
  config.continuing_subword_prefix = optional_string("continuing_subword_prefix");
  config.end_of_word_suffix = optional_string("end_of_word_suffix");
  config.fuse_unk = model.value("fuse_unk", false);
  config.byte_fallback = model.value("byte_fallback", false);
  config.ignore_merges = model.value("ignore_merges", false);
  return config;
}

// Fills bos/eos/pad, applies add_bos_token/add_eos_token, and computes the vocab size.
absl::Status Finish(const json& config, TokenizerParts* parts,
                    std::optional<std::string> default_bos,
                    std::optional<std::string> default_eos) {
  auto lookup = [parts](const std::optional<std::string>& token) -> std::optional<int32_t> {
    if (!token) return std::nullopt;
    if (auto id = parts->added->FindByContent(*token)) return id;
    return parts->model->TokenToId(*token);
  };
  std::optional<std::string> bos = ConfigToken(config, "bos_token");
  std::optional<std::string> eos = ConfigToken(config, "eos_token");
  parts->bos_id = lookup(bos ? bos : default_bos);
  parts->eos_id = lookup(eos ? eos : default_eos);
  parts->pad_id = lookup(ConfigToken(config, "pad_token"));

  // transformers' Llama/Gemma fast tokenizers rebuild the post-processor from these flags.
  const bool has_add_bos = config.is_object() && config.contains("add_bos_token") &&
                           config.at("add_bos_token").is_boolean();
  const bool has_add_eos = config.is_object() && config.contains("add_eos_token") &&
                           config.at("add_eos_token").is_boolean();
  if (has_add_bos || has_add_eos) {
    const bool add_bos = has_add_bos && config.at("add_bos_token").get<bool>();
    const bool add_eos = has_add_eos && config.at("add_eos_token").get<bool>();
    if (add_bos && !parts->bos_id) {
      return absl::InvalidArgumentError("add_bos_token is set but there is no BOS token");
    }
    if (add_eos && !parts->eos_id) {
      return absl::InvalidArgumentError("add_eos_token is set but there is no EOS token");
    }
    std::vector<int32_t> prefix, suffix;
    if (add_bos) prefix.push_back(*parts->bos_id);
    if (add_eos) suffix.push_back(*parts->eos_id);
    parts->post_processor =
        std::make_unique<tokenizer::AffixPostProcessor>(std::move(prefix), std::move(suffix));
  }
  if (parts->post_processor != nullptr) {
    std::vector<int32_t> probe;
    parts->post_processor->Process(&probe);
    // Without a configured BOS, a template that starts with a special token names it.
    if (!parts->bos_id && !probe.empty() && !bos) parts->bos_id = probe.front();
    parts->post_processor_adds_bos =
        parts->bos_id && !probe.empty() && probe.front() == *parts->bos_id;
  }
  parts->vocab_size = parts->model->id_limit();
  for (const AddedToken& t : parts->added->tokens()) {
    parts->vocab_size = std::max(parts->vocab_size, t.id + 1);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TokenizerParts>> PartsFromJson(const json& j, const json& config) {
  if (!j.is_object()) return absl::InvalidArgumentError("tokenizer.json is not a JSON object");
  auto parts = std::make_unique<TokenizerParts>();
  GB_ASSIGN_OR_RETURN(BpeConfig bpe, BpeConfigFromJson(j.at("model")));
  GB_ASSIGN_OR_RETURN(parts->model, tokenizer::BpeModel::Create(std::move(bpe)));
  auto present = [&j](const char* key) { return j.contains(key) && !j.at(key).is_null(); };
  if (present("normalizer")) {
    GB_ASSIGN_OR_RETURN(parts->normalizer, tokenizer::NormalizerFromJson(j.at("normalizer")));
  }
  if (present("pre_tokenizer")) {
    GB_ASSIGN_OR_RETURN(parts->pre_tokenizer,
                        tokenizer::PreTokenizerFromJson(j.at("pre_tokenizer")));
  }
  if (present("post_processor")) {
    GB_ASSIGN_OR_RETURN(parts->post_processor,
                        tokenizer::PostProcessorFromJson(j.at("post_processor")));
  }
  if (present("decoder")) {
    GB_ASSIGN_OR_RETURN(parts->decoder, tokenizer::DecoderFromJson(j.at("decoder")));
  }
  std::vector<AddedToken> added;
  if (present("added_tokens")) {
    for (const auto& t : j.at("added_tokens")) {
      AddedToken token;
      token.content = t.at("content").get<std::string>();
      token.special = t.value("special", false);
      token.normalized = t.value("normalized", !token.special);
      token.lstrip = t.value("lstrip", false);
      token.rstrip = t.value("rstrip", false);
      token.single_word = t.value("single_word", false);
      // HF keeps the model's id for a token the vocab already has.
      const auto model_id = parts->model->TokenToId(token.content);
      token.id = model_id ? *model_id : t.at("id").get<int32_t>();
      if (token.id < 0) return absl::InvalidArgumentError("negative added token id");
      added.push_back(std::move(token));
    }
  }
  GB_ASSIGN_OR_RETURN(
      parts->added, tokenizer::AddedVocabulary::Create(std::move(added), parts->normalizer.get()));
  GB_RETURN_IF_ERROR(Finish(config, parts.get(), std::nullopt, std::nullopt));
  return parts;
}

absl::StatusOr<std::unique_ptr<TokenizerParts>> PartsFromVocabAndMerges(const json& vocab,
                                                                        std::string_view merges,
                                                                        const json& config) {
  if (!vocab.is_object()) return absl::InvalidArgumentError("vocab.json is not a JSON object");
  BpeConfig bpe;
  for (const auto& [token, id] : vocab.items()) bpe.vocab.emplace(token, id.get<int32_t>());
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < merges.size()) {
    size_t eol = merges.find('\n', pos);
    if (eol == std::string_view::npos) eol = merges.size();
    std::string_view line = merges.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.starts_with("#version")) continue;
    const size_t space = line.find(' ');
    if (space == std::string_view::npos || line.find(' ', space + 1) != std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("merges.txt line ", line_no, " is not two tokens separated by a space"));
    }
    bpe.merges.emplace_back(std::string(line.substr(0, space)),
                            std::string(line.substr(space + 1)));
  }
  auto parts = std::make_unique<TokenizerParts>();
  GB_ASSIGN_OR_RETURN(parts->model, tokenizer::BpeModel::Create(std::move(bpe)));
  // HF's GPT-2 tokenizer: byte-level pre-tokenizer without prefix space, byte-level decoder,
  // no BOS, and <|endoftext|> as a special added token.
  GB_ASSIGN_OR_RETURN(parts->pre_tokenizer, tokenizer::MakeByteLevelPreTokenizer(false, true));
  parts->decoder = tokenizer::MakeByteLevelDecoder();
  std::vector<AddedToken> added;
  constexpr char kEndOfText[] = "<|endoftext|>";
  if (auto id = parts->model->TokenToId(kEndOfText)) {
    added.push_back(AddedToken{kEndOfText, *id, /*special=*/true, /*normalized=*/true});
  }
  GB_ASSIGN_OR_RETURN(parts->added, tokenizer::AddedVocabulary::Create(std::move(added), nullptr));
  GB_RETURN_IF_ERROR(Finish(config, parts.get(), kEndOfText, kEndOfText));
  return parts;
}

absl::StatusOr<json> ParseConfig(std::string_view config_json) {
  if (config_json.empty()) return json(nullptr);
  return ParseJson(config_json, "tokenizer_config.json");
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(
    std::string_view tokenizer_json, std::string_view tokenizer_config_json) {
  GB_ASSIGN_OR_RETURN(json j, ParseJson(tokenizer_json, "tokenizer.json"));
  GB_ASSIGN_OR_RETURN(json config, ParseConfig(tokenizer_config_json));
  try {
    GB_ASSIGN_OR_RETURN(auto parts, PartsFromJson(j, config));
    return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(parts)));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed tokenizer.json: ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromVocabAndMerges(
    std::string_view vocab_json, std::string_view merges_txt,
    std::string_view tokenizer_config_json) {
  GB_ASSIGN_OR_RETURN(json vocab, ParseJson(vocab_json, "vocab.json"));
  GB_ASSIGN_OR_RETURN(json config, ParseConfig(tokenizer_config_json));
  try {
    GB_ASSIGN_OR_RETURN(auto parts, PartsFromVocabAndMerges(vocab, merges_txt, config));
    return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(parts)));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed vocab.json: ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadFromDirectory(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("tokenizer directory ", dir, " does not exist"));
  }
  const fs::path root(dir);
  std::string config;
  if (fs::exists(root / "tokenizer_config.json", ec)) {
    GB_ASSIGN_OR_RETURN(config, ReadFileToString(root / "tokenizer_config.json"));
  }
  if (fs::exists(root / "tokenizer.json", ec)) {
    GB_ASSIGN_OR_RETURN(std::string text, ReadFileToString(root / "tokenizer.json"));
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = FromJson(text, config);
    if (!t.ok()) {
      return absl::Status(t.status().code(), absl::StrCat(dir, ": ", t.status().message()));
    }
    return t;
  }
  if (fs::exists(root / "vocab.json", ec) && fs::exists(root / "merges.txt", ec)) {
    GB_ASSIGN_OR_RETURN(std::string vocab, ReadFileToString(root / "vocab.json"));
    GB_ASSIGN_OR_RETURN(std::string merges, ReadFileToString(root / "merges.txt"));
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = FromVocabAndMerges(vocab, merges, config);
    if (!t.ok()) {
      return absl::Status(t.status().code(), absl::StrCat(dir, ": ", t.status().message()));
    }
    return t;
  }
  return absl::NotFoundError(
      absl::StrCat(dir, " holds neither tokenizer.json nor vocab.json + merges.txt"));
}

}  // namespace glassbox
