#include "server/engine/sae/npz.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/dtype.h"
#include "base/float16.h"
#include "base/status_macros.h"

namespace glassbox {
namespace {

constexpr uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr uint32_t kEndSignature = 0x06054b50;
constexpr uint32_t kZip64EndSignature = 0x06064b50;
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr size_t kEndSize = 22;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kLocalHeaderSize = 30;
// Deflate cannot expand data by more than about 1032:1; a member claiming more is corrupt (and
// would make us allocate whatever it claims).
constexpr uint64_t kMaxDeflateRatio = 1040;

absl::Status Invalid(absl::string_view label, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(label, ": ", message));
}

// Little-endian reads at a checked position.
class Reader {
 public:
  Reader(std::span<const std::byte> data, uint64_t pos) : data_(data), pos_(pos) {}
  bool Has(uint64_t n) const { return pos_ <= data_.size() && n <= data_.size() - pos_; }
  uint64_t U(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) {
      v |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
    }
    pos_ += bytes;
    return v;
  }
  void Skip(uint64_t n) { pos_ += n; }
  uint64_t pos() const { return pos_; }

 private:
  std::span<const std::byte> data_;
  uint64_t pos_;
};

uint32_t Crc32(std::span<const std::byte> bytes) {
  uLong crc = crc32_z(0L, Z_NULL, 0);
  return static_cast<uint32_t>(
      crc32_z(crc, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()));
}

// The bytes of a member: a view into `file` when stored, else inflated into `storage`.
absl::StatusOr<std::span<const std::byte>> MemberBytes(std::span<const std::byte> file,
                                                       const ZipMember& member,
                                                       absl::string_view label,
                                                       std::vector<std::byte>& storage) {
  const std::string where = absl::StrCat(label, " member ", member.name);
  if (member.data_offset > file.size() || member.compressed_size > file.size() - member.data_offset) {
    return Invalid(where, "data runs past the end of the file");
  }
  std::span<const std::byte> raw = file.subspan(member.data_offset, member.compressed_size);
  std::span<const std::byte> out;
  if (member.method == 0) {
    if (member.compressed_size != member.uncompressed_size) {
      return Invalid(where, "stored member whose compressed and uncompressed sizes differ");
    }
    out = raw;
  } else if (member.method == 8) {
    if (member.uncompressed_size > member.compressed_size * kMaxDeflateRatio + 1024) {
      return Invalid(where, absl::StrCat("claims ", member.uncompressed_size, " bytes from ",
                                         member.compressed_size, " deflated bytes"));
    }
    storage.assign(member.uncompressed_size, std::byte{0});
    z_stream stream{};
    if (inflateInit2(&stream, -MAX_WBITS) != Z_OK) {
      return absl::InternalError(absl::StrCat(where, ": zlib inflateInit2 failed"));
    }
    // avail_in / avail_out are 32-bit: feed at most 1 GiB at a time each way.
    stream.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(raw.data()));
    stream.next_out = reinterpret_cast<Bytef*>(storage.data());
    uint64_t in_left = raw.size(), out_left = storage.size();
    int rc = Z_OK;
    while (rc == Z_OK) {
      if (stream.avail_in == 0 && in_left > 0) {
        stream.avail_in = static_cast<uInt>(std::min<uint64_t>(in_left, 1u << 30));
        in_left -= stream.avail_in;
      }
      if (stream.avail_out == 0 && out_left > 0) {
        stream.avail_out = static_cast<uInt>(std::min<uint64_t>(out_left, 1u << 30));
        out_left -= stream.avail_out;
      }
      rc = inflate(&stream, Z_NO_FLUSH);
    }
    const uint64_t out_done = stream.total_out;
    inflateEnd(&stream);
    if (rc != Z_STREAM_END || out_done != storage.size()) {
      return Invalid(where, absl::StrCat("corrupt deflate data (zlib status ", rc, ", ", out_done,
                                         " of ", storage.size(), " bytes)"));
    }
    out = storage;
  } else {
    return Invalid(where, absl::StrCat("unsupported zip compression method ", member.method,
                                       " (numpy writes stored or deflate)"));
  }
  if (Crc32(out) != member.crc32) return Invalid(where, "CRC-32 mismatch: the file is corrupt");
  return out;
}

// A read-only mapping of a whole file.
class MappedFile {
 public:
  static absl::StatusOr<MappedFile> Open(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
      return absl::InvalidArgumentError(absl::StrCat(path, ": cannot open: ", std::strerror(err)));
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
    }
    MappedFile file;
    file.size_ = static_cast<size_t>(st.st_size);
    if (file.size_ > 0) {
      void* p = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        return absl::InvalidArgumentError(absl::StrCat(path, ": mmap failed: ", std::strerror(err)));
      }
      file.data_ = p;
    }
    ::close(fd);
    return file;
  }
  MappedFile() = default;
  MappedFile(MappedFile&& o) noexcept : data_(o.data_), size_(o.size_) { o.data_ = nullptr; }
  MappedFile& operator=(MappedFile&&) = delete;
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(data_, size_);
  }
  std::span<const std::byte> bytes() const {
    return {static_cast<const std::byte*>(data_), data_ ? size_ : 0};
  }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

