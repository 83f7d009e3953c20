// API keys through an in-process server (docs/service.md, "API keys, quotas and isolation"):
// every RPC of glassbox.v1.Glassbox refuses a missing, malformed or unknown key; a key revoked by
// reloading the file is refused; each quota answers RESOURCE_EXHAUSTED naming itself, its limit,
// the key and when it refills; cached runs are isolated between keys, with NOT_FOUND messages
// that do not tell "someone else's" from "none"; an admin key reaches every key's runs.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/service/api_keys.h"
#include "tests/service/fake_clock.h"
#include "tests/service/service_harness.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::glassbox::testing::FakeClock;
using ::glassbox::testing::FixturePath;
using ::glassbox::testing::InProcessServer;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
namespace pb = ::glassbox::v1;
using Code = grpc::StatusCode;

constexpr char kKeys[] = R"({"keys": [
  {"name": "alice", "key": "alice-key"},
  {"name": "bob", "key": "bob-key"},
  {"name": "root", "key": "root-key", "admin": true},
  {"name": "carol", "key": "carol-key"},
  {"name": "rpm", "key": "rpm-key", "quota": {"requests_per_minute": 2}},
  {"name": "conc", "key": "conc-key", "quota": {"max_concurrent_runs": 1}},
  {"name": "tokens", "key": "tokens-key", "quota": {"tokens_per_day": 10}},
  {"name": "bytes", "key": "bytes-key", "quota": {"max_response_bytes": 1000}},
  {"name": "cache", "key": "cache-key", "quota": {"cache_bytes": 1024}}
]})";

// A row of n tokens 1, 2, ..., n.
void AddRowOf(pb::Inputs* inputs, int n) {
  auto* row = inputs->add_token_ids();
  for (int i = 1; i <= n; ++i) row->add_ids(i);
}

class ApiKeysServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    WriteKeys(kKeys);
    auto keys = ApiKeyStore::Load(KeysPath());
    ASSERT_TRUE(keys.ok()) << keys.status();
    keys_ = keys->release();
    auto store = ModelStore::Load({{"gpt2", FixturePath("models/tiny-gpt2")}},
                                  std::make_shared<CpuBackend>(), "cpu");
    ASSERT_TRUE(store.ok()) << store.status();
    ServiceLimits limits;
    limits.max_tokens_per_request = 64;
    limits.max_response_bytes = 1 << 20;
    limits.cache = {.max_bytes = 64 << 10, .max_entries = 8};
    clock_ = new FakeClock;
    server_ = new InProcessServer(*std::move(store), limits, clock_->AsClock(), keys_);
    jobs_ = new ScanJobs(server_->store(), server_->scheduler(), {});
    server_->service().SetScanJobs(jobs_);
    stub_ = pb::Glassbox::NewStub(server_->channel()).release();
  }
  static void TearDownTestSuite() {
    delete jobs_;  // its runner waits on the scheduler, which the server owns
    delete stub_;
    delete server_;
    delete clock_;
    delete keys_;
    std::remove(KeysPath().c_str());
  }

  // One file per process: ctest runs each test in a process of its own, in parallel, and one
  // test rewrites the file.
  static std::string KeysPath() {
    return ::testing::TempDir() + "/api_keys_service_test_" + std::to_string(getpid()) + ".json";
  }
  static void WriteKeys(const std::string& json) {
    std::ofstream(KeysPath(), std::ios::trunc) << json;
  }

  // A context that sends `key` (none when empty).
  static std::unique_ptr<grpc::ClientContext> As(const std::string& key, int deadline_s = 60) {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(deadline_s));
    if (!key.empty()) context->AddMetadata("authorization", "Bearer " + key);
    return context;
  }

  static grpc::Status Run(const std::string& key, const pb::RunRequest& request) {
    auto context = As(key);
    auto reader = stub_->Run(context.get(), request);
    pb::RunResponse response;
    while (reader->Read(&response)) {
    }
    return reader->Finish();
  }

  static pb::RunRequest RunOf(int tokens) {
    pb::RunRequest r;
    r.set_model("gpt2");
    AddRowOf(r.mutable_inputs(), tokens);
    return r;
  }

  // Keeps hook_embed of a run over [1, 2, 3] (768 bytes) under `name`.
  static grpc::Status Keep(const std::string& key, const std::string& name) {
    pb::RunRequest r = RunOf(3);
    r.mutable_keep()->set_name(name);
    r.mutable_keep()->add_hooks("hook_embed");
    return Run(key, r);
  }

  // A run over [1, 2, 3] patching hook_embed from the cached run `name`.
  static grpc::Status Patch(const std::string& key, const std::string& name) {
    pb::RunRequest r = RunOf(3);
    auto* in = r.add_interventions();
    in->set_hook("hook_embed");
    in->set_kind(pb::INTERVENTION_PATCH_CACHED);
    in->set_cached_run(name);
    return Run(key, r);
  }

  static grpc::Status Release(const std::string& key, const std::string& name) {
    pb::ReleaseCachedRunRequest request;
    request.set_name(name);
    pb::ReleaseCachedRunResponse response;
    return stub_->ReleaseCachedRun(As(key).get(), request, &response);
  }

  // "OWNER/NAME" of every run `key` lists.
  static std::vector<std::string> List(const std::string& key,
                                       pb::ListCachedRunsResponse* out = nullptr) {
    pb::ListCachedRunsResponse response;
    const grpc::Status status = stub_->ListCachedRuns(As(key).get(), {}, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::vector<std::string> runs;
    for (const auto& run : response.runs()) runs.push_back(run.owner() + "/" + run.name());
    if (out) *out = response;
    return runs;
  }

  static grpc::Status LogitLens(const std::string& key, int top_k = 5, int deadline_s = 60) {
    pb::LogitLensRequest request;
    request.set_model("gpt2");
    AddRowOf(request.mutable_inputs(), 3);
    request.set_top_k(top_k);
    pb::LogitLensResponse response;
    return stub_->LogitLens(As(key, deadline_s).get(), request, &response);
  }

  // Any method of the service by its name, with an empty request and `headers` as
  // "authorization" metadata; the answer's status.
  static grpc::Status CallByName(const std::string& method,
                                 const std::vector<std::string>& headers) {
    grpc::GenericStub stub(server_->channel());
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    for (const std::string& header : headers) context.AddMetadata("authorization", header);
    grpc::Slice empty("");
    grpc::ByteBuffer request(&empty, 1), response;
    std::promise<grpc::Status> done;
    stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                   [&](grpc::Status status) { done.set_value(std::move(status)); });
    return done.get_future().get();
  }

  static inline ApiKeyStore* keys_ = nullptr;
  static inline FakeClock* clock_ = nullptr;
  static inline InProcessServer* server_ = nullptr;
  static inline ScanJobs* jobs_ = nullptr;
  static inline pb::Glassbox::Stub* stub_ = nullptr;
};

