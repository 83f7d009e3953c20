// Reconstruction statistics (MSE, explained variance, L0), accumulated in f64 over token tiles so
// the reconstruction never has to be held whole. Definitions: SaeReconstructionStats.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "server/engine/sae/sae_types.h"

namespace glassbox {

class ReconstructionStatsAccumulator {
 public:
  explicit ReconstructionStatsAccumulator(int64_t d_in) : d_in_(d_in), sum_x_(d_in, 0.0) {}

  // n rows of x and x̂ ([n, d_in]) and, per row, its number of nonzero features.
  void Add(const float* x, const float* x_hat, int64_t n, std::span<const int64_t> l0);
  SaeReconstructionStats Finish() const;

 private:
  int64_t d_in_;
  int64_t tokens_ = 0;
  std::vector<double> sum_x_;
  double sum_squared_norm_ = 0.0;
  double sum_squared_error_ = 0.0;
  double sum_l0_ = 0.0;
};

// Statistics of x̂ against x (equal shapes, host f32, last axis d_in); l0 per token may be empty
// (mean_l0 is then 0).
absl::StatusOr<SaeReconstructionStats> ComputeReconstructionStats(const Tensor& x,
                                                                  const Tensor& x_hat,
                                                                  int64_t d_in,
                                                                  std::span<const int64_t> l0);

}  // namespace glassbox
