// Cached runs: the RunCache's expiry, budgets and thread safety with a fake clock, and patching
// from a run kept on the server, which must equal transformer_lens.patching (the same cells as
// tests/fixtures/expected/tiny-gpt2.patching.safetensors) and patching from a row of one batch.
#include "server/service/run_cache.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/service/fake_clock.h"
#include "tests/service/service_harness.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::glassbox::testing::FakeClock;
using ::glassbox::testing::FixturePath;
using ::glassbox::testing::InProcessServer;
using ::glassbox::testing::ReadAllTensors;
using ::glassbox::testing::ReadRun;
using ::glassbox::testing::Received;
using ::glassbox::testing::RunRequestFor;
using ::testing::AllOf;
using ::testing::HasSubstr;
namespace pb = ::glassbox::v1;

CachedRun RunOfBytes(const std::string& name, int64_t bytes) {
  CachedRun run{.name = name, .model = "m", .lengths = {1}};
  run.values["h"] = Tensor::ZerosHost(DType::kF32, {1, 1, bytes / 4});
  return run;
}

TEST(RunCache, ExpiresWithTheClockAndSaysSo) {
  FakeClock clock;
  RunCache cache({.max_bytes = 1000, .max_entries = 4}, clock.AsClock());
  ASSERT_TRUE(cache.Put("", RunOfBytes("a", 400), absl::Seconds(10)).ok());
  clock.Advance(9);
  ASSERT_TRUE(cache.Get("", "a").ok());
  EXPECT_EQ(cache.UsageOf("").bytes, 400);
  clock.Advance(1);
  auto gone = cache.Get("", "a");
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(gone.status().message(), HasSubstr("expired"));
  EXPECT_EQ(cache.UsageOf("").bytes, 0);  // evicted on access
  auto never = cache.Release("", "b");
  EXPECT_EQ(never.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(never.status().message(), HasSubstr("never existed"));
  EXPECT_EQ(cache.TtlFor(0).value(), absl::Minutes(10));
  EXPECT_EQ(cache.TtlFor(100000).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RunCache::ValidateName("a:b").code(), absl::StatusCode::kInvalidArgument);
}

TEST(RunCache, BudgetsPerOwnerAndReplacement) {
  FakeClock clock;
  RunCache cache({.max_bytes = 1000, .max_entries = 2}, clock.AsClock());
  ASSERT_TRUE(cache.Put("", RunOfBytes("a", 400), absl::Seconds(10)).ok());
  ASSERT_TRUE(cache.Put("", RunOfBytes("b", 400), absl::Seconds(10)).ok());
  auto third = cache.Put("", RunOfBytes("c", 4), absl::Seconds(10));
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.status().message(),
              AllOf(HasSubstr("2 are held"), HasSubstr("--cache_max_entries")));
  // Replacing "a" frees its 400 bytes first: 400 + 600 fits, 400 + 800 does not.
  EXPECT_TRUE(cache.CheckFits("", "a", 600).ok());
  const absl::Status over = cache.CheckFits("", "a", 800);
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.message(), AllOf(HasSubstr("needs 800 bytes"), HasSubstr("hold 400 bytes"),
                                    HasSubstr("1000 bytes"), HasSubstr("--cache_max_bytes")));
  // Another owner has a budget of its own.
  EXPECT_TRUE(cache.Put("key2", RunOfBytes("c", 800), absl::Seconds(10)).ok());
  EXPECT_EQ(cache.Release("", "b").value(), 400);
  ASSERT_TRUE(cache.Put("", RunOfBytes("a", 600), absl::Seconds(10)).ok());
  EXPECT_EQ(cache.UsageOf("").bytes, 600);
  EXPECT_EQ(cache.List("").size(), 1u);
}

