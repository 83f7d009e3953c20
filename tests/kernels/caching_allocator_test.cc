// The caching allocator's host logic over a fake DeviceMemory (host memory with a byte budget):
// bucket sizes, free-list reuse, statistics, the out-of-memory retry, trimming, errors that are
// not out-of-memory, storages outliving the allocator and concurrent use. Runs without a GPU.
#include "kernels/cuda/caching_allocator.h"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace glassbox {
namespace {

// Host memory standing in for a device: refuses with RESOURCE_EXHAUSTED past `budget` bytes,
// records what is live so leaks and double frees show.
class FakeDeviceMemory final : public DeviceMemory {
 public:
  struct Ledger {
    std::mutex mu;
    int64_t budget = 0;
    int64_t live_bytes = 0;
    int64_t mallocs = 0, frees = 0, refusals = 0;
    std::set<void*> live;
    std::unordered_map<void*, size_t> sizes;
    absl::Status next_error;  // returned once by the next Malloc when set
  };
  explicit FakeDeviceMemory(std::shared_ptr<Ledger> ledger) : ledger_(std::move(ledger)) {}

  absl::StatusOr<void*> Malloc(size_t bytes) override {
    std::lock_guard<std::mutex> lock(ledger_->mu);
    if (!ledger_->next_error.ok()) return std::exchange(ledger_->next_error, absl::OkStatus());
    if (ledger_->live_bytes + static_cast<int64_t>(bytes) > ledger_->budget) {
      ++ledger_->refusals;
      return absl::ResourceExhaustedError("fake device: out of memory");
    }
    void* block = std::aligned_alloc(256, bytes);
    ledger_->live.insert(block);
    ledger_->sizes[block] = bytes;
    ledger_->live_bytes += static_cast<int64_t>(bytes);
    ++ledger_->mallocs;
    return block;
  }

  absl::Status Free(void* block) override {
    std::lock_guard<std::mutex> lock(ledger_->mu);
    if (ledger_->live.erase(block) == 0) return absl::InternalError("fake device: double free");
    ledger_->live_bytes -= static_cast<int64_t>(ledger_->sizes[block]);
    ledger_->sizes.erase(block);
    ++ledger_->frees;
    std::free(block);
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<Ledger> ledger_;
};

struct Fixture {
  explicit Fixture(int64_t budget) : ledger(std::make_shared<FakeDeviceMemory::Ledger>()) {
    ledger->budget = budget;
    allocator = CachingDeviceAllocator::Create(std::make_unique<FakeDeviceMemory>(ledger));
  }
  std::shared_ptr<FakeDeviceMemory::Ledger> ledger;
  std::shared_ptr<CachingDeviceAllocator> allocator;
};

constexpr int64_t kMiB = int64_t{1} << 20;

TEST(CachingAllocatorTest, BlockSizesAreBucketedWithAtMostAQuarterSlack) {
  EXPECT_EQ(CachingDeviceAllocator::BlockSize(1), 512u);
  EXPECT_EQ(CachingDeviceAllocator::BlockSize(512), 512u);
  EXPECT_EQ(CachingDeviceAllocator::BlockSize(513), 1024u);
  EXPECT_EQ(CachingDeviceAllocator::BlockSize(kMiB), static_cast<size_t>(kMiB));
  EXPECT_EQ(CachingDeviceAllocator::BlockSize(kMiB + 1), static_cast<size_t>(kMiB + kMiB / 4));
  for (size_t bytes = 1; bytes < (size_t{1} << 34); bytes = bytes * 3 + 7) {
    const size_t block = CachingDeviceAllocator::BlockSize(bytes);
    EXPECT_GE(block, bytes);
    EXPECT_LE(block, std::max<size_t>(512, bytes + bytes / 4 + 512)) << bytes;
  }
}

TEST(CachingAllocatorTest, FreedBlocksAreReusedBySameBucketRequests) {
  Fixture f(64 * kMiB);
  void* first_block = nullptr;
  {
    auto storage = f.allocator->Allocate(3000);
    ASSERT_TRUE(storage.ok()) << storage.status();
    first_block = (*storage)->data();
    EXPECT_EQ((*storage)->bytes(), 3000u);
    EXPECT_EQ((*storage)->device(), Device::kCuda);
    EXPECT_EQ(f.allocator->stats().bytes_in_use, 3072);
  }
  CachingDeviceAllocator::Stats s = f.allocator->stats();
  EXPECT_EQ(s.bytes_in_use, 0);
  EXPECT_EQ(s.bytes_cached, 3072);
  auto again = f.allocator->Allocate(2900);  // same 3072-byte bucket
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->data(), first_block);
  s = f.allocator->stats();
  EXPECT_EQ(s.device_mallocs, 1);
  EXPECT_EQ(s.cache_hits, 1);
  EXPECT_EQ(s.bytes_cached, 0);
  auto other = f.allocator->Allocate(5000);  // another bucket: a fresh block
  ASSERT_TRUE(other.ok());
  EXPECT_NE((*other)->data(), first_block);
  EXPECT_EQ(f.allocator->stats().device_mallocs, 2);
  EXPECT_EQ(f.allocator->stats().peak_bytes_in_use, 3072 + 5120);
}

TEST(CachingAllocatorTest, OutOfMemoryEmptiesTheCacheAndRetriesOnce) {
  Fixture f(4 * kMiB);
  {
    auto a = f.allocator->Allocate(2 * kMiB);
    auto b = f.allocator->Allocate(kMiB);
    ASSERT_TRUE(a.ok() && b.ok());
  }
  ASSERT_EQ(f.allocator->stats().bytes_cached, 3 * kMiB);
  // 3 MiB does not fit beside 3 MiB of cached blocks; it does once they are freed.
  auto big = f.allocator->Allocate(3 * kMiB);
  ASSERT_TRUE(big.ok()) << big.status();
  const CachingDeviceAllocator::Stats s = f.allocator->stats();
  EXPECT_EQ(s.oom_retries, 1);
  EXPECT_EQ(s.device_frees, 2);
  EXPECT_EQ(s.bytes_cached, 0);
  EXPECT_EQ(s.bytes_in_use, 3 * kMiB);
  EXPECT_EQ(f.ledger->live_bytes, 3 * kMiB);
}

TEST(CachingAllocatorTest, OutOfMemoryAfterTheRetryIsResourceExhaustedWithUsage) {
  Fixture f(2 * kMiB);
  auto held = f.allocator->Allocate(kMiB + kMiB / 2);
  ASSERT_TRUE(held.ok());
  auto refused = f.allocator->Allocate(kMiB);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("cannot allocate 1048576 bytes of device memory (1572864 "
                                            "bytes in use by tensors, 0 cached)"),
            std::string::npos)
      << refused.status();
  EXPECT_EQ(f.ledger->refusals, 2);  // the first try and the retry
  EXPECT_EQ(f.allocator->stats().bytes_in_use, kMiB + kMiB / 2);  // nothing half-counted
}

