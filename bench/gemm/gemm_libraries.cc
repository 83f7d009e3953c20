// One f32 GEMM y[M, N] = x[M, K] · w[N, K]ᵀ (+ bias) at the shapes a forward pass multiplies,
// timed through one library chosen at compile time (bench/gemm/gemm_libraries.sh builds it once
// per library): CBLAS (OpenBLAS or BLIS), oneDNN's dnnl_sgemm, or oneDNN's matmul primitive with
// the bias fused (what kernels/cpu/gemm.cc uses for Linear from 16 rows up). Prints GFLOP/s.
#include <chrono>
#include <cstdio>
#include <random>
#include <unordered_map>
#include <vector>

#if defined(GEMM_DNNL) || defined(GEMM_DNNL_MATMUL)
#include "oneapi/dnnl/dnnl.hpp"
#else
extern "C" {
#include <cblas.h>
}
#endif

struct Shape {
  int m, n, k;
  const char* what;
};

int main() {
  const Shape shapes[] = {
      {128, 2304, 768, "gpt2-small qkv, 128 tokens"}, {128, 768, 768, "gpt2-small attn out"},
      {128, 3072, 768, "gpt2-small mlp in"},          {128, 768, 3072, "gpt2-small mlp out"},
      {128, 50257, 768, "gpt2-small unembed"},        {512, 2304, 768, "qkv, 512 tokens"},
      {512, 768, 3072, "mlp out, 512 tokens"},        {24, 256, 256, "demo qkv-ish, 24 tokens"},
      {24, 1024, 256, "demo mlp in, 24 tokens"},      {1, 768, 768, "one decode row"},
  };
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  for (const Shape& s : shapes) {
    std::vector<float> x(size_t(s.m) * s.k), w(size_t(s.n) * s.k), y(size_t(s.m) * s.n), b(s.n);
    for (float& v : x) v = normal(rng);
    for (float& v : w) v = normal(rng);
    for (float& v : b) v = normal(rng);
#if defined(GEMM_DNNL_MATMUL)
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    dnnl::stream stream(engine);
    dnnl::memory::desc src({s.m, s.k}, dt::f32, tag::ab), wei({s.k, s.n}, dt::f32, tag::ba),
        dst({s.m, s.n}, dt::f32, tag::ab), bia({1, s.n}, dt::f32, tag::ab);
    dnnl::matmul mm(dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, bia, dst), engine));
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, dnnl::memory(src, engine, x.data())},
        {DNNL_ARG_WEIGHTS, dnnl::memory(wei, engine, w.data())},
        {DNNL_ARG_BIAS, dnnl::memory(bia, engine, b.data())},
        {DNNL_ARG_DST, dnnl::memory(dst, engine, y.data())}};
    auto gemm = [&] {
      mm.execute(stream, args);
      stream.wait();
    };
#elif defined(GEMM_DNNL)
    auto gemm = [&] {
      dnnl_sgemm('N', 'T', s.m, s.n, s.k, 1.0f, x.data(), s.k, w.data(), s.k, 0.0f, y.data(), s.n);
    };
#else
    auto gemm = [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.m, s.n, s.k, 1.0f, x.data(), s.k,
                  w.data(), s.k, 0.0f, y.data(), s.n);
    };
#endif
    for (int i = 0; i < 3; ++i) gemm();
    int reps = 0;
    double seconds = 0;
    const auto start = std::chrono::steady_clock::now();
    while (seconds < 0.5) {
      gemm();
      ++reps;
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    std::printf("%5d %6d %5d %8.1f  %s\n", s.m, s.n, s.k,
                2.0 * s.m * s.n * s.k * reps / seconds / 1e9, s.what);
  }
  return 0;
}
