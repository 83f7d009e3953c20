#include "server/engine/sae/sae.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "kernels/cpu/gemm.h"
#include "server/engine/sae/sae_stats.h"

namespace glassbox {
namespace {

absl::Status Invalid(absl::string_view message) { return absl::InvalidArgumentError(message); }

bool IsHostF32(const Tensor& t) {
  return t.defined() && t.device() == Device::kCpu && t.dtype() == DType::kF32;
}

// Rows are independent; parallelise loops over them when there is enough work per thread.
constexpr int64_t kParallelMinWork = 1 << 15;

// Top-k of a row: min-heap ordering, worst on top. "Better" = larger value, then lower index.
struct Candidate {
  float value;
  int32_t index;
};
inline bool Better(const Candidate& a, const Candidate& b) {
  return a.value > b.value || (a.value == b.value && a.index < b.index);
}

// The k best (value, index) of row[0..n) among those passing `keep`, best first.
template <typename Keep>
void TopK(const float* row, int64_t n, int64_t k, Keep keep, std::vector<Candidate>& heap) {
  heap.clear();
  if (k <= 0) return;
  // `bar`: what a value must beat to enter (the heap's worst once full). Testing it first keeps
  // the common case, a value that does not make the cut, one well-predicted branch.
  float bar = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    const float v = row[j];
    if (!(v > bar) || !keep(v)) continue;
    if (static_cast<int64_t>(heap.size()) < k) {
      heap.push_back({v, static_cast<int32_t>(j)});
      std::push_heap(heap.begin(), heap.end(), Better);
    } else {  // j ascends, so an equal value never wins: v > bar is the whole test
      std::pop_heap(heap.begin(), heap.end(), Better);
      heap.back() = {v, static_cast<int32_t>(j)};
      std::push_heap(heap.begin(), heap.end(), Better);
    }
    if (static_cast<int64_t>(heap.size()) == k) bar = heap.front().value;
  }
  std::sort_heap(heap.begin(), heap.end(), Better);  // best first
}

}  // namespace

// ---- hooks ----

absl::string_view SaeHookName(SaeHook hook) {
  switch (hook) {
    case SaeHook::kInput: return "hook_sae_input";
    case SaeHook::kActsPre: return "hook_sae_acts_pre";
    case SaeHook::kActsPost: return "hook_sae_acts_post";
    case SaeHook::kRecons: return "hook_sae_recons";
    case SaeHook::kError: return "hook_sae_error";
    case SaeHook::kOutput: return "hook_sae_output";
  }
  return "?";
}

std::string SaeHookPath(absl::string_view hook_name, SaeHook hook) {
  return absl::StrCat(hook_name, ".", SaeHookName(hook));
}

// ---- construction ----

