#include "server/model/tokenizer/bpe_model.h"

#include <mutex>
#include <queue>

#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/model/tokenizer/string_view_compat.h"
#include "server/model/tokenizer/utf8.h"

namespace glassbox::tokenizer {
namespace {

// A symbol of the word being merged; a doubly linked list over a vector, as in HF's `Word`.
struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  size_t len;  // Bytes covered; 0 marks a symbol merged into its left neighbour.
};

struct QueuedMerge {
  int32_t pos;
  int32_t rank;
  int32_t new_id;
  // std::priority_queue pops the largest: invert so the lowest rank, then leftmost, comes first.
  bool operator<(const QueuedMerge& o) const {
    return rank != o.rank ? rank > o.rank : pos > o.pos;
  }
};

void AddSymbol(std::vector<Symbol>* symbols, int32_t id, size_t len) {
  const auto n = static_cast<int32_t>(symbols->size());
  if (n > 0) (*symbols)[n - 1].next = n;
  symbols->push_back(Symbol{id, n - 1, -1, len});
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Create(BpeConfig config) {
  std::unique_ptr<BpeModel> model(new BpeModel());
  int32_t max_id = -1;
  for (const auto& [token, id] : config.vocab) {
    if (id < 0) return absl::InvalidArgumentError(absl::StrCat("negative id for token ", token));
    max_id = std::max(max_id, id);
  }
  model->id_to_token_.resize(max_id + 1);
  model->id_present_.assign(max_id + 1, false);
  for (const auto& [token, id] : config.vocab) {
    model->id_to_token_[id] = token;
    model->id_present_[id] = true;
  }
  const size_t prefix_len =
      config.continuing_subword_prefix ? config.continuing_subword_prefix->size() : 0;
  model->merges_.reserve(config.merges.size());
  for (size_t rank = 0; rank < config.merges.size(); ++rank) {
    const auto& [a, b] = config.merges[rank];
    auto ia = config.vocab.find(a);
    auto ib = config.vocab.find(b);
    if (ia == config.vocab.end() || ib == config.vocab.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("merge ", rank, " ('", a, "' '", b, "') uses a token not in the vocab"));
    }
    // As HF: the merged token drops the continuing-subword prefix of the right part.
    std::string merged = a;
    merged.append(b.size() >= prefix_len ? std::string_view(b).substr(prefix_len) : b);
    auto im = config.vocab.find(merged);
    if (im == config.vocab.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("merge ", rank, " produces '", merged, "', which is not in the vocab"));
    }
    // Later duplicates win, as when HF collects the merges into a map.
    model->merges_[PairKey(ia->second, ib->second)] =
        MergeResult{static_cast<int32_t>(rank), im->second};
  }
  if (config.unk_token) {
    auto it = config.vocab.find(*config.unk_token);
    if (it == config.vocab.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unk_token '", *config.unk_token, "' is not in the vocab"));
    }
    model->unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = config.vocab.find(absl::StrFormat("<0x%02X>", b));
    model->byte_ids_[b] = it == config.vocab.end() ? -1 : it->second;
  }
  model->config_ = std::move(config);
  return model;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = config_.vocab.find(AsAbsl(token));
  if (it == config_.vocab.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= id_limit() || !id_present_[id]) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::Tokenize(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (config_.ignore_merges) {
    if (auto it = config_.vocab.find(AsAbsl(word)); it != config_.vocab.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() < kMaxCachedWordBytes;
  CacheShard& shard = cache_[absl::Hash<absl::string_view>{}(AsAbsl(word)) % kCacheShards];
  if (cacheable) {
    std::shared_lock lock(shard.mu);
    if (auto it = shard.words.find(AsAbsl(word)); it != shard.words.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t start = ids->size();
  MergeWord(word, ids);
  if (cacheable) {
    std::unique_lock lock(shard.mu);
    if (shard.words.size() < kCacheCapacityPerShard) {
      shard.words.try_emplace(std::string(word), ids->begin() + start, ids->end());
    }
  }
}

void BpeModel::MergeWord(std::string_view w, std::vector<int32_t>* ids) const {
  std::vector<Symbol> symbols;
  symbols.reserve(w.size());
  // A pending run of unknown characters: its id (-1 when none) and byte length.
  int32_t unk_id = -1;
  size_t unk_len = 0;
  std::string buffer;
  size_t i = 0;
  while (i < w.size()) {
    const size_t n = std::min(Utf8SequenceLength(w[i]), w.size() - i);
    const size_t end = i + n;
    std::string_view s = w.substr(i, n);
    if (config_.continuing_subword_prefix || config_.end_of_word_suffix) {
      buffer.clear();
      if (i > 0 && config_.continuing_subword_prefix) buffer = *config_.continuing_subword_prefix;
      buffer.append(s);
      if (end == w.size() && config_.end_of_word_suffix) buffer.append(*config_.end_of_word_suffix);
      s = buffer;
    }
    if (auto it = config_.vocab.find(AsAbsl(s)); it != config_.vocab.end()) {
      if (unk_id >= 0) {
        AddSymbol(&symbols, unk_id, unk_len);
        unk_id = -1;
      }
      AddSymbol(&symbols, it->second, n);
    } else {
      bool done = false;
      if (config_.byte_fallback) {
        bool all = true;
        for (unsigned char b : s) all = all && byte_ids_[b] >= 0;
        if (all) {
          // As HF: a pending unk run is not flushed here.
          for (unsigned char b : s) AddSymbol(&symbols, byte_ids_[b], 1);
          done = true;
        }
      }
      if (!done && unk_id_) {
        if (unk_id >= 0 && config_.fuse_unk) {
          unk_len += n;
        } else {
          if (unk_id >= 0) AddSymbol(&symbols, unk_id, unk_len);
          unk_id = *unk_id_;
          unk_len = n;
        }
      }
      // Without an unk token HF drops the character silently.
    }
    i = end;
  }
  if (unk_id >= 0) AddSymbol(&symbols, unk_id, unk_len);

  std::priority_queue<QueuedMerge> queue;
  auto find_merge = [this](int32_t a, int32_t b) -> const MergeResult* {
    auto it = merges_.find(PairKey(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (size_t k = 0; k + 1 < symbols.size(); ++k) {
    if (const MergeResult* m = find_merge(symbols[k].id, symbols[k + 1].id)) {
      queue.push(QueuedMerge{static_cast<int32_t>(k), m->rank, m->new_id});
    }
  }
  while (!queue.empty()) {
    const QueuedMerge top = queue.top();
    queue.pop();
    Symbol& cur = symbols[top.pos];
    if (cur.len == 0 || cur.next == -1) continue;
    const int32_t next_pos = cur.next;
    const Symbol right = symbols[next_pos];
    // Skip stale entries: the pair at this position changed since it was queued.
    const MergeResult* m = find_merge(cur.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;
    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    symbols[next_pos].len = 0;
    if (right.next > -1 && static_cast<size_t>(right.next) < symbols.size()) {
      symbols[right.next].prev = top.pos;
    }
    if (cur.prev >= 0) {
      if (const MergeResult* pm = find_merge(symbols[cur.prev].id, cur.id)) {
        queue.push(QueuedMerge{cur.prev, pm->rank, pm->new_id});
      }
    }
    if (cur.next > -1 && static_cast<size_t>(cur.next) < symbols.size()) {
      if (const MergeResult* nm = find_merge(cur.id, symbols[cur.next].id)) {
        queue.push(QueuedMerge{top.pos, nm->rank, nm->new_id});
      }
    }
  }
  for (const Symbol& s : symbols) {
    if (s.len != 0) ids->push_back(s.id);
  }
}

}  // namespace glassbox::tokenizer
