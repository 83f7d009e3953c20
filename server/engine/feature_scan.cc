#include "server/engine/feature_scan.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/engine/host_captures.h"
#include "server/engine/sae_encode.h"

namespace glassbox {
namespace {

constexpr char kStateMagic[8] = {'G', 'B', 'S', 'C', 'A', 'N', '1', '\0'};
// Activations computed at once for one group: chunk tokens x group width, f32 (32 MiB).
constexpr int64_t kChunkValues = int64_t{8} << 20;
// Targets transposed together: 16 f32 are one cache line of a row of activations.
constexpr int64_t kTile = 16;

// [batch, pos, ...]: the hooks a scan can read, one activation vector per token.
bool IsPerToken(const HookInfo& info) {
  return info.dims.size() >= 3 && info.dims[0].symbol == HookDim::Symbol::kBatch &&
         info.dims[1].symbol == HookDim::Symbol::kPos;
}

int64_t TokenWidth(const HookInfo& info) {
  int64_t width = 1;
  for (size_t i = 2; i < info.dims.size(); ++i) width *= info.dims[i].size;
  return width;
}

}  // namespace

namespace {

// [tokens, heads]: each head's query rows of the pattern [batch, head, query, key] at one key.
Tensor AttentionTo(const ScanTargetGroup& group, const Tensor& pattern) {
  const int64_t batch = pattern.dim(0), heads = pattern.dim(1), len = pattern.dim(2),
                keys = pattern.dim(3);
  Tensor out = Tensor::EmptyHost(DType::kF32, {batch * len, heads});
  const float* p = pattern.data<float>();
  float* o = out.data<float>();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t q = 0; q < len; ++q) {
      const int64_t key = group.key_position >= 0 ? group.key_position : q - group.key_offset;
      for (int64_t h = 0; h < heads; ++h) {
        o[(b * len + q) * heads + h] =
            key >= 0 && key < keys ? p[((b * heads + h) * len + q) * keys + key] : 0.0f;
      }
    }
  }
  return out;
}

// [tokens, heads]: the L2 norm of each head's d values of x [tokens, heads * d].
Tensor HeadNorms(const Tensor& x, int64_t heads) {
  const int64_t n = x.dim(0), d = x.dim(1) / heads;
  Tensor out = Tensor::EmptyHost(DType::kF32, {n, heads});
  const float* xs = x.data<float>();
  float* o = out.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const float* v = xs + (t * heads + h) * d;
      double sum = 0;
      for (int64_t i = 0; i < d; ++i) sum += double{v[i]} * v[i];
      o[t * heads + h] = static_cast<float>(std::sqrt(sum));
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<Tensor> GroupActivations(const ScanTargetGroup& group, const HookInfo& info,
                                         const Tensor& value) {
  if (group.kind == ScanTargetGroup::Kind::kAttentionTo) return AttentionTo(group, value);
  const int64_t tokens = value.dim(0) * value.dim(1);
  if (tokens == 0) return Tensor::ZerosHost(DType::kF32, {0, group.Width(info)});
  const Tensor x = value.Reshape({tokens, value.numel() / tokens});
  switch (group.kind) {
    case ScanTargetGroup::Kind::kNeurons:
      return x;
    case ScanTargetGroup::Kind::kSaeFeatures:
      return group.sae->Encode(x);
    case ScanTargetGroup::Kind::kHeadNorms:
      return HeadNorms(x, group.Width(info));
    case ScanTargetGroup::Kind::kDirections: {
      const int64_t n = x.dim(0), d = x.dim(1), k = group.directions.dim(0);
      Tensor out = Tensor::EmptyHost(DType::kF32, {n, k});
      const float* xs = x.data<float>();
      const float* dirs = group.directions.data<float>();
      float* o = out.data<float>();
#pragma omp parallel for schedule(static)
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t j = 0; j < k; ++j) {
          double dot = 0;
          for (int64_t i = 0; i < d; ++i) dot += double{xs[t * d + i]} * dirs[j * d + i];
          o[t * k + j] = static_cast<float>(dot);
        }
      }
      return out;
    }
    case ScanTargetGroup::Kind::kAttentionTo:
      break;
  }
  return absl::InternalError("unknown scan target kind");
}