absl::StatusOr<std::unique_ptr<Sae>> Sae::Create(SaeConfig config, SaeWeights weights) {
  const int64_t d_in = config.d_in, d_sae = config.d_sae;
  if (d_in <= 0 || d_sae <= 0 || d_sae > INT32_MAX) {
    return Invalid(absl::StrCat("SAE sizes d_in = ", d_in, ", d_sae = ", d_sae,
                                " must be positive (d_sae < 2^31)"));
  }
  const SaeArchitecture arch = config.architecture;
  const bool gated = arch == SaeArchitecture::kGated;
  struct Param {
    const char* name;
    Tensor* tensor;
    Shape shape;
    bool wanted;
  };
  Param params[] = {
      {"W_enc", &weights.W_enc, {d_in, d_sae}, true},
      {"W_dec", &weights.W_dec, {d_sae, d_in}, true},
      {"b_dec", &weights.b_dec, {d_in}, true},
      {"b_enc", &weights.b_enc, {d_sae}, !gated},
      {"threshold", &weights.threshold, {d_sae}, arch == SaeArchitecture::kJumpRelu},
      {"b_gate", &weights.b_gate, {d_sae}, gated},
      {"r_mag", &weights.r_mag, {d_sae}, gated},
      {"b_mag", &weights.b_mag, {d_sae}, gated},
  };
  std::string needed;
  for (const Param& p : params) {
    if (p.wanted) absl::StrAppend(&needed, needed.empty() ? "" : ", ", p.name);
  }
  const absl::string_view arch_name = SaeArchitectureName(arch);
  for (const Param& p : params) {
    if (!p.tensor->defined()) {
      if (p.wanted) {
        return Invalid(absl::StrCat("missing tensor \"", p.name, "\": ", arch_name,
                                    " SAEs need ", needed));
      }
      continue;
    }
    if (!p.wanted) {
      return Invalid(absl::StrCat("unexpected tensor \"", p.name, "\" for a ", arch_name,
                                  " SAE, which has ", needed,
                                  " (is the cfg.json architecture right?)"));
    }
    if (!IsHostF32(*p.tensor)) {
      return Invalid(absl::StrCat("tensor \"", p.name, "\" must be a host f32 tensor, got ",
                                  p.tensor->DebugString()));
    }
    if (p.tensor->shape() != p.shape) {
      return Invalid(absl::StrCat("tensor \"", p.name, "\" has shape ",
                                  ShapeToString(p.tensor->shape()), " but d_in = ", d_in,
                                  ", d_sae = ", d_sae, " need ", ShapeToString(p.shape)));
    }
    const float* v = p.tensor->data<float>();
    const int64_t n = p.tensor->numel();
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(v[i])) {
        return Invalid(absl::StrCat("tensor \"", p.name, "\" holds a non-finite value (", v[i],
                                    ") at flat index ", i));
      }
    }
  }

  if (config.normalization == SaeNormalization::kExpectedAverageOnlyIn) {
    if (config.norm_scaling_factor.has_value()) {
      const double s = *config.norm_scaling_factor;
      if (!std::isfinite(s) || s <= 0) {
        return Invalid(absl::StrCat("norm scaling factor ", s, " must be finite and positive"));
      }
      // sae_lens's fold_activation_norm_scaling_factor, in f32 as it does it.
      const float sf = static_cast<float>(s);
      for (float& w : weights.W_enc.span<float>()) w *= sf;
      for (float& w : weights.W_dec.span<float>()) w /= sf;
      for (float& w : weights.b_dec.span<float>()) w /= sf;
    } else {
      config.warnings.push_back(
          "normalize_activations is expected_average_only_in but no scaling factor was given "
          "(load option or activation_scaler.json): the SAE runs unscaled, as sae_lens does, "
          "which is right only if the factor was already folded into the weights");
    }
  }

  auto sae = std::unique_ptr<Sae>(new Sae(std::move(config), std::move(weights)));
  if (gated) {
    const float* r = sae->weights_.r_mag.data<float>();
    sae->exp_r_mag_.resize(d_sae);
    for (int64_t i = 0; i < d_sae; ++i) sae->exp_r_mag_[i] = std::exp(r[i]);
  }
  if (arch == SaeArchitecture::kTopK && sae->config_.rescale_acts_by_decoder_norm) {
    sae->decoder_norm_.resize(d_sae);
    sae->inv_decoder_norm_.resize(d_sae);
    const float* w = sae->weights_.W_dec.data<float>();
    for (int64_t i = 0; i < d_sae; ++i) {
      double ss = 0.0;
      for (int64_t j = 0; j < d_in; ++j) ss += static_cast<double>(w[i * d_in + j]) * w[i * d_in + j];
      const float norm = static_cast<float>(std::sqrt(ss));
      sae->decoder_norm_[i] = norm;
      // A zero decoder row contributes nothing either way; sae_lens would produce 0·inf = NaN.
      sae->inv_decoder_norm_[i] = norm > 0.0f ? 1.0f / norm : 0.0f;
    }
  }
  return sae;
}

int64_t Sae::ResidentBytes() const {
  int64_t bytes = 0;
  for (const Tensor* t : {&weights_.W_enc, &weights_.W_dec, &weights_.b_enc, &weights_.b_dec,
                          &weights_.threshold, &weights_.b_gate, &weights_.r_mag, &weights_.b_mag}) {
    if (t->defined()) bytes += static_cast<int64_t>(t->nbytes());
  }
  bytes += static_cast<int64_t>((exp_r_mag_.size() + decoder_norm_.size() +
                                 inv_decoder_norm_.size()) * sizeof(float));
  return bytes;
}

