#include "server/service/scan_corpus.h"

#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/file.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace glassbox {
namespace {

namespace fs = std::filesystem;

// Collects documents' tokens into whole contexts as they come, so a large file is tokenised only
// as far as max_contexts needs.
class ContextBuilder {
 public:
  explicit ContextBuilder(const ContextOptions& o) : o_(o) {}

  bool full() const { return o_.max_contexts > 0 && contexts() >= o_.max_contexts; }
  int64_t contexts() const {
    return static_cast<int64_t>(ids_.size()) / o_.context_length;
  }

  absl::Status AddDocument(const std::vector<int32_t>& doc, absl::string_view where) {
    for (int32_t id : doc) {
      if (id < 0 || id >= o_.vocab_size)
        return absl::InvalidArgumentError(absl::StrCat(where, ": token id ", id,
                                                       " is outside the vocabulary [0, ",
                                                       o_.vocab_size, ")"));
    }
    // Documents are separated by BOS, except where a context's own opening BOS already
    // separates them (as sae_lens's token streams do).
    if (o_.bos && documents_++ > 0 && ids_.size() % o_.context_length != 0) Push(*o_.bos);
    for (int32_t id : doc) {
      if (full()) break;
      Push(id);
    }
    return absl::OkStatus();
  }

  // A context given whole (a row of a 2-D token array).
  absl::Status AddContext(const std::vector<int32_t>& row, absl::string_view where) {
    for (int32_t id : row) {
      if (id < 0 || id >= o_.vocab_size)
        return absl::InvalidArgumentError(absl::StrCat(where, ": token id ", id,
                                                       " is outside the vocabulary [0, ",
                                                       o_.vocab_size, ")"));
    }
    ids_.insert(ids_.end(), row.begin(), row.end());
    return absl::OkStatus();
  }

  absl::StatusOr<Tensor> Finish(absl::string_view what) {
    ids_.resize(contexts() * o_.context_length);  // a partial last context is dropped
    if (ids_.empty())
      return absl::InvalidArgumentError(absl::StrCat(
          what, " gives no whole context of ", o_.context_length,
          " tokens: send more text or a shorter context_length"));
    return Tensor::FromHost(std::span<const int32_t>(ids_), {contexts(), o_.context_length});
  }

 private:
  // The stream of tokens; with BOS every context opens with it, so the stream fills the rest.
  void Push(int32_t id) {
    if (o_.bos && ids_.size() % o_.context_length == 0) ids_.push_back(*o_.bos);
    ids_.push_back(id);
  }

  const ContextOptions& o_;
  std::vector<int32_t> ids_;
  int64_t documents_ = 0;
};

absl::StatusOr<std::vector<int32_t>> EncodeText(const Tokenizer* tokenizer, absl::string_view text,
                                                absl::string_view where) {
  if (tokenizer == nullptr)
    return absl::FailedPreconditionError(
        "the model has no tokenizer: send the corpus as token ids (.npy or token_sequences)");
  auto ids = tokenizer->Encode(std::string_view(text.data(), text.size()), {.add_special_tokens = false, .prepend_bos = false});
  if (!ids.ok())
    return absl::Status(ids.status().code(), absl::StrCat(where, ": ", ids.status().message()));
  return ids;
}

// Token ids from a .npy image: int32 or int64, C order, 1-D (a stream) or 2-D (contexts).
absl::StatusOr<std::pair<std::vector<int64_t>, std::vector<int32_t>>> ParseNpyIds(
    const std::string& bytes, absl::string_view label) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(label, " is not a usable .npy of token ids: ", why));
  };
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0) return bad("no .npy magic");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len, offset;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | static_cast<unsigned char>(bytes[9]) << 8;
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return bad("truncated header");
    uint32_t len;
    std::memcpy(&len, bytes.data() + 8, 4);
    header_len = len, offset = 12;
  } else {
    return bad(absl::StrCat("format version ", major));
  }
  if (offset + header_len > bytes.size()) return bad("truncated header");
  const std::string header = bytes.substr(offset, header_len);
  size_t width;
  if (absl::StrContains(header, "'<i4'")) {
    width = 4;
  } else if (absl::StrContains(header, "'<i8'")) {
    width = 8;
  } else {
    return bad("dtype must be int32 or int64 ('<i4' or '<i8')");
  }
  if (!absl::StrContains(header, "'fortran_order': False")) return bad("Fortran order");
  const size_t open = header.find("'shape': ("), close = header.find(')', open);
  if (open == std::string::npos || close == std::string::npos) return bad("no shape");
  std::vector<int64_t> shape;
  for (absl::string_view part : absl::StrSplit(
           absl::string_view(header).substr(open + 10, close - open - 10), ',', absl::SkipWhitespace())) {
    int64_t d;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &d) || d < 0) return bad("bad shape");
    shape.push_back(d);
  }
  if (shape.empty() || shape.size() > 2) return bad("shape must be 1-D or 2-D");
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const size_t data = offset + header_len;
  if (bytes.size() - data != static_cast<size_t>(n) * width)
    return bad(absl::StrCat("the data holds ", bytes.size() - data, " bytes, the shape needs ",
                            n * static_cast<int64_t>(width)));
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) {
    int64_t v;
    if (width == 4) {
      int32_t v32;
      std::memcpy(&v32, bytes.data() + data + i * 4, 4);
      v = v32;
    } else {
      std::memcpy(&v, bytes.data() + data + i * 8, 8);
    }
    if (v < INT32_MIN || v > INT32_MAX) return bad(absl::StrCat("id ", v, " does not fit int32"));
    ids[i] = static_cast<int32_t>(v);
  }
  return std::pair{shape, ids};
}

}  // namespace

