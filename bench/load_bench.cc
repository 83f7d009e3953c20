// Memory and time of loading a HuggingFace checkpoint into the engine, printed as one JSON line
// so bench/load_memory.sh can set it beside transformers' figure from the same run.
//
//   load_bench --model DIR [--device cpu|cuda --dtype f32|bf16|f16]
//
// Resident weights are the bytes of every distinct tensor the loaded model holds (host memory on
// the CPU backend). Peak RSS is the kernel's high-water mark (VmHWM) of this process, which
// counts the checkpoint's mapped pages while they are resident as well as every copy made.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "server/engine/transformer.h"

ABSL_FLAG(std::string, model, "", "HuggingFace model directory");
ABSL_FLAG(std::string, device, "cpu", "cpu | cuda");
ABSL_FLAG(std::string, dtype, "f32", "f32 | bf16 | f16 (the CUDA backend only for 16-bit)");

namespace glassbox {
namespace {

// A field of /proc/self/status in bytes ("VmRSS", "VmHWM"), or -1.
int64_t ProcStatusBytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  }
  return -1;
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "load_bench: %s\n", status.ToString().c_str());
  return 1;
}

int Main() {
  const std::string device = absl::GetFlag(FLAGS_device), dtype_name = absl::GetFlag(FLAGS_dtype);
  const DType dtype = dtype_name == "bf16"  ? DType::kBF16
                      : dtype_name == "f16" ? DType::kF16
                                            : DType::kF32;
  absl::StatusOr<std::shared_ptr<Backend>> backend =
      device == "cuda" ? CreateCudaBackend(0)
                       : absl::StatusOr<std::shared_ptr<Backend>>(std::make_shared<CpuBackend>());
  if (!backend.ok()) return Fail(backend.status());
  const int64_t rss_before = ProcStatusBytes("VmRSS");
  const auto start = std::chrono::steady_clock::now();
  auto model = Transformer::Load(absl::GetFlag(FLAGS_model), *backend, dtype);
  if (!model.ok()) return Fail(model.status());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int64_t weights = ModelWeightsBytes((*model)->weights());
  const int64_t peak = ProcStatusBytes("VmHWM"), after = ProcStatusBytes("VmRSS");
  std::printf("%s\n",
              absl::StrFormat(
                  "{\"weights_bytes\": %d, \"rss_before\": %d, \"peak_rss\": %d, "
                  "\"rss_after\": %d, \"load_seconds\": %.3f, \"peak_over_weights\": %.4f, "
                  "\"peak_growth_over_weights\": %.4f}",
                  weights, rss_before, peak, after, seconds, static_cast<double>(peak) / weights,
                  static_cast<double>(peak - rss_before) / weights)
                  .c_str());
  return 0;
}

}  // namespace
}  // namespace glassbox

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return glassbox::Main();
}
