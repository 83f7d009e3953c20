#include "server/service/scan_jobs.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "base/file.h"
#include "base/status_macros.h"
#include "server/service/scan_corpus.h"

namespace glassbox {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

bool Ended(pb::JobState state) {
  return state == pb::JOB_SUCCEEDED || state == pb::JOB_FAILED || state == pb::JOB_CANCELLED;
}

// Written beside and renamed over, so a kill leaves the old file or the new one, never half.
absl::Status WriteAtomically(const fs::path& path, const std::string& bytes) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp.string()));
  }
  std::error_code error;
  fs::rename(tmp, path, error);
  if (error) return absl::InternalError(absl::StrCat("cannot rename ", tmp.string(), ": ", error.message()));
  return absl::OkStatus();
}

// Accumulator memory a scan will hold: each target's records with their windows, its bins.
int64_t EstimateStateBytes(const ScanOptions& o, int64_t targets) {
  const int64_t window = (o.window_before < 0 || o.window_after < 0)
                             ? o.context_length
                             : std::min<int64_t>(o.context_length, int64_t{o.window_before} + o.window_after + 1);
  const int64_t records =
      int64_t{o.top_k} + o.random_k + int64_t{o.quantile_bins} * o.per_quantile_k;
  const int64_t per_target = sizeof(TargetAccumulator) + records * (sizeof(ScanRecord) + window * 4) +
                             int64_t{o.histogram_bins} * 8;
  return per_target * targets;
}

// A job's contexts as the scan reads them, kept beside its checkpoint: its results and a resumed
// run must not depend on the corpus file staying as it was.
constexpr char kContextsMagic[8] = {'G', 'B', 'C', 'T', 'X', '1', '\0', '\0'};

std::string SerializeContexts(const Tensor& contexts) {
  std::string out(kContextsMagic, sizeof(kContextsMagic));
  const int64_t shape[2] = {contexts.dim(0), contexts.dim(1)};
  out.append(reinterpret_cast<const char*>(shape), sizeof(shape));
  out.append(reinterpret_cast<const char*>(contexts.data<int32_t>()), contexts.nbytes());
  return out;
}

absl::StatusOr<Tensor> DeserializeContexts(const std::string& bytes, int32_t context_length,
                                           int32_t vocab_size) {
  int64_t shape[2];
  if (bytes.size() < sizeof(kContextsMagic) + sizeof(shape) ||
      std::memcmp(bytes.data(), kContextsMagic, sizeof(kContextsMagic)) != 0)
    return absl::DataLossError("not a Glassbox contexts file");
  std::memcpy(shape, bytes.data() + sizeof(kContextsMagic), sizeof(shape));
  const size_t data = sizeof(kContextsMagic) + sizeof(shape);
  if (shape[0] < 1 || shape[1] != context_length ||
      static_cast<uint64_t>(bytes.size() - data) != static_cast<uint64_t>(shape[0] * shape[1]) * 4)
    return absl::DataLossError("the contexts file does not match its job");
  Tensor contexts = Tensor::EmptyHost(DType::kI32, {shape[0], shape[1]});
  std::memcpy(contexts.data<int32_t>(), bytes.data() + data, contexts.nbytes());
  for (int32_t id : contexts.span<int32_t>()) {
    if (id < 0 || id >= vocab_size) return absl::DataLossError("the contexts file holds a bad id");
  }
  return contexts;
}

}  // namespace

struct ScanJobs::Job {
  pb::StoredScanJob stored;  // info under ScanJobs::mu_; request fixed
  std::atomic<bool> cancelled{false};
  std::vector<std::weak_ptr<Watch>> watchers;  // under ScanJobs::mu_
  // The runner's (and, once finished, Results'): under `work_mu`.
  std::mutex work_mu;
  bool prepared = false;
  ResolvedScan scan;
  Tensor contexts;
  std::unique_ptr<ScanState> state;
  std::unique_ptr<ScanReplay> replay;  // while the job runs
};

ScanJobs::ScanJobs(const ModelStore& store, Scheduler& scheduler, ScanJobsOptions options)
    : store_(store), scheduler_(scheduler), options_(std::move(options)) {
  runner_ = std::thread([this] { RunnerLoop(); });
}

