#include "server/engine/analyses.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/host_captures.h"
#include "server/engine/host_math.h"

namespace glassbox {
namespace {

absl::StatusOr<HostCaptures> RunCapturing(const Transformer& model, const Tensor& tokens,
                                      const Tensor& mask, const std::vector<std::string>& hooks) {
  HookPlan plan(model.hooks());
  for (const std::string& h : hooks) GB_RETURN_IF_ERROR(plan.Capture(h));
  HostCaptures sink(model.backend());
  GB_RETURN_IF_ERROR(model.Forward({.tokens = tokens, .attention_mask = mask}, plan, &sink,
                                   {.logits = LogitsMode::kNone}).status());
  return sink;
}

absl::Status CheckTokens(const Transformer& model, const std::vector<int32_t>& tokens, absl::string_view what) {
  for (int32_t t : tokens) {
    if (t < 0 || t >= model.config().vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(what, " ", t, " is outside the vocabulary [0, ",
                                                     model.config().vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

// The logit lens unembeds at most this many logits at once (64 MiB of f32).
constexpr int64_t kLensChunkLogits = int64_t{16} << 20;

absl::StatusOr<LogitLensResult> RunLogitLens(const Transformer& model, const LogitLensRequest& request) {
  const ModelConfig& c = model.config();
  const ModelWeights& w = model.weights();
  Backend& be = model.backend();
  if (request.top_k < 1 || request.top_k > c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("top_k must be in [1, ", c.vocab_size, "]"));
  }
  GB_RETURN_IF_ERROR(CheckTokens(model, request.target_tokens, "target token"));
  const std::string last_post = absl::StrCat("blocks.", c.n_layers - 1, ".hook_resid_post");
  GB_ASSIGN_OR_RETURN(HostCaptures sink, RunCapturing(model, request.tokens, request.attention_mask,
                                                  {"blocks.*.hook_resid_pre", last_post}));
  const int64_t batch = request.tokens.dim(0), seq = request.tokens.dim(1), rows = batch * seq;
  const int64_t layers = c.n_layers + 1, k = request.top_k, vocab = c.vocab_size;
  const int64_t n_targets = static_cast<int64_t>(request.target_tokens.size());
  LogitLensResult result;
  result.top_log_probs = Tensor::EmptyHost(DType::kF32, {layers, batch, seq, k});
  result.top_tokens = Tensor::EmptyHost(DType::kI32, {layers, batch, seq, k});
  if (n_targets) result.target_log_probs = Tensor::EmptyHost(DType::kF32, {layers, batch, seq, n_targets});
  std::vector<int32_t> order(vocab);
  for (int64_t l = 0; l < layers; ++l) {
    const std::string name = l < c.n_layers ? absl::StrCat("blocks.", l, ".hook_resid_pre") : last_post;
    result.labels.push_back(l < c.n_layers ? absl::StrCat(l, "_pre") : "final_post");
    // The final norm recomputed on this layer's residual, then the unembedding, on the backend,
    // a chunk of rows at a time: [rows, vocab] logits for a long batch would not fit.
    const Tensor all = sink.at(name).Reshape({rows, c.d_model});
    const int64_t chunk = std::max<int64_t>(1, kLensChunkLogits / vocab);
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t n = std::min(chunk, rows - r0);
      const Tensor host = all.Slice0(r0, r0 + n);
      GB_ASSIGN_OR_RETURN(Tensor x, be.Allocate(model.dtype(), {n, c.d_model}));
      if (model.dtype() == DType::kF32) {
        GB_RETURN_IF_ERROR(be.CopyFromHost(host, x));
      } else {
        GB_ASSIGN_OR_RETURN(Tensor staged, be.Allocate(DType::kF32, {n, c.d_model}));
        GB_RETURN_IF_ERROR(be.CopyFromHost(host, staged));
        GB_RETURN_IF_ERROR(be.Convert(staged, x));
      }
      GB_ASSIGN_OR_RETURN(Tensor normalized, be.Allocate(model.dtype(), {n, c.d_model}));
      const float eps = static_cast<float>(c.norm_eps);
      const Tensor* bias = w.ln_final_b.defined() ? &w.ln_final_b : nullptr;
      if (c.norm == NormKind::kLayerNorm) {
        GB_RETURN_IF_ERROR(be.LayerNorm(x, &w.ln_final_w, bias, eps, normalized, nullptr, nullptr));
      } else {
        GB_RETURN_IF_ERROR(be.RmsNorm(x, &w.ln_final_w, eps, normalized, nullptr, nullptr));
      }
      GB_ASSIGN_OR_RETURN(Tensor logits, be.Allocate(DType::kF32, {n, vocab}));
      // The logit lens unembeds as the model does, b_U included (TransformerLens's unembed).
      const Tensor* unembed_bias = w.unembed_b.defined() ? &w.unembed_b : nullptr;
      GB_RETURN_IF_ERROR(
          be.Linear(normalized, w.unembed, unembed_bias, Activation::kIdentity, logits));
      GB_ASSIGN_OR_RETURN(Tensor log_probs, be.Allocate(DType::kF32, {n, vocab}));
      GB_RETURN_IF_ERROR(be.LogSoftmax(logits, log_probs));
      GB_ASSIGN_OR_RETURN(Tensor lp, CopyToHostF32(be, log_probs));
      for (int64_t i = 0; i < n; ++i) {
        const float* row = lp.data<float>() + i * vocab;
        const int64_t out = l * rows + r0 + i;
        TopK(row, vocab, k, result.top_log_probs.data<float>() + out * k,
             result.top_tokens.data<int32_t>() + out * k, order);
        for (int64_t j = 0; j < n_targets; ++j) {
          result.target_log_probs.data<float>()[out * n_targets + j] = row[request.target_tokens[j]];
        }
      }
    }
  }
  return result;
}

absl::StatusOr<DlaResult> RunDirectLogitAttribution(const Transformer& model, const DlaRequest& request) {
  const ModelConfig& c = model.config();
  Backend& be = model.backend();
  GB_RETURN_IF_ERROR(CheckTokens(model, {request.token}, "token"));
  if (request.minus_token) GB_RETURN_IF_ERROR(CheckTokens(model, {*request.minus_token}, "minus_token"));
  const int64_t batch = request.tokens.dim(0), seq = request.tokens.dim(1), d = c.d_model;
  Tensor mask = request.attention_mask;
  if (!mask.defined()) {
    mask = Tensor::EmptyHost(DType::kI32, request.tokens.shape());
    std::fill_n(mask.data<int32_t>(), mask.numel(), 1);
  }
  const TokenLayout layout = TokenLayout::FromMask(mask);
  std::vector<int32_t> index(batch);
  for (int64_t b = 0; b < batch; ++b) {
    index[b] = layout.Index(b, request.position);
    if (index[b] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("position ", request.position, " is outside row ", b,
                                                     " (", layout.real[b].size(), " tokens)"));
    }
  }
  std::vector<std::string> hooks = {"hook_embed", "blocks.*.attn.hook_result", "blocks.*.hook_mlp_out",
                                    "blocks.*.hook_resid_post", "ln_final.hook_scale"};
  if (c.positional == PositionalKind::kLearned) hooks.push_back("hook_pos_embed");
  GB_ASSIGN_OR_RETURN(HostCaptures sink, RunCapturing(model, request.tokens, mask, hooks));
  // Direction in the residual stream: w_f ∘ (W_U[t] − W_U[t2]).
  const ModelWeights& w = model.weights();
  GB_ASSIGN_OR_RETURN(Tensor unembed, CopyToHostF32(be, w.unembed));
  GB_ASSIGN_OR_RETURN(Tensor norm_w, CopyToHostF32(be, w.ln_final_w));
  GB_ASSIGN_OR_RETURN(Tensor norm_b, CopyToHostF32(be, w.ln_final_b));
  GB_ASSIGN_OR_RETURN(Tensor unembed_b, CopyToHostF32(be, w.unembed_b));
  // GPT-J's b_U adds the same to the logit (difference) at every position: a constant.
  double unembed_bias = 0;
  if (unembed_b.defined()) {
    unembed_bias = unembed_b.data<float>()[request.token];
    if (request.minus_token) unembed_bias -= unembed_b.data<float>()[*request.minus_token];
  }
  std::vector<double> direction(d), raw_direction(d);
  for (int64_t i = 0; i < d; ++i) {
    raw_direction[i] = unembed.data<float>()[request.token * d + i];
    if (request.minus_token) raw_direction[i] -= unembed.data<float>()[*request.minus_token * d + i];
    direction[i] = raw_direction[i] * norm_w.data<float>()[i];
  }
  const bool center = c.norm == NormKind::kLayerNorm;
  const Tensor& scale = sink.at("ln_final.hook_scale");  // [batch, pos, 1]

  // Components in order, each a function giving y_c for row b at the chosen position.
  struct Component {
    std::string label;
    std::function<void(int64_t b, std::vector<double>& y)> vector;
  };
  std::vector<Component> components;
  auto row_of = [&](const Tensor& t, int64_t b, int64_t stride_heads, int64_t head) {
    return t.data<float>() + ((b * seq + index[b]) * stride_heads + head) * d;
  };
  components.push_back({"embed", [&](int64_t b, std::vector<double>& y) {
                          const float* v = row_of(sink.at("hook_embed"), b, 1, 0);
                          y.assign(v, v + d);
                        }});
  if (sink.has("hook_pos_embed")) {
    components.push_back({"pos_embed", [&](int64_t b, std::vector<double>& y) {
                            const float* v = row_of(sink.at("hook_pos_embed"), b, 1, 0);
                            y.assign(v, v + d);
                          }});
  }
  GB_ASSIGN_OR_RETURN(std::vector<Tensor> o_biases, [&]() -> absl::StatusOr<std::vector<Tensor>> {
    std::vector<Tensor> biases;
    for (const BlockWeights& bw : w.blocks) {
      GB_ASSIGN_OR_RETURN(Tensor hb, CopyToHostF32(be, bw.o_b));
      biases.push_back(hb);
    }
    return biases;
  }());
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string result = absl::StrCat("blocks.", l, ".attn.hook_result");
    for (int64_t h = 0; h < c.n_heads; ++h) {
      components.push_back({absl::StrCat("L", l, "H", h), [&, result, h](int64_t b, std::vector<double>& y) {
                              const float* v = row_of(sink.at(result), b, c.n_heads, h);
                              y.assign(v, v + d);
                            }});
    }
    if (o_biases[l].defined()) {
      components.push_back({absl::StrCat("L", l, ".attn_bias"), [&, l](int64_t, std::vector<double>& y) {
                              y.assign(o_biases[l].data<float>(), o_biases[l].data<float>() + d);
                            }});
    }
    const std::string mlp = absl::StrCat("blocks.", l, ".hook_mlp_out");
    components.push_back({absl::StrCat("L", l, ".mlp_out"), [&, mlp](int64_t b, std::vector<double>& y) {
                            const float* v = row_of(sink.at(mlp), b, 1, 0);
                            y.assign(v, v + d);
                          }});
  }

  DlaResult result;
  const int64_t n = static_cast<int64_t>(components.size());
  result.attributions = Tensor::EmptyHost(DType::kF32, {n, batch});
  result.logit = Tensor::EmptyHost(DType::kF32, {batch});
  result.residual_constant = Tensor::EmptyHost(DType::kF32, {batch});
  std::vector<double> y;
  for (int64_t b = 0; b < batch; ++b) {
    const double s = scale.data<float>()[b * seq + index[b]];
    for (int64_t ci = 0; ci < n; ++ci) {
      components[ci].vector(b, y);
      const double mean = center ? std::accumulate(y.begin(), y.end(), 0.0) / static_cast<double>(d) : 0.0;
      double dot = 0;
      for (int64_t i = 0; i < d; ++i) dot += (y[i] - mean) * direction[i];
      result.attributions.data<float>()[ci * batch + b] = static_cast<float>(dot / s);
    }
    // The model's own logit (difference) from the final residual, for the caller's check.
    const float* final_resid = row_of(sink.at(absl::StrCat("blocks.", c.n_layers - 1, ".hook_resid_post")), b, 1, 0);
    const double mean = center ? std::accumulate(final_resid, final_resid + d, 0.0) / static_cast<double>(d) : 0.0;
    double logit = unembed_bias, constant = unembed_bias;
    for (int64_t i = 0; i < d; ++i) {
      const double bias = norm_b.defined() ? norm_b.data<float>()[i] : 0.0;
      logit += ((final_resid[i] - mean) / s) * direction[i] + bias * raw_direction[i];
      constant += bias * raw_direction[i];
    }
    result.logit.data<float>()[b] = static_cast<float>(logit);
    result.residual_constant.data<float>()[b] = static_cast<float>(constant);
  }
  for (const Component& comp : components) result.labels.push_back(comp.label);
  return result;
}

absl::StatusOr<std::vector<AttentionNormsLayer>> RunAttentionNorms(const Transformer& model,
                                                                   const AttentionNormsRequest& request) {
  const ModelConfig& c = model.config();
  Backend& be = model.backend();
  std::vector<int> layers = request.layers;
  if (layers.empty()) {
    layers.resize(c.n_layers);
    std::iota(layers.begin(), layers.end(), 0);
  }
  std::vector<std::string> hooks;
  for (int l : layers) {
    if (l < 0 || l >= c.n_layers) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", l, " is outside [0, ", c.n_layers, ")"));
    }
    hooks.push_back(absl::StrCat("blocks.", l, ".attn.hook_pattern"));
    hooks.push_back(absl::StrCat("blocks.", l, ".attn.hook_v"));
  }
  GB_ASSIGN_OR_RETURN(HostCaptures sink, RunCapturing(model, request.tokens, request.attention_mask, hooks));
  const int64_t batch = request.tokens.dim(0), seq = request.tokens.dim(1);
  const int64_t heads = c.n_heads, group = c.n_heads / c.n_kv_heads, dh = c.d_head, d = c.d_model;
  std::vector<AttentionNormsLayer> out;
  for (int l : layers) {
    const Tensor& pattern = sink.at(absl::StrCat("blocks.", l, ".attn.hook_pattern"));
    const Tensor& v = sink.at(absl::StrCat("blocks.", l, ".attn.hook_v"));  // [B, S, Hkv, Dh]
    // f_h(u_j) = v_j^{kv(h)} W_O^h for every (b, j, h): expand v to query heads, then project.
    Tensor expanded = Tensor::EmptyHost(DType::kF32, {batch, seq, heads, dh});
    for (int64_t bj = 0; bj < batch * seq; ++bj) {
      for (int64_t h = 0; h < heads; ++h) {
        std::copy_n(v.data<float>() + (bj * c.n_kv_heads + h / group) * dh, dh,
                    expanded.data<float>() + (bj * heads + h) * dh);
      }
    }
    GB_ASSIGN_OR_RETURN(Tensor o_w, CopyToHostF32(be, model.weights().blocks[l].o_w));
    Tensor f = Tensor::EmptyHost(DType::kF32, {batch, seq, heads, d});
    // The values are on the host already; the CPU backend is the host math library.
    GB_RETURN_IF_ERROR(CpuBackend().HeadProjection(expanded, o_w, f));
    AttentionNormsLayer layer{.layer = l, .weights = pattern,
                              .head_norms = Tensor::EmptyHost(DType::kF32, pattern.shape()),
                              .layer_norms = Tensor::ZerosHost(DType::kF32, {batch, seq, seq})};
    // Gram matrices G_j[h, h'] = <f_h(u_j), f_h'(u_j)> give both norms without forming the
    // [query, key, d_model] sums: ‖Σ_h α_h f_h‖² = αᵀ G_j α.
    std::vector<double> gram(heads * heads);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t j = 0; j < seq; ++j) {
        const float* fj = f.data<float>() + (b * seq + j) * heads * d;
        for (int64_t h = 0; h < heads; ++h) {
          for (int64_t h2 = h; h2 < heads; ++h2) {
            double dot = 0;
            for (int64_t e = 0; e < d; ++e) dot += static_cast<double>(fj[h * d + e]) * fj[h2 * d + e];
            gram[h * heads + h2] = gram[h2 * heads + h] = dot;
          }
        }
        for (int64_t i = 0; i < seq; ++i) {
          double total = 0;
          for (int64_t h = 0; h < heads; ++h) {
            const double a = pattern.data<float>()[((b * heads + h) * seq + i) * seq + j];
            layer.head_norms.data<float>()[((b * heads + h) * seq + i) * seq + j] =
                static_cast<float>(std::abs(a) * std::sqrt(gram[h * heads + h]));
            for (int64_t h2 = 0; h2 < heads; ++h2) {
              total += a * pattern.data<float>()[((b * heads + h2) * seq + i) * seq + j] * gram[h * heads + h2];
            }
          }
          layer.layer_norms.data<float>()[(b * seq + i) * seq + j] = static_cast<float>(std::sqrt(std::max(total, 0.0)));
        }
      }
    }
    out.push_back(std::move(layer));
  }
  return out;
}

}  // namespace glassbox
