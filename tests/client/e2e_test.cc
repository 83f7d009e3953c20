// End to end: the real glassboxd, started on the committed tiny fixture models, driven by the
// client library and by the glassbox binary. Values are checked against the committed
// reference activations (tests/fixtures/expected, from HF transformers / TransformerLens).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/safetensors.h"
#include "client/cpp/glassbox_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/subprocess.h"

namespace glassbox::testing {
namespace {

using client::Client;
using client::ReceivedTensor;
using client::RunResult;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr double kTolerance = 1e-5;  // fp32 server vs float64 references, as in parity_test

const std::string kFixtures = GLASSBOX_FIXTURES_DIR;

// A reference tensor as floats, with its shape.
struct Reference {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

class ExpectedValues {
 public:
  explicit ExpectedValues(const std::string& model) {
    const std::string path = absl::StrCat(kFixtures, "/expected/", model, ".safetensors");
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
    EXPECT_TRUE(file.ok()) << file.status();
    if (file.ok()) file_ = std::move(*file);
  }

  Reference Get(const std::string& name) const {
    Reference ref;
    const TensorView* view = file_ ? file_->Find(name) : nullptr;
    EXPECT_NE(view, nullptr) << "no reference tensor " << name;
    if (view == nullptr) return ref;
    EXPECT_EQ(view->dtype, SafetensorsDtype::kF32) << name;
    ref.shape = view->shape;
    ref.values.resize(view->numel());
    std::memcpy(ref.values.data(), view->bytes.data(), ref.values.size() * sizeof(float));
    return ref;
  }

  // An i64 or i32 tensor as rows of i32 (a 1-d tensor is one row).
  std::vector<std::vector<int32_t>> IntRows(const std::string& name) const {
    std::vector<std::vector<int32_t>> rows;
    const TensorView* view = file_ ? file_->Find(name) : nullptr;
    EXPECT_NE(view, nullptr) << "no reference tensor " << name;
    if (view == nullptr) return rows;
    std::vector<int64_t> ids(view->numel());
    if (view->dtype == SafetensorsDtype::kI32) {
      std::vector<int32_t> narrow(view->numel());
      std::memcpy(narrow.data(), view->bytes.data(), narrow.size() * sizeof(int32_t));
      ids.assign(narrow.begin(), narrow.end());
    } else {
      EXPECT_EQ(view->dtype, SafetensorsDtype::kI64);
      std::memcpy(ids.data(), view->bytes.data(), ids.size() * sizeof(int64_t));
    }
    const int64_t width = view->shape.size() == 1 ? view->shape[0] : view->shape[1];
    for (size_t b = 0; b * width < ids.size(); ++b) {
      rows.emplace_back(ids.begin() + b * width, ids.begin() + (b + 1) * width);
    }
    return rows;
  }

  // "unpadded.input_ids" (i64 [batch, seq]) as rows of i32.
  std::vector<std::vector<int32_t>> InputIds() const {
    std::vector<std::vector<int32_t>> rows;
    const TensorView* view = file_ ? file_->Find("unpadded.input_ids") : nullptr;
    EXPECT_NE(view, nullptr);
    if (view == nullptr) return rows;
    EXPECT_EQ(view->dtype, SafetensorsDtype::kI64);
    EXPECT_EQ(view->shape.size(), 2u);
    std::vector<int64_t> ids(view->numel());
    std::memcpy(ids.data(), view->bytes.data(), ids.size() * sizeof(int64_t));
    for (int64_t b = 0; b < view->shape[0]; ++b) {
      rows.emplace_back(ids.begin() + b * view->shape[1], ids.begin() + (b + 1) * view->shape[1]);
    }
    return rows;
  }

 private:
  std::unique_ptr<SafetensorsFile> file_;
};

double NormRelativeError(const std::vector<float>& actual, const std::vector<float>& expected) {
  if (actual.size() != expected.size()) return INFINITY;
  double diff = 0, norm = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double d = static_cast<double>(actual[i]) - expected[i];
    diff += d * d;
    norm += static_cast<double>(expected[i]) * expected[i];
  }
  return std::sqrt(diff) / std::sqrt(norm);
}

// ref[:, position, ...] of a [batch, pos, rest...] tensor, keeping the axis: [batch, 1, rest].
std::vector<float> AtPosition(const Reference& ref, int64_t position) {
  const int64_t batch = ref.shape[0], seq = ref.shape[1];
  const int64_t rest = static_cast<int64_t>(ref.values.size()) / (batch * seq);
  std::vector<float> out;
  for (int64_t b = 0; b < batch; ++b) {
    const auto begin = ref.values.begin() + (b * seq + position) * rest;
    out.insert(out.end(), begin, begin + rest);
  }
  return out;
}

std::string Join(const std::vector<std::vector<int32_t>>& rows, size_t row) {
  return absl::StrJoin(rows[row], ",");
}

// A loopback port with nothing listening on it.
int DeadPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

class EndToEndTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
        {GLASSBOXD_PATH, "--model", absl::StrCat("tiny-gpt2=", kFixtures, "/models/tiny-gpt2"),
         "--model", absl::StrCat("tiny-llama=", kFixtures, "/models/tiny-llama"), "--sae",
         absl::StrCat("res1=", kFixtures, "/saes/service/res1_standard@tiny-gpt2"), "--listen",
         "127.0.0.1:0", "--device", "cpu"},
        "glassboxd: listening on ", absl::Seconds(30));
    if (server.ok()) {
      server_ = server->release();
    } else {
      start_error_ = new std::string(server.status().ToString());
    }
  }

  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      const int code = server_->Stop();
      EXPECT_EQ(code, 0) << "glassboxd did not exit cleanly on SIGTERM; its log:\n"
                         << server_->log();
    }
    delete server_;
    server_ = nullptr;
    delete start_error_;
    start_error_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr) << "glassboxd did not start: " << *start_error_;
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(server_->address());
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }

  void TearDown() override {
    if (HasFailure() && server_ != nullptr) {
      std::cerr << "---- glassboxd log ----\n" << server_->log() << "-----------------------\n";
    }
  }

  ProcessResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), {GLASSBOX_CLI_PATH, "--server", server_->address()});
    return RunProcess(args);
  }

  std::string TempPath(const std::string& name) {
    return (std::filesystem::path(::testing::TempDir()) /
            absl::StrCat("client_e2e_", getpid(), "_", name))
        .string();
  }

  glassbox::v1::RunRequest Request(const std::string& model,
                                   const std::vector<std::vector<int32_t>>& rows) {
    glassbox::v1::RunRequest request;
    request.set_model(model);
    for (const auto& row : rows) {
      request.mutable_inputs()->add_token_ids()->mutable_ids()->Add(row.begin(), row.end());
    }
    return request;
  }

  static ServerProcess* server_;
  static std::string* start_error_;
  std::unique_ptr<Client> client_;
};

ServerProcess* EndToEndTest::server_ = nullptr;
std::string* EndToEndTest::start_error_ = nullptr;

TEST_F(EndToEndTest, ModelsListsBoth) {
  absl::StatusOr<std::vector<glassbox::v1::ModelInfo>> models = client_->ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  std::map<std::string, glassbox::v1::ModelInfo> by_name;
  for (const auto& m : *models) by_name[m.name()] = m;
  ASSERT_EQ(by_name.size(), 2u);
  EXPECT_EQ(by_name["tiny-gpt2"].architecture(), "gpt2");
  EXPECT_EQ(by_name["tiny-gpt2"].n_layers(), 2);
  EXPECT_EQ(by_name["tiny-gpt2"].vocab_size(), 300);
  EXPECT_EQ(by_name["tiny-llama"].architecture(), "llama");
  EXPECT_EQ(by_name["tiny-llama"].n_kv_heads(), 2);

  ProcessResult r = Cli({"models"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("tiny-gpt2 "));
  EXPECT_THAT(r.out, HasSubstr("tiny-llama "));
  EXPECT_THAT(r.out, HasSubstr("layers=2 d_model=64 heads=4 vocab=300 device=cpu dtype=f32"));
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 2);
}

