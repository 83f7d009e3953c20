// Dataset-scan jobs in process: ScanJobs driven directly on the demo model (a tokenizer, BOS 0,
// 4 layers) with a real ModelStore and Scheduler, jobs and corpus directories made per test.
// A job's results equal the engine run directly over the same batches; contexts are cut as
// documented; a job stopped mid-pass resumes from its checkpoint to the uninterrupted results;
// jobs are private to their owner; cancels, limits and bad corpora answer with precise codes; the
// logit effects equal W_U · (what the target writes) computed here from the weights file.
#include "server/service/scan_jobs.h"

#include <google/protobuf/util/field_comparator.h>
#include <google/protobuf/util/message_differencer.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/feature_scan.h"
#include "server/scheduler/scheduler.h"
#include "server/service/model_store.h"
#include "server/service/scan_corpus.h"
#include "server/service/scan_request.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

namespace fs = std::filesystem;
namespace pb = ::glassbox::v1;
using ::google::protobuf::util::DefaultFieldComparator;
using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;

constexpr int32_t kBos = 0;  // the demo tokenizer's <|endoftext|>
constexpr int32_t kVocab = 1024;
constexpr auto kWait = std::chrono::seconds(120);

std::string DemoDir() { return std::string(GLASSBOX_FIXTURES_DIR) + "/../../models/demo"; }

// ---- requests ----

using Docs = std::vector<std::vector<int32_t>>;

// `n` documents of random lengths in [min_len, max_len], ids in [1, vocab) (never BOS).
Docs RandomDocs(int n, int min_len, int max_len, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> length(min_len, max_len);
  std::uniform_int_distribution<int32_t> token(1, kVocab - 1);
  Docs docs(n);
  for (auto& doc : docs) {
    doc.resize(length(rng));
    for (int32_t& t : doc) t = token(rng);
  }
  return docs;
}

pb::StartScanRequest TokenScan(const Docs& docs, int32_t context_length) {
  pb::StartScanRequest r;
  r.set_model("demo");
  r.set_context_length(context_length);
  auto* documents = r.mutable_corpus()->mutable_documents();
  for (const auto& doc : docs) {
    auto* seq = documents->add_token_sequences();
    for (int32_t id : doc) seq->add_ids(id);
  }
  return r;
}

void AddNeurons(pb::StartScanRequest& r, const std::string& hook, std::vector<int32_t> indices) {
  auto* n = r.add_targets()->mutable_neurons();
  n->set_hook(hook);
  for (int32_t i : indices) n->add_indices(i);
}