int64_t Sae::TileRows() const {
  // Bigger tiles read W_enc fewer times per call: 128 MiB of scratch gave 597 tok/s against
  // 529 with 32 MiB at d_in 4096 x d_sae 65536 (bench/sae/sae_encode.sh).
  constexpr int64_t kScratchBytes = 128 << 20;
  return std::clamp<int64_t>(kScratchBytes / (4 * config_.d_sae), 16, 1024);
}

absl::StatusOr<std::pair<int64_t, Shape>> Sae::TokenShape(const Tensor& x) const {
  if (!IsHostF32(x)) {
    return Invalid(absl::StrCat("SAE input must be a host f32 tensor, got ",
                                x.defined() ? x.DebugString() : "an undefined tensor"));
  }
  const Shape& s = x.shape();
  Shape lead;
  if (x.rank() >= 1 && s.back() == d_in()) {
    lead.assign(s.begin(), s.end() - 1);
  } else if (config_.reshape_hook_z && x.rank() >= 2 && s[s.size() - 1] * s[s.size() - 2] == d_in()) {
    lead.assign(s.begin(), s.end() - 2);
  } else {
    return Invalid(absl::StrCat(
        "SAE input has shape ", ShapeToString(s), " but this SAE reads d_in = ", d_in(),
        config_.reshape_hook_z ? " values per token ([..., d_in] or [..., n_heads, d_head] with "
                                 "n_heads * d_head = d_in)"
                               : " values per token ([..., d_in])"));
  }
  return std::make_pair(NumElements(lead), std::move(lead));
}

// ---- row kernels ----

void Sae::PrepareInput(const float* x, int64_t n, float* sae_in, float* scale,
                       float* shift) const {
  const int64_t d = d_in();
  const float* b_dec = weights_.b_dec.data<float>();
  const bool sub_b_dec = config_.apply_b_dec_to_input;
  const SaeNormalization norm = config_.normalization;
#pragma omp parallel for if (n * d >= kParallelMinWork)
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * d;
    float* o = sae_in + r * d;
    if (norm == SaeNormalization::kConstantNormRescale) {
      double ss = 0.0;
      for (int64_t j = 0; j < d; ++j) ss += static_cast<double>(xr[j]) * xr[j];
      const float x_norm = static_cast<float>(std::sqrt(ss));
      // sae_lens: c = sqrt(d_in) / ‖x‖ in f32. A zero x would give inf and then NaN downstream;
      // its reconstruction is the same for any c, so use 1.
      const float c = x_norm > 0.0f ? static_cast<float>(std::sqrt(static_cast<double>(d))) / x_norm
                                    : 1.0f;
      for (int64_t j = 0; j < d; ++j) o[j] = xr[j] * c;
      scale[r] = c;
    } else if (norm == SaeNormalization::kLayerNorm) {
      double sum = 0.0;
      for (int64_t j = 0; j < d; ++j) sum += xr[j];
      const float mu = static_cast<float>(sum / d);
      double csum = 0.0;
      for (int64_t j = 0; j < d; ++j) {
        o[j] = xr[j] - mu;
        csum += o[j];
      }
      const double cmean = csum / d;
      double var = 0.0;
      for (int64_t j = 0; j < d; ++j) var += (o[j] - cmean) * (o[j] - cmean);
      // torch.std: unbiased (n − 1); sae_lens divides by std + 1e-5 and multiplies back by std.
      const float std_dev = d > 1 ? static_cast<float>(std::sqrt(var / (d - 1))) : 0.0f;
      const float denom = std_dev + 1e-5f;
      for (int64_t j = 0; j < d; ++j) o[j] = o[j] / denom;
      scale[r] = std_dev;
      shift[r] = mu;
    } else {
      std::memcpy(o, xr, d * sizeof(float));
    }
    if (sub_b_dec) {
      for (int64_t j = 0; j < d; ++j) o[j] -= b_dec[j];
    }
  }
}

