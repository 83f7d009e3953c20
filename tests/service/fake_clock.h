// A clock the test moves by hand, for the cached runs' expiry and the quotas' refills.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>

#include "absl/time/time.h"

namespace glassbox::testing {

class FakeClock {
 public:
  absl::Time Now() const {
    return absl::FromUnixSeconds(1'700'000'000) + absl::Milliseconds(offset_ms_.load());
  }
  void Advance(int64_t seconds) { offset_ms_ += seconds * 1000; }
  void AdvanceMs(int64_t milliseconds) { offset_ms_ += milliseconds; }
  std::function<absl::Time()> AsClock() {
    return [this] { return Now(); };
  }

 private:
  std::atomic<int64_t> offset_ms_{0};
};

}  // namespace glassbox::testing
