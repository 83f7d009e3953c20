// Reading and writing the safetensors format (https://github.com/huggingface/safetensors):
// an 8-byte little-endian header length N, N bytes of JSON describing each tensor
// ({name: {"dtype", "shape", "data_offsets": [begin, end]}}, plus an optional "__metadata__"
// object of strings), then the data buffer that the offsets index into.
//
// Weights come from files we did not write, so parsing is strict: every structural rule of the
// spec is checked (including that the tensors tile the data buffer exactly, which rules out
// aliasing and hidden bytes), and a bad file is an INVALID_ARGUMENT that names the file, the
// tensor and the problem, never a crash or an out-of-bounds view.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/dtype.h"

namespace glassbox {

// The element types we parse. The spec has a few more (U16, U32, U64, F8_*); files that use them
// are rejected with a message naming the dtype rather than misread.
enum class SafetensorsDtype { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// Bytes per element.
int64_t SafetensorsDtypeSize(SafetensorsDtype dtype);
// The name the spec uses in headers: "F64", "F32", "F16", "BF16", "I64", ..., "BOOL".
std::string_view SafetensorsDtypeName(SafetensorsDtype dtype);
// Inverse of SafetensorsDtypeName; nullopt for names we do not support.
std::optional<SafetensorsDtype> SafetensorsDtypeFromName(std::string_view name);
// The tensor dtype the engine computes with, where there is one (F32/F16/BF16/I32/I64).
std::optional<DType> ToDType(SafetensorsDtype dtype);

// A tensor inside a safetensors image. `bytes` points into the image (for a SafetensorsFile,
// into its mapping) and stays valid while that image lives.
struct TensorView {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;  // empty for a scalar
  std::span<const std::byte> bytes;

  int64_t numel() const;
};

// Validated parse of an in-memory safetensors image. `label` (usually the path) prefixes every
// error message. The returned views point into `data` and are ordered by their position in the
// data buffer. When `metadata` is given it receives the "__metadata__" entries (cleared first).
absl::StatusOr<std::vector<TensorView>> ParseSafetensors(
    std::span<const std::byte> data, std::string_view label,
    std::map<std::string, std::string>* metadata = nullptr);

// One safetensors file, memory-mapped read-only (MAP_PRIVATE) so weights are paged in on demand
// and shared with the page cache instead of copied. The mapping is released on destruction.
class SafetensorsFile {
 public:
  // NOT_FOUND when `path` does not exist; INVALID_ARGUMENT when it is not a valid file.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  // Moving keeps the views valid: they point into the mapping, which does not move.
  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  // Ordered by position in the file.
  const std::vector<TensorView>& tensors() const { return tensors_; }
  // nullptr if the file has no tensor of that name.
  const TensorView* Find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Drops the whole pages of `view` from this process's resident set (MADV_DONTNEED) once its
  // values have been copied out; they stay in the page cache and fault back in if read again.
  // A loader that converts tensor by tensor so never holds the file and its converted copy at
  // once. False (and nothing done) when `view` is not in this file's mapping.
  bool ReleasePages(const TensorView& view) const;

 private:
  SafetensorsFile() = default;
  void Unmap();

  std::string path_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// A HuggingFace checkpoint: a directory holding `model.safetensors` or shards listed by
// `model.safetensors.index.json` ({"metadata": ..., "weight_map": {tensor: shard file}}), or a
// path to a single .safetensors file. Like HF, a directory with both prefers model.safetensors.
// Every tensor the index names must be in the shard it names, and no tensor may appear in two
// shards (which copy would the model get?).
class SafetensorsCheckpoint {
 public:
  static absl::StatusOr<SafetensorsCheckpoint> Open(const std::string& path);

  // nullptr if no file of the checkpoint has a tensor of that name.
  const TensorView* Find(std::string_view name) const;
  // All tensor names, sorted.
  std::vector<std::string> Names() const;
  size_t size() const { return by_name_.size(); }
  // The files, in the order they were opened (the sorted shard names for a sharded checkpoint).
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  // SafetensorsFile::ReleasePages on the file holding `view`.
  void ReleasePages(const TensorView& view) const;

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  // Views live inside files_ (heap objects), so these pointers survive moving the checkpoint.
  std::map<std::string, const TensorView*, std::less<>> by_name_;
};

// A tensor for the writer; `bytes` must hold exactly numel * dtype size bytes (little-endian).
struct TensorToWrite {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;
};

// A complete safetensors image. Tensors are laid out in the given order, each one's data right
// after the previous one's; the header is padded with spaces so the data starts 8-byte aligned.
// INVALID_ARGUMENT for duplicate or reserved names, negative dims, or a byte-size mismatch.
absl::StatusOr<std::string> SerializeSafetensors(
    std::span<const TensorToWrite> tensors,
    const std::map<std::string, std::string>& metadata = {});

// SerializeSafetensors into `path`, written to a temporary file in the same directory and then
// renamed, so readers never see a half-written file.
absl::Status WriteSafetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace glassbox
