#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cuda/cuda_device_memory.h"
#include "kernels/cuda/cuda_probe.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/kernels.h"
#include "kernels/op_contract.h"

namespace glassbox {
namespace {

using cuda_internal::CudaStatus;
using cuda_internal::DeviceGuard;
using cuda_internal::GemmProblem;
using cuda_internal::GemmRunner;

cudaStream_t Stream(CUstream_st* s) { return s; }

cuda::AnyFloats AnyOf(const Tensor* t) {
  if (t == nullptr) return {};
  return {t->raw_data(), t->dtype()};
}

// What the contract checks every op against (kernels/backend.h applies it before each Do<Op>).
constexpr OpTarget kTarget{"cuda", Device::kCuda, /*half_precision=*/true};

// LayerNorm's and RmsNorm's launch arguments but the bias.
cuda::NormArgs NormArgsFor(const Tensor& x, const Tensor* weight, float eps, Tensor& out,
                           Tensor* scale_out, Tensor* unweighted_out, const RowsDims& d) {
  cuda::NormArgs a;
  a.type = x.dtype();
  a.x = x.raw_data();
  a.weight = AnyOf(weight);
  a.eps = eps;
  a.out = out.raw_data();
  a.scale_out = scale_out ? scale_out->raw_data() : nullptr;
  a.unweighted_out = unweighted_out ? unweighted_out->raw_data() : nullptr;
  a.rows = d.rows;
  a.cols = d.cols;
  return a;
}

absl::Status Launched(absl::string_view op, cudaError_t err) {
  return CudaStatus(err, absl::StrCat(op, " kernel"));
}

}  // namespace

absl::StatusOr<std::shared_ptr<CudaBackend>> CudaBackend::Create(int device,
                                                                 CudaBackendOptions options) {
  const CudaProbe probe = ProbeCuda();
  if (probe.device_count == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot start the CUDA backend: ", probe.detail));
  }
  if (device < 0 || device >= probe.device_count) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ", device, " does not exist; ", probe.detail));
  }
  DeviceGuard guard(device);
  GB_RETURN_IF_ERROR(guard.status());
  cudaDeviceProp prop{};
  GB_RETURN_IF_ERROR(CudaStatus(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties"));
  if (prop.major < 8) {
    // The kernels are built for sm_80 and sm_90 (bf16 arithmetic needs sm_80).
    return absl::FailedPreconditionError(absl::StrCat("CUDA device ", device, " (", prop.name,
                                                      ") is sm_", prop.major * 10 + prop.minor,
                                                      "; the CUDA backend needs sm_80 or newer"));
  }

  std::shared_ptr<CudaBackend> backend(new CudaBackend(device, options));
  backend->name_ = absl::StrCat("cuda:", device, " (", prop.name, ")");
  cudaStream_t stream = nullptr;
  GB_RETURN_IF_ERROR(CudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                                "cudaStreamCreateWithFlags"));
  backend->stream_ = stream;
  auto gemm = GemmRunner::Create(device, stream, options.gemm_workspace_bytes,
                                 options.gemm_activation_epilogues);
  if (!gemm.ok()) return gemm.status();
  backend->gemm_ = *std::move(gemm);
  backend->allocator_ = CachingDeviceAllocator::Create(CreateCudaDeviceMemory(device));
  constexpr size_t kWordBytes = sizeof(int) * kErrorWords;
  GB_RETURN_IF_ERROR(CudaStatus(cudaMalloc(&backend->device_errors_, kWordBytes),
                                "cudaMalloc(device error words)"));
  GB_RETURN_IF_ERROR(CudaStatus(cudaMemsetAsync(backend->device_errors_, 0, kWordBytes, stream),
                                "cudaMemsetAsync(device error words)"));
  GB_RETURN_IF_ERROR(CudaStatus(cudaMallocHost(&backend->host_errors_, kWordBytes),
                                "cudaMallocHost(error words)"));
  std::fill_n(backend->host_errors_, kErrorWords, 0);
  GB_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream), "cudaStreamSynchronize"));
  return backend;
}

