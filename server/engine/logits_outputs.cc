#include "server/engine/logits_outputs.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace glassbox {
namespace {

// A host tensor on the backend's device (itself on the CPU backend).
absl::StatusOr<Tensor> Upload(Backend& backend, const Tensor& host) {
  if (backend.device() == Device::kCpu) return host;
  GB_ASSIGN_OR_RETURN(Tensor t, backend.Allocate(host.dtype(), host.shape()));
  GB_RETURN_IF_ERROR(backend.CopyFromHost(host, t));
  return t;
}

// `t` as a host tensor of `shape` (the same element count): one copy from a device, none from
// the host, where the pass's tensor is handed out as it is (nothing writes to it again).
absl::StatusOr<Tensor> ToHost(Backend& backend, const Tensor& t, Shape shape) {
  if (t.device() == Device::kCpu) return t.Reshape(std::move(shape));
  Tensor host = Tensor::EmptyHost(t.dtype(), std::move(shape));
  GB_RETURN_IF_ERROR(backend.CopyToHost(t, host));
  return host;
}

// Replaces `logits` by cap · tanh(logits / cap) when cap > 0 (Gemma-2's final soft cap).
absl::Status SoftCapped(Backend& backend, float cap, Tensor& logits) {
  if (cap <= 0) return absl::OkStatus();
  GB_ASSIGN_OR_RETURN(Tensor capped, backend.Allocate(logits.dtype(), logits.shape()));
  GB_RETURN_IF_ERROR(backend.SoftCap(logits, cap, capped));
  logits = capped;
  return absl::OkStatus();
}

Shape Append(Shape lead, int64_t n) {
  lead.push_back(n);
  return lead;
}

// loss [batch * seq] (position t's loss predicts token t + 1) without each row's last position,
// which has no next token: a gather of the [batch * (seq - 1)] rows kept.
absl::StatusOr<Tensor> DropLastPositions(Backend& backend, const Tensor& loss, int64_t batch,
                                         int64_t seq) {
  const int64_t kept = batch * (seq - 1);
  Tensor rows = Tensor::EmptyHost(DType::kI32, {kept});
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t + 1 < seq; ++t) {
      rows.data<int32_t>()[b * (seq - 1) + t] = static_cast<int32_t>(b * seq + t);
    }
  }
  GB_ASSIGN_OR_RETURN(Tensor rows_dev, Upload(backend, rows));
  GB_ASSIGN_OR_RETURN(Tensor out, backend.Allocate(DType::kF32, {kept, 1}));
  GB_RETURN_IF_ERROR(backend.Embedding(loss.Reshape({batch * seq, 1}), rows_dev, out));
  return out;
}

}  // namespace