std::vector<float> RandomVector(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

void AddDirection(pb::StartScanRequest& r, const std::string& name, const std::string& hook,
                  const std::vector<float>& vector) {
  auto* d = r.add_targets()->mutable_direction();
  d->set_name(name);
  d->set_hook(hook);
  for (float x : vector) d->add_vector(x);
}

// Small records and bins so both passes have something to fill.
void SmallOptions(pb::StartScanRequest& r) {
  r.set_top_k(5);
  r.set_random_k(4);
  r.set_quantile_bins(4);
  r.set_per_quantile_k(2);
  r.set_histogram_bins(8);
  r.set_window_before(3);
  r.set_window_after(2);
  r.set_seed(7);
}

// ---- files ----

void WriteFile(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// A version 1.0 .npy image: `descr` ("<i4", "<i8", "<f4"), C order.
std::string Npy(const std::string& descr, const std::vector<int64_t>& shape,
                const std::string& data) {
  std::string dims;
  if (shape.size() == 1) {
    dims = "(" + std::to_string(shape[0]) + ",)";
  } else {
    dims = "(";
    for (size_t i = 0; i < shape.size(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
    dims += ")";
  }
  std::string header =
      "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + dims + ", }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(1);
  out += static_cast<char>(0);
  out += static_cast<char>(header.size() & 0xFF);
  out += static_cast<char>(header.size() >> 8);
  return out + header + data;
}

template <typename T>
std::string Bytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

// ---- the documented cutting, written plainly ----

// With BOS: the documents joined by BOS into one stream, cut into runs of L - 1, each opened by
// BOS. Without: the documents joined as they are, cut into runs of L. A partial last context is
// dropped; at most max_contexts (0: all).
std::vector<int32_t> ExpectedContexts(const Docs& docs, int32_t len, std::optional<int32_t> bos,
                                      int64_t max_contexts = 0) {
  std::vector<int32_t> stream;
  for (size_t i = 0; i < docs.size(); ++i) {
    // A separator except where the context's own opening BOS already separates (sae_lens's rule).
    if (bos && i > 0 && stream.size() % (len - 1) != 0) stream.push_back(*bos);
    stream.insert(stream.end(), docs[i].begin(), docs[i].end());
  }
  const size_t body = bos ? len - 1 : len;
  std::vector<int32_t> out;
  int64_t rows = 0;
  for (size_t s = 0; s + body <= stream.size(); s += body) {
    if (max_contexts > 0 && rows == max_contexts) break;
    if (bos) out.push_back(*bos);
    out.insert(out.end(), stream.begin() + s, stream.begin() + s + body);
    ++rows;
  }
  return out;
}

std::vector<int32_t> Ids(const Tensor& t) {
  return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
}

// ---- comparing results ----

void ExpectSameTargets(const google::protobuf::RepeatedPtrField<pb::ScanTargetResult>& actual,
                       const std::vector<pb::ScanTargetResult>& expected, const std::string& what) {
  ASSERT_EQ(static_cast<size_t>(actual.size()), expected.size()) << what;
  DefaultFieldComparator comparator;
  comparator.set_treat_nan_as_equal(true);
  for (size_t i = 0; i < expected.size(); ++i) {
    MessageDifferencer differencer;
    differencer.set_field_comparator(&comparator);
    std::string diff;
    differencer.ReportDifferencesToString(&diff);
    EXPECT_TRUE(differencer.Compare(actual[static_cast<int>(i)], expected[i]))
        << what << ", target " << i << ":\n"
        << diff;
  }
}

std::vector<pb::ScanTargetResult> TargetsOf(const pb::ScanResults& results) {
  return {results.targets().begin(), results.targets().end()};
}

// ---- waiting on a job ----

// A subscription whose observer only records and signals: it runs on the runner's thread, so it
// never calls back into ScanJobs.
class Watcher {
 public:
  Watcher(ScanJobs& jobs, const JobCaller& caller, const std::string& id)
      : progress_(std::make_shared<Progress>()) {
    watch_ =
        std::make_shared<ScanJobs::Watch>([p = progress_](const pb::JobInfo& info, bool final) {
          std::lock_guard lock(p->mu);
          p->last = info;
          p->final = p->final || final;
          ++p->updates;
          p->cv.notify_all();
        });
    status_ = jobs.Subscribe(caller, id, watch_);
  }
  ~Watcher() { watch_->Close(); }

  const absl::Status& status() const { return status_; }

  // Waits until `done(info)` holds for the latest info (or the job has ended); the latest info,
  // or nullopt after kWait.
  std::optional<pb::JobInfo> WaitFor(const std::function<bool(const pb::JobInfo&)>& done) {
    std::unique_lock lock(progress_->mu);
    const bool ok = progress_->cv.wait_for(lock, kWait, [&] {
      return progress_->updates > 0 && (progress_->final || done(progress_->last));
    });
    if (!ok) return std::nullopt;
    return progress_->last;
  }
  std::optional<pb::JobInfo> WaitForEnd() {
    auto info = WaitFor([](const pb::JobInfo&) { return false; });
    if (info) {
      std::lock_guard lock(progress_->mu);
      EXPECT_TRUE(progress_->final);
    }
    return info;
  }

 private:
  struct Progress {
    std::mutex mu;
    std::condition_variable cv;
    pb::JobInfo last;
    bool final = false;
    int updates = 0;
  };
  std::shared_ptr<Progress> progress_;
  std::shared_ptr<ScanJobs::Watch> watch_;
  absl::Status status_;
};

// Occupies the scheduler's worker until released (or destroyed): background batches stay
// queued behind it. Declare it after the ScanJobs it blocks, so that it is released first.
class DeviceHold {
 public:
  explicit DeviceHold(Scheduler& scheduler) {
    auto started = std::make_shared<std::promise<void>>();
    std::shared_future<void> gate = unblock_.get_future().share();
    auto task = std::make_shared<FunctionTask>(
        TaskInfo{.owner = "(test)", .rpc = "hold"},
        [started, gate] {
          started->set_value();
          gate.wait();
        },
        [](const absl::Status&) {});
    EXPECT_TRUE(scheduler.Submit(task).ok());
    started->get_future().wait();
  }
  ~DeviceHold() { Release(); }
  void Release() {
    if (!released_) unblock_.set_value();
    released_ = true;
  }

 private:
  std::promise<void> unblock_;
  bool released_ = false;
};

const JobCaller kAlice{.owner = "alice"};
const JobCaller kBob{.owner = "bob"};
const JobCaller kAdmin{.owner = "ops", .admin = true};

class ScanJobsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto store = ModelStore::Load({{"demo", DemoDir()}}, std::make_shared<CpuBackend>(), "cpu");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = store->release();
    scheduler_ = new Scheduler();
  }
  static void TearDownTestSuite() {
    delete scheduler_;
    delete store_;
  }

  void SetUp() override {
    // One directory per process and test ("Name/Param" of a parameterised test made flat).
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(name.begin(), name.end(), '/', '_');
    root_ = fs::path(::testing::TempDir()) /
            ("scan_jobs_test_" + std::to_string(getpid()) + "_" + name);
    fs::remove_all(root_);
    fs::create_directories(corpus_dir());
    fs::create_directories(jobs_dir());
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }

  fs::path corpus_dir() const { return root_ / "corpus"; }
  fs::path jobs_dir() const { return root_ / "jobs"; }

  ScanJobsOptions Options(bool persistent = true) const {
    ScanJobsOptions o;
    if (persistent) o.jobs_dir = jobs_dir().string();
    o.corpus_dir = corpus_dir().string();
    o.checkpoint_seconds = 0;
    return o;
  }

  static const ServedModel& Demo() { return **store_->Find("demo"); }

  // Runs `work` on the scheduler's worker, where every use of the backend runs.
  static void OnWorker(const std::function<void()>& work) {
    auto done = std::make_shared<std::promise<void>>();
    auto task = std::make_shared<FunctionTask>(
        TaskInfo{.owner = "(test)", .rpc = "reference"},
        [&work, done] {
          work();
          done->set_value();
        },
        [done](const absl::Status&) { done->set_value(); });
    ASSERT_TRUE(scheduler_->Submit(task).ok());
    done->get_future().wait();
  }

  // The scan computed with the engine directly: the job's contexts built here, ScanContexts over
  // the job's batches, EndScanPass after each pass, TargetResult for every target and the logit
  // effects as the job adds them.
  std::vector<pb::ScanTargetResult> RunEngine(const pb::StartScanRequest& request) const {
    std::vector<pb::ScanTargetResult> out;
    absl::StatusOr<ResolvedScan> scan = ResolveScan(*store_, request);
    EXPECT_TRUE(scan.ok()) << scan.status();
    if (!scan.ok()) return out;
    const ServedModel& served = *scan->served;
    ContextOptions options{.context_length = scan->plan.options.context_length,
                           .vocab_size = static_cast<int32_t>(served.model->config().vocab_size),
                           .max_contexts = request.corpus().max_contexts() > 0
                                               ? request.corpus().max_contexts()
                                               : ScanJobsOptions().max_contexts};
    if (!request.no_bos()) options.bos = *served.tokenizer->bos_token_id();
    absl::StatusOr<Tensor> contexts =
        BuildContexts(request.corpus(), corpus_dir().string(), served.tokenizer.get(), options);
    EXPECT_TRUE(contexts.ok()) << contexts.status();
    if (!contexts.ok()) return out;
    absl::Status status;
    OnWorker([&] {
      const int64_t n = contexts->dim(0);
      ScanState state = NewScanState(*served.model, scan->plan);
      while (state.pass != 3) {
        for (int64_t c0 = 0; c0 < n; c0 += scan->batch_contexts) {
          const int64_t end = std::min<int64_t>(n, c0 + scan->batch_contexts);
          status = ScanContexts(*served.model, scan->plan, contexts->Slice0(c0, end), state);
          if (!status.ok()) return;
        }
        EndScanPass(scan->plan, state);
      }
      pb::ScanResults results;
      for (int64_t t = 0; t < scan->targets; ++t) {
        *results.add_targets() =
            TargetResult(*scan, state.targets[t], t, *contexts, served.tokenizer.get());
      }
      const int32_t k = request.logit_k() == 0 ? 10 : request.logit_k() < 0 ? 0 : request.logit_k();
      status = AddLogitEffects(*scan, k, results);
      out = TargetsOf(results);
    });
    EXPECT_TRUE(status.ok()) << status;
    return out;
  }

  // Starts `request` as `caller` and waits for it to end; the final info.
  static pb::JobInfo RunToEnd(ScanJobs& jobs, const JobCaller& caller,
                              const pb::StartScanRequest& request) {
    absl::StatusOr<pb::JobInfo> started = jobs.Start(caller, request);
    EXPECT_TRUE(started.ok()) << started.status();
    if (!started.ok()) return {};
    return WaitForEnd(jobs, caller, started->job_id());
  }

  static pb::JobInfo WaitForEnd(ScanJobs& jobs, const JobCaller& caller, const std::string& id) {
    Watcher watcher(jobs, caller, id);
    EXPECT_TRUE(watcher.status().ok()) << watcher.status();
    std::optional<pb::JobInfo> info = watcher.WaitForEnd();
    EXPECT_TRUE(info.has_value()) << "job " << id << " did not end";
    return info.value_or(pb::JobInfo());
  }

  static pb::ScanResults AllResults(ScanJobs& jobs, const JobCaller& caller,
                                    const std::string& id) {
    pb::GetScanResultsRequest r;
    r.set_job_id(id);
    r.set_target_limit(1000);
    absl::StatusOr<pb::ScanResults> results = jobs.Results(caller, r);
    EXPECT_TRUE(results.ok()) << results.status();
    return results.value_or(pb::ScanResults());
  }

  // Starts `request` and returns once its first batch of `pass` is done (the job running, with a
  // checkpoint on disk).
  static std::string StartAndWaitForProgress(ScanJobs& jobs, const pb::StartScanRequest& request,
                                             int pass) {
    absl::StatusOr<pb::JobInfo> started = jobs.Start(kAlice, request);
    EXPECT_TRUE(started.ok()) << started.status();
    if (!started.ok()) return "";
    Watcher watcher(jobs, kAlice, started->job_id());
    std::optional<pb::JobInfo> info = watcher.WaitFor([pass](const pb::JobInfo& i) {
      return i.state() == pb::JOB_RUNNING && i.current_pass() == pass && i.contexts_done() > 0;
    });
    EXPECT_TRUE(info.has_value());
    if (info) {
      EXPECT_EQ(info->state(), pb::JOB_RUNNING) << "the job ended before it could be stopped";
    }
    return started->job_id();
  }

  // The job's state in its job.pb once it is `state`: a watcher may see a job end before the
  // runner has written its record, so this waits (a few seconds at most) for the file.
  pb::JobState StoredStateOnceItIs(const std::string& id, pb::JobState state) const {
    pb::JobState stored = pb::JOB_STATE_UNSPECIFIED;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    do {
      pb::StoredScanJob job;
      absl::StatusOr<std::string> bytes = ReadFileToString(jobs_dir() / id / "job.pb");
      if (bytes.ok() && job.ParseFromString(*bytes)) stored = job.info().state();
      if (stored == state) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    } while (std::chrono::steady_clock::now() < deadline);
    return stored;
  }

  pb::StoredScanJob StoredJob(const std::string& id) const {
    pb::StoredScanJob stored;
    absl::StatusOr<std::string> bytes = ReadFileToString(jobs_dir() / id / "job.pb");
    EXPECT_TRUE(bytes.ok()) << bytes.status();
    if (bytes.ok()) {
      EXPECT_TRUE(stored.ParseFromString(*bytes));
    }
    return stored;
  }

  static inline ModelStore* store_ = nullptr;
  static inline Scheduler* scheduler_ = nullptr;
  fs::path root_;
};

// ---- results equal the engine ----

TEST_F(ScanJobsTest, UploadedTokenScanEqualsTheEngineRunDirectly) {
  pb::StartScanRequest request = TokenScan(RandomDocs(40, 5, 40, 1), 16);
  SmallOptions(request);
  request.set_batch_contexts(7);  // the last batch of each pass is partial
  AddNeurons(request, "blocks.1.mlp.hook_post", {3, 100, 511});
  AddDirection(request, "probe", "blocks.2.hook_resid_mid", RandomVector(128, 2));
  AddNeurons(request, "blocks.0.hook_resid_post", {0, 64});

  const std::vector<pb::ScanTargetResult> expected = RunEngine(request);
  ASSERT_EQ(expected.size(), 6u);
  ScanJobs jobs(*store_, *scheduler_, Options());
  const pb::JobInfo info = RunToEnd(jobs, kAlice, request);
  ASSERT_EQ(info.state(), pb::JOB_SUCCEEDED) << info.error();
  const int64_t contexts =
      static_cast<int64_t>(ExpectedContexts(RandomDocs(40, 5, 40, 1), 16, kBos).size() / 16);
  EXPECT_EQ(info.contexts_total(), contexts);
  EXPECT_EQ(info.passes(), 2);
  EXPECT_EQ(info.current_pass(), 2);
  EXPECT_EQ(info.contexts_done(), contexts);
  EXPECT_EQ(info.tokens_total(), 2 * contexts * 16);
  EXPECT_EQ(info.tokens_done(), info.tokens_total());
  EXPECT_EQ(info.targets(), 6);
  EXPECT_EQ(info.owner(), "alice");
  EXPECT_EQ(info.model(), "demo");
  EXPECT_EQ(info.resumed(), 0);
  EXPECT_EQ(info.eta_seconds(), 0);

  const pb::ScanResults results = AllResults(jobs, kAlice, info.job_id());
  EXPECT_EQ(results.targets_total(), 6);
  EXPECT_EQ(results.job().state(), pb::JOB_SUCCEEDED);
  ExpectSameTargets(results.targets(), expected, "job vs engine");

  // The things a reader relies on, beyond equality with the engine.
  ASSERT_EQ(results.targets_size(), 6);
  EXPECT_EQ(results.targets(0).name(), "blocks.1.mlp.hook_post[3]");
  EXPECT_EQ(results.targets(0).kind(), "neuron");
  EXPECT_EQ(results.targets(3).name(), "probe");
  EXPECT_EQ(results.targets(3).kind(), "direction");
  EXPECT_EQ(results.targets(3).unit(), 0);
  EXPECT_EQ(results.targets(5).unit(), 64);
  for (const pb::ScanTargetResult& t : results.targets()) {
    SCOPED_TRACE(t.name());
    EXPECT_EQ(t.stats().count(), contexts * 15);  // BOS is not counted
    EXPECT_EQ(t.top_size(), 5);
    EXPECT_EQ(t.random_size(), 4);
    EXPECT_EQ(t.histogram_edges_size(), 9);
    EXPECT_EQ(t.top_logits_size(), 10);  // logit_k 0: 10
    for (const pb::ScanRecord& r : t.top()) {
      EXPECT_EQ(r.tokens_size(), r.activations_size());
      EXPECT_EQ(r.token_strings_size(), r.tokens_size());
      EXPECT_GE(r.position(), 1);
    }
  }

  // Pages.
  pb::GetScanResultsRequest page;
  page.set_job_id(info.job_id());
  page.set_target_offset(2);
  page.set_target_limit(3);
  absl::StatusOr<pb::ScanResults> paged = jobs.Results(kAlice, page);
  ASSERT_TRUE(paged.ok()) << paged.status();
  EXPECT_EQ(paged->targets_total(), 6);
  ExpectSameTargets(paged->targets(), {expected.begin() + 2, expected.begin() + 5}, "page [2, 5)");
  page.set_target_offset(5);
  page.set_target_limit(0);  // 0: 64, cut at the end
  paged = jobs.Results(kAlice, page);
  ASSERT_TRUE(paged.ok()) << paged.status();
  ExpectSameTargets(paged->targets(), {expected.begin() + 5, expected.end()}, "page [5, 6)");
  page.set_target_offset(6);
  paged = jobs.Results(kAlice, page);
  ASSERT_TRUE(paged.ok()) << paged.status();
  EXPECT_EQ(paged->targets_size(), 0);
}

TEST_F(ScanJobsTest, HeadTargetsAreNamedAndEqualTheEngine) {
  pb::StartScanRequest request = TokenScan(RandomDocs(20, 5, 40, 8), 12);
  SmallOptions(request);
  auto add = [&](int32_t layer, pb::HeadTargets::Measure measure, int32_t key,
                 std::vector<int32_t> heads) {
    auto* h = request.add_targets()->mutable_heads();
    h->set_layer(layer);
    h->set_measure(measure);
    h->set_key(key);
    for (int32_t i : heads) h->add_heads(i);
  };
  add(2, pb::HeadTargets::OUTPUT_NORM, 0, {3, 1});
  add(1, pb::HeadTargets::ATTENTION_TO_POSITION, 0, {0});
  add(0, pb::HeadTargets::ATTENTION_TO_OFFSET, 1, {});  // every head
  AddNeurons(request, "blocks.1.mlp.hook_post", {7});

  const std::vector<pb::ScanTargetResult> expected = RunEngine(request);
  ASSERT_EQ(expected.size(), 8u);
  ScanJobs jobs(*store_, *scheduler_, Options());
  const pb::JobInfo info = RunToEnd(jobs, kAlice, request);
  ASSERT_EQ(info.state(), pb::JOB_SUCCEEDED) << info.error();
  const pb::ScanResults results = AllResults(jobs, kAlice, info.job_id());
  ExpectSameTargets(results.targets(), expected, "job vs engine");
  ASSERT_EQ(results.targets_size(), 8);
  EXPECT_EQ(results.targets(0).name(), "L2H3 output norm");
  EXPECT_EQ(results.targets(0).kind(), "head_output_norm");
  EXPECT_EQ(results.targets(0).hook(), "blocks.2.attn.hook_result");
  EXPECT_EQ(results.targets(0).unit(), 3);
  EXPECT_EQ(results.targets(2).name(), "L1H0 attention to position 0");
  EXPECT_EQ(results.targets(2).kind(), "head_attention");
  EXPECT_EQ(results.targets(2).hook(), "blocks.1.attn.hook_pattern");
  EXPECT_EQ(results.targets(6).name(), "L0H3 attention to 1 back");
  EXPECT_EQ(results.targets(7).name(), "blocks.1.mlp.hook_post[7]");
  for (int i = 0; i < 7; ++i) {
    const pb::ScanTargetResult& t = results.targets(i);
    SCOPED_TRACE(t.name());
    EXPECT_EQ(t.top_logits_size(), 0);  // a norm or an attention weight has no output direction
    EXPECT_GT(t.stats().max(), 0);
    EXPECT_GE(t.stats().min(), 0);
    if (t.kind() == "head_attention") {
      EXPECT_LE(t.stats().max(), 1.0f);
    }
  }
  EXPECT_EQ(results.targets(7).top_logits_size(), 10);
}

TEST_F(ScanJobsTest, OnePassRawContextScanEqualsTheEngine) {
  // no_bos, no second pass (no quantiles, no histogram), no logit effects, windows to the edges.
  pb::StartScanRequest request = TokenScan(RandomDocs(10, 10, 60, 3), 8);
  request.set_no_bos(true);
  request.set_quantile_bins(-1);
  request.set_histogram_bins(-1);
  request.set_top_k(3);
  request.set_random_k(-1);
  request.set_logit_k(-1);
  request.set_batch_contexts(5);
  AddNeurons(request, "blocks.3.mlp.hook_post", {1, 2});
  const std::vector<pb::ScanTargetResult> expected = RunEngine(request);
  ScanJobs jobs(*store_, *scheduler_, Options(/*persistent=*/false));
  const pb::JobInfo info = RunToEnd(jobs, kAlice, request);
  ASSERT_EQ(info.state(), pb::JOB_SUCCEEDED) << info.error();
  EXPECT_EQ(info.passes(), 1);
  const pb::ScanResults results = AllResults(jobs, kAlice, info.job_id());
  ExpectSameTargets(results.targets(), expected, "one pass");
  for (const pb::ScanTargetResult& t : results.targets()) {
    EXPECT_EQ(t.stats().count(), info.contexts_total() * 8);  // every position counted
    EXPECT_EQ(t.random_size(), 0);
    EXPECT_EQ(t.quantiles_size(), 0);
    EXPECT_EQ(t.histogram_counts_size(), 0);
    EXPECT_EQ(t.top_logits_size(), 0);
    for (const pb::ScanRecord& r : t.top()) EXPECT_EQ(r.tokens_size(), 8);
  }
}

// ---- contexts ----

TEST_F(ScanJobsTest, UploadedDocumentsAreCutAsDocumented) {
  const Tokenizer* tokenizer = Demo().tokenizer.get();
  ASSERT_NE(tokenizer, nullptr);
  ASSERT_EQ(tokenizer->bos_token_id(), kBos);
  const Docs docs = {{5, 6, 7}, {8, 9}, {10, 11, 12, 13, 14}, {15}};
  pb::ScanCorpus corpus = TokenScan(docs, 4).corpus();
  ContextOptions bos{.context_length = 4, .bos = kBos, .vocab_size = kVocab};

  // [BOS] + runs of 3 of the stream 5 6 7 | 8 9 B | 10 11 12 | 13 14 B | 15: no separator
  // where a context opens (its BOS separates), the partial "15" run dropped.
  absl::StatusOr<Tensor> got = BuildContexts(corpus, "", tokenizer, bos);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->shape(), (Shape{4, 4}));
  EXPECT_THAT(Ids(*got), ::testing::ElementsAre(0, 5, 6, 7,    //
                                                0, 8, 9, 0,    //
                                                0, 10, 11, 12,  //
                                                0, 13, 14, 0));
  EXPECT_EQ(Ids(*got), ExpectedContexts(docs, 4, kBos));

  // max_contexts.
  ContextOptions two = bos;
  two.max_contexts = 2;
  got = BuildContexts(corpus, "", tokenizer, two);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(Ids(*got), ::testing::ElementsAre(0, 5, 6, 7, 0, 8, 9, 0));

  // no_bos: raw runs of 4 of 5 .. 15, the partial "13 14 15" dropped.
  ContextOptions raw{.context_length = 4, .vocab_size = kVocab};
  got = BuildContexts(corpus, "", tokenizer, raw);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(Ids(*got), ::testing::ElementsAre(5, 6, 7, 8, 9, 10, 11, 12));

  // Texts are tokenised without special tokens and come before token_sequences.
  pb::ScanCorpus texts;
  texts.mutable_documents()->add_texts("Alice went to the market.");
  texts.mutable_documents()->add_texts("Bob stayed home and read.");
  *texts.mutable_documents()->add_token_sequences() = corpus.documents().token_sequences(0);
  Docs text_docs;
  for (const std::string& t : texts.documents().texts()) {
    auto ids = tokenizer->Encode(t, {.add_special_tokens = false, .prepend_bos = false});
    ASSERT_TRUE(ids.ok()) << ids.status();
    text_docs.push_back(*ids);
  }
  text_docs.push_back(docs[0]);
  ContextOptions five{.context_length = 5, .bos = kBos, .vocab_size = kVocab};
  got = BuildContexts(texts, "", tokenizer, five);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(Ids(*got), ExpectedContexts(text_docs, 5, kBos));
  EXPECT_GT(got->dim(0), 1);

  // Through a job: the contexts it counts and the tokens its records show.
  pb::StartScanRequest request = TokenScan(docs, 4);
  request.set_top_k(10);
  request.set_logit_k(-1);
  AddNeurons(request, "blocks.0.mlp.hook_post", {0});
  ScanJobs jobs(*store_, *scheduler_, Options(/*persistent=*/false));
  pb::JobInfo info = RunToEnd(jobs, kAlice, request);
  ASSERT_EQ(info.state(), pb::JOB_SUCCEEDED) << info.error();
  EXPECT_EQ(info.contexts_total(), 4);
  const std::vector<int32_t> expected = ExpectedContexts(docs, 4, kBos);
  pb::ScanResults results = AllResults(jobs, kAlice, info.job_id());
  ASSERT_EQ(results.targets_size(), 1);
  ASSERT_EQ(results.targets(0).top_size(), 4);  // every context is a record
  for (const pb::ScanRecord& r : results.targets(0).top()) {
    ASSERT_EQ(r.window_start(), 0);
    ASSERT_EQ(r.tokens_size(), 4);
    EXPECT_EQ(std::vector<int32_t>(r.tokens().begin(), r.tokens().end()),
              std::vector<int32_t>(expected.begin() + r.context() * 4,
                                   expected.begin() + (r.context() + 1) * 4))
        << "context " << r.context();
  }
  request.set_no_bos(true);
  info = RunToEnd(jobs, kAlice, request);
  ASSERT_EQ(info.state(), pb::JOB_SUCCEEDED) << info.error();
  EXPECT_EQ(info.contexts_total(), 2);
  request.set_no_bos(false);
  request.mutable_corpus()->set_max_contexts(3);
  info = RunToEnd(jobs, kAlice, request);
  ASSERT_EQ(info.state(), pb::JOB_SUCCEEDED) << info.error();
  EXPECT_EQ(info.contexts_total(), 3);
}

