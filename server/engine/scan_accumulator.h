// What a dataset scan keeps of one target (a neuron, an SAE feature, a direction) while the corpus
// streams past: exact moments, the top records, seeded samples and a histogram, in memory that
// does not grow with the corpus. Definitions (and how ties fall): docs/methods.md, "Dataset scans".
//
// The corpus is a sequence of contexts of one length. A record is a context, summarised by its
// largest activation over the counted positions (position 0 is not counted when it holds BOS).
// Two passes: the first sees everything that needs no knowledge of the whole corpus (moments,
// top records, random records, the range); the second, once the range is known, fills the
// histogram and the quantile bins.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace glassbox {

struct ScanOptions {
  int32_t context_length = 64;
  int32_t first_counted_position = 1;  // 1 leaves BOS out of every statistic and record
  int32_t top_k = 20;                  // top records
  int32_t random_k = 20;               // uniformly sampled records
  int32_t quantile_bins = 10;          // bins of equal width over (0, max] of a record's value
  int32_t per_quantile_k = 5;          // records sampled in each bin
  int32_t histogram_bins = 50;         // over nonzero activations, equal width, [min, max]
  // The stored window around a record's max token: [pos - before, pos + after], clipped to the
  // context; -1 reaches the context's edge.
  int32_t window_before = -1;
  int32_t window_after = -1;
  uint64_t seed = 0;

  bool NeedsSecondPass() const { return quantile_bins > 0 || histogram_bins > 0; }
};

struct ScanRecord {
  int64_t context = 0;
  int32_t position = 0;   // of the largest counted activation (the first, when tied)
  float value = 0;        // that activation
  uint64_t priority = 0;  // sampled records: the hash that drew them
  int32_t window_start = 0;
  std::vector<float> activations;  // the window's activations, from window_start on
};

// Count, mean and central moment sums, merged exactly as Pébay (2008) gives, so a scan cut into
// batches (and a resumed one) agrees with one pass over everything to rounding.
struct Moments {
  int64_t n = 0;
  double mean = 0, m2 = 0, m3 = 0, m4 = 0;

  void Merge(const Moments& other);
  double Variance() const { return n > 0 ? m2 / n : 0; }     // population (numpy's ddof=0)
  double Skewness() const;                                    // 0 when the variance is 0
  double ExcessKurtosis() const;                              // Fisher's; 0 when the variance is 0
};

// The same splitmix64 the reference computes; a sampled record's priority.
uint64_t ScanPriority(uint64_t seed, uint64_t target, uint64_t salt, int64_t context);

class TargetAccumulator {
 public:
  TargetAccumulator();

  // `acts`: this target's activations over `contexts` consecutive contexts from `first_context`,
  // context by context (contexts * options.context_length values).
  void ObserveFirstPass(const float* acts, int64_t first_context, int64_t contexts,
                        uint64_t target, const ScanOptions& options);
  // After the first pass over every context; sizes the histogram and the quantile bins.
  void BeginSecondPass(const ScanOptions& options);
  void ObserveSecondPass(const float* acts, int64_t first_context, int64_t contexts,
                         uint64_t target, const ScanOptions& options);
  // Orders the record lists for reading: top by value (descending), samples by priority.
  void Finish();

  const Moments& moments() const { return moments_; }
  float max() const { return max_; }  // -inf before any token
  float min() const { return min_; }
  int64_t positive() const { return positive_; }  // tokens with activation > 0
  int64_t nonzero() const { return nonzero_; }
  float min_nonzero() const { return min_nonzero_; }
  float max_nonzero() const { return max_nonzero_; }
  const std::vector<ScanRecord>& top() const { return top_; }
  const std::vector<ScanRecord>& random() const { return random_; }
  const std::vector<int64_t>& histogram() const { return histogram_; }
  const std::vector<std::vector<ScanRecord>>& quantiles() const { return quantiles_; }
  // Bytes held (records' windows included), for job accounting.
  int64_t Bytes() const;

  void AppendTo(std::string& out) const;
  absl::Status ReadFrom(absl::string_view& in);

 private:
  Moments moments_;
  float max_, min_, min_nonzero_, max_nonzero_;
  int64_t positive_ = 0, nonzero_ = 0;
  std::vector<ScanRecord> top_;     // a min-heap on (value, -context) while scanning
  std::vector<ScanRecord> random_;  // a max-heap on (priority, context) while scanning
  std::vector<int64_t> histogram_;
  std::vector<std::vector<ScanRecord>> quantiles_;  // max-heaps on (priority, context)
};

}  // namespace glassbox
