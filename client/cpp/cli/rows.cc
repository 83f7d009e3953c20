#include "client/cpp/cli/rows.h"

#include <optional>

#include "absl/strings/str_format.h"
#include "client/cpp/cli/errors.h"

namespace glassbox::cli {

absl::StatusOr<std::string> RequiredModel(const CommandLine& line) {
  const std::optional<std::string> model = line.raw.Value("model");
  if (!model.has_value() || model->empty()) {
    return UsageError(absl::StrFormat("%s needs --model MODEL", line.command));
  }
  return *model;
}

absl::Status ParseRowInputs(const CommandLine& line, RowFlags flags,
                            glassbox::v1::Inputs& inputs, bool bos_elsewhere) {
  const std::vector<std::string> texts = line.raw.Values(flags.text);
  const std::vector<std::string> token_rows = line.raw.Values(flags.tokens);
  if (texts.empty() == token_rows.empty()) {
    return UsageError(absl::StrFormat(
        "%s needs inputs as --%s TEXT or as --%s IDS (either may be repeated, one row each), "
        "not both",
        line.command, flags.text, flags.tokens));
  }
  for (const std::string& text : texts) inputs.add_texts(text);
  for (const std::string& row : token_rows) {
    GB_ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseIntList(flags.tokens, {row}, 0));
    if (ids.empty()) {
      return UsageError(absl::StrFormat("--%s: a row needs at least one token id", flags.tokens));
    }
    inputs.add_token_ids()->mutable_ids()->Add(ids.begin(), ids.end());
  }
  if (std::optional<std::string> bos = line.raw.Value("prepend_bos")) {
    if (texts.empty()) {
      if (bos_elsewhere) return absl::OkStatus();
      return UsageError(absl::StrFormat("--prepend_bos applies to --%s inputs only", flags.text));
    }
    inputs.set_prepend_bos(*bos == "true");
  }
  return absl::OkStatus();
}

absl::StatusOr<TokenRows> ResolveRows(client::Client& client, const std::string& model,
                                      glassbox::v1::Inputs& inputs) {
  TokenRows rows;
  for (const auto& row : inputs.token_ids()) rows.emplace_back(row.ids().begin(), row.ids().end());
  if (inputs.texts_size() == 0) return rows;
  for (const std::string& text : inputs.texts()) {
    glassbox::v1::TokenizeRequest request;
    request.set_model(model);
    request.set_text(text);
    if (inputs.has_prepend_bos()) request.set_prepend_bos(inputs.prepend_bos());
    GB_ASSIGN_OR_RETURN(glassbox::v1::TokenizeResponse response, client.Tokenize(request));
    rows.emplace_back(response.ids().begin(), response.ids().end());
  }
  inputs.clear_texts();
  inputs.clear_prepend_bos();
  for (const auto& row : rows) inputs.add_token_ids()->mutable_ids()->Add(row.begin(), row.end());
  return rows;
}

absl::StatusOr<std::vector<int64_t>> RowPositions(const TokenRows& rows, int32_t position) {
  std::vector<int64_t> positions;
  for (size_t b = 0; b < rows.size(); ++b) {
    const int64_t length = static_cast<int64_t>(rows[b].size());
    const int64_t index = position < 0 ? length + position : position;
    if (index < 0 || index >= length) {
      return MarkUsage(absl::InvalidArgumentError(absl::StrFormat(
          "--position %d is outside row %d (%d tokens)", position, b, length)));
    }
    positions.push_back(index);
  }
  return positions;
}

absl::Status CheckResponseRows(int64_t response_rows, size_t input_rows) {
  if (response_rows == static_cast<int64_t>(input_rows)) return absl::OkStatus();
  return absl::InternalError(
      absl::StrFormat("malformed response: %d rows for %d inputs", response_rows, input_rows));
}

}  // namespace glassbox::cli
