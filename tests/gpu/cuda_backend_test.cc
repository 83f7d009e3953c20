// The CUDA backend against the CPU reference (kernels/cpu), op by op on fresh random inputs of
// several shapes (odd sizes included), and on whole models loaded by the engine.
//
// Every output is poisoned with NaN before the op runs, so an element the kernel forgets to write
// shows up as a NaN and fails the comparison. Errors are norm-relative, ||gpu - cpu|| / ||cpu||:
// f32 within 1e-5 (1e-4 for GEMM-heavy ops), f16/bf16 within 2e-2 against the CPU run on the same
// (rounded) inputs. Infinite entries (masked attention scores) must be the same infinity.
//
// On a machine without a CUDA device every test reports SKIPPED with the probe's reason; only
// CreateCudaBackendWithoutDeviceSaysWhy runs there (and skips where a device exists).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_probe.h"
#include "server/engine/host_math.h"
#include "server/engine/transformer.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::glassbox::testing::CollectingSink;
using ::glassbox::testing::FixturePath;
using ::glassbox::testing::NormRelativeError;
using ::glassbox::testing::ReadAllTensors;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

#define EXPECT_OK(expr)                           \
  do {                                            \
    const ::absl::Status gb_s_ = (expr);          \
    EXPECT_TRUE(gb_s_.ok()) << #expr << ": " << gb_s_; \
  } while (false)
#define ASSERT_OK(expr)                           \
  do {                                            \
    const ::absl::Status gb_s_ = (expr);          \
    ASSERT_TRUE(gb_s_.ok()) << #expr << ": " << gb_s_; \
  } while (false)

// ---------------------------------------------------------------------------------------------
// The device, probed once. `backend` uses the default options (fused epilogues, flash
// attention); `plain` turns both off and gives materialised attention and TopK tiny work budgets,
// so the same tests also cover the separate bias/activation kernel, the materialised z path and
// its chunking over (batch, head) pairs, and TopK one row at a time.

struct GpuState {
  std::string skip_reason;  // set when there is no usable device
  std::string failure;      // set when a device exists but the backend failed to start
  std::shared_ptr<CudaBackend> backend;
  std::shared_ptr<CudaBackend> plain;
};

// The device as the probe and the backend find it.
GpuState* MakeGpuState() {
  auto* s = new GpuState;
  const CudaProbe probe = ProbeCuda();
  if (probe.device_count == 0) {
    s->skip_reason = probe.detail.rfind("no CUDA device", 0) == 0 ? probe.detail
                                                                   : "no CUDA device: " + probe.detail;
    return s;
  }
  auto backend = CudaBackend::Create(0);
  if (!backend.ok()) {
    // An old GPU is a reason to skip; anything else on a machine with a device is a failure.
    if (backend.status().code() == absl::StatusCode::kFailedPrecondition) {
      s->skip_reason = std::string(backend.status().message());
    } else {
      s->failure = backend.status().ToString();
    }
    return s;
  }
  s->backend = *backend;
  auto plain = CudaBackend::Create(0, {.gemm_activation_epilogues = false,
                                       .flash_attention = false,
                                       .attention_work_bytes = 1,
                                       .top_k_work_bytes = 1});
  if (!plain.ok()) {
    s->failure = plain.status().ToString();
    return s;
  }
  s->plain = *plain;
  std::fprintf(stderr, "[cuda_backend_test] %s; testing on %s\n", probe.detail.c_str(),
               s->backend->name().c_str());
  return s;
}

// A skip becomes a failure under GLASSBOX_REQUIRE_GPU (tools/gpu_bundle/run.sh sets it): on the
// GPU machine, a device the backend cannot use must not pass as "no device".
const GpuState& Gpu() {
  static const GpuState* state = [] {
    auto* s = MakeGpuState();
    if (!s->skip_reason.empty() && ::glassbox::testing::GpuRequired()) {
      s->failure = "GLASSBOX_REQUIRE_GPU is set, but: " + s->skip_reason;
      s->skip_reason.clear();
    }
    return s;
  }();
  return *state;
}

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const GpuState& s = Gpu();
    if (!s.failure.empty()) GTEST_FAIL() << "the CUDA backend failed to start: " << s.failure;
    if (s.backend == nullptr) GTEST_SKIP() << s.skip_reason;
    gpu_ = s.backend.get();
    plain_ = s.plain.get();
  }
  CudaBackend& gpu() { return *gpu_; }
  CudaBackend& plain() { return *plain_; }
  CudaBackend& pick(bool use_plain) { return use_plain ? *plain_ : *gpu_; }

  CpuBackend cpu_;

 private:
  CudaBackend* gpu_ = nullptr;
  CudaBackend* plain_ = nullptr;
};

template <typename Param>
class GpuParamTest : public GpuTest, public ::testing::WithParamInterface<Param> {};

// ---------------------------------------------------------------------------------------------
// Host and device tensors.

Tensor Must(absl::StatusOr<Tensor> t) {
  if (!t.ok()) {
    ADD_FAILURE() << t.status();
    return Tensor();
  }
  return *std::move(t);
}

Tensor RandomHost(Shape shape, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Tensor::EmptyHost(DType::kF32, std::move(shape));
  std::uniform_real_distribution<float> dist(lo, hi);
  for (float& v : t.span<float>()) v = dist(rng);
  return t;
}

Tensor FilledHost(Shape shape, float value) {
  Tensor t = Tensor::EmptyHost(DType::kF32, std::move(shape));
  std::fill(t.span<float>().begin(), t.span<float>().end(), value);
  return t;
}

Tensor IntsHost(const std::vector<int32_t>& values, Shape shape) {
  return Tensor::FromHost(std::span<const int32_t>(values), std::move(shape));
}

// The values a host f32 tensor takes when stored as `dtype` (conversions by the CPU reference).
Tensor Rounded(const Tensor& host, DType dtype) {
  if (dtype == DType::kF32) return host;
  CpuBackend cpu;
  Tensor stored = Tensor::EmptyHost(dtype, host.shape());
  Tensor back = Tensor::EmptyHost(DType::kF32, host.shape());
  EXPECT_OK(cpu.Convert(host, stored));
  EXPECT_OK(cpu.Convert(stored, back));
  return back;
}

// A device tensor of `dtype` holding `host` (f32 or i32), converted on the host.
Tensor Upload(Backend& be, const Tensor& host, DType dtype) {
  Tensor staged = host;
  if (host.dtype() != dtype) {
    staged = Tensor::EmptyHost(dtype, host.shape());
    CpuBackend cpu;
    EXPECT_OK(cpu.Convert(host, staged));
  }
  Tensor dev = Must(be.Allocate(dtype, host.shape()));
  EXPECT_OK(be.CopyFromHost(staged, dev));
  return dev;
}

Tensor UploadInts(Backend& be, const std::vector<int32_t>& values, Shape shape) {
  return Upload(be, IntsHost(values, std::move(shape)), DType::kI32);
}

// A device tensor whose every element is NaN: what an op leaves unwritten stays NaN.
Tensor Poisoned(Backend& be, DType dtype, Shape shape) {
  return Upload(be, FilledHost(shape, kNaN), dtype);
}

// A device tensor's values as host f32 (conversion by the CPU reference).
Tensor Download(Backend& be, const Tensor& dev) {
  Tensor raw = Tensor::EmptyHost(dev.dtype(), dev.shape());
  EXPECT_OK(be.CopyToHost(dev, raw));
  if (dev.dtype() == DType::kF32) return raw;
  Tensor f32 = Tensor::EmptyHost(DType::kF32, dev.shape());
  CpuBackend cpu;
  EXPECT_OK(cpu.Convert(raw, f32));
  return f32;
}

double Tolerance(DType dtype, bool gemm) {
  if (dtype == DType::kF32) return gemm ? 1e-4 : 1e-5;
  return 2e-2;
}

// Positions where exactly one of the tensors is infinite, or both are with different signs.
int64_t InfMismatches(const Tensor& a, const Tensor& b) {
  int64_t n = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const float x = a.data<float>()[i], y = b.data<float>()[i];
    if ((std::isinf(x) || std::isinf(y)) && x != y) ++n;
  }
  return n;
}

int64_t NaNs(const Tensor& t) {
  int64_t n = 0;
  for (float v : t.span<float>()) n += std::isnan(v) ? 1 : 0;
  return n;
}

void ExpectClose(const Tensor& actual, const Tensor& expected, double tolerance,
                 const std::string& what) {
  ASSERT_EQ(actual.numel(), expected.numel()) << what;
  EXPECT_EQ(NaNs(actual), 0) << what << ": unwritten (NaN-poisoned) or NaN elements";
  EXPECT_EQ(InfMismatches(actual, expected), 0) << what << ": infinite entries differ";
  EXPECT_LE(NormRelativeError(actual, expected), tolerance) << what;
}

std::string DTypeLabel(DType d) { return std::string(DTypeName(d)); }

std::string ActLabel(Activation a) {
  switch (a) {
    case Activation::kIdentity: return "id";
    case Activation::kGeluTanh: return "gelutanh";
    case Activation::kGeluExact: return "gelu";
    case Activation::kGeluQuick: return "geluquick";
    case Activation::kRelu: return "relu";
    case Activation::kSilu: return "silu";
  }
  return "?";
}

