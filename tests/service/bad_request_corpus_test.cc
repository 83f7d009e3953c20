// The bad-request corpus (issue 24): a table of malformed or out-of-range requests for every RPC
// of glassbox.v1.Glassbox, each answered with its exact gRPC status code and a message that
// names the offending field or value, so a researcher can act on it. After every case a good
// request of the same RPC must still succeed: a refused request leaves the server serving.
//
// The server is in-process on a loopback port with the tiny GPT-2 and Llama fixtures (no
// tokenizer), the tiny Pythia fixture (parallel attention and MLP: no hook_resid_mid), the demo
// model (a tokenizer, for texts, Tokenize/Detokenize and stop strings), SAEs on gpt2 and llama,
// small limits (so that limit cases are cheap) and a clock the test can move (cache expiry).
// The dataset-scan RPCs need a service with ScanJobs (GlassboxService::SetScanJobs), which the
// shared harness does not make: a second in-process server (ScanRpcServer) serves them, made the
// first time a scan table runs; the first server answers them UNIMPLEMENTED.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/scheduler/scheduler.h"
#include "server/service/glassbox_service.h"
#include "server/service/request_observer.h"
#include "server/service/scan_jobs.h"
#include "tests/service/service_harness.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::glassbox::testing::FixturePath;
using ::glassbox::testing::InProcessServer;
using ::testing::HasSubstr;
namespace pb = ::glassbox::v1;
using Code = grpc::StatusCode;

constexpr Code kInvalid = Code::INVALID_ARGUMENT;
constexpr Code kNotFound = Code::NOT_FOUND;
constexpr Code kPrecondition = Code::FAILED_PRECONDITION;
constexpr Code kExhausted = Code::RESOURCE_EXHAUSTED;
constexpr Code kUnimplemented = Code::UNIMPLEMENTED;

constexpr int32_t kIntMin = std::numeric_limits<int32_t>::min();
constexpr int32_t kIntMax = std::numeric_limits<int32_t>::max();
const float kNan = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

// Every RPC of the service, in the proto's order (the order of the summary table).
const char* const kRpcs[] = {"ListModels",     "GetModelInfo",     "Tokenize",
                             "Detokenize",     "Run",              "Generate",
                             "ListCachedRuns", "ReleaseCachedRun", "PatchingSweep",
                             "LogitLens",      "DirectLogitAttribution", "AttentionNorms",
                             "ListSaes",       "SaeEncode",        "SaeDecode",
                             "StartScan",      "WatchJob",         "CancelJob",
                             "ListJobs",       "GetScanResults",   "ScoreExplanation",
                             "Gradients",      "IntegratedGradients",
                             "Jacobian"};

// ---- request building ----

void AddRow(pb::Inputs* inputs, std::initializer_list<int32_t> ids) {
  auto* row = inputs->add_token_ids();
  for (int32_t id : ids) row->add_ids(id);
}

// A row of n tokens 1, 2, ... (mod 250, all inside every fixture's vocabulary).
void AddRowOf(pb::Inputs* inputs, int n) {
  auto* row = inputs->add_token_ids();
  for (int i = 0; i < n; ++i) row->add_ids(1 + i % 250);
}

void AddValues(pb::Intervention* in, int n, float v = 1) {
  for (int i = 0; i < n; ++i) in->add_value(v);
}

pb::Intervention* AddEdit(pb::RunRequest& r, const std::string& hook, pb::InterventionKind kind) {
  auto* in = r.add_interventions();
  in->set_hook(hook);
  in->set_kind(kind);
  return in;
}

pb::Intervention* AddEdit(pb::GenerateRequest& r, const std::string& hook,
                          pb::InterventionKind kind) {
  auto* in = r.add_interventions();
  in->set_hook(hook);
  in->set_kind(kind);
  return in;
}

pb::Capture* AddCapture(pb::RunRequest& r, const std::string& hook) {
  auto* c = r.add_captures();
  c->set_hook(hook);
  return c;
}

pb::Capture* AddCapture(pb::GenerateRequest& r, const std::string& hook) {
  auto* c = r.add_captures();
  c->set_hook(hook);
  return c;
}

// A patch from the cached run `run` at `hook`.
pb::Intervention* AddPatch(pb::RunRequest& r, const std::string& run, const std::string& hook) {
  auto* in = AddEdit(r, hook, pb::INTERVENTION_PATCH_CACHED);
  in->set_cached_run(run);
  return in;
}

pb::SaeSteering* AddSteering(pb::RunRequest& r, const std::string& sae, int32_t feature,
                             float coefficient) {
  auto* s = r.add_sae_steering();
  s->set_sae(sae);
  s->add_features(feature);
  s->add_coefficients(coefficient);
  return s;
}

pb::FeatureEdit* AddFeatureEdit(pb::RunRequest& r, int32_t feature) {
  auto* e = r.mutable_sae_splices(0)->add_edits();
  e->set_kind(pb::FEATURE_EDIT_ZERO);
  e->add_features(feature);
  return e;
}

// ---- the dataset-scan server ----

