#include "server/model/tokenizer/added_vocabulary.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/model/tokenizer/string_view_compat.h"
#include "server/model/tokenizer/utf8.h"

namespace glassbox::tokenizer {

void AddedVocabulary::Trie::Insert(std::string_view key, int32_t token) {
  if (key.empty()) return;
  int32_t node = 0;
  for (unsigned char c : key) {
    auto it = nodes[node].children.find(c);
    if (it == nodes[node].children.end()) {
      nodes.push_back(Node{});
      const auto child = static_cast<int32_t>(nodes.size() - 1);
      nodes[node].children.emplace(c, child);
      node = child;
    } else {
      node = it->second;
    }
  }
  // The first token with a given pattern wins, like the lowest pattern id in Aho-Corasick.
  if (nodes[node].token < 0) nodes[node].token = token;
  first_byte[static_cast<unsigned char>(key[0])] = true;
}

std::pair<int32_t, size_t> AddedVocabulary::Trie::LongestAt(std::string_view text,
                                                            size_t pos) const {
  std::pair<int32_t, size_t> best{-1, 0};
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    auto it = nodes[node].children.find(static_cast<unsigned char>(text[i]));
    if (it == nodes[node].children.end()) break;
    node = it->second;
    if (nodes[node].token >= 0) best = {nodes[node].token, i + 1 - pos};
  }
  return best;
}

absl::StatusOr<std::unique_ptr<AddedVocabulary>> AddedVocabulary::Create(
    std::vector<AddedToken> tokens, const Normalizer* normalizer) {
  std::unique_ptr<AddedVocabulary> v(new AddedVocabulary());
  GB_ASSIGN_OR_RETURN(v->word_char_,
                      OnigRegex::Compile("[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]"));
  GB_ASSIGN_OR_RETURN(v->space_char_, OnigRegex::Compile("\\p{White_Space}"));
  v->tokens_ = std::move(tokens);
  // HF builds its tries from the special tokens first, then the others.
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < v->tokens_.size(); ++i) {
      const AddedToken& t = v->tokens_[i];
      if (t.content.empty() || t.special != (pass == 0)) continue;
      if (t.normalized) {
        std::string form = t.content;
        if (normalizer != nullptr) normalizer->Normalize(&form);
        v->normalized_trie_.Insert(form, static_cast<int32_t>(i));
      } else {
        v->raw_trie_.Insert(t.content, static_cast<int32_t>(i));
      }
    }
  }
  for (size_t i = 0; i < v->tokens_.size(); ++i) {
    const AddedToken& t = v->tokens_[i];
    v->by_id_[t.id] = static_cast<int32_t>(i);
    v->by_content_.try_emplace(t.content, t.id);
    if (t.special) v->special_.insert(t.content);
  }
  return v;
}

const AddedToken* AddedVocabulary::FindById(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int32_t> AddedVocabulary::FindByContent(std::string_view content) const {
  auto it = by_content_.find(AsAbsl(content));
  if (it == by_content_.end()) return std::nullopt;
  return it->second;
}

bool AddedVocabulary::EndsWithWord(std::string_view s) const {
  if (s.empty()) return false;
  size_t start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return word_char_->MatchAt(s, start) > 0;
}

bool AddedVocabulary::StartsWithWord(std::string_view s) const {
  return !s.empty() && word_char_->MatchAt(s, 0) > 0;
}

std::vector<AddedSplit> AddedVocabulary::Split(std::string_view text, bool normalized_set,
                                               bool split_special_tokens) const {
  const Trie& trie = normalized_set ? normalized_trie_ : raw_trie_;
  std::vector<AddedSplit> out;
  size_t start_offset = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    if (!trie.first_byte[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    const auto [index, len] = trie.LongestAt(text, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    size_t start = pos;
    size_t stop = pos + len;
    pos = stop;  // Matches never overlap, even those skipped below (as in HF's find_iter).
    const AddedToken& token = tokens_[index];
    if (split_special_tokens && token.special) continue;
    if (token.single_word) {
      const bool start_space = start == 0 || !EndsWithWord(text.substr(0, start));
      const bool stop_space = stop == text.size() || !StartsWithWord(text.substr(stop));
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) {
      size_t new_start = start;
      while (new_start > 0) {
        size_t prev = new_start - 1;
        while (prev > 0 && (static_cast<unsigned char>(text[prev]) & 0xC0) == 0x80) --prev;
        if (space_char_->MatchAt(text, prev) <= 0) break;
        new_start = prev;
      }
      start = std::max(new_start, start_offset);
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        const long n = space_char_->MatchAt(text, stop);
        if (n <= 0) break;
        stop += n;
      }
    }
    if (start_offset < start) out.push_back(AddedSplit{start_offset, start, -1});
    out.push_back(AddedSplit{start, stop, token.id});
    start_offset = stop;
  }
  if (start_offset != text.size()) out.push_back(AddedSplit{start_offset, text.size(), -1});
  return out;
}

}  // namespace glassbox::tokenizer
