// Post-processors of tokenizer.json: they add the special tokens (BOS/EOS, [CLS]/[SEP]) around
// an encoded single sequence. HF runs them only when add_special_tokens is true; the ByteLevel
// one only trims offsets, so it leaves ids alone.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace glassbox::tokenizer {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void Process(std::vector<int32_t>* ids) const = 0;
};

// Wraps a single sequence as prefix + ids + suffix (TemplateProcessing's "single" template,
// BertProcessing, RobertaProcessing); what all single-sequence processors reduce to.
class AffixPostProcessor : public PostProcessor {
 public:
  AffixPostProcessor(std::vector<int32_t> prefix, std::vector<int32_t> suffix)
      : prefix_(std::move(prefix)), suffix_(std::move(suffix)) {}
  void Process(std::vector<int32_t>* ids) const override;

 private:
  std::vector<int32_t> prefix_;
  std::vector<int32_t> suffix_;
};

// Supported: TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence.
// May throw nlohmann::json::exception on malformed fields.
absl::StatusOr<std::unique_ptr<PostProcessor>> PostProcessorFromJson(const nlohmann::json& j);

}  // namespace glassbox::tokenizer