void Sae::EncodeRows(const float* sae_in, int64_t n, float* pre, float* post) const {
  if (n == 0) return;
  const int64_t d = d_in(), f = d_sae();
  // Shapes were checked at load; oneDNN fails only on invalid arguments.
  const absl::Status gemm = cpu::Sgemm(/*trans_b=*/false, n, f, d, 1.0f, sae_in, d,
                                       weights_.W_enc.data<float>(), f, 0.0f, pre, f);
  GB_CHECK(gemm.ok(), "%s", gemm.ToString().c_str());
  const SaeArchitecture arch = config_.architecture;
  const float* b_enc = weights_.b_enc.defined() ? weights_.b_enc.data<float>() : nullptr;
  switch (arch) {
    case SaeArchitecture::kStandard:
#pragma omp parallel for if (n * f >= kParallelMinWork)
      for (int64_t r = 0; r < n; ++r) {
        float* p = pre + r * f;
        float* q = post + r * f;
#pragma omp simd
        for (int64_t j = 0; j < f; ++j) {
          const float v = p[j] + b_enc[j];
          p[j] = v;
          q[j] = std::max(v, 0.0f);
        }
      }
      return;
    case SaeArchitecture::kJumpRelu: {
      const float* theta = weights_.threshold.data<float>();
#pragma omp parallel for if (n * f >= kParallelMinWork)
      for (int64_t r = 0; r < n; ++r) {
        float* p = pre + r * f;
        float* q = post + r * f;
#pragma omp simd
        for (int64_t j = 0; j < f; ++j) {
          const float v = p[j] + b_enc[j];
          p[j] = v;
          q[j] = v > std::max(theta[j], 0.0f) ? v : 0.0f;  // ReLU(v) · 1[v > θ]
        }
      }
      return;
    }
    case SaeArchitecture::kGated: {
      // x'(W_enc ⊙ exp(r_mag)) = (x'W_enc) ⊙ exp(r_mag): one GEMM serves both paths.
      const float* b_gate = weights_.b_gate.data<float>();
      const float* b_mag = weights_.b_mag.data<float>();
      const float* er = exp_r_mag_.data();
#pragma omp parallel for if (n * f >= kParallelMinWork)
      for (int64_t r = 0; r < n; ++r) {
        float* p = pre + r * f;
        float* q = post + r * f;
#pragma omp simd
        for (int64_t j = 0; j < f; ++j) {
          const float lin = p[j];
          const float mag = lin * er[j] + b_mag[j];
          p[j] = mag;
          q[j] = lin + b_gate[j] > 0.0f ? std::max(mag, 0.0f) : 0.0f;
        }
      }
      return;
    }
    case SaeArchitecture::kTopK: {
      const int64_t k = config_.k;
      const float* norm = decoder_norm_.empty() ? nullptr : decoder_norm_.data();
#pragma omp parallel if (n * f >= kParallelMinWork)
      {
        std::vector<Candidate> heap;
        heap.reserve(k);
#pragma omp for
        for (int64_t r = 0; r < n; ++r) {
          float* p = pre + r * f;
          float* q = post + r * f;
          // hook_sae_acts_pre is before the decoder-norm rescaling.
#pragma omp simd
          for (int64_t j = 0; j < f; ++j) {
            const float v = p[j] + b_enc[j];
            p[j] = v;
            q[j] = v;
          }
          if (norm) {
#pragma omp simd
            for (int64_t j = 0; j < f; ++j) q[j] *= norm[j];
          }
          TopK(q, f, k, [](float) { return true; }, heap);
          std::fill(q, q + f, 0.0f);
          for (const Candidate& c : heap) q[c.index] = c.value > 0.0f ? c.value : 0.0f;
        }
      }
      return;
    }
  }
}

