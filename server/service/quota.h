// Per-key quota accounting (docs/service.md, "Quotas"): runs in flight (max_concurrent_runs),
// requests a minute (requests_per_minute, a token bucket) and tokens a day (tokens_per_day, a
// rolling 24 h window). Counters live under the key's name, so a reload that changes a key's
// quota applies to its next request and a rotated secret keeps its counters. A refusal is
// RESOURCE_EXHAUSTED naming the quota by its JSON field, the limit, the key, and when it refills.
// Thread-safe; the clock is injectable for tests.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/service/api_keys.h"

namespace glassbox {

class QuotaTracker;

// One run counted against its key's max_concurrent_runs until this is destroyed (or moved
// from); a default-constructed slot counts nothing.
class RunSlot {
 public:
  RunSlot() = default;
  RunSlot(RunSlot&& other) noexcept;
  RunSlot& operator=(RunSlot&& other) noexcept;
  RunSlot(const RunSlot&) = delete;
  RunSlot& operator=(const RunSlot&) = delete;
  ~RunSlot();

 private:
  friend class QuotaTracker;
  RunSlot(QuotaTracker* tracker, std::string key) : tracker_(tracker), key_(std::move(key)) {}
  void Release();

  QuotaTracker* tracker_ = nullptr;
  std::string key_;
};

// "0.4 s", "12 s", "14 min", "5 h 3 min": how long until a quota refills, rounded up.
std::string RefillText(absl::Duration wait);

class QuotaTracker {
 public:
  using Clock = std::function<absl::Time()>;
  // Tokens of one minute go into one record, so a key's window holds at most 1440 of them.
  static constexpr absl::Duration kTokenWindow = absl::Hours(24);
  static constexpr absl::Duration kTokenRecord = absl::Minutes(1);

  explicit QuotaTracker(Clock clock = &absl::Now) : clock_(std::move(clock)) {}

  // requests_per_minute: takes one request from the key's bucket, which holds up to the limit
  // and refills one request every 60 s / limit (it starts full). Kept as the time the bucket
  // will be full again (the GCRA form of a token bucket), so the arithmetic is exact.
  absl::Status CountRequest(const ApiKey& key);
  // max_concurrent_runs: a slot while fewer than the limit are held.
  absl::StatusOr<RunSlot> StartRun(const ApiKey& key);
  // tokens_per_day: adds `tokens` when the last 24 h's and these fit the limit; a request larger
  // than the whole limit is refused as one that can never fit. Keys without the quota are
  // counted as well (UsageOf), never refused.
  absl::Status ChargeTokens(const ApiKey& key, int64_t tokens);

  struct Usage {
    int64_t runs_in_flight = 0;
    int64_t tokens_last_day = 0;
  };
  Usage UsageOf(const std::string& key_name);
  // Every key counted so far, by name.
  std::map<std::string, Usage> AllUsage();

 private:
  friend class RunSlot;
  // The tokens charged in one record's minute. They leave the window 24 h after the record's
  // last charge: up to a minute late, never early.
  struct TokenRecord {
    absl::Time first;
    absl::Time last;
    int64_t tokens = 0;
  };
  struct KeyState {
    int64_t runs_in_flight = 0;
    // When the bucket is full again; the bucket holds (limit - (full - now) / interval).
    absl::Time bucket_full = absl::InfinitePast();
    std::deque<TokenRecord> tokens;  // oldest first
    int64_t tokens_sum = 0;
  };
  void EndRun(const std::string& key_name);
  static void DropOldTokens(KeyState& state, absl::Time now);

  const Clock clock_;
  absl::Mutex mu_;
  std::map<std::string, KeyState> keys_ ABSL_GUARDED_BY(mu_);
};

}  // namespace glassbox
