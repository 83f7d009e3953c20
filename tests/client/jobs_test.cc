// Dataset-scan jobs without a server: the checks of what the job RPCs return (jobs.h), and how
// the CLI shows a job's progress (cli/job_progress.h).
#include "client/cpp/jobs.h"

#include <sstream>
#include <string>

#include "absl/time/time.h"
#include "client/cpp/cli/job_progress.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glassbox {
namespace {

using ::testing::HasSubstr;
namespace pb = ::glassbox::v1;

pb::ScanResults GoodResults() {
  pb::ScanResults results;
  pb::ScanTargetResult& target = *results.add_targets();
  target.set_index(4);
  target.set_name("blocks.0.mlp.hook_post[7]");
  pb::ScanRecord& record = *target.add_top();
  record.set_position(5);
  record.set_window_start(3);
  for (int32_t id : {1, 2, 3}) record.add_tokens(id);
  for (float a : {0.5f, 0.25f, 2.0f}) record.add_activations(a);
  *target.add_random() = record;
  *target.add_quantiles()->add_records() = record;
  for (float edge : {0.0f, 1.0f, 2.0f}) target.add_histogram_edges(edge);
  for (int64_t count : {4, 5}) target.add_histogram_counts(count);
  return results;
}

void ExpectMalformed(const pb::ScanResults& results, const std::string& text) {
  const absl::Status status = client::CheckScanResults(results);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(text));
}

TEST(JobsTest, StatesAndNames) {
  EXPECT_FALSE(client::JobEnded(pb::JOB_QUEUED));
  EXPECT_FALSE(client::JobEnded(pb::JOB_RUNNING));
  EXPECT_TRUE(client::JobEnded(pb::JOB_SUCCEEDED));
  EXPECT_TRUE(client::JobEnded(pb::JOB_FAILED));
  EXPECT_TRUE(client::JobEnded(pb::JOB_CANCELLED));
  EXPECT_EQ(client::JobStateName(pb::JOB_RUNNING), "running");
  EXPECT_EQ(client::JobStateName(pb::JOB_CANCELLED), "cancelled");
  EXPECT_EQ(client::JobStateName(pb::JOB_STATE_UNSPECIFIED), "unknown");
}

TEST(JobsTest, CheckScanResults) {
  EXPECT_TRUE(client::CheckScanResults(GoodResults()).ok());
  EXPECT_TRUE(client::CheckScanResults(pb::ScanResults()).ok());

  pb::ScanResults r = GoodResults();
  r.mutable_targets(0)->mutable_top(0)->add_activations(1);
  ExpectMalformed(r, "target 4 (blocks.0.mlp.hook_post[7]) top[0] has 3 tokens and 4 activations");
  r = GoodResults();
  r.mutable_targets(0)->mutable_random(0)->add_token_strings("a");
  ExpectMalformed(r, "random[0] has 3 tokens and 1 token strings");
  r = GoodResults();
  r.mutable_targets(0)->mutable_quantiles(0)->mutable_records(0)->set_position(6);
  ExpectMalformed(r, "quantiles[0][0] puts its max at position 6, outside its window [3, 6)");
  r = GoodResults();
  r.mutable_targets(0)->mutable_top(0)->set_position(2);
  ExpectMalformed(r, "outside its window [3, 6)");
  r = GoodResults();
  r.mutable_targets(0)->add_histogram_counts(1);
  ExpectMalformed(r, "has 3 histogram edges for 3 bins");
}

TEST(JobsTest, CheckScoreExplanationResponse) {
  pb::ScoreExplanationRequest request;
  pb::ScoredExcerpt& excerpt = *request.add_excerpts();
  excerpt.add_tokens(1);
  excerpt.add_tokens(2);
  pb::ScoreExplanationResponse response;
  pb::ExcerptActivations& row = *response.add_true_activations();
  row.add_values(0.5f);
  row.add_values(1);
  EXPECT_TRUE(client::CheckScoreExplanationResponse(request, response).ok());
  response.mutable_true_activations(0)->add_values(2);
  EXPECT_THAT(std::string(client::CheckScoreExplanationResponse(request, response).message()),
              HasSubstr("excerpt 0 has 2 tokens and 3 true activations"));
  response.add_true_activations();
  EXPECT_THAT(std::string(client::CheckScoreExplanationResponse(request, response).message()),
              HasSubstr("2 rows of true activations for 1 excerpts"));
}

