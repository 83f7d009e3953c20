// Capture streaming over loopback: one large capture through glassboxd's Run beside a raw-bytes
// gRPC stream of the same size and chunking (the floor gRPC itself sets), and requests per
// second for small runs. Both servers run in this process on 127.0.0.1.
//
//   stream_bench --model DIR [--rows 64] [--seq 32] [--small_requests 300]
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/raw_stream.grpc.pb.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/service/glassbox_service.h"

ABSL_FLAG(std::string, model, "", "HuggingFace model directory to serve");
ABSL_FLAG(int, rows, 64, "batch rows in the large capture");
ABSL_FLAG(int, seq, 32, "tokens per row");
ABSL_FLAG(std::string, capture, "blocks.*.hook_resid_post", "what the large run captures");
ABSL_FLAG(int, repeats, 5, "large transfers per side");
ABSL_FLAG(int, small_requests, 300, "small runs for the requests/s figure");

namespace glassbox {
namespace {

using Clock = std::chrono::steady_clock;
namespace pb = ::glassbox::v1;

class RawStreamService final : public glassbox::bench::RawStream::Service {
  grpc::Status Stream(grpc::ServerContext*, const glassbox::bench::RawRequest* request,
                      grpc::ServerWriter<glassbox::bench::RawChunk>* writer) override {
    glassbox::bench::RawChunk chunk;
    std::string payload(request->chunk_bytes(), 'x');
    for (int64_t sent = 0; sent < request->total_bytes(); sent += request->chunk_bytes()) {
      chunk.set_data(payload.data(), std::min<int64_t>(request->chunk_bytes(), request->total_bytes() - sent));
      if (!writer->Write(chunk)) break;
    }
    return grpc::Status::OK;
  }
};

double Seconds(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

int Main() {
  // Loaded on a thread that ends, as glassboxd does, so that the scheduler worker's OpenMP team
  // is the only one (docs/service.md, "CPU threads").
  absl::StatusOr<std::unique_ptr<ModelStore>> store;
  std::thread([&] {
    store = ModelStore::Load({{"m", absl::GetFlag(FLAGS_model)}}, std::make_shared<CpuBackend>(),
                             "cpu");
  }).join();
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return 1;
  }
  Scheduler scheduler;
  ServiceLimits limits;
  limits.max_tokens_per_request = 1 << 22;
  GlassboxService service(**store, scheduler, limits);
  RawStreamService raw;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  builder.RegisterService(&raw);
  auto server = builder.BuildAndStart();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
  auto stub = pb::Glassbox::NewStub(channel);
  auto raw_stub = glassbox::bench::RawStream::NewStub(channel);

  pb::RunRequest large;
  large.set_model("m");
  const int64_t vocab = (*store)->models().begin()->second->model->config().vocab_size;
  for (int r = 0; r < absl::GetFlag(FLAGS_rows); ++r) {
    auto* row = large.mutable_inputs()->add_token_ids();
    for (int s = 0; s < absl::GetFlag(FLAGS_seq); ++s) row->add_ids(static_cast<int32_t>((r * 131 + s * 7) % vocab));
  }
  large.add_captures()->set_hook(absl::GetFlag(FLAGS_capture));

  // Glassbox: bytes received per second of wall time, and the forward pass's share of it.
  int64_t bytes = 0;
  double glassbox_seconds = 0;
  for (int i = 0; i < absl::GetFlag(FLAGS_repeats); ++i) {
    grpc::ClientContext context;
    const auto start = Clock::now();
    auto reader = stub->Run(&context, large);
    pb::RunResponse response;
    bytes = 0;
    while (reader->Read(&response)) {
      if (response.has_chunk()) bytes += static_cast<int64_t>(response.chunk().data().size());
    }
    if (!reader->Finish().ok()) return 1;
    glassbox_seconds += Seconds(start);
  }
  double raw_seconds = 0;
  for (int i = 0; i < absl::GetFlag(FLAGS_repeats); ++i) {
    grpc::ClientContext context;
    glassbox::bench::RawRequest request;
    request.set_total_bytes(bytes);
    request.set_chunk_bytes(1 << 20);
    const auto start = Clock::now();
    auto reader = raw_stub->Stream(&context, request);
    glassbox::bench::RawChunk chunk;
    while (reader->Read(&chunk)) {
    }
    if (!reader->Finish().ok()) return 1;
    raw_seconds += Seconds(start);
  }
  // The same forward pass and captures with no gRPC at all: the engine alone, values kept in
  // memory. What Run adds beyond this is the cost of cutting, chunking and streaming.
  double engine_seconds = 0;
  {
    const ServedModel& served = *(*store)->models().begin()->second;
    const int64_t rows = absl::GetFlag(FLAGS_rows), seq = absl::GetFlag(FLAGS_seq);
    std::vector<int32_t> ids;
    for (const auto& r : large.inputs().token_ids()) ids.insert(ids.end(), r.ids().begin(), r.ids().end());
    HookPlan plan(served.model->hooks());
    if (!plan.Capture(absl::GetFlag(FLAGS_capture)).ok()) return 1;
    struct Keep : CaptureSink {
      absl::Status OnCapture(HookId, const HookInfo&, const Tensor& v) override {
        kept.push_back(v);
        return absl::OkStatus();
      }
      std::vector<Tensor> kept;
    };
    for (int i = 0; i < absl::GetFlag(FLAGS_repeats); ++i) {
      Keep sink;
      const auto start = Clock::now();
      if (!served.model->Forward({.tokens = Tensor::FromHost(ids, {rows, seq})}, plan, &sink,
                                 {.logits = LogitsMode::kNone}).ok()) return 1;
      engine_seconds += Seconds(start);
    }
  }
  const int repeats = absl::GetFlag(FLAGS_repeats);
  const double mb = static_cast<double>(bytes) / (1 << 20) * repeats;
  std::printf("large capture: %.1f MiB per run (%s, %d rows x %d tokens), %d runs\n", mb / repeats,
              absl::GetFlag(FLAGS_capture).c_str(), absl::GetFlag(FLAGS_rows), absl::GetFlag(FLAGS_seq), repeats);
  std::printf("  raw gRPC byte stream, same size and 1 MiB chunks   %8.1f MiB/s\n", mb / raw_seconds);
  std::printf("  glassbox Run, end to end                            %8.1f MiB/s  (%.2fx the raw stream)\n",
              mb / glassbox_seconds, raw_seconds / glassbox_seconds);
  std::printf("  engine alone, no gRPC (forward pass + captures)     %8.1f MiB/s\n", mb / engine_seconds);
  std::printf("  => Run costs %.0f%% more than the engine alone; the raw stream of the same bytes takes %.0f%% of the engine time\n",
              100 * (glassbox_seconds - engine_seconds) / engine_seconds, 100 * raw_seconds / engine_seconds);

  pb::RunRequest small;
  small.set_model("m");
  auto* row = small.mutable_inputs()->add_token_ids();
  for (int s = 0; s < 8; ++s) row->add_ids(s);
  small.mutable_outputs()->set_logits(pb::LOGITS_LAST);
  const int n = absl::GetFlag(FLAGS_small_requests);
  const auto start = Clock::now();
  for (int i = 0; i < n; ++i) {
    grpc::ClientContext context;
    auto reader = stub->Run(&context, small);
    pb::RunResponse response;
    while (reader->Read(&response)) {
    }
    if (!reader->Finish().ok()) return 1;
  }
  std::printf("small runs (1 x 8 tokens, last logits): %.0f requests/s (sequential, one client)\n", n / Seconds(start));
  server->Shutdown();
  scheduler.Shutdown();
  return 0;
}

}  // namespace
}  // namespace glassbox

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return glassbox::Main();
}