// Every method the proto declares, found from its descriptor so that a new RPC is covered too.
TEST_F(ApiKeysServiceTest, EveryRpcNeedsAKnownKey) {
  const google::protobuf::ServiceDescriptor* service =
      pb::RunRequest::descriptor()->file()->FindServiceByName("Glassbox");
  ASSERT_NE(service, nullptr);
  ASSERT_GE(service->method_count(), 15);
  for (int i = 0; i < service->method_count(); ++i) {
    const std::string method = "/" + service->full_name() + "/" + service->method(i)->name();
    SCOPED_TRACE(method);
    const grpc::Status none = CallByName(method, {});
    EXPECT_EQ(none.error_code(), Code::UNAUTHENTICATED) << none.error_message();
    EXPECT_THAT(none.error_message(),
                AllOf(HasSubstr("this server needs an API key and the call has none"),
                      HasSubstr(R"(metadata "authorization: Bearer <key>")"),
                      HasSubstr("glassbox.connect(address, api_key=KEY)"),
                      HasSubstr("--api_key KEY or $GLASSBOX_API_KEY")));
    for (const char* malformed : {"alice-key", "Basic alice-key", "Bearer", "Bearer a b"}) {
      const grpc::Status status = CallByName(method, {std::string(malformed)});
      EXPECT_EQ(status.error_code(), Code::UNAUTHENTICATED) << malformed;
      EXPECT_THAT(status.error_message(),
                  AllOf(HasSubstr(R"(the "authorization" header is not "Bearer <key>")"),
                        Not(HasSubstr("alice-key"))));
    }
    const grpc::Status unknown = CallByName(method, {"Bearer alice-keyX"});
    EXPECT_EQ(unknown.error_code(), Code::UNAUTHENTICATED);
    EXPECT_THAT(unknown.error_message(),
                AllOf(HasSubstr("this server does not know the API key the call sent"),
                      HasSubstr("api_key=KEY"), Not(HasSubstr("alice-keyX"))));
    const grpc::Status twice = CallByName(method, {"Bearer alice-key", "Bearer bob-key"});
    EXPECT_EQ(twice.error_code(), Code::UNAUTHENTICATED);
    EXPECT_THAT(twice.error_message(), HasSubstr(R"(the call has 2 "authorization" headers)"));
    // With a key the call gets past authentication (to its own answer for an empty request).
    const grpc::Status known = CallByName(method, {"Bearer alice-key"});
    EXPECT_NE(known.error_code(), Code::UNAUTHENTICATED) << known.error_message();
    EXPECT_NE(CallByName(method, {"bearer bob-key"}).error_code(), Code::UNAUTHENTICATED);
  }
}

TEST_F(ApiKeysServiceTest, AKeyRevokedByReloadingTheFileIsRefused) {
  pb::ListModelsResponse models;
  ASSERT_TRUE(stub_->ListModels(As("carol-key").get(), {}, &models).ok());
  std::string without_carol = kKeys;
  const std::string carol = R"({"name": "carol", "key": "carol-key"},)";
  without_carol.erase(without_carol.find(carol), carol.size());
  WriteKeys(without_carol);
  ASSERT_TRUE(keys_->Reload().ok());
  const grpc::Status revoked = stub_->ListModels(As("carol-key").get(), {}, &models);
  EXPECT_EQ(revoked.error_code(), Code::UNAUTHENTICATED);
  EXPECT_THAT(revoked.error_message(), HasSubstr("mistyped or was revoked"));
  EXPECT_TRUE(stub_->ListModels(As("alice-key").get(), {}, &models).ok());
  // A file that does not parse keeps the keys in use.
  WriteKeys("{\"keys\": [");
  EXPECT_FALSE(keys_->Reload().ok());
  EXPECT_TRUE(stub_->ListModels(As("alice-key").get(), {}, &models).ok());
  EXPECT_EQ(stub_->ListModels(As("carol-key").get(), {}, &models).error_code(),
            Code::UNAUTHENTICATED);
  WriteKeys(kKeys);
  ASSERT_TRUE(keys_->Reload().ok());
  EXPECT_TRUE(stub_->ListModels(As("carol-key").get(), {}, &models).ok());
}

