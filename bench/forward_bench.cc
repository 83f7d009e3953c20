// Forward-pass throughput of the engine on a HuggingFace model directory, on the CPU or a CUDA
// device, printed as one JSON line so bench/cpu_forward.sh and bench/torch_gpu_forward.py can set
// it beside PyTorch's figure from the same run.
//
//   forward_bench --model DIR --batch 1 --seq 128 [--capture_resid] [--device cuda --dtype bf16]
//                 [--profile]
//
// --capture_resid captures every blocks.*.hook_resid_post and, as the server does for a client,
// delivers it to host memory (on the CPU backend the capture already is host memory). --logits
// all (the default, like a plain HF forward) or last (like HF's logits_to_keep=1). CPU threads:
// OMP_NUM_THREADS (one OpenMP pool for the loops and oneDNN).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/op_profile.h"
#include "server/engine/transformer.h"

ABSL_FLAG(std::string, model, "", "HuggingFace model directory");
ABSL_FLAG(std::string, device, "cpu", "cpu | cuda");
ABSL_FLAG(std::string, dtype, "f32", "weights and activations: f32 | bf16 | f16");
ABSL_FLAG(std::string, logits, "all", "all | last: unembed every position or only the last");
ABSL_FLAG(int, batch, 1, "sequences per forward pass");
ABSL_FLAG(int, seq, 128, "tokens per sequence");
ABSL_FLAG(int, warmup, 3, "untimed forward passes");
ABSL_FLAG(int, repeats, 10, "timed forward passes");
ABSL_FLAG(bool, profile, false,
          "print where the timed passes spent their time, by backend op, on stderr");
ABSL_FLAG(int64_t, cpu_packed_weight_bytes, int64_t{1} << 30,
          "CPU: pack the model's Linear weights when they fit in this many bytes (0: never), as "
          "glassboxd's flag of the same name");
ABSL_FLAG(bool, capture_resid, false,
          "capture every blocks.*.hook_resid_post into host memory, as a researcher would");

namespace glassbox {
namespace {

// Keeps every capture in host memory, copying it there when it lives on the device.
class HostSink : public CaptureSink {
 public:
  explicit HostSink(Backend& backend) : backend_(backend) {}
  absl::Status OnCapture(HookId, const HookInfo&, const Tensor& value) override {
    if (value.device() == Device::kCpu) {
      kept.push_back(value);
      return absl::OkStatus();
    }
    Tensor host = Tensor::EmptyHost(value.dtype(), value.shape());
    if (absl::Status s = backend_.CopyToHost(value, host); !s.ok()) return s;
    kept.push_back(std::move(host));
    return absl::OkStatus();
  }
  std::vector<Tensor> kept;

 private:
  Backend& backend_;
};

absl::StatusOr<DType> ParseDType(const std::string& name) {
  if (name == "f32") return DType::kF32;
  if (name == "bf16") return DType::kBF16;
  if (name == "f16") return DType::kF16;
  return absl::InvalidArgumentError("--dtype must be f32, bf16 or f16, got " + name);
}

absl::StatusOr<std::shared_ptr<Backend>> ChooseBackend(const std::string& device) {
  if (device == "cpu") {
    return std::shared_ptr<Backend>(std::make_shared<CpuBackend>(
        CpuBackendOptions{.packed_weight_bytes = absl::GetFlag(FLAGS_cpu_packed_weight_bytes)}));
  }
  if (device == "cuda") return CreateCudaBackend(0);
  return absl::InvalidArgumentError("--device must be cpu or cuda, got " + device);
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "forward_bench: %s\n", status.ToString().c_str());
  return 1;
}

int Main() {
  const std::string device = absl::GetFlag(FLAGS_device), logits = absl::GetFlag(FLAGS_logits);
  if (logits != "all" && logits != "last") {
    return Fail(absl::InvalidArgumentError("--logits must be all or last, got " + logits));
  }
  auto dtype = ParseDType(absl::GetFlag(FLAGS_dtype));
  if (!dtype.ok()) return Fail(dtype.status());
  auto backend = ChooseBackend(device);
  if (!backend.ok()) return Fail(backend.status());
  const auto load_start = std::chrono::steady_clock::now();
  auto model = Transformer::Load(absl::GetFlag(FLAGS_model), *backend, *dtype);
  if (!model.ok()) return Fail(model.status());
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

  const int batch = absl::GetFlag(FLAGS_batch), seq = absl::GetFlag(FLAGS_seq);
  std::mt19937 rng(0);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>((*model)->config().vocab_size - 1));
  std::vector<int32_t> ids(static_cast<size_t>(batch) * seq);
  for (int32_t& id : ids) id = token(rng);
  ForwardInput input{.tokens = Tensor::FromHost(ids, {batch, seq})};
  HookPlan plan((*model)->hooks());
  if (absl::GetFlag(FLAGS_capture_resid)) {
    if (absl::Status s = plan.Capture("blocks.*.hook_resid_post"); !s.ok()) return Fail(s);
  }
  const ForwardOptions options{.logits = logits == "all" ? LogitsMode::kAll : LogitsMode::kLast};
  // The logits come back in host memory, so each pass has finished on the device when it returns.
  std::vector<double> times;
  const int warmup = absl::GetFlag(FLAGS_warmup), repeats = absl::GetFlag(FLAGS_repeats);
  if (warmup < 0 || repeats < 1) {
    return Fail(absl::InvalidArgumentError("--warmup must be >= 0 and --repeats >= 1"));
  }
  for (int i = 0; i < warmup + repeats; ++i) {
    OpProfile::Enable(absl::GetFlag(FLAGS_profile) && i >= warmup);
    HostSink sink((*model)->backend());
    const auto start = std::chrono::steady_clock::now();
    auto out = (*model)->Forward(input, plan, &sink, options);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!out.ok()) return Fail(out.status());
    if (i >= warmup) times.push_back(seconds);
  }
  double total = 0;
  for (double t : times) total += t;
  if (absl::GetFlag(FLAGS_profile)) std::fprintf(stderr, "%s", OpProfile::Report(total).c_str());
  std::sort(times.begin(), times.end());
  // On CUDA, which paths the GEMMs and attention took over all passes (warm-up included): a
  // fallback GEMM or a materialised attention here means the figure is not the fast path's.
  std::string paths;
  if (device == "cuda") {
    auto counts = CudaPathCounts(**backend);
    if (!counts.ok()) return Fail(counts.status());
    paths = absl::StrFormat(
        ", \"gemm_lt\":%d, \"gemm_fallback\":%d, \"attention_flash\":%d, "
        "\"attention_materialized\":%d",
        counts->gemm_lt, counts->gemm_fallback, counts->attention_flash,
        counts->attention_materialized);
  }
  std::printf("{\"impl\":\"glassbox\", \"tokens_per_s\":%.1f, \"batch\":%d, \"seq\":%d, "
              "\"capture_resid\":%s, \"device\":\"%s\", \"dtype\":\"%s\", \"logits\":\"%s\", "
              "\"ms_per_forward_median\":%.3f, \"load_s\":%.2f%s}\n",
              static_cast<double>(times.size()) * batch * seq / total, batch, seq,
              absl::GetFlag(FLAGS_capture_resid) ? "true" : "false", device.c_str(),
              DTypeName(*dtype), logits.c_str(), 1000 * times[times.size() / 2], load_s,
              paths.c_str());
  return 0;
}

}  // namespace
}  // namespace glassbox

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return glassbox::Main();
}
