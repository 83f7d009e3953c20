#include "server/service/run_cache.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/service/quota.h"

namespace glassbox {
namespace {

// How many expired names each owner remembers for its NOT_FOUND messages.
constexpr size_t kRememberedExpired = 256;

std::string MiB(int64_t bytes) {
  return absl::StrCat(bytes, " bytes (",
                      absl::StrFormat("%.1f", static_cast<double>(bytes) / (1 << 20)), " MiB)");
}

}  // namespace

int64_t CachedRun::nbytes() const {
  int64_t n = 0;
  for (const auto& [hook, value] : values) n += static_cast<int64_t>(value.nbytes());
  return n;
}

absl::Status RunCache::ValidateName(absl::string_view name) {
  const bool ok =
      !name.empty() && name.size() <= 128 && std::all_of(name.begin(), name.end(), [](char c) {
        return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' ||
               c == '-';
      });
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "cached run name \"", name, "\": use 1 to 128 letters, digits, '_', '.' or '-'"));
}

absl::StatusOr<absl::Duration> RunCache::TtlFor(int64_t ttl_seconds) const {
  if (ttl_seconds == 0) return limits_.default_ttl;
  const absl::Duration ttl = absl::Seconds(ttl_seconds);
  if (ttl_seconds < 0 || ttl > limits_.max_ttl) {
    return absl::InvalidArgumentError(
        absl::StrCat("keep.ttl_seconds ", ttl_seconds, " is outside (0, ",
                     absl::ToInt64Seconds(limits_.max_ttl), "] (glassboxd --cache_max_ttl_s)"));
  }
  return ttl;
}

void RunCache::EvictExpired(absl::Time now) {
  for (auto& [key, owner] : owners_) {
    for (auto it = owner.entries.begin(); it != owner.entries.end();) {
      if (it->second->expires > now) {
        ++it;
        continue;
      }
      owner.bytes -= it->second->nbytes();
      owner.expired.push_back({it->first, it->second->expires});
      if (owner.expired.size() > kRememberedExpired) owner.expired.pop_front();
      it = owner.entries.erase(it);
    }
  }
}

absl::Status RunCache::NotFound(const Owner& owner, const std::string& name) const {
  for (auto it = owner.expired.rbegin(); it != owner.expired.rend(); ++it) {
    if (it->first == name) {
      return absl::NotFoundError(absl::StrCat("cached run \"", name, "\" expired at ",
                                              absl::FormatTime(it->second),
                                              "; run it again with keep"));
    }
  }
  std::vector<std::string> names;
  for (const auto& [n, run] : owner.entries) names.push_back(n);
  return absl::NotFoundError(
      absl::StrCat("no cached run \"", name, "\": it never existed or was released (cached runs: ",
                   names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
}

int64_t RunCache::MaxBytesFor(std::optional<int64_t> quota_bytes) const {
  return quota_bytes ? std::min(*quota_bytes, limits_.max_bytes) : limits_.max_bytes;
}

absl::Status RunCache::Fits(const std::string& owner_key, const Owner& owner,
                            const std::string& name, int64_t bytes,
                            std::optional<int64_t> quota_bytes) const {
  int64_t used = owner.bytes, entries = static_cast<int64_t>(owner.entries.size());
  if (auto it = owner.entries.find(name); it != owner.entries.end()) {
    used -= it->second->nbytes();
    --entries;
  }
  if (quota_bytes && *quota_bytes < limits_.max_bytes && used + bytes > *quota_bytes) {
    absl::Time next = absl::InfiniteFuture();
    for (const auto& [n, run] : owner.entries) next = std::min(next, run->expires);
    const std::string refill =
        owner.entries.empty()
            ? "no run is kept, so this one can never fit: keep fewer hooks or fewer rows"
            : absl::StrCat("it refills as runs are released (ReleaseCachedRun) or expire ",
                           "(the next in ", RefillText(next - clock_()), ")");
    return absl::ResourceExhaustedError(
        absl::StrCat("cache_bytes quota of ", *quota_bytes, " for key \"", owner_key,
                     "\" is used up: keeping run \"", name, "\" needs ", MiB(bytes),
                     " and the key's cached runs hold ", MiB(used), "; ", refill));
  }
  if (used + bytes > limits_.max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("keeping run \"", name, "\" needs ", MiB(bytes), "; cached runs already hold ",
                     MiB(used), " of the ", MiB(limits_.max_bytes),
                     " allowed (glassboxd --cache_max_bytes). Release some "
                     "(ReleaseCachedRun), keep fewer hooks, or wait for expiry"));
  }
  if (entries + 1 > limits_.max_entries) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "keeping run \"", name, "\" would make ", entries + 1, " cached runs; ", entries,
        " are held and ", limits_.max_entries,
        " are allowed (glassboxd --cache_max_entries). Release some (ReleaseCachedRun)"));
  }
  return absl::OkStatus();
}

