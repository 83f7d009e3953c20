#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <initializer_list>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cuda/cuda_probe.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/kernels.h"

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

// Ops check their arguments as the CPU backend does: a mismatch is a caller bug, reported as
// INTERNAL instead of reading out of bounds on the device.
absl::Status Expect(bool ok, absl::string_view op, absl::string_view what) {
  if (ok) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("cuda ", op, ": ", what));
}

// Every non-null tensor is defined and on the device.
absl::Status ExpectOnDevice(absl::string_view op, std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors) {
    if (t == nullptr) continue;
    if (!t->defined() || t->device() != Device::kCuda) {
      return absl::InternalError(absl::StrCat("cuda ", op, ": expected a CUDA tensor, got ",
                                              t->defined() ? t->DebugString() : "undefined"));
    }
  }
  return absl::OkStatus();
}

// Every non-null tensor has the floating dtype `dtype`.
absl::Status ExpectDType(absl::string_view op, DType dtype,
                         std::initializer_list<const Tensor*> tensors) {
  if (!IsFloating(dtype)) {
    return absl::InternalError(absl::StrCat("cuda ", op, ": expected f32, f16 or bf16, got ",
                                            DTypeName(dtype)));
  }
  for (const Tensor* t : tensors) {
    if (t != nullptr && t->dtype() != dtype) {
      return absl::InternalError(absl::StrCat("cuda ", op, ": expected ", DTypeName(dtype),
                                              " like the input, got ", t->DebugString()));
    }
  }
  return absl::OkStatus();
}

absl::Status ExpectFloating(absl::string_view op, std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors) {
    if (t != nullptr && !IsFloating(t->dtype())) {
      return absl::InternalError(absl::StrCat("cuda ", op, ": expected a floating tensor, got ",
                                              t->DebugString()));
    }
  }
  return absl::OkStatus();
}

absl::Status Launched(absl::string_view op, cudaError_t err) {
  return CudaStatus(err, absl::StrCat(op, " kernel"));
}

// Rows of a tensor seen as [rows, last].
int64_t Rows(const Tensor& t) { return t.rank() == 0 ? 1 : t.numel() / std::max<int64_t>(t.dim(-1), 1); }

}  // namespace