// A GlassboxService with ScanJobs on a loopback port: the demo model (tokenizer, BOS) and the
// tiny GPT-2 (no tokenizer) with an SAE, jobs in memory, corpus files under `corpus_dir`.
class ScanRpcServer {
 public:
  ScanRpcServer(std::unique_ptr<ModelStore> store, ScanJobsOptions options)
      : store_(std::move(store)),
        jobs_(*store_, scheduler_, std::move(options)),
        service_(*store_, scheduler_, ServiceLimits()) {
    service_.SetScanJobs(&jobs_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> observers;
    observers.push_back(std::make_unique<RequestObserverFactory>(&service_.metrics(), false));
    builder.experimental().SetInterceptorCreators(std::move(observers));
    server_ = builder.BuildAndStart();
    EXPECT_NE(port, 0);
    stub_ = pb::Glassbox::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }
  ~ScanRpcServer() {
    server_->Shutdown();
    jobs_.Stop();
    scheduler_.Shutdown();
  }

  pb::Glassbox::Stub& stub() { return *stub_; }

  // Occupies the device's worker until the returned function is called.
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

 private:
  std::unique_ptr<ModelStore> store_;
  Scheduler scheduler_;
  ScanJobs jobs_;  // outlives the service
  GlassboxService service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<pb::Glassbox::Stub> stub_;
};

// ---- the corpus machinery ----

template <typename Request>
struct Case {
  std::string name;
  std::function<void(Request&)> edit;  // applied to a copy of the RPC's good request
  Code code;
  std::string phrase;  // must appear in the status message
};

class BadRequestCorpusTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto store = ModelStore::Load({{"gpt2", FixturePath("models/tiny-gpt2")},
                                   {"llama", FixturePath("models/tiny-llama")},
                                   {"pythia", FixturePath("models/tiny-pythia")},
                                   {"demo", std::string(GLASSBOX_FIXTURES_DIR) + "/../../models/demo"}},
                                  std::make_shared<CpuBackend>(), "cpu");
    ASSERT_TRUE(store.ok()) << store.status();
    // A layer_norm copy of res1_standard: SaeDecode refuses input-dependent normalisations. One
    // per process: ctest runs the cases in parallel processes, and one rewriting the file while
    // another loads it crashed the loader.
    const std::string saes = FixturePath("saes/service/");
    ln_dir_ = std::filesystem::path(::testing::TempDir()) /
              ("bad_request_corpus_ln_res1_" + std::to_string(getpid()));
    const std::filesystem::path& ln_dir = ln_dir_;
    std::filesystem::create_directories(ln_dir);
    std::filesystem::copy_file(saes + "res1_standard/sae_weights.safetensors",
                               ln_dir / "sae_weights.safetensors",
                               std::filesystem::copy_options::overwrite_existing);
    {
      std::ifstream in(saes + "res1_standard/cfg.json");
      const std::string cfg((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      std::ofstream(ln_dir / "cfg.json") << absl::StrReplaceAll(
          cfg, {{R"("normalize_activations": "none")", R"("normalize_activations": "layer_norm")"}});
    }
    absl::Status loaded = (*store)->LoadSaes(
        {{.name = "res1_standard", .path = saes + "res1_standard", .model = "gpt2"},
         {.name = "z0_jumprelu", .path = saes + "z0_jumprelu", .model = "gpt2"},
         {.name = "on_llama", .path = saes + "res1_standard", .model = "llama"},
         {.name = "ln_res1", .path = ln_dir.string(), .model = "gpt2"}});
    ASSERT_TRUE(loaded.ok()) << loaded;

    ServiceLimits limits;
    limits.max_batch = 8;
    limits.max_tokens_per_request = 64;
    limits.max_response_bytes = 16 << 10;
    limits.stream_buffer_bytes = 64 << 10;
    limits.max_sweep_cells = 64;
    limits.cache.max_bytes = 32 << 10;
    limits.cache.max_entries = 4;
    limits.cache.max_ttl = absl::Hours(1);
    server_ = new InProcessServer(*std::move(store), limits, [] {
      return absl::Now() + absl::Seconds(clock_skew_s_.load());
    });
    stub_ = pb::Glassbox::NewStub(server_->channel()).release();
    counts_ = new std::map<std::string, int>;

    // Cached runs the PATCH_CACHED cases read: two gpt2 rows, and one llama row.
    ASSERT_TRUE(Keep("base", "gpt2", 2, "hook_embed").ok());
    ASSERT_TRUE(Keep("llama_base", "llama", 1, "hook_embed").ok());
  }

  static void TearDownTestSuite() {
    delete scans_;
    scans_ = nullptr;
    if (!scan_dir_.empty()) std::filesystem::remove_all(scan_dir_);
    std::ostringstream table;
    int total = 0;
    table << "bad-request corpus:";
    const char* separator = " ";
    for (const char* rpc : kRpcs) {
      const int n = counts_->count(rpc) ? counts_->at(rpc) : 0;
      table << separator << rpc << " " << n;
      separator = ", ";
      total += n;
    }
    table << "; total " << total;
    std::cout << table.str() << std::endl;
    delete counts_;
    delete stub_;
    delete server_;
    std::filesystem::remove_all(ln_dir_);
  }

  static std::chrono::system_clock::time_point Deadline() {
    return std::chrono::system_clock::now() + std::chrono::seconds(60);
  }

  // ---- calls ----

  template <typename Request, typename Response>
  using Unary = grpc::Status (pb::Glassbox::Stub::*)(grpc::ClientContext*, const Request&,
                                                     Response*);

  template <typename Request, typename Response>
  static std::function<grpc::Status(const Request&)> Call(Unary<Request, Response> method) {
    return [method](const Request& request) {
      grpc::ClientContext context;
      context.set_deadline(Deadline());
      Response response;
      return (stub_->*method)(&context, request, &response);
    };
  }

  static grpc::Status CallRun(const pb::RunRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    auto reader = stub_->Run(&context, request);
    pb::RunResponse response;
    while (reader->Read(&response)) {
    }
    return reader->Finish();
  }

  static grpc::Status CallGenerate(const pb::GenerateRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    auto reader = stub_->Generate(&context, request);
    pb::GenerateResponse response;
    while (reader->Read(&response)) {
    }
    return reader->Finish();
  }

  // Keeps hook(s) `hooks` of a run over `rows` rows [1, 2, 3], [4, 5, 6], ... under `name`.
  static grpc::Status Keep(const std::string& name, const std::string& model, int rows,
                           const std::string& hooks, int64_t ttl_seconds = 0) {
    pb::RunRequest r;
    r.set_model(model);
    for (int b = 0; b < rows; ++b) {
      AddRow(r.mutable_inputs(), {3 * b + 1, 3 * b + 2, 3 * b + 3});
    }
    r.mutable_keep()->set_name(name);
    r.mutable_keep()->add_hooks(hooks);
    r.mutable_keep()->set_ttl_seconds(ttl_seconds);
    return CallRun(r);
  }

  static grpc::Status Release(const std::string& name) {
    pb::ReleaseCachedRunRequest r;
    r.set_name(name);
    return Call(&pb::Glassbox::Stub::ReleaseCachedRun)(r);
  }

  // ---- checking ----

  // One case: the exact code and the phrase; counted for the summary table.
  static void Expect(const std::string& rpc, const std::string& name, const grpc::Status& got,
                     Code code, const std::string& phrase) {
    SCOPED_TRACE(rpc + ": " + name);
    EXPECT_EQ(got.error_code(), code) << "message: " << got.error_message();
    EXPECT_THAT(got.error_message(), HasSubstr(phrase));
    ++(*counts_)[rpc];
  }

  static void ExpectServes(const std::string& rpc, const std::string& after,
                           const grpc::Status& got) {
    EXPECT_TRUE(got.ok()) << rpc << " no longer serves after \"" << after
                          << "\": " << got.error_message();
  }

  // Each case on a copy of good(), then `serves` (default: good() itself) must succeed.
  template <typename Request>
  static void Check(const std::string& rpc, const std::function<Request()>& good,
                    const std::function<grpc::Status(const Request&)>& call,
                    const std::vector<Case<Request>>& cases,
                    std::function<grpc::Status()> serves = nullptr) {
    if (!serves) serves = [&] { return call(good()); };
    ExpectServes(rpc, "nothing (the good request)", serves());
    for (const Case<Request>& c : cases) {
      Request request = good();
      c.edit(request);
      Expect(rpc, c.name, call(request), c.code, c.phrase);
      ExpectServes(rpc, c.name, serves());
    }
  }

  // ---- the scan server ----

  // The scan server, made on first use with a finished and a cancelled job.
  static ScanRpcServer& Scans() {
    if (scans_ != nullptr) return *scans_;
    scan_dir_ = std::filesystem::path(::testing::TempDir()) /
                ("bad_request_corpus_scan_" + std::to_string(getpid()));
    const std::filesystem::path corpus = scan_dir_ / "corpus";
    std::filesystem::create_directories(corpus);
    std::string text;
    for (int i = 0; i < 8; ++i) text += "Alice and Bob went to the market to buy apples.\n";
    std::ofstream(corpus / "docs.txt") << text;
    std::ofstream(corpus / "empty.txt");
    std::ofstream(corpus / "notes.md") << text;
    std::ofstream(scan_dir_ / "outside.txt") << text;
    std::filesystem::create_symlink(scan_dir_ / "outside.txt", corpus / "link.txt");

    auto store = ModelStore::Load({{"gpt2", FixturePath("models/tiny-gpt2")},
                                   {"demo", std::string(GLASSBOX_FIXTURES_DIR) + "/../../models/demo"}},
                                  std::make_shared<CpuBackend>(), "cpu");
    EXPECT_TRUE(store.ok()) << store.status();
    absl::Status loaded = (*store)->LoadSaes({{.name = "res1_standard",
                                               .path = FixturePath("saes/service/res1_standard"),
                                               .model = "gpt2"}});
    EXPECT_TRUE(loaded.ok()) << loaded;
    ScanJobsOptions options;
    options.corpus_dir = corpus.string();
    options.max_state_bytes = 1 << 20;
    options.max_jobs_per_owner = 1000;  // every good StartScan after a case leaves a job
    scans_ = new ScanRpcServer(*std::move(store), options);

    // A finished job, and one cancelled before it could run.
    grpc::Status started = StartScan(GoodScan(), &finished_job_);
    EXPECT_TRUE(started.ok()) << started.error_message();
    EXPECT_EQ(WatchToEnd(finished_job_), pb::JOB_SUCCEEDED);
    std::function<void()> release = scans_->HoldDevice();
    started = StartScan(GoodScan(), &cancelled_job_);
    EXPECT_TRUE(started.ok()) << started.error_message();
    pb::CancelJobRequest cancel;
    cancel.set_job_id(cancelled_job_);
    grpc::Status cancelled = CallScan(&pb::Glassbox::Stub::CancelJob)(cancel);
    EXPECT_TRUE(cancelled.ok()) << cancelled.error_message();
    release();
    EXPECT_EQ(WatchToEnd(cancelled_job_), pb::JOB_CANCELLED);
    return *scans_;
  }

  // A good StartScan: the demo model over an uploaded text, two neurons.
  static pb::StartScanRequest GoodScan() {
    pb::StartScanRequest r;
    r.set_model("demo");
    r.mutable_corpus()->mutable_documents()->add_texts(
        "Alice and Bob went to the market. They bought apples, pears and bread, then walked home.");
    r.set_context_length(8);
    r.set_logit_k(-1);
    auto* n = r.add_targets()->mutable_neurons();
    n->set_hook("blocks.0.mlp.hook_post");
    n->add_indices(1);
    n->add_indices(2);
    return r;
  }

  static grpc::Status StartScan(const pb::StartScanRequest& request, std::string* id) {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    pb::JobInfo info;
    grpc::Status status = Scans().stub().StartScan(&context, request, &info);
    *id = info.job_id();
    return status;
  }

  // Watches `id` to its end: the last state streamed.
  static pb::JobState WatchToEnd(const std::string& id) {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    pb::WatchJobRequest r;
    r.set_job_id(id);
    auto reader = scans_->stub().WatchJob(&context, r);
    pb::JobInfo info;
    pb::JobState last = pb::JOB_STATE_UNSPECIFIED;
    while (reader->Read(&info)) last = info.state();
    grpc::Status status = reader->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    return last;
  }

  template <typename Request, typename Response>
  static std::function<grpc::Status(const Request&)> CallScan(Unary<Request, Response> method) {
    return [method](const Request& request) {
      grpc::ClientContext context;
      context.set_deadline(Deadline());
      Response response;
      return (Scans().stub().*method)(&context, request, &response);
    };
  }

  // WatchJob read to its end, on the scan server or (scans = false) the first one.
  static grpc::Status CallWatch(const pb::WatchJobRequest& request, bool scans = true) {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    auto reader = scans ? Scans().stub().WatchJob(&context, request) : stub_->WatchJob(&context, request);
    pb::JobInfo info;
    while (reader->Read(&info)) {
    }
    return reader->Finish();
  }

  static inline std::atomic<int64_t> clock_skew_s_{0};
  static inline std::filesystem::path ln_dir_;
  static inline InProcessServer* server_ = nullptr;
  static inline pb::Glassbox::Stub* stub_ = nullptr;
  static inline std::map<std::string, int>* counts_ = nullptr;
  static inline ScanRpcServer* scans_ = nullptr;
  static inline std::filesystem::path scan_dir_;
  static inline std::string finished_job_, cancelled_job_;
};

// ---- the corpus ----

// A good Run: gpt2 over one row [1, 2, 3]. It serves when the same with LOGITS_LAST streams
// its [1, 300] logits.
pb::RunRequest GoodRun() {
  pb::RunRequest r;
  r.set_model("gpt2");
  AddRow(r.mutable_inputs(), {1, 2, 3});
  return r;
}

TEST_F(BadRequestCorpusTest, Run) {
  auto serves = [] {
    pb::RunRequest r = GoodRun();
    r.mutable_outputs()->set_logits(pb::LOGITS_LAST);
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    auto reader = stub_->Run(&context, r);
    pb::RunResponse response;
    size_t bytes = 0;
    while (reader->Read(&response)) bytes += response.chunk().data().size();
    grpc::Status status = reader->Finish();
    if (status.ok() && bytes != 300 * 4) {
      return grpc::Status(Code::UNKNOWN, "the logits have " + std::to_string(bytes) + " bytes");
    }
    return status;
  };
  const std::vector<Case<pb::RunRequest>> cases = {
      // Model and inputs.
      {"unknown model", [](auto& r) { r.set_model("gpt5"); }, kNotFound, R"(no model named "gpt5"; this server has: demo, gpt2, llama, pythia)"},
      {"empty model", [](auto& r) { r.set_model(""); }, kNotFound, R"(no model named "")"},
      {"model names are case-sensitive", [](auto& r) { r.set_model("GPT2"); }, kNotFound, R"(no model named "GPT2")"},
      {"no inputs", [](auto& r) { r.clear_inputs(); }, kInvalid, "inputs: give exactly one of texts or token_ids"},
      {"texts and token_ids", [](auto& r) { r.mutable_inputs()->add_texts("x"); }, kInvalid, "inputs: give exactly one of texts or token_ids"},
      {"text without a tokenizer", [](auto& r) { r.mutable_inputs()->clear_token_ids(); r.mutable_inputs()->add_texts("hi"); }, kPrecondition, R"(model "gpt2" has no tokenizer)"},
      {"empty second row", [](auto& r) { r.mutable_inputs()->add_token_ids(); }, kInvalid, "inputs row 1 has no tokens"},
      {"empty only row", [](auto& r) { r.mutable_inputs()->mutable_token_ids(0)->clear_ids(); }, kInvalid, "inputs row 0 has no tokens"},
      {"empty text row (no BOS)", [](auto& r) { r.set_model("demo"); r.mutable_inputs()->clear_token_ids(); r.mutable_inputs()->add_texts(""); r.mutable_inputs()->set_prepend_bos(false); }, kInvalid, "inputs row 0 has no tokens"},
      {"token id = vocab", [](auto& r) { r.mutable_inputs()->mutable_token_ids(0)->add_ids(300); }, kInvalid, "inputs row 0 position 3: token id 300 is outside the vocabulary [0, 300)"},
      {"negative token id", [](auto& r) { r.mutable_inputs()->mutable_token_ids(0)->add_ids(-4); }, kInvalid, "token id -4 is outside the vocabulary"},
      {"INT32_MIN token id", [](auto& r) { r.mutable_inputs()->mutable_token_ids(0)->set_ids(1, kIntMin); }, kInvalid, "inputs row 0 position 1: token id -2147483648"},
      {"bad id in a later row", [](auto& r) { AddRow(r.mutable_inputs(), {1, 999}); }, kInvalid, "inputs row 1 position 1: token id 999"},
      {"demo id = its vocab", [](auto& r) { r.set_model("demo"); r.mutable_inputs()->mutable_token_ids(0)->add_ids(1024); }, kInvalid, "token id 1024 is outside the vocabulary [0, 1024)"},
      {"longer than the context", [](auto& r) { for (int i = 0; i < 30; ++i) r.mutable_inputs()->mutable_token_ids(0)->add_ids(1); }, kInvalid, "the longest row has 33 tokens; the model's context is 32"},
      {"over the token budget", [](auto& r) { r.clear_inputs(); for (int b = 0; b < 3; ++b) AddRowOf(r.mutable_inputs(), 22); }, kExhausted, "the padded batch holds 66 tokens (3 rows x 22); this server allows 64 per request (--max_tokens)"},
      {"padding counts toward the budget", [](auto& r) { AddRow(r.mutable_inputs(), {1}); AddRowOf(r.mutable_inputs(), 30); }, kExhausted, "holds 90 tokens (3 rows x 30)"},
      {"over the batch limit", [](auto& r) { for (int b = 0; b < 8; ++b) AddRow(r.mutable_inputs(), {1}); }, kExhausted, "the batch has 9 rows; this server allows 8 (--max_batch)"},
      {"text over the token budget", [](auto& r) { r.set_model("demo"); r.mutable_inputs()->clear_token_ids(); std::string text; for (int i = 0; i < 40; ++i) text += " Alice Bob"; r.mutable_inputs()->add_texts(text); }, kExhausted, "(--max_tokens)"},

      // Captures: hook names, globs and layer filters.
      {"unknown hook", [](auto& r) { AddCapture(r, "blocks.0.hook_resid_middle"); }, kInvalid, R"(unknown hook point "blocks.0.hook_resid_middle")"},
      {"empty hook name", [](auto& r) { AddCapture(r, ""); }, kInvalid, R"(unknown hook point "")"},
      {"layer past the model", [](auto& r) { AddCapture(r, "blocks.2.hook_resid_pre"); }, kInvalid, R"(unknown hook point "blocks.2.hook_resid_pre")"},
      {"glob matching nothing", [](auto& r) { AddCapture(r, "blocks.*.mlp.hook_pre_linear"); }, kInvalid, R"(unknown hook point "blocks.*.mlp.hook_pre_linear")"},
      {"resid_mid of a parallel block", [](auto& r) { r.set_model("pythia"); AddCapture(r, "blocks.0.hook_resid_mid"); }, kInvalid, R"(unknown hook point "blocks.0.hook_resid_mid")"},
      {"layer filter past the model", [](auto& r) { AddCapture(r, "blocks.*.attn.hook_z")->add_layers(9); }, kInvalid, R"(capture "blocks.*.attn.hook_z": no hook matches in layers [9])"},
      {"negative layer filter", [](auto& r) { AddCapture(r, "blocks.*.hook_resid_post")->add_layers(-5); }, kInvalid, "no hook matches in layers [-5]"},
      {"layer filter on a model-level hook", [](auto& r) { AddCapture(r, "hook_embed")->add_layers(0); }, kInvalid, R"(capture "hook_embed": no hook matches in layers [0])"},

      // Captures: positions, heads.
      {"position past the rows", [](auto& r) { AddCapture(r, "hook_embed")->add_positions(3); }, kInvalid, R"(capture "hook_embed": position 3 is outside the inputs (longest row 3 tokens, shortest 3))"},
      {"negative position past the rows", [](auto& r) { AddCapture(r, "hook_embed")->add_positions(-4); }, kInvalid, "position -4 is outside the inputs"},
      {"INT32_MAX position", [](auto& r) { AddCapture(r, "blocks.0.hook_resid_post")->add_positions(kIntMax); }, kInvalid, "position 2147483647 is outside the inputs"},
      {"negative position past the shortest row", [](auto& r) { AddRow(r.mutable_inputs(), {4}); AddCapture(r, "hook_embed")->add_positions(-2); }, kInvalid, "position -2 is outside the inputs (longest row 3 tokens, shortest 1)"},
      {"head past n_heads", [](auto& r) { AddCapture(r, "blocks.0.attn.hook_z")->add_heads(4); }, kInvalid, "head 4 is outside [0, 4) for blocks.0.attn.hook_z"},
      {"negative head", [](auto& r) { AddCapture(r, "blocks.1.attn.hook_pattern")->add_heads(-1); }, kInvalid, "head -1 is outside [0, 4) for blocks.1.attn.hook_pattern"},
      {"heads of a hook without heads", [](auto& r) { AddCapture(r, "hook_embed")->add_heads(0); }, kInvalid, "hook_embed has no head axis"},
      {"kv head past n_kv_heads", [](auto& r) { r.set_model("llama"); AddCapture(r, "blocks.0.attn.hook_k")->add_heads(2); }, kInvalid, "head 2 is outside [0, 2) for blocks.0.attn.hook_k"},

      // Captures: reductions, k and dtypes.
      {"top-k without k", [](auto& r) { AddCapture(r, "hook_embed")->set_reduction(pb::REDUCTION_TOP_K); }, kInvalid, R"(capture "hook_embed": top-k needs 1 <= k <= 64 (the last axis of hook_embed), got 0)"},
      {"top-k past the last axis", [](auto& r) { auto* c = AddCapture(r, "hook_embed"); c->set_reduction(pb::REDUCTION_TOP_K); c->set_k(65); }, kInvalid, "1 <= k <= 64 (the last axis of hook_embed), got 65"},
      {"top-k negative k", [](auto& r) { auto* c = AddCapture(r, "blocks.0.mlp.hook_post"); c->set_reduction(pb::REDUCTION_TOP_K); c->set_k(-1); }, kInvalid, "1 <= k <= 256 (the last axis of blocks.0.mlp.hook_post), got -1"},
      {"top-k past the key positions", [](auto& r) { auto* c = AddCapture(r, "blocks.0.attn.hook_pattern"); c->set_reduction(pb::REDUCTION_TOP_K); c->set_k(4); }, kInvalid, "1 <= k <= 3 (the last axis of blocks.0.attn.hook_pattern), got 4"},
      {"i32 wire dtype", [](auto& r) { AddCapture(r, "hook_embed")->set_dtype(pb::DTYPE_I32); }, kInvalid, R"(captures[0] "hook_embed": the wire dtype must be f32, f16 or bf16)"},
      {"unknown dtype enum", [](auto& r) { AddCapture(r, "hook_embed")->set_dtype(static_cast<pb::DType>(9)); }, kInvalid, R"(captures[0] "hook_embed": the wire dtype must be f32, f16 or bf16)"},
      {"unknown reduction enum", [](auto& r) { AddCapture(r, "hook_embed"); AddCapture(r, "hook_pos_embed")->set_reduction(static_cast<pb::Reduction>(7)); }, kInvalid, R"(captures[1] "hook_pos_embed": unknown reduction 7)"},

      // Sizes.
      {"response over the byte limit", [](auto& r) { AddCapture(r, "*"); }, kExhausted, "bytes; this server allows 16384 (--max_response_bytes)"},
      {"repeated positions over the byte limit", [](auto& r) { auto* c = AddCapture(r, "hook_embed"); for (int i = 0; i < 100; ++i) c->add_positions(0); }, kExhausted, "the response would carry 25600 bytes"},
      {"all logits over the byte limit", [](auto& r) { r.clear_inputs(); for (int b = 0; b < 2; ++b) AddRowOf(r.mutable_inputs(), 8); r.mutable_outputs()->set_logits(pb::LOGITS_ALL); }, kExhausted, "the response would carry 19200 bytes"},

      // Outputs.
      {"LOGITS_TOP_K without logits_k", [](auto& r) { r.mutable_outputs()->set_logits(pb::LOGITS_TOP_K); }, kInvalid, "outputs.logits_k must be in [1, 300] for LOGITS_TOP_K, got 0"},
      {"logits_k past the vocabulary", [](auto& r) { r.mutable_outputs()->set_logits(pb::LOGITS_TOP_K); r.mutable_outputs()->set_logits_k(301); }, kInvalid, "outputs.logits_k must be in [1, 300] for LOGITS_TOP_K, got 301"},
      {"negative logits_k", [](auto& r) { r.mutable_outputs()->set_logits(pb::LOGITS_TOP_K); r.mutable_outputs()->set_logits_k(-3); }, kInvalid, "got -3"},
      {"unknown logits mode enum", [](auto& r) { r.mutable_outputs()->set_logits(static_cast<pb::LogitsMode>(9)); }, kInvalid, "unknown outputs.logits mode 9"},
      {"target token = vocab", [](auto& r) { r.mutable_outputs()->add_target_tokens(300); }, kInvalid, "outputs.target_tokens: token id 300 is outside the vocabulary [0, 300)"},
      {"negative target token", [](auto& r) { r.mutable_outputs()->add_target_tokens(5); r.mutable_outputs()->add_target_tokens(-1); }, kInvalid, "outputs.target_tokens: token id -1"},

      // stop_at_layer.
      {"stop_at_layer with logits", [](auto& r) { r.set_stop_at_layer(1); r.mutable_outputs()->set_logits(pb::LOGITS_LAST); }, kInvalid, "need the whole forward pass; leave them empty when setting stop_at_layer"},
      {"stop_at_layer with the loss", [](auto& r) { r.set_stop_at_layer(1); r.mutable_outputs()->set_loss_per_token(true); }, kInvalid, "leave them empty when setting stop_at_layer"},
      {"stop_at_layer with target tokens", [](auto& r) { r.set_stop_at_layer(0); r.mutable_outputs()->add_target_tokens(1); }, kInvalid, "leave them empty when setting stop_at_layer"},
      {"stop_at_layer past n_layers", [](auto& r) { r.set_stop_at_layer(3); }, kInvalid, "stop_at_layer 3 is outside [0, 2]"},
      {"negative stop_at_layer", [](auto& r) { r.set_stop_at_layer(-1); }, kInvalid, "stop_at_layer -1 is outside [0, 2]"},
      {"glob only after stop_at_layer", [](auto& r) { r.set_stop_at_layer(1); AddCapture(r, "blocks.1.*"); }, kInvalid, R"(capture "blocks.1.*" matches no hook before stop_at_layer 1)"},
      {"capture after stop_at_layer", [](auto& r) { r.set_stop_at_layer(1); AddCapture(r, "blocks.1.hook_resid_pre"); }, kInvalid, "capture blocks.1.hook_resid_pre is never reached with stop_at_layer 1"},
      {"final norm with stop_at_layer", [](auto& r) { r.set_stop_at_layer(2); AddCapture(r, "ln_final.hook_normalized"); }, kInvalid, "capture ln_final.hook_normalized is never reached with stop_at_layer 2"},
  };
  Check<pb::RunRequest>("Run", GoodRun, CallRun, cases, serves);
}

// Interventions: kinds (the directional ones included), hooks, selections and values.
TEST_F(BadRequestCorpusTest, RunInterventions) {
  const std::vector<Case<pb::RunRequest>> cases = {
      {"intervention without kind", [](auto& r) { r.add_interventions()->set_hook("hook_embed"); }, kInvalid, R"(interventions[0] "hook_embed": set kind (ZERO, SCALE, ADD, SET, MEAN_BATCH, MEAN_POS, PATCH_ROW, PATCH_CACHED, PROJECT_OUT, ORTHOGONAL_DECOMP or PROJECTION_CAP))"},
      {"unknown kind enum", [](auto& r) { AddEdit(r, "hook_embed", pb::INTERVENTION_ZERO); AddEdit(r, "hook_embed", static_cast<pb::InterventionKind>(99)); }, kInvalid, R"(interventions[1] "hook_embed": set kind)"},
      {"edit of attn.hook_result", [](auto& r) { AddEdit(r, "blocks.0.attn.hook_result", pb::INTERVENTION_ZERO); }, kInvalid, "intervention at blocks.0.attn.hook_result: this hook can be captured but not edited yet"},
      {"edit of ln_final.hook_normalized", [](auto& r) { AddEdit(r, "ln_final.hook_normalized", pb::INTERVENTION_SCALE); }, kInvalid, "intervention at ln_final.hook_normalized: this hook can be captured but not edited yet"},
      {"edit of ln1.hook_scale", [](auto& r) { AddEdit(r, "blocks.0.ln1.hook_scale", pb::INTERVENTION_ZERO); }, kInvalid, "intervention at blocks.0.ln1.hook_scale: this hook can be captured but not edited yet"},
      {"unknown hook", [](auto& r) { AddEdit(r, "blocks.9.attn.hook_z", pb::INTERVENTION_ZERO); }, kInvalid, R"(interventions[0] "blocks.9.attn.hook_z": unknown hook point)"},
      {"empty hook", [](auto& r) { AddEdit(r, "", pb::INTERVENTION_ZERO); }, kInvalid, R"(interventions[0] "": unknown hook point "")"},
      {"glob matching nothing", [](auto& r) { AddEdit(r, "blocks.*.hook_nothing", pb::INTERVENTION_ZERO); }, kInvalid, R"(unknown hook point "blocks.*.hook_nothing")"},
      {"row past the batch", [](auto& r) { AddEdit(r, "hook_embed", pb::INTERVENTION_ZERO)->add_rows(1); }, kInvalid, "intervention at hook_embed: row 1 is outside the batch [0, 1)"},
      {"negative row", [](auto& r) { AddEdit(r, "hook_embed", pb::INTERVENTION_ZERO)->add_rows(-1); }, kInvalid, "row -1 is outside the batch [0, 1)"},
      {"position past the row", [](auto& r) { AddEdit(r, "hook_embed", pb::INTERVENTION_ZERO)->add_positions(3); }, kInvalid, "intervention at hook_embed: position 3 is outside row 0 (3 tokens)"},
      {"negative position past the row", [](auto& r) { AddEdit(r, "blocks.0.hook_resid_pre", pb::INTERVENTION_ZERO)->add_positions(-4); }, kInvalid, "position -4 is outside row 0 (3 tokens)"},
      {"INT32_MIN position", [](auto& r) { AddEdit(r, "blocks.0.hook_resid_pre", pb::INTERVENTION_ZERO)->add_positions(kIntMin); }, kInvalid, "position -2147483648 is outside row 0 (3 tokens)"},
      {"position past a shorter row", [](auto& r) { AddRow(r.mutable_inputs(), {4}); AddEdit(r, "hook_embed", pb::INTERVENTION_ZERO)->add_positions(2); }, kInvalid, "position 2 is outside row 1 (1 tokens)"},
      {"heads of a hook without heads", [](auto& r) { AddEdit(r, "hook_embed", pb::INTERVENTION_ZERO)->add_heads(0); }, kInvalid, "intervention at hook_embed: heads are selected but this hook has no head axis"},
      {"head past n_heads", [](auto& r) { AddEdit(r, "blocks.0.attn.hook_z", pb::INTERVENTION_ZERO)->add_heads(4); }, kInvalid, "intervention at blocks.0.attn.hook_z: head 4 is outside [0, 4)"},
      {"negative head", [](auto& r) { AddEdit(r, "blocks.1.attn.hook_pattern", pb::INTERVENTION_ZERO)->add_heads(-1); }, kInvalid, "head -1 is outside [0, 4)"},
      {"kv head past n_kv_heads", [](auto& r) { r.set_model("llama"); AddEdit(r, "blocks.0.attn.hook_v", pb::INTERVENTION_ZERO)->add_heads(2); }, kInvalid, "intervention at blocks.0.attn.hook_v: head 2 is outside [0, 2)"},
      {"dim past d_model", [](auto& r) { AddEdit(r, "blocks.0.hook_resid_post", pb::INTERVENTION_ZERO)->add_dims(64); }, kInvalid, "intervention at blocks.0.hook_resid_post: index 64 is outside the last axis [0, 64)"},
      {"negative dim", [](auto& r) { AddEdit(r, "hook_embed", pb::INTERVENTION_SCALE)->add_dims(-1); }, kInvalid, "index -1 is outside the last axis [0, 64)"},
      {"neuron past d_mlp", [](auto& r) { AddEdit(r, "blocks.1.mlp.hook_post", pb::INTERVENTION_ZERO)->add_dims(256); }, kInvalid, "index 256 is outside the last axis [0, 256)"},
      {"pattern key past the row", [](auto& r) { AddEdit(r, "blocks.0.attn.hook_pattern", pb::INTERVENTION_ZERO)->add_dims(3); }, kInvalid, "intervention at blocks.0.attn.hook_pattern: key position 3 is outside row 0 (3 tokens)"},
      {"pattern query past the row", [](auto& r) { AddEdit(r, "blocks.0.attn.hook_attn_scores", pb::INTERVENTION_ZERO)->add_positions(-5); }, kInvalid, "query position -5 is outside row 0 (3 tokens)"},
      {"ADD value of the wrong size", [](auto& r) { AddValues(AddEdit(r, "hook_embed", pb::INTERVENTION_ADD), 2); }, kInvalid, "intervention at hook_embed: the value has 2 elements; it must be [64], [1,64], one row [3,1,64] or the hook's full shape [1,3,64]"},
      {"ADD without a value", [](auto& r) { AddEdit(r, "blocks.0.hook_resid_pre", pb::INTERVENTION_ADD); }, kInvalid, "the value has 0 elements"},
      {"SET value of the wrong size", [](auto& r) { AddValues(AddEdit(r, "blocks.0.attn.hook_z", pb::INTERVENTION_SET), 63); }, kInvalid, "the value has 63 elements; it must be [16], [4,16]"},
      {"pattern value of the wrong size", [](auto& r) { AddValues(AddEdit(r, "blocks.0.attn.hook_pattern", pb::INTERVENTION_SET), 5); }, kInvalid, "the value has 5 elements; it must be [key_pos] [3]"},
      {"PATCH_ROW source row past the batch", [](auto& r) { AddEdit(r, "hook_embed", pb::INTERVENTION_PATCH_ROW)->add_source_rows(5); }, kInvalid, "intervention at hook_embed: source row 5 is outside the source batch"},
      {"PATCH_ROW negative source row", [](auto& r) { AddEdit(r, "hook_embed", pb::INTERVENTION_PATCH_ROW)->add_source_rows(-1); }, kInvalid, "source row -1 is outside the source batch"},
      {"PATCH_ROW without source rows", [](auto& r) { AddEdit(r, "hook_embed", pb::INTERVENTION_PATCH_ROW); }, kInvalid, "patching needs a source row for each of the 1 rows"},
      {"PATCH_ROW with too many source rows", [](auto& r) { auto* in = AddEdit(r, "hook_embed", pb::INTERVENTION_PATCH_ROW); in->add_source_rows(0); in->add_source_rows(0); }, kInvalid, "patching needs a source row for each of the 1 rows"},

      // Directional edits: PROJECT_OUT, ORTHOGONAL_DECOMP, PROJECTION_CAP.
      {"PROJECT_OUT without a direction", [](auto& r) { AddEdit(r, "blocks.0.hook_resid_post", pb::INTERVENTION_PROJECT_OUT); }, kInvalid, "intervention at blocks.0.hook_resid_post: the direction has 0 elements; it must be [64] or one per head [1,64]"},
      {"PROJECT_OUT zero direction", [](auto& r) { AddValues(AddEdit(r, "blocks.0.hook_resid_post", pb::INTERVENTION_PROJECT_OUT), 64, 0); }, kInvalid, "the direction must be finite and non-zero"},
      {"PROJECT_OUT NaN direction", [](auto& r) { AddValues(AddEdit(r, "blocks.0.hook_resid_post", pb::INTERVENTION_PROJECT_OUT), 64, kNan); }, kInvalid, "the direction must be finite and non-zero"},
      {"PROJECT_OUT infinite direction", [](auto& r) { AddValues(AddEdit(r, "blocks.0.hook_resid_post", pb::INTERVENTION_PROJECT_OUT), 64, kInf); }, kInvalid, "the direction must be finite and non-zero"},
      {"PROJECT_OUT with dims", [](auto& r) { auto* in = AddEdit(r, "blocks.0.hook_resid_post", pb::INTERVENTION_PROJECT_OUT); AddValues(in, 64); in->add_dims(0); }, kInvalid, "a directional edit uses the whole last axis; leave dims empty"},
      {"PROJECT_OUT of a pattern", [](auto& r) { AddValues(AddEdit(r, "blocks.0.attn.hook_pattern", pb::INTERVENTION_PROJECT_OUT), 3); }, kInvalid, "intervention at blocks.0.attn.hook_pattern: directional edits act on activations, not attention"},
      {"PROJECT_OUT per-head direction of the wrong size", [](auto& r) { AddValues(AddEdit(r, "blocks.0.attn.hook_z", pb::INTERVENTION_PROJECT_OUT), 48); }, kInvalid, "the direction has 48 elements; it must be [16] or one per head [4,16]"},
      {"ORTHOGONAL_DECOMP without a direction", [](auto& r) { AddEdit(r, "blocks.1.hook_resid_pre", pb::INTERVENTION_ORTHOGONAL_DECOMP)->set_coefficient(2); }, kInvalid, "intervention at blocks.1.hook_resid_pre: the direction has 0 elements"},
      {"ORTHOGONAL_DECOMP zero direction", [](auto& r) { AddValues(AddEdit(r, "blocks.1.hook_resid_pre", pb::INTERVENTION_ORTHOGONAL_DECOMP), 64, 0); }, kInvalid, "the direction must be finite and non-zero"},
      {"ORTHOGONAL_DECOMP one head zero", [](auto& r) { auto* in = AddEdit(r, "blocks.0.attn.hook_z", pb::INTERVENTION_ORTHOGONAL_DECOMP); AddValues(in, 48); AddValues(in, 16, 0); }, kInvalid, "intervention at blocks.0.attn.hook_z: the direction must be finite and non-zero"},
      {"ORTHOGONAL_DECOMP of scores", [](auto& r) { AddValues(AddEdit(r, "blocks.1.attn.hook_attn_scores", pb::INTERVENTION_ORTHOGONAL_DECOMP), 3); }, kInvalid, "directional edits act on activations, not attention"},
      {"ORTHOGONAL_DECOMP with dims", [](auto& r) { auto* in = AddEdit(r, "blocks.1.hook_resid_pre", pb::INTERVENTION_ORTHOGONAL_DECOMP); AddValues(in, 64); in->add_dims(3); }, kInvalid, "leave dims empty"},
      {"PROJECTION_CAP without bounds", [](auto& r) { AddValues(AddEdit(r, "blocks.0.hook_resid_pre", pb::INTERVENTION_PROJECTION_CAP), 64); }, kInvalid, "intervention at blocks.0.hook_resid_pre: a projection cap needs projection_min or projection_max (or both), finite"},
      {"PROJECTION_CAP min above max", [](auto& r) { auto* in = AddEdit(r, "blocks.0.hook_resid_pre", pb::INTERVENTION_PROJECTION_CAP); AddValues(in, 64); in->set_projection_min(2); in->set_projection_max(1); }, kInvalid, "projection_min 2 is above projection_max 1"},
      {"PROJECTION_CAP NaN min", [](auto& r) { auto* in = AddEdit(r, "blocks.0.hook_resid_pre", pb::INTERVENTION_PROJECTION_CAP); AddValues(in, 64); in->set_projection_min(kNan); }, kInvalid, "needs projection_min or projection_max (or both), finite"},
      {"PROJECTION_CAP NaN max", [](auto& r) { auto* in = AddEdit(r, "blocks.0.hook_resid_pre", pb::INTERVENTION_PROJECTION_CAP); AddValues(in, 64); in->set_projection_min(0); in->set_projection_max(kNan); }, kInvalid, "needs projection_min or projection_max (or both), finite"},
      {"PROJECTION_CAP infinite bounds", [](auto& r) { auto* in = AddEdit(r, "blocks.0.hook_resid_pre", pb::INTERVENTION_PROJECTION_CAP); AddValues(in, 64); in->set_projection_min(-kInf); in->set_projection_max(kInf); }, kInvalid, "needs projection_min or projection_max (or both), finite"},
      {"PROJECTION_CAP zero direction", [](auto& r) { auto* in = AddEdit(r, "blocks.0.hook_resid_pre", pb::INTERVENTION_PROJECTION_CAP); AddValues(in, 64, 0); in->set_projection_max(1); }, kInvalid, "the direction must be finite and non-zero"},
      {"PROJECTION_CAP of a pattern", [](auto& r) { auto* in = AddEdit(r, "blocks.0.attn.hook_pattern", pb::INTERVENTION_PROJECTION_CAP); AddValues(in, 3); in->set_projection_max(1); }, kInvalid, "directional edits act on activations, not attention"},
      {"projection bounds on SCALE", [](auto& r) { AddEdit(r, "hook_embed", pb::INTERVENTION_SCALE)->set_projection_max(1); }, kInvalid, R"(interventions[0] "hook_embed": projection_min / projection_max apply to PROJECTION_CAP only)"},
      {"projection bounds on PROJECT_OUT", [](auto& r) { auto* in = AddEdit(r, "blocks.0.hook_resid_pre", pb::INTERVENTION_PROJECT_OUT); AddValues(in, 64); in->set_projection_min(0); }, kInvalid, "projection_min / projection_max apply to PROJECTION_CAP only"},
  };
  Check<pb::RunRequest>("Run", GoodRun, CallRun, cases);
}

// Cached runs in Run: PATCH_CACHED sources and keep (names, TTLs, hooks, the budget).
TEST_F(BadRequestCorpusTest, RunCachedRuns) {
  // A kept run that expires: the fake clock moves past its one-second TTL.
  ASSERT_TRUE(Keep("short", "gpt2", 1, "hook_embed", /*ttl_seconds=*/1).ok());
  clock_skew_s_ += 2;
  const std::vector<Case<pb::RunRequest>> cases = {
      {"unknown cached run", [](auto& r) { AddPatch(r, "nope", "hook_embed"); }, kNotFound, R"(no cached run "nope": it never existed or was released (cached runs: base, llama_base))"},
      {"empty cached_run", [](auto& r) { AddPatch(r, "", "hook_embed"); }, kNotFound, R"(no cached run "")"},
      {"expired cached run", [](auto& r) { AddPatch(r, "short", "hook_embed"); }, kNotFound, R"(cached run "short" expired at)"},
      {"cached from another model", [](auto& r) { AddPatch(r, "llama_base", "hook_embed"); }, kPrecondition, R"(intervention at hook_embed (patch from cached run "llama_base"): it was cached from model "llama", and this run is on "gpt2")"},
      {"hook the run did not keep", [](auto& r) { AddPatch(r, "base", "blocks.0.hook_resid_pre"); }, kInvalid, "that run kept hook_embed, not blocks.0.hook_resid_pre"},
      {"glob reaching an unkept hook", [](auto& r) { AddPatch(r, "base", "blocks.*.hook_resid_pre")->add_source_rows(0); }, kInvalid, "not blocks.0.hook_resid_pre"},
      {"different padded length", [](auto& r) { r.mutable_inputs()->mutable_token_ids(0)->add_ids(4); AddPatch(r, "base", "hook_embed")->add_source_rows(0); }, kInvalid, "the cached value is [2,3,64] and this run's is [1,4,64]; all but the batch must agree"},
      {"batches differ without source_rows", [](auto& r) { AddRow(r.mutable_inputs(), {4, 5, 6}); AddRow(r.mutable_inputs(), {7, 8, 9}); AddPatch(r, "base", "hook_embed"); }, kInvalid, "the cached run has 2 rows and this run 3; give source_rows"},
      {"source row past the cached batch", [](auto& r) { AddPatch(r, "base", "hook_embed")->add_source_rows(2); }, kInvalid, "source row 2 is outside the source batch"},
      {"negative source row", [](auto& r) { AddPatch(r, "base", "hook_embed")->add_source_rows(-1); }, kInvalid, "source row -1 is outside the source batch"},
      {"source_rows of the wrong length", [](auto& r) { auto* in = AddPatch(r, "base", "hook_embed"); in->add_source_rows(0); in->add_source_rows(1); }, kInvalid, "patching needs a source row for each of the 1 rows"},
      {"keep name with a space", [](auto& r) { AddCapture(r, "hook_embed"); r.mutable_keep()->set_name("a b"); }, kInvalid, R"(cached run name "a b": use 1 to 128 letters, digits, '_', '.' or '-')"},
      {"empty keep name", [](auto& r) { AddCapture(r, "hook_embed"); r.mutable_keep(); }, kInvalid, R"(cached run name "": use 1 to 128)"},
      {"keep name of 129 characters", [](auto& r) { AddCapture(r, "hook_embed"); r.mutable_keep()->set_name(std::string(129, 'k')); }, kInvalid, "use 1 to 128 letters"},
      {"keep name with a colon", [](auto& r) { AddCapture(r, "hook_embed"); r.mutable_keep()->set_name("run:1"); }, kInvalid, R"(cached run name "run:1")"},
      {"keep name with a slash", [](auto& r) { AddCapture(r, "hook_embed"); r.mutable_keep()->set_name("../etc"); }, kInvalid, R"(cached run name "../etc")"},
      {"negative ttl", [](auto& r) { AddCapture(r, "hook_embed"); r.mutable_keep()->set_name("k"); r.mutable_keep()->set_ttl_seconds(-1); }, kInvalid, "keep.ttl_seconds -1 is outside (0, 3600] (glassboxd --cache_max_ttl_s)"},
      {"ttl past the maximum", [](auto& r) { AddCapture(r, "hook_embed"); r.mutable_keep()->set_name("k"); r.mutable_keep()->set_ttl_seconds(3601); }, kInvalid, "keep.ttl_seconds 3601 is outside (0, 3600]"},
      {"keep of an unknown hook", [](auto& r) { r.mutable_keep()->set_name("k"); r.mutable_keep()->add_hooks("nope"); }, kInvalid, R"(keep.hooks "nope": unknown hook point "nope")"},
      {"keep glob matching nothing", [](auto& r) { r.mutable_keep()->set_name("k"); r.mutable_keep()->add_hooks("blocks.*.nope"); }, kInvalid, R"(keep.hooks "blocks.*.nope": unknown hook point)"},
      {"keep of nothing", [](auto& r) { r.mutable_keep()->set_name("k"); }, kInvalid, "keep: no hooks to keep; name them in keep.hooks or capture them in this request"},
      {"keep of only hook_sae_* captures", [](auto& r) { r.add_sae_splices()->set_sae("res1_standard"); AddCapture(r, "blocks.1.hook_resid_pre.hook_sae_acts_post"); r.mutable_keep()->set_name("k"); }, kInvalid, "keep: no hooks to keep"},
      {"keep of a hook_sae_* point", [](auto& r) { r.add_sae_splices()->set_sae("res1_standard"); r.mutable_keep()->set_name("k"); r.mutable_keep()->add_hooks("blocks.1.hook_resid_pre.hook_sae_acts_post"); }, kInvalid, R"(keep.hooks "blocks.1.hook_resid_pre.hook_sae_acts_post": unknown hook point)"},
      {"keep after stop_at_layer", [](auto& r) { r.set_stop_at_layer(1); r.mutable_keep()->set_name("k"); r.mutable_keep()->add_hooks("blocks.1.hook_resid_pre"); }, kInvalid, "keep.hooks: blocks.1.hook_resid_pre is never reached with stop_at_layer 1"},
      {"keep over the cache budget", [](auto& r) { r.mutable_keep()->set_name("big"); r.mutable_keep()->add_hooks("*"); }, kExhausted, R"(keeping run "big" needs)"},
  };
  auto serves = [] {
    pb::RunRequest r = GoodRun();
    AddPatch(r, "base", "hook_embed")->add_source_rows(1);
    return CallRun(r);
  };
  Check<pb::RunRequest>("Run", GoodRun, CallRun, cases, serves);

  // The entry limit (4): base and llama_base are held; two more fill it.
  ASSERT_TRUE(Keep("fill1", "gpt2", 1, "hook_embed").ok());
  ASSERT_TRUE(Keep("fill2", "gpt2", 1, "hook_embed").ok());
  Expect("Run", "keep past the entry limit", Keep("fill3", "gpt2", 1, "hook_embed"), kExhausted,
         R"(keeping run "fill3" would make 5 cached runs; 4 are held and 4 are allowed (glassboxd --cache_max_entries))");
  ExpectServes("Run", "keep past the entry limit", serves());
  EXPECT_TRUE(Release("fill1").ok());
  EXPECT_TRUE(Release("fill2").ok());
}

// SAEs in Run: splices, their feature edits, hook_sae_* captures, decoder steering.
TEST_F(BadRequestCorpusTest, RunSaes) {
  auto good = [] {
    pb::RunRequest r = GoodRun();
    r.add_sae_splices()->set_sae("res1_standard");
    return r;
  };
  const std::vector<Case<pb::RunRequest>> cases = {
      {"unknown SAE", [](auto& r) { r.mutable_sae_splices(0)->set_sae("res9"); }, kNotFound, R"(sae_splices[0] "res9": no SAE named "res9"; this server has: ln_res1, on_llama, res1_standard, z0_jumprelu)"},
      {"empty SAE name", [](auto& r) { r.mutable_sae_splices(0)->set_sae(""); }, kNotFound, R"(no SAE named "")"},
      {"SAE of another model", [](auto& r) { r.mutable_sae_splices(0)->set_sae("on_llama"); }, kInvalid, R"(sae_splices[0] "on_llama": SAE "on_llama" is attached to model "llama", not "gpt2")"},
      {"two SAEs at one hook", [](auto& r) { r.add_sae_splices()->set_sae("ln_res1"); }, kInvalid, R"(sae_splices[1] "ln_res1": another SAE is already spliced at blocks.1.hook_resid_pre; splice at most one per hook)"},
      {"feature edit without kind", [](auto& r) { AddFeatureEdit(r, 1)->set_kind(pb::FEATURE_EDIT_UNSPECIFIED); }, kInvalid, R"(sae_splices[0] "res1_standard" edits[0]: set kind (ZERO, CLAMP, SCALE or ADD))"},
      {"unknown feature edit kind enum", [](auto& r) { AddFeatureEdit(r, 1); AddFeatureEdit(r, 1)->set_kind(static_cast<pb::FeatureEditKind>(9)); }, kInvalid, "edits[1]: set kind"},
      {"feature edit without features", [](auto& r) { AddFeatureEdit(r, 1)->clear_features(); }, kInvalid, "edits[0]: list at least one feature"},
      {"feature = d_sae", [](auto& r) { AddFeatureEdit(r, 128); }, kInvalid, "edits[0]: feature 128 is outside [0, 128) (d_sae of this SAE)"},
      {"negative feature", [](auto& r) { AddFeatureEdit(r, 2)->add_features(-1); }, kInvalid, "feature -1 is outside [0, 128)"},
      {"feature edit position past the row", [](auto& r) { AddFeatureEdit(r, 1)->add_positions(3); }, kInvalid, "edits[0]: position 3 is outside row 0 (3 tokens)"},
      {"feature edit negative position past the row", [](auto& r) { AddFeatureEdit(r, 1)->add_positions(-4); }, kInvalid, "position -4 is outside row 0 (3 tokens)"},
      {"feature edit row past the batch", [](auto& r) { AddFeatureEdit(r, 1)->add_rows(1); }, kInvalid, "edits[0]: row 1 is outside the batch [0, 1)"},
      {"feature edit negative row", [](auto& r) { AddFeatureEdit(r, 1)->add_rows(-1); }, kInvalid, "row -1 is outside the batch [0, 1)"},
      {"splice after stop_at_layer", [](auto& r) { r.set_stop_at_layer(1); }, kInvalid, R"(sae_splices[0] "res1_standard": its hook blocks.1.hook_resid_pre is never reached with stop_at_layer 1)"},
      {"hook_sae_* capture without a splice", [](auto& r) { r.clear_sae_splices(); AddCapture(r, "blocks.1.hook_resid_pre.hook_sae_acts_post"); }, kInvalid, "there are none; add sae_splices"},
      {"hook_sae_* capture of another hook", [](auto& r) { AddCapture(r, "blocks.0.hook_resid_pre.hook_sae_acts_post"); }, kInvalid, R"(capture "blocks.0.hook_resid_pre.hook_sae_acts_post" matches no hook_sae_* point of this request's splices (1 spliced))"},
      {"unknown hook_sae_* point", [](auto& r) { AddCapture(r, "blocks.1.hook_resid_pre.hook_sae_latents"); }, kInvalid, "names are <hook>.hook_sae_input|acts_pre|acts_post|recons|error|output"},
      {"hook_sae_error without the error term", [](auto& r) { AddCapture(r, "blocks.1.hook_resid_pre.hook_sae_error"); }, kInvalid, "hook_sae_error exists only with use_error_term"},
      {"hook_sae_* top-k past d_sae", [](auto& r) { auto* c = AddCapture(r, "blocks.1.hook_resid_pre.hook_sae_acts_post"); c->set_reduction(pb::REDUCTION_TOP_K); c->set_k(129); }, kInvalid, "1 <= k <= 128"},
      {"hook_sae_* heads", [](auto& r) { AddCapture(r, "blocks.1.hook_resid_pre.hook_sae_acts_post")->add_heads(0); }, kInvalid, "has no head axis"},
      {"hook_sae_* position past the rows", [](auto& r) { AddCapture(r, "blocks.1.hook_resid_pre.hook_sae_recons")->add_positions(3); }, kInvalid, "position 3 is outside the inputs"},
      {"hook_sae_* layer filter excluding the splice", [](auto& r) { AddCapture(r, "*.hook_sae_acts_post")->add_layers(0); }, kInvalid, "matches no hook_sae_* point"},
      {"hook_sae_* i32 dtype", [](auto& r) { AddCapture(r, "blocks.1.hook_resid_pre.hook_sae_acts_post")->set_dtype(pb::DTYPE_I32); }, kInvalid, "the wire dtype must be f32, f16 or bf16"},
      {"steering of an unknown SAE", [](auto& r) { AddSteering(r, "nope", 3, 1); }, kNotFound, R"(sae_steering[0] "nope": no SAE named "nope")"},
      {"steering of another model's SAE", [](auto& r) { AddSteering(r, "on_llama", 3, 1); }, kInvalid, R"(sae_steering[0] "on_llama": SAE "on_llama" is attached to model "llama", not "gpt2")"},
      {"steering without features", [](auto& r) { r.add_sae_steering()->set_sae("z0_jumprelu"); }, kInvalid, R"(sae_steering[0] "z0_jumprelu": list at least one feature)"},
      {"steering without coefficients", [](auto& r) { AddSteering(r, "z0_jumprelu", 3, 1)->clear_coefficients(); }, kInvalid, "give one coefficient per feature (1 features, 0 coefficients)"},
      {"steering with extra coefficients", [](auto& r) { AddSteering(r, "z0_jumprelu", 3, 1)->add_coefficients(2); }, kInvalid, "give one coefficient per feature (1 features, 2 coefficients)"},
      {"steering feature past d_sae", [](auto& r) { AddSteering(r, "z0_jumprelu", 500, 1); }, kInvalid, R"(sae_steering[0] "z0_jumprelu": feature 500 is outside [0, 128))"},
      {"steering negative feature", [](auto& r) { AddSteering(r, "res1_standard", -2, 1); }, kInvalid, "feature -2 is outside [0, 128)"},
      {"steering position past the row", [](auto& r) { AddSteering(r, "z0_jumprelu", 3, 1)->add_positions(-4); }, kInvalid, R"(sae_steering[0] "z0_jumprelu": intervention at blocks.0.attn.hook_z: position -4 is outside row 0 (3 tokens))"},
      {"steering row past the batch", [](auto& r) { AddSteering(r, "res1_standard", 3, 1)->add_rows(2); }, kInvalid, "row 2 is outside the batch [0, 1)"},
      {"steering NaN coefficient", [](auto& r) { AddSteering(r, "z0_jumprelu", 3, kNan); }, kInvalid, "steering coefficient for feature 3 is not finite"},
      {"steering infinite coefficient", [](auto& r) { AddSteering(r, "res1_standard", 7, -kInf); }, kInvalid, "steering coefficient for feature 7 is not finite"},
  };
  Check<pb::RunRequest>("Run", good, CallRun, cases);
}

// ---- Generate ----

// A good Generate: gpt2 continues [1, 2, 3] by two greedy tokens.
pb::GenerateRequest GoodGenerate() {
  pb::GenerateRequest r;
  r.set_model("gpt2");
  AddRow(r.mutable_inputs(), {1, 2, 3});
  r.set_max_new_tokens(2);
  return r;
}

TEST_F(BadRequestCorpusTest, Generate) {
  const std::vector<Case<pb::GenerateRequest>> cases = {
      // The prompts, as in Run.
      {"unknown model", [](auto& r) { r.set_model("gpt5"); }, kNotFound, R"(no model named "gpt5"; this server has: demo, gpt2, llama, pythia)"},
      {"no prompts", [](auto& r) { r.clear_inputs(); }, kInvalid, "inputs: give exactly one of texts or token_ids"},
      {"empty prompt", [](auto& r) { r.mutable_inputs()->add_token_ids(); }, kInvalid, "inputs row 1 has no tokens"},
      {"prompt token past the vocabulary", [](auto& r) { r.mutable_inputs()->mutable_token_ids(0)->add_ids(300); }, kInvalid, "inputs row 0 position 3: token id 300 is outside the vocabulary [0, 300)"},
      {"negative prompt token", [](auto& r) { r.mutable_inputs()->mutable_token_ids(0)->set_ids(0, -1); }, kInvalid, "inputs row 0 position 0: token id -1"},
      {"text prompt without a tokenizer", [](auto& r) { r.mutable_inputs()->clear_token_ids(); r.mutable_inputs()->add_texts("hi"); }, kPrecondition, R"(model "gpt2" has no tokenizer)"},
      {"prompt filling the context", [](auto& r) { r.clear_inputs(); AddRowOf(r.mutable_inputs(), 32); }, kInvalid, "prompt 0 has 32 tokens; the model's context is 32, leaving no room to generate"},
      {"prompt past the context", [](auto& r) { r.clear_inputs(); AddRowOf(r.mutable_inputs(), 33); }, kInvalid, "the longest row has 33 tokens; the model's context is 32"},
      {"over the batch limit", [](auto& r) { for (int b = 0; b < 8; ++b) AddRow(r.mutable_inputs(), {1}); }, kExhausted, "the batch has 9 rows; this server allows 8 (--max_batch)"},
      {"over the token budget", [](auto& r) { r.clear_inputs(); for (int b = 0; b < 3; ++b) AddRowOf(r.mutable_inputs(), 22); }, kExhausted, "(--max_tokens)"},

      // Lengths and stops.
      {"new tokens over the token budget", [](auto& r) { AddRow(r.mutable_inputs(), {4, 5, 6}); AddRow(r.mutable_inputs(), {7}); r.set_max_new_tokens(20); }, kExhausted, "the generation would hold 69 tokens (3 rows x 23, prompt and new tokens); this server allows 64 per request (--max_tokens)"},
      {"INT32_MAX new tokens over the token budget", [](auto& r) { AddRow(r.mutable_inputs(), {4}); AddRow(r.mutable_inputs(), {5}); r.set_max_new_tokens(kIntMax); }, kExhausted, "(3 rows x 32, prompt and new tokens)"},
      {"max_new_tokens 0", [](auto& r) { r.set_max_new_tokens(0); }, kInvalid, "max_new_tokens is 0; it must be >= 1"},
      {"negative max_new_tokens", [](auto& r) { r.set_max_new_tokens(-5); }, kInvalid, "max_new_tokens is -5; it must be >= 1"},
      {"INT32_MIN max_new_tokens", [](auto& r) { r.set_max_new_tokens(kIntMin); }, kInvalid, "max_new_tokens is -2147483648"},
      {"stop token = vocab", [](auto& r) { r.add_stop_token_ids(300); }, kInvalid, "stop token 300 is outside the vocabulary [0, 300)"},
      {"negative stop token", [](auto& r) { r.add_stop_token_ids(5); r.add_stop_token_ids(-1); }, kInvalid, "stop token -1 is outside the vocabulary"},
      {"stop strings without a tokenizer", [](auto& r) { r.add_stop_strings("."); }, kPrecondition, R"(stop_strings need a tokenizer; model "gpt2" has none (stop on token ids with stop_token_ids))"},
      {"empty stop string", [](auto& r) { r.set_model("demo"); r.add_stop_strings(""); }, kInvalid, "stop_strings[0] has 0 bytes; each must have 1 to 256"},
      {"stop string of 257 bytes", [](auto& r) { r.set_model("demo"); r.add_stop_strings("."); r.add_stop_strings(std::string(257, 'x')); }, kInvalid, "stop_strings[1] has 257 bytes; each must have 1 to 256"},
      {"17 stop strings", [](auto& r) { r.set_model("demo"); for (int i = 0; i < 17; ++i) r.add_stop_strings("s"); }, kInvalid, "stop_strings has 17 entries; at most 16"},
      {"negative top_logprobs", [](auto& r) { r.set_top_logprobs(-1); }, kInvalid, "top_logprobs -1 is outside [0, 300]"},
      {"top_logprobs past the vocabulary", [](auto& r) { r.set_top_logprobs(301); }, kInvalid, "top_logprobs 301 is outside [0, 300]"},

      // Sampling.
      {"negative temperature", [](auto& r) { r.mutable_sampling()->set_temperature(-1); }, kInvalid, "temperature is -1; it must be >= 0 (0 = greedy)"},
      {"NaN temperature", [](auto& r) { r.mutable_sampling()->set_temperature(std::nan("")); }, kInvalid, "temperature is nan; it must be >= 0"},
      {"infinite temperature", [](auto& r) { r.mutable_sampling()->set_temperature(kInf); }, kInvalid, "temperature is inf; it must be >= 0"},
      {"negative top_k", [](auto& r) { r.mutable_sampling()->set_top_k(-1); }, kInvalid, "top_k is -1; it must be >= 0 (0 = off)"},
      {"top_p 0", [](auto& r) { r.mutable_sampling()->set_top_p(0); }, kInvalid, "top_p is 0; it must be in (0, 1] (1 = off)"},
      {"top_p above 1", [](auto& r) { r.mutable_sampling()->set_top_p(1.5); }, kInvalid, "top_p is 1.5; it must be in (0, 1]"},
      {"NaN top_p", [](auto& r) { r.mutable_sampling()->set_top_p(std::nan("")); }, kInvalid, "top_p is nan"},
      {"negative min_p", [](auto& r) { r.mutable_sampling()->set_min_p(-0.5); }, kInvalid, "min_p is -0.5; it must be in [0, 1] (0 = off)"},
      {"min_p above 1", [](auto& r) { r.mutable_sampling()->set_min_p(2); }, kInvalid, "min_p is 2; it must be in [0, 1]"},
      {"repetition_penalty 0", [](auto& r) { r.mutable_sampling()->set_repetition_penalty(0); }, kInvalid, "repetition_penalty is 0; it must be > 0 (1 = off)"},
      {"negative repetition_penalty", [](auto& r) { r.mutable_sampling()->set_repetition_penalty(-2); }, kInvalid, "repetition_penalty is -2"},
      {"infinite repetition_penalty", [](auto& r) { r.mutable_sampling()->set_repetition_penalty(kInf); }, kInvalid, "repetition_penalty is inf"},
      {"NaN frequency_penalty", [](auto& r) { r.mutable_sampling()->set_frequency_penalty(std::nan("")); }, kInvalid, "frequency_penalty is nan; it must be finite (0 = off)"},
      {"infinite frequency_penalty", [](auto& r) { r.mutable_sampling()->set_frequency_penalty(-kInf); }, kInvalid, "frequency_penalty is -inf"},

      // Edits that would change meaning as the sequence grows.
      {"PATCH_CACHED", [](auto& r) { AddEdit(r, "hook_embed", pb::INTERVENTION_PATCH_CACHED)->set_cached_run("base"); }, kInvalid, "interventions[0]: PATCH_CACHED is not available in Generate"},
      {"negative intervention position", [](auto& r) { AddEdit(r, "hook_embed", pb::INTERVENTION_ZERO)->add_positions(-1); }, kInvalid, "interventions[0]: position -1 is negative; in Generate positions index real tokens from 0"},
      {"feature edit selecting positions", [](auto& r) { auto* s = r.add_sae_splices(); s->set_sae("res1_standard"); auto* e = s->add_edits(); e->set_kind(pb::FEATURE_EDIT_ZERO); e->add_features(1); e->add_positions(0); }, kUnimplemented, "sae_splices[0].edits[0]: feature edits that select rows or positions are not available in Generate yet"},
      {"feature edit selecting rows", [](auto& r) { auto* s = r.add_sae_splices(); s->set_sae("res1_standard"); auto* e = s->add_edits(); e->set_kind(pb::FEATURE_EDIT_ZERO); e->add_features(1); e->add_rows(0); }, kUnimplemented, "leave them empty to edit every token, or steer chosen positions with sae_steering"},
      {"negative steering position", [](auto& r) { auto* s = r.add_sae_steering(); s->set_sae("res1_standard"); s->add_features(1); s->add_coefficients(1); s->add_positions(-1); }, kInvalid, "sae_steering[0]: position -1 is negative"},
      {"unknown intervention hook", [](auto& r) { AddEdit(r, "blocks.7.hook_resid_pre", pb::INTERVENTION_ZERO); }, kInvalid, R"(unknown hook point "blocks.7.hook_resid_pre")"},
      {"intervention without kind", [](auto& r) { r.add_interventions()->set_hook("hook_embed"); }, kInvalid, R"(interventions[0] "hook_embed": set kind)"},
      {"steering zero direction", [](auto& r) { AddValues(AddEdit(r, "blocks.0.hook_resid_post", pb::INTERVENTION_ORTHOGONAL_DECOMP), 64, 0); }, kInvalid, "the direction must be finite and non-zero"},
      {"ADD value of the wrong size", [](auto& r) { AddValues(AddEdit(r, "hook_embed", pb::INTERVENTION_ADD), 3); }, kInvalid, "the value has 3 elements"},
      {"intervention position past the prompt", [](auto& r) { AddEdit(r, "hook_embed", pb::INTERVENTION_ZERO)->add_positions(3); }, kInvalid, "position 3 is outside row 0 (3 tokens)"},
      {"unknown SAE", [](auto& r) { r.add_sae_splices()->set_sae("nope"); }, kNotFound, R"(sae_splices[0] "nope": no SAE named "nope")"},
      {"SAE of another model", [](auto& r) { r.add_sae_splices()->set_sae("on_llama"); }, kInvalid, R"(SAE "on_llama" is attached to model "llama", not "gpt2")"},

      // Captures.
      {"capture with positions", [](auto& r) { AddCapture(r, "hook_embed")->add_positions(0); }, kInvalid, R"(captures[0] "hook_embed": positions are not available in Generate)"},
      {"capture_prompt with capture_at_end", [](auto& r) { AddCapture(r, "hook_embed"); r.set_capture_prompt(true); r.set_capture_at_end(true); }, kInvalid, "capture_prompt and capture_at_end exclude each other"},
      {"unknown capture hook", [](auto& r) { AddCapture(r, "blocks.0.hook_nothing"); }, kInvalid, R"(unknown hook point "blocks.0.hook_nothing")"},
      {"capture head past n_heads", [](auto& r) { AddCapture(r, "blocks.0.attn.hook_z")->add_heads(4); }, kInvalid, "head 4 is outside [0, 4)"},
      {"capture top-k past the last axis", [](auto& r) { auto* c = AddCapture(r, "hook_embed"); c->set_reduction(pb::REDUCTION_TOP_K); c->set_k(65); }, kInvalid, "1 <= k <= 64"},
      {"capture i32 dtype", [](auto& r) { AddCapture(r, "hook_embed")->set_dtype(pb::DTYPE_I32); }, kInvalid, "the wire dtype must be f32, f16 or bf16"},
      {"captures over the byte limit", [](auto& r) { r.set_max_new_tokens(20); AddCapture(r, "*"); r.set_capture_prompt(true); }, kExhausted, "this server allows 16384 (--max_response_bytes)"},
  };
  Check<pb::GenerateRequest>("Generate", GoodGenerate, CallGenerate, cases);
}

// ---- model information and tokenization ----

TEST_F(BadRequestCorpusTest, GetModelInfo) {
  auto good = [] {
    pb::GetModelInfoRequest r;
    r.set_model("gpt2");
    return r;
  };
  const std::vector<Case<pb::GetModelInfoRequest>> cases = {
      {"unknown model", [](auto& r) { r.set_model("gpt-2"); }, kNotFound, R"(no model named "gpt-2"; this server has: demo, gpt2, llama, pythia)"},
      {"empty model", [](auto& r) { r.set_model(""); }, kNotFound, R"(no model named ""; this server has: demo, gpt2, llama, pythia)"},
      {"model names are case-sensitive", [](auto& r) { r.set_model("Llama"); }, kNotFound, R"(no model named "Llama")"},
      {"trailing space", [](auto& r) { r.set_model("gpt2 "); }, kNotFound, R"(no model named "gpt2 ")"},
  };
  Check<pb::GetModelInfoRequest>("GetModelInfo", good, Call(&pb::Glassbox::Stub::GetModelInfo), cases);
}

TEST_F(BadRequestCorpusTest, Tokenize) {
  auto good = [] {
    pb::TokenizeRequest r;
    r.set_model("demo");
    r.set_text("Alice and Bob");
    return r;
  };
  const std::vector<Case<pb::TokenizeRequest>> cases = {
      {"unknown model", [](auto& r) { r.set_model("nope"); }, kNotFound, R"(no model named "nope")"},
      {"model without a tokenizer", [](auto& r) { r.set_model("gpt2"); }, kPrecondition, R"(model "gpt2" has no tokenizer ()"},
  };
  Check<pb::TokenizeRequest>("Tokenize", good, Call(&pb::Glassbox::Stub::Tokenize), cases);
}

TEST_F(BadRequestCorpusTest, Detokenize) {
  auto good = [] {
    pb::DetokenizeRequest r;
    r.set_model("demo");
    for (int32_t id : {5, 17, 300}) r.add_ids(id);
    return r;
  };
  const std::vector<Case<pb::DetokenizeRequest>> cases = {
      {"unknown model", [](auto& r) { r.set_model("nope"); }, kNotFound, R"(no model named "nope")"},
      {"model without a tokenizer", [](auto& r) { r.set_model("llama"); }, kPrecondition, R"(model "llama" has no tokenizer ()"},
      {"id = vocab", [](auto& r) { r.add_ids(1024); }, kInvalid, "token id 1024 is out of range: vocab size is 1024"},
      {"negative id", [](auto& r) { r.add_ids(-1); }, kInvalid, "token id -1 is out of range"},
      {"INT32_MAX id", [](auto& r) { r.add_ids(kIntMax); }, kInvalid, "token id 2147483647 is out of range"},
  };
  Check<pb::DetokenizeRequest>("Detokenize", good, Call(&pb::Glassbox::Stub::Detokenize), cases);
}

// ---- cached runs ----

TEST_F(BadRequestCorpusTest, ReleaseCachedRun) {
  ASSERT_TRUE(Keep("to_release", "gpt2", 1, "hook_embed").ok());
  ASSERT_TRUE(Release("to_release").ok());
  auto good = [] {
    pb::ReleaseCachedRunRequest r;
    r.set_name("base");
    return r;
  };
  // The good release frees "base"; each check keeps it again first.
  auto serves = [] {
    grpc::Status released = Release("base");
    if (!released.ok()) return released;
    return Keep("base", "gpt2", 2, "hook_embed");
  };
  const std::vector<Case<pb::ReleaseCachedRunRequest>> cases = {
      {"unknown name", [](auto& r) { r.set_name("nope"); }, kNotFound, R"(no cached run "nope": it never existed or was released)"},
      {"empty name", [](auto& r) { r.set_name(""); }, kNotFound, R"(no cached run "")"},
      {"released twice", [](auto& r) { r.set_name("to_release"); }, kNotFound, R"(no cached run "to_release")"},
      {"names are case-sensitive", [](auto& r) { r.set_name("BASE"); }, kNotFound, R"(no cached run "BASE")"},
  };
  Check<pb::ReleaseCachedRunRequest>("ReleaseCachedRun", good, Call(&pb::Glassbox::Stub::ReleaseCachedRun),
                                     cases, serves);
}

// ---- analyses ----

pb::PatchingSweepRequest GoodSweep() {
  pb::PatchingSweepRequest r;
  r.set_model("gpt2");
  AddRow(r.mutable_clean(), {1, 2, 3});
  AddRow(r.mutable_corrupted(), {4, 5, 6});
  r.set_kind(pb::SWEEP_RESID_PRE);
  r.mutable_metric()->set_token_a(7);
  r.mutable_metric()->set_token_b(8);
  return r;
}

TEST_F(BadRequestCorpusTest, PatchingSweep) {
  const std::vector<Case<pb::PatchingSweepRequest>> cases = {
      {"unknown model", [](auto& r) { r.set_model("nope"); }, kNotFound, R"(no model named "nope")"},
      {"no clean inputs", [](auto& r) { r.clear_clean(); }, kInvalid, "clean: inputs: give exactly one of texts or token_ids"},
      {"no corrupted inputs", [](auto& r) { r.clear_corrupted(); }, kInvalid, "corrupted: inputs: give exactly one of texts or token_ids"},
      {"clean token past the vocabulary", [](auto& r) { r.mutable_clean()->mutable_token_ids(0)->set_ids(1, 300); }, kInvalid, "clean: inputs row 0 position 1: token id 300 is outside the vocabulary"},
      {"negative corrupted token", [](auto& r) { r.mutable_corrupted()->mutable_token_ids(0)->set_ids(2, -1); }, kInvalid, "corrupted: inputs row 0 position 2: token id -1"},
      {"text without a tokenizer", [](auto& r) { r.mutable_clean()->clear_token_ids(); r.mutable_clean()->add_texts("a"); }, kPrecondition, R"(clean: model "gpt2" has no tokenizer)"},
      {"lengths differ", [](auto& r) { r.mutable_corrupted()->mutable_token_ids(0)->add_ids(7); }, kInvalid, "clean and corrupted inputs must have the same shape; got [1,3] and [1,4]"},
      {"row counts differ", [](auto& r) { AddRow(r.mutable_clean(), {1, 2, 3}); }, kInvalid, "must have the same shape; got [2,3] and [1,3]"},
      {"ragged rows", [](auto& r) { AddRow(r.mutable_clean(), {1, 2}); AddRow(r.mutable_corrupted(), {4, 5}); }, kInvalid, "every clean and corrupted row must have the same number of tokens"},
      {"no kind", [](auto& r) { r.set_kind(pb::SWEEP_UNSPECIFIED); }, kInvalid, "set kind: which activation to sweep (SWEEP_RESID_PRE, ...)"},
      {"unknown kind enum", [](auto& r) { r.set_kind(static_cast<pb::SweepKind>(42)); }, kInvalid, "set kind: which activation to sweep"},
      {"unknown metric enum", [](auto& r) { r.mutable_metric()->set_kind(static_cast<pb::PatchingMetric::Kind>(9)); }, kInvalid, "metric.kind 9 is unknown; use LOGIT_DIFF, LOG_PROB or LOSS"},
      {"metric token = vocab", [](auto& r) { r.mutable_metric()->set_token_a(300); }, kInvalid, "metric token 300 is outside the vocabulary [0, 300)"},
      {"negative metric token", [](auto& r) { r.mutable_metric()->set_token_b(-1); }, kInvalid, "metric token -1 is outside the vocabulary"},
      {"LOG_PROB token past the vocabulary", [](auto& r) { r.mutable_metric()->set_kind(pb::PatchingMetric::LOG_PROB); r.mutable_metric()->set_token_a(1000); }, kInvalid, "metric token 1000"},
      {"resid_mid of a parallel block", [](auto& r) { r.set_model("pythia"); r.set_kind(pb::SWEEP_RESID_MID); }, kInvalid, "this model has no hook_resid_mid (its attention and MLP run in parallel)"},
      {"negative max_rows_per_pass", [](auto& r) { r.set_max_rows_per_pass(-1); }, kInvalid, "max_rows_per_pass is -1; it must be >= 0 (0 = the server's choice)"},
      {"over the batch limit", [](auto& r) { for (int b = 0; b < 8; ++b) { AddRow(r.mutable_clean(), {1, 2, 3}); AddRow(r.mutable_corrupted(), {1, 2, 3}); } }, kExhausted, "clean: the batch has 9 rows; this server allows 8 (--max_batch)"},
      {"over the cell limit",
       [](auto& r) {
         r.set_kind(pb::SWEEP_HEAD_OUT_BY_POS);  // 2 layers x 12 positions x 4 heads
         r.clear_clean();
         r.clear_corrupted();
         AddRow(r.mutable_clean(), {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
         AddRow(r.mutable_corrupted(), {12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1});
       },
       kExhausted, "the sweep patches 96 cells (SWEEP_HEAD_OUT_BY_POS over 12 positions); this server allows 64 (--max_sweep_cells)"},
      {"exact neurons over the cell limit", [](auto& r) { r.set_kind(pb::SWEEP_MLP_POST_ALL_POS); }, kExhausted, "the sweep patches 512 cells (SWEEP_MLP_POST_ALL_POS over 3 positions)"},
      {"unknown method enum", [](auto& r) { r.set_method(static_cast<pb::PatchingMethod>(5)); }, kInvalid, "method 5 is unknown; use PATCHING_EXACT or PATCHING_ATTRIBUTION"},
      {"attribution on a parallel block's resid_mid", [](auto& r) { r.set_model("pythia"); r.set_kind(pb::SWEEP_RESID_MID); r.set_method(pb::PATCHING_ATTRIBUTION); }, kInvalid, "this model has no hook_resid_mid (its attention and MLP run in parallel)"},
      {"sae features by the exact method", [](auto& r) { r.set_kind(pb::SWEEP_SAE_FEATURES); r.set_sae("res1_standard"); }, kInvalid, "SWEEP_SAE_FEATURES is estimated by attribution patching only"},
      {"sae features of an unknown SAE", [](auto& r) { r.set_kind(pb::SWEEP_SAE_FEATURES); r.set_method(pb::PATCHING_ATTRIBUTION); r.set_sae("nope"); }, kNotFound, "nope"},
      {"sae features of another model's SAE", [](auto& r) { r.set_kind(pb::SWEEP_SAE_FEATURES); r.set_method(pb::PATCHING_ATTRIBUTION); r.set_sae("on_llama"); }, kInvalid, R"(SAE "on_llama" reads model "llama", not this one)"},
      {"an SAE named for another kind", [](auto& r) { r.set_sae("res1_standard"); }, kInvalid, "sae names the SAE of a SWEEP_SAE_FEATURES sweep"},
  };
  Check<pb::PatchingSweepRequest>("PatchingSweep", GoodSweep, Call(&pb::Glassbox::Stub::PatchingSweep), cases);
}

TEST_F(BadRequestCorpusTest, LogitLens) {
  auto good = [] {
    pb::LogitLensRequest r;
    r.set_model("gpt2");
    AddRow(r.mutable_inputs(), {1, 2, 3});
    r.set_top_k(3);
    return r;
  };
  const std::vector<Case<pb::LogitLensRequest>> cases = {
      {"unknown model", [](auto& r) { r.set_model("nope"); }, kNotFound, R"(no model named "nope")"},
      {"no inputs", [](auto& r) { r.clear_inputs(); }, kInvalid, "inputs: give exactly one of texts or token_ids"},
      {"token past the vocabulary", [](auto& r) { r.mutable_inputs()->mutable_token_ids(0)->add_ids(300); }, kInvalid, "token id 300 is outside the vocabulary [0, 300)"},
      {"empty row", [](auto& r) { r.mutable_inputs()->mutable_token_ids(0)->clear_ids(); }, kInvalid, "inputs row 0 has no tokens"},
      {"top_k past the vocabulary", [](auto& r) { r.set_top_k(301); }, kInvalid, "top_k is 301; it must be in [1, 300] (0 = 5)"},
      {"negative top_k", [](auto& r) { r.set_top_k(-2); }, kInvalid, "top_k is -2; it must be in [1, 300] (0 = 5)"},
      {"target token = vocab", [](auto& r) { r.add_target_tokens(300); }, kInvalid, "target token 300 is outside the vocabulary [0, 300)"},
      {"negative target token", [](auto& r) { r.add_target_tokens(-7); }, kInvalid, "target token -7 is outside the vocabulary"},
      {"response over the byte limit", [](auto& r) { r.set_top_k(300); }, kExhausted, "the logit lens would take 21600 bytes; this server allows 16384 (--max_response_bytes)"},
  };
  Check<pb::LogitLensRequest>("LogitLens", good, Call(&pb::Glassbox::Stub::LogitLens), cases);
}

TEST_F(BadRequestCorpusTest, Gradients) {
  auto good = [] {
    pb::GradientsRequest r;
    r.set_model("gpt2");
    AddRow(r.mutable_inputs(), {1, 2, 3});
    AddRow(r.mutable_inputs(), {4, 5, 6});
    r.mutable_metric()->set_token_a(5);
    r.mutable_metric()->set_token_b(6);
    r.add_hooks("blocks.0.hook_resid_pre");
    return r;
  };
  const std::vector<Case<pb::GradientsRequest>> cases = {
      {"unknown model", [](auto& r) { r.set_model("nope"); }, kNotFound, R"(no model named "nope")"},
      {"no inputs", [](auto& r) { r.clear_inputs(); }, kInvalid, "inputs: give exactly one of texts or token_ids"},
      {"token past the vocabulary", [](auto& r) { r.mutable_inputs()->mutable_token_ids(0)->set_ids(1, 300); }, kInvalid, "token id 300 is outside the vocabulary [0, 300)"},
      {"position past the shorter of ragged rows", [](auto& r) { AddRow(r.mutable_inputs(), {1, 2}); r.mutable_metric()->set_position(2); }, kInvalid, "the metric's position 2 is outside rows of 2 tokens (row 2)"},
      {"unknown metric kind", [](auto& r) { r.mutable_metric()->set_kind(static_cast<pb::GradientMetric::Kind>(7)); }, kInvalid, "metric.kind 7 is unknown; use LOGIT_DIFF, LOGIT, LOG_PROB, LOSS, DIRECTION or SAE_FEATURE"},
      {"a direction metric without a hook", [](auto& r) { r.mutable_metric()->set_kind(pb::GradientMetric::DIRECTION); }, kInvalid, "a DIRECTION metric needs metric.hook"},
      {"a direction of the wrong size", [](auto& r) { r.mutable_metric()->set_kind(pb::GradientMetric::DIRECTION); r.mutable_metric()->set_hook("blocks.0.hook_resid_post"); r.mutable_metric()->add_direction(1); }, kInvalid, "the metric's direction has 1 values; blocks.0.hook_resid_post has 64 at one position"},
      {"a direction at a pattern", [](auto& r) { r.mutable_metric()->set_kind(pb::GradientMetric::DIRECTION); r.mutable_metric()->set_hook("blocks.0.attn.hook_pattern"); }, kInvalid, "blocks.0.attn.hook_pattern is not one"},
      {"an unknown SAE", [](auto& r) { r.mutable_metric()->set_kind(pb::GradientMetric::SAE_FEATURE); r.mutable_metric()->set_sae("nope"); }, kNotFound, "nope"},
      {"an edit of an unknown hook", [](auto& r) { auto* e = r.add_interventions(); e->set_hook("blocks.9.hook_resid_pre"); e->set_kind(pb::INTERVENTION_ZERO); }, kInvalid, R"(interventions[0] "blocks.9.hook_resid_pre")"},
      {"a splice of another model's SAE", [](auto& r) { r.add_sae_splices()->set_sae("on_llama"); }, kInvalid, "on_llama"},
      {"an SAE feature of another model's SAE", [](auto& r) { r.mutable_metric()->set_kind(pb::GradientMetric::SAE_FEATURE); r.mutable_metric()->set_sae("on_llama"); }, kInvalid, R"(SAE "on_llama" reads model "llama", not this one)"},
      {"an SAE feature past d_sae", [](auto& r) { r.mutable_metric()->set_kind(pb::GradientMetric::SAE_FEATURE); r.mutable_metric()->set_sae("res1_standard"); r.mutable_metric()->set_feature(128); }, kInvalid, R"(metric.feature 128 is outside SAE "res1_standard"'s [0, 128))"},
      {"position past the row", [](auto& r) { r.mutable_metric()->set_position(3); }, kInvalid, "the metric's position 3 is outside rows of 3 tokens"},
      {"position before the row", [](auto& r) { r.mutable_metric()->set_position(-4); }, kInvalid, "the metric's position -4 is outside rows of 3 tokens"},
      {"INT32_MIN position", [](auto& r) { r.mutable_metric()->set_position(kIntMin); }, kInvalid, "the metric's position -2147483648 is outside"},
      {"token = vocab", [](auto& r) { r.mutable_metric()->set_token_a(300); }, kInvalid, "the metric's token 300 is outside the vocabulary [0, 300)"},
      {"negative token", [](auto& r) { r.mutable_metric()->set_token_b(-1); }, kInvalid, "the metric's token -1 is outside the vocabulary [0, 300)"},
      {"no hooks", [](auto& r) { r.clear_hooks(); }, kInvalid, "name the hooks whose gradients you want (names, or globs such as blocks.*.hook_resid_pre; a splice's points as <hook>.hook_sae_acts_post)"},
      {"unknown hook", [](auto& r) { r.add_hooks("blocks.9.hook_resid_pre"); }, kInvalid, R"(unknown hook point "blocks.9.hook_resid_pre")"},
      {"glob that matches nothing", [](auto& r) { r.add_hooks("blocks.*.hook_nothing"); }, kInvalid, "blocks.*.hook_nothing"},
      {"an SAE point without a splice", [](auto& r) { r.add_hooks("blocks.1.hook_resid_pre.hook_sae_acts_post"); }, kInvalid, R"(hook "blocks.1.hook_resid_pre.hook_sae_acts_post" matches no hook_sae_* point of this request's splices (there are none; add sae_splices))"},
      {"an SAE point of another hook", [](auto& r) { r.add_sae_splices()->set_sae("res1_standard"); r.add_hooks("blocks.0.hook_resid_pre.hook_sae_acts_post"); }, kInvalid, "matches no hook_sae_* point of this request's splices (1 spliced)"},
      {"an SAE error point without the error term", [](auto& r) { r.add_sae_splices()->set_sae("res1_standard"); r.add_hooks("blocks.1.hook_resid_pre.hook_sae_error"); }, kInvalid, "hook_sae_error only with use_error_term"},
      {"response over the byte limit", [](auto& r) { r.clear_inputs(); AddRowOf(r.mutable_inputs(), 32); r.add_hooks("blocks.*.attn.hook_result"); }, kExhausted, "the gradients would take 73728 bytes; this server allows 16384 (--max_response_bytes): ask for fewer hooks or fewer tokens"},
  };
  Check<pb::GradientsRequest>("Gradients", good, Call(&pb::Glassbox::Stub::Gradients), cases);
}

TEST_F(BadRequestCorpusTest, IntegratedGradients) {
  auto good = [] {
    pb::IntegratedGradientsRequest r;
    r.set_model("gpt2");
    AddRow(r.mutable_inputs(), {1, 2, 3});
    r.mutable_metric()->set_token_a(5);
    r.mutable_metric()->set_token_b(6);
    r.set_hook("hook_embed");
    r.set_steps(4);
    return r;
  };
  auto baseline = [](pb::IntegratedGradientsRequest& r, std::vector<int64_t> shape, int values) {
    r.mutable_baseline()->mutable_shape()->Add(shape.begin(), shape.end());
    for (int i = 0; i < values; ++i) r.mutable_baseline()->add_values(0.5f);
  };
  const std::vector<Case<pb::IntegratedGradientsRequest>> cases = {
      {"unknown model", [](auto& r) { r.set_model("nope"); }, kNotFound, R"(no model named "nope")"},
      {"no inputs", [](auto& r) { r.clear_inputs(); }, kInvalid, "inputs: give exactly one of texts or token_ids"},
      {"loss on a one-token row among longer ones", [](auto& r) { AddRow(r.mutable_inputs(), {1}); r.mutable_metric()->set_kind(pb::GradientMetric::LOSS); }, kInvalid, "the loss metric needs rows of at least 2 tokens (each position predicts the next) (row 1)"},
      {"unknown metric kind", [](auto& r) { r.mutable_metric()->set_kind(static_cast<pb::GradientMetric::Kind>(9)); }, kInvalid, "metric.kind 9 is unknown"},
      {"metric token past the vocabulary", [](auto& r) { r.mutable_metric()->set_token_a(300); }, kInvalid, "the metric's token 300 is outside the vocabulary [0, 300)"},
      {"loss on one token", [](auto& r) { r.clear_inputs(); AddRow(r.mutable_inputs(), {1}); r.mutable_metric()->set_kind(pb::GradientMetric::LOSS); }, kInvalid, "the loss metric needs rows of at least 2 tokens"},
      {"no hook", [](auto& r) { r.clear_hook(); }, kInvalid, R"(unknown hook point "")"},
      {"unknown hook", [](auto& r) { r.set_hook("blocks.7.hook_resid_pre"); }, kInvalid, R"(unknown hook point "blocks.7.hook_resid_pre")"},
      {"a glob", [](auto& r) { r.set_hook("blocks.*.hook_resid_pre"); }, kInvalid, R"(unknown hook point "blocks.*.hook_resid_pre")"},
      {"a hook that cannot be edited", [](auto& r) { r.set_hook("blocks.0.ln1.hook_scale"); }, kInvalid, "blocks.0.ln1.hook_scale can be captured but not edited, so no path can run through it"},
      {"unknown method", [](auto& r) { r.set_method(static_cast<pb::IntegratedGradientsRequest::Method>(4)); }, kInvalid, "method 4 is unknown; use INTEGRATED_GRADIENTS or INPUT_X_GRADIENT"},
      {"negative steps", [](auto& r) { r.set_steps(-1); }, kInvalid, "steps is -1; it must be in [1, 1024] (0 = 20)"},
      {"too many steps", [](auto& r) { r.set_steps(1025); }, kInvalid, "steps is 1025; it must be in [1, 1024]"},
      {"INT32_MIN steps", [](auto& r) { r.set_steps(kIntMin); }, kInvalid, "steps is -2147483648"},
      {"baseline of the wrong width", [&](auto& r) { baseline(r, {3}, 3); }, kInvalid, "the baseline has shape [3]; hook_embed takes [64] (its last axis, for every row and position) or its full shape [1,3,64]"},
      {"baseline shape without its values", [&](auto& r) { baseline(r, {64}, 10); }, kInvalid, "baseline: shape [64] does not hold its 10 values"},
      {"baseline values without a shape", [&](auto& r) { baseline(r, {}, 64); }, kInvalid, "baseline: shape [] does not hold its 64 values"},
      {"baseline with a zero dimension", [&](auto& r) { baseline(r, {0, 64}, 0); }, kInvalid, "has a dimension outside [1, 2^31]"},
      {"baseline with a huge shape", [&](auto& r) { baseline(r, {1LL << 40, 1LL << 40}, 1); }, kInvalid, "has a dimension outside [1, 2^31]"},
      {"baseline of indices", [](auto& r) { r.mutable_baseline()->add_shape(1); r.mutable_baseline()->add_indices(3); }, kInvalid, "baseline takes float values, not indices"},
      {"attributions over the byte limit", [](auto& r) { r.clear_inputs(); AddRowOf(r.mutable_inputs(), 32); r.set_hook("blocks.0.mlp.hook_post"); }, kExhausted, "the attributions would take 32768 bytes; this server allows 16384 (--max_response_bytes): send fewer tokens"},
  };
  Check<pb::IntegratedGradientsRequest>("IntegratedGradients", good,
                                        Call(&pb::Glassbox::Stub::IntegratedGradients), cases);
}

TEST_F(BadRequestCorpusTest, Jacobian) {
  auto good = [] {
    pb::JacobianRequest r;
    r.set_model("gpt2");
    AddRow(r.mutable_inputs(), {1, 2, 3});
    r.set_in_hook("blocks.0.ln1.hook_scale");  // [64, 1] per row: under the byte limit
    r.add_in_positions(1);
    r.set_out_hook("blocks.1.hook_resid_post");
    r.add_out_positions(-1);
    return r;
  };
  const std::vector<Case<pb::JacobianRequest>> cases = {
      {"unknown model", [](auto& r) { r.set_model("nope"); }, kNotFound, R"(no model named "nope")"},
      {"no inputs", [](auto& r) { r.clear_inputs(); }, kInvalid, "inputs: give exactly one of texts or token_ids"},
      {"position past the shorter of ragged rows", [](auto& r) { AddRow(r.mutable_inputs(), {1}); }, kInvalid, "in position 1 is outside rows of 1 tokens"},
      {"unknown input hook", [](auto& r) { r.set_in_hook("blocks.5.hook_resid_pre"); }, kInvalid, R"(unknown hook point "blocks.5.hook_resid_pre")"},
      {"no output hook", [](auto& r) { r.clear_out_hook(); }, kInvalid, R"(unknown hook point "")"},
      {"output not a token activation", [](auto& r) { r.set_out_hook("blocks.1.attn.hook_pattern"); }, kInvalid, "a Jacobian's output is a token activation (the residual stream, attn_out, mlp_out, hook_q/k/v/z, the MLP's pre/post, the embeddings); blocks.1.attn.hook_pattern is not one"},
      {"input after the output", [](auto& r) { r.set_in_hook("blocks.1.mlp.hook_post"); r.set_out_hook("blocks.1.hook_resid_mid"); }, kInvalid, "blocks.1.mlp.hook_post comes after blocks.1.hook_resid_mid in the forward pass"},
      {"input an attention pattern", [](auto& r) { r.set_in_hook("blocks.0.attn.hook_pattern"); }, kInvalid, "a Jacobian's input is a per-token activation at or below its output; blocks.0.attn.hook_pattern is not one"},
      {"no input positions", [](auto& r) { r.clear_in_positions(); }, kInvalid, "in_positions has 0 entries for 1 rows: give one, or one per row"},
      {"too many output positions", [](auto& r) { r.add_out_positions(0); r.add_out_positions(1); }, kInvalid, "out_positions has 3 entries for 1 rows"},
      {"input position past the row", [](auto& r) { r.set_in_positions(0, 3); }, kInvalid, "in position 3 is outside rows of 3 tokens"},
      {"INT32_MIN output position", [](auto& r) { r.set_out_positions(0, kIntMin); }, kInvalid, "out position -2147483648 is outside rows of 3 tokens"},
      {"response over the byte limit", [](auto& r) { r.set_in_hook("blocks.0.mlp.hook_post"); r.set_out_hook("blocks.1.hook_resid_post"); }, kExhausted, "the Jacobian [1, 64, 256] would take 66816 bytes; this server allows 16384 (--max_response_bytes): send fewer rows"},
  };
  Check<pb::JacobianRequest>("Jacobian", good, Call(&pb::Glassbox::Stub::Jacobian), cases);
}

TEST_F(BadRequestCorpusTest, DirectLogitAttribution) {
  auto good = [] {
    pb::DirectLogitAttributionRequest r;
    r.set_model("gpt2");
    AddRow(r.mutable_inputs(), {1, 2, 3});
    r.set_token(5);
    return r;
  };
  const std::vector<Case<pb::DirectLogitAttributionRequest>> cases = {
      {"unknown model", [](auto& r) { r.set_model("nope"); }, kNotFound, R"(no model named "nope")"},
      {"no inputs", [](auto& r) { r.clear_inputs(); }, kInvalid, "inputs: give exactly one of texts or token_ids"},
      {"input token past the vocabulary", [](auto& r) { r.mutable_inputs()->mutable_token_ids(0)->set_ids(0, 999); }, kInvalid, "inputs row 0 position 0: token id 999"},
      {"token = vocab", [](auto& r) { r.set_token(300); }, kInvalid, "token 300 is outside the vocabulary [0, 300)"},
      {"negative token", [](auto& r) { r.set_token(-1); }, kInvalid, "token -1 is outside the vocabulary"},
      {"minus_token past the vocabulary", [](auto& r) { r.set_minus_token(300); }, kInvalid, "minus_token 300 is outside the vocabulary [0, 300)"},
      {"position past the row", [](auto& r) { r.set_position(3); }, kInvalid, "position 3 is outside row 0 (3 tokens)"},
      {"negative position past the row", [](auto& r) { r.set_position(-4); }, kInvalid, "position -4 is outside row 0 (3 tokens)"},
      {"position past a shorter row", [](auto& r) { AddRow(r.mutable_inputs(), {1}); r.set_position(1); }, kInvalid, "position 1 is outside row 1 (1 tokens)"},
  };
  Check<pb::DirectLogitAttributionRequest>("DirectLogitAttribution", good,
                                           Call(&pb::Glassbox::Stub::DirectLogitAttribution), cases);
}

TEST_F(BadRequestCorpusTest, AttentionNorms) {
  auto good = [] {
    pb::AttentionNormsRequest r;
    r.set_model("gpt2");
    AddRow(r.mutable_inputs(), {1, 2, 3});
    return r;
  };
  const std::vector<Case<pb::AttentionNormsRequest>> cases = {
      {"unknown model", [](auto& r) { r.set_model("nope"); }, kNotFound, R"(no model named "nope")"},
      {"no inputs", [](auto& r) { r.clear_inputs(); }, kInvalid, "inputs: give exactly one of texts or token_ids"},
      {"token past the vocabulary", [](auto& r) { r.mutable_inputs()->mutable_token_ids(0)->add_ids(301); }, kInvalid, "token id 301 is outside the vocabulary"},
      {"layer = n_layers", [](auto& r) { r.add_layers(2); }, kInvalid, "layer 2 is outside [0, 2)"},
      {"negative layer", [](auto& r) { r.add_layers(0); r.add_layers(-1); }, kInvalid, "layer -1 is outside [0, 2)"},
      {"response over the byte limit", [](auto& r) { r.clear_inputs(); AddRowOf(r.mutable_inputs(), 16); }, kExhausted, "the attention norms would take 18432 bytes; this server allows 16384 (--max_response_bytes): ask for fewer layers"},
  };
  Check<pb::AttentionNormsRequest>("AttentionNorms", good, Call(&pb::Glassbox::Stub::AttentionNorms), cases);
}

// ---- SAEs ----

TEST_F(BadRequestCorpusTest, ListSaes) {
  auto good = [] {
    pb::ListSaesRequest r;
    r.set_model("gpt2");
    return r;
  };
  const std::vector<Case<pb::ListSaesRequest>> cases = {
      {"unknown model", [](auto& r) { r.set_model("nope"); }, kNotFound, R"(no model named "nope"; this server has: demo, gpt2, llama, pythia)"},
      {"model names are case-sensitive", [](auto& r) { r.set_model("GPT2"); }, kNotFound, R"(no model named "GPT2")"},
  };
  Check<pb::ListSaesRequest>("ListSaes", good, Call(&pb::Glassbox::Stub::ListSaes), cases);
}

TEST_F(BadRequestCorpusTest, SaeEncode) {
  auto good = [] {
    pb::SaeEncodeRequest r;
    r.set_sae("res1_standard");
    AddRow(r.mutable_inputs(), {1, 2, 3});
    return r;
  };
  const std::vector<Case<pb::SaeEncodeRequest>> cases = {
      {"unknown SAE", [](auto& r) { r.set_sae("nope"); }, kNotFound, R"(no SAE named "nope"; this server has: ln_res1, on_llama, res1_standard, z0_jumprelu)"},
      {"empty SAE name", [](auto& r) { r.set_sae(""); }, kNotFound, R"(no SAE named "")"},
      {"model other than the SAE's", [](auto& r) { r.set_model("llama"); }, kInvalid, R"(SAE "res1_standard" is attached to model "gpt2", not "llama")"},
      {"negative top_k", [](auto& r) { r.set_top_k(-1); }, kInvalid, "top_k must be in [0, 128] (0 = every nonzero feature), got -1"},
      {"top_k past d_sae", [](auto& r) { r.set_top_k(129); }, kInvalid, "top_k must be in [0, 128] (0 = every nonzero feature), got 129"},
      {"no inputs", [](auto& r) { r.clear_inputs(); }, kInvalid, "inputs: give exactly one of texts or token_ids"},
      {"token past the vocabulary", [](auto& r) { r.mutable_inputs()->mutable_token_ids(0)->add_ids(300); }, kInvalid, "token id 300 is outside the vocabulary [0, 300)"},
      {"text without a tokenizer", [](auto& r) { r.mutable_inputs()->clear_token_ids(); r.mutable_inputs()->add_texts("x"); }, kPrecondition, R"(model "gpt2" has no tokenizer)"},
      {"over the batch limit", [](auto& r) { for (int b = 0; b < 8; ++b) AddRow(r.mutable_inputs(), {1}); }, kExhausted, "the batch has 9 rows; this server allows 8 (--max_batch)"},
      {"dense over the byte limit", [](auto& r) { r.clear_inputs(); for (int b = 0; b < 4; ++b) AddRowOf(r.mutable_inputs(), 10); r.set_dense(true); }, kExhausted, "dense activations would take 20480 bytes; this server allows 16384 (--max_response_bytes): ask for sparse ones"},
  };
  Check<pb::SaeEncodeRequest>("SaeEncode", good, Call(&pb::Glassbox::Stub::SaeEncode), cases);
}

TEST_F(BadRequestCorpusTest, SaeDecode) {
  // Two rows: feature 3 at 1.5, then features 0 and 127.
  auto good = [] {
    pb::SaeDecodeRequest r;
    r.set_sae("res1_standard");
    for (int64_t o : {0, 1, 3}) r.add_offsets(o);
    for (int32_t i : {3, 0, 127}) r.add_indices(i);
    for (float v : {1.5f, 0.25f, 2.0f}) r.add_values(v);
    return r;
  };
  const std::vector<Case<pb::SaeDecodeRequest>> cases = {
      {"unknown SAE", [](auto& r) { r.set_sae("nope"); }, kNotFound, R"(no SAE named "nope")"},
      {"input-dependent normalisation", [](auto& r) { r.set_sae("ln_res1"); }, kPrecondition, R"(SAE "ln_res1" normalises with layer_norm, which needs the input's statistics to decode)"},
      {"neither sparse nor dense", [](auto& r) { r.clear_offsets(); r.clear_indices(); r.clear_values(); }, kInvalid, "give the activations either sparse (offsets, indices, values) or dense"},
      {"both sparse and dense", [](auto& r) { for (int i = 0; i < 128; ++i) r.add_dense(0.5f); }, kInvalid, "either sparse (offsets, indices, values) or dense"},
      {"dense not a multiple of d_sae", [](auto& r) { r.clear_offsets(); r.clear_indices(); r.clear_values(); for (int i = 0; i < 130; ++i) r.add_dense(1); }, kInvalid, "dense has 130 values, not a multiple of d_sae = 128"},
      {"NaN dense value", [](auto& r) { r.clear_offsets(); r.clear_indices(); r.clear_values(); for (int i = 0; i < 128; ++i) r.add_dense(i == 5 ? kNan : 1); }, kInvalid, "dense[5] is not finite"},
      {"more values than indices", [](auto& r) { r.add_values(1); }, kInvalid, "sparse activations need as many values as indices, offsets starting at 0 and ending at the number of indices"},
      {"offsets not starting at 0", [](auto& r) { r.set_offsets(0, 1); }, kInvalid, "offsets starting at 0"},
      {"offsets not ending at nnz", [](auto& r) { r.set_offsets(2, 2); }, kInvalid, "ending at the number of indices"},
      {"decreasing offsets", [](auto& r) { r.set_offsets(1, 4); r.add_offsets(3); }, kInvalid, "offsets must not decrease (offsets[2])"},
      {"feature index = d_sae", [](auto& r) { r.set_indices(2, 128); }, kInvalid, "feature index 128 is outside [0, 128)"},
      {"negative feature index", [](auto& r) { r.set_indices(0, -3); }, kInvalid, "feature index -3 is outside [0, 128)"},
      {"NaN sparse value", [](auto& r) { r.set_values(1, kNan); }, kInvalid, "values[1] is not finite"},
      {"infinite sparse value", [](auto& r) { r.set_values(0, -kInf); }, kInvalid, "values[0] is not finite"},
      {"too many rows for the byte limit", [](auto& r) { for (int i = 0; i < 100; ++i) r.add_offsets(3); }, kExhausted, "decoding 102 rows would take 26112 bytes; this server allows 16384 (--max_response_bytes)"},
  };
  Check<pb::SaeDecodeRequest>("SaeDecode", good, Call(&pb::Glassbox::Stub::SaeDecode), cases);
}

// ---- dataset scans ----

pb::NeuronTargets* AddNeuronTarget(pb::ScanTarget* t, const std::string& hook,
                                   std::initializer_list<int32_t> indices) {
  auto* n = t->mutable_neurons();
  n->set_hook(hook);
  for (int32_t i : indices) n->add_indices(i);
  return n;
}

pb::DirectionTarget* AddDirectionTarget(pb::ScanTarget* t, const std::string& hook, int width) {
  auto* d = t->mutable_direction();
  d->set_hook(hook);
  for (int i = 0; i < width; ++i) d->add_vector(1.0f / (1 + i));
  return d;
}

pb::HeadTargets* AddHeadTarget(pb::ScanTarget* t, int32_t layer, pb::HeadTargets::Measure measure,
                              int32_t key, std::initializer_list<int32_t> heads) {
  auto* h = t->mutable_heads();
  h->set_layer(layer);
  h->set_measure(measure);
  h->set_key(key);
  for (int32_t i : heads) h->add_heads(i);
  return h;
}

pb::SaeFeatureTargets* AddSaeTarget(pb::ScanTarget* t, const std::string& sae,
                                    std::initializer_list<int32_t> features) {
  auto* f = t->mutable_sae_features();
  f->set_sae(sae);
  for (int32_t i : features) f->add_features(i);
  return f;
}

TEST_F(BadRequestCorpusTest, StartScan) {
  Expect("StartScan", "a server without scan jobs", Call(&pb::Glassbox::Stub::StartScan)(GoodScan()),
         kUnimplemented, "this server runs no scan jobs");
  Scans();
  const std::vector<Case<pb::StartScanRequest>> cases = {
      // Model and targets.
      {"unknown model", [](auto& r) { r.set_model("nope"); }, kNotFound, R"(no model named "nope"; this server has: demo, gpt2)"},
      {"no targets", [](auto& r) { r.clear_targets(); }, kInvalid, "a scan needs targets: neurons (a hook and indices), SAE features, directions or attention heads"},
      {"target without a kind", [](auto& r) { r.add_targets(); }, kInvalid, "targets[1] sets no kind"},
      {"unknown hook", [](auto& r) { AddNeuronTarget(r.add_targets(), "blocks.0.mlp.hook_postt", {0}); }, kInvalid, R"(unknown hook point "blocks.0.mlp.hook_postt")"},
      {"layer past the model", [](auto& r) { AddNeuronTarget(r.add_targets(), "blocks.4.mlp.hook_post", {0}); }, kInvalid, R"(unknown hook point "blocks.4.mlp.hook_post")"},
      {"neuron = d_mlp", [](auto& r) { AddNeuronTarget(r.add_targets(), "blocks.1.mlp.hook_post", {512}); }, kInvalid, "target index 512 at blocks.1.mlp.hook_post is out of range [0, 512)"},
      {"negative neuron", [](auto& r) { r.mutable_targets(0)->mutable_neurons()->set_indices(0, -1); }, kInvalid, "target index -1 at blocks.0.mlp.hook_post is out of range [0, 512)"},
      {"neuron listed twice", [](auto& r) { r.mutable_targets(0)->mutable_neurons()->add_indices(1); }, kInvalid, "target index 1 at blocks.0.mlp.hook_post is listed twice"},
      {"hook without an activation per token", [](auto& r) { AddNeuronTarget(r.add_targets(), "blocks.0.attn.hook_pattern", {0}); }, kInvalid, "blocks.0.attn.hook_pattern has no activation per token ([batch, pos, ...])"},
      {"direction of the wrong width", [](auto& r) { AddDirectionTarget(r.add_targets(), "blocks.0.hook_resid_post", 127); }, kInvalid, "directions at blocks.0.hook_resid_post must be f32 [n, 128]"},
      {"empty direction", [](auto& r) { AddDirectionTarget(r.add_targets(), "blocks.2.hook_resid_mid", 0); }, kInvalid, "directions at blocks.2.hook_resid_mid must be f32 [n, 128]"},
      {"heads of a layer past the model", [](auto& r) { AddHeadTarget(r.add_targets(), 4, pb::HeadTargets::OUTPUT_NORM, 0, {}); }, kInvalid, "targets[1].heads.layer 4 is out of range [0, 4)"},
      {"heads of a negative layer", [](auto& r) { AddHeadTarget(r.add_targets(), -1, pb::HeadTargets::OUTPUT_NORM, 0, {0}); }, kInvalid, "targets[1].heads.layer -1 is out of range [0, 4)"},
      {"head = n_heads", [](auto& r) { AddHeadTarget(r.add_targets(), 1, pb::HeadTargets::OUTPUT_NORM, 0, {4}); }, kInvalid, "target index 4 at blocks.1.attn.hook_result is out of range [0, 4)"},
      {"head listed twice", [](auto& r) { AddHeadTarget(r.add_targets(), 1, pb::HeadTargets::ATTENTION_TO_POSITION, 0, {2, 2}); }, kInvalid, "target index 2 at blocks.1.attn.hook_pattern is listed twice"},
      {"negative attention key", [](auto& r) { AddHeadTarget(r.add_targets(), 0, pb::HeadTargets::ATTENTION_TO_OFFSET, -1, {}); }, kInvalid, "targets[1].heads.key is -1; it must be >= 0"},
      {"attention key past the context", [](auto& r) { AddHeadTarget(r.add_targets(), 0, pb::HeadTargets::ATTENTION_TO_POSITION, 8, {}); }, kInvalid, "the attention target's key position 8 is outside a context of 8 tokens"},
      {"attention offset past the context", [](auto& r) { AddHeadTarget(r.add_targets(), 0, pb::HeadTargets::ATTENTION_TO_OFFSET, 9, {}); }, kInvalid, "the attention target's key offset 9 is outside a context of 8 tokens"},
      {"unknown head measure", [](auto& r) { AddHeadTarget(r.add_targets(), 0, static_cast<pb::HeadTargets::Measure>(7), 0, {}); }, kInvalid, "targets[1].heads.measure 7 is unknown; use OUTPUT_NORM, ATTENTION_TO_POSITION or ATTENTION_TO_OFFSET"},
      {"unknown SAE", [](auto& r) { AddSaeTarget(r.add_targets(), "nope", {0}); }, kNotFound, R"(no SAE named "nope"; this server has: res1_standard)"},
      {"SAE of another model", [](auto& r) { AddSaeTarget(r.add_targets(), "res1_standard", {0}); }, kInvalid, R"(SAE "res1_standard" is attached to model "gpt2", not "demo")"},

      // Options.
      {"context_length past n_ctx", [](auto& r) { r.set_context_length(129); }, kInvalid, "context_length 129 must be in [1, 128] (n_ctx)"},
      {"negative context_length", [](auto& r) { r.set_context_length(-3); }, kInvalid, "context_length -3 must be in [1, 128] (n_ctx)"},
      {"a context of BOS alone", [](auto& r) { r.set_context_length(1); }, kInvalid, "the first counted position 1 leaves no position of a context of 1 tokens to count"},
      {"top_k past 1000", [](auto& r) { r.set_top_k(1001); }, kInvalid, "top_k is 1001; it must be in [0, 1000]"},
      {"random_k below -1", [](auto& r) { r.set_random_k(-2); }, kInvalid, "random_k is -2; it must be in [0, 1000]"},
      {"quantile_bins past 100", [](auto& r) { r.set_quantile_bins(101); }, kInvalid, "quantile_bins is 101; it must be in [0, 100]"},
      {"per_quantile_k below -1", [](auto& r) { r.set_per_quantile_k(-2); }, kInvalid, "per_quantile_k is -2; it must be in [0, 1000]"},
      {"histogram_bins past 10000", [](auto& r) { r.set_histogram_bins(10001); }, kInvalid, "histogram_bins is 10001; it must be in [0, 10000]"},
      {"window_before below -1", [](auto& r) { r.set_window_before(-2); }, kInvalid, "window_before and window_after must be >= -1"},
      {"window_after below -1", [](auto& r) { r.set_window_after(kIntMin); }, kInvalid, "window_before and window_after must be >= -1"},
      {"logit_k past 1000", [](auto& r) { r.set_logit_k(1001); }, kInvalid, "logit_k must be in [-1, 1000] (0: 10, -1: none)"},
      {"logit_k below -1", [](auto& r) { r.set_logit_k(-2); }, kInvalid, "logit_k must be in [-1, 1000]"},
      {"negative batch_contexts", [](auto& r) { r.set_batch_contexts(-1); }, kInvalid, "batch_contexts must be >= 0 (0: chosen by the server)"},

      // The corpus.
      {"no corpus", [](auto& r) { r.clear_corpus(); }, kInvalid, "the corpus needs a path (under --corpus_dir) or documents"},
      {"missing corpus file", [](auto& r) { r.mutable_corpus()->set_path("missing.txt"); }, kNotFound, R"(no corpus file "missing.txt")"},
      {"corpus path with ..", [](auto& r) { r.mutable_corpus()->set_path("../outside.txt"); }, kInvalid, R"(corpus path "../outside.txt" may not contain "..")"},
      {"absolute corpus path", [](auto& r) { r.mutable_corpus()->set_path("/etc/passwd"); }, kInvalid, R"(corpus path "/etc/passwd" must be relative to the server's corpus directory)"},
      {"symlink out of the corpus directory", [](auto& r) { r.mutable_corpus()->set_path("link.txt"); }, kInvalid, R"(corpus path "link.txt" leads outside the corpus directory (through a symlink))"},
      {"unknown corpus format", [](auto& r) { r.mutable_corpus()->set_path("notes.md"); }, kInvalid, R"(corpus "notes.md": the corpus must be .jsonl (a JSON object per line), .txt (a document per line) or .npy (token ids))"},
      {"empty corpus file", [](auto& r) { r.mutable_corpus()->set_path("empty.txt"); }, kInvalid, R"(corpus "empty.txt" gives no whole context of 8 tokens: send more text or a shorter context_length)"},
      {"text too short for a context", [](auto& r) { r.mutable_corpus()->mutable_documents()->set_texts(0, "Hi"); }, kInvalid, "the uploaded corpus gives no whole context of 8 tokens"},
      {"token id = vocab", [](auto& r) { auto* s = r.mutable_corpus()->mutable_documents()->add_token_sequences(); s->add_ids(5); s->add_ids(1024); }, kInvalid, "documents.token_sequences[0]: token id 1024 is outside the vocabulary [0, 1024)"},
      {"negative token id", [](auto& r) { r.mutable_corpus()->mutable_documents()->add_token_sequences()->add_ids(-5); }, kInvalid, "documents.token_sequences[0]: token id -5 is outside the vocabulary"},
      {"negative max_contexts", [](auto& r) { r.mutable_corpus()->set_max_contexts(-1); }, kInvalid, "corpus.max_contexts must be >= 0"},
      {"model without BOS", [](auto& r) { r.set_model("gpt2"); }, kPrecondition, R"(model "gpt2" has no BOS token to open contexts with; set no_bos to scan raw token runs)"},
      {"text for a model without a tokenizer", [](auto& r) { r.set_model("gpt2"); r.set_no_bos(true); }, kPrecondition, "the model has no tokenizer: send the corpus as token ids (.npy or token_sequences)"},

      // Limits.
      {"records over the memory limit", [](auto& r) { r.mutable_targets(0)->mutable_neurons()->clear_indices(); }, kExhausted, "bytes of records for 512 targets; the server allows 1048576 (--scan_max_state_bytes)"},
  };
  Check<pb::StartScanRequest>("StartScan", GoodScan, CallScan(&pb::Glassbox::Stub::StartScan), cases);
  // A corpus file under --corpus_dir is a good request too.
  pb::StartScanRequest from_file = GoodScan();
  from_file.mutable_corpus()->set_path("docs.txt");
  ExpectServes("StartScan", "a corpus file", CallScan(&pb::Glassbox::Stub::StartScan)(from_file));
}

TEST_F(BadRequestCorpusTest, WatchJob) {
  pb::WatchJobRequest elsewhere;
  elsewhere.set_job_id("scan-000000000001");
  Expect("WatchJob", "a server without scan jobs", CallWatch(elsewhere, /*scans=*/false),
         kUnimplemented, "this server runs no scan jobs");
  Scans();
  auto good = [] {
    pb::WatchJobRequest r;
    r.set_job_id(finished_job_);
    return r;
  };
  const std::vector<Case<pb::WatchJobRequest>> cases = {
      {"unknown job", [](auto& r) { r.set_job_id("scan-000000000000"); }, kNotFound, R"(no job "scan-000000000000")"},
      {"empty job id", [](auto& r) { r.set_job_id(""); }, kNotFound, R"(no job "")"},
      {"job ids are case-sensitive", [](auto& r) { r.set_job_id(absl::AsciiStrToUpper(r.job_id())); }, kNotFound, "no job \"SCAN-"},
      {"job id with a trailing space", [](auto& r) { r.set_job_id(r.job_id() + " "); }, kNotFound, "no job \"scan-"},
  };
  Check<pb::WatchJobRequest>("WatchJob", good, [](const pb::WatchJobRequest& r) { return CallWatch(r); },
                             cases);
  // Watching the cancelled job ends with its state, OK.
  ExpectServes("WatchJob", "a cancelled job", CallWatch([] {
                 pb::WatchJobRequest r;
                 r.set_job_id(cancelled_job_);
                 return r;
               }()));
}

TEST_F(BadRequestCorpusTest, CancelJob) {
  pb::CancelJobRequest elsewhere;
  elsewhere.set_job_id("scan-000000000001");
  Expect("CancelJob", "a server without scan jobs", Call(&pb::Glassbox::Stub::CancelJob)(elsewhere),
         kUnimplemented, "this server runs no scan jobs");
  Scans();
  // Cancelling a job that has ended answers its info and changes nothing.
  auto good = [] {
    pb::CancelJobRequest r;
    r.set_job_id(finished_job_);
    return r;
  };
  const std::vector<Case<pb::CancelJobRequest>> cases = {
      {"unknown job", [](auto& r) { r.set_job_id("scan-000000000000"); }, kNotFound, R"(no job "scan-000000000000")"},
      {"empty job id", [](auto& r) { r.set_job_id(""); }, kNotFound, R"(no job "")"},
      {"job ids are case-sensitive", [](auto& r) { r.set_job_id(absl::AsciiStrToUpper(r.job_id())); }, kNotFound, "no job \"SCAN-"},
  };
  Check<pb::CancelJobRequest>("CancelJob", good, CallScan(&pb::Glassbox::Stub::CancelJob), cases);
  pb::GetScanResultsRequest results;
  results.set_job_id(finished_job_);
  ExpectServes("CancelJob", "cancelling a finished job (its results remain)",
               CallScan(&pb::Glassbox::Stub::GetScanResults)(results));
}

TEST_F(BadRequestCorpusTest, ListJobs) {
  Expect("ListJobs", "a server without scan jobs", Call(&pb::Glassbox::Stub::ListJobs)(pb::ListJobsRequest()),
         kUnimplemented, "this server runs no scan jobs");
  Scans();
  ExpectServes("ListJobs", "nothing (the good request)",
               CallScan(&pb::Glassbox::Stub::ListJobs)(pb::ListJobsRequest()));
}

TEST_F(BadRequestCorpusTest, GetScanResults) {
  pb::GetScanResultsRequest elsewhere;
  elsewhere.set_job_id("scan-000000000001");
  Expect("GetScanResults", "a server without scan jobs",
         Call(&pb::Glassbox::Stub::GetScanResults)(elsewhere), kUnimplemented,
         "this server runs no scan jobs");
  Scans();
  auto good = [] {
    pb::GetScanResultsRequest r;
    r.set_job_id(finished_job_);
    return r;
  };
  const std::vector<Case<pb::GetScanResultsRequest>> cases = {
      {"unknown job", [](auto& r) { r.set_job_id("scan-000000000000"); }, kNotFound, R"(no job "scan-000000000000")"},
      {"empty job id", [](auto& r) { r.set_job_id(""); }, kNotFound, R"(no job "")"},
      {"a cancelled job", [](auto& r) { r.set_job_id(cancelled_job_); }, kPrecondition, "job \"" + cancelled_job_ + "\" is JOB_CANCELLED; results exist once it has succeeded (WatchJob waits for it)"},
      {"negative target_offset", [](auto& r) { r.set_target_offset(-1); }, kInvalid, "target_offset and target_limit must be >= 0"},
      {"negative target_limit", [](auto& r) { r.set_target_limit(-5); }, kInvalid, "target_offset and target_limit must be >= 0"},
      {"page over the limit", [](auto& r) { r.set_target_limit(1025); }, kInvalid, "target_limit 1025 is above 1024 per page; read the results in pages"},
  };
  Check<pb::GetScanResultsRequest>("GetScanResults", good, CallScan(&pb::Glassbox::Stub::GetScanResults),
                                   cases);
  // An offset past the last target is an empty page, not an error.
  pb::GetScanResultsRequest past = good();
  past.set_target_offset(100);
  ExpectServes("GetScanResults", "an offset past the targets",
               CallScan(&pb::Glassbox::Stub::GetScanResults)(past));
}

// ---- scoring explanations ----

// A good ScoreExplanation: neuron 5 of the demo model's blocks.1.mlp.hook_post over two excerpts,
// with the ablation score.
pb::ScoreExplanationRequest GoodScore() {
  pb::ScoreExplanationRequest r;
  r.set_model("demo");
  AddNeuronTarget(r.mutable_target(), "blocks.1.mlp.hook_post", {5});
  auto* a = r.add_excerpts();
  for (int32_t t : {0, 2, 3, 4}) a->add_tokens(t);
  for (float s : {0.0f, 1.0f, 2.0f, 3.0f}) a->add_simulated(s);
  auto* b = r.add_excerpts();
  for (int32_t t : {5, 6, 7}) b->add_tokens(t);
  for (float s : {3.0f, 2.0f, 1.0f}) b->add_simulated(s);
  b->set_random(true);
  r.set_ablation(true);
  return r;
}

void SetExcerpt(pb::ScoredExcerpt* e, int n) {
  e->clear_tokens();
  e->clear_simulated();
  for (int i = 0; i < n; ++i) {
    e->add_tokens(1 + i % 250);
    e->add_simulated(static_cast<float>(i % 7));
  }
}

TEST_F(BadRequestCorpusTest, ScoreExplanation) {
  const std::vector<Case<pb::ScoreExplanationRequest>> cases = {
      // The target.
      {"unknown model", [](auto& r) { r.set_model("nope"); }, kNotFound, R"(no model named "nope")"},
      {"no target", [](auto& r) { r.clear_target(); }, kInvalid, "ScoreExplanation scores one unit: a neuron (one index), an SAE feature (one index), a direction or a head (one index)"},
      {"two neurons", [](auto& r) { r.mutable_target()->mutable_neurons()->add_indices(6); }, kInvalid, "ScoreExplanation scores one unit"},
      {"every neuron", [](auto& r) { r.mutable_target()->mutable_neurons()->clear_indices(); }, kInvalid, "ScoreExplanation scores one unit"},
      {"two SAE features", [](auto& r) { AddSaeTarget(r.mutable_target(), "res1_standard", {1, 2}); r.set_ablation(false); }, kInvalid, "ScoreExplanation scores one unit"},
      {"unknown hook", [](auto& r) { r.mutable_target()->mutable_neurons()->set_hook("blocks.1.mlp.hook_poster"); }, kInvalid, R"(unknown hook point "blocks.1.mlp.hook_poster")"},
      {"neuron = d_mlp", [](auto& r) { r.mutable_target()->mutable_neurons()->set_indices(0, 512); }, kInvalid, "target index 512 at blocks.1.mlp.hook_post is out of range [0, 512)"},
      {"negative neuron", [](auto& r) { r.mutable_target()->mutable_neurons()->set_indices(0, -1); }, kInvalid, "target index -1 at blocks.1.mlp.hook_post is out of range [0, 512)"},
      {"hook without an activation per token", [](auto& r) { r.mutable_target()->mutable_neurons()->set_hook("blocks.1.attn.hook_pattern"); }, kInvalid, "blocks.1.attn.hook_pattern has no activation per token"},
      {"unknown SAE", [](auto& r) { AddSaeTarget(r.mutable_target(), "nope", {0}); }, kNotFound, R"(no SAE named "nope"; this server has: ln_res1, on_llama, res1_standard, z0_jumprelu)"},
      {"SAE of another model", [](auto& r) { AddSaeTarget(r.mutable_target(), "res1_standard", {0}); }, kInvalid, R"(SAE "res1_standard" is attached to model "gpt2", not "demo")"},
      {"direction of the wrong width", [](auto& r) { AddDirectionTarget(r.mutable_target(), "blocks.1.hook_resid_post", 64); r.set_ablation(false); }, kInvalid, "directions at blocks.1.hook_resid_post must be f32 [n, 128]"},
      {"empty direction", [](auto& r) { AddDirectionTarget(r.mutable_target(), "blocks.1.hook_resid_post", 0); r.set_ablation(false); }, kInvalid, "directions at blocks.1.hook_resid_post must be f32 [n, 128]"},
      {"every head", [](auto& r) { AddHeadTarget(r.mutable_target(), 1, pb::HeadTargets::OUTPUT_NORM, 0, {}); r.set_ablation(false); }, kInvalid, "ScoreExplanation scores one unit"},
      {"attention key past the longest excerpt", [](auto& r) { AddHeadTarget(r.mutable_target(), 1, pb::HeadTargets::ATTENTION_TO_POSITION, 4, {0}); r.set_ablation(false); }, kInvalid, "the attention target's key position 4 is outside a context of 4 tokens"},

      // The ablation score needs an editable neuron.
      {"ablation of a head", [](auto& r) { AddHeadTarget(r.mutable_target(), 1, pb::HeadTargets::OUTPUT_NORM, 0, {2}); }, kInvalid, "the ablation score replaces the unit's activation: it needs a neuron or direction at an editable hook (e.g. blocks.L.mlp.hook_post) or an SAE feature, not a head's norm or attention at blocks.1.attn.hook_result"},
      {"ablation at a hook that is not editable", [](auto& r) { r.mutable_target()->mutable_neurons()->set_hook("blocks.0.ln2.hook_normalized"); }, kInvalid, "or an SAE feature, not blocks.0.ln2.hook_normalized"},
      {"ablation of a zero direction", [](auto& r) { auto* d = AddDirectionTarget(r.mutable_target(), "blocks.1.hook_resid_post", 128); for (float& v : *d->mutable_vector()) v = 0; }, kInvalid, "the direction is zero: its activation cannot be set"},

      // The excerpts.
      {"no excerpts", [](auto& r) { r.clear_excerpts(); }, kInvalid, "no excerpts to score"},
      {"an empty excerpt", [](auto& r) { r.mutable_excerpts(0)->clear_tokens(); r.mutable_excerpts(0)->clear_simulated(); }, kInvalid, "excerpts[0] has no tokens"},
      {"fewer simulated than tokens", [](auto& r) { r.mutable_excerpts(1)->mutable_simulated()->RemoveLast(); }, kInvalid, "excerpts[1] has 3 tokens and 2 simulated activations"},
      {"more simulated than tokens", [](auto& r) { r.mutable_excerpts(0)->add_simulated(1); }, kInvalid, "excerpts[0] has 4 tokens and 5 simulated activations"},
      {"simulated without tokens", [](auto& r) { r.add_excerpts()->add_simulated(1); }, kInvalid, "excerpts[2] has no tokens"},
      {"NaN simulated", [](auto& r) { r.mutable_excerpts(0)->set_simulated(2, kNan); }, kInvalid, "excerpts[0] simulates a non-finite activation"},
      {"infinite simulated", [](auto& r) { r.mutable_excerpts(1)->set_simulated(0, -kInf); }, kInvalid, "excerpts[1] simulates a non-finite activation"},
      {"token id = vocab", [](auto& r) { r.mutable_excerpts(1)->set_tokens(2, 1024); }, kInvalid, "excerpts[1] has token id 1024 outside the vocabulary [0, 1024)"},
      {"negative token id", [](auto& r) { r.mutable_excerpts(0)->set_tokens(0, -1); }, kInvalid, "excerpts[0] has token id -1 outside the vocabulary [0, 1024)"},
      {"INT32_MIN token id", [](auto& r) { r.mutable_excerpts(0)->set_tokens(0, kIntMin); }, kInvalid, "excerpts[0] has token id -2147483648 outside the vocabulary"},
      {"over the token budget", [](auto& r) { for (int i = 0; i < 3; ++i) SetExcerpt(r.add_excerpts(), 30); }, kExhausted, "the excerpts hold 97 tokens; this server allows 64 per request (--max_tokens)"},
      {"one excerpt over the token budget", [](auto& r) { SetExcerpt(r.mutable_excerpts(0), 129); }, kExhausted, "the excerpts hold 132 tokens; this server allows 64 per request (--max_tokens)"},
  };
  Check<pb::ScoreExplanationRequest>("ScoreExplanation", GoodScore,
                                     Call(&pb::Glassbox::Stub::ScoreExplanation), cases);
  // A direction and the correlation scores alone are good requests too.
  pb::ScoreExplanationRequest direction = GoodScore();
  AddDirectionTarget(direction.mutable_target(), "blocks.1.hook_resid_post", 128);
  direction.set_ablation(false);
  ExpectServes("ScoreExplanation", "a direction", Call(&pb::Glassbox::Stub::ScoreExplanation)(direction));
  direction.set_ablation(true);
  ExpectServes("ScoreExplanation", "a direction's ablation", Call(&pb::Glassbox::Stub::ScoreExplanation)(direction));
  pb::ScoreExplanationRequest head = GoodScore();
  AddHeadTarget(head.mutable_target(), 1, pb::HeadTargets::ATTENTION_TO_OFFSET, 1, {3});
  head.set_ablation(false);
  ExpectServes("ScoreExplanation", "a head", Call(&pb::Glassbox::Stub::ScoreExplanation)(head));
}

// The same on gpt2 (n_ctx 32), whose SAEs give the SAE cases: ScoreExplanation resolves its target
// as a scan of contexts as long as the longest excerpt, cut to n_ctx, so an excerpt past n_ctx is
// refused by the scoring itself, not as a scan's context_length.
TEST_F(BadRequestCorpusTest, ScoreExplanationOnASmallContextModel) {
  auto good = [] {
    pb::ScoreExplanationRequest r = GoodScore();
    r.set_model("gpt2");
    return r;
  };
  const std::vector<Case<pb::ScoreExplanationRequest>> cases = {
      {"SAE feature = d_sae", [](auto& r) { AddSaeTarget(r.mutable_target(), "res1_standard", {128}); r.set_ablation(false); }, kInvalid, "target index 128 at blocks.1.hook_resid_pre is out of range [0, 128)"},
      {"token id = vocab", [](auto& r) { r.mutable_excerpts(1)->set_tokens(2, 300); }, kInvalid, "excerpts[1] has token id 300 outside the vocabulary [0, 300)"},
      {"excerpt longer than the context", [](auto& r) { SetExcerpt(r.mutable_excerpts(0), 33); }, kInvalid, "an excerpt of 33 tokens is longer than n_ctx 32"},
  };
  Check<pb::ScoreExplanationRequest>("ScoreExplanation", good,
                                     Call(&pb::Glassbox::Stub::ScoreExplanation), cases);
  pb::ScoreExplanationRequest feature = good();
  AddSaeTarget(feature.mutable_target(), "res1_standard", {3});
  feature.set_ablation(false);
  ExpectServes("ScoreExplanation", "an SAE feature", Call(&pb::Glassbox::Stub::ScoreExplanation)(feature));
  feature.set_ablation(true);
  ExpectServes("ScoreExplanation", "an SAE feature's ablation", Call(&pb::Glassbox::Stub::ScoreExplanation)(feature));
}

}  // namespace
}  // namespace glassbox
