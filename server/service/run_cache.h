// Activations a Run asked the server to keep (RunRequest.keep) under a name, so that later runs
// can patch from them (INTERVENTION_PATCH_CACHED) without sending them back and forth.
//
// One cache is shared by every request, guarded by one mutex. Names, budgets (bytes and
// entries) and visibility are per owner: the name of the caller's API key, or "" for every
// client of a server without keys (one budget and one namespace, as before keys existed). An
// owner may be held to fewer bytes than the server's --cache_max_bytes (its key's cache_bytes
// quota), passed with each keep. Entries expire after their time-to-live; an
// expired entry is dropped at the next access to the cache (any call below), so its memory
// comes back as soon as anyone uses the cache. The clock is injectable for tests.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kernels/tensor.h"

namespace glassbox {

struct RunCacheLimits {
  int64_t max_bytes = int64_t{1} << 30;  // per owner
  int64_t max_entries = 64;              // per owner
  absl::Duration default_ttl = absl::Minutes(10);
  absl::Duration max_ttl = absl::Hours(24);
};

struct CachedRun {
  std::string owner;  // set by Put
  std::string name;
  std::string model;
  std::vector<int32_t> lengths;          // real tokens per row
  std::map<std::string, Tensor> values;  // hook name -> host f32 [batch, pos, ...], right-padded
  absl::Time created;
  absl::Time expires;
  int64_t nbytes() const;
};

class RunCache {
 public:
  using Clock = std::function<absl::Time()>;

  explicit RunCache(RunCacheLimits limits, Clock clock = &absl::Now)
      : limits_(limits), clock_(std::move(clock)) {}

  // INVALID_ARGUMENT for a name that is not [A-Za-z0-9_.-]{1,128} (':' separates CLI fields).
  static absl::Status ValidateName(absl::string_view name);
  // The time-to-live of a request's ttl_seconds (0 = the default); INVALID_ARGUMENT past max_ttl.
  absl::StatusOr<absl::Duration> TtlFor(int64_t ttl_seconds) const;

  // RESOURCE_EXHAUSTED, naming the limit and the current usage, when an entry of `bytes` named
  // `name` would not fit `owner`'s budget (an entry it replaces frees its bytes first). The byte
  // budget is the server's max_bytes, or `quota_bytes` (the owner's key's cache_bytes) when that
  // is smaller; the message then names the quota and when the next run expires.
  absl::Status CheckFits(const std::string& owner, const std::string& name, int64_t bytes,
                         std::optional<int64_t> quota_bytes = std::nullopt);
  // Stores `run` (replacing an entry of the same name) with its created/expires set from now.
  absl::StatusOr<std::shared_ptr<const CachedRun>> Put(
      const std::string& owner, CachedRun run, absl::Duration ttl,
      std::optional<int64_t> quota_bytes = std::nullopt);
  // NOT_FOUND saying whether the name expired or never existed (or was released).
  absl::StatusOr<std::shared_ptr<const CachedRun>> Get(const std::string& owner,
                                                       const std::string& name);
  // The bytes freed; NOT_FOUND as Get.
  absl::StatusOr<int64_t> Release(const std::string& owner, const std::string& name);
  // Live entries, by name.
  std::vector<std::shared_ptr<const CachedRun>> List(const std::string& owner);
  // Every owner's live entries, by owner, then name (what an admin key lists).
  std::vector<std::shared_ptr<const CachedRun>> ListAll();
  // The byte budget of an owner whose key has `quota_bytes`.
  int64_t MaxBytesFor(std::optional<int64_t> quota_bytes) const;

  struct Usage {
    int64_t bytes = 0;
    int64_t entries = 0;
  };
  Usage UsageOf(const std::string& owner);
  const RunCacheLimits& limits() const { return limits_; }
  absl::Time Now() const { return clock_(); }

 private:
  struct Owner {
    std::map<std::string, std::shared_ptr<const CachedRun>> entries;
    int64_t bytes = 0;
    // Recently expired names with their expiry, so NOT_FOUND can say "expired" (bounded).
    std::deque<std::pair<std::string, absl::Time>> expired;
  };
  void EvictExpired(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status NotFound(const Owner& owner, const std::string& name) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Fits(const std::string& owner_key, const Owner& owner, const std::string& name,
                    int64_t bytes, std::optional<int64_t> quota_bytes) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RunCacheLimits limits_;
  const Clock clock_;
  absl::Mutex mu_;
  std::map<std::string, Owner> owners_ ABSL_GUARDED_BY(mu_);
};

}  // namespace glassbox
