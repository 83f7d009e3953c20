// absl::Status is the error type inside the server; grpc::Status exists only at the service edge.
#pragma once

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"

namespace glassbox {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace glassbox