absl::StatusOr<std::shared_ptr<CudaBackend>> CudaBackend::Create(int device,
                                                                 CudaBackendOptions options) {
  const CudaProbe probe = ProbeCuda();
  if (probe.device_count == 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot start the CUDA backend: ", probe.detail));
  }
  if (device < 0 || device >= probe.device_count) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA device ", device, " does not exist; ",
                                                   probe.detail));
  }
  DeviceGuard guard(device);
  GB_RETURN_IF_ERROR(guard.status());
  cudaDeviceProp prop{};
  GB_RETURN_IF_ERROR(CudaStatus(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties"));
  if (prop.major < 8) {
    // The kernels are built for sm_80 and sm_90 (bf16 arithmetic needs sm_80).
    return absl::FailedPreconditionError(absl::StrCat(
        "CUDA device ", device, " (", prop.name, ") is sm_", prop.major * 10 + prop.minor,
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
  backend->allocator_ = CachingDeviceAllocator::Create(device);
  GB_RETURN_IF_ERROR(CudaStatus(cudaMalloc(&backend->device_errors_, sizeof(int)),
                                     "cudaMalloc(device error word)"));
  GB_RETURN_IF_ERROR(CudaStatus(cudaMemsetAsync(backend->device_errors_, 0, sizeof(int), stream),
                                     "cudaMemsetAsync(device error word)"));
  GB_RETURN_IF_ERROR(CudaStatus(cudaMallocHost(&backend->host_errors_, sizeof(int)),
                                     "cudaMallocHost(error word)"));
  *backend->host_errors_ = 0;
  GB_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream), "cudaStreamSynchronize"));
  return backend;
}

CudaBackend::CudaBackend(int device, CudaBackendOptions options)
    : device_(device), options_(options) {}

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

int64_t CudaBackend::gemm_lt_calls() const { return gemm_->lt_calls(); }
int64_t CudaBackend::gemm_fallback_calls() const { return gemm_->fallback_calls(); }

absl::Status CudaBackend::WaitAndCheck(const char* what) {
  std::lock_guard<std::mutex> lock(errors_mu_);
  GB_RETURN_IF_ERROR(CudaStatus(
      cudaMemcpyAsync(host_errors_, device_errors_, sizeof(int), cudaMemcpyDeviceToHost, Stream(stream_)),
      "cudaMemcpyAsync(device error word)"));
  GB_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(Stream(stream_)), what));
  const int errors = *host_errors_;
  if (errors == 0) return absl::OkStatus();
  *host_errors_ = 0;
  GB_RETURN_IF_ERROR(CudaStatus(cudaMemsetAsync(device_errors_, 0, sizeof(int), Stream(stream_)),
                                     "cudaMemsetAsync(device error word)"));
  std::string message = "cuda: ops queued since the last synchronisation met invalid input:";
  if (errors & cuda::kDeviceErrorEmbeddingId) absl::StrAppend(&message, " Embedding id out of range;");
  if (errors & cuda::kDeviceErrorRotaryPosition) {
    absl::StrAppend(&message, " Rotary position outside the cos/sin table;");
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

absl::StatusOr<Tensor> CudaBackend::Allocate(DType dtype, Shape shape) {
  for (int64_t d : shape) {
    if (d < 0) return absl::InternalError("cuda Allocate: negative dimension " + ShapeToString(shape));
  }
  const size_t bytes = static_cast<size_t>(NumElements(shape) * DTypeSize(dtype));
  auto storage = allocator_->Allocate(bytes);
  if (!storage.ok()) return storage.status();
  return Tensor(*std::move(storage), dtype, std::move(shape));
}

absl::Status CudaBackend::CopyFromHost(const Tensor& host, Tensor& out) {
  if (!host.defined() || host.device() != Device::kCpu || !out.defined() ||
      out.device() != Device::kCuda || host.numel() != out.numel() || host.dtype() != out.dtype()) {
    return absl::InternalError("cuda CopyFromHost: " + host.DebugString() + " into " + out.DebugString());
  }
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  if (host.nbytes() == 0) return absl::OkStatus();
  GB_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(out.raw_data(), host.raw_data(), host.nbytes(),
                                                     cudaMemcpyHostToDevice, Stream(stream_)),
                                     "CopyFromHost cudaMemcpyAsync"));
  return CudaStatus(cudaStreamSynchronize(Stream(stream_)), "CopyFromHost cudaStreamSynchronize");
}

absl::Status CudaBackend::CopyToHost(const Tensor& src, Tensor& host_out) {
  if (!src.defined() || src.device() != Device::kCuda || !host_out.defined() ||
      host_out.device() != Device::kCpu || src.numel() != host_out.numel() ||
      src.dtype() != host_out.dtype()) {
    return absl::InternalError("cuda CopyToHost: " + src.DebugString() + " into " + host_out.DebugString());
  }
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  if (src.nbytes() > 0) {
    GB_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(host_out.raw_data(), src.raw_data(), src.nbytes(),
                                                       cudaMemcpyDeviceToHost, Stream(stream_)),
                                       "CopyToHost cudaMemcpyAsync"));
  }
  return WaitAndCheck("CopyToHost cudaStreamSynchronize");
}

