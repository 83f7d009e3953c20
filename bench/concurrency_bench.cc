// Many clients at once against a running glassboxd: each sends small Runs (a prompt of --tokens
// random ids, --captures resid captures, the last position's logits) back to back. Prints one
// JSON line: requests/s, client latency p50/p99, the mean batch the server's summaries report,
// and at p50 how much the round trip adds to the forward pass (latency - Timings.forward_seconds).
//
//   concurrency_bench --target HOST:PORT --model NAME [--clients 64] [--requests 20]
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "glassbox/v1/glassbox.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "the server");
ABSL_FLAG(std::string, model, "demo", "the model to run");
ABSL_FLAG(int, clients, 64, "concurrent clients, each with its own connection");
ABSL_FLAG(int, requests, 20, "runs each client sends, one after the other");
ABSL_FLAG(int, tokens, 24, "tokens per prompt");
ABSL_FLAG(int, captures, 4, "hook_resid_post captures, spread over the layers");

namespace {

namespace pb = ::glassbox::v1;
using Clock = std::chrono::steady_clock;

struct Sample {
  double latency_s;
  double overhead_s;  // latency less the server's forward pass
  double forward_s;
  int batch;
  bool ok;
};

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

int Main() {
  const std::string target = absl::GetFlag(FLAGS_target);
  const int clients = absl::GetFlag(FLAGS_clients), per_client = absl::GetFlag(FLAGS_requests);
  auto probe =
      pb::Glassbox::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  pb::GetModelInfoRequest info_request;
  info_request.set_model(absl::GetFlag(FLAGS_model));
  pb::ModelInfo info;
  grpc::ClientContext info_context;
  if (grpc::Status s = probe->GetModelInfo(&info_context, info_request, &info); !s.ok()) {
    std::fprintf(stderr, "concurrency_bench: %s\n", s.error_message().c_str());
    return 1;
  }
  const int n_captures = std::min<int>(absl::GetFlag(FLAGS_captures), info.n_layers());

  auto request_for = [&](std::mt19937& rng) {
    pb::RunRequest r;
    r.set_model(info.name());
    auto* row = r.mutable_inputs()->add_token_ids();
    for (int i = 0; i < absl::GetFlag(FLAGS_tokens); ++i)
      row->add_ids(static_cast<int32_t>(rng() % info.vocab_size()));
    for (int c = 0; c < n_captures; ++c) {
      const int layer = n_captures == 1 ? 0 : c * (info.n_layers() - 1) / (n_captures - 1);
      r.add_captures()->set_hook(absl::StrCat("blocks.", layer, ".hook_resid_post"));
    }
    r.mutable_outputs()->set_logits(pb::LOGITS_LAST);
    return r;
  };
  auto one_run = [](pb::Glassbox::Stub& stub, const pb::RunRequest& r) {
    grpc::ClientContext context;
    const auto start = Clock::now();
    auto reader = stub.Run(&context, r);
    pb::RunResponse response;
    Sample sample{};
    double forward = 0;
    while (reader->Read(&response)) {
      if (response.has_summary()) {
        forward = response.summary().timings().forward_seconds();
        sample.batch = response.summary().timings().batch_requests();
      }
    }
    sample.ok = reader->Finish().ok();
    sample.latency_s = std::chrono::duration<double>(Clock::now() - start).count();
    sample.overhead_s = sample.latency_s - forward;
    sample.forward_s = forward;
    return sample;
  };

  // Warm up the server (and each connection) before the clock starts.
  std::vector<std::unique_ptr<pb::Glassbox::Stub>> stubs;
  for (int c = 0; c < clients; ++c) {
    grpc::ChannelArguments args;
    args.SetInt("glassbox.bench.client", c);  // a connection of its own
    stubs.push_back(pb::Glassbox::NewStub(
        grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args)));
    std::mt19937 rng(c);
    one_run(*stubs.back(), request_for(rng));
  }

  std::vector<std::vector<Sample>> samples(clients);
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      std::mt19937 rng(1000 + c);
      for (int i = 0; i < per_client; ++i)
        samples[c].push_back(one_run(*stubs[c], request_for(rng)));
    });
  }
  for (std::thread& t : threads) t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();

  std::vector<double> latency, overhead, forward;
  double batch_sum = 0;
  int failed = 0;
  for (const auto& client : samples) {
    for (const Sample& s : client) {
      if (!s.ok) {
        ++failed;
        continue;
      }
      latency.push_back(s.latency_s);
      overhead.push_back(s.overhead_s);
      forward.push_back(s.forward_s);
      batch_sum += s.batch;
    }
  }
  const double done = static_cast<double>(latency.size());
  std::printf(
      "{\"clients\": %d, \"requests\": %d, \"failed\": %d, \"requests_per_s\": %.1f, "
      "\"p50_ms\": %.2f, \"p99_ms\": %.2f, \"mean_batch\": %.2f, \"forward_p50_ms\": %.2f, "
      "\"overhead_p50_ms\": %.3f}\n",
      clients, clients * per_client, failed, done / wall, 1e3 * Percentile(latency, 0.5),
      1e3 * Percentile(latency, 0.99), done > 0 ? batch_sum / done : 0,
      1e3 * Percentile(forward, 0.5), 1e3 * Percentile(overhead, 0.5));
  return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return Main();
}
