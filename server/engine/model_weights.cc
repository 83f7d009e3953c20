#include "server/engine/model_weights.h"

#include <cmath>
#include <cstring>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/float16.h"
#include "base/status_macros.h"

namespace glassbox {
namespace {

// Reads checkpoint tensors by HF name, trying the prefixes HF checkpoints are saved with.
class WeightReader {
 public:
  WeightReader(const SafetensorsCheckpoint& checkpoint, std::vector<std::string> prefixes,
               Backend& backend, DType dtype)
      : checkpoint_(checkpoint), prefixes_(std::move(prefixes)), backend_(backend), dtype_(dtype) {}

  bool Has(absl::string_view name) const { return FindView(name) != nullptr; }

  // The tensor `name` with exactly `shape`, on the backend. With `transpose`, the checkpoint
  // holds the transpose ([in, out], GPT-2's Conv1D) and the result is [out, in] = `shape`.
  absl::StatusOr<Tensor> Get(absl::string_view name, Shape shape, bool transpose = false) const {
    GB_ASSIGN_OR_RETURN(Tensor host, GetHost(name, std::move(shape), transpose));
    return Place(host);
  }

  // The same, left on the host (in the target dtype) for the caller to combine before Place().
  absl::StatusOr<Tensor> GetHost(absl::string_view name, Shape shape, bool transpose = false) const {
    GB_ASSIGN_OR_RETURN(Tensor host, GetHostF32(name, std::move(shape), transpose));
    return InTargetDtype(host);
  }

  // A norm weight [size]; with `offset` (Gemma's RMSNorm scales by 1 + w) it is stored as 1 + w.
  absl::StatusOr<Tensor> GetNorm(absl::string_view name, int64_t size, bool offset) const {
    GB_ASSIGN_OR_RETURN(Tensor host, GetHostF32(name, {size}));
    if (offset) {
      for (int64_t i = 0; i < size; ++i) host.data<float>()[i] += 1.0f;
    }
    return Place(InTargetDtype(host));
  }

  absl::StatusOr<Tensor> Place(const Tensor& host) const {
    if (backend_.device() == Device::kCpu) return host;
    GB_ASSIGN_OR_RETURN(Tensor device, backend_.Allocate(host.dtype(), host.shape()));
    GB_RETURN_IF_ERROR(backend_.CopyFromHost(host, device));
    return device;
  }

  // Optional tensors (biases the config may or may not imply) read only when `present`.
  absl::StatusOr<Tensor> GetIf(bool present, absl::string_view name, Shape shape,
                               bool transpose = false) const {
    if (!present) return Tensor();
    return Get(name, std::move(shape), transpose);
  }

