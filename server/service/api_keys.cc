#include "server/service/api_keys.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/file.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace glassbox {
namespace {

using Json = nlohmann::json;

constexpr size_t kMaxNameBytes = 64;

// A quota field: its JSON name, where it goes, and its least allowed value.
struct QuotaField {
  const char* name;
  std::optional<int64_t> ApiKeyQuota::*field;
  int64_t min;
};
constexpr QuotaField kQuotaFields[] = {
    {"max_concurrent_runs", &ApiKeyQuota::max_concurrent_runs, 1},
    {"requests_per_minute", &ApiKeyQuota::requests_per_minute, 1},
    {"tokens_per_day", &ApiKeyQuota::tokens_per_day, 1},
    {"max_response_bytes", &ApiKeyQuota::max_response_bytes, 1},
    // 0: the key may not keep runs at all.
    {"cache_bytes", &ApiKeyQuota::cache_bytes, 0},
};

bool ValidName(absl::string_view name) {
  return !name.empty() && name.size() <= kMaxNameBytes &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' ||
                  c == '-';
         });
}

bool ValidSecret(absl::string_view secret) {
  return !secret.empty() && secret.size() <= kMaxSecretBytes &&
         std::all_of(secret.begin(), secret.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

// Fields of `object` that are not in `known`, as an error naming them at `where`.
absl::Status CheckFields(const Json& object, const std::vector<std::string>& known,
                         const std::string& where) {
  for (const auto& [field, value] : object.items()) {
    if (std::find(known.begin(), known.end(), field) == known.end()) {
      return absl::InvalidArgumentError(absl::StrCat(where, " has an unknown field \"", field,
                                                     "\" (known: ", absl::StrJoin(known, ", "),
                                                     ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ApiKeyQuota> ParseQuota(const Json& quota, const std::string& where) {
  if (!quota.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, " must be an object, got ", quota.type_name()));
  }
  std::vector<std::string> known;
  for (const QuotaField& f : kQuotaFields) known.push_back(f.name);
  GB_RETURN_IF_ERROR(CheckFields(quota, known, where));
  ApiKeyQuota parsed;
  for (const QuotaField& f : kQuotaFields) {
    if (!quota.contains(f.name)) continue;
    const Json& value = quota[f.name];
    const std::string field = absl::StrCat(where, ".", f.name);
    const bool fits =
        value.is_number_integer() &&
        (!value.is_number_unsigned() ||
         value.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
    if (!fits || value.get<int64_t>() < f.min) {
      return absl::InvalidArgumentError(absl::StrCat(field, " must be an integer >= ", f.min,
                                                     " (leave it out for no limit), got ",
                                                     value.dump()));
    }
    parsed.*f.field = value.get<int64_t>();
  }
  return parsed;
}

absl::StatusOr<ApiKeyEntry> ParseEntry(const Json& entry, const std::string& where) {
  if (!entry.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where,
                                                   " must be an object {\"name\", \"key\", "
                                                   "\"admin\", \"quota\"}, got ",
                                                   entry.type_name()));
  }
  GB_RETURN_IF_ERROR(CheckFields(entry, {"name", "key", "admin", "quota"}, where));
  ApiKeyEntry parsed;
  if (!entry.contains("name") || !entry["name"].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".name is missing or not a string"));
  }
  parsed.key.name = entry["name"].get<std::string>();
  if (!ValidName(parsed.key.name)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".name \"", absl::CEscape(parsed.key.name), "\": use 1 to ",
                     kMaxNameBytes, " letters, digits, '_', '.' or '-'"));
  }
  const std::string named = absl::StrCat(where, " (\"", parsed.key.name, "\")");
  if (!entry.contains("key") || !entry["key"].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(named, ".key is missing or not a string"));
  }
  parsed.secret = entry["key"].get<std::string>();
  if (parsed.secret.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(named, ".key is empty"));
  }
  if (!ValidSecret(parsed.secret)) {
    // The message describes the key but never quotes it.
    return absl::InvalidArgumentError(
        absl::StrCat(named, ".key must be 1 to ", kMaxSecretBytes,
                     " visible ASCII characters (no spaces or control characters); it has ",
                     parsed.secret.size(), " bytes"));
  }
  if (entry.contains("admin")) {
    if (!entry["admin"].is_boolean()) {
      return absl::InvalidArgumentError(
          absl::StrCat(named, ".admin must be true or false, got ", entry["admin"].type_name()));
    }
    parsed.key.admin = entry["admin"].get<bool>();
  }
  if (entry.contains("quota")) {
    GB_ASSIGN_OR_RETURN(parsed.key.quota, ParseQuota(entry["quota"], named + ".quota"));
  }
  return parsed;
}

}  // namespace