TEST_F(ScanJobsTest, CorpusFilesAreCutAsDocumented) {
  const Tokenizer* tokenizer = Demo().tokenizer.get();
  const std::vector<std::string> lines = {"The cat sat on the mat.", "Alice and Bob went home.",
                                          "It was a long day, and then the night came.",
                                          "One more line of text for the corpus."};
  auto encode = [&](const std::string& text) {
    auto ids = tokenizer->Encode(text, {.add_special_tokens = false, .prepend_bos = false});
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.value_or(std::vector<int32_t>());
  };
  Docs docs;
  for (const std::string& line : lines) docs.push_back(encode(line));

  // jsonl with text_field; a blank line is no document.
  std::string jsonl;
  for (size_t i = 0; i < lines.size(); ++i) {
    jsonl += R"({"id": )" + std::to_string(i) + R"(, "body": ")" + lines[i] + "\"}\n";
    if (i == 1) jsonl += "\n";
  }
  WriteFile(corpus_dir() / "docs.jsonl", jsonl);
  // .txt, with a CRLF line and a blank line.
  WriteFile(corpus_dir() / "sub" / "docs.txt",
            lines[0] + "\r\n" + lines[1] + "\n\n" + lines[2] + "\n" + lines[3] + "\n");

  const std::string dir = corpus_dir().string();
  for (int32_t len : {4, 7}) {
    for (bool with_bos : {true, false}) {
      SCOPED_TRACE("context_length " + std::to_string(len) + (with_bos ? ", BOS" : ", no BOS"));
      ContextOptions o{.context_length = len, .vocab_size = kVocab};
      if (with_bos) o.bos = kBos;
      const std::optional<int32_t> bos = o.bos;
      pb::ScanCorpus jsonl_corpus;
      jsonl_corpus.set_path("docs.jsonl");
      jsonl_corpus.set_text_field("body");
      absl::StatusOr<Tensor> got = BuildContexts(jsonl_corpus, dir, tokenizer, o);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(Ids(*got), ExpectedContexts(docs, len, bos));

      pb::ScanCorpus txt;
      txt.set_path("sub/docs.txt");
      got = BuildContexts(txt, dir, tokenizer, o);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(Ids(*got), ExpectedContexts(docs, len, bos));

      txt.set_max_contexts(2);
      o.max_contexts = 2;
      got = BuildContexts(txt, dir, tokenizer, o);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(Ids(*got), ExpectedContexts(docs, len, bos, 2));
    }
  }

  // .npy: a 1-D int32 stream is one document; a 2-D int64 array is contexts as given (no BOS is
  // added to its rows).
  std::vector<int32_t> stream(23);
  std::iota(stream.begin(), stream.end(), 100);
  WriteFile(corpus_dir() / "stream.npy", Npy("<i4", {23}, Bytes(stream)));
  std::vector<int64_t> rows(3 * 5);
  std::iota(rows.begin(), rows.end(), 500);
  WriteFile(corpus_dir() / "rows.npy", Npy("<i8", {3, 5}, Bytes(rows)));
  WriteFile(corpus_dir() / "rows32.npy",
            Npy("<i4", {3, 5}, Bytes(std::vector<int32_t>(rows.begin(), rows.end()))));
  WriteFile(corpus_dir() / "stream64.npy",
            Npy("<i8", {23}, Bytes(std::vector<int64_t>(stream.begin(), stream.end()))));

  pb::ScanCorpus npy;
  npy.set_path("stream.npy");
  ContextOptions bos5{.context_length = 5, .bos = kBos, .vocab_size = kVocab};
  absl::StatusOr<Tensor> got = BuildContexts(npy, dir, nullptr, bos5);  // ids need no tokenizer
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(Ids(*got), ExpectedContexts({stream}, 5, kBos));
  EXPECT_EQ(got->dim(0), 5);  // 23 ids in runs of 4
  npy.set_path("stream64.npy");
  ContextOptions raw5{.context_length = 5, .vocab_size = kVocab};
  got = BuildContexts(npy, dir, nullptr, raw5);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(Ids(*got), ExpectedContexts({stream}, 5, std::nullopt));
  EXPECT_EQ(got->dim(0), 4);

  for (const char* name : {"rows.npy", "rows32.npy"}) {
    SCOPED_TRACE(name);
    npy.set_path(name);
    got = BuildContexts(npy, dir, nullptr, bos5);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->shape(), (Shape{3, 5}));
    EXPECT_EQ(Ids(*got), std::vector<int32_t>(rows.begin(), rows.end()));
    ContextOptions two = bos5;
    two.max_contexts = 2;
    got = BuildContexts(npy, dir, nullptr, two);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(Ids(*got), std::vector<int32_t>(rows.begin(), rows.begin() + 10));
  }

  // Through a job: a corpus file under corpus_dir.
  pb::StartScanRequest request;
  request.set_model("demo");
  request.set_context_length(4);
  request.mutable_corpus()->set_path("sub/docs.txt");
  request.set_logit_k(-1);
  AddNeurons(request, "blocks.0.mlp.hook_post", {0});
  ScanJobs jobs(*store_, *scheduler_, Options(/*persistent=*/false));
  const pb::JobInfo info = RunToEnd(jobs, kAlice, request);
  ASSERT_EQ(info.state(), pb::JOB_SUCCEEDED) << info.error();
  EXPECT_EQ(info.contexts_total(),
            static_cast<int64_t>(ExpectedContexts(docs, 4, kBos).size() / 4));
}