// An API key's cache_bytes below the server's budget: its own message, naming the quota, the key
// and when the next run expires; the server's budget still binds when it is the smaller.
TEST(RunCache, KeyQuotaBelowTheServerBudget) {
  FakeClock clock;
  RunCache cache({.max_bytes = 1000, .max_entries = 4}, clock.AsClock());
  ASSERT_TRUE(cache.Put("alice", RunOfBytes("a", 400), absl::Seconds(90), 600).ok());
  const absl::Status over = cache.CheckFits("alice", "b", 400, 600);
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.message(),
              AllOf(HasSubstr(R"(cache_bytes quota of 600 for key "alice" is used up)"),
                    HasSubstr("needs 400 bytes"), HasSubstr("hold 400 bytes"),
                    HasSubstr("(the next in 90 s)")));
  EXPECT_EQ(cache.Put("alice", RunOfBytes("b", 400), absl::Seconds(10), 600).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(cache.CheckFits("alice", "a", 600, 600).ok());  // replaces its own 400 bytes
  const absl::Status never = cache.CheckFits("bob", "b", 400, 200);
  EXPECT_THAT(never.message(), HasSubstr("no run is kept, so this one can never fit"));
  // A quota above the server's budget changes nothing: the flag's message.
  EXPECT_THAT(cache.CheckFits("alice", "b", 800, 5000).message(), HasSubstr("--cache_max_bytes"));
  EXPECT_EQ(cache.MaxBytesFor(600), 600);
  EXPECT_EQ(cache.MaxBytesFor(5000), 1000);
  EXPECT_EQ(cache.MaxBytesFor(std::nullopt), 1000);
}

// Entries know their owner; ListAll (an admin's list) has every owner's, by owner then name.
TEST(RunCache, OwnersAndListAll) {
  RunCache cache({.max_bytes = 1000, .max_entries = 4});
  ASSERT_TRUE(cache.Put("bob", RunOfBytes("x", 4), absl::Seconds(10)).ok());
  ASSERT_TRUE(cache.Put("alice", RunOfBytes("y", 4), absl::Seconds(10)).ok());
  ASSERT_TRUE(cache.Put("alice", RunOfBytes("x", 4), absl::Seconds(10)).ok());
  std::vector<std::string> all;
  for (const auto& run : cache.ListAll()) all.push_back(run->owner + "/" + run->name);
  EXPECT_THAT(all, ::testing::ElementsAre("alice/x", "alice/y", "bob/x"));
  ASSERT_EQ(cache.List("bob").size(), 1u);
  EXPECT_EQ(cache.List("bob")[0]->owner, "bob");
  // The same name in another namespace is another run.
  EXPECT_EQ(cache.Get("bob", "y").status().code(), absl::StatusCode::kNotFound);
}

TEST(RunCache, ConcurrentPutGetRelease) {
  RunCache cache({.max_bytes = 40 * 400, .max_entries = 40});
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        const std::string name = absl::StrCat("r", (t * 7 + i) % 30);
        switch (i % 3) {
          case 0:
            (void)cache.Put("", RunOfBytes(name, 400), absl::Seconds(60));
            break;
          case 1: {
            auto run = cache.Get("", name);
            if (run.ok()) {
              EXPECT_EQ((*run)->nbytes(), 400);
            }
            break;
          }
          default:
            (void)cache.Release("", name);
            break;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  const auto runs = cache.List("");
  EXPECT_EQ(cache.UsageOf("").bytes, static_cast<int64_t>(runs.size()) * 400);
  EXPECT_LE(runs.size(), 30u);
}

class CachedRunServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto store = ModelStore::Load(
        {{"gpt2", FixturePath("models/tiny-gpt2")}, {"llama", FixturePath("models/tiny-llama")}},
        std::make_shared<CpuBackend>(), "cpu");
    ASSERT_TRUE(store.ok()) << store.status();
    ServiceLimits limits;
    limits.max_tokens_per_request = 64;
    limits.cache = {.max_bytes = 64 << 10, .max_entries = 8};
    clock_ = new FakeClock;
    server_ = new InProcessServer(*std::move(store), limits, clock_->AsClock());
    expected_ = new std::map<std::string, Tensor>(
        ReadAllTensors(FixturePath("expected/tiny-gpt2.patching.safetensors")));
  }
  static void TearDownTestSuite() {
    delete server_;
    delete clock_;
    delete expected_;
  }
  void TearDown() override {
    // Each test starts with an empty cache.
    auto stub = pb::Glassbox::NewStub(server_->channel());
    grpc::ClientContext list_context;
    pb::ListCachedRunsResponse list;
    ASSERT_TRUE(stub->ListCachedRuns(&list_context, {}, &list).ok());
    for (const auto& run : list.runs()) {
      grpc::ClientContext context;
      pb::ReleaseCachedRunRequest release;
      release.set_name(run.name());
      pb::ReleaseCachedRunResponse released;
      ASSERT_TRUE(stub->ReleaseCachedRun(&context, release, &released).ok());
    }
  }

  static pb::RunRequest Keep(const std::string& name, std::initializer_list<const char*> hooks) {
    pb::RunRequest request = RunRequestFor("gpt2", expected_->at("clean"));
    request.mutable_keep()->set_name(name);
    for (const char* hook : hooks) request.mutable_keep()->add_hooks(hook);
    return request;
  }
  static pb::Intervention* PatchCached(pb::RunRequest& request, const std::string& hook,
                                       const std::string& name) {
    auto* patch = request.add_interventions();
    patch->set_hook(hook);
    patch->set_kind(pb::INTERVENTION_PATCH_CACHED);
    patch->set_cached_run(name);
    return patch;
  }
  static std::vector<float> LastLogits(const Received& got) {
    const std::string& bytes = got.bytes.at("logits");
    std::vector<float> out(bytes.size() / 4);
    std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  }
  // logit[a] - logit[b] at the last position, averaged over the rows: the fixture's metric.
  static double Metric(const std::vector<float>& logits, int64_t rows) {
    const int64_t vocab = static_cast<int64_t>(logits.size()) / rows;
    const int32_t a = expected_->at("tokens").data<int32_t>()[0];
    const int32_t b = expected_->at("tokens").data<int32_t>()[1];
    double sum = 0;
    for (int64_t r = 0; r < rows; ++r) sum += logits[r * vocab + a] - logits[r * vocab + b];
    return sum / static_cast<double>(rows);
  }

  static inline InProcessServer* server_;
  static inline FakeClock* clock_;
  static inline std::map<std::string, Tensor>* expected_;
};

