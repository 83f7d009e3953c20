#include "base/safetensors.h"

#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/dtype.h"
#include "base/float16.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glassbox {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::span<const std::byte> AsBytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

template <typename T>
std::vector<std::byte> ToBytes(const std::vector<T>& values) {
  std::vector<std::byte> bytes(values.size() * sizeof(T));
  if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

template <typename T>
std::vector<T> FromBytes(std::span<const std::byte> bytes) {
  std::vector<T> values(bytes.size() / sizeof(T));
  if (!values.empty()) std::memcpy(values.data(), bytes.data(), values.size() * sizeof(T));
  return values;
}

// A raw image: 8-byte little-endian length, the header text exactly as given, then `data`.
std::string MakeImage(const std::string& header, const std::string& data = "",
                      std::optional<uint64_t> length = std::nullopt) {
  const uint64_t n = length.value_or(header.size());
  std::string image(8, '\0');
  for (int i = 0; i < 8; ++i) image[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return absl::StrCat(image, header, data);
}

// A fresh directory per test under the GoogleTest temp dir.
std::string TestDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = absl::StrCat(info->test_suite_name(), "_", info->name());
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  const std::string dir = absl::StrCat(::testing::TempDir(), "/safetensors_", name);
  std::error_code error;
  std::filesystem::remove_all(dir, error);
  EXPECT_TRUE(std::filesystem::create_directories(dir, error)) << dir << ": " << error.message();
  return dir;
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

// ---- Dtypes ----

TEST(SafetensorsDtypeTest, NamesSizesAndEngineDtypes) {
  EXPECT_EQ(SafetensorsDtypeName(SafetensorsDtype::kBF16), "BF16");
  EXPECT_EQ(SafetensorsDtypeName(SafetensorsDtype::kBool), "BOOL");
  EXPECT_EQ(SafetensorsDtypeSize(SafetensorsDtype::kF64), 8);
  EXPECT_EQ(SafetensorsDtypeSize(SafetensorsDtype::kI16), 2);
  EXPECT_EQ(SafetensorsDtypeSize(SafetensorsDtype::kBool), 1);
  EXPECT_EQ(SafetensorsDtypeFromName("I8"), SafetensorsDtype::kI8);
  EXPECT_EQ(SafetensorsDtypeFromName("f32"), std::nullopt);  // names are case-sensitive
  EXPECT_EQ(ToDType(SafetensorsDtype::kF32), DType::kF32);
  EXPECT_EQ(ToDType(SafetensorsDtype::kF16), DType::kF16);
  EXPECT_EQ(ToDType(SafetensorsDtype::kBF16), DType::kBF16);
  EXPECT_EQ(ToDType(SafetensorsDtype::kI32), DType::kI32);
  EXPECT_EQ(ToDType(SafetensorsDtype::kI64), DType::kI64);
  EXPECT_EQ(ToDType(SafetensorsDtype::kF64), std::nullopt);
  EXPECT_EQ(ToDType(SafetensorsDtype::kU8), std::nullopt);
  EXPECT_EQ(ToDType(SafetensorsDtype::kBool), std::nullopt);
}

// ---- Round trips ----

struct AllDtypes {
  std::vector<double> f64 = {1.5, -2.25, 1e300};
  std::vector<float> f32 = {0.5f, -1.0f, 3.25f, 1e-30f, 7.0f, -0.0f};
  std::vector<uint16_t> f16 = {FloatToHalf(1.0f), FloatToHalf(-2.5f), FloatToHalf(65504.0f),
                               FloatToHalf(0.000061035156f)};
  std::vector<uint16_t> bf16 = {FloatToBFloat16(1.0f), FloatToBFloat16(-3.0e38f)};
  std::vector<int64_t> i64 = {std::numeric_limits<int64_t>::min(), 0,
                              std::numeric_limits<int64_t>::max()};
  std::vector<int32_t> i32 = {-7, 8, 9, 10};
  std::vector<int16_t> i16 = {-32768, 32767};
  std::vector<int8_t> i8 = {-128, 0, 127};
  std::vector<uint8_t> u8 = {0, 1, 255, 42};
  std::vector<uint8_t> boolean = {1, 0, 1};

  std::vector<std::byte> b_f64 = ToBytes(f64), b_f32 = ToBytes(f32), b_f16 = ToBytes(f16),
                         b_bf16 = ToBytes(bf16), b_i64 = ToBytes(i64), b_i32 = ToBytes(i32),
                         b_i16 = ToBytes(i16), b_i8 = ToBytes(i8), b_u8 = ToBytes(u8),
                         b_bool = ToBytes(boolean);

  std::vector<TensorToWrite> Tensors() const {
    return {
        {"f64", SafetensorsDtype::kF64, {3}, b_f64},
        {"layer.0.f32", SafetensorsDtype::kF32, {2, 3}, b_f32},
        {"f16", SafetensorsDtype::kF16, {2, 1, 2}, b_f16},
        {"bf16", SafetensorsDtype::kBF16, {2}, b_bf16},
        {"i64", SafetensorsDtype::kI64, {3}, b_i64},
        {"i32", SafetensorsDtype::kI32, {4}, b_i32},
        {"i16", SafetensorsDtype::kI16, {2}, b_i16},
        {"i8", SafetensorsDtype::kI8, {3}, b_i8},
        {"u8", SafetensorsDtype::kU8, {2, 2}, b_u8},
        {"bool", SafetensorsDtype::kBool, {3}, b_bool},
    };
  }

  void Check(const std::vector<TensorView>& views) const {
    ASSERT_EQ(views.size(), 10u);
    // Views come back in file order, which is the order written.
    const std::vector<TensorToWrite> written = Tensors();
    for (size_t i = 0; i < views.size(); ++i) {
      SCOPED_TRACE(written[i].name);
      EXPECT_EQ(views[i].name, written[i].name);
      EXPECT_EQ(views[i].dtype, written[i].dtype);
      EXPECT_EQ(views[i].shape, written[i].shape);
      EXPECT_EQ(views[i].numel() * SafetensorsDtypeSize(views[i].dtype),
                static_cast<int64_t>(views[i].bytes.size()));
    }
    EXPECT_EQ(FromBytes<double>(views[0].bytes), f64);
    EXPECT_EQ(FromBytes<float>(views[1].bytes), f32);
    EXPECT_EQ(HalfToFloat(FromBytes<uint16_t>(views[2].bytes)[1]), -2.5f);
    EXPECT_EQ(HalfToFloat(FromBytes<uint16_t>(views[2].bytes)[2]), 65504.0f);
    EXPECT_EQ(FromBytes<uint16_t>(views[2].bytes), f16);
    EXPECT_EQ(BFloat16ToFloat(FromBytes<uint16_t>(views[3].bytes)[0]), 1.0f);
    EXPECT_EQ(FromBytes<uint16_t>(views[3].bytes), bf16);
    EXPECT_EQ(FromBytes<int64_t>(views[4].bytes), i64);
    EXPECT_EQ(FromBytes<int32_t>(views[5].bytes), i32);
    EXPECT_EQ(FromBytes<int16_t>(views[6].bytes), i16);
    EXPECT_EQ(FromBytes<int8_t>(views[7].bytes), i8);
    EXPECT_EQ(FromBytes<uint8_t>(views[8].bytes), u8);
    EXPECT_EQ(FromBytes<uint8_t>(views[9].bytes), boolean);
  }
};

TEST(SafetensorsRoundTripTest, EveryDtypeInMemory) {
  AllDtypes all;
  const auto tensors = all.Tensors();
  absl::StatusOr<std::string> image = SerializeSafetensors(tensors);
  ASSERT_TRUE(image.ok()) << image.status();

  // Header length is a multiple of 8 and made of JSON plus space padding.
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) {
    header_size |= static_cast<uint64_t>(static_cast<uint8_t>((*image)[i])) << (8 * i);
  }
  EXPECT_EQ(header_size % 8, 0u);
  EXPECT_EQ((*image)[8], '{');

  absl::StatusOr<std::vector<TensorView>> views = ParseSafetensors(AsBytes(*image), "mem");
  ASSERT_TRUE(views.ok()) << views.status();
  all.Check(*views);
  // Data starts right after the header, tensor after tensor.
  EXPECT_EQ(reinterpret_cast<const char*>((*views)[0].bytes.data()),
            image->data() + 8 + header_size);
  for (size_t i = 1; i < views->size(); ++i) {
    EXPECT_EQ((*views)[i].bytes.data(),
              (*views)[i - 1].bytes.data() + (*views)[i - 1].bytes.size());
  }
}

TEST(SafetensorsRoundTripTest, EveryDtypeThroughFile) {
  AllDtypes all;
  const std::string path = TestDir() + "/all.safetensors";
  const auto tensors = all.Tensors();
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->path(), path);
  all.Check((*file)->tensors());
  EXPECT_THAT((*file)->metadata(), IsEmpty());

  const TensorView* i32 = (*file)->Find("i32");
  ASSERT_NE(i32, nullptr);
  EXPECT_EQ(FromBytes<int32_t>(i32->bytes), all.i32);
  EXPECT_EQ((*file)->Find("missing"), nullptr);

  // The views point into the mapping, which survives moving the file object.
  SafetensorsFile moved(std::move(**file));
  file->reset();
  ASSERT_NE(moved.Find("layer.0.f32"), nullptr);
  EXPECT_EQ(FromBytes<float>(moved.Find("layer.0.f32")->bytes), all.f32);
}

