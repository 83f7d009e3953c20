// An in-process GlassboxService on a loopback port, and a Run read to the end, for the service
// tests.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/service/glassbox_service.h"
#include "server/service/request_observer.h"

namespace glassbox::testing {

// Owns the store, scheduler, service and server; serves until destroyed.
class InProcessServer {
 public:
  // `keys` (not owned) turns on API keys, as glassboxd --api_keys does.
  InProcessServer(std::unique_ptr<ModelStore> store, const ServiceLimits& limits,
                  RunCache::Clock clock = &absl::Now, const ApiKeyStore* keys = nullptr,
                  SchedulerOptions scheduler = {})
      : store_(std::move(store)),
        scheduler_(scheduler),
        service_(*store_, scheduler_, limits, std::move(clock), keys) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    // The request observer glassboxd installs, without the log: every test goes through it.
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> observers;
    observers.push_back(std::make_unique<RequestObserverFactory>(&service_.metrics(), false));
    builder.experimental().SetInterceptorCreators(std::move(observers));
    server_ = builder.BuildAndStart();
    EXPECT_NE(port, 0);
    target_ = "127.0.0.1:" + std::to_string(port);
    channel_ = grpc::CreateChannel(target_, grpc::InsecureChannelCredentials());
  }
  ~InProcessServer() {
    server_->Shutdown();
    scheduler_.Shutdown();
  }

  const ModelStore& store() const { return *store_; }
  GlassboxService& service() { return service_; }
  // The device's queue, for tests that hold it (a task that waits keeps later ones queued).
  Scheduler& scheduler() { return scheduler_; }
  // Occupies the device's worker until the returned function is called: later work stays
  // queued. Returns once the worker holds.
  std::function<void()> HoldDevice() {
    auto started = std::make_shared<std::promise<void>>();
    auto unblock = std::make_shared<std::promise<void>>();
    std::shared_future<void> gate = unblock->get_future().share();
    auto task = std::make_shared<FunctionTask>(
        TaskInfo{.owner = "(test)", .rpc = "hold"},
        [started, gate] {
          started->set_value();
          gate.wait();
        },
        [](const absl::Status&) {});
    EXPECT_TRUE(scheduler_.Submit(task).ok());
    started->get_future().wait();
    return [unblock] { unblock->set_value(); };
  }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const std::string& target() const { return target_; }  // host:port, for a channel of one's own

 private:
  std::unique_ptr<ModelStore> store_;
  Scheduler scheduler_;
  GlassboxService service_;
  std::unique_ptr<grpc::Server> server_;
  std::string target_;
  std::shared_ptr<grpc::Channel> channel_;
};

// A Run of `model` over the rows of `ids` ([batch, pos] i32).
inline glassbox::v1::RunRequest RunRequestFor(const std::string& model, const Tensor& ids) {
  glassbox::v1::RunRequest request;
  request.set_model(model);
  for (int64_t b = 0; b < ids.dim(0); ++b) {
    auto* row = request.mutable_inputs()->add_token_ids();
    for (int64_t s = 0; s < ids.dim(1); ++s) row->add_ids(ids.data<int32_t>()[b * ids.dim(1) + s]);
  }
  return request;
}

struct Received {
  glassbox::v1::Header header;
  std::vector<std::string> order;            // tensor names in stream order
  std::map<std::string, std::string> bytes;  // by tensor name
  glassbox::v1::Summary summary;
  grpc::Status status;
};

// Runs `request` and reads the whole stream; every chunk must continue its tensor.
inline Received ReadRun(const std::shared_ptr<grpc::Channel>& channel,
                        const glassbox::v1::RunRequest& request) {
  auto stub = glassbox::v1::Glassbox::NewStub(channel);
  grpc::ClientContext context;
  auto reader = stub->Run(&context, request);
  Received received;
  glassbox::v1::RunResponse response;
  std::map<int, std::string> names;
  while (reader->Read(&response)) {
    if (response.has_header()) {
      received.header = response.header();
      for (const auto& t : received.header.tensors()) names[t.id()] = t.name();
    } else if (response.has_chunk()) {
      const std::string& name = names.at(response.chunk().capture_id());
      std::string& buffer = received.bytes[name];
      EXPECT_EQ(response.chunk().offset(), static_cast<int64_t>(buffer.size()));
      buffer += response.chunk().data();
      if (received.order.empty() || received.order.back() != name) received.order.push_back(name);
    } else {
      received.summary = response.summary();
    }
  }
  received.status = reader->Finish();
  return received;
}

}  // namespace glassbox::testing
