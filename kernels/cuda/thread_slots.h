// A small integer of its own for each thread that uses an object, handed back when the thread
// exits. The CUDA backend indexes its device error words with it, so an invalid input met by a
// kernel is reported to the thread (the request) that queued that kernel, not to whichever
// request synchronises next. Plain C++, unit-tested without a GPU (thread_slots_test).
#pragma once

#include <memory>
#include <mutex>
#include <vector>

namespace glassbox {

class ThreadSlots : public std::enable_shared_from_this<ThreadSlots> {
 public:
  // Slots 1 .. capacity-1 are given to one thread each; slot 0 is shared by the threads that
  // arrive while all others are taken. capacity >= 1.
  static std::shared_ptr<ThreadSlots> Create(int capacity);

  struct Slot {
    int index = 0;
    // The calling thread's first use of this slot: whatever a previous owner left in the
    // resource it indexes is not this thread's (the backend clears the word).
    bool fresh = false;
    bool shared() const { return index == 0; }
  };
  // The calling thread's slot, assigned on its first call.
  Slot ForThisThread();

  int capacity() const { return capacity_; }
  // Private slots currently held by live threads.
  int held() const;

 private:
  explicit ThreadSlots(int capacity);
  void Release(int index);
  friend struct ThreadSlotRegistry;

  const int capacity_;
  mutable std::mutex mu_;
  std::vector<int> free_;  // private slots not held, lowest last
};

}  // namespace glassbox