 private:
  absl::StatusOr<Tensor> GetHostF32(absl::string_view name, Shape shape,
                                    bool transpose = false) const {
    const TensorView* view = FindView(name);
    if (view == nullptr) {
      std::vector<std::string> tried;
      for (const std::string& p : prefixes_) tried.push_back(absl::StrCat("'", p, name, "'"));
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint is missing tensor ", absl::StrJoin(tried, " / "),
          " that config.json implies"));
    }
    Shape stored = shape;
    if (transpose) std::swap(stored[0], stored[1]);
    if (view->shape != stored) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", view->name, "' has shape ", ShapeToString(view->shape),
          " but config.json implies ", ShapeToString(stored)));
    }
    GB_ASSIGN_OR_RETURN(Tensor host, ToHostF32(*view));
    // The checkpoint's pages of this tensor are not read again: dropping them now keeps the
    // load's peak near the converted weights instead of the weights plus the whole file.
    checkpoint_.ReleasePages(*view);
    if (transpose) host = Transposed(host);
    return host.Reshape(std::move(shape));
  }

  Tensor InTargetDtype(const Tensor& f32) const {
    if (dtype_ == DType::kF32) return f32;
    Tensor converted = Tensor::EmptyHost(dtype_, f32.shape());
    CpuConvert(f32, converted);
    return converted;
  }

  const TensorView* FindView(absl::string_view name) const {
    for (const std::string& p : prefixes_) {
      if (const TensorView* v = checkpoint_.Find(absl::StrCat(p, name))) return v;
    }
    return nullptr;
  }

  static absl::StatusOr<Tensor> ToHostF32(const TensorView& view) {
    Tensor out = Tensor::EmptyHost(DType::kF32, view.shape);
    float* dst = out.data<float>();
    const std::byte* src = view.bytes.data();
    const int64_t n = view.numel();
    // Checkpoint bytes need not be aligned for the element type: copy element by element.
    switch (view.dtype) {
      case SafetensorsDtype::kF32:
        std::memcpy(dst, src, n * sizeof(float));
        return out;
      case SafetensorsDtype::kF64:
        for (int64_t i = 0; i < n; ++i) {
          double d;
          std::memcpy(&d, src + i * 8, 8);
          dst[i] = static_cast<float>(d);
        }
        return out;
      case SafetensorsDtype::kF16:
      case SafetensorsDtype::kBF16: {
        const bool half = view.dtype == SafetensorsDtype::kF16;
        for (int64_t i = 0; i < n; ++i) {
          uint16_t bits;
          std::memcpy(&bits, src + i * 2, 2);
          dst[i] = half ? HalfToFloat(bits) : BFloat16ToFloat(bits);
        }
        return out;
      }
      default:
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", view.name, "' has dtype ", std::string(SafetensorsDtypeName(view.dtype)),
            "; model weights must be F32, F16, BF16 or F64"));
    }
  }

  static Tensor Transposed(const Tensor& m) {
    const int64_t rows = m.dim(0), cols = m.dim(1);
    Tensor t = Tensor::EmptyHost(DType::kF32, {cols, rows});
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) t.data<float>()[c * rows + r] = m.data<float>()[r * cols + c];
    }
    return t;
  }

  static void CpuConvert(const Tensor& f32, Tensor& out) {
    const int64_t n = f32.numel();
    for (int64_t i = 0; i < n; ++i) {
      const float v = f32.data<float>()[i];
      out.data<uint16_t>()[i] = out.dtype() == DType::kF16 ? FloatToHalf(v) : FloatToBFloat16(v);
    }
  }

  const SafetensorsCheckpoint& checkpoint_;
  std::vector<std::string> prefixes_;
  Backend& backend_;
  DType dtype_;
};

// Concatenates matrices (or vectors) along dimension 0, on the host.
Tensor ConcatRows(std::initializer_list<const Tensor*> parts) {
  int64_t rows = 0;
  Shape shape = parts.begin()[0]->shape();
  for (const Tensor* p : parts) rows += p->dim(0);
  shape[0] = rows;
  Tensor out = Tensor::EmptyHost(parts.begin()[0]->dtype(), shape);
  size_t offset = 0;
  for (const Tensor* p : parts) {
    std::memcpy(static_cast<std::byte*>(out.raw_data()) + offset, p->raw_data(), p->nbytes());
    offset += p->nbytes();
  }
  return out;
}

// Rows [begin, begin + count) of a host matrix, as a new tensor.
Tensor SliceRows(const Tensor& m, int64_t begin, int64_t count) {
  const int64_t row_bytes = m.nbytes() / m.dim(0);
  Shape shape = m.shape();
  shape[0] = count;
  Tensor out = Tensor::EmptyHost(m.dtype(), shape);
  std::memcpy(out.raw_data(), static_cast<const std::byte*>(m.raw_data()) + begin * row_bytes,
              count * row_bytes);
  return out;
}

