// Differential test against HF `tokenizers`: for every corpus string and each tokenizer (the
// real GPT-2, Llama-2 and Llama-3 vocabularies, the shipped demo model's, and the Pythia, Qwen2,
// Gemma-2 and Gemma-3 pipelines built by transformers' own classes over small vocabularies),
// our ids, decoded text and per-token strings must equal the recorded HF outputs exactly.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/model/tokenizer/tokenizer.h"
#include "zlib.h"

namespace glassbox {
namespace {

using nlohmann::json;

// The recorded outputs are gzipped JSON (a tenth of the size).
json ReadJsonGz(const std::string& path) {
  gzFile in = gzopen(path.c_str(), "rb");
  if (in == nullptr) {
    ADD_FAILURE() << "cannot open " << path;
    return json();
  }
  std::string text;
  char buffer[1 << 16];
  int n;
  while ((n = gzread(in, buffer, sizeof(buffer))) > 0) text.append(buffer, n);
  EXPECT_EQ(n, 0) << "cannot inflate " << path;
  gzclose(in);
  return json::parse(text);
}

const std::vector<std::string>& Corpus() {
  static const auto* corpus =
      new std::vector<std::string>(ReadJsonGz(GLASSBOX_TOKENIZER_FIXTURES_DIR "/corpus.json.gz")
                                       .at("strings")
                                       .get<std::vector<std::string>>());
  return *corpus;
}

std::string Ids(const std::vector<int32_t>& ids) { return absl::StrJoin(ids, ","); }

struct Case {
  std::string name;  // fixtures/<name>.json
  std::string dir;   // the directory holding tokenizer.json (or vocab.json + merges.txt)
};

Case SharedTokenizer(const std::string& name) {
  return {name, absl::StrCat(GLASSBOX_SHARED_DIR, "/data/tokenizers/", name)};
}

Case FamilyTokenizer(const std::string& name) {
  return {name, absl::StrCat(GLASSBOX_TOKENIZER_FIXTURES_DIR, "/families/", name)};
}

class DifferentialTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    auto tok = Tokenizer::LoadFromDirectory(GetParam().dir);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = *std::move(tok);
    expected_ =
        ReadJsonGz(absl::StrCat(GLASSBOX_TOKENIZER_FIXTURES_DIR, "/", GetParam().name, ".json.gz"));
    ASSERT_EQ(expected_.at("entries").size(), Corpus().size());
  }

  // Reports the first few mismatches in full and returns the number of matches.
  static constexpr int kMaxReports = 10;
  void Report(int* reported, size_t index, const std::string& what, const std::string& ours,
              const std::string& theirs) {
    if ((*reported)++ >= kMaxReports) return;
    ADD_FAILURE() << GetParam().name << " string #" << index << " \""
                  << absl::CHexEscape(Corpus()[index]) << "\": " << what << "\n  ours: " << ours
                  << "\n  HF:   " << theirs;
  }

  std::unique_ptr<Tokenizer> tokenizer_;
  json expected_;
};

TEST_P(DifferentialTest, IdsMatchHf) {
  int reported = 0;
  size_t same = 0, same_special = 0, same_split = 0, split_total = 0;
  for (size_t i = 0; i < Corpus().size(); ++i) {
    const json& e = expected_.at("entries").at(i);
    const auto want = e.at("ids").get<std::vector<int32_t>>();
    const auto want_special = e.at("ids_special").get<std::vector<int32_t>>();
    EncodeOptions no_special;
    no_special.add_special_tokens = false;
    auto got = tokenizer_->Encode(Corpus()[i], no_special);
    auto got_special = tokenizer_->Encode(Corpus()[i]);
    ASSERT_TRUE(got.ok() && got_special.ok()) << got.status() << got_special.status();
    if (*got == want) {
      ++same;
    } else {
      Report(&reported, i, "ids (add_special_tokens=false)", Ids(*got), Ids(want));
    }
    if (*got_special == want_special) {
      ++same_special;
    } else {
      Report(&reported, i, "ids (add_special_tokens=true)", Ids(*got_special), Ids(want_special));
    }
    if (e.contains("ids_split_special")) {
      ++split_total;
      const auto want_split = e.at("ids_split_special").get<std::vector<int32_t>>();
      EncodeOptions split = no_special;
      split.split_special_tokens = true;
      auto got_split = tokenizer_->Encode(Corpus()[i], split);
      ASSERT_TRUE(got_split.ok()) << got_split.status();
      if (*got_split == want_split) {
        ++same_split;
      } else {
        Report(&reported, i, "ids (split_special_tokens=true)", Ids(*got_split), Ids(want_split));
      }
    }
  }
  std::cout << GetParam().name << ": identical ids for " << same << "/" << Corpus().size()
            << " strings (no special tokens), " << same_special << "/" << Corpus().size()
            << " (with special tokens), " << same_split << "/" << split_total
            << " (split_special_tokens)\n";
  EXPECT_EQ(same, Corpus().size());
  EXPECT_EQ(same_special, Corpus().size());
  EXPECT_EQ(same_split, split_total);
}