ScanJobs::~ScanJobs() { Stop(); }

void ScanJobs::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      if (!runner_.joinable()) return;
    }
    stopping_ = true;
  }
  wake_.notify_all();
  if (runner_.joinable()) runner_.join();
}

std::string ScanJobs::NewId() const {
  static thread_local std::mt19937_64 random{std::random_device{}()};
  for (;;) {
    std::string id = absl::StrFormat("scan-%012x", random() & 0xFFFFFFFFFFFFull);
    if (!jobs_.contains(id)) return id;
  }
}

absl::Status ScanJobs::Prepare(Job& job) const {
  if (job.prepared) return absl::OkStatus();
  const pb::StartScanRequest& request = job.stored.request();
  GB_ASSIGN_OR_RETURN(job.scan, ResolveScan(store_, request));
  const ServedModel& served = *job.scan.served;
  ContextOptions context{.context_length = job.scan.plan.options.context_length,
                         .vocab_size = static_cast<int32_t>(served.model->config().vocab_size)};
  if (!request.no_bos()) {
    if (served.tokenizer == nullptr || !served.tokenizer->bos_token_id())
      return absl::FailedPreconditionError(absl::StrCat(
          "model \"", served.name,
          "\" has no BOS token to open contexts with; set no_bos to scan raw token runs"));
    context.bos = *served.tokenizer->bos_token_id();
  }
  const std::string& id = job.stored.info().job_id();
  if (!options_.jobs_dir.empty() && !id.empty()) {
    // A job started before: its contexts were kept when it started.
    GB_ASSIGN_OR_RETURN(std::string bytes,
                        ReadFileToString(fs::path(options_.jobs_dir) / id / "contexts.bin"));
    GB_ASSIGN_OR_RETURN(job.contexts,
                        DeserializeContexts(bytes, context.context_length, context.vocab_size));
    job.prepared = true;
    return absl::OkStatus();
  }
  const int64_t asked = request.corpus().max_contexts();
  if (asked < 0) return absl::InvalidArgumentError("corpus.max_contexts must be >= 0");
  context.max_contexts = asked > 0 ? std::min(asked, options_.max_contexts) : options_.max_contexts;
  GB_ASSIGN_OR_RETURN(job.contexts, BuildContexts(request.corpus(), options_.corpus_dir,
                                                  served.tokenizer.get(), context));
  job.prepared = true;
  return absl::OkStatus();
}

