// Dataset scans as server-side jobs: queued, run one at a time by a thread of their own whose
// batches go to the device's scheduler as background tasks (they run only when no interactive
// request waits), checkpointed under --jobs_dir, resumed after a restart, owned by the key that
// started them (docs/scans.md).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "glassbox/v1/glassbox.pb.h"
#include "server/scheduler/scheduler.h"
#include "server/service/model_store.h"
#include "server/service/scan_request.h"

namespace glassbox {

namespace pb = ::glassbox::v1;

struct ScanJobsOptions {
  std::string jobs_dir;    // "": jobs live in memory only and do not survive a restart
  std::string corpus_dir;  // "": no corpus files, uploaded documents only
  double checkpoint_seconds = 30;
  int64_t max_contexts = int64_t{1} << 20;       // one job's contexts
  int64_t max_state_bytes = int64_t{4} << 30;    // one job's estimated accumulator memory
  int64_t max_jobs_per_owner = 16;               // queued or running
  int64_t max_result_targets = 1024;             // targets one GetScanResults page may hold
  // The first pass's target activations kept for the second pass (ScanReplay), per job; a scan
  // whose activations do not fit runs the model again in its second pass.
  int64_t replay_bytes = int64_t{1} << 30;
};

// Who asks: the key's name ("" on an open server) and whether it sees every owner's jobs.
struct JobCaller {
  std::string owner;
  bool admin = false;
};

class ScanJobs {
 public:
  // Sees a job's info at each change, then once more with `final` when it has ended.
  using Observer = std::function<void(const pb::JobInfo& info, bool final)>;
  class Watch;

  ScanJobs(const ModelStore& store, Scheduler& scheduler, ScanJobsOptions options);
  ~ScanJobs();  // Stop()

  // Reads the jobs under jobs_dir (once, before serving): finished ones are listed, unfinished
  // ones queued again to resume from their checkpoints. A job whose files do not read is logged
  // and skipped.
  absl::Status Recover();
  // Stops the runner between batches; the running job stays resumable on disk.
  void Stop();

  // `charge`, when given, is asked for the job's tokens (both passes) once the request is known
  // good and before the job is queued (the caller's tokens_per_day quota); its error refuses it.
  absl::StatusOr<pb::JobInfo> Start(const JobCaller& caller, const pb::StartScanRequest& request,
                                    const std::function<absl::Status(int64_t)>& charge = nullptr);
  // NOT_FOUND for a job that does not exist or is not the caller's.
  absl::StatusOr<pb::JobInfo> Info(const JobCaller& caller, const std::string& id) const;
  absl::StatusOr<pb::JobInfo> Cancel(const JobCaller& caller, const std::string& id);
  std::vector<pb::JobInfo> List(const JobCaller& caller) const;
  // FAILED_PRECONDITION until the job has succeeded.
  absl::StatusOr<pb::ScanResults> Results(const JobCaller& caller,
                                          const pb::GetScanResultsRequest& request) const;
  // Notifies `watch` now and at every change until the job ends (Watch::Close stops it).
  absl::Status Subscribe(const JobCaller& caller, const std::string& id,
                         std::shared_ptr<Watch> watch);

 private:
  struct Job;

  std::shared_ptr<Job> FindLocked(const JobCaller& caller, const std::string& id) const;
  void RunnerLoop();
  void Execute(const std::shared_ptr<Job>& job);
  absl::Status Scan(const std::shared_ptr<Job>& job);
  absl::Status FillResults(Job& job, const pb::JobInfo& info, int64_t offset, int64_t limit,
                           pb::ScanResults& results) const;
  void KeepResultsOf(const std::shared_ptr<Job>& job) const;
  // Rebuilds what a job needs to run or answer from its request (plan, contexts).
  absl::Status Prepare(Job& job) const;
  absl::Status RunBatchOnDevice(Job& job, const Tensor& batch);
  void Persist(const Job& job, bool with_state) const;
  void Publish(const std::shared_ptr<Job>& job, bool final);
  std::string NewId() const;

  const ModelStore& store_;
  Scheduler& scheduler_;
  const ScanJobsOptions options_;

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::map<std::string, std::shared_ptr<Job>> jobs_;
  std::deque<std::shared_ptr<Job>> queue_;
  mutable std::shared_ptr<Job> results_kept_;  // KeepResultsOf
  bool stopping_ = false;
  std::thread runner_;
};

// A subscription: Close stops the calls, waiting for one in progress.
class ScanJobs::Watch {
 public:
  explicit Watch(Observer observer) : observer_(std::move(observer)) {}
  void Close() {
    std::lock_guard lock(mu_);
    observer_ = nullptr;
  }
  void Notify(const pb::JobInfo& info, bool final) {
    std::lock_guard lock(mu_);
    if (observer_) observer_(info, final);
  }

 private:
  std::mutex mu_;
  Observer observer_;
};

}  // namespace glassbox
