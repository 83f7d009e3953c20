// Helpers shared by the engine tests: reading reference tensors, comparing by norm-relative
// error, and a capture sink that keeps what it is given.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "kernels/tensor.h"
#include "server/engine/transformer.h"

namespace glassbox::testing {

// Every tensor of a safetensors file as a host tensor: floats become f32, integers i32.
std::map<std::string, Tensor> ReadAllTensors(const std::string& path);

// ||actual - expected|| / ||expected|| over finite entries. Entries that are infinite in either
// must be the same infinity in both (masked attention scores), else the result is +inf.
double NormRelativeError(const Tensor& actual, const Tensor& expected);

// Keeps a reference to every captured tensor, by hook name.
class CollectingSink : public CaptureSink {
 public:
  absl::Status OnCapture(HookId id, const HookInfo& info, const Tensor& value) override {
    order.push_back(info.name);
    values[info.name] = value;
    return absl::OkStatus();
  }
  std::vector<std::string> order;
  std::map<std::string, Tensor> values;
};

// The committed fixtures: $GLASSBOX_FIXTURES_DIR when set, else tests/fixtures of the source tree.
std::string FixturesDir();
std::string FixturePath(const std::string& relative);
// A model's directory by name: "demo" is the shipped models/demo, any other a fixture model
// (tests/fixtures/models/<name>).
std::string ModelDir(const std::string& name);
// The tiny models of the architectures beyond GPT-2, one per trait the engine must get right
// (tests/reference/make_arch_gradient_fixtures.py says which).
std::vector<std::string> OtherArchitectures();
// A model name as a gtest parameter name: "tiny-llama" -> "tiny_llama".
std::string ParamName(std::string model);
// Two rows of six token ids, valid in every fixture model's vocabulary.
Tensor TwoRowsOfSixTokens();
// The chain rule through a Jacobian [rows, n_out, n_in]: the norm-relative error of
// Σ_o out_grads[b][o] · J[b, o, :] against in_grads[b] ([n_in] each), over the rows.
double ChainRuleError(const Tensor& jacobian, const std::vector<const float*>& out_grads,
                      const std::vector<const float*>& in_grads);

// True when $GLASSBOX_REQUIRE_GPU is set (non-empty, not "0"): the GPU suites then fail instead of
// skipping when no usable CUDA device is found.
bool GpuRequired();

}  // namespace glassbox::testing
