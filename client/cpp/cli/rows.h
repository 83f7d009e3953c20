// The rows a command runs on: the --model and the --text / --tokens rows on the command line,
// and once connected, every row's token ids and the position shown in each.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/status_macros.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/flags.h"
#include "client/cpp/glassbox_client.h"
#include "glassbox/v1/glassbox.pb.h"

namespace glassbox::cli {

// The row-input flags as the analyses take them (listed in the usage text with the run flags).
inline constexpr Flag kModelFlag = {"model", FlagKind::kValue};
inline constexpr Flag kTextFlag = {"text", FlagKind::kRepeated};
inline constexpr Flag kTokensFlag = {"tokens", FlagKind::kRepeated};
inline constexpr Flag kPrependBosFlag = {"prepend_bos", FlagKind::kBool};

// --model MODEL, which the command needs.
absl::StatusOr<std::string> RequiredModel(const CommandLine& line);

// The flags that give one batch of rows.
struct RowFlags {
  std::string_view text = "text";
  std::string_view tokens = "tokens";
};

// One batch of rows from --TEXT / --TOKENS (each repeatable, one row each, one kind).
// --prepend_bos applies when the rows are texts; with `bos_elsewhere` (another batch of the
// command has texts) it is no error when these are token ids.
absl::Status ParseRowInputs(const CommandLine& line, RowFlags flags,
                            glassbox::v1::Inputs& inputs, bool bos_elsewhere = false);

// --model and one batch of --text / --tokens rows, into a request with `model` and `inputs`.
template <typename Message>
absl::Status ParseModelAndRows(const CommandLine& line, Message& request) {
  GB_ASSIGN_OR_RETURN(std::string model, RequiredModel(line));
  request.set_model(model);
  return ParseRowInputs(line, {}, *request.mutable_inputs());
}

using TokenRows = std::vector<std::vector<int32_t>>;

// Every row's token ids: --tokens rows as given, --text rows tokenized by the server (with the
// same prepend_bos). `inputs` is rewritten to the token rows, so that what runs is what the
// output describes.
absl::StatusOr<TokenRows> ResolveRows(client::Client& client, const std::string& model,
                                      glassbox::v1::Inputs& inputs);

// Position `position` (negative counts from the end) of each row; a usage error (MarkUsage)
// when it is outside a row.
absl::StatusOr<std::vector<int64_t>> RowPositions(const TokenRows& rows, int32_t position);

// INTERNAL "malformed response" unless the response has a row per input.
absl::Status CheckResponseRows(int64_t response_rows, size_t input_rows);

}  // namespace glassbox::cli