CudaBackend::CudaBackend(int device, CudaBackendOptions options)
    : Backend(kTarget), device_(device), options_(options) {}

CudaBackend::~CudaBackend() {
  DeviceGuard guard(device_);
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  gemm_.reset();
  if (device_errors_ != nullptr) cudaFree(device_errors_);
  if (host_errors_ != nullptr) cudaFreeHost(host_errors_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  // allocator_ lives on while tensors from it do.
}

absl::StatusOr<std::shared_ptr<Backend>> CreateCudaBackend(int device, CudaBackendOptions options) {
  auto backend = CudaBackend::Create(device, options);
  if (!backend.ok()) return backend.status();
  return std::shared_ptr<Backend>(*std::move(backend));
}

absl::StatusOr<CudaBackend::PathCounts> CudaPathCounts(const Backend& backend) {
  const auto* cuda = dynamic_cast<const CudaBackend*>(&backend);
  if (cuda == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(backend.name(), " is not a CUDA backend"));
  }
  return cuda->path_counts();
}

CudaBackend::PathCounts CudaBackend::path_counts() const {
  return {.gemm_lt = gemm_->lt_calls(),
          .gemm_fallback = gemm_->fallback_calls(),
          .attention_flash = attention_flash_calls_.load(),
          .attention_materialized = attention_materialized_calls_.load()};
}

absl::StatusOr<int*> CudaBackend::ThreadErrorWord() {
  const ThreadSlots::Slot slot = error_slots_->ForThisThread();
  int* word = device_errors_ + slot.index;
  if (slot.fresh) {
    // A thread that exited may have left a raised bit here; it was not this thread's.
    GB_RETURN_IF_ERROR(CudaStatus(cudaMemsetAsync(word, 0, sizeof(int), Stream(stream_)),
                                  "cudaMemsetAsync(device error word)"));
  }
  return word;
}

absl::Status CudaBackend::WaitAndCheck(const char* what) {
  GB_ASSIGN_OR_RETURN(int* word, ThreadErrorWord());
  const ptrdiff_t index = word - device_errors_;
  int* host = host_errors_ + index;
  // Private words are read and cleared by their one thread; the shared one by one at a time.
  std::unique_lock<std::mutex> lock(shared_word_mu_, std::defer_lock);
  if (index == 0) lock.lock();
  GB_RETURN_IF_ERROR(CudaStatus(
      cudaMemcpyAsync(host, word, sizeof(int), cudaMemcpyDeviceToHost, Stream(stream_)),
      "cudaMemcpyAsync(device error word)"));
  GB_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(Stream(stream_)), what));
  const int errors = *host;
  if (errors == 0) return absl::OkStatus();
  *host = 0;
  GB_RETURN_IF_ERROR(CudaStatus(cudaMemsetAsync(word, 0, sizeof(int), Stream(stream_)),
                                "cudaMemsetAsync(device error word)"));
  std::string message = absl::StrCat("cuda: ops queued by ",
                                     index == 0 ? "this thread (or others sharing its error word)"
                                                : "this thread",
                                     " since its last synchronisation met invalid input:");
  if (errors & cuda::kDeviceErrorEmbeddingId)
    absl::StrAppend(&message, " Embedding id out of range;");
  if (errors & cuda::kDeviceErrorRotaryPosition) {
    absl::StrAppend(&message, " Rotary position outside the cos/sin table;");
  }
  if (errors & cuda::kDeviceErrorGatherColumn) {
    absl::StrAppend(&message, " GatherColumns column out of range;");
  }
  absl::StrAppend(&message, " their outputs hold zeros there");
  return absl::InternalError(message);
}

absl::Status CudaBackend::Synchronize() {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  return WaitAndCheck("cudaStreamSynchronize");
}

absl::Status CudaBackend::EmptyCache() {
  GB_RETURN_IF_ERROR(Synchronize());
  return allocator_->EmptyCache();
}

// ---- memory ----

