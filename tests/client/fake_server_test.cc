// The client library and the CLI against an in-process fake server (fake_glassbox_service.h):
// real gRPC calls, metadata, status mapping, stream assembly, cancellation, the output file,
// and the exit codes of the glassbox binary.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/safetensors.h"
#include "client/cpp/arrays.h"
#include "client/cpp/cli.h"
#include "client/cpp/glassbox_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/fake_glassbox_service.h"
#include "tests/client/subprocess.h"

namespace glassbox::testing {
namespace {

using client::Client;
using client::ClientOptions;
using client::ReceivedTensor;
using client::RunResult;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

ClientOptions WithApiKey(const std::string& key) {
  ClientOptions options;
  options.api_key = key;
  return options;
}

ClientOptions WithDeadline(absl::Duration deadline) {
  ClientOptions options;
  options.deadline = deadline;
  return options;
}

class FakeServerTest : public ::testing::Test {
 protected:
  std::unique_ptr<Client> Connect(ClientOptions options = ClientOptions()) {
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(server_.address(), options);
    EXPECT_TRUE(client.ok()) << client.status();
    return std::move(*client);
  }

  glassbox::v1::RunRequest TokensRequest(const std::string& model,
                                         std::vector<std::vector<int32_t>> rows,
                                         std::vector<std::string> captures) {
    glassbox::v1::RunRequest request;
    request.set_model(model);
    for (const auto& row : rows) {
      request.mutable_inputs()->add_token_ids()->mutable_ids()->Add(row.begin(), row.end());
    }
    for (const std::string& hook : captures) request.add_captures()->set_hook(hook);
    return request;
  }

  std::string TempPath(const std::string& name) {
    return (std::filesystem::path(::testing::TempDir()) /
            absl::StrCat("fake_server_test_", getpid(), "_", name))
        .string();
  }

  FakeServer server_;
};

TEST_F(FakeServerTest, ListModelsAndInfo) {
  std::unique_ptr<Client> client = Connect();
  absl::StatusOr<std::vector<glassbox::v1::ModelInfo>> models = client->ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  ASSERT_EQ(models->size(), 2u);
  EXPECT_EQ((*models)[0].name(), "tiny");
  EXPECT_EQ((*models)[1].name(), "other");

  absl::StatusOr<glassbox::v1::ModelInfo> info = client->GetModelInfo("tiny");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->hook_points_size(), 5);

  absl::StatusOr<glassbox::v1::ModelInfo> missing = client->GetModelInfo("gpt5");
  EXPECT_EQ(missing.status(), absl::NotFoundError("no model \"gpt5\"; models: tiny, other"));
}

TEST_F(FakeServerTest, SendsTheApiKeyAsBearerMetadataOnlyWhenSet) {
  ASSERT_TRUE(Connect(WithApiKey("s3cret"))->ListModels().ok());
  EXPECT_EQ(server_.service().last_authorization(), "Bearer s3cret");
  ASSERT_TRUE(Connect()->ListModels().ok());
  EXPECT_EQ(server_.service().last_authorization(), std::nullopt);
  // Streaming calls carry it too.
  ASSERT_TRUE(Connect(WithApiKey("k2"))->Run(TokensRequest("tiny", {{1}}, {})).ok());
  EXPECT_EQ(server_.service().last_authorization(), "Bearer k2");
}

TEST_F(FakeServerTest, TokenizeForwardsPrependBosOnlyWhenGiven) {
  std::unique_ptr<Client> client = Connect();
  absl::StatusOr<glassbox::v1::TokenizeResponse> tokens = client->Tokenize("tiny", "Hi");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_THAT(tokens->ids(), ElementsAre('H', 'i'));
  EXPECT_FALSE(server_.service().last_tokenize_request().has_prepend_bos());
  tokens = client->Tokenize("tiny", "Hi", true);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_THAT(tokens->ids(), ElementsAre(0, 'H', 'i'));
  EXPECT_TRUE(server_.service().last_tokenize_request().prepend_bos());

  absl::StatusOr<glassbox::v1::DetokenizeResponse> text = client->Detokenize("tiny", {'o', 'k'});
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->text(), "ok");
}

