#include "base/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace glassbox {
namespace {

using Json = nlohmann::json;

// The reference implementation's limit. Real headers are at most a few MB even for 70B models
// split into many tensors; anything bigger is corrupt or hostile, and parsing it would cost memory.
constexpr uint64_t kMaxHeaderSize = 100'000'000;
// Same bound for model.safetensors.index.json, which is the same kind of table.
constexpr uint64_t kMaxIndexSize = 100'000'000;
// Valid headers nest three deep (root, entry, shape). The limit only stops pathological inputs
// such as a 100 MB run of '[' from building a huge DOM before validation rejects it.
constexpr int kMaxJsonDepth = 32;

// O_NONBLOCK so that a path naming a FIFO fails the regular-file check instead of hanging in
// open(); it changes nothing for regular files.
constexpr int kOpenFlags = O_RDONLY | O_CLOEXEC | O_NONBLOCK;

constexpr char kMetadataKey[] = "__metadata__";
constexpr char kSingleFileName[] = "model.safetensors";
constexpr char kIndexFileName[] = "model.safetensors.index.json";

constexpr std::array<SafetensorsDtype, 10> kAllDtypes = {
    SafetensorsDtype::kF64, SafetensorsDtype::kF32, SafetensorsDtype::kF16, SafetensorsDtype::kBF16,
    SafetensorsDtype::kI64, SafetensorsDtype::kI32, SafetensorsDtype::kI16, SafetensorsDtype::kI8,
    SafetensorsDtype::kU8,  SafetensorsDtype::kBool};

// Debian's Abseil is built with its own string_view type, which does not convert from
// std::string_view; internal helpers take absl::string_view and public entry points convert once.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Names come from untrusted files and end up in logs and client-visible errors; keep control
// characters out of them but leave UTF-8 readable.
std::string Quoted(absl::string_view name) {
  return absl::StrCat("'", absl::Utf8SafeCHexEscape(name), "'");
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

std::string TooShortMessage(absl::string_view label, uint64_t size) {
  return absl::StrCat(label, ": file is ", size,
                      " bytes, too short to hold the 8-byte header length");
}

// Thrown from inside the nlohmann parser callback (the only way to stop a callback parse) and
// caught in ParseStrictJson; it never leaves this file.
struct JsonRejected {
  std::string message;
};

// Parses `text` as one JSON value. Unlike plain nlohmann::json::parse this rejects duplicate
// object keys, which nlohmann silently collapses to one: a header naming the same tensor twice
// has two answers to "where is this tensor", and the reference implementation rejects it.
absl::StatusOr<Json> ParseStrictJson(std::string_view text, absl::string_view label,
                                     absl::string_view what) {
  // Keys seen so far in each object currently open; the first level is the document's root.
  std::vector<std::set<std::string, std::less<>>> open_objects;
  int depth = 0;
  std::string top_level_key;  // the entry being parsed, for error messages
  auto callback = [&](int /*depth*/, Json::parse_event_t event, Json& parsed) -> bool {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        if (++depth > kMaxJsonDepth) {
          throw JsonRejected{absl::StrCat("nested more than ", kMaxJsonDepth, " levels deep")};
        }
        if (event == Json::parse_event_t::object_start) open_objects.emplace_back();
        break;
      case Json::parse_event_t::object_end:
      case Json::parse_event_t::array_end:
        --depth;
        if (event == Json::parse_event_t::object_end) open_objects.pop_back();
        break;
      case Json::parse_event_t::key: {
        const std::string& key = parsed.get_ref<const std::string&>();
        if (!open_objects.back().insert(key).second) {
          if (open_objects.size() == 1) {
            throw JsonRejected{absl::StrCat("duplicate key ", Quoted(key))};
          }
          throw JsonRejected{
              absl::StrCat("duplicate key ", Quoted(key), " inside entry ", Quoted(top_level_key))};
        }
        if (open_objects.size() == 1) top_level_key = key;
        break;
      }
      case Json::parse_event_t::value:
        break;
    }
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                       /*ignore_comments=*/false);
  } catch (const JsonRejected& e) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": ", what, ": ", e.message));
  } catch (const Json::exception& e) {
    // nlohmann quotes the offending input, which may be invalid UTF-8 or control bytes.
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": ", what, " is not valid UTF-8 JSON: ", absl::CHexEscape(e.what())));
  }
}

