// Added tokens (tokenizer.json "added_tokens"): strings that are cut out of the input before the
// model sees it, with HF's rules. Tokens with normalized=false are matched in the raw text; the
// others in each normalized piece, against their own normalized form. Special tokens are matched
// too unless split_special_tokens (HF's encode_special_tokens) asks to tokenize them as text.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "server/model/tokenizer/normalizer.h"
#include "server/model/tokenizer/onig_regex.h"

namespace glassbox::tokenizer {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool normalized = true;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
};

// A piece of text after added-token extraction: either a token id or text to tokenize.
struct AddedSplit {
  size_t start;
  size_t end;
  int32_t token_id;  // -1 for plain text.
};

class AddedVocabulary {
 public:
  // `normalizer` (may be null) gives the matching form of normalized tokens.
  static absl::StatusOr<std::unique_ptr<AddedVocabulary>> Create(std::vector<AddedToken> tokens,
                                                                 const Normalizer* normalizer);

  // HF's find_matches over `text` with the raw (normalized=false) or the normalized set.
  // Covers all of `text`; may contain empty text splits, which callers drop.
  std::vector<AddedSplit> Split(std::string_view text, bool normalized_set,
                                bool split_special_tokens) const;

  const AddedToken* FindById(int32_t id) const;
  std::optional<int32_t> FindByContent(std::string_view content) const;
  bool IsSpecialContent(std::string_view content) const {
    return special_.contains(absl::string_view(content.data(), content.size()));
  }
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // A byte trie for leftmost-longest matching (what HF's Aho-Corasick set does).
  struct Trie {
    struct Node {
      absl::flat_hash_map<unsigned char, int32_t> children;
      int32_t token = -1;  // Index into tokens_ of the token ending here.
    };
    std::vector<Node> nodes{Node{}};
    bool first_byte[256] = {};
    void Insert(std::string_view key, int32_t token);
    // Longest token match starting at `pos`: (token index, length) or (-1, 0).
    std::pair<int32_t, size_t> LongestAt(std::string_view text, size_t pos) const;
  };

  AddedVocabulary() = default;
  bool EndsWithWord(std::string_view s) const;
  bool StartsWithWord(std::string_view s) const;

  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<int32_t, int32_t> by_id_;  // id -> index into tokens_.
  absl::flat_hash_map<std::string, int32_t> by_content_;
  absl::flat_hash_set<std::string> special_;
  Trie raw_trie_;
  Trie normalized_trie_;
  // Rust regex's Unicode \w and \s, used by HF for single_word/lstrip/rstrip.
  std::unique_ptr<OnigRegex> word_char_;
  std::unique_ptr<OnigRegex> space_char_;
};

}  // namespace glassbox::tokenizer