absl::StatusOr<ModelWeights> LoadGpt2(const ModelConfig& c, const WeightReader& r) {
  ModelWeights w;
  const int64_t d = c.d_model, m = c.d_mlp;
  GB_ASSIGN_OR_RETURN(w.embed, r.Get("wte.weight", {c.vocab_size, d}));
  GB_ASSIGN_OR_RETURN(w.pos_embed, r.Get("wpe.weight", {c.n_ctx, d}));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = absl::StrCat("h.", l, ".");
    BlockWeights b;
    GB_ASSIGN_OR_RETURN(b.ln1_w, r.Get(p + "ln_1.weight", {d}));
    GB_ASSIGN_OR_RETURN(b.ln1_b, r.Get(p + "ln_1.bias", {d}));
    GB_ASSIGN_OR_RETURN(b.qkv_w, r.Get(p + "attn.c_attn.weight", {3 * d, d}, /*transpose=*/true));
    GB_ASSIGN_OR_RETURN(b.qkv_b, r.Get(p + "attn.c_attn.bias", {3 * d}));
    GB_ASSIGN_OR_RETURN(b.o_w, r.Get(p + "attn.c_proj.weight", {d, d}, true));
    GB_ASSIGN_OR_RETURN(b.o_b, r.Get(p + "attn.c_proj.bias", {d}));
    GB_ASSIGN_OR_RETURN(b.ln2_w, r.Get(p + "ln_2.weight", {d}));
    GB_ASSIGN_OR_RETURN(b.ln2_b, r.Get(p + "ln_2.bias", {d}));
    GB_ASSIGN_OR_RETURN(b.in_w, r.Get(p + "mlp.c_fc.weight", {m, d}, true));
    GB_ASSIGN_OR_RETURN(b.in_b, r.Get(p + "mlp.c_fc.bias", {m}));
    GB_ASSIGN_OR_RETURN(b.out_w, r.Get(p + "mlp.c_proj.weight", {d, m}, true));
    GB_ASSIGN_OR_RETURN(b.out_b, r.Get(p + "mlp.c_proj.bias", {d}));
    w.blocks.push_back(std::move(b));
  }
  GB_ASSIGN_OR_RETURN(w.ln_final_w, r.Get("ln_f.weight", {d}));
  GB_ASSIGN_OR_RETURN(w.ln_final_b, r.Get("ln_f.bias", {d}));
  w.unembed = w.embed;  // GPT2LMHeadModel ties lm_head to wte
  return w;
}

// The unembedding: the embedding itself when tied, else the checkpoint's `name`.
absl::Status ReadUnembed(const ModelConfig& c, const WeightReader& r, absl::string_view name,
                         ModelWeights& w) {
  if (c.tie_word_embeddings) {
    w.unembed = w.embed;
    return absl::OkStatus();
  }
  GB_ASSIGN_OR_RETURN(w.unembed, r.Get(name, {c.vocab_size, c.d_model}));
  return absl::OkStatus();
}

// The rotary tables stay f32 whatever the weights' dtype: they are small and HF keeps them f32
// too.
absl::Status PlaceRotaryTables(const ModelConfig& c, const WeightReader& r, ModelWeights& w) {
  Tensor cos = Tensor::EmptyHost(DType::kF32, {c.n_ctx, c.rotary_dim / 2});
  Tensor sin = Tensor::EmptyHost(DType::kF32, {c.n_ctx, c.rotary_dim / 2});
  ComputeRotaryTables(c, cos, sin);
  GB_ASSIGN_OR_RETURN(w.rope_cos, r.Place(cos));
  GB_ASSIGN_OR_RETURN(w.rope_sin, r.Place(sin));
  if (c.rope_local_theta > 0) {
    // Tables of their own: on the CPU, Place() keeps the host tensor itself.
    ModelConfig local = c;
    local.rope_theta = c.rope_local_theta;
    local.rope_scaling = {};
    Tensor local_cos = Tensor::EmptyHost(DType::kF32, cos.shape());
    Tensor local_sin = Tensor::EmptyHost(DType::kF32, sin.shape());
    ComputeRotaryTables(local, local_cos, local_sin);
    GB_ASSIGN_OR_RETURN(w.rope_cos_local, r.Place(local_cos));
    GB_ASSIGN_OR_RETURN(w.rope_sin_local, r.Place(local_sin));
  }
  return absl::OkStatus();
}

// GPT-NeoX's query_key_value rows are grouped by head ([head][q, k, v][d_head]); the canonical
// layout is all q rows, then all k, then all v. Works on weights [3·H·Dh, d] and biases [3·H·Dh].
Tensor DeinterleaveQkvByHead(const Tensor& fused, int64_t heads, int64_t d_head) {
  const int64_t row_bytes = fused.nbytes() / fused.dim(0);
  Tensor out = Tensor::EmptyHost(fused.dtype(), fused.shape());
  const auto* src = static_cast<const std::byte*>(fused.raw_data());
  auto* dst = static_cast<std::byte*>(out.raw_data());
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t part = 0; part < 3; ++part) {
      const int64_t from = (h * 3 + part) * d_head, to = (part * heads + h) * d_head;
      std::memcpy(dst + to * row_bytes, src + from * row_bytes, d_head * row_bytes);
    }
  }
  return out;
}