void Sae::DecodeRows(const float* acts, int64_t n, float* recons) const {
  if (n == 0) return;
  const int64_t d = d_in(), f = d_sae();
  const float* w_dec = weights_.W_dec.data<float>();
  const float* b_dec = weights_.b_dec.data<float>();
  const float* inv_norm = inv_decoder_norm_.empty() ? nullptr : inv_decoder_norm_.data();
  int64_t nnz = 0;
#pragma omp parallel for reduction(+ : nnz) if (n * f >= kParallelMinWork)
  for (int64_t i = 0; i < n * f; ++i) nnz += acts[i] != 0.0f;

  if (nnz * 8 > n * f) {
    // Dense enough that a GEMM beats gathering rows of W_dec.
    std::vector<float> scaled;
    const float* a = acts;
    if (inv_norm) {
      scaled.resize(n * f);
      for (int64_t r = 0; r < n; ++r) {
        for (int64_t j = 0; j < f; ++j) scaled[r * f + j] = acts[r * f + j] * inv_norm[j];
      }
      a = scaled.data();
    }
    const absl::Status gemm =
        cpu::Sgemm(/*trans_b=*/false, n, d, f, 1.0f, a, f, w_dec, d, 0.0f, recons, d);
    GB_CHECK(gemm.ok(), "%s", gemm.ToString().c_str());
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t j = 0; j < d; ++j) recons[r * d + j] += b_dec[j];
    }
    return;
  }
#pragma omp parallel for if (nnz * d >= kParallelMinWork)
  for (int64_t r = 0; r < n; ++r) {
    const float* a = acts + r * f;
    float* o = recons + r * d;
    std::fill(o, o + d, 0.0f);
    for (int64_t i = 0; i < f; ++i) {
      if (a[i] == 0.0f) continue;
      const float c = inv_norm ? a[i] * inv_norm[i] : a[i];
      const float* w = w_dec + i * d;
      for (int64_t j = 0; j < d; ++j) o[j] += c * w[j];
    }
    for (int64_t j = 0; j < d; ++j) o[j] += b_dec[j];
  }
}

void Sae::DecodeSparseRows(const SparseActs& acts, int64_t r0, int64_t n, float* recons) const {
  const int64_t d = d_in();
  const float* w_dec = weights_.W_dec.data<float>();
  const float* b_dec = weights_.b_dec.data<float>();
  const float* inv_norm = inv_decoder_norm_.empty() ? nullptr : inv_decoder_norm_.data();
  const int64_t work = (acts.row_offsets[r0 + n] - acts.row_offsets[r0]) * d;
#pragma omp parallel for if (work >= kParallelMinWork)
  for (int64_t r = 0; r < n; ++r) {
    float* o = recons + r * d;
    std::fill(o, o + d, 0.0f);
    for (int64_t e = acts.row_offsets[r0 + r]; e < acts.row_offsets[r0 + r + 1]; ++e) {
      const int32_t i = acts.indices[e];
      const float c = inv_norm ? acts.values[e] * inv_norm[i] : acts.values[e];
      if (c == 0.0f) continue;
      const float* w = w_dec + static_cast<int64_t>(i) * d;
      for (int64_t j = 0; j < d; ++j) o[j] += c * w[j];
    }
    for (int64_t j = 0; j < d; ++j) o[j] += b_dec[j];
  }
}

void Sae::UndoNorm(float* rows, int64_t n, const float* scale, const float* shift) const {
  const int64_t d = d_in();
  if (config_.normalization == SaeNormalization::kConstantNormRescale) {
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t j = 0; j < d; ++j) rows[r * d + j] /= scale[r];
    }
  } else if (config_.normalization == SaeNormalization::kLayerNorm) {
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t j = 0; j < d; ++j) rows[r * d + j] = rows[r * d + j] * scale[r] + shift[r];
    }
  }
}

absl::Status Sae::CheckNormState(const SaeNormState* norm, int64_t rows) const {
  if (!HasRuntimeNorm()) return absl::OkStatus();
  const absl::string_view mode = SaeNormalizationName(config_.normalization);
  if (norm == nullptr || norm->normalization != config_.normalization) {
    return Invalid(absl::StrCat(
        "this SAE normalises each input token (normalize_activations = ", mode,
        "), so decoding needs the per-token norm state of the input the activations came from: "
        "pass the SaeNormState that Encode filled, or use Reconstruct / Splice"));
  }
  const size_t want = static_cast<size_t>(rows);
  if (norm->scale.size() != want ||
      (config_.normalization == SaeNormalization::kLayerNorm && norm->shift.size() != want)) {
    return Invalid(absl::StrCat("the norm state holds ", norm->scale.size(),
                                " tokens but the activations have ", rows));
  }
  return absl::OkStatus();
}

// ---- public operations ----