absl::StatusOr<fs::path> ResolveCorpusPath(const std::string& corpus_dir,
                                           const std::string& relative) {
  if (corpus_dir.empty())
    return absl::FailedPreconditionError(
        "this server reads no corpus files (start glassboxd with --corpus_dir); upload the "
        "documents in ScanCorpus.documents instead");
  const fs::path rel(relative);
  if (relative.empty() || rel.is_absolute())
    return absl::InvalidArgumentError(absl::StrCat(
        "corpus path \"", relative, "\" must be relative to the server's corpus directory"));
  for (const fs::path& part : rel) {
    if (part == "..")
      return absl::InvalidArgumentError(
          absl::StrCat("corpus path \"", relative, "\" may not contain \"..\""));
  }
  std::error_code error;
  const fs::path root = fs::canonical(corpus_dir, error);
  if (error)
    return absl::FailedPreconditionError(
        absl::StrCat("the server's corpus directory cannot be read: ", error.message()));
  const fs::path real = fs::canonical(root / rel, error);
  if (error) return absl::NotFoundError(absl::StrCat("no corpus file \"", relative, "\""));
  auto [root_end, real_it] = std::mismatch(root.begin(), root.end(), real.begin(), real.end());
  if (root_end != root.end())
    return absl::InvalidArgumentError(absl::StrCat(
        "corpus path \"", relative, "\" leads outside the corpus directory (through a symlink)"));
  if (!fs::is_regular_file(real, error))
    return absl::InvalidArgumentError(absl::StrCat("corpus path \"", relative, "\" is not a file"));
  return real;
}

absl::StatusOr<Tensor> BuildContexts(const pb::ScanCorpus& corpus, const std::string& corpus_dir,
                                     const Tokenizer* tokenizer, const ContextOptions& options) {
  if (options.context_length < (options.bos ? 2 : 1))
    return absl::InvalidArgumentError("context_length is too short to hold a token after BOS");
  ContextBuilder builder(options);
  if (corpus.has_documents()) {
    const pb::ScanDocuments& docs = corpus.documents();
    for (int i = 0; i < docs.texts_size() && !builder.full(); ++i) {
      const std::string where = absl::StrCat("documents.texts[", i, "]");
      GB_ASSIGN_OR_RETURN(std::vector<int32_t> ids, EncodeText(tokenizer, docs.texts(i), where));
      GB_RETURN_IF_ERROR(builder.AddDocument(ids, where));
    }
    for (int i = 0; i < docs.token_sequences_size() && !builder.full(); ++i) {
      const auto& seq = docs.token_sequences(i).ids();
      GB_RETURN_IF_ERROR(builder.AddDocument(std::vector<int32_t>(seq.begin(), seq.end()),
                                             absl::StrCat("documents.token_sequences[", i, "]")));
    }
    return builder.Finish("the uploaded corpus");
  }
  if (corpus.path().empty())
    return absl::InvalidArgumentError("the corpus needs a path (under --corpus_dir) or documents");
  GB_ASSIGN_OR_RETURN(fs::path path, ResolveCorpusPath(corpus_dir, corpus.path()));
  GB_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
  const std::string label = absl::StrCat("corpus \"", corpus.path(), "\"");
  const std::string ext = path.extension().string();
  if (ext == ".npy") {
    GB_ASSIGN_OR_RETURN(auto array, ParseNpyIds(bytes, label));
    const auto& [shape, ids] = array;
    if (shape.size() == 1) {
      GB_RETURN_IF_ERROR(builder.AddDocument(ids, label));
    } else {
      if (shape[1] != options.context_length)
        return absl::InvalidArgumentError(absl::StrCat(
            label, " holds contexts of ", shape[1], " tokens; context_length is ",
            options.context_length));
      for (int64_t r = 0; r < shape[0] && !builder.full(); ++r) {
        GB_RETURN_IF_ERROR(builder.AddContext(
            std::vector<int32_t>(ids.begin() + r * shape[1], ids.begin() + (r + 1) * shape[1]),
            absl::StrCat(label, " row ", r)));
      }
    }
    return builder.Finish(label);
  }
  const bool jsonl = ext == ".jsonl";
  if (!jsonl && ext != ".txt")
    return absl::InvalidArgumentError(absl::StrCat(
        label, ": the corpus must be .jsonl (a JSON object per line), .txt (a document per "
               "line) or .npy (token ids)"));
  const std::string field = corpus.text_field().empty() ? "text" : corpus.text_field();
  int64_t line_number = 0;
  for (absl::string_view line : absl::StrSplit(bytes, '\n')) {
    ++line_number;
    if (builder.full()) break;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    const std::string where = absl::StrCat(label, " line ", line_number);
    std::string text;
    if (jsonl) {
      nlohmann::json object = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (object.is_discarded() || !object.is_object())
        return absl::InvalidArgumentError(absl::StrCat(where, " is not a JSON object"));
      auto it = object.find(field);
      if (it == object.end() || !it->is_string())
        return absl::InvalidArgumentError(
            absl::StrCat(where, " has no string field \"", field, "\" (ScanCorpus.text_field)"));
      text = it->get<std::string>();
    } else {
      text = std::string(absl::StripSuffix(line, "\r"));
    }
    GB_ASSIGN_OR_RETURN(std::vector<int32_t> ids, EncodeText(tokenizer, text, where));
    GB_RETURN_IF_ERROR(builder.AddDocument(ids, where));
  }
  return builder.Finish(label);
}

}  // namespace glassbox
