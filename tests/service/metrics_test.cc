// The metrics writer and its HTTP endpoint without a gRPC server: counts by RPC, code and key,
// the batch histogram's cumulative buckets, label and JSON escaping, and GET /metrics over a
// real socket (the Python tests parse the same text with prometheus_client).
#include "server/service/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/service/metrics_http.h"

namespace glassbox {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(ServiceMetricsTest, CountsRequestsByRpcCodeAndKey) {
  ServiceMetrics metrics;
  metrics.Record({.rpc = "Run",
                  .key = "alice",
                  .code = "OK",
                  .tokens = 24,
                  .queue_seconds = 0.5,
                  .total_seconds = 1,
                  .bytes = 100,
                  .batch_requests = 3});
  metrics.Record({.rpc = "Run",
                  .key = "alice",
                  .code = "OK",
                  .tokens = 8,
                  .queue_seconds = 0.25,
                  .total_seconds = 2,
                  .bytes = 50,
                  .batch_requests = 1});
  metrics.Record(
      {.rpc = "Tokenize", .key = "bo\"b", .code = "INVALID_ARGUMENT", .total_seconds = 0.5});
  const std::string text = metrics.Exposition({{"glassbox_queue_length", "Queued.", 7}});
  EXPECT_THAT(text, HasSubstr("glassbox_requests_total{rpc=\"Run\",code=\"OK\"} 2\n"));
  EXPECT_THAT(text,
              HasSubstr("glassbox_requests_total{rpc=\"Tokenize\",code=\"INVALID_ARGUMENT\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("glassbox_request_duration_seconds_sum{rpc=\"Run\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("glassbox_key_tokens_total{key=\"alice\"} 32\n"));
  EXPECT_THAT(text, HasSubstr("glassbox_key_stream_bytes_total{key=\"alice\"} 150\n"));
  EXPECT_THAT(text, HasSubstr("glassbox_key_requests_total{key=\"bo\\\"b\"} 1\n"));  // escaped
  EXPECT_THAT(
      text,
      HasSubstr("glassbox_queue_wait_seconds_sum 0.75\nglassbox_queue_wait_seconds_count 2\n"));
  // Cumulative buckets: batch 1 in le=1, batch 3 from le=4 on.
  EXPECT_THAT(text, HasSubstr("glassbox_batch_requests_bucket{le=\"1\"} 1\n"
                              "glassbox_batch_requests_bucket{le=\"2\"} 1\n"
                              "glassbox_batch_requests_bucket{le=\"4\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("glassbox_batch_requests_bucket{le=\"+Inf\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE glassbox_queue_length gauge\nglassbox_queue_length 7\n"));
}

TEST(ServiceMetricsTest, AnnotationsAreTakenOnce) {
  ServiceMetrics metrics;
  const auto* context = reinterpret_cast<const grpc::ServerContextBase*>(0x1234);
  metrics.Annotate(context, [](RequestRecord& r) { r.key = "alice"; });
  metrics.Annotate(context, [](RequestRecord& r) { r.tokens = 5; });
  const RequestRecord record = metrics.Take(context);
  EXPECT_EQ(record.key, "alice");
  EXPECT_EQ(record.tokens, 5);
  EXPECT_EQ(metrics.Take(context).key, "");
}

TEST(ServiceMetricsTest, JsonLineEscapesStrings) {
  const RequestRecord record{.rpc = "Run",
                             .key = "a\"b\\c",
                             .model = "m\n",
                             .code = "OK",
                             .tokens = 3,
                             .batch_requests = 2};
  const std::string line = record.ToJson();
  EXPECT_THAT(line, HasSubstr(R"("key":"a\"b\\c")"));
  EXPECT_THAT(line, HasSubstr(R"("model":"m\u000a")"));
  EXPECT_THAT(line, HasSubstr(R"("batch_requests":2})"));
  EXPECT_THAT(line, Not(HasSubstr("\n")));
}

std::string Get(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n";
  EXPECT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string response;
  char buffer[4096];
  for (ssize_t n; (n = recv(fd, buffer, sizeof(buffer), 0)) > 0;) response.append(buffer, n);
  close(fd);
  return response;
}

TEST(MetricsHttpServerTest, ServesTheExpositionAtMetrics) {
  int scrapes = 0;
  auto server = MetricsHttpServer::Start("127.0.0.1:0", [&] {
    ++scrapes;
    return std::string("glassbox_up 1\n");
  });
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  const std::string ok = Get((*server)->port(), "/metrics");
  EXPECT_THAT(ok, HasSubstr("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(ok, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  EXPECT_THAT(ok, HasSubstr("Content-Length: 14\r\n"));
  EXPECT_THAT(ok, HasSubstr("\r\n\r\nglassbox_up 1\n"));
  EXPECT_THAT(Get((*server)->port(), "/other"), HasSubstr("404 Not Found"));
  EXPECT_EQ(scrapes, 1);
}

TEST(MetricsHttpServerTest, RefusesBadAddresses) {
  EXPECT_EQ(MetricsHttpServer::Start("localhost", [] { return ""; }).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MetricsHttpServer::Start("127.0.0.1:70000", [] { return ""; }).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto first = MetricsHttpServer::Start("127.0.0.1:0", [] { return ""; });
  ASSERT_TRUE(first.ok());
  const std::string taken = "127.0.0.1:" + std::to_string((*first)->port());
  const auto second = MetricsHttpServer::Start(taken, [] { return ""; });
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr("cannot serve metrics on " + taken));
}

}  // namespace
}  // namespace glassbox
