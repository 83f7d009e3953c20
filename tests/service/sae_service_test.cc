// SAEs over gRPC, in-process on a loopback port: two sae_lens-saved SAEs attached to the tiny
// GPT-2 fixture (a standard one at blocks.1.hook_resid_pre, a jumprelu hook_z one at
// blocks.0.attn.hook_z) and a Gemma Scope params.npz on tiny Gemma-2's blocks.0.hook_resid_post.
// Encode equals the engine's Sae::Encode on a plain Run's capture and sae_lens; spliced runs
// (with and without the error term, with feature edits) and decoder steering equal
// HookedSAETransformer (tests/reference/make_sae_service_fixtures.py); every bad request gets a
// precise status.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstring>
#include <iostream>

#include "base/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "nlohmann/json.hpp"
#include "server/engine/sae/sae_stats.h"
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
using ::glassbox::testing::Received;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
namespace pb = ::glassbox::v1;

constexpr double kTolerance = 1e-5;  // norm-relative, f32 engine vs float64 references
const char* const kSaes[] = {"res1_standard", "z0_jumprelu", "gemma_scope_res0"};

// The served model each SAE reads (its fixture's inputs are the model's committed ones).
std::string ModelOf(const std::string& sae) {
  return sae == "gemma_scope_res0" ? "gemma2" : "gpt2";
}

class SaeServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto store = ModelStore::Load({{"gpt2", FixturePath("models/tiny-gpt2")},
                                   {"llama", FixturePath("models/tiny-llama")},
                                   {"gemma2", FixturePath("models/tiny-gemma2")}},
                                  std::make_shared<CpuBackend>(), "cpu");
    ASSERT_TRUE(store.ok()) << store.status();
    const std::string dir = FixturePath("saes/service/");
    // res1_standard's weights also go on llama (whose blocks.1.hook_resid_pre is as wide), to
    // check that a request cannot use an SAE of another model.
    ASSERT_TRUE(
        (*store)
            ->LoadSaes({{.name = "res1_standard", .path = dir + "res1_standard", .model = "gpt2"},
                        {.name = "z0_jumprelu", .path = dir + "z0_jumprelu", .model = "gpt2"},
                        {.name = "gemma_scope_res0",
                         .path = dir + "gemma_scope_res0",
                         .model = "gemma2",
                         .hook = "blocks.0.hook_resid_post"},
                        {.name = "on_llama", .path = dir + "res1_standard", .model = "llama"}})
            .ok());
    ServiceLimits limits;
    limits.max_tokens_per_request = 64;
    limits.max_response_bytes = 1 << 20;
    server_ = new InProcessServer(*std::move(store), limits);
    store_ = &server_->store();
    stub_ = pb::Glassbox::NewStub(server_->channel()).release();
    // The reference values of both models' SAEs; their names keep the keys apart.
    expected_ = new std::map<std::string, Tensor>();
    cases_ = new nlohmann::json(nlohmann::json::object());
    for (const char* model : {"tiny-gpt2", "tiny-gemma2"}) {
      const std::string path = FixturePath(std::string("expected/") + model + ".saes.safetensors");
      expected_->merge(ReadAllTensors(path));
      auto file = SafetensorsFile::Open(path);
      ASSERT_TRUE(file.ok());
      cases_->update(nlohmann::json::parse((*file)->metadata().at("cases")));
    }
  }
  static void TearDownTestSuite() {
    delete stub_;
    delete server_;
    delete expected_;
    delete cases_;
  }

  static const Tensor& Expected(const std::string& name) { return expected_->at(name); }
  static const nlohmann::json& Case(const std::string& sae) { return (*cases_)[sae]; }

  // A model's committed input batch [3, 11], optionally with row 1 cut to `row1_length` tokens.
  static pb::Inputs Inputs(const std::string& model = "gpt2", int row1_length = 11) {
    const Tensor ids = ReadAllTensors(FixturePath("expected/tiny-" + model + ".safetensors"))
                           .at("unpadded.input_ids");
    pb::Inputs inputs;
    for (int64_t b = 0; b < ids.dim(0); ++b) {
      auto* row = inputs.add_token_ids();
      const int64_t n = b == 1 ? row1_length : ids.dim(1);
      for (int64_t s = 0; s < n; ++s) row->add_ids(ids.data<int32_t>()[b * ids.dim(1) + s]);
    }
    return inputs;
  }

  static Received Run(const pb::RunRequest& request) {
    return ReadRun(server_->channel(), request);
  }

  static Tensor Get(const Received& got, const std::string& name) {
    for (const auto& info : got.header.tensors()) {
      if (info.name() != name) continue;
      Tensor t = Tensor::EmptyHost(DType::kF32, Shape(info.shape().begin(), info.shape().end()));
      const std::string& bytes = got.bytes.at(name);
      EXPECT_EQ(bytes.size(), t.nbytes()) << name;
      std::memcpy(t.raw_data(), bytes.data(), std::min(bytes.size(), t.nbytes()));
      return t;
    }
    ADD_FAILURE() << "no tensor " << name;
    return Tensor::ZerosHost(DType::kF32, {1});
  }

  static pb::RunRequest SpliceRequest(const std::string& sae, bool use_error_term) {
    pb::RunRequest request;
    request.set_model(ModelOf(sae));
    *request.mutable_inputs() = Inputs(ModelOf(sae));
    request.mutable_outputs()->set_logits(pb::LOGITS_ALL);
    auto* splice = request.add_sae_splices();
    splice->set_sae(sae);
    splice->set_use_error_term(use_error_term);
    request.add_captures()->set_hook(Case(sae)["hook"].get<std::string>() + ".hook_sae_*");
    return request;
  }

  // The reference's edits (make_sae_service_fixtures.py) as FeatureEdits.
  static void AddEdits(const std::string& sae, pb::SaeSplice* splice) {
    for (const auto& e : Case(sae)["edits"]) {
      auto* edit = splice->add_edits();
      const std::string kind = e["kind"];
      edit->set_kind(kind == "zero"    ? pb::FEATURE_EDIT_ZERO
                     : kind == "clamp" ? pb::FEATURE_EDIT_CLAMP
                                       : pb::FEATURE_EDIT_SCALE);
      for (int f : e["features"]) edit->add_features(f);
      edit->set_value(e["value"].get<float>());
      if (!e["position"].is_null()) edit->add_positions(e["position"].get<int>());
    }
  }

  // Every tensor the reference has under `prefix` (logits and hook_sae_* values) equals ours.
  static void ExpectEqualsReference(const Received& got, const std::string& prefix) {
    int compared = 0;
    double worst = 0;
    for (const auto& [name, value] : *expected_) {
      if (name.rfind(prefix, 0) != 0) continue;
      const std::string ours = name.substr(prefix.size());
      SCOPED_TRACE(name);
      ASSERT_TRUE(got.bytes.count(ours)) << "missing " << ours;
      const double error = NormRelativeError(Get(got, ours), value);
      EXPECT_LE(error, kTolerance);
      worst = std::max(worst, error);
      ++compared;
    }
    EXPECT_GE(compared, 6) << prefix;  // logits and the hook_sae_* points
    std::cout << prefix << " " << compared << " tensors, worst norm-relative error " << worst
              << "\n";
  }

  static inline InProcessServer* server_;
  static inline const ModelStore* store_;
  static inline pb::Glassbox::Stub* stub_;
  static inline std::map<std::string, Tensor>* expected_;
  static inline nlohmann::json* cases_;
};

