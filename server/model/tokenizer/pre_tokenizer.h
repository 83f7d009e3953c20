// Pre-tokenizers of tokenizer.json: they split normalized text into the pre-tokens that the BPE
// model encodes one at a time.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace glassbox::tokenizer {

struct PreToken {
  std::string text;
  // Whether the piece begins at offset 0 of the original input. HF's Metaspace with
  // prepend_scheme "first" prepends only there.
  bool at_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their splits; empty splits are dropped, as in HF.
  virtual void PreTokenize(std::vector<PreToken>* pieces) const = 0;
};

// Supported: ByteLevel, Split, Metaspace, Digits, Sequence. Others are rejected with
// UNIMPLEMENTED naming the type. May throw nlohmann::json::exception on malformed fields.
absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizerFromJson(const nlohmann::json& j);

// GPT-2's pre-tokenizer (ByteLevel, regex on, no prefix space): for vocab.json + merges.txt.
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeByteLevelPreTokenizer(bool add_prefix_space,
                                                                        bool use_regex);

}  // namespace glassbox::tokenizer
