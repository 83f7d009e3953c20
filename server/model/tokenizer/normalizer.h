// Normalizers of tokenizer.json. HF applies the normalizer to each piece of text left between
// added tokens, so Normalize() sees one such piece at a time.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace glassbox::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void Normalize(std::string* text) const = 0;
};

// Supported: Sequence, Prepend, Replace, Strip, NFC, NFD, NFKC, NFKD (with HF's Unicode 9.0
// tables). Others (Lowercase, BertNormalizer, Precompiled, ...) are rejected with UNIMPLEMENTED naming the type, so that a
// tokenizer is never loaded with a silently different normalisation. May throw
// nlohmann::json::exception on malformed fields.
absl::StatusOr<std::unique_ptr<Normalizer>> NormalizerFromJson(const nlohmann::json& j);

}  // namespace glassbox::tokenizer