// What a JSON value is, for "expected X, got Y" messages; numbers show their value.
std::string Describe(const Json& value) {
  if (value.is_number()) return value.dump();
  return std::string(value.type_name());
}

// Reads a JSON integer that must be >= 0 and fit in int64. On failure returns why.
std::optional<std::string> ReadNonNegativeInt(const Json& value, int64_t* out) {
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::StrCat("is too large (", u, ")");
    }
    *out = static_cast<int64_t>(u);
    return std::nullopt;
  }
  if (value.is_number_integer()) {
    const int64_t i = value.get<int64_t>();
    if (i < 0) return absl::StrCat("is negative (", i, ")");
    *out = i;
    return std::nullopt;
  }
  return absl::StrCat("is not an integer (got ", Describe(value), ")");
}

// A parsed header entry before the tiling check.
struct Entry {
  TensorView view;
  int64_t begin = 0;
  int64_t end = 0;
};

absl::StatusOr<Entry> ParseEntry(const std::string& name, const Json& value,
                                 std::span<const std::byte> buffer, absl::string_view label) {
  const std::string where = absl::StrCat(label, ": tensor ", Quoted(name), ": ");
  auto invalid = [&](absl::string_view message) {
    return absl::InvalidArgumentError(absl::StrCat(where, message));
  };
  if (!value.is_object()) {
    return invalid(absl::StrCat("entry is not an object (got ", Describe(value), ")"));
  }
  // Unknown fields are rejected rather than skipped: a writer that adds one (say, for a
  // quantisation scheme) means bytes we would misinterpret.
  for (const auto& [key, unused] : value.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return invalid(
          absl::StrCat("unexpected field ", Quoted(key), " (expected dtype, shape, data_offsets)"));
    }
  }

  Entry entry;
  entry.view.name = name;

  const auto dtype_it = value.find("dtype");
  if (dtype_it == value.end()) return invalid("missing field \"dtype\"");
  if (!dtype_it->is_string()) {
    return invalid(absl::StrCat("\"dtype\" is not a string (got ", Describe(*dtype_it), ")"));
  }
  const std::string& dtype_name = dtype_it->get_ref<const std::string&>();
  const std::optional<SafetensorsDtype> dtype = SafetensorsDtypeFromName(dtype_name);
  if (!dtype.has_value()) {
    std::vector<std::string> names;
    for (SafetensorsDtype d : kAllDtypes) names.emplace_back(SafetensorsDtypeName(d));
    return invalid(absl::StrCat("unsupported dtype ", Quoted(dtype_name),
                                " (supported: ", absl::StrJoin(names, ", "), ")"));
  }
  entry.view.dtype = *dtype;

  const auto shape_it = value.find("shape");
  if (shape_it == value.end()) return invalid("missing field \"shape\"");
  if (!shape_it->is_array()) {
    return invalid(absl::StrCat("\"shape\" is not an array (got ", Describe(*shape_it), ")"));
  }
  int64_t numel = 1;
  bool overflow = false;
  for (size_t i = 0; i < shape_it->size(); ++i) {
    int64_t dim = 0;
    if (auto error = ReadNonNegativeInt((*shape_it)[i], &dim)) {
      return invalid(absl::StrCat("shape[", i, "] ", *error));
    }
    entry.view.shape.push_back(dim);
    // As in the reference implementation an overflowing product is rejected even if a later dim
    // is 0; no real tensor has dims anywhere near 2^63. The loop still reads every dim so a
    // negative one is reported as such.
    overflow = overflow || __builtin_mul_overflow(numel, dim, &numel);
  }
  if (overflow) {
    return invalid(absl::StrCat("shape ", ShapeString(entry.view.shape),
                                " has more elements than fit in 64 bits (overflow)"));
  }

  const auto offsets_it = value.find("data_offsets");
  if (offsets_it == value.end()) return invalid("missing field \"data_offsets\"");
  if (!offsets_it->is_array() || offsets_it->size() != 2) {
    return invalid(absl::StrCat("\"data_offsets\" is not an array of two integers (got ",
                                offsets_it->is_array() ? offsets_it->dump() : Describe(*offsets_it),
                                ")"));
  }
  if (auto error = ReadNonNegativeInt((*offsets_it)[0], &entry.begin)) {
    return invalid(absl::StrCat("data_offsets[0] ", *error));
  }
  if (auto error = ReadNonNegativeInt((*offsets_it)[1], &entry.end)) {
    return invalid(absl::StrCat("data_offsets[1] ", *error));
  }
  const std::string offsets = absl::StrCat("[", entry.begin, ",", entry.end, "]");
  if (entry.begin > entry.end) {
    return invalid(absl::StrCat("data_offsets ", offsets, " begin after they end"));
  }
  if (static_cast<uint64_t>(entry.end) > buffer.size()) {
    return invalid(absl::StrCat("data_offsets ", offsets, " run past the end of the ",
                                buffer.size(), "-byte data buffer"));
  }

  int64_t expected_bytes = 0;
  if (__builtin_mul_overflow(numel, SafetensorsDtypeSize(*dtype), &expected_bytes)) {
    return invalid(absl::StrCat("shape ", ShapeString(entry.view.shape), " x ", dtype_name,
                                " has more bytes than fit in 64 bits (overflow)"));
  }
  const int64_t actual_bytes = entry.end - entry.begin;
  if (actual_bytes != expected_bytes) {
    return invalid(absl::StrCat("byte size ", actual_bytes, " (data_offsets ", offsets,
                                ") does not match shape ", ShapeString(entry.view.shape), " x ",
                                dtype_name, " (", actual_bytes, " != ", expected_bytes, ")"));
  }
  entry.view.bytes =
      buffer.subspan(static_cast<size_t>(entry.begin), static_cast<size_t>(actual_bytes));
  return entry;
}