// ---- .npy header: a Python dict literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (16, 64), }
struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
};

class HeaderParser {
 public:
  explicit HeaderParser(absl::string_view text) : s_(text) {}

  absl::StatusOr<NpyHeader> Parse() {
    NpyHeader header;
    bool have_descr = false, have_order = false, have_shape = false;
    SkipSpace();
    if (!Eat('{')) return Error("header does not start with '{'");
    while (true) {
      SkipSpace();
      if (Eat('}')) break;
      GB_ASSIGN_OR_RETURN(std::string key, String());
      SkipSpace();
      if (!Eat(':')) return Error("expected ':' after a key");
      SkipSpace();
      if (key == "descr") {
        if (Peek() != '\'' && Peek() != '"') {
          return Error("only simple dtypes are supported (descr is not a string)");
        }
        GB_ASSIGN_OR_RETURN(header.descr, String());
        have_descr = true;
      } else if (key == "fortran_order") {
        if (Word("True")) {
          header.fortran_order = true;
        } else if (Word("False")) {
          header.fortran_order = false;
        } else {
          return Error("fortran_order must be True or False");
        }
        have_order = true;
      } else if (key == "shape") {
        GB_ASSIGN_OR_RETURN(header.shape, Tuple());
        have_shape = true;
      } else {
        return Error(absl::StrCat("unexpected key '", key, "'"));
      }
      SkipSpace();
      if (Eat(',')) continue;
      SkipSpace();
      if (Eat('}')) break;
      return Error("expected ',' or '}'");
    }
    if (!have_descr || !have_order || !have_shape) {
      return Error("header lacks one of descr, fortran_order, shape");
    }
    return header;
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(".npy header: ", what));
  }
  char Peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  bool Eat(char c) {
    if (Peek() != c) return false;
    ++pos_;
    return true;
  }
  bool Word(absl::string_view w) {
    if (s_.substr(pos_, w.size()) != w) return false;
    pos_ += w.size();
    return true;
  }
  void SkipSpace() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t')) ++pos_;
  }
  absl::StatusOr<std::string> String() {
    const char quote = Peek();
    if (quote != '\'' && quote != '"') return Error("expected a quoted string");
    ++pos_;
    const size_t end = s_.find(quote, pos_);
    if (end == absl::string_view::npos) return Error("unterminated string");
    std::string out(s_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return out;
  }
  absl::StatusOr<std::vector<int64_t>> Tuple() {
    std::vector<int64_t> dims;
    if (!Eat('(')) return Error("shape must be a tuple");
    while (true) {
      SkipSpace();
      if (Eat(')')) break;
      if (Peek() < '0' || Peek() > '9') return Error("shape entries must be non-negative integers");
      int64_t v = 0;
      while (Peek() >= '0' && Peek() <= '9') {
        if (v > (std::numeric_limits<int64_t>::max() - 9) / 10) return Error("dimension too large");
        v = v * 10 + (Peek() - '0');
        ++pos_;
      }
      if (Peek() == 'L') ++pos_;  // Python 2 longs
      dims.push_back(v);
      SkipSpace();
      if (Eat(',')) continue;
      SkipSpace();
      if (Eat(')')) break;
      return Error("expected ',' or ')' in shape");
    }
    return dims;
  }

  absl::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<std::vector<ZipMember>> ParseZipDirectory(std::span<const std::byte> file,
                                                         absl::string_view label) {
  if (file.size() < kEndSize) return Invalid(label, "too small to be a zip file");
  // The end-of-central-directory record: last, followed by a comment of up to 65535 bytes.
  std::optional<uint64_t> end_pos;
  const uint64_t lowest = file.size() >= kEndSize + 65535 ? file.size() - kEndSize - 65535 : 0;
  for (uint64_t p = file.size() - kEndSize + 1; p-- > lowest;) {
    Reader r(file, p);
    if (r.U(4) == kEndSignature) {
      Reader c(file, p + 20);
      if (p + kEndSize + c.U(2) == file.size()) {
        end_pos = p;
        break;
      }
    }
  }
  if (!end_pos) return Invalid(label, "not a zip file (no end-of-central-directory record)");
  Reader end(file, *end_pos + 4);
  const uint64_t disk = end.U(2), cd_disk = end.U(2);
  end.U(2);
  uint64_t count = end.U(2), cd_size = end.U(4), cd_offset = end.U(4);
  if (*end_pos >= 20) {
    Reader loc(file, *end_pos - 20);
    if (loc.U(4) == kZip64LocatorSignature) {
      loc.U(4);
      const uint64_t z64_pos = loc.U(8);
      Reader z(file, z64_pos);
      if (!z.Has(56) || z.U(4) != kZip64EndSignature) {
        return Invalid(label, "zip64 locator points at no zip64 end record");
      }
      z.Skip(8 + 2 + 2 + 4 + 4 + 8);
      count = z.U(8);
      cd_size = z.U(8);
      cd_offset = z.U(8);
    }
  }
  if (disk != 0 || cd_disk != 0) return Invalid(label, "multi-disk zip files are not supported");
  if (cd_offset > file.size() || cd_size > file.size() - cd_offset) {
    return Invalid(label, "central directory runs past the end of the file");
  }
  if (count > cd_size / kCentralHeaderSize) {
    return Invalid(label, "central directory entry count exceeds its size");
  }

  std::vector<ZipMember> members;
  Reader r(file, cd_offset);
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (!r.Has(kCentralHeaderSize) || r.pos() + kCentralHeaderSize > cd_end ||
        r.U(4) != kCentralHeaderSignature) {
      return Invalid(label, absl::StrCat("central directory entry ", i, " is corrupt"));
    }
    ZipMember m;
    r.Skip(4);  // versions
    const uint64_t flags = r.U(2);
    m.method = static_cast<uint16_t>(r.U(2));
    r.Skip(4);  // time, date
    m.crc32 = static_cast<uint32_t>(r.U(4));
    m.compressed_size = r.U(4);
    m.uncompressed_size = r.U(4);
    const uint64_t name_len = r.U(2), extra_len = r.U(2), comment_len = r.U(2);
    const uint64_t member_disk = r.U(2);
    r.Skip(6);  // attributes
    uint64_t local_offset = r.U(4);
    if (r.pos() + name_len + extra_len + comment_len > cd_end) {
      return Invalid(label, absl::StrCat("central directory entry ", i, " runs past the directory"));
    }
    m.name.assign(reinterpret_cast<const char*>(file.data() + r.pos()), name_len);
    r.Skip(name_len);
    // zip64 extended information: the 8-byte values of the fields saturated above, in order.
    const uint64_t extra_end = r.pos() + extra_len;
    while (r.pos() + 4 <= extra_end) {
      const uint64_t id = r.U(2), size = r.U(2);
      if (r.pos() + size > extra_end) return Invalid(label, "corrupt extra field in " + m.name);
      const uint64_t field_end = r.pos() + size;
      if (id == 0x0001) {
        auto take = [&](uint64_t& v) -> bool {
          if (r.pos() + 8 > field_end) return false;
          v = r.U(8);
          return true;
        };
        if ((m.uncompressed_size == 0xFFFFFFFF && !take(m.uncompressed_size)) ||
            (m.compressed_size == 0xFFFFFFFF && !take(m.compressed_size)) ||
            (local_offset == 0xFFFFFFFF && !take(local_offset))) {
          return Invalid(label, "truncated zip64 extra field in " + m.name);
        }
      }
      Reader skip_to(file, field_end);
      r = skip_to;
    }
    r = Reader(file, extra_end + comment_len);
    if (flags & 1) return Invalid(label, "encrypted member " + m.name + " is not supported");
    if (member_disk != 0) return Invalid(label, "multi-disk zip files are not supported");

    Reader local(file, local_offset);
    if (!local.Has(kLocalHeaderSize) || local.U(4) != kLocalHeaderSignature) {
      return Invalid(label, "member " + m.name + " has no local header where the directory says");
    }
    local.Skip(22);
    const uint64_t local_name = local.U(2), local_extra = local.U(2);
    m.data_offset = local_offset + kLocalHeaderSize + local_name + local_extra;
    if (m.data_offset > file.size() || m.compressed_size > file.size() - m.data_offset) {
      return Invalid(label, "member " + m.name + " runs past the end of the file");
    }
    members.push_back(std::move(m));
  }
  return members;
}

