// The gRPC service in-process on a loopback port, driven through the generated stub: streamed
// captures equal the reference values, and every kind of bad request gets its precise status
// while the server keeps serving.
#include <grpcpp/grpcpp.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <thread>

#include "base/float16.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/generate.h"
#include "server/service/glassbox_service.h"
#include "tests/service/service_harness.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::glassbox::testing::FixturePath;
using ::glassbox::testing::InProcessServer;
using ::glassbox::testing::NormRelativeError;
using ::glassbox::testing::ReadAllTensors;
using ::glassbox::testing::ReadRun;
using ::glassbox::testing::RunRequestFor;
using ::glassbox::testing::Received;
using ::testing::HasSubstr;
namespace pb = ::glassbox::v1;

void AddIds(pb::TokenSequence* seq, std::initializer_list<int32_t> ids) {
  for (int32_t id : ids) seq->add_ids(id);
}

class ServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto store = ModelStore::Load({{"gpt2", FixturePath("models/tiny-gpt2")},
                                   {"llama", FixturePath("models/tiny-llama")}},
                                  std::make_shared<CpuBackend>(), "cpu");
    ASSERT_TRUE(store.ok()) << store.status();
    ServiceLimits limits;
    limits.max_tokens_per_request = 64;
    limits.max_response_bytes = 256 << 10;
    limits.stream_buffer_bytes = 64 << 10;
    server_ = new InProcessServer(*std::move(store), limits);
    channel_ = &server_->channel();
  }
  static void TearDownTestSuite() { delete server_; }

  static Received Run(const pb::RunRequest& request, uint32_t chunk_bytes = 0) {
    pb::RunRequest r = request;
    if (chunk_bytes) r.set_chunk_bytes(chunk_bytes);
    return ReadRun(*channel_, r);
  }

  static Tensor AsTensor(const std::string& bytes, const Shape& shape) {
    Tensor t = Tensor::EmptyHost(DType::kF32, shape);
    EXPECT_EQ(bytes.size(), t.nbytes());
    std::memcpy(t.raw_data(), bytes.data(), std::min(bytes.size(), t.nbytes()));
    return t;
  }

  static inline InProcessServer* server_;
  static inline const std::shared_ptr<grpc::Channel>* channel_;
};

TEST_F(ServiceTest, StreamedCapturesEqualTransformerLens) {
  auto expected = ReadAllTensors(FixturePath("expected/tiny-llama.safetensors"));
  const Tensor& ids = expected.at("unpadded.input_ids");
  pb::RunRequest request = RunRequestFor("llama", ids);
  request.add_captures()->set_hook("blocks.*.hook_resid_post");
  request.add_captures()->set_hook("blocks.1.attn.hook_pattern");
  request.mutable_outputs()->set_logits(pb::LOGITS_ALL);
  request.mutable_outputs()->set_loss_per_token(true);
  Received got = Run(request, /*chunk_bytes=*/1000);  // small chunks: many per tensor
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();

  std::vector<std::string> names;
  for (const auto& t : got.header.tensors()) names.push_back(t.name());
  EXPECT_THAT(names, ::testing::ElementsAre("blocks.0.hook_resid_post", "blocks.1.attn.hook_pattern",
                                            "blocks.1.hook_resid_post", "logits", "loss_per_token"));
  for (const auto& t : got.header.tensors()) {
    SCOPED_TRACE(t.name());
    Shape shape(t.shape().begin(), t.shape().end());
    const std::string key = t.name() == "logits" || t.name() == "loss_per_token"
                                ? "unpadded.hf." + t.name() : "unpadded.tl." + t.name();
    EXPECT_LE(NormRelativeError(AsTensor(got.bytes.at(t.name()), shape), expected.at(key)), 1e-5);
  }
  EXPECT_GT(got.summary.bytes_sent(), 0);
  EXPECT_GT(got.summary.timings().forward_seconds(), 0);
}

TEST_F(ServiceTest, SelectionsReductionsAndDtypes) {
  auto expected = ReadAllTensors(FixturePath("expected/tiny-gpt2.safetensors"));
  const Tensor& ids = expected.at("unpadded.input_ids");  // [3, 11]
  pb::RunRequest request = RunRequestFor("gpt2", ids);
  auto* last = request.add_captures();
  last->set_hook("blocks.1.hook_resid_post");
  last->add_positions(-1);
  auto* heads = request.add_captures();
  heads->set_hook("blocks.0.attn.hook_z");
  heads->add_heads(2);
  heads->set_dtype(pb::DTYPE_BF16);
  auto* mean = request.add_captures();
  mean->set_hook("blocks.0.hook_mlp_out");
  mean->set_reduction(pb::REDUCTION_MEAN_POS);
  auto* top = request.add_captures();
  top->set_hook("blocks.1.mlp.hook_post");
  top->set_reduction(pb::REDUCTION_TOP_K);
  top->set_k(3);
  Received got = Run(request);
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();

  const Tensor& resid = expected.at("unpadded.tl.blocks.1.hook_resid_post");  // [3, 11, 64]
  Tensor last_ref = Tensor::EmptyHost(DType::kF32, {3, 1, 64});
  for (int b = 0; b < 3; ++b) std::memcpy(last_ref.data<float>() + b * 64, resid.data<float>() + (b * 11 + 10) * 64, 256);
  EXPECT_LE(NormRelativeError(AsTensor(got.bytes.at("blocks.1.hook_resid_post"), {3, 1, 64}), last_ref), 1e-5);

  const std::string& z = got.bytes.at("blocks.0.attn.hook_z");  // bf16 [3, 11, 1, 16]
  ASSERT_EQ(z.size(), 3u * 11 * 16 * 2);
  const Tensor& z_ref = expected.at("unpadded.tl.blocks.0.attn.hook_z");  // [3, 11, 4, 16]
  for (int i = 0; i < 3 * 11; ++i) {
    for (int e = 0; e < 16; ++e) {
      uint16_t bits;
      std::memcpy(&bits, z.data() + (i * 16 + e) * 2, 2);
      EXPECT_NEAR(BFloat16ToFloat(bits), z_ref.data<float>()[(i * 4 + 2) * 16 + e],
                  std::abs(z_ref.data<float>()[(i * 4 + 2) * 16 + e]) * 1e-2 + 1e-6);
    }
  }

  const Tensor& mlp = expected.at("unpadded.tl.blocks.0.hook_mlp_out");
  Tensor mean_ref = Tensor::ZerosHost(DType::kF32, {3, 64});
  for (int b = 0; b < 3; ++b)
    for (int s = 0; s < 11; ++s)
      for (int d = 0; d < 64; ++d) mean_ref.data<float>()[b * 64 + d] += mlp.data<float>()[(b * 11 + s) * 64 + d] / 11;
  EXPECT_LE(NormRelativeError(AsTensor(got.bytes.at("blocks.0.hook_mlp_out"), {3, 64}), mean_ref), 1e-5);

  const std::string& indices = got.bytes.at("blocks.1.mlp.hook_post.indices");
  const std::string& values = got.bytes.at("blocks.1.mlp.hook_post");
  const Tensor& post = expected.at("unpadded.tl.blocks.1.mlp.hook_post");  // [3, 11, 256]
  for (int row = 0; row < 33; ++row) {
    std::vector<float> ref(post.data<float>() + row * 256, post.data<float>() + (row + 1) * 256);
    std::sort(ref.rbegin(), ref.rend());
    for (int j = 0; j < 3; ++j) {
      int32_t index;
      float value;
      std::memcpy(&index, indices.data() + (row * 3 + j) * 4, 4);
      std::memcpy(&value, values.data() + (row * 3 + j) * 4, 4);
      EXPECT_NEAR(value, ref[j], 1e-4);
      EXPECT_NEAR(post.data<float>()[row * 256 + index], ref[j], 1e-4);
    }
  }
}