absl::Status ParseMetadata(const Json& value, absl::string_view label,
                           std::map<std::string, std::string>* metadata) {
  if (!value.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        label, ": \"__metadata__\" is not an object of strings (got ", Describe(value), ")"));
  }
  for (const auto& [key, entry] : value.items()) {
    if (!entry.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(label, ": \"__metadata__\" value for key ",
                                                     Quoted(key), " is not a string (got ",
                                                     Describe(entry), ")"));
    }
    if (metadata != nullptr) (*metadata)[key] = entry.get<std::string>();
  }
  return absl::OkStatus();
}

// Closes a file descriptor on scope exit.
class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }
  // Closes now so that a failing close (data not written) can be reported.
  int Close() {
    const int result = close(fd_);
    fd_ = -1;
    return result;
  }

 private:
  int fd_;
};

absl::Status ErrnoError(int error, absl::string_view path, absl::string_view action) {
  const std::string message = absl::StrCat(path, ": ", action, ": ", std::strerror(error));
  if (error == ENOENT) return absl::NotFoundError(message);
  return absl::ErrnoToStatus(error, message);
}

std::string JoinPath(absl::string_view dir, absl::string_view name) {
  if (dir.empty() || dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, uint64_t max_size) {
  ScopedFd fd(open(path.c_str(), kOpenFlags));
  if (fd.get() < 0) return ErrnoError(errno, path, "cannot open");
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoError(errno, path, "cannot stat");
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) > max_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", st.st_size, " bytes, more than the ", max_size, "-byte limit"));
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = read(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, path, "cannot read");
    if (n == 0) break;  // shrank under us; parse what is there
    done += static_cast<size_t>(n);
  }
  text.resize(done);
  return text;
}