TEST_F(EndToEndTest, InfoListsHookPoints) {
  absl::StatusOr<glassbox::v1::ModelInfo> info = client_->GetModelInfo("tiny-gpt2");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->d_model(), 64);
  EXPECT_EQ(info->n_heads(), 4);
  std::vector<std::string> hooks;
  for (const auto& hook : info->hook_points()) hooks.push_back(hook.name());
  EXPECT_THAT(hooks, ::testing::Contains("blocks.1.hook_resid_post"));
  EXPECT_THAT(hooks, ::testing::Contains("hook_embed"));

  ProcessResult r = Cli({"info", "tiny-gpt2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("  hook_embed [batch, pos, 64]\n"));
  EXPECT_THAT(r.out, HasSubstr("  blocks.0.hook_resid_post [batch, pos, 64]\n"));
  EXPECT_THAT(r.out, HasSubstr("  blocks.1.attn.hook_pattern [batch, 4, query_pos, key_pos]\n"));
  EXPECT_THAT(r.out, HasSubstr("  blocks.1.mlp.hook_post [batch, pos, 256]\n"));

  r = Cli({"info", "tiny-llama"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("  blocks.0.attn.hook_k [batch, pos, 2, 16]\n"));
}

TEST_F(EndToEndTest, CliRunWritesReferenceValues) {
  const ExpectedValues expected("tiny-gpt2");
  const std::vector<std::vector<int32_t>> rows = expected.InputIds();
  ASSERT_EQ(rows.size(), 3u);
  const std::string path = TempPath("run.safetensors");
  ProcessResult r = Cli({"run", "--model", "tiny-gpt2", "--tokens", Join(rows, 0), "--tokens",
                         Join(rows, 1), "--tokens", Join(rows, 2), "--capture",
                         "blocks.*.hook_resid_post", "--logits", "all", "--loss", "--out", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("blocks.1.hook_resid_post"));
  EXPECT_THAT(r.out, HasSubstr("wrote "));

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<std::string> names;
  for (const TensorView& t : (*file)->tensors()) names.push_back(t.name);
  EXPECT_THAT(names, ElementsAre("blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "logits",
                                 "loss_per_token", "input_ids", "sequence_lengths"));
  auto check = [&](const std::string& name, const std::string& reference,
                   std::vector<int64_t> shape) {
    SCOPED_TRACE(name);
    const TensorView* t = (*file)->Find(name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->dtype, SafetensorsDtype::kF32);
    EXPECT_EQ(t->shape, shape);
    std::vector<float> values(t->numel());
    std::memcpy(values.data(), t->bytes.data(), values.size() * sizeof(float));
    EXPECT_LT(NormRelativeError(values, expected.Get(reference).values), kTolerance);
  };
  check("blocks.0.hook_resid_post", "unpadded.tl.blocks.0.hook_resid_post", {3, 11, 64});
  check("blocks.1.hook_resid_post", "unpadded.tl.blocks.1.hook_resid_post", {3, 11, 64});
  check("logits", "unpadded.tl.logits", {3, 11, 300});
  check("loss_per_token", "unpadded.hf.loss_per_token", {3, 10});

  const TensorView* ids = (*file)->Find("input_ids");
  ASSERT_NE(ids, nullptr);
  EXPECT_THAT(ids->shape, ElementsAre(3, 11));
  std::vector<int32_t> id_values(33);
  std::memcpy(id_values.data(), ids->bytes.data(), 33 * sizeof(int32_t));
  EXPECT_EQ(std::vector<int32_t>(id_values.begin(), id_values.begin() + 11), rows[0]);
  std::filesystem::remove(path);
}

TEST_F(EndToEndTest, LibraryStreamsHeaderTensorsSummaryInOrder) {
  const ExpectedValues expected("tiny-gpt2");
  glassbox::v1::RunRequest request = Request("tiny-gpt2", expected.InputIds());
  glassbox::v1::Capture* capture = request.add_captures();
  capture->set_hook("blocks.*.attn.hook_pattern");
  capture->set_dtype(glassbox::v1::DTYPE_F16);
  request.set_chunk_bytes(1000);  // several chunks per tensor

  std::vector<std::string> header_names;
  std::vector<std::string> received;
  int64_t header_bytes = 0;
  bool summary_seen = false;
  glassbox::v1::Summary summary;
  absl::Status status = client_->RunStreaming(
      request, {.on_header =
                    [&](const glassbox::v1::Header& header) {
                      EXPECT_TRUE(received.empty());
                      EXPECT_THAT(header.sequence_lengths(), ElementsAre(11, 11, 11));
                      for (const auto& t : header.tensors()) {
                        header_names.push_back(t.name());
                        header_bytes += t.nbytes();
                      }
                      return absl::OkStatus();
                    },
                .on_tensor =
                    [&](ReceivedTensor t) {
                      EXPECT_FALSE(summary_seen);
                      EXPECT_EQ(t.dtype, glassbox::v1::DTYPE_F16);
                      EXPECT_THAT(t.shape, ElementsAre(3, 4, 11, 11));
                      absl::StatusOr<std::vector<float>> values = t.ToFloats();
                      EXPECT_TRUE(values.ok()) << values.status();
                      if (!values.ok()) return absl::OkStatus();
                      // f16 keeps ~11 bits: relative error well under 1e-3.
                      EXPECT_LT(
                          NormRelativeError(*values, expected.Get("unpadded.tl." + t.name).values),
                          1e-3)
                          << t.name;
                      received.push_back(t.name);
                      return absl::OkStatus();
                    },
                .on_summary =
                    [&](glassbox::v1::Summary s) {
                      summary_seen = true;
                      summary = std::move(s);
                      return absl::OkStatus();
                    }});
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_TRUE(summary_seen);
  EXPECT_THAT(header_names,
              ElementsAre("blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"));
  EXPECT_EQ(received, header_names);
  EXPECT_EQ(summary.bytes_sent(), header_bytes);
  EXPECT_GT(summary.timings().total_seconds(), 0);
}

TEST_F(EndToEndTest, LastPositionAndLastLogits) {
  const ExpectedValues expected("tiny-gpt2");
  glassbox::v1::RunRequest request = Request("tiny-gpt2", expected.InputIds());
  glassbox::v1::Capture* capture = request.add_captures();
  capture->set_hook("blocks.1.hook_resid_post");
  capture->add_positions(-1);
  request.mutable_outputs()->set_logits(glassbox::v1::LOGITS_LAST);
  absl::StatusOr<RunResult> result = client_->Run(request);
  ASSERT_TRUE(result.ok()) << result.status();

  const ReceivedTensor* resid = result->Find("blocks.1.hook_resid_post");
  ASSERT_NE(resid, nullptr);
  EXPECT_THAT(resid->shape, ElementsAre(3, 1, 64));
  EXPECT_LT(NormRelativeError(*resid->ToFloats(),
                              AtPosition(expected.Get("unpadded.tl.blocks.1.hook_resid_post"), 10)),
            kTolerance);
  const ReceivedTensor* logits = result->Find("logits");
  ASSERT_NE(logits, nullptr);
  EXPECT_THAT(logits->shape, ElementsAre(3, 300));
  EXPECT_LT(
      NormRelativeError(*logits->ToFloats(), AtPosition(expected.Get("unpadded.tl.logits"), 10)),
      kTolerance);
}

TEST_F(EndToEndTest, LlamaResidualStream) {
  const ExpectedValues expected("tiny-llama");
  glassbox::v1::RunRequest request = Request("tiny-llama", expected.InputIds());
  request.add_captures()->set_hook("blocks.*.hook_resid_post");
  absl::StatusOr<RunResult> result = client_->Run(request);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->tensors.size(), 2u);
  for (const ReceivedTensor& t : result->tensors) {
    EXPECT_THAT(t.shape, ElementsAre(3, 11, 64));
    EXPECT_LT(NormRelativeError(*t.ToFloats(), expected.Get("unpadded.tl." + t.name).values),
              kTolerance)
        << t.name;
  }
}

// A tensor of a file the CLI wrote, as floats (F32) with its shape.
Reference ReadOutput(const SafetensorsFile& file, const std::string& name) {
  Reference out;
  const TensorView* view = file.Find(name);
  EXPECT_NE(view, nullptr) << "the output has no " << name;
  if (view == nullptr) return out;
  EXPECT_EQ(view->dtype, SafetensorsDtype::kF32) << name;
  out.shape = view->shape;
  out.values.resize(view->numel());
  std::memcpy(out.values.data(), view->bytes.data(), out.values.size() * sizeof(float));
  return out;
}

std::unique_ptr<SafetensorsFile> OpenOutput(const std::string& path) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? std::move(*file) : nullptr;
}

// Every intervention case of tests/reference/make_intervention_fixtures.py that the spec syntax
// expresses, through the glassbox binary, against TransformerLens run_with_hooks.
TEST_F(EndToEndTest, CliInterventionsEqualTransformerLens) {
  // The value vectors the cases add or set, in a file for value=@FILE#NAME.
  const std::string values_path = TempPath("values.safetensors");
  for (const std::string model : {"tiny-gpt2", "tiny-llama"}) {
    SCOPED_TRACE(model);
    const ExpectedValues inputs(model);
    const ExpectedValues expected(model + ".interventions");
    const std::vector<std::vector<int32_t>> rows = inputs.InputIds();
    ASSERT_EQ(rows.size(), 3u);
    {
      std::vector<Reference> refs;
      std::vector<TensorToWrite> tensors;
      const std::vector<std::string> names = {
          "steer_last.value", "set_mlp_out.value", "chain.value", "add_scores.value",
          "uniform_bos_pattern.uniform", "uniform_bos_pattern.bos"};
      for (const std::string& name : names) refs.push_back(expected.Get(name));
      int i = 0;
      for (const std::string& name : names) {
        tensors.push_back({.name = name, .dtype = SafetensorsDtype::kF32, .shape = refs[i].shape,
                           .bytes = std::as_bytes(std::span<const float>(refs[i].values))});
        ++i;
      }
      ASSERT_TRUE(WriteSafetensors(values_path, tensors).ok());
    }
    const std::string file = "@" + values_path + "#";
    const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
        {"zero_head", {"zero:blocks.0.attn.hook_z:heads=1"}},
        {"steer_last",
         {"add:blocks.1.hook_resid_pre:positions=-1:coef=2.5:value=" + file + "steer_last.value"}},
        {"mean_neurons", {"mean_batch:blocks.0.mlp.hook_post:dims=3,7,11"}},
        {"resample_attn_out", {"patch_row:blocks.1.hook_attn_out:positions=4:source_rows=2,0,1"}},
        {"scale_v", {"scale:blocks.1.attn.hook_v:heads=0:coef=0.5"}},
        {"set_mlp_out", {"set:blocks.0.hook_mlp_out:rows=1:value=" + file + "set_mlp_out.value"}},
        {"chain",
         {"add:blocks.0.hook_resid_mid:positions=0,2:value=" + file + "chain.value",
          "scale:blocks.0.hook_resid_mid:positions=0,2:coef=0.5"}},
        {"mean_pos", {"mean_pos:blocks.1.hook_mlp_out:rows=0"}},
        {"zero_pattern", {"zero:blocks.0.attn.hook_pattern:positions=3,-1:heads=1"}},
        {"uniform_bos_pattern",
         {"set:blocks.0.attn.hook_pattern:heads=0:value=" + file + "uniform_bos_pattern.uniform",
          "set:blocks.1.attn.hook_pattern:heads=2:value=" + file + "uniform_bos_pattern.bos"}},
        {"add_scores",
         {"add:blocks.0.attn.hook_attn_scores:heads=3:dims=0,2,-6:coef=1.5:value=" + file +
          "add_scores.value"}},
        {"scale_scores", {"scale:blocks.1.attn.hook_attn_scores:rows=0,2:coef=0.3"}},
    };
    for (const auto& [name, specs] : cases) {
      SCOPED_TRACE(name);
      const std::string path = TempPath(name + ".safetensors");
      std::vector<std::string> args = {"run", "--model", model};
      for (size_t b = 0; b < rows.size(); ++b) {
        args.insert(args.end(), {"--tokens", Join(rows, b)});
      }
      for (const std::string& spec : specs) args.insert(args.end(), {"--intervene", spec});
      args.insert(args.end(), {"--logits", "all", "--out", path});
      ProcessResult r = Cli(args);
      ASSERT_EQ(r.exit_code, 0) << r.err;
      EXPECT_THAT(r.out, HasSubstr("  intervene " + specs[0].substr(0, specs[0].find(":value"))));
      std::unique_ptr<SafetensorsFile> out = OpenOutput(path);
      ASSERT_NE(out, nullptr);
      const Reference logits = ReadOutput(*out, "logits");
      EXPECT_THAT(logits.shape, ElementsAre(3, 11, 300));
      EXPECT_LT(NormRelativeError(logits.values, expected.Get(name + ".logits").values),
                kTolerance);
      // The edit changed something: the logits are not the unedited ones.
      EXPECT_GT(NormRelativeError(logits.values, inputs.Get("unpadded.tl.logits").values), 1e-4);
      EXPECT_THAT(out->metadata().at("glassbox.request"), HasSubstr("interventions"));
      std::filesystem::remove(path);
    }
  }
  std::filesystem::remove(values_path);
}