absl::StatusOr<Tensor> CudaBackend::DoAllocate(DType dtype, Shape shape) {
  const size_t bytes = static_cast<size_t>(NumElements(shape) * DTypeSize(dtype));
  auto storage = allocator_->Allocate(bytes);
  if (!storage.ok()) return storage.status();
  return Tensor(*std::move(storage), dtype, std::move(shape));
}

absl::Status CudaBackend::DoCopyFromHost(int64_t bytes, const Tensor& host, Tensor& out) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  if (bytes == 0) return absl::OkStatus();
  GB_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(out.raw_data(), host.raw_data(), bytes,
                                                cudaMemcpyHostToDevice, Stream(stream_)),
                                "CopyFromHost cudaMemcpyAsync"));
  return CudaStatus(cudaStreamSynchronize(Stream(stream_)), "CopyFromHost cudaStreamSynchronize");
}

absl::Status CudaBackend::DoCopyToHost(int64_t bytes, const Tensor& src, Tensor& host_out) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  if (bytes > 0) {
    GB_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(host_out.raw_data(), src.raw_data(), bytes,
                                                  cudaMemcpyDeviceToHost, Stream(stream_)),
                                  "CopyToHost cudaMemcpyAsync"));
  }
  return WaitAndCheck("CopyToHost cudaStreamSynchronize");
}

absl::Status CudaBackend::DoConvert(int64_t n, const Tensor& src, Tensor& out) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  if (src.dtype() == out.dtype()) {
    return CudaStatus(cudaMemcpyAsync(out.raw_data(), src.raw_data(), src.nbytes(),
                                      cudaMemcpyDeviceToDevice, Stream(stream_)),
                      "Convert cudaMemcpyAsync");
  }
  return Launched("Convert", cuda::LaunchConvert(src.raw_data(), src.dtype(), out.raw_data(),
                                                 out.dtype(), n, Stream(stream_)));
}

// ---- matrix products ----

absl::Status CudaBackend::DoLinear(const LinearDims& d, const Tensor& x, const Tensor& w,
                                   const Tensor* bias, Activation act, Tensor& out) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  GemmProblem p;
  p.rows = d.rows;
  p.cols = d.cols;
  p.inner = d.inner;
  p.x = x.raw_data();
  p.ldx = d.inner;
  p.w = w.raw_data();
  p.ldw = d.inner;
  p.input_type = x.dtype();
  if (bias != nullptr) {
    p.bias = bias->raw_data();
    p.bias_type = bias->dtype();
  }
  p.act = act;
  p.ldo = d.cols;
  return RunGemm(p, out);
}

absl::Status CudaBackend::DoHeadProjection(const HeadProjectionDims& d, const Tensor& z,
                                           const Tensor& w, Tensor& out) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  // One strided-batched product over heads: out[:, h, :] (row stride H·N) = z[:, h, :] (row
  // stride H·Dh) · w[:, h·Dh : (h+1)·Dh]ᵀ (row stride H·Dh).
  GemmProblem p;
  p.rows = d.rows;
  p.cols = d.cols;
  p.inner = d.d_head;
  p.batch = d.heads;
  p.x = z.raw_data();
  p.ldx = d.heads * d.d_head;
  p.stride_x = d.d_head;
  p.w = w.raw_data();
  p.ldw = d.heads * d.d_head;
  p.stride_w = d.d_head;
  p.ldo = d.heads * d.cols;
  p.stride_o = d.cols;
  p.input_type = z.dtype();
  return RunGemm(p, out);
}

absl::Status CudaBackend::RunGemm(GemmProblem& p, Tensor& out) {
  if (out.dtype() == DType::kF32 || out.dtype() == p.input_type) {
    p.out = out.raw_data();
    p.out_type = out.dtype();
    return gemm_->Run(p);
  }
  // No cuBLAS product writes this output type directly (f32 inputs to a half type, or f16 <->
  // bf16): compute in f32, then round once.
  GB_ASSIGN_OR_RETURN(Tensor staged, Allocate(DType::kF32, out.shape()));
  p.out = staged.raw_data();
  p.out_type = DType::kF32;
  GB_RETURN_IF_ERROR(gemm_->Run(p));
  return Convert(staged, out);
}

