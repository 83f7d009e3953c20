#include "server/model/tokenizer/post_processor.h"

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace glassbox::tokenizer {
namespace {

class IdentityPostProcessor : public PostProcessor {
 public:
  void Process(std::vector<int32_t>*) const override {}
};

class SequencePostProcessor : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> parts)
      : parts_(std::move(parts)) {}
  void Process(std::vector<int32_t>* ids) const override {
    for (const auto& p : parts_) p->Process(ids);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

absl::StatusOr<std::unique_ptr<PostProcessor>> TemplateFromJson(const nlohmann::json& j) {
  // special_tokens: {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}, ...}
  const nlohmann::json& specials = j.value("special_tokens", nlohmann::json::object());
  std::vector<int32_t> prefix, suffix;
  bool seen_sequence = false;
  for (const auto& piece : j.at("single")) {
    if (piece.contains("Sequence")) {
      if (seen_sequence) {
        return absl::InvalidArgumentError("TemplateProcessing single template has two sequences");
      }
      seen_sequence = true;
      continue;
    }
    if (!piece.contains("SpecialToken")) {
      return absl::InvalidArgumentError(absl::StrCat("bad template piece ", piece.dump()));
    }
    const std::string name = piece.at("SpecialToken").at("id").get<std::string>();
    if (!specials.contains(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("template uses special token '", name, "' missing from special_tokens"));
    }
    std::vector<int32_t>& target = seen_sequence ? suffix : prefix;
    for (const auto& id : specials.at(name).at("ids")) target.push_back(id.get<int32_t>());
  }
  if (!seen_sequence) {
    return absl::InvalidArgumentError("TemplateProcessing single template has no sequence");
  }
  return std::make_unique<AffixPostProcessor>(std::move(prefix), std::move(suffix));
}

}  // namespace

void AffixPostProcessor::Process(std::vector<int32_t>* ids) const {
  ids->insert(ids->begin(), prefix_.begin(), prefix_.end());
  ids->insert(ids->end(), suffix_.begin(), suffix_.end());
}

absl::StatusOr<std::unique_ptr<PostProcessor>> PostProcessorFromJson(const nlohmann::json& j) {
  const std::string type = j.at("type").get<std::string>();
  if (type == "TemplateProcessing") return TemplateFromJson(j);
  if (type == "ByteLevel") return std::make_unique<IdentityPostProcessor>();
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    // "cls": ["[CLS]", 101], "sep": ["[SEP]", 102]
    const int32_t cls = j.at("cls").at(1).get<int32_t>();
    const int32_t sep = j.at("sep").at(1).get<int32_t>();
    return std::make_unique<AffixPostProcessor>(std::vector<int32_t>{cls},
                                                std::vector<int32_t>{sep});
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PostProcessor>> parts;
    for (const auto& item : j.at("processors")) {
      GB_ASSIGN_OR_RETURN(auto part, PostProcessorFromJson(item));
      parts.push_back(std::move(part));
    }
    return std::make_unique<SequencePostProcessor>(std::move(parts));
  }
  return absl::UnimplementedError(absl::StrCat("unsupported post_processor type '", type, "'"));
}

}  // namespace glassbox::tokenizer
