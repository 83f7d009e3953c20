// Quota accounting with a clock the test moves: requests_per_minute's token bucket,
// max_concurrent_runs' slots (released by RAII, once), tokens_per_day's rolling 24 h window,
// and the refusal messages, which name the quota, the limit, the key and when it refills.
#include "server/service/quota.h"

#include <optional>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/service/fake_clock.h"

namespace glassbox {
namespace {

using ::glassbox::testing::FakeClock;
using ::testing::HasSubstr;

ApiKey KeyWith(const std::string& name, ApiKeyQuota quota) {
  return {.name = name, .quota = quota};
}

TEST(RefillText, RoundsUp) {
  EXPECT_EQ(RefillText(absl::Milliseconds(1)), "0.1 s");
  EXPECT_EQ(RefillText(absl::Milliseconds(2310)), "2.4 s");
  EXPECT_EQ(RefillText(absl::Seconds(12)), "12 s");
  EXPECT_EQ(RefillText(absl::Milliseconds(12200)), "13 s");
  EXPECT_EQ(RefillText(absl::Seconds(119)), "119 s");
  EXPECT_EQ(RefillText(absl::Seconds(120)), "2 min");
  EXPECT_EQ(RefillText(absl::Seconds(121)), "3 min");
  EXPECT_EQ(RefillText(absl::Hours(3) + absl::Minutes(12)), "3 h 12 min");
  EXPECT_EQ(RefillText(absl::Hours(24)), "24 h 0 min");
}

TEST(QuotaTracker, RequestsPerMinuteIsATokenBucket) {
  FakeClock clock;
  QuotaTracker quotas(clock.AsClock());
  const ApiKey alice = KeyWith("alice", {.requests_per_minute = 3});
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(quotas.CountRequest(alice).ok()) << i;  // starts full
  absl::Status refused = quotas.CountRequest(alice);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(refused.message(),
            R"(requests_per_minute quota of 3 for key "alice" is used up; it refills in 20 s )"
            "(3 requests a minute, at most 3 at once)");
  // One request comes back every 20 s.
  clock.AdvanceMs(19'900);
  refused = quotas.CountRequest(alice);
  EXPECT_THAT(refused.message(), HasSubstr("it refills in 0.1 s"));
  clock.AdvanceMs(100);
  EXPECT_TRUE(quotas.CountRequest(alice).ok());
  EXPECT_FALSE(quotas.CountRequest(alice).ok());
  // An idle hour refills the bucket to its size, no more.
  clock.Advance(3600);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(quotas.CountRequest(alice).ok()) << i;
  EXPECT_FALSE(quotas.CountRequest(alice).ok());

  // Another key has a bucket of its own; a key without the quota is never refused.
  EXPECT_TRUE(quotas.CountRequest(KeyWith("bob", {.requests_per_minute = 1})).ok());
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(quotas.CountRequest(KeyWith("carol", {})).ok());
}

// A reload that changes the quota applies at the next request; what was spent still counts.
TEST(QuotaTracker, AChangedRateAppliesAtTheNextRequest) {
  FakeClock clock;
  QuotaTracker quotas(clock.AsClock());
  ASSERT_TRUE(quotas.CountRequest(KeyWith("alice", {.requests_per_minute = 100})).ok());
  const ApiKey lowered = KeyWith("alice", {.requests_per_minute = 2});
  EXPECT_TRUE(quotas.CountRequest(lowered).ok());
  const absl::Status refused = quotas.CountRequest(lowered);
  EXPECT_THAT(refused.message(), HasSubstr("quota of 2 for key \"alice\" is used up"));
  clock.Advance(60);
  const ApiKey raised = KeyWith("alice", {.requests_per_minute = 5});
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(quotas.CountRequest(raised).ok()) << i;
  EXPECT_FALSE(quotas.CountRequest(raised).ok());
}

TEST(QuotaTracker, ConcurrentRunsAreHeldBySlots) {
  QuotaTracker quotas;
  const ApiKey alice = KeyWith("alice", {.max_concurrent_runs = 2});
  auto first = quotas.StartRun(alice);
  auto second = quotas.StartRun(alice);
  ASSERT_TRUE(first.ok() && second.ok());
  auto third = quotas.StartRun(alice);
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(third.status().message(),
            R"(max_concurrent_runs quota of 2 for key "alice" is used up (requests queued or )"
            "running: 2); it refills when one of them finishes");
  EXPECT_EQ(quotas.UsageOf("alice").runs_in_flight, 2);
  {
    // Moving a slot moves the run, which is then given back once.
    RunSlot moved = *std::move(first);
    RunSlot assigned;
    assigned = std::move(moved);
    EXPECT_EQ(quotas.UsageOf("alice").runs_in_flight, 2);
  }
  EXPECT_EQ(quotas.UsageOf("alice").runs_in_flight, 1);
  auto again = quotas.StartRun(alice);
  ASSERT_TRUE(again.ok());
  // Assigning over a held slot gives that one back.
  *again = RunSlot();
  EXPECT_EQ(quotas.UsageOf("alice").runs_in_flight, 1);
  // Without the quota runs are counted but never refused.
  std::vector<RunSlot> many;
  for (int i = 0; i < 50; ++i) many.push_back(*quotas.StartRun(KeyWith("bob", {})));
  EXPECT_EQ(quotas.UsageOf("bob").runs_in_flight, 50);
  many.clear();
  EXPECT_EQ(quotas.UsageOf("bob").runs_in_flight, 0);
}

TEST(QuotaTracker, TokensPerDayIsARollingWindow) {
  FakeClock clock;
  QuotaTracker quotas(clock.AsClock());
  const ApiKey alice = KeyWith("alice", {.tokens_per_day = 100});
  ASSERT_TRUE(quotas.ChargeTokens(alice, 60).ok());
  clock.Advance(30 * 60);
  ASSERT_TRUE(quotas.ChargeTokens(alice, 30).ok());
  absl::Status refused = quotas.ChargeTokens(alice, 20);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  // The first 60 tokens leave the window 24 h after they were spent, 23 h 30 min from now.
  EXPECT_EQ(refused.message(),
            R"(tokens_per_day quota of 100 for key "alice" is used up: this request needs 20 )"
            "tokens and 90 were spent in the last 24 h; it refills in 23 h 30 min (a rolling 24 "
            "h window)");
  EXPECT_TRUE(quotas.ChargeTokens(alice, 10).ok());  // what still fits is taken
  EXPECT_EQ(quotas.UsageOf("alice").tokens_last_day, 100);
  clock.Advance(23 * 3600 + 30 * 60);
  EXPECT_EQ(quotas.UsageOf("alice").tokens_last_day, 40);
  EXPECT_TRUE(quotas.ChargeTokens(alice, 60).ok());
  EXPECT_FALSE(quotas.ChargeTokens(alice, 1).ok());

  // A request larger than the whole quota can never fit, whatever the window holds.
  const absl::Status never = quotas.ChargeTokens(alice, 101);
  EXPECT_EQ(never.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(never.message(),
              HasSubstr(R"(tokens_per_day quota of 100 for key "alice" cannot hold this request: )"
                        "it needs 101 tokens"));
  EXPECT_TRUE(quotas.ChargeTokens(KeyWith("bob", {}), 1'000'000'000).ok());
}

// Charges within a minute share one record, which leaves the window 24 h after its last charge:
// up to a minute late, never early.
TEST(QuotaTracker, TokensOfOneMinuteLeaveTogether) {
  FakeClock clock;
  QuotaTracker quotas(clock.AsClock());
  const ApiKey alice = KeyWith("alice", {.tokens_per_day = 1000});
  ASSERT_TRUE(quotas.ChargeTokens(alice, 10).ok());
  clock.Advance(30);
  ASSERT_TRUE(quotas.ChargeTokens(alice, 10).ok());
  clock.Advance(40);  // 70 s after the first: a record of its own
  ASSERT_TRUE(quotas.ChargeTokens(alice, 5).ok());
  clock.Advance(24 * 3600 - 70);  // 24 h after the first charge
  EXPECT_EQ(quotas.UsageOf("alice").tokens_last_day, 25);
  clock.Advance(30);
  EXPECT_EQ(quotas.UsageOf("alice").tokens_last_day, 5);
  clock.Advance(40);
  EXPECT_EQ(quotas.UsageOf("alice").tokens_last_day, 0);
}

}  // namespace
}  // namespace glassbox