int64_t ScanTargetGroup::Width(const HookInfo& info) const {
  switch (kind) {
    case Kind::kNeurons: return TokenWidth(info);
    case Kind::kSaeFeatures: return sae != nullptr ? sae->d_sae() : 0;
    case Kind::kDirections: return directions.defined() ? directions.dim(0) : 0;
    case Kind::kHeadNorms: return info.dims.size() == 4 ? info.dims[2].size : 0;
    case Kind::kAttentionTo: return info.dims.size() == 4 ? info.dims[1].size : 0;
  }
  return 0;
}

absl::Status ValidateScanPlan(const Transformer& model, const ScanPlan& plan) {
  const ScanOptions& o = plan.options;
  const int64_t n_ctx = model.config().n_ctx;
  if (o.context_length < 1 || o.context_length > n_ctx)
    return absl::InvalidArgumentError(
        absl::StrCat("context_length ", o.context_length, " must be in [1, ", n_ctx, "] (n_ctx)"));
  if (o.first_counted_position < 0 || o.first_counted_position >= o.context_length)
    return absl::InvalidArgumentError(absl::StrCat(
        "the first counted position ", o.first_counted_position,
        " leaves no position of a context of ", o.context_length, " tokens to count"));
  for (auto [name, value, most] : {std::tuple{"top_k", o.top_k, 1000},
                                   std::tuple{"random_k", o.random_k, 1000},
                                   std::tuple{"quantile_bins", o.quantile_bins, 100},
                                   std::tuple{"per_quantile_k", o.per_quantile_k, 1000},
                                   std::tuple{"histogram_bins", o.histogram_bins, 10000}}) {
    if (value < 0 || value > most)
      return absl::InvalidArgumentError(
          absl::StrCat(name, " is ", value, "; it must be in [0, ", most, "]"));
  }
  if (o.window_before < -1 || o.window_after < -1)
    return absl::InvalidArgumentError("window_before and window_after must be >= -1 (-1: to the "
                                      "context's edge)");
  if (plan.groups.empty()) return absl::InvalidArgumentError("a scan needs at least one target");
  for (const ScanTargetGroup& g : plan.groups) {
    if (g.hook < 0 || g.hook >= model.hooks().size())
      return absl::InvalidArgumentError("a scan target names no hook of the model");
    const HookInfo& info = model.hooks().info(g.hook);
    if (g.kind == ScanTargetGroup::Kind::kAttentionTo) {
      if (info.kind != HookKind::kPattern)
        return absl::InvalidArgumentError(absl::StrCat(
            "attention targets read blocks.L.attn.hook_pattern, not ", info.name));
      if ((g.key_position >= 0) == (g.key_offset >= 0))
        return absl::InvalidArgumentError(
            "an attention target needs one key: a key position or a key offset (>= 0)");
      const int32_t key = std::max(g.key_position, g.key_offset);
      if (key >= o.context_length)
        return absl::InvalidArgumentError(absl::StrCat(
            "the attention target's key ", g.key_position >= 0 ? "position " : "offset ", key,
            " is outside a context of ", o.context_length, " tokens"));
    } else if (!IsPerToken(info)) {
      return absl::InvalidArgumentError(absl::StrCat(
          info.name, " has no activation per token ([batch, pos, ...]); a scan reads hooks such "
                     "as blocks.L.mlp.hook_post, hook_resid_post or hook_z"));
    }
    if (g.kind == ScanTargetGroup::Kind::kHeadNorms && info.dims.size() != 4)
      return absl::InvalidArgumentError(absl::StrCat(
          "head norms read a per-head hook [batch, pos, head, d] such as "
          "blocks.L.attn.hook_result (the head's output) or hook_z, not ", info.name));
    const int64_t width = TokenWidth(info);
    if (g.kind == ScanTargetGroup::Kind::kSaeFeatures) {
      if (g.sae == nullptr) return absl::InvalidArgumentError("an SAE target has no SAE");
      if (g.sae->d_in() != width)
        return absl::InvalidArgumentError(absl::StrCat("the SAE's d_in ", g.sae->d_in(),
                                                       " differs from ", info.name, "'s width ",
                                                       width));
    }
    if (g.kind == ScanTargetGroup::Kind::kDirections) {
      if (!g.directions.defined() || g.directions.rank() != 2 || g.directions.dim(0) < 1 ||
          g.directions.dim(1) != width || g.directions.dtype() != DType::kF32)
        return absl::InvalidArgumentError(
            absl::StrCat("directions at ", info.name, " must be f32 [n, ", width, "]"));
    }
    const int64_t full = g.Width(info);
    absl::flat_hash_set<int32_t> seen;
    for (int32_t i : g.indices) {
      if (i < 0 || i >= full)
        return absl::InvalidArgumentError(absl::StrCat("target index ", i, " at ", info.name,
                                                       " is out of range [0, ", full, ")"));
      if (!seen.insert(i).second)
        return absl::InvalidArgumentError(
            absl::StrCat("target index ", i, " at ", info.name, " is listed twice"));
    }
  }
  return absl::OkStatus();
}