// 8-byte length plus the padded JSON header: everything of the image but the data.
absl::StatusOr<std::string> SerializeHeader(std::span<const TensorToWrite> tensors,
                                            const std::map<std::string, std::string>& metadata,
                                            uint64_t* data_size) {
  // Escaping goes through nlohmann so names and values are quoted exactly as a JSON reader
  // expects; it throws on invalid UTF-8, which we report instead.
  auto quote = [](const std::string& s) -> absl::StatusOr<std::string> {
    try {
      return Json(s).dump();
    } catch (const Json::exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("string '", absl::CHexEscape(s), "' is not valid UTF-8"));
    }
  };

  std::string json = "{";
  bool first = true;
  if (!metadata.empty()) {
    json += "\"__metadata__\":{";
    for (const auto& [key, value] : metadata) {
      GB_ASSIGN_OR_RETURN(std::string quoted_key, quote(key));
      GB_ASSIGN_OR_RETURN(std::string quoted_value, quote(value));
      if (!first) json += ",";
      first = false;
      absl::StrAppend(&json, quoted_key, ":", quoted_value);
    }
    json += "}";
    first = false;
  }

  std::set<std::string_view> names;
  uint64_t offset = 0;
  for (const TensorToWrite& tensor : tensors) {
    auto invalid = [&](absl::string_view message) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", Quoted(tensor.name), ": ", message));
    };
    if (tensor.name == kMetadataKey) return invalid("name is reserved for metadata");
    if (!names.insert(tensor.name).second) return invalid("name appears twice");
    int64_t numel = 1;
    for (int64_t dim : tensor.shape) {
      if (dim < 0) {
        return invalid(absl::StrCat("shape ", ShapeString(tensor.shape), " has a negative dim"));
      }
      if (__builtin_mul_overflow(numel, dim, &numel)) {
        return invalid(absl::StrCat("shape ", ShapeString(tensor.shape), " overflows"));
      }
    }
    int64_t expected = 0;
    if (__builtin_mul_overflow(numel, SafetensorsDtypeSize(tensor.dtype), &expected) ||
        static_cast<uint64_t>(expected) != tensor.bytes.size()) {
      return invalid(absl::StrCat("has ", tensor.bytes.size(), " bytes but shape ",
                                  ShapeString(tensor.shape), " x ",
                                  Av(SafetensorsDtypeName(tensor.dtype)), " needs ", expected));
    }
    GB_ASSIGN_OR_RETURN(std::string quoted_name, quote(tensor.name));
    if (!first) json += ",";
    first = false;
    absl::StrAppend(&json, quoted_name, ":{\"dtype\":\"", Av(SafetensorsDtypeName(tensor.dtype)),
                    "\",\"shape\":", ShapeString(tensor.shape), ",\"data_offsets\":[", offset, ",",
                    offset + tensor.bytes.size(), "]}");
    offset += tensor.bytes.size();
  }
  json += "}";
  // Spaces are the padding the spec allows; aligning the data to 8 bytes lets readers view any
  // dtype in place.
  json.append((8 - json.size() % 8) % 8, ' ');

  std::string header(8, '\0');
  uint64_t length = json.size();
  for (int i = 0; i < 8; ++i) header[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  header += json;
  *data_size = offset;
  return header;
}

absl::Status WriteAll(int fd, const std::string& path, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, path, "cannot write");
    p += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status WriteFile(const std::string& path, const std::string& tmp_path,
                       std::span<const TensorToWrite> tensors,
                       const std::map<std::string, std::string>& metadata) {
  uint64_t data_size = 0;
  auto header = SerializeHeader(tensors, metadata, &data_size);
  if (!header.ok()) {
    return absl::Status(header.status().code(),
                        absl::StrCat(path, ": ", header.status().message()));
  }
  ScopedFd fd(open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) return ErrnoError(errno, tmp_path, "cannot create");
  // Written piece by piece rather than via SerializeSafetensors so a multi-GB capture is not
  // copied into one string first.
  GB_RETURN_IF_ERROR(WriteAll(fd.get(), tmp_path, header->data(), header->size()));
  for (const TensorToWrite& tensor : tensors) {
    GB_RETURN_IF_ERROR(WriteAll(fd.get(), tmp_path, tensor.bytes.data(), tensor.bytes.size()));
  }
  // Without the fsync a crash after the rename could leave a complete-looking name over an
  // empty file.
  if (fsync(fd.get()) != 0) return ErrnoError(errno, tmp_path, "cannot sync");
  if (fd.Close() != 0) return ErrnoError(errno, tmp_path, "cannot close");
  if (rename(tmp_path.c_str(), path.c_str()) != 0) {
    return ErrnoError(errno, path, absl::StrCat("cannot rename ", tmp_path, " to it"));
  }
  return absl::OkStatus();
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Shard names come from a file we did not write; keep them inside the checkpoint directory.
bool IsSafeRelativePath(absl::string_view path) {
  if (path.empty() || path.front() == '/') return false;
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "..") return false;
  }
  return true;
}

}  // namespace

int64_t SafetensorsDtypeSize(SafetensorsDtype dtype) {
  switch (dtype) {
    case SafetensorsDtype::kF64:
      return 8;
    case SafetensorsDtype::kF32:
      return 4;
    case SafetensorsDtype::kF16:
      return 2;
    case SafetensorsDtype::kBF16:
      return 2;
    case SafetensorsDtype::kI64:
      return 8;
    case SafetensorsDtype::kI32:
      return 4;
    case SafetensorsDtype::kI16:
      return 2;
    case SafetensorsDtype::kI8:
      return 1;
    case SafetensorsDtype::kU8:
      return 1;
    case SafetensorsDtype::kBool:
      return 1;
  }
  return 0;
}

