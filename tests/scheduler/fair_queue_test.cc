// The scheduler's queue without threads: fair share between owners by order of service, merging
// of compatible tasks within every bound, memory admission, removal.
#include "server/scheduler/fair_queue.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glassbox {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class NamedTask : public Task {
 public:
  NamedTask(std::string name, TaskInfo info) : Task(std::move(info)), name_(std::move(name)) {}
  void Run(std::span<Task* const>) override {}
  void Abandon(const absl::Status&) override {}
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

std::shared_ptr<NamedTask> Make(std::string name, std::string owner, int64_t tokens,
                                std::string batch_key = "", int64_t rows = 1) {
  return std::make_shared<NamedTask>(std::move(name),
                                     TaskInfo{.owner = std::move(owner),
                                              .rpc = "Run",
                                              .tokens = tokens,
                                              .batch_key = std::move(batch_key),
                                              .rows = rows,
                                              .padded_length = rows > 0 ? tokens / rows : 0});
}

std::vector<std::string> Names(const std::vector<std::shared_ptr<Task>>& batch) {
  std::vector<std::string> names;
  for (const auto& t : batch) names.push_back(static_cast<const NamedTask&>(*t).name());
  return names;
}

// Pops passes until the queue is empty; each pass's task names.
std::vector<std::vector<std::string>> Drain(FairQueue& queue) {
  std::vector<std::vector<std::string>> passes;
  while (!queue.empty()) passes.push_back(Names(queue.PopBatch()));
  return passes;
}

TEST(FairQueueTest, OneOwnerIsServedInArrivalOrder) {
  FairQueue queue({.quantum_tokens = 100});
  for (const char* name : {"a1", "a2", "a3"})
    ASSERT_TRUE(queue.Push(Make(name, "alice", 250)).ok());
  EXPECT_THAT(Drain(queue), ElementsAre(ElementsAre("a1"), ElementsAre("a2"), ElementsAre("a3")));
}