// ---- resuming ----

class ScanJobsResumeTest : public ScanJobsTest, public ::testing::WithParamInterface<int> {};

// Enough contexts in small batches that a stop lands mid-pass.
pb::StartScanRequest LongScan() {
  pb::StartScanRequest request = TokenScan(RandomDocs(10, 100, 140, 11), 16);
  SmallOptions(request);
  request.mutable_corpus()->set_max_contexts(64);  // 16 batches a pass
  request.set_batch_contexts(4);
  request.set_logit_k(3);
  AddNeurons(request, "blocks.1.mlp.hook_post", {7, 300});
  AddDirection(request, "d", "blocks.0.hook_resid_post", RandomVector(128, 5));
  return request;
}

TEST_P(ScanJobsResumeTest, StoppedJobResumesToTheUninterruptedResults) {
  const int stop_in_pass = GetParam();
  const pb::StartScanRequest request = LongScan();
  std::vector<pb::ScanTargetResult> uninterrupted;
  {
    ScanJobs jobs(*store_, *scheduler_, Options(/*persistent=*/false));
    const pb::JobInfo info = RunToEnd(jobs, kAlice, request);
    ASSERT_EQ(info.state(), pb::JOB_SUCCEEDED) << info.error();
    EXPECT_EQ(info.contexts_total(), 64);
    uninterrupted = TargetsOf(AllResults(jobs, kAlice, info.job_id()));
  }
  ASSERT_EQ(uninterrupted.size(), 3u);

  std::string id;
  {
    ScanJobs jobs(*store_, *scheduler_, Options());
    ASSERT_TRUE(jobs.Recover().ok());
    id = StartAndWaitForProgress(jobs, request, stop_in_pass);
    ASSERT_FALSE(id.empty());
    jobs.Stop();
    // Left RUNNING on disk, with a checkpoint.
    const pb::StoredScanJob stored = StoredJob(id);
    EXPECT_EQ(stored.info().state(), pb::JOB_RUNNING);
    EXPECT_EQ(stored.info().current_pass(), stop_in_pass);
    EXPECT_GT(stored.info().contexts_done(), 0);
    EXPECT_TRUE(fs::exists(jobs_dir() / id / "state.bin"));
    // A stopped ScanJobs takes no new job.
    EXPECT_EQ(jobs.Start(kAlice, request).status().code(), absl::StatusCode::kUnavailable);
  }
  {
    ScanJobs jobs(*store_, *scheduler_, Options());
    ASSERT_TRUE(jobs.Recover().ok());
    const pb::JobInfo info = WaitForEnd(jobs, kAlice, id);
    ASSERT_EQ(info.state(), pb::JOB_SUCCEEDED) << info.error();
    EXPECT_EQ(info.resumed(), 1);
    EXPECT_EQ(info.contexts_total(), 64);
    EXPECT_EQ(info.tokens_done(), info.tokens_total());
    ExpectSameTargets(AllResults(jobs, kAlice, id).targets(), uninterrupted, "resumed");
  }
  {
    // A later server lists the finished job and reads its results back from jobs_dir.
    ScanJobs jobs(*store_, *scheduler_, Options());
    ASSERT_TRUE(jobs.Recover().ok());
    absl::StatusOr<pb::JobInfo> info = jobs.Info(kAlice, id);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->state(), pb::JOB_SUCCEEDED);
    EXPECT_EQ(info->resumed(), 1);
    ASSERT_EQ(jobs.List(kAlice).size(), 1u);
    ExpectSameTargets(AllResults(jobs, kAlice, id).targets(), uninterrupted, "read back");
  }
}

