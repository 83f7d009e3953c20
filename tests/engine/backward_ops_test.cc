// The backward ops against central finite differences of forward functions written out here in
// double: for a random linear functional L = Σ g · f(x) of each op's output, dL/dx from the op
// must equal (L(x + h e_i) − L(x − h e_i)) / 2h for every input element.
#include "server/engine/backward_ops.h"

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace glassbox::backward {
namespace {

using Vec = std::vector<double>;

Vec Random(size_t n, std::mt19937& rng, double scale = 1.0) {
  std::normal_distribution<double> normal(0.0, scale);
  Vec v(n);
  for (double& x : v) x = normal(rng);
  return v;
}

Tensor ToTensor(const Vec& v, Shape shape) {
  Tensor t = Tensor::EmptyHost(DType::kF32, std::move(shape));
  for (size_t i = 0; i < v.size(); ++i) t.data<float>()[i] = static_cast<float>(v[i]);
  return t;
}

// Σ g · f(x), and its numerical gradient in x.
Vec NumericalGradient(const std::function<double(const Vec&)>& loss, Vec x, double h = 1e-5) {
  Vec grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + h;
    const double up = loss(x);
    x[i] = keep - h;
    const double down = loss(x);
    x[i] = keep;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}

// Norm-relative error of an f32 gradient against a double one.
void ExpectClose(const Tensor& got, const Vec& want, double tolerance, const std::string& what) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size())) << what;
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff += (got.data<float>()[i] - want[i]) * (got.data<float>()[i] - want[i]);
    norm += want[i] * want[i];
  }
  EXPECT_LE(std::sqrt(diff), tolerance * std::sqrt(norm) + 1e-9) << what;
  EXPECT_GT(norm, 0) << what << ": a zero reference gradient checks nothing";
}

TEST(BackwardOpsTest, NormBackwardMatchesFiniteDifferences) {
  std::mt19937 rng(1);
  const int64_t rows = 3, d = 8;
  const double eps = 1e-5;
  for (bool centered : {true, false}) {
    SCOPED_TRACE(centered ? "LayerNorm" : "RMSNorm");
    const Vec x = Random(rows * d, rng, 2.0), w = Random(d, rng), g = Random(rows * d, rng);
    // The forward, with TransformerLens's hook values: x̂ and scale per row.
    auto forward = [&](const Vec& in, Vec* normalized, Vec* scale) {
      for (int64_t r = 0; r < rows; ++r) {
        double mean = 0;
        if (centered) {
          for (int64_t i = 0; i < d; ++i) mean += in[r * d + i] / d;
        }
        double sq = 0;
        for (int64_t i = 0; i < d; ++i) sq += (in[r * d + i] - mean) * (in[r * d + i] - mean) / d;
        const double s = std::sqrt(sq + eps);
        (*scale)[r] = s;
        for (int64_t i = 0; i < d; ++i) (*normalized)[r * d + i] = (in[r * d + i] - mean) / s;
      }
    };
    auto loss = [&](const Vec& in) {
      Vec n(rows * d), s(rows);
      forward(in, &n, &s);
      double sum = 0;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t i = 0; i < d; ++i) sum += g[r * d + i] * n[r * d + i] * w[i];
      }
      return sum;
    };
    Vec n(rows * d), s(rows);
    forward(x, &n, &s);
    const NormGrads got = NormBackward(ToTensor(g, {rows, d}), ToTensor(n, {rows, d}),
                                       ToTensor(s, {rows, 1}), ToTensor(w, {d}), centered);
    ExpectClose(got.input, NumericalGradient(loss, x), 1e-5, "input");
    Vec want_normalized(rows * d);
    for (int64_t i = 0; i < rows * d; ++i) want_normalized[i] = g[i] * w[i % d];
    ExpectClose(got.normalized, want_normalized, 1e-6, "normalized");
    // The scale as an input of x̂ = c / scale: ∂L/∂scale = Σ g·w·(−c / scale²).
    Vec want_scale(rows);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < d; ++i) want_scale[r] -= g[r * d + i] * w[i] * n[r * d + i] / s[r];
    }
    ExpectClose(got.scale, want_scale, 1e-5, "scale");
  }
}

