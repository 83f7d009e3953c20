// What glassboxd counts for Prometheus (docs/service.md, "Metrics and request logs") and the
// JSON line it logs per request. Every RPC ends as one RequestRecord: the request observer
// (request_observer.h) times it and takes its status; handlers add what only they know (the
// key's name, the model, tokens, queue and run time, bytes) through Annotate, keyed by the
// call's ServerContext. The exposition writer is small on purpose: counters, gauges and one
// histogram in the text format 0.0.4.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace glassbox {

struct RequestRecord {
  std::string rpc;  // "Run", "Tokenize", ...
  std::string key;  // the API key's name ("" on a server without keys, or unauthenticated)
  std::string model;
  std::string code;    // the gRPC status code's name: "OK", "INVALID_ARGUMENT", ...
  int64_t tokens = 0;  // padded tokens charged
  double queue_seconds = 0;
  double run_seconds = 0;  // on the device
  double total_seconds = 0;
  int64_t bytes = 0;       // tensor payload streamed
  int batch_requests = 0;  // requests that shared the forward pass (Run; 0: not a Run)

  // One line of JSON, no newline. Never holds a secret: keys appear by name only.
  std::string ToJson() const;
};

// "OK", "CANCELLED", ... as grpc::StatusCode's names.
const char* StatusCodeName(grpc::StatusCode code);

// A value read at scrape time (queue length, cache bytes, passes run), with its help text.
struct Gauge {
  std::string name;
  std::string help;
  double value;
  std::string type = "gauge";  // or "counter" for totals kept elsewhere (the scheduler's)
};

class ServiceMetrics {
 public:
  // Adds to what the call with this context will record when it ends.
  void Annotate(const grpc::ServerContextBase* context,
                const std::function<void(RequestRecord&)>& update);
  // The annotations of a finished call (removed).
  RequestRecord Take(const grpc::ServerContextBase* context);
  // Counts a finished request.
  void Record(const RequestRecord& record);

  // The exposition: every counter, then `gauges`.
  std::string Exposition(const std::vector<Gauge>& gauges) const;

  // Upper bounds of the glassbox_batch_requests histogram's buckets (then +Inf).
  static constexpr int kBatchBuckets[] = {1, 2, 4, 8, 16, 32, 64};

 private:
  struct Timing {
    int64_t count = 0;
    double sum = 0;
  };
  mutable absl::Mutex mu_;
  std::map<const grpc::ServerContextBase*, RequestRecord> pending_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, std::string>, int64_t> requests_
      ABSL_GUARDED_BY(mu_);                                      // rpc, code
  std::map<std::string, Timing> duration_ ABSL_GUARDED_BY(mu_);  // by rpc
  Timing queue_wait_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> batch_buckets_ ABSL_GUARDED_BY(mu_) =
      std::vector<int64_t>(std::size(kBatchBuckets) + 1, 0);
  Timing batch_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> key_requests_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> key_tokens_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> key_bytes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace glassbox
