#include "server/engine/backward_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "base/status_macros.h"
#include "kernels/cpu/gemm.h"

namespace glassbox::backward {

NormGrads NormBackward(const Tensor& dy, const Tensor& normalized, const Tensor& scale,
                       const Tensor& weight, bool centered) {
  const int64_t d = normalized.dim(-1), rows = normalized.numel() / d;
  NormGrads out{.normalized = Tensor::EmptyHost(DType::kF32, normalized.shape()),
                .scale = Tensor::EmptyHost(DType::kF32, scale.shape()),
                .input = Tensor::EmptyHost(DType::kF32, normalized.shape())};
  const float* g = dy.data<float>();
  const float* xh = normalized.data<float>();
  const float* s = scale.data<float>();
  const float* w = weight.defined() ? weight.data<float>() : nullptr;
  float* gn = out.normalized.data<float>();
  float* gs = out.scale.data<float>();
  float* gx = out.input.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    double mean_gn = 0, mean_gn_xh = 0;
    for (int64_t i = 0; i < d; ++i) {
      const double v = double{g[r * d + i]} * (w != nullptr ? w[i] : 1.0f);
      gn[r * d + i] = static_cast<float>(v);
      mean_gn += v;
      mean_gn_xh += v * xh[r * d + i];
    }
    mean_gn /= d;
    mean_gn_xh /= d;
    // x̂ = c / scale, c the (centered) input: ∂/∂scale = −Σ gn·x̂ / scale; through c (and scale's
    // dependence on c): (gn − x̂ · mean(gn·x̂)) / scale, then centered when c = x − mean(x).
    gs[r] = static_cast<float>(-mean_gn_xh * d / s[r]);
    for (int64_t i = 0; i < d; ++i) {
      const double v =
          double{gn[r * d + i]} - (centered ? mean_gn : 0.0) - double{xh[r * d + i]} * mean_gn_xh;
      gx[r * d + i] = static_cast<float>(v / s[r]);
    }
  }
  return out;
}

double ActivationValue(Activation act, double x) {
  constexpr double kSqrt2OverPi = 0.7978845608028654;
  switch (act) {
    case Activation::kIdentity:
      return x;
    case Activation::kGeluTanh:
      return 0.5 * x * (1 + std::tanh(kSqrt2OverPi * (x + 0.044715 * x * x * x)));
    case Activation::kGeluExact:
      return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case Activation::kGeluQuick:
      return x / (1 + std::exp(-1.702 * x));
    case Activation::kRelu:
      return x > 0 ? x : 0;
    case Activation::kSilu:
      return x / (1 + std::exp(-x));
  }
  return x;
}

double ActivationDerivative(Activation act, double x) {
  constexpr double kSqrt2OverPi = 0.7978845608028654, kInvSqrt2Pi = 0.3989422804014327;
  switch (act) {
    case Activation::kIdentity:
      return 1;
    case Activation::kGeluTanh: {
      const double u = kSqrt2OverPi * (x + 0.044715 * x * x * x);
      const double t = std::tanh(u);
      return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * kSqrt2OverPi * (1 + 3 * 0.044715 * x * x);
    }
    case Activation::kGeluExact:
      return 0.5 * (1 + std::erf(x / std::sqrt(2.0))) + x * kInvSqrt2Pi * std::exp(-0.5 * x * x);
    case Activation::kGeluQuick: {
      const double sig = 1 / (1 + std::exp(-1.702 * x));
      return sig + 1.702 * x * sig * (1 - sig);
    }
    case Activation::kRelu:
      return x > 0 ? 1 : 0;
    case Activation::kSilu: {
      const double sig = 1 / (1 + std::exp(-x));
      return sig * (1 + x * (1 - sig));
    }
  }
  return 0;
}

Tensor ActivationBackward(Activation act, const Tensor& dy, const Tensor& x) {
  Tensor dx = Tensor::EmptyHost(DType::kF32, x.shape());
  const float* g = dy.data<float>();
  const float* xs = x.data<float>();
  float* out = dx.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<float>(g[i] * ActivationDerivative(act, xs[i]));
  }
  return dx;
}

