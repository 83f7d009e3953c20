#include "server/service/caller.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace glassbox {
namespace {

// Every UNAUTHENTICATED message ends with how to send a key, in each client's own terms.
constexpr char kHowToSendAKey[] =
    "metadata \"authorization: Bearer <key>\"; Python: glassbox.connect(address, api_key=KEY); "
    "the glassbox CLI: --api_key KEY or $GLASSBOX_API_KEY; C++: ClientOptions::api_key";

absl::Status Unauthenticated(absl::string_view why) {
  return absl::UnauthenticatedError(absl::StrCat(why, " (to send a key: ", kHowToSendAKey, ")"));
}

}  // namespace

absl::Status Caller::ChargeTokens(int64_t tokens) const {
  if (key_ == nullptr) return absl::OkStatus();
  return quotas_->ChargeTokens(*key_, tokens);
}

absl::StatusOr<std::shared_ptr<const ApiKey>> Gatekeeper::Authenticate(
    const Metadata& metadata) const {
  const auto [first, last] = metadata.equal_range("authorization");
  const auto headers = std::distance(first, last);
  if (headers == 0) return Unauthenticated("this server needs an API key and the call has none");
  if (headers > 1) {
    return Unauthenticated(
        absl::StrCat("the call has ", headers, " \"authorization\" headers and may have one"));
  }
  // Neither the header nor the key is ever quoted back: either may be a secret.
  const absl::string_view header(first->second.data(), first->second.size());
  const std::optional<absl::string_view> token = BearerToken(header);
  if (!token) {
    return Unauthenticated(
        "the \"authorization\" header is not \"Bearer <key>\" (the word Bearer, a space, the key)");
  }
  std::shared_ptr<const ApiKey> key = keys_->Find(*token);
  if (key == nullptr) {
    return Unauthenticated(
        "this server does not know the API key the call sent: it is mistyped or was revoked; "
        "check it, or ask the server's operator for one");
  }
  return key;
}

absl::StatusOr<Caller> Gatekeeper::Admit(const Metadata& metadata, CallKind kind) const {
  CacheAccess cache{.cache = cache_};
  if (keys_ == nullptr) {
    return Caller(nullptr, quotas_, RunSlot(), *limits_, std::move(cache));
  }
  GB_ASSIGN_OR_RETURN(std::shared_ptr<const ApiKey> key, Authenticate(metadata));
  GB_RETURN_IF_ERROR(quotas_->CountRequest(*key));
  RunSlot slot;
  if (kind == CallKind::kDevice) {
    GB_ASSIGN_OR_RETURN(slot, quotas_->StartRun(*key));
  }
  ServiceLimits limits = *limits_;
  if (key->quota.max_response_bytes && *key->quota.max_response_bytes < limits.max_response_bytes) {
    limits.max_response_bytes = *key->quota.max_response_bytes;
    limits.max_response_bytes_source =
        absl::StrCat("the max_response_bytes quota of key \"", key->name, "\", per request");
  }
  cache.owner = key->name;
  cache.admin = key->admin;
  cache.quota_bytes = key->quota.cache_bytes;
  return Caller(std::move(key), quotas_, std::move(slot), std::move(limits), std::move(cache));
}

}  // namespace glassbox