std::string_view SafetensorsDtypeName(SafetensorsDtype dtype) {
  switch (dtype) {
    case SafetensorsDtype::kF64:
      return "F64";
    case SafetensorsDtype::kF32:
      return "F32";
    case SafetensorsDtype::kF16:
      return "F16";
    case SafetensorsDtype::kBF16:
      return "BF16";
    case SafetensorsDtype::kI64:
      return "I64";
    case SafetensorsDtype::kI32:
      return "I32";
    case SafetensorsDtype::kI16:
      return "I16";
    case SafetensorsDtype::kI8:
      return "I8";
    case SafetensorsDtype::kU8:
      return "U8";
    case SafetensorsDtype::kBool:
      return "BOOL";
  }
  return "?";
}

std::optional<SafetensorsDtype> SafetensorsDtypeFromName(std::string_view name) {
  for (SafetensorsDtype dtype : kAllDtypes) {
    if (SafetensorsDtypeName(dtype) == name) return dtype;
  }
  return std::nullopt;
}

std::optional<DType> ToDType(SafetensorsDtype dtype) {
  switch (dtype) {
    case SafetensorsDtype::kF32:
      return DType::kF32;
    case SafetensorsDtype::kF16:
      return DType::kF16;
    case SafetensorsDtype::kBF16:
      return DType::kBF16;
    case SafetensorsDtype::kI32:
      return DType::kI32;
    case SafetensorsDtype::kI64:
      return DType::kI64;
    default:
      return std::nullopt;
  }
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t dim : shape) n *= dim;
  return n;
}

absl::StatusOr<std::vector<TensorView>> ParseSafetensors(
    std::span<const std::byte> data, std::string_view label_in,
    std::map<std::string, std::string>* metadata) {
  const absl::string_view label = Av(label_in);
  if (metadata != nullptr) metadata->clear();
  if (data.size() < 8) return absl::InvalidArgumentError(TooShortMessage(label, data.size()));
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= static_cast<uint64_t>(data[i]) << (8 * i);
  if (header_size == 0) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": header length is 0"));
  }
  if (header_size > kMaxHeaderSize) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": header length ", header_size,
                                                   " exceeds the limit of ", kMaxHeaderSize,
                                                   " bytes"));
  }
  if (header_size > data.size() - 8) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": header length ", header_size,
                                                   " runs past the end of the file (", data.size(),
                                                   " bytes, truncated?)"));
  }
  const std::string_view header(reinterpret_cast<const char*>(data.data()) + 8, header_size);
  // The spec requires this; it also rules out a BOM, which nlohmann would skip.
  if (header.front() != '{') {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": header does not start with '{' (not a safetensors file?)"));
  }
  GB_ASSIGN_OR_RETURN(Json json, ParseStrictJson(header, label, "header"));
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": header is not a JSON object"));
  }

  const std::span<const std::byte> buffer = data.subspan(8 + header_size);
  std::vector<Entry> entries;
  entries.reserve(json.size());
  for (const auto& [name, value] : json.items()) {
    if (name == kMetadataKey) {
      GB_RETURN_IF_ERROR(ParseMetadata(value, label, metadata));
      continue;
    }
    GB_ASSIGN_OR_RETURN(Entry entry, ParseEntry(name, value, buffer, label));
    entries.push_back(std::move(entry));
  }

  // The spec requires the tensors to tile the buffer exactly. That rules out two tensors sharing
  // bytes (writing through one would change the other on the GPU copy but not in the file) and
  // bytes that belong to nothing (smuggled data, or a sign of a damaged file).
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end, a.view.name) < std::tie(b.begin, b.end, b.view.name);
  });
  int64_t covered = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& entry = entries[i];
    const std::string offsets = absl::StrCat("[", entry.begin, ",", entry.end, "]");
    if (entry.begin < covered) {
      const Entry& previous = entries[i - 1];
      return absl::InvalidArgumentError(absl::StrCat(label, ": tensor ", Quoted(entry.view.name),
                                                     ": data_offsets ", offsets, " overlap tensor ",
                                                     Quoted(previous.view.name), " at [",
                                                     previous.begin, ",", previous.end, "]"));
    }
    if (entry.begin > covered) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": tensor ", Quoted(entry.view.name), ": data_offsets ", offsets,
                       " leave a gap: bytes [", covered, ",", entry.begin,
                       ") of the data buffer belong to no tensor"));
    }
    covered = entry.end;
  }
  if (static_cast<uint64_t>(covered) != buffer.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        label, ": data buffer is ", buffer.size(), " bytes but the tensors cover only ", covered,
        " (", buffer.size() - covered, " trailing bytes belong to no tensor)"));
  }

  std::vector<TensorView> views;
  views.reserve(entries.size());
  for (Entry& entry : entries) views.push_back(std::move(entry.view));
  return views;
}