GatedGrads GatedActivationBackward(Activation act, const Tensor& dpost, const Tensor& gate,
                                   const Tensor& linear) {
  GatedGrads out{.gate = Tensor::EmptyHost(DType::kF32, gate.shape()),
                 .linear = Tensor::EmptyHost(DType::kF32, linear.shape())};
  const float* g = dpost.data<float>();
  const float* a = gate.data<float>();
  const float* b = linear.data<float>();
  float* da = out.gate.data<float>();
  float* db = out.linear.data<float>();
  const int64_t n = gate.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    da[i] = static_cast<float>(double{g[i]} * b[i] * ActivationDerivative(act, a[i]));
    db[i] = static_cast<float>(double{g[i]} * ActivationValue(act, a[i]));
  }
  return out;
}

Tensor RotaryBackward(const Tensor& dy, const Tensor& cos, const Tensor& sin, int64_t rotary_dim,
                      bool adjacent_pairs) {
  const int64_t seq = dy.dim(1), heads = dy.dim(2), dh = dy.dim(3), half = rotary_dim / 2;
  const int64_t tokens = dy.dim(0) * seq;
  Tensor dx = Tensor::EmptyHost(DType::kF32, dy.shape());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < tokens; ++i) {
    const float* c = cos.data<float>() + (i % seq) * half;
    const float* s = sin.data<float>() + (i % seq) * half;
    for (int64_t h = 0; h < heads; ++h) {
      const float* g = dy.data<float>() + (i * heads + h) * dh;
      float* o = dx.data<float>() + (i * heads + h) * dh;
      // Forward: (a, b) -> (a c − b s, b c + a s); its transpose: (ga c + gb s, gb c − ga s).
      for (int64_t j = 0; j < half; ++j) {
        const int64_t a = adjacent_pairs ? 2 * j : j, b = adjacent_pairs ? 2 * j + 1 : j + half;
        o[a] = static_cast<float>(double{g[a]} * c[j] + double{g[b]} * s[j]);
        o[b] = static_cast<float>(double{g[b]} * c[j] - double{g[a]} * s[j]);
      }
      for (int64_t j = rotary_dim; j < dh; ++j) o[j] = g[j];
    }
  }
  return dx;
}

