// Who makes one RPC, and what it may spend (docs/service.md, "API keys, quotas and isolation").
// The Gatekeeper admits a call from its metadata: on a server with API keys it authenticates the
// "authorization: Bearer <key>" header (UNAUTHENTICATED otherwise), counts the request against
// the key's requests_per_minute and, for work on the device, takes one of its
// max_concurrent_runs. The Caller it returns carries the key, the limits of this request (the
// key's max_response_bytes where smaller than the server's), the key's view of the cached runs
// (its own namespace and cache_bytes; every owner's for an admin key), and the run slot, given
// back when the handler returns by any path. On a server without keys every caller is the same
// anonymous one and nothing is counted.
#pragma once

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>

#include "absl/status/statusor.h"
#include "server/service/api_keys.h"
#include "server/service/quota.h"
#include "server/service/run_cache.h"
#include "server/service/run_plan.h"

namespace glassbox {

// Whether an RPC queues work on the device (and so holds a max_concurrent_runs slot).
enum class CallKind { kHost, kDevice };

class Caller {
 public:
  // Null on a server without keys.
  const ApiKey* key() const { return key_.get(); }
  const ServiceLimits& limits() const { return limits_; }
  const CacheAccess& cache() const { return cache_; }
  // tokens_per_day: counts a request of `tokens` padded tokens (what --max_tokens counts),
  // once it is validated and before it runs.
  absl::Status ChargeTokens(int64_t tokens) const;

 private:
  friend class Gatekeeper;
  Caller(std::shared_ptr<const ApiKey> key, QuotaTracker* quotas, RunSlot slot,
         ServiceLimits limits, CacheAccess cache)
      : key_(std::move(key)),
        quotas_(quotas),
        slot_(std::move(slot)),
        limits_(std::move(limits)),
        cache_(std::move(cache)) {}

  std::shared_ptr<const ApiKey> key_;
  QuotaTracker* quotas_;
  RunSlot slot_;
  ServiceLimits limits_;
  CacheAccess cache_;
};

class Gatekeeper {
 public:
  // `keys` null: the server is open. The pointers must outlive the gatekeeper.
  Gatekeeper(const ApiKeyStore* keys, QuotaTracker* quotas, const ServiceLimits* limits,
             RunCache* cache)
      : keys_(keys), quotas_(quotas), limits_(limits), cache_(cache) {}

  using Metadata = std::multimap<grpc::string_ref, grpc::string_ref>;
  // UNAUTHENTICATED (no key, a malformed header, an unknown key) with how to send one;
  // RESOURCE_EXHAUSTED (requests_per_minute, max_concurrent_runs).
  absl::StatusOr<Caller> Admit(const Metadata& metadata, CallKind kind) const;

 private:
  absl::StatusOr<std::shared_ptr<const ApiKey>> Authenticate(const Metadata& metadata) const;

  const ApiKeyStore* keys_;
  QuotaTracker* quotas_;
  const ServiceLimits* limits_;
  RunCache* cache_;
};

}  // namespace glassbox
