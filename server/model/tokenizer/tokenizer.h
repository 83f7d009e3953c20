// Text <-> token ids, exactly as HF `tokenizers` does for the same files: BPE models with their
// normalizers, pre-tokenizers, added tokens, post-processors and decoders from tokenizer.json, or
// GPT-2's vocab.json + merges.txt. All const methods are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace glassbox {

namespace tokenizer {
struct TokenizerParts;
}  // namespace tokenizer

struct EncodeOptions {
  // Add the post-processor's special tokens (BOS/EOS); nullopt is the tokenizer's default, HF's
  // encode(add_special_tokens=True).
  std::optional<bool> add_special_tokens;
  // HF's split_special_tokens (encode_special_tokens): when true, special-token strings in the
  // text are tokenized as ordinary text instead of becoming their ids. Non-special added tokens
  // are always cut out, as in HF.
  bool split_special_tokens = false;
  // TransformerLens's prepend_bos: when set, the result starts with BOS exactly when true,
  // whatever the post-processor adds (it only adds or removes the leading BOS).
  std::optional<bool> prepend_bos;
};

class Tokenizer {
 public:
  // A directory holding tokenizer.json (preferred) or vocab.json + merges.txt, with optional
  // tokenizer_config.json (bos/eos/pad tokens, add_bos_token/add_eos_token).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadFromDirectory(const std::string& dir);
  // The same from file contents; `tokenizer_config_json` may be empty.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(
      std::string_view tokenizer_json, std::string_view tokenizer_config_json);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromVocabAndMerges(
      std::string_view vocab_json, std::string_view merges_txt,
      std::string_view tokenizer_config_json);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // INVALID_ARGUMENT for text that is not valid UTF-8.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              const EncodeOptions& options = {}) const;
  // HF's decode(ids, skip_special_tokens). INVALID_ARGUMENT for ids outside [0, vocab_size()).
  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids,
                                     bool skip_special_tokens = false) const;
  // TransformerLens's to_str_tokens: each id decoded on its own.
  absl::StatusOr<std::vector<std::string>> ToStrTokens(std::span<const int32_t> ids) const;

  // Largest id (model or added token) + 1.
  int32_t vocab_size() const;
  std::optional<int32_t> bos_token_id() const;
  std::optional<int32_t> eos_token_id() const;
  std::optional<int32_t> pad_token_id() const;
  // The id of a token string (added tokens first, then the model vocab).
  std::optional<int32_t> TokenToId(std::string_view token) const;

 private:
  explicit Tokenizer(std::unique_ptr<tokenizer::TokenizerParts> parts);
  absl::Status ValidateIds(std::span<const int32_t> ids) const;

  std::unique_ptr<const tokenizer::TokenizerParts> parts_;
};

}  // namespace glassbox
