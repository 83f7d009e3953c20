// The scheduler's worker: tasks run in turn on one thread, queue positions, withdrawal of queued
// tasks, shutdown running what is queued, and the stats GetQueue reports.
#include "server/scheduler/scheduler.h"

#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glassbox {
namespace {

using ::testing::ElementsAre;

// Records what ran (each pass's members) and what was abandoned.
struct Log {
  std::mutex mu;
  std::vector<std::vector<std::string>> passes;
  std::vector<std::string> abandoned;
};

class LoggedTask : public Task {
 public:
  LoggedTask(std::string name, TaskInfo info, Log& log)
      : Task(std::move(info)), name_(std::move(name)), log_(log) {}
  void Run(std::span<Task* const> batch) override {
    std::vector<std::string> names;
    for (Task* t : batch) names.push_back(static_cast<LoggedTask*>(t)->name_);
    std::lock_guard lock(log_.mu);
    log_.passes.push_back(names);
  }
  void Abandon(const absl::Status& why) override {
    std::lock_guard lock(log_.mu);
    log_.abandoned.push_back(name_ + ": " + std::string(why.message()));
  }

 private:
  std::string name_;
  Log& log_;
};

// A task that holds the worker until released.
struct Hold {
  std::promise<void> started, release;
  std::shared_ptr<FunctionTask> task;
  Hold() {
    std::shared_future<void> gate = release.get_future().share();
    task = std::make_shared<FunctionTask>(
        TaskInfo{.owner = "ops", .rpc = "hold"},
        [this, gate] {
          started.set_value();
          gate.wait();
        },
        [](const absl::Status&) {});
  }
};

TEST(SchedulerTest, QueuedTasksRunInTurnAndReportPositions) {
  Log log;
  Scheduler scheduler({.max_batch_tokens = 1 << 20});
  Hold hold;
  ASSERT_TRUE(scheduler.Submit(hold.task).ok());
  hold.started.get_future().wait();
  auto position = [&](std::string name, std::string owner, std::string key) {
    auto task = std::make_shared<LoggedTask>(name,
                                             TaskInfo{.owner = owner,
                                                      .rpc = "Run",
                                                      .tokens = 10,
                                                      .batch_key = key,
                                                      .rows = 1,
                                                      .padded_length = 10},
                                             log);
    auto queued = scheduler.Submit(task);
    EXPECT_TRUE(queued.ok());
    return queued.ok() ? *queued : -1;
  };
  EXPECT_EQ(position("a", "alice", "k"), 0);
  EXPECT_EQ(position("b", "bob", "k"), 1);
  EXPECT_EQ(position("c", "carol", ""), 2);

  const Scheduler::Stats held = scheduler.GetStats();
  ASSERT_EQ(held.queued.size(), 3u);
  EXPECT_EQ(held.queued[0].info.owner, "alice");
  ASSERT_EQ(held.running.size(), 1u);
  EXPECT_EQ(held.running[0].rpc, "hold");

  hold.release.set_value();
  scheduler.Shutdown();
  EXPECT_THAT(log.passes, ElementsAre(ElementsAre("a", "b"), ElementsAre("c")));
  const Scheduler::Stats done = scheduler.GetStats();
  EXPECT_EQ(done.passes, 3);  // the hold, the merged pass, c
  EXPECT_EQ(done.tasks_run, 4);
  EXPECT_EQ(done.largest_batch, 2);
  EXPECT_TRUE(done.queued.empty());
  EXPECT_TRUE(done.running.empty());
}

TEST(SchedulerTest, WithdrawnTasksAreAbandonedNotRun) {
  Log log;
  Scheduler scheduler;
  Hold hold;
  ASSERT_TRUE(scheduler.Submit(hold.task).ok());
  hold.started.get_future().wait();
  auto a = std::make_shared<LoggedTask>("a", TaskInfo{.owner = "alice"}, log);
  auto b = std::make_shared<LoggedTask>("b", TaskInfo{.owner = "alice"}, log);
  ASSERT_TRUE(scheduler.Submit(a).ok());
  ASSERT_TRUE(scheduler.Submit(b).ok());
  EXPECT_TRUE(scheduler.Withdraw(a.get(), absl::CancelledError("the client cancelled")));
  EXPECT_FALSE(scheduler.Withdraw(a.get(), absl::CancelledError("again")));
  EXPECT_FALSE(scheduler.Withdraw(hold.task.get(), absl::CancelledError("running")));
  hold.release.set_value();
  scheduler.Shutdown();
  EXPECT_THAT(log.passes, ElementsAre(ElementsAre("b")));
  EXPECT_THAT(log.abandoned, ElementsAre("a: the client cancelled"));
}

TEST(SchedulerTest, ShutdownRunsTheQueueThenRefuses) {
  Log log;
  Scheduler scheduler;
  for (const char* n : {"a", "b", "c"}) {
    ASSERT_TRUE(scheduler.Submit(std::make_shared<LoggedTask>(n, TaskInfo{.owner = n}, log)).ok());
  }
  scheduler.Shutdown();
  EXPECT_EQ(log.passes.size(), 3u);
  auto late = scheduler.Submit(std::make_shared<LoggedTask>("late", TaskInfo{}, log));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnavailable);
}

TEST(SchedulerTest, RefusesTasksOverTheMemoryBudget) {
  Log log;
  Scheduler scheduler({.memory_budget_bytes = 100});
  auto big = std::make_shared<LoggedTask>("big", TaskInfo{.rpc = "Run", .memory_bytes = 101}, log);
  EXPECT_EQ(scheduler.Submit(big).status().code(), absl::StatusCode::kResourceExhausted);
  scheduler.Shutdown();
  EXPECT_TRUE(log.passes.empty());
}

}  // namespace
}  // namespace glassbox
