// The BPE model of HF tokenizers: turns one pre-token into ids by splitting it into characters
// and applying merges lowest rank first (ties leftmost), exactly as HF's `Word::merge_all`.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace glassbox::tokenizer {

struct BpeConfig {
  absl::flat_hash_map<std::string, int32_t> vocab;
  std::vector<std::pair<std::string, std::string>> merges;  // In rank order.
  std::optional<std::string> unk_token;
  std::optional<std::string> continuing_subword_prefix;
  std::optional<std::string> end_of_word_suffix;
  bool fuse_unk = false;
  bool byte_fallback = false;  // Unknown characters become <0xXX> byte tokens.
  bool ignore_merges = false;  // Pre-tokens found whole in the vocab skip merging (Llama-3).
};

class BpeModel {
 public:
  static absl::StatusOr<std::unique_ptr<BpeModel>> Create(BpeConfig config);

  // Appends the ids of `word` (one pre-token) to `ids`. Thread-safe.
  void Tokenize(std::string_view word, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The token of `id`, or nullptr for ids the vocab does not hold.
  const std::string* IdToToken(int32_t id) const;
  // One past the largest id in the vocab.
  int32_t id_limit() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  struct MergeResult {
    int32_t rank;
    int32_t new_id;
  };
  struct CacheShard {
    mutable std::shared_mutex mu;
    absl::flat_hash_map<std::string, std::vector<int32_t>> words;
  };
  static constexpr int kCacheShards = 16;
  // HF caches up to 10,000 words and only words shorter than 256 bytes; the cache changes speed,
  // never results.
  static constexpr size_t kCacheCapacityPerShard = 10000 / kCacheShards + 1;
  static constexpr size_t kMaxCachedWordBytes = 256;

  BpeModel() = default;
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void MergeWord(std::string_view word, std::vector<int32_t>* ids) const;

  BpeConfig config_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> id_present_;
  absl::flat_hash_map<uint64_t, MergeResult> merges_;
  std::optional<int32_t> unk_id_;
  std::array<int32_t, 256> byte_ids_{};  // <0xXX> token ids, -1 where the vocab lacks one.
  mutable std::array<CacheShard, kCacheShards> cache_;
};

}  // namespace glassbox::tokenizer
