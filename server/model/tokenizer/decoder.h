// Decoders of tokenizer.json: they turn the token strings of a sequence of ids back into text.
// Like HF's decode_chain, each step maps a list of strings to a list of strings; the final text is
// their concatenation.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace glassbox::tokenizer {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void DecodeChain(std::vector<std::string>* tokens) const = 0;
};

// Supported: ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace, BPEDecoder, Sequence.
// May throw nlohmann::json::exception on malformed fields.
absl::StatusOr<std::unique_ptr<Decoder>> DecoderFromJson(const nlohmann::json& j);

// GPT-2's decoder, for vocab.json + merges.txt.
std::unique_ptr<Decoder> MakeByteLevelDecoder();

}  // namespace glassbox::tokenizer