absl::Status CudaBackend::Convert(const Tensor& src, Tensor& out) {
  GB_RETURN_IF_ERROR(ExpectOnDevice("Convert", {&src, &out}));
  if (src.numel() != out.numel()) {
    return absl::InternalError("cuda Convert: " + src.DebugString() + " into " + out.DebugString());
  }
  // The pairs the CPU backend converts: anything to a float type, and i32 <-> i64.
  const DType from = src.dtype(), to = out.dtype();
  const bool supported = from == to || IsFloating(to) || (to == DType::kI32 && from == DType::kI64) ||
                         (to == DType::kI64 && from == DType::kI32);
  if (!supported) {
    return absl::InternalError(absl::StrCat("cuda Convert: unsupported ", DTypeName(from), " -> ",
                                            DTypeName(to)));
  }
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  if (src.numel() == 0) return absl::OkStatus();
  if (from == to) {
    return CudaStatus(cudaMemcpyAsync(out.raw_data(), src.raw_data(), src.nbytes(),
                                      cudaMemcpyDeviceToDevice, Stream(stream_)),
                      "Convert cudaMemcpyAsync");
  }
  return Launched("Convert", cuda::LaunchConvert(src.raw_data(), from, out.raw_data(), to,
                                                 src.numel(), Stream(stream_)));
}

// ---- matrix products ----

absl::Status CudaBackend::Linear(const Tensor& x, const Tensor& w, const Tensor* bias,
                                 Activation act, Tensor& out) {
  GB_RETURN_IF_ERROR(ExpectOnDevice("Linear", {&x, &w, bias, &out}));
  GB_RETURN_IF_ERROR(ExpectDType("Linear", x.dtype(), {&w}));
  GB_RETURN_IF_ERROR(ExpectFloating("Linear", {bias, &out}));
  const int64_t k = x.rank() == 0 ? 1 : x.dim(-1), t = Rows(x);
  const int64_t n = w.rank() == 2 ? w.dim(0) : -1;
  GB_RETURN_IF_ERROR(Expect(w.rank() == 2 && w.dim(1) == k && out.numel() == t * n &&
                                     (bias == nullptr || bias->numel() == n),
                                 "Linear", "shape mismatch: x " + x.DebugString() + " w " +
                                               w.DebugString() + " out " + out.DebugString()));
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  GemmProblem p;
  p.rows = t;
  p.cols = n;
  p.inner = k;
  p.x = x.raw_data();
  p.ldx = k;
  p.w = w.raw_data();
  p.ldw = k;
  p.input_type = x.dtype();
  if (bias != nullptr) {
    p.bias = bias->raw_data();
    p.bias_type = bias->dtype();
  }
  p.act = act;
  p.ldo = n;
  if (out.dtype() == DType::kF32 || out.dtype() == x.dtype()) {
    p.out = out.raw_data();
    p.out_type = out.dtype();
    return gemm_->Run(p);
  }
  // No cuBLAS product writes this output type directly (f32 inputs to a half type, or f16 <->
  // bf16): compute in f32, then round once.
  auto staged = Allocate(DType::kF32, {t, n});
  if (!staged.ok()) return staged.status();
  p.out = staged->raw_data();
  p.out_type = DType::kF32;
  GB_RETURN_IF_ERROR(gemm_->Run(p));
  return Convert(*staged, out);
}

absl::Status CudaBackend::HeadProjection(const Tensor& z, const Tensor& w, Tensor& out) {
  GB_RETURN_IF_ERROR(ExpectOnDevice("HeadProjection", {&z, &w, &out}));
  GB_RETURN_IF_ERROR(ExpectDType("HeadProjection", z.dtype(), {&w}));
  GB_RETURN_IF_ERROR(ExpectFloating("HeadProjection", {&out}));
  GB_RETURN_IF_ERROR(Expect(z.rank() >= 2, "HeadProjection", "z must be [..., heads, d_head]"));
  const int64_t heads = z.dim(-2), d_head = z.dim(-1);
  const int64_t t = heads * d_head == 0 ? 0 : z.numel() / (heads * d_head);
  const int64_t n = w.rank() == 2 ? w.dim(0) : -1;
  GB_RETURN_IF_ERROR(Expect(w.rank() == 2 && w.dim(1) == heads * d_head &&
                                     out.numel() == t * heads * n,
                                 "HeadProjection", "shape mismatch"));
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  // One strided-batched product over heads: out[:, h, :] (row stride H·N) = z[:, h, :] (row
  // stride H·Dh) · w[:, h·Dh : (h+1)·Dh]ᵀ (row stride H·Dh).
  GemmProblem p;
  p.rows = t;
  p.cols = n;
  p.inner = d_head;
  p.batch = heads;
  p.x = z.raw_data();
  p.ldx = heads * d_head;
  p.stride_x = d_head;
  p.w = w.raw_data();
  p.ldw = heads * d_head;
  p.stride_w = d_head;
  p.ldo = heads * n;
  p.stride_o = n;
  p.input_type = z.dtype();
  if (out.dtype() == DType::kF32 || out.dtype() == z.dtype()) {
    p.out = out.raw_data();
    p.out_type = out.dtype();
    return gemm_->Run(p);
  }
  auto staged = Allocate(DType::kF32, out.shape());
  if (!staged.ok()) return staged.status();
  p.out = staged->raw_data();
  p.out_type = DType::kF32;
  GB_RETURN_IF_ERROR(gemm_->Run(p));
  return Convert(*staged, out);
}