absl::StatusOr<pb::JobInfo> ScanJobs::Start(const JobCaller& caller,
                                            const pb::StartScanRequest& request,
                                            const std::function<absl::Status(int64_t)>& charge) {
  auto job = std::make_shared<Job>();
  *job->stored.mutable_request() = request;
  GB_RETURN_IF_ERROR(Prepare(*job));
  const ScanOptions& o = job->scan.plan.options;
  const int64_t bytes = EstimateStateBytes(o, job->scan.targets);
  if (bytes > options_.max_state_bytes)
    return absl::ResourceExhaustedError(absl::StrCat(
        "this scan would hold about ", bytes, " bytes of records for ", job->scan.targets,
        " targets; the server allows ", options_.max_state_bytes,
        " (--scan_max_state_bytes): scan fewer targets, keep fewer records or a smaller window"));
  const int64_t contexts = job->contexts.dim(0), len = o.context_length;
  const int passes = o.NeedsSecondPass() ? 2 : 1;
  pb::JobInfo& info = *job->stored.mutable_info();
  info.set_owner(caller.owner);
  info.set_model(request.model());
  info.set_state(pb::JOB_QUEUED);
  info.set_current_pass(1);
  info.set_passes(passes);
  info.set_contexts_total(contexts);
  info.set_tokens_total(passes * contexts * len);
  info.set_targets(job->scan.targets);
  info.set_created_unix_seconds(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
  if (charge) GB_RETURN_IF_ERROR(charge(info.tokens_total()));
  {
    std::lock_guard lock(mu_);
    if (stopping_) return absl::UnavailableError("the server is shutting down");
    int64_t active = 0;
    for (const auto& [id, other] : jobs_) {
      active += other->stored.info().owner() == caller.owner && !Ended(other->stored.info().state());
    }
    if (active >= options_.max_jobs_per_owner)
      return absl::ResourceExhaustedError(absl::StrCat(
          "you have ", active, " scans queued or running; the server allows ",
          options_.max_jobs_per_owner, " per key (--scan_max_jobs_per_key): wait for one to end "
          "or cancel one"));
    // Registered (so counted against the limit) at once; queued once its files are written.
    info.set_job_id(NewId());
    jobs_[info.job_id()] = job;
  }
  if (!options_.jobs_dir.empty()) {
    // The contexts go first: a job.pb is only ever found with them.
    const fs::path dir = fs::path(options_.jobs_dir) / info.job_id();
    std::error_code error;
    fs::create_directories(dir, error);
    if (absl::Status kept = WriteAtomically(dir / "contexts.bin", SerializeContexts(job->contexts));
        !kept.ok()) {
      std::lock_guard lock(mu_);
      jobs_.erase(info.job_id());
      return absl::InternalError(absl::StrCat("cannot keep the scan's contexts under --jobs_dir: ",
                                              kept.message()));
    }
  }
  Persist(*job, /*with_state=*/false);
  pb::JobInfo queued;
  {
    std::lock_guard lock(mu_);
    queue_.push_back(job);
    queued = job->stored.info();
  }
  wake_.notify_all();
  return queued;
}

std::shared_ptr<ScanJobs::Job> ScanJobs::FindLocked(const JobCaller& caller,
                                                    const std::string& id) const {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return nullptr;
  if (!caller.admin && it->second->stored.info().owner() != caller.owner) return nullptr;
  return it->second;
}

absl::StatusOr<pb::JobInfo> ScanJobs::Info(const JobCaller& caller, const std::string& id) const {
  std::lock_guard lock(mu_);
  auto job = FindLocked(caller, id);
  if (!job) return absl::NotFoundError(absl::StrCat("no job \"", id, "\""));
  return job->stored.info();
}

std::vector<pb::JobInfo> ScanJobs::List(const JobCaller& caller) const {
  std::lock_guard lock(mu_);
  std::vector<pb::JobInfo> out;
  for (const auto& [id, job] : jobs_) {
    if (caller.admin || job->stored.info().owner() == caller.owner) out.push_back(job->stored.info());
  }
  std::sort(out.begin(), out.end(), [](const pb::JobInfo& a, const pb::JobInfo& b) {
    return a.created_unix_seconds() < b.created_unix_seconds();
  });
  return out;
}

absl::StatusOr<pb::JobInfo> ScanJobs::Cancel(const JobCaller& caller, const std::string& id) {
  std::shared_ptr<Job> job;
  bool was_queued = false;
  {
    std::lock_guard lock(mu_);
    job = FindLocked(caller, id);
    if (!job) return absl::NotFoundError(absl::StrCat("no job \"", id, "\""));
    if (Ended(job->stored.info().state())) return job->stored.info();
    job->cancelled = true;
    auto it = std::find(queue_.begin(), queue_.end(), job);
    if (it != queue_.end()) {
      queue_.erase(it);
      was_queued = true;
      job->stored.mutable_info()->set_state(pb::JOB_CANCELLED);
    }
  }
  if (was_queued) {
    {
      std::lock_guard work(job->work_mu);
      job->state.reset();
    }
    Persist(*job, false);
    Publish(job, /*final=*/true);
  }
  // A running job ends CANCELLED within one layer of its current batch (Execute).
  std::lock_guard lock(mu_);
  return job->stored.info();
}

absl::Status ScanJobs::Subscribe(const JobCaller& caller, const std::string& id,
                                 std::shared_ptr<Watch> watch) {
  pb::JobInfo info;
  {
    std::lock_guard lock(mu_);
    auto job = FindLocked(caller, id);
    if (!job) return absl::NotFoundError(absl::StrCat("no job \"", id, "\""));
    job->watchers.push_back(watch);
    info = job->stored.info();
  }
  watch->Notify(info, Ended(info.state()));
  return absl::OkStatus();
}

void ScanJobs::Publish(const std::shared_ptr<Job>& job, bool final) {
  std::vector<std::shared_ptr<Watch>> watchers;
  pb::JobInfo info;
  {
    std::lock_guard lock(mu_);
    info = job->stored.info();
    auto& list = job->watchers;
    for (auto it = list.begin(); it != list.end();) {
      if (auto w = it->lock()) {
        watchers.push_back(std::move(w));
        ++it;
      } else {
        it = list.erase(it);
      }
    }
  }
  for (const auto& w : watchers) w->Notify(info, final);
}

void ScanJobs::Persist(const Job& job, bool with_state) const {
  if (options_.jobs_dir.empty()) return;
  pb::StoredScanJob stored;
  {
    std::lock_guard lock(mu_);
    stored = job.stored;
  }
  const fs::path dir = fs::path(options_.jobs_dir) / stored.info().job_id();
  std::error_code error;
  fs::create_directories(dir, error);
  absl::Status status = absl::OkStatus();
  if (with_state && job.state) status.Update(WriteAtomically(dir / "state.bin", job.state->Serialize()));
  if (!with_state && Ended(stored.info().state()) && stored.info().state() != pb::JOB_SUCCEEDED)
    for (const char* name : {"state.bin", "contexts.bin"}) fs::remove(dir / name, error);  // nothing will read them
  status.Update(WriteAtomically(dir / "job.pb", stored.SerializeAsString()));
  if (!status.ok())
    std::fprintf(stderr, "glassboxd: job %s: %s\n", stored.info().job_id().c_str(),
                 std::string(status.message()).c_str());
}

absl::Status ScanJobs::Recover() {
  if (options_.jobs_dir.empty()) return absl::OkStatus();
  std::error_code error;
  fs::create_directories(options_.jobs_dir, error);
  if (error)
    return absl::FailedPreconditionError(absl::StrCat("cannot create --jobs_dir ",
                                                      options_.jobs_dir, ": ", error.message()));
  std::vector<std::shared_ptr<Job>> found;
  for (const auto& entry : fs::directory_iterator(options_.jobs_dir, error)) {
    auto bytes = ReadFileToString(entry.path() / "job.pb");
    auto job = std::make_shared<Job>();
    if (!bytes.ok() || !job->stored.ParseFromString(*bytes) || job->stored.info().job_id().empty()) {
      std::fprintf(stderr, "glassboxd: skipping %s: no readable job.pb\n", entry.path().c_str());
      continue;
    }
    pb::JobInfo& info = *job->stored.mutable_info();
    if (!Ended(info.state())) {
      if (info.state() == pb::JOB_RUNNING) info.set_resumed(info.resumed() + 1);
      info.set_state(pb::JOB_QUEUED);
    }
    found.push_back(std::move(job));
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return a->stored.info().created_unix_seconds() < b->stored.info().created_unix_seconds();
  });
  {
    std::lock_guard lock(mu_);
    for (const auto& job : found) {
      jobs_[job->stored.info().job_id()] = job;
      if (!Ended(job->stored.info().state())) queue_.push_back(job);
    }
  }
  wake_.notify_all();
  return absl::OkStatus();
}