// ---- SafetensorsFile ----

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  ScopedFd fd(open(path.c_str(), kOpenFlags));
  if (fd.get() < 0) return ErrnoError(errno, path, "cannot open");
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoError(errno, path, "cannot stat");
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  // mmap of length 0 fails, and nothing this short can be valid anyway.
  if (size < 8) return absl::InvalidArgumentError(TooShortMessage(path, size));

  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  // Read-only private mapping: pages come from the page cache (shared by every process that
  // loads the same weights) and nothing we do can write back to the file. If someone truncates
  // the file while it is mapped, touching the lost pages raises SIGBUS; checkpoints are not
  // expected to change under a running server.
  void* mapping = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (mapping == MAP_FAILED) return ErrnoError(errno, path, "cannot mmap");
  file->mapping_ = mapping;
  file->mapping_size_ = size;

  GB_ASSIGN_OR_RETURN(
      file->tensors_,
      ParseSafetensors(std::span<const std::byte>(static_cast<const std::byte*>(mapping), size),
                       path, &file->metadata_));
  for (size_t i = 0; i < file->tensors_.size(); ++i) {
    file->index_.emplace(file->tensors_[i].name, i);
  }
  return file;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept
    : path_(std::move(other.path_)),
      mapping_(std::exchange(other.mapping_, nullptr)),
      mapping_size_(std::exchange(other.mapping_size_, 0)),
      tensors_(std::move(other.tensors_)),
      index_(std::move(other.index_)),
      metadata_(std::move(other.metadata_)) {}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this != &other) {
    Unmap();
    path_ = std::move(other.path_);
    mapping_ = std::exchange(other.mapping_, nullptr);
    mapping_size_ = std::exchange(other.mapping_size_, 0);
    tensors_ = std::move(other.tensors_);
    index_ = std::move(other.index_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() { Unmap(); }

void SafetensorsFile::Unmap() {
  if (mapping_ != nullptr) munmap(mapping_, mapping_size_);
  mapping_ = nullptr;
  mapping_size_ = 0;
}

const TensorView* SafetensorsFile::Find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

bool SafetensorsFile::ReleasePages(const TensorView& view) const {
  const auto* begin = static_cast<const std::byte*>(mapping_);
  if (begin == nullptr || view.bytes.data() < begin ||
      view.bytes.data() + view.bytes.size() > begin + mapping_size_) {
    return false;
  }
  // Only pages wholly inside the tensor: a neighbour sharing a page keeps it.
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t first = (reinterpret_cast<uintptr_t>(view.bytes.data()) + page - 1) / page * page;
  const uintptr_t last =
      (reinterpret_cast<uintptr_t>(view.bytes.data()) + view.bytes.size()) / page * page;
  // Advice only: a failure leaves the pages resident, which costs memory but nothing else.
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  return true;
}

// ---- SafetensorsCheckpoint ----

absl::StatusOr<SafetensorsCheckpoint> SafetensorsCheckpoint::Open(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return ErrnoError(errno, path, "cannot open checkpoint");

  SafetensorsCheckpoint checkpoint;
  auto add_single_file = [&](const std::string& file_path) -> absl::Status {
    GB_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(file_path));
    for (const TensorView& view : file->tensors()) checkpoint.by_name_.emplace(view.name, &view);
    checkpoint.files_.push_back(std::move(file));
    return absl::OkStatus();
  };

  if (!S_ISDIR(st.st_mode)) {
    GB_RETURN_IF_ERROR(add_single_file(path));
    return checkpoint;
  }

  const std::string single_path = JoinPath(path, kSingleFileName);
  const std::string index_path = JoinPath(path, kIndexFileName);
  if (IsRegularFile(single_path)) {  // HF's own preference when both are present
    GB_RETURN_IF_ERROR(add_single_file(single_path));
    return checkpoint;
  }
  if (!IsRegularFile(index_path)) {
    return absl::NotFoundError(absl::StrCat(path, ": checkpoint directory has neither ",
                                            kSingleFileName, " nor ", kIndexFileName));
  }

  GB_ASSIGN_OR_RETURN(std::string index_text, ReadSmallFile(index_path, kMaxIndexSize));
  GB_ASSIGN_OR_RETURN(Json index, ParseStrictJson(index_text, index_path, "index"));
  if (!index.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": not a JSON object"));
  }
  const auto weight_map_it = index.find("weight_map");
  if (weight_map_it == index.end() || !weight_map_it->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": missing \"weight_map\" object"));
  }
  if (weight_map_it->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": \"weight_map\" is empty"));
  }
  // shard file -> one tensor the index places there (for the error if the shard is missing)
  std::map<std::string, std::string> shards;
  for (const auto& [tensor, shard] : weight_map_it->items()) {
    if (!shard.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map entry for tensor ",
                                                     Quoted(tensor), " is not a string (got ",
                                                     Describe(shard), ")"));
    }
    const std::string& shard_name = shard.get_ref<const std::string&>();
    if (!IsSafeRelativePath(shard_name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": weight_map puts tensor ", Quoted(tensor), " in shard ",
                       Quoted(shard_name), ", which is not a path inside the checkpoint"));
    }
    shards.emplace(shard_name, tensor);
  }

  std::map<std::string, const SafetensorsFile*> file_by_shard;
  for (const auto& [shard_name, some_tensor] : shards) {
    auto file = SafetensorsFile::Open(JoinPath(path, shard_name));
    if (absl::IsNotFound(file.status())) {
      return absl::NotFoundError(absl::StrCat(
          index_path, ": weight_map puts tensor ", Quoted(some_tensor), " in shard file ",
          Quoted(shard_name), ", which is missing (", file.status().message(), ")"));
    }
    if (!file.ok()) return file.status();
    for (const TensorView& view : (*file)->tensors()) {
      const auto [it, inserted] = checkpoint.by_name_.emplace(view.name, &view);
      if (!inserted) {
        const SafetensorsFile* other = nullptr;
        for (const auto& [name, f] : file_by_shard) {
          if (f->Find(view.name) != nullptr) other = f;
        }
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": tensor ", Quoted(view.name), " appears in two shards, ",
                         other != nullptr ? other->path() : "?", " and ", (*file)->path()));
      }
    }
    file_by_shard.emplace(shard_name, file->get());
    checkpoint.files_.push_back(*std::move(file));
  }

  for (const auto& [tensor, shard] : weight_map_it->items()) {
    const SafetensorsFile* file = file_by_shard.at(shard.get<std::string>());
    if (file->Find(tensor) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map puts tensor ",
                                                     Quoted(tensor), " in shard ", file->path(),
                                                     ", but that file has no such tensor"));
    }
  }
  return checkpoint;
}

