#include "server/engine/sae/sae_stats.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace glassbox {

void ReconstructionStatsAccumulator::Add(const float* x, const float* x_hat, int64_t n,
                                         std::span<const int64_t> l0) {
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * d_in_;
    const float* hr = x_hat + r * d_in_;
    double norm = 0.0, err = 0.0;
    for (int64_t j = 0; j < d_in_; ++j) {
      const double v = xr[j];
      const double e = v - static_cast<double>(hr[j]);
      sum_x_[j] += v;
      norm += v * v;
      err += e * e;
    }
    sum_squared_norm_ += norm;
    sum_squared_error_ += err;
  }
  for (int64_t v : l0) sum_l0_ += static_cast<double>(v);
  tokens_ += n;
}

SaeReconstructionStats ReconstructionStatsAccumulator::Finish() const {
  SaeReconstructionStats stats;
  stats.tokens = tokens_;
  if (tokens_ == 0) return stats;
  const double n = static_cast<double>(tokens_);
  stats.mean_squared_error_norm = sum_squared_error_ / n;
  stats.mse = stats.mean_squared_error_norm / static_cast<double>(d_in_);
  stats.mean_l0 = sum_l0_ / n;
  // As sae_lens's ExplainedVarianceCalculator: total variance = E‖x‖² − ‖E x‖².
  double mean_norm = 0.0;
  for (double s : sum_x_) mean_norm += (s / n) * (s / n);
  const double total_variance = sum_squared_norm_ / n - mean_norm;
  if (total_variance < 1e-10) {
    stats.explained_variance = stats.mean_squared_error_norm < 1e-10 ? 1.0 : 0.0;
  } else {
    stats.explained_variance = 1.0 - stats.mean_squared_error_norm / total_variance;
  }
  return stats;
}

absl::StatusOr<SaeReconstructionStats> ComputeReconstructionStats(const Tensor& x,
                                                                  const Tensor& x_hat,
                                                                  int64_t d_in,
                                                                  std::span<const int64_t> l0) {
  auto host_f32 = [](const Tensor& t) {
    return t.defined() && t.device() == Device::kCpu && t.dtype() == DType::kF32;
  };
  if (!host_f32(x) || !host_f32(x_hat)) {
    return absl::InvalidArgumentError("reconstruction statistics need host f32 tensors");
  }
  if (d_in <= 0 || x.numel() != x_hat.numel() || x.numel() % d_in != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("reconstruction statistics: x ", x.DebugString(), " and x_hat ",
                     x_hat.DebugString(), " must hold the same number of d_in = ", d_in,
                     " rows"));
  }
  const int64_t rows = x.numel() / d_in;
  if (!l0.empty() && static_cast<int64_t>(l0.size()) != rows) {
    return absl::InvalidArgumentError(
        absl::StrCat("reconstruction statistics: ", l0.size(), " L0 values for ", rows, " tokens"));
  }
  ReconstructionStatsAccumulator acc(d_in);
  acc.Add(x.data<float>(), x_hat.data<float>(), rows, l0);
  SaeReconstructionStats stats = acc.Finish();
  if (l0.empty()) stats.mean_l0 = 0.0;
  return stats;
}

}  // namespace glassbox