absl::Status RunCache::CheckFits(const std::string& owner, const std::string& name, int64_t bytes,
                                 std::optional<int64_t> quota_bytes) {
  absl::MutexLock lock(&mu_);
  EvictExpired(clock_());
  return Fits(owner, owners_[owner], name, bytes, quota_bytes);
}

absl::StatusOr<std::shared_ptr<const CachedRun>> RunCache::Put(const std::string& owner_key,
                                                               CachedRun run, absl::Duration ttl,
                                                               std::optional<int64_t> quota_bytes) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_();
  EvictExpired(now);
  Owner& owner = owners_[owner_key];
  const int64_t bytes = run.nbytes();
  if (absl::Status fits = Fits(owner_key, owner, run.name, bytes, quota_bytes); !fits.ok()) {
    return fits;
  }
  if (auto it = owner.entries.find(run.name); it != owner.entries.end()) {
    owner.bytes -= it->second->nbytes();
    owner.entries.erase(it);
  }
  run.owner = owner_key;
  run.created = now;
  run.expires = now + ttl;
  auto stored = std::make_shared<const CachedRun>(std::move(run));
  owner.entries[stored->name] = stored;
  owner.bytes += bytes;
  return stored;
}

absl::StatusOr<std::shared_ptr<const CachedRun>> RunCache::Get(const std::string& owner_key,
                                                               const std::string& name) {
  absl::MutexLock lock(&mu_);
  EvictExpired(clock_());
  const Owner& owner = owners_[owner_key];
  auto it = owner.entries.find(name);
  if (it == owner.entries.end()) return NotFound(owner, name);
  return it->second;
}

absl::StatusOr<int64_t> RunCache::Release(const std::string& owner_key, const std::string& name) {
  absl::MutexLock lock(&mu_);
  EvictExpired(clock_());
  Owner& owner = owners_[owner_key];
  auto it = owner.entries.find(name);
  if (it == owner.entries.end()) return NotFound(owner, name);
  const int64_t bytes = it->second->nbytes();
  owner.bytes -= bytes;
  owner.entries.erase(it);
  return bytes;
}

std::vector<std::shared_ptr<const CachedRun>> RunCache::List(const std::string& owner_key) {
  absl::MutexLock lock(&mu_);
  EvictExpired(clock_());
  std::vector<std::shared_ptr<const CachedRun>> runs;
  for (const auto& [name, run] : owners_[owner_key].entries) runs.push_back(run);
  return runs;
}

std::vector<std::shared_ptr<const CachedRun>> RunCache::ListAll() {
  absl::MutexLock lock(&mu_);
  EvictExpired(clock_());
  std::vector<std::shared_ptr<const CachedRun>> runs;
  for (const auto& [key, owner] : owners_) {
    for (const auto& [name, run] : owner.entries) runs.push_back(run);
  }
  return runs;
}

RunCache::Usage RunCache::UsageOf(const std::string& owner_key) {
  absl::MutexLock lock(&mu_);
  EvictExpired(clock_());
  const Owner& owner = owners_[owner_key];
  return {owner.bytes, static_cast<int64_t>(owner.entries.size())};
}

}  // namespace glassbox
