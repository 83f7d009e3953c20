// The SAE commands and run flags of the glassbox command line, parsed without a server.
#include <string>
#include <vector>

#include "client/cpp/cli.h"
#include "client/cpp/sae_spec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glassbox::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
namespace pb = ::glassbox::v1;

absl::StatusOr<Invocation> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), {"--server", "s:1"});
  return ParseCommandLine(args, {});
}

void ExpectUsageError(std::vector<std::string> args, const std::string& text) {
  absl::StatusOr<Invocation> inv = Parse(args);
  ASSERT_FALSE(inv.ok()) << "accepted: " << ::testing::PrintToString(args);
  EXPECT_EQ(inv.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(inv.status().message()), HasSubstr(text));
}

TEST(SaeCliParseTest, SaesAndSaeEncode) {
  absl::StatusOr<Invocation> inv = Parse({"saes", "--model", "gpt2"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "saes");
  EXPECT_EQ(Request<pb::ListSaesRequest>(*inv).model(), "gpt2");

  inv = Parse({"sae-encode", "--sae", "res6", "--tokens", "1,2", "--tokens", "3", "--top-k", "0",
               "--dense", "--out", "f.safetensors"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "sae-encode");
  EXPECT_EQ(Request<pb::SaeEncodeRequest>(*inv).sae(), "res6");
  EXPECT_EQ(Request<pb::SaeEncodeRequest>(*inv).inputs().token_ids_size(), 2);
  EXPECT_EQ(Request<pb::SaeEncodeRequest>(*inv).top_k(), 0);
  EXPECT_TRUE(Request<pb::SaeEncodeRequest>(*inv).dense());
  EXPECT_EQ(inv->out_path, "f.safetensors");
  inv = Parse({"sae_encode", "--sae", "res6", "--text", "Hi"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(Request<pb::SaeEncodeRequest>(*inv).top_k(), 5);
  EXPECT_FALSE(Request<pb::SaeEncodeRequest>(*inv).dense());

  ExpectUsageError({"sae-encode", "--tokens", "1"}, "needs --sae NAME");
  ExpectUsageError({"sae-encode", "--sae", "x"}, "needs inputs");
  ExpectUsageError({"sae-encode", "--sae", "x", "--tokens", "1", "--top_k", "-1"}, "out of range");
  ExpectUsageError({"sae-encode", "--sae", "x", "--tokens", "1", "--model", "m"}, "not a flag");
  ExpectUsageError({"saes", "extra"}, "takes 0 arguments");
  ExpectUsageError({"run", "--model", "m", "--tokens", "1", "--dense"}, "not a flag of the run");
}

TEST(SaeCliParseTest, RunSpliceEditAndSteer) {
  absl::StatusOr<Invocation> inv =
      Parse({"run", "--model", "gpt2", "--tokens", "1,2,3", "--sae-splice", "res1:error_term",
             "--sae-edit", "res1:zero:features=4,5", "--sae-edit",
             "res1:clamp:features=7:value=2.5:positions=-1:rows=0", "--sae-splice", "z0",
             "--sae-steer", "z0:features=3,9:coef=2:pos=1"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  const pb::RunRequest& r = Request<pb::RunRequest>(*inv);
  ASSERT_EQ(r.sae_splices_size(), 2);
  EXPECT_EQ(r.sae_splices(0).sae(), "res1");
  EXPECT_TRUE(r.sae_splices(0).use_error_term());
  ASSERT_EQ(r.sae_splices(0).edits_size(), 2);
  EXPECT_EQ(r.sae_splices(0).edits(0).kind(), pb::FEATURE_EDIT_ZERO);
  EXPECT_THAT(r.sae_splices(0).edits(0).features(), ElementsAre(4, 5));
  const pb::FeatureEdit& clamp = r.sae_splices(0).edits(1);
  EXPECT_EQ(clamp.kind(), pb::FEATURE_EDIT_CLAMP);
  EXPECT_EQ(clamp.value(), 2.5f);
  EXPECT_THAT(clamp.positions(), ElementsAre(-1));
  EXPECT_THAT(clamp.rows(), ElementsAre(0));
  EXPECT_FALSE(r.sae_splices(1).use_error_term());
  ASSERT_EQ(r.sae_steering_size(), 1);
  EXPECT_THAT(r.sae_steering(0).features(), ElementsAre(3, 9));
  EXPECT_THAT(r.sae_steering(0).coefficients(), ElementsAre(2.0f, 2.0f));
  EXPECT_THAT(r.sae_steering(0).positions(), ElementsAre(1));
  EXPECT_EQ(FormatSaeSplice(r.sae_splices(0)),
            "res1 (error term): zero features 4,5; clamp features 7 value 2.5 rows 0 positions -1");
  EXPECT_EQ(FormatSaeSteering(r.sae_steering(0)), "z0: + 2 * W_dec[3] + 2 * W_dec[9] positions 1");

  const std::vector<std::string> run = {"run", "--model", "m", "--tokens", "1"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = run;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  ExpectUsageError(with({"--sae_splice", "x:maybe"}), "unknown option \"maybe\"");
  ExpectUsageError(with({"--sae_splice", ":error_term"}), "expected NAME");
  ExpectUsageError(with({"--sae_edit", "x:zero:features=1"}),
                   "SAE \"x\" is not spliced; add --sae_splice x");
  ExpectUsageError(with({"--sae_splice", "x", "--sae_edit", "x:mute:features=1"}),
                   "unknown kind \"mute\"");
  ExpectUsageError(with({"--sae_splice", "x", "--sae_edit", "x:clamp:features=1"}),
                   "clamp needs value=X");
  ExpectUsageError(with({"--sae_splice", "x", "--sae_edit", "x:zero:features=1:value=2"}),
                   "zero takes no value=");
  ExpectUsageError(with({"--sae_splice", "x", "--sae_edit", "x:scale:value=2"}),
                   "needs features=LIST");
  ExpectUsageError(with({"--sae_splice", "x", "--sae_edit", "x:scale:features=-1:value=2"}),
                   "-1 is negative");
  ExpectUsageError(with({"--sae_splice", "x", "--sae_edit", "x:scale:features=1:value=2:heads=1"}),
                   "unknown key \"heads\"");
  ExpectUsageError(with({"--sae_splice", "x", "--sae_edit", "x:zero"}),
                   "expected NAME:KIND:features=LIST");
  ExpectUsageError(with({"--sae_steer", "x:features=1,2:coef=1,2,3"}),
                   "coef= has 3 values for 2 features");
  ExpectUsageError(with({"--sae_steer", "x:coef=1"}), "needs features=LIST");
  ExpectUsageError(with({"--sae_steer", "x:features=1:coef=big"}), "not a finite number");
  ExpectUsageError(with({"--sae_steer", "x:features=1:features=2"}), "features= given twice");
}

}  // namespace
}  // namespace glassbox::cli