// ---- normalisation ----

absl::Status CudaBackend::LayerNorm(const Tensor& x, const Tensor* weight, const Tensor* bias,
                                    float eps, Tensor& out, Tensor* scale_out,
                                    Tensor* unweighted_out) {
  GB_RETURN_IF_ERROR(ExpectOnDevice("LayerNorm", {&x, weight, bias, &out, scale_out, unweighted_out}));
  GB_RETURN_IF_ERROR(ExpectDType("LayerNorm", x.dtype(), {&out, scale_out, unweighted_out}));
  GB_RETURN_IF_ERROR(ExpectFloating("LayerNorm", {weight, bias}));
  const int64_t d = x.rank() == 0 ? 1 : x.dim(-1), t = Rows(x);
  GB_RETURN_IF_ERROR(Expect(out.numel() == x.numel() && (!weight || weight->numel() == d) &&
                                     (!bias || bias->numel() == d) &&
                                     (!scale_out || scale_out->numel() == t) &&
                                     (!unweighted_out || unweighted_out->numel() == x.numel()),
                                 "LayerNorm", "shape mismatch"));
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  cuda::NormArgs a;
  a.type = x.dtype();
  a.x = x.raw_data();
  a.weight = AnyOf(weight);
  a.bias = AnyOf(bias);
  a.eps = eps;
  a.out = out.raw_data();
  a.scale_out = scale_out ? scale_out->raw_data() : nullptr;
  a.unweighted_out = unweighted_out ? unweighted_out->raw_data() : nullptr;
  a.rows = x.numel() == 0 ? 0 : t;
  a.cols = d;
  return Launched("LayerNorm", cuda::LaunchLayerNorm(a, Stream(stream_)));
}

absl::Status CudaBackend::RmsNorm(const Tensor& x, const Tensor* weight, float eps, Tensor& out,
                                  Tensor* scale_out, Tensor* unweighted_out) {
  GB_RETURN_IF_ERROR(ExpectOnDevice("RmsNorm", {&x, weight, &out, scale_out, unweighted_out}));
  GB_RETURN_IF_ERROR(ExpectDType("RmsNorm", x.dtype(), {&out, scale_out, unweighted_out}));
  GB_RETURN_IF_ERROR(ExpectFloating("RmsNorm", {weight}));
  const int64_t d = x.rank() == 0 ? 1 : x.dim(-1), t = Rows(x);
  GB_RETURN_IF_ERROR(Expect(out.numel() == x.numel() && (!weight || weight->numel() == d) &&
                                     (!scale_out || scale_out->numel() == t) &&
                                     (!unweighted_out || unweighted_out->numel() == x.numel()),
                                 "RmsNorm", "shape mismatch"));
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  cuda::NormArgs a;
  a.type = x.dtype();
  a.x = x.raw_data();
  a.weight = AnyOf(weight);
  a.eps = eps;
  a.out = out.raw_data();
  a.scale_out = scale_out ? scale_out->raw_data() : nullptr;
  a.unweighted_out = unweighted_out ? unweighted_out->raw_data() : nullptr;
  a.rows = x.numel() == 0 ? 0 : t;
  a.cols = d;
  return Launched("RmsNorm", cuda::LaunchRmsNorm(a, Stream(stream_)));
}