// Releasing a tensor's pages after reading it only drops them from the resident set: the values
// fault back in unchanged, neighbours are untouched, and views outside the mapping are refused.
TEST(SafetensorsFileTest, ReleasedPagesReadBackUnchanged) {
  std::vector<float> big(300000), small = {1.5f, -2.25f, 3.0f};
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i) * 0.5f - 7.0f;
  const std::string path = TestDir() + "/big.safetensors";
  auto bytes = [](const std::vector<float>& v) {
    return std::span<const std::byte>(reinterpret_cast<const std::byte*>(v.data()),
                                      v.size() * sizeof(float));
  };
  const auto big_bytes = bytes(big), small_bytes = bytes(small);
  ASSERT_TRUE(
      WriteSafetensors(
          path, std::vector<TensorToWrite>{{"a", SafetensorsDtype::kF32, {3}, small_bytes},
                                           {"big", SafetensorsDtype::kF32, {300000}, big_bytes},
                                           {"z", SafetensorsDtype::kF32, {3}, small_bytes}})
          .ok());
  auto checkpoint = SafetensorsCheckpoint::Open(path);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const TensorView* view = checkpoint->Find("big");
  ASSERT_NE(view, nullptr);
  EXPECT_EQ(FromBytes<float>(view->bytes), big);
  EXPECT_TRUE(checkpoint->files()[0]->ReleasePages(*view));
  checkpoint->ReleasePages(*view);  // Twice is harmless.
  EXPECT_EQ(FromBytes<float>(view->bytes), big);
  EXPECT_EQ(FromBytes<float>(checkpoint->Find("a")->bytes), small);
  EXPECT_EQ(FromBytes<float>(checkpoint->Find("z")->bytes), small);

  // A view parsed from memory is not in the file's mapping and is left alone.
  const std::string image = MakeImage(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})",
                                      std::string(reinterpret_cast<const char*>(small.data()), 12));
  auto parsed = ParseSafetensors(
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(image.data()), image.size()),
      "memory");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_FALSE(checkpoint->files()[0]->ReleasePages((*parsed)[0]));
  EXPECT_EQ(FromBytes<float>((*parsed)[0].bytes), small);
}