TEST(JobProgressTest, FormatSecondsAndProgressLine) {
  EXPECT_EQ(cli::FormatSeconds(3.5), "3.5s");
  EXPECT_EQ(cli::FormatSeconds(42.4), "42s");
  EXPECT_EQ(cli::FormatSeconds(185), "3m05s");
  EXPECT_EQ(cli::FormatSeconds(3720), "1h02m");
  EXPECT_EQ(cli::FormatSeconds(-1), "?");

  pb::JobInfo info;
  info.set_job_id("scan-7");
  info.set_state(pb::JOB_QUEUED);
  info.set_current_pass(1);
  info.set_passes(2);
  info.set_tokens_total(1000);
  info.set_targets(12);
  EXPECT_EQ(cli::ProgressLine(info), "scan-7: queued, 1000 tokens to scan for 12 targets");
  info.set_state(pb::JOB_RUNNING);
  EXPECT_EQ(cli::ProgressLine(info), "scan-7: pass 1/2, 0/1000 tokens (0%)");
  info.set_current_pass(2);
  info.set_tokens_done(999);
  info.set_tokens_per_second(250.4);
  info.set_eta_seconds(125);
  info.set_resumed(1);
  EXPECT_EQ(cli::ProgressLine(info),
            "scan-7: pass 2/2, 999/1000 tokens (99%), 250 tokens/s, ETA 2m05s (resumed)");
}

TEST(JobProgressTest, LinesAreThinnedOut) {
  std::ostringstream err;
  cli::ProgressPrinter progress(err, /*in_place=*/false, absl::Seconds(10));
  const absl::Time t0 = absl::UnixEpoch();
  pb::JobInfo info;
  info.set_job_id("j");
  info.set_state(pb::JOB_QUEUED);
  info.set_current_pass(1);
  info.set_passes(2);
  info.set_tokens_total(100);
  progress.Update(info, t0);
  info.set_state(pb::JOB_RUNNING);
  progress.Update(info, t0 + absl::Seconds(1));  // a new state: shown
  info.set_tokens_done(10);
  progress.Update(info, t0 + absl::Seconds(2));  // too soon: skipped
  info.set_tokens_done(20);
  progress.Update(info, t0 + absl::Seconds(11));  // 10 s after the last line
  info.set_current_pass(2);
  info.set_tokens_done(50);
  progress.Update(info, t0 + absl::Seconds(12));  // a new pass: shown
  info.set_state(pb::JOB_SUCCEEDED);
  progress.Update(info, t0 + absl::Seconds(30));  // the outcome is not progress
  progress.Finish();
  EXPECT_EQ(err.str(),
            "j: queued, 100 tokens to scan for 0 targets\n"
            "j: pass 1/2, 0/100 tokens (0%)\n"
            "j: pass 1/2, 20/100 tokens (20%)\n"
            "j: pass 2/2, 50/100 tokens (50%)\n");
}

TEST(JobProgressTest, InPlaceRewritesOneLine) {
  std::ostringstream err;
  cli::ProgressPrinter progress(err, /*in_place=*/true);
  const absl::Time t0 = absl::UnixEpoch();
  pb::JobInfo info;
  info.set_job_id("j");
  info.set_state(pb::JOB_RUNNING);
  info.set_current_pass(1);
  info.set_passes(1);
  info.set_tokens_total(100);
  progress.Update(info, t0);
  info.set_tokens_done(40);
  progress.Update(info, t0 + absl::Milliseconds(50));  // within 0.2 s: skipped
  progress.Update(info, t0 + absl::Milliseconds(300));
  progress.Finish();
  EXPECT_EQ(err.str(),
            "\rj: pass 1/1, 0/100 tokens (0%)\x1b[K"
            "\rj: pass 1/1, 40/100 tokens (40%)\x1b[K"
            "\r\x1b[K");
  // Nothing drawn, nothing to erase.
  std::ostringstream quiet;
  cli::ProgressPrinter unused(quiet, /*in_place=*/true);
  unused.Finish();
  EXPECT_EQ(quiet.str(), "");
}

}  // namespace
}  // namespace glassbox