// ---- embeddings and positions ----

absl::Status CudaBackend::Embedding(const Tensor& table, const Tensor& ids, Tensor& out) {
  GB_RETURN_IF_ERROR(ExpectOnDevice("Embedding", {&table, &ids, &out}));
  GB_RETURN_IF_ERROR(Expect(table.rank() == 2, "Embedding", "table must be [vocab, dim]"));
  const int64_t d = table.dim(1), vocab = table.dim(0), t = ids.numel();
  GB_RETURN_IF_ERROR(Expect(ids.dtype() == DType::kI32 && out.dtype() == table.dtype() &&
                                     out.numel() == t * d,
                                 "Embedding", "shape mismatch"));
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  return Launched("Embedding",
                  cuda::LaunchEmbedding(static_cast<int>(DTypeSize(table.dtype())), table.raw_data(),
                                        vocab, d, ids.data<int32_t>(), t, out.raw_data(),
                                        device_errors_, Stream(stream_)));
}

absl::Status CudaBackend::Rotary(const Tensor& x, const Tensor& cos, const Tensor& sin,
                                 const Tensor& positions, int rotary_dim, Tensor& out) {
  GB_RETURN_IF_ERROR(ExpectOnDevice("Rotary", {&x, &cos, &sin, &positions, &out}));
  GB_RETURN_IF_ERROR(ExpectDType("Rotary", x.dtype(), {&out}));
  GB_RETURN_IF_ERROR(ExpectFloating("Rotary", {&cos, &sin}));
  GB_RETURN_IF_ERROR(Expect(x.rank() >= 2 && cos.rank() == 2 && sin.rank() == 2, "Rotary",
                                 "x must be [..., heads, d_head] and the tables [n_ctx, rotary_dim / 2]"));
  const int64_t heads = x.dim(-2), d_head = x.dim(-1);
  const int64_t t = heads * d_head == 0 ? 0 : x.numel() / (heads * d_head);
  const int64_t half = rotary_dim / 2, n_ctx = cos.dim(0);
  GB_RETURN_IF_ERROR(Expect(positions.dtype() == DType::kI32 && positions.numel() == t &&
                                     out.numel() == x.numel() && rotary_dim >= 0 &&
                                     rotary_dim % 2 == 0 && rotary_dim <= d_head &&
                                     cos.dim(1) == half && sin.dim(1) == half && sin.dim(0) == n_ctx,
                                 "Rotary", "shape mismatch"));
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  cuda::RotaryArgs a;
  a.type = x.dtype();
  a.x = x.raw_data();
  a.out = out.raw_data();
  a.cos = AnyOf(&cos);
  a.sin = AnyOf(&sin);
  a.positions = positions.data<int32_t>();
  a.tokens = t;
  a.heads = heads;
  a.d_head = d_head;
  a.rotary_dim = rotary_dim;
  a.n_ctx = n_ctx;
  a.device_errors = device_errors_;
  return Launched("Rotary", cuda::LaunchRotary(a, Stream(stream_)));
}

// ---- attention ----