TEST(SafetensorsRoundTripTest, Metadata) {
  const std::vector<float> values = {1, 2};
  const auto bytes = ToBytes(values);
  const std::vector<TensorToWrite> tensors = {{"x", SafetensorsDtype::kF32, {2}, bytes}};
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"quote\"and\\slash", "line\nbreak"}, {"unicode", "héllo ✓"}};
  const std::string path = TestDir() + "/meta.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, tensors, metadata).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata(), metadata);

  auto image = SerializeSafetensors(tensors, metadata);
  ASSERT_TRUE(image.ok());
  std::map<std::string, std::string> parsed = {{"stale", "entry"}};
  ASSERT_TRUE(ParseSafetensors(AsBytes(*image), "mem", &parsed).ok());
  EXPECT_EQ(parsed, metadata);
}

TEST(SafetensorsRoundTripTest, ScalarAndZeroSizeTensors) {
  const std::vector<float> scalar = {42.0f};
  const auto scalar_bytes = ToBytes(scalar);
  const std::vector<float> two = {1.0f, 2.0f};
  const auto two_bytes = ToBytes(two);
  const std::vector<TensorToWrite> tensors = {
      {"empty_front", SafetensorsDtype::kF32, {0, 3}, {}},
      {"scalar", SafetensorsDtype::kF32, {}, scalar_bytes},
      {"empty_mid", SafetensorsDtype::kI64, {2, 0}, {}},
      {"two", SafetensorsDtype::kF32, {2}, two_bytes},
      {"empty_end", SafetensorsDtype::kBF16, {0}, {}},
  };
  const std::string path = TestDir() + "/scalar.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorView* s = (*file)->Find("scalar");
  ASSERT_NE(s, nullptr);
  EXPECT_THAT(s->shape, IsEmpty());
  EXPECT_EQ(s->numel(), 1);
  EXPECT_EQ(FromBytes<float>(s->bytes), scalar);
  for (const char* name : {"empty_front", "empty_mid", "empty_end"}) {
    const TensorView* e = (*file)->Find(name);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_EQ(e->numel(), 0) << name;
    EXPECT_TRUE(e->bytes.empty()) << name;
  }
  EXPECT_THAT((*file)->Find("empty_mid")->shape, ElementsAre(2, 0));
  EXPECT_EQ(FromBytes<float>((*file)->Find("two")->bytes), two);
}

TEST(SafetensorsRoundTripTest, NoTensorsAtAll) {
  auto image = SerializeSafetensors({});
  ASSERT_TRUE(image.ok());
  auto views = ParseSafetensors(AsBytes(*image), "mem");
  ASSERT_TRUE(views.ok()) << views.status();
  EXPECT_THAT(*views, IsEmpty());
}

TEST(SafetensorsParseTest, AcceptsHandWrittenHeaderWithPaddingAndAnyKeyOrder) {
  // Offsets need not follow key order; the header may end in spaces.
  const std::string data = std::string(4, 'a') + std::string(2, 'b');
  const std::string header = R"({"z":{"data_offsets":[0,4],"shape":[1],"dtype":"I32"},)"
                             R"("a":{"dtype":"I16","shape":[1],"data_offsets":[4,6]}})"
                             "     ";
  auto views = ParseSafetensors(AsBytes(MakeImage(header, data)), "mem");
  ASSERT_TRUE(views.ok()) << views.status();
  ASSERT_EQ(views->size(), 2u);
  EXPECT_EQ((*views)[0].name, "z");  // file order, not name order
  EXPECT_EQ((*views)[1].name, "a");
}