TEST_P(DifferentialTest, DecodeMatchesHf) {
  int reported = 0;
  size_t same = 0, same_skip = 0;
  for (size_t i = 0; i < Corpus().size(); ++i) {
    const json& e = expected_.at("entries").at(i);
    const auto ids = e.at("ids_special").get<std::vector<int32_t>>();
    const std::string want = e.at("decoded").get<std::string>();
    const std::string want_skip = e.value("decoded_skip", want);
    auto got = tokenizer_->Decode(ids);
    auto got_skip = tokenizer_->Decode(ids, /*skip_special_tokens=*/true);
    ASSERT_TRUE(got.ok() && got_skip.ok()) << got.status() << got_skip.status();
    if (*got == want) {
      ++same;
    } else {
      Report(&reported, i, "decode", absl::CHexEscape(*got), absl::CHexEscape(want));
    }
    if (*got_skip == want_skip) {
      ++same_skip;
    } else {
      Report(&reported, i, "decode (skip_special_tokens)", absl::CHexEscape(*got_skip),
             absl::CHexEscape(want_skip));
    }
  }
  std::cout << GetParam().name << ": identical decode for " << same << "/" << Corpus().size()
            << " strings, " << same_skip << "/" << Corpus().size() << " skipping special tokens\n";
  EXPECT_EQ(same, Corpus().size());
  EXPECT_EQ(same_skip, Corpus().size());
}

// Arbitrary id sequences: partial UTF-8 sequences, byte-fallback runs, special tokens anywhere.
TEST_P(DifferentialTest, RandomIdDecodeMatchesHf) {
  size_t same = 0;
  const json& cases = expected_.at("random_decodes");
  for (const json& c : cases) {
    const auto ids = c.at("ids").get<std::vector<int32_t>>();
    auto got = tokenizer_->Decode(ids);
    auto got_skip = tokenizer_->Decode(ids, /*skip_special_tokens=*/true);
    ASSERT_TRUE(got.ok() && got_skip.ok()) << got.status() << got_skip.status();
    const std::string want = c.at("decoded").get<std::string>();
    const std::string want_skip = c.at("decoded_skip").get<std::string>();
    if (*got == want && *got_skip == want_skip) {
      ++same;
    } else if (cases.size() - same <= kMaxReports) {
      ADD_FAILURE() << GetParam().name << " ids " << Ids(ids) << "\n  ours: \""
                    << absl::CHexEscape(*got) << "\" / \"" << absl::CHexEscape(*got_skip)
                    << "\"\n  HF:   \"" << absl::CHexEscape(want) << "\" / \""
                    << absl::CHexEscape(want_skip) << "\"";
    }
  }
  std::cout << GetParam().name << ": identical decode of random ids for " << same << "/"
            << cases.size() << " sequences\n";
  EXPECT_EQ(same, cases.size());
}

TEST_P(DifferentialTest, StrTokensMatchHf) {
  const json& strings = expected_.at("token_strings");
  std::vector<int32_t> ids;
  std::vector<std::string> want;
  for (const auto& [id, s] : strings.items()) {
    ids.push_back(std::stoi(id));
    want.push_back(s.get<std::string>());
  }
  auto got = tokenizer_->ToStrTokens(ids);
  ASSERT_TRUE(got.ok()) << got.status();
  size_t same = 0;
  for (size_t k = 0; k < ids.size(); ++k) {
    if ((*got)[k] == want[k]) {
      ++same;
    } else if (k - same < kMaxReports) {
      ADD_FAILURE() << GetParam().name << " id " << ids[k] << ": ours \""
                    << absl::CHexEscape((*got)[k]) << "\" HF \"" << absl::CHexEscape(want[k])
                    << "\"";
    }
  }
  std::cout << GetParam().name << ": identical per-token strings for " << same << "/" << ids.size()
            << " ids\n";
  EXPECT_EQ(same, ids.size());
  EXPECT_EQ(tokenizer_->vocab_size(), expected_.at("vocab_size").get<int32_t>());
}

INSTANTIATE_TEST_SUITE_P(RealTokenizers, DifferentialTest,
                         ::testing::Values(SharedTokenizer("gpt2"), SharedTokenizer("llama2"),
                                           SharedTokenizer("llama3"),
                                           Case{"demo", GLASSBOX_DEMO_MODEL_DIR},
                                           FamilyTokenizer("pythia"), FamilyTokenizer("qwen2"),
                                           FamilyTokenizer("gemma2"), FamilyTokenizer("gemma3")),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace glassbox