INSTANTIATE_TEST_SUITE_P(StopInPass, ScanJobsResumeTest, ::testing::Values(1, 2),
                         [](const auto& info) { return "Pass" + std::to_string(info.param); });

TEST_F(ScanJobsTest, CorruptCheckpointStartsOver) {
  const pb::StartScanRequest request = LongScan();
  std::vector<pb::ScanTargetResult> uninterrupted = RunEngine(request);
  std::string id;
  {
    ScanJobs jobs(*store_, *scheduler_, Options());
    ASSERT_TRUE(jobs.Recover().ok());
    id = StartAndWaitForProgress(jobs, request, 1);
    ASSERT_FALSE(id.empty());
    jobs.Stop();
  }
  const fs::path state = jobs_dir() / id / "state.bin";
  absl::StatusOr<std::string> bytes = ReadFileToString(state);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  WriteFile(state, bytes->substr(0, bytes->size() / 2));  // truncated
  {
    ScanJobs jobs(*store_, *scheduler_, Options());
    ASSERT_TRUE(jobs.Recover().ok());
    const pb::JobInfo info = WaitForEnd(jobs, kAlice, id);
    ASSERT_EQ(info.state(), pb::JOB_SUCCEEDED) << info.error();
    EXPECT_EQ(info.resumed(), 1);
    ExpectSameTargets(AllResults(jobs, kAlice, id).targets(), uninterrupted, "started over");
    id = StartAndWaitForProgress(jobs, request, 1);
    jobs.Stop();
  }
  WriteFile(jobs_dir() / id / "state.bin", "not a scan state at all");
  {
    ScanJobs jobs(*store_, *scheduler_, Options());
    ASSERT_TRUE(jobs.Recover().ok());
    const pb::JobInfo info = WaitForEnd(jobs, kAlice, id);
    ASSERT_EQ(info.state(), pb::JOB_SUCCEEDED) << info.error();
    ExpectSameTargets(AllResults(jobs, kAlice, id).targets(), uninterrupted, "garbage state");
  }
}

// A job keeps its contexts in jobs_dir (contexts.bin) when it starts: resuming it and reading
// its results need no corpus file, which may have changed or gone since. A job whose contexts
// file is damaged fails with the reason, and its files go.
TEST_F(ScanJobsTest, RecoveredJobsReadTheirContextsFromJobsDir) {
  std::string text;
  for (int i = 0; i < 40; ++i) {
    text += "Alice and Bob went to the market to buy " + std::to_string(i) + " apples and pears.\n";
  }
  WriteFile(corpus_dir() / "docs.txt", text);
  pb::StartScanRequest request;
  request.set_model("demo");
  request.set_context_length(8);
  request.mutable_corpus()->set_path("docs.txt");
  request.mutable_corpus()->set_max_contexts(40);
  request.set_batch_contexts(2);
  request.set_logit_k(2);
  AddNeurons(request, "blocks.0.mlp.hook_post", {1});
  const std::vector<pb::ScanTargetResult> expected = RunEngine(request);
  std::string resumed, damaged;
  {
    ScanJobs jobs(*store_, *scheduler_, Options());
    resumed = StartAndWaitForProgress(jobs, request, 1);
    jobs.Stop();
  }
  {
    ScanJobs jobs(*store_, *scheduler_, Options());
    damaged = StartAndWaitForProgress(jobs, request, 1);
    jobs.Stop();
  }
  ASSERT_FALSE(resumed.empty());
  ASSERT_FALSE(damaged.empty());
  EXPECT_TRUE(fs::exists(jobs_dir() / resumed / "contexts.bin"));
  WriteFile(corpus_dir() / "docs.txt", "Something else entirely, and much shorter than before.\n");
  WriteFile(jobs_dir() / damaged / "contexts.bin", "not contexts");
  {
    ScanJobs jobs(*store_, *scheduler_, Options());
    ASSERT_TRUE(jobs.Recover().ok());
    pb::JobInfo info = WaitForEnd(jobs, kAlice, resumed);
    ASSERT_EQ(info.state(), pb::JOB_SUCCEEDED) << info.error();
    EXPECT_EQ(info.resumed(), 1);
    ExpectSameTargets(AllResults(jobs, kAlice, resumed).targets(), expected, "resumed");

    info = WaitForEnd(jobs, kAlice, damaged);
    EXPECT_EQ(info.state(), pb::JOB_FAILED);
    EXPECT_THAT(info.error(), HasSubstr("not a Glassbox contexts file"));
    EXPECT_EQ(StoredStateOnceItIs(damaged, pb::JOB_FAILED), pb::JOB_FAILED);
    EXPECT_FALSE(fs::exists(jobs_dir() / damaged / "state.bin"));
    EXPECT_FALSE(fs::exists(jobs_dir() / damaged / "contexts.bin"));
    pb::GetScanResultsRequest r;
    r.set_job_id(damaged);
    const absl::Status status = jobs.Results(kAlice, r).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("is JOB_FAILED"));
  }
  fs::remove(corpus_dir() / "docs.txt");
  {
    ScanJobs jobs(*store_, *scheduler_, Options());
    ASSERT_TRUE(jobs.Recover().ok());
    ExpectSameTargets(AllResults(jobs, kAlice, resumed).targets(), expected, "read back");
  }
}

TEST_F(ScanJobsTest, UnreadableJobFilesAreSkipped) {
  WriteFile(jobs_dir() / "scan-broken" / "job.pb", "\xff\xff garbage");
  fs::create_directories(jobs_dir() / "scan-empty");
  ScanJobs jobs(*store_, *scheduler_, Options());
  ASSERT_TRUE(jobs.Recover().ok());
  EXPECT_TRUE(jobs.List(kAdmin).empty());
}

// ---- ownership ----