absl::Status ValidateLogitsRequest(const LogitsRequest& request, int64_t vocab) {
  if (request.top_k < 0 || request.top_k > vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k ", request.top_k, " is outside [0, ", vocab, "]"));
  }
  for (int32_t t : request.target_tokens) {
    if (t < 0 || t >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("target token ", t, " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Tensor> LogProbsAt(Backend& backend, const Tensor& logits,
                                  std::span<const int32_t> columns) {
  if (logits.rank() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("LogProbsAt takes logits [rows, vocab], got ", logits.DebugString()));
  }
  const int64_t rows = logits.dim(0), n = static_cast<int64_t>(columns.size());
  GB_ASSIGN_OR_RETURN(Tensor columns_dev, Upload(backend, Tensor::FromHost(columns, {n})));
  GB_ASSIGN_OR_RETURN(Tensor lse, backend.Allocate(DType::kF32, {rows}));
  GB_RETURN_IF_ERROR(backend.LogSumExp(logits, lse));
  GB_ASSIGN_OR_RETURN(Tensor log_probs, backend.Allocate(DType::kF32, {rows, n}));
  GB_RETURN_IF_ERROR(backend.GatherColumns(logits, columns_dev, &lse, log_probs));
  return log_probs;
}

absl::StatusOr<LogitsOutputs> ComputeLogitsOutputs(Backend& backend, const UnembedInputs& in,
                                                   const LogitsRequest& request) {
  LogitsOutputs out;
  const bool derived = request.top_k > 0 || !request.target_tokens.empty();
  const bool at_all = request.outputs_at == OutputPositions::kAll;
  const bool need_all =
      request.logits == LogitsMode::kAll || request.loss_per_token || (derived && at_all);
  const bool need_last = request.logits == LogitsMode::kLast || (derived && !at_all);
  const int64_t batch = in.batch, seq = in.seq, vocab = in.vocab;

  Tensor all, last;
  if (need_all) {
    GB_ASSIGN_OR_RETURN(all, backend.Allocate(DType::kF32, {batch * seq, vocab}));
    GB_RETURN_IF_ERROR(
        backend.Linear(*in.normalized, *in.unembed, in.unembed_bias, Activation::kIdentity, all));
    GB_RETURN_IF_ERROR(SoftCapped(backend, in.softcap, all));
  }
  if (need_last) {
    GB_ASSIGN_OR_RETURN(last, backend.Allocate(DType::kF32, {batch, vocab}));
    if (all.defined()) {
      // Rows of the full logits: the very values LogitsMode::kAll returns at those positions.
      GB_RETURN_IF_ERROR(backend.Embedding(all, *in.last_index, last));
    } else {
      // Unembed only each row's last real token: gather those rows, then one small GEMM.
      GB_ASSIGN_OR_RETURN(Tensor rows, backend.Allocate(in.normalized->dtype(),
                                                        {batch, in.normalized->dim(-1)}));
      GB_RETURN_IF_ERROR(backend.Embedding(*in.normalized, *in.last_index, rows));
      GB_RETURN_IF_ERROR(
          backend.Linear(rows, *in.unembed, in.unembed_bias, Activation::kIdentity, last));
      GB_RETURN_IF_ERROR(SoftCapped(backend, in.softcap, last));
    }
  }

  const Tensor& source = at_all ? all : last;
  const Shape lead = at_all ? Shape{batch, seq} : Shape{batch};
  if (request.top_k > 0) {
    const int64_t rows = source.dim(0), k = request.top_k;
    GB_ASSIGN_OR_RETURN(Tensor values, backend.Allocate(DType::kF32, {rows, k}));
    GB_ASSIGN_OR_RETURN(Tensor indices, backend.Allocate(DType::kI32, {rows, k}));
    GB_RETURN_IF_ERROR(backend.TopK(source, k, values, indices));
    GB_ASSIGN_OR_RETURN(out.top_k_values, ToHost(backend, values, Append(lead, k)));
    GB_ASSIGN_OR_RETURN(out.top_k_indices, ToHost(backend, indices, Append(lead, k)));
  }
  if (!request.target_tokens.empty()) {
    GB_ASSIGN_OR_RETURN(Tensor log_probs, LogProbsAt(backend, source, request.target_tokens));
    const int64_t n = static_cast<int64_t>(request.target_tokens.size());
    GB_ASSIGN_OR_RETURN(out.target_log_probs, ToHost(backend, log_probs, Append(lead, n)));
  }
  if (request.loss_per_token) {
    GB_ASSIGN_OR_RETURN(Tensor loss, backend.Allocate(DType::kF32, {batch * seq}));
    GB_RETURN_IF_ERROR(backend.CrossEntropy(all, *in.next_targets, loss));
    GB_ASSIGN_OR_RETURN(Tensor kept, DropLastPositions(backend, loss, batch, seq));
    GB_ASSIGN_OR_RETURN(out.loss_per_token, ToHost(backend, kept, {batch, seq - 1}));
  }
  if (request.logits == LogitsMode::kAll) {
    GB_ASSIGN_OR_RETURN(out.logits, ToHost(backend, all, {batch, seq, vocab}));
  } else if (request.logits == LogitsMode::kLast) {
    GB_ASSIGN_OR_RETURN(out.logits, ToHost(backend, last, {batch, vocab}));
  }
  return out;
}

}  // namespace glassbox
