// WatchJob on gRPC's callback API: a reactor that writes a job's latest info whenever it changes
// and ends with the final one. Only the latest state matters to a watcher, so nothing queues: an
// update that arrives while a write is in flight replaces the one waiting, and a slow reader
// costs the job nothing.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <mutex>

#include "glassbox/v1/glassbox.pb.h"
#include "server/service/scan_jobs.h"

namespace glassbox {

class JobWatchStream final : public grpc::ServerWriteReactor<glassbox::v1::JobInfo> {
 public:
  // Call once, right after construction and before subscribing, with the subscription whose
  // observer calls Offer.
  void Attach(std::shared_ptr<ScanJobs::Watch> watch) {
    std::lock_guard lock(mu_);
    watch_ = std::move(watch);
  }

  // The subscription failed (no such job): ends the call with `status`.
  void Refuse(const grpc::Status& status) {
    std::unique_lock lock(mu_);
    EndLocked(lock, status);
  }

  // The job's info, from the job's thread (or the subscribing one).
  void Offer(const glassbox::v1::JobInfo& info, bool final) {
    std::unique_lock lock(mu_);
    if (final_seen_ || ended_) return;  // the final state is the last that goes out
    pending_ = info;
    has_pending_ = true;
    final_seen_ = final;
    if (!writing_) WriteLocked(lock);
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock lock(mu_);
    writing_ = false;
    if (!ok || cancelled_) {
      EndLocked(lock, grpc::Status(grpc::StatusCode::CANCELLED, "the watch was cancelled"));
      return;
    }
    if (has_pending_) WriteLocked(lock);
  }

  void OnCancel() override {
    std::unique_lock lock(mu_);
    cancelled_ = true;
    // A write in flight ends the call when it completes.
    if (!writing_) EndLocked(lock, grpc::Status(grpc::StatusCode::CANCELLED, "the watch was cancelled"));
  }

  void OnDone() override {
    std::shared_ptr<ScanJobs::Watch> watch;
    {
      std::lock_guard lock(mu_);
      watch = std::move(watch_);
    }
    // Waits for an Offer in progress; none comes after.
    if (watch) watch->Close();
    delete this;
  }

 private:
  void WriteLocked(std::unique_lock<std::mutex>& lock) {
    current_ = pending_;
    has_pending_ = false;
    writing_ = true;
    const bool last = final_seen_;
    if (last) ended_ = true;
    lock.unlock();
    if (last) {
      StartWriteAndFinish(&current_, grpc::WriteOptions(), grpc::Status::OK);
    } else {
      StartWrite(&current_);
    }
  }

  void EndLocked(std::unique_lock<std::mutex>& lock, const grpc::Status& status) {
    if (ended_) return;
    ended_ = true;
    lock.unlock();
    Finish(status);
  }

  std::mutex mu_;
  std::shared_ptr<ScanJobs::Watch> watch_;
  glassbox::v1::JobInfo pending_, current_;
  bool has_pending_ = false, writing_ = false, final_seen_ = false, ended_ = false,
       cancelled_ = false;
};

}  // namespace glassbox