TEST_F(ScanJobsTest, JobsArePrivateToTheirOwner) {
  pb::StartScanRequest request = TokenScan(RandomDocs(5, 10, 30, 4), 8);
  request.set_logit_k(-1);
  AddNeurons(request, "blocks.0.mlp.hook_post", {1});
  ScanJobs jobs(*store_, *scheduler_, Options());
  const pb::JobInfo info = RunToEnd(jobs, kAlice, request);
  ASSERT_EQ(info.state(), pb::JOB_SUCCEEDED) << info.error();
  const std::string& id = info.job_id();
  pb::GetScanResultsRequest results;
  results.set_job_id(id);

  auto expect_not_found = [&](const absl::Status& status, const std::string& what) {
    EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << what << ": " << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("no job \"" + id + "\"")) << what;
  };
  expect_not_found(jobs.Info(kBob, id).status(), "Info");
  expect_not_found(jobs.Cancel(kBob, id).status(), "Cancel");
  expect_not_found(jobs.Results(kBob, results).status(), "Results");
  {
    Watcher watcher(jobs, kBob, id);
    expect_not_found(watcher.status(), "Subscribe");
  }
  EXPECT_TRUE(jobs.List(kBob).empty());
  // The open server's anonymous owner is another owner too.
  expect_not_found(jobs.Info(JobCaller{}, id).status(), "Info as \"\"");

  // The owner and an admin see it.
  ASSERT_EQ(jobs.List(kAlice).size(), 1u);
  EXPECT_EQ(jobs.List(kAlice)[0].job_id(), id);
  ASSERT_EQ(jobs.List(kAdmin).size(), 1u);
  EXPECT_EQ(jobs.List(kAdmin)[0].owner(), "alice");
  absl::StatusOr<pb::JobInfo> seen = jobs.Info(kAdmin, id);
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(seen->state(), pb::JOB_SUCCEEDED);
  absl::StatusOr<pb::ScanResults> as_admin = jobs.Results(kAdmin, results);
  ASSERT_TRUE(as_admin.ok()) << as_admin.status();
  ExpectSameTargets(as_admin->targets(), TargetsOf(AllResults(jobs, kAlice, id)), "admin");
  EXPECT_EQ(WaitForEnd(jobs, kAdmin, id).state(), pb::JOB_SUCCEEDED);
  // Cancelling an ended job changes nothing.
  absl::StatusOr<pb::JobInfo> cancelled = jobs.Cancel(kAdmin, id);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), pb::JOB_SUCCEEDED);

  // Bob's own job is his alone; an unknown id is NOT_FOUND for everyone.
  const pb::JobInfo bobs = RunToEnd(jobs, kBob, request);
  EXPECT_EQ(jobs.List(kBob).size(), 1u);
  EXPECT_EQ(jobs.List(kAlice).size(), 1u);
  EXPECT_EQ(jobs.List(kAdmin).size(), 2u);
  EXPECT_EQ(jobs.Info(kAlice, bobs.job_id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(jobs.Info(kAdmin, "scan-000000000000").status().code(), absl::StatusCode::kNotFound);
}

// ---- cancelling ----

TEST_F(ScanJobsTest, CancelQueuedAndRunningJobs) {
  const pb::StartScanRequest request = LongScan();
  // Two jobs stopped mid-scan by two servers over one jobs_dir: both RUNNING with checkpoints.
  std::string older, newer;
  {
    ScanJobs jobs(*store_, *scheduler_, Options());
    older = StartAndWaitForProgress(jobs, request, 1);
    jobs.Stop();
  }
  {
    ScanJobs jobs(*store_, *scheduler_, Options());
    newer = StartAndWaitForProgress(jobs, request, 1);
    jobs.Stop();
  }
  ASSERT_FALSE(older.empty());
  ASSERT_FALSE(newer.empty());
  ASSERT_TRUE(fs::exists(jobs_dir() / older / "state.bin"));
  ASSERT_TRUE(fs::exists(jobs_dir() / newer / "state.bin"));
  ASSERT_TRUE(fs::exists(jobs_dir() / newer / "contexts.bin"));

  ScanJobs jobs(*store_, *scheduler_, Options());
  DeviceHold hold(*scheduler_);
  ASSERT_TRUE(jobs.Recover().ok());
  // The runner takes the older job and waits on the held device; the newer one stays queued.
  {
    Watcher watcher(jobs, kAlice, older);
    ASSERT_TRUE(watcher.WaitFor([](const pb::JobInfo& i) { return i.state() == pb::JOB_RUNNING; }));
  }
  absl::StatusOr<pb::JobInfo> queued = jobs.Info(kAlice, newer);
  ASSERT_TRUE(queued.ok()) << queued.status();
  ASSERT_EQ(queued->state(), pb::JOB_QUEUED);

  absl::StatusOr<pb::JobInfo> cancelled = jobs.Cancel(kAlice, newer);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), pb::JOB_CANCELLED);
  EXPECT_FALSE(fs::exists(jobs_dir() / newer / "state.bin"));
  EXPECT_FALSE(fs::exists(jobs_dir() / newer / "contexts.bin"));
  EXPECT_EQ(StoredJob(newer).info().state(), pb::JOB_CANCELLED);
  EXPECT_EQ(WaitForEnd(jobs, kAlice, newer).state(), pb::JOB_CANCELLED);

  cancelled = jobs.Cancel(kAlice, older);  // running: it ends within its batch
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  hold.Release();
  const pb::JobInfo ended = WaitForEnd(jobs, kAlice, older);
  EXPECT_EQ(ended.state(), pb::JOB_CANCELLED);
  EXPECT_EQ(StoredStateOnceItIs(older, pb::JOB_CANCELLED), pb::JOB_CANCELLED);
  EXPECT_FALSE(fs::exists(jobs_dir() / older / "state.bin"));  // removed before job.pb is written
  EXPECT_FALSE(fs::exists(jobs_dir() / older / "contexts.bin"));

  for (const std::string& id : {older, newer}) {
    pb::GetScanResultsRequest r;
    r.set_job_id(id);
    absl::Status status = jobs.Results(kAlice, r).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("is JOB_CANCELLED"));
  }

  // Without jobs_dir: a fresh job cancelled while queued behind another, and the other while it
  // runs.
  ScanJobs memory(*store_, *scheduler_, Options(/*persistent=*/false));
  DeviceHold hold2(*scheduler_);
  absl::StatusOr<pb::JobInfo> first = memory.Start(kAlice, request);
  absl::StatusOr<pb::JobInfo> second = memory.Start(kAlice, request);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(second->state(), pb::JOB_QUEUED);
  {
    Watcher watcher(memory, kAlice, first->job_id());
    ASSERT_TRUE(watcher.WaitFor([](const pb::JobInfo& i) { return i.state() == pb::JOB_RUNNING; }));
  }
  EXPECT_EQ(memory.Cancel(kAlice, second->job_id())->state(), pb::JOB_CANCELLED);
  ASSERT_TRUE(memory.Cancel(kAlice, first->job_id()).ok());
  hold2.Release();
  EXPECT_EQ(WaitForEnd(memory, kAlice, first->job_id()).state(), pb::JOB_CANCELLED);
  pb::GetScanResultsRequest r;
  r.set_job_id(second->job_id());
  EXPECT_EQ(memory.Results(kAlice, r).status().code(), absl::StatusCode::kFailedPrecondition);
}

// ---- errors ----

struct StartCase {
  std::string name;
  std::function<void(pb::StartScanRequest&)> edit;
  absl::StatusCode code;
  std::string phrase;
};

