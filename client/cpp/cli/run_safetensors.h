// The --out file of `glassbox run`.
#pragma once

#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "client/cpp/glassbox_client.h"
#include "glassbox/v1/glassbox.pb.h"

namespace glassbox::cli {

// Writes a run's tensors to a safetensors file: every streamed tensor under its name (captures
// by hook name, then "logits", "logits.indices", "loss_per_token", "target_log_probs" as
// requested), then "input_ids" ([batch, max_len] i32, right-padded with 0) and
// "sequence_lengths" ([batch] i32).
// The request goes into the "glassbox.request" metadata entry as JSON. Returns the number of
// tensors written.
absl::StatusOr<int> WriteRunSafetensors(const std::string& path,
                                        const glassbox::v1::RunRequest& request,
                                        const client::RunResult& result, std::ostream& err);

}  // namespace glassbox::cli
