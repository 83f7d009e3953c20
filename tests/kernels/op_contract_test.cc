// The op contract (kernels/op_contract.h, documented in kernels/backend.h) on every backend: one
// table of calls, each with the status it must return, run on the CPU backend and, where a CUDA
// device exists, on the CUDA backend. Undefined tensors, tensors on the wrong device, rank 0 where
// an op reads axes, mismatched shapes, wrong dtypes, impossible head groupings and empty reduced
// axes are INTERNAL (a caller bug), never a crash; empty but consistent calls are OK no-ops.
//
// Tensors on "the wrong device" for the CPU backend are host memory labelled CUDA: a backend that
// failed to check the device would read valid memory and fail the test rather than crash it.
#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_probe.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using Code = absl::StatusCode;
constexpr Code kBug = Code::kInternal;
constexpr Code kOk = Code::kOk;

enum class BackendKind { kCpu, kCuda };

// Makes tensors for one backend: zero-filled ones on its device, host ones, and ones on a device
// it does not own.
class Env {
 public:
  explicit Env(Backend& backend) : be(backend) {}

  Tensor On(DType dtype, Shape shape) {
    Tensor t = *be.Allocate(dtype, shape);
    Tensor zeros = Tensor::ZerosHost(dtype, shape);
    status.Update(be.CopyFromHost(zeros, t));
    return t;
  }
  Tensor F(Shape shape) { return On(DType::kF32, std::move(shape)); }
  Tensor I(Shape shape) { return On(DType::kI32, std::move(shape)); }
  Tensor Host(Shape shape, DType dtype = DType::kF32) { return Tensor::ZerosHost(dtype, shape); }
  Tensor Elsewhere(Shape shape) {
    if (be.device() == Device::kCuda) return Host(std::move(shape));
    Tensor host = Host(shape);
    auto storage = std::make_shared<Storage>(host.raw_data(), host.nbytes(), Device::kCuda,
                                             [host](void*) {});
    return Tensor(std::move(storage), DType::kF32, std::move(shape));
  }

  Backend& be;
  absl::Status status;  // of the setup copies
};

