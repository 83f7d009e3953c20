// Wire dtype decoding against known IEEE binary16 and bfloat16 bit patterns.
#include "client/cpp/tensor_decode.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glassbox::client {
namespace {

using ::testing::ElementsAre;

TEST(TensorDecodeTest, HalfNormalsZerosAndSpecials) {
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xc000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x3800), 0.5f);
  EXPECT_EQ(HalfToFloat(0x3e00), 1.5f);
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);               // largest finite
  EXPECT_EQ(HalfToFloat(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  EXPECT_EQ(HalfToFloat(0x3555), 0.333251953125f);        // nearest half to 1/3
  EXPECT_EQ(HalfToFloat(0x4248), 3.140625f);
  EXPECT_EQ(HalfToFloat(0x0000), 0.0f);
  EXPECT_FALSE(std::signbit(HalfToFloat(0x0000)));
  EXPECT_EQ(HalfToFloat(0x8000), 0.0f);
  EXPECT_TRUE(std::signbit(HalfToFloat(0x8000)));
  EXPECT_EQ(HalfToFloat(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(HalfToFloat(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7c01)));  // signalling NaN stays NaN
}

TEST(TensorDecodeTest, HalfSubnormals) {
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(HalfToFloat(0x8001), -std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x03ff), 1023.0f * std::ldexp(1.0f, -24));  // largest subnormal
  EXPECT_EQ(HalfToFloat(0x0200), std::ldexp(1.0f, -15));
}

TEST(TensorDecodeTest, BFloat16) {
  EXPECT_EQ(BFloat16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(0xc040), -3.0f);
  EXPECT_EQ(BFloat16ToFloat(0x4049), 3.140625f);
  EXPECT_EQ(BFloat16ToFloat(0x7f7f), 3.3895313892515355e38f);  // largest finite
  EXPECT_EQ(BFloat16ToFloat(0x0080), std::ldexp(1.0f, -126));  // smallest normal
  EXPECT_EQ(BFloat16ToFloat(0x0001), std::ldexp(1.0f, -133));  // smallest subnormal
  EXPECT_TRUE(std::signbit(BFloat16ToFloat(0x8000)));
  EXPECT_EQ(BFloat16ToFloat(0x7f80), std::numeric_limits<float>::infinity());
  EXPECT_EQ(BFloat16ToFloat(0xff80), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(0x7fc0)));
}

TEST(TensorDecodeTest, DecodesLittleEndianBuffers) {
  const std::string f16("\x00\x3c\x00\xc0\x01\x00", 6);  // 1, -2, 2^-24
  absl::StatusOr<std::vector<float>> half = DecodeToFloats(glassbox::v1::DTYPE_F16, f16);
  ASSERT_TRUE(half.ok()) << half.status();
  EXPECT_THAT(*half, ElementsAre(1.0f, -2.0f, std::ldexp(1.0f, -24)));

  const std::string bf16("\x80\x3f\x40\xc0", 4);  // 1, -3
  absl::StatusOr<std::vector<float>> brain = DecodeToFloats(glassbox::v1::DTYPE_BF16, bf16);
  ASSERT_TRUE(brain.ok()) << brain.status();
  EXPECT_THAT(*brain, ElementsAre(1.0f, -3.0f));

  const float f32_values[] = {0.25f, -7.5f};
  std::string f32(sizeof(f32_values), '\0');
  std::memcpy(f32.data(), f32_values, f32.size());
  EXPECT_THAT(*DecodeToFloats(glassbox::v1::DTYPE_F32, f32), ElementsAre(0.25f, -7.5f));

  const int32_t i32_values[] = {-5, 300};
  std::string i32(sizeof(i32_values), '\0');
  std::memcpy(i32.data(), i32_values, i32.size());
  EXPECT_THAT(*DecodeToFloats(glassbox::v1::DTYPE_I32, i32), ElementsAre(-5.0f, 300.0f));
  EXPECT_THAT(*DecodeToInt32s(glassbox::v1::DTYPE_I32, i32), ElementsAre(-5, 300));
  EXPECT_THAT(*DecodeToFloats(glassbox::v1::DTYPE_F32, ""), ElementsAre());
}

TEST(TensorDecodeTest, RejectsPartialElementsAndUnknownDtypes) {
  EXPECT_EQ(DecodeToFloats(glassbox::v1::DTYPE_F32, "abc").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeToFloats(glassbox::v1::DTYPE_F16, "abc").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeToFloats(glassbox::v1::DTYPE_UNSPECIFIED, "abcd").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeToFloats(static_cast<glassbox::v1::DType>(42), "abcd").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeToInt32s(glassbox::v1::DTYPE_F32, "abcd").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TensorDecodeTest, SizesNamesAndShapes) {
  EXPECT_EQ(DTypeSize(glassbox::v1::DTYPE_F32), 4);
  EXPECT_EQ(DTypeSize(glassbox::v1::DTYPE_F16), 2);
  EXPECT_EQ(DTypeSize(glassbox::v1::DTYPE_BF16), 2);
  EXPECT_EQ(DTypeSize(glassbox::v1::DTYPE_I32), 4);
  EXPECT_EQ(DTypeSize(glassbox::v1::DTYPE_UNSPECIFIED), 0);
  for (auto dtype : {glassbox::v1::DTYPE_F32, glassbox::v1::DTYPE_F16, glassbox::v1::DTYPE_BF16,
                     glassbox::v1::DTYPE_I32}) {
    EXPECT_EQ(ParseDType(DTypeName(dtype)), dtype);
  }
  EXPECT_EQ(ParseDType("BFloat16"), glassbox::v1::DTYPE_BF16);
  EXPECT_EQ(ParseDType("f64"), std::nullopt);

  EXPECT_EQ(*NumElements(std::vector<int64_t>{3, 11, 64}), 3 * 11 * 64);
  EXPECT_EQ(*NumElements(std::vector<int64_t>{}), 1);
  EXPECT_EQ(*NumElements(std::vector<int64_t>{5, 0}), 0);
  EXPECT_FALSE(NumElements(std::vector<int64_t>{2, -1}).ok());
  EXPECT_FALSE(NumElements(std::vector<int64_t>{int64_t{1} << 40, int64_t{1} << 40}).ok());
  EXPECT_TRUE(CheckTensorSize("t", std::vector<int64_t>{2, 3}, glassbox::v1::DTYPE_BF16, 12).ok());
  EXPECT_FALSE(CheckTensorSize("t", std::vector<int64_t>{2, 3}, glassbox::v1::DTYPE_BF16, 24).ok());
  // nbytes that would overflow int64 when multiplied out
  EXPECT_FALSE(
      CheckTensorSize("t", std::vector<int64_t>{int64_t{1} << 62}, glassbox::v1::DTYPE_F32, 0)
          .ok());
  EXPECT_EQ(ShapeString(std::vector<int64_t>{3, 11, 64}), "[3, 11, 64]");
  EXPECT_EQ(ShapeString(std::vector<int64_t>{}), "[]");
}

}  // namespace
}  // namespace glassbox::client
