#include "client/cpp/cli/safetensors_builder.h"

#include <algorithm>
#include <utility>

#include <google/protobuf/util/json_util.h>

#include "client/cpp/arrays.h"

namespace glassbox::cli {

void SafetensorsBuilder::AddBytes(const std::string& name, SafetensorsDtype dtype,
                                  std::vector<int64_t> shape, std::span<const std::byte> bytes) {
  tensors_.push_back({.name = name, .dtype = dtype, .shape = std::move(shape), .bytes = bytes});
}

void SafetensorsBuilder::AddArray(const std::string& name, const glassbox::v1::Array& array) {
  if (client::IsEmptyArray(array)) return;
  if (array.indices_size() > 0) {
    AddBytes(name, SafetensorsDtype::kI32, client::ArrayShape(array),
             std::as_bytes(std::span<const int32_t>(array.indices().data(), array.indices_size())));
  } else {
    AddBytes(name, SafetensorsDtype::kF32, client::ArrayShape(array),
             std::as_bytes(std::span<const float>(array.values().data(), array.values_size())));
  }
}

void SafetensorsBuilder::AddFloats(const std::string& name, std::vector<int64_t> shape,
                                   std::vector<float> values) {
  floats_.push_back(std::move(values));
  AddBytes(name, SafetensorsDtype::kF32, std::move(shape),
           std::as_bytes(std::span<const float>(floats_.back())));
}

void SafetensorsBuilder::AddInts(const std::string& name, std::vector<int64_t> shape,
                                 std::vector<int32_t> values) {
  ints_.push_back(std::move(values));
  AddBytes(name, SafetensorsDtype::kI32, std::move(shape),
           std::as_bytes(std::span<const int32_t>(ints_.back())));
}

void SafetensorsBuilder::AddTokenRows(const TokenRows& rows, const std::string& ids_name,
                                      const std::string& lengths_name) {
  size_t max_len = 0;
  for (const auto& row : rows) max_len = std::max(max_len, row.size());
  std::vector<int32_t> ids(rows.size() * max_len, 0), lengths;
  for (size_t b = 0; b < rows.size(); ++b) {
    std::copy(rows[b].begin(), rows[b].end(), ids.begin() + b * max_len);
    lengths.push_back(static_cast<int32_t>(rows[b].size()));
  }
  AddInts(ids_name, {static_cast<int64_t>(rows.size()), static_cast<int64_t>(max_len)},
          std::move(ids));
  AddInts(lengths_name, {static_cast<int64_t>(rows.size())}, std::move(lengths));
}

void SafetensorsBuilder::AddRequest(const std::string& model,
                                    const google::protobuf::Message& request) {
  metadata["glassbox.model"] = model;
  std::string json;
  if (google::protobuf::util::MessageToJsonString(request, &json).ok()) {
    metadata["glassbox.request"] = json;
  }
}

absl::Status SafetensorsBuilder::Write(const std::string& path) const {
  return WriteSafetensors(path, tensors_, metadata);
}

}  // namespace glassbox::cli