absl::StatusOr<Tensor> Sae::Encode(const Tensor& x, SaeNormState* norm) const {
  GB_ASSIGN_OR_RETURN(auto token_shape, TokenShape(x));
  auto [rows, lead] = std::move(token_shape);
  Shape out_shape = lead;
  out_shape.push_back(d_sae());
  Tensor out = Tensor::EmptyHost(DType::kF32, out_shape);
  std::vector<float> scale(HasRuntimeNorm() ? rows : 0), shift(scale.size());
  const int64_t tile = TileRows();
  std::vector<float> sae_in(std::min(tile, rows) * d_in());
  for (int64_t r0 = 0; r0 < rows; r0 += tile) {
    const int64_t n = std::min(tile, rows - r0);
    PrepareInput(x.data<float>() + r0 * d_in(), n, sae_in.data(), scale.data() + r0,
                 shift.data() + r0);
    float* acts = out.data<float>() + r0 * d_sae();
    EncodeRows(sae_in.data(), n, acts, acts);
  }
  if (norm != nullptr) {
    norm->normalization = config_.normalization;
    norm->scale = std::move(scale);
    norm->shift = config_.normalization == SaeNormalization::kLayerNorm ? std::move(shift)
                                                                        : std::vector<float>{};
  }
  return out;
}

absl::StatusOr<SparseActs> Sae::EncodeSparse(const Tensor& x, const SparseEncodeOptions& options,
                                             SaeNormState* norm) const {
  if (options.top_k < 0) {
    return Invalid(absl::StrCat("top_k = ", options.top_k, " must be >= 0 (0: every nonzero)"));
  }
  GB_ASSIGN_OR_RETURN(auto token_shape, TokenShape(x));
  auto [rows, lead] = std::move(token_shape);
  SparseActs out;
  out.leading_shape = lead;
  out.d_sae = d_sae();
  out.row_offsets.assign(1, 0);
  out.row_offsets.reserve(rows + 1);
  std::vector<float> scale(HasRuntimeNorm() ? rows : 0), shift(scale.size());
  const int64_t tile = TileRows(), f = d_sae();
  std::vector<float> sae_in(std::min(tile, rows) * d_in());
  std::vector<float> acts(std::min(tile, rows) * f);
  std::vector<std::vector<Candidate>> row_features(std::min(tile, rows));
  for (int64_t r0 = 0; r0 < rows; r0 += tile) {
    const int64_t n = std::min(tile, rows - r0);
    PrepareInput(x.data<float>() + r0 * d_in(), n, sae_in.data(), scale.data() + r0,
                 shift.data() + r0);
    EncodeRows(sae_in.data(), n, acts.data(), acts.data());
#pragma omp parallel for if (n * f >= kParallelMinWork)
    for (int64_t r = 0; r < n; ++r) {
      const float* a = acts.data() + r * f;
      std::vector<Candidate>& out_row = row_features[r];
      if (options.top_k > 0) {
        TopK(a, f, std::min(options.top_k, f), [](float v) { return v != 0.0f; }, out_row);
      } else {
        // Branch-free compaction: activations are zero or not at random.
        out_row.resize(f);
        int64_t count = 0;
        for (int64_t j = 0; j < f; ++j) {
          out_row[count] = {a[j], static_cast<int32_t>(j)};
          count += a[j] != 0.0f;
        }
        out_row.resize(count);
      }
    }
    for (int64_t r = 0; r < n; ++r) {
      for (const Candidate& c : row_features[r]) {
        out.indices.push_back(c.index);
        out.values.push_back(c.value);
      }
      out.row_offsets.push_back(static_cast<int64_t>(out.indices.size()));
    }
  }
  if (norm != nullptr) {
    norm->normalization = config_.normalization;
    norm->scale = std::move(scale);
    norm->shift = config_.normalization == SaeNormalization::kLayerNorm ? std::move(shift)
                                                                        : std::vector<float>{};
  }
  return out;
}

