#include "kernels/op_profile.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"

namespace glassbox {
namespace {

struct OpTotals {
  int64_t calls = 0;
  double seconds = 0;
};

std::mutex& Mu() {
  static auto* mu = new std::mutex;
  return *mu;
}
std::map<std::string, OpTotals>& Totals() {
  static auto* totals = new std::map<std::string, OpTotals>;
  return *totals;
}

}  // namespace

void OpProfile::Add(const char* op, double seconds) {
  std::lock_guard lock(Mu());
  OpTotals& t = Totals()[op];
  ++t.calls;
  t.seconds += seconds;
}

void OpProfile::Reset() {
  std::lock_guard lock(Mu());
  Totals().clear();
}

std::string OpProfile::Report(double total_seconds) {
  std::vector<std::pair<std::string, OpTotals>> rows;
  {
    std::lock_guard lock(Mu());
    rows.assign(Totals().begin(), Totals().end());
  }
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  std::string out = absl::StrFormat("%-16s %8s %10s %7s\n", "op", "calls", "total_ms", "share");
  double in_ops = 0;
  for (const auto& [op, t] : rows) {
    in_ops += t.seconds;
    out += absl::StrFormat("%-16s %8d %10.2f %6.1f%%\n", op, t.calls, t.seconds * 1e3,
                           100 * t.seconds / total_seconds);
  }
  out += absl::StrFormat("%-16s %8s %10.2f %6.1f%%\n", "(outside ops)", "",
                         (total_seconds - in_ops) * 1e3,
                         100 * (total_seconds - in_ops) / total_seconds);
  return out;
}

}  // namespace glassbox