// One key keeps many heavy runs queued; another key's small runs, queued after them, are all
// served within the first few passes rather than after the heavy ones.
TEST(FairQueueTest, HeavyQueueDoesNotStarveSmallRequests) {
  FairQueue queue({.quantum_tokens = 2048});
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(queue.Push(Make("heavy", "alice", 8192)).ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(queue.Push(Make("small", "bob", 24)).ok());
  const auto passes = Drain(queue);
  ASSERT_EQ(passes.size(), 45u);
  int last_small = -1;
  for (int i = 0; i < 45; ++i) {
    if (passes[i][0] == "small") last_small = i;
  }
  // Alice's turn adds 2048 tokens, a quarter of one heavy run: bob's five come first.
  EXPECT_EQ(last_small, 4);
}

// While both owners have work, each has been served about the same tokens: the difference never
// exceeds one quantum plus the largest request.
TEST(FairQueueTest, OwnersGetEqualTokenShares) {
  FairQueue queue({.quantum_tokens = 500});
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(queue.Push(Make("a", "alice", 1000)).ok());
  for (int i = 0; i < 120; ++i) ASSERT_TRUE(queue.Push(Make("b", "bob", 250)).ok());
  std::map<std::string, int64_t> served;
  int64_t a_left = 30 * 1000, b_left = 120 * 250;
  while (a_left > 0 && b_left > 0) {
    const auto batch = queue.PopBatch();
    ASSERT_EQ(batch.size(), 1u);
    const TaskInfo& info = batch[0]->info();
    served[info.owner] += info.tokens;
    (info.owner == "alice" ? a_left : b_left) -= info.tokens;
    EXPECT_LE(std::abs(served["alice"] - served["bob"]), 500 + 1000);
  }
}

TEST(FairQueueTest, MergesCompatibleTasksAcrossOwners) {
  FairQueue queue({.quantum_tokens = 4096, .max_batch_tokens = 1000});
  ASSERT_TRUE(queue.Push(Make("a1", "alice", 100, "m|last", 2)).ok());  // 2 rows x 50
  ASSERT_TRUE(queue.Push(Make("x", "alice", 100)).ok());                // never merges
  ASSERT_TRUE(queue.Push(Make("b1", "bob", 60, "m|last", 1)).ok());     // 1 x 60
  ASSERT_TRUE(queue.Push(Make("c1", "carol", 100, "m|all", 1)).ok());   // another key
  ASSERT_TRUE(queue.Push(Make("b2", "bob", 40, "m|last", 1)).ok());
  EXPECT_THAT(Drain(queue),
              ElementsAre(ElementsAre("a1", "b1", "b2"), ElementsAre("x"), ElementsAre("c1")));
}

// rows x longest padded length stays within max_batch_tokens; rows, tasks and memory within
// theirs.
TEST(FairQueueTest, MergingRespectsEveryBound) {
  {
    FairQueue queue({.max_batch_tokens = 300});
    for (const char* n : {"a", "b", "c", "d"})
      ASSERT_TRUE(queue.Push(Make(n, n, 100, "k", 1)).ok());
    // Three rows of 100 fill 300; the fourth waits for the next pass.
    EXPECT_THAT(Drain(queue), ElementsAre(ElementsAre("a", "b", "c"), ElementsAre("d")));
  }
  {
    FairQueue queue({.max_batch_tokens = 400});
    ASSERT_TRUE(queue.Push(Make("short", "a", 10, "k", 1)).ok());
    ASSERT_TRUE(queue.Push(Make("long", "b", 200, "k", 1)).ok());
    ASSERT_TRUE(queue.Push(Make("short2", "c", 10, "k", 1)).ok());
    // With "long" in, every row is padded to 200: a third row would make 600.
    EXPECT_THAT(Drain(queue), ElementsAre(ElementsAre("short", "long"), ElementsAre("short2")));
  }
  {
    FairQueue queue({.max_batch_tokens = 1 << 20, .max_batch_rows = 3});
    for (const char* n : {"a", "b", "c"}) ASSERT_TRUE(queue.Push(Make(n, n, 20, "k", 2)).ok());
    EXPECT_THAT(Drain(queue), ElementsAre(ElementsAre("a"), ElementsAre("b"), ElementsAre("c")));
  }
  {
    FairQueue queue({.max_batch_tokens = 1 << 20, .max_batch_tasks = 2});
    for (const char* n : {"a", "b", "c"}) ASSERT_TRUE(queue.Push(Make(n, n, 20, "k", 1)).ok());
    EXPECT_THAT(Drain(queue), ElementsAre(ElementsAre("a", "b"), ElementsAre("c")));
  }
  {
    FairQueue queue({.max_batch_tokens = 1 << 20, .memory_budget_bytes = 250});
    for (const char* n : {"a", "b", "c"}) {
      auto t = std::make_shared<NamedTask>(n, TaskInfo{.owner = n,
                                                       .tokens = 10,
                                                       .memory_bytes = 100,
                                                       .batch_key = "k",
                                                       .rows = 1,
                                                       .padded_length = 10});
      ASSERT_TRUE(queue.Push(t).ok());
    }
    EXPECT_THAT(Drain(queue), ElementsAre(ElementsAre("a", "b"), ElementsAre("c")));
  }
}

TEST(FairQueueTest, NoMergingWhenBatchTokensAreZero) {
  FairQueue queue({.max_batch_tokens = 0});
  for (const char* n : {"a", "b"}) ASSERT_TRUE(queue.Push(Make(n, n, 10, "k", 1)).ok());
  EXPECT_THAT(Drain(queue), ElementsAre(ElementsAre("a"), ElementsAre("b")));
}

// Work merged into another owner's pass is charged to its own owner: bob, whose runs rode along
// with alice's, waits while carol (who has not been served) goes first.
TEST(FairQueueTest, MergedWorkIsChargedToItsOwner) {
  FairQueue queue({.quantum_tokens = 100, .max_batch_tokens = 1 << 20});
  ASSERT_TRUE(queue.Push(Make("a", "alice", 100, "k", 1)).ok());
  ASSERT_TRUE(queue.Push(Make("b1", "bob", 100, "k", 1)).ok());
  ASSERT_TRUE(queue.Push(Make("b2", "bob", 100)).ok());
  ASSERT_TRUE(queue.Push(Make("c", "carol", 100)).ok());
  EXPECT_THAT(Drain(queue),
              ElementsAre(ElementsAre("a", "b1"), ElementsAre("c"), ElementsAre("b2")));
}

TEST(FairQueueTest, RefusesWhatCanNeverFitTheMemoryBudget) {
  FairQueue queue({.memory_budget_bytes = 1000});
  auto big = std::make_shared<NamedTask>(
      "big", TaskInfo{.owner = "a", .rpc = "Run", .memory_bytes = 1001});
  const absl::Status refused = queue.Push(big);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("1001 bytes"));
  EXPECT_THAT(refused.message(), HasSubstr("--memory_budget_bytes"));
  EXPECT_TRUE(queue.empty());
  auto fits = std::make_shared<NamedTask>("fits", TaskInfo{.owner = "a", .memory_bytes = 1000});
  EXPECT_TRUE(queue.Push(fits).ok());
}