// ---- Writer errors ----

TEST(SafetensorsWriteTest, RejectsBadTensors) {
  const std::vector<float> values = {1, 2, 3};
  const auto bytes = ToBytes(values);
  {
    const std::vector<TensorToWrite> t = {{"x", SafetensorsDtype::kF32, {2}, bytes}};
    auto image = SerializeSafetensors(t);
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(image.status().message()), HasSubstr("'x': has 12 bytes"));
  }
  {
    const std::vector<TensorToWrite> t = {{"x", SafetensorsDtype::kF32, {3}, bytes},
                                          {"x", SafetensorsDtype::kF32, {3}, bytes}};
    EXPECT_THAT(std::string(SerializeSafetensors(t).status().message()),
                HasSubstr("name appears twice"));
  }
  {
    const std::vector<TensorToWrite> t = {{"__metadata__", SafetensorsDtype::kF32, {3}, bytes}};
    EXPECT_THAT(std::string(SerializeSafetensors(t).status().message()), HasSubstr("reserved"));
  }
  {
    const std::vector<TensorToWrite> t = {{"x", SafetensorsDtype::kF32, {-1, -3}, bytes}};
    EXPECT_THAT(std::string(SerializeSafetensors(t).status().message()), HasSubstr("negative"));
  }
  {
    const std::vector<TensorToWrite> t = {{"bad\xff", SafetensorsDtype::kF32, {3}, bytes}};
    auto image = SerializeSafetensors(t);
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(image.status().message()), HasSubstr("not valid UTF-8"));
  }
  const std::string dir = TestDir();
  const std::vector<TensorToWrite> t = {{"x", SafetensorsDtype::kF32, {3}, bytes}};
  absl::Status missing_dir = WriteSafetensors(dir + "/no/such/dir/x.safetensors", t);
  EXPECT_EQ(missing_dir.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing_dir.message()), HasSubstr("/no/such/dir/x.safetensors"));
  // A failed write leaves neither the target nor a temporary behind.
  absl::Status bad =
      WriteSafetensors(dir + "/bad.safetensors",
                       std::vector<TensorToWrite>{{"x", SafetensorsDtype::kF32, {2}, bytes}});
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.message()), HasSubstr(dir + "/bad.safetensors"));
  struct stat st;
  EXPECT_NE(stat((dir + "/bad.safetensors").c_str(), &st), 0);
}

// ---- Files ----

TEST(SafetensorsFileTest, MissingFileIsNotFoundWithPath) {
  const std::string path = TestDir() + "/nope.safetensors";
  auto file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr(path));
}

TEST(SafetensorsFileTest, DirectoryAndEmptyFileAreInvalid) {
  const std::string dir = TestDir();
  auto as_dir = SafetensorsFile::Open(dir);
  EXPECT_EQ(as_dir.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(as_dir.status().message()), HasSubstr("not a regular file"));

  // A FIFO must be rejected, not block in open() waiting for a writer.
  ASSERT_EQ(mkfifo((dir + "/fifo.safetensors").c_str(), 0644), 0);
  auto fifo = SafetensorsFile::Open(dir + "/fifo.safetensors");
  EXPECT_EQ(fifo.status().code(), absl::StatusCode::kInvalidArgument);
  auto fifo_checkpoint = SafetensorsCheckpoint::Open(dir + "/fifo.safetensors");
  EXPECT_EQ(fifo_checkpoint.status().code(), absl::StatusCode::kInvalidArgument);

  WriteText(dir + "/empty.safetensors", "");
  auto empty = SafetensorsFile::Open(dir + "/empty.safetensors");
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(empty.status().message()),
              HasSubstr("empty.safetensors: file is 0 bytes"));
}

TEST(SafetensorsFileTest, CorruptFileErrorNamesPathAndTensor) {
  const std::string path = TestDir() + "/bad.safetensors";
  WriteText(path, MakeImage(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})",
                            std::string(4, '\0')));
  auto file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr(path + ": tensor 'w': byte size 4"));
}

// ---- Checkpoints ----

class SafetensorsCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TestDir();
    a_ = ToBytes(std::vector<float>{1, 2, 3, 4});
    b_ = ToBytes(std::vector<float>{5, 6});
    c_ = ToBytes(std::vector<int64_t>{7});
  }

  void WriteShard(const std::string& name, const std::vector<TensorToWrite>& tensors) {
    ASSERT_TRUE(WriteSafetensors(dir_ + "/" + name, tensors).ok());
  }

  // Two shards: a, b in the first; c in the second.
  void WriteShards() {
    WriteShard("model-00001-of-00002.safetensors", {{"h.0.a", SafetensorsDtype::kF32, {2, 2}, a_},
                                                    {"h.0.b", SafetensorsDtype::kF32, {2}, b_}});
    WriteShard("model-00002-of-00002.safetensors", {{"h.1.c", SafetensorsDtype::kI64, {1}, c_}});
  }

  void WriteIndex(const std::string& weight_map) {
    WriteText(dir_ + "/model.safetensors.index.json",
              absl::StrCat(R"({"metadata": {"total_size": 32}, "weight_map": )", weight_map, "}"));
  }

  static constexpr char kGoodWeightMap[] =
      R"({"h.0.a": "model-00001-of-00002.safetensors",
          "h.0.b": "model-00001-of-00002.safetensors",
          "h.1.c": "model-00002-of-00002.safetensors"})";

  std::string dir_;
  std::vector<std::byte> a_, b_, c_;
};