absl::StatusOr<Tensor> Sae::Decode(const Tensor& acts, const SaeNormState* norm) const {
  if (!IsHostF32(acts) || acts.rank() < 1 || acts.dim(-1) != d_sae()) {
    return Invalid(absl::StrCat("activations to decode must be a host f32 tensor [..., d_sae = ",
                                d_sae(), "], got ",
                                acts.defined() ? acts.DebugString() : "an undefined tensor"));
  }
  const int64_t rows = acts.numel() / d_sae();
  GB_RETURN_IF_ERROR(CheckNormState(norm, rows));
  Shape out_shape(acts.shape().begin(), acts.shape().end() - 1);
  out_shape.push_back(d_in());
  Tensor out = Tensor::EmptyHost(DType::kF32, out_shape);
  const int64_t tile = TileRows();
  for (int64_t r0 = 0; r0 < rows; r0 += tile) {
    const int64_t n = std::min(tile, rows - r0);
    float* o = out.data<float>() + r0 * d_in();
    DecodeRows(acts.data<float>() + r0 * d_sae(), n, o);
    if (HasRuntimeNorm()) {
      UndoNorm(o, n, norm->scale.data() + r0, norm->shift.empty() ? nullptr : norm->shift.data() + r0);
    }
  }
  return out;
}

absl::StatusOr<Tensor> Sae::DecodeSparse(const SparseActs& acts, const SaeNormState* norm) const {
  const int64_t rows = acts.rows();
  if (acts.d_sae != d_sae()) {
    return Invalid(absl::StrCat("sparse activations are over d_sae = ", acts.d_sae,
                                " features but this SAE has ", d_sae()));
  }
  if (rows < 0 || acts.row_offsets.front() != 0 || acts.indices.size() != acts.values.size() ||
      acts.row_offsets.back() != acts.nnz() || NumElements(acts.leading_shape) != rows) {
    return Invalid(absl::StrCat("malformed sparse activations: ", rows, " rows for leading shape ",
                                ShapeToString(acts.leading_shape), ", ", acts.indices.size(),
                                " indices, ", acts.values.size(), " values"));
  }
  for (int64_t r = 0; r < rows; ++r) {
    if (acts.row_offsets[r + 1] < acts.row_offsets[r]) {
      return Invalid(absl::StrCat("malformed sparse activations: row offsets decrease at row ", r));
    }
  }
  for (int64_t e = 0; e < acts.nnz(); ++e) {
    if (acts.indices[e] < 0 || acts.indices[e] >= d_sae()) {
      return Invalid(absl::StrCat("sparse activation feature index ", acts.indices[e],
                                  " is out of range [0, ", d_sae(), ")"));
    }
  }
  GB_RETURN_IF_ERROR(CheckNormState(norm, rows));
  Shape out_shape = acts.leading_shape;
  out_shape.push_back(d_in());
  Tensor out = Tensor::EmptyHost(DType::kF32, out_shape);
  DecodeSparseRows(acts, 0, rows, out.data<float>());
  if (HasRuntimeNorm()) {
    UndoNorm(out.data<float>(), rows, norm->scale.data(),
             norm->shift.empty() ? nullptr : norm->shift.data());
  }
  return out;
}

absl::StatusOr<Tensor> Sae::Reconstruct(const Tensor& x, SaeReconstructionStats* stats) const {
  SpliceOptions options;
  options.compute_stats = stats != nullptr;
  GB_ASSIGN_OR_RETURN(SpliceResult result, Splice(x, options));
  if (stats != nullptr) *stats = result.stats;
  return std::move(result.output);
}

absl::StatusOr<Tensor> Sae::SteeringVector(
    std::span<const std::pair<int32_t, float>> feature_coefficients) const {
  Tensor out = Tensor::ZerosHost(DType::kF32, {d_in()});
  float* o = out.data<float>();
  const float* w_dec = weights_.W_dec.data<float>();
  for (const auto& [feature, c] : feature_coefficients) {
    if (feature < 0 || feature >= d_sae()) {
      return Invalid(absl::StrCat("feature ", feature, " is out of range [0, ", d_sae(), ")"));
    }
    if (!std::isfinite(c)) {
      return Invalid(absl::StrCat("steering coefficient for feature ", feature, " is not finite"));
    }
    const float* w = w_dec + static_cast<int64_t>(feature) * d_in();
    for (int64_t j = 0; j < d_in(); ++j) o[j] += c * w[j];
  }
  return out;
}

}  // namespace glassbox
