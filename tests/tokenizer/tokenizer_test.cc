// Unit tests of the tokenizer: loading errors, invalid input, the encode options, and HF
// behaviours (added-token flags, pre-tokenizer variants) on small hand-written tokenizer.json's.
#include "server/model/tokenizer/tokenizer.h"

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glassbox {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string SharedTokenizerDir(const char* name) {
  return absl::StrCat(GLASSBOX_SHARED_DIR, "/data/tokenizers/", name);
}

// A tiny byte-fallback BPE in the Llama-2 style: "▁" prefix, spaces as "▁".
constexpr char kTinyJson[] = R"json({
  "version": "1.0",
  "added_tokens": [
    {"id": 0, "content": "<unk>", "special": true, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false},
    {"id": 1, "content": "<s>", "special": true, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false},
    {"id": 2, "content": "</s>", "special": true, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false}
  ],
  "normalizer": {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": "▁"},
    {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
  "pre_tokenizer": null,
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
  "decoder": {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
    "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0xC3>": 3, "<0xA9>": 4, "▁": 5, "a": 6, "b": 7,
              "▁a": 8, "ab": 9, "▁ab": 10},
    "merges": [["▁", "a"], "a b", "▁a b"]}
})json";

absl::StatusOr<std::unique_ptr<Tokenizer>> Tiny() { return Tokenizer::FromJson(kTinyJson, ""); }

EncodeOptions Options(std::optional<bool> add_special_tokens, bool split_special_tokens = false,
                      std::optional<bool> prepend_bos = std::nullopt) {
  EncodeOptions o;
  o.add_special_tokens = add_special_tokens;
  o.split_special_tokens = split_special_tokens;
  o.prepend_bos = prepend_bos;
  return o;
}
const EncodeOptions kNoSpecial = Options(false);

TEST(TokenizerLoadTest, MissingDirectory) {
  auto t = Tokenizer::LoadFromDirectory("/nonexistent/tokenizer/dir");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
}

TEST(TokenizerLoadTest, DirectoryWithoutTokenizerFiles) {
  const auto dir = std::filesystem::temp_directory_path() / "glassbox_tok_empty_dir";
  std::filesystem::create_directories(dir);
  auto t = Tokenizer::LoadFromDirectory(dir.string());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(t.status().message(), HasSubstr("tokenizer.json"));
}

TEST(TokenizerLoadTest, MalformedJson) {
  auto t = Tokenizer::FromJson("{\"model\": ", "");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  auto t2 = Tokenizer::FromJson(R"({"model": {"type": "BPE", "vocab": 3, "merges": []}})", "");
  EXPECT_EQ(t2.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t2.status().message(), HasSubstr("malformed"));
  auto t3 = Tokenizer::FromJson(
      R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})", "");
  EXPECT_EQ(t3.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t3.status().message(), HasSubstr("not in the vocab"));
  auto t4 = Tokenizer::FromJson("[1, 2]", "");
  EXPECT_EQ(t4.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TokenizerLoadTest, UnsupportedModelType) {
  auto t = Tokenizer::FromJson(
      R"({"model": {"type": "Unigram", "unk_id": 0, "vocab": [["a", 0.0]]}})", "");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(t.status().message(), HasSubstr("unsupported model type 'Unigram'"));
}

TEST(TokenizerLoadTest, UnsupportedComponent) {
  std::string json = kTinyJson;
  json.replace(json.find("\"pre_tokenizer\": null"), 21,
               R"("pre_tokenizer": {"type": "UnicodeScripts"})");
  auto t = Tokenizer::FromJson(json, "");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(t.status().message(), HasSubstr("UnicodeScripts"));
}

TEST(TokenizerLoadTest, BadRegex) {
  std::string json = kTinyJson;
  json.replace(
      json.find("\"pre_tokenizer\": null"), 21,
      R"("pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated", "invert": false})");
  auto t = Tokenizer::FromJson(json, "");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("regex"));
}

TEST(TokenizerTest, TinyEncodeDecode) {
  auto t = Tiny();
  ASSERT_TRUE(t.ok()) << t.status();
  // "ab a": "▁ab▁a" -> ▁ab, ▁a; "é" is not in the vocab -> byte fallback.
  EXPECT_THAT(*(*t)->Encode("ab a"), ElementsAre(1, 10, 8));
  EXPECT_THAT(*(*t)->Encode("ab a", kNoSpecial), ElementsAre(10, 8));
  EXPECT_THAT(*(*t)->Encode("é", kNoSpecial), ElementsAre(5, 3, 4));
  // An unknown character without byte tokens: unk, fused with its neighbour.
  EXPECT_THAT(*(*t)->Encode("xy", kNoSpecial), ElementsAre(5, 0));
  EXPECT_EQ(*(*t)->Decode(std::vector<int32_t>{1, 10, 8}), "<s> ab a");
  EXPECT_EQ(*(*t)->Decode(std::vector<int32_t>{1, 10, 8}, true), "ab a");
  EXPECT_EQ(*(*t)->Decode(std::vector<int32_t>{5, 3, 4}), "é");
  EXPECT_EQ(*(*t)->Decode(std::vector<int32_t>{5, 3}), "\xEF\xBF\xBD");
  EXPECT_EQ((*t)->vocab_size(), 11);
  EXPECT_EQ((*t)->bos_token_id(), 1);
}