absl::Status CudaBackend::Attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& key_mask, float scale, Tensor& z,
                                    Tensor* scores, Tensor* pattern) {
  GB_RETURN_IF_ERROR(ExpectOnDevice("Attention", {&q, &k, &v, &key_mask, &z, scores, pattern}));
  GB_RETURN_IF_ERROR(ExpectDType("Attention", q.dtype(), {&k, &v, &z, scores, pattern}));
  GB_RETURN_IF_ERROR(Expect(q.rank() == 4 && k.rank() == 4 && v.rank() == 4, "Attention", "rank != 4"));
  const int64_t batch = q.dim(0), seq = q.dim(1), heads = q.dim(2), d_head = q.dim(3);
  const int64_t kv_heads = k.dim(2);
  GB_RETURN_IF_ERROR(Expect(
      kv_heads > 0 && heads % kv_heads == 0 && k.shape() == v.shape() && k.dim(0) == batch &&
          k.dim(1) == seq && k.dim(3) == d_head && key_mask.dtype() == DType::kI32 &&
          key_mask.numel() == batch * seq && z.numel() == q.numel() &&
          (!scores || scores->numel() == batch * heads * seq * seq) &&
          (!pattern || pattern->numel() == batch * heads * seq * seq),
      "Attention", "shape mismatch"));
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  if (batch == 0 || seq == 0 || heads == 0) return absl::OkStatus();
  cuda::AttentionArgs a;
  a.type = q.dtype();
  a.q = q.raw_data();
  a.k = k.raw_data();
  a.v = v.raw_data();
  a.key_mask = key_mask.data<int32_t>();
  a.z = z.raw_data();
  a.scores = scores ? scores->raw_data() : nullptr;
  a.pattern = pattern ? pattern->raw_data() : nullptr;
  a.batch = batch;
  a.seq = seq;
  a.heads = heads;
  a.kv_heads = kv_heads;
  a.d_head = d_head;
  a.scale = scale;

  if (scores == nullptr && pattern == nullptr && options_.flash_attention) {
    const cudaError_t err = cuda::LaunchFlashAttention(a, Stream(stream_));
    if (err != cudaErrorNotSupported) return Launched("Attention (flash)", err);
    // Unsupported head size or shared memory: the materialised path below computes z too.
  }
  // Materialised path, in chunks of (batch, head) pairs whose f32 scores fit the budget.
  const int64_t pairs = batch * heads;
  const int64_t pair_bytes = seq * seq * static_cast<int64_t>(sizeof(float));
  const int64_t chunk = std::clamp<int64_t>(
      static_cast<int64_t>(options_.attention_work_bytes) / std::max<int64_t>(pair_bytes, 1), 1,
      std::min<int64_t>(pairs, 65535));
  auto work = Allocate(DType::kF32, {chunk, seq, seq});
  if (!work.ok()) return work.status();
  for (int64_t begin = 0; begin < pairs; begin += chunk) {
    const int64_t count = std::min(chunk, pairs - begin);
    GB_RETURN_IF_ERROR(Launched("Attention (materialised)",
                                     cuda::LaunchMaterializedAttention(a, work->data<float>(), begin,
                                                                       count, Stream(stream_))));
  }
  return absl::OkStatus();
}

// ---- elementwise ----

absl::Status CudaBackend::Add(const Tensor& a, const Tensor& b, Tensor& out) {
  GB_RETURN_IF_ERROR(ExpectOnDevice("Add", {&a, &b, &out}));
  GB_RETURN_IF_ERROR(ExpectDType("Add", a.dtype(), {&b, &out}));
  GB_RETURN_IF_ERROR(Expect(a.numel() == b.numel() && a.numel() == out.numel(), "Add", "shape mismatch"));
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  return Launched("Add", cuda::LaunchAdd(a.dtype(), a.raw_data(), b.raw_data(), out.raw_data(),
                                         a.numel(), Stream(stream_)));
}

absl::Status CudaBackend::Mul(const Tensor& a, const Tensor& b, Tensor& out) {
  GB_RETURN_IF_ERROR(ExpectOnDevice("Mul", {&a, &b, &out}));
  GB_RETURN_IF_ERROR(ExpectDType("Mul", a.dtype(), {&b, &out}));
  GB_RETURN_IF_ERROR(Expect(a.numel() == b.numel() && a.numel() == out.numel(), "Mul", "shape mismatch"));
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  return Launched("Mul", cuda::LaunchMul(a.dtype(), a.raw_data(), b.raw_data(), out.raw_data(),
                                         a.numel(), Stream(stream_)));
}

absl::Status CudaBackend::Activate(Activation act, const Tensor& x, Tensor& out) {
  GB_RETURN_IF_ERROR(ExpectOnDevice("Activate", {&x, &out}));
  GB_RETURN_IF_ERROR(ExpectDType("Activate", x.dtype(), {&out}));
  GB_RETURN_IF_ERROR(Expect(x.numel() == out.numel(), "Activate", "shape mismatch"));
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  return Launched("Activate", cuda::LaunchActivate(x.dtype(), act, x.raw_data(),
                                                   out.raw_data(), x.numel(), Stream(stream_)));
}

