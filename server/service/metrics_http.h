// The Prometheus endpoint: GET /metrics over HTTP/1.1 on --metrics_listen, answered by one thread
// of its own (apart from gRPC's), one connection at a time; the body comes from a callback at
// each scrape. Prometheus scrapes every few seconds and the body is small, so nothing more is
// needed. (civetweb, which Debian packages, cannot run in glassboxd: its threads get a
// compiled-in 100 KB stack, smaller than the static TLS cuBLASLt and OpenBLAS need, so every
// pthread_create fails with EINVAL.)
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace glassbox {

class MetricsHttpServer {
 public:
  // Listens on "HOST:PORT" (an IPv4 address; port 0 picks a free one). INVALID_ARGUMENT for a
  // malformed address, UNAVAILABLE when it cannot listen.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& listen, std::function<std::string()> exposition);
  ~MetricsHttpServer();  // stops serving and joins
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }

 private:
  MetricsHttpServer(int fd, int port, std::function<std::string()> exposition)
      : fd_(fd), port_(port), exposition_(std::move(exposition)) {}
  void Serve();
  void Answer(int connection);

  const int fd_;
  const int port_;
  std::function<std::string()> exposition_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace glassbox