TEST(BackwardOpsTest, ActivationDerivativesMatchFiniteDifferences) {
  const std::vector<std::pair<Activation, std::function<double(double)>>> acts = {
      {Activation::kIdentity, [](double x) { return x; }},
      {Activation::kGeluTanh,
       [](double x) {
         return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
       }},
      {Activation::kGeluExact,
       [](double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }},
      {Activation::kGeluQuick, [](double x) { return x / (1 + std::exp(-1.702 * x)); }},
      {Activation::kRelu, [](double x) { return x > 0 ? x : 0; }},
      {Activation::kSilu, [](double x) { return x / (1 + std::exp(-x)); }},
  };
  for (const auto& [act, f] : acts) {
    for (double x : {-3.1, -1.2, -0.3, 0.05, 0.4, 1.7, 4.2}) {
      const double h = 1e-6, numerical = (f(x + h) - f(x - h)) / (2 * h);
      EXPECT_NEAR(ActivationDerivative(act, x), numerical, 1e-7)
          << static_cast<int>(act) << " at " << x;
    }
  }
  std::mt19937 rng(2);
  const Vec x = Random(10, rng), g = Random(10, rng);
  const Tensor got =
      ActivationBackward(Activation::kSilu, ToTensor(g, {2, 5}), ToTensor(x, {2, 5}));
  for (int i = 0; i < 10; ++i) {
    EXPECT_NEAR(got.data<float>()[i], g[i] * ActivationDerivative(Activation::kSilu, x[i]), 1e-6);
  }
}

// Causal attention written out in double: q [B, S, H, Dh], k and v [B, S, Hkv, Dh].
struct AttentionCase {
  int64_t batch = 2, seq = 5, heads = 4, kv_heads = 2, dh = 3;
  double scale = 0.4;
  double softcap = 0;  // > 0: scores = softcap · tanh(scale · q · k / softcap)

  size_t Q() const { return batch * seq * heads * dh; }
  size_t KV() const { return batch * seq * kv_heads * dh; }
  size_t P() const { return batch * heads * seq * seq; }

  // The pattern (softmax of scale · q · k over keys t <= s) from the scores.
  Vec Pattern(const Vec& scores) const {
    Vec p(P(), 0.0);
    for (int64_t row = 0; row < batch * heads * seq; ++row) {
      const int64_t s = row % seq;
      double most = -1e300, sum = 0;
      for (int64_t t = 0; t <= s; ++t) most = std::max(most, scores[row * seq + t]);
      for (int64_t t = 0; t <= s; ++t) sum += std::exp(scores[row * seq + t] - most);
      for (int64_t t = 0; t <= s; ++t)
        p[row * seq + t] = std::exp(scores[row * seq + t] - most) / sum;
    }
    return p;
  }
  Vec Scores(const Vec& q, const Vec& k) const {
    Vec out(P(), 0.0);
    const int64_t group = heads / kv_heads;
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t s = 0; s < seq; ++s) {
          for (int64_t t = 0; t < seq; ++t) {
            double dot = 0;
            for (int64_t i = 0; i < dh; ++i) {
              dot += q[((b * seq + s) * heads + h) * dh + i] *
                     k[((b * seq + t) * kv_heads + h / group) * dh + i];
            }
            const double raw = scale * dot;
            out[((b * heads + h) * seq + s) * seq + t] =
                softcap > 0 ? softcap * std::tanh(raw / softcap) : raw;
          }
        }
      }
    }
    return out;
  }
  Vec Z(const Vec& pattern, const Vec& v) const {
    Vec z(Q(), 0.0);
    const int64_t group = heads / kv_heads;
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t s = 0; s < seq; ++s) {
          for (int64_t t = 0; t < seq; ++t) {
            for (int64_t i = 0; i < dh; ++i) {
              z[((b * seq + s) * heads + h) * dh + i] +=
                  pattern[((b * heads + h) * seq + s) * seq + t] *
                  v[((b * seq + t) * kv_heads + h / group) * dh + i];
            }
          }
        }
      }
    }
    return z;
  }
};

TEST(BackwardOpsTest, AttentionBackwardMatchesFiniteDifferences) {
  // Full, grouped and multi-query heads; the last soft-capped (Gemma-2) tightly enough to bend.
  for (auto [kv_heads, softcap] :
       std::vector<std::pair<int64_t, double>>{{4, 0}, {2, 0}, {1, 0}, {2, 0.7}}) {
    SCOPED_TRACE(kv_heads);
    SCOPED_TRACE(softcap);
    AttentionCase a;
    a.kv_heads = kv_heads;
    a.softcap = softcap;
    std::mt19937 rng(3 + kv_heads);
    const Vec q = Random(a.Q(), rng), k = Random(a.KV(), rng), v = Random(a.KV(), rng);
    const Vec g = Random(a.Q(), rng);  // the gradient arriving at z
    auto dot = [](const Vec& x, const Vec& y) {
      double s = 0;
      for (size_t i = 0; i < x.size(); ++i) s += x[i] * y[i];
      return s;
    };
    const Vec scores = a.Scores(q, k), pattern = a.Pattern(scores);
    const Shape qs = {a.batch, a.seq, a.heads, a.dh}, kvs = {a.batch, a.seq, a.kv_heads, a.dh};
    auto result =
        AttentionBackward(ToTensor(g, qs), ToTensor(q, qs), ToTensor(k, kvs), ToTensor(v, kvs),
                          ToTensor(pattern, {a.batch, a.heads, a.seq, a.seq}), a.scale, a.softcap);
    ASSERT_TRUE(result.ok()) << result.status();
    const AttentionGrads& got = *result;
    ExpectClose(got.q,
                NumericalGradient(
                    [&](const Vec& x) { return dot(g, a.Z(a.Pattern(a.Scores(x, k)), v)); }, q),
                1e-5, "q");
    ExpectClose(got.k,
                NumericalGradient(
                    [&](const Vec& x) { return dot(g, a.Z(a.Pattern(a.Scores(q, x)), v)); }, k),
                1e-5, "k");
    ExpectClose(got.v, NumericalGradient([&](const Vec& x) { return dot(g, a.Z(pattern, x)); }, v),
                1e-5, "v");
    // The scores' gradient: through the softmax over visible keys (0 at the masked ones).
    Vec want_scores =
        NumericalGradient([&](const Vec& x) { return dot(g, a.Z(a.Pattern(x), v)); }, scores);
    ExpectClose(got.scores, want_scores, 1e-5, "scores");
    ExpectClose(got.pattern,
                NumericalGradient([&](const Vec& x) { return dot(g, a.Z(x, v)); }, pattern), 1e-5,
                "pattern");
  }
}

