#include "server/model/tokenizer/tokenizer.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/model/tokenizer/tokenizer_parts.h"
#include "server/model/tokenizer/utf8.h"

namespace glassbox {

using tokenizer::AddedSplit;
using tokenizer::PreToken;

Tokenizer::Tokenizer(std::unique_ptr<tokenizer::TokenizerParts> parts) : parts_(std::move(parts)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text,
                                                       const EncodeOptions& options) const {
  const size_t bad = tokenizer::FirstInvalidUtf8(text);
  if (bad != text.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("text is not valid UTF-8 (invalid byte at offset ", bad, ")"));
  }
  const tokenizer::TokenizerParts& p = *parts_;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<PreToken> pieces;
  std::string normalized;
  // HF: cut out raw-matched added tokens, normalize each remaining piece, cut out the
  // normalized-matched ones, then pre-tokenize and run the model on what is left.
  for (const AddedSplit& raw : p.added->Split(text, false, options.split_special_tokens)) {
    if (raw.token_id >= 0) {
      ids.push_back(raw.token_id);
      continue;
    }
    if (raw.start == raw.end) continue;
    normalized.assign(text.substr(raw.start, raw.end - raw.start));
    if (p.normalizer != nullptr) p.normalizer->Normalize(&normalized);
    for (const AddedSplit& s : p.added->Split(normalized, true, options.split_special_tokens)) {
      if (s.token_id >= 0) {
        ids.push_back(s.token_id);
        continue;
      }
      if (s.start == s.end) continue;
      pieces.clear();
      pieces.push_back(
          PreToken{normalized.substr(s.start, s.end - s.start), raw.start == 0 && s.start == 0});
      if (p.pre_tokenizer != nullptr) p.pre_tokenizer->PreTokenize(&pieces);
      for (const PreToken& piece : pieces) p.model->Tokenize(piece.text, &ids);
    }
  }
  const bool add_special = options.add_special_tokens.value_or(true);
  if (add_special && p.post_processor != nullptr) p.post_processor->Process(&ids);
  if (options.prepend_bos.has_value()) {
    const bool has_bos = add_special && p.post_processor_adds_bos;
    if (*options.prepend_bos && !has_bos) {
      if (!p.bos_id) return absl::FailedPreconditionError("prepend_bos: tokenizer has no BOS");
      ids.insert(ids.begin(), *p.bos_id);
    } else if (!*options.prepend_bos && has_bos) {
      ids.erase(ids.begin());
    }
  }
  return ids;
}

absl::Status Tokenizer::ValidateIds(std::span<const int32_t> ids) const {
  for (int32_t id : ids) {
    if (id < 0 || id >= parts_->vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is out of range: vocab size is ", parts_->vocab_size));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Tokenizer::Decode(std::span<const int32_t> ids,
                                              bool skip_special_tokens) const {
  if (absl::Status s = ValidateIds(ids); !s.ok()) return s;
  const tokenizer::TokenizerParts& p = *parts_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* token = nullptr;
    if (const tokenizer::AddedToken* added = p.added->FindById(id)) {
      token = &added->content;
    } else {
      token = p.model->IdToToken(id);
    }
    if (token == nullptr) continue;  // An id no token has: HF skips it too.
    if (skip_special_tokens && p.added->IsSpecialContent(*token)) continue;
    tokens.push_back(*token);
  }
  if (p.decoder == nullptr) return absl::StrJoin(tokens, " ");
  p.decoder->DecodeChain(&tokens);
  return absl::StrJoin(tokens, "");
}

absl::StatusOr<std::vector<std::string>> Tokenizer::ToStrTokens(
    std::span<const int32_t> ids) const {
  if (absl::Status s = ValidateIds(ids); !s.ok()) return s;
  std::vector<std::string> out;
  out.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    absl::StatusOr<std::string> s = Decode(ids.subspan(i, 1));
    if (!s.ok()) return s.status();
    out.push_back(*std::move(s));
  }
  return out;
}

int32_t Tokenizer::vocab_size() const { return parts_->vocab_size; }
std::optional<int32_t> Tokenizer::bos_token_id() const { return parts_->bos_id; }
std::optional<int32_t> Tokenizer::eos_token_id() const { return parts_->eos_id; }
std::optional<int32_t> Tokenizer::pad_token_id() const { return parts_->pad_id; }

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  if (auto id = parts_->added->FindByContent(token)) return id;
  return parts_->model->TokenToId(token);
}

}  // namespace glassbox