TEST_F(CachedRunServiceTest, PatchFromCacheEqualsTransformerLensPatching) {
  Received kept = ReadRun(server_->channel(),
                          Keep("clean", {"blocks.*.hook_resid_pre", "blocks.*.attn.hook_z"}));
  ASSERT_TRUE(kept.status.ok()) << kept.status.error_message();
  EXPECT_EQ(kept.summary.kept().name(), "clean");
  EXPECT_EQ(kept.summary.kept().model(), "gpt2");
  EXPECT_EQ(kept.summary.kept().hooks_size(), 4);
  EXPECT_EQ(kept.summary.kept().nbytes(), 2 * (2 * 7 * 64 * 4) * 2);  // resid_pre + z (4 x 16)
  EXPECT_EQ(kept.summary.kept().expires_unix_ms() - kept.summary.kept().created_unix_ms(), 600'000);
  EXPECT_TRUE(kept.order.empty());  // kept, not streamed

  const Tensor& resid = expected_->at("resid_pre.values");
  const Tensor& heads = expected_->at("head_out_all_pos.values");
  double worst = 0;
  for (int layer = 0; layer < 2; ++layer) {
    for (int cell = 0; cell < 7 + 4; ++cell) {
      const bool by_pos = cell < 7;
      pb::RunRequest request = RunRequestFor("gpt2", expected_->at("corrupted"));
      request.mutable_outputs()->set_logits(pb::LOGITS_LAST);
      auto* patch = PatchCached(
          request, absl::StrCat("blocks.", layer, by_pos ? ".hook_resid_pre" : ".attn.hook_z"),
          "clean");
      by_pos ? patch->add_positions(cell) : patch->add_heads(cell - 7);
      Received got = ReadRun(server_->channel(), request);
      ASSERT_TRUE(got.status.ok()) << got.status.error_message();
      const double want = by_pos ? resid.data<float>()[layer * 7 + cell]
                                 : heads.data<float>()[layer * 4 + cell - 7];
      const double error = std::abs(Metric(LastLogits(got), 2) - want);
      EXPECT_LE(error, 1e-4) << "layer " << layer << " cell " << cell;
      worst = std::max(worst, error);
    }
  }
  RecordProperty("max_abs_error_vs_transformer_lens", absl::StrCat(worst));
  std::printf("patch from cache vs transformer_lens.patching: max |error| %.3g over 22 cells\n",
              worst);
}

// Patterns are [batch, head, query_pos, key_pos]: patching a head's whole pattern from the kept
// clean run is transformer_lens.patching's get_act_patch_attn_head_pattern_all_pos cell.
TEST_F(CachedRunServiceTest, PatchPatternFromCacheEqualsTransformerLensPatching) {
  Received kept = ReadRun(server_->channel(), Keep("clean", {"blocks.*.attn.hook_pattern"}));
  ASSERT_TRUE(kept.status.ok()) << kept.status.error_message();
  EXPECT_EQ(kept.summary.kept().nbytes(), 2 * (2 * 4 * 7 * 7 * 4));
  const Tensor& heads = expected_->at("pattern_all_pos.values");
  double worst = 0;
  for (int layer = 0; layer < 2; ++layer) {
    for (int head = 0; head < 4; ++head) {
      pb::RunRequest request = RunRequestFor("gpt2", expected_->at("corrupted"));
      request.mutable_outputs()->set_logits(pb::LOGITS_LAST);
      PatchCached(request, absl::StrCat("blocks.", layer, ".attn.hook_pattern"), "clean")
          ->add_heads(head);
      Received got = ReadRun(server_->channel(), request);
      ASSERT_TRUE(got.status.ok()) << got.status.error_message();
      const double error =
          std::abs(Metric(LastLogits(got), 2) - heads.data<float>()[layer * 4 + head]);
      EXPECT_LE(error, 1e-4) << "layer " << layer << " head " << head;
      worst = std::max(worst, error);
    }
  }
  std::printf("pattern patched from cache vs transformer_lens.patching: max |error| %.3g\n", worst);
}

TEST_F(CachedRunServiceTest, PatchFromCacheEqualsPatchFromARowOfTheBatch) {
  // One clean row cached; patched into both corrupted rows (row 0 of the cache for every row).
  const Tensor& clean = expected_->at("clean");
  pb::RunRequest keep = RunRequestFor("gpt2", clean);
  keep.mutable_inputs()->mutable_token_ids()->RemoveLast();
  keep.add_captures()->set_hook("blocks.1.hook_resid_mid");  // keep with no hooks: the captures
  keep.mutable_keep()->set_name("one");
  keep.mutable_keep()->set_ttl_seconds(30);
  Received kept = ReadRun(server_->channel(), keep);
  ASSERT_TRUE(kept.status.ok()) << kept.status.error_message();
  ASSERT_EQ(kept.summary.kept().hooks_size(), 1);
  EXPECT_EQ(kept.summary.kept().hooks(0), "blocks.1.hook_resid_mid");

  pb::RunRequest cached = RunRequestFor("gpt2", expected_->at("corrupted"));
  cached.mutable_outputs()->set_logits(pb::LOGITS_LAST);
  PatchCached(cached, "blocks.1.hook_resid_mid", "one")->add_positions(-1);
  // The same in one batch: [clean row 0, corrupted 0, corrupted 1], rows 1, 2 from row 0.
  pb::RunRequest batch = RunRequestFor("gpt2", expected_->at("corrupted"));
  *batch.mutable_inputs()->mutable_token_ids()->Add() = keep.inputs().token_ids(0);
  batch.mutable_inputs()->mutable_token_ids()->SwapElements(0, 2);
  batch.mutable_inputs()->mutable_token_ids()->SwapElements(1, 2);
  batch.mutable_outputs()->set_logits(pb::LOGITS_LAST);
  auto* row = batch.add_interventions();
  row->set_hook("blocks.1.hook_resid_mid");
  row->set_kind(pb::INTERVENTION_PATCH_ROW);
  row->add_positions(-1);
  for (int r : {0, 0, 0}) row->add_source_rows(r);
  Received a = ReadRun(server_->channel(), cached), b = ReadRun(server_->channel(), batch);
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  const std::vector<float> from_cache = LastLogits(a), from_row = LastLogits(b);
  const size_t vocab = from_cache.size() / 2;
  double worst = 0;
  for (size_t i = 0; i < from_cache.size(); ++i)
    worst = std::max<double>(worst, std::abs(from_cache[i] - from_row[vocab + i]));
  EXPECT_LE(worst, 1e-5);
  std::printf("patch from cache vs patch from a batch row: max |logit diff| %.3g\n", worst);
}

TEST_F(CachedRunServiceTest, ErrorsNameTheProblem) {
  auto stub = pb::Glassbox::NewStub(server_->channel());
  ASSERT_TRUE(ReadRun(server_->channel(), Keep("clean", {"blocks.0.hook_resid_pre"})).status.ok());
  auto patched = [&](const std::string& model, const Tensor& ids, const std::string& hook,
                     const std::string& name) {
    pb::RunRequest request = RunRequestFor(model, ids);
    PatchCached(request, hook, name);
    return ReadRun(server_->channel(), request).status;
  };
  const Tensor& corrupted = expected_->at("corrupted");
  grpc::Status s = patched("gpt2", corrupted, "blocks.0.hook_resid_pre", "nothing");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), AllOf(HasSubstr("never existed"), HasSubstr("clean")));
  s = patched("llama", corrupted, "blocks.0.hook_resid_pre", "clean");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("model \"gpt2\""));
  s = patched("gpt2", corrupted, "blocks.1.hook_resid_pre", "clean");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(),
              HasSubstr("kept blocks.0.hook_resid_pre, not blocks.1.hook_resid_pre"));
  const Tensor shorter = Tensor::FromHost(std::vector<int32_t>{1, 2, 3, 4, 5, 6}, {1, 6});
  s = patched("gpt2", shorter, "blocks.0.hook_resid_pre", "clean");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), AllOf(HasSubstr("[2,7,64]"), HasSubstr("[1,6,64]")));
  const Tensor three = Tensor::FromHost(std::vector<int32_t>(21, 1), {3, 7});
  s = patched("gpt2", three, "blocks.0.hook_resid_pre", "clean");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("give source_rows"));

  // Over the 64 KiB budget: all hooks of the clean run are ~100 KiB.
  Received big = ReadRun(server_->channel(), Keep("big", {"*"}));
  EXPECT_EQ(big.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(big.status.error_message(),
              AllOf(HasSubstr("65536 bytes"), HasSubstr("hold 3584 bytes")));
  EXPECT_EQ(ReadRun(server_->channel(), Keep("a:b", {"hook_embed"})).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // Expiry with the server's clock: after the default 600 s the name is gone, and says so.
  clock_->Advance(601);
  s = patched("gpt2", corrupted, "blocks.0.hook_resid_pre", "clean");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("expired"));

  ASSERT_TRUE(ReadRun(server_->channel(), Keep("again", {"hook_embed"})).status.ok());
  grpc::ClientContext list_context;
  pb::ListCachedRunsResponse list;
  ASSERT_TRUE(stub->ListCachedRuns(&list_context, {}, &list).ok());
  ASSERT_EQ(list.runs_size(), 1);
  EXPECT_EQ(list.runs(0).name(), "again");
  EXPECT_EQ(list.used_bytes(), 2 * 7 * 64 * 4);
  EXPECT_EQ(list.max_bytes(), 64 << 10);
  grpc::ClientContext release_context;
  pb::ReleaseCachedRunRequest release;
  release.set_name("clean");
  pb::ReleaseCachedRunResponse released;
  EXPECT_EQ(stub->ReleaseCachedRun(&release_context, release, &released).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(CachedRunServiceTest, ConcurrentKeepsAndPatches) {
  // Each thread keeps its own run and patches from it while the others do the same; every
  // result must equal the single-threaded one.
  const Tensor& resid = expected_->at("resid_pre.values");
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 3; ++i) {
        const std::string name = absl::StrCat("t", t);
        if (!ReadRun(server_->channel(), Keep(name, {"blocks.0.hook_resid_pre"})).status.ok())
          ++failures;
        pb::RunRequest request = RunRequestFor("gpt2", expected_->at("corrupted"));
        request.mutable_outputs()->set_logits(pb::LOGITS_LAST);
        PatchCached(request, "blocks.0.hook_resid_pre", name)->add_positions(2);
        Received got = ReadRun(server_->channel(), request);
        if (!got.status.ok() ||
            std::abs(Metric(LastLogits(got), 2) - resid.data<float>()[2]) > 1e-4)
          ++failures;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace glassbox