TEST(FairQueueTest, RemovedTasksAreNotServed) {
  FairQueue queue({});
  auto a1 = Make("a1", "alice", 10), a2 = Make("a2", "alice", 10), b1 = Make("b1", "bob", 10);
  for (const auto& t : {a1, a2, b1}) ASSERT_TRUE(queue.Push(t).ok());
  EXPECT_TRUE(queue.Remove(a1.get()));
  EXPECT_TRUE(queue.Remove(b1.get()));
  EXPECT_FALSE(queue.Remove(b1.get()));
  EXPECT_EQ(queue.size(), 1u);
  EXPECT_THAT(Drain(queue), ElementsAre(ElementsAre("a2")));
}

TEST(FairQueueTest, QueuedListsFlowsInTurnOrder) {
  FairQueue queue({.quantum_tokens = 10});
  for (const auto& t : {Make("a1", "alice", 10), Make("b1", "bob", 10), Make("a2", "alice", 10)}) {
    ASSERT_TRUE(queue.Push(t).ok());
  }
  std::vector<std::string> names;
  for (const Task* t : queue.Queued()) names.push_back(static_cast<const NamedTask*>(t)->name());
  EXPECT_THAT(names, ElementsAre("a1", "a2", "b1"));
}

// Background work (scan batches) waits while anyone has interactive work queued, is served in
// arrival order when no one has, is never merged, and can be withdrawn.
TEST(FairQueueTest, BackgroundTasksRunOnlyWhenNothingElseIsQueued) {
  FairQueue queue({.quantum_tokens = 10});
  auto background = [](std::string name) {
    return std::make_shared<NamedTask>(
        std::move(name), TaskInfo{.owner = "carol", .rpc = "Scan", .tokens = 1000,
                                  .batch_key = "m", .rows = 4, .padded_length = 64,
                                  .background = true});
  };
  auto s1 = background("s1"), s2 = background("s2"), s3 = background("s3");
  for (const auto& t : {std::shared_ptr<Task>(s1), std::shared_ptr<Task>(s2)})
    ASSERT_TRUE(queue.Push(t).ok());
  ASSERT_TRUE(queue.Push(Make("a1", "alice", 10, "m")).ok());
  ASSERT_TRUE(queue.Push(Make("b1", "bob", 10)).ok());
  ASSERT_TRUE(queue.Push(s3).ok());
  EXPECT_EQ(queue.size(), 5u);
  std::vector<std::string> names;
  for (const Task* t : queue.Queued()) names.push_back(static_cast<const NamedTask*>(t)->name());
  EXPECT_THAT(names, ElementsAre("a1", "b1", "s1", "s2", "s3"));
  EXPECT_THAT(Names(queue.PopBatch()), ElementsAre("a1"));  // not merged with a scan's batch
  EXPECT_THAT(Names(queue.PopBatch()), ElementsAre("b1"));
  EXPECT_THAT(Names(queue.PopBatch()), ElementsAre("s1"));
  ASSERT_TRUE(queue.Push(Make("a2", "alice", 10)).ok());  // arrives while scans wait
  EXPECT_TRUE(queue.Remove(s2.get()));
  EXPECT_FALSE(queue.Remove(s2.get()));
  EXPECT_THAT(Drain(queue), ElementsAre(ElementsAre("a2"), ElementsAre("s3")));
}

}  // namespace
}  // namespace glassbox
