// Assembly and validation of a Run response stream (Header, TensorChunk..., Summary) into whole
// tensors. Kept apart from gRPC so that it can be fed any sequence of messages, which is how the
// tests exercise every way a stream can be malformed.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "glassbox/v1/glassbox.pb.h"

namespace glassbox::client {

// One streamed tensor, complete: dense, row-major, little-endian `bytes` of `dtype`. Captures
// come first, named by hook ("<hook>.indices" for top-k indices), then the requested outputs:
// "logits", "logits.indices" (top-k logits), "loss_per_token", "target_log_probs".
struct ReceivedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<std::string> dim_names;  // parallel to shape; may be empty
  glassbox::v1::DType dtype = glassbox::v1::DTYPE_UNSPECIFIED;
  std::string bytes;

  int64_t num_elements() const;
  // The values as floats (f16/bf16 widened, i32 converted).
  absl::StatusOr<std::vector<float>> ToFloats() const;
};

// Receivers for RunStreaming. Any may be left empty. A callback that returns an error stops the
// run: the call is cancelled and RunStreaming returns that error.
struct RunCallbacks {
  // First, once. Lists every tensor that will follow.
  std::function<absl::Status(const glassbox::v1::Header&)> on_header;
  // As soon as a tensor's last chunk has arrived, in the order tensors complete.
  std::function<absl::Status(ReceivedTensor)> on_tensor;
  // Last, once: timings and bytes sent.
  std::function<absl::Status(glassbox::v1::Summary)> on_summary;
};

// A whole Run, as Client::Run returns it.
struct RunResult {
  glassbox::v1::Header header;
  std::vector<ReceivedTensor> tensors;  // in stream order
  glassbox::v1::Summary summary;

  // The tensor named `name`, or nullptr.
  const ReceivedTensor* Find(std::string_view name) const;
};

// Callbacks that collect a whole run into `result`, which must outlive them.
RunCallbacks CollectInto(RunResult& result);

// Checks each message against the protocol and hands complete pieces to the callbacks:
//  - the header comes first and exactly once; its tensor ids are unique, their dtypes known and
//    their nbytes equal to what shape and dtype need;
//  - every chunk names a tensor of the header that is not complete yet, starts at the byte
//    where that tensor's previous chunk ended, never runs past nbytes, and a chunk marked last
//    completes the tensor exactly (chunks of different tensors may interleave);
//  - the summary comes after every tensor is complete, and nothing follows it.
// A violation is INTERNAL with a message that says what the server sent.
class RunStreamAssembler {
 public:
  explicit RunStreamAssembler(RunCallbacks callbacks);

  // Consumes one message; chunk payloads may be moved out of `response`. Returns the first
  // protocol violation, or the error a callback returned.
  absl::Status Add(glassbox::v1::RunResponse& response);

  // The stream has ended: INTERNAL unless the summary arrived.
  absl::Status Finish() const;

  bool header_seen() const { return header_seen_; }
  bool summary_seen() const { return summary_seen_; }

 private:
  struct Slot {
    ReceivedTensor tensor;
    int64_t nbytes = 0;
    bool complete = false;
  };

  absl::Status AddHeader(const glassbox::v1::Header& header);
  absl::Status AddChunk(glassbox::v1::TensorChunk& chunk);
  absl::Status AddSummary(glassbox::v1::Summary& summary);

  RunCallbacks callbacks_;
  bool header_seen_ = false;
  bool summary_seen_ = false;
  std::vector<Slot> slots_;                          // in header order
  absl::flat_hash_map<int32_t, size_t> slot_of_id_;  // capture id -> index into slots_
  size_t incomplete_ = 0;
};

// Convenience: feeds `responses` through an assembler and collects a RunResult.
absl::StatusOr<RunResult> AssembleRun(std::vector<glassbox::v1::RunResponse> responses);

}  // namespace glassbox::client
