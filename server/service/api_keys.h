// API keys (glassboxd --api_keys FILE): who may call the service, whether a key is an admin's,
// and each key's quotas. The store parses the keys file, finds the key a call presents, and
// re-reads the file on SIGHUP; lookups and reloads may run on any thread at once.
//
// The file is JSON (docs/service.md, "API keys, quotas and isolation"):
//   {"keys": [{"name": "alice", "key": "<secret>", "admin": false,
//              "quota": {"max_concurrent_runs": 4, "requests_per_minute": 600, ...}}]}
// Secrets never leave this file's types: an ApiKey, which the rest of the service sees, has none,
// and no message quotes one.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace glassbox {

// Each absent field is unlimited. The names are the JSON fields'.
struct ApiKeyQuota {
  std::optional<int64_t> max_concurrent_runs;  // device requests in flight at once
  std::optional<int64_t> requests_per_minute;  // every RPC, a token bucket
  std::optional<int64_t> tokens_per_day;       // padded tokens, a rolling 24 h window
  std::optional<int64_t> max_response_bytes;   // per request, below --max_response_bytes
  std::optional<int64_t> cache_bytes;          // the key's cached runs, below --cache_max_bytes
};

// A caller as the service knows it. `name` owns the key's cached runs and quota counters, so a
// key whose secret is rotated (same name, new key) keeps both.
struct ApiKey {
  std::string name;
  bool admin = false;
  ApiKeyQuota quota;
};

// One entry of a keys file, secret included.
struct ApiKeyEntry {
  ApiKey key;
  std::string secret;
};

// Secrets are 1 to kMaxSecretBytes visible ASCII characters (what an HTTP/2 header carries
// unchanged); names are 1 to 64 of [A-Za-z0-9_.-], since they appear in cached-run addresses
// ("OWNER/NAME") and messages.
inline constexpr size_t kMaxSecretBytes = 256;

// INVALID_ARGUMENT naming `source` (the file), the entry's index and the field: a syntax error,
// a missing or mistyped field, an unknown field (a misspelt quota would otherwise be unlimited),
// a negative quota, an empty or malformed key or name, a name or key given twice.
absl::StatusOr<std::vector<ApiKeyEntry>> ParseApiKeys(absl::string_view json,
                                                      absl::string_view source);

// The key of an "authorization" metadata value "Bearer <key>" (the scheme is case-insensitive,
// as in RFC 6750); nullopt when the value has another shape. The result points into `header`.
std::optional<absl::string_view> BearerToken(absl::string_view header);

class ApiKeyStore {
 public:
  // Reads and parses `path`; the error says why (the file's name, the entry, the field).
  static absl::StatusOr<std::unique_ptr<ApiKeyStore>> Load(std::string path);
  // A store over entries given directly (tests); Reload re-reads nothing and returns OK.
  explicit ApiKeyStore(std::vector<ApiKeyEntry> entries);

  // Re-reads the file. On any error the keys in use stay and the error says why.
  absl::Status Reload();
  // Replaces the keys (what Reload does with a file that parsed).
  void Replace(std::vector<ApiKeyEntry> entries);

  // The key whose secret is `secret`, or null. The time it takes depends on the number of keys,
  // never on how much of `secret` matches any of them: every key is compared, each over
  // kMaxSecretBytes bytes, without an early exit.
  std::shared_ptr<const ApiKey> Find(absl::string_view secret) const;

  const std::string& path() const { return path_; }
  // How many keys there are, and how many of them are admins'.
  size_t size() const;
  size_t admins() const;

 private:
  // A secret zero-padded to a fixed size, so that comparing two takes the same steps whatever
  // their lengths.
  struct PaddedSecret {
    std::array<unsigned char, kMaxSecretBytes> bytes{};
    size_t length = 0;
  };
  struct Table {
    std::vector<PaddedSecret> secrets;
    std::vector<std::shared_ptr<const ApiKey>> keys;  // keys[i] has secrets[i]
  };
  static std::shared_ptr<const Table> MakeTable(std::vector<ApiKeyEntry> entries);

  ApiKeyStore(std::string path, std::vector<ApiKeyEntry> entries);

  const std::string path_;  // empty: built from entries
  mutable absl::Mutex mu_;
  std::shared_ptr<const Table> table_ ABSL_GUARDED_BY(mu_);
};

}  // namespace glassbox
