// The CPU reference attention against the definition, written out in double precision: scaled
// q·k, the optional tanh soft cap, the causal / key-mask / sliding-window visibility, softmax and
// the weighted sum of values, with grouped kv heads. Model parity tests cover the plain case
// through HF; this is where the soft cap (no shipped architecture uses it yet) and windows of
// every width against every mask are pinned down. tests/gpu checks the CUDA kernels against this.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"

namespace glassbox {
namespace {

struct Dims {
  int64_t batch, seq, heads, kv_heads, d_head;
};

Tensor Random(const Shape& shape, std::mt19937& rng) {
  Tensor t = Tensor::EmptyHost(DType::kF32, shape);
  std::uniform_real_distribution<float> dist(-2, 2);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

// Scores [b, h, i, j] (-inf where hidden) and z [b, i, h, d], from the definition.
void Reference(const Dims& d, const Tensor& q, const Tensor& k, const Tensor& v,
               const std::vector<int32_t>& mask, double scale, const AttentionOptions& o,
               std::vector<double>& scores, std::vector<double>& z) {
  const int64_t group = d.heads / d.kv_heads;
  scores.assign(d.batch * d.heads * d.seq * d.seq, -std::numeric_limits<double>::infinity());
  z.assign(d.batch * d.seq * d.heads * d.d_head, 0);
  auto at = [&](const Tensor& t, int64_t heads, int64_t b, int64_t s, int64_t h, int64_t x) {
    return static_cast<double>(t.data<float>()[((b * d.seq + s) * heads + h) * d.d_head + x]);
  };
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t h = 0; h < d.heads; ++h) {
      for (int64_t i = 0; i < d.seq; ++i) {
        double* row = scores.data() + ((b * d.heads + h) * d.seq + i) * d.seq;
        double max_score = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j <= i; ++j) {
          if (mask[b * d.seq + j] == 0 || (o.window > 0 && i - j >= o.window)) continue;
          double s = 0;
          for (int64_t x = 0; x < d.d_head; ++x) {
            s += at(q, d.heads, b, i, h, x) * at(k, d.kv_heads, b, j, h / group, x);
          }
          s *= scale;
          if (o.softcap > 0) s = o.softcap * std::tanh(s / o.softcap);
          row[j] = s;
          max_score = std::max(max_score, s);
        }
        if (std::isinf(max_score)) continue;  // no visible key: z stays 0
        double total = 0;
        for (int64_t j = 0; j <= i; ++j) total += std::exp(row[j] - max_score);
        for (int64_t j = 0; j <= i; ++j) {
          const double p = std::exp(row[j] - max_score) / total;
          for (int64_t x = 0; x < d.d_head; ++x) {
            z[((b * d.seq + i) * d.heads + h) * d.d_head + x] += p * at(v, d.kv_heads, b, j, h / group, x);
          }
        }
      }
    }
  }
}

double RelativeError(const Tensor& actual, const std::vector<double>& expected) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double a = actual.data<float>()[i], e = expected[i];
    if (std::isinf(e)) {
      if (a != e) return std::numeric_limits<double>::infinity();
      continue;
    }
    diff += (a - e) * (a - e);
    norm += e * e;
  }
  return std::sqrt(diff / norm);
}

struct Case {
  std::string name;
  AttentionOptions options;
};

class CpuAttentionTest : public ::testing::TestWithParam<Case> {};

TEST_P(CpuAttentionTest, MatchesTheDefinition) {
  const Dims d{3, 13, 6, 2, 16};
  std::mt19937 rng(1234);
  const Tensor q = Random({d.batch, d.seq, d.heads, d.d_head}, rng);
  const Tensor k = Random({d.batch, d.seq, d.kv_heads, d.d_head}, rng);
  const Tensor v = Random({d.batch, d.seq, d.kv_heads, d.d_head}, rng);
  // Row 0 all real, row 1 left-padded by 4, row 2 with holes.
  std::vector<int32_t> mask(d.batch * d.seq, 1);
  for (int64_t s = 0; s < 4; ++s) mask[d.seq + s] = 0;
  for (int64_t s : {0, 3, 4, 9}) mask[2 * d.seq + s] = 0;
  Tensor key_mask = Tensor::EmptyHost(DType::kI32, {d.batch, d.seq});
  std::copy(mask.begin(), mask.end(), key_mask.data<int32_t>());
  const float scale = 0.7f;  // large enough that the soft cap bites

  CpuBackend cpu;
  Tensor z = Tensor::EmptyHost(DType::kF32, q.shape());
  Tensor scores = Tensor::EmptyHost(DType::kF32, {d.batch, d.heads, d.seq, d.seq});
  ASSERT_TRUE(cpu.Attention(q, k, v, key_mask, scale, z, &scores, nullptr, GetParam().options).ok());

  std::vector<double> want_scores, want_z;
  Reference(d, q, k, v, mask, scale, GetParam().options, want_scores, want_z);
  EXPECT_LE(RelativeError(scores, want_scores), 1e-6);
  EXPECT_LE(RelativeError(z, want_z), 1e-6);
}

// Decoding with a KV cache: the last queries over all keys, placed by query_offset, equal the
// last rows of the full causal attention, with windows and soft caps too.
TEST_P(CpuAttentionTest, QueriesOverCachedKeysEqualTheFullRows) {
  const Dims d{2, 11, 4, 2, 8};
  const int64_t fresh = 3, offset = d.seq - fresh;
  std::mt19937 rng(77);
  const Tensor q = Random({d.batch, d.seq, d.heads, d.d_head}, rng);
  const Tensor k = Random({d.batch, d.seq, d.kv_heads, d.d_head}, rng);
  const Tensor v = Random({d.batch, d.seq, d.kv_heads, d.d_head}, rng);
  Tensor key_mask = Tensor::EmptyHost(DType::kI32, {d.batch, d.seq});
  for (int64_t i = 0; i < key_mask.numel(); ++i) key_mask.data<int32_t>()[i] = i == 2 ? 0 : 1;
  CpuBackend cpu;
  AttentionOptions options = GetParam().options;
  Tensor z = Tensor::EmptyHost(DType::kF32, q.shape());
  ASSERT_TRUE(cpu.Attention(q, k, v, key_mask, 0.7f, z, nullptr, nullptr, options).ok());

  Tensor q_last = Tensor::EmptyHost(DType::kF32, {d.batch, fresh, d.heads, d.d_head});
  const int64_t row = d.heads * d.d_head;
  for (int64_t b = 0; b < d.batch; ++b) {
    std::copy_n(q.data<float>() + (b * d.seq + offset) * row, fresh * row,
                q_last.data<float>() + b * fresh * row);
  }
  options.query_offset = offset;
  Tensor z_last = Tensor::EmptyHost(DType::kF32, q_last.shape());
  ASSERT_TRUE(cpu.Attention(q_last, k, v, key_mask, 0.7f, z_last, nullptr, nullptr, options).ok());
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t i = 0; i < fresh * row; ++i) {
      EXPECT_FLOAT_EQ(z_last.data<float>()[b * fresh * row + i],
                      z.data<float>()[(b * d.seq + offset) * row + i]);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Options, CpuAttentionTest,
                         ::testing::Values(Case{"plain", {}}, Case{"window1", {.window = 1}},
                                           Case{"window4", {.window = 4}},
                                           Case{"window_past_seq", {.window = 50}},
                                           Case{"softcap", {.softcap = 2.5f}},
                                           Case{"window_softcap", {.window = 5, .softcap = 1.5f}}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace glassbox