void ScanJobs::RunnerLoop() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = queue_.front();
      queue_.pop_front();
      job->stored.mutable_info()->set_state(pb::JOB_RUNNING);
    }
    Execute(job);
  }
}

void ScanJobs::Execute(const std::shared_ptr<Job>& job) {
  Persist(*job, false);
  Publish(job, false);
  absl::Status status;
  {
    std::lock_guard work(job->work_mu);
    status = Scan(job);
  }
  bool interrupted = false;
  {
    std::lock_guard lock(mu_);
    pb::JobInfo& info = *job->stored.mutable_info();
    // Stopped by a shutdown between batches: left RUNNING on disk with a checkpoint of the
    // batches done, for the next server to resume.
    if (!status.ok() && stopping_ && !job->cancelled) {
      interrupted = true;
    } else if (status.ok()) {
      info.set_state(pb::JOB_SUCCEEDED);
      info.set_eta_seconds(0);
    } else if (job->cancelled) {
      info.set_state(pb::JOB_CANCELLED);
    } else {
      info.set_state(pb::JOB_FAILED);
      info.set_error(std::string(status.message()));
    }
  }
  if (interrupted) {
    std::lock_guard work(job->work_mu);
    Persist(*job, true);
    return;
  }
  if (!status.ok()) {
    std::lock_guard work(job->work_mu);
    job->state.reset();  // a cancelled or failed scan's memory goes now
  }
  Persist(*job, status.ok());
  if (status.ok()) KeepResultsOf(job);
  Publish(job, /*final=*/true);
}

