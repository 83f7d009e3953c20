// The API keys file without gRPC: every parse error names the file, the entry and the field (and
// never quotes a secret), the Bearer header, lookups that match only the exact key, and reloads
// that replace the keys or, failing, keep them.
#include "server/service/api_keys.h"

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glassbox {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kGood[] = R"({"keys": [
  {"name": "alice", "key": "alice-secret-1", "quota": {"max_concurrent_runs": 4,
   "requests_per_minute": 600, "tokens_per_day": 50000000, "max_response_bytes": 8589934592,
   "cache_bytes": 1073741824}},
  {"name": "root.admin_1", "key": "root-secret", "admin": true},
  {"name": "nocache", "key": "x", "admin": false, "quota": {"cache_bytes": 0}}
]})";

TEST(ParseApiKeys, ReadsEveryField) {
  auto entries = ParseApiKeys(kGood, "keys.json");
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 3u);
  const ApiKeyEntry& alice = (*entries)[0];
  EXPECT_EQ(alice.key.name, "alice");
  EXPECT_EQ(alice.secret, "alice-secret-1");
  EXPECT_FALSE(alice.key.admin);
  EXPECT_EQ(alice.key.quota.max_concurrent_runs, 4);
  EXPECT_EQ(alice.key.quota.requests_per_minute, 600);
  EXPECT_EQ(alice.key.quota.tokens_per_day, 50000000);
  EXPECT_EQ(alice.key.quota.max_response_bytes, int64_t{8589934592});
  EXPECT_EQ(alice.key.quota.cache_bytes, int64_t{1073741824});
  const ApiKeyEntry& root = (*entries)[1];
  EXPECT_TRUE(root.key.admin);
  // Absent quotas are unlimited.
  EXPECT_FALSE(root.key.quota.max_concurrent_runs || root.key.quota.requests_per_minute ||
               root.key.quota.tokens_per_day || root.key.quota.max_response_bytes ||
               root.key.quota.cache_bytes);
  EXPECT_EQ((*entries)[2].key.quota.cache_bytes, 0);
  // No keys at all is a valid file: every call is then refused.
  EXPECT_TRUE(ParseApiKeys(R"({"keys": []})", "keys.json").ok());
}

struct BadFile {
  std::string name;
  std::string json;
  std::string phrase;
};

