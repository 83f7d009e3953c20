#include "kernels/cuda/thread_slots.h"

#include <algorithm>
#include <utility>

namespace glassbox {

// Per thread: the slots it holds, returned to their owners (those still alive) at thread exit.
// Entries are keyed by the owner's control block through the weak pointer, so an owner
// destroyed and another allocated at the same address is never mistaken for the first.
struct ThreadSlotRegistry {
  struct Entry {
    std::weak_ptr<ThreadSlots> owner;
    int index;
  };
  std::vector<Entry> entries;

  ~ThreadSlotRegistry() {
    for (Entry& e : entries) {
      if (auto owner = e.owner.lock()) owner->Release(e.index);
    }
  }
};

namespace {
thread_local ThreadSlotRegistry registry;
}  // namespace

std::shared_ptr<ThreadSlots> ThreadSlots::Create(int capacity) {
  return std::shared_ptr<ThreadSlots>(new ThreadSlots(std::max(capacity, 1)));
}

ThreadSlots::ThreadSlots(int capacity) : capacity_(capacity) {
  for (int i = capacity - 1; i >= 1; --i) free_.push_back(i);
}

ThreadSlots::Slot ThreadSlots::ForThisThread() {
  auto& entries = registry.entries;
  // Drop entries of owners that no longer exist (and so cannot be asked about again).
  std::erase_if(entries, [](const ThreadSlotRegistry::Entry& e) { return e.owner.expired(); });
  const std::shared_ptr<ThreadSlots> self = shared_from_this();
  for (const auto& e : entries) {
    if (e.owner.lock() == self) return {.index = e.index, .fresh = false};
  }
  int index = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_.empty()) {
      index = free_.back();
      free_.pop_back();
    }
  }
  if (index == 0) return {.index = 0, .fresh = false};  // shared: asked again next time
  entries.push_back({self, index});
  return {.index = index, .fresh = true};
}

int ThreadSlots::held() const {
  std::lock_guard<std::mutex> lock(mu_);
  return capacity_ - 1 - static_cast<int>(free_.size());
}

void ThreadSlots::Release(int index) {
  std::lock_guard<std::mutex> lock(mu_);
  free_.push_back(index);
}

}  // namespace glassbox