struct Case {
  std::string name;
  Code code;
  std::function<absl::Status(Env&)> call;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

const Tensor kUndefined;

std::vector<Case> Cases() {
  using A = Activation;
  const DType f16 = DType::kF16, i32 = DType::kI32;
  std::vector<Case> cases = {
      // ---- memory ----
      {"Allocate_NegativeDimension", kBug,
       [](Env& e) { return e.be.Allocate(DType::kF32, {2, -1}).status(); }},
      {"Allocate_EmptyAndRank0", kOk,
       [](Env& e) {
         auto empty = e.be.Allocate(DType::kF32, {0, 3});
         return empty.ok() ? e.be.Allocate(DType::kF32, {}).status() : empty.status();
       }},
      {"CopyFromHost_NumelMismatch", kBug,
       [](Env& e) { Tensor out = e.F({4}); return e.be.CopyFromHost(e.Host({3}), out); }},
      {"CopyFromHost_DTypeMismatch", kBug,
       [](Env& e) { Tensor out = e.F({4}); return e.be.CopyFromHost(e.Host({4}, i32), out); }},
      {"CopyFromHost_UndefinedHost", kBug,
       [](Env& e) { Tensor out = e.F({1}); return e.be.CopyFromHost(kUndefined, out); }},
      {"CopyFromHost_UndefinedOut", kBug,
       [](Env& e) { Tensor out; return e.be.CopyFromHost(e.Host({1}), out); }},
      {"CopyFromHost_OutNotOnDevice", kBug,
       [](Env& e) { Tensor out = e.Elsewhere({4}); return e.be.CopyFromHost(e.Host({4}), out); }},
      {"CopyFromHost_Empty", kOk,
       [](Env& e) { Tensor out = e.F({0}); return e.be.CopyFromHost(e.Host({0}), out); }},
      {"CopyToHost_NumelMismatch", kBug,
       [](Env& e) { Tensor host = e.Host({3}); return e.be.CopyToHost(e.F({4}), host); }},
      {"CopyToHost_UndefinedSource", kBug,
       [](Env& e) { Tensor host = e.Host({1}); return e.be.CopyToHost(kUndefined, host); }},
      {"CopyToHost_Rank0", kOk,
       [](Env& e) { Tensor host = e.Host({}); return e.be.CopyToHost(e.F({}), host); }},
      {"Convert_NumelMismatch", kBug,
       [](Env& e) { Tensor out = e.F({3}); return e.be.Convert(e.F({4}), out); }},
      {"Convert_FloatToInt", kBug,
       [](Env& e) { Tensor out = e.I({4}); return e.be.Convert(e.F({4}), out); }},
      {"Convert_ToF16OnEveryBackend", kOk,
       [](Env& e) { Tensor out = e.On(f16, {4}); return e.be.Convert(e.F({4}), out); }},

      // ---- Linear ----
      {"Linear_Rank0Input", kBug,
       [](Env& e) {
         Tensor out = e.F({4});
         return e.be.Linear(e.F({}), e.F({4, 1}), nullptr, A::kIdentity, out);
       }},
      {"Linear_InnerMismatch", kBug,
       [](Env& e) {
         Tensor out = e.F({3, 4});
         return e.be.Linear(e.F({3, 8}), e.F({4, 9}), nullptr, A::kIdentity, out);
       }},
      {"Linear_WeightRank1", kBug,
       [](Env& e) {
         Tensor out = e.F({3, 4});
         return e.be.Linear(e.F({3, 8}), e.F({32}), nullptr, A::kIdentity, out);
       }},
      {"Linear_OutNumel", kBug,
       [](Env& e) {
         Tensor out = e.F({3, 5});
         return e.be.Linear(e.F({3, 8}), e.F({4, 8}), nullptr, A::kIdentity, out);
       }},
      {"Linear_BiasNumel", kBug,
       [](Env& e) {
         Tensor out = e.F({3, 4});
         Tensor bias = e.F({5});
         return e.be.Linear(e.F({3, 8}), e.F({4, 8}), &bias, A::kIdentity, out);
       }},
      {"Linear_WeightDTypeDiffers", kBug,
       [](Env& e) {
         Tensor out = e.F({3, 4});
         return e.be.Linear(e.F({3, 8}), e.On(f16, {4, 8}), nullptr, A::kIdentity, out);
       }},
      {"Linear_IntegerInput", kBug,
       [](Env& e) {
         Tensor out = e.F({3, 4});
         return e.be.Linear(e.I({3, 8}), e.I({4, 8}), nullptr, A::kIdentity, out);
       }},
      {"Linear_UndefinedOut", kBug,
       [](Env& e) {
         Tensor out;
         return e.be.Linear(e.F({3, 8}), e.F({4, 8}), nullptr, A::kIdentity, out);
       }},
      {"Linear_WeightElsewhere", kBug,
       [](Env& e) {
         Tensor out = e.F({3, 4});
         return e.be.Linear(e.F({3, 8}), e.Elsewhere({4, 8}), nullptr, A::kIdentity, out);
       }},
      {"Linear_NoRows", kOk,
       [](Env& e) {
         Tensor out = e.F({0, 4});
         return e.be.Linear(e.F({0, 8}), e.F({4, 8}), nullptr, A::kGeluTanh, out);
       }},
      // An empty inner sum is zero (+ bias): on the CPU this was a division by zero.
      {"Linear_EmptyInnerIsZero", kOk,
       [](Env& e) -> absl::Status {
         Tensor out = e.F({3, 4});
         Tensor host = e.Host({3, 4});
         std::fill_n(host.data<float>(), host.numel(), 7.0f);
         if (auto s = e.be.CopyFromHost(host, out); !s.ok()) return s;
         if (auto s = e.be.Linear(e.F({3, 0}), e.F({4, 0}), nullptr, A::kIdentity, out); !s.ok()) {
           return s;
         }
         if (auto s = e.be.CopyToHost(out, host); !s.ok()) return s;
         for (float v : host.span<float>()) {
           if (v != 0.0f) return absl::DataLossError("an empty inner sum did not write zeros");
         }
         return absl::OkStatus();
       }},
      {"HeadProjection_Rank1", kBug,
       [](Env& e) { Tensor out = e.F({8}); return e.be.HeadProjection(e.F({8}), e.F({1, 8}), out); }},
      {"HeadProjection_WeightMismatch", kBug,
       [](Env& e) {
         Tensor out = e.F({3, 2, 5});
         return e.be.HeadProjection(e.F({3, 2, 4}), e.F({5, 7}), out);
       }},
      {"HeadProjection_OutNumel", kBug,
       [](Env& e) {
         Tensor out = e.F({3, 5});
         return e.be.HeadProjection(e.F({3, 2, 4}), e.F({5, 8}), out);
       }},
      {"HeadProjection_NoRows", kOk,
       [](Env& e) {
         Tensor out = e.F({0, 2, 5});
         return e.be.HeadProjection(e.F({0, 2, 4}), e.F({5, 8}), out);
       }},

      // ---- norms ----
      {"LayerNorm_Rank0", kBug,
       [](Env& e) { Tensor out = e.F({}); return e.be.LayerNorm(e.F({}), nullptr, nullptr, 1e-5f, out, nullptr, nullptr); }},
      {"LayerNorm_EmptyLastAxis", kBug,
       [](Env& e) { Tensor out = e.F({3, 0}); return e.be.LayerNorm(e.F({3, 0}), nullptr, nullptr, 1e-5f, out, nullptr, nullptr); }},
      {"LayerNorm_WeightNumel", kBug,
       [](Env& e) {
         Tensor out = e.F({3, 8});
         Tensor w = e.F({7});
         return e.be.LayerNorm(e.F({3, 8}), &w, nullptr, 1e-5f, out, nullptr, nullptr);
       }},
      {"LayerNorm_ScaleNumel", kBug,
       [](Env& e) {
         Tensor out = e.F({3, 8});
         Tensor scale = e.F({4, 1});
         return e.be.LayerNorm(e.F({3, 8}), nullptr, nullptr, 1e-5f, out, &scale, nullptr);
       }},
      {"LayerNorm_OutDTypeDiffers", kBug,
       [](Env& e) {
         Tensor out = e.I({3, 8});
         return e.be.LayerNorm(e.F({3, 8}), nullptr, nullptr, 1e-5f, out, nullptr, nullptr);
       }},
      {"LayerNorm_NoRows", kOk,
       [](Env& e) {
         Tensor out = e.F({0, 8});
         Tensor scale = e.F({0, 1});
         return e.be.LayerNorm(e.F({0, 8}), nullptr, nullptr, 1e-5f, out, &scale, nullptr);
       }},
      {"RmsNorm_EmptyLastAxis", kBug,
       [](Env& e) { Tensor out = e.F({2, 0}); return e.be.RmsNorm(e.F({2, 0}), nullptr, 1e-6f, out, nullptr, nullptr); }},
      {"RmsNorm_UnweightedNumel", kBug,
       [](Env& e) {
         Tensor out = e.F({3, 8});
         Tensor unweighted = e.F({3, 7});
         return e.be.RmsNorm(e.F({3, 8}), nullptr, 1e-6f, out, nullptr, &unweighted);
       }},
      {"RmsNorm_UndefinedWeight", kBug,
       [](Env& e) {
         Tensor out = e.F({3, 8});
         Tensor w;
         return e.be.RmsNorm(e.F({3, 8}), &w, 1e-6f, out, nullptr, nullptr);
       }},

      // ---- embeddings and positions ----
      {"Embedding_TableRank1", kBug,
       [](Env& e) { Tensor out = e.F({2, 4}); return e.be.Embedding(e.F({40}), e.I({2}), out); }},
      {"Embedding_FloatIds", kBug,
       [](Env& e) { Tensor out = e.F({2, 4}); return e.be.Embedding(e.F({10, 4}), e.F({2}), out); }},
      {"Embedding_OutNumel", kBug,
       [](Env& e) { Tensor out = e.F({3, 4}); return e.be.Embedding(e.F({10, 4}), e.I({2}), out); }},
      {"Embedding_OutDTypeDiffers", kBug,
       [](Env& e) { Tensor out = e.I({2, 4}); return e.be.Embedding(e.F({10, 4}), e.I({2}), out); }},
      {"Embedding_IdsElsewhere", kBug,
       [](Env& e) { Tensor out = e.F({2, 4}); return e.be.Embedding(e.F({10, 4}), e.Elsewhere({2}), out); }},
      {"Embedding_NoIds", kOk,
       [](Env& e) { Tensor out = e.F({0, 4}); return e.be.Embedding(e.F({10, 4}), e.I({0}), out); }},
      {"Embedding_IntegerRows", kOk,
       [](Env& e) { Tensor out = e.I({2, 4}); return e.be.Embedding(e.I({10, 4}), e.I({2}), out); }},
      {"Rotary_Rank1", kBug,
       [](Env& e) { Tensor out = e.F({8}); return e.be.Rotary(e.F({8}), e.F({16, 4}), e.F({16, 4}), e.I({1}), 8, out); }},
      {"Rotary_OddRotaryDim", kBug,
       [](Env& e) { Tensor out = e.F({2, 1, 8}); return e.be.Rotary(e.F({2, 1, 8}), e.F({16, 3}), e.F({16, 3}), e.I({2}), 7, out); }},
      {"Rotary_RotaryDimAboveHead", kBug,
       [](Env& e) { Tensor out = e.F({2, 1, 8}); return e.be.Rotary(e.F({2, 1, 8}), e.F({16, 5}), e.F({16, 5}), e.I({2}), 10, out); }},
      {"Rotary_TableShape", kBug,
       [](Env& e) { Tensor out = e.F({2, 1, 8}); return e.be.Rotary(e.F({2, 1, 8}), e.F({16, 3}), e.F({16, 3}), e.I({2}), 8, out); }},
      {"Rotary_SinDiffersFromCos", kBug,
       [](Env& e) { Tensor out = e.F({2, 1, 8}); return e.be.Rotary(e.F({2, 1, 8}), e.F({16, 4}), e.F({15, 4}), e.I({2}), 8, out); }},
      {"Rotary_PositionsNumel", kBug,
       [](Env& e) { Tensor out = e.F({2, 1, 8}); return e.be.Rotary(e.F({2, 1, 8}), e.F({16, 4}), e.F({16, 4}), e.I({3}), 8, out); }},
      {"Rotary_NoTokens", kOk,
       [](Env& e) { Tensor out = e.F({0, 1, 8}); return e.be.Rotary(e.F({0, 1, 8}), e.F({16, 4}), e.F({16, 4}), e.I({0}), 8, out); }},

      // ---- attention ----
      {"Attention_Rank3", kBug,
       [](Env& e) {
         Tensor z = e.F({2, 4, 8});
         return e.be.Attention(e.F({2, 4, 8}), e.F({2, 4, 8}), e.F({2, 4, 8}), e.I({2, 4}), 1, z, nullptr, nullptr);
       }},
      {"Attention_HeadsNotDivisibleByKvHeads", kBug,
       [](Env& e) {
         Tensor z = e.F({1, 4, 3, 8});
         return e.be.Attention(e.F({1, 4, 3, 8}), e.F({1, 4, 2, 8}), e.F({1, 4, 2, 8}), e.I({1, 4}), 1, z, nullptr, nullptr);
       }},
      {"Attention_NoKvHeads", kBug,
       [](Env& e) {
         Tensor z = e.F({1, 4, 2, 8});
         return e.be.Attention(e.F({1, 4, 2, 8}), e.F({1, 4, 0, 8}), e.F({1, 4, 0, 8}), e.I({1, 4}), 1, z, nullptr, nullptr);
       }},
      {"Attention_EmptyHeadDim", kBug,
       [](Env& e) {
         Tensor z = e.F({1, 4, 2, 0});
         return e.be.Attention(e.F({1, 4, 2, 0}), e.F({1, 4, 2, 0}), e.F({1, 4, 2, 0}), e.I({1, 4}), 1, z, nullptr, nullptr);
       }},
      {"Attention_ValueShapeDiffers", kBug,
       [](Env& e) {
         Tensor z = e.F({1, 4, 2, 8});
         return e.be.Attention(e.F({1, 4, 2, 8}), e.F({1, 4, 1, 8}), e.F({1, 4, 2, 8}), e.I({1, 4}), 1, z, nullptr, nullptr);
       }},
      {"Attention_MaskNumel", kBug,
       [](Env& e) {
         Tensor z = e.F({1, 4, 2, 8});
         return e.be.Attention(e.F({1, 4, 2, 8}), e.F({1, 4, 1, 8}), e.F({1, 4, 1, 8}), e.I({1, 5}), 1, z, nullptr, nullptr);
       }},
      {"Attention_FloatMask", kBug,
       [](Env& e) {
         Tensor z = e.F({1, 4, 2, 8});
         return e.be.Attention(e.F({1, 4, 2, 8}), e.F({1, 4, 1, 8}), e.F({1, 4, 1, 8}), e.F({1, 4}), 1, z, nullptr, nullptr);
       }},
      {"Attention_PatternNumel", kBug,
       [](Env& e) {
         Tensor z = e.F({1, 4, 2, 8});
         Tensor pattern = e.F({1, 2, 4, 3});
         return e.be.Attention(e.F({1, 4, 2, 8}), e.F({1, 4, 1, 8}), e.F({1, 4, 1, 8}), e.I({1, 4}), 1, z, nullptr, &pattern);
       }},
      {"Attention_NegativeWindow", kBug,
       [](Env& e) {
         Tensor z = e.F({1, 4, 2, 8});
         return e.be.Attention(e.F({1, 4, 2, 8}), e.F({1, 4, 1, 8}), e.F({1, 4, 1, 8}), e.I({1, 4}), 1, z, nullptr, nullptr, {.window = -1});
       }},
      {"Attention_NanSoftcap", kBug,
       [](Env& e) {
         Tensor z = e.F({1, 4, 2, 8});
         return e.be.Attention(e.F({1, 4, 2, 8}), e.F({1, 4, 1, 8}), e.F({1, 4, 1, 8}), e.I({1, 4}), 1, z, nullptr, nullptr, {.softcap = std::nanf("")});
       }},
      {"Attention_QueriesOverCachedKeys", kOk,
       [](Env& e) {
         Tensor z = e.F({1, 1, 2, 8});
         Tensor pattern = e.F({1, 2, 1, 4});
         return e.be.Attention(e.F({1, 1, 2, 8}), e.F({1, 4, 1, 8}), e.F({1, 4, 1, 8}), e.I({1, 4}), 1, z, nullptr, &pattern, {.query_offset = 3});
       }},
      {"Attention_QueriesPastTheKeys", kBug,
       [](Env& e) {
         Tensor z = e.F({1, 2, 2, 8});
         return e.be.Attention(e.F({1, 2, 2, 8}), e.F({1, 4, 1, 8}), e.F({1, 4, 1, 8}), e.I({1, 4}), 1, z, nullptr, nullptr, {.query_offset = 3});
       }},
      {"Attention_NegativeQueryOffset", kBug,
       [](Env& e) {
         Tensor z = e.F({1, 4, 2, 8});
         return e.be.Attention(e.F({1, 4, 2, 8}), e.F({1, 4, 1, 8}), e.F({1, 4, 1, 8}), e.I({1, 4}), 1, z, nullptr, nullptr, {.query_offset = -1});
       }},
      {"Attention_FewerKeysThanQueries", kBug,
       [](Env& e) {
         Tensor z = e.F({1, 4, 2, 8});
         return e.be.Attention(e.F({1, 4, 2, 8}), e.F({1, 2, 1, 8}), e.F({1, 2, 1, 8}), e.I({1, 2}), 1, z, nullptr, nullptr);
       }},
      {"ScatterRows_Ok", kOk,
       [](Env& e) {
         Tensor table = e.F({6, 4});
         return e.be.ScatterRows(e.F({2, 4}), e.I({2}), table);
       }},
      {"ScatterRows_WidthMismatch", kBug,
       [](Env& e) {
         Tensor table = e.F({6, 4});
         return e.be.ScatterRows(e.F({2, 3}), e.I({2}), table);
       }},
      {"ScatterRows_FloatRows", kBug,
       [](Env& e) {
         Tensor table = e.F({6, 4});
         return e.be.ScatterRows(e.F({2, 4}), e.F({2}), table);
       }},
      {"ScatterRows_Empty", kOk,
       [](Env& e) {
         Tensor table = e.F({6, 4});
         return e.be.ScatterRows(e.F({0, 4}), e.I({0}), table);
       }},
      {"Attention_WindowAndSoftcap", kOk,
       [](Env& e) {
         Tensor z = e.F({1, 4, 2, 8});
         return e.be.Attention(e.F({1, 4, 2, 8}), e.F({1, 4, 1, 8}), e.F({1, 4, 1, 8}), e.I({1, 4}), 1, z, nullptr, nullptr, {.window = 2, .softcap = 50});
       }},
      {"Attention_NoBatch", kOk,
       [](Env& e) {
         Tensor z = e.F({0, 4, 2, 8});
         return e.be.Attention(e.F({0, 4, 2, 8}), e.F({0, 4, 1, 8}), e.F({0, 4, 1, 8}), e.I({0, 4}), 1, z, nullptr, nullptr);
       }},

      // ---- elementwise ----
      {"Add_NumelMismatch", kBug,
       [](Env& e) { Tensor out = e.F({4}); return e.be.Add(e.F({4}), e.F({5}), out); }},
      {"Add_DTypeMismatch", kBug,
       [](Env& e) { Tensor out = e.F({4}); return e.be.Add(e.F({4}), e.I({4}), out); }},
      {"Add_Elsewhere", kBug,
       [](Env& e) { Tensor out = e.F({4}); return e.be.Add(e.Elsewhere({4}), e.F({4}), out); }},
      {"Add_Rank0", kOk,
       [](Env& e) { Tensor out = e.F({}); return e.be.Add(e.F({}), e.F({}), out); }},
      {"Mul_OutNumel", kBug,
       [](Env& e) { Tensor out = e.F({3}); return e.be.Mul(e.F({4}), e.F({4}), out); }},
      {"Mul_Empty", kOk,
       [](Env& e) { Tensor out = e.F({0, 5}); return e.be.Mul(e.F({0, 5}), e.F({0, 5}), out); }},
      {"Activate_NumelMismatch", kBug,
       [](Env& e) { Tensor out = e.F({3}); return e.be.Activate(A::kRelu, e.F({4}), out); }},
      {"Activate_IntegerInput", kBug,
       [](Env& e) { Tensor out = e.I({4}); return e.be.Activate(A::kRelu, e.I({4}), out); }},
      {"Scale_InfiniteFactor", kBug,
       [](Env& e) { Tensor out = e.F({4}); return e.be.Scale(e.F({4}), INFINITY, out); }},
      {"Scale_NumelMismatch", kBug,
       [](Env& e) { Tensor out = e.F({3}); return e.be.Scale(e.F({4}), 2, out); }},
      {"Scale_Empty", kOk,
       [](Env& e) { Tensor out = e.F({0}); return e.be.Scale(e.F({0}), 2, out); }},
      {"SoftCap_ZeroCap", kBug,
       [](Env& e) { Tensor out = e.F({4}); return e.be.SoftCap(e.F({4}), 0, out); }},
      {"SoftCap_IntegerInput", kBug,
       [](Env& e) { Tensor out = e.I({4}); return e.be.SoftCap(e.I({4}), 30, out); }},
      {"SoftCap_RankZero", kOk,
       [](Env& e) { Tensor out = e.F({}); return e.be.SoftCap(e.F({}), 30, out); }},

      // ---- SplitQkv ----
      {"SplitQkv_Rank0", kBug,
       [](Env& e) { Tensor q = e.F({}), k = e.F({0}), v = e.F({0}); return e.be.SplitQkv(e.F({}), q, k, v); }},
      {"SplitQkv_WidthMismatch", kBug,
       [](Env& e) { Tensor q = e.F({3, 8}), k = e.F({3, 4}), v = e.F({3, 4}); return e.be.SplitQkv(e.F({3, 15}), q, k, v); }},
      {"SplitQkv_ValueNumel", kBug,
       [](Env& e) { Tensor q = e.F({3, 8}), k = e.F({3, 4}), v = e.F({3, 3}); return e.be.SplitQkv(e.F({3, 16}), q, k, v); }},
      {"SplitQkv_NoRowsButOutputs", kBug,
       [](Env& e) { Tensor q = e.F({1, 8}), k = e.F({0, 4}), v = e.F({0, 4}); return e.be.SplitQkv(e.F({0, 16}), q, k, v); }},
      {"SplitQkv_NoRows", kOk,
       [](Env& e) { Tensor q = e.F({0, 8}), k = e.F({0, 4}), v = e.F({0, 4}); return e.be.SplitQkv(e.F({0, 16}), q, k, v); }},

      // ---- outputs ----
      {"CrossEntropy_Rank0", kBug,
       [](Env& e) { Tensor loss = e.F({1}); return e.be.CrossEntropy(e.F({}), e.I({1}), loss); }},
      {"CrossEntropy_EmptyVocabulary", kBug,
       [](Env& e) { Tensor loss = e.F({3}); return e.be.CrossEntropy(e.F({3, 0}), e.I({3}), loss); }},
      {"CrossEntropy_TargetsNumel", kBug,
       [](Env& e) { Tensor loss = e.F({3}); return e.be.CrossEntropy(e.F({3, 10}), e.I({2}), loss); }},
      {"CrossEntropy_FloatTargets", kBug,
       [](Env& e) { Tensor loss = e.F({3}); return e.be.CrossEntropy(e.F({3, 10}), e.F({3}), loss); }},
      {"CrossEntropy_LossNumel", kBug,
       [](Env& e) { Tensor loss = e.F({4}); return e.be.CrossEntropy(e.F({3, 10}), e.I({3}), loss); }},
      {"CrossEntropy_NoRows", kOk,
       [](Env& e) { Tensor loss = e.F({0}); return e.be.CrossEntropy(e.F({0, 10}), e.I({0}), loss); }},
      // dim(-1) of a rank-0 tensor was read out of bounds here.
      {"LogSoftmax_Rank0", kBug,
       [](Env& e) { Tensor out = e.F({}); return e.be.LogSoftmax(e.F({}), out); }},
      {"LogSoftmax_EmptyLastAxis", kBug,
       [](Env& e) { Tensor out = e.F({2, 0}); return e.be.LogSoftmax(e.F({2, 0}), out); }},
      {"LogSoftmax_OutNumel", kBug,
       [](Env& e) { Tensor out = e.F({2, 9}); return e.be.LogSoftmax(e.F({2, 10}), out); }},
      {"LogSoftmax_OutDTypeDiffers", kBug,
       [](Env& e) { Tensor out = e.I({2, 10}); return e.be.LogSoftmax(e.F({2, 10}), out); }},
      {"LogSoftmax_NoRows", kOk,
       [](Env& e) { Tensor out = e.F({0, 10}); return e.be.LogSoftmax(e.F({0, 10}), out); }},
      {"LogSumExp_Rank0", kBug,
       [](Env& e) { Tensor lse = e.F({1}); return e.be.LogSumExp(e.F({}), lse); }},
      {"LogSumExp_EmptyLastAxis", kBug,
       [](Env& e) { Tensor lse = e.F({2}); return e.be.LogSumExp(e.F({2, 0}), lse); }},
      {"LogSumExp_OutNumel", kBug,
       [](Env& e) { Tensor lse = e.F({3}); return e.be.LogSumExp(e.F({2, 10}), lse); }},
      {"LogSumExp_OutNotF32", kBug,
       [](Env& e) { Tensor lse = e.On(f16, {2}); return e.be.LogSumExp(e.F({2, 10}), lse); }},
      {"LogSumExp_NoRows", kOk,
       [](Env& e) { Tensor lse = e.F({0}); return e.be.LogSumExp(e.F({0, 10}), lse); }},
      {"GatherColumns_Rank0", kBug,
       [](Env& e) { Tensor out = e.F({1}); return e.be.GatherColumns(e.F({}), e.I({1}), nullptr, out); }},
      {"GatherColumns_FloatColumns", kBug,
       [](Env& e) { Tensor out = e.F({2, 3}); return e.be.GatherColumns(e.F({2, 10}), e.F({3}), nullptr, out); }},
      {"GatherColumns_OutNumel", kBug,
       [](Env& e) { Tensor out = e.F({2, 4}); return e.be.GatherColumns(e.F({2, 10}), e.I({3}), nullptr, out); }},
      {"GatherColumns_ShiftNumel", kBug,
       [](Env& e) {
         Tensor out = e.F({2, 3});
         Tensor shift = e.F({3});
         return e.be.GatherColumns(e.F({2, 10}), e.I({3}), &shift, out);
       }},
      {"GatherColumns_OutNotF32", kBug,
       [](Env& e) { Tensor out = e.I({2, 3}); return e.be.GatherColumns(e.F({2, 10}), e.I({3}), nullptr, out); }},
      {"GatherColumns_NothingToGatherFrom", kBug,
       [](Env& e) { Tensor out = e.F({2, 3}); return e.be.GatherColumns(e.F({2, 0}), e.I({3}), nullptr, out); }},
      {"GatherColumns_NoColumns", kOk,
       [](Env& e) { Tensor out = e.F({2, 0}); return e.be.GatherColumns(e.F({2, 10}), e.I({0}), nullptr, out); }},
      {"TopK_KAboveRow", kBug,
       [](Env& e) { Tensor v = e.F({2, 11}), i = e.I({2, 11}); return e.be.TopK(e.F({2, 10}), 11, v, i); }},
      {"TopK_NegativeK", kBug,
       [](Env& e) { Tensor v = e.F({2, 1}), i = e.I({2, 1}); return e.be.TopK(e.F({2, 10}), -1, v, i); }},
      {"TopK_ValuesNumel", kBug,
       [](Env& e) { Tensor v = e.F({2, 4}), i = e.I({2, 3}); return e.be.TopK(e.F({2, 10}), 3, v, i); }},
      {"TopK_FloatIndices", kBug,
       [](Env& e) { Tensor v = e.F({2, 3}), i = e.F({2, 3}); return e.be.TopK(e.F({2, 10}), 3, v, i); }},
      {"TopK_Rank0", kBug,
       [](Env& e) { Tensor v = e.F({1}), i = e.I({1}); return e.be.TopK(e.F({}), 1, v, i); }},
      {"TopK_ZeroK", kOk,
       [](Env& e) { Tensor v = e.F({2, 0}), i = e.I({2, 0}); return e.be.TopK(e.F({2, 10}), 0, v, i); }},
      {"TopK_NoRows", kOk,
       [](Env& e) { Tensor v = e.F({0, 3}), i = e.I({0, 3}); return e.be.TopK(e.F({0, 10}), 3, v, i); }},
  };
  return cases;
}

// ---------------------------------------------------------------------------------------------
// Backends, made once. The CUDA backend exists where a device does (as tests/gpu probes it).

struct Backends {
  std::shared_ptr<Backend> cpu = std::make_shared<CpuBackend>();
  std::shared_ptr<Backend> cuda;
  std::string cuda_skip_reason;  // set when there is no usable device
  std::string cuda_failure;      // set when a device exists but the backend failed to start
};

const Backends& GetBackends() {
  static const Backends* backends = [] {
    auto* b = new Backends;
    const CudaProbe probe = ProbeCuda();
    if (!probe.compiled) {
      b->cuda_skip_reason = "this build has no CUDA backend";
    } else if (probe.device_count == 0) {
      b->cuda_skip_reason = probe.detail.rfind("no CUDA device", 0) == 0
                                ? probe.detail
                                : "no CUDA device: " + probe.detail;
    } else if (auto cuda = CreateCudaBackend(0); cuda.ok()) {
      b->cuda = *cuda;
    } else if (cuda.status().code() == absl::StatusCode::kFailedPrecondition) {
      b->cuda_skip_reason = std::string(cuda.status().message());  // an old GPU
    } else {
      b->cuda_failure = cuda.status().ToString();
    }
    if (!b->cuda_skip_reason.empty() && ::glassbox::testing::GpuRequired()) {
      b->cuda_failure = "GLASSBOX_REQUIRE_GPU is set, but: " + b->cuda_skip_reason;
      b->cuda_skip_reason.clear();
    }
    return b;
  }();
  return *backends;
}

class OpContractTest : public ::testing::TestWithParam<std::tuple<Case, BackendKind>> {
 protected:
  void SetUp() override {
    const Backends& b = GetBackends();
    if (std::get<1>(GetParam()) == BackendKind::kCpu) {
      backend_ = b.cpu.get();
      return;
    }
    if (!b.cuda_failure.empty()) GTEST_FAIL() << "the CUDA backend failed to start: " << b.cuda_failure;
    if (b.cuda == nullptr) GTEST_SKIP() << b.cuda_skip_reason;
    backend_ = b.cuda.get();
  }
  Backend* backend_ = nullptr;
};

TEST_P(OpContractTest, ReturnsTheContractsStatus) {
  const Case& c = std::get<0>(GetParam());
  Env env(*backend_);
  const absl::Status status = c.call(env);
  ASSERT_TRUE(env.status.ok()) << "setting up the tensors: " << env.status;
  EXPECT_EQ(status.code(), c.code) << backend_->name() << " " << c.name << ": " << status;
  if (!status.ok()) {
    // The message names the backend and the op.
    const std::string op = c.name.substr(0, c.name.find('_'));
    EXPECT_NE(status.message().find(op), std::string::npos) << status;
    EXPECT_EQ(status.message().rfind(backend_->device() == Device::kCpu ? "cpu " : "cuda ", 0), 0)
        << status;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, OpContractTest,
    ::testing::Combine(::testing::ValuesIn(Cases()),
                       ::testing::Values(BackendKind::kCpu, BackendKind::kCuda)),
    [](const auto& info) {
      return std::get<0>(info.param).name +
             (std::get<1>(info.param) == BackendKind::kCpu ? "_cpu" : "_cuda");
    });

}  // namespace
}  // namespace glassbox