TEST_F(SafetensorsCheckpointTest, ShardedDirectory) {
  WriteShards();
  WriteIndex(kGoodWeightMap);
  auto checkpoint = SafetensorsCheckpoint::Open(dir_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->size(), 3u);
  EXPECT_THAT(checkpoint->Names(), ElementsAre("h.0.a", "h.0.b", "h.1.c"));
  EXPECT_EQ(checkpoint->files().size(), 2u);
  const TensorView* a = checkpoint->Find("h.0.a");
  ASSERT_NE(a, nullptr);
  EXPECT_THAT(a->shape, ElementsAre(2, 2));
  EXPECT_EQ(FromBytes<float>(a->bytes), (std::vector<float>{1, 2, 3, 4}));
  const TensorView* c = checkpoint->Find("h.1.c");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(FromBytes<int64_t>(c->bytes), (std::vector<int64_t>{7}));
  EXPECT_EQ(checkpoint->Find("h.2.x"), nullptr);

  // Views survive moving the checkpoint.
  SafetensorsCheckpoint moved = *std::move(checkpoint);
  ASSERT_NE(moved.Find("h.0.b"), nullptr);
  EXPECT_EQ(FromBytes<float>(moved.Find("h.0.b")->bytes), (std::vector<float>{5, 6}));
}

TEST_F(SafetensorsCheckpointTest, SingleFileDirectoryAndFilePath) {
  WriteShard("model.safetensors", {{"w", SafetensorsDtype::kF32, {2}, b_}});
  for (const std::string& path : {dir_, dir_ + "/", dir_ + "/model.safetensors"}) {
    auto checkpoint = SafetensorsCheckpoint::Open(path);
    ASSERT_TRUE(checkpoint.ok()) << path << ": " << checkpoint.status();
    EXPECT_THAT(checkpoint->Names(), ElementsAre("w"));
    ASSERT_NE(checkpoint->Find("w"), nullptr);
  }
}

TEST_F(SafetensorsCheckpointTest, IndexNamesMissingShardFile) {
  WriteShards();
  WriteIndex(R"({"h.0.a": "model-00001-of-00002.safetensors",
                 "h.9.z": "model-00003-of-00002.safetensors"})");
  auto checkpoint = SafetensorsCheckpoint::Open(dir_);
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(
      std::string(checkpoint.status().message()),
      HasSubstr("'h.9.z' in shard file 'model-00003-of-00002.safetensors', which is missing"));
  EXPECT_THAT(std::string(checkpoint.status().message()), HasSubstr(dir_));
}

TEST_F(SafetensorsCheckpointTest, IndexNamesTensorAbsentFromItsShard) {
  WriteShards();
  WriteIndex(R"({"h.0.a": "model-00001-of-00002.safetensors",
                 "h.0.b": "model-00002-of-00002.safetensors",
                 "h.1.c": "model-00002-of-00002.safetensors"})");
  auto checkpoint = SafetensorsCheckpoint::Open(dir_);
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(checkpoint.status().message()), HasSubstr("tensor 'h.0.b'"));
  EXPECT_THAT(std::string(checkpoint.status().message()),
              HasSubstr("that file has no such tensor"));
}

TEST_F(SafetensorsCheckpointTest, SameTensorInTwoShards) {
  WriteShard("model-00001-of-00002.safetensors", {{"h.0.a", SafetensorsDtype::kF32, {2, 2}, a_}});
  WriteShard("model-00002-of-00002.safetensors", {{"h.0.a", SafetensorsDtype::kF32, {2, 2}, a_},
                                                  {"h.1.c", SafetensorsDtype::kI64, {1}, c_}});
  WriteIndex(R"({"h.0.a": "model-00001-of-00002.safetensors",
                 "h.1.c": "model-00002-of-00002.safetensors"})");
  auto checkpoint = SafetensorsCheckpoint::Open(dir_);
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(checkpoint.status().message()),
              HasSubstr("tensor 'h.0.a' appears in two shards"));
}

TEST_F(SafetensorsCheckpointTest, NoModelFileAndNoIndex) {
  auto checkpoint = SafetensorsCheckpoint::Open(dir_);
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(checkpoint.status().message()),
              HasSubstr("neither model.safetensors nor model.safetensors.index.json"));
  EXPECT_THAT(std::string(checkpoint.status().message()), HasSubstr(dir_));

  auto missing = SafetensorsCheckpoint::Open(dir_ + "/does-not-exist");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("does-not-exist"));
}