// ---- reshaping ----

absl::Status CudaBackend::SplitQkv(const Tensor& qkv, Tensor& q, Tensor& k, Tensor& v) {
  GB_RETURN_IF_ERROR(ExpectOnDevice("SplitQkv", {&qkv, &q, &k, &v}));
  GB_RETURN_IF_ERROR(ExpectDType("SplitQkv", qkv.dtype(), {&q, &k, &v}));
  const int64_t t = Rows(qkv), width = qkv.rank() == 0 ? 1 : qkv.dim(-1);
  const int64_t qw = q.numel() / std::max<int64_t>(t, 1), kw = k.numel() / std::max<int64_t>(t, 1);
  GB_RETURN_IF_ERROR(Expect(width == qw + 2 * kw && v.numel() == k.numel() &&
                                     q.numel() == t * qw && k.numel() == t * kw,
                                 "SplitQkv", "shape mismatch"));
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  if (t == 0) return absl::OkStatus();
  // Three strided 2-D copies: rows of the fused projection into three dense matrices.
  const size_t es = static_cast<size_t>(DTypeSize(qkv.dtype()));
  const char* src = static_cast<const char*>(qkv.raw_data());
  const std::pair<Tensor*, int64_t> parts[] = {{&q, 0}, {&k, qw}, {&v, qw + kw}};
  for (const auto& [dst, offset] : parts) {
    const int64_t cols = dst == &q ? qw : kw;
    if (cols == 0) continue;
    GB_RETURN_IF_ERROR(CudaStatus(
        cudaMemcpy2DAsync(dst->raw_data(), cols * es, src + offset * es, width * es, cols * es,
                          static_cast<size_t>(t), cudaMemcpyDeviceToDevice, Stream(stream_)),
        "SplitQkv cudaMemcpy2DAsync"));
  }
  return absl::OkStatus();
}

// ---- outputs ----

absl::Status CudaBackend::CrossEntropy(const Tensor& logits, const Tensor& targets, Tensor& loss) {
  GB_RETURN_IF_ERROR(ExpectOnDevice("CrossEntropy", {&logits, &targets, &loss}));
  GB_RETURN_IF_ERROR(ExpectFloating("CrossEntropy", {&logits, &loss}));
  const int64_t vocab = logits.rank() == 0 ? 1 : logits.dim(-1), t = Rows(logits);
  GB_RETURN_IF_ERROR(Expect(targets.dtype() == DType::kI32 && targets.numel() == t &&
                                     loss.numel() == t,
                                 "CrossEntropy", "shape mismatch"));
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  return Launched("CrossEntropy",
                  cuda::LaunchCrossEntropy(logits.dtype(), logits.raw_data(), targets.data<int32_t>(),
                                           loss.dtype(), loss.raw_data(),
                                           logits.numel() == 0 ? 0 : t, vocab, Stream(stream_)));
}

absl::Status CudaBackend::LogSoftmax(const Tensor& x, Tensor& out) {
  GB_RETURN_IF_ERROR(ExpectOnDevice("LogSoftmax", {&x, &out}));
  GB_RETURN_IF_ERROR(ExpectDType("LogSoftmax", x.dtype(), {&out}));
  GB_RETURN_IF_ERROR(Expect(x.numel() == out.numel(), "LogSoftmax", "shape mismatch"));
  const int64_t n = x.rank() == 0 ? 1 : x.dim(-1), t = Rows(x);
  DeviceGuard guard(device_);
  GB_RETURN_IF_ERROR(guard.status());
  return Launched("LogSoftmax", cuda::LaunchLogSoftmax(x.dtype(), x.raw_data(), out.raw_data(),
                                                       x.numel() == 0 ? 0 : t, n, Stream(stream_)));
}

}  // namespace glassbox