TEST_F(FakeServerTest, RunAssemblesChunkedTensors) {
  glassbox::v1::RunRequest request = TokensRequest("tiny", {{1, 2, 3}, {4}}, {"a", "b"});
  request.mutable_outputs()->set_logits(glassbox::v1::LOGITS_LAST);
  absl::StatusOr<RunResult> result = Connect()->Run(request);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(server_.service().last_run_request().captures_size(), 2);
  EXPECT_THAT(result->header.sequence_lengths(), ElementsAre(3, 1));
  ASSERT_EQ(result->tensors.size(), 3u);
  const ReceivedTensor& a = result->tensors[0];
  EXPECT_EQ(a.name, "a");
  EXPECT_THAT(a.shape, ElementsAre(2, 3, 4));
  EXPECT_THAT(a.dim_names, ElementsAre("batch", "pos", "d_model"));
  absl::StatusOr<std::vector<float>> values = a.ToFloats();
  ASSERT_TRUE(values.ok());
  ASSERT_EQ(values->size(), 24u);
  EXPECT_EQ((*values)[1 * 12 + 2 * 4 + 3], 123.0f);  // b=1, p=2, d=3
  EXPECT_EQ(result->tensors[1].name, "b");
  EXPECT_EQ(result->tensors[2].name, "logits");
  EXPECT_THAT(result->tensors[2].shape, ElementsAre(2, 10));
  EXPECT_EQ(result->summary.bytes_sent(), 2 * 96 + 80);
}

TEST_F(FakeServerTest, RunStreamingCallbackErrorCancelsTheCall) {
  std::unique_ptr<Client> client = Connect();
  int tensors = 0;
  client::RunCallbacks callbacks;
  callbacks.on_tensor = [&](ReceivedTensor) {
    ++tensors;
    return absl::AbortedError("enough");
  };
  absl::Status status = client->RunStreaming(
      TokensRequest("tiny", {{1, 2, 3, 4, 5, 6, 7, 8}}, {"a", "b", "c", "d", "e", "f"}), callbacks);
  EXPECT_EQ(status, absl::AbortedError("enough"));
  EXPECT_EQ(tensors, 1);
  // The server saw the cancellation before it finished streaming.
  for (int i = 0; i < 100 && !server_.service().last_run_cancelled(); ++i) usleep(20 * 1000);
  EXPECT_TRUE(server_.service().last_run_cancelled());
}

