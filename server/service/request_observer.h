// A gRPC server interceptor that ends every RPC the same way: it times the call from its first
// event to its status, takes what the handler annotated (ServiceMetrics::Annotate), counts the
// request in the metrics and, when asked, logs it as one JSON line on stderr. One place sees
// every RPC, including those refused before a handler ran any code of ours.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/server_interceptor.h>

#include "server/service/metrics.h"

namespace glassbox {

class RequestObserverFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // `metrics` must outlive the server.
  RequestObserverFactory(ServiceMetrics* metrics, bool log_requests)
      : metrics_(metrics), log_requests_(log_requests) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  ServiceMetrics* metrics_;
  bool log_requests_;
};

}  // namespace glassbox
