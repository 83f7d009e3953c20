// The components a Tokenizer runs, in HF's order: added tokens, normalizer, pre-tokenizer, model,
// post-processor; and the decoder. Built by tokenizer_loader.cc.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "server/model/tokenizer/added_vocabulary.h"
#include "server/model/tokenizer/bpe_model.h"
#include "server/model/tokenizer/decoder.h"
#include "server/model/tokenizer/normalizer.h"
#include "server/model/tokenizer/post_processor.h"
#include "server/model/tokenizer/pre_tokenizer.h"

namespace glassbox::tokenizer {

struct TokenizerParts {
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<AddedVocabulary> added;
  std::unique_ptr<Normalizer> normalizer;         // May be null.
  std::unique_ptr<PreTokenizer> pre_tokenizer;    // May be null.
  std::unique_ptr<PostProcessor> post_processor;  // May be null.
  std::unique_ptr<Decoder> decoder;               // May be null: tokens are joined with spaces.
  std::optional<int32_t> bos_id;
  std::optional<int32_t> eos_id;
  std::optional<int32_t> pad_id;
  int32_t vocab_size = 0;
  bool post_processor_adds_bos = false;  // Whether add_special_tokens puts BOS first.
};

}  // namespace glassbox::tokenizer