int64_t ScanTargetCount(const Transformer& model, const ScanPlan& plan) {
  int64_t n = 0;
  for (const ScanTargetGroup& g : plan.groups) n += g.size(model.hooks().info(g.hook));
  return n;
}

ScanState NewScanState(const Transformer& model, const ScanPlan& plan) {
  ScanState state;
  state.targets.resize(ScanTargetCount(model, plan));
  return state;
}

std::string ScanState::Serialize() const {
  std::string out(kStateMagic, sizeof(kStateMagic));
  const int64_t header[3] = {pass, next_context, static_cast<int64_t>(targets.size())};
  out.append(reinterpret_cast<const char*>(header), sizeof(header));
  for (const TargetAccumulator& t : targets) t.AppendTo(out);
  return out;
}

absl::StatusOr<ScanState> ScanState::Deserialize(absl::string_view bytes, int64_t targets) {
  int64_t header[3];
  if (bytes.size() < sizeof(kStateMagic) + sizeof(header) ||
      std::memcmp(bytes.data(), kStateMagic, sizeof(kStateMagic)) != 0)
    return absl::DataLossError("not a Glassbox scan state");
  bytes.remove_prefix(sizeof(kStateMagic));
  std::memcpy(header, bytes.data(), sizeof(header));
  bytes.remove_prefix(sizeof(header));
  if (header[0] < 1 || header[0] > 3 || header[1] < 0)
    return absl::DataLossError("the scan state's pass or position is damaged");
  if (header[2] != targets)
    return absl::DataLossError(absl::StrCat("the scan state holds ", header[2],
                                            " targets; the job has ", targets));
  ScanState state;
  state.pass = static_cast<int>(header[0]);
  state.next_context = header[1];
  state.targets.resize(targets);
  for (TargetAccumulator& t : state.targets) GB_RETURN_IF_ERROR(t.ReadFrom(bytes));
  if (!bytes.empty()) return absl::DataLossError("the scan state has trailing bytes");
  return state;
}

int64_t ScanState::Bytes() const {
  int64_t bytes = 0;
  for (const TargetAccumulator& t : targets) bytes += t.Bytes();
  return bytes;
}

float* ScanReplay::Reserve(int64_t first_context, int64_t contexts, int64_t values) {
  if (dropped_) return nullptr;
  const int64_t bytes = values * static_cast<int64_t>(sizeof(float));
  if (first_context != next_context_ || bytes_ + bytes > max_bytes_) {
    dropped_ = true;
    batches_.clear();
    batches_.shrink_to_fit();
    bytes_ = 0;
    return nullptr;
  }
  batches_.emplace_back(first_context, std::vector<float>(values));
  bytes_ += bytes;
  next_context_ = first_context + contexts;
  return batches_.back().second.data();
}

const float* ScanReplay::Find(int64_t first_context, int64_t values) const {
  if (dropped_) return nullptr;
  auto it = std::lower_bound(batches_.begin(), batches_.end(), first_context,
                             [](const auto& batch, int64_t first) { return batch.first < first; });
  if (it == batches_.end() || it->first != first_context ||
      static_cast<int64_t>(it->second.size()) != values)
    return nullptr;
  return it->second.data();
}