// Every RPC counts, whatever it asks (here ListModels and a Run).
TEST_F(ApiKeysServiceTest, RequestsPerMinute) {
  pb::ListModelsResponse models;
  ASSERT_TRUE(stub_->ListModels(As("rpm-key").get(), {}, &models).ok());
  ASSERT_TRUE(Run("rpm-key", RunOf(3)).ok());
  const grpc::Status refused = stub_->ListModels(As("rpm-key").get(), {}, &models);
  EXPECT_EQ(refused.error_code(), Code::RESOURCE_EXHAUSTED);
  EXPECT_THAT(
      refused.error_message(),
      HasSubstr(R"(requests_per_minute quota of 2 for key "rpm" is used up; it refills in 30 s)"));
  EXPECT_EQ(Run("rpm-key", RunOf(3)).error_code(), Code::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(stub_->ListModels(As("alice-key").get(), {}, &models).ok());  // others unaffected
  clock_->Advance(30);
  EXPECT_TRUE(stub_->ListModels(As("rpm-key").get(), {}, &models).ok());
  EXPECT_EQ(stub_->ListModels(As("rpm-key").get(), {}, &models).error_code(),
            Code::RESOURCE_EXHAUSTED);
}

// A run queued behind a held device holds the key's one slot; a cancelled run gives it back.
TEST_F(ApiKeysServiceTest, MaxConcurrentRuns) {
  const std::function<void()> release = server_->HoldDevice();

  auto context = As("conc-key");
  auto reader = stub_->Run(context.get(), RunOf(3));
  pb::RunResponse header;
  ASSERT_TRUE(reader->Read(&header));  // admitted and queued
  ASSERT_TRUE(header.has_header());
  // Short deadlines: were these admitted, they would wait behind the held device.
  const grpc::Status refused = LogitLens("conc-key", 5, /*deadline_s=*/5);
  EXPECT_EQ(refused.error_code(), Code::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(),
              HasSubstr(R"(max_concurrent_runs quota of 1 for key "conc" is used up (requests )"
                        "queued or running: 1); it refills when one of them finishes"));
  {
    auto second = As("conc-key", /*deadline_s=*/5);
    auto second_reader = stub_->Run(second.get(), RunOf(3));
    pb::RunResponse ignored;
    while (second_reader->Read(&ignored)) {
    }
    EXPECT_EQ(second_reader->Finish().error_code(), Code::RESOURCE_EXHAUSTED);
  }
  pb::ListModelsResponse models;  // host RPCs hold no slot
  EXPECT_TRUE(stub_->ListModels(As("conc-key").get(), {}, &models).ok());

  context->TryCancel();
  release();
  EXPECT_EQ(reader->Finish().error_code(), Code::CANCELLED);
  // The server's handler may still be finishing the cancelled run: its slot comes back when it
  // returns.
  grpc::Status after = LogitLens("conc-key");
  for (int i = 0; i < 100 && after.error_code() == Code::RESOURCE_EXHAUSTED; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    after = LogitLens("conc-key");
  }
  EXPECT_TRUE(after.ok()) << after.error_message();
  EXPECT_TRUE(LogitLens("conc-key").ok());  // and a finished one gives it back too
}

// A scan's tokens (every context, both passes when it has two) count against tokens_per_day
// when it is started; one that does not fit is refused before it is queued.
TEST_F(ApiKeysServiceTest, ScansChargeTokensPerDay) {
  clock_->Advance(24 * 3600 + 60);  // whatever other tests of this process spent has gone
  pb::StartScanRequest scan;
  scan.set_model("gpt2");
  scan.set_context_length(4);
  scan.set_no_bos(true);
  scan.set_quantile_bins(-1);
  scan.set_histogram_bins(-1);  // one pass: 2 contexts x 4 tokens = 8 tokens
  auto* docs = scan.mutable_corpus()->mutable_documents()->add_token_sequences();
  for (int32_t id : {1, 2, 3, 4, 5, 6, 7, 8}) docs->add_ids(id);
  auto* neurons = scan.add_targets()->mutable_neurons();
  neurons->set_hook("blocks.0.mlp.hook_post");
  neurons->add_indices(0);
  pb::JobInfo info;
  auto context = As("tokens-key");
  ASSERT_TRUE(stub_->StartScan(context.get(), scan, &info).ok());
  EXPECT_EQ(info.tokens_total(), 8);
  context = As("tokens-key");
  grpc::Status refused = stub_->StartScan(context.get(), scan, &info);
  EXPECT_EQ(refused.error_code(), Code::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(),
              HasSubstr("tokens_per_day quota of 10 for key \"tokens\" is used up: this request "
                        "needs 8 tokens and 8 were spent"));
  pb::ListJobsResponse jobs;
  context = As("tokens-key");
  ASSERT_TRUE(stub_->ListJobs(context.get(), {}, &jobs).ok());
  EXPECT_EQ(jobs.jobs_size(), 1);  // the refused scan was never queued
  clock_->Advance(24 * 3600 + 60);  // and leaves the key's day to the other tests
}

// Tokens are counted as --max_tokens counts them (Generate: prompt and new tokens), once a
// request is validated: a refused request costs none.
TEST_F(ApiKeysServiceTest, TokensPerDay) {
  ASSERT_TRUE(Run("tokens-key", RunOf(6)).ok());
  grpc::Status refused = Run("tokens-key", RunOf(6));
  EXPECT_EQ(refused.error_code(), Code::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(),
              HasSubstr(R"(tokens_per_day quota of 10 for key "tokens" is used up: this request )"
                        "needs 6 tokens and 6 were spent in the last 24 h; it refills in 24 h 0 "
                        "min (a rolling 24 h window)"));
  pb::RunRequest two_rows = RunOf(6);
  AddRowOf(two_rows.mutable_inputs(), 6);
  EXPECT_THAT(Run("tokens-key", two_rows).error_message(),
              HasSubstr("cannot hold this request: it needs 12 tokens"));
  pb::RunRequest bad = RunOf(4);
  bad.set_model("nope");
  EXPECT_EQ(Run("tokens-key", bad).error_code(), Code::NOT_FOUND);
  EXPECT_TRUE(Run("tokens-key", RunOf(4)).ok());  // 6 + 4: the refusals took nothing

  clock_->Advance(24 * 3600 + 60);
  pb::GenerateRequest generate;
  generate.set_model("gpt2");
  AddRowOf(generate.mutable_inputs(), 3);
  generate.set_max_new_tokens(2);
  generate.set_stop_at_eos(false);
  auto context = As("tokens-key");
  auto reader = stub_->Generate(context.get(), generate);
  pb::GenerateResponse response;
  while (reader->Read(&response)) {
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_THAT(Run("tokens-key", RunOf(6)).error_message(),
              HasSubstr("needs 6 tokens and 5 were spent"));
}

TEST_F(ApiKeysServiceTest, MaxResponseBytesIsTheSmallerOfTheServersAndTheKeys) {
  pb::RunRequest logits = RunOf(3);
  logits.mutable_outputs()->set_logits(pb::LOGITS_LAST);  // [1, 300] f32: 1200 bytes
  const grpc::Status refused = Run("bytes-key", logits);
  EXPECT_EQ(refused.error_code(), Code::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(),
              HasSubstr(R"(the response would carry 1200 bytes; this server allows 1000 (the )"
                        R"(max_response_bytes quota of key "bytes", per request))"));
  EXPECT_TRUE(Run("alice-key", logits).ok());
  const grpc::Status lens = LogitLens("bytes-key", /*top_k=*/50);
  EXPECT_EQ(lens.error_code(), Code::RESOURCE_EXHAUSTED);
  EXPECT_THAT(
      lens.error_message(),
      HasSubstr(R"(allows 1000 (the max_response_bytes quota of key "bytes", per request))"));
  EXPECT_TRUE(LogitLens("bytes-key", 5).ok());
}

TEST_F(ApiKeysServiceTest, CacheBytes) {
  ASSERT_TRUE(Keep("cache-key", "first").ok());
  const grpc::Status refused = Keep("cache-key", "second");
  EXPECT_EQ(refused.error_code(), Code::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(),
              AllOf(HasSubstr(R"(cache_bytes quota of 1024 for key "cache" is used up: keeping )"
                              R"(run "second" needs 768 bytes)"),
                    HasSubstr("hold 768 bytes"),
                    HasSubstr("it refills as runs are released (ReleaseCachedRun) or expire (the "
                              "next in 10 min)")));
  pb::ListCachedRunsResponse listed;
  EXPECT_THAT(List("cache-key", &listed), ::testing::ElementsAre("cache/first"));
  EXPECT_EQ(listed.used_bytes(), 768);
  EXPECT_EQ(listed.max_bytes(), 1024);
  EXPECT_TRUE(Keep("alice-key", "second").ok());  // the server's budget is per key
  ASSERT_TRUE(Release("cache-key", "first").ok());
  EXPECT_TRUE(Keep("cache-key", "second").ok());
  ASSERT_TRUE(Release("cache-key", "second").ok());
  ASSERT_TRUE(Release("alice-key", "second").ok());
}

// Another key's run is NOT_FOUND with the very message of a name nobody kept, for reading
// (patching from it), releasing and listing; names are per key, so bob may keep the same one.
TEST_F(ApiKeysServiceTest, CachedRunsAreIsolatedBetweenKeys) {
  const std::vector<std::string> names = {"ghost", "alice/ghost"};
  std::vector<grpc::Status> before;
  for (const std::string& name : names) {
    before.push_back(Patch("bob-key", name));
    before.push_back(Release("bob-key", name));
  }
  for (const grpc::Status& status : before) EXPECT_EQ(status.error_code(), Code::NOT_FOUND);
  EXPECT_THAT(before[0].error_message(), HasSubstr(R"(no cached run "ghost": it never existed)"));

  ASSERT_TRUE(Keep("alice-key", "ghost").ok());
  std::vector<grpc::Status> after;
  for (const std::string& name : names) {
    after.push_back(Patch("bob-key", name));
    after.push_back(Release("bob-key", name));
  }
  for (size_t i = 0; i < before.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(after[i].error_code(), Code::NOT_FOUND);
    EXPECT_EQ(after[i].error_message(), before[i].error_message());
  }
  EXPECT_THAT(List("bob-key"), Not(::testing::Contains("alice/ghost")));

  // bob's own "ghost" is another run; releasing it leaves alice's.
  ASSERT_TRUE(Keep("bob-key", "ghost").ok());
  EXPECT_THAT(List("bob-key"), ::testing::ElementsAre("bob/ghost"));
  EXPECT_THAT(List("alice-key"), ::testing::Contains("alice/ghost"));
  EXPECT_THAT(List("alice-key"), Not(::testing::Contains("bob/ghost")));
  ASSERT_TRUE(Release("bob-key", "ghost").ok());
  EXPECT_TRUE(Patch("alice-key", "ghost").ok());
  EXPECT_TRUE(Release("alice-key", "ghost").ok());
}

TEST_F(ApiKeysServiceTest, AnAdminKeySeesEveryKeysRuns) {
  ASSERT_TRUE(Keep("alice-key", "a_run").ok());
  ASSERT_TRUE(Keep("bob-key", "b_run").ok());
  ASSERT_TRUE(Keep("root-key", "r_run").ok());
  pb::ListCachedRunsResponse listed;
  EXPECT_THAT(List("root-key", &listed),
              ::testing::IsSupersetOf({"alice/a_run", "bob/b_run", "root/r_run"}));
  EXPECT_EQ(listed.used_bytes(), 768);  // its own
  EXPECT_THAT(List("alice-key"), Not(::testing::Contains("bob/b_run")));

  EXPECT_TRUE(Patch("root-key", "alice/a_run").ok());
  EXPECT_TRUE(Patch("root-key", "r_run").ok());
  // An unqualified name is the admin's own.
  EXPECT_EQ(Patch("root-key", "a_run").error_code(), Code::NOT_FOUND);
  EXPECT_TRUE(Release("root-key", "bob/b_run").ok());
  EXPECT_EQ(Release("bob-key", "b_run").error_code(), Code::NOT_FOUND);
  EXPECT_THAT(List("bob-key"), Not(::testing::Contains("bob/b_run")));
  EXPECT_TRUE(Release("root-key", "r_run").ok());
  EXPECT_TRUE(Release("alice-key", "a_run").ok());
}

}  // namespace
}  // namespace glassbox
