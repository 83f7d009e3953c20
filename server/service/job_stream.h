// A streaming RPC on gRPC's callback API: a reactor that writes a StreamingJob's header, every
// response the job queues, then a summary, with no thread waiting on the stream. Each write is
// started by whoever finds the stream idle: the worker that just queued a response (through the
// channel's OnReady) or gRPC's thread when the previous write completes. A client that cancels,
// disconnects or passes its deadline cancels the job (withdrawn from the queue, or stopped
// between layers).
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "server/service/status_util.h"
#include "server/service/stream_limit.h"
#include "server/service/streaming_job.h"

namespace glassbox {

// A stream refused before it began: finishes with `status` at once.
template <typename Response>
class RefusedStream final : public grpc::ServerWriteReactor<Response> {
 public:
  explicit RefusedStream(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

template <typename Response>
grpc::ServerWriteReactor<Response>* Refuse(const absl::Status& status) {
  return new RefusedStream<Response>(ToGrpcStatus(status));
}

template <typename Response>
class JobStream final : public grpc::ServerWriteReactor<Response> {
 public:
  // The summary, built on the job's success (after its last response was written).
  using Summarize = std::function<absl::StatusOr<Response>()>;
  // Sees each response before it is written (e.g. to count bytes).
  using Observe = std::function<void(const Response&)>;

  // Registers with `job`'s channel; call before the job is submitted, then Begin or Refuse.
  // `what` names the work in cancellation messages ("the run"). The stream deletes itself when
  // the call is done, releasing `slot`.
  JobStream(grpc::CallbackServerContext* context, std::shared_ptr<StreamingJob<Response>> job,
            StreamLimit::Slot slot, std::string what, Summarize summarize,
            Observe observe = nullptr)
      : context_(context),
        job_(std::move(job)),
        slot_(std::move(slot)),
        what_(std::move(what)),
        summarize_(std::move(summarize)),
        observe_(std::move(observe)),
        shared_(std::make_shared<Shared>()) {
    shared_->stream = this;
    job_->channel().OnReady([shared = shared_] {
      std::unique_lock lock(shared->mu);
      if (shared->stream == nullptr) return;
      shared->stream->ResumeLocked(lock);
    });
  }

  // The job was queued: writes `header`, then the job's responses.
  void Begin(Response header) {
    current_ = std::move(header);
    this->StartWrite(&current_);
  }

  // The job could not be queued.
  void Refuse(const absl::Status& status) { End(ToGrpcStatus(status)); }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      // The client is gone (or the call was cancelled): stop the job and end the call.
      job_->Cancel();
      FinishCancelled();
      return;
    }
    Pump();
  }

  void OnCancel() override {
    bool idle;
    {
      // Marked before the job is cancelled: a pump that then finds the channel closed knows why.
      std::lock_guard lock(shared_->mu);
      cancelled_ = true;
      idle = !busy_;
      busy_ = true;
    }
    job_->Cancel();
    if (idle) FinishCancelled();  // Otherwise the write in flight (or the pump) ends the call.
  }

  void OnDone() override {
    {
      std::lock_guard lock(shared_->mu);
      shared_->stream = nullptr;
    }
    delete this;
  }

 private:
  // What the channel's callback holds: it may run after the stream is gone.
  struct Shared {
    std::mutex mu;
    JobStream* stream = nullptr;  // Null once the call is done.
  };

  // The channel has news. With `lock` held on shared_->mu.
  void ResumeLocked(std::unique_lock<std::mutex>& lock) {
    if (busy_) {
      pending_ = true;  // The busy thread looks again before it goes idle.
      return;
    }
    busy_ = true;
    lock.unlock();
    Pump();
  }

  // With the stream busy (only one thread at a time gets here): writes the next response, the
  // summary, or ends the call; or goes idle until the channel calls back.
  void Pump() {
    for (;;) {
      {
        std::lock_guard lock(shared_->mu);
        if (cancelled_) break;
        pending_ = false;
      }
      bool finished = false;
      std::optional<Response> item = job_->channel().TryPop(&finished);
      if (item) {
        if (observe_) observe_(*item);
        current_ = *std::move(item);
        // More is queued already: let gRPC coalesce this write with the next ones (fewer frames
        // and wake-ups); the last queued response goes out at once.
        grpc::WriteOptions options;
        if (job_->channel().queued_bytes() > 0) options.set_buffer_hint();
        this->StartWrite(&current_, options);
        return;
      }
      {
        std::lock_guard lock(shared_->mu);
        if (cancelled_) break;  // The channel may be empty because the cancel closed it.
        if (!finished) {
          if (pending_) continue;
          busy_ = false;
          return;
        }
      }
      WriteSummary();
      return;
    }
    FinishCancelled();
  }

  // The job has finished (its status is set before its channel finishes).
  void WriteSummary() {
    job_->WaitDone();
    absl::Status status = job_->status();
    if (status.ok()) {
      absl::StatusOr<Response> summary = summarize_();
      if (summary.ok()) {
        current_ = *std::move(summary);
        Release();
        this->StartWriteAndFinish(&current_, grpc::WriteOptions(), grpc::Status::OK);
        return;
      }
      status = summary.status();
    }
    End(ToGrpcStatus(status));
  }

  // What the call holds for its duration (its stream slot, the caller's run slot inside the
  // summary's captures) is given back before the client can learn that the call ended: a client
  // that starts its next stream as soon as this one finishes must find them free.
  void Release() {
    slot_.reset();
    summarize_ = nullptr;
    observe_ = nullptr;
  }

  void End(const grpc::Status& status) {
    Release();
    this->Finish(status);
  }

  void FinishCancelled() {
    const bool expired = context_->deadline() <= std::chrono::system_clock::now();
    End(expired ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                               "the deadline passed during " + what_)
                : grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled " + what_));
  }

  grpc::CallbackServerContext* const context_;
  const std::shared_ptr<StreamingJob<Response>> job_;
  std::optional<StreamLimit::Slot> slot_;
  const std::string what_;
  Summarize summarize_;
  Observe observe_;
  const std::shared_ptr<Shared> shared_;
  Response current_;  // The message being written.
  // Guarded by shared_->mu. busy_: one thread owns the stream's next step (a write in flight,
  // or a pump running); pending_: the channel called while it was busy. The stream starts busy,
  // reserved for Begin or Refuse: the job may queue responses before the header is written.
  bool busy_ = true;
  bool pending_ = false;
  bool cancelled_ = false;
};

}  // namespace glassbox