TEST_F(EndToEndTest, CliPatchEqualsTransformerLensPatching) {
  for (const std::string model : {"tiny-gpt2", "tiny-llama"}) {
    SCOPED_TRACE(model);
    const ExpectedValues expected(model + ".patching");
    const std::vector<std::vector<int32_t>> clean = expected.IntRows("clean");
    const std::vector<std::vector<int32_t>> corrupted = expected.IntRows("corrupted");
    const std::vector<std::vector<int32_t>> tokens = expected.IntRows("tokens");
    ASSERT_EQ(clean.size(), 2u);
    ASSERT_EQ(tokens.size(), 1u);
    ASSERT_EQ(tokens[0].size(), 2u);
    const std::string path = TempPath("patch.safetensors");
    std::vector<std::string> args = {"patch", "--model", model};
    for (size_t b = 0; b < clean.size(); ++b) {
      args.insert(args.end(), {"--clean-tokens", Join(clean, b), "--corrupted-tokens",
                               Join(corrupted, b)});
    }
    args.insert(args.end(), {"--kind", "head_out_by_pos", "--metric",
                             absl::StrCat("logit_diff:", tokens[0][0], ",", tokens[0][1]),
                             "--out", path});
    ProcessResult r = Cli(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("patching sweep head_out_by_pos on " + model));
    EXPECT_THAT(r.out, HasSubstr("  layer pos  head 0"));
    std::unique_ptr<SafetensorsFile> out = OpenOutput(path);
    ASSERT_NE(out, nullptr);
    const Reference values = ReadOutput(*out, "values");
    EXPECT_THAT(values.shape, ElementsAre(2, 7, 4));
    EXPECT_LT(NormRelativeError(values.values, expected.Get("head_out_by_pos.values").values),
              kTolerance);
    EXPECT_LT(NormRelativeError(ReadOutput(*out, "clean_metric").values,
                                expected.Get("clean_metric").values),
              kTolerance);
    EXPECT_LT(NormRelativeError(ReadOutput(*out, "corrupted_metric").values,
                                expected.Get("corrupted_metric").values),
              kTolerance);
    // normalized = (m - corrupted) / (clean - corrupted)
    const float m_clean = expected.Get("clean_metric").values[0];
    const float m_corrupted = expected.Get("corrupted_metric").values[0];
    const Reference normalized = ReadOutput(*out, "normalized");
    ASSERT_EQ(normalized.values.size(), values.values.size());
    for (size_t i = 0; i < values.values.size(); ++i) {
      EXPECT_NEAR(normalized.values[i], (values.values[i] - m_corrupted) / (m_clean - m_corrupted),
                  1e-4);
    }
    std::filesystem::remove(path);
  }

  // The library, the [layer, pos] resid_pre sweep.
  const ExpectedValues expected("tiny-gpt2.patching");
  glassbox::v1::PatchingSweepRequest request;
  request.set_model("tiny-gpt2");
  for (const auto& row : expected.IntRows("clean")) {
    request.mutable_clean()->add_token_ids()->mutable_ids()->Add(row.begin(), row.end());
  }
  for (const auto& row : expected.IntRows("corrupted")) {
    request.mutable_corrupted()->add_token_ids()->mutable_ids()->Add(row.begin(), row.end());
  }
  request.set_kind(glassbox::v1::SWEEP_RESID_PRE);
  request.mutable_metric()->set_token_a(17);
  request.mutable_metric()->set_token_b(42);
  absl::StatusOr<glassbox::v1::PatchingSweepResponse> sweep = client_->PatchingSweep(request);
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  EXPECT_THAT(sweep->values().shape(), ElementsAre(2, 7));
  EXPECT_THAT(sweep->values().dim_names(), ElementsAre("layer", "pos"));
  EXPECT_LT(NormRelativeError({sweep->values().values().begin(), sweep->values().values().end()},
                              expected.Get("resid_pre.values").values),
            kTolerance);
  EXPECT_GT(sweep->forward_passes(), 0);
}

