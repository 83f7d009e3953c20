// Following a dataset-scan job on the command line (`scan`, `job watch`): a progress line on
// stderr while it runs, then a summary on stdout and the status its outcome exits with.
#pragma once

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/cpp/glassbox_client.h"
#include "glassbox/v1/glassbox.pb.h"

namespace glassbox::cli {

// "42s", "3.5s", "3m05s", "1h02m".
std::string FormatSeconds(double seconds);

// The job's progress on one line: "scan-1: queued, 81920 tokens to scan for 96 targets",
// "scan-1: pass 1/2, 12288/81920 tokens (15%), 5231 tokens/s, ETA 13s".
std::string ProgressLine(const glassbox::v1::JobInfo& info);

// Prints progress lines on `err`: rewritten in place ("\r", then the line and an erase to the
// end of the line) when `in_place` (a terminal), else one line each. Updates are thinned out: a
// line whenever the state or the pass changes, otherwise at most one per `interval` (0.2 s in
// place, 10 s as lines), so that a long scan writes a readable log.
class ProgressPrinter {
 public:
  ProgressPrinter(std::ostream& err, bool in_place);
  ProgressPrinter(std::ostream& err, bool in_place, absl::Duration interval);
  void Update(const glassbox::v1::JobInfo& info, absl::Time now);
  // Erases the line drawn in place, if any (the summary follows on stdout).
  void Finish();

 private:
  std::ostream& err_;
  const bool in_place_;
  const absl::Duration interval_;
  bool drawn_ = false;
  absl::Time last_ = absl::InfinitePast();
  glassbox::v1::JobState state_ = glassbox::v1::JOB_STATE_UNSPECIFIED;
  int32_t pass_ = 0;
};

// What an ended job exits with: OK after printing "scan-1 succeeded: 96 targets, 81920 tokens
// in 2 passes, 15.6s" and where its results are on `out`; ABORTED with the job's error when it
// failed, CANCELLED when it was cancelled.
absl::Status JobOutcome(const glassbox::v1::JobInfo& info, std::ostream& out);

// Watches the job to its end (progress on `err`), then JobOutcome. A watch that breaks (the
// server went away, --timeout) says that the job goes on and how to follow it again.
absl::Status WatchToEnd(client::Client& client, const std::string& job_id, bool in_place,
                        std::ostream& out, std::ostream& err);

}  // namespace glassbox::cli