absl::StatusOr<ModelWeights> LoadGptNeox(const ModelConfig& c, const WeightReader& r) {
  ModelWeights w;
  const int64_t d = c.d_model, m = c.d_mlp, qkv_rows = 3 * c.n_heads * c.d_head;
  GB_ASSIGN_OR_RETURN(w.embed, r.Get("embed_in.weight", {c.vocab_size, d}));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = absl::StrCat("layers.", l, ".");
    BlockWeights b;
    GB_ASSIGN_OR_RETURN(b.ln1_w, r.Get(p + "input_layernorm.weight", {d}));
    GB_ASSIGN_OR_RETURN(b.ln1_b, r.Get(p + "input_layernorm.bias", {d}));
    GB_ASSIGN_OR_RETURN(b.ln2_w, r.Get(p + "post_attention_layernorm.weight", {d}));
    GB_ASSIGN_OR_RETURN(b.ln2_b, r.Get(p + "post_attention_layernorm.bias", {d}));
    GB_ASSIGN_OR_RETURN(Tensor qkv, r.GetHost(p + "attention.query_key_value.weight", {qkv_rows, d}));
    GB_ASSIGN_OR_RETURN(b.qkv_w, r.Place(DeinterleaveQkvByHead(qkv, c.n_heads, c.d_head)));
    if (c.qkv_bias) {
      GB_ASSIGN_OR_RETURN(Tensor qkv_b, r.GetHost(p + "attention.query_key_value.bias", {qkv_rows}));
      GB_ASSIGN_OR_RETURN(b.qkv_b, r.Place(DeinterleaveQkvByHead(qkv_b, c.n_heads, c.d_head)));
    }
    GB_ASSIGN_OR_RETURN(b.o_w, r.Get(p + "attention.dense.weight", {d, d}));
    GB_ASSIGN_OR_RETURN(b.o_b, r.GetIf(c.o_bias, p + "attention.dense.bias", {d}));
    GB_ASSIGN_OR_RETURN(b.in_w, r.Get(p + "mlp.dense_h_to_4h.weight", {m, d}));
    GB_ASSIGN_OR_RETURN(b.in_b, r.Get(p + "mlp.dense_h_to_4h.bias", {m}));
    GB_ASSIGN_OR_RETURN(b.out_w, r.Get(p + "mlp.dense_4h_to_h.weight", {d, m}));
    GB_ASSIGN_OR_RETURN(b.out_b, r.Get(p + "mlp.dense_4h_to_h.bias", {d}));
    w.blocks.push_back(std::move(b));
  }
  GB_ASSIGN_OR_RETURN(w.ln_final_w, r.Get("final_layer_norm.weight", {d}));
  GB_ASSIGN_OR_RETURN(w.ln_final_b, r.Get("final_layer_norm.bias", {d}));
  GB_RETURN_IF_ERROR(ReadUnembed(c, r, "embed_out.weight", w));
  GB_RETURN_IF_ERROR(PlaceRotaryTables(c, r, w));
  return w;
}

