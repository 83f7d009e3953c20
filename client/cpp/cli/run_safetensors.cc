#include "client/cpp/cli/run_safetensors.h"

#include <optional>
#include <set>
#include <span>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "client/cpp/cli/safetensors_builder.h"

namespace glassbox::cli {
namespace {

std::optional<SafetensorsDtype> ToSafetensorsDtype(glassbox::v1::DType dtype) {
  switch (dtype) {
    case glassbox::v1::DTYPE_F32:
      return SafetensorsDtype::kF32;
    case glassbox::v1::DTYPE_F16:
      return SafetensorsDtype::kF16;
    case glassbox::v1::DTYPE_BF16:
      return SafetensorsDtype::kBF16;
    case glassbox::v1::DTYPE_I32:
      return SafetensorsDtype::kI32;
    default:
      return std::nullopt;
  }
}

}  // namespace

absl::StatusOr<int> WriteRunSafetensors(const std::string& path,
                                        const glassbox::v1::RunRequest& request,
                                        const client::RunResult& result, std::ostream& err) {
  SafetensorsBuilder file;
  std::set<std::string> names;
  // Names must be unique in the file; if two captures resolve to the same name, keep both.
  auto unique_name = [&](const std::string& name) {
    std::string candidate = name;
    for (int n = 2; names.contains(candidate); ++n) candidate = absl::StrCat(name, "#", n);
    if (candidate != name) {
      err << "glassbox: warning: tensor \"" << name
          << "\" came back twice; the second is saved as \"" << candidate << "\"\n";
    }
    names.insert(candidate);
    return candidate;
  };
  for (const client::ReceivedTensor& t : result.tensors) {
    std::optional<SafetensorsDtype> dtype = ToSafetensorsDtype(t.dtype);
    if (!dtype.has_value()) {
      return absl::InternalError(absl::StrFormat("tensor \"%s\" has unknown dtype %d", t.name,
                                                 static_cast<int>(t.dtype)));
    }
    file.AddBytes(unique_name(t.name), *dtype, t.shape,
                  std::as_bytes(std::span<const char>(t.bytes.data(), t.bytes.size())));
  }
  // The ids that ran, so that text inputs can be interpreted.
  const glassbox::v1::Header& header = result.header;
  TokenRows rows;
  for (const auto& row : header.tokens()) rows.emplace_back(row.ids().begin(), row.ids().end());
  if (!rows.empty()) {
    const std::string ids_name = unique_name("input_ids");
    file.AddTokenRows(rows, ids_name, unique_name("sequence_lengths"));
  }
  file.AddRequest(header.model(), request);
  GB_RETURN_IF_ERROR(file.Write(path));
  return static_cast<int>(file.size());
}

}  // namespace glassbox::cli
