#include "server/service/quota.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace glassbox {
namespace {

std::string QuotaOf(const char* field, int64_t limit, const ApiKey& key) {
  return absl::StrCat(field, " quota of ", limit, " for key \"", key.name, "\"");
}

}  // namespace

std::string RefillText(absl::Duration wait) {
  // To whole milliseconds first, so that a wait a hair over a unit is not shown as the next one.
  const int64_t ms = std::max<int64_t>(0, std::llround(absl::ToDoubleMilliseconds(wait)));
  if (ms < 10'000) {
    const int64_t tenths = std::max<int64_t>(1, (ms + 99) / 100);
    return absl::StrCat(tenths / 10, ".", tenths % 10, " s");
  }
  const int64_t seconds = (ms + 999) / 1000;
  if (seconds < 120) return absl::StrCat(seconds, " s");
  const int64_t minutes = (seconds + 59) / 60;
  if (minutes < 120) return absl::StrCat(minutes, " min");
  return absl::StrCat(minutes / 60, " h ", minutes % 60, " min");
}

RunSlot::RunSlot(RunSlot&& other) noexcept
    : tracker_(std::exchange(other.tracker_, nullptr)), key_(std::move(other.key_)) {}

RunSlot& RunSlot::operator=(RunSlot&& other) noexcept {
  if (this != &other) {
    Release();
    tracker_ = std::exchange(other.tracker_, nullptr);
    key_ = std::move(other.key_);
  }
  return *this;
}

RunSlot::~RunSlot() { Release(); }

void RunSlot::Release() {
  if (tracker_ != nullptr) tracker_->EndRun(key_);
  tracker_ = nullptr;
}

absl::Status QuotaTracker::CountRequest(const ApiKey& key) {
  if (!key.quota.requests_per_minute) return absl::OkStatus();
  const int64_t limit = *key.quota.requests_per_minute;
  const absl::Duration interval = absl::Minutes(1) / limit;  // one request refills in this
  // A bucket that is full until less than this before `bucket_full` still holds a request.
  const absl::Duration slack = absl::Minutes(1) - interval;
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_();
  KeyState& state = keys_[key.name];
  const absl::Time full = std::max(state.bucket_full, now);
  if (full - now <= slack) {
    state.bucket_full = full + interval;
    return absl::OkStatus();
  }
  const absl::Duration wait = full - now - slack;
  return absl::ResourceExhaustedError(absl::StrCat(
      QuotaOf("requests_per_minute", limit, key), " is used up; it refills in ", RefillText(wait),
      " (", limit, " requests a minute, at most ", limit, " at once)"));
}

absl::StatusOr<RunSlot> QuotaTracker::StartRun(const ApiKey& key) {
  absl::MutexLock lock(&mu_);
  KeyState& state = keys_[key.name];
  if (key.quota.max_concurrent_runs && state.runs_in_flight >= *key.quota.max_concurrent_runs) {
    return absl::ResourceExhaustedError(
        absl::StrCat(QuotaOf("max_concurrent_runs", *key.quota.max_concurrent_runs, key),
                     " is used up (requests queued or running: ", state.runs_in_flight,
                     "); it refills when one of them finishes"));
  }
  ++state.runs_in_flight;
  return RunSlot(this, key.name);
}

void QuotaTracker::EndRun(const std::string& key_name) {
  absl::MutexLock lock(&mu_);
  --keys_[key_name].runs_in_flight;
}

void QuotaTracker::DropOldTokens(KeyState& state, absl::Time now) {
  while (!state.tokens.empty() && state.tokens.front().last + kTokenWindow <= now) {
    state.tokens_sum -= state.tokens.front().tokens;
    state.tokens.pop_front();
  }
}

absl::Status QuotaTracker::ChargeTokens(const ApiKey& key, int64_t tokens) {
  if (tokens <= 0) return absl::OkStatus();
  // Keys without the quota are counted too, for GetQueue's usage; nothing is refused.
  const int64_t limit = key.quota.tokens_per_day.value_or(std::numeric_limits<int64_t>::max() / 2);
  if (tokens > limit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        QuotaOf("tokens_per_day", limit, key), " cannot hold this request: it needs ", tokens,
        " tokens (padded rows x longest row), more than the whole quota; send fewer or shorter "
        "rows"));
  }
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_();
  KeyState& state = keys_[key.name];
  DropOldTokens(state, now);
  if (state.tokens_sum + tokens > limit) {
    // The window has room once enough of the oldest records have left it.
    int64_t left = state.tokens_sum;
    absl::Time refill = now;
    for (const TokenRecord& record : state.tokens) {
      left -= record.tokens;
      refill = record.last + kTokenWindow;
      if (left + tokens <= limit) break;
    }
    return absl::ResourceExhaustedError(absl::StrCat(
        QuotaOf("tokens_per_day", limit, key), " is used up: this request needs ", tokens,
        " tokens and ", state.tokens_sum, " were spent in the last 24 h; it refills in ",
        RefillText(refill - now), " (a rolling 24 h window)"));
  }
  if (!state.tokens.empty() && now - state.tokens.back().first < kTokenRecord) {
    state.tokens.back().last = now;
    state.tokens.back().tokens += tokens;
  } else {
    state.tokens.push_back({.first = now, .last = now, .tokens = tokens});
  }
  state.tokens_sum += tokens;
  return absl::OkStatus();
}

QuotaTracker::Usage QuotaTracker::UsageOf(const std::string& key_name) {
  absl::MutexLock lock(&mu_);
  KeyState& state = keys_[key_name];
  DropOldTokens(state, clock_());
  return {state.runs_in_flight, state.tokens_sum};
}

std::map<std::string, QuotaTracker::Usage> QuotaTracker::AllUsage() {
  absl::MutexLock lock(&mu_);
  std::map<std::string, Usage> usage;
  const absl::Time now = clock_();
  for (auto& [name, state] : keys_) {
    DropOldTokens(state, now);
    usage[name] = {state.runs_in_flight, state.tokens_sum};
  }
  return usage;
}

}  // namespace glassbox