TEST(BackwardOpsTest, GatedActivationBackwardMatchesFiniteDifferences) {
  std::mt19937 rng(5);
  const Vec gate = Random(12, rng, 2.0), linear = Random(12, rng), g = Random(12, rng);
  for (Activation act : {Activation::kSilu, Activation::kGeluTanh}) {
    SCOPED_TRACE(static_cast<int>(act));
    auto loss = [&](const Vec& a, const Vec& b) {
      double s = 0;
      for (size_t i = 0; i < a.size(); ++i) s += g[i] * ActivationValue(act, a[i]) * b[i];
      return s;
    };
    const GatedGrads got = GatedActivationBackward(act, ToTensor(g, {3, 4}), ToTensor(gate, {3, 4}),
                                                   ToTensor(linear, {3, 4}));
    ExpectClose(got.gate, NumericalGradient([&](const Vec& x) { return loss(x, linear); }, gate),
                1e-5, "gate");
    ExpectClose(got.linear, NumericalGradient([&](const Vec& x) { return loss(gate, x); }, linear),
                1e-5, "linear");
  }
}

TEST(BackwardOpsTest, RotaryBackwardIsTheRotationsTranspose) {
  // [B, S, H, Dh] = [2, 3, 2, 6], rotating 4 of the 6 features; angles j·θ_i per position.
  const int64_t batch = 2, seq = 3, heads = 2, dh = 6, rotary_dim = 4, half = rotary_dim / 2;
  std::mt19937 rng(6);
  const Vec x = Random(batch * seq * heads * dh, rng), g = Random(x.size(), rng);
  Vec cos(seq * half), sin(seq * half);
  for (int64_t p = 0; p < seq; ++p) {
    for (int64_t j = 0; j < half; ++j) {
      cos[p * half + j] = std::cos(p * (0.7 + j));
      sin[p * half + j] = std::sin(p * (0.7 + j));
    }
  }
  for (bool adjacent : {false, true}) {
    SCOPED_TRACE(adjacent);
    auto rotate = [&](const Vec& in) {
      Vec out = in;
      for (int64_t r = 0; r < batch * seq * heads; ++r) {
        const int64_t p = (r / heads) % seq;
        for (int64_t j = 0; j < half; ++j) {
          const int64_t a = adjacent ? 2 * j : j, b = adjacent ? 2 * j + 1 : j + half;
          const double c = cos[p * half + j], s = sin[p * half + j];
          out[r * dh + a] = in[r * dh + a] * c - in[r * dh + b] * s;
          out[r * dh + b] = in[r * dh + b] * c + in[r * dh + a] * s;
        }
      }
      return out;
    };
    auto loss = [&](const Vec& in) {
      const Vec y = rotate(in);
      double s = 0;
      for (size_t i = 0; i < y.size(); ++i) s += g[i] * y[i];
      return s;
    };
    const Tensor got =
        RotaryBackward(ToTensor(g, {batch, seq, heads, dh}), ToTensor(cos, {seq, half}),
                       ToTensor(sin, {seq, half}), rotary_dim, adjacent);
    ExpectClose(got, NumericalGradient(loss, x), 1e-6, "x");
  }
}

TEST(BackwardOpsTest, LinearInputBackwardIsDyTimesW) {
  std::mt19937 rng(4);
  const int64_t rows = 6, n = 5, k = 7;
  const Vec dy = Random(rows * n, rng), w = Random(n * k, rng);
  absl::StatusOr<Tensor> got = LinearInputBackward(ToTensor(dy, {2, 3, n}), ToTensor(w, {n, k}));
  ASSERT_TRUE(got.ok()) << got.status();
  Vec want(rows * k, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      for (int64_t i = 0; i < n; ++i) want[r * k + j] += dy[r * n + i] * w[i * k + j];
    }
  }
  ExpectClose(*got, want, 1e-6, "dx");
}

}  // namespace
}  // namespace glassbox::backward
