#include "server/engine/sae_encode.h"

#include <algorithm>
#include <numeric>

#include "base/status_macros.h"
#include "server/engine/host_captures.h"
#include "server/engine/intervention.h"
#include "server/engine/sae/sae_stats.h"

namespace glassbox {
namespace {

// Keeps the k largest activations of each row (descending value, ties by lower index).
SparseActs TopKPerRow(const SparseActs& all, int64_t k) {
  SparseActs out{.leading_shape = all.leading_shape, .d_sae = all.d_sae};
  std::vector<int64_t> order;
  for (int64_t r = 0; r < all.rows(); ++r) {
    const int64_t begin = all.row_offsets[r], end = all.row_offsets[r + 1];
    order.resize(end - begin);
    std::iota(order.begin(), order.end(), begin);
    const int64_t keep = std::min<int64_t>(k, end - begin);
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), [&](int64_t a, int64_t b) {
      return all.values[a] != all.values[b] ? all.values[a] > all.values[b]
                                            : all.indices[a] < all.indices[b];
    });
    for (int64_t i = 0; i < keep; ++i) {
      out.indices.push_back(all.indices[order[i]]);
      out.values.push_back(all.values[order[i]]);
    }
    out.row_offsets.push_back(static_cast<int64_t>(out.indices.size()));
  }
  return out;
}

}  // namespace

int StopAtLayerReaching(const HookInfo& info, const ModelConfig& config) {
  if (info.layer >= 0) return info.layer + 1 < config.n_layers ? info.layer + 1 : -1;
  return info.kind == HookKind::kEmbed || info.kind == HookKind::kPosEmbed ? 0 : -1;
}

absl::StatusOr<SaeEncodeResult> RunSaeEncode(const Transformer& model, const Sae& sae, HookId hook,
                                             const SaeEncodeOptions& options) {
  if (options.top_k < 0) return absl::InvalidArgumentError("top_k must be >= 0");
  HookPlan plan(model.hooks());
  plan.CaptureId(hook);
  HostCaptures sink(model.backend());
  const HookInfo& info = model.hooks().info(hook);
  GB_RETURN_IF_ERROR(
      model
          .Forward({.tokens = options.tokens, .attention_mask = options.attention_mask}, plan,
                   &sink,
                   {.logits = LogitsMode::kNone,
                    .stop_at_layer = StopAtLayerReaching(info, model.config()),
                    .cancelled = options.cancelled})
          .status());
  // The real tokens, packed [n, d_in]: padding must not enter the statistics.
  const int64_t batch = options.tokens.dim(0), seq = options.tokens.dim(1), d_in = sae.d_in();
  std::vector<int64_t> real;  // flat b * seq + p
  for (int64_t i = 0; i < batch * seq; ++i) {
    if (!options.attention_mask.defined() || options.attention_mask.data<int32_t>()[i] != 0)
      real.push_back(i);
  }
  const int64_t n = static_cast<int64_t>(real.size());
  Tensor x = Tensor::EmptyHost(DType::kF32, {n, d_in});
  for (int64_t t = 0; t < n; ++t) {
    std::copy_n(sink.at(hook).data<float>() + real[t] * d_in, d_in, x.data<float>() + t * d_in);
  }
  SaeNormState norm;
  GB_ASSIGN_OR_RETURN(SparseActs all, sae.EncodeSparse(x, {}, &norm));
  GB_ASSIGN_OR_RETURN(Tensor recons, sae.DecodeSparse(all, &norm));
  std::vector<int64_t> l0(n);
  for (int64_t t = 0; t < n; ++t) l0[t] = all.row_offsets[t + 1] - all.row_offsets[t];
  SaeEncodeResult result;
  GB_ASSIGN_OR_RETURN(result.stats, ComputeReconstructionStats(x, recons, d_in, l0));
  if (options.dense) {
    result.dense = Tensor::ZerosHost(DType::kF32, {batch, seq, sae.d_sae()});
    for (int64_t t = 0; t < n; ++t) {
      float* row = result.dense.data<float>() + real[t] * sae.d_sae();
      for (int64_t j = all.row_offsets[t]; j < all.row_offsets[t + 1]; ++j)
        row[all.indices[j]] = all.values[j];
    }
  }
  result.acts = options.top_k > 0 ? TopKPerRow(all, options.top_k) : std::move(all);
  return result;
}

}  // namespace glassbox
