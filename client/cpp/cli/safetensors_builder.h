// The tensors and metadata of a safetensors file the CLI writes (--out), gathered from response
// arrays, streamed bytes and small host vectors, then written at once.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <google/protobuf/message.h>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/safetensors.h"
#include "client/cpp/cli/rows.h"
#include "glassbox/v1/glassbox.pb.h"

namespace glassbox::cli {

class SafetensorsBuilder {
 public:
  // Bytes owned elsewhere, which must outlive Write.
  void AddBytes(const std::string& name, SafetensorsDtype dtype, std::vector<int64_t> shape,
                std::span<const std::byte> bytes);
  // An array of the response (which must outlive Write): I32 for indices, F32 for values;
  // nothing for an empty array.
  void AddArray(const std::string& name, const glassbox::v1::Array& array);
  void AddFloats(const std::string& name, std::vector<int64_t> shape, std::vector<float> values);
  void AddInts(const std::string& name, std::vector<int64_t> shape, std::vector<int32_t> values);
  // "input_ids" ([batch, max_len] i32, right-padded with 0) and "sequence_lengths" ([batch]),
  // unless named otherwise.
  void AddTokenRows(const TokenRows& rows, const std::string& ids_name = "input_ids",
                    const std::string& lengths_name = "sequence_lengths");
  // "glassbox.model", and the request as JSON in "glassbox.request".
  void AddRequest(const std::string& model, const google::protobuf::Message& request);
  // A JSON array of strings (labels, dim names) as a metadata entry.
  void AddLabels(const std::string& key, const auto& labels) {
    std::vector<std::string> quoted;
    for (const std::string& label : labels) {
      quoted.push_back(absl::StrCat("\"", absl::CEscape(label), "\""));
    }
    metadata[key] = absl::StrCat("[", absl::StrJoin(quoted, ","), "]");
  }

  size_t size() const { return tensors_.size(); }
  // The tensors in the order they were added.
  absl::Status Write(const std::string& path) const;

  std::map<std::string, std::string> metadata;

 private:
  std::deque<std::vector<float>> floats_;  // a deque: growing it never moves an element
  std::deque<std::vector<int32_t>> ints_;
  std::vector<TensorToWrite> tensors_;
};

}  // namespace glassbox::cli
