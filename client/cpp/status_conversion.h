// Conversion between grpc::Status and absl::Status. The two share the canonical code space, so
// the code and the message pass through unchanged in both directions.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace glassbox::client {

absl::Status FromGrpcStatus(const grpc::Status& status);
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace glassbox::client