TEST_F(SafetensorsCheckpointTest, MalformedIndex) {
  WriteShards();
  struct Case {
    std::string text;
    std::string substring;
  };
  const std::vector<Case> cases = {
      {"not json", "index is not valid UTF-8 JSON"},
      {R"({"metadata": {}})", "missing \"weight_map\" object"},
      {R"({"weight_map": {}})", "\"weight_map\" is empty"},
      {R"({"weight_map": {"h.0.a": 3}})", "is not a string"},
      {R"({"weight_map": {"h.0.a": "../model-00001-of-00002.safetensors"}})",
       "not a path inside the checkpoint"},
      {R"({"weight_map": {"h.0.a": "model-00001-of-00002.safetensors",
                          "h.0.a": "model-00002-of-00002.safetensors"}})",
       "duplicate key 'h.0.a'"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    WriteText(dir_ + "/model.safetensors.index.json", c.text);
    auto checkpoint = SafetensorsCheckpoint::Open(dir_);
    EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(checkpoint.status().message()), HasSubstr(c.substring));
    EXPECT_THAT(std::string(checkpoint.status().message()),
                HasSubstr("model.safetensors.index.json"));
  }
}

// ---- Corrupted images ----

struct CorruptCase {
  std::string name;
  std::string image;
  absl::StatusCode code;
  std::string substring;
};

std::string ValidImage() {
  static const std::vector<std::byte> a = ToBytes(std::vector<float>{1, 2, 3, 4});
  static const std::vector<std::byte> b = ToBytes(std::vector<int16_t>{5, 6});
  const std::vector<TensorToWrite> tensors = {{"a", SafetensorsDtype::kF32, {4}, a},
                                              {"b", SafetensorsDtype::kI16, {2}, b}};
  return *SerializeSafetensors(tensors);
}

size_t ValidHeaderSize() {
  const std::string image = ValidImage();
  size_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<size_t>(static_cast<uint8_t>(image[i])) << (8 * i);
  return n;
}

// One tensor entry as JSON text.
std::string Entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return absl::StrCat("\"", name, "\":{\"dtype\":", dtype, ",\"shape\":", shape,
                      ",\"data_offsets\":", offsets, "}");
}