TEST_F(FakeServerTest, ServerErrorsKeepTheirCode) {
  std::unique_ptr<Client> client = Connect();
  EXPECT_EQ(client->Run(TokensRequest("missing", {{1}}, {})).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(client->Run(TokensRequest("busy", {{1}}, {})).status(),
            absl::ResourceExhaustedError("request over the token limit"));
  EXPECT_EQ(client->Run(TokensRequest("tiny", {{1}}, {"blocks.0.nonexistent"})).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(FakeServerTest, MalformedStreamIsInternal) {
  glassbox::v1::RunResponse header;
  glassbox::v1::CapturedTensorInfo* info = header.mutable_header()->add_tensors();
  info->set_id(1);
  info->set_name("x");
  info->add_shape(2);
  info->set_dtype(glassbox::v1::DTYPE_F32);
  info->set_nbytes(8);
  glassbox::v1::RunResponse chunk;
  chunk.mutable_chunk()->set_capture_id(1);
  chunk.mutable_chunk()->set_data("1234");  // 4 of 8 bytes
  chunk.mutable_chunk()->set_last(true);
  server_.service().set_script({header, chunk});
  absl::Status status = Connect()->Run(TokensRequest("scripted", {{1}}, {})).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(status.message()), HasSubstr("the last chunk ends at byte 4 of 8"));

  server_.service().set_script({header});  // ends without data or summary
  status = Connect()->Run(TokensRequest("scripted", {{1}}, {})).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
}

TEST_F(FakeServerTest, DeadlineAndUnreachableServer) {
  absl::Status status = Connect(WithDeadline(absl::Milliseconds(200)))
                            ->Run(TokensRequest("slow", {{1}}, {}))
                            .status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;

  ClientOptions impatient;
  impatient.connect_timeout = absl::Milliseconds(300);
  absl::StatusOr<std::unique_ptr<Client>> dead = Client::Connect("127.0.0.1:1", impatient);
  EXPECT_EQ(dead.status().code(), absl::StatusCode::kUnavailable);
  absl::StatusOr<std::unique_ptr<Client>> lazy = Client::Connect("127.0.0.1:1");
  ASSERT_TRUE(lazy.ok());
  EXPECT_EQ((*lazy)->ListModels().status().code(), absl::StatusCode::kUnavailable);

  EXPECT_EQ(Client::Connect("").status().code(), absl::StatusCode::kInvalidArgument);
  ClientOptions tls;
  tls.tls_root_cert_path = "/nonexistent/ca.pem";
  EXPECT_EQ(Client::Connect("x:1", tls).status().code(), absl::StatusCode::kNotFound);
}

// ---- the CLI, in process ----

struct CliOutput {
  int code;
  std::string out;
  std::string err;
};

CliOutput RunCli(std::vector<std::string> args) {
  absl::StatusOr<cli::Invocation> inv = cli::ParseCommandLine(args, {});
  if (!inv.ok()) return {cli::kExitUsage, "", std::string(inv.status().message())};
  std::ostringstream out, err;
  const int code = cli::Execute(*inv, out, err);
  return {code, out.str(), err.str()};
}

TEST_F(FakeServerTest, CliModels) {
  CliOutput r = RunCli({"--server", server_.address(), "models"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "tiny   gpt2   layers=2 d_model=4 heads=2 vocab=10 device=cpu dtype=f32\n"
            "other  llama  layers=3 d_model=8 heads=4 vocab=20 device=cuda:0 dtype=bf16\n");
}

TEST_F(FakeServerTest, CliInfoPrintsHooksWithSymbolicDims) {
  CliOutput r = RunCli({"--server", server_.address(), "info", "tiny"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("architecture  gpt2\n"));
  EXPECT_THAT(r.out, HasSubstr("hook points   5\n"));
  EXPECT_THAT(r.out, HasSubstr("  hook_embed [batch, pos, 4]\n"));
  EXPECT_THAT(r.out, HasSubstr("  blocks.0.attn.hook_pattern [batch, 2, query_pos, key_pos]\n"));
  r = RunCli({"--server", server_.address(), "info", "nope"});
  EXPECT_EQ(r.code, 3);
  EXPECT_THAT(r.err, StartsWith("glassbox: NOT_FOUND: no model \"nope\""));
}

TEST_F(FakeServerTest, CliTokenize) {
  CliOutput r = RunCli({"--server", server_.address(), "tokenize", "tiny", "a'b", "--prepend_bos"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "0 '<bos>'\n97 'a'\n39 '\\''\n98 'b'\n");
  r = RunCli({"--server", server_.address(), "detokenize", "tiny", "104,105"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "hi\n");
}

TEST_F(FakeServerTest, CliRunWritesSafetensors) {
  const std::string path = TempPath("run.safetensors");
  CliOutput r = RunCli({"--server", server_.address(), "run", "--model", "tiny", "--tokens",
                        "5,6,7", "--tokens", "8", "--capture", "blocks.*.hook_resid_post",
                        "--logits", "all", "--loss", "--out", path});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("blocks.*.hook_resid_post  f32  [2, 3, 4]"));
  EXPECT_THAT(r.out, HasSubstr("wrote 5 tensors to " + path));

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<std::string> names;
  for (const TensorView& t : (*file)->tensors()) names.push_back(t.name);
  EXPECT_THAT(names, ElementsAre("blocks.*.hook_resid_post", "logits", "loss_per_token",
                                 "input_ids", "sequence_lengths"));
  const TensorView* capture = (*file)->Find("blocks.*.hook_resid_post");
  ASSERT_NE(capture, nullptr);
  EXPECT_EQ(capture->dtype, SafetensorsDtype::kF32);
  EXPECT_THAT(capture->shape, ElementsAre(2, 3, 4));
  const float* values = reinterpret_cast<const float*>(capture->bytes.data());
  EXPECT_EQ(values[1 * 12 + 2 * 4 + 1], 121.0f);
  const TensorView* logits = (*file)->Find("logits");
  ASSERT_NE(logits, nullptr);
  EXPECT_THAT(logits->shape, ElementsAre(2, 3, 10));
  const TensorView* ids = (*file)->Find("input_ids");
  ASSERT_NE(ids, nullptr);
  EXPECT_EQ(ids->dtype, SafetensorsDtype::kI32);
  EXPECT_THAT(ids->shape, ElementsAre(2, 3));
  const int32_t* id_values = reinterpret_cast<const int32_t*>(ids->bytes.data());
  EXPECT_THAT(std::vector<int32_t>(id_values, id_values + 6), ElementsAre(5, 6, 7, 8, 0, 0));
  const TensorView* lengths = (*file)->Find("sequence_lengths");
  ASSERT_NE(lengths, nullptr);
  const int32_t* length_values = reinterpret_cast<const int32_t*>(lengths->bytes.data());
  EXPECT_THAT(std::vector<int32_t>(length_values, length_values + 2), ElementsAre(3, 1));
  EXPECT_THAT((*file)->metadata().at("glassbox.request"), HasSubstr("blocks.*.hook_resid_post"));
  EXPECT_EQ((*file)->metadata().at("glassbox.model"), "tiny");
  std::filesystem::remove(path);
}

TEST_F(FakeServerTest, CliRunKeepsDuplicateNames) {
  const std::string path = TempPath("dup.safetensors");
  CliOutput r = RunCli({"--server", server_.address(), "run", "--model", "tiny", "--tokens", "1",
                        "--capture", "x", "--capture", "x", "--out", path});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("saved as \"x#2\""));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_NE((*file)->Find("x#2"), nullptr);
  std::filesystem::remove(path);
}

void AddIds(glassbox::v1::TokenSequence* row, std::vector<int32_t> ids) {
  row->mutable_ids()->Add(ids.begin(), ids.end());
}

TEST_F(FakeServerTest, AnalysisCallsCheckTheirResponses) {
  std::unique_ptr<Client> client = Connect(WithApiKey("k"));
  glassbox::v1::PatchingSweepRequest patch;
  patch.set_model("tiny");
  AddIds(patch.mutable_clean()->add_token_ids(), {1, 2, 3});
  AddIds(patch.mutable_corrupted()->add_token_ids(), {1, 4, 3});
  absl::StatusOr<glassbox::v1::PatchingSweepResponse> sweep = client->PatchingSweep(patch);
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  EXPECT_THAT(sweep->values().shape(), ElementsAre(2, 3));
  EXPECT_EQ(client::FloatAt(sweep->values(), {1, 2}), 12.0f);
  EXPECT_EQ(server_.service().last_authorization(), "Bearer k");

  patch.set_model("malformed");
  sweep = client->PatchingSweep(patch);
  EXPECT_EQ(sweep.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(sweep.status().message()), HasSubstr("normalized"));
  patch.set_model("missing");
  EXPECT_EQ(client->PatchingSweep(patch).status().code(), absl::StatusCode::kNotFound);

  glassbox::v1::DirectLogitAttributionRequest dla;
  dla.set_model("malformed");
  AddIds(dla.mutable_inputs()->add_token_ids(), {1, 2});
  absl::StatusOr<glassbox::v1::DirectLogitAttributionResponse> attribution =
      client->DirectLogitAttribution(dla);
  EXPECT_EQ(attribution.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(attribution.status().message()), HasSubstr("labels"));

  // Not faked: the server's UNIMPLEMENTED comes through unchanged.
  glassbox::v1::LogitLensRequest lens;
  lens.set_model("tiny");
  EXPECT_EQ(client->LogitLens(lens).status().code(), absl::StatusCode::kUnimplemented);
}

TEST(ArraysTest, CheckArray) {
  glassbox::v1::Array a;
  a.add_shape(2);
  a.add_shape(3);
  for (int i = 0; i < 6; ++i) a.add_values(static_cast<float>(i));
  EXPECT_TRUE(client::CheckArray(a, "a", client::ArrayKind::kFloat, 2).ok());
  EXPECT_EQ(client::FloatAt(a, {1, 0}), 3.0f);
  EXPECT_FALSE(client::CheckArray(a, "a", client::ArrayKind::kFloat, 3).ok());
  EXPECT_FALSE(client::CheckArray(a, "a", client::ArrayKind::kInt).ok());
  a.add_dim_names("x");
  EXPECT_FALSE(client::CheckArray(a, "a", client::ArrayKind::kFloat).ok());
  a.add_dim_names("y");
  EXPECT_TRUE(client::CheckArray(a, "a", client::ArrayKind::kFloat).ok());
  a.add_values(6);
  absl::Status status = client::CheckArray(a, "a", client::ArrayKind::kFloat);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(status.message()), HasSubstr("[2, 3] (6 elements) but 7 float"));
  glassbox::v1::Array negative;
  negative.add_shape(-1);
  EXPECT_FALSE(client::CheckArray(negative, "n", client::ArrayKind::kFloat).ok());
  EXPECT_TRUE(client::IsEmptyArray(glassbox::v1::Array()));
}

TEST_F(FakeServerTest, CliPatchPrintsTheMatrixAndWritesIt) {
  const std::string path = TempPath("patch.safetensors");
  CliOutput r = RunCli({"--server", server_.address(), "patch", "--model", "tiny",
                        "--clean-tokens", "1,2,3", "--corrupted-tokens", "1,4,3", "--kind",
                        "resid_pre", "--metric", "logit_diff:7,8", "--out", path});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("patching sweep resid_pre on tiny: 1 prompt pair, metric "
                               "logit[7] - logit[8] at the last position\n"));
  EXPECT_THAT(r.out, HasSubstr("clean 1.5000, corrupted -0.5000; 4 forward passes"));
  EXPECT_THAT(r.out, HasSubstr("  layer    pos 0    pos 1    pos 2\n"
                               "  0       0.0000   1.0000   2.0000\n"
                               "  1      10.0000  11.0000  12.0000\n"));
  EXPECT_THAT(r.out, HasSubstr("wrote 4 tensors to " + path));
  const glassbox::v1::PatchingSweepRequest sent = server_.service().last_patching_request();
  EXPECT_EQ(sent.kind(), glassbox::v1::SWEEP_RESID_PRE);
  EXPECT_EQ(sent.metric().token_b(), 8);
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<std::string> names;
  for (const TensorView& t : (*file)->tensors()) names.push_back(t.name);
  EXPECT_THAT(names, ElementsAre("values", "normalized", "clean_metric", "corrupted_metric"));
  const TensorView* normalized = (*file)->Find("normalized");
  EXPECT_THAT(normalized->shape, ElementsAre(2, 3));
  EXPECT_EQ(reinterpret_cast<const float*>(normalized->bytes.data())[5], 1.2f);
  EXPECT_EQ((*file)->metadata().at("glassbox.dim_names"), "[\"layer\",\"pos\"]");
  EXPECT_EQ((*file)->metadata().at("glassbox.forward_passes"), "4");
  std::filesystem::remove(path);

  r = RunCli({"--server", server_.address(), "patch", "--model", "tiny", "--clean-tokens", "1,2",
              "--corrupted-tokens", "1,4", "--kind", "resid_pre", "--metric", "loss",
              "--normalized"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("normalized effect"));
  EXPECT_THAT(r.out, HasSubstr("  1      1.0000  1.1000\n"));

  r = RunCli({"--server", server_.address(), "patch", "--model", "missing", "--clean-tokens", "1",
              "--corrupted-tokens", "2", "--kind", "q", "--metric", "loss"});
  EXPECT_EQ(r.code, 3);
  r = RunCli({"--server", server_.address(), "patch", "--model", "malformed", "--clean-tokens",
              "1", "--corrupted-tokens", "2", "--kind", "q", "--metric", "loss"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, StartsWith("glassbox: INTERNAL: malformed response"));
}

TEST_F(FakeServerTest, CliDlaSortsByMagnitudeAndTokenizesTexts) {
  CliOutput r = RunCli({"--server", server_.address(), "dla", "--model", "tiny", "--text", "ab",
                        "--token", "104", "--minus", "105", "--top", "3"});
  ASSERT_EQ(r.code, 0) << r.err;
  // The text went out as the ids the server's Tokenize gave (one per byte in the fake).
  const glassbox::v1::DirectLogitAttributionRequest sent = server_.service().last_dla_request();
  EXPECT_EQ(sent.inputs().texts_size(), 0);
  ASSERT_EQ(sent.inputs().token_ids_size(), 1);
  EXPECT_THAT(sent.inputs().token_ids(0).ids(), ElementsAre(97, 98));
  EXPECT_EQ(sent.position(), -1);
  EXPECT_THAT(r.out, HasSubstr("direct logit attribution on tiny: logit[104 'h'] - logit[105 'i']"));
  EXPECT_THAT(r.out, HasSubstr("row 0, position 1 (token 98 'b'): logit 0.6500 = components "
                               "0.4000 + constant 0.2500\n"));
  EXPECT_THAT(r.out, HasSubstr("  component   attribution\n"
                               "  pos_embed       -3.0000\n"
                               "  L0H0             2.0000\n"
                               "  L0.mlp_out       1.0000\n"
                               "  ... 3 more, |attribution| <= 0.5000"));

  r = RunCli({"--server", server_.address(), "dla", "--model", "tiny", "--tokens", "1,2",
              "--tokens", "3", "--token", "1", "--position", "1"});
  EXPECT_EQ(r.code, 2) << r.out;  // position 1 is outside the second row
  EXPECT_THAT(r.err, HasSubstr("--position 1 is outside row 1 (1 tokens)"));
}

TEST_F(FakeServerTest, CliExitCodes) {
  const std::string server = server_.address();
  CliOutput r = RunCli({"--server", server, "run", "--model", "missing", "--tokens", "1"});
  EXPECT_EQ(r.code, 3);
  EXPECT_THAT(r.err, StartsWith("glassbox: NOT_FOUND: "));
  r = RunCli(
      {"--server", server, "run", "--model", "tiny", "--tokens", "1", "--capture", "nonexistent"});
  EXPECT_EQ(r.code, 3);
  EXPECT_THAT(r.err, StartsWith("glassbox: INVALID_ARGUMENT: no hook matches"));
  r = RunCli({"--server", server, "run", "--model", "busy", "--tokens", "1"});
  EXPECT_EQ(r.code, 5);
  EXPECT_THAT(r.err, StartsWith("glassbox: RESOURCE_EXHAUSTED: "));
  r = RunCli({"--server", server, "run", "--model", "private", "--tokens", "1"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, StartsWith("glassbox: PERMISSION_DENIED: "));
  r = RunCli({"--server", server, "--timeout", "0.2", "run", "--model", "slow", "--tokens", "1"});
  EXPECT_EQ(r.code, 4);
  EXPECT_THAT(r.err, StartsWith("glassbox: DEADLINE_EXCEEDED: "));
  r = RunCli({"--server", "127.0.0.1:1", "models"});
  EXPECT_EQ(r.code, 4);
  EXPECT_THAT(r.err, StartsWith("glassbox: UNAVAILABLE: "));
  // A local failure is 1 even though writing reports NOT_FOUND-like codes.
  r = RunCli({"--server", server, "run", "--model", "tiny", "--tokens", "1", "--capture", "x",
              "--out", "/nonexistent-dir/x.safetensors"});
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("/nonexistent-dir/x.safetensors"));
}

// ---- dataset-scan jobs ----

TEST_F(FakeServerTest, ScanJobsThroughTheLibrary) {
  std::unique_ptr<Client> client = Connect();
  glassbox::v1::StartScanRequest request;
  request.set_model("tiny");
  request.mutable_corpus()->mutable_documents()->add_texts("hello");
  glassbox::v1::NeuronTargets& neurons = *request.add_targets()->mutable_neurons();
  neurons.add_indices(0);
  neurons.add_indices(1);
  absl::StatusOr<glassbox::v1::JobInfo> started = client->StartScan(request);
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(started->job_id(), "scan-1");
  EXPECT_EQ(started->state(), glassbox::v1::JOB_QUEUED);
  EXPECT_EQ(started->targets(), 2);
  EXPECT_EQ(server_.service().last_scan_request().corpus().documents().texts(0), "hello");

  std::vector<int64_t> seen;
  absl::StatusOr<glassbox::v1::JobInfo> ended =
      client->WatchJob("scan-1", [&](const glassbox::v1::JobInfo& info) {
        seen.push_back(info.tokens_done());
        return absl::OkStatus();
      });
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_EQ(ended->state(), glassbox::v1::JOB_SUCCEEDED);
  EXPECT_THAT(seen, ElementsAre(0, 16, 32, 48, 64));
  // Without a callback, only the final state; a failed job is a result, not an error.
  ended = client->WatchJob("scan-failed");
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_EQ(ended->state(), glassbox::v1::JOB_FAILED);
  EXPECT_EQ(ended->error(), "out of device memory");
  // A callback error cancels the watch and is returned.
  int calls = 0;
  ended = client->WatchJob("scan-1", [&](const glassbox::v1::JobInfo&) {
    ++calls;
    return absl::AbortedError("seen enough");
  });
  EXPECT_EQ(ended.status(), absl::AbortedError("seen enough"));
  EXPECT_EQ(calls, 1);
  // A stream that ends before the job does is malformed; an unknown job keeps its code.
  ended = client->WatchJob("malformed");
  EXPECT_EQ(ended.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(ended.status().message()),
              HasSubstr("malformed WatchJob stream: it ended while the job was running"));
  EXPECT_EQ(client->WatchJob("nope").status().code(), absl::StatusCode::kNotFound);

  absl::StatusOr<glassbox::v1::JobInfo> cancelled = client->CancelJob("scan-1");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), glassbox::v1::JOB_CANCELLED);
  EXPECT_EQ(client->CancelJob("nope").status().code(), absl::StatusCode::kNotFound);

  absl::StatusOr<std::vector<glassbox::v1::JobInfo>> jobs = client->ListJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[1].error(), "corpus line 3 is not UTF-8");

  glassbox::v1::GetScanResultsRequest page;
  page.set_job_id("scan-1");
  page.set_target_offset(1);
  page.set_target_limit(1);
  absl::StatusOr<glassbox::v1::ScanResults> results = client->GetScanResults(page);
  ASSERT_TRUE(results.ok()) << results.status();
  EXPECT_EQ(results->targets_total(), 3);
  ASSERT_EQ(results->targets_size(), 1);
  EXPECT_EQ(results->targets(0).name(), "blocks.0.hook_resid_post[1]");
  page.set_job_id("malformed");
  results = client->GetScanResults(page);
  EXPECT_EQ(results.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(results.status().message()),
              HasSubstr("target 1 (blocks.0.hook_resid_post[1]) top[0] has 3 tokens and 2 "
                        "activations"));
  page.set_job_id("scan-running");
  EXPECT_EQ(client->GetScanResults(page).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(FakeServerTest, CliScanShowsProgressThenTheSummary) {
  const std::string server = server_.address();
  CliOutput r = RunCli({"--server", server, "scan", "tiny", "--tokens", "1,2,3", "--neurons",
                        "blocks.0.hook_resid_post:0-2"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "scan-1 succeeded: 3 targets, 64 tokens in 2 passes, 1.5s\n"
            "results: glassbox job results scan-1\n");
  // One line per update (stderr is no terminal here), thinned out: the second update of pass 1
  // came too soon after the first.
  EXPECT_EQ(r.err,
            "started scan-1: 3 targets, 4 contexts, 64 tokens in 2 passes (Ctrl-C stops watching, "
            "not the scan: glassbox job cancel scan-1)\n"
            "scan-1: queued, 64 tokens to scan for 3 targets\n"
            "scan-1: pass 1/2, 16/64 tokens (25%), 32 tokens/s, ETA 1.5s\n"
            "scan-1: pass 2/2, 48/64 tokens (75%), 32 tokens/s, ETA 0.5s\n");
  EXPECT_THAT(server_.service().last_scan_request().targets(0).neurons().indices(),
              ElementsAre(0, 1, 2));

  // The exit code is the job's outcome.
  r = RunCli({"--server", server, "scan", "failing", "--text", "x", "--neurons", "h"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_THAT(
      r.err, HasSubstr("glassbox: ABORTED: scan-failed failed after 0.5s: out of device memory\n"));
  r = RunCli({"--server", server, "scan", "cancelled", "--text", "x", "--neurons", "h"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("glassbox: CANCELLED: scan-cancelled was cancelled after "));
  EXPECT_THAT(r.err, HasSubstr("(pass 1/2, 24/64 tokens)\n"));
  r = RunCli({"--server", server, "scan", "unwatchable", "--text", "x", "--neurons", "h"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("glassbox: INTERNAL: malformed WatchJob stream"));
  r = RunCli({"--server", server, "scan", "missing", "--text", "x", "--neurons", "h"});
  EXPECT_EQ(r.code, 3);
  EXPECT_THAT(r.err, StartsWith("glassbox: NOT_FOUND: no model \"missing\""));

  // --detach: the id alone on stdout, for scripts.
  r = RunCli({"--server", server, "scan", "tiny", "--text", "x", "--neurons", "h:4", "--detach"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "scan-1\n");
  EXPECT_EQ(r.err,
            "queued scan-1: 1 targets, 4 contexts, 64 tokens in 2 passes; follow it with "
            "`glassbox job watch scan-1`\n");
}

TEST_F(FakeServerTest, CliJobListWatchCancel) {
  const std::string server = server_.address();
  CliOutput r = RunCli({"--server", server, "job", "list"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("job     state      model  targets  pass  tokens  done  elapsed"));
  EXPECT_THAT(r.out, HasSubstr("\nscan-1  succeeded  tiny         3   2/2   64/64  100%     2.0s"));
  EXPECT_THAT(r.out, HasSubstr("\nscan-2  failed     tiny         3   1/2    0/64    0%     0.0s"));
  EXPECT_THAT(r.out, HasSubstr("\nscan-2 failed: corpus line 3 is not UTF-8\n"));
  r = RunCli({"--server", server, "job", "list", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("{\"jobs\":[{\"job_id\":\"scan-1\",\"owner\":\"\""));
  EXPECT_THAT(r.out, HasSubstr("\"state\":\"JOB_FAILED\""));

  r = RunCli({"--server", server, "job", "watch", "scan-1"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "scan-1 succeeded: 3 targets, 64 tokens in 2 passes, 1.5s\n"
            "results: glassbox job results scan-1\n");
  EXPECT_THAT(r.err, StartsWith("scan-1: queued, 64 tokens to scan for 3 targets\n"));
  r = RunCli({"--server", server, "job", "watch", "scan-failed"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("glassbox: ABORTED: scan-failed failed after 0.5s"));
  r = RunCli({"--server", server, "job", "watch", "nope"});
  EXPECT_EQ(r.code, 3);
  EXPECT_EQ(r.err, "glassbox: NOT_FOUND: no job \"nope\"\n");

  r = RunCli({"--server", server, "job", "cancel", "scan-1"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "cancelled scan-1\n");
  r = RunCli({"--server", server, "job", "cancel", "scan-running"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "cancelling scan-running: it stops within its current batch\n");
  r = RunCli({"--server", server, "job", "cancel", "scan-done"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "scan-done had already ended: succeeded\n");
  r = RunCli({"--server", server, "job", "cancel", "nope"});
  EXPECT_EQ(r.code, 3);
}

TEST_F(FakeServerTest, CliJobResults) {
  const std::string server = server_.address();
  CliOutput r = RunCli({"--server", server, "job", "results", "scan-1"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("scan-1 on tiny: targets 0-2 of 3 (4 contexts, 64 tokens)\n\n"
                                "[0] blocks.0.hook_resid_post[0] (neuron)\n"
                                "  mean 0.25  var 0.5  max 3.5  min -1  firing 12.50% of 60 "
                                "tokens\n"
                                "  logits up:   ' cat' 0.7500\n"
                                "  logits down: 7 -0.5000\n"
                                "  top 2 of 2 (activation  context:position  window, max in [[ "
                                "]]):\n"
                                // Token strings with the max marked, control characters
                                // escaped; ids when there are no strings.
                                "    3.5000  2:2  The[[ cat]] sat\\n\n"
                                "    1.2500  0:3  5 6 [[7]]\n\n"
                                "[1] blocks.0.hook_resid_post[1] (neuron)\n"
                                "  mean 1.25  "));
  EXPECT_THAT(r.out, Not(HasSubstr("more:")));

  r = RunCli({"--server", server, "job", "results", "scan-1", "--limit", "1", "--top", "1"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("scan-1 on tiny: target 0 of 3 "));
  EXPECT_THAT(r.out, HasSubstr("  top 1 of 2 "));
  EXPECT_THAT(r.out, Not(HasSubstr("[[7]]")));
  EXPECT_THAT(r.out, HasSubstr("\nmore: glassbox job results scan-1 --offset 1\n"));
  r = RunCli({"--server", server, "job", "results", "scan-1", "--offset", "3"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "scan-1 on tiny: no targets from 3 (3 in all)\n");

  r = RunCli({"--server", server, "job", "results", "scan-1", "--offset", "2", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("{\"job\":{\"job_id\":\"scan-1\""));
  EXPECT_THAT(r.out, HasSubstr("\"targets_total\":\"3\""));
  EXPECT_THAT(r.out, HasSubstr("\"name\":\"blocks.0.hook_resid_post[2]\""));
  EXPECT_THAT(r.out, HasSubstr("\"token_strings\":[\"The\",\" cat\",\" sat\\n\"]"));
  EXPECT_THAT(r.out, Not(HasSubstr("hook_resid_post[1]")));

  r = RunCli({"--server", server, "job", "results", "malformed"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, StartsWith("glassbox: INTERNAL: malformed GetScanResults response: target 0 "
                                "(blocks.0.hook_resid_post[0]) top[0] has 3 tokens and 2 "
                                "activations"));
  r = RunCli({"--server", server, "job", "results", "scan-running"});
  EXPECT_EQ(r.code, 3);
  EXPECT_THAT(r.err, StartsWith("glassbox: FAILED_PRECONDITION: "));
}

// ---- the glassbox binary ----

#ifdef GLASSBOX_CLI_PATH
TEST_F(FakeServerTest, BinaryExitCodesAndStreams) {
  ProcessResult r = RunProcess({GLASSBOX_CLI_PATH, "--server", server_.address(), "models"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("tiny "));
  EXPECT_EQ(r.err, "");

  r = RunProcess({GLASSBOX_CLI_PATH, "--server", server_.address(), "info", "nope"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_THAT(r.err, StartsWith("glassbox: NOT_FOUND: "));
  EXPECT_EQ(r.out, "");

  r = RunProcess({GLASSBOX_CLI_PATH, "--server", server_.address(), "run", "--model", "tiny"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, StartsWith("glassbox: INVALID_ARGUMENT: run needs inputs"));
  EXPECT_THAT(r.err, HasSubstr("Usage:"));

  r = RunProcess({GLASSBOX_CLI_PATH, "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("Exit codes:"));

  r = RunProcess({GLASSBOX_CLI_PATH, "--server", "127.0.0.1:1", "models"});
  EXPECT_EQ(r.exit_code, 4);
}
#endif

}  // namespace
}  // namespace glassbox::testing