absl::StatusOr<std::vector<ApiKeyEntry>> ParseApiKeys(absl::string_view text,
                                                      absl::string_view source) {
  Json json;
  try {
    json = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/true);
  } catch (const Json::parse_error& e) {
    // nlohmann's own message quotes the text around the error, which may be a secret.
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": not valid JSON (syntax error at byte ", e.byte, ")"));
  }
  if (!json.is_object() || !json.contains("keys") || !json["keys"].is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source,
        ": expected {\"keys\": [{\"name\": ..., \"key\": ..., \"admin\": ..., \"quota\": "
        "{...}}, ...]}"));
  }
  GB_RETURN_IF_ERROR(CheckFields(json, {"keys"}, std::string(source)));
  std::vector<ApiKeyEntry> entries;
  std::map<std::string, size_t> names, secrets;  // -> index of the first entry with it
  const Json& keys = json["keys"];
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::string where = absl::StrCat(source, ": keys[", i, "]");
    GB_ASSIGN_OR_RETURN(ApiKeyEntry entry, ParseEntry(keys[i], where));
    if (auto [it, fresh] = names.emplace(entry.key.name, i); !fresh) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".name \"", entry.key.name,
                                                     "\" is also keys[", it->second,
                                                     "]'s; every name must be different"));
    }
    if (auto [it, fresh] = secrets.emplace(entry.secret, i); !fresh) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, " (\"", entry.key.name, "\").key is also keys[", it->second, "]'s (\"",
          entries[it->second].key.name, "\"); every key must be different"));
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

std::optional<absl::string_view> BearerToken(absl::string_view header) {
  header = absl::StripAsciiWhitespace(header);
  constexpr absl::string_view kScheme = "bearer";
  if (header.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(header.substr(0, kScheme.size()), kScheme) ||
      header[kScheme.size()] != ' ') {
    return std::nullopt;
  }
  absl::string_view token = absl::StripLeadingAsciiWhitespace(header.substr(kScheme.size()));
  if (token.empty() || std::any_of(token.begin(), token.end(), absl::ascii_isspace)) {
    return std::nullopt;
  }
  return token;
}

absl::StatusOr<std::unique_ptr<ApiKeyStore>> ApiKeyStore::Load(std::string path) {
  GB_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  GB_ASSIGN_OR_RETURN(std::vector<ApiKeyEntry> entries, ParseApiKeys(text, path));
  return std::unique_ptr<ApiKeyStore>(new ApiKeyStore(std::move(path), std::move(entries)));
}

ApiKeyStore::ApiKeyStore(std::vector<ApiKeyEntry> entries) : ApiKeyStore("", std::move(entries)) {}

ApiKeyStore::ApiKeyStore(std::string path, std::vector<ApiKeyEntry> entries)
    : path_(std::move(path)), table_(MakeTable(std::move(entries))) {}

std::shared_ptr<const ApiKeyStore::Table> ApiKeyStore::MakeTable(std::vector<ApiKeyEntry> entries) {
  auto table = std::make_shared<Table>();
  for (ApiKeyEntry& entry : entries) {
    PaddedSecret padded;
    std::memcpy(padded.bytes.data(), entry.secret.data(), entry.secret.size());
    padded.length = entry.secret.size();
    table->secrets.push_back(padded);
    table->keys.push_back(std::make_shared<const ApiKey>(std::move(entry.key)));
  }
  return table;
}

absl::Status ApiKeyStore::Reload() {
  if (path_.empty()) return absl::OkStatus();
  GB_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path_));
  GB_ASSIGN_OR_RETURN(std::vector<ApiKeyEntry> entries, ParseApiKeys(text, path_));
  Replace(std::move(entries));
  return absl::OkStatus();
}

void ApiKeyStore::Replace(std::vector<ApiKeyEntry> entries) {
  std::shared_ptr<const Table> table = MakeTable(std::move(entries));
  absl::MutexLock lock(&mu_);
  table_.swap(table);
}

std::shared_ptr<const ApiKey> ApiKeyStore::Find(absl::string_view secret) const {
  std::shared_ptr<const Table> table;
  {
    absl::ReaderMutexLock lock(&mu_);
    table = table_;
  }
  PaddedSecret presented;
  std::memcpy(presented.bytes.data(), secret.data(), std::min(secret.size(), kMaxSecretBytes));
  presented.length = secret.size();  // a longer one differs from every key in length
  size_t found = 0;                  // 1 + the index of the key that matched; 0: none
  for (size_t i = 0; i < table->secrets.size(); ++i) {
    const PaddedSecret& stored = table->secrets[i];
    uint64_t diff = static_cast<uint64_t>(stored.length ^ presented.length);
    for (size_t j = 0; j < kMaxSecretBytes; ++j) diff |= stored.bytes[j] ^ presented.bytes[j];
    // Keeps the compiler from turning the loop above into one that stops at the first
    // difference, or the selection below into a branch.
    asm volatile("" : "+r"(diff));
    const uint64_t equal = ((diff | (0 - diff)) >> 63) ^ 1;  // 1 when diff == 0, else 0
    found |= static_cast<size_t>(0 - equal) & (i + 1);
  }
  return found == 0 ? nullptr : table->keys[found - 1];
}

size_t ApiKeyStore::size() const {
  absl::ReaderMutexLock lock(&mu_);
  return table_->keys.size();
}

size_t ApiKeyStore::admins() const {
  absl::ReaderMutexLock lock(&mu_);
  return std::count_if(table_->keys.begin(), table_->keys.end(),
                       [](const auto& key) { return key->admin; });
}

}  // namespace glassbox
