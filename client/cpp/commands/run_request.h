// The RunRequest of `glassbox run`, from its flags: rows, interventions and SAE splices,
// captures, outputs, and the run kept on the server.
#pragma once

#include "absl/status/status.h"
#include "client/cpp/cli/command.h"
#include "glassbox/v1/glassbox.pb.h"

namespace glassbox::cli {

absl::Status ParseRunRequest(const CommandLine& line, glassbox::v1::RunRequest& request);

// The part `glassbox generate` shares: the model, the rows, --intervene and the SAE flags.
absl::Status ParseRowsAndEdits(const CommandLine& line, glassbox::v1::RunRequest& request);

}  // namespace glassbox::cli
