#include "client/cpp/cli/tokens.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace glassbox::cli {

std::string QuoteToken(const std::string& token) {
  std::string quoted = "'";
  for (char c : token) {
    const unsigned char u = static_cast<unsigned char>(c);
    switch (c) {
      case '\\':
        quoted += "\\\\";
        break;
      case '\'':
        quoted += "\\'";
        break;
      case '\n':
        quoted += "\\n";
        break;
      case '\r':
        quoted += "\\r";
        break;
      case '\t':
        quoted += "\\t";
        break;
      default:
        if (u < 0x20 || u == 0x7f) {
          quoted += absl::StrFormat("\\x%02x", u);
        } else {
          quoted += c;  // printable ASCII and UTF-8 bytes as they are
        }
    }
  }
  quoted += "'";
  return quoted;
}

absl::StatusOr<std::map<int32_t, std::string>> TokenStrings(client::Client& client,
                                                            const std::string& model,
                                                            const std::set<int32_t>& ids) {
  std::map<int32_t, std::string> strings;
  if (ids.empty()) return strings;
  glassbox::v1::DetokenizeRequest request;
  request.set_model(model);
  request.mutable_ids()->Add(ids.begin(), ids.end());
  absl::StatusOr<glassbox::v1::DetokenizeResponse> response = client.Detokenize(request);
  if (!response.ok()) {
    if (response.status().code() == absl::StatusCode::kFailedPrecondition) return strings;
    return response.status();
  }
  if (response->str_tokens_size() != request.ids_size()) return strings;
  for (int i = 0; i < request.ids_size(); ++i) strings[request.ids(i)] = response->str_tokens(i);
  return strings;
}

std::string TokenLabel(int32_t id, const std::map<int32_t, std::string>& strings) {
  auto it = strings.find(id);
  return it == strings.end() ? absl::StrCat(id) : absl::StrCat(id, " ", QuoteToken(it->second));
}

}  // namespace glassbox::cli