// GPT-J: one ln_1 feeds attention and the MLP (ln2 gets the same weights, as in
// TransformerLens), q/k/v without biases fused here, an lm_head with a bias.
absl::StatusOr<ModelWeights> LoadGptj(const ModelConfig& c, const WeightReader& r) {
  ModelWeights w;
  const int64_t d = c.d_model, m = c.d_mlp, rows = c.n_heads * c.d_head;
  GB_ASSIGN_OR_RETURN(w.embed, r.Get("wte.weight", {c.vocab_size, d}));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = absl::StrCat("h.", l, ".");
    BlockWeights b;
    GB_ASSIGN_OR_RETURN(b.ln1_w, r.Get(p + "ln_1.weight", {d}));
    GB_ASSIGN_OR_RETURN(b.ln1_b, r.Get(p + "ln_1.bias", {d}));
    b.ln2_w = b.ln1_w;
    b.ln2_b = b.ln1_b;
    GB_ASSIGN_OR_RETURN(Tensor q, r.GetHost(p + "attn.q_proj.weight", {rows, d}));
    GB_ASSIGN_OR_RETURN(Tensor k, r.GetHost(p + "attn.k_proj.weight", {rows, d}));
    GB_ASSIGN_OR_RETURN(Tensor v, r.GetHost(p + "attn.v_proj.weight", {rows, d}));
    GB_ASSIGN_OR_RETURN(b.qkv_w, r.Place(ConcatRows({&q, &k, &v})));
    GB_ASSIGN_OR_RETURN(b.o_w, r.Get(p + "attn.out_proj.weight", {d, rows}));
    GB_ASSIGN_OR_RETURN(b.in_w, r.Get(p + "mlp.fc_in.weight", {m, d}));
    GB_ASSIGN_OR_RETURN(b.in_b, r.Get(p + "mlp.fc_in.bias", {m}));
    GB_ASSIGN_OR_RETURN(b.out_w, r.Get(p + "mlp.fc_out.weight", {d, m}));
    GB_ASSIGN_OR_RETURN(b.out_b, r.Get(p + "mlp.fc_out.bias", {d}));
    w.blocks.push_back(std::move(b));
  }
  GB_ASSIGN_OR_RETURN(w.ln_final_w, r.Get("ln_f.weight", {d}));
  GB_ASSIGN_OR_RETURN(w.ln_final_b, r.Get("ln_f.bias", {d}));
  GB_RETURN_IF_ERROR(ReadUnembed(c, r, "lm_head.weight", w));
  GB_ASSIGN_OR_RETURN(w.unembed_b, r.Get("lm_head.bias", {c.vocab_size}));
  GB_RETURN_IF_ERROR(PlaceRotaryTables(c, r, w));
  return w;
}

