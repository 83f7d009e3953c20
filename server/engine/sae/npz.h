// Reading numpy's .npy arrays and .npz archives (zip files of .npy members, written by
// np.savez (stored) and np.savez_compressed (deflate)), as float32 tensors.
//
// Files come from outside, so parsing is strict and bounds-checked throughout: zip structures
// (including zip64 records, which numpy always writes), sizes against the file, CRC-32 of every
// member, the .npy header against the data length. Errors are INVALID_ARGUMENT naming the file,
// the member and the problem.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/tensor.h"

namespace glassbox {

struct ZipMember {
  std::string name;
  uint16_t method = 0;  // 0 stored, 8 deflate
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  uint64_t data_offset = 0;  // of the member's (possibly compressed) bytes in the file
};

// The members listed by a zip file's central directory.
absl::StatusOr<std::vector<ZipMember>> ParseZipDirectory(std::span<const std::byte> file,
                                                         absl::string_view label);
// One member's bytes, inflated if needed, CRC-checked.
absl::StatusOr<std::vector<std::byte>> ReadZipMember(std::span<const std::byte> file,
                                                     const ZipMember& member,
                                                     absl::string_view label);

// A .npy image of a float array (<f4, <f8, <f2; C or Fortran order) as a C-order f32 tensor.
absl::StatusOr<Tensor> ParseNpyAsF32(std::span<const std::byte> npy, absl::string_view label);

// Every array of an .npz file, keyed by name without ".npy". NOT_FOUND if the file is missing.
absl::StatusOr<std::map<std::string, Tensor>> ReadNpzAsF32(const std::string& path);

}  // namespace glassbox
