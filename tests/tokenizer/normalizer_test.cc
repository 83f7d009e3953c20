// The Unicode normalization forms of tokenizer.json, against values HF tokenizers gives (its
// tables are Unicode 9.0: marks assigned later neither reorder nor compose).
#include "server/model/tokenizer/normalizer.h"

#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace glassbox::tokenizer {
namespace {

std::string Apply(const char* type, std::string text) {
  auto normalizer = NormalizerFromJson(nlohmann::json{{"type", type}});
  EXPECT_TRUE(normalizer.ok()) << normalizer.status();
  (*normalizer)->Normalize(&text);
  return text;
}

TEST(NormalizerTest, CanonicalComposition) {
  EXPECT_EQ(Apply("NFC", "e\u0301"), "\u00e9");
  EXPECT_EQ(Apply("NFC", "\u1e0b\u0323"), "\u1e0d\u0307");  // Reordered, then recomposed.
  EXPECT_EQ(Apply("NFC", "\u1100\u1161\u11a8"), "\uac01");  // Hangul jamo.
  EXPECT_EQ(Apply("NFC", "\u212b\u2126"), "\u00c5\u03a9");  // Singletons.
  EXPECT_EQ(Apply("NFC", "\ufb01\u2460\u00bd"), "\ufb01\u2460\u00bd");  // Not compatibility.
  EXPECT_EQ(Apply("NFC", ""), "");
}

TEST(NormalizerTest, Decomposition) {
  EXPECT_EQ(Apply("NFD", "\u00e9"), "e\u0301");
  EXPECT_EQ(Apply("NFD", "\u1e0b\u0323"), "d\u0323\u0307");
  EXPECT_EQ(Apply("NFD", "\uac01"), "\u1100\u1161\u11a8");
  EXPECT_EQ(Apply("NFD", "\u212b\u2126"), "A\u030a\u03a9");
}

TEST(NormalizerTest, CompatibilityForms) {
  EXPECT_EQ(Apply("NFKC", "\ufb01\u2460\u00bd"), "fi11\u20442");
  EXPECT_EQ(Apply("NFKD", "\ufb01\u2460\u00bd"), "fi11\u20442");
  EXPECT_EQ(Apply("NFKC", "\u1e0b\u0323 \uff21"), "\u1e0d\u0307 A");
  EXPECT_EQ(Apply("NFKD", "\u212b"), "A\u030a");
}

// U+1DF6 (Unicode 10, combining class 232) sorts after U+0316 (220) under current tables, but
// is unassigned in HF's Unicode 9.0 ones: it stays put, and so does everything around it.
// U+11935 U+11930 (Unicode 13) compose to U+11938 today, and not in HF.
TEST(NormalizerTest, CodePointsAfterUnicode9AreLeftAlone) {
  for (const char* form : {"NFC", "NFD", "NFKC", "NFKD"}) {
    EXPECT_EQ(Apply(form, "a\u1df6\u0316"), "a\u1df6\u0316") << form;
    EXPECT_EQ(Apply(form, "a\u0316\u1df6"), "a\u0316\u1df6") << form;
    EXPECT_EQ(Apply(form, "\U00011935\U00011930"), "\U00011935\U00011930") << form;
  }
  // Unicode-9.0 text on either side is still normalised.
  EXPECT_EQ(Apply("NFC", "e\u0301\u1df6e\u0301"), "\u00e9\u1df6\u00e9");
  EXPECT_EQ(Apply("NFD", "\u00e9\U00011938\u00e9"), "e\u0301\U00011938e\u0301");
}

TEST(NormalizerTest, UnknownTypeIsUnimplemented) {
  auto normalizer = NormalizerFromJson(nlohmann::json{{"type", "Lowercase"}});
  EXPECT_EQ(normalizer.status().code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace glassbox::tokenizer
