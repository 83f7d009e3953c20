#include "client/cpp/status_conversion.h"

#include "gtest/gtest.h"

namespace glassbox::client {
namespace {

TEST(StatusConversionTest, EveryCodeAndTheMessageSurviveBothWays) {
  for (int code = 1; code <= 16; ++code) {
    const grpc::Status grpc_status(static_cast<grpc::StatusCode>(code), "what went wrong");
    const absl::Status status = FromGrpcStatus(grpc_status);
    EXPECT_EQ(static_cast<int>(status.code()), code);
    EXPECT_EQ(status.message(), "what went wrong");
    const grpc::Status back = ToGrpcStatus(status);
    EXPECT_EQ(back.error_code(), grpc_status.error_code());
    EXPECT_EQ(back.error_message(), "what went wrong");
  }
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::NOT_FOUND, "no model \"x\"")),
            absl::NotFoundError("no model \"x\""));
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "draining")),
            absl::UnavailableError("draining"));
}

TEST(StatusConversionTest, OkIsOk) {
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

}  // namespace
}  // namespace glassbox::client