absl::Status ScanJobs::RunBatchOnDevice(Job& job, const Tensor& batch) {
  const pb::JobInfo info = [&] {
    std::lock_guard lock(mu_);
    return job.stored.info();
  }();
  return RunOnWorker(scheduler_,
                     {.owner = info.owner(), .rpc = "Scan", .model = info.model(),
                      .tokens = batch.numel(), .background = true},
                     [&] {
                       return ScanContexts(*job.scan.served->model, job.scan.plan, batch,
                                           *job.state, &job.cancelled, job.replay.get());
                     });
}

absl::Status ScanJobs::Scan(const std::shared_ptr<Job>& job_ptr) {
  Job& job = *job_ptr;
  GB_RETURN_IF_ERROR(Prepare(job));
  const ScanPlan& plan = job.scan.plan;
  const std::string id = job.stored.info().job_id();
  if (!job.state && !options_.jobs_dir.empty()) {
    const fs::path path = fs::path(options_.jobs_dir) / id / "state.bin";
    if (fs::exists(path)) {
      auto bytes = ReadFileToString(path);
      auto state = bytes.ok() ? ScanState::Deserialize(*bytes, job.scan.targets)
                              : absl::StatusOr<ScanState>(bytes.status());
      if (state.ok()) {
        job.state = std::make_unique<ScanState>(*std::move(state));
      } else {
        std::fprintf(stderr, "glassboxd: job %s starts over: %s\n", id.c_str(),
                     std::string(state.status().message()).c_str());
      }
    }
  }
  if (!job.state) job.state = std::make_unique<ScanState>(NewScanState(*job.scan.served->model, plan));
  ScanState& state = *job.state;
  job.replay = std::make_unique<ScanReplay>(options_.replay_bytes);
  struct DropReplay {
    Job& job;
    ~DropReplay() { job.replay.reset(); }
  } drop_replay{job};
  const int64_t contexts = job.contexts.dim(0), len = plan.options.context_length;
  const int passes = plan.options.NeedsSecondPass() ? 2 : 1;
  const auto started = Clock::now();
  auto last_checkpoint = started;
  const double elapsed_before = [&] {
    std::lock_guard lock(mu_);
    return job.stored.info().elapsed_seconds();
  }();
  int64_t tokens_this_session = 0;
  while (state.pass <= passes) {
    while (state.next_context < contexts) {
      if (job.cancelled) return absl::CancelledError("the scan was cancelled");
      {
        std::lock_guard lock(mu_);
        if (stopping_) return absl::AbortedError("the server is stopping");
      }
      const int64_t end = std::min(contexts, state.next_context + job.scan.batch_contexts);
      const int64_t n = end - state.next_context;
      GB_RETURN_IF_ERROR(RunBatchOnDevice(job, job.contexts.Slice0(state.next_context, end)));
      tokens_this_session += n * len;
      const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
      {
        std::lock_guard lock(mu_);
        pb::JobInfo& info = *job.stored.mutable_info();
        info.set_current_pass(state.pass);
        info.set_contexts_done(state.next_context);
        info.set_tokens_done(((state.pass - 1) * contexts + state.next_context) * len);
        const double rate = seconds > 0 ? tokens_this_session / seconds : 0;
        info.set_tokens_per_second(rate);
        info.set_eta_seconds(rate > 0 ? (info.tokens_total() - info.tokens_done()) / rate : 0);
        info.set_elapsed_seconds(elapsed_before + seconds);
      }
      Publish(job_ptr, false);
      if (std::chrono::duration<double>(Clock::now() - last_checkpoint).count() >=
          options_.checkpoint_seconds) {
        Persist(job, true);
        last_checkpoint = Clock::now();
      }
    }
    EndScanPass(plan, state);
    if (state.pass <= passes) Persist(job, true);
  }
  return absl::OkStatus();
}