absl::StatusOr<ModelWeights> LoadLlama(const ModelConfig& c, const WeightReader& r) {
  ModelWeights w;
  const int64_t d = c.d_model, m = c.d_mlp;
  const int64_t q_rows = c.n_heads * c.d_head, kv_rows = c.n_kv_heads * c.d_head;
  const bool fused = c.model_type == "phi3";
  GB_ASSIGN_OR_RETURN(w.embed, r.Get("embed_tokens.weight", {c.vocab_size, d}));
  // q, k and v are read on the host and fused into one matrix for a single GEMM per layer.
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = absl::StrCat("layers.", l, ".");
    BlockWeights b;
    const bool offset = c.norm_weight_offset;
    // HF's names by placement: OLMo-2's post_attention_layernorm and post_feedforward_layernorm
    // normalise the attention and MLP outputs; Gemma-2 has input_layernorm and
    // pre_feedforward_layernorm before, post_attention_layernorm and post_feedforward_layernorm
    // after; Llama's post_attention_layernorm is the norm before its MLP.
    auto norm = [&](const char* name) { return r.GetNorm(p + name, d, offset); };
    if (c.norm_placement == NormPlacement::kPost) {
      GB_ASSIGN_OR_RETURN(b.ln1_w, norm("post_attention_layernorm.weight"));
      GB_ASSIGN_OR_RETURN(b.ln2_w, norm("post_feedforward_layernorm.weight"));
    } else if (c.norm_placement == NormPlacement::kPreAndPost) {
      GB_ASSIGN_OR_RETURN(b.ln1_w, norm("input_layernorm.weight"));
      GB_ASSIGN_OR_RETURN(b.ln1_post_w, norm("post_attention_layernorm.weight"));
      GB_ASSIGN_OR_RETURN(b.ln2_w, norm("pre_feedforward_layernorm.weight"));
      GB_ASSIGN_OR_RETURN(b.ln2_post_w, norm("post_feedforward_layernorm.weight"));
    } else {
      GB_ASSIGN_OR_RETURN(b.ln1_w, norm("input_layernorm.weight"));
      GB_ASSIGN_OR_RETURN(b.ln2_w, norm("post_attention_layernorm.weight"));
    }
    if (fused) {
      // Phi-3's qkv_proj already has the canonical rows: q, then k, then v.
      GB_ASSIGN_OR_RETURN(b.qkv_w, r.Get(p + "self_attn.qkv_proj.weight", {q_rows + 2 * kv_rows, d}));
    } else {
      GB_ASSIGN_OR_RETURN(Tensor q, r.GetHost(p + "self_attn.q_proj.weight", {q_rows, d}));
      GB_ASSIGN_OR_RETURN(Tensor k, r.GetHost(p + "self_attn.k_proj.weight", {kv_rows, d}));
      GB_ASSIGN_OR_RETURN(Tensor v, r.GetHost(p + "self_attn.v_proj.weight", {kv_rows, d}));
      GB_ASSIGN_OR_RETURN(b.qkv_w, r.Place(ConcatRows({&q, &k, &v})));
    }
    if (c.qkv_bias) {
      GB_ASSIGN_OR_RETURN(Tensor qb, r.GetHost(p + "self_attn.q_proj.bias", {q_rows}));
      GB_ASSIGN_OR_RETURN(Tensor kb, r.GetHost(p + "self_attn.k_proj.bias", {kv_rows}));
      GB_ASSIGN_OR_RETURN(Tensor vb, r.GetHost(p + "self_attn.v_proj.bias", {kv_rows}));
      GB_ASSIGN_OR_RETURN(b.qkv_b, r.Place(ConcatRows({&qb, &kb, &vb})));
    }
    if (c.qk_norm != QkNorm::kNone) {
      const bool whole = c.qk_norm == QkNorm::kWhole;
      GB_ASSIGN_OR_RETURN(b.q_norm_w, r.GetNorm(p + "self_attn.q_norm.weight",
                                                whole ? q_rows : c.d_head, c.norm_weight_offset));
      GB_ASSIGN_OR_RETURN(b.k_norm_w, r.GetNorm(p + "self_attn.k_norm.weight",
                                                whole ? kv_rows : c.d_head, c.norm_weight_offset));
    }
    GB_ASSIGN_OR_RETURN(b.o_w, r.Get(p + "self_attn.o_proj.weight", {d, q_rows}));
    GB_ASSIGN_OR_RETURN(b.o_b, r.GetIf(c.o_bias, p + "self_attn.o_proj.bias", {d}));
    if (fused) {
      // Phi-3's gate_up_proj: the gate's rows, then up's.
      GB_ASSIGN_OR_RETURN(Tensor gate_up, r.GetHost(p + "mlp.gate_up_proj.weight", {2 * m, d}));
      GB_ASSIGN_OR_RETURN(b.gate_w, r.Place(SliceRows(gate_up, 0, m)));
      GB_ASSIGN_OR_RETURN(b.in_w, r.Place(SliceRows(gate_up, m, m)));
    } else {
      GB_ASSIGN_OR_RETURN(b.gate_w, r.Get(p + "mlp.gate_proj.weight", {m, d}));
      GB_ASSIGN_OR_RETURN(b.in_w, r.Get(p + "mlp.up_proj.weight", {m, d}));
    }
    GB_ASSIGN_OR_RETURN(b.gate_b, r.GetIf(c.mlp_bias, p + "mlp.gate_proj.bias", {m}));
    GB_ASSIGN_OR_RETURN(b.in_b, r.GetIf(c.mlp_bias, p + "mlp.up_proj.bias", {m}));
    GB_ASSIGN_OR_RETURN(b.out_w, r.Get(p + "mlp.down_proj.weight", {d, m}));
    GB_ASSIGN_OR_RETURN(b.out_b, r.GetIf(c.mlp_bias, p + "mlp.down_proj.bias", {d}));
    w.blocks.push_back(std::move(b));
  }
  GB_ASSIGN_OR_RETURN(w.ln_final_w, r.GetNorm("norm.weight", d, c.norm_weight_offset));
  GB_RETURN_IF_ERROR(ReadUnembed(c, r, "lm_head.weight", w));
  GB_RETURN_IF_ERROR(PlaceRotaryTables(c, r, w));
  return w;
}

}  // namespace

