#include "client/cpp/cli/out_file.h"

#include "absl/strings/str_format.h"
#include "client/cpp/cli/errors.h"

namespace glassbox::cli {

absl::Status ParseOutPath(const CommandLine& line, Invocation& invocation) {
  invocation.out_path = line.raw.Value("out").value_or("");
  if (line.raw.Has("out") && invocation.out_path.empty()) {
    return UsageError("--out needs a file name");
  }
  return absl::OkStatus();
}

absl::Status WriteOutFile(const Invocation& invocation, const std::string& model,
                          const google::protobuf::Message& request, std::ostream& out,
                          absl::FunctionRef<void(SafetensorsBuilder& file)> fill) {
  if (invocation.out_path.empty()) return absl::OkStatus();
  SafetensorsBuilder file;
  fill(file);
  file.AddRequest(model, request);
  absl::Status status = file.Write(invocation.out_path);
  if (!status.ok()) return MarkLocal(status);
  out << absl::StrFormat("wrote %d tensors to %s\n", file.size(), invocation.out_path);
  return absl::OkStatus();
}

}  // namespace glassbox::cli