TEST_F(EndToEndTest, CliAttribPatchEqualsTorchAtP) {
  const ExpectedValues expected("tiny-gpt2.attribution");
  const std::vector<std::vector<int32_t>> clean = expected.IntRows("clean");
  const std::vector<std::vector<int32_t>> corrupted = expected.IntRows("corrupted");
  const std::string path = TempPath("atp.safetensors");
  std::vector<std::string> args = {"attrib-patch", "--model", "tiny-gpt2"};
  for (size_t b = 0; b < clean.size(); ++b) {
    args.insert(args.end(),
                {"--clean-tokens", Join(clean, b), "--corrupted-tokens", Join(corrupted, b)});
  }
  args.insert(args.end(),
              {"--kind", "mlp_post", "--metric", "logit_diff:17,42", "--normalized", "--out", path});
  ProcessResult r = Cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("attribution patching (AtP estimate of the sweep) mlp_post"));
  EXPECT_THAT(r.out, HasSubstr("2 forward and 1 backward passes"));
  EXPECT_THAT(r.out, HasSubstr("the 20 largest of 512 cells:"));
  std::unique_ptr<SafetensorsFile> out = OpenOutput(path);
  ASSERT_NE(out, nullptr);
  const Reference values = ReadOutput(*out, "values");
  EXPECT_THAT(values.shape, ElementsAre(2, 256));
  const float span = ReadOutput(*out, "clean_metric").values[0] -
                     ReadOutput(*out, "corrupted_metric").values[0];
  std::vector<float> estimate = ReadOutput(*out, "normalized").values;
  for (float& v : estimate) v *= span;
  EXPECT_LT(NormRelativeError(estimate, expected.Get("logit_diff.mlp_post_all_pos.atp").values),
            2e-5);
  std::filesystem::remove(path);
}

TEST_F(EndToEndTest, CliIntegratedGradientsEqualTorch) {
  const ExpectedValues expected("tiny-gpt2.integrated_gradients");
  const std::vector<std::vector<int32_t>> rows = expected.IntRows("tokens");
  const std::string path = TempPath("ig.safetensors");
  ProcessResult r = Cli({"ig", "--model", "tiny-gpt2", "--tokens", Join(rows, 0), "--tokens",
                         Join(rows, 1), "--metric", "logit_diff:17:42", "--hook",
                         "blocks.0.mlp.hook_post", "--steps", "16", "--out", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("integrated gradients at blocks.0.mlp.hook_post on tiny-gpt2"));
  EXPECT_THAT(r.out, HasSubstr("attributions sum to"));
  std::unique_ptr<SafetensorsFile> out = OpenOutput(path);
  ASSERT_NE(out, nullptr);
  EXPECT_LT(NormRelativeError(ReadOutput(*out, "attributions").values,
                              expected.Get("blocks.0.mlp.hook_post.ig16").values),
            2e-5);
  EXPECT_LT(NormRelativeError(ReadOutput(*out, "baseline_metric").values,
                              expected.Get("blocks.0.mlp.hook_post.baseline_metric").values),
            kTolerance);
  std::filesystem::remove(path);
}

// One prompt's LRE is its Jacobian (torch's, make_jacobian_fixtures.py "resid": row 0,
// blocks.0.hook_resid_pre at 2 -> blocks.1.hook_resid_post at 6, the last); with a second
// prompt held out the faithfulness line is printed.
TEST_F(EndToEndTest, CliLreIsTheMeanJacobian) {
  const ExpectedValues expected("tiny-gpt2.jacobians");
  const std::vector<std::vector<int32_t>> rows = expected.IntRows("tokens");
  const std::string path = TempPath("lre.safetensors");
  const std::vector<std::string> hooks = {"--subject_position", "2", "--subject_hook",
                                          "blocks.0.hook_resid_pre", "--object_hook",
                                          "blocks.1.hook_resid_post"};
  std::vector<std::string> args = {"lre", "--model", "tiny-gpt2", "--tokens", Join(rows, 0)};
  args.insert(args.end(), hooks.begin(), hooks.end());
  args.insert(args.end(), {"--out", path});
  ProcessResult r = Cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("W [64, 64] from 1 prompts"));
  std::unique_ptr<SafetensorsFile> out = OpenOutput(path);
  ASSERT_NE(out, nullptr);
  const std::vector<float> want = expected.Get("resid.jacobian").values;
  const std::vector<float> row0(want.begin(), want.begin() + 64 * 64);
  EXPECT_LT(NormRelativeError(ReadOutput(*out, "weight").values, row0), 2e-5);
  std::filesystem::remove(path);

  args = {"lre", "--model", "tiny-gpt2", "--tokens", Join(rows, 0), "--tokens", Join(rows, 1),
          "--holdout", "1"};
  args.insert(args.end(), hooks.begin(), hooks.end());
  r = Cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("faithfulness"));
  EXPECT_THAT(r.err, HasSubstr("lre: Jacobian 1/1"));
}