TEST_F(ScanJobsTest, StartRefusesBadRequestsPrecisely) {
  std::string text;
  for (int i = 0; i < 20; ++i) text += "Alice and Bob went to the market together.\n";
  WriteFile(corpus_dir() / "good.txt", text);
  WriteFile(corpus_dir() / "empty.txt", "");
  WriteFile(corpus_dir() / "short.txt", "Hi.\n");
  WriteFile(corpus_dir() / "bad_utf8.txt", "hello world\nabc \xff\xfe def\n");
  WriteFile(corpus_dir() / "nofield.jsonl", "{\"text\": \"a b c\"}\n{\"body\": \"x\"}\n");
  WriteFile(corpus_dir() / "number.jsonl", "{\"text\": 5}\n");
  WriteFile(corpus_dir() / "notjson.jsonl", "{\"text\": \"ok\"}\nnot json\n");
  WriteFile(corpus_dir() / "float.npy", Npy("<f4", {8}, Bytes(std::vector<float>(8, 1.0f))));
  WriteFile(corpus_dir() / "wide.npy", Npy("<i4", {2, 5}, Bytes(std::vector<int32_t>(10, 1))));
  WriteFile(corpus_dir() / "badid.npy", Npy("<i4", {40}, Bytes(std::vector<int32_t>(40, 5000))));
  WriteFile(corpus_dir() / "docs.md", text);
  fs::create_directories(corpus_dir() / "folder");
  WriteFile(root_ / "outside.txt", text);
  fs::create_symlink(root_ / "outside.txt", corpus_dir() / "link.txt");
  fs::create_symlink(corpus_dir() / "good.txt", corpus_dir() / "inside_link.txt");

  auto good = [] {
    pb::StartScanRequest r;
    r.set_model("demo");
    r.set_context_length(8);
    r.mutable_corpus()->set_path("good.txt");
    r.set_logit_k(-1);
    AddNeurons(r, "blocks.0.mlp.hook_post", {1, 2});
    return r;
  };
  using C = absl::StatusCode;
  const std::vector<StartCase> cases = {
      {"missing file", [](auto& r) { r.mutable_corpus()->set_path("missing.txt"); }, C::kNotFound,
       R"(no corpus file "missing.txt")"},
      {"dot-dot", [](auto& r) { r.mutable_corpus()->set_path("../outside.txt"); },
       C::kInvalidArgument, R"(corpus path "../outside.txt" may not contain "..")"},
      {"dot-dot inside", [](auto& r) { r.mutable_corpus()->set_path("folder/../good.txt"); },
       C::kInvalidArgument, R"(may not contain "..")"},
      {"absolute path",
       [this](auto& r) { r.mutable_corpus()->set_path((corpus_dir() / "good.txt").string()); },
       C::kInvalidArgument, "must be relative to the server's corpus directory"},
      {"symlink leading outside", [](auto& r) { r.mutable_corpus()->set_path("link.txt"); },
       C::kInvalidArgument, R"(corpus path "link.txt" leads outside the corpus directory)"},
      {"a directory", [](auto& r) { r.mutable_corpus()->set_path("folder"); }, C::kInvalidArgument,
       R"(corpus path "folder" is not a file)"},
      {"no path nor documents", [](auto& r) { r.mutable_corpus()->clear_path(); },
       C::kInvalidArgument, "the corpus needs a path"},
      {"empty file", [](auto& r) { r.mutable_corpus()->set_path("empty.txt"); },
       C::kInvalidArgument, R"(corpus "empty.txt" gives no whole context of 8 tokens)"},
      {"too short a file", [](auto& r) { r.mutable_corpus()->set_path("short.txt"); },
       C::kInvalidArgument, "gives no whole context"},
      {"empty upload", [](auto& r) { r.mutable_corpus()->mutable_documents(); },
       C::kInvalidArgument, "the uploaded corpus gives no whole context of 8 tokens"},
      {"invalid UTF-8 line", [](auto& r) { r.mutable_corpus()->set_path("bad_utf8.txt"); },
       C::kInvalidArgument, R"(corpus "bad_utf8.txt" line 2: text is not valid UTF-8)"},
      {"invalid UTF-8 upload",
       [](auto& r) {
         r.mutable_corpus()->mutable_documents()->add_texts("ok");
         r.mutable_corpus()->mutable_documents()->add_texts("\xc3(");
       },
       C::kInvalidArgument, "documents.texts[1]: text is not valid UTF-8"},
      {"jsonl line without the field",
       [](auto& r) { r.mutable_corpus()->set_path("nofield.jsonl"); }, C::kInvalidArgument,
       R"(corpus "nofield.jsonl" line 2 has no string field "text" (ScanCorpus.text_field))"},
      {"jsonl with another text_field",
       [](auto& r) {
         r.mutable_corpus()->set_path("nofield.jsonl");
         r.mutable_corpus()->set_text_field("body");
       },
       C::kInvalidArgument, R"(line 1 has no string field "body")"},
      {"jsonl field not a string", [](auto& r) { r.mutable_corpus()->set_path("number.jsonl"); },
       C::kInvalidArgument, R"(line 1 has no string field "text")"},
      {"jsonl line not JSON", [](auto& r) { r.mutable_corpus()->set_path("notjson.jsonl"); },
       C::kInvalidArgument, R"(corpus "notjson.jsonl" line 2 is not a JSON object)"},
      {"npy float dtype", [](auto& r) { r.mutable_corpus()->set_path("float.npy"); },
       C::kInvalidArgument,
       R"(corpus "float.npy" is not a usable .npy of token ids: dtype must be int32 or int64)"},
      {"npy rows of another length", [](auto& r) { r.mutable_corpus()->set_path("wide.npy"); },
       C::kInvalidArgument, R"(corpus "wide.npy" holds contexts of 5 tokens; context_length is 8)"},
      {"npy id outside the vocabulary", [](auto& r) { r.mutable_corpus()->set_path("badid.npy"); },
       C::kInvalidArgument, "token id 5000 is outside the vocabulary [0, 1024)"},
      {"uploaded id outside the vocabulary",
       [](auto& r) {
         auto* s = r.mutable_corpus()->mutable_documents()->add_token_sequences();
         s->add_ids(3);
         s->add_ids(1024);
       },
       C::kInvalidArgument,
       "documents.token_sequences[0]: token id 1024 is outside the vocabulary [0, 1024)"},
      {"unknown extension", [](auto& r) { r.mutable_corpus()->set_path("docs.md"); },
       C::kInvalidArgument, "the corpus must be .jsonl"},
      {"negative max_contexts", [](auto& r) { r.mutable_corpus()->set_max_contexts(-1); },
       C::kInvalidArgument, "corpus.max_contexts must be >= 0"},
      {"unknown model", [](auto& r) { r.set_model("nope"); }, C::kNotFound,
       R"(no model named "nope")"},
      {"unknown SAE", [](auto& r) { r.add_targets()->mutable_sae_features()->set_sae("nope"); },
       C::kNotFound, R"(no SAE named "nope")"},
      {"no targets", [](auto& r) { r.clear_targets(); }, C::kInvalidArgument,
       "a scan needs targets"},
      {"target without a kind", [](auto& r) { r.add_targets(); }, C::kInvalidArgument,
       "targets[1] sets no kind"},
      {"neuron past d_mlp", [](auto& r) { AddNeurons(r, "blocks.0.mlp.hook_post", {512}); },
       C::kInvalidArgument, "target index 512 at blocks.0.mlp.hook_post is out of range [0, 512)"},
      {"neuron listed twice",
       [](auto& r) {
         AddNeurons(r, "blocks.0.mlp.hook_post", {4, 4});
       },
       C::kInvalidArgument, "target index 4 at blocks.0.mlp.hook_post is listed twice"},
      {"direction of the wrong width",
       [](auto& r) {
         AddDirection(r, "d", "blocks.0.hook_resid_post", std::vector<float>(127, 1));
       },
       C::kInvalidArgument, "directions at blocks.0.hook_resid_post must be f32 [n, 128]"},
      {"context past n_ctx", [](auto& r) { r.set_context_length(129); }, C::kInvalidArgument,
       "context_length 129 must be in [1, 128] (n_ctx)"},
      {"logit_k past 1000", [](auto& r) { r.set_logit_k(1001); }, C::kInvalidArgument,
       "logit_k must be in [-1, 1000]"},
      {"negative batch_contexts", [](auto& r) { r.set_batch_contexts(-2); }, C::kInvalidArgument,
       "batch_contexts must be >= 0"},
      {"top_k past 1000", [](auto& r) { r.set_top_k(1001); }, C::kInvalidArgument,
       "top_k is 1001; it must be in [0, 1000]"},
  };
  ScanJobs jobs(*store_, *scheduler_, Options());
  for (const StartCase& c : cases) {
    SCOPED_TRACE(c.name);
    pb::StartScanRequest request = good();
    c.edit(request);
    absl::StatusOr<pb::JobInfo> got = jobs.Start(kAlice, request);
    EXPECT_EQ(got.status().code(), c.code) << got.status();
    EXPECT_THAT(std::string(got.status().message()), HasSubstr(c.phrase));
  }
  EXPECT_TRUE(jobs.List(kAdmin).empty());  // a refused request leaves no job
  EXPECT_TRUE(fs::is_empty(jobs_dir()));

  // The good request, and one through a symlink that stays inside, run.
  EXPECT_EQ(RunToEnd(jobs, kAlice, good()).state(), pb::JOB_SUCCEEDED);
  pb::StartScanRequest linked = good();
  linked.mutable_corpus()->set_path("inside_link.txt");
  EXPECT_EQ(RunToEnd(jobs, kAlice, linked).state(), pb::JOB_SUCCEEDED);

  // A server without a corpus directory reads no files, but takes uploads.
  ScanJobsOptions no_corpus = Options(/*persistent=*/false);
  no_corpus.corpus_dir = "";
  ScanJobs uploads_only(*store_, *scheduler_, no_corpus);
  absl::Status refused = uploads_only.Start(kAlice, good()).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("reads no corpus files"));
  pb::StartScanRequest upload = good();
  upload.mutable_corpus()->mutable_documents()->add_texts(text);
  EXPECT_EQ(RunToEnd(uploads_only, kAlice, upload).state(), pb::JOB_SUCCEEDED);
}

TEST_F(ScanJobsTest, PerOwnerJobLimitAndStateBytesLimit) {
  pb::StartScanRequest request = TokenScan(RandomDocs(8, 20, 40, 9), 8);
  request.set_logit_k(-1);
  AddNeurons(request, "blocks.0.mlp.hook_post", {1, 2, 3});

  ScanJobsOptions options = Options(/*persistent=*/false);
  options.max_jobs_per_owner = 2;
  ScanJobs jobs(*store_, *scheduler_, options);
  DeviceHold hold(*scheduler_);
  absl::StatusOr<pb::JobInfo> first = jobs.Start(kAlice, request);
  absl::StatusOr<pb::JobInfo> second = jobs.Start(kAlice, request);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  absl::Status third = jobs.Start(kAlice, request).status();
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted) << third;
  EXPECT_THAT(std::string(third.message()),
              HasSubstr("you have 2 scans queued or running; the server allows 2 per key "
                        "(--scan_max_jobs_per_key)"));
  // Another owner has a limit of its own.
  absl::StatusOr<pb::JobInfo> bobs = jobs.Start(kBob, request);
  ASSERT_TRUE(bobs.ok()) << bobs.status();
  // An ended job frees its place.
  ASSERT_TRUE(jobs.Cancel(kAlice, second->job_id()).ok());
  absl::StatusOr<pb::JobInfo> again = jobs.Start(kAlice, request);
  ASSERT_TRUE(again.ok()) << again.status();
  hold.Release();
  for (const auto& [caller, id] :
       {std::pair{kAlice, first->job_id()}, std::pair{kBob, bobs->job_id()},
        std::pair{kAlice, again->job_id()}}) {
    EXPECT_EQ(WaitForEnd(jobs, caller, id).state(), pb::JOB_SUCCEEDED);
  }

  ScanJobsOptions small = Options(/*persistent=*/false);
  small.max_state_bytes = 4096;
  ScanJobs tight(*store_, *scheduler_, small);
  absl::Status too_big = tight.Start(kAlice, request).status();
  EXPECT_EQ(too_big.code(), absl::StatusCode::kResourceExhausted) << too_big;
  EXPECT_THAT(
      std::string(too_big.message()),
      HasSubstr("bytes of records for 3 targets; the server allows 4096 (--scan_max_state_bytes)"));
  // Fewer records fit.
  request.set_top_k(-1);
  request.set_random_k(-1);
  request.set_quantile_bins(-1);
  request.set_histogram_bins(-1);
  EXPECT_EQ(RunToEnd(tight, kAlice, request).state(), pb::JOB_SUCCEEDED);
}