absl::StatusOr<AttentionGrads> AttentionBackward(const Tensor& dz, const Tensor& q, const Tensor& k,
                                                 const Tensor& v, const Tensor& pattern,
                                                 double scale, double softcap,
                                                 const AttentionEditsBackward& edits) {
  const int64_t batch = q.dim(0), seq = q.dim(1), heads = q.dim(2), dh = q.dim(3);
  const int64_t kv_heads = k.dim(2), group = heads / kv_heads;
  AttentionGrads out{.pattern = Tensor::EmptyHost(DType::kF32, pattern.shape()),
                     .scores = Tensor::EmptyHost(DType::kF32, pattern.shape()),
                     .q = Tensor::EmptyHost(DType::kF32, q.shape()),
                     .k = Tensor::ZerosHost(DType::kF32, k.shape()),
                     .v = Tensor::ZerosHost(DType::kF32, v.shape())};
  // [b, s, h, i] in a [B, S, heads, Dh] tensor; [b, h, s, t] in a pattern.
  auto at = [&](int64_t b, int64_t s, int64_t h, int64_t n_heads) {
    return ((b * seq + s) * n_heads + h) * dh;
  };
  auto cell = [&](int64_t b, int64_t h, int64_t s) { return ((b * heads + h) * seq + s) * seq; };
  // Query heads in parallel; the kv heads they share are summed after, in head order.
  std::vector<std::vector<double>> dk_parts(batch * heads), dv_parts(batch * heads);

  // z = P v: the gradients at the pattern and at v.
  const float* P = pattern.data<float>();
#pragma omp parallel for schedule(dynamic)
  for (int64_t bh = 0; bh < batch * heads; ++bh) {
    const int64_t b = bh / heads, h = bh % heads, hk = h / group;
    std::vector<double>& dv = dv_parts[bh];
    dv.assign(seq * dh, 0.0);
    for (int64_t s = 0; s < seq; ++s) {
      const float* dzs = dz.data<float>() + at(b, s, h, heads);
      const float* prow = P + cell(b, h, s);
      float* dprow = out.pattern.data<float>() + cell(b, h, s);
      for (int64_t t = 0; t < seq; ++t) {
        const float* vt = v.data<float>() + at(b, t, hk, kv_heads);
        double dp = 0;
        for (int64_t i = 0; i < dh; ++i) dp += double{dzs[i]} * vt[i];
        dprow[t] = static_cast<float>(dp);
        for (int64_t i = 0; i < dh; ++i) dv[t * dh + i] += double{prow[t]} * dzs[i];
      }
    }
  }
  Tensor d_softmax = out.pattern;
  if (edits.through_pattern) {
    GB_ASSIGN_OR_RETURN(d_softmax, edits.through_pattern(out.pattern));
  }

  // P = softmax(S) per query row: dS = P ⊙ (dP − Σ_t P dP), with P the softmax's own output.
  const float* soft =
      (edits.softmax_pattern != nullptr ? *edits.softmax_pattern : pattern).data<float>();
#pragma omp parallel for schedule(dynamic)
  for (int64_t bh = 0; bh < batch * heads; ++bh) {
    const int64_t b = bh / heads, h = bh % heads;
    for (int64_t s = 0; s < seq; ++s) {
      const float* prow = soft + cell(b, h, s);
      const float* dprow = d_softmax.data<float>() + cell(b, h, s);
      float* dsrow = out.scores.data<float>() + cell(b, h, s);
      double weighted = 0;
      for (int64_t t = 0; t < seq; ++t) weighted += double{prow[t]} * dprow[t];
      for (int64_t t = 0; t < seq; ++t) {
        dsrow[t] = static_cast<float>(prow[t] * (dprow[t] - weighted));
      }
    }
  }
  Tensor d_scores = out.scores;
  if (edits.through_scores) {
    GB_ASSIGN_OR_RETURN(d_scores, edits.through_scores(out.scores));
  }

  // S = scale · q · k (through the soft cap: d/dx c·tanh(x/c) = 1 − tanh²(x/c)).
#pragma omp parallel for schedule(dynamic)
  for (int64_t bh = 0; bh < batch * heads; ++bh) {
    const int64_t b = bh / heads, h = bh % heads, hk = h / group;
    std::vector<double>& dk = dk_parts[bh];
    dk.assign(seq * dh, 0.0);
    std::vector<double> dq(dh);
    for (int64_t s = 0; s < seq; ++s) {
      const float* dsrow = d_scores.data<float>() + cell(b, h, s);
      const float* qs = q.data<float>() + at(b, s, h, heads);
      std::fill(dq.begin(), dq.end(), 0.0);
      for (int64_t t = 0; t < seq; ++t) {
        double ds = dsrow[t];
        if (ds == 0) continue;
        const float* kt = k.data<float>() + at(b, t, hk, kv_heads);
        if (softcap > 0) {
          double dot = 0;
          for (int64_t i = 0; i < dh; ++i) dot += double{qs[i]} * kt[i];
          const double th = std::tanh(scale * dot / softcap);
          ds *= 1 - th * th;
        }
        for (int64_t i = 0; i < dh; ++i) {
          dq[i] += ds * kt[i];
          dk[t * dh + i] += ds * qs[i];
        }
      }
      float* dqs = out.q.data<float>() + at(b, s, h, heads);
      for (int64_t i = 0; i < dh; ++i) dqs[i] = static_cast<float>(scale * dq[i]);
    }
  }
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t hk = h / group;
      const std::vector<double>& dk = dk_parts[b * heads + h];
      const std::vector<double>& dv = dv_parts[b * heads + h];
      for (int64_t t = 0; t < seq; ++t) {
        float* dkt = out.k.data<float>() + at(b, t, hk, kv_heads);
        float* dvt = out.v.data<float>() + at(b, t, hk, kv_heads);
        for (int64_t i = 0; i < dh; ++i) {
          dkt[i] += static_cast<float>(scale * dk[t * dh + i]);
          dvt[i] += static_cast<float>(dv[t * dh + i]);
        }
      }
    }
  }
  return out;
}

absl::StatusOr<Tensor> LinearInputBackward(const Tensor& dy, const Tensor& w) {
  const int64_t n = w.dim(0), k = w.dim(1), rows = dy.numel() / n;
  Tensor dx = Tensor::EmptyHost(DType::kF32, {rows, k});
  GB_RETURN_IF_ERROR(cpu::Sgemm(/*trans_b=*/false, rows, k, n, 1.0f, dy.data<float>(), n,
                                w.data<float>(), k, 0.0f, dx.data<float>(), k));
  return dx;
}

}  // namespace glassbox::backward
