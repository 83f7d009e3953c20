// ThreadSlots, which the CUDA backend uses to give each thread its own device error word:
// distinct slots for concurrent threads, a slot back when its thread exits (and fresh for the
// next owner), the shared slot when all are taken, and owners destroyed before their threads.
// Runs without a GPU.
#include "kernels/cuda/thread_slots.h"

#include <barrier>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace glassbox {
namespace {

TEST(ThreadSlotsTest, AThreadKeepsItsSlotAndOnlyTheFirstUseIsFresh) {
  auto slots = ThreadSlots::Create(4);
  const ThreadSlots::Slot first = slots->ForThisThread();
  EXPECT_TRUE(first.fresh);
  EXPECT_FALSE(first.shared());
  const ThreadSlots::Slot again = slots->ForThisThread();
  EXPECT_EQ(again.index, first.index);
  EXPECT_FALSE(again.fresh);
  EXPECT_EQ(slots->held(), 1);
}

TEST(ThreadSlotsTest, ConcurrentThreadsGetDistinctSlots) {
  constexpr int kThreads = 8;
  auto slots = ThreadSlots::Create(kThreads + 1);
  std::vector<int> seen(kThreads, -1);
  std::barrier all_assigned(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      seen[t] = slots->ForThisThread().index;
      all_assigned.arrive_and_wait();  // every thread alive while the others ask
      EXPECT_EQ(slots->ForThisThread().index, seen[t]);
    });
  }
  for (auto& th : threads) th.join();
  const std::set<int> distinct(seen.begin(), seen.end());
  EXPECT_EQ(distinct.size(), static_cast<size_t>(kThreads));
  EXPECT_EQ(distinct.count(0), 0u);  // nobody needed the shared slot
  EXPECT_EQ(slots->held(), 0);       // all handed back at thread exit
}

TEST(ThreadSlotsTest, ASlotComesBackFreshAfterItsThreadExits) {
  auto slots = ThreadSlots::Create(2);  // one private slot
  int first = -1;
  std::thread([&] { first = slots->ForThisThread().index; }).join();
  EXPECT_EQ(first, 1);
  EXPECT_EQ(slots->held(), 0);
  ThreadSlots::Slot next;
  std::thread([&] { next = slots->ForThisThread(); }).join();
  EXPECT_EQ(next.index, 1);
  EXPECT_TRUE(next.fresh);  // what the exited thread left is not the new owner's
}

TEST(ThreadSlotsTest, ThreadsBeyondCapacityShareSlotZero) {
  auto slots = ThreadSlots::Create(2);
  EXPECT_EQ(slots->ForThisThread().index, 1);  // this thread holds the only private slot
  ThreadSlots::Slot other;
  std::thread([&] { other = slots->ForThisThread(); }).join();
  EXPECT_TRUE(other.shared());
  EXPECT_FALSE(other.fresh);  // the shared word may hold others' errors: never cleared
  EXPECT_EQ(ThreadSlots::Create(0)->ForThisThread().index, 0);  // capacity clamps to 1
}

TEST(ThreadSlotsTest, OwnersMayDieBeforeTheirThreadsAndAreNeverConfused) {
  std::barrier asked(2), destroyed(2);
  auto slots = ThreadSlots::Create(3);
  std::thread worker([&] {
    EXPECT_FALSE(slots->ForThisThread().shared());
    asked.arrive_and_wait();
    destroyed.arrive_and_wait();
    // A new owner, possibly at the old one's address: this thread holds nothing of it yet.
    auto replacement = ThreadSlots::Create(3);
    const ThreadSlots::Slot slot = replacement->ForThisThread();
    EXPECT_TRUE(slot.fresh);
    EXPECT_EQ(replacement->held(), 1);
  });  // the worker exits holding a slot of a dead owner: nothing to hand back to
  asked.arrive_and_wait();
  slots.reset();
  destroyed.arrive_and_wait();
  worker.join();
}

TEST(ThreadSlotsTest, ManyShortLivedThreadsNeverRunOut) {
  auto slots = ThreadSlots::Create(4);
  for (int i = 0; i < 200; ++i) {
    std::thread([&] { EXPECT_FALSE(slots->ForThisThread().shared()); }).join();
  }
  EXPECT_EQ(slots->held(), 0);
}

}  // namespace
}  // namespace glassbox
