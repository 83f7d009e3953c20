#include "client/cpp/run_stream.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "client/cpp/tensor_decode.h"

namespace glassbox::client {
namespace {

// Preallocating a tensor's bytes avoids repeated regrowth, but nbytes comes from the server;
// past this size the buffer grows as data actually arrives.
constexpr int64_t kMaxReserveBytes = int64_t{1} << 30;

absl::Status Violation(absl::string_view message) {
  return absl::InternalError(absl::StrCat("malformed Run stream from the server: ", message));
}

}  // namespace

int64_t ReceivedTensor::num_elements() const {
  absl::StatusOr<int64_t> count = NumElements(shape);
  return count.ok() ? *count : 0;
}

absl::StatusOr<std::vector<float>> ReceivedTensor::ToFloats() const {
  GB_RETURN_IF_ERROR(CheckTensorSize(name, shape, dtype, static_cast<int64_t>(bytes.size())));
  return DecodeToFloats(dtype, bytes);
}

const ReceivedTensor* RunResult::Find(std::string_view name) const {
  for (const ReceivedTensor& tensor : tensors) {
    if (tensor.name == name) return &tensor;
  }
  return nullptr;
}

RunStreamAssembler::RunStreamAssembler(RunCallbacks callbacks) : callbacks_(std::move(callbacks)) {}

absl::Status RunStreamAssembler::Add(glassbox::v1::RunResponse& response) {
  if (summary_seen_) return Violation("a message arrived after the summary");
  switch (response.kind_case()) {
    case glassbox::v1::RunResponse::kHeader:
      return AddHeader(response.header());
    case glassbox::v1::RunResponse::kChunk:
      return AddChunk(*response.mutable_chunk());
    case glassbox::v1::RunResponse::kSummary:
      return AddSummary(*response.mutable_summary());
    case glassbox::v1::RunResponse::KIND_NOT_SET:
      break;
  }
  return Violation("a RunResponse with no header, chunk or summary");
}

absl::Status RunStreamAssembler::AddHeader(const glassbox::v1::Header& header) {
  if (header_seen_) return Violation("a second header");
  header_seen_ = true;
  slots_.reserve(header.tensors_size());
  for (const glassbox::v1::CapturedTensorInfo& info : header.tensors()) {
    if (slot_of_id_.contains(info.id())) {
      return Violation(
          absl::StrFormat("the header lists capture id %d twice (\"%s\")", info.id(), info.name()));
    }
    const std::span<const int64_t> shape(info.shape().data(), info.shape().size());
    if (absl::Status s =
            CheckTensorSize(absl::StrFormat("tensor \"%s\" (id %d)", info.name(), info.id()), shape,
                            info.dtype(), info.nbytes());
        !s.ok()) {
      return Violation(absl::StrCat("header: ", s.message()));
    }
    if (!info.dim_names().empty() && info.dim_names_size() != info.shape_size()) {
      return Violation(
          absl::StrFormat("header: tensor \"%s\" (id %d) has %d dim names for %d dimensions",
                          info.name(), info.id(), info.dim_names_size(), info.shape_size()));
    }
    Slot slot;
    slot.tensor.name = info.name();
    slot.tensor.shape.assign(info.shape().begin(), info.shape().end());
    slot.tensor.dim_names.assign(info.dim_names().begin(), info.dim_names().end());
    slot.tensor.dtype = info.dtype();
    slot.nbytes = info.nbytes();
    slot_of_id_[info.id()] = slots_.size();
    slots_.push_back(std::move(slot));
  }
  incomplete_ = slots_.size();
  if (callbacks_.on_header) return callbacks_.on_header(header);
  return absl::OkStatus();
}

absl::Status RunStreamAssembler::AddChunk(glassbox::v1::TensorChunk& chunk) {
  if (!header_seen_) return Violation("a tensor chunk arrived before the header");
  auto it = slot_of_id_.find(chunk.capture_id());
  if (it == slot_of_id_.end()) {
    return Violation(absl::StrFormat("a chunk for capture id %d, which the header does not list",
                                     chunk.capture_id()));
  }
  Slot& slot = slots_[it->second];
  const std::string& name = slot.tensor.name;
  if (slot.complete) {
    return Violation(absl::StrFormat("a chunk for tensor \"%s\" (id %d) after its last chunk", name,
                                     chunk.capture_id()));
  }
  const int64_t received = static_cast<int64_t>(slot.tensor.bytes.size());
  if (chunk.offset() != received) {
    return Violation(absl::StrFormat(
        "tensor \"%s\" (id %d): a chunk at byte offset %d, but %d bytes had arrived", name,
        chunk.capture_id(), chunk.offset(), received));
  }
  const int64_t size = static_cast<int64_t>(chunk.data().size());
  if (size > slot.nbytes - received) {
    return Violation(absl::StrFormat(
        "tensor \"%s\" (id %d): a chunk of %d bytes at offset %d runs past its %d bytes", name,
        chunk.capture_id(), size, received, slot.nbytes));
  }
  if (chunk.last() && received + size != slot.nbytes) {
    return Violation(absl::StrFormat("tensor \"%s\" (id %d): the last chunk ends at byte %d of %d",
                                     name, chunk.capture_id(), received + size, slot.nbytes));
  }
  if (received == 0 && chunk.last()) {
    slot.tensor.bytes.swap(*chunk.mutable_data());  // the whole tensor in one chunk: no copy
  } else {
    if (received == 0) {
      slot.tensor.bytes.reserve(static_cast<size_t>(std::min(slot.nbytes, kMaxReserveBytes)));
    }
    slot.tensor.bytes.append(chunk.data());
  }
  if (!chunk.last()) return absl::OkStatus();

  slot.complete = true;
  --incomplete_;
  // The slot keeps the name for messages; the data goes to the receiver.
  ReceivedTensor done;
  done.name = slot.tensor.name;
  done.shape = slot.tensor.shape;
  done.dim_names = slot.tensor.dim_names;
  done.dtype = slot.tensor.dtype;
  done.bytes = std::move(slot.tensor.bytes);
  slot.tensor.bytes = std::string();
  if (callbacks_.on_tensor) return callbacks_.on_tensor(std::move(done));
  return absl::OkStatus();
}

absl::Status RunStreamAssembler::AddSummary(glassbox::v1::Summary& summary) {
  if (!header_seen_) return Violation("the summary arrived before the header");
  if (incomplete_ > 0) {
    std::vector<std::string> missing;
    for (const Slot& slot : slots_) {
      if (!slot.complete) {
        missing.push_back(absl::StrFormat("\"%s\" (%d of %d bytes)", slot.tensor.name,
                                          slot.tensor.bytes.size(), slot.nbytes));
      }
    }
    return Violation(absl::StrCat("the summary arrived before these tensors were complete: ",
                                  absl::StrJoin(missing, ", ")));
  }
  summary_seen_ = true;
  if (callbacks_.on_summary) return callbacks_.on_summary(std::move(summary));
  return absl::OkStatus();
}

absl::Status RunStreamAssembler::Finish() const {
  if (!header_seen_) return Violation("the stream ended before the header");
  if (!summary_seen_) return Violation("the stream ended before the summary");
  return absl::OkStatus();
}

RunCallbacks CollectInto(RunResult& result) {
  return RunCallbacks{
      .on_header =
          [&result](const glassbox::v1::Header& header) {
            result.header = header;
            result.tensors.reserve(header.tensors_size());
            return absl::OkStatus();
          },
      .on_tensor =
          [&result](ReceivedTensor tensor) {
            result.tensors.push_back(std::move(tensor));
            return absl::OkStatus();
          },
      .on_summary =
          [&result](glassbox::v1::Summary summary) {
            result.summary = std::move(summary);
            return absl::OkStatus();
          },
  };
}

absl::StatusOr<RunResult> AssembleRun(std::vector<glassbox::v1::RunResponse> responses) {
  RunResult result;
  RunStreamAssembler assembler(CollectInto(result));
  for (glassbox::v1::RunResponse& response : responses) {
    GB_RETURN_IF_ERROR(assembler.Add(response));
  }
  GB_RETURN_IF_ERROR(assembler.Finish());
  return result;
}

}  // namespace glassbox::client
