#include "tests/util/test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "base/safetensors.h"
#include "gtest/gtest.h"

namespace glassbox::testing {

std::map<std::string, Tensor> ReadAllTensors(const std::string& path) {
  std::map<std::string, Tensor> out;
  auto file = SafetensorsFile::Open(path);
  if (!file.ok()) {
    ADD_FAILURE() << file.status();
    return out;
  }
  for (const TensorView& view : (*file)->tensors()) {
    const int64_t n = view.numel();
    const std::byte* src = view.bytes.data();
    switch (view.dtype) {
      case SafetensorsDtype::kF32: {
        Tensor t = Tensor::EmptyHost(DType::kF32, view.shape);
        std::memcpy(t.raw_data(), src, n * 4);
        out[view.name] = t;
        break;
      }
      case SafetensorsDtype::kI32: {
        Tensor t = Tensor::EmptyHost(DType::kI32, view.shape);
        std::memcpy(t.raw_data(), src, n * 4);
        out[view.name] = t;
        break;
      }
      case SafetensorsDtype::kI64: {
        Tensor t = Tensor::EmptyHost(DType::kI32, view.shape);
        for (int64_t i = 0; i < n; ++i) {
          int64_t v;
          std::memcpy(&v, src + i * 8, 8);
          t.data<int32_t>()[i] = static_cast<int32_t>(v);
        }
        out[view.name] = t;
        break;
      }
      default:
        ADD_FAILURE() << path << ": unexpected dtype for " << view.name;
    }
  }
  return out;
}

double NormRelativeError(const Tensor& actual, const Tensor& expected) {
  if (actual.numel() != expected.numel()) return std::numeric_limits<double>::infinity();
  double diff = 0, ref = 0;
  for (int64_t i = 0; i < actual.numel(); ++i) {
    const double a = actual.data<float>()[i], e = expected.data<float>()[i];
    if (std::isinf(a) || std::isinf(e)) {
      if (a != e) return std::numeric_limits<double>::infinity();
      continue;
    }
    if (std::isnan(a) || std::isnan(e)) return std::numeric_limits<double>::infinity();
    diff += (a - e) * (a - e);
    ref += e * e;
  }
  if (ref == 0) return diff == 0 ? 0 : std::numeric_limits<double>::infinity();
  return std::sqrt(diff / ref);
}

std::string FixturesDir() {
  // Read at run time so a binary copied elsewhere (tools/gpu_bundle.sh) finds the fixtures that
  // travelled with it; the build-time path is only the default.
  const char* dir = std::getenv("GLASSBOX_FIXTURES_DIR");
  return dir != nullptr && *dir != '\0' ? std::string(dir) : std::string(GLASSBOX_FIXTURES_DIR);
}

std::string FixturePath(const std::string& relative) { return FixturesDir() + "/" + relative; }

std::string ModelDir(const std::string& name) {
  return name == "demo" ? std::string(GLASSBOX_FIXTURES_DIR) + "/../../models/demo"
                        : FixturePath("models/" + name);
}

std::vector<std::string> OtherArchitectures() {
  return {"tiny-llama", "tiny-pythia", "tiny-pythia-seq", "tiny-gptj", "tiny-qwen3",
          "tiny-olmo2", "tiny-mistral", "tiny-gemma2", "tiny-gemma3"};
}

std::string ParamName(std::string model) {
  std::replace(model.begin(), model.end(), '-', '_');
  return model;
}

Tensor TwoRowsOfSixTokens() {
  return Tensor::FromHost(std::vector<int32_t>{5, 17, 42, 9, 100, 3, 77, 8, 250, 31, 64, 12},
                          {2, 6});
}

double ChainRuleError(const Tensor& jacobian, const std::vector<const float*>& out_grads,
                      const std::vector<const float*>& in_grads) {
  const int64_t n_out = jacobian.dim(1), n_in = jacobian.dim(2);
  double diff = 0, norm = 0;
  for (size_t b = 0; b < out_grads.size(); ++b) {
    const float* j = jacobian.data<float>() + b * n_out * n_in;
    for (int64_t i = 0; i < n_in; ++i) {
      double chained = 0;
      for (int64_t o = 0; o < n_out; ++o) chained += double{out_grads[b][o]} * j[o * n_in + i];
      diff += (chained - in_grads[b][i]) * (chained - in_grads[b][i]);
      norm += double{in_grads[b][i]} * in_grads[b][i];
    }
  }
  return norm > 0 ? std::sqrt(diff / norm) : std::numeric_limits<double>::infinity();
}

bool GpuRequired() {
  const char* value = std::getenv("GLASSBOX_REQUIRE_GPU");
  return value != nullptr && *value != '\0' && std::string(value) != "0";
}

}  // namespace glassbox::testing
