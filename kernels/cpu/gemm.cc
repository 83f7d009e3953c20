#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/activations.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "oneapi/dnnl/dnnl_version.h"

namespace glassbox::cpu {
namespace {

// Below this many rows a fused matmul primitive is slower than oneDNN's sgemm (whose kernels
// for a few rows are GEMV-like) followed by the epilogue pass, which is then small.
constexpr int64_t kFusedMinRows = 16;

absl::Status DnnlError(dnnl_status_t status, const char* what) {
  return absl::InternalError(absl::StrCat("oneDNN ", what, " failed with status ", status));
}

// The matmul of src by wei into dst (plus bia when given), as this oneDNN builds one.
dnnl::matmul::primitive_desc MatmulDesc(const dnnl::engine& engine, const dnnl::memory::desc& src,
                                        const dnnl::memory::desc& wei,
                                        const dnnl::memory::desc* bia,
                                        const dnnl::memory::desc& dst) {
#if DNNL_VERSION_MAJOR >= 3  // Ubuntu 24.04's oneDNN: primitive descriptors built directly.
  return bia != nullptr ? dnnl::matmul::primitive_desc(engine, src, wei, *bia, dst)
                        : dnnl::matmul::primitive_desc(engine, src, wei, dst);
#else  // Debian 12's oneDNN 2.6: through an operation descriptor.
  return dnnl::matmul::primitive_desc(
      bia != nullptr ? dnnl::matmul::desc(src, wei, *bia, dst) : dnnl::matmul::desc(src, wei, dst),
      engine);
#endif
}

// Linear-layer primitives by shape, built once: building one costs 0.5-4 ms, running one for a
// few tokens tens of microseconds, so each shape (a model's projections at a token count) is
// kept. A primitive holds ~100 KB (its JIT code): the least recently used go beyond
// kMaxEntries, so a server asked for every token count keeps ~13 MB. oneDNN's own primitive
// cache would hold 1024 more, so it is turned off: this one decides.
class LinearPrimitives {
 public:
  static LinearPrimitives& Get() {
    static auto* primitives = new LinearPrimitives();
    return *primitives;
  }

  const dnnl::engine& engine() const { return engine_; }

  // `packed`: the weights' blocked layout (PackedWeight), else null for w[n, k] as it is.
  dnnl::matmul Find(int64_t m, int64_t n, int64_t k, bool bias, const dnnl::memory::desc* packed) {
    const Key key{m, n, k, bias, packed != nullptr};
    std::lock_guard lock(mu_);
    ++clock_;
    if (auto it = cache_.find(key); it != cache_.end()) {
      it->second.last_used = clock_;
      return it->second.primitive;
    }
    if (cache_.size() >= kMaxEntries) {
      auto oldest = cache_.begin();
      for (auto it = cache_.begin(); it != cache_.end(); ++it) {
        if (it->second.last_used < oldest->second.last_used) oldest = it;
      }
      cache_.erase(oldest);
    }
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    // Weights [n, k] row-major are the [k, n] matrix oneDNN multiplies by, column-major ("ba").
    const dnnl::memory::desc src({m, k}, dt::f32, tag::ab),
        wei = packed != nullptr ? *packed : dnnl::memory::desc({k, n}, dt::f32, tag::ba),
        dst({m, n}, dt::f32, tag::ab), bia({1, n}, dt::f32, tag::ab);
    dnnl::matmul primitive(MatmulDesc(engine_, src, wei, bias ? &bia : nullptr, dst));
    cache_.emplace(key, Entry{primitive, clock_});
    return primitive;
  }

 private:
  using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool>;
  struct Entry {
    dnnl::matmul primitive;
    uint64_t last_used;
  };
  static constexpr size_t kMaxEntries = 128;

  LinearPrimitives() { dnnl::set_primitive_cache_capacity(0); }

  dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
  std::mutex mu_;
  uint64_t clock_ = 0;
  std::map<Key, Entry> cache_;
};

}  // namespace

struct PackedWeight {
  dnnl::memory::desc desc;
  std::unique_ptr<void, decltype(&std::free)> data{nullptr, &std::free};
};

absl::StatusOr<std::shared_ptr<const PackedWeight>> PackWeight(int64_t n, int64_t k,
                                                               const float* w) {
  if (n < 1 || k < 1) return absl::InvalidArgumentError("PackWeight: an empty weight");
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  // The layout the matmul picks when left free to; it is the same for every row count, so one
  // taken at a typical one serves all (checked bit for bit in cpu_linear_test).
  constexpr int64_t kTypicalRows = 128;
  const dnnl::engine& engine = LinearPrimitives::Get().engine();
  try {
    const dnnl::memory::desc src({kTypicalRows, k}, dt::f32, tag::ab),
        free_layout({k, n}, dt::f32, tag::any), plain({k, n}, dt::f32, tag::ba),
        dst({kTypicalRows, n}, dt::f32, tag::ab);
    const dnnl::matmul::primitive_desc chosen = MatmulDesc(engine, src, free_layout, nullptr, dst);
    auto packed = std::make_shared<PackedWeight>();
    packed->desc = chosen.weights_desc();
    if (packed->desc == plain) return std::shared_ptr<const PackedWeight>();  // nothing to gain
    // Only a layout the matmul takes at the fewest rows Linear gives it too, and through a JIT
    // kernel rather than oneDNN's slow reference one (so on a CPU where that is not so, weights
    // stay plain rather than slow).
    try {
      const dnnl::memory::desc few_src({kFusedMinRows, k}, dt::f32, tag::ab),
          few_dst({kFusedMinRows, n}, dt::f32, tag::ab);
      const dnnl::matmul::primitive_desc few =
          MatmulDesc(engine, few_src, packed->desc, nullptr, few_dst);
      if (absl::StrContains(few.impl_info_str(), "ref"))
        return std::shared_ptr<const PackedWeight>();
    } catch (const dnnl::error&) {
      return std::shared_ptr<const PackedWeight>();
    }
    const size_t bytes = (packed->desc.get_size() + 63) / 64 * 64;
    packed->data.reset(std::aligned_alloc(64, bytes));
    if (packed->data == nullptr)
      return absl::ResourceExhaustedError(
          absl::StrCat("PackWeight: no memory for ", bytes, " bytes"));
    dnnl::memory from(plain, engine, const_cast<float*>(w)),
        to(packed->desc, engine, packed->data.get());
    dnnl::stream stream(engine);
    dnnl::reorder(from, to).execute(stream, from, to);
    stream.wait();
    return std::shared_ptr<const PackedWeight>(std::move(packed));
  } catch (const dnnl::error& e) {
    return DnnlError(e.status, "weight packing");
  }
}

int64_t PackedWeightBytes(const PackedWeight& packed) {
  return static_cast<int64_t>(packed.desc.get_size());
}

absl::Status Sgemm(bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                   int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return absl::OkStatus();
  if (k == 0) {  // An empty sum: oneDNN, like BLAS, wants k >= 1.
    for (int64_t i = 0; i < m; ++i) {
      float* row = c + i * ldc;
      if (beta == 0.0f) {
        std::fill_n(row, n, 0.0f);
      } else {
        for (int64_t j = 0; j < n; ++j) row[j] *= beta;
      }
    }
    return absl::OkStatus();
  }
  const dnnl_status_t status =
      dnnl_sgemm('N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  return status == dnnl_success ? absl::OkStatus() : DnnlError(status, "sgemm");
}

absl::Status Linear(int64_t m, int64_t n, int64_t k, const float* x, const float* w,
                    const PackedWeight* packed, const float* bias, Activation act, float* y) {
  if (m < kFusedMinRows || k == 0) {
    if (absl::Status s = Sgemm(/*trans_b=*/true, m, n, k, 1.0f, x, k, w, k, 0.0f, y, n); !s.ok()) {
      return s;
    }
    BiasActivation(y, m, n, bias, act);
    return absl::OkStatus();
  }
  LinearPrimitives& primitives = LinearPrimitives::Get();
  try {
    dnnl::matmul primitive =
        primitives.Find(m, n, k, bias != nullptr, packed != nullptr ? &packed->desc : nullptr);
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    const dnnl::engine& engine = primitives.engine();
    // oneDNN takes non-const handles; it only reads src, weights and bias.
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, dnnl::memory({{m, k}, dt::f32, tag::ab}, engine, const_cast<float*>(x))},
        {DNNL_ARG_WEIGHTS,
         packed != nullptr
             ? dnnl::memory(packed->desc, engine, packed->data.get())
             : dnnl::memory({{k, n}, dt::f32, tag::ba}, engine, const_cast<float*>(w))},
        {DNNL_ARG_DST, dnnl::memory({{m, n}, dt::f32, tag::ab}, engine, y)}};
    if (bias != nullptr) {
      args.emplace(DNNL_ARG_BIAS,
                   dnnl::memory({{1, n}, dt::f32, tag::ab}, engine, const_cast<float*>(bias)));
    }
    dnnl::stream stream(engine);
    primitive.execute(stream, args);
    stream.wait();
  } catch (const dnnl::error& e) {
    return DnnlError(e.status, "matmul");
  }
  // The activation is the backend's own (ActivateRun), not a oneDNN post-op: a pass that captures
  // hook_pre computes Linear without it and then Activate, and must get the very same values.
  BiasActivation(y, m, n, nullptr, act);
  return absl::OkStatus();
}

void BiasActivation(float* y, int64_t rows, int64_t cols, const float* bias, Activation act) {
  if (bias == nullptr && act == Activation::kIdentity) return;
#pragma omp parallel for if (rows * cols >= 16384)
  for (int64_t r = 0; r < rows; ++r) ActivateRun(act, y + r * cols, bias, y + r * cols, cols);
}

}  // namespace glassbox::cpu