TEST_F(ScanJobsTest, ResultsBeforeSuccessAndBadPages) {
  pb::StartScanRequest request = TokenScan(RandomDocs(8, 20, 40, 9), 8);
  request.set_logit_k(-1);
  AddNeurons(request, "blocks.0.mlp.hook_post", {1, 2, 3});
  ScanJobsOptions options = Options(/*persistent=*/false);
  options.max_result_targets = 2;
  ScanJobs jobs(*store_, *scheduler_, options);
  std::string id;
  {
    DeviceHold hold(*scheduler_);
    absl::StatusOr<pb::JobInfo> started = jobs.Start(kAlice, request);
    ASSERT_TRUE(started.ok()) << started.status();
    id = started->job_id();
    pb::GetScanResultsRequest r;
    r.set_job_id(id);
    absl::Status early = jobs.Results(kAlice, r).status();
    EXPECT_EQ(early.code(), absl::StatusCode::kFailedPrecondition) << early;
    EXPECT_THAT(std::string(early.message()), HasSubstr("results exist once it has succeeded"));
  }
  ASSERT_EQ(WaitForEnd(jobs, kAlice, id).state(), pb::JOB_SUCCEEDED);
  pb::GetScanResultsRequest r;
  r.set_job_id(id);
  r.set_target_limit(3);
  absl::Status status = jobs.Results(kAlice, r).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("target_limit 3 is above 2 per page"));
  r.set_target_limit(0);  // 0 is 64, above 2 as well
  EXPECT_EQ(jobs.Results(kAlice, r).status().code(), absl::StatusCode::kInvalidArgument);
  r.set_target_limit(2);
  r.set_target_offset(-1);
  status = jobs.Results(kAlice, r).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("target_offset and target_limit must be >= 0"));
  r.set_target_offset(2);
  absl::StatusOr<pb::ScanResults> last = jobs.Results(kAlice, r);
  ASSERT_TRUE(last.ok()) << last.status();
  ASSERT_EQ(last->targets_size(), 1);
  EXPECT_EQ(last->targets(0).index(), 2);
  EXPECT_EQ(last->targets(0).unit(), 3);
}

// Two finished jobs with a jobs_dir: only the one read last stays in memory; the other is read
// back from its checkpoint, to the same results.
TEST_F(ScanJobsTest, ResultsReadBackAfterEviction) {
  pb::StartScanRequest a = TokenScan(RandomDocs(8, 20, 40, 21), 8);
  AddNeurons(a, "blocks.2.mlp.hook_post", {9});
  pb::StartScanRequest b = TokenScan(RandomDocs(8, 20, 40, 22), 8);
  AddDirection(b, "x", "blocks.1.hook_resid_pre", RandomVector(128, 3));
  ScanJobs jobs(*store_, *scheduler_, Options());
  const pb::JobInfo ja = RunToEnd(jobs, kAlice, a);
  const pb::JobInfo jb = RunToEnd(jobs, kAlice, b);
  ASSERT_EQ(ja.state(), pb::JOB_SUCCEEDED);
  ASSERT_EQ(jb.state(), pb::JOB_SUCCEEDED);
  const std::vector<pb::ScanTargetResult> ea = RunEngine(a), eb = RunEngine(b);
  for (int round = 0; round < 2; ++round) {
    ExpectSameTargets(AllResults(jobs, kAlice, ja.job_id()).targets(), ea, "a");
    ExpectSameTargets(AllResults(jobs, kAlice, jb.job_id()).targets(), eb, "b");
  }
}

// ---- logit effects ----

TEST_F(ScanJobsTest, LogitEffectsEqualTheUnembeddingTimesWhatTheTargetWrites) {
  auto weights = ::glassbox::testing::ReadAllTensors(DemoDir() + "/model.safetensors");
  const Tensor& wte = weights.at("transformer.wte.weight");                // [vocab, d_model], tied
  const Tensor& c_proj = weights.at("transformer.h.1.mlp.c_proj.weight");  // [d_mlp, d_model]
  ASSERT_EQ(wte.shape(), (Shape{kVocab, 128}));
  ASSERT_EQ(c_proj.shape(), (Shape{512, 128}));

  const std::vector<float> direction = RandomVector(128, 17);
  pb::StartScanRequest request = TokenScan(RandomDocs(6, 20, 40, 31), 8);
  request.set_logit_k(6);
  AddNeurons(request, "blocks.1.mlp.hook_post", {5, 77});                  // targets 0, 1
  AddDirection(request, "random", "blocks.2.hook_resid_post", direction);  // 2
  AddDirection(request, "zero", "blocks.0.hook_resid_pre", std::vector<float>(128, 0));  // 3
  AddNeurons(request, "blocks.3.hook_resid_post", {9});                                  // 4
  AddNeurons(request, "blocks.0.attn.hook_z", {3});                                      // 5
  AddDirection(request, "z", "blocks.0.attn.hook_z", std::vector<float>(128, 1));        // 6
  ScanJobs jobs(*store_, *scheduler_, Options(/*persistent=*/false));
  const pb::JobInfo info = RunToEnd(jobs, kAlice, request);
  ASSERT_EQ(info.state(), pb::JOB_SUCCEEDED) << info.error();
  const pb::ScanResults results = AllResults(jobs, kAlice, info.job_id());
  ASSERT_EQ(results.targets_size(), 7);

  // W_U · w in double, for what each target writes.
  auto logits_of = [&](const std::vector<double>& w) {
    std::vector<double> out(kVocab);
    for (int v = 0; v < kVocab; ++v) {
      double dot = 0;
      for (int r = 0; r < 128; ++r) dot += double{wte.data<float>()[v * 128 + r]} * w[r];
      out[v] = dot;
    }
    return out;
  };
  auto expect_effects = [&](const pb::ScanTargetResult& t, const std::vector<double>& logits) {
    SCOPED_TRACE(t.name());
    std::vector<int32_t> order(kVocab);
    std::iota(order.begin(), order.end(), 0);
    std::vector<int32_t> top = order, bottom = order;
    std::stable_sort(top.begin(), top.end(),
                     [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
    std::stable_sort(bottom.begin(), bottom.end(),
                     [&](int32_t a, int32_t b) { return logits[a] < logits[b]; });
    for (const auto& [name, got, want] : {std::tuple{"top", &t.top_logits(), &top},
                                          std::tuple{"bottom", &t.bottom_logits(), &bottom}}) {
      ASSERT_EQ(got->size(), 6) << name;
      for (int j = 0; j < 6; ++j) {
        const pb::ScanLogit& logit = (*got)[j];
        const int32_t expected = (*want)[j];
        const double scale = std::max(1.0, std::abs(logits[expected]));
        if (logit.token() != expected) {  // only a near tie may swap under f32 rounding
          EXPECT_LE(std::abs(logits[logit.token()] - logits[expected]), 1e-5 * scale)
              << name << "[" << j << "]: token " << logit.token() << ", expected " << expected;
        }
        EXPECT_NEAR(logit.value(), logits[expected], 1e-5 * scale) << name << "[" << j << "]";
        auto strings = Demo().tokenizer->ToStrTokens(std::vector<int32_t>{logit.token()});
        ASSERT_TRUE(strings.ok());
        EXPECT_EQ(logit.token_string(), (*strings)[0]) << name << "[" << j << "]";
      }
    }
  };
  for (int i : {0, 1}) {
    const int unit = results.targets(i).unit();
    std::vector<double> w(128);
    for (int r = 0; r < 128; ++r) w[r] = c_proj.data<float>()[unit * 128 + r];  // W_out[:, unit]
    expect_effects(results.targets(i), logits_of(w));
  }
  expect_effects(results.targets(2), logits_of({direction.begin(), direction.end()}));
  std::vector<double> basis(128, 0.0);
  basis[9] = 1;
  expect_effects(results.targets(4), logits_of(basis));

  // A zero direction ties every token: both lists are the lowest ids, with value 0.
  const pb::ScanTargetResult& zero = results.targets(3);
  ASSERT_EQ(zero.top_logits_size(), 6);
  ASSERT_EQ(zero.bottom_logits_size(), 6);
  for (int j = 0; j < 6; ++j) {
    EXPECT_EQ(zero.top_logits(j).token(), j);
    EXPECT_EQ(zero.bottom_logits(j).token(), j);
    EXPECT_EQ(zero.top_logits(j).value(), 0.0f);
    EXPECT_EQ(zero.bottom_logits(j).value(), 0.0f);
  }

  // Targets at hook_z write nothing that reads off through the unembedding.
  for (int i : {5, 6}) {
    EXPECT_EQ(results.targets(i).top_logits_size(), 0) << results.targets(i).name();
    EXPECT_EQ(results.targets(i).bottom_logits_size(), 0) << results.targets(i).name();
  }
}

}  // namespace
}  // namespace glassbox