TEST(CachingAllocatorTest, OtherDeviceErrorsAreNotRetried) {
  Fixture f(64 * kMiB);
  { ASSERT_TRUE(f.allocator->Allocate(4096).ok()); }
  f.ledger->next_error = absl::InternalError("fake device: illegal address");
  auto failed = f.allocator->Allocate(8192);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(failed.status().message().find("illegal address"), std::string::npos);
  EXPECT_EQ(f.allocator->stats().oom_retries, 0);
  EXPECT_EQ(f.allocator->stats().bytes_cached, 4096);  // the cache was left alone
}

TEST(CachingAllocatorTest, TrimFreesLargestBlocksFirstDownToTheKeptBytes) {
  Fixture f(64 * kMiB);
  {
    std::vector<std::shared_ptr<Storage>> held;
    for (int64_t bytes : {4 * kMiB, 2 * kMiB, int64_t{8192}, int64_t{4096}}) {
      auto s = f.allocator->Allocate(bytes);
      ASSERT_TRUE(s.ok());
      held.push_back(*s);
    }
  }
  ASSERT_EQ(f.allocator->stats().bytes_cached, 6 * kMiB + 12288);
  ASSERT_TRUE(f.allocator->Trim(kMiB).ok());
  CachingDeviceAllocator::Stats s = f.allocator->stats();
  EXPECT_EQ(s.bytes_cached, 12288);  // both large blocks went; the small ones stay
  EXPECT_EQ(s.device_frees, 2);
  EXPECT_EQ(f.ledger->live_bytes, 12288);
  auto reused = f.allocator->Allocate(8000);
  ASSERT_TRUE(reused.ok());
  EXPECT_EQ(f.allocator->stats().cache_hits, 1);
  ASSERT_TRUE(f.allocator->EmptyCache().ok());
  EXPECT_EQ(f.allocator->stats().bytes_cached, 0);
  EXPECT_EQ(f.ledger->live_bytes, 8192);  // only the block a tensor still holds
}

TEST(CachingAllocatorTest, StorageOutlivingTheAllocatorHandleFreesEverythingAtTheEnd) {
  auto ledger = std::make_shared<FakeDeviceMemory::Ledger>();
  ledger->budget = 64 * kMiB;
  std::shared_ptr<Storage> survivor;
  {
    auto allocator = CachingDeviceAllocator::Create(std::make_unique<FakeDeviceMemory>(ledger));
    auto s = allocator->Allocate(10000);
    ASSERT_TRUE(s.ok());
    survivor = *s;
    { ASSERT_TRUE(allocator->Allocate(20000).ok()); }  // cached
  }
  EXPECT_EQ(ledger->live.size(), 2u);  // the storage keeps the allocator (and its cache) alive
  survivor.reset();
  EXPECT_TRUE(ledger->live.empty());
  EXPECT_EQ(ledger->mallocs, ledger->frees);
}

TEST(CachingAllocatorTest, ConcurrentAllocationsBalance) {
  Fixture f(256 * kMiB);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        auto s = f.allocator->Allocate(static_cast<size_t>(1000 + 977 * ((i * 7 + t) % 40)));
        ASSERT_TRUE(s.ok());
        static_cast<char*>((*s)->data())[0] = static_cast<char>(i);
        if (i % 100 == 99) ASSERT_TRUE(f.allocator->Trim(kMiB / 8).ok());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const CachingDeviceAllocator::Stats s = f.allocator->stats();
  EXPECT_EQ(s.bytes_in_use, 0);
  EXPECT_EQ(s.device_mallocs + s.cache_hits, 2000);
  EXPECT_EQ(f.ledger->live_bytes, s.bytes_cached);
  EXPECT_EQ(s.device_mallocs - s.device_frees, static_cast<int64_t>(f.ledger->live.size()));
}

}  // namespace
}  // namespace glassbox
