#include "client/cpp/cli/job_progress.h"

#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cpp/jobs.h"

namespace glassbox::cli {
namespace {

namespace pb = ::glassbox::v1;

// "1 pass", "2 passes".
std::string Passes(int32_t n) { return absl::StrCat(n, n == 1 ? " pass" : " passes"); }

}  // namespace

std::string FormatSeconds(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  if (seconds < 10) return absl::StrFormat("%.1fs", seconds);
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s < 60) return absl::StrFormat("%ds", s);
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
}

std::string ProgressLine(const pb::JobInfo& info) {
  if (info.state() == pb::JOB_QUEUED) {
    return absl::StrFormat("%s: queued, %d tokens to scan for %d targets", info.job_id(),
                           info.tokens_total(), info.targets());
  }
  if (info.state() != pb::JOB_RUNNING) {
    return absl::StrFormat("%s: %s", info.job_id(), client::JobStateName(info.state()));
  }
  const int64_t percent =
      info.tokens_total() > 0 ? info.tokens_done() * 100 / info.tokens_total() : 0;
  std::string line =
      absl::StrFormat("%s: pass %d/%d, %d/%d tokens (%d%%)", info.job_id(), info.current_pass(),
                      info.passes(), info.tokens_done(), info.tokens_total(), percent);
  if (info.tokens_per_second() > 0) {
    absl::StrAppendFormat(&line, ", %.0f tokens/s, ETA %s", info.tokens_per_second(),
                          FormatSeconds(info.eta_seconds()));
  }
  if (info.resumed() > 0) absl::StrAppend(&line, " (resumed)");
  return line;
}

ProgressPrinter::ProgressPrinter(std::ostream& err, bool in_place)
    : ProgressPrinter(err, in_place, in_place ? absl::Milliseconds(200) : absl::Seconds(10)) {}

ProgressPrinter::ProgressPrinter(std::ostream& err, bool in_place, absl::Duration interval)
    : err_(err), in_place_(in_place), interval_(interval) {}

void ProgressPrinter::Update(const pb::JobInfo& info, absl::Time now) {
  if (client::JobEnded(info.state())) return;  // the outcome is JobOutcome's
  const bool changed = info.state() != state_ || info.current_pass() != pass_;
  if (!changed && now - last_ < interval_) return;
  state_ = info.state();
  pass_ = info.current_pass();
  last_ = now;
  if (in_place_) {
    err_ << "\r" << ProgressLine(info) << "\x1b[K" << std::flush;
    drawn_ = true;
  } else {
    err_ << ProgressLine(info) << "\n" << std::flush;
  }
}

void ProgressPrinter::Finish() {
  if (drawn_) err_ << "\r\x1b[K" << std::flush;
  drawn_ = false;
}

absl::Status JobOutcome(const pb::JobInfo& info, std::ostream& out) {
  const std::string elapsed = FormatSeconds(info.elapsed_seconds());
  switch (info.state()) {
    case pb::JOB_SUCCEEDED:
      out << absl::StrFormat("%s succeeded: %d targets, %d tokens in %s, %s", info.job_id(),
                             info.targets(), info.tokens_total(), Passes(info.passes()), elapsed);
      if (info.resumed() > 0) {
        out << absl::StrFormat(" (resumed %d time%s)", info.resumed(),
                               info.resumed() == 1 ? "" : "s");
      }
      out << absl::StrFormat("\nresults: glassbox job results %s\n", info.job_id());
      return absl::OkStatus();
    case pb::JOB_FAILED:
      return absl::AbortedError(
          absl::StrFormat("%s failed after %s: %s", info.job_id(), elapsed, info.error()));
    case pb::JOB_CANCELLED:
      return absl::CancelledError(absl::StrFormat(
          "%s was cancelled after %s (pass %d/%d, %d/%d tokens)", info.job_id(), elapsed,
          info.current_pass(), info.passes(), info.tokens_done(), info.tokens_total()));
    default:
      return absl::InternalError(absl::StrFormat("%s has not ended: %s", info.job_id(),
                                                 client::JobStateName(info.state())));
  }
}

absl::Status WatchToEnd(client::Client& client, const std::string& job_id, bool in_place,
                        std::ostream& out, std::ostream& err) {
  ProgressPrinter progress(err, in_place);
  absl::StatusOr<pb::JobInfo> final_info = client.WatchJob(job_id, [&](const pb::JobInfo& info) {
    progress.Update(info, absl::Now());
    return absl::OkStatus();
  });
  progress.Finish();
  if (!final_info.ok()) {
    const absl::Status& status = final_info.status();
    if (status.code() == absl::StatusCode::kUnavailable ||
        status.code() == absl::StatusCode::kDeadlineExceeded) {
      return absl::Status(status.code(),
                          absl::StrFormat("%s (the job itself goes on: glassbox job watch %s)",
                                          status.message(), job_id));
    }
    return status;
  }
  return JobOutcome(*final_info, out);
}

}  // namespace glassbox::cli