void ComputeRotaryTables(const ModelConfig& c, Tensor& cos, Tensor& sin) {
  // Mirrors transformers' LlamaRotaryEmbedding: inv_freq and the angles are f32 computations
  // there (even for f64 models), so they are here too; only cos/sin of the f32 angle are taken in
  // double and rounded once.
  const int64_t half = c.rotary_dim / 2;
  std::vector<float> inv_freq(half);
  const float base = static_cast<float>(c.rope_theta);
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(c.rotary_dim);
    inv_freq[i] = 1.0f / std::pow(base, exponent);
  }
  const RopeScaling& rs = c.rope_scaling;
  const float factor = static_cast<float>(rs.factor);
  if (rs.kind == RopeScaling::Kind::kLinear) {
    for (float& f : inv_freq) f /= factor;
  } else if (rs.kind == RopeScaling::Kind::kLlama3) {
    const float old_context = static_cast<float>(rs.original_max_position_embeddings);
    const float low = static_cast<float>(rs.low_freq_factor);
    const float high = static_cast<float>(rs.high_freq_factor);
    const float low_freq_wavelen = old_context / low;
    const float high_freq_wavelen = old_context / high;
    const float two_pi = static_cast<float>(2 * M_PI);
    for (float& f : inv_freq) {
      const float wavelen = two_pi / f;
      const float scaled = wavelen > low_freq_wavelen ? f / factor : f;
      if (wavelen < high_freq_wavelen || wavelen > low_freq_wavelen) {
        f = scaled;
      } else {
        const float smooth = (old_context / wavelen - low) / (high - low);
        f = (1 - smooth) * scaled / factor + smooth * scaled;
      }
    }
  }
  for (int64_t pos = 0; pos < c.n_ctx; ++pos) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(pos) * inv_freq[i];
      cos.data<float>()[pos * half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin.data<float>()[pos * half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
}

absl::StatusOr<ModelWeights> LoadModelWeights(const ModelConfig& config,
                                              const SafetensorsCheckpoint& checkpoint,
                                              Backend& backend, DType dtype) {
  if (config.model_type == "gpt2") {
    return LoadGpt2(config, WeightReader(checkpoint, {"", "transformer."}, backend, dtype));
  }
  if (config.model_type == "gptj") {
    // GPTJForCausalLM saves "transformer.*" plus "lm_head.weight" and "lm_head.bias".
    return LoadGptj(config, WeightReader(checkpoint, {"transformer.", ""}, backend, dtype));
  }
  if (config.model_type == "gpt_neox") {
    // GPTNeoXForCausalLM saves "gpt_neox.*" plus "embed_out.weight".
    return LoadGptNeox(config, WeightReader(checkpoint, {"gpt_neox.", ""}, backend, dtype));
  }
  if (config.text_tower) {
    // Gemma3ForConditionalGeneration: transformers saves the text tower as
    // "language_model.model.*" (and holds it as "model.language_model.*"); lm_head is tied.
    return LoadLlama(config, WeightReader(checkpoint, {"language_model.model.", "model.language_model."},
                                          backend, dtype));
  }
  // Llama-family checkpoints: LlamaForCausalLM saves "model.*" plus "lm_head.weight"; a bare
  // LlamaModel saves the same names without "model.".
  return LoadLlama(config, WeightReader(checkpoint, {"model.", ""}, backend, dtype));
}

std::vector<const Tensor*> LinearWeights(const ModelWeights& w) {
  std::vector<const Tensor*> out;
  for (const BlockWeights& b : w.blocks) {
    for (const Tensor* t : {&b.qkv_w, &b.o_w, &b.in_w, &b.gate_w, &b.out_w}) {
      if (t->defined()) out.push_back(t);
    }
  }
  out.push_back(&w.unembed);
  return out;
}

int64_t ModelWeightsBytes(const ModelWeights& w) {
  std::set<const void*> seen;
  int64_t bytes = 0;
  auto count = [&](const Tensor& t) {
    if (t.defined() && seen.insert(t.raw_data()).second) bytes += static_cast<int64_t>(t.nbytes());
  };
  for (const Tensor* t : {&w.embed, &w.pos_embed, &w.ln_final_w, &w.ln_final_b, &w.unembed,
                          &w.unembed_b, &w.rope_cos, &w.rope_sin, &w.rope_cos_local,
                          &w.rope_sin_local}) {
    count(*t);
  }
  for (const BlockWeights& b : w.blocks) {
    for (const Tensor* t : {&b.ln1_w, &b.ln1_b, &b.qkv_w, &b.qkv_b, &b.q_norm_w, &b.k_norm_w,
                            &b.o_w, &b.o_b, &b.ln2_w, &b.ln2_b, &b.ln1_post_w, &b.ln2_post_w,
                            &b.in_w, &b.in_b, &b.gate_w, &b.gate_b, &b.out_w, &b.out_b}) {
      count(*t);
    }
  }
  return bytes;
}

}  // namespace glassbox
