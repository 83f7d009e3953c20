// Token ids as the commands print them: 15496 'Hello'.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "client/cpp/glassbox_client.h"

namespace glassbox::cli {

// Python-style quoting of a token string for display: 'Hello', ' world\n'.
std::string QuoteToken(const std::string& token);

// Each id decoded alone, when the model has a tokenizer; empty otherwise.
absl::StatusOr<std::map<int32_t, std::string>> TokenStrings(client::Client& client,
                                                            const std::string& model,
                                                            const std::set<int32_t>& ids);

// "15496 'Hello'", or "15496" when `strings` lacks the id.
std::string TokenLabel(int32_t id, const std::map<int32_t, std::string>& strings);

}  // namespace glassbox::cli