// ---- normalisation ----

absl::Status CudaBackend::DoLayerNorm(const RowsDims& d, const Tensor& x, const Tensor* weight,
                                      const Tensor* bias, float eps, Tensor& out, Tensor* scale_out,
                                      Tensor* unweighted_out) {
  cuda::NormArgs a = NormArgsFor(x, weight, eps, out, scale_out, unweighted_out, d);
  a.bias = AnyOf(bias);
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  return Launched("LayerNorm", cuda::LaunchLayerNorm(a, Stream(stream_)));
}

absl::Status CudaBackend::DoRmsNorm(const RowsDims& d, const Tensor& x, const Tensor* weight,
                                    float eps, Tensor& out, Tensor* scale_out,
                                    Tensor* unweighted_out) {
  const cuda::NormArgs a = NormArgsFor(x, weight, eps, out, scale_out, unweighted_out, d);
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  return Launched("RmsNorm", cuda::LaunchRmsNorm(a, Stream(stream_)));
}

// ---- embeddings and positions ----

absl::Status CudaBackend::DoEmbedding(const EmbeddingDims& d, const Tensor& table,
                                      const Tensor& ids, Tensor& out) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  GB_ASSIGN_OR_RETURN(int* errors, ThreadErrorWord());
  return Launched("Embedding",
                  cuda::LaunchEmbedding(static_cast<int>(DTypeSize(table.dtype())),
                                        table.raw_data(), d.vocab, d.dim, ids.data<int32_t>(),
                                        d.tokens, out.raw_data(), errors, Stream(stream_)));
}

absl::Status CudaBackend::DoScatterRows(const EmbeddingDims& d, const Tensor& src,
                                        const Tensor& rows, Tensor& table) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  GB_ASSIGN_OR_RETURN(int* errors, ThreadErrorWord());
  return Launched("ScatterRows",
                  cuda::LaunchScatterRows(static_cast<int>(DTypeSize(table.dtype())),
                                          src.raw_data(), rows.data<int32_t>(), d.tokens, d.dim,
                                          table.raw_data(), d.vocab, errors,
                                          Stream(stream_)));
}

absl::Status CudaBackend::DoRotary(const RotaryDims& d, const Tensor& x, const Tensor& cos,
                                   const Tensor& sin, const Tensor& positions, int rotary_dim,
                                   Tensor& out) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  GB_ASSIGN_OR_RETURN(int* errors, ThreadErrorWord());
  cuda::RotaryArgs a;
  a.type = x.dtype();
  a.x = x.raw_data();
  a.out = out.raw_data();
  a.cos = AnyOf(&cos);
  a.sin = AnyOf(&sin);
  a.positions = positions.data<int32_t>();
  a.tokens = d.tokens;
  a.heads = d.heads;
  a.d_head = d.d_head;
  a.rotary_dim = rotary_dim;
  a.n_ctx = d.n_ctx;
  a.adjacent_pairs = d.style == RotaryStyle::kAdjacentPairs;
  a.device_errors = errors;
  return Launched("Rotary", cuda::LaunchRotary(a, Stream(stream_)));
}

// ---- attention ----