TEST_F(ServiceTest, RaggedBatchEqualsSingleRows) {
  pb::RunRequest batch;
  batch.set_model("llama");
  for (const std::vector<int32_t>& row : {std::vector<int32_t>{5, 9, 11, 13, 200}, std::vector<int32_t>{7, 8}}) {
    batch.mutable_inputs()->add_token_ids()->mutable_ids()->Add(row.begin(), row.end());
  }
  batch.mutable_outputs()->set_logits(pb::LOGITS_LAST);
  batch.mutable_outputs()->add_target_tokens(3);
  Received both = Run(batch);
  ASSERT_TRUE(both.status.ok()) << both.status.error_message();
  EXPECT_THAT(both.header.sequence_lengths(), ::testing::ElementsAre(5, 2));
  for (int r = 0; r < 2; ++r) {
    pb::RunRequest single;
    single.set_model("llama");
    *single.mutable_inputs()->add_token_ids() = batch.inputs().token_ids(r);
    single.mutable_outputs()->set_logits(pb::LOGITS_LAST);
    Received one = Run(single);
    ASSERT_TRUE(one.status.ok());
    Tensor a = AsTensor(both.bytes.at("logits"), {2, 300}).Slice0(r, r + 1);
    Tensor b = AsTensor(one.bytes.at("logits"), {1, 300});
    EXPECT_LE(NormRelativeError(a, b), 1e-6);
  }
}

// Interventions over gRPC: the steering case of the TransformerLens fixtures.
TEST_F(ServiceTest, InterventionsEqualTransformerLens) {
  auto inputs = ReadAllTensors(FixturePath("expected/tiny-llama.safetensors"));
  auto expected = ReadAllTensors(FixturePath("expected/tiny-llama.interventions.safetensors"));
  pb::RunRequest request = RunRequestFor("llama", inputs.at("unpadded.input_ids"));
  auto* steer = request.add_interventions();
  steer->set_hook("blocks.1.hook_resid_pre");
  steer->set_kind(pb::INTERVENTION_ADD);
  steer->add_positions(-1);
  steer->set_coefficient(2.5f);
  for (float v : expected.at("steer_last.value").span<float>()) steer->add_value(v);
  request.mutable_outputs()->set_logits(pb::LOGITS_ALL);
  Received got = Run(request);
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_LE(NormRelativeError(AsTensor(got.bytes.at("logits"), {3, 11, 300}), expected.at("steer_last.logits")), 1e-5);

  pb::RunRequest zero = RunRequestFor("llama", inputs.at("unpadded.input_ids"));
  auto* ablate = zero.add_interventions();
  ablate->set_hook("blocks.0.attn.hook_z");
  ablate->set_kind(pb::INTERVENTION_ZERO);
  ablate->add_heads(1);
  zero.mutable_outputs()->set_logits(pb::LOGITS_ALL);
  got = Run(zero);
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_LE(NormRelativeError(AsTensor(got.bytes.at("logits"), {3, 11, 300}), expected.at("zero_head.logits")), 1e-5);
}

pb::Inputs InputsOf(const Tensor& ids) {
  pb::Inputs inputs;
  for (int64_t b = 0; b < ids.dim(0); ++b) {
    auto* row = inputs.add_token_ids();
    for (int64_t s = 0; s < ids.dim(1); ++s) row->add_ids(ids.data<int32_t>()[b * ids.dim(1) + s]);
  }
  return inputs;
}

Tensor FromArray(const pb::Array& array) {
  Shape shape(array.shape().begin(), array.shape().end());
  return Tensor::FromHost(std::span<const float>(array.values().data(), array.values_size()), shape);
}

