#include "kernels/cpu/row_reductions.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace glassbox {

double RowLogSumExp(const float* row, int64_t n) {
  const float max_value = *std::max_element(row, row + n);
  double sum = 0;
  for (int64_t j = 0; j < n; ++j) sum += std::exp(static_cast<double>(row[j]) - max_value);
  return std::log(sum) + max_value;
}

void RowTopK(const float* row, int64_t n, int64_t k, float* values, int32_t* indices,
             std::vector<int32_t>& scratch) {
  scratch.resize(n);
  std::iota(scratch.begin(), scratch.end(), 0);
  // A strict weak order even with NaNs (which `>` alone is not): NaN above every number.
  auto greater = [&](int32_t a, int32_t b) {
    const float x = row[a], y = row[b];
    const bool x_nan = std::isnan(x), y_nan = std::isnan(y);
    if (x_nan != y_nan) return x_nan;
    if (!x_nan && x != y) return x > y;
    return a < b;
  };
  std::partial_sort(scratch.begin(), scratch.begin() + k, scratch.end(), greater);
  for (int64_t j = 0; j < k; ++j) {
    values[j] = row[scratch[j]];
    indices[j] = scratch[j];
  }
}

}  // namespace glassbox