absl::Status ScanContexts(const Transformer& model, const ScanPlan& plan, const Tensor& contexts,
                          ScanState& state, const std::atomic<bool>* cancelled,
                          ScanReplay* replay) {
  const ScanOptions& o = plan.options;
  if (contexts.rank() != 2 || contexts.dtype() != DType::kI32 || contexts.dim(0) < 1 ||
      contexts.dim(1) != o.context_length)
    return absl::InvalidArgumentError(
        absl::StrCat("scan contexts must be i32 [n, ", o.context_length, "]"));
  if (state.pass != 1 && state.pass != 2)
    return absl::FailedPreconditionError("the scan has finished");
  const int64_t n = contexts.dim(0), len = o.context_length, tokens = n * len;
  const int64_t first = state.next_context;
  const int64_t targets = static_cast<int64_t>(state.targets.size());
  if (replay != nullptr && state.pass == 2) {
    if (const float* kept = replay->Find(first, targets * tokens)) {
      // The first pass's activations of these contexts: no forward pass.
#pragma omp parallel for schedule(dynamic, 16)
      for (int64_t t = 0; t < targets; ++t) {
        state.targets[t].ObserveSecondPass(kept + t * tokens, first, n, t, o);
      }
      state.next_context += n;
      return absl::OkStatus();
    }
  }
  float* keep = replay != nullptr && state.pass == 1 ? replay->Reserve(first, n, targets * tokens)
                                                     : nullptr;
  HookPlan hook_plan(model.hooks());
  int stop_at = 0;
  for (const ScanTargetGroup& g : plan.groups) {
    hook_plan.CaptureId(g.hook);
    const int stop = StopAtLayerReaching(model.hooks().info(g.hook), model.config());
    stop_at = stop < 0 || stop_at < 0 ? -1 : std::max(stop_at, stop);
  }
  HostCaptures captured(model.backend());
  GB_RETURN_IF_ERROR(model
                         .Forward({.tokens = contexts}, hook_plan, &captured,
                                  {.logits = LogitsMode::kNone, .stop_at_layer = stop_at,
                                   .cancelled = cancelled})
                         .status());
  int64_t target0 = 0;
  for (const ScanTargetGroup& g : plan.groups) {
    const HookInfo& info = model.hooks().info(g.hook);
    const int64_t full = g.Width(info), count = g.size(info);
    const Tensor& value = captured.at(g.hook);
    const int64_t chunk_contexts = std::max<int64_t>(1, kChunkValues / (len * full));
    for (int64_t c0 = 0; c0 < n; c0 += chunk_contexts) {
      const int64_t cn = std::min(chunk_contexts, n - c0), rows = cn * len;
      GB_ASSIGN_OR_RETURN(Tensor acts, GroupActivations(g, info, value.Slice0(c0, c0 + cn)));
      const float* a = acts.data<float>();
      const int64_t tiles = (count + kTile - 1) / kTile;
#pragma omp parallel for schedule(dynamic)
      for (int64_t tile = 0; tile < tiles; ++tile) {
        const int64_t j0 = tile * kTile, jn = std::min(kTile, count - j0);
        std::vector<float> column(jn * rows);
        int64_t source[kTile];
        for (int64_t j = 0; j < jn; ++j) source[j] = g.indices.empty() ? j0 + j : g.indices[j0 + j];
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t j = 0; j < jn; ++j) column[j * rows + r] = a[r * full + source[j]];
        }
        for (int64_t j = 0; j < jn; ++j) {
          const uint64_t target = target0 + j0 + j;
          if (keep != nullptr) {
            std::copy_n(column.data() + j * rows, rows, keep + target * tokens + c0 * len);
          }
          TargetAccumulator& acc = state.targets[target];
          if (state.pass == 1) {
            acc.ObserveFirstPass(column.data() + j * rows, first + c0, cn, target, o);
          } else {
            acc.ObserveSecondPass(column.data() + j * rows, first + c0, cn, target, o);
          }
        }
      }
    }
    target0 += count;
  }
  state.next_context += n;
  return absl::OkStatus();
}

void EndScanPass(const ScanPlan& plan, ScanState& state) {
  if (state.pass == 1 && plan.options.NeedsSecondPass()) {
    for (TargetAccumulator& t : state.targets) t.BeginSecondPass(plan.options);
    state.pass = 2;
  } else {
    for (TargetAccumulator& t : state.targets) t.Finish();
    state.pass = 3;
  }
  state.next_context = 0;
}

}  // namespace glassbox