TEST(TokenizerTest, SpecialTokensAndOptions) {
  auto t = Tiny();
  ASSERT_TRUE(t.ok()) << t.status();
  // Special tokens in text become their ids; the pieces around them are normalized separately.
  EXPECT_THAT(*(*t)->Encode("a</s>", kNoSpecial), ElementsAre(8, 2));
  // split_special_tokens: "</s>" is text; '<', '/', 's', '>' are unknown and fused into one unk.
  EXPECT_THAT(*(*t)->Encode("a</s>", Options(false, true)), ElementsAre(8, 0));
  EXPECT_THAT(*(*t)->Encode("a", Options(std::nullopt, false, false)), ElementsAre(8));
  EXPECT_THAT(*(*t)->Encode("a", Options(false, false, true)), ElementsAre(1, 8));
  EXPECT_THAT(*(*t)->Encode("a", Options(std::nullopt, false, true)), ElementsAre(1, 8));
  EXPECT_THAT(*(*t)->Encode(""), ElementsAre(1));
  EXPECT_THAT(*(*t)->Encode("", kNoSpecial), ElementsAre());
}

TEST(TokenizerTest, InvalidUtf8IsRejected) {
  auto t = Tiny();
  ASSERT_TRUE(t.ok()) << t.status();
  for (const std::string bad : {"\xff", "a\xc3", "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80"}) {
    auto ids = (*t)->Encode(bad);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(ids.status().message(), HasSubstr("UTF-8"));
  }
}

TEST(TokenizerTest, OutOfRangeIdsAreRejected) {
  auto t = Tiny();
  ASSERT_TRUE(t.ok()) << t.status();
  auto s = (*t)->Decode(std::vector<int32_t>{1, 11});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("11"));
  EXPECT_THAT(s.status().message(), HasSubstr("vocab size is 11"));
  EXPECT_EQ((*t)->Decode(std::vector<int32_t>{-1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*t)->ToStrTokens(std::vector<int32_t>{99}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TokenizerTest, ConfigOverridesBosEos) {
  auto t = Tokenizer::FromJson(kTinyJson, R"({"add_bos_token": false, "add_eos_token": true,
                                              "bos_token": "<s>", "eos_token": {"content": "</s>"},
                                              "pad_token": null})");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(*(*t)->Encode("a"), ElementsAre(8, 2));
  EXPECT_EQ((*t)->eos_token_id(), 2);
  EXPECT_EQ((*t)->pad_token_id(), std::nullopt);
}

TEST(TokenizerTest, AddedTokenFlags) {
  // lstrip/rstrip swallow whitespace around the token; single_word only matches whole words.
  std::string json = kTinyJson;
  json.replace(json.find("\"added_tokens\": ["), 17, R"("added_tokens": [
    {"id": 11, "content": "[M]", "special": false, "normalized": false, "lstrip": true, "rstrip": true, "single_word": false},
    {"id": 12, "content": "bb", "special": false, "normalized": false, "lstrip": false, "rstrip": false, "single_word": true},)");
  auto t = Tokenizer::FromJson(json, "");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(*(*t)->Encode("a [M] a", kNoSpecial), ElementsAre(8, 11, 8));
  EXPECT_THAT(*(*t)->Encode("a bb", kNoSpecial), ElementsAre(8, 5, 12));
  // In "abb", "bb" is inside a word, so it is not the added token.
  EXPECT_THAT(*(*t)->Encode("abb", kNoSpecial), ElementsAre(10, 7));
  EXPECT_EQ((*t)->vocab_size(), 13);
}

TEST(TokenizerTest, RealTokenizersLoad) {
  for (const char* name : {"gpt2", "llama2", "llama3"}) {
    auto t = Tokenizer::LoadFromDirectory(SharedTokenizerDir(name));
    ASSERT_TRUE(t.ok()) << name << ": " << t.status();
  }
  auto gpt2 = Tokenizer::LoadFromDirectory(SharedTokenizerDir("gpt2"));
  EXPECT_EQ((*gpt2)->bos_token_id(), 50256);
  EXPECT_EQ((*gpt2)->vocab_size(), 50257);
  EXPECT_THAT(*(*gpt2)->Encode("Hello world"), ElementsAre(15496, 995));
  EXPECT_THAT(*(*gpt2)->Encode("Hello world", Options(std::nullopt, false, true)),
              ElementsAre(50256, 15496, 995));
  auto llama3 = Tokenizer::LoadFromDirectory(SharedTokenizerDir("llama3"));
  EXPECT_EQ((*llama3)->bos_token_id(), 128000);
  EXPECT_EQ((*llama3)->eos_token_id(), 128001);
  auto strs =
      (*llama3)->ToStrTokens(*(*llama3)->Encode("Hello world", Options(std::nullopt, false, true)));
  EXPECT_THAT(*strs, ElementsAre("<|begin_of_text|>", "Hello", " world"));
}

// The server encodes from many threads with one Tokenizer; results must not depend on that
// (the BPE cache is shared).
TEST(TokenizerTest, ConcurrentEncodeIsConsistent) {
  auto t = Tokenizer::LoadFromDirectory(SharedTokenizerDir("llama3"));
  ASSERT_TRUE(t.ok()) << t.status();
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) {
    texts.push_back(absl::StrCat("Thread test ", i, " with words like tokenizer", i % 7,
                                 " and 東京 ", std::string(i % 5, ' '), "end"));
  }
  std::vector<std::vector<int32_t>> expected;
  for (const auto& text : texts) expected.push_back(*(*t)->Encode(text));
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = k; i < texts.size() + k; ++i) {
          const size_t j = i % texts.size();
          auto ids = (*t)->Encode(texts[j]);
          if (!ids.ok() || *ids != expected[j]) ++mismatches;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace glassbox