TEST(ParseApiKeys, EveryErrorNamesTheEntryAndTheField) {
  const std::string long_key(kMaxSecretBytes + 1, 'k');
  const std::vector<BadFile> cases = {
      {"syntax", R"({"keys": [{"name": "a", "key": "s3cr3t-value" ,]})",
       "keys.json: not valid JSON (syntax error at byte"},
      {"not an object", R"([1, 2])", R"(keys.json: expected {"keys": [{"name")"},
      {"no keys", R"({"key": []})", R"(keys.json: expected {"keys")"},
      {"keys not a list", R"({"keys": {"name": "a"}})", R"(keys.json: expected {"keys")"},
      {"unknown top-level field", R"({"keys": [], "quota": {}})",
       R"(keys.json has an unknown field "quota" (known: keys))"},
      {"entry not an object", R"({"keys": ["alice"]})", "keys.json: keys[0] must be an object"},
      {"unknown entry field", R"({"keys": [{"name": "a", "key": "k", "secret": "s"}]})",
       R"(keys.json: keys[0] has an unknown field "secret" (known: name, key, admin, quota))"},
      {"no name", R"({"keys": [{"key": "k"}]})",
       "keys.json: keys[0].name is missing or not a string"},
      {"name not a string", R"({"keys": [{"name": 7, "key": "k"}]})",
       "keys[0].name is missing or not a string"},
      {"empty name", R"({"keys": [{"name": "", "key": "k"}]})",
       R"(keys.json: keys[0].name "": use 1 to 64 letters, digits, '_', '.' or '-')"},
      {"name with a slash", R"({"keys": [{"name": "a/b", "key": "k"}]})",
       R"(keys[0].name "a/b": use 1 to 64)"},
      {"no key", R"({"keys": [{"name": "alice"}]})",
       R"(keys.json: keys[0] ("alice").key is missing or not a string)"},
      {"key not a string", R"({"keys": [{"name": "alice", "key": 12345}]})",
       R"(keys[0] ("alice").key is missing or not a string)"},
      {"empty key", R"({"keys": [{"name": "a", "key": "k"}, {"name": "bob", "key": ""}]})",
       R"(keys.json: keys[1] ("bob").key is empty)"},
      {"key with a space", R"({"keys": [{"name": "alice", "key": "two words"}]})",
       R"(keys[0] ("alice").key must be 1 to 256 visible ASCII characters (no spaces or control characters); it has 9 bytes)"},
      {"key too long", R"({"keys": [{"name": "alice", "key": ")" + long_key + R"("}]})",
       "it has 257 bytes"},
      {"admin not a bool", R"({"keys": [{"name": "alice", "key": "k", "admin": "yes"}]})",
       R"(keys[0] ("alice").admin must be true or false, got string)"},
      {"quota not an object", R"({"keys": [{"name": "alice", "key": "k", "quota": 5}]})",
       R"(keys[0] ("alice").quota must be an object, got number)"},
      {"misspelt quota",
       R"({"keys": [{"name": "alice", "key": "k", "quota": {"request_per_minute": 5}}]})",
       R"(keys[0] ("alice").quota has an unknown field "request_per_minute" (known: max_concurrent_runs, requests_per_minute, tokens_per_day, max_response_bytes, cache_bytes))"},
      {"negative quota",
       R"({"keys": [{"name": "alice", "key": "k", "quota": {"tokens_per_day": -5}}]})",
       R"(keys.json: keys[0] ("alice").quota.tokens_per_day must be an integer >= 1 (leave it out for no limit), got -5)"},
      {"zero runs",
       R"({"keys": [{"name": "alice", "key": "k", "quota": {"max_concurrent_runs": 0}}]})",
       R"(quota.max_concurrent_runs must be an integer >= 1)"},
      {"negative cache",
       R"({"keys": [{"name": "alice", "key": "k", "quota": {"cache_bytes": -1}}]})",
       R"(quota.cache_bytes must be an integer >= 0 (leave it out for no limit), got -1)"},
      {"fractional quota",
       R"({"keys": [{"name": "alice", "key": "k", "quota": {"requests_per_minute": 1.5}}]})",
       R"(quota.requests_per_minute must be an integer >= 1 (leave it out for no limit), got 1.5)"},
      {"quota as a string",
       R"({"keys": [{"name": "alice", "key": "k", "quota": {"max_response_bytes": "10"}}]})",
       R"(quota.max_response_bytes must be an integer >= 1 (leave it out for no limit), got "10")"},
      {"quota past int64",
       R"({"keys": [{"name": "alice", "key": "k", "quota": {"cache_bytes": 18446744073709551615}}]})",
       R"(quota.cache_bytes must be an integer >= 0 (leave it out for no limit), got 18446744073709551615)"},
      {"duplicate name",
       R"({"keys": [{"name": "alice", "key": "k1"}, {"name": "bob", "key": "k2"}, {"name": "alice", "key": "k3"}]})",
       R"(keys.json: keys[2].name "alice" is also keys[0]'s; every name must be different)"},
      {"duplicate key",
       R"({"keys": [{"name": "alice", "key": "same-k"}, {"name": "bob", "key": "same-k"}]})",
       R"(keys.json: keys[1] ("bob").key is also keys[0]'s ("alice"); every key must be different)"},
  };
  for (const BadFile& c : cases) {
    SCOPED_TRACE(c.name);
    auto parsed = ParseApiKeys(c.json, "keys.json");
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(parsed.status().message(), HasSubstr(c.phrase));
    // Secrets are never quoted back, not even from a file that does not parse.
    for (const char* secret : {"s3cr3t", "two words", "same-k", "kkkkkkkk"}) {
      EXPECT_THAT(parsed.status().message(), Not(HasSubstr(secret)));
    }
  }
}

TEST(BearerToken, TakesTheKeyOfABearerHeaderOnly) {
  EXPECT_EQ(BearerToken("Bearer abc"), "abc");
  EXPECT_EQ(BearerToken("bearer abc"), "abc");  // the scheme is case-insensitive
  EXPECT_EQ(BearerToken("BEARER   abc  "), "abc");
  EXPECT_EQ(BearerToken(" Bearer a-b_c.d~e+f/g= "), "a-b_c.d~e+f/g=");
  for (const char* bad : {"", "abc", "Bearer", "Bearer ", "Bearer    ", "Basic abc", "Bearerabc",
                          "Bearer a b", "Token abc"}) {
    EXPECT_EQ(BearerToken(bad), std::nullopt) << bad;
  }
}

ApiKeyStore StoreOf(std::initializer_list<std::pair<std::string, std::string>> keys) {
  std::vector<ApiKeyEntry> entries;
  for (const auto& [name, secret] : keys)
    entries.push_back({.key = {.name = name}, .secret = secret});
  return ApiKeyStore(std::move(entries));
}

