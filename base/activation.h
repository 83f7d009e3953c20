// The elementwise activations of MLPs, by their HuggingFace names. Plain C++17 (shared with the
// CUDA kernels); model configs name them and backends apply them.
#pragma once

#include <cstdint>

namespace glassbox {

enum class Activation : uint8_t {
  kIdentity,
  kGeluTanh,   // HF gelu_new, gelu_pytorch_tanh, gelu_fast: 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))
  kGeluExact,  // HF gelu: 0.5x(1 + erf(x / sqrt(2)))
  kGeluQuick,  // HF quick_gelu: x * sigmoid(1.702x)
  kRelu,
  kSilu,       // x * sigmoid(x)
};

}  // namespace glassbox