// The analysis RPCs return what the engine's analyses compute (checked against TransformerLens
// in tests/engine), and reject malformed requests.
TEST_F(ServiceTest, GradientsOverGrpcEqualTransformerLensAutograd) {
  auto stub = pb::Glassbox::NewStub(*channel_);
  auto expected = ReadAllTensors(FixturePath("expected/tiny-gpt2.gradients.safetensors"));
  pb::GradientsRequest request;
  request.set_model("gpt2");
  *request.mutable_inputs() = InputsOf(expected.at("tokens"));
  request.mutable_metric()->set_kind(pb::GradientMetric::LOG_PROB);
  request.mutable_metric()->set_token_a(29);
  request.mutable_metric()->set_position(3);
  request.add_hooks("blocks.*.hook_resid_pre");
  request.add_hooks("blocks.1.attn.hook_pattern");
  request.add_hooks("blocks.0.hook_resid_pre");  // named twice: returned once
  pb::GradientsResponse response;
  grpc::ClientContext context;
  grpc::Status s = stub->Gradients(&context, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(response.metric_size(), 2);
  for (int b = 0; b < 2; ++b) {
    EXPECT_NEAR(response.metric(b), expected.at("log_prob.value").data<float>()[b], 1e-4);
  }
  ASSERT_EQ(response.gradients_size(), 3);  // in forward order
  EXPECT_EQ(response.gradients(0).hook(), "blocks.0.hook_resid_pre");
  EXPECT_EQ(response.gradients(1).hook(), "blocks.1.hook_resid_pre");
  EXPECT_EQ(response.gradients(2).hook(), "blocks.1.attn.hook_pattern");
  EXPECT_THAT(response.gradients(2).gradient().dim_names(),
              ::testing::ElementsAre("batch", "head_index", "query_pos", "key_pos"));
  for (const pb::HookGradient& g : response.gradients()) {
    EXPECT_LE(NormRelativeError(FromArray(g.gradient()), expected.at("log_prob.grad." + g.hook())),
              1e-5)
        << g.hook();
  }
  // Rows of different lengths run right-padded: the longer row's gradients are its own (row 1
  // is unchanged, the metric at position 3 of each row's real tokens); a position past the
  // shorter row is refused.
  request.mutable_inputs()->mutable_token_ids(0)->add_ids(3);
  grpc::ClientContext ragged;
  s = stub->Gradients(&ragged, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_NEAR(response.metric(1), expected.at("log_prob.value").data<float>()[1], 1e-4);
  EXPECT_THAT(response.gradients(0).gradient().shape(), ::testing::ElementsAre(2, 8, 64));
  request.mutable_metric()->set_position(7);
  grpc::ClientContext past;
  s = stub->Gradients(&past, request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("the metric's position 7 is outside rows of 7 tokens (row 1)"));
  // Every architecture has gradients (tests/engine/gradients_test.cc checks them against torch).
  request.set_model("llama");
  request.mutable_metric()->set_position(3);
  grpc::ClientContext llama;
  s = stub->Gradients(&llama, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(response.gradients(0).gradient().shape(), ::testing::ElementsAre(2, 8, 64));
}

TEST_F(ServiceTest, IntegratedGradientsOverGrpcEqualTorch) {
  auto stub = pb::Glassbox::NewStub(*channel_);
  auto expected = ReadAllTensors(FixturePath("expected/tiny-gpt2.integrated_gradients.safetensors"));
  pb::IntegratedGradientsRequest request;
  request.set_model("gpt2");
  *request.mutable_inputs() = InputsOf(expected.at("tokens"));
  request.mutable_metric()->set_token_a(17);
  request.mutable_metric()->set_token_b(42);
  request.set_hook("blocks.0.attn.hook_z");
  request.set_steps(16);
  pb::IntegratedGradientsResponse response;
  grpc::ClientContext context;
  grpc::Status s = stub->IntegratedGradients(&context, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(response.attributions().dim_names(),
              ::testing::ElementsAre("batch", "pos", "head_index", "d_head"));
  EXPECT_LE(NormRelativeError(FromArray(response.attributions()),
                              expected.at("blocks.0.attn.hook_z.ig16")),
            2e-5);
  ASSERT_EQ(response.baseline_metric_size(), 2);
  EXPECT_NEAR(response.baseline_metric(1),
              expected.at("blocks.0.attn.hook_z.baseline_metric").data<float>()[1], 1e-4);
  // The path's 32 rows go in passes of at most --max_tokens tokens.
  EXPECT_GE(response.backward_passes(), 1);
  EXPECT_EQ(response.forward_passes(), response.backward_passes() + 2);

  request.set_method(pb::IntegratedGradientsRequest::INPUT_X_GRADIENT);
  request.set_hook("hook_embed");
  grpc::ClientContext ixg;
  s = stub->IntegratedGradients(&ixg, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_LE(NormRelativeError(FromArray(response.attributions()),
                              expected.at("hook_embed.input_x_grad")),
            2e-5);
}

TEST_F(ServiceTest, JacobianOverGrpcEqualsTorch) {
  auto stub = pb::Glassbox::NewStub(*channel_);
  auto expected = ReadAllTensors(FixturePath("expected/tiny-gpt2.jacobians.safetensors"));
  pb::JacobianRequest request;
  request.set_model("gpt2");
  *request.mutable_inputs() = InputsOf(expected.at("tokens"));
  request.set_in_hook("blocks.0.attn.hook_z");
  request.set_out_hook("blocks.1.hook_resid_mid");
  for (int b = 0; b < 2; ++b) {
    request.add_in_positions(expected.at("z_to_mid.p").data<int32_t>()[b]);
    request.add_out_positions(expected.at("z_to_mid.q").data<int32_t>()[b]);
  }
  pb::JacobianResponse response;
  grpc::ClientContext context;
  grpc::Status s = stub->Jacobian(&context, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(response.jacobian().shape(), ::testing::ElementsAre(2, 64, 64));
  EXPECT_LE(NormRelativeError(FromArray(response.jacobian()), expected.at("z_to_mid.jacobian")), 1e-5);
  EXPECT_THAT(response.in_value().shape(), ::testing::ElementsAre(2, 64));
  EXPECT_GE(response.passes(), 1);
}

TEST_F(ServiceTest, AnalysesOverGrpc) {
  auto stub = pb::Glassbox::NewStub(*channel_);
  auto patching = ReadAllTensors(FixturePath("expected/tiny-gpt2.patching.safetensors"));
  {
    pb::PatchingSweepRequest request;
    request.set_model("gpt2");
    *request.mutable_clean() = InputsOf(patching.at("clean"));
    *request.mutable_corrupted() = InputsOf(patching.at("corrupted"));
    request.set_kind(pb::SWEEP_HEAD_OUT_BY_POS);
    request.mutable_metric()->set_token_a(patching.at("tokens").data<int32_t>()[0]);
    request.mutable_metric()->set_token_b(patching.at("tokens").data<int32_t>()[1]);
    pb::PatchingSweepResponse response;
    grpc::ClientContext context;
    grpc::Status s = stub->PatchingSweep(&context, request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_THAT(response.values().dim_names(), ::testing::ElementsAre("layer", "pos", "head"));
    EXPECT_LE(NormRelativeError(FromArray(response.values()), patching.at("head_out_by_pos.values")), 1e-5);

    request.set_kind(pb::SWEEP_ATTN_HEAD_PATTERN_ALL_POS);
    grpc::ClientContext pattern_context;
    s = stub->PatchingSweep(&pattern_context, request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_THAT(response.values().dim_names(), ::testing::ElementsAre("layer", "head"));
    EXPECT_LE(NormRelativeError(FromArray(response.values()), patching.at("pattern_all_pos.values")), 1e-5);

    // Attribution patching: the same request estimated from 2 forward and 1 backward passes,
    // equal to (clean - corrupted) . grad from torch (the engine test checks every kind).
    auto atp = ReadAllTensors(FixturePath("expected/tiny-gpt2.attribution.safetensors"));
    request.set_method(pb::PATCHING_ATTRIBUTION);
    request.set_kind(pb::SWEEP_HEAD_OUT_ALL_POS);
    grpc::ClientContext atp_context;
    s = stub->PatchingSweep(&atp_context, request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(response.forward_passes(), 2);
    EXPECT_EQ(response.backward_passes(), 1);
    Tensor estimate = FromArray(response.normalized());
    for (float& v : estimate.span<float>()) {
      v *= static_cast<float>(response.clean_metric() - response.corrupted_metric());
    }
    EXPECT_LE(NormRelativeError(estimate, atp.at("logit_diff.head_out_all_pos.atp")), 2e-5);

    request.set_model("llama");
    grpc::ClientContext llama_atp;
    s = stub->PatchingSweep(&llama_atp, request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(response.backward_passes(), 1);
    request.set_model("gpt2");
    request.set_method(pb::PATCHING_EXACT);

    request.mutable_corrupted()->mutable_token_ids(0)->add_ids(1);
    grpc::ClientContext bad;
    EXPECT_EQ(stub->PatchingSweep(&bad, request, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  auto analyses = ReadAllTensors(FixturePath("expected/tiny-gpt2.analyses.safetensors"));
  auto inputs = ReadAllTensors(FixturePath("expected/tiny-gpt2.safetensors"));
  {
    pb::DirectLogitAttributionRequest request;
    request.set_model("gpt2");
    *request.mutable_inputs() = InputsOf(inputs.at("unpadded.input_ids"));
    request.set_token(analyses.at("dla.tokens").data<int32_t>()[0]);
    request.set_minus_token(analyses.at("dla.tokens").data<int32_t>()[1]);
    pb::DirectLogitAttributionResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(stub->DirectLogitAttribution(&context, request, &response).ok());
    EXPECT_LE(NormRelativeError(FromArray(response.attributions()), analyses.at("dla.diff")), 1e-5);
    EXPECT_EQ(response.labels(2), "L0H0");
  }
  {
    pb::LogitLensRequest request;
    request.set_model("gpt2");
    *request.mutable_inputs() = InputsOf(inputs.at("unpadded.input_ids"));
    request.add_target_tokens(17);
    pb::LogitLensResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(stub->LogitLens(&context, request, &response).ok());
    EXPECT_EQ(response.labels_size(), 3);
    EXPECT_THAT(response.top_tokens().shape(), ::testing::ElementsAre(3, 3, 11, 5));
    const Tensor& lp = analyses.at("logit_lens.log_probs");
    for (int i = 0; i < 3 * 3 * 11; ++i) {
      ASSERT_NEAR(response.target_log_probs().values(i), lp.data<float>()[i * 300 + 17], 1e-4);
    }
    request.add_target_tokens(300);
    grpc::ClientContext bad;
    EXPECT_EQ(stub->LogitLens(&bad, request, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    pb::AttentionNormsRequest request;
    request.set_model("gpt2");
    *request.mutable_inputs() = InputsOf(inputs.at("unpadded.input_ids"));
    request.add_layers(1);
    pb::AttentionNormsResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(stub->AttentionNorms(&context, request, &response).ok());
    ASSERT_EQ(response.layers_size(), 1);
    EXPECT_LE(NormRelativeError(FromArray(response.layers(0).layer_norms()), analyses.at("attn_norms.1.layer")), 1e-5);
  }
}

// With stop_at_layer, a glob keeps only the hooks the shortened pass reaches.
TEST_F(ServiceTest, StopAtLayerTrimsGlobs) {
  pb::RunRequest request;
  request.set_model("gpt2");
  AddIds(request.mutable_inputs()->add_token_ids(), {1, 2, 3});
  request.set_stop_at_layer(1);
  request.add_captures()->set_hook("blocks.*.hook_resid_pre");
  Received got = Run(request);
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  ASSERT_EQ(got.header.tensors_size(), 1);
  EXPECT_EQ(got.header.tensors(0).name(), "blocks.0.hook_resid_pre");
}

TEST_F(ServiceTest, ModelsInfoAndErrors) {
  auto stub = pb::Glassbox::NewStub(*channel_);
  {
    grpc::ClientContext context;
    pb::ListModelsResponse models;
    ASSERT_TRUE(stub->ListModels(&context, {}, &models).ok());
    ASSERT_EQ(models.models_size(), 2);
    EXPECT_EQ(models.models(0).name(), "gpt2");
  }
  {
    grpc::ClientContext context;
    pb::GetModelInfoRequest request;
    request.set_model("llama");
    pb::ModelInfo info;
    ASSERT_TRUE(stub->GetModelInfo(&context, request, &info).ok());
    EXPECT_EQ(info.n_kv_heads(), 2);
    EXPECT_EQ(info.hook_points(0).name(), "hook_embed");
    EXPECT_EQ(info.device(), "cpu");
  }
  {
    grpc::ClientContext context;
    pb::TokenizeRequest request;
    request.set_model("gpt2");
    request.set_text("hello");
    pb::TokenizeResponse response;
    grpc::Status s = stub->Tokenize(&context, request, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(s.error_message(), HasSubstr("no tokenizer"));
  }
}

// Generate streams a header, one step per new token and a summary equal to the engine's own
// generation; bad requests are refused before any work with precise messages.
TEST_F(ServiceTest, GenerateStreamsStepsAndASummary) {
  auto stub = pb::Glassbox::NewStub(*channel_);
  pb::GenerateRequest request;
  request.set_model("llama");
  AddIds(request.mutable_inputs()->add_token_ids(), {5, 6, 7});
  AddIds(request.mutable_inputs()->add_token_ids(), {9});
  request.set_max_new_tokens(6);
  request.set_stop_at_eos(false);
  request.set_top_logprobs(2);
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, request);
  pb::GenerateResponse response;
  std::vector<std::vector<int32_t>> streamed(2);
  int headers = 0, steps = 0, summaries = 0;
  pb::GenerateSummary summary;
  while (reader->Read(&response)) {
    if (response.has_header()) {
      ++headers;
      EXPECT_THAT(response.header().sequence_lengths(), ::testing::ElementsAre(3, 1));
    } else if (response.has_step()) {
      EXPECT_EQ(response.step().step(), steps++);
      ASSERT_EQ(response.step().tokens_size(), 2);
      ASSERT_EQ(response.step().top_size(), 2);
      for (int r = 0; r < 2; ++r) streamed[r].push_back(response.step().tokens(r));
    } else {
      ++summaries;
      summary = response.summary();
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(headers, 1);
  EXPECT_EQ(steps, 6);
  EXPECT_EQ(summaries, 1);
  ASSERT_EQ(summary.sequences_size(), 2);
  for (int r = 0; r < 2; ++r) {
    EXPECT_THAT(summary.sequences(r).tokens(), ::testing::ElementsAreArray(streamed[r]));
    EXPECT_EQ(summary.sequences(r).finish_reason(), pb::FINISH_REASON_LENGTH);
  }

  // The same through the engine directly.
  const ServedModel& served = **server_->store().Find("llama");
  HookPlan plan(served.model->hooks());
  auto direct = Generate(*served.model, {{5, 6, 7}, {9}}, plan, {.max_new_tokens = 6}, nullptr);
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_EQ(direct->generated, streamed);
}

TEST_F(ServiceTest, GenerateRefusesBadRequests) {
  auto stub = pb::Glassbox::NewStub(*channel_);
  auto refused = [&](const std::function<void(pb::GenerateRequest&)>& edit) {
    pb::GenerateRequest request;
    request.set_model("llama");
    AddIds(request.mutable_inputs()->add_token_ids(), {1, 2});
    request.set_max_new_tokens(3);
    edit(request);
    grpc::ClientContext context;
    auto reader = stub->Generate(&context, request);
    pb::GenerateResponse response;
    while (reader->Read(&response)) {
    }
    return reader->Finish();
  };
  struct Case {
    std::function<void(pb::GenerateRequest&)> edit;
    std::string phrase;
  };
  const Case cases[] = {
      {[](auto& r) { r.set_max_new_tokens(0); }, "max_new_tokens is 0"},
      {[](auto& r) { r.mutable_sampling()->set_temperature(-1); }, "temperature is -1"},
      {[](auto& r) { r.mutable_sampling()->set_top_p(1.5); }, "top_p is 1.5"},
      {[](auto& r) { r.add_stop_token_ids(300); }, "stop token 300"},
      {[](auto& r) { r.set_model("nope"); }, "nope"},
      {[](auto& r) {
         auto* in = r.add_interventions();
         in->set_hook("blocks.0.hook_resid_pre");
         in->set_kind(pb::INTERVENTION_ZERO);
         in->add_positions(-1);
       },
       "position -1 is negative"},
      {[](auto& r) {
         auto* in = r.add_interventions();
         in->set_hook("blocks.0.hook_resid_pre");
         in->set_kind(pb::INTERVENTION_ADD);
         for (int i = 0; i < 5; ++i) in->add_value(1);
       },
       "blocks.0.hook_resid_pre"},
      {[](auto& r) {
         auto* c = r.add_captures();
         c->set_hook("blocks.0.hook_resid_pre");
         c->add_positions(0);
       },
       "captures[0] \"blocks.0.hook_resid_pre\": positions are not available in Generate"},
      {[](auto& r) {
         r.set_capture_prompt(true);
         r.set_capture_at_end(true);
       },
       "capture_prompt and capture_at_end exclude each other"},
      {[](auto& r) { r.add_captures()->set_hook("blocks.9.hook_nope"); }, "blocks.9.hook_nope"},
      {[](auto& r) {
         auto* edit = r.add_sae_splices()->add_edits();
         edit->set_kind(pb::FEATURE_EDIT_CLAMP);
         edit->add_features(0);
         edit->add_positions(1);
       },
       "sae_splices[0].edits[0]: feature edits that select rows or positions are not available"},
      {[](auto& r) { r.add_stop_strings("\n"); }, "stop_strings need a tokenizer"},
      {[](auto& r) { r.add_stop_strings(""); }, "stop_strings[0] has 0 bytes"},
      {[](auto& r) {
         for (int i = 0; i < 17; ++i) r.add_stop_strings("x");
       },
       "stop_strings has 17 entries; at most 16"},
      {[](auto& r) {
         auto* in = r.add_interventions();
         in->set_hook("blocks.0.hook_resid_pre");
         in->set_kind(pb::INTERVENTION_PROJECTION_CAP);
         for (int i = 0; i < 64; ++i) in->add_value(1);
       },
       "needs projection_min or projection_max"},
      {[](auto& r) {
         auto* in = r.add_interventions();
         in->set_hook("blocks.0.hook_resid_pre");
         in->set_kind(pb::INTERVENTION_ADD);
         in->set_projection_max(1);
         for (int i = 0; i < 64; ++i) in->add_value(1);
       },
       "projection_min / projection_max apply to PROJECTION_CAP only"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.phrase);
    const grpc::Status status = refused(c.edit);
    EXPECT_NE(status.error_code(), grpc::StatusCode::OK);
    EXPECT_THAT(status.error_message(), HasSubstr(c.phrase));
  }
}

// Per-step captures (cut as the request asks: heads, reductions, dtype) and the unsteered
// continuation streamed after the steered one, each equal to the engine's own generation.
TEST_F(ServiceTest, GenerateStreamsCapturesAndTheUnsteeredContinuation) {
  auto stub = pb::Glassbox::NewStub(*channel_);
  const ServedModel& served = **server_->store().Find("llama");
  const int64_t d_model = served.model->config().d_model;
  pb::GenerateRequest request;
  request.set_model("llama");
  AddIds(request.mutable_inputs()->add_token_ids(), {5, 6, 7});
  AddIds(request.mutable_inputs()->add_token_ids(), {9});
  request.set_max_new_tokens(4);
  request.set_stop_at_eos(false);
  request.set_capture_prompt(true);
  request.set_include_unsteered(true);
  auto* resid = request.add_captures();
  resid->set_hook("blocks.1.hook_resid_pre");
  auto* z = request.add_captures();
  z->set_hook("blocks.0.attn.hook_z");
  z->add_heads(1);
  z->set_reduction(pb::REDUCTION_NORM);
  z->set_dtype(pb::DTYPE_F16);
  auto* steer = request.add_interventions();
  steer->set_hook("blocks.0.hook_resid_pre");
  steer->set_kind(pb::INTERVENTION_ADD);
  steer->set_coefficient(8);
  for (int64_t i = 0; i < d_model; ++i) steer->add_value(std::sin(0.9f * i));

  grpc::ClientContext context;
  auto reader = stub->Generate(&context, request);
  pb::GenerateResponse response;
  std::vector<std::vector<int32_t>> streamed[2] = {std::vector<std::vector<int32_t>>(2),
                                                   std::vector<std::vector<int32_t>>(2)};
  std::vector<pb::StepTensor> steered_resid;
  pb::GenerateSummary summary;
  int64_t payload = 0;
  while (reader->Read(&response)) {
    if (response.has_step()) {
      const pb::GenerateStep& step = response.step();
      const bool unsteered = step.unsteered();
      for (int r = 0; r < 2; ++r) streamed[unsteered][r].push_back(step.tokens(r));
      // In forward order: layer 0's hook_z before layer 1's resid_pre.
      ASSERT_EQ(step.captures_size(), 2);
      const int64_t queries = step.step() == 0 ? 3 : 1;
      EXPECT_EQ(step.captures(0).name(), "blocks.0.attn.hook_z");
      EXPECT_THAT(step.captures(0).shape(), ::testing::ElementsAre(2, queries, 1));
      EXPECT_EQ(step.captures(0).dtype(), pb::DTYPE_F16);
      EXPECT_EQ(step.captures(0).data().size(), 2u * queries * 1 * 2);
      EXPECT_EQ(step.captures(1).name(), "blocks.1.hook_resid_pre");
      EXPECT_THAT(step.captures(1).shape(), ::testing::ElementsAre(2, queries, d_model));
      EXPECT_EQ(step.captures(1).dtype(), pb::DTYPE_F32);
      for (const pb::StepTensor& t : step.captures()) payload += static_cast<int64_t>(t.data().size());
      if (!unsteered) steered_resid.push_back(step.captures(1));
    } else if (response.has_summary()) {
      summary = response.summary();
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_EQ(summary.sequences_size(), 2);
  ASSERT_EQ(summary.unsteered_sequences_size(), 2);
  EXPECT_EQ(summary.bytes_sent(), payload);

  // The engine with and without the edit gives the same tokens and (steered) captures.
  HookPlan plain(served.model->hooks());
  auto unsteered = Generate(*served.model, {{5, 6, 7}, {9}}, plain, {.max_new_tokens = 4}, nullptr);
  ASSERT_TRUE(unsteered.ok()) << unsteered.status();
  EXPECT_EQ(unsteered->generated, streamed[1]);
  HookPlan edited(served.model->hooks());
  ASSERT_TRUE(edited.Capture("blocks.1.hook_resid_pre").ok());
  Tensor value = Tensor::EmptyHost(DType::kF32, {d_model});
  for (int64_t i = 0; i < d_model; ++i) value.data<float>()[i] = std::sin(0.9f * i);
  ASSERT_TRUE(edited.AddIntervention({.hook = *served.model->hooks().Resolve("blocks.0.hook_resid_pre"),
                                      .kind = InterventionKind::kAdd, .coefficient = 8, .value = value})
                  .ok());
  std::vector<Tensor> direct_resid;
  auto steered = Generate(*served.model, {{5, 6, 7}, {9}}, edited,
                          {.max_new_tokens = 4, .capture_prompt = true}, [&](const GeneratedStep& step) {
                            direct_resid.push_back(step.captures.at(0).value);
                            return absl::OkStatus();
                          });
  ASSERT_TRUE(steered.ok()) << steered.status();
  EXPECT_EQ(steered->generated, streamed[0]);
  EXPECT_NE(steered->generated, unsteered->generated);
  ASSERT_EQ(direct_resid.size(), steered_resid.size());
  for (size_t s = 0; s < direct_resid.size(); ++s) {
    ASSERT_EQ(steered_resid[s].data().size(), direct_resid[s].nbytes());
    EXPECT_EQ(std::memcmp(steered_resid[s].data().data(), direct_resid[s].raw_data(),
                          direct_resid[s].nbytes()), 0) << "step " << s;
  }
}

// capture_at_end reports the captures once per continuation, over the finished sequences:
// byte for byte what a Run of those sequences with the same edits streams.
TEST_F(ServiceTest, GenerateCapturesAtTheEndEqualARunOfTheSequences) {
  auto stub = pb::Glassbox::NewStub(*channel_);
  pb::GenerateRequest request;
  request.set_model("llama");
  AddIds(request.mutable_inputs()->add_token_ids(), {5, 6, 7});
  AddIds(request.mutable_inputs()->add_token_ids(), {9});
  request.set_max_new_tokens(5);
  request.set_stop_at_eos(false);
  request.set_capture_at_end(true);
  request.set_include_unsteered(true);
  request.add_captures()->set_hook("blocks.1.attn.hook_pattern");
  request.add_captures()->set_hook("blocks.0.hook_resid_post");
  auto* scale = request.add_interventions();
  scale->set_hook("blocks.0.mlp.hook_post");
  scale->set_kind(pb::INTERVENTION_SCALE);
  scale->set_coefficient(3);
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, request);
  pb::GenerateResponse response;
  std::vector<pb::GenerateCaptures> finals;
  pb::GenerateSummary summary;
  while (reader->Read(&response)) {
    if (response.has_step()) {
      EXPECT_EQ(response.step().captures_size(), 0);
    }
    if (response.has_final_captures()) finals.push_back(response.final_captures());
    if (response.has_summary()) summary = response.summary();
  }
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_EQ(finals.size(), 2u);
  EXPECT_FALSE(finals[0].unsteered());
  EXPECT_TRUE(finals[1].unsteered());
  for (int set = 0; set < 2; ++set) {
    SCOPED_TRACE(set == 0 ? "steered" : "unsteered");
    const auto& sequences = set == 0 ? summary.sequences() : summary.unsteered_sequences();
    pb::RunRequest run;
    run.set_model("llama");
    const std::vector<std::vector<int32_t>> prompts = {{5, 6, 7}, {9}};
    for (int r = 0; r < 2; ++r) {
      auto* row = run.mutable_inputs()->add_token_ids();
      row->mutable_ids()->Add(prompts[r].begin(), prompts[r].end());
      row->mutable_ids()->Add(sequences[r].tokens().begin(), sequences[r].tokens().end());
      EXPECT_EQ(finals[set].sequence_lengths(r), row->ids_size());
    }
    *run.mutable_captures() = request.captures();
    if (set == 0) *run.mutable_interventions() = request.interventions();
    Received expected = Run(run);
    ASSERT_TRUE(expected.status.ok()) << expected.status.error_message();
    ASSERT_EQ(finals[set].captures_size(), 2);
    for (const pb::StepTensor& t : finals[set].captures()) {
      SCOPED_TRACE(t.name());
      EXPECT_EQ(t.data(), expected.bytes.at(t.name()));
    }
  }
}

// A client that goes away mid-generation stops it; the server carries on serving.
TEST_F(ServiceTest, CancelledGenerationFreesTheWorker) {
  auto stub = pb::Glassbox::NewStub(*channel_);
  pb::GenerateRequest request;
  request.set_model("llama");
  AddIds(request.mutable_inputs()->add_token_ids(), {1, 2});
  request.set_max_new_tokens(60);
  request.set_stop_at_eos(false);
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, request);
  pb::GenerateResponse response;
  int steps = 0;
  while (reader->Read(&response)) {
    if (response.has_step() && ++steps == 2) context.TryCancel();
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(steps, 60);
  pb::RunRequest run;
  run.set_model("llama");
  AddIds(run.mutable_inputs()->add_token_ids(), {1, 2, 3});
  run.mutable_outputs()->set_logits(pb::LOGITS_LAST);
  EXPECT_TRUE(Run(run).status.ok());
}

// The block-shape fields a client reasons with: Pythia's parallel block and partial rotary,
// Mistral's and Gemma-2's per-layer windows and soft caps, GPT-2's learned positions.
TEST(ModelInfoTest, ReportsBlockShapeAndWindows) {
  auto store = ModelStore::Load({{"gpt2", FixturePath("models/tiny-gpt2")},
                                 {"pythia", FixturePath("models/tiny-pythia")},
                                 {"mistral", FixturePath("models/tiny-mistral")},
                                 {"gemma2", FixturePath("models/tiny-gemma2")},
                                 {"gptj", FixturePath("models/tiny-gptj")},
                                 {"gemma3", FixturePath("models/tiny-gemma3")}},
                                std::make_shared<CpuBackend>(), "cpu");
  ASSERT_TRUE(store.ok()) << store.status();
  InProcessServer server(*std::move(store), ServiceLimits{});
  auto stub = pb::Glassbox::NewStub(server.channel());
  auto info = [&](const std::string& model) {
    grpc::ClientContext context;
    pb::GetModelInfoRequest request;
    request.set_model(model);
    pb::ModelInfo got;
    EXPECT_TRUE(stub->GetModelInfo(&context, request, &got).ok());
    return got;
  };
  const pb::ModelInfo gpt2 = info("gpt2"), pythia = info("pythia"), mistral = info("mistral");
  EXPECT_FALSE(gpt2.parallel_attn_mlp());
  EXPECT_EQ(gpt2.rotary_dim(), 0);
  EXPECT_EQ(gpt2.attention_windows_size(), 0);
  EXPECT_TRUE(pythia.parallel_attn_mlp());
  EXPECT_EQ(pythia.rotary_dim(), 4);
  EXPECT_EQ(mistral.rotary_dim(), 16);
  EXPECT_THAT(mistral.attention_windows(), ::testing::ElementsAre(4, 4));
  EXPECT_EQ(mistral.attn_softcap(), 0);
  const pb::ModelInfo gemma2 = info("gemma2");
  EXPECT_THAT(gemma2.attention_windows(), ::testing::ElementsAre(4, 0));
  EXPECT_EQ(gemma2.attn_softcap(), 2);
  EXPECT_EQ(gemma2.final_softcap(), 15);
  EXPECT_FALSE(gemma2.rotary_adjacent_pairs() || gemma2.unembed_bias());
  EXPECT_EQ(gemma2.rope_local_theta(), 0);
  const pb::ModelInfo gptj = info("gptj"), gemma3 = info("gemma3");
  EXPECT_TRUE(gptj.rotary_adjacent_pairs());
  EXPECT_TRUE(gptj.unembed_bias());
  EXPECT_TRUE(gptj.parallel_attn_mlp());
  EXPECT_EQ(gptj.rotary_dim(), 8);
  EXPECT_EQ(gptj.rope_theta(), 10000);
  EXPECT_EQ(gemma3.rope_theta(), 1e6);
  EXPECT_EQ(gemma3.rope_local_theta(), 1e4);
  EXPECT_THAT(gemma3.attention_windows(), ::testing::ElementsAre(4, 0));
  EXPECT_EQ(gpt2.rope_theta(), 0);
}

// A client that cancels mid-stream stops its run; the server then serves others normally.
TEST_F(ServiceTest, CancelledClientStopsItsRun) {
  auto stub = pb::Glassbox::NewStub(*channel_);
  pb::RunRequest request;
  request.set_model("gpt2");
  for (int b = 0; b < 2; ++b) AddIds(request.mutable_inputs()->add_token_ids(), {1, 2, 3, 4, 5, 6, 7, 8});
  request.add_captures()->set_hook("*");
  request.set_chunk_bytes(256);  // many chunks, so the 64 KiB stream buffer fills
  grpc::ClientContext context;
  auto reader = stub->Run(&context, request);
  pb::RunResponse response;
  ASSERT_TRUE(reader->Read(&response));  // header
  ASSERT_TRUE(reader->Read(&response));  // first chunk
  context.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);

  pb::RunRequest after;
  after.set_model("gpt2");
  AddIds(after.mutable_inputs()->add_token_ids(), {1, 2});
  after.mutable_outputs()->set_logits(pb::LOGITS_LAST);
  EXPECT_TRUE(Run(after).status.ok());
}

// --max_concurrent_streams: while one Run's reader holds its stream open, a second stream on a
// server allowing one is refused at once; once the first has finished, streams are served again.
TEST(StreamLimitTest, AStreamPastTheBoundIsRefusedUntilOneFinishes) {
  auto store = ModelStore::Load({{"gpt2", FixturePath("models/tiny-gpt2")}},
                                std::make_shared<CpuBackend>(), "cpu");
  ASSERT_TRUE(store.ok()) << store.status();
  ServiceLimits limits;
  limits.stream_buffer_bytes = 4 << 10;
  limits.max_concurrent_streams = 1;
  InProcessServer server(*std::move(store), limits);
  auto stub = pb::Glassbox::NewStub(server.channel());
  pb::RunRequest request;
  request.set_model("gpt2");
  for (int b = 0; b < 2; ++b) AddIds(request.mutable_inputs()->add_token_ids(), {1, 2, 3, 4, 5, 6, 7, 8});
  request.add_captures()->set_hook("*");
  request.set_chunk_bytes(256);
  grpc::ClientContext context;
  auto reader = stub->Run(&context, request);
  pb::RunResponse response;
  ASSERT_TRUE(reader->Read(&response));  // the header: the first stream is open

  pb::RunRequest small;
  small.set_model("gpt2");
  AddIds(small.mutable_inputs()->add_token_ids(), {1, 2});
  small.mutable_outputs()->set_logits(pb::LOGITS_LAST);
  const Received refused = ReadRun(server.channel(), small);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.status.error_message(),
              ::testing::HasSubstr("1 streams (Run, Generate) are open; this server allows 1 at "
                                   "once (--max_concurrent_streams)"));
  {
    grpc::ClientContext generate_context;
    pb::GenerateRequest generate;
    generate.set_model("gpt2");
    AddIds(generate.mutable_inputs()->add_token_ids(), {1, 2});
    generate.set_max_new_tokens(1);
    auto generated = stub->Generate(&generate_context, generate);
    pb::GenerateResponse step;
    while (generated->Read(&step)) {
    }
    EXPECT_EQ(generated->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }

  while (reader->Read(&response)) {
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(ReadRun(server.channel(), small).status.ok());
}

// A reader that stops reading while its buffer is full holds the device's worker at most
// --stream_stall_seconds: then its stream is given up (RESOURCE_EXHAUSTED) and the worker goes on
// with the next caller's run, which completes while the stalled reader still has not read.
TEST(StreamStallTest, AStalledReaderIsGivenUpAndTheOthersGoOn) {
  auto store = ModelStore::Load({{"gpt2", FixturePath("models/tiny-gpt2")}},
                                std::make_shared<CpuBackend>(), "cpu");
  ASSERT_TRUE(store.ok()) << store.status();
  ServiceLimits limits;
  limits.stream_buffer_bytes = 4 << 10;
  limits.stream_stall = absl::Milliseconds(300);
  InProcessServer server(*std::move(store), limits);
  // The stalled client's transport takes 64 KiB it has not read (no window growth), so the
  // server's writes, then its buffer, then the worker wait on it.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 10);
  auto stub = pb::Glassbox::NewStub(
      grpc::CreateCustomChannel(server.target(), grpc::InsecureChannelCredentials(), args));
  pb::RunRequest request;
  request.set_model("gpt2");
  for (int b = 0; b < 4; ++b) {
    auto* row = request.mutable_inputs()->add_token_ids();
    for (int i = 0; i < 16; ++i) row->add_ids(1 + (b * 16 + i) % 40);
  }
  request.add_captures()->set_hook("*");  // ~1.7 MB
  request.set_chunk_bytes(1024);
  grpc::ClientContext context;
  auto stalled = stub->Run(&context, request);
  pb::RunResponse response;
  ASSERT_TRUE(stalled->Read(&response));  // the header; then nothing is read for a while

  pb::RunRequest small;
  small.set_model("gpt2");
  AddIds(small.mutable_inputs()->add_token_ids(), {1, 2});
  small.mutable_outputs()->set_logits(pb::LOGITS_LAST);
  EXPECT_TRUE(ReadRun(server.channel(), small).status.ok());

  while (stalled->Read(&response)) {
  }
  const grpc::Status status = stalled->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("--stream_stall_seconds"));
}

// A reader that does not read holds its own run back: the worker blocks on the bounded buffer
// instead of queueing the whole response in memory.
TEST_F(ServiceTest, SlowReaderIsBoundedAndStillGetsEverything) {
  auto stub = pb::Glassbox::NewStub(*channel_);
  pb::RunRequest request;
  request.set_model("gpt2");
  for (int b = 0; b < 2; ++b) AddIds(request.mutable_inputs()->add_token_ids(), {1, 2, 3, 4, 5, 6, 7, 8});
  request.add_captures()->set_hook("*");
  request.set_chunk_bytes(512);
  grpc::ClientContext context;
  auto reader = stub->Run(&context, request);
  pb::RunResponse response;
  ASSERT_TRUE(reader->Read(&response));
  int64_t expected = 0;
  for (const auto& t : response.header().tensors()) expected += t.nbytes();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the worker fills the buffer and waits
  int64_t got = 0;
  while (reader->Read(&response)) {
    if (response.has_chunk()) got += static_cast<int64_t>(response.chunk().data().size());
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(got, expected);
}

}  // namespace
}  // namespace glassbox