absl::StatusOr<std::vector<std::byte>> ReadZipMember(std::span<const std::byte> file,
                                                     const ZipMember& member,
                                                     absl::string_view label) {
  std::vector<std::byte> storage;
  GB_ASSIGN_OR_RETURN(std::span<const std::byte> bytes, MemberBytes(file, member, label, storage));
  if (bytes.data() != storage.data()) storage.assign(bytes.begin(), bytes.end());
  return storage;
}

absl::StatusOr<Tensor> ParseNpyAsF32(std::span<const std::byte> npy, absl::string_view label) {
  static constexpr char kMagic[] = "\x93NUMPY";
  if (npy.size() < 10 || std::memcmp(npy.data(), kMagic, 6) != 0) {
    return Invalid(label, "not a .npy array (bad magic)");
  }
  const int major = static_cast<int>(npy[6]);
  Reader r(npy, 8);
  uint64_t header_len = 0;
  if (major == 1) {
    header_len = r.U(2);
  } else if (major == 2 || major == 3) {
    if (!r.Has(4)) return Invalid(label, "truncated .npy header");
    header_len = r.U(4);
  } else {
    return Invalid(label, absl::StrCat("unsupported .npy format version ", major));
  }
  if (!r.Has(header_len)) return Invalid(label, "truncated .npy header");
  absl::string_view text(reinterpret_cast<const char*>(npy.data() + r.pos()), header_len);
  auto parsed = HeaderParser(text).Parse();
  if (!parsed.ok()) return Invalid(label, parsed.status().message());
  const NpyHeader& header = *parsed;
  const uint64_t data_pos = r.pos() + header_len;

  std::string descr = header.descr;
  if (!descr.empty() && (descr[0] == '<' || descr[0] == '=' || descr[0] == '|')) {
    descr = descr.substr(1);
  } else if (!descr.empty() && descr[0] == '>') {
    return Invalid(label, absl::StrCat("big-endian dtype '", header.descr, "' is not supported"));
  }
  int item = 0;
  if (descr == "f4") {
    item = 4;
  } else if (descr == "f8") {
    item = 8;
  } else if (descr == "f2") {
    item = 2;
  } else {
    return Invalid(label, absl::StrCat("dtype '", header.descr,
                                       "' is not a float array (supported: <f4, <f8, <f2)"));
  }
  uint64_t numel = 1;
  for (int64_t d : header.shape) {
    if (d != 0 && numel > (std::numeric_limits<uint64_t>::max() / 16) / static_cast<uint64_t>(d)) {
      return Invalid(label, "shape is too large");
    }
    numel *= static_cast<uint64_t>(d);
  }
  const uint64_t data_bytes = npy.size() - data_pos;
  if (data_bytes != numel * item) {
    return Invalid(label, absl::StrCat("shape (", absl::StrJoin(header.shape, ", "), ") of ",
                                       header.descr, " needs ", numel * item, " bytes but ",
                                       data_bytes, " follow the header"));
  }
  Tensor out = Tensor::EmptyHost(DType::kF32, Shape(header.shape.begin(), header.shape.end()));
  float* dst = out.data<float>();
  const std::byte* src = npy.data() + data_pos;
  auto load = [&](uint64_t i) -> float {
    const std::byte* p = src + i * item;
    if (item == 4) {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
    if (item == 8) {
      double v;
      std::memcpy(&v, p, 8);
      return static_cast<float>(v);
    }
    uint16_t h;
    std::memcpy(&h, p, 2);
    return HalfToFloat(h);
  };
  const size_t rank = header.shape.size();
  if (!header.fortran_order || rank < 2) {
    if (item == 4) {
      std::memcpy(dst, src, numel * 4);
    } else {
      for (uint64_t i = 0; i < numel; ++i) dst[i] = load(i);
    }
    return out;
  }
  // Fortran order: element (i0, ..., i_{n-1}) sits at Σ i_k · Π_{j<k} d_j.
  std::vector<uint64_t> f_stride(rank, 1), index(rank, 0);
  for (size_t k = 1; k < rank; ++k) f_stride[k] = f_stride[k - 1] * header.shape[k - 1];
  for (uint64_t c = 0; c < numel; ++c) {
    uint64_t f = 0;
    for (size_t k = 0; k < rank; ++k) f += index[k] * f_stride[k];
    dst[c] = load(f);
    for (size_t k = rank; k-- > 0;) {  // advance the C-order index
      if (++index[k] < static_cast<uint64_t>(header.shape[k])) break;
      index[k] = 0;
    }
  }
  return out;
}

absl::StatusOr<std::map<std::string, Tensor>> ReadNpzAsF32(const std::string& path) {
  GB_ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(path));
  GB_ASSIGN_OR_RETURN(std::vector<ZipMember> members, ParseZipDirectory(file.bytes(), path));
  std::map<std::string, Tensor> arrays;
  for (const ZipMember& member : members) {
    std::string name = member.name;
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".npy") == 0) {
      name.resize(name.size() - 4);
    } else {
      return Invalid(path, absl::StrCat("member \"", member.name, "\" is not a .npy array"));
    }
    if (arrays.contains(name)) return Invalid(path, "duplicate array \"" + name + "\"");
    std::vector<std::byte> storage;
    GB_ASSIGN_OR_RETURN(std::span<const std::byte> bytes,
                        MemberBytes(file.bytes(), member, path, storage));
    GB_ASSIGN_OR_RETURN(Tensor t, ParseNpyAsF32(bytes, absl::StrCat(path, " array ", name)));
    arrays.emplace(std::move(name), std::move(t));
  }
  return arrays;
}

}  // namespace glassbox
