#include "server/service/request_observer.h"

#include <chrono>
#include <cstdio>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace glassbox {
namespace {

using grpc::experimental::InterceptionHookPoints;

class RequestObserver : public grpc::experimental::Interceptor {
 public:
  RequestObserver(grpc::experimental::ServerRpcInfo* info, ServiceMetrics* metrics, bool log)
      : context_(info->server_context()), metrics_(metrics), log_(log) {
    // "/glassbox.v1.Glassbox/Run" -> "Run"; other services keep their full name.
    absl::string_view method = info->method();
    constexpr absl::string_view kOurs = "/glassbox.v1.Glassbox/";
    rpc_ = absl::ConsumePrefix(&method, kOurs) ? std::string(method) : std::string(info->method());
  }
  ~RequestObserver() override {
    if (!recorded_) metrics_->Take(context_);  // a call that ended without a status
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      RequestRecord record = metrics_->Take(context_);
      recorded_ = true;
      record.rpc = rpc_;
      record.code = StatusCodeName(methods->GetSendStatus().error_code());
      record.total_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      metrics_->Record(record);
      if (log_) std::fprintf(stderr, "%s\n", record.ToJson().c_str());
    }
    methods->Proceed();
  }

 private:
  const grpc::ServerContextBase* context_;
  ServiceMetrics* metrics_;
  bool log_;
  std::string rpc_;
  bool recorded_ = false;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace

grpc::experimental::Interceptor* RequestObserverFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  return new RequestObserver(info, metrics_, log_requests_);
}

}  // namespace glassbox
