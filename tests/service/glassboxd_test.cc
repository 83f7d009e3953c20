// glassboxd as a process: it reports ready, answers the standard health check, serves, and on
// SIGTERM finishes the run in flight, refuses new ones and exits 0. With --api_keys (or the
// config's "api_keys") it needs a key on every RPC but health and re-reads the file on SIGHUP;
// with --tls_cert / --tls_key it serves TLS, and with --tls_client_ca mutual TLS.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "glassbox/v1/glassbox.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/service/health.grpc.pb.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

namespace pb = ::glassbox::v1;
using ::grpc::health::v1::Health;
using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;

// A glassboxd child process; its stderr is read until the "listening on" line.
class ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> args) {
    int pipe_fds[2];
    if (pipe(pipe_fds) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(pipe_fds[1], STDERR_FILENO);
      close(pipe_fds[0]);
      std::vector<char*> argv;
      static std::string binary = GLASSBOXD_PATH;
      argv.push_back(binary.data());
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
    close(pipe_fds[1]);
    stderr_ = fdopen(pipe_fds[0], "r");
    char line[4096];
    const std::string marker = "glassboxd: listening on ";
    while (fgets(line, sizeof line, stderr_)) {
      log_ += line;
      const std::string s(line);
      if (s.rfind(marker, 0) == 0) {
        address_ = s.substr(marker.size());
        while (!address_.empty() && (address_.back() == '\n' || address_.back() == '\r')) address_.pop_back();
        break;
      }
    }
  }
  ~ServerProcess() {
    if (pid_ > 0 && !waited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (stderr_) fclose(stderr_);
  }
  const std::string& address() const { return address_; }
  const std::string& log() const { return log_; }
  void Signal(int sig) { kill(pid_, sig); }
  // Exit status, or -1 when it did not exit by itself within `seconds`.
  int WaitExit(int seconds) {
    for (int i = 0; i < seconds * 10; ++i) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        waited_ = true;
        char line[4096];
        while (fgets(line, sizeof line, stderr_)) log_ += line;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
  FILE* stderr_ = nullptr;
  std::string address_, log_;
  bool waited_ = false;
};

HealthCheckResponse::ServingStatus Health(const std::shared_ptr<grpc::Channel>& channel,
                                          const std::string& service) {
  grpc::ClientContext context;
  HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse response;
  grpc::Status s = Health::NewStub(channel)->Check(&context, request, &response);
  return s.ok() ? response.status() : HealthCheckResponse::UNKNOWN;
}

TEST(Glassboxd, HealthServeAndDrainOnSigterm) {
  ServerProcess server({"--model", "gpt2=" + testing::FixturePath("models/tiny-gpt2"),
                        "--listen", "127.0.0.1:0", "--device", "cpu", "--stream_buffer_bytes", "4096"});
  ASSERT_FALSE(server.address().empty()) << server.log();
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(Health(channel, ""), HealthCheckResponse::SERVING);
  EXPECT_EQ(Health(channel, "glassbox.v1.Glassbox"), HealthCheckResponse::SERVING);

  // A run whose reader is slow is in flight when SIGTERM arrives: it must still complete.
  auto stub = pb::Glassbox::NewStub(channel);
  pb::RunRequest request;
  request.set_model("gpt2");
  for (int b = 0; b < 4; ++b) {
    auto* row = request.mutable_inputs()->add_token_ids();
    for (int i = 0; i < 16; ++i) row->add_ids(i + b);
  }
  request.add_captures()->set_hook("*");
  request.set_chunk_bytes(1024);
  grpc::ClientContext context;
  auto reader = stub->Run(&context, request);
  pb::RunResponse response;
  ASSERT_TRUE(reader->Read(&response));
  int64_t expected = 0;
  for (const auto& t : response.header().tensors()) expected += t.nbytes();

  server.Signal(SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  {
    // New work is refused while draining (or the port is already closed).
    grpc::ClientContext late;
    late.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    pb::ListModelsResponse models;
    pb::RunRequest late_run = request;
    auto late_reader = pb::Glassbox::NewStub(channel)->Run(&late, late_run);
    while (late_reader->Read(&response)) {
    }
    EXPECT_FALSE(late_reader->Finish().ok());
  }
  int64_t got = 0;
  bool summary = false;
  while (reader->Read(&response)) {
    if (response.has_chunk()) got += static_cast<int64_t>(response.chunk().data().size());
    if (response.has_summary()) summary = true;
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(got, expected);
  EXPECT_TRUE(summary);
  EXPECT_EQ(server.WaitExit(20), 0) << server.log();
  EXPECT_NE(server.log().find("draining"), std::string::npos) << server.log();
  EXPECT_NE(server.log().find("glassboxd: no --api_keys: the server is open"), std::string::npos)
      << server.log();
}

TEST(Glassboxd, BadFlagsExitWithAMessage) {
  ServerProcess no_models({"--listen", "127.0.0.1:0"});
  EXPECT_EQ(no_models.WaitExit(10), 2);
  EXPECT_NE(no_models.log().find("no models"), std::string::npos) << no_models.log();

  ServerProcess bad_dir({"--model", "x=/nonexistent", "--listen", "127.0.0.1:0"});
  EXPECT_EQ(bad_dir.WaitExit(10), 1);
  EXPECT_NE(bad_dir.log().find("model \"x\""), std::string::npos) << bad_dir.log();

  // An SAE whose d_in (32) is not the width of its hook on the model (64) stops the start.
  const std::string gpt2 = "gpt2=" + testing::FixturePath("models/tiny-gpt2");
  ServerProcess misfit({"--model", gpt2, "--sae",
                        "s=" + testing::FixturePath("saes/standard") + "@gpt2", "--listen",
                        "127.0.0.1:0"});
  EXPECT_EQ(misfit.WaitExit(10), 1);
  EXPECT_NE(misfit.log().find("SAE \"s\""), std::string::npos) << misfit.log();
  EXPECT_NE(misfit.log().find("d_in is 32 but blocks.1.hook_resid_pre"), std::string::npos)
      << misfit.log();

  ServerProcess bad_spec({"--model", gpt2, "--sae", "s=/somewhere", "--listen", "127.0.0.1:0"});
  EXPECT_EQ(bad_spec.WaitExit(10), 2);
  EXPECT_NE(bad_spec.log().find("NAME=PATH@MODEL"), std::string::npos) << bad_spec.log();
}

// --max_request_bytes bounds the request messages gRPC accepts: a larger one is
// RESOURCE_EXHAUSTED before the service sees it, and the server goes on serving.
TEST(Glassboxd, RequestsOverMaxRequestBytesAreRefused) {
  ServerProcess server({"--model", "gpt2=" + testing::FixturePath("models/tiny-gpt2"), "--listen",
                        "127.0.0.1:0", "--device", "cpu", "--max_request_bytes", "65536"});
  ASSERT_FALSE(server.address().empty()) << server.log();
  auto stub = pb::Glassbox::NewStub(
      grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
  auto detokenize = [&](int ids) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    pb::DetokenizeRequest request;
    request.set_model("gpt2");
    for (int i = 0; i < ids; ++i) request.add_ids(i % 300);
    pb::DetokenizeResponse response;
    return stub->Detokenize(&context, request, &response);
  };
  const grpc::Status big = detokenize(80000);  // ~125 KB of varints
  EXPECT_EQ(big.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << big.error_message();
  // The model has no tokenizer: a small request gets past gRPC to the service's own answer.
  EXPECT_EQ(detokenize(3).error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  ServerProcess zero({"--model", "gpt2=" + testing::FixturePath("models/tiny-gpt2"), "--listen",
                      "127.0.0.1:0", "--max_request_bytes", "0"});
  EXPECT_EQ(zero.WaitExit(10), 2);
  EXPECT_NE(zero.log().find("--max_request_bytes must be at least 1"), std::string::npos)
      << zero.log();
}

// SAEs from --sae and from the config file are loaded, attached and listed.
TEST(Glassboxd, LoadsSaesFromFlagsAndConfig) {
  const std::string config = ::testing::TempDir() + "/glassboxd_saes.json";
  {
    FILE* f = fopen(config.c_str(), "w");
    ASSERT_NE(f, nullptr);
    fprintf(f, "{\"saes\": {\"z0\": {\"path\": \"%s\", \"model\": \"gpt2\"}}}",
            testing::FixturePath("saes/service/z0_jumprelu").c_str());
    fclose(f);
  }
  ServerProcess server({"--model", "gpt2=" + testing::FixturePath("models/tiny-gpt2"), "--config",
                        config, "--sae",
                        "res1=" + testing::FixturePath("saes/service/res1_standard") + "@gpt2",
                        "--listen", "127.0.0.1:0", "--device", "cpu"});
  ASSERT_FALSE(server.address().empty()) << server.log();
  auto stub = pb::Glassbox::NewStub(
      grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  pb::ListSaesResponse saes;
  ASSERT_TRUE(stub->ListSaes(&context, {}, &saes).ok());
  ASSERT_EQ(saes.saes_size(), 2);
  EXPECT_EQ(saes.saes(0).name(), "res1");
  EXPECT_EQ(saes.saes(0).hook(), "blocks.1.hook_resid_pre");
  EXPECT_EQ(saes.saes(1).name(), "z0");
  EXPECT_EQ(saes.saes(1).hook(), "blocks.0.attn.hook_z");
  EXPECT_TRUE(saes.saes(1).reshape_hook_z());
  EXPECT_NE(server.log().find("loaded SAE res1 (standard, d_in 64, d_sae 128"), std::string::npos)
      << server.log();
  server.Signal(SIGTERM);
  EXPECT_EQ(server.WaitExit(20), 0) << server.log();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

grpc::Status ListModelsAs(const std::shared_ptr<grpc::Channel>& channel, const std::string& key) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!key.empty()) context.AddMetadata("authorization", "Bearer " + key);
  pb::ListModelsResponse models;
  return pb::Glassbox::NewStub(channel)->ListModels(&context, {}, &models);
}

// Keys named by the config file; health open; SIGHUP revokes and adds keys, and a file that does
// not parse keeps the ones in use. No key appears in the log.
TEST(Glassboxd, ApiKeysFromTheConfigReloadOnSighup) {
  const std::string keys = ::testing::TempDir() + "/glassboxd_api_keys.json";
  const std::string config = ::testing::TempDir() + "/glassboxd_api_keys_config.json";
  WriteFile(keys, R"({"keys": [{"name": "alice", "key": "alice-key"},
                               {"name": "root", "key": "root-key", "admin": true}]})");
  WriteFile(config, R"({"api_keys": ")" + keys + R"("})");
  ServerProcess server({"--model", "gpt2=" + testing::FixturePath("models/tiny-gpt2"), "--config",
                        config, "--listen", "127.0.0.1:0", "--device", "cpu"});
  ASSERT_FALSE(server.address().empty()) << server.log();
  EXPECT_NE(server.log().find("glassboxd: API keys: 2 from " + keys + " (1 admin)"),
            std::string::npos)
      << server.log();
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(Health(channel, ""), HealthCheckResponse::SERVING);
  EXPECT_EQ(Health(channel, "glassbox.v1.Glassbox"), HealthCheckResponse::SERVING);
  EXPECT_EQ(ListModelsAs(channel, "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(ListModelsAs(channel, "alice-key").ok());

  WriteFile(keys, R"({"keys": [{"name": "carol", "key": "carol-key"}]})");
  server.Signal(SIGHUP);
  grpc::Status alice = ListModelsAs(channel, "alice-key");
  for (int i = 0; i < 100 && alice.ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    alice = ListModelsAs(channel, "alice-key");
  }
  EXPECT_EQ(alice.error_code(), grpc::StatusCode::UNAUTHENTICATED) << alice.error_message();
  EXPECT_TRUE(ListModelsAs(channel, "carol-key").ok());

  WriteFile(keys, R"({"keys": [{"name": "carol", "key": "carol-key", "admin": "no"}]})");
  server.Signal(SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_TRUE(ListModelsAs(channel, "carol-key").ok());

  server.Signal(SIGTERM);
  ASSERT_EQ(server.WaitExit(20), 0) << server.log();
  EXPECT_NE(server.log().find("glassboxd: SIGHUP: reloaded API keys: 1 from " + keys),
            std::string::npos)
      << server.log();
  EXPECT_NE(server.log().find("glassboxd: SIGHUP: keeping the API keys in use (1): " + keys +
                              R"(: keys[0] ("carol").admin must be true or false)"),
            std::string::npos)
      << server.log();
  for (const char* secret : {"alice-key", "root-key", "carol-key"}) {
    EXPECT_EQ(server.log().find(secret), std::string::npos) << server.log();
  }
}

// A keys file that does not load stops the start, saying why.
TEST(Glassboxd, BadKeysFileStopsTheStart) {
  const std::string gpt2 = "gpt2=" + testing::FixturePath("models/tiny-gpt2");
  const std::string keys = ::testing::TempDir() + "/glassboxd_bad_api_keys.json";
  WriteFile(keys,
            R"({"keys": [{"name": "alice", "key": "k", "quota": {"request_per_minute": 5}}]})");
  ServerProcess typo({"--model", gpt2, "--api_keys", keys, "--listen", "127.0.0.1:0"});
  EXPECT_EQ(typo.WaitExit(10), 2);
  EXPECT_NE(typo.log().find(R"(keys[0] ("alice").quota has an unknown field "request_per_minute")"),
            std::string::npos)
      << typo.log();

  ServerProcess missing(
      {"--model", gpt2, "--api_keys", keys + ".missing", "--listen", "127.0.0.1:0"});
  EXPECT_EQ(missing.WaitExit(10), 2);
  EXPECT_NE(missing.log().find("--api_keys: cannot open"), std::string::npos) << missing.log();

  const std::string config = ::testing::TempDir() + "/glassboxd_bad_api_keys_config.json";
  WriteFile(config, R"({"api_keys": ["keys.json"]})");
  ServerProcess bad_config({"--model", gpt2, "--config", config, "--listen", "127.0.0.1:0"});
  EXPECT_EQ(bad_config.WaitExit(10), 2);
  EXPECT_NE(bad_config.log().find(R"("api_keys" must be the path of a keys file)"),
            std::string::npos)
      << bad_config.log();
}

// The TLS test certificates (tests/fixtures/tls/make_certs.sh): a CA, a server certificate for
// localhost / 127.0.0.1 and a client certificate, both signed by it.
std::string TlsFile(const std::string& name) { return testing::FixturePath("tls/" + name); }
std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// ListModels over TLS trusting the test CA, presenting the client certificate when asked.
grpc::Status ListModelsOverTls(const std::string& address, bool client_certificate) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadText(TlsFile("ca.pem"));
  if (client_certificate) {
    ssl.pem_cert_chain = ReadText(TlsFile("client.pem"));
    ssl.pem_private_key = ReadText(TlsFile("client.key"));
  }
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  auto channel = grpc::CreateCustomChannel(address, grpc::SslCredentials(ssl), args);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  pb::ListModelsResponse response;
  return pb::Glassbox::NewStub(channel)->ListModels(&context, {}, &response);
}

grpc::Status ListModelsInPlaintext(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  pb::ListModelsResponse response;
  return pb::Glassbox::NewStub(channel)->ListModels(&context, {}, &response);
}

TEST(Glassboxd, ServesTlsAndMutualTls) {
  const std::string gpt2 = "gpt2=" + testing::FixturePath("models/tiny-gpt2");
  {
    ServerProcess server({"--model", gpt2, "--listen", "127.0.0.1:0", "--device", "cpu",
                          "--tls_cert", TlsFile("server.pem"), "--tls_key", TlsFile("server.key")});
    ASSERT_FALSE(server.address().empty()) << server.log();
    EXPECT_NE(server.log().find("glassboxd: transport: TLS with " + TlsFile("server.pem")),
              std::string::npos)
        << server.log();
    EXPECT_TRUE(ListModelsOverTls(server.address(), /*client_certificate=*/false).ok());
    EXPECT_FALSE(ListModelsInPlaintext(server.address()).ok());
  }
  {
    // The same from the config file, with client certificates required.
    const std::string config = ::testing::TempDir() + "/glassboxd_mtls_config.json";
    WriteFile(config, R"({"tls_cert": ")" + TlsFile("server.pem") + R"(", "tls_key": ")" +
                          TlsFile("server.key") + R"(", "tls_client_ca": ")" + TlsFile("ca.pem") +
                          R"("})");
    ServerProcess server({"--model", gpt2, "--listen", "127.0.0.1:0", "--device", "cpu",
                          "--config", config});
    ASSERT_FALSE(server.address().empty()) << server.log();
    EXPECT_NE(server.log().find("glassboxd: transport: mutual TLS"), std::string::npos)
        << server.log();
    EXPECT_TRUE(ListModelsOverTls(server.address(), /*client_certificate=*/true).ok());
    EXPECT_FALSE(ListModelsOverTls(server.address(), /*client_certificate=*/false).ok());
    EXPECT_FALSE(ListModelsInPlaintext(server.address()).ok());
  }
}

TEST(Glassboxd, BadTlsFilesStopTheStart) {
  const std::string gpt2 = "gpt2=" + testing::FixturePath("models/tiny-gpt2");
  ServerProcess no_key({"--model", gpt2, "--listen", "127.0.0.1:0", "--tls_cert",
                        TlsFile("server.pem")});
  EXPECT_EQ(no_key.WaitExit(10), 2);
  EXPECT_NE(no_key.log().find("TLS needs both --tls_cert"), std::string::npos) << no_key.log();

  ServerProcess not_pem({"--model", gpt2, "--listen", "127.0.0.1:0", "--tls_cert",
                         TlsFile("server.pem"), "--tls_key", TlsFile("make_certs.sh")});
  EXPECT_EQ(not_pem.WaitExit(10), 2);
  EXPECT_NE(not_pem.log().find("--tls_key: " + TlsFile("make_certs.sh") + " holds no PEM block"),
            std::string::npos)
      << not_pem.log();

  ServerProcess missing({"--model", gpt2, "--listen", "127.0.0.1:0", "--tls_cert",
                         TlsFile("server.pem"), "--tls_key", TlsFile("nope.key")});
  EXPECT_EQ(missing.WaitExit(10), 2);
  EXPECT_NE(missing.log().find("--tls_key: cannot open"), std::string::npos) << missing.log();
}

}  // namespace
}  // namespace glassbox
