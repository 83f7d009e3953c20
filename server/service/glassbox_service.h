// The gRPC handlers. They authenticate (later), validate and translate requests, queue forward
// passes on the device's executor, and stream results back with bounded buffering.
#pragma once

#include <atomic>
#include <memory>

#include "glassbox/v1/glassbox.grpc.pb.h"
#include "server/service/executor.h"
#include "server/service/model_store.h"
#include "server/service/run_plan.h"

namespace glassbox {

class GlassboxService final : public glassbox::v1::Glassbox::Service {
 public:
  GlassboxService(const ModelStore& store, Executor& executor, ServiceLimits limits)
      : store_(store), executor_(executor), limits_(limits) {}

  // New runs are refused with UNAVAILABLE; in-flight ones finish.
  void StartDraining() { draining_ = true; }

  grpc::Status ListModels(grpc::ServerContext* context, const glassbox::v1::ListModelsRequest* request,
                          glassbox::v1::ListModelsResponse* response) override;
  grpc::Status GetModelInfo(grpc::ServerContext* context,
                            const glassbox::v1::GetModelInfoRequest* request,
                            glassbox::v1::ModelInfo* response) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const glassbox::v1::TokenizeRequest* request,
                        glassbox::v1::TokenizeResponse* response) override;
  grpc::Status Detokenize(grpc::ServerContext* context,
                          const glassbox::v1::DetokenizeRequest* request,
                          glassbox::v1::DetokenizeResponse* response) override;
  grpc::Status Run(grpc::ServerContext* context, const glassbox::v1::RunRequest* request,
                   grpc::ServerWriter<glassbox::v1::RunResponse>* writer) override;

 private:
  const ModelStore& store_;
  Executor& executor_;
  const ServiceLimits limits_;
  std::atomic<bool> draining_{false};
};

}  // namespace glassbox