std::vector<CorruptCase> CorruptCases() {
  using absl::StatusCode;
  const StatusCode kInvalid = StatusCode::kInvalidArgument;
  const std::string valid = ValidImage();
  const std::string data16(16, '\0');
  auto one = [](const std::string& entry) { return absl::StrCat("{", entry, "}"); };
  return {
      {"TooShort", "abc", kInvalid, "file is 3 bytes, too short"},
      {"TruncatedMidHeader", valid.substr(0, 8 + ValidHeaderSize() / 2), kInvalid,
       "runs past the end of the file"},
      {"TruncatedMidData", valid.substr(0, valid.size() - 3), kInvalid,
       "tensor 'b': data_offsets [16,20] run past the end of the 17-byte data buffer"},
      {"HeaderLengthZero", MakeImage("", "", 0), kInvalid, "header length is 0"},
      {"HugeHeaderLength", MakeImage("{}", "", uint64_t{1} << 40), kInvalid,
       "header length 1099511627776 exceeds the limit"},
      {"MaxHeaderLength", MakeImage("{}", "", ~uint64_t{0}), kInvalid, "exceeds the limit"},
      {"NotJson", MakeImage("{this is not json}"), kInvalid, "header is not valid UTF-8 JSON"},
      {"TrailingGarbageInHeader", MakeImage("{} x"), kInvalid, "header is not valid UTF-8 JSON"},
      {"InvalidUtf8", MakeImage("{\"\xff\xfe\":1}"), kInvalid, "header is not valid UTF-8 JSON"},
      {"NotStartingWithBrace", MakeImage(" {}"), kInvalid, "does not start with '{'"},
      {"Bom", MakeImage("\xEF\xBB\xBF{}"), kInvalid, "does not start with '{'"},
      {"TooDeep",
       MakeImage(absl::StrCat("{\"a\":", std::string(100, '['), std::string(100, ']'), "}")),
       kInvalid, "nested more than"},
      {"EntryNotObject", MakeImage(R"({"w":[1,2]})"), kInvalid,
       "tensor 'w': entry is not an object (got array)"},
      {"UnknownField",
       MakeImage(R"({"w":{"dtype":"F32","shape":[],"data_offsets":[0,4],"scale":1}})",
                 std::string(4, '\0')),
       kInvalid, "tensor 'w': unexpected field 'scale'"},
      {"MissingDtype", MakeImage(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "abcd"), kInvalid,
       "tensor 'w': missing field \"dtype\""},
      {"MissingShape", MakeImage(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", "abcd"), kInvalid,
       "tensor 'w': missing field \"shape\""},
      {"MissingOffsets", MakeImage(R"({"w":{"dtype":"F32","shape":[1]}})", "abcd"), kInvalid,
       "tensor 'w': missing field \"data_offsets\""},
      {"DtypeNotString", MakeImage(one(Entry("w", "4", "[1]", "[0,4]")), "abcd"), kInvalid,
       "tensor 'w': \"dtype\" is not a string (got 4)"},
      {"BadDtype", MakeImage(one(Entry("w", "\"F42\"", "[1]", "[0,4]")), "abcd"), kInvalid,
       "tensor 'w': unsupported dtype 'F42'"},
      {"ShapeNotArray", MakeImage(one(Entry("w", "\"F32\"", "4", "[0,4]")), "abcd"), kInvalid,
       "tensor 'w': \"shape\" is not an array"},
      {"NegativeShape", MakeImage(one(Entry("w", "\"F32\"", "[-1,4]", "[0,4]")), "abcd"), kInvalid,
       "tensor 'w': shape[0] is negative (-1)"},
      {"FractionalShape", MakeImage(one(Entry("w", "\"F32\"", "[1.5]", "[0,4]")), "abcd"), kInvalid,
       "tensor 'w': shape[0] is not an integer (got 1.5)"},
      {"HugeShapeDim",
       MakeImage(one(Entry("w", "\"U8\"", "[18446744073709551615]", "[0,4]")), "abcd"), kInvalid,
       "shape[0] is too large"},
      {"OverflowingShape",
       MakeImage(one(Entry("w", "\"F32\"", "[4294967296,4294967296,0]", "[0,0]"))), kInvalid,
       "tensor 'w': shape [4294967296,4294967296,0] has more elements than fit in 64 bits"},
      {"OverflowingByteSize",
       MakeImage(one(Entry("w", "\"F64\"", "[4611686018427387904]", "[0,0]"))), kInvalid,
       "has more bytes than fit in 64 bits"},
      {"OffsetsNotPair", MakeImage(one(Entry("w", "\"F32\"", "[1]", "[0,4,8]")), "abcd"), kInvalid,
       "\"data_offsets\" is not an array of two integers (got [0,4,8])"},
      {"NegativeOffset", MakeImage(one(Entry("w", "\"F32\"", "[1]", "[-4,0]")), "abcd"), kInvalid,
       "data_offsets[0] is negative (-4)"},
      {"StringOffset", MakeImage(one(Entry("w", "\"F32\"", "[1]", "[0,\"4\"]")), "abcd"), kInvalid,
       "data_offsets[1] is not an integer (got string)"},
      {"OffsetsBackwards", MakeImage(one(Entry("w", "\"F32\"", "[0]", "[4,0]")), "abcd"), kInvalid,
       "data_offsets [4,0] begin after they end"},
      {"OffsetsOutOfRange", MakeImage(one(Entry("w", "\"F32\"", "[4]", "[0,16]")), "abcd"),
       kInvalid, "tensor 'w': data_offsets [0,16] run past the end of the 4-byte data buffer"},
      {"SizeMismatch",
       MakeImage(one(Entry("h.0.attn.c_attn.weight", "\"F32\"", "[3,100]", "[0,1201]")),
                 std::string(1201, '\0')),
       kInvalid,
       "tensor 'h.0.attn.c_attn.weight': byte size 1201 (data_offsets [0,1201]) does not match "
       "shape [3,100] x F32 (1201 != 1200)"},
      {"Gap",
       MakeImage(absl::StrCat("{", Entry("a", "\"F32\"", "[2]", "[0,8]"), ",",
                              Entry("b", "\"F32\"", "[1]", "[12,16]"), "}"),
                 data16),
       kInvalid, "tensor 'b': data_offsets [12,16] leave a gap: bytes [8,12)"},
      {"GapAtStart", MakeImage(one(Entry("a", "\"F32\"", "[1]", "[4,8]")), "abcdefgh"), kInvalid,
       "tensor 'a': data_offsets [4,8] leave a gap: bytes [0,4)"},
      {"Overlap",
       MakeImage(absl::StrCat("{", Entry("a", "\"F32\"", "[3]", "[0,12]"), ",",
                              Entry("b", "\"F32\"", "[2]", "[8,16]"), "}"),
                 data16),
       kInvalid, "tensor 'b': data_offsets [8,16] overlap tensor 'a' at [0,12]"},
      {"Aliasing",
       MakeImage(absl::StrCat("{", Entry("a", "\"F32\"", "[4]", "[0,16]"), ",",
                              Entry("b", "\"F32\"", "[4]", "[0,16]"), "}"),
                 data16),
       kInvalid, "tensor 'b': data_offsets [0,16] overlap tensor 'a'"},
      {"ZeroSizeInsideAnother",
       MakeImage(absl::StrCat("{", Entry("a", "\"F32\"", "[4]", "[0,16]"), ",",
                              Entry("e", "\"F32\"", "[0]", "[8,8]"), "}"),
                 data16),
       kInvalid, "tensor 'e': data_offsets [8,8] overlap tensor 'a'"},
      {"TrailingBytes", MakeImage(one(Entry("a", "\"F32\"", "[2]", "[0,8]")), data16), kInvalid,
       "data buffer is 16 bytes but the tensors cover only 8 (8 trailing bytes"},
      {"DataWithoutTensors", MakeImage("{}", "abcd"), kInvalid, "4 trailing bytes"},
      {"DuplicateNames",
       MakeImage(absl::StrCat("{", Entry("a", "\"F32\"", "[2]", "[0,8]"), ",",
                              Entry("a", "\"F32\"", "[2]", "[8,16]"), "}"),
                 data16),
       kInvalid, "header: duplicate key 'a'"},
      {"DuplicateFieldInEntry",
       MakeImage(R"({"a":{"dtype":"F32","dtype":"I32","shape":[1],"data_offsets":[0,4]}})", "abcd"),
       kInvalid, "duplicate key 'dtype' inside entry 'a'"},
      {"MetadataNotStrings", MakeImage(R"({"__metadata__":{"format":"pt","n":3}})"), kInvalid,
       "\"__metadata__\" value for key 'n' is not a string (got 3)"},
      {"MetadataNotObject", MakeImage(R"({"__metadata__":["pt"]})"), kInvalid,
       "\"__metadata__\" is not an object of strings (got array)"},
      {"ControlCharInName", MakeImage(one(Entry("a\\nb", "\"F32\"", "[1]", "[0,8]")), "abcdefgh"),
       kInvalid, "tensor 'a\\nb': byte size 8"},
  };
}

class SafetensorsCorruptTest : public ::testing::TestWithParam<CorruptCase> {};

TEST_P(SafetensorsCorruptTest, RejectedWithPreciseError) {
  const CorruptCase& c = GetParam();
  auto views = ParseSafetensors(AsBytes(c.image), "bad.safetensors");
  ASSERT_FALSE(views.ok()) << "parsed " << views->size() << " tensors";
  EXPECT_EQ(views.status().code(), c.code) << views.status();
  EXPECT_THAT(std::string(views.status().message()), HasSubstr(c.substring));
  EXPECT_THAT(std::string(views.status().message()), ::testing::StartsWith("bad.safetensors: "));
}

INSTANTIATE_TEST_SUITE_P(Cases, SafetensorsCorruptTest, ::testing::ValuesIn(CorruptCases()),
                         [](const auto& info) { return info.param.name; });

// ---- A file written by HuggingFace ----

TEST(SafetensorsHuggingFaceTest, TinyGpt2Fixture) {
  const std::string path = GLASSBOX_FIXTURES_DIR "/models/tiny-gpt2/model.safetensors";
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    GTEST_SKIP() << "fixture " << path << " not generated yet";
  }
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_FALSE((*file)->tensors().empty());
  bool has_embedding = false;
  for (const TensorView& view : (*file)->tensors()) {
    SCOPED_TRACE(view.name);
    EXPECT_EQ(static_cast<int64_t>(view.bytes.size()),
              view.numel() * SafetensorsDtypeSize(view.dtype));
    if (view.name.ends_with("wte.weight")) {
      has_embedding = true;
      EXPECT_EQ(view.shape.size(), 2u);
      EXPECT_TRUE(ToDType(view.dtype).has_value());
    }
  }
  EXPECT_TRUE(has_embedding);

  // Our writer reproduces the same tensors.
  std::vector<TensorToWrite> tensors;
  for (const TensorView& view : (*file)->tensors()) {
    tensors.push_back({view.name, view.dtype, view.shape, view.bytes});
  }
  auto image = SerializeSafetensors(tensors, (*file)->metadata());
  ASSERT_TRUE(image.ok()) << image.status();
  std::map<std::string, std::string> metadata;
  auto views = ParseSafetensors(AsBytes(*image), "reserialized", &metadata);
  ASSERT_TRUE(views.ok()) << views.status();
  EXPECT_EQ(metadata, (*file)->metadata());
  ASSERT_EQ(views->size(), (*file)->tensors().size());
  for (size_t i = 0; i < views->size(); ++i) {
    const TensorView& original = (*file)->tensors()[i];
    EXPECT_EQ((*views)[i].name, original.name);
    EXPECT_TRUE(std::equal((*views)[i].bytes.begin(), (*views)[i].bytes.end(),
                           original.bytes.begin(), original.bytes.end()));
  }

  // The directory opens as a checkpoint too.
  auto checkpoint = SafetensorsCheckpoint::Open(GLASSBOX_FIXTURES_DIR "/models/tiny-gpt2");
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->size(), (*file)->tensors().size());
}

TEST(SafetensorsHuggingFaceTest, ShardedTinyLlamaVariantFixture) {
  const std::string dir = GLASSBOX_FIXTURES_DIR "/models/tiny-llama-variant";
  struct stat st;
  if (stat((dir + "/model.safetensors.index.json").c_str(), &st) != 0) {
    GTEST_SKIP() << "fixture " << dir << " not generated yet";
  }
  auto checkpoint = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_GT(checkpoint->files().size(), 1u);
  const TensorView* embed = checkpoint->Find("model.embed_tokens.weight");
  ASSERT_NE(embed, nullptr);
  EXPECT_EQ(embed->shape.size(), 2u);
  size_t from_files = 0;
  for (const auto& file : checkpoint->files()) from_files += file->tensors().size();
  EXPECT_EQ(checkpoint->size(), from_files);
}

}  // namespace
}  // namespace glassbox