const TensorView* SafetensorsCheckpoint::Find(std::string_view name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

void SafetensorsCheckpoint::ReleasePages(const TensorView& view) const {
  for (const auto& file : files_) {
    if (file->ReleasePages(view)) return;
  }
}

std::vector<std::string> SafetensorsCheckpoint::Names() const {
  std::vector<std::string> names;
  names.reserve(by_name_.size());
  for (const auto& [name, view] : by_name_) names.push_back(name);
  return names;
}

// ---- Writer ----

absl::StatusOr<std::string> SerializeSafetensors(
    std::span<const TensorToWrite> tensors, const std::map<std::string, std::string>& metadata) {
  uint64_t data_size = 0;
  GB_ASSIGN_OR_RETURN(std::string image, SerializeHeader(tensors, metadata, &data_size));
  image.reserve(image.size() + data_size);
  for (const TensorToWrite& tensor : tensors) {
    image.append(reinterpret_cast<const char*>(tensor.bytes.data()), tensor.bytes.size());
  }
  return image;
}

absl::Status WriteSafetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata) {
  // Same directory as the target so the rename is atomic; pid and counter keep concurrent
  // writers (two CLI runs, two threads) from clobbering each other's temporary.
  static std::atomic<uint64_t> counter{0};
  const std::string tmp_path = absl::StrCat(path, ".tmp.", getpid(), ".", counter++);
  absl::Status status = WriteFile(path, tmp_path, tensors, metadata);
  if (!status.ok()) unlink(tmp_path.c_str());
  return status;
}

}  // namespace glassbox