TEST_F(EndToEndTest, CliGrad) {
  const ExpectedValues expected("tiny-gpt2.gradients");
  // The fixture's two rows of 7 tokens (i32).
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(absl::StrCat(kFixtures, "/expected/tiny-gpt2.gradients.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorView* tokens = (*file)->Find("tokens");
  ASSERT_NE(tokens, nullptr);
  std::vector<int32_t> ids(tokens->numel());
  std::memcpy(ids.data(), tokens->bytes.data(), ids.size() * sizeof(int32_t));
  const std::vector<std::vector<int32_t>> rows = {{ids.begin(), ids.begin() + 7},
                                                  {ids.begin() + 7, ids.end()}};
  const std::string path = TempPath("grad.safetensors");
  ProcessResult r = Cli({"grad", "--model", "tiny-gpt2", "--tokens", Join(rows, 0), "--tokens",
                         Join(rows, 1), "--metric", "logit_diff:17:42", "--hooks",
                         "blocks.*.hook_resid_pre", "--hooks", "blocks.1.attn.hook_pattern",
                         "--out", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("row 1: metric "));
  EXPECT_THAT(r.out, HasSubstr("  blocks.1.attn.hook_pattern "));
  std::unique_ptr<SafetensorsFile> out = OpenOutput(path);
  ASSERT_NE(out, nullptr);
  for (const std::string hook :
       {"blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.attn.hook_pattern"}) {
    const Reference got = ReadOutput(*out, hook);
    const Reference want = expected.Get("logit_diff.grad." + hook);
    EXPECT_EQ(got.shape, want.shape) << hook;
    EXPECT_LT(NormRelativeError(got.values, want.values), kTolerance) << hook;
  }
  const Reference metric = ReadOutput(*out, "metric");
  const Reference want = expected.Get("logit_diff.value");
  ASSERT_EQ(metric.values.size(), 2u);
  for (int b = 0; b < 2; ++b) EXPECT_NEAR(metric.values[b], want.values[b], 1e-4);
}

TEST_F(EndToEndTest, CliLogitLens) {
  const ExpectedValues inputs("tiny-gpt2");
  const ExpectedValues expected("tiny-gpt2.analyses");
  const std::vector<std::vector<int32_t>> rows = inputs.InputIds();
  const std::string path = TempPath("lens.safetensors");
  ProcessResult r = Cli({"logit-lens", "--model", "tiny-gpt2", "--tokens", Join(rows, 0),
                         "--tokens", Join(rows, 1), "--tokens", Join(rows, 2), "--top_k", "3",
                         "--targets", "17,42", "--out", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("row 2, position 10 of 11 (token "));
  EXPECT_THAT(r.out, HasSubstr("  0_pre "));
  EXPECT_THAT(r.out, HasSubstr("  final_post "));
  EXPECT_THAT(r.out, HasSubstr("log p(42)"));
  std::unique_ptr<SafetensorsFile> out = OpenOutput(path);
  ASSERT_NE(out, nullptr);
  const Reference top = ReadOutput(*out, "top_log_probs");
  EXPECT_THAT(top.shape, ElementsAre(3, 3, 11, 3));
  const Reference targets = ReadOutput(*out, "target_log_probs");
  EXPECT_THAT(targets.shape, ElementsAre(3, 3, 11, 2));
  const TensorView* ids = out->Find("top_tokens");
  ASSERT_NE(ids, nullptr);
  EXPECT_EQ(ids->dtype, SafetensorsDtype::kI32);
  EXPECT_EQ(out->metadata().at("glassbox.labels"), "[\"0_pre\",\"1_pre\",\"final_post\"]");
  // Against TransformerLens: the top-1 log-prob is the reference's maximum, the target
  // log-probs are the reference's entries.
  const Reference ref = expected.Get("logit_lens.log_probs");  // [3, 3, 11, 300]
  std::vector<float> ref_top, ref_targets, top1, got_targets;
  for (int64_t i = 0; i < 3 * 3 * 11; ++i) {
    const float* v = ref.values.data() + i * 300;
    ref_top.push_back(*std::max_element(v, v + 300));
    ref_targets.push_back(v[17]);
    ref_targets.push_back(v[42]);
    top1.push_back(top.values[i * 3]);
  }
  EXPECT_LT(NormRelativeError(top1, ref_top), kTolerance);
  EXPECT_LT(NormRelativeError(targets.values, ref_targets), kTolerance);
  std::filesystem::remove(path);
}

// `glassbox generate` on three ragged rows equals HF generate of each row alone; the summary
// lines carry the ids.
TEST_F(EndToEndTest, CliGenerateEqualsHfGenerate) {
  const ExpectedValues expected("generation");
  std::vector<std::string> args = {"generate", "--model", "tiny-llama", "--max_new_tokens", "12"};
  std::vector<std::vector<int32_t>> continuations;
  for (int r = 0; r < 3; ++r) {
    const std::vector<int32_t> prompt = expected.IntRows("tiny-llama.prompt." + std::to_string(r))[0];
    args.push_back("--tokens");
    args.push_back(absl::StrJoin(prompt, ","));
    continuations.push_back(expected.IntRows("tiny-llama.greedy." + std::to_string(r))[0]);
  }
  ProcessResult r = Cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (int row = 0; row < 3; ++row) {
    EXPECT_THAT(r.out, HasSubstr(absl::StrCat("(row ", row, ": ", continuations[row].size(),
                                              " new tokens [", absl::StrJoin(continuations[row], ","),
                                              "]")));
  }
  // --unsteered adds the continuation without edits: with none, it is the same greedy one.
  args.push_back("--unsteered");
  r = Cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (int row = 0; row < 3; ++row) {
    EXPECT_THAT(r.out, HasSubstr(absl::StrCat("(unsteered row ", row, ": ", continuations[row].size(),
                                              " new tokens [", absl::StrJoin(continuations[row], ","),
                                              "]")));
  }
  r = Cli({"generate", "--model", "tiny-llama", "--tokens", "1,2", "--top_p", "0"});
  EXPECT_EQ(r.exit_code, 3) << r.out;
  EXPECT_THAT(r.err, HasSubstr("top_p is 0"));
}

TEST_F(EndToEndTest, CliDirectLogitAttribution) {
  const ExpectedValues inputs("tiny-gpt2");
  const ExpectedValues expected("tiny-gpt2.analyses");
  const std::vector<std::vector<int32_t>> rows = inputs.InputIds();
  const std::string path = TempPath("dla.safetensors");
  ProcessResult r = Cli({"dla", "--model", "tiny-gpt2", "--tokens", Join(rows, 0), "--tokens",
                         Join(rows, 1), "--tokens", Join(rows, 2), "--token", "17", "--minus",
                         "42", "--top", "5", "--out", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("direct logit attribution on tiny-gpt2: logit[17] - logit[42]"));
  EXPECT_THAT(r.out, HasSubstr("row 0, position 10 (token "));
  EXPECT_THAT(r.out, HasSubstr("... 9 more"));
  std::unique_ptr<SafetensorsFile> out = OpenOutput(path);
  ASSERT_NE(out, nullptr);
  const Reference attributions = ReadOutput(*out, "attributions");
  EXPECT_THAT(attributions.shape, ElementsAre(14, 3));
  EXPECT_LT(NormRelativeError(attributions.values, expected.Get("dla.diff").values), kTolerance);
  // The components and the constant add up to the logit difference.
  const Reference logit = ReadOutput(*out, "logit");
  const Reference constant = ReadOutput(*out, "constant");
  for (int b = 0; b < 3; ++b) {
    double sum = constant.values[b];
    for (int c = 0; c < 14; ++c) sum += attributions.values[c * 3 + b];
    EXPECT_NEAR(sum, logit.values[b], 1e-3 * std::max(1.0f, std::fabs(logit.values[b])));
  }
  EXPECT_THAT(out->metadata().at("glassbox.labels"), StartsWith("[\"embed\",\"pos_embed\",\"L0H0\""));
  std::filesystem::remove(path);
}

TEST_F(EndToEndTest, CliAttentionNorms) {
  const ExpectedValues inputs("tiny-gpt2");
  const ExpectedValues expected("tiny-gpt2.analyses");
  const std::vector<std::vector<int32_t>> rows = inputs.InputIds();
  const std::string path = TempPath("norms.safetensors");
  ProcessResult r = Cli({"attn-norms", "--model", "tiny-gpt2", "--tokens", Join(rows, 0),
                         "--tokens", Join(rows, 1), "--tokens", Join(rows, 2), "--layers", "0,1",
                         "--out", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("layer  head  weight  norm share"));
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 5 + 1 + 8 + 1);  // intro, header, 8 heads, wrote
  std::unique_ptr<SafetensorsFile> out = OpenOutput(path);
  ASSERT_NE(out, nullptr);
  for (int l = 0; l < 2; ++l) {
    SCOPED_TRACE(l);
    const std::string prefix = absl::StrCat("blocks.", l, ".");
    const Reference weights = ReadOutput(*out, prefix + "weights");
    EXPECT_THAT(weights.shape, ElementsAre(3, 4, 11, 11));
    EXPECT_LT(NormRelativeError(weights.values,
                                inputs.Get(absl::StrCat("unpadded.tl.blocks.", l,
                                                        ".attn.hook_pattern")).values),
              kTolerance);
    EXPECT_LT(NormRelativeError(ReadOutput(*out, prefix + "head_norms").values,
                                expected.Get(absl::StrCat("attn_norms.", l, ".head")).values),
              kTolerance);
    const Reference layer = ReadOutput(*out, prefix + "layer_norms");
    EXPECT_THAT(layer.shape, ElementsAre(3, 11, 11));
    EXPECT_LT(NormRelativeError(layer.values,
                                expected.Get(absl::StrCat("attn_norms.", l, ".layer")).values),
              kTolerance);
  }
  std::filesystem::remove(path);
}

// `saes`, `sae-encode` and `run --sae_splice/--sae_edit/--sae_steer` equal sae_lens and
// HookedSAETransformer (tests/reference/make_sae_service_fixtures.py).
TEST_F(EndToEndTest, CliSaesEqualSaeLens) {
  ProcessResult r = Cli({"saes"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("res1  tiny-gpt2  blocks.1.hook_resid_pre  standard"));

  const ExpectedValues expected("tiny-gpt2");
  const ExpectedValues saes("tiny-gpt2.saes");
  const std::vector<std::vector<int32_t>> rows = expected.InputIds();
  const std::vector<std::string> tokens = {"--tokens",    Join(rows, 0), "--tokens",
                                           Join(rows, 1), "--tokens",    Join(rows, 2)};
  auto read = [](const std::string& path, const std::string& name) {
    std::vector<float> values;
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
    EXPECT_TRUE(file.ok()) << file.status();
    if (!file.ok()) return values;
    const TensorView* t = (*file)->Find(name);
    EXPECT_NE(t, nullptr) << name;
    if (t == nullptr) return values;
    values.resize(t->numel());
    std::memcpy(values.data(), t->bytes.data(), values.size() * sizeof(float));
    return values;
  };

  const std::string encoded = TempPath("sae_encode.safetensors");
  std::vector<std::string> args = {"sae-encode", "--sae",   "res1",  "--top_k",
                                   "3",          "--dense", "--out", encoded};
  args.insert(args.end(), tokens.begin(), tokens.end());
  r = Cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("SAE res1 on tiny-gpt2 at blocks.1.hook_resid_pre: 33 tokens, L0 "));
  EXPECT_LT(NormRelativeError(read(encoded, "dense"), saes.Get("res1_standard.acts").values),
            kTolerance);
  std::filesystem::remove(encoded);

  const std::string hook = "blocks.1.hook_resid_pre";
  const std::string spliced = TempPath("sae_run.safetensors");
  args = {"run",
          "--model",
          "tiny-gpt2",
          "--sae-splice",
          "res1:error_term",
          "--capture",
          hook + ".hook_sae_*",
          "--logits",
          "all",
          "--out",
          spliced};
  // The reference's edits: zero 89 and scale 115 by 3 everywhere, clamp 83 to 4 at position 2.
  for (const char* edit : {"res1:zero:features=89", "res1:clamp:features=83:value=4:pos=2",
                                  "res1:scale:features=115:value=3"}) {
    args.insert(args.end(), {"--sae-edit", edit});
  }
  args.insert(args.end(), tokens.begin(), tokens.end());
  r = Cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("sae splice res1 (error term): zero features 89; clamp"));
  for (const char* point : {"input", "acts_pre", "acts_post", "recons", "error", "output"}) {
    const std::string name = absl::StrCat(hook, ".hook_sae_", point);
    EXPECT_LT(NormRelativeError(read(spliced, name), saes.Get("res1_standard.edit." + name).values),
              kTolerance)
        << name;
  }
  EXPECT_LT(
      NormRelativeError(read(spliced, "logits"), saes.Get("res1_standard.edit.logits").values),
      kTolerance);

  args = {"run",      "--model", "tiny-gpt2", "--sae-steer", "res1:features=2:coef=3:pos=-1",
          "--logits", "all",     "--out",     spliced};
  args.insert(args.end(), tokens.begin(), tokens.end());
  r = Cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_LT(
      NormRelativeError(read(spliced, "logits"), saes.Get("res1_standard.steer.logits").values),
      kTolerance);
  std::filesystem::remove(spliced);

  // Bad requests: documented exit codes.
  r = Cli({"sae-encode", "--sae", "nope", "--tokens", "1"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND: no SAE named \"nope\""));
  r = Cli({"run", "--model", "tiny-llama", "--tokens", "1", "--sae-splice", "res1"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, HasSubstr("attached to model \"tiny-gpt2\""));
  r = Cli({"run", "--model", "tiny-gpt2", "--tokens", "1", "--sae-splice", "res1", "--sae-edit",
           "res1:zero:features=999"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, HasSubstr("feature 999 is outside [0, 128)"));
}

TEST_F(EndToEndTest, BadAnalysisRequestsGetDocumentedExitCodes) {
  const std::vector<std::string> run = {"run", "--model", "tiny-gpt2", "--tokens", "1,2,3"};
  auto with = [](std::vector<std::string> base, std::vector<std::string> extra) {
    base.insert(base.end(), extra.begin(), extra.end());
    return base;
  };
  // Local usage errors: 2, before anything is sent.
  ProcessResult r = Cli(with(run, {"--intervene", "ablate:blocks.0.attn.hook_z"}));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("unknown kind \"ablate\""));
  r = Cli(with(run, {"--intervene", "scale:blocks.0.attn.hook_z:heads=1"}));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = Cli(with(run, {"--intervene", "add:blocks.0.hook_resid_pre:value=@/nonexistent/v.npy"}));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("cannot open /nonexistent/v.npy"));
  r = Cli({"dla", "--model", "tiny-gpt2", "--tokens", "1,2", "--token", "3", "--position", "5"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--position 5 is outside row 0 (2 tokens)"));

  // The server's verdicts: 3.
  r = Cli(with(run, {"--intervene", "zero:blocks.0.attn.hook_z:heads=9"}));
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, StartsWith("glassbox: INVALID_ARGUMENT: "));
  EXPECT_THAT(r.err, HasSubstr("head 9"));
  r = Cli(with(run, {"--intervene", "add:blocks.0.hook_resid_pre:value=1,2,3"}));  // d_model 64
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, HasSubstr("3 elements"));
  r = Cli(with(run, {"--intervene", "zero:blocks.0.hook_no_such_hook"}));
  EXPECT_EQ(r.exit_code, 3) << r.err;
  r = Cli(with(run, {"--intervene", "patch_row:blocks.0.hook_resid_pre:source_rows=0,1"}));
  EXPECT_EQ(r.exit_code, 3) << r.err;  // one batch row, two source rows
  r = Cli({"patch", "--model", "tiny-gpt2", "--clean-tokens", "1,2,3", "--corrupted-tokens", "1,2",
           "--kind", "resid_pre", "--metric", "logit_diff:1,2"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  r = Cli({"logit-lens", "--model", "tiny-gpt2", "--tokens", "1,300"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  r = Cli({"dla", "--model", "tiny-gpt2", "--tokens", "1,2", "--token", "300"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  r = Cli({"attn-norms", "--model", "tiny-gpt2", "--tokens", "1,2", "--layers", "7"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  r = Cli({"patch", "--model", "no-such-model", "--clean-tokens", "1", "--corrupted-tokens", "2",
           "--kind", "q", "--metric", "loss"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, StartsWith("glassbox: NOT_FOUND: "));

  r = Cli({"models"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(EndToEndTest, BadRequestsGetDocumentedExitCodesAndTheServerStaysUp) {
  ProcessResult r = Cli({"run", "--model", "no-such-model", "--tokens", "1,2"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, StartsWith("glassbox: NOT_FOUND: "));

  r = Cli({"run", "--model", "tiny-gpt2", "--tokens", "1,2", "--capture",
           "blocks.0.hook_no_such_hook"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, StartsWith("glassbox: INVALID_ARGUMENT: "));

  r = Cli({"run", "--model", "tiny-gpt2", "--tokens", "1,300"});  // vocab is 300
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, StartsWith("glassbox: INVALID_ARGUMENT: "));

  r = Cli({"info", "no-such-model"});
  EXPECT_EQ(r.exit_code, 3) << r.err;

  absl::StatusOr<glassbox::v1::ModelInfo> info = client_->GetModelInfo("tiny-gpt2");
  ASSERT_TRUE(info.ok()) << info.status();
  if (!info->has_tokenizer()) {
    r = Cli({"run", "--model", "tiny-gpt2", "--text", "Hello"});
    EXPECT_EQ(r.exit_code, 3) << r.err;
    EXPECT_THAT(r.err, StartsWith("glassbox: FAILED_PRECONDITION: "));
  }

  r = Cli({"run", "--model", "tiny-gpt2"});  // usage: no inputs
  EXPECT_EQ(r.exit_code, 2) << r.err;

  r = RunProcess({GLASSBOX_CLI_PATH, "--server", absl::StrCat("127.0.0.1:", DeadPort()), "models"});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_THAT(r.err, StartsWith("glassbox: UNAVAILABLE: "));

  r = Cli({"models"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// The CLI against a glassboxd with API keys: no key is refused saying how to pass one, --api_key
// (or $GLASSBOX_API_KEY) is sent, and `cached` shows each run's owner, every key's to an admin.
TEST(EndToEndApiKeys, CliSendsTheKeyAndShowsOwners) {
  const std::string keys = (std::filesystem::path(::testing::TempDir()) /
                            absl::StrCat("client_e2e_", getpid(), "_keys.json"))
                               .string();
  {
    std::ofstream out(keys);
    out << R"({"keys": [{"name": "alice", "key": "alice-key"},
                        {"name": "ops", "key": "ops-key", "admin": true}]})";
  }
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      {GLASSBOXD_PATH, "--model", absl::StrCat("tiny-gpt2=", kFixtures, "/models/tiny-gpt2"),
       "--api_keys", keys, "--listen", "127.0.0.1:0", "--device", "cpu"},
      "glassboxd: listening on ", absl::Seconds(30));
  ASSERT_TRUE(server.ok()) << server.status();
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {GLASSBOX_CLI_PATH, "--server", (*server)->address()});
    return RunProcess(args);
  };
  ProcessResult r = cli({"models"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--api_key KEY or $GLASSBOX_API_KEY"));
  r = cli({"--api_key", "alice-key", "run", "--model", "tiny-gpt2", "--tokens", "1,2,3",
           "--cache_as", "mine", "--cache_hook", "hook_embed"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = cli({"--api_key", "ops-key", "cached"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("1 cached runs, 0 of"));  // the bytes are the admin's own
  EXPECT_THAT(r.out, HasSubstr("owner"));
  EXPECT_THAT(r.out, HasSubstr("alice"));
  EXPECT_THAT(r.out, HasSubstr("mine"));
  // The queue and every key's usage are for admins.
  r = cli({"--api_key", "ops-key", "queue"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("0 running, 0 queued; "));
  EXPECT_THAT(r.out, HasSubstr("tokens_24h"));
  EXPECT_THAT(r.out, HasSubstr("alice"));
  r = cli({"--api_key", "alice-key", "queue"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("PERMISSION_DENIED"));
  EXPECT_THAT(r.err, HasSubstr("needs an admin key"));
  // Scan jobs are the key's; an admin key lists them with their owner.
  r = cli({"--api_key", "alice-key", "scan", "tiny-gpt2", "--tokens", "1,2,3,4,5,6,7,8", "--nobos",
           "--context_length", "4", "--neurons", "blocks.0.mlp.hook_post:0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string job = r.out.substr(0, r.out.find(' '));
  r = cli({"--api_key", "ops-key", "job", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("job "));
  EXPECT_THAT(r.out, HasSubstr("\n" + job + "  alice  succeeded  tiny-gpt2 "));
  EXPECT_EQ((*server)->Stop(), 0) << (*server)->log();
  std::filesystem::remove(keys);
}

// `glassbox scan` and `glassbox job` against a glassboxd that runs scan jobs (--jobs_dir,
// --corpus_dir) on the demo model, which has a tokenizer and a BOS token: documents uploaded with
// --text and watched to the end, a corpus file scanned detached and then watched, the results as
// text and JSON, the job list, and the jobs still there after a restart.
TEST(EndToEndScans, CliScansAndReadsTheResults) {
  const std::filesystem::path root =
      std::filesystem::path(::testing::TempDir()) / absl::StrCat("client_e2e_", getpid(), "_scans");
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root / "jobs");
  std::filesystem::create_directories(root / "corpus");
  {
    std::ofstream corpus(root / "corpus" / "stories.txt");
    corpus << "Alice went to the market. Alice saw a red key at the market. She took the key "
              "home.\n"
              "When Mary and John went to the store, John gave a drink to Mary.\n"
              "The capital of Norway is Oslo. The capital of France is Paris.\n"
              "Count the months: November December January February\n";
  }
  const std::vector<std::string> server_args = {
      GLASSBOXD_PATH, "--model", absl::StrCat("demo=", kFixtures, "/../../models/demo"),
      "--jobs_dir", (root / "jobs").string(), "--corpus_dir", (root / "corpus").string(),
      "--listen", "127.0.0.1:0", "--device", "cpu"};
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(server_args, "glassboxd: listening on ", absl::Seconds(30));
  ASSERT_TRUE(server.ok()) << server.status();
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {GLASSBOX_CLI_PATH, "--server", (*server)->address()});
    return RunProcess(args);
  };

  // Uploaded documents; the CLI follows the scan to its end.
  ProcessResult r =
      cli({"scan", "demo", "--text",
           "Alice went to the market. Alice saw a red key at the market. She took the key home.",
           "--text", "When Mary and John went to the store, John gave a drink to Mary.", "--text",
           "The capital of Norway is Oslo. The capital of France is Paris. Count the months: "
           "November December January February",
           "--neurons", "blocks.0.mlp.hook_post:0-3", "--context_length", "16", "--top_k", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err << (*server)->log();
  const std::string id = r.out.substr(0, r.out.find(' '));
  EXPECT_THAT(id, StartsWith("scan-"));
  EXPECT_THAT(r.out, HasSubstr(" succeeded: 4 targets, 128 tokens in 2 passes, "));
  EXPECT_THAT(r.out, HasSubstr("results: glassbox job results " + id + "\n"));
  EXPECT_THAT(r.err, StartsWith("started " + id +
                                ": 4 targets, 4 contexts, 128 tokens in 2 "
                                "passes"));
  EXPECT_THAT(r.err, HasSubstr("\n" + id + ": pass "));  // progress, a line each (no terminal)

  r = cli({"job", "results", id});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith(id + " on demo: targets 0-3 of 4 (4 contexts, 128 tokens)\n"));
  for (int t = 0; t < 4; ++t) {
    EXPECT_THAT(r.out, HasSubstr(absl::StrFormat("\n[%d] blocks.0.mlp.hook_post[%d] (neuron)\n"
                                                 "  mean ",
                                                 t, t)));
  }
  EXPECT_THAT(r.out, HasSubstr("firing "));
  EXPECT_THAT(r.out, HasSubstr("of 60 tokens\n"));  // 4 contexts of 15 tokens after BOS
  EXPECT_THAT(r.out, HasSubstr("  logits up:   "));
  EXPECT_THAT(r.out, HasSubstr("  top 3 of 3 (activation  context:position  window, max in "));
  EXPECT_THAT(r.out, HasSubstr("<|endoftext|>"));  // the windows as text
  EXPECT_THAT(r.out, HasSubstr("[["));
  EXPECT_THAT(r.out, Not(HasSubstr("more:")));

  r = cli({"job", "results", id, "--json", "--offset", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"targets_total\":\"4\""));
  EXPECT_THAT(r.out, HasSubstr("\"name\":\"blocks.0.mlp.hook_post[3]\""));
  EXPECT_THAT(r.out, HasSubstr("\"top\":[{\"context\":"));
  EXPECT_THAT(r.out, Not(HasSubstr("blocks.0.mlp.hook_post[2]")));

  // The results as static HTML dashboards: a page per target and an index linking them.
  const std::filesystem::path dashboards = root / "dashboards";
  r = cli({"job", "dashboard", id, "--out", dashboards.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, (dashboards / "index.html").string() + "\n");
  EXPECT_EQ(r.err, id + ": wrote 4/4 target pages\n");
  auto read = [](const std::filesystem::path& path) {
    std::ifstream file(path);
    return std::string(std::istreambuf_iterator<char>(file), {});
  };
  const std::string index = read(dashboards / "index.html");
  EXPECT_THAT(index, HasSubstr("<p>4 targets</p>"));
  for (int t = 0; t < 4; ++t) {
    const std::string page = absl::StrFormat("%05d_blocks.0.mlp.hook_post_%d_.html", t, t);
    EXPECT_TRUE(std::filesystem::exists(dashboards / page)) << page;
    EXPECT_THAT(index, HasSubstr("<a href=\"" + page + "\">"));
  }
  const std::string first = read(dashboards / "00000_blocks.0.mlp.hook_post_0_.html");
  EXPECT_THAT(first, HasSubstr("<h1 class=\"target-name\" data-index=\"0\">"
                               "blocks.0.mlp.hook_post[0]</h1>"));
  EXPECT_THAT(first, HasSubstr("<span class=\"tok max\" data-act=\""));
  EXPECT_THAT(first, HasSubstr("<span class=\"tok\" data-act=\""));
  EXPECT_THAT(first, Not(HasSubstr("<|endoftext|>")));  // token text escaped
  EXPECT_THAT(first, Not(HasSubstr("<script")));
  // A part of the targets, fetched in pages no larger than asked.
  r = cli({"job", "dashboard", id, "--out", (root / "part").string(), "--offset", "1", "--limit",
           "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, id + ": wrote 2/2 target pages\n");
  EXPECT_TRUE(std::filesystem::exists(root / "part" / "00001_blocks.0.mlp.hook_post_1_.html"));
  EXPECT_TRUE(std::filesystem::exists(root / "part" / "00002_blocks.0.mlp.hook_post_2_.html"));
  EXPECT_FALSE(std::filesystem::exists(root / "part" / "00003_blocks.0.mlp.hook_post_3_.html"));
  EXPECT_THAT(read(root / "part" / "index.html"), HasSubstr("<p>2 targets</p>"));

  // A corpus file under --corpus_dir, detached, then watched.
  r = cli({"scan", "demo", "--corpus", "stories.txt", "--neurons", "blocks.1.hook_resid_post:0,5",
           "--context_length", "16", "--detach"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_THAT(r.out, StartsWith("scan-"));
  const std::string file_id = r.out.substr(0, r.out.size() - 1);
  EXPECT_EQ(r.out, file_id + "\n");
  EXPECT_THAT(r.err, StartsWith("queued " + file_id + ": 2 targets, "));
  r = cli({"job", "watch", file_id});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith(file_id + " succeeded: 2 targets, "));
  r = cli({"job", "results", file_id, "--top", "1", "--limit", "1", "--offset", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith(file_id + " on demo: target 1 of 2 "));
  EXPECT_THAT(r.out, HasSubstr("\n[1] blocks.1.hook_resid_post[5] (neuron)\n"));
  EXPECT_THAT(r.out, HasSubstr("  top 1 of "));
  r = cli({"job", "cancel", file_id});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, file_id + " had already ended: succeeded\n");

  r = cli({"job", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("job "));
  EXPECT_THAT(r.out, HasSubstr("\n" + id + "  succeeded  demo "));
  EXPECT_THAT(r.out, HasSubstr("\n" + file_id + "  succeeded  demo "));

  // What the server rejects exits 3.
  r = cli({"scan", "demo", "--corpus", "../stories.txt", "--neurons", "blocks.0.mlp.hook_post"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, HasSubstr("INVALID_ARGUMENT: corpus path \"../stories.txt\" may not contain"));
  r = cli({"scan", "demo", "--text", "Alice went home.", "--neurons", "blocks.9.mlp.hook_post"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  r = cli({"job", "results", "scan-000000000000"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, StartsWith("glassbox: NOT_FOUND: "));
  EXPECT_EQ((*server)->Stop(), 0) << (*server)->log();

  // The jobs and their results live in --jobs_dir: a new server has them.
  server = ServerProcess::Start(server_args, "glassboxd: listening on ", absl::Seconds(30));
  ASSERT_TRUE(server.ok()) << server.status();
  r = cli({"job", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\n" + id + "  succeeded  demo "));
  r = cli({"job", "results", file_id, "--offset", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\n[1] blocks.1.hook_resid_post[5] (neuron)\n"));
  EXPECT_EQ((*server)->Stop(), 0) << (*server)->log();
  std::filesystem::remove_all(root);
}

// The CLI against a mutual-TLS glassboxd: --tls_root_cert with --tls_client_cert /
// --tls_client_key is served; without the client certificate, or in plaintext, it is not.
TEST(EndToEndTls, CliPresentsAClientCertificate) {
  const std::string tls = absl::StrCat(kFixtures, "/tls/");
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      {GLASSBOXD_PATH, "--model", absl::StrCat("tiny-gpt2=", kFixtures, "/models/tiny-gpt2"),
       "--tls_cert", tls + "server.pem", "--tls_key", tls + "server.key", "--tls_client_ca",
       tls + "ca.pem", "--listen", "127.0.0.1:0", "--device", "cpu"},
      "glassboxd: listening on ", absl::Seconds(30));
  ASSERT_TRUE(server.ok()) << server.status();
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(),
                {GLASSBOX_CLI_PATH, "--server", (*server)->address(), "--timeout", "10"});
    return RunProcess(args);
  };
  ProcessResult r = cli({"--tls_root_cert", tls + "ca.pem", "--tls_client_cert", tls + "client.pem",
                         "--tls_client_key", tls + "client.key", "models"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("tiny-gpt2"));
  r = cli({"--tls_root_cert", tls + "ca.pem", "models"});
  EXPECT_NE(r.exit_code, 0) << r.out;
  r = cli({"models"});
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_EQ((*server)->Stop(), 0) << (*server)->log();
}

}  // namespace
}  // namespace glassbox::testing