// Only the exact key matches: not a prefix, an extension, another case, or one byte off at
// either end; a presented key longer than any key can be never matches.
TEST(ApiKeyStore, FindsOnlyTheExactKey) {
  const std::string longest(kMaxSecretBytes, 'z');
  ApiKeyStore store =
      StoreOf({{"alice", "alice-secret"}, {"bob", "bob-secret"}, {"long", longest}});
  EXPECT_EQ(store.size(), 3u);
  EXPECT_EQ(store.admins(), 0u);
  ASSERT_NE(store.Find("alice-secret"), nullptr);
  EXPECT_EQ(store.Find("alice-secret")->name, "alice");
  EXPECT_EQ(store.Find("bob-secret")->name, "bob");
  EXPECT_EQ(store.Find(longest)->name, "long");
  for (const std::string& wrong :
       {std::string(""), std::string("alice-secre"), std::string("alice-secret2"),
        std::string("Alice-secret"), std::string("alice-secreT"), std::string("xlice-secret"),
        std::string("alice-secret\0", 13), longest + "z", longest.substr(1),
        std::string(kMaxSecretBytes * 4, 'z')}) {
    EXPECT_EQ(store.Find(wrong), nullptr) << wrong.size() << " bytes";
  }
  EXPECT_EQ(StoreOf({}).Find("anything"), nullptr);
}

class ApiKeyFile : public ::testing::Test {
 protected:
  void TearDown() override { std::filesystem::remove(path_); }
  void Write(const std::string& json) { std::ofstream(path_, std::ios::trunc) << json; }
  // One file per test: ctest runs the tests of a suite in parallel processes.
  const std::string path_ = ::testing::TempDir() + "/api_keys_test_" +
                            ::testing::UnitTest::GetInstance()->current_test_info()->name() +
                            ".json";
};

TEST_F(ApiKeyFile, ReloadReplacesTheKeysOrKeepsThemOnError) {
  Write(
      R"({"keys": [{"name": "alice", "key": "a-1"}, {"name": "root", "key": "r-1", "admin": true}]})");
  auto store = ApiKeyStore::Load(path_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->path(), path_);
  EXPECT_EQ((*store)->admins(), 1u);
  ASSERT_NE((*store)->Find("a-1"), nullptr);

  // alice revoked, bob added, root's secret rotated.
  Write(
      R"({"keys": [{"name": "bob", "key": "b-1"}, {"name": "root", "key": "r-2", "admin": true}]})");
  ASSERT_TRUE((*store)->Reload().ok());
  EXPECT_EQ((*store)->Find("a-1"), nullptr);
  EXPECT_EQ((*store)->Find("r-1"), nullptr);
  EXPECT_EQ((*store)->Find("b-1")->name, "bob");
  EXPECT_EQ((*store)->Find("r-2")->name, "root");

  // A file that does not parse, or is gone, leaves the keys in use.
  Write(R"({"keys": [{"name": "bob"}]})");
  const absl::Status bad = (*store)->Reload();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr(path_ + ": keys[0] (\"bob\").key is missing"));
  std::filesystem::remove(path_);
  EXPECT_EQ((*store)->Reload().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*store)->Find("b-1")->name, "bob");
  EXPECT_EQ((*store)->size(), 2u);

  EXPECT_EQ(ApiKeyStore::Load(path_).status().code(), absl::StatusCode::kNotFound);
}

// Lookups on other threads while the keys are swapped see either table, never a torn one.
TEST_F(ApiKeyFile, ConcurrentFindsDuringReloads) {
  const std::string one = R"({"keys": [{"name": "a", "key": "k-a"}, {"name": "b", "key": "k-b"}]})";
  const std::string two = R"({"keys": [{"name": "b", "key": "k-b"}, {"name": "c", "key": "k-c"}]})";
  Write(one);
  auto store = ApiKeyStore::Load(path_);
  ASSERT_TRUE(store.ok());
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      while (!stop) {
        auto b = (*store)->Find("k-b");  // in both files
        ASSERT_NE(b, nullptr);
        EXPECT_EQ(b->name, "b");
        auto a = (*store)->Find("k-a");
        if (a != nullptr) {
          EXPECT_EQ(a->name, "a");
        }
      }
    });
  }
  for (int i = 0; i < 200; ++i) {
    Write(i % 2 ? one : two);
    ASSERT_TRUE((*store)->Reload().ok());
  }
  stop = true;
  for (auto& reader : readers) reader.join();
}

}  // namespace
}  // namespace glassbox
