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
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cpp/glassbox_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/safetensors.h"
#include "tests/client/subprocess.h"

namespace glassbox::testing {
namespace {

using client::Client;
using client::ReceivedTensor;
using client::RunResult;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
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
         "--model", absl::StrCat("tiny-llama=", kFixtures, "/models/tiny-llama"), "--listen",
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

}  // namespace
}  // namespace glassbox::testing
