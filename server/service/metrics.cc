#include "server/service/metrics.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace glassbox {
namespace {

// A JSON string literal (the log line's values: names, models, codes).
std::string Quoted(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// A label value in the exposition format: backslash, quote and newline escaped.
std::string Label(const std::string& s) {
  return absl::StrReplaceAll(s, {{"\\", "\\\\"}, {"\"", "\\\""}, {"\n", "\\n"}});
}

std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return absl::StrFormat("%.17g", v);
}

void Header(std::string& out, const char* name, const char* type, const char* help) {
  absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

}  // namespace

std::string RequestRecord::ToJson() const {
  std::string line = absl::StrCat(
      "{\"time\":", Quoted(absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone())),
      ",\"rpc\":", Quoted(rpc), ",\"key\":", Quoted(key), ",\"model\":", Quoted(model),
      ",\"code\":", Quoted(code), ",\"tokens\":", tokens,
      ",\"queue_s\":", absl::StrFormat("%.6f", queue_seconds),
      ",\"run_s\":", absl::StrFormat("%.6f", run_seconds),
      ",\"total_s\":", absl::StrFormat("%.6f", total_seconds), ",\"bytes\":", bytes);
  if (batch_requests > 0) absl::StrAppend(&line, ",\"batch_requests\":", batch_requests);
  return line + "}";
}

const char* StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    default:
      return "UNKNOWN";
  }
}

void ServiceMetrics::Annotate(const grpc::ServerContextBase* context,
                              const std::function<void(RequestRecord&)>& update) {
  absl::MutexLock lock(&mu_);
  update(pending_[context]);
}

RequestRecord ServiceMetrics::Take(const grpc::ServerContextBase* context) {
  absl::MutexLock lock(&mu_);
  auto it = pending_.find(context);
  if (it == pending_.end()) return {};
  RequestRecord record = std::move(it->second);
  pending_.erase(it);
  return record;
}

void ServiceMetrics::Record(const RequestRecord& r) {
  absl::MutexLock lock(&mu_);
  ++requests_[{r.rpc, r.code}];
  Timing& d = duration_[r.rpc];
  ++d.count;
  d.sum += r.total_seconds;
  if (r.batch_requests > 0) {  // requests that reached the device's queue
    ++queue_wait_.count;
    queue_wait_.sum += r.queue_seconds;
    size_t bucket = 0;
    while (bucket < std::size(kBatchBuckets) && r.batch_requests > kBatchBuckets[bucket]) ++bucket;
    ++batch_buckets_[bucket];
    ++batch_.count;
    batch_.sum += r.batch_requests;
  }
  ++key_requests_[r.key];
  key_tokens_[r.key] += r.tokens;
  key_bytes_[r.key] += r.bytes;
}

std::string ServiceMetrics::Exposition(const std::vector<Gauge>& gauges) const {
  absl::MutexLock lock(&mu_);
  std::string out;
  Header(out, "glassbox_requests_total", "counter", "Requests finished, by RPC and status code.");
  for (const auto& [labels, n] : requests_) {
    absl::StrAppend(&out, "glassbox_requests_total{rpc=\"", Label(labels.first), "\",code=\"",
                    labels.second, "\"} ", n, "\n");
  }
  Header(out, "glassbox_request_duration_seconds", "summary",
         "Time from a request's arrival to its status, by RPC.");
  for (const auto& [rpc, t] : duration_) {
    absl::StrAppend(&out, "glassbox_request_duration_seconds_sum{rpc=\"", Label(rpc), "\"} ",
                    Number(t.sum), "\nglassbox_request_duration_seconds_count{rpc=\"", Label(rpc),
                    "\"} ", t.count, "\n");
  }
  Header(out, "glassbox_queue_wait_seconds", "summary",
         "Time device requests waited in the queue before their work started.");
  absl::StrAppend(&out, "glassbox_queue_wait_seconds_sum ", Number(queue_wait_.sum),
                  "\nglassbox_queue_wait_seconds_count ", queue_wait_.count, "\n");
  Header(out, "glassbox_batch_requests", "histogram",
         "Requests that shared each device request's forward pass (dynamic batching merges Runs).");
  int64_t cumulative = 0;
  for (size_t i = 0; i < batch_buckets_.size(); ++i) {
    cumulative += batch_buckets_[i];
    const std::string le = i < std::size(kBatchBuckets) ? absl::StrCat(kBatchBuckets[i]) : "+Inf";
    absl::StrAppend(&out, "glassbox_batch_requests_bucket{le=\"", le, "\"} ", cumulative, "\n");
  }
  absl::StrAppend(&out, "glassbox_batch_requests_sum ", Number(batch_.sum),
                  "\nglassbox_batch_requests_count ", batch_.count, "\n");
  const std::pair<const char*, const std::map<std::string, int64_t>*> per_key[] = {
      {"glassbox_key_requests_total", &key_requests_},
      {"glassbox_key_tokens_total", &key_tokens_},
      {"glassbox_key_stream_bytes_total", &key_bytes_}};
  const char* help[] = {"Requests finished, by API key name (\"\" without keys).",
                        "Padded tokens charged, by API key name.",
                        "Tensor bytes streamed (captures and outputs), by API key name."};
  for (size_t i = 0; i < std::size(per_key); ++i) {
    Header(out, per_key[i].first, "counter", help[i]);
    for (const auto& [key, n] : *per_key[i].second) {
      absl::StrAppend(&out, per_key[i].first, "{key=\"", Label(key), "\"} ", n, "\n");
    }
  }
  for (const Gauge& g : gauges) {
    Header(out, g.name.c_str(), g.type.c_str(), g.help.c_str());
    absl::StrAppend(&out, g.name, " ", Number(g.value), "\n");
  }
  return out;
}

}  // namespace glassbox