absl::Status CudaBackend::DoAttention(const AttentionDims& d, const Tensor& q, const Tensor& k,
                                      const Tensor& v, const Tensor& key_mask, float scale,
                                      Tensor& z, Tensor* scores, Tensor* pattern,
                                      const AttentionOptions& options) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  cuda::AttentionArgs a;
  a.type = q.dtype();
  a.q = q.raw_data();
  a.k = k.raw_data();
  a.v = v.raw_data();
  a.key_mask = key_mask.data<int32_t>();
  a.z = z.raw_data();
  a.scores = scores ? scores->raw_data() : nullptr;
  a.pattern = pattern ? pattern->raw_data() : nullptr;
  a.batch = d.batch;
  a.seq = d.seq;
  a.heads = d.heads;
  a.kv_heads = d.kv_heads;
  a.d_head = d.d_head;
  a.scale = scale;
  a.window = options.window;
  a.softcap = options.softcap;
  a.kv_seq = d.kv_seq;
  a.query_offset = d.query_offset;

  if (scores == nullptr && pattern == nullptr && options_.flash_attention) {
    const cudaError_t err = cuda::LaunchFlashAttention(a, Stream(stream_));
    if (err != cudaErrorNotSupported) {
      ++attention_flash_calls_;
      return Launched("Attention (flash)", err);
    }
    // Unsupported head size or shared memory: the materialised path below computes z too.
  }
  if (d.kv_seq != d.seq || d.query_offset != 0) {
    return absl::UnimplementedError(absl::StrCat(
        "cuda Attention: queries over cached keys need the flash kernel (no captured or edited "
        "scores or pattern, d_head <= 256); got d_head ", d.d_head,
        scores || pattern ? " with scores or pattern requested" : ""));
  }
  // Materialised path, in chunks of (batch, head) pairs whose f32 scores fit the budget.
  const int64_t pairs = d.batch * d.heads;
  const int64_t pair_bytes = d.seq * d.seq * static_cast<int64_t>(sizeof(float));
  const int64_t chunk = std::clamp<int64_t>(
      static_cast<int64_t>(options_.attention_work_bytes) / std::max<int64_t>(pair_bytes, 1), 1,
      std::min<int64_t>(pairs, 65535));
  GB_ASSIGN_OR_RETURN(Tensor work, Allocate(DType::kF32, {chunk, d.seq, d.seq}));
  ++attention_materialized_calls_;
  for (int64_t begin = 0; begin < pairs; begin += chunk) {
    const int64_t count = std::min(chunk, pairs - begin);
    GB_RETURN_IF_ERROR(Launched(
        "Attention (materialised)",
        cuda::LaunchMaterializedAttention(a, work.data<float>(), begin, count, Stream(stream_))));
  }
  return absl::OkStatus();
}

// ---- elementwise ----

absl::Status CudaBackend::DoAdd(int64_t n, const Tensor& a, const Tensor& b, Tensor& out) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  return Launched("Add", cuda::LaunchAdd(a.dtype(), a.raw_data(), b.raw_data(), out.raw_data(), n,
                                         Stream(stream_)));
}

absl::Status CudaBackend::DoMul(int64_t n, const Tensor& a, const Tensor& b, Tensor& out) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  return Launched("Mul", cuda::LaunchMul(a.dtype(), a.raw_data(), b.raw_data(), out.raw_data(), n,
                                         Stream(stream_)));
}

absl::Status CudaBackend::DoActivate(int64_t n, Activation act, const Tensor& x, Tensor& out) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  return Launched("Activate", cuda::LaunchActivate(x.dtype(), act, x.raw_data(), out.raw_data(), n,
                                                   Stream(stream_)));
}

absl::Status CudaBackend::DoScale(int64_t n, const Tensor& x, float factor, Tensor& out) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  return Launched("Scale", cuda::LaunchScale(x.dtype(), x.raw_data(), factor, out.raw_data(), n,
                                             Stream(stream_)));
}

absl::Status CudaBackend::DoSoftCap(int64_t n, const Tensor& x, float cap, Tensor& out) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  return Launched("SoftCap", cuda::LaunchSoftCap(x.dtype(), x.raw_data(), cap, out.raw_data(), n,
                                                 Stream(stream_)));
}

// ---- reshaping ----