TEST_F(SaeServiceTest, ListsSaesWithTheirMetadata) {
  grpc::ClientContext context;
  pb::ListSaesRequest request;
  request.set_model("gpt2");
  pb::ListSaesResponse response;
  ASSERT_TRUE(stub_->ListSaes(&context, request, &response).ok());
  ASSERT_EQ(response.saes_size(), 2);
  const pb::SaeInfo& z = response.saes(1);
  EXPECT_EQ(z.name(), "z0_jumprelu");
  EXPECT_EQ(z.model(), "gpt2");
  EXPECT_EQ(z.hook(), "blocks.0.attn.hook_z");
  EXPECT_EQ(z.architecture(), "jumprelu");
  EXPECT_EQ(z.d_in(), 64);
  EXPECT_EQ(z.d_sae(), 128);
  EXPECT_EQ(z.normalization(), "none");
  EXPECT_EQ(z.dtype(), "float32");
  EXPECT_TRUE(z.reshape_hook_z());
  EXPECT_EQ(z.sae_lens_version(), "6.54.12");
  EXPECT_THAT(z.metadata_json(), HasSubstr("\"model_name\""));
  // W_enc, W_dec, b_enc, b_dec, threshold in f32.
  EXPECT_EQ(z.resident_bytes(), (2 * 64 * 128 + 2 * 128 + 64) * 4);

  grpc::ClientContext all_context;
  ASSERT_TRUE(stub_->ListSaes(&all_context, {}, &response).ok());
  EXPECT_EQ(response.saes_size(), 4);
  grpc::ClientContext bad;
  request.set_model("gpt5");
  EXPECT_EQ(stub_->ListSaes(&bad, request, &response).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(SaeServiceTest, GemmaScopeNpzIsServedOnGemma2) {
  grpc::ClientContext context;
  pb::ListSaesRequest request;
  request.set_model("gemma2");
  pb::ListSaesResponse response;
  ASSERT_TRUE(stub_->ListSaes(&context, request, &response).ok());
  ASSERT_EQ(response.saes_size(), 1);
  const pb::SaeInfo& g = response.saes(0);
  EXPECT_EQ(g.name(), "gemma_scope_res0");
  EXPECT_EQ(g.hook(), "blocks.0.hook_resid_post");
  EXPECT_EQ(g.architecture(), "jumprelu");
  EXPECT_EQ(g.d_in(), 64);
  EXPECT_EQ(g.d_sae(), 128);
  EXPECT_EQ(g.normalization(), "none");
  EXPECT_FALSE(g.reshape_hook_z());
}

TEST_F(SaeServiceTest, EncodeEqualsEngineOnCapturedActivationsAndSaeLens) {
  for (const char* name : kSaes) {
    SCOPED_TRACE(name);
    const std::string hook = Case(name)["hook"];
    // The engine's own Sae::Encode on the hook's value from a plain Run.
    pb::RunRequest plain;
    plain.set_model(ModelOf(name));
    *plain.mutable_inputs() = Inputs(ModelOf(name));
    plain.add_captures()->set_hook(hook);
    Received run = Run(plain);
    ASSERT_TRUE(run.status.ok()) << run.status.error_message();
    const Tensor x = Get(run, hook);
    EXPECT_LE(NormRelativeError(x, Expected(std::string(name) + ".x")), kTolerance);
    const Sae& sae = *(*store_->FindSae(name))->sae;
    auto engine = sae.Encode(x);
    ASSERT_TRUE(engine.ok());

    pb::SaeEncodeRequest request;
    request.set_sae(name);
    *request.mutable_inputs() = Inputs(ModelOf(name));
    request.set_dense(true);
    pb::SaeEncodeResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(stub_->SaeEncode(&context, request, &response).ok());
    ASSERT_THAT(response.dense().shape(), ElementsAre(3, 11, 128));
    Tensor dense = Tensor::FromHost(
        std::span<const float>(response.dense().values().data(), response.dense().values_size()),
        {3, 11, 128});
    EXPECT_LE(NormRelativeError(dense, *engine), 1e-7);
    EXPECT_LE(NormRelativeError(dense, Expected(std::string(name) + ".acts")), kTolerance);

    // Sparse: every nonzero activation, in feature order, equal to the dense ones.
    ASSERT_EQ(response.offsets_size(), 34);
    int64_t nonzero = 0;
    for (int64_t i = 0; i < dense.numel(); ++i) nonzero += dense.data<float>()[i] != 0.0f;
    ASSERT_EQ(response.indices_size(), nonzero);
    ASSERT_GT(nonzero, 33);
    for (int t = 0; t < 33; ++t) {
      for (int64_t j = response.offsets(t); j < response.offsets(t + 1); ++j) {
        EXPECT_EQ(response.values(j), dense.data<float>()[t * 128 + response.indices(j)]);
        if (j > response.offsets(t)) {
          EXPECT_LT(response.indices(j - 1), response.indices(j));
        }
      }
    }
    // Statistics of the reconstruction over the 33 tokens, as the engine computes them.
    auto recons = sae.Reconstruct(x);
    ASSERT_TRUE(recons.ok());
    std::vector<int64_t> l0;
    for (int t = 0; t < 33; ++t) l0.push_back(response.offsets(t + 1) - response.offsets(t));
    auto stats = ComputeReconstructionStats(x, *recons, sae.d_in(), l0);
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(response.stats().tokens(), 33);
    EXPECT_NEAR(response.stats().mse(), stats->mse, 1e-6 * stats->mse);
    EXPECT_NEAR(response.stats().explained_variance(), stats->explained_variance, 1e-6);
    EXPECT_DOUBLE_EQ(response.stats().mean_l0(), static_cast<double>(nonzero) / 33);
    EXPECT_GT(response.stats().mse(), 0);

    // Top-3 of a ragged batch: row 1 cut to 7 tokens; each token's 3 largest, descending.
    request.set_dense(false);
    request.set_top_k(3);
    *request.mutable_inputs() = Inputs(ModelOf(name), 7);
    grpc::ClientContext top_context;
    pb::SaeEncodeResponse top;
    ASSERT_TRUE(stub_->SaeEncode(&top_context, request, &top).ok());
    EXPECT_THAT(top.sequence_lengths(), ElementsAre(11, 7, 11));
    ASSERT_EQ(top.offsets_size(), 30);
    int token = 0;
    for (int b = 0; b < 3; ++b) {
      for (int p = 0; p < (b == 1 ? 7 : 11); ++p, ++token) {
        const float* row = dense.data<float>() + (b * 11 + p) * 128;
        std::vector<float> sorted(row, row + 128);
        std::sort(sorted.rbegin(), sorted.rend());
        const int64_t begin = top.offsets(token), n = top.offsets(token + 1) - begin;
        ASSERT_EQ(
            n, std::min<int64_t>(3, std::count_if(row, row + 128, [](float v) { return v > 0; })));
        // This batch has another shape than the dense one's, so the GEMMs may round
        // differently in the last bit: compare within a tolerance, not exactly.
        for (int64_t j = 0; j < n; ++j) {
          EXPECT_NEAR(top.values(begin + j), sorted[j], 1e-5 * sorted[0]);
          EXPECT_NEAR(top.values(begin + j), row[top.indices(begin + j)], 1e-5 * sorted[0]);
        }
      }
    }
  }
}

TEST_F(SaeServiceTest, SplicedRunsEqualHookedSaeTransformer) {
  for (const char* name : kSaes) {
    SCOPED_TRACE(name);
    const std::string hook = Case(name)["hook"], p = std::string(name) + ".";
    Received splice = Run(SpliceRequest(name, false));
    ASSERT_TRUE(splice.status.ok()) << splice.status.error_message();
    ExpectEqualsReference(splice, p + "splice.");
    // Stream order: the hook_sae_* points in sae_lens's order, then the logits.
    EXPECT_THAT(splice.order, ElementsAre(hook + ".hook_sae_input", hook + ".hook_sae_acts_pre",
                                          hook + ".hook_sae_acts_post", hook + ".hook_sae_recons",
                                          hook + ".hook_sae_output", "logits"));

    Received error = Run(SpliceRequest(name, true));
    ASSERT_TRUE(error.status.ok()) << error.status.error_message();
    ExpectEqualsReference(error, p + "error.");

    pb::RunRequest edited = SpliceRequest(name, true);
    AddEdits(name, edited.mutable_sae_splices(0));
    Received edit = Run(edited);
    ASSERT_TRUE(edit.status.ok()) << edit.status.error_message();
    ExpectEqualsReference(edit, p + "edit.");

    edited.mutable_sae_splices(0)->set_use_error_term(false);
    edited.clear_captures();
    Received no_error = Run(edited);
    ASSERT_TRUE(no_error.status.ok()) << no_error.status.error_message();
    EXPECT_LE(NormRelativeError(Get(no_error, "logits"), Expected(p + "edit_no_error.logits")),
              kTolerance);
    // The edits matter: without them the logits are the plain splice's.
    EXPECT_GT(NormRelativeError(Get(no_error, "logits"), Expected(p + "splice.logits")), 1e-3);
  }
}

TEST_F(SaeServiceTest, DecoderSteeringEqualsAddingTheDirection) {
  for (const char* name : kSaes) {
    SCOPED_TRACE(name);
    const auto& steer = Case(name)["steer"];
    pb::RunRequest request;
    request.set_model(ModelOf(name));
    *request.mutable_inputs() = Inputs(ModelOf(name));
    request.mutable_outputs()->set_logits(pb::LOGITS_ALL);
    auto* s = request.add_sae_steering();
    s->set_sae(name);
    s->add_features(steer["feature"].get<int>());
    s->add_coefficients(steer["coefficient"].get<float>());
    s->add_positions(steer["position"].get<int>());
    Received got = Run(request);
    ASSERT_TRUE(got.status.ok()) << got.status.error_message();
    EXPECT_LE(NormRelativeError(Get(got, "logits"), Expected(std::string(name) + ".steer.logits")),
              kTolerance);
  }
}

TEST_F(SaeServiceTest, DecodeEqualsTheSplicedReconstruction) {
  // hook_sae_recons of the plain splice is decode(encode(x)); decode the encoding sparsely and
  // densely and get it back.
  pb::SaeEncodeRequest encode;
  encode.set_sae("res1_standard");
  *encode.mutable_inputs() = Inputs();
  encode.set_dense(true);
  pb::SaeEncodeResponse acts;
  grpc::ClientContext encode_context;
  ASSERT_TRUE(stub_->SaeEncode(&encode_context, encode, &acts).ok());
  const Tensor& recons = Expected("res1_standard.splice.blocks.1.hook_resid_pre.hook_sae_recons");
  for (bool dense : {false, true}) {
    pb::SaeDecodeRequest request;
    request.set_sae("res1_standard");
    if (dense) {
      *request.mutable_dense() = acts.dense().values();
    } else {
      *request.mutable_offsets() = acts.offsets();
      *request.mutable_indices() = acts.indices();
      *request.mutable_values() = acts.values();
    }
    pb::SaeDecodeResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(stub_->SaeDecode(&context, request, &response).ok());
    ASSERT_THAT(response.vectors().shape(), ElementsAre(33, 64));
    Tensor got = Tensor::FromHost(
        std::span<const float>(response.vectors().values().data(), 33 * 64), {3, 11, 64});
    EXPECT_LE(NormRelativeError(got, recons), kTolerance) << (dense ? "dense" : "sparse");
  }
}

TEST_F(SaeServiceTest, BadSaeRequests) {
  auto good = [] {
    pb::RunRequest r;
    r.set_model("gpt2");
    r.mutable_inputs()->add_token_ids()->add_ids(1);
    r.mutable_inputs()->mutable_token_ids(0)->add_ids(2);
    r.mutable_inputs()->mutable_token_ids(0)->add_ids(3);
    r.add_sae_splices()->set_sae("res1_standard");
    return r;
  };
  auto edit = [](pb::RunRequest& r) {
    auto* e = r.mutable_sae_splices(0)->add_edits();
    e->set_kind(pb::FEATURE_EDIT_ZERO);
    e->add_features(1);
    return e;
  };
  struct Case {
    std::string name;
    std::function<void(pb::RunRequest&)> change;
    grpc::StatusCode code;
    std::string phrase;
  };
  const std::vector<Case> cases = {
      {"unknown SAE", [](auto& r) { r.mutable_sae_splices(0)->set_sae("res9"); },
       grpc::StatusCode::NOT_FOUND,
       "no SAE named \"res9\"; this server has: gemma_scope_res0, on_llama, res1_standard, "
       "z0_jumprelu"},
      {"SAE of another model", [](auto& r) { r.mutable_sae_splices(0)->set_sae("on_llama"); },
       grpc::StatusCode::INVALID_ARGUMENT, "attached to model \"llama\", not \"gpt2\""},
      {"two SAEs at one hook", [](auto& r) { r.add_sae_splices()->set_sae("res1_standard"); },
       grpc::StatusCode::INVALID_ARGUMENT,
       "another SAE is already spliced at blocks.1.hook_resid_pre"},
      {"edit without kind", [&](auto& r) { edit(r)->set_kind(pb::FEATURE_EDIT_UNSPECIFIED); },
       grpc::StatusCode::INVALID_ARGUMENT, "edits[0]: set kind"},
      {"edit without features", [&](auto& r) { edit(r)->clear_features(); },
       grpc::StatusCode::INVALID_ARGUMENT, "list at least one feature"},
      {"feature out of range", [&](auto& r) { edit(r)->add_features(128); },
       grpc::StatusCode::INVALID_ARGUMENT, "feature 128 is outside [0, 128)"},
      {"negative feature", [&](auto& r) { edit(r)->add_features(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "feature -1 is outside"},
      {"edit position outside", [&](auto& r) { edit(r)->add_positions(3); },
       grpc::StatusCode::INVALID_ARGUMENT, "position 3 is outside row 0 (3 tokens)"},
      {"edit row outside", [&](auto& r) { edit(r)->add_rows(1); },
       grpc::StatusCode::INVALID_ARGUMENT, "row 1 is outside the batch"},
      {"splice after stop", [](auto& r) { r.set_stop_at_layer(1); },
       grpc::StatusCode::INVALID_ARGUMENT, "never reached with stop_at_layer 1"},
      {"sae capture without splice",
       [](auto& r) {
         r.clear_sae_splices();
         r.add_captures()->set_hook("blocks.1.hook_resid_pre.hook_sae_acts_post");
       },
       grpc::StatusCode::INVALID_ARGUMENT, "there are none; add sae_splices"},
      {"sae capture of another hook",
       [](auto& r) { r.add_captures()->set_hook("blocks.0.hook_resid_pre.hook_sae_acts_post"); },
       grpc::StatusCode::INVALID_ARGUMENT, "matches no hook_sae_* point"},
      {"error point without error term",
       [](auto& r) { r.add_captures()->set_hook("blocks.1.hook_resid_pre.hook_sae_error"); },
       grpc::StatusCode::INVALID_ARGUMENT, "only with use_error_term"},
      {"top-k capture past d_sae",
       [](auto& r) {
         auto* c = r.add_captures();
         c->set_hook("blocks.1.hook_resid_pre.hook_sae_acts_post");
         c->set_reduction(pb::REDUCTION_TOP_K);
         c->set_k(129);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "1 <= k <= 128"},
      {"steering unknown SAE", [](auto& r) { r.add_sae_steering()->set_sae("nope"); },
       grpc::StatusCode::NOT_FOUND, "sae_steering[0] \"nope\""},
      {"steering without coefficients",
       [](auto& r) {
         auto* s = r.add_sae_steering();
         s->set_sae("z0_jumprelu");
         s->add_features(3);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "one coefficient per feature"},
      {"steering feature out of range",
       [](auto& r) {
         auto* s = r.add_sae_steering();
         s->set_sae("z0_jumprelu");
         s->add_features(500);
         s->add_coefficients(1);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "feature 500 is outside [0, 128)"},
      {"steering position outside",
       [](auto& r) {
         auto* s = r.add_sae_steering();
         s->set_sae("z0_jumprelu");
         s->add_features(3);
         s->add_coefficients(1);
         s->add_positions(-4);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "position -4 is outside row 0"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    pb::RunRequest r = good();
    c.change(r);
    Received got = Run(r);
    EXPECT_EQ(got.status.error_code(), c.code) << got.status.error_message();
    EXPECT_THAT(got.status.error_message(), HasSubstr(c.phrase));
  }
  EXPECT_TRUE(Run(good()).status.ok());

  auto encode = [](const std::function<void(pb::SaeEncodeRequest&)>& change) {
    pb::SaeEncodeRequest r;
    r.set_sae("res1_standard");
    r.mutable_inputs()->add_token_ids()->add_ids(5);
    change(r);
    pb::SaeEncodeResponse response;
    grpc::ClientContext context;
    return stub_->SaeEncode(&context, r, &response);
  };
  EXPECT_TRUE(encode([](auto&) {}).ok());
  grpc::Status s = encode([](auto& r) { r.set_sae("x"); });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  s = encode([](auto& r) { r.set_top_k(-1); });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("top_k must be in [0, 128]"));
  s = encode([](auto& r) { r.set_model("llama"); });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("attached to model \"gpt2\", not \"llama\""));
  EXPECT_TRUE(encode([](auto& r) { r.set_model("gpt2"); }).ok());
  s = encode([](auto& r) { r.set_top_k(129); });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  s = encode([](auto& r) { r.mutable_inputs()->mutable_token_ids(0)->add_ids(300); });
  EXPECT_THAT(s.error_message(), HasSubstr("token id 300"));
  s = encode([](auto& r) { r.mutable_inputs()->add_texts("hi"); });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  auto decode = [](const std::function<void(pb::SaeDecodeRequest&)>& change) {
    pb::SaeDecodeRequest r;
    r.set_sae("z0_jumprelu");
    change(r);
    pb::SaeDecodeResponse response;
    grpc::ClientContext context;
    return stub_->SaeDecode(&context, r, &response);
  };
  s = decode([](auto&) {});
  EXPECT_THAT(s.error_message(), HasSubstr("either sparse"));
  s = decode([](auto& r) { r.add_dense(1); });
  EXPECT_THAT(s.error_message(), HasSubstr("not a multiple of d_sae = 128"));
  s = decode([](auto& r) {
    r.add_offsets(0);
    r.add_offsets(1);
    r.add_indices(128);
    r.add_values(1);
  });
  EXPECT_THAT(s.error_message(), HasSubstr("feature index 128 is outside [0, 128)"));
  s = decode([](auto& r) {
    r.add_offsets(0);
    r.add_offsets(2);
    r.add_indices(1);
    r.add_values(1);
  });
  EXPECT_THAT(s.error_message(), HasSubstr("as many values as indices"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(ServedSae, SpecsAndAttachmentErrors) {
  auto spec = ParseSaeSpec("res=/saes/a@b/c@gpt2:blocks.1.hook_resid_pre");
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->path, "/saes/a@b/c");
  EXPECT_EQ(spec->model, "gpt2");
  EXPECT_EQ(spec->hook, "blocks.1.hook_resid_pre");
  for (const char* bad : {"res", "=dir@m", "res=@m", "res=dir@", "res=dir", "res=dir@m:"}) {
    EXPECT_FALSE(ParseSaeSpec(bad).ok()) << bad;
  }

  auto store = ModelStore::Load({{"gpt2", FixturePath("models/tiny-gpt2")}},
                                std::make_shared<CpuBackend>(), "cpu");
  ASSERT_TRUE(store.ok());
  auto error = [&](SaeSpec s) { return std::string((*store)->LoadSaes({s}).message()); };
  const std::string saes = FixturePath("saes/");
  EXPECT_THAT(error({.name = "a", .path = saes + "standard", .model = "gpt2"}),
              HasSubstr("d_in is 32 but blocks.1.hook_resid_pre of model \"gpt2\" is 64 wide"));
  EXPECT_THAT(error({.name = "a", .path = saes + "service/res1_standard", .model = "gpt3"}),
              HasSubstr("SAE \"a\" is attached to no model named \"gpt3\""));
  EXPECT_THAT(error({.name = "a",
                     .path = saes + "service/res1_standard",
                     .model = "gpt2",
                     .hook = "blocks.0.hook_resid_pre"}),
              HasSubstr("its cfg.json says hook_name \"blocks.1.hook_resid_pre\""));
  EXPECT_THAT(error({.name = "a", .path = saes + "gemma_scope_npz", .model = "gpt2"}),
              HasSubstr("no hook"));
  EXPECT_THAT(error({.name = "a",
                     .path = saes + "gemma_scope_npz",
                     .model = "gpt2",
                     .hook = "blocks.7.hook_resid_post"}),
              HasSubstr("model \"gpt2\" has no hook \"blocks.7.hook_resid_post\""));
  EXPECT_THAT(error({.name = "a",
                     .path = saes + "gemma_scope_npz",
                     .model = "gpt2",
                     .hook = "blocks.0.attn.hook_pattern"}),
              HasSubstr("an SAE reads [batch, pos, d] hooks"));
  EXPECT_THAT(error({.name = "a", .path = "/nonexistent", .model = "gpt2"}),
              HasSubstr("SAE \"a\" (/nonexistent)"));
  EXPECT_TRUE((*store)
                  ->LoadSaes({{.name = "a", .path = saes + "service/z0_jumprelu", .model = "gpt2"}})
                  .ok());
  EXPECT_THAT(error({.name = "a", .path = saes + "service/z0_jumprelu", .model = "gpt2"}),
              HasSubstr("given twice"));
}

}  // namespace
}  // namespace glassbox