constexpr Activation kAllActivations[] = {Activation::kIdentity, Activation::kGeluTanh,
                                          Activation::kGeluExact, Activation::kGeluQuick,
                                          Activation::kRelu, Activation::kSilu};
constexpr DType kFloatTypes[] = {DType::kF32, DType::kF16, DType::kBF16};

// ---------------------------------------------------------------------------------------------
// Without a device: the factory explains itself instead of crashing.

TEST(CudaBackendFactoryTest, CreateCudaBackendWithoutDeviceSaysWhy) {
  const CudaProbe probe = ProbeCuda();
  ASSERT_TRUE(probe.compiled);
  if (probe.device_count > 0) GTEST_SKIP() << "a CUDA device exists: " << probe.detail;
  auto backend = CreateCudaBackend(0);
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition) << backend.status();
  EXPECT_NE(backend.status().message().find(probe.detail), std::string::npos) << backend.status();
}

TEST_F(GpuTest, CreateRejectsDevicesThatDoNotExist) {
  for (int device : {-1, 1 << 20}) {
    auto backend = CreateCudaBackend(device);
    ASSERT_FALSE(backend.ok()) << device;
    EXPECT_EQ(backend.status().code(), absl::StatusCode::kInvalidArgument) << backend.status();
  }
}

// ---------------------------------------------------------------------------------------------
// Memory.

TEST_F(GpuTest, CopiesRoundTripEveryDType) {
  std::mt19937 rng(1);
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16, DType::kI32, DType::kI64}) {
    SCOPED_TRACE(DTypeLabel(dtype));
    const Shape shape = {3, 129};
    Tensor host = Tensor::EmptyHost(dtype, shape);
    std::uniform_int_distribution<int> byte(0, 255);
    for (size_t i = 0; i < host.nbytes(); ++i) static_cast<uint8_t*>(host.raw_data())[i] = byte(rng);
    Tensor dev = Must(gpu().Allocate(dtype, shape));
    ASSERT_OK(gpu().CopyFromHost(host, dev));
    Tensor back = Tensor::EmptyHost(dtype, shape);
    ASSERT_OK(gpu().CopyToHost(dev, back));
    EXPECT_EQ(std::memcmp(host.raw_data(), back.raw_data(), host.nbytes()), 0);
  }
}

TEST_F(GpuTest, CopiesRejectMismatchedTensors) {
  Tensor dev = Must(gpu().Allocate(DType::kF32, {4}));
  Tensor host3 = Tensor::EmptyHost(DType::kF32, {3});
  Tensor host_i32 = Tensor::EmptyHost(DType::kI32, {4});
  EXPECT_EQ(gpu().CopyFromHost(host3, dev).code(), absl::StatusCode::kInternal);
  EXPECT_EQ(gpu().CopyToHost(dev, host_i32).code(), absl::StatusCode::kInternal);
  // A host tensor where a device one belongs is an error, not a wild pointer.
  Tensor host4 = Tensor::EmptyHost(DType::kF32, {4});
  EXPECT_EQ(gpu().Add(host4, dev, dev).code(), absl::StatusCode::kInternal);
  EXPECT_EQ(gpu().CopyToHost(host4, host4).code(), absl::StatusCode::kInternal);
}

TEST_F(GpuTest, AllocatorReusesBlocksAfterWarmUp) {
  auto allocate_round = [&] {
    std::vector<Tensor> tensors;
    for (int64_t n : {1, 7, 129, 768 * 3, 1 << 20, 3 << 20}) {
      tensors.push_back(Must(gpu().Allocate(DType::kBF16, {n})));
      tensors.push_back(Must(gpu().Allocate(DType::kF32, {n, 2})));
    }
  };
  allocate_round();  // warm-up: may call cudaMalloc
  const CachingDeviceAllocator::Stats before = gpu().allocator_stats();
  for (int i = 0; i < 3; ++i) allocate_round();
  const CachingDeviceAllocator::Stats after = gpu().allocator_stats();
  EXPECT_EQ(after.device_mallocs, before.device_mallocs) << "a cudaMalloc after warm-up";
  EXPECT_GE(after.cache_hits, before.cache_hits + 36);
  EXPECT_EQ(after.bytes_in_use, before.bytes_in_use);
}

TEST_F(GpuTest, BlockSizesBucketWithBoundedSlack) {
  for (size_t bytes : {size_t{1}, size_t{511}, size_t{513}, size_t{1} << 20, (size_t{1} << 20) + 1,
                       size_t{5} << 29, (size_t{3} << 30) + 12345}) {
    const size_t block = CachingDeviceAllocator::BlockSize(bytes);
    EXPECT_GE(block, bytes);
    EXPECT_LE(block, std::max<size_t>(512, bytes + bytes / 4 + 512)) << bytes;
    EXPECT_EQ(block % 512, 0u) << bytes;
  }
}

TEST_F(GpuTest, TensorsMayOutliveTheirBackend) {
  Tensor survivor;
  {
    auto backend = CudaBackend::Create(0);
    ASSERT_TRUE(backend.ok()) << backend.status();
    survivor = Must((*backend)->Allocate(DType::kF32, {1024}));
  }
  survivor = Tensor();  // returns the block to an allocator the tensor kept alive
  SUCCEED();
}

// ---------------------------------------------------------------------------------------------
// Convert: bit-exact against the CPU conversions, including rounding, subnormals and overflow.

