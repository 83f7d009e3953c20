#include "server/engine/hook_points.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace glassbox {
namespace {

constexpr int kNumKinds = static_cast<int>(HookKind::kResidPost) + 1;

HookDim Batch() { return {HookDim::Symbol::kBatch, 0}; }
HookDim Pos() { return {HookDim::Symbol::kPos, 0}; }
HookDim Fixed(int64_t n) { return {HookDim::Symbol::kFixed, n}; }

}  // namespace

Shape HookInfo::ShapeFor(int64_t batch, int64_t pos) const {
  Shape shape;
  shape.reserve(dims.size());
  for (const HookDim& d : dims) {
    switch (d.symbol) {
      case HookDim::Symbol::kBatch: shape.push_back(batch); break;
      case HookDim::Symbol::kPos: shape.push_back(pos); break;
      case HookDim::Symbol::kFixed: shape.push_back(d.size); break;
    }
  }
  return shape;
}

HookRegistry::HookRegistry(const ModelConfig& c) {
  by_kind_layer_.assign(kNumKinds, std::vector<HookId>(c.n_layers + 1, -1));
  auto add = [&](HookKind kind, int layer, std::string name, std::vector<HookDim> dims,
                 std::vector<std::string> dim_names) {
    const HookId id = static_cast<HookId>(hooks_.size());
    by_name_[name] = id;
    by_kind_layer_[static_cast<int>(kind)][layer + 1] = id;
    hooks_.push_back(HookInfo{std::move(name), kind, layer, std::move(dims), std::move(dim_names)});
  };
  const std::vector<std::string> resid_names = {"batch", "pos", "d_model"};
  auto resid = [&] { return std::vector<HookDim>{Batch(), Pos(), Fixed(c.d_model)}; };
  auto heads = [&](int64_t n) { return std::vector<HookDim>{Batch(), Pos(), Fixed(n), Fixed(c.d_head)}; };
  const std::vector<std::string> head_names = {"batch", "pos", "head_index", "d_head"};
  const std::vector<std::string> kv_names = {"batch", "pos", "kv_head_index", "d_head"};
  auto scale = [&] { return std::vector<HookDim>{Batch(), Pos(), Fixed(1)}; };
  const std::vector<std::string> scale_names = {"batch", "pos", "1"};
  auto neurons = [&] { return std::vector<HookDim>{Batch(), Pos(), Fixed(c.d_mlp)}; };
  const std::vector<std::string> neuron_names = {"batch", "pos", "d_mlp"};

  add(HookKind::kEmbed, -1, "hook_embed", resid(), resid_names);
  if (c.positional == PositionalKind::kLearned) {
    add(HookKind::kPosEmbed, -1, "hook_pos_embed", resid(), resid_names);
  }
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string b = absl::StrCat("blocks.", l, ".");
    add(HookKind::kResidPre, l, b + "hook_resid_pre", resid(), resid_names);
    // Pre-norm blocks normalise what enters attention and the MLP; post-norm blocks (OLMo-2)
    // what leaves them, before hook_attn_out / hook_mlp_out (TransformerLens's order and names);
    // Gemma-2 does both, its post-norms named ln1_post / ln2_post.
    const bool post = c.norm_placement == NormPlacement::kPost;
    const bool both = c.norm_placement == NormPlacement::kPreAndPost;
    auto norm = [&](HookKind scale_kind, HookKind normalized_kind, const std::string& name) {
      add(scale_kind, l, b + name + ".hook_scale", scale(), scale_names);
      add(normalized_kind, l, b + name + ".hook_normalized", resid(), resid_names);
    };
    auto ln1 = [&] { norm(HookKind::kLn1Scale, HookKind::kLn1Normalized, "ln1"); };
    auto ln2 = [&] { norm(HookKind::kLn2Scale, HookKind::kLn2Normalized, "ln2"); };
    if (!post) ln1();
    add(HookKind::kQ, l, b + "attn.hook_q", heads(c.n_heads), head_names);
    add(HookKind::kK, l, b + "attn.hook_k", heads(c.n_kv_heads), kv_names);
    add(HookKind::kV, l, b + "attn.hook_v", heads(c.n_kv_heads), kv_names);
    if (c.qk_norm == QkNorm::kPerHead) {
      // TransformerLens's attn.q_norm / attn.k_norm RMSNorms, per head.
      const std::vector<std::string> q_scale_names = {"batch", "pos", "head_index", "1"};
      const std::vector<std::string> k_scale_names = {"batch", "pos", "kv_head_index", "1"};
      add(HookKind::kQNormScale, l, b + "attn.q_norm.hook_scale",
          {Batch(), Pos(), Fixed(c.n_heads), Fixed(1)}, q_scale_names);
      add(HookKind::kQNormNormalized, l, b + "attn.q_norm.hook_normalized", heads(c.n_heads),
          head_names);
      add(HookKind::kKNormScale, l, b + "attn.k_norm.hook_scale",
          {Batch(), Pos(), Fixed(c.n_kv_heads), Fixed(1)}, k_scale_names);
      add(HookKind::kKNormNormalized, l, b + "attn.k_norm.hook_normalized", heads(c.n_kv_heads),
          kv_names);
    } else if (c.qk_norm == QkNorm::kWhole) {
      // Over the whole projection, before the split into heads (OLMo-2).
      add(HookKind::kQNormScale, l, b + "attn.q_norm.hook_scale", scale(), scale_names);
      add(HookKind::kQNormNormalized, l, b + "attn.q_norm.hook_normalized",
          {Batch(), Pos(), Fixed(c.n_heads * c.d_head)}, {"batch", "pos", "q_features"});
      add(HookKind::kKNormScale, l, b + "attn.k_norm.hook_scale", scale(), scale_names);
      add(HookKind::kKNormNormalized, l, b + "attn.k_norm.hook_normalized",
          {Batch(), Pos(), Fixed(c.n_kv_heads * c.d_head)}, {"batch", "pos", "kv_features"});
    }
    if (c.positional == PositionalKind::kRotary) {
      add(HookKind::kRotQ, l, b + "attn.hook_rot_q", heads(c.n_heads), head_names);
      add(HookKind::kRotK, l, b + "attn.hook_rot_k", heads(c.n_kv_heads), kv_names);
    }
    const std::vector<HookDim> square = {Batch(), Fixed(c.n_heads), Pos(), Pos()};
    const std::vector<std::string> square_names = {"batch", "head_index", "query_pos", "key_pos"};
    add(HookKind::kAttnScores, l, b + "attn.hook_attn_scores", square, square_names);
    add(HookKind::kPattern, l, b + "attn.hook_pattern", square, square_names);
    add(HookKind::kZ, l, b + "attn.hook_z", heads(c.n_heads), head_names);
    add(HookKind::kResult, l, b + "attn.hook_result",
        {Batch(), Pos(), Fixed(c.n_heads), Fixed(c.d_model)},
        {"batch", "pos", "head_index", "d_model"});
    if (post) ln1();
    if (both) norm(HookKind::kLn1PostScale, HookKind::kLn1PostNormalized, "ln1_post");
    add(HookKind::kAttnOut, l, b + "hook_attn_out", resid(), resid_names);
    if (!c.parallel_attn_mlp) add(HookKind::kResidMid, l, b + "hook_resid_mid", resid(), resid_names);
    if (!post) ln2();
    add(HookKind::kMlpPre, l, b + "mlp.hook_pre", neurons(), neuron_names);
    if (c.gated_mlp) add(HookKind::kMlpPreLinear, l, b + "mlp.hook_pre_linear", neurons(), neuron_names);
    add(HookKind::kMlpPost, l, b + "mlp.hook_post", neurons(), neuron_names);
    if (post) ln2();
    if (both) norm(HookKind::kLn2PostScale, HookKind::kLn2PostNormalized, "ln2_post");
    add(HookKind::kMlpOut, l, b + "hook_mlp_out", resid(), resid_names);
    add(HookKind::kResidPost, l, b + "hook_resid_post", resid(), resid_names);
  }
  add(HookKind::kLnFinalScale, -1, "ln_final.hook_scale", scale(), scale_names);
  add(HookKind::kLnFinalNormalized, -1, "ln_final.hook_normalized", resid(), resid_names);
}

