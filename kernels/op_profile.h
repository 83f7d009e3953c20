// Wall time per backend op, for benchmarks (forward_bench --profile): off unless enabled, then
// every public Backend op adds its time under its name. The CPU backend's ops are synchronous,
// so this is where a forward pass spends its time; for the CUDA backend it is launch cost only.
#pragma once

#include <atomic>
#include <chrono>
#include <string>

namespace glassbox {

class OpProfile {
 public:
  static void Enable(bool on) { enabled_.store(on, std::memory_order_relaxed); }
  static bool enabled() { return enabled_.load(std::memory_order_relaxed); }
  static void Add(const char* op, double seconds);
  static void Reset();
  // One line per op, largest total first: op, calls, total ms, share of `total_seconds` (the
  // caller's wall time of the same span; the rest is time outside backend ops).
  static std::string Report(double total_seconds);

 private:
  static inline std::atomic<bool> enabled_{false};
};

// Times its scope under `op` when profiling is on.
class ScopedOpTimer {
 public:
  explicit ScopedOpTimer(const char* op) : op_(OpProfile::enabled() ? op : nullptr) {
    if (op_ != nullptr) start_ = std::chrono::steady_clock::now();
  }
  ~ScopedOpTimer() {
    if (op_ != nullptr) {
      OpProfile::Add(
          op_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
  }
  ScopedOpTimer(const ScopedOpTimer&) = delete;
  ScopedOpTimer& operator=(const ScopedOpTimer&) = delete;

 private:
  const char* op_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace glassbox