absl::Status CudaBackend::DoSplitQkv(const SplitQkvDims& d, const Tensor& qkv, Tensor& q, Tensor& k,
                                     Tensor& v) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  // Three strided 2-D copies: rows of the fused projection into three dense matrices.
  const size_t es = static_cast<size_t>(DTypeSize(qkv.dtype()));
  const char* src = static_cast<const char*>(qkv.raw_data());
  const std::pair<Tensor*, int64_t> parts[] = {{&q, 0}, {&k, d.q_cols}, {&v, d.q_cols + d.kv_cols}};
  for (const auto& [dst, offset] : parts) {
    const int64_t cols = dst == &q ? d.q_cols : d.kv_cols;
    if (cols == 0) continue;
    GB_RETURN_IF_ERROR(CudaStatus(
        cudaMemcpy2DAsync(dst->raw_data(), cols * es, src + offset * es, d.width * es, cols * es,
                          static_cast<size_t>(d.rows), cudaMemcpyDeviceToDevice, Stream(stream_)),
        "SplitQkv cudaMemcpy2DAsync"));
  }
  return absl::OkStatus();
}

// ---- outputs ----

absl::Status CudaBackend::DoCrossEntropy(const RowsDims& d, const Tensor& logits,
                                         const Tensor& targets, Tensor& loss) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  return Launched(
      "CrossEntropy",
      cuda::LaunchCrossEntropy(logits.dtype(), logits.raw_data(), targets.data<int32_t>(),
                               loss.dtype(), loss.raw_data(), d.rows, d.cols, Stream(stream_)));
}

absl::Status CudaBackend::DoLogSoftmax(const RowsDims& d, const Tensor& x, Tensor& out) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  return Launched("LogSoftmax", cuda::LaunchLogSoftmax(x.dtype(), x.raw_data(), out.raw_data(),
                                                       d.rows, d.cols, Stream(stream_)));
}

absl::Status CudaBackend::DoLogSumExp(const RowsDims& d, const Tensor& x, Tensor& lse) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  return Launched("LogSumExp", cuda::LaunchLogSumExp(x.dtype(), x.raw_data(), lse.data<float>(),
                                                     d.rows, d.cols, Stream(stream_)));
}

absl::Status CudaBackend::DoGatherColumns(const GatherColumnsDims& d, const Tensor& x,
                                          const Tensor& columns, const Tensor* shift, Tensor& out) {
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  GB_ASSIGN_OR_RETURN(int* errors, ThreadErrorWord());
  return Launched(
      "GatherColumns",
      cuda::LaunchGatherColumns(x.dtype(), x.raw_data(), d.rows, d.cols, columns.data<int32_t>(),
                                d.count, shift ? shift->data<float>() : nullptr, out.data<float>(),
                                errors, Stream(stream_)));
}

absl::Status CudaBackend::DoTopK(const TopKDims& d, const Tensor& x, Tensor& values,
                                 Tensor& indices) {
  const int64_t k = d.k;
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  // Rows in chunks whose sort keys (about 24 bytes an element with CUB's buffers) fit the budget,
  // and whose element count fits CUB's int.
  constexpr int64_t kBytesPerElement = 24, kMaxItems = 2147483647LL;
  if (d.cols > kMaxItems) return absl::InternalError("cuda TopK: rows longer than 2^31 - 1");
  const int64_t chunk = std::clamp<int64_t>(
      static_cast<int64_t>(options_.top_k_work_bytes) / (kBytesPerElement * d.cols), 1,
      std::min<int64_t>(d.rows, kMaxItems / d.cols));
  size_t work_bytes = 0;
  GB_RETURN_IF_ERROR(Launched("TopK (planning)", cuda::TopKWorkBytes(chunk, d.cols, &work_bytes)));
  GB_ASSIGN_OR_RETURN(Tensor work,
                      Allocate(DType::kI32, {static_cast<int64_t>((work_bytes + 3) / 4)}));
  cuda::TopKArgs a;
  a.type = x.dtype();
  a.x = x.raw_data();
  a.values = values.raw_data();
  a.indices = indices.data<int32_t>();
  a.rows = d.rows;
  a.cols = d.cols;
  a.k = k;
  for (int64_t begin = 0; begin < d.rows; begin += chunk) {
    const int64_t count = std::min(chunk, d.rows - begin);
    GB_RETURN_IF_ERROR(Launched(
        "TopK", cuda::LaunchTopK(a, begin, count, work.raw_data(), work_bytes, Stream(stream_))));
  }
  return absl::OkStatus();
}

}  // namespace glassbox
