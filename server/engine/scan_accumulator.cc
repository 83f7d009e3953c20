#include "server/engine/scan_accumulator.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "absl/status/status.h"

namespace glassbox {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr uint64_t kRandomSalt = 1, kQuantileSalt = 2;

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Heap orders: the front of each heap is the record the next better one replaces.
bool BetterTop(const ScanRecord& a, const ScanRecord& b) {
  return a.value != b.value ? a.value > b.value : a.context < b.context;
}
bool EarlierDrawn(const ScanRecord& a, const ScanRecord& b) {
  return a.priority != b.priority ? a.priority < b.priority : a.context < b.context;
}

ScanRecord MakeRecord(const float* context_acts, int64_t context, int32_t position, float value,
                      uint64_t priority, const ScanOptions& o) {
  const int32_t start = o.window_before < 0 ? 0 : std::max(0, position - o.window_before);
  // In 64 bits: a window of INT32_MAX positions means "to the context's end".
  const auto end = static_cast<int32_t>(
      o.window_after < 0 ? o.context_length
                         : std::min<int64_t>(o.context_length, int64_t{position} + o.window_after + 1));
  return {.context = context, .position = position, .value = value, .priority = priority,
          .window_start = start,
          .activations = std::vector<float>(context_acts + start, context_acts + end)};
}

// Keeps the `k` records first by `order` in `heap` (a heap whose front is the last of them);
// `make` builds the record only when it enters.
template <typename Order, typename Make>
void Offer(std::vector<ScanRecord>& heap, int32_t k, const ScanRecord& probe, Order order,
           Make make) {
  if (k <= 0) return;
  if (static_cast<int32_t>(heap.size()) < k) {
    heap.push_back(make());
    std::push_heap(heap.begin(), heap.end(), order);
  } else if (order(probe, heap.front())) {
    std::pop_heap(heap.begin(), heap.end(), order);
    heap.back() = make();
    std::push_heap(heap.begin(), heap.end(), order);
  }
}

// The counted positions' largest value of one context, at its first position.
std::pair<int32_t, float> ContextMax(const float* acts, const ScanOptions& o) {
  int32_t at = o.first_counted_position;
  float best = acts[at];
  for (int32_t p = at + 1; p < o.context_length; ++p) {
    if (acts[p] > best) best = acts[p], at = p;
  }
  return {at, best};
}

// Binary state: little-endian PODs and length-prefixed vectors.
template <typename T>
void Put(std::string& out, const T& value) {
  static_assert(std::is_trivially_copyable_v<T>);
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}
template <typename T>
void PutVector(std::string& out, const std::vector<T>& values) {
  Put<int64_t>(out, static_cast<int64_t>(values.size()));
  if (!values.empty())
    out.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}
template <typename T>
absl::Status Get(absl::string_view& in, T& value) {
  if (in.size() < sizeof(T)) return absl::DataLossError("scan state ends early");
  std::memcpy(&value, in.data(), sizeof(T));
  in.remove_prefix(sizeof(T));
  return absl::OkStatus();
}
template <typename T>
absl::Status GetVector(absl::string_view& in, std::vector<T>& values) {
  int64_t n = 0;
  if (absl::Status s = Get(in, n); !s.ok()) return s;
  if (n < 0 || static_cast<uint64_t>(n) > in.size() / sizeof(T))
    return absl::DataLossError("scan state has a vector longer than the file");
  values.resize(n);
  // An empty vector's data() may be null, which memcpy may not be given even for 0 bytes.
  if (n > 0) std::memcpy(values.data(), in.data(), n * sizeof(T));
  in.remove_prefix(n * sizeof(T));
  return absl::OkStatus();
}

void PutRecords(std::string& out, const std::vector<ScanRecord>& records) {
  Put<int64_t>(out, static_cast<int64_t>(records.size()));
  for (const ScanRecord& r : records) {
    Put(out, r.context);
    Put(out, r.position);
    Put(out, r.value);
    Put(out, r.priority);
    Put(out, r.window_start);
    PutVector(out, r.activations);
  }
}
absl::Status GetRecords(absl::string_view& in, std::vector<ScanRecord>& records) {
  int64_t n = 0;
  if (absl::Status s = Get(in, n); !s.ok()) return s;
  // Each record takes at least its fixed fields and a length: a count the bytes left cannot hold
  // is damage (and must not size an allocation).
  constexpr int64_t kMinRecordBytes = 8 + 4 + 4 + 8 + 4 + 8;
  if (n < 0 || n > static_cast<int64_t>(in.size()) / kMinRecordBytes)
    return absl::DataLossError("bad record count");
  records.resize(n);
  for (ScanRecord& r : records) {
    for (absl::Status s : {Get(in, r.context), Get(in, r.position), Get(in, r.value),
                           Get(in, r.priority), Get(in, r.window_start),
                           GetVector(in, r.activations)}) {
      if (!s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t ScanPriority(uint64_t seed, uint64_t target, uint64_t salt, int64_t context) {
  return SplitMix64(SplitMix64(SplitMix64(seed) ^ (target * 4 + salt)) ^
                    static_cast<uint64_t>(context));
}

void Moments::Merge(const Moments& b) {
  if (b.n == 0) return;
  if (n == 0) {
    *this = b;
    return;
  }
  const double na = n, nb = b.n, nt = na + nb;
  const double d = b.mean - mean, d2 = d * d;
  const double m2_new = m2 + b.m2 + d2 * na * nb / nt;
  const double m3_new = m3 + b.m3 + d * d2 * na * nb * (na - nb) / (nt * nt) +
                        3 * d * (na * b.m2 - nb * m2) / nt;
  const double m4_new = m4 + b.m4 + d2 * d2 * na * nb * (na * na - na * nb + nb * nb) / (nt * nt * nt) +
                        6 * d2 * (na * na * b.m2 + nb * nb * m2) / (nt * nt) +
                        4 * d * (na * b.m3 - nb * m3) / nt;
  mean += d * nb / nt;
  m2 = m2_new, m3 = m3_new, m4 = m4_new;
  n += b.n;
}

double Moments::Skewness() const {
  const double var = Variance();
  return var > 0 ? (m3 / n) / std::pow(var, 1.5) : 0;
}

double Moments::ExcessKurtosis() const {
  const double var = Variance();
  return var > 0 ? (m4 / n) / (var * var) - 3 : 0;
}

TargetAccumulator::TargetAccumulator()
    : max_(-kInf), min_(kInf), min_nonzero_(kInf), max_nonzero_(-kInf) {}

void TargetAccumulator::ObserveFirstPass(const float* acts, int64_t first_context,
                                         int64_t contexts, uint64_t target,
                                         const ScanOptions& o) {
  const int32_t f = o.first_counted_position, len = o.context_length;
  // This call's moments, centred on its own mean, then merged.
  Moments batch;
  double sum = 0;
  for (int64_t c = 0; c < contexts; ++c) {
    for (int32_t p = f; p < len; ++p) sum += acts[c * len + p];
  }
  batch.n = contexts * (len - f);
  if (batch.n == 0) return;
  batch.mean = sum / batch.n;
  for (int64_t c = 0; c < contexts; ++c) {
    const float* a = acts + c * len;
    for (int32_t p = f; p < len; ++p) {
      const float v = a[p];
      const double d = v - batch.mean, d2 = d * d;
      batch.m2 += d2, batch.m3 += d2 * d, batch.m4 += d2 * d2;
      max_ = std::max(max_, v), min_ = std::min(min_, v);
      positive_ += v > 0;
      if (v != 0) {
        ++nonzero_;
        min_nonzero_ = std::min(min_nonzero_, v), max_nonzero_ = std::max(max_nonzero_, v);
      }
    }
    const int64_t context = first_context + c;
    // Plain names, not a structured binding: the lambdas below capture them (clang < 16 cannot).
    const std::pair<int32_t, float> max_at = ContextMax(a, o);
    const int32_t at = max_at.first;
    const float best = max_at.second;
    const ScanRecord probe{.context = context, .value = best};
    Offer(top_, o.top_k, probe, BetterTop,
          [&] { return MakeRecord(a, context, at, best, 0, o); });
    const uint64_t priority = ScanPriority(o.seed, target, kRandomSalt, context);
    Offer(random_, o.random_k, {.context = context, .priority = priority}, EarlierDrawn,
          [&] { return MakeRecord(a, context, at, best, priority, o); });
  }
  moments_.Merge(batch);
}

void TargetAccumulator::BeginSecondPass(const ScanOptions& o) {
  histogram_.assign(nonzero_ > 0 ? o.histogram_bins : 0, 0);
  quantiles_.assign(max_ > 0 ? o.quantile_bins : 0, {});
}

void TargetAccumulator::ObserveSecondPass(const float* acts, int64_t first_context,
                                          int64_t contexts, uint64_t target,
                                          const ScanOptions& o) {
  const int32_t f = o.first_counted_position, len = o.context_length;
  const int64_t hist_bins = static_cast<int64_t>(histogram_.size());
  const double hist_scale =
      max_nonzero_ > min_nonzero_ ? hist_bins / (static_cast<double>(max_nonzero_) - min_nonzero_)
                                  : 0;
  const int64_t q_bins = static_cast<int64_t>(quantiles_.size());
  const double q_scale = q_bins > 0 ? q_bins / static_cast<double>(max_) : 0;
  for (int64_t c = 0; c < contexts; ++c) {
    const float* a = acts + c * len;
    if (hist_bins > 0) {
      for (int32_t p = f; p < len; ++p) {
        if (a[p] == 0) continue;
        const int64_t bin = static_cast<int64_t>((a[p] - static_cast<double>(min_nonzero_)) * hist_scale);
        ++histogram_[std::clamp<int64_t>(bin, 0, hist_bins - 1)];
      }
    }
    if (q_bins == 0) continue;
    const std::pair<int32_t, float> max_at = ContextMax(a, o);
    const int32_t at = max_at.first;
    const float best = max_at.second;
    if (!(best > 0)) continue;
    const int64_t bin = std::min<int64_t>(static_cast<int64_t>(best * q_scale), q_bins - 1);
    const int64_t context = first_context + c;
    const uint64_t priority = ScanPriority(o.seed, target, kQuantileSalt, context);
    Offer(quantiles_[bin], o.per_quantile_k, {.context = context, .priority = priority},
          EarlierDrawn, [&] { return MakeRecord(a, context, at, best, priority, o); });
  }
}

void TargetAccumulator::Finish() {
  std::sort(top_.begin(), top_.end(), BetterTop);
  std::sort(random_.begin(), random_.end(), EarlierDrawn);
  for (auto& bin : quantiles_) std::sort(bin.begin(), bin.end(), EarlierDrawn);
}

int64_t TargetAccumulator::Bytes() const {
  int64_t bytes = sizeof(*this) + histogram_.capacity() * sizeof(int64_t);
  auto add = [&](const std::vector<ScanRecord>& records) {
    for (const ScanRecord& r : records) bytes += sizeof(r) + r.activations.capacity() * sizeof(float);
  };
  add(top_), add(random_);
  for (const auto& bin : quantiles_) add(bin);
  return bytes;
}

void TargetAccumulator::AppendTo(std::string& out) const {
  Put(out, moments_);
  Put(out, max_), Put(out, min_), Put(out, min_nonzero_), Put(out, max_nonzero_);
  Put(out, positive_), Put(out, nonzero_);
  PutRecords(out, top_);
  PutRecords(out, random_);
  PutVector(out, histogram_);
  Put<int64_t>(out, static_cast<int64_t>(quantiles_.size()));
  for (const auto& bin : quantiles_) PutRecords(out, bin);
}

absl::Status TargetAccumulator::ReadFrom(absl::string_view& in) {
  for (absl::Status s : {Get(in, moments_), Get(in, max_), Get(in, min_), Get(in, min_nonzero_),
                         Get(in, max_nonzero_), Get(in, positive_), Get(in, nonzero_),
                         GetRecords(in, top_), GetRecords(in, random_), GetVector(in, histogram_)}) {
    if (!s.ok()) return s;
  }
  int64_t bins = 0;
  if (absl::Status s = Get(in, bins); !s.ok()) return s;
  if (bins < 0 || bins > static_cast<int64_t>(in.size())) return absl::DataLossError("bad bin count");
  quantiles_.resize(bins);
  for (auto& bin : quantiles_) {
    if (absl::Status s = GetRecords(in, bin); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace glassbox