absl::StatusOr<pb::ScanResults> ScanJobs::Results(const JobCaller& caller,
                                                  const pb::GetScanResultsRequest& request) const {
  std::shared_ptr<Job> job;
  pb::JobInfo info;
  {
    std::lock_guard lock(mu_);
    job = FindLocked(caller, request.job_id());
    if (!job) return absl::NotFoundError(absl::StrCat("no job \"", request.job_id(), "\""));
    info = job->stored.info();
  }
  if (info.state() != pb::JOB_SUCCEEDED)
    return absl::FailedPreconditionError(absl::StrCat(
        "job \"", request.job_id(), "\" is ", pb::JobState_Name(info.state()),
        "; results exist once it has succeeded (WatchJob waits for it)"));
  if (request.target_offset() < 0 || request.target_limit() < 0)
    return absl::InvalidArgumentError("target_offset and target_limit must be >= 0");
  const int64_t limit = request.target_limit() == 0 ? 64 : request.target_limit();
  if (limit > options_.max_result_targets)
    return absl::InvalidArgumentError(absl::StrCat("target_limit ", limit, " is above ",
                                                   options_.max_result_targets,
                                                   " per page; read the results in pages"));
  pb::ScanResults results;
  {
    std::lock_guard work(job->work_mu);
    GB_RETURN_IF_ERROR(FillResults(*job, info, request.target_offset(), limit, results));
  }
  KeepResultsOf(job);
  return results;
}

absl::Status ScanJobs::FillResults(Job& job_ref, const pb::JobInfo& info, int64_t offset,
                                   int64_t limit, pb::ScanResults& results) const {
  Job* job = &job_ref;
  GB_RETURN_IF_ERROR(Prepare(*job));
  if (!job->state) {
    if (options_.jobs_dir.empty()) return absl::InternalError("the scan's results are gone");
    GB_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(fs::path(options_.jobs_dir) /
                                                            info.job_id() / "state.bin"));
    GB_ASSIGN_OR_RETURN(ScanState state, ScanState::Deserialize(bytes, job->scan.targets));
    job->state = std::make_unique<ScanState>(std::move(state));
  }
  *results.mutable_job() = info;
  results.set_targets_total(job->scan.targets);
  const int64_t begin = std::min(offset, job->scan.targets);  // no offset + limit: it may overflow
  const int64_t end = begin + std::min(limit, job->scan.targets - begin);
  for (int64_t t = begin; t < end; ++t) {
    *results.add_targets() = TargetResult(job->scan, job->state->targets[t], t, job->contexts,
                                          job->scan.served->tokenizer.get());
  }
  // The logit effects read the weights: on the device's thread, as the caller's work.
  const int32_t asked = job->stored.request().logit_k();
  const int64_t k = asked == 0 ? 10 : asked < 0 ? 0 : asked;
  if (k == 0 || results.targets_size() == 0) return absl::OkStatus();
  return RunOnWorker(scheduler_,
                     {.owner = info.owner(), .rpc = "GetScanResults", .model = info.model()},
                     [&] { return AddLogitEffects(job->scan, k, results); });
}

void ScanJobs::KeepResultsOf(const std::shared_ptr<Job>& job) const {
  // One finished scan's results stay in memory (the one read last); the others are read back
  // from jobs_dir when asked for. Without jobs_dir every result stays: there is no other copy.
  if (options_.jobs_dir.empty()) return;
  std::shared_ptr<Job> evicted;
  {
    std::lock_guard lock(mu_);
    if (results_kept_ == job) return;
    evicted = std::exchange(results_kept_, job);
  }
  if (!evicted) return;
  std::lock_guard work(evicted->work_mu);
  evicted->state.reset();
  evicted->contexts = Tensor();
  evicted->prepared = false;
}

}  // namespace glassbox
