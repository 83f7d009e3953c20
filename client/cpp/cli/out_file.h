// The --out FILE of the commands that write their results to a safetensors file.
#pragma once

#include <ostream>
#include <string>

#include <google/protobuf/message.h>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/invocation.h"
#include "client/cpp/cli/safetensors_builder.h"

namespace glassbox::cli {

// invocation.out_path from --out ("" when not given; an empty name is a usage error).
absl::Status ParseOutPath(const CommandLine& line, Invocation& invocation);

// Writes invocation.out_path, when there is one: `fill` adds the tensors (and metadata), then
// the model and the request go into the metadata. Prints "wrote N tensors to PATH"; a failure to
// write is local (MarkLocal).
absl::Status WriteOutFile(const Invocation& invocation, const std::string& model,
                          const google::protobuf::Message& request, std::ostream& out,
                          absl::FunctionRef<void(SafetensorsBuilder& file)> fill);

}  // namespace glassbox::cli
