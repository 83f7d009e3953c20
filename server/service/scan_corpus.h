// A scan's corpus as contexts of one length: files confined to the server's corpus directory
// (jsonl, plain text, .npy token ids) or documents uploaded in the request, tokenised with the
// model's tokenizer and cut the way sae_lens's token streams are (docs/scans.md, "The corpus").
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "glassbox/v1/glassbox.pb.h"
#include "kernels/tensor.h"
#include "server/model/tokenizer/tokenizer.h"

namespace glassbox {

namespace pb = ::glassbox::v1;

// `relative` inside `corpus_dir`: FAILED_PRECONDITION when the server has no corpus directory,
// INVALID_ARGUMENT for an absolute path, a ".." component or a path whose real location
// (symlinks followed) is outside the directory, NOT_FOUND when nothing is there.
absl::StatusOr<std::filesystem::path> ResolveCorpusPath(const std::string& corpus_dir,
                                                        const std::string& relative);

struct ContextOptions {
  int32_t context_length = 64;
  // Each context starts with it and it joins documents; nullopt: contexts are raw token runs.
  std::optional<int32_t> bos;
  int32_t vocab_size = 0;     // every id must be below it
  int64_t max_contexts = 0;   // 0: all
};

// The corpus as [contexts, context_length] i32. `tokenizer` may be null when the corpus is token
// ids. INVALID_ARGUMENT names the line or array at fault (not UTF-8, no text field, an id out of
// range, a corpus that gives no whole context).
absl::StatusOr<Tensor> BuildContexts(const pb::ScanCorpus& corpus, const std::string& corpus_dir,
                                     const Tokenizer* tokenizer, const ContextOptions& options);

}  // namespace glassbox