TEST_F(GpuTest, ConvertMatchesCpuBitForBit) {
  std::mt19937 rng(2);
  std::vector<float> values;
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  for (int e = -30; e <= 20; ++e) {
    for (int i = 0; i < 7; ++i) values.push_back(std::ldexp(unit(rng), e));
  }
  for (float v : {0.0f, -0.0f, 65504.0f, 65520.0f, 1e6f, -1e6f, kInf, -kInf, 5.96e-8f, 3e-8f, 1e-40f}) {
    values.push_back(v);
  }
  const Shape shape = {static_cast<int64_t>(values.size())};
  const Tensor source_f32 = Tensor::FromHost(values, shape);
  std::vector<int32_t> ints;
  for (size_t i = 0; i < values.size(); ++i) ints.push_back(static_cast<int32_t>(rng()) >> (i % 31));
  const Tensor source_i32 = IntsHost(ints, shape);

  const DType all[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kI32, DType::kI64};
  for (DType from : all) {
    // The source in `from`, made by the CPU backend.
    const bool integer_source = from == DType::kI32 || from == DType::kI64;
    Tensor source = Tensor::EmptyHost(from, shape);
    ASSERT_OK(cpu_.Convert(integer_source ? source_i32 : source_f32, source));
    Tensor dev = Must(gpu().Allocate(from, shape));
    ASSERT_OK(gpu().CopyFromHost(source, dev));
    for (DType to : all) {
      SCOPED_TRACE(DTypeLabel(from) + " -> " + DTypeLabel(to));
      Tensor expected = Tensor::EmptyHost(to, shape);
      const absl::Status cpu_status = cpu_.Convert(source, expected);
      Tensor out = Must(gpu().Allocate(to, shape));
      const absl::Status gpu_status = gpu().Convert(dev, out);
      ASSERT_EQ(gpu_status.ok(), cpu_status.ok()) << gpu_status << " vs " << cpu_status;
      if (!cpu_status.ok()) continue;
      Tensor actual = Tensor::EmptyHost(to, shape);
      ASSERT_OK(gpu().CopyToHost(out, actual));
      EXPECT_EQ(std::memcmp(actual.raw_data(), expected.raw_data(), expected.nbytes()), 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Linear.

struct LinearCase {
  int64_t t, k, n;
  bool bias;
  Activation act;
  DType dtype;
  DType out;
  bool plain;  // the backend without epilogues
  bool view;   // x is an unaligned view into a larger tensor
};

std::vector<LinearCase> LinearCases() {
  std::vector<LinearCase> cases;
  const int64_t shapes[][3] = {{1, 64, 64}, {7, 63, 65}, {17, 768, 129}, {129, 768, 2304}};
  for (const auto& s : shapes) {
    for (DType dtype : kFloatTypes) {
      std::vector<DType> outs = {dtype};
      if (dtype != DType::kF32) outs.push_back(DType::kF32);  // the engine's f32 logits
      for (DType out : outs) {
        for (Activation act : kAllActivations) {
          for (bool bias : {false, true}) {
            if (s[0] == 129 && act != Activation::kIdentity && act != Activation::kGeluTanh &&
                act != Activation::kRelu) {
              continue;
            }
            cases.push_back({s[0], s[1], s[2], bias, act, dtype, out, false, false});
            if (act == Activation::kGeluTanh || act == Activation::kRelu) {
              cases.push_back({s[0], s[1], s[2], bias, act, dtype, out, true, false});
            }
          }
        }
      }
    }
  }
  // Unaligned operands (odd K in half types, views at odd row offsets) and f32 -> half outputs.
  for (DType dtype : kFloatTypes) {
    cases.push_back({7, 63, 65, true, Activation::kIdentity, dtype, dtype, false, true});
    cases.push_back({33, 127, 64, true, Activation::kGeluTanh, dtype, dtype, false, true});
  }
  cases.push_back({7, 64, 96, true, Activation::kSilu, DType::kF32, DType::kBF16, false, false});
  cases.push_back({7, 64, 96, false, Activation::kIdentity, DType::kF16, DType::kBF16, false, false});
  return cases;
}

std::string LinearName(const ::testing::TestParamInfo<LinearCase>& info) {
  const LinearCase& c = info.param;
  return "t" + std::to_string(c.t) + "k" + std::to_string(c.k) + "n" + std::to_string(c.n) + "_" +
         (c.bias ? "bias_" : "nobias_") + ActLabel(c.act) + "_" + DTypeLabel(c.dtype) + "to" +
         DTypeLabel(c.out) + (c.plain ? "_plain" : "") + (c.view ? "_view" : "") + "_" +
         std::to_string(info.index);
}

class LinearTest : public GpuParamTest<LinearCase> {};

TEST_P(LinearTest, MatchesCpu) {
  const LinearCase& c = GetParam();
  CudaBackend& be = pick(c.plain);
  std::mt19937 rng(static_cast<unsigned>(c.t * 1000003 + c.k * 101 + c.n));
  const float w_range = 1.0f / std::sqrt(static_cast<float>(c.k));
  const Tensor x = Rounded(RandomHost({c.t, c.k}, rng), c.dtype);
  const Tensor w = Rounded(RandomHost({c.n, c.k}, rng, -w_range, w_range), c.dtype);
  const Tensor b = Rounded(RandomHost({c.n}, rng), c.dtype);

  Tensor expected = Tensor::EmptyHost(DType::kF32, {c.t, c.n});
  ASSERT_OK(cpu_.Linear(x, w, c.bias ? &b : nullptr, c.act, expected));

  Tensor x_dev;
  if (c.view) {
    // Rows [1, t + 1) of a [t + 2, k] tensor: with odd k the operand is not 16-byte aligned.
    Tensor padded = Tensor::EmptyHost(DType::kF32, {c.t + 2, c.k});
    std::fill(padded.span<float>().begin(), padded.span<float>().end(), kNaN);
    std::memcpy(padded.data<float>() + c.k, x.raw_data(), x.nbytes());
    x_dev = Upload(be, padded, c.dtype).Slice0(1, c.t + 1);
  } else {
    x_dev = Upload(be, x, c.dtype);
  }
  const Tensor w_dev = Upload(be, w, c.dtype);
  const Tensor b_dev = Upload(be, b, c.dtype);
  Tensor out = Poisoned(be, c.out, {c.t, c.n});
  ASSERT_OK(be.Linear(x_dev, w_dev, c.bias ? &b_dev : nullptr, c.act, out));
  // Same (rounded) inputs and f32 accumulation on both sides: an f32 output is held to the f32
  // budget whatever the input type.
  ExpectClose(Download(be, out), expected, Tolerance(c.out, true), "Linear");
}

// Readable parameters in test listings (ctest names carry them).
void PrintTo(const LinearCase& c, std::ostream* os) {
  *os << LinearName(::testing::TestParamInfo<LinearCase>(c, 0));
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest, ::testing::ValuesIn(LinearCases()), LinearName);

TEST_F(GpuTest, LinearRejectsShapeMismatch) {
  Tensor x = Must(gpu().Allocate(DType::kF32, {3, 8}));
  Tensor w = Must(gpu().Allocate(DType::kF32, {4, 9}));
  Tensor out = Must(gpu().Allocate(DType::kF32, {3, 4}));
  EXPECT_EQ(gpu().Linear(x, w, nullptr, Activation::kIdentity, out).code(), absl::StatusCode::kInternal);
  Tensor w_bf16 = Must(gpu().Allocate(DType::kBF16, {4, 8}));
  EXPECT_EQ(gpu().Linear(x, w_bf16, nullptr, Activation::kIdentity, out).code(),
            absl::StatusCode::kInternal);
}

// ---------------------------------------------------------------------------------------------
// HeadProjection.

struct HeadProjectionCase {
  int64_t t, heads, d_head, n;
  DType dtype, out;
};

void PrintTo(const HeadProjectionCase& c, std::ostream* os) {
  *os << "t=" << c.t << " heads=" << c.heads << " d_head=" << c.d_head << " n=" << c.n << " "
      << DTypeName(c.dtype) << "->" << DTypeName(c.out);
}

class HeadProjectionTest : public GpuParamTest<HeadProjectionCase> {};

TEST_P(HeadProjectionTest, MatchesCpu) {
  const HeadProjectionCase& c = GetParam();
  std::mt19937 rng(static_cast<unsigned>(c.t * 31 + c.heads * 7 + c.d_head + c.n));
  const float w_range = 1.0f / std::sqrt(static_cast<float>(c.d_head));
  const Tensor z = Rounded(RandomHost({c.t, c.heads, c.d_head}, rng), c.dtype);
  const Tensor w = Rounded(RandomHost({c.n, c.heads * c.d_head}, rng, -w_range, w_range), c.dtype);
  Tensor expected = Tensor::EmptyHost(DType::kF32, {c.t, c.heads, c.n});
  ASSERT_OK(cpu_.HeadProjection(z, w, expected));

  Tensor out = Poisoned(gpu(), c.out, {c.t, c.heads, c.n});
  ASSERT_OK(gpu().HeadProjection(Upload(gpu(), z, c.dtype), Upload(gpu(), w, c.dtype), out));
  ExpectClose(Download(gpu(), out), expected, Tolerance(c.out, true), "HeadProjection");
}

std::vector<HeadProjectionCase> HeadProjectionCases() {
  std::vector<HeadProjectionCase> cases;
  const int64_t shapes[][4] = {{1, 1, 64, 64}, {7, 12, 64, 768}, {17, 3, 17, 63}, {129, 4, 80, 130},
                               {2, 5, 1, 9}};
  for (const auto& s : shapes) {
    for (DType dtype : kFloatTypes) {
      cases.push_back({s[0], s[1], s[2], s[3], dtype, dtype});
      if (dtype != DType::kF32) cases.push_back({s[0], s[1], s[2], s[3], dtype, DType::kF32});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, HeadProjectionTest, ::testing::ValuesIn(HeadProjectionCases()),
                         [](const auto& info) {
                           const HeadProjectionCase& c = info.param;
                           return "t" + std::to_string(c.t) + "h" + std::to_string(c.heads) + "dh" +
                                  std::to_string(c.d_head) + "n" + std::to_string(c.n) + "_" +
                                  DTypeLabel(c.dtype) + "to" + DTypeLabel(c.out);
                         });

// ---------------------------------------------------------------------------------------------
// LayerNorm and RmsNorm.

struct NormCase {
  bool rms;
  int64_t t, d;
  bool weight, bias, scale_out, unweighted_out;
  DType dtype;
  DType param_dtype;  // weight and bias
  float offset;       // added to every input: a large mean tests the variance's accuracy
};

void PrintTo(const NormCase& c, std::ostream* os) {
  *os << (c.rms ? "rms" : "layernorm") << " t=" << c.t << " d=" << c.d << " " << DTypeName(c.dtype)
      << " params " << DTypeName(c.param_dtype);
}

class NormTest : public GpuParamTest<NormCase> {};

TEST_P(NormTest, MatchesCpu) {
  const NormCase& c = GetParam();
  std::mt19937 rng(static_cast<unsigned>(c.t * 131 + c.d));
  Tensor x = RandomHost({c.t, c.d}, rng, -2.0f, 2.0f);
  for (float& v : x.span<float>()) v += c.offset;
  x = Rounded(x, c.dtype);
  const Tensor weight = Rounded(RandomHost({c.d}, rng, 0.5f, 1.5f), c.param_dtype);
  const Tensor bias = Rounded(RandomHost({c.d}, rng), c.param_dtype);
  const float eps = c.rms ? 1e-6f : 1e-5f;

  Tensor out = Tensor::EmptyHost(DType::kF32, {c.t, c.d});
  Tensor scale = Tensor::EmptyHost(DType::kF32, {c.t, 1});
  Tensor unweighted = Tensor::EmptyHost(DType::kF32, {c.t, c.d});
  Tensor* scale_p = c.scale_out ? &scale : nullptr;
  Tensor* unweighted_p = c.unweighted_out ? &unweighted : nullptr;
  if (c.rms) {
    ASSERT_OK(cpu_.RmsNorm(x, c.weight ? &weight : nullptr, eps, out, scale_p, unweighted_p));
  } else {
    ASSERT_OK(cpu_.LayerNorm(x, c.weight ? &weight : nullptr, c.bias ? &bias : nullptr, eps, out,
                             scale_p, unweighted_p));
  }

  const Tensor x_dev = Upload(gpu(), x, c.dtype);
  const Tensor w_dev = Upload(gpu(), weight, c.param_dtype);
  const Tensor b_dev = Upload(gpu(), bias, c.param_dtype);
  Tensor out_dev = Poisoned(gpu(), c.dtype, {c.t, c.d});
  Tensor scale_dev = Poisoned(gpu(), c.dtype, {c.t, 1});
  Tensor unweighted_dev = Poisoned(gpu(), c.dtype, {c.t, c.d});
  Tensor* scale_dev_p = c.scale_out ? &scale_dev : nullptr;
  Tensor* unweighted_dev_p = c.unweighted_out ? &unweighted_dev : nullptr;
  if (c.rms) {
    ASSERT_OK(gpu().RmsNorm(x_dev, c.weight ? &w_dev : nullptr, eps, out_dev, scale_dev_p,
                            unweighted_dev_p));
  } else {
    ASSERT_OK(gpu().LayerNorm(x_dev, c.weight ? &w_dev : nullptr, c.bias ? &b_dev : nullptr, eps,
                              out_dev, scale_dev_p, unweighted_dev_p));
  }
  const double tolerance = Tolerance(c.dtype, false);
  ExpectClose(Download(gpu(), out_dev), out, tolerance, "out");
  if (c.scale_out) ExpectClose(Download(gpu(), scale_dev), scale, tolerance, "scale_out");
  if (c.unweighted_out) ExpectClose(Download(gpu(), unweighted_dev), unweighted, tolerance, "unweighted_out");
}

std::vector<NormCase> NormCases() {
  std::vector<NormCase> cases;
  const int64_t shapes[][2] = {{1, 63}, {7, 64}, {129, 768}, {3, 4096}, {2, 5001}, {4, 1}};
  for (bool rms : {false, true}) {
    for (const auto& s : shapes) {
      for (DType dtype : kFloatTypes) {
        cases.push_back({rms, s[0], s[1], true, !rms, true, true, dtype, dtype, 0.0f});
        cases.push_back({rms, s[0], s[1], false, false, false, false, dtype, dtype, 0.0f});
      }
      cases.push_back({rms, s[0], s[1], true, !rms, true, false, DType::kBF16, DType::kF32, 0.0f});
      cases.push_back({rms, s[0], s[1], true, false, false, true, DType::kF32, DType::kF32, 0.0f});
    }
    cases.push_back({rms, 17, 768, true, !rms, true, true, DType::kF32, DType::kF32, 300.0f});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, NormTest, ::testing::ValuesIn(NormCases()), [](const auto& info) {
  const NormCase& c = info.param;
  return std::string(c.rms ? "rms" : "ln") + "_t" + std::to_string(c.t) + "d" + std::to_string(c.d) +
         (c.weight ? "_w" : "") + (c.bias ? "_b" : "") + (c.scale_out ? "_scale" : "") +
         (c.unweighted_out ? "_unweighted" : "") + "_" + DTypeLabel(c.dtype) + "_params" +
         DTypeLabel(c.param_dtype) + (c.offset != 0 ? "_offset" : "") + "_" + std::to_string(info.index);
});

// ---------------------------------------------------------------------------------------------
// Embedding.

TEST_F(GpuTest, EmbeddingGathersExactly) {
  std::mt19937 rng(5);
  for (int64_t d : {63, 64, 768}) {
    for (int64_t t : {1, 7, 129}) {
      for (DType dtype : kFloatTypes) {
        SCOPED_TRACE("d=" + std::to_string(d) + " t=" + std::to_string(t) + " " + DTypeLabel(dtype));
        const int64_t vocab = 300;
        const Tensor table = Rounded(RandomHost({vocab, d}, rng), dtype);
        std::vector<int32_t> ids(t);
        std::uniform_int_distribution<int32_t> pick_id(0, vocab - 1);
        for (int32_t& id : ids) id = pick_id(rng);
        ids[0] = vocab - 1;
        Tensor expected = Tensor::EmptyHost(DType::kF32, {t, d});
        ASSERT_OK(cpu_.Embedding(table, IntsHost(ids, {t}), expected));
        Tensor out = Poisoned(gpu(), dtype, {t, d});
        ASSERT_OK(gpu().Embedding(Upload(gpu(), table, dtype), UploadInts(gpu(), ids, {t}), out));
        ExpectClose(Download(gpu(), out), expected, 0.0, "Embedding");
      }
    }
  }
}

TEST_F(GpuTest, EmbeddingIdOutOfRangeIsReportedAtTheNextSync) {
  const Tensor table = Upload(gpu(), FilledHost({10, 4}, 1.0f), DType::kF32);
  Tensor out = Poisoned(gpu(), DType::kF32, {3, 4});
  ASSERT_OK(gpu().Embedding(table, UploadInts(gpu(), {1, 10, -1}, {3}), out));
  Tensor host = Tensor::EmptyHost(DType::kF32, {3, 4});
  const absl::Status status = gpu().CopyToHost(out, host);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_NE(status.message().find("Embedding id out of range"), std::string::npos) << status;
  for (int j = 0; j < 4; ++j) {
    EXPECT_EQ(host.data<float>()[j], 1.0f);
    EXPECT_EQ(host.data<float>()[4 + j], 0.0f);  // never a read out of bounds
    EXPECT_EQ(host.data<float>()[8 + j], 0.0f);
  }
  // The error is reported once; the backend keeps working.
  EXPECT_OK(gpu().Synchronize());
}

// Each thread has its own error word: an invalid id queued by one thread is reported to that
// thread's next synchronisation only, never to another thread (another request) synchronising
// first; a thread that exits with an error unreported leaves nothing for the next owner.
TEST_F(GpuTest, DeviceErrorsAreReportedToTheThreadThatQueuedTheOp) {
  const Tensor table = Upload(gpu(), FilledHost({10, 4}, 1.0f), DType::kF32);
  const Tensor bad_ids = UploadInts(gpu(), {1, 10, -1}, {3});
  Tensor out = Poisoned(gpu(), DType::kF32, {3, 4});
  ASSERT_OK(gpu().Embedding(table, bad_ids, out));  // queued by this thread, not yet waited for
  absl::Status other_thread;
  std::thread([&] {
    Tensor mine = Poisoned(gpu(), DType::kF32, {3, 4});
    other_thread = gpu().Embedding(table, UploadInts(gpu(), {0, 1, 2}, {3}), mine);
    if (other_thread.ok()) other_thread = gpu().Synchronize();
  }).join();
  EXPECT_OK(other_thread);  // the stream waited on this thread's bad op, but it was not theirs
  const absl::Status mine = gpu().Synchronize();
  EXPECT_EQ(mine.code(), absl::StatusCode::kInternal) << mine;
  EXPECT_NE(mine.message().find("Embedding id out of range"), std::string::npos) << mine;

  std::thread([&] {  // exits with its error never reported
    Tensor lost = Poisoned(gpu(), DType::kF32, {3, 4});
    EXPECT_OK(gpu().Embedding(table, bad_ids, lost));
  }).join();
  absl::Status next_owner;
  std::thread([&] { next_owner = gpu().Synchronize(); }).join();
  EXPECT_OK(next_owner);
  EXPECT_OK(gpu().Synchronize());
}

// ---------------------------------------------------------------------------------------------
// Rotary.

struct RotaryCase {
  int64_t t, heads, d_head, rotary_dim;
  DType dtype, table_dtype;
  bool in_place;
  RotaryStyle style = RotaryStyle::kHalf;
};

void PrintTo(const RotaryCase& c, std::ostream* os) {
  *os << "t=" << c.t << " heads=" << c.heads << " d_head=" << c.d_head << " rotary_dim=" << c.rotary_dim
      << " " << DTypeName(c.dtype) << " tables " << DTypeName(c.table_dtype) << (c.in_place ? " in place" : "")
      << (c.style == RotaryStyle::kAdjacentPairs ? " adjacent pairs" : "");
}

class RotaryTest : public GpuParamTest<RotaryCase> {};

TEST_P(RotaryTest, MatchesCpu) {
  const RotaryCase& c = GetParam();
  std::mt19937 rng(static_cast<unsigned>(c.t * 17 + c.heads * 5 + c.d_head + c.rotary_dim));
  const int64_t n_ctx = 300, half = c.rotary_dim / 2;
  const Tensor x = Rounded(RandomHost({c.t, c.heads, c.d_head}, rng), c.dtype);
  Tensor cos = Tensor::EmptyHost(DType::kF32, {n_ctx, half});
  Tensor sin = Tensor::EmptyHost(DType::kF32, {n_ctx, half});
  for (int64_t p = 0; p < n_ctx; ++p) {
    for (int64_t j = 0; j < half; ++j) {
      const double angle = p * std::pow(10000.0, -2.0 * j / std::max<int64_t>(c.rotary_dim, 1));
      cos.data<float>()[p * half + j] = static_cast<float>(std::cos(angle));
      sin.data<float>()[p * half + j] = static_cast<float>(std::sin(angle));
    }
  }
  cos = Rounded(cos, c.table_dtype);
  sin = Rounded(sin, c.table_dtype);
  std::vector<int32_t> positions(c.t);
  std::uniform_int_distribution<int32_t> pick(0, n_ctx - 1);
  for (int32_t& p : positions) p = pick(rng);
  positions[0] = n_ctx - 1;

  Tensor expected = Tensor::EmptyHost(DType::kF32, x.shape());
  ASSERT_OK(cpu_.Rotary(x, cos, sin, IntsHost(positions, {c.t}), static_cast<int>(c.rotary_dim), expected,
                        c.style));

  Tensor x_dev = Upload(gpu(), x, c.dtype);
  Tensor out = c.in_place ? x_dev : Poisoned(gpu(), c.dtype, x.shape());
  ASSERT_OK(gpu().Rotary(x_dev, Upload(gpu(), cos, c.table_dtype), Upload(gpu(), sin, c.table_dtype),
                         UploadInts(gpu(), positions, {c.t}), static_cast<int>(c.rotary_dim), out,
                         c.style));
  ExpectClose(Download(gpu(), out), expected, Tolerance(c.dtype, false), "Rotary");
}

std::vector<RotaryCase> RotaryCases() {
  std::vector<RotaryCase> cases;
  const int64_t shapes[][4] = {{1, 1, 64, 64}, {7, 4, 16, 16}, {129, 12, 64, 32}, {17, 3, 80, 20},
                               {5, 2, 63, 62}, {3, 2, 8, 0}, {300, 8, 128, 128}};
  for (const auto& s : shapes) {
    for (DType dtype : kFloatTypes) {
      cases.push_back({s[0], s[1], s[2], s[3], dtype, DType::kF32, false});
    }
    cases.push_back({s[0], s[1], s[2], s[3], DType::kBF16, DType::kBF16, false});
    cases.push_back({s[0], s[1], s[2], s[3], DType::kF32, DType::kF32, true});
    // GPT-J's adjacent pairs, out of place and in place.
    cases.push_back({s[0], s[1], s[2], s[3], DType::kBF16, DType::kF32, false, RotaryStyle::kAdjacentPairs});
    cases.push_back({s[0], s[1], s[2], s[3], DType::kF32, DType::kF32, true, RotaryStyle::kAdjacentPairs});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, RotaryTest, ::testing::ValuesIn(RotaryCases()), [](const auto& info) {
  const RotaryCase& c = info.param;
  return "t" + std::to_string(c.t) + "h" + std::to_string(c.heads) + "dh" + std::to_string(c.d_head) +
         "rd" + std::to_string(c.rotary_dim) + "_" + DTypeLabel(c.dtype) + "_tables" +
         DTypeLabel(c.table_dtype) + (c.in_place ? "_inplace" : "") +
         (c.style == RotaryStyle::kAdjacentPairs ? "_adjacent" : "");
});

TEST_F(GpuTest, RotaryPositionOutsideTheTableIsReported) {
  const Tensor x = Upload(gpu(), FilledHost({2, 1, 4}, 1.0f), DType::kF32);
  const Tensor table = Upload(gpu(), FilledHost({8, 2}, 0.5f), DType::kF32);
  Tensor out = Poisoned(gpu(), DType::kF32, {2, 1, 4});
  ASSERT_OK(gpu().Rotary(x, table, table, UploadInts(gpu(), {0, 8}, {2}), 4, out));
  const absl::Status status = gpu().Synchronize();
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_NE(status.message().find("Rotary position"), std::string::npos) << status;
  EXPECT_OK(gpu().Synchronize());
}

// ---------------------------------------------------------------------------------------------
// Attention.

enum class MaskKind { kAll, kLeftPadding, kHoles };
enum class Outputs { kZ, kPattern, kScores, kBoth };

struct AttentionCase {
  int64_t batch, seq, heads, kv_heads, d_head;
  MaskKind mask;
  Outputs outputs;
  DType dtype;
  bool plain;  // materialised path, chunked one (batch, head) pair at a time
  AttentionOptions options = {};
};

class AttentionTest : public GpuParamTest<AttentionCase> {};

std::vector<int32_t> MakeMask(const AttentionCase& c, std::mt19937& rng) {
  std::vector<int32_t> mask(c.batch * c.seq, 1);
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t s = 0; s < c.seq; ++s) {
      int32_t& m = mask[b * c.seq + s];
      switch (c.mask) {
        case MaskKind::kAll: break;
        // Row b has 3b padding positions on the left (a row may be all padding).
        case MaskKind::kLeftPadding: m = s >= 3 * b ? 1 : 0; break;
        case MaskKind::kHoles: m = (rng() % 5 == 0) ? 0 : 1; break;
      }
    }
  }
  return mask;
}

TEST_P(AttentionTest, MatchesCpu) {
  const AttentionCase& c = GetParam();
  CudaBackend& be = pick(c.plain);
  std::mt19937 rng(static_cast<unsigned>(c.batch * 7919 + c.seq * 131 + c.heads * 17 + c.d_head));
  const Tensor q = Rounded(RandomHost({c.batch, c.seq, c.heads, c.d_head}, rng, -2, 2), c.dtype);
  const Tensor k = Rounded(RandomHost({c.batch, c.seq, c.kv_heads, c.d_head}, rng, -2, 2), c.dtype);
  const Tensor v = Rounded(RandomHost({c.batch, c.seq, c.kv_heads, c.d_head}, rng), c.dtype);
  const std::vector<int32_t> mask = MakeMask(c, rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.d_head));
  const bool want_scores = c.outputs == Outputs::kScores || c.outputs == Outputs::kBoth;
  const bool want_pattern = c.outputs == Outputs::kPattern || c.outputs == Outputs::kBoth;
  const Shape square = {c.batch, c.heads, c.seq, c.seq};

  Tensor z = Tensor::EmptyHost(DType::kF32, q.shape());
  Tensor scores = Tensor::EmptyHost(DType::kF32, square);
  Tensor pattern = Tensor::EmptyHost(DType::kF32, square);
  ASSERT_OK(cpu_.Attention(q, k, v, IntsHost(mask, {c.batch, c.seq}), scale, z,
                           want_scores ? &scores : nullptr, want_pattern ? &pattern : nullptr,
                           c.options));

  Tensor z_dev = Poisoned(be, c.dtype, q.shape());
  Tensor scores_dev = want_scores ? Poisoned(be, c.dtype, square) : Tensor();
  Tensor pattern_dev = want_pattern ? Poisoned(be, c.dtype, square) : Tensor();
  ASSERT_OK(be.Attention(Upload(be, q, c.dtype), Upload(be, k, c.dtype), Upload(be, v, c.dtype),
                         UploadInts(be, mask, {c.batch, c.seq}), scale, z_dev,
                         want_scores ? &scores_dev : nullptr, want_pattern ? &pattern_dev : nullptr,
                         c.options));
  const double tolerance = Tolerance(c.dtype, true);
  ExpectClose(Download(be, z_dev), z, tolerance, "z");
  if (want_scores) {
    // -inf exactly where masked (ExpectClose counts infinite mismatches).
    ExpectClose(Download(be, scores_dev), scores, tolerance, "scores");
  }
  if (want_pattern) ExpectClose(Download(be, pattern_dev), pattern, tolerance, "pattern");
}

std::vector<AttentionCase> AttentionCases() {
  std::vector<AttentionCase> cases;
  // batch, seq, heads, kv_heads, d_head: single token, GQA groups of 1..12, head sizes from 1 to
  // 320 (above the flash kernel's 256: the materialised fallback), tiles cut mid-way.
  const int64_t shapes[][5] = {{1, 1, 1, 1, 64},   {2, 17, 4, 2, 16},   {1, 7, 12, 12, 64},
                               {2, 129, 6, 2, 128}, {1, 300, 8, 1, 80},  {3, 65, 4, 4, 63},
                               {2, 33, 2, 2, 256},  {1, 40, 2, 1, 320},  {4, 9, 12, 3, 1}};
  for (const auto& s : shapes) {
    for (MaskKind mask : {MaskKind::kAll, MaskKind::kLeftPadding, MaskKind::kHoles}) {
      for (DType dtype : {DType::kF32, DType::kBF16}) {
        for (Outputs outputs : {Outputs::kZ, Outputs::kPattern, Outputs::kScores, Outputs::kBoth}) {
          cases.push_back({s[0], s[1], s[2], s[3], s[4], mask, outputs, dtype, false});
        }
        cases.push_back({s[0], s[1], s[2], s[3], s[4], mask, Outputs::kZ, dtype, true});
        cases.push_back({s[0], s[1], s[2], s[3], s[4], mask, Outputs::kBoth, dtype, true});
      }
    }
    cases.push_back({s[0], s[1], s[2], s[3], s[4], MaskKind::kLeftPadding, Outputs::kZ, DType::kF16, false});
    cases.push_back({s[0], s[1], s[2], s[3], s[4], MaskKind::kHoles, Outputs::kBoth, DType::kF16, false});
    // Sliding windows (one key, a few, longer than the sequence) and Gemma-2's soft cap, on both
    // the flash and the materialised kernels.
    for (AttentionOptions options : {AttentionOptions{.window = 1}, AttentionOptions{.window = 5},
                                     AttentionOptions{.window = 512}, AttentionOptions{.softcap = 2},
                                     AttentionOptions{.window = 3, .softcap = 1.5f}}) {
      for (bool plain : {false, true}) {
        cases.push_back({s[0], s[1], s[2], s[3], s[4], MaskKind::kLeftPadding,
                         plain ? Outputs::kBoth : Outputs::kZ, DType::kF32, plain, options});
        cases.push_back({s[0], s[1], s[2], s[3], s[4], MaskKind::kHoles, Outputs::kBoth,
                         DType::kBF16, plain, options});
      }
    }
  }
  return cases;
}

std::string AttentionName(const ::testing::TestParamInfo<AttentionCase>& info) {
  const AttentionCase& c = info.param;
  const char* masks[] = {"all", "leftpad", "holes"};
  const char* outputs[] = {"z", "pattern", "scores", "both"};
  return "b" + std::to_string(c.batch) + "s" + std::to_string(c.seq) + "h" + std::to_string(c.heads) +
         "kv" + std::to_string(c.kv_heads) + "dh" + std::to_string(c.d_head) + "_" +
         masks[static_cast<int>(c.mask)] + "_" + outputs[static_cast<int>(c.outputs)] + "_" +
         DTypeLabel(c.dtype) + (c.plain ? "_materialised" : "") +
         (c.options.window > 0 ? "_window" + std::to_string(c.options.window) : "") +
         (c.options.softcap > 0 ? "_softcap" + std::to_string(static_cast<int>(c.options.softcap * 10)) : "");
}

void PrintTo(const AttentionCase& c, std::ostream* os) {
  *os << AttentionName(::testing::TestParamInfo<AttentionCase>(c, 0));
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTest, ::testing::ValuesIn(AttentionCases()), AttentionName);

// A padded row's queries before its first real token see no key: zero pattern and output.
TEST_F(GpuTest, AttentionQueryWithoutVisibleKeyIsZero) {
  for (bool use_plain : {false, true}) {
    CudaBackend& be = pick(use_plain);
    const int64_t seq = 5;
    std::mt19937 rng(9);
    const Tensor q = Upload(be, RandomHost({1, seq, 2, 8}, rng), DType::kF32);
    const Tensor kv = Upload(be, RandomHost({1, seq, 1, 8}, rng), DType::kF32);
    Tensor z = Poisoned(be, DType::kF32, {1, seq, 2, 8});
    Tensor pattern = Poisoned(be, DType::kF32, {1, 2, seq, seq});
    Tensor scores = Poisoned(be, DType::kF32, {1, 2, seq, seq});
    ASSERT_OK(be.Attention(q, kv, kv, UploadInts(be, {0, 0, 1, 1, 1}, {1, seq}), 0.5f, z,
                           use_plain ? &scores : nullptr, use_plain ? &pattern : nullptr));
    const Tensor zh = Download(be, z);
    for (int64_t i = 0; i < 2 * 2 * 8; ++i) EXPECT_EQ(zh.data<float>()[i], 0.0f) << i;
    if (use_plain) {
      const Tensor ph = Download(be, pattern), sh = Download(be, scores);
      for (int64_t h = 0; h < 2; ++h) {
        for (int64_t j = 0; j < seq; ++j) {
          EXPECT_EQ(ph.data<float>()[(h * seq + 0) * seq + j], 0.0f);
          EXPECT_EQ(sh.data<float>()[(h * seq + 0) * seq + j], -kInf);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Elementwise.

TEST_F(GpuTest, AddMulActivateMatchCpu) {
  std::mt19937 rng(11);
  for (int64_t n : {1, 7, 129 * 768 + 3}) {
    for (DType dtype : kFloatTypes) {
      SCOPED_TRACE("n=" + std::to_string(n) + " " + DTypeLabel(dtype));
      const Tensor a = Rounded(RandomHost({n}, rng, -4, 4), dtype);
      const Tensor b = Rounded(RandomHost({n}, rng, -4, 4), dtype);
      const Tensor a_dev = Upload(gpu(), a, dtype), b_dev = Upload(gpu(), b, dtype);
      const double tolerance = Tolerance(dtype, false);
      {
        Tensor expected = Tensor::EmptyHost(DType::kF32, {n});
        ASSERT_OK(cpu_.Add(a, b, expected));
        Tensor out = Poisoned(gpu(), dtype, {n});
        ASSERT_OK(gpu().Add(a_dev, b_dev, out));
        ExpectClose(Download(gpu(), out), expected, tolerance, "Add");
      }
      {
        Tensor expected = Tensor::EmptyHost(DType::kF32, {n});
        ASSERT_OK(cpu_.Mul(a, b, expected));
        Tensor out = Poisoned(gpu(), dtype, {n});
        ASSERT_OK(gpu().Mul(a_dev, b_dev, out));
        ExpectClose(Download(gpu(), out), expected, tolerance, "Mul");
      }
      for (Activation act : kAllActivations) {
        Tensor expected = Tensor::EmptyHost(DType::kF32, {n});
        ASSERT_OK(cpu_.Activate(act, a, expected));
        Tensor out = Poisoned(gpu(), dtype, {n});
        ASSERT_OK(gpu().Activate(act, a_dev, out));
        ExpectClose(Download(gpu(), out), expected, tolerance, "Activate " + ActLabel(act));
      }
      {
        Tensor expected = Tensor::EmptyHost(DType::kF32, {n});
        ASSERT_OK(cpu_.Scale(a, 6.5f, expected));
        Tensor out = Poisoned(gpu(), dtype, {n});
        ASSERT_OK(gpu().Scale(a_dev, 6.5f, out));
        ExpectClose(Download(gpu(), out), expected, tolerance, "Scale");
      }
      {
        Tensor expected = Tensor::EmptyHost(DType::kF32, {n});
        ASSERT_OK(cpu_.SoftCap(a, 1.5f, expected));
        Tensor out = Poisoned(gpu(), dtype, {n});
        ASSERT_OK(gpu().SoftCap(a_dev, 1.5f, out));
        ExpectClose(Download(gpu(), out), expected, tolerance, "SoftCap");
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// SplitQkv.

TEST_F(GpuTest, SplitQkvCopiesExactly) {
  std::mt19937 rng(13);
  const int64_t configs[][4] = {{1, 4, 4, 16}, {7, 12, 12, 64}, {129, 8, 2, 64}, {17, 3, 1, 63}};
  for (const auto& cfg : configs) {
    for (DType dtype : kFloatTypes) {
      const int64_t t = cfg[0], hq = cfg[1], hkv = cfg[2], dh = cfg[3];
      SCOPED_TRACE("t=" + std::to_string(t) + " hq=" + std::to_string(hq) + " hkv=" + std::to_string(hkv) +
                   " " + DTypeLabel(dtype));
      const Tensor qkv = Rounded(RandomHost({t, (hq + 2 * hkv) * dh}, rng), dtype);
      Tensor q = Tensor::EmptyHost(DType::kF32, {t, hq, dh});
      Tensor k = Tensor::EmptyHost(DType::kF32, {t, hkv, dh});
      Tensor v = Tensor::EmptyHost(DType::kF32, {t, hkv, dh});
      ASSERT_OK(cpu_.SplitQkv(qkv, q, k, v));
      Tensor qd = Poisoned(gpu(), dtype, q.shape()), kd = Poisoned(gpu(), dtype, k.shape()),
             vd = Poisoned(gpu(), dtype, v.shape());
      ASSERT_OK(gpu().SplitQkv(Upload(gpu(), qkv, dtype), qd, kd, vd));
      ExpectClose(Download(gpu(), qd), q, 0.0, "q");
      ExpectClose(Download(gpu(), kd), k, 0.0, "k");
      ExpectClose(Download(gpu(), vd), v, 0.0, "v");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// CrossEntropy and LogSoftmax.

TEST_F(GpuTest, CrossEntropyAndLogSoftmaxMatchCpu) {
  std::mt19937 rng(17);
  for (int64_t vocab : {1, 300, 50257}) {
    for (int64_t t : {1, 7, 129}) {
      for (DType dtype : kFloatTypes) {
        SCOPED_TRACE("vocab=" + std::to_string(vocab) + " t=" + std::to_string(t) + " " + DTypeLabel(dtype));
        const Tensor logits = Rounded(RandomHost({t, vocab}, rng, -8, 8), dtype);
        std::vector<int32_t> targets(t);
        std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(vocab) - 1);
        for (int32_t& target : targets) target = pick(rng);
        targets[0] = -1;  // ignored: loss 0
        if (t > 1) targets[1] = static_cast<int32_t>(vocab);  // out of range: loss 0, like the CPU
        const Tensor logits_dev = Upload(gpu(), logits, dtype);

        Tensor loss = Tensor::EmptyHost(DType::kF32, {t});
        ASSERT_OK(cpu_.CrossEntropy(logits, IntsHost(targets, {t}), loss));
        Tensor loss_dev = Poisoned(gpu(), DType::kF32, {t});
        ASSERT_OK(gpu().CrossEntropy(logits_dev, UploadInts(gpu(), targets, {t}), loss_dev));
        ExpectClose(Download(gpu(), loss_dev), loss, Tolerance(dtype, false), "CrossEntropy");

        Tensor log_probs = Tensor::EmptyHost(DType::kF32, {t, vocab});
        ASSERT_OK(cpu_.LogSoftmax(logits, log_probs));
        Tensor log_probs_dev = Poisoned(gpu(), dtype, {t, vocab});
        ASSERT_OK(gpu().LogSoftmax(logits_dev, log_probs_dev));
        ExpectClose(Download(gpu(), log_probs_dev), log_probs, Tolerance(dtype, false), "LogSoftmax");
      }
    }
  }
}

// LogSumExp, and GatherColumns less it (the engine's target log-probs), against the CPU.
TEST_F(GpuTest, LogSumExpAndGatherColumnsMatchCpu) {
  std::mt19937 rng(19);
  for (int64_t vocab : {1, 300, 50257}) {
    for (int64_t t : {1, 7, 129}) {
      for (DType dtype : kFloatTypes) {
        SCOPED_TRACE("vocab=" + std::to_string(vocab) + " t=" + std::to_string(t) + " " + DTypeLabel(dtype));
        const Tensor logits = Rounded(RandomHost({t, vocab}, rng, -8, 8), dtype);
        const Tensor logits_dev = Upload(gpu(), logits, dtype);
        Tensor lse = Tensor::EmptyHost(DType::kF32, {t});
        ASSERT_OK(cpu_.LogSumExp(logits, lse));
        Tensor lse_dev = Poisoned(gpu(), DType::kF32, {t});
        ASSERT_OK(gpu().LogSumExp(logits_dev, lse_dev));
        ExpectClose(Download(gpu(), lse_dev), lse, Tolerance(dtype, false), "LogSumExp");

        // First, last and a repeated column.
        const std::vector<int32_t> columns = {0, static_cast<int32_t>(vocab - 1),
                                              static_cast<int32_t>(vocab / 2), 0};
        const int64_t n = static_cast<int64_t>(columns.size());
        const Tensor columns_dev = UploadInts(gpu(), columns, {n});
        for (bool shifted : {false, true}) {
          Tensor expected = Tensor::EmptyHost(DType::kF32, {t, n});
          ASSERT_OK(cpu_.GatherColumns(logits, IntsHost(columns, {n}), shifted ? &lse : nullptr, expected));
          Tensor out = Poisoned(gpu(), DType::kF32, {t, n});
          ASSERT_OK(gpu().GatherColumns(logits_dev, columns_dev, shifted ? &lse_dev : nullptr, out));
          // A plain gather copies exactly; less the log-sum-exp, the shift's error carries over.
          ExpectClose(Download(gpu(), out), expected, shifted ? Tolerance(dtype, false) : 0.0,
                      shifted ? "GatherColumns - lse" : "GatherColumns");
        }
      }
    }
  }
}

TEST_F(GpuTest, GatherColumnsColumnOutOfRangeIsReportedAtTheNextSync) {
  const Tensor x = Upload(gpu(), FilledHost({2, 5}, 1.0f), DType::kF32);
  Tensor out = Poisoned(gpu(), DType::kF32, {2, 3});
  ASSERT_OK(gpu().GatherColumns(x, UploadInts(gpu(), {4, 5, -1}, {3}), nullptr, out));
  Tensor host = Tensor::EmptyHost(DType::kF32, {2, 3});
  const absl::Status status = gpu().CopyToHost(out, host);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_NE(status.message().find("GatherColumns column out of range"), std::string::npos) << status;
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(host.data<float>()[r * 3], 1.0f);
    EXPECT_EQ(host.data<float>()[r * 3 + 1], 0.0f);  // never a read out of bounds
    EXPECT_EQ(host.data<float>()[r * 3 + 2], 0.0f);
  }
  EXPECT_OK(gpu().Synchronize());
}

// TopK is a selection: values and indices equal the CPU's exactly, ties (many, on coarse values),
// signed zeros and NaNs included, for k from 1 to the whole row, chunked (plain) or not.
TEST_F(GpuTest, TopKMatchesCpuExactly) {
  std::mt19937 rng(23);
  enum class Values { kRandom, kCoarse, kZerosAndNaNs };
  for (int64_t cols : {1, 7, 300, 50257}) {
    for (int64_t t : {1, 9, 130}) {
      for (Values kind : {Values::kRandom, Values::kCoarse, Values::kZerosAndNaNs}) {
        for (DType dtype : kFloatTypes) {
          Tensor x = RandomHost({t, cols}, rng, -8, 8);
          std::uniform_int_distribution<int> level(-3, 3), which(0, 3);
          for (float& v : x.span<float>()) {
            if (kind == Values::kCoarse) v = static_cast<float>(level(rng));
            if (kind == Values::kZerosAndNaNs) {
              const int p = which(rng);
              v = p == 0 ? 0.0f : p == 1 ? -0.0f : p == 2 ? kNaN : v;
            }
          }
          x = Rounded(x, dtype);
          for (int64_t k : {int64_t{1}, std::min<int64_t>(5, cols), cols}) {
            for (bool use_plain : {false, true}) {
              if (cols == 50257 && (k == cols || t == 130)) continue;  // keep the test quick
              SCOPED_TRACE("cols=" + std::to_string(cols) + " t=" + std::to_string(t) + " k=" +
                           std::to_string(k) + " kind=" + std::to_string(static_cast<int>(kind)) +
                           " " + DTypeLabel(dtype) + (use_plain ? " plain" : ""));
              CudaBackend& be = pick(use_plain);
              Tensor values = Tensor::EmptyHost(DType::kF32, {t, k});
              Tensor indices = Tensor::EmptyHost(DType::kI32, {t, k});
              ASSERT_OK(cpu_.TopK(x, k, values, indices));
              Tensor values_dev = Poisoned(be, dtype, {t, k});
              Tensor indices_dev = UploadInts(be, std::vector<int32_t>(t * k, -7), {t, k});
              ASSERT_OK(be.TopK(Upload(be, x, dtype), k, values_dev, indices_dev));
              Tensor got_indices = Tensor::EmptyHost(DType::kI32, {t, k});
              ASSERT_OK(be.CopyToHost(indices_dev, got_indices));
              const Tensor got_values = Download(be, values_dev);
              for (int64_t i = 0; i < t * k; ++i) {
                ASSERT_EQ(got_indices.data<int32_t>()[i], indices.data<int32_t>()[i]) << i;
                const float want = values.data<float>()[i], got = got_values.data<float>()[i];
                ASSERT_TRUE(std::isnan(want) ? std::isnan(got) : got == want) << i << ": " << got << " vs " << want;
              }
            }
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Whole models: the engine on the CUDA backend against the engine on the CPU backend, and the
// logits against HF's (the committed fixtures of tests/engine/parity_test.cc).

struct ModelCase {
  std::string model;
  DType dtype;
};

void PrintTo(const ModelCase& c, std::ostream* os) { *os << c.model << " " << DTypeName(c.dtype); }

class WholeModelTest : public GpuParamTest<ModelCase> {
 protected:
  // f32: the CPU run is the reference up to GEMM summation order. bf16: weights and every
  // activation rounded to 8 bits of mantissa through two layers.
  double tolerance() const { return GetParam().dtype == DType::kF32 ? 1e-4 : 5e-2; }

  // The model on both backends and its committed fixtures.
  void SetUp() override {
    GpuParamTest<ModelCase>::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    const ModelCase& c = GetParam();
    const std::string dir = FixturePath("models/" + c.model);
    auto cpu_model = Transformer::Load(dir, std::make_shared<CpuBackend>());
    ASSERT_TRUE(cpu_model.ok()) << cpu_model.status();
    auto gpu_model = Transformer::Load(dir, Gpu().backend, c.dtype);
    ASSERT_TRUE(gpu_model.ok()) << gpu_model.status();
    cpu_model_ = *std::move(cpu_model);
    gpu_model_ = *std::move(gpu_model);
    expected_ = ReadAllTensors(FixturePath("expected/" + c.model + ".safetensors"));
  }

  int64_t layers() const { return cpu_model_->config().n_layers; }

  // A forward pass without captured or edited scores/patterns: every attention on the flash
  // kernel and every GEMM on cuBLASLt, or a silent slow path fails the test.
  void ExpectFastPaths(const CudaBackend::PathCounts& before, const CudaBackend::PathCounts& after) {
    EXPECT_EQ(after.attention_flash - before.attention_flash, layers());
    EXPECT_EQ(after.attention_materialized, before.attention_materialized)
        << "an attention was materialised without being asked for";
    EXPECT_GT(after.gemm_lt, before.gemm_lt);
    EXPECT_EQ(after.gemm_fallback, before.gemm_fallback) << "a GEMM left cuBLASLt";
  }

  std::unique_ptr<Transformer> cpu_model_, gpu_model_;
  std::map<std::string, Tensor> expected_;
};

// Every hook (captured all at once: the materialised attention path) and the outputs, on the
// padded batch of the fixtures (left padding: queries with no visible key).
TEST_P(WholeModelTest, EveryHookMatchesCpu) {

  for (const std::string batch : {"unpadded", "left", "right"}) {
    SCOPED_TRACE(batch);
    auto ids = expected_.find(batch + ".input_ids");
    ASSERT_NE(ids, expected_.end());
    ForwardInput input;
    input.tokens = ids->second;
    if (auto mask = expected_.find(batch + ".attention_mask"); mask != expected_.end()) {
      input.attention_mask = mask->second;
    }
    const ForwardOptions options{.logits = LogitsMode::kAll, .loss_per_token = true};
    HookPlan cpu_plan(cpu_model_->hooks());
    HookPlan gpu_plan(gpu_model_->hooks());
    ASSERT_OK(cpu_plan.Capture("*"));
    ASSERT_OK(gpu_plan.Capture("*"));
    CollectingSink cpu_sink, gpu_sink;
    auto cpu_out = cpu_model_->Forward(input, cpu_plan, &cpu_sink, options);
    ASSERT_TRUE(cpu_out.ok()) << cpu_out.status();
    const CudaBackend::PathCounts before = gpu().path_counts();
    auto gpu_out = gpu_model_->Forward(input, gpu_plan, &gpu_sink, options);
    ASSERT_TRUE(gpu_out.ok()) << gpu_out.status();
    // Patterns captured: every layer materialises its scores, and says so.
    const CudaBackend::PathCounts after = gpu().path_counts();
    EXPECT_EQ(after.attention_materialized - before.attention_materialized, layers());
    EXPECT_EQ(after.attention_flash, before.attention_flash);
    EXPECT_EQ(after.gemm_fallback, before.gemm_fallback) << "a GEMM left cuBLASLt";

    EXPECT_EQ(gpu_sink.order, cpu_sink.order);
    for (const std::string& name : cpu_sink.order) {
      SCOPED_TRACE(name);
      const Tensor& ours = gpu_sink.values.at(name);
      EXPECT_EQ(ours.device(), Device::kCuda);
      EXPECT_EQ(ours.shape(), cpu_sink.values.at(name).shape());
      ExpectClose(Download(gpu(), ours), cpu_sink.values.at(name), tolerance(), name);
    }
    ExpectClose(gpu_out->logits, cpu_out->logits, tolerance(), "logits");
    ExpectClose(gpu_out->loss_per_token, cpu_out->loss_per_token, tolerance(), "loss_per_token");
  }
}

// Only the residual stream captured: every layer takes the flash attention path. Logits against
// the CPU run and against HF's on the unpadded batch.
TEST_P(WholeModelTest, FlashPathMatchesCpuAndHf) {

  for (const std::string batch : {"unpadded", "left"}) {
    SCOPED_TRACE(batch);
    ForwardInput input;
    input.tokens = expected_.at(batch + ".input_ids");
    if (auto mask = expected_.find(batch + ".attention_mask"); mask != expected_.end()) {
      input.attention_mask = mask->second;
    }
    HookPlan cpu_plan(cpu_model_->hooks());
    HookPlan gpu_plan(gpu_model_->hooks());
    ASSERT_OK(cpu_plan.Capture("blocks.*.hook_resid_post"));
    ASSERT_OK(gpu_plan.Capture("blocks.*.hook_resid_post"));
    CollectingSink cpu_sink, gpu_sink;
    auto cpu_out = cpu_model_->Forward(input, cpu_plan, &cpu_sink, {.logits = LogitsMode::kAll});
    ASSERT_TRUE(cpu_out.ok()) << cpu_out.status();
    const CudaBackend::PathCounts before = gpu().path_counts();
    auto gpu_out = gpu_model_->Forward(input, gpu_plan, &gpu_sink, {.logits = LogitsMode::kAll});
    ASSERT_TRUE(gpu_out.ok()) << gpu_out.status();
    ExpectFastPaths(before, gpu().path_counts());
    for (const std::string& name : cpu_sink.order) {
      ExpectClose(Download(gpu(), gpu_sink.values.at(name)), cpu_sink.values.at(name), tolerance(), name);
    }
    ExpectClose(gpu_out->logits, cpu_out->logits, tolerance(), "logits");
    if (batch == "unpadded") {
      ExpectClose(gpu_out->logits, expected_.at("unpadded.hf.logits"), tolerance(), "logits vs HF");
    }
    // Last-token logits go through the Embedding gather of activation rows.
    auto cpu_last = cpu_model_->Forward(input, cpu_plan, &cpu_sink, {.logits = LogitsMode::kLast});
    auto gpu_last = gpu_model_->Forward(input, gpu_plan, &gpu_sink, {.logits = LogitsMode::kLast});
    ASSERT_TRUE(cpu_last.ok() && gpu_last.ok());
    ExpectClose(gpu_last->logits, cpu_last->logits, tolerance(), "last-token logits");
  }
}

// The engine's logits outputs on the device (top-k, target log-probs, last-token rows, loss)
// against the CPU engine's, at every position and at the last real token. Top-k indices are
// checked against the GPU's own logits: between backends, near-ties may legitimately swap.
TEST_P(WholeModelTest, LogitsOutputsMatchCpu) {
  const int64_t vocab = cpu_model_->config().vocab_size;
  const std::vector<int32_t> targets = {0, 3, static_cast<int32_t>(vocab - 1)};

  for (const std::string batch : {"unpadded", "left", "right"}) {
    auto ids = expected_.find(batch + ".input_ids");
    ASSERT_NE(ids, expected_.end());
    ForwardInput input{.tokens = ids->second};
    if (auto mask = expected_.find(batch + ".attention_mask"); mask != expected_.end()) {
      input.attention_mask = mask->second;
    }
    for (OutputPositions at : {OutputPositions::kAll, OutputPositions::kLast}) {
      SCOPED_TRACE(batch + (at == OutputPositions::kAll ? " every position" : " last position"));
      const ForwardOptions options{
          .logits = at == OutputPositions::kAll ? LogitsMode::kAll : LogitsMode::kLast,
          .top_k = 5, .target_tokens = targets, .outputs_at = at, .loss_per_token = true};
      HookPlan cpu_plan(cpu_model_->hooks()), gpu_plan(gpu_model_->hooks());
      auto cpu_out = cpu_model_->Forward(input, cpu_plan, nullptr, options);
      ASSERT_TRUE(cpu_out.ok()) << cpu_out.status();
      auto gpu_out = gpu_model_->Forward(input, gpu_plan, nullptr, options);
      ASSERT_TRUE(gpu_out.ok()) << gpu_out.status();
      for (const Tensor* t : {&gpu_out->logits, &gpu_out->top_k_values, &gpu_out->top_k_indices,
                              &gpu_out->target_log_probs, &gpu_out->loss_per_token}) {
        EXPECT_EQ(t->device(), Device::kCpu);
      }
      ExpectClose(gpu_out->logits, cpu_out->logits, tolerance(), "logits");
      ExpectClose(gpu_out->top_k_values, cpu_out->top_k_values, tolerance(), "top-k values");
      ExpectClose(gpu_out->target_log_probs, cpu_out->target_log_probs, tolerance(), "target log-probs");
      ExpectClose(gpu_out->loss_per_token, cpu_out->loss_per_token, tolerance(), "loss_per_token");
      ASSERT_EQ(gpu_out->top_k_indices.shape(), cpu_out->top_k_indices.shape());
      const int64_t rows = gpu_out->logits.numel() / vocab;
      std::vector<int32_t> scratch;
      for (int64_t r = 0; r < rows; ++r) {
        float values[5];
        int32_t indices[5];
        TopK(gpu_out->logits.data<float>() + r * vocab, vocab, 5, values, indices, scratch);
        for (int j = 0; j < 5; ++j) {
          ASSERT_EQ(gpu_out->top_k_indices.data<int32_t>()[r * 5 + j], indices[j]) << r;
          ASSERT_EQ(gpu_out->top_k_values.data<float>()[r * 5 + j], values[j]) << r;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, WholeModelTest,
    ::testing::Values(ModelCase{"tiny-gpt2", DType::kF32}, ModelCase{"tiny-gpt2", DType::kBF16},
                      ModelCase{"tiny-llama", DType::kF32}, ModelCase{"tiny-llama", DType::kBF16},
                      ModelCase{"tiny-llama-variant", DType::kF32},
                      ModelCase{"tiny-llama-variant", DType::kBF16},
                      ModelCase{"tiny-pythia", DType::kF32}, ModelCase{"tiny-pythia", DType::kBF16},
                      ModelCase{"tiny-qwen3", DType::kF32}, ModelCase{"tiny-qwen3", DType::kBF16},
                      ModelCase{"tiny-phi3", DType::kF32}, ModelCase{"tiny-phi3", DType::kBF16},
                      ModelCase{"tiny-olmo2", DType::kF32}, ModelCase{"tiny-olmo2", DType::kBF16},
                      ModelCase{"tiny-mistral", DType::kF32},
                      ModelCase{"tiny-mistral", DType::kBF16},
                      ModelCase{"tiny-gemma2", DType::kF32},
                      ModelCase{"tiny-gemma2", DType::kBF16},
                      ModelCase{"tiny-qwen2", DType::kF32}, ModelCase{"tiny-qwen2", DType::kBF16},
                      ModelCase{"tiny-gptj", DType::kF32}, ModelCase{"tiny-gptj", DType::kBF16},
                      ModelCase{"tiny-gemma3", DType::kF32},
                      ModelCase{"tiny-gemma3", DType::kBF16}),
    [](const auto& info) {
      std::string name = info.param.model + "_" + DTypeLabel(info.param.dtype);
      std::replace(name.begin(), name.end(), '-', '_');
      return name;
    });

}  // namespace
}  // namespace glassbox