HookId HookRegistry::Find(HookKind kind, int layer) const {
  const auto& row = by_kind_layer_[static_cast<int>(kind)];
  if (layer + 1 < 0 || layer + 1 >= static_cast<int>(row.size())) return -1;
  return row[layer + 1];
}

absl::Status HookRegistry::UnknownHook(absl::string_view name) const {
  // Listing every layer would bury the answer: show layer 0's hooks and the model-level ones.
  std::vector<std::string> examples;
  for (const HookInfo& h : hooks_) {
    if (h.layer <= 0) examples.push_back(h.name);
  }
  const int layers = static_cast<int>(by_kind_layer_[0].size()) - 1;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown hook point \"", name, "\". This model's hook points are ",
      absl::StrJoin(examples, ", "), ", and the same blocks.L.* names for layers 0..",
      layers - 1, "; globs such as blocks.*.hook_resid_post are accepted"));
}

absl::StatusOr<HookId> HookRegistry::Resolve(absl::string_view name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return UnknownHook(name);
  return it->second;
}

absl::StatusOr<std::vector<HookId>> HookRegistry::Match(absl::string_view pattern) const {
  std::vector<HookId> ids;
  if (pattern.find_first_of("*?") == absl::string_view::npos) {
    auto id = Resolve(pattern);
    if (!id.ok()) return id.status();
    ids.push_back(*id);
    return ids;
  }
  for (HookId id = 0; id < size(); ++id) {
    if (GlobMatch(pattern, hooks_[id].name)) ids.push_back(id);
  }
  if (ids.empty()) return UnknownHook(pattern);
  return ids;
}

bool GlobMatch(absl::string_view pattern, absl::string_view name) {
  // Iterative wildcard matching with single-star backtracking: linear in practice, and no
  // recursion depth to exhaust on hostile patterns.
  size_t p = 0, n = 0, star = absl::string_view::npos, resume = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p;
      ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = n;
    } else if (star != absl::string_view::npos) {
      p = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

}  // namespace glassbox
