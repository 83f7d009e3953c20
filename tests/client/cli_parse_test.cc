// The glassbox command line, parsed without a server: what each command turns into, every
// usage error, and the status -> exit code table.
#include <string>
#include <typeinfo>
#include <vector>

#include "client/cpp/cli.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glassbox::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

absl::StatusOr<Invocation> Parse(std::vector<std::string> args, Environment env = {}) {
  return ParseCommandLine(args, env);
}

void ExpectUsageError(std::vector<std::string> args, const std::string& text) {
  absl::StatusOr<Invocation> inv = Parse(args);
  ASSERT_FALSE(inv.ok()) << "accepted: " << ::testing::PrintToString(args);
  EXPECT_EQ(inv.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(inv.status().message()), HasSubstr(text));
}

TEST(CliParseTest, Models) {
  absl::StatusOr<Invocation> inv = Parse({"--server", "gpu:7070", "models"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "models");
  EXPECT_EQ(inv->server, "gpu:7070");
  EXPECT_EQ(inv->client.api_key, "");
  EXPECT_FALSE(inv->client.tls);
  EXPECT_EQ(inv->client.deadline, absl::InfiniteDuration());
}

TEST(CliParseTest, FlagsMayComeAfterTheCommandAndUseEquals) {
  absl::StatusOr<Invocation> inv = Parse({"models", "--server=gpu:1", "--api_key=k"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->server, "gpu:1");
  EXPECT_EQ(inv->client.api_key, "k");
}

TEST(CliParseTest, EnvironmentFallbacksAndPrecedence) {
  Environment env{.api_key = "env-key", .server = "env:1", .load_value = {}};
  absl::StatusOr<Invocation> inv = Parse({"models"}, env);
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->server, "env:1");
  EXPECT_EQ(inv->client.api_key, "env-key");
  inv = Parse({"--server", "flag:2", "--api_key", "flag-key", "models"}, env);
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->server, "flag:2");
  EXPECT_EQ(inv->client.api_key, "flag-key");
}

TEST(CliParseTest, TlsAndTimeout) {
  absl::StatusOr<Invocation> inv =
      Parse({"--server", "s:1", "--tls_root_cert", "/etc/ca.pem", "--timeout", "2.5", "models"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_TRUE(inv->client.tls);
  EXPECT_EQ(inv->client.tls_root_cert_path, "/etc/ca.pem");
  EXPECT_EQ(inv->client.deadline, absl::Milliseconds(2500));
  inv = Parse({"--server", "s:1", "--tls", "--timeout", "2m", "models"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_TRUE(inv->client.tls);
  EXPECT_EQ(inv->client.deadline, absl::Minutes(2));
  inv = Parse({"--server", "s:1", "--tls_client_cert", "c.pem", "--tls_client_key", "c.key",
               "models"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_TRUE(inv->client.tls);
  EXPECT_EQ(inv->client.tls_client_cert_path, "c.pem");
  EXPECT_EQ(inv->client.tls_client_key_path, "c.key");
  ExpectUsageError({"--server", "s:1", "--tls_client_cert", "c.pem", "models"},
                   "--tls_client_cert and --tls_client_key go together");
  ExpectUsageError({"--server", "s:1", "--timeout", "soon", "models"}, "not a duration");
  ExpectUsageError({"--server", "s:1", "--timeout", "0", "models"}, "positive");
}

TEST(CliParseTest, Help) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"--help"}, {"-h"}, {"help"}, {"run", "--help"}, {"--server", "s", "models", "-h"}}) {
    absl::StatusOr<Invocation> inv = Parse(args);
    ASSERT_TRUE(inv.ok()) << inv.status();
    EXPECT_EQ(inv->command, "help");
  }
  const std::string usage = UsageText();
  EXPECT_THAT(usage, HasSubstr("Exit codes:"));
  EXPECT_THAT(usage, HasSubstr("3  the server rejected the request"));
  EXPECT_THAT(usage, HasSubstr("RESOURCE_EXHAUSTED"));
  for (const char* command : {"patch", "logit-lens", "dla", "attn-norms", "--intervene"}) {
    EXPECT_THAT(usage, HasSubstr(command));
  }
}

TEST(CliParseTest, GeneralUsageErrors) {
  ExpectUsageError({}, "no command given");
  ExpectUsageError({"models"}, "--server ADDR is required");
  ExpectUsageError({"--server", "s", "frobnicate"}, "unknown command \"frobnicate\"");
  ExpectUsageError({"--server", "s", "models", "--frob"}, "unknown flag --frob");
  ExpectUsageError({"--server", "s", "models", "--capture", "x"},
                   "--capture is not a flag of the models command");
  ExpectUsageError({"--server", "s", "models", "extra"}, "models takes 0 arguments");
  ExpectUsageError({"--server"}, "--server needs a value");
  ExpectUsageError({"--server", "s", "--tls=maybe", "models"}, "not true or false");
}

TEST(CliParseTest, Info) {
  absl::StatusOr<Invocation> inv = Parse({"--server", "s", "info", "gpt2-small"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "info");
  EXPECT_EQ(Request<v1::GetModelInfoRequest>(*inv).model(), "gpt2-small");
  ExpectUsageError({"--server", "s", "info"}, "info takes 1 argument: glassbox info MODEL");
}

TEST(CliParseTest, Tokenize) {
  absl::StatusOr<Invocation> inv = Parse({"--server", "s", "tokenize", "m", "Hello world"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "tokenize");
  EXPECT_EQ(Request<v1::TokenizeRequest>(*inv).model(), "m");
  EXPECT_EQ(Request<v1::TokenizeRequest>(*inv).text(), "Hello world");
  EXPECT_FALSE(Request<v1::TokenizeRequest>(*inv).has_prepend_bos());

  inv = Parse({"--server", "s", "tokenize", "--noprepend_bos", "m", "Hi"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  ASSERT_TRUE(Request<v1::TokenizeRequest>(*inv).has_prepend_bos());
  EXPECT_FALSE(Request<v1::TokenizeRequest>(*inv).prepend_bos());

  inv = Parse({"--server", "s", "tokenize", "m", "Hi", "--prepend_bos", "--split_special_tokens"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_TRUE(Request<v1::TokenizeRequest>(*inv).prepend_bos());
  EXPECT_TRUE(Request<v1::TokenizeRequest>(*inv).split_special_tokens());

  // Text that looks like a flag, after "--"; a lone negative number is text anyway.
  inv = Parse({"--server", "s", "tokenize", "m", "--", "--not-a-flag"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(Request<v1::TokenizeRequest>(*inv).text(), "--not-a-flag");
  inv = Parse({"--server", "s", "tokenize", "m", "-42"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(Request<v1::TokenizeRequest>(*inv).text(), "-42");

  ExpectUsageError({"--server", "s", "tokenize", "m"}, "tokenize takes 2 arguments");
  ExpectUsageError({"--server", "s", "tokenize", "m", "a", "b"}, "tokenize takes 2 arguments");
  ExpectUsageError({"--server", "s", "tokenize", "m", "a", "--noprepend_bos=true"},
                   "takes no value");
}

TEST(CliParseTest, Detokenize) {
  absl::StatusOr<Invocation> inv =
      Parse({"--server", "s", "detokenize", "m", "15496,995", "11", "--skip_special_tokens"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "detokenize");
  EXPECT_THAT(Request<v1::DetokenizeRequest>(*inv).ids(), ElementsAre(15496, 995, 11));
  EXPECT_TRUE(Request<v1::DetokenizeRequest>(*inv).skip_special_tokens());
  ExpectUsageError({"--server", "s", "detokenize", "m"}, "detokenize takes 2 arguments");
  ExpectUsageError({"--server", "s", "detokenize", "m", "1,x"}, "\"x\" is not an integer");
}

TEST(CliParseTest, RunWithEverything) {
  absl::StatusOr<Invocation> inv = Parse({"--server",
                                          "s:1",
                                          "run",
                                          "--model",
                                          "gpt2",
                                          "--text",
                                          "a, b",
                                          "--text",
                                          "c",
                                          "--capture",
                                          "blocks.*.hook_resid_post",
                                          "--capture",
                                          "blocks.0.attn.hook_pattern",
                                          "--positions",
                                          "-1,0",
                                          "--heads",
                                          "1",
                                          "--heads",
                                          "3",
                                          "--layers",
                                          "0,2",
                                          "--dtype",
                                          "bf16",
                                          "--reduce",
                                          "top_k",
                                          "--k",
                                          "5",
                                          "--logits",
                                          "top_k",
                                          "--logits_k",
                                          "3",
                                          "--loss",
                                          "--target_tokens",
                                          "7,8",
                                          "--chunk_bytes",
                                          "4096",
                                          "--noprepend_bos",
                                          "--out",
                                          "x.safetensors"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "run");
  EXPECT_EQ(inv->out_path, "x.safetensors");
  const glassbox::v1::RunRequest& r = Request<v1::RunRequest>(*inv);
  EXPECT_EQ(r.model(), "gpt2");
  EXPECT_THAT(r.inputs().texts(), ElementsAre("a, b", "c"));  // no comma splitting of texts
  EXPECT_EQ(r.inputs().token_ids_size(), 0);
  ASSERT_TRUE(r.inputs().has_prepend_bos());
  EXPECT_FALSE(r.inputs().prepend_bos());
  ASSERT_EQ(r.captures_size(), 2);
  EXPECT_EQ(r.captures(0).hook(), "blocks.*.hook_resid_post");
  EXPECT_EQ(r.captures(1).hook(), "blocks.0.attn.hook_pattern");
  for (const glassbox::v1::Capture& c : r.captures()) {
    EXPECT_THAT(c.positions(), ElementsAre(-1, 0));
    EXPECT_THAT(c.heads(), ElementsAre(1, 3));
    EXPECT_THAT(c.layers(), ElementsAre(0, 2));
    EXPECT_EQ(c.dtype(), glassbox::v1::DTYPE_BF16);
    EXPECT_EQ(c.reduction(), glassbox::v1::REDUCTION_TOP_K);
    EXPECT_EQ(c.k(), 5);
  }
  EXPECT_EQ(r.outputs().logits(), glassbox::v1::LOGITS_TOP_K);
  EXPECT_EQ(r.outputs().logits_k(), 3);
  EXPECT_TRUE(r.outputs().loss_per_token());
  EXPECT_THAT(r.outputs().target_tokens(), ElementsAre(7, 8));
  EXPECT_EQ(r.chunk_bytes(), 4096u);
  EXPECT_FALSE(r.has_stop_at_layer());
}

TEST(CliParseTest, RunWithTokenRowsAndDefaults) {
  absl::StatusOr<Invocation> inv = Parse({"--server", "s", "run", "--model", "m", "--tokens",
                                          "1,2,3", "--tokens", " 4, 5 ", "--stop_at_layer", "1"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  const glassbox::v1::RunRequest& r = Request<v1::RunRequest>(*inv);
  ASSERT_EQ(r.inputs().token_ids_size(), 2);
  EXPECT_THAT(r.inputs().token_ids(0).ids(), ElementsAre(1, 2, 3));
  EXPECT_THAT(r.inputs().token_ids(1).ids(), ElementsAre(4, 5));
  EXPECT_FALSE(r.inputs().has_prepend_bos());
  EXPECT_EQ(r.captures_size(), 0);
  EXPECT_EQ(r.outputs().logits(), glassbox::v1::LOGITS_NONE);
  EXPECT_FALSE(r.outputs().loss_per_token());
  EXPECT_EQ(r.stop_at_layer(), 1);
  EXPECT_EQ(r.chunk_bytes(), 0u);
  EXPECT_EQ(inv->out_path, "");

  inv = Parse({"--server", "s", "run", "--model", "m", "--tokens", "1", "--capture", "x",
               "--logits", "last", "--reduce", "mean_pos"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(Request<v1::RunRequest>(*inv).outputs().logits(), glassbox::v1::LOGITS_LAST);
  EXPECT_EQ(Request<v1::RunRequest>(*inv).captures(0).reduction(),
            glassbox::v1::REDUCTION_MEAN_POS);
  EXPECT_EQ(Request<v1::RunRequest>(*inv).captures(0).dtype(), glassbox::v1::DTYPE_UNSPECIFIED);
}

TEST(CliParseTest, RunKeptOnTheServerAndCachedCommands) {
  absl::StatusOr<Invocation> inv =
      Parse({"--server", "s", "run", "--model", "m", "--tokens", "1,2", "--cache_as", "clean",
             "--cache_hook", "blocks.*.hook_resid_pre", "--cache_hook", "hook_embed", "--ttl", "90",
             "--intervene", "patch_cached:blocks.0.hook_resid_pre:pos=-1:from=other"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  const glassbox::v1::KeepActivations& keep = Request<v1::RunRequest>(*inv).keep();
  EXPECT_EQ(keep.name(), "clean");
  EXPECT_THAT(keep.hooks(), ElementsAre("blocks.*.hook_resid_pre", "hook_embed"));
  EXPECT_EQ(keep.ttl_seconds(), 90);
  EXPECT_EQ(Request<v1::RunRequest>(*inv).interventions(0).cached_run(), "other");
  inv = Parse({"--server", "s", "run", "--model", "m", "--tokens", "1"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_FALSE(Request<v1::RunRequest>(*inv).has_keep());
  ExpectUsageError({"--server", "s", "run", "--model", "m", "--tokens", "1", "--ttl", "5"},
                   "apply to a run kept with --cache_as");
  ExpectUsageError(
      {"--server", "s", "run", "--model", "m", "--tokens", "1", "--cache_as", "a", "--ttl", "0"},
      "--ttl");

  inv = Parse({"--server", "s", "cached"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "cached");
  inv = Parse({"--server", "s", "release", "clean"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "release");
  EXPECT_EQ(Request<v1::ReleaseCachedRunRequest>(*inv).name(), "clean");
  ExpectUsageError({"--server", "s", "release"}, "release NAME");
}

TEST(CliParseTest, RunUsageErrors) {
  const std::vector<std::string> base = {"--server", "s", "run", "--model", "m"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  ExpectUsageError({"--server", "s", "run", "--tokens", "1"}, "run needs --model MODEL");
  ExpectUsageError(with({}), "run needs inputs");
  ExpectUsageError(with({"--text", "a", "--tokens", "1"}), "not both");
  ExpectUsageError(with({"--tokens", "1,x"}), "--tokens: \"x\" is not an integer");
  ExpectUsageError(with({"--tokens", "1,-2"}), "--tokens: -2 is out of range");
  ExpectUsageError(with({"--tokens", "1,,2"}), "empty entry");
  ExpectUsageError(with({"--tokens", "99999999999"}), "out of range");
  ExpectUsageError(with({"--tokens", "1", "--prepend_bos"}), "--prepend_bos applies to --text");
  ExpectUsageError(with({"--tokens", "1", "--capture", "x", "--reduce", "top_k"}),
                   "--reduce top_k needs --k N");
  ExpectUsageError(with({"--tokens", "1", "--capture", "x", "--k", "3"}),
                   "--k applies to --reduce top_k only");
  ExpectUsageError(with({"--tokens", "1", "--capture", "x", "--reduce", "top_k", "--k", "0"}),
                   "--k: 0 is out of range");
  ExpectUsageError(with({"--tokens", "1", "--capture", "x", "--reduce", "max"}),
                   "--reduce: \"max\" is not one of");
  ExpectUsageError(with({"--tokens", "1", "--capture", "x", "--dtype", "i32"}),
                   "--dtype: \"i32\" is not one of f32, f16, bf16");
  ExpectUsageError(with({"--tokens", "1", "--capture", "x", "--dtype", "f64"}), "--dtype");
  ExpectUsageError(with({"--tokens", "1", "--positions", "-1"}),
                   "--positions applies to captures; add --capture PATTERN");
  ExpectUsageError(with({"--tokens", "1", "--capture", ""}), "--capture needs a hook name");
  ExpectUsageError(with({"--tokens", "1", "--logits", "some"}), "--logits: \"some\" is not one of");
  ExpectUsageError(with({"--tokens", "1", "--logits", "top_k"}), "--logits top_k needs --logits_k");
  ExpectUsageError(with({"--tokens", "1", "--logits_k", "2"}),
                   "--logits_k applies to --logits top_k");
  ExpectUsageError(with({"--tokens", "1", "--stop_at_layer", "1", "--logits", "last"}),
                   "--stop_at_layer stops before the unembedding");
  ExpectUsageError(with({"--tokens", "1", "--stop_at_layer", "1", "--loss"}), "--stop_at_layer");
  ExpectUsageError(with({"--tokens", "1", "--stop_at_layer", "-1"}), "out of range");
  ExpectUsageError(with({"--tokens", "1", "--out", ""}), "--out needs a file name");
  ExpectUsageError(with({"--tokens", "1", "extra"}), "run takes 0 arguments");
}

TEST(CliParseTest, RunWithInterventions) {
  absl::StatusOr<Invocation> inv =
      Parse({"--server", "s", "run", "--model", "m", "--tokens", "1,2,3", "--intervene",
             "zero:blocks.0.attn.hook_z:heads=1", "--intervene",
             "add:blocks.1.hook_resid_pre:positions=-1:coef=4:value=0.5,1", "--logits", "all"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  const glassbox::v1::RunRequest& r = Request<v1::RunRequest>(*inv);
  ASSERT_EQ(r.interventions_size(), 2);  // in order
  EXPECT_EQ(r.interventions(0).kind(), glassbox::v1::INTERVENTION_ZERO);
  EXPECT_EQ(r.interventions(0).hook(), "blocks.0.attn.hook_z");
  EXPECT_THAT(r.interventions(0).heads(), ElementsAre(1));
  EXPECT_EQ(r.interventions(1).kind(), glassbox::v1::INTERVENTION_ADD);
  EXPECT_THAT(r.interventions(1).positions(), ElementsAre(-1));
  EXPECT_EQ(r.interventions(1).coefficient(), 4.0f);
  EXPECT_THAT(r.interventions(1).value(), ElementsAre(0.5f, 1.0f));

  // Value files go through the environment's loader.
  Environment env;
  env.server = "s";
  std::string asked;
  env.load_value = [&](const std::string& path, const std::string& name)
      -> absl::StatusOr<std::vector<float>> {
    asked = path + "|" + name;
    if (path == "bad.npy") return absl::InvalidArgumentError("bad.npy: not a .npy file");
    return std::vector<float>{7, 8};
  };
  inv = Parse({"run", "--model", "m", "--tokens", "1", "--intervene",
               "set:hook_embed:value=@v.safetensors#dir"},
              env);
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(asked, "v.safetensors|dir");
  EXPECT_THAT(Request<v1::RunRequest>(*inv).interventions(0).value(), ElementsAre(7, 8));
  inv = Parse({"run", "--model", "m", "--tokens", "1", "--intervene", "set:hook_embed:value=@bad.npy"},
              env);
  ASSERT_FALSE(inv.ok());
  EXPECT_THAT(std::string(inv.status().message()), HasSubstr("bad.npy: not a .npy file"));

  ExpectUsageError({"--server", "s", "run", "--model", "m", "--tokens", "1", "--intervene",
                    "zero:blocks.0.attn.hook_z:heads=x"},
                   "--intervene \"zero:blocks.0.attn.hook_z:heads=x\": heads: \"x\" is not");
  ExpectUsageError({"--server", "s", "run", "--model", "m", "--tokens", "1", "--intervene",
                    "drop:blocks.0.attn.hook_z"},
                   "unknown kind \"drop\"");
  ExpectUsageError({"--server", "s", "logit-lens", "--model", "m", "--tokens", "1",
                    "--intervene", "zero:hook_embed"},
                   "--intervene is not a flag of the logit-lens command");
}

TEST(CliParseTest, Patch) {
  absl::StatusOr<Invocation> inv = Parse(
      {"--server", "s", "patch", "--model", "gpt2", "--clean-tokens", "1,2,3", "--corrupted-tokens",
       "1,5,3", "--clean_tokens", "4,5,6", "--corrupted_tokens", "4,9,6", "--kind",
       "head_out_by_pos", "--metric", "logit_diff:17,42", "--normalized", "--max-rows-per-pass",
       "8", "--out", "p.safetensors"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "patch");
  const glassbox::v1::PatchingSweepRequest& r = Request<v1::PatchingSweepRequest>(*inv);
  EXPECT_EQ(r.model(), "gpt2");
  ASSERT_EQ(r.clean().token_ids_size(), 2);
  EXPECT_THAT(r.clean().token_ids(1).ids(), ElementsAre(4, 5, 6));
  ASSERT_EQ(r.corrupted().token_ids_size(), 2);
  EXPECT_THAT(r.corrupted().token_ids(0).ids(), ElementsAre(1, 5, 3));
  EXPECT_EQ(r.kind(), glassbox::v1::SWEEP_HEAD_OUT_BY_POS);
  EXPECT_EQ(r.metric().kind(), glassbox::v1::PatchingMetric::LOGIT_DIFF);
  EXPECT_EQ(r.metric().token_a(), 17);
  EXPECT_EQ(r.metric().token_b(), 42);
  EXPECT_EQ(r.max_rows_per_pass(), 8);
  EXPECT_TRUE(inv->print_normalized);
  EXPECT_EQ(inv->out_path, "p.safetensors");

  inv = Parse({"--server", "s", "patch", "--model", "gpt2", "--clean-text", "When Mary and John",
               "--corrupted-text", "When Alice and Bob", "--noprepend-bos", "--kind", "resid_pre",
               "--metric", "loss"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_THAT(Request<v1::PatchingSweepRequest>(*inv).clean().texts(),
              ElementsAre("When Mary and John"));
  EXPECT_THAT(Request<v1::PatchingSweepRequest>(*inv).corrupted().texts(),
              ElementsAre("When Alice and Bob"));
  ASSERT_TRUE(Request<v1::PatchingSweepRequest>(*inv).clean().has_prepend_bos());
  EXPECT_FALSE(Request<v1::PatchingSweepRequest>(*inv).corrupted().prepend_bos());
  EXPECT_EQ(Request<v1::PatchingSweepRequest>(*inv).metric().kind(),
            glassbox::v1::PatchingMetric::LOSS);
  EXPECT_FALSE(inv->print_normalized);

  const std::vector<std::string> base = {"--server", "s", "patch", "--model", "m"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  const std::vector<std::string> pair = {"--clean-tokens", "1,2", "--corrupted-tokens", "1,3"};
  auto with_pair = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = with(pair);
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  ExpectUsageError({"--server", "s", "patch", "--kind", "resid_pre"}, "patch needs --model");
  ExpectUsageError(with({"--kind", "resid_pre", "--metric", "loss"}),
                   "patch needs inputs as --clean_text TEXT or as --clean_tokens IDS");
  ExpectUsageError(with({"--clean-tokens", "1", "--kind", "resid_pre", "--metric", "loss"}),
                   "--corrupted_text TEXT or as --corrupted_tokens IDS");
  ExpectUsageError(with({"--clean-tokens", "1", "--clean-tokens", "2", "--corrupted-tokens", "3",
                         "--kind", "resid_pre", "--metric", "loss"}),
                   "got 2 clean and 1 corrupted");
  ExpectUsageError(with_pair({"--metric", "loss"}), "patch needs --kind");
  ExpectUsageError(with_pair({"--kind", "pattern_by_pos", "--metric", "loss"}),
                   "--kind: \"pattern_by_pos\" is not one of resid_pre, resid_mid, resid_post, "
                   "attn_out, mlp_out, head_out, head_out_by_pos, q, k, v, pattern, mlp_post, sae_features");
  ExpectUsageError(with_pair({"--kind", "q"}), "patch needs --metric");
  ExpectUsageError(with_pair({"--kind", "q", "--metric", "kl"}), "--metric: \"kl\" is not one of");
  ExpectUsageError(with_pair({"--kind", "q", "--metric", "logit_diff:1"}),
                   "logit_diff takes 2 token ids, got 1");
  ExpectUsageError(with_pair({"--kind", "q", "--metric", "logit_diff"}), "needs two token ids");
  ExpectUsageError(with_pair({"--kind", "q", "--metric", "log_prob:1,2"}),
                   "log_prob takes 1 token id, got 2");
  ExpectUsageError(with_pair({"--kind", "q", "--metric", "loss:3"}), "loss takes no tokens");
  ExpectUsageError(with_pair({"--kind", "q", "--metric", "log_prob:-3"}), "out of range");
  ExpectUsageError(with_pair({"--kind", "q", "--metric", "loss", "--max_rows_per_pass", "0"}),
                   "out of range");
  ExpectUsageError(with_pair({"--kind", "q", "--metric", "loss", "--prepend_bos"}),
                   "--prepend_bos applies to --");
  ExpectUsageError(with_pair({"--kind", "q", "--metric", "loss", "--tokens", "1"}),
                   "--tokens is not a flag of the patch command");
  ExpectUsageError(with_pair({"--kind", "q", "--metric", "loss", "--out", ""}),
                   "--out needs a file name");
}

TEST(CliParseTest, SweepKindsAndMetrics) {
  const std::vector<std::pair<std::string, glassbox::v1::SweepKind>> kinds = {
      {"resid_pre", glassbox::v1::SWEEP_RESID_PRE},
      {"resid_mid", glassbox::v1::SWEEP_RESID_MID},
      {"resid-post", glassbox::v1::SWEEP_RESID_POST},
      {"attn_out", glassbox::v1::SWEEP_ATTN_OUT},
      {"mlp_out", glassbox::v1::SWEEP_MLP_OUT},
      {"head_out", glassbox::v1::SWEEP_HEAD_OUT_ALL_POS},
      {"head_out_all_pos", glassbox::v1::SWEEP_HEAD_OUT_ALL_POS},
      {"HEAD_OUT_BY_POS", glassbox::v1::SWEEP_HEAD_OUT_BY_POS},
      {"q", glassbox::v1::SWEEP_Q_ALL_POS},
      {"k", glassbox::v1::SWEEP_K_ALL_POS},
      {"v_all_pos", glassbox::v1::SWEEP_V_ALL_POS},
      {"pattern", glassbox::v1::SWEEP_ATTN_HEAD_PATTERN_ALL_POS},
      {"Pattern-All-Pos", glassbox::v1::SWEEP_ATTN_HEAD_PATTERN_ALL_POS}};
  for (const auto& [name, kind] : kinds) {
    EXPECT_EQ(ParseSweepKind(name), kind) << name;
  }
  EXPECT_EQ(ParseSweepKind("pattern_by_pos"), std::nullopt);
  EXPECT_EQ(SweepKindName(glassbox::v1::SWEEP_ATTN_HEAD_PATTERN_ALL_POS), "pattern");
  EXPECT_EQ(SweepKindNames(),
            "resid_pre, resid_mid, resid_post, attn_out, mlp_out, head_out, head_out_by_pos, q, "
            "k, v, pattern, mlp_post, sae_features");
  EXPECT_EQ(ParseSweepKind("mlp_post_all_pos"), glassbox::v1::SWEEP_MLP_POST_ALL_POS);
  EXPECT_EQ(SweepKindName(glassbox::v1::SWEEP_HEAD_OUT_ALL_POS), "head_out");
  EXPECT_EQ(SweepKindName(glassbox::v1::SWEEP_HEAD_OUT_BY_POS), "head_out_by_pos");

  absl::StatusOr<glassbox::v1::PatchingMetric> metric = ParsePatchingMetric("log_prob:9");
  ASSERT_TRUE(metric.ok()) << metric.status();
  EXPECT_EQ(metric->kind(), glassbox::v1::PatchingMetric::LOG_PROB);
  EXPECT_EQ(metric->token_a(), 9);
}

TEST(CliParseTest, Generate) {
  absl::StatusOr<Invocation> inv = Parse(
      {"--server", "s", "generate", "--model", "m", "--text", "Once", "--max_new_tokens", "7",
       "--temperature", "0.8", "--top_k", "40", "--top_p", "0.9", "--seed", "3", "--stop_tokens",
       "5,6", "--nostop_at_eos", "--intervene", "add:blocks.1.hook_resid_pre:value=1,2:coef=3"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "generate");
  const auto& request = Request<v1::GenerateRequest>(*inv);
  EXPECT_EQ(request.model(), "m");
  EXPECT_THAT(request.inputs().texts(), ElementsAre("Once"));
  EXPECT_EQ(request.max_new_tokens(), 7);
  EXPECT_DOUBLE_EQ(request.sampling().temperature(), 0.8);
  EXPECT_EQ(request.sampling().top_k(), 40);
  EXPECT_DOUBLE_EQ(request.sampling().top_p(), 0.9);
  EXPECT_FALSE(request.sampling().has_repetition_penalty());
  EXPECT_EQ(request.sampling().seed(), 3u);
  EXPECT_THAT(request.stop_token_ids(), ElementsAre(5, 6));
  EXPECT_FALSE(request.stop_at_eos());
  ASSERT_EQ(request.interventions_size(), 1);
  EXPECT_EQ(request.interventions(0).hook(), "blocks.1.hook_resid_pre");

  inv = Parse({"--server", "s", "generate", "--model", "m", "--tokens", "1,2"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(Request<v1::GenerateRequest>(*inv).max_new_tokens(), 20);
  EXPECT_EQ(Request<v1::GenerateRequest>(*inv).sampling().temperature(), 0);  // greedy
  EXPECT_FALSE(Request<v1::GenerateRequest>(*inv).has_stop_at_eos());
  EXPECT_FALSE(Request<v1::GenerateRequest>(*inv).include_unsteered());

  inv = Parse({"--server", "s", "generate", "--model", "m", "--text", "Hi", "--stop_string", ".",
               "--stop_string", "\n\n", "--unsteered"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_THAT(Request<v1::GenerateRequest>(*inv).stop_strings(), ElementsAre(".", "\n\n"));
  EXPECT_TRUE(Request<v1::GenerateRequest>(*inv).include_unsteered());

  ExpectUsageError({"--server", "s", "generate", "--model", "m"}, "generate needs inputs");
  ExpectUsageError({"--server", "s", "generate", "--model", "m", "--tokens", "1",
                    "--temperature", "hot"},
                   "--temperature must be a number");
  ExpectUsageError({"--server", "s", "generate", "--model", "m", "--tokens", "1",
                    "--max_new_tokens", "0"},
                   "--max_new_tokens: 0 is out of range");
  EXPECT_THAT(UsageText(), HasSubstr("generate --model MODEL"));
}

TEST(CliParseTest, AttributionPatching) {
  const std::vector<std::string> rest = {"--model", "m", "--clean-tokens", "1,2",
                                         "--corrupted-tokens", "1,3", "--kind", "mlp_post",
                                         "--metric", "logit_diff:1,2"};
  auto parse = [&](std::vector<std::string> head, std::vector<std::string> tail = {}) {
    head.insert(head.end(), rest.begin(), rest.end());
    head.insert(head.end(), tail.begin(), tail.end());
    return Parse(head);
  };
  absl::StatusOr<Invocation> inv = parse({"--server", "s", "attrib-patch"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "attrib-patch");
  EXPECT_EQ(Request<v1::PatchingSweepRequest>(*inv).method(), v1::PATCHING_ATTRIBUTION);
  EXPECT_EQ(Request<v1::PatchingSweepRequest>(*inv).kind(), v1::SWEEP_MLP_POST_ALL_POS);
  inv = parse({"--server", "s", "patch"}, {"--method", "attribution"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(Request<v1::PatchingSweepRequest>(*inv).method(), v1::PATCHING_ATTRIBUTION);
  inv = parse({"--server", "s", "patch"}, {"--method", "exact"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(Request<v1::PatchingSweepRequest>(*inv).method(), v1::PATCHING_EXACT);
  std::vector<std::string> args = {"--server", "s", "patch"};
  args.insert(args.end(), rest.begin(), rest.end());
  args.insert(args.end(), {"--method", "linear"});
  ExpectUsageError(args, "--method: \"linear\" is not exact or attribution");
  args[2] = "attrib-patch";
  ExpectUsageError(args, "attrib-patch is patch --method attribution: drop --method");
  inv = Parse({"--server", "s", "attrib-patch", "--model", "m", "--clean-tokens", "1,2",
               "--corrupted-tokens", "1,3", "--kind", "sae_features", "--sae", "res1",
               "--metric", "logit_diff:1,2"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(Request<v1::PatchingSweepRequest>(*inv).kind(), v1::SWEEP_SAE_FEATURES);
  EXPECT_EQ(Request<v1::PatchingSweepRequest>(*inv).sae(), "res1");
  ExpectUsageError({"--server", "s", "attrib-patch", "--model", "m", "--clean-tokens", "1,2",
                    "--corrupted-tokens", "1,3", "--kind", "sae_features", "--metric", "loss"},
                   "--kind sae_features and --sae NAME go together");
}

TEST(CliParseTest, Grad) {
  absl::StatusOr<Invocation> inv =
      Parse({"--server", "s", "grad", "--model", "m", "--tokens", "1,2,3", "--tokens", "4,5,6",
             "--metric", "logit_diff:17:42", "--position", "-2", "--hooks",
             "blocks.*.hook_resid_pre", "--hooks", "hook_embed", "--out", "g.safetensors"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "grad");
  const v1::GradientsRequest& r = Request<v1::GradientsRequest>(*inv);
  EXPECT_EQ(r.model(), "m");
  EXPECT_EQ(r.inputs().token_ids_size(), 2);
  EXPECT_EQ(r.metric().kind(), v1::GradientMetric::LOGIT_DIFF);
  EXPECT_EQ(r.metric().token_a(), 17);
  EXPECT_EQ(r.metric().token_b(), 42);
  EXPECT_EQ(r.metric().position(), -2);
  EXPECT_THAT(r.hooks(), ElementsAre("blocks.*.hook_resid_pre", "hook_embed"));
  EXPECT_EQ(inv->out_path, "g.safetensors");
  inv = Parse({"--server", "s", "grad", "--model", "m", "--text", "Hi", "--metric", "log_prob:7",
               "--hooks", "hook_embed"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(Request<v1::GradientsRequest>(*inv).metric().kind(), v1::GradientMetric::LOG_PROB);
  EXPECT_EQ(Request<v1::GradientsRequest>(*inv).metric().position(), -1);
  auto with = [](std::vector<std::string> extra) {
    std::vector<std::string> args = {"--server", "s", "grad", "--model", "m", "--tokens", "1,2"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  inv = Parse({"--server", "s", "grad", "--model", "m", "--text", "Hi", "--metric", "loss",
               "--hooks", "hook_embed"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(Request<v1::GradientsRequest>(*inv).metric().kind(), v1::GradientMetric::LOSS);
  ExpectUsageError(with({"--hooks", "h"}),
                   "grad needs --metric logit_diff:A:B, logit:T, log_prob:T, loss or sae:NAME:FEATURE");
  ExpectUsageError(with({"--metric", "logit:3"}), "grad needs --hooks HOOK");
  ExpectUsageError(with({"--metric", "kl", "--hooks", "h"}),
                   "--metric \"kl\": the kind is logit_diff, logit, log_prob, loss or sae");
  ExpectUsageError(with({"--metric", "loss:3", "--hooks", "h"}), "loss takes no tokens");
  inv = Parse({"--server", "s", "grad", "--model", "m", "--text", "Hi", "--metric", "sae:res1:7",
               "--hooks", "hook_embed"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(Request<v1::GradientsRequest>(*inv).metric().kind(), v1::GradientMetric::SAE_FEATURE);
  EXPECT_EQ(Request<v1::GradientsRequest>(*inv).metric().sae(), "res1");
  EXPECT_EQ(Request<v1::GradientsRequest>(*inv).metric().feature(), 7);
  ExpectUsageError(with({"--metric", "sae:res1", "--hooks", "h"}), "expected sae:NAME:FEATURE");
  inv = Parse({"--server", "s", "grad", "--model", "m", "--text", "Hi", "--metric", "loss",
               "--hooks", "hook_embed", "--intervene", "zero:blocks.0.attn.hook_z:heads=1",
               "--sae_splice", "res1:error_term", "--sae_edit", "res1:zero:features=3"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  const auto& grad = Request<v1::GradientsRequest>(*inv);
  EXPECT_EQ(grad.interventions_size(), 1);
  ASSERT_EQ(grad.sae_splices_size(), 1);
  EXPECT_TRUE(grad.sae_splices(0).use_error_term());
  EXPECT_EQ(grad.sae_splices(0).edits_size(), 1);
  ExpectUsageError(with({"--metric", "logit_diff:3", "--hooks", "h"}),
                   "--metric \"logit_diff:3\": expected logit_diff:A:B");
  ExpectUsageError(with({"--metric", "logit:3:4", "--hooks", "h"}), "expected logit:T");
  ExpectUsageError(with({"--metric", "logit:-3", "--hooks", "h"}), "tokens are ids >= 0");
}

TEST(CliParseTest, Lre) {
  auto with = [](std::vector<std::string> extra) {
    std::vector<std::string> args = {"--server", "s", "lre", "--model", "m", "--tokens", "1,2,3",
                                     "--tokens", "4,5,6"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  const std::vector<std::string> hooks = {"--subject_hook", "blocks.0.hook_resid_pre",
                                          "--subject_position", "-2", "--object_hook",
                                          "blocks.1.hook_resid_post"};
  std::vector<std::string> args = with(hooks);
  args.insert(args.end(), {"--holdout", "1", "--beta", "2.5"});
  absl::StatusOr<Invocation> inv = Parse(args);
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "lre");
  ExpectUsageError(with({"--subject_hook", "h", "--object_hook", "h"}),
                   "--subject_position is missing");
  args = with(hooks);
  args.insert(args.end(), {"--holdout", "2"});
  ExpectUsageError(args, "--holdout 2 leaves no prompt to fit (2 given)");
  args = with(hooks);
  args.insert(args.end(), {"--beta", "x"});
  ExpectUsageError(args, "--beta: \"x\" is not a number");
}

TEST(CliParseTest, IntegratedGradients) {
  absl::StatusOr<Invocation> inv =
      Parse({"--server", "s", "ig", "--model", "m", "--tokens", "1,2,3", "--metric",
             "logit_diff:17:42", "--hook", "blocks.0.attn.hook_z", "--steps", "64", "--out",
             "ig.safetensors"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  const v1::IntegratedGradientsRequest& r = Request<v1::IntegratedGradientsRequest>(*inv);
  EXPECT_EQ(r.hook(), "blocks.0.attn.hook_z");
  EXPECT_EQ(r.steps(), 64);
  EXPECT_EQ(r.method(), v1::IntegratedGradientsRequest::INTEGRATED_GRADIENTS);
  EXPECT_EQ(r.metric().token_b(), 42);
  EXPECT_EQ(r.metric().position(), -1);
  inv = Parse({"--server", "s", "ig", "--model", "m", "--text", "Hi", "--metric", "loss",
               "--method", "input_x_grad"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(Request<v1::IntegratedGradientsRequest>(*inv).hook(), "hook_embed");
  EXPECT_EQ(Request<v1::IntegratedGradientsRequest>(*inv).method(),
            v1::IntegratedGradientsRequest::INPUT_X_GRADIENT);
  auto with = [](std::vector<std::string> extra) {
    std::vector<std::string> args = {"--server", "s", "ig", "--model", "m", "--tokens", "1,2"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  ExpectUsageError(with({}), "ig needs --metric logit_diff:A:B, logit:T, log_prob:T, loss or sae:NAME:FEATURE");
  ExpectUsageError(with({"--metric", "loss", "--steps", "0"}), "--steps");
  ExpectUsageError(with({"--metric", "loss", "--method", "shap"}),
                   "--method: \"shap\" is not ig or input_x_grad");
}

TEST(CliParseTest, LogitLens) {
  absl::StatusOr<Invocation> inv =
      Parse({"--server", "s", "logit-lens", "--model", "m", "--tokens", "1,2,3", "--top_k", "3",
             "--targets", "17,42", "--position", "-2", "--out", "l.safetensors"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "logit-lens");
  EXPECT_EQ(Request<v1::LogitLensRequest>(*inv).model(), "m");
  EXPECT_THAT(Request<v1::LogitLensRequest>(*inv).inputs().token_ids(0).ids(),
              ElementsAre(1, 2, 3));
  EXPECT_EQ(Request<v1::LogitLensRequest>(*inv).top_k(), 3);
  EXPECT_THAT(Request<v1::LogitLensRequest>(*inv).target_tokens(), ElementsAre(17, 42));
  EXPECT_EQ(inv->position, -2);
  EXPECT_EQ(inv->out_path, "l.safetensors");

  inv = Parse({"--server", "s", "logit_lens", "--model", "m", "--text", "Hi"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(Request<v1::LogitLensRequest>(*inv).top_k(), 5);
  EXPECT_EQ(inv->position, -1);
  EXPECT_THAT(Request<v1::LogitLensRequest>(*inv).inputs().texts(), ElementsAre("Hi"));

  ExpectUsageError({"--server", "s", "logit-lens", "--model", "m"}, "logit-lens needs inputs");
  ExpectUsageError({"--server", "s", "logit-lens", "--model", "m", "--tokens", "1", "--top_k", "0"},
                   "--top_k: 0 is out of range");
  ExpectUsageError({"--server", "s", "logit-lens", "--model", "m", "--tokens", "1", "--position",
                    "last"},
                   "--position: \"last\" is not an integer");
  ExpectUsageError({"--server", "s", "logit-lens", "--model", "m", "--tokens", "1", "--capture",
                    "x"},
                   "--capture is not a flag of the logit-lens command");
}

TEST(CliParseTest, Dla) {
  absl::StatusOr<Invocation> inv =
      Parse({"--server", "s", "dla", "--model", "m", "--tokens", "1,2,3", "--tokens", "4,5",
             "--token", "17", "--minus", "42", "--position", "-1", "--top", "0"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "dla");
  EXPECT_EQ(Request<v1::DirectLogitAttributionRequest>(*inv).token(), 17);
  ASSERT_TRUE(Request<v1::DirectLogitAttributionRequest>(*inv).has_minus_token());
  EXPECT_EQ(Request<v1::DirectLogitAttributionRequest>(*inv).minus_token(), 42);
  EXPECT_EQ(Request<v1::DirectLogitAttributionRequest>(*inv).position(), -1);
  EXPECT_EQ(inv->top, 0);
  EXPECT_EQ(Request<v1::DirectLogitAttributionRequest>(*inv).inputs().token_ids_size(), 2);

  inv = Parse({"--server", "s", "dla", "--model", "m", "--text", "x", "--token", "3"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_FALSE(Request<v1::DirectLogitAttributionRequest>(*inv).has_minus_token());
  EXPECT_EQ(inv->top, 10);
  ExpectUsageError({"--server", "s", "dla", "--model", "m", "--text", "x"}, "dla needs --token ID");
  ExpectUsageError({"--server", "s", "dla", "--model", "m", "--text", "x", "--token", "-1"},
                   "out of range");
  ExpectUsageError({"--server", "s", "dla", "--model", "m", "--text", "x", "--token", "1",
                    "--top", "-1"},
                   "out of range");
}

TEST(CliParseTest, AttnNorms) {
  absl::StatusOr<Invocation> inv =
      Parse({"--server", "s", "attn-norms", "--model", "m", "--tokens", "1,2,3", "--layers", "0,1",
             "--out", "a.safetensors"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "attn-norms");
  EXPECT_THAT(Request<v1::AttentionNormsRequest>(*inv).layers(), ElementsAre(0, 1));
  EXPECT_EQ(inv->out_path, "a.safetensors");
  ExpectUsageError({"--server", "s", "attn-norms", "--model", "m", "--tokens", "1", "--layers",
                    "-1"},
                   "out of range");
  ExpectUsageError({"--server", "s", "attn-norms", "--tokens", "1"}, "attn-norms needs --model");
}

TEST(CliParseTest, ScanWithEverything) {
  Environment env;
  env.server = "s";
  std::string asked;
  env.load_value = [&](const std::string& path,
                       const std::string& name) -> absl::StatusOr<std::vector<float>> {
    asked = path + "|" + name;
    return std::vector<float>{0.5, -1};
  };
  absl::StatusOr<Invocation> inv = Parse({"scan",
                                          "gpt2",
                                          "--corpus",
                                          "web/pile.jsonl",
                                          "--text_field",
                                          "content",
                                          "--max_contexts",
                                          "5000",
                                          "--neurons",
                                          "blocks.5.mlp.hook_post:7,0-2,10",
                                          "--neurons",
                                          "blocks.6.mlp.hook_post",
                                          "--sae-features",
                                          "res6:3",
                                          "--sae_features",
                                          "res7",
                                          "--direction",
                                          "blocks.6.hook_resid_post:value=@dir.npy:name=honesty",
                                          "--direction",
                                          "hook_embed:value=1,2",
                                          "--heads",
                                          "3",
                                          "--heads",
                                          "1:key_offset=1:0,2",
                                          "--heads",
                                          "0:1:key_position=0",
                                          "--context-length",
                                          "128",
                                          "--nobos",
                                          "--top_k",
                                          "50",
                                          "--random_k",
                                          "0",
                                          "--quantile_bins",
                                          "4",
                                          "--per_quantile_k",
                                          "3",
                                          "--histogram_bins",
                                          "0",
                                          "--logit_k",
                                          "5",
                                          "--window_before",
                                          "12",
                                          "--window_after",
                                          "4",
                                          "--seed",
                                          "9",
                                          "--batch_contexts",
                                          "32",
                                          "--detach"},
                                         env);
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "scan");
  EXPECT_TRUE(inv->detach);
  const v1::StartScanRequest& r = Request<v1::StartScanRequest>(*inv);
  EXPECT_EQ(r.model(), "gpt2");
  EXPECT_EQ(r.corpus().path(), "web/pile.jsonl");
  EXPECT_FALSE(r.corpus().has_documents());
  EXPECT_EQ(r.corpus().text_field(), "content");
  EXPECT_EQ(r.corpus().max_contexts(), 5000);
  // Neurons, then SAE features, then directions, then heads, each in command-line order.
  ASSERT_EQ(r.targets_size(), 9);
  EXPECT_EQ(r.targets(0).neurons().hook(), "blocks.5.mlp.hook_post");
  EXPECT_THAT(r.targets(0).neurons().indices(), ElementsAre(7, 0, 1, 2, 10));
  EXPECT_EQ(r.targets(1).neurons().hook(), "blocks.6.mlp.hook_post");
  EXPECT_THAT(r.targets(1).neurons().indices(), ElementsAre());  // every neuron
  EXPECT_EQ(r.targets(2).sae_features().sae(), "res6");
  EXPECT_THAT(r.targets(2).sae_features().features(), ElementsAre(3));
  EXPECT_EQ(r.targets(3).sae_features().sae(), "res7");
  EXPECT_TRUE(r.targets(3).sae_features().features().empty());
  EXPECT_EQ(r.targets(4).direction().hook(), "blocks.6.hook_resid_post");
  EXPECT_EQ(r.targets(4).direction().name(), "honesty");
  EXPECT_THAT(r.targets(4).direction().vector(), ElementsAre(0.5f, -1.0f));
  EXPECT_EQ(asked, "dir.npy|");
  EXPECT_EQ(r.targets(5).direction().hook(), "hook_embed");
  EXPECT_EQ(r.targets(5).direction().name(), "");
  EXPECT_THAT(r.targets(5).direction().vector(), ElementsAre(1.0f, 2.0f));
  // Heads last: every head's output norm, attention one back, attention to position 0.
  EXPECT_EQ(r.targets(6).heads().layer(), 3);
  EXPECT_TRUE(r.targets(6).heads().heads().empty());
  EXPECT_EQ(r.targets(6).heads().measure(), v1::HeadTargets::OUTPUT_NORM);
  EXPECT_EQ(r.targets(7).heads().layer(), 1);
  EXPECT_THAT(r.targets(7).heads().heads(), ElementsAre(0, 2));
  EXPECT_EQ(r.targets(7).heads().measure(), v1::HeadTargets::ATTENTION_TO_OFFSET);
  EXPECT_EQ(r.targets(7).heads().key(), 1);
  EXPECT_THAT(r.targets(8).heads().heads(), ElementsAre(1));
  EXPECT_EQ(r.targets(8).heads().measure(), v1::HeadTargets::ATTENTION_TO_POSITION);
  EXPECT_EQ(r.targets(8).heads().key(), 0);
  EXPECT_EQ(r.context_length(), 128);
  EXPECT_TRUE(r.no_bos());
  EXPECT_EQ(r.top_k(), 50);
  EXPECT_EQ(r.random_k(), -1);  // 0 on the command line: none
  EXPECT_EQ(r.quantile_bins(), 4);
  EXPECT_EQ(r.per_quantile_k(), 3);
  EXPECT_EQ(r.histogram_bins(), -1);
  EXPECT_EQ(r.logit_k(), 5);
  EXPECT_EQ(r.window_before(), 12);
  EXPECT_EQ(r.window_after(), 4);
  EXPECT_EQ(r.seed(), 9u);
  EXPECT_EQ(r.batch_contexts(), 32);
}

TEST(CliParseTest, ScanDefaultsAndUploadedDocuments) {
  absl::StatusOr<Invocation> inv =
      Parse({"--server", "s", "scan", "demo", "--text", "Alice went home.", "--tokens", "0,5,6",
             "--text", "Bob too.", "--neurons", "blocks.0.mlp.hook_post:3"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_FALSE(inv->detach);
  const v1::StartScanRequest& r = Request<v1::StartScanRequest>(*inv);
  EXPECT_EQ(r.model(), "demo");
  EXPECT_EQ(r.corpus().path(), "");
  EXPECT_THAT(r.corpus().documents().texts(), ElementsAre("Alice went home.", "Bob too."));
  ASSERT_EQ(r.corpus().documents().token_sequences_size(), 1);
  EXPECT_THAT(r.corpus().documents().token_sequences(0).ids(), ElementsAre(0, 5, 6));
  EXPECT_EQ(r.corpus().max_contexts(), 0);
  // Unset options are 0: the server's defaults.
  EXPECT_EQ(r.context_length(), 0);
  EXPECT_FALSE(r.no_bos());
  EXPECT_EQ(r.top_k(), 0);
  EXPECT_EQ(r.random_k(), 0);
  EXPECT_EQ(r.quantile_bins(), 0);
  EXPECT_EQ(r.per_quantile_k(), 0);
  EXPECT_EQ(r.histogram_bins(), 0);
  EXPECT_EQ(r.logit_k(), 0);
  EXPECT_EQ(r.window_before(), 0);
  EXPECT_EQ(r.window_after(), 0);
  EXPECT_EQ(r.seed(), 0u);
  EXPECT_EQ(r.batch_contexts(), 0);
  inv = Parse({"--server", "s", "scan", "demo", "--text", "x", "--neurons", "h:1", "--bos"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_FALSE(Request<v1::StartScanRequest>(*inv).no_bos());
}

TEST(CliParseTest, ScanUsageErrors) {
  const std::vector<std::string> scan = {"--server", "s", "scan", "demo"};
  auto with = [&](std::vector<std::string> more) {
    std::vector<std::string> args = scan;
    args.insert(args.end(), more.begin(), more.end());
    return args;
  };
  ExpectUsageError({"--server", "s", "scan", "--text", "x", "--neurons", "h"},
                   "scan takes 1 argument: glassbox scan MODEL");
  ExpectUsageError({"--server", "s", "scan", "", "--text", "x", "--neurons", "h"},
                   "scan needs a MODEL");
  ExpectUsageError(with({"--neurons", "h"}), "scan needs a corpus: --corpus PATH");
  ExpectUsageError(with({"--corpus", "c.txt", "--text", "x", "--neurons", "h"}),
                   "scan reads one corpus: --corpus PATH or documents uploaded as --text / "
                   "--tokens, not both");
  ExpectUsageError(with({"--corpus", "", "--neurons", "h"}), "--corpus needs a file name");
  ExpectUsageError(with({"--tokens", "", "--neurons", "h"}), "--tokens: \"\" has an empty entry");
  ExpectUsageError(with({"--tokens", "1,-2", "--neurons", "h"}),
                   "--tokens: -2 is out of range [0, 2147483647]");
  ExpectUsageError(with({"--corpus", "c.txt", "--text_field", "body", "--neurons", "h"}),
                   "--text_field applies to a --corpus .jsonl file");
  ExpectUsageError(with({"--corpus", "c.jsonl", "--text_field", "", "--neurons", "h"}),
                   "--text_field needs a field name");
  ExpectUsageError(with({"--text", "x", "--max_contexts", "0", "--neurons", "h"}),
                   "--max_contexts: 0 is out of range [1, ");
  ExpectUsageError(with({"--text", "x"}),
                   "scan needs targets: --neurons HOOK[:LIST], --sae_features SAE[:LIST], "
                   "--direction HOOK:value=V or --heads LAYER[:LIST]");
  ExpectUsageError(with({"--text", "x", "--heads", "L1"}),
                   "--heads \"L1\": needs a layer number (>= 0) first");
  ExpectUsageError(with({"--text", "x", "--heads", "-1"}), "needs a layer number (>= 0) first");
  ExpectUsageError(with({"--text", "x", "--heads", "1:0:2"}), "--heads \"1:0:2\": two lists of heads");
  ExpectUsageError(with({"--text", "x", "--heads", "1:key=2"}),
                   "unknown key \"key\" (key_position, key_offset)");
  ExpectUsageError(with({"--text", "x", "--heads", "1:key_position=0:key_offset=1"}),
                   "one key: key_position=P or key_offset=K");
  ExpectUsageError(with({"--text", "x", "--heads", "1:key_offset=-1"}),
                   "key_offset= needs a number >= 0");
  ExpectUsageError(with({"--text", "x", "--heads", "1:"}), "no indices after ':'");
  ExpectUsageError(with({"--text", "x", "--neurons", ":3"}), "--neurons \":3\": needs a hook name");
  ExpectUsageError(with({"--text", "x", "--neurons", "h:"}),
                   "--neurons \"h:\": no indices after ':' (leave \":LIST\" out for every one)");
  ExpectUsageError(with({"--text", "x", "--neurons", "h:1,,2"}),
                   "--neurons \"h:1,,2\": an empty entry in the list");
  ExpectUsageError(with({"--text", "x", "--neurons", "h:x"}),
                   "--neurons \"h:x\": \"x\" is not an index");
  ExpectUsageError(with({"--text", "x", "--neurons", "h:-3"}),
                   "--neurons \"h:-3\": \"-3\": indices are >= 0");
  ExpectUsageError(with({"--text", "x", "--neurons", "h:5-2"}),
                   "--neurons \"h:5-2\": the range 5-2 runs backwards");
  ExpectUsageError(with({"--text", "x", "--neurons", "h:1-x"}),
                   "--neurons \"h:1-x\": \"1-x\" is not a range K-L");
  ExpectUsageError(with({"--text", "x", "--neurons", "h:0-2000000000"}),
                   "the range 0-2000000000 holds more than 1048576 indices");
  ExpectUsageError(with({"--text", "x", "--sae_features", ":1"}),
                   "--sae_features \":1\": needs an SAE name");
  ExpectUsageError(with({"--text", "x", "--direction", "hook_embed"}),
                   "--direction \"hook_embed\": needs value=V");
  ExpectUsageError(with({"--text", "x", "--direction", ":value=1"}),
                   "--direction \":value=1\": expected HOOK:value=V[:name=NAME]");
  ExpectUsageError(with({"--text", "x", "--direction", "hook_embed:value=1:scale=2"}),
                   "--direction \"hook_embed:value=1:scale=2\": unknown key \"scale\" (value, "
                   "name)");
  ExpectUsageError(with({"--text", "x", "--direction", "hook_embed:value=a"}),
                   "--direction \"hook_embed:value=a\": value: \"a\" is not a finite number");
  ExpectUsageError(with({"--text", "x", "--direction", "hook_embed:value=1:name="}),
                   "name= needs a name");
  ExpectUsageError(with({"--text", "x", "--neurons", "h", "--context_length", "0"}),
                   "--context_length: 0 is out of range [1, 2147483647]");
  ExpectUsageError(with({"--text", "x", "--neurons", "h", "--top_k", "-1"}),
                   "--top_k: -1 is out of range [0, 2147483647]");
  ExpectUsageError(with({"--text", "x", "--neurons", "h", "--top_k", "many"}),
                   "--top_k: \"many\" is not an integer");
  ExpectUsageError(with({"--text", "x", "--neurons", "h", "--per_quantile_k", "0"}),
                   "--per_quantile_k: 0 is out of range [1, ");
  ExpectUsageError(
      with({"--text", "x", "--neurons", "h", "--quantile_bins", "0", "--per_quantile_k", "2"}),
      "--per_quantile_k applies to quantile bins, which --quantile_bins 0 leaves out");
  ExpectUsageError(with({"--text", "x", "--neurons", "h", "--window_before", "0"}),
                   "--window_before: 0 is out of range [1, ");
  ExpectUsageError(with({"--text", "x", "--neurons", "h", "--seed", "-1"}),
                   "--seed: -1 is out of range [0, ");
  ExpectUsageError(with({"--text", "x", "--neurons", "h", "--batch_contexts", "0"}),
                   "--batch_contexts: 0 is out of range [1, ");
  ExpectUsageError(with({"--text", "x", "--neurons", "h", "--detach=maybe"}),
                   "--detach: \"maybe\" is not true or false");
  ExpectUsageError(with({"--text", "x", "--neurons", "h", "--capture", "x"}),
                   "--capture is not a flag of the scan command");
  ExpectUsageError({"--server", "s", "run", "--model", "m", "--tokens", "1", "--neurons", "h"},
                   "--neurons is not a flag of the run command");
}

TEST(CliParseTest, Job) {
  absl::StatusOr<Invocation> inv = Parse({"--server", "s", "job", "list"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "job");
  EXPECT_EQ(inv->request.type(), typeid(v1::ListJobsRequest));
  EXPECT_FALSE(inv->json);
  inv = Parse({"--server", "s", "job", "list", "--json"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_TRUE(inv->json);

  inv = Parse({"--server", "s", "job", "watch", "scan-1"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(Request<v1::WatchJobRequest>(*inv).job_id(), "scan-1");
  inv = Parse({"--server", "s", "job", "cancel", "scan-2"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(Request<v1::CancelJobRequest>(*inv).job_id(), "scan-2");

  inv = Parse({"--server", "s", "job", "results", "scan-3"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(Request<v1::GetScanResultsRequest>(*inv).job_id(), "scan-3");
  EXPECT_EQ(Request<v1::GetScanResultsRequest>(*inv).target_offset(), 0);
  EXPECT_EQ(Request<v1::GetScanResultsRequest>(*inv).target_limit(), 0);  // the server's
  EXPECT_EQ(inv->top, 5);
  EXPECT_FALSE(inv->json);
  inv = Parse({"--server", "s", "job", "results", "scan-3", "--offset", "64", "--limit", "16",
               "--top", "0"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(Request<v1::GetScanResultsRequest>(*inv).target_offset(), 64);
  EXPECT_EQ(Request<v1::GetScanResultsRequest>(*inv).target_limit(), 16);
  EXPECT_EQ(inv->top, 0);
  inv = Parse({"--server", "s", "job", "results", "scan-3", "--json"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_TRUE(inv->json);
  EXPECT_EQ(inv->out_path, "");

  // dashboard: the targets to write (limit 0 = all) and the directory.
  inv = Parse({"--server", "s", "job", "dashboard", "scan-4", "--out", "dash"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command, "job");
  EXPECT_EQ(Request<v1::GetScanResultsRequest>(*inv).job_id(), "scan-4");
  EXPECT_EQ(Request<v1::GetScanResultsRequest>(*inv).target_offset(), 0);
  EXPECT_EQ(Request<v1::GetScanResultsRequest>(*inv).target_limit(), 0);
  EXPECT_EQ(inv->out_path, "dash");
  EXPECT_FALSE(inv->json);
  inv = Parse({"--server", "s", "job", "dashboard", "scan-4", "--offset", "100", "--limit", "200",
               "--out", "/tmp/d"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(Request<v1::GetScanResultsRequest>(*inv).target_offset(), 100);
  EXPECT_EQ(Request<v1::GetScanResultsRequest>(*inv).target_limit(), 200);
  EXPECT_EQ(inv->out_path, "/tmp/d");
}

TEST(CliParseTest, JobUsageErrors) {
  ExpectUsageError({"--server", "s", "job"},
                   "job needs a subcommand: list, watch ID, cancel ID, results ID or dashboard ID");
  ExpectUsageError({"--server", "s", "job", "show", "x"},
                   "unknown job subcommand \"show\" (job list, watch ID, cancel ID, results ID or "
                   "dashboard ID)");
  ExpectUsageError({"--server", "s", "job", "list", "x"}, "job list takes no arguments (got 1)");
  ExpectUsageError({"--server", "s", "job", "watch"},
                   "job watch takes 1 argument: glassbox job watch ID (got 0)");
  ExpectUsageError({"--server", "s", "job", "cancel", "a", "b"},
                   "job cancel takes 1 argument: glassbox job cancel ID (got 2)");
  ExpectUsageError({"--server", "s", "job", "results", ""}, "job results needs a job ID");
  ExpectUsageError({"--server", "s", "job", "results", "x", "--offset", "-1"},
                   "--offset: -1 is out of range [0, ");
  ExpectUsageError({"--server", "s", "job", "results", "x", "--limit", "0"},
                   "--limit: 0 is out of range [1, ");
  ExpectUsageError({"--server", "s", "job", "results", "x", "--top", "-2"},
                   "--top: -2 is out of range [0, ");
  ExpectUsageError({"--server", "s", "job", "results", "x", "--top", "3", "--json"},
                   "--top applies to the text output; --json prints every record");
  ExpectUsageError({"--server", "s", "job", "list", "--offset", "3"},
                   "--offset applies to job results and job dashboard only");
  ExpectUsageError({"--server", "s", "job", "watch", "x", "--limit", "3"},
                   "--limit applies to job results and job dashboard only");
  ExpectUsageError({"--server", "s", "job", "cancel", "x", "--json"},
                   "--json applies to job list and job results only");
  ExpectUsageError({"--server", "s", "job", "list", "--detach"},
                   "--detach is not a flag of the job command");
  ExpectUsageError({"--server", "s", "job", "dashboard", "x"},
                   "job dashboard needs --out DIR: the directory to write the pages to");
  ExpectUsageError({"--server", "s", "job", "dashboard", "x", "--out", ""},
                   "--out needs a directory name");
  ExpectUsageError({"--server", "s", "job", "dashboard", "--out", "d"},
                   "job dashboard takes 1 argument: glassbox job dashboard ID (got 0)");
  ExpectUsageError({"--server", "s", "job", "dashboard", "", "--out", "d"},
                   "job dashboard needs a job ID");
  ExpectUsageError({"--server", "s", "job", "dashboard", "x", "--out", "d", "--limit", "0"},
                   "--limit: 0 is out of range [1, ");
  ExpectUsageError({"--server", "s", "job", "dashboard", "x", "--out", "d", "--top", "3"},
                   "--top applies to job results only");
  ExpectUsageError({"--server", "s", "job", "dashboard", "x", "--out", "d", "--json"},
                   "--json applies to job list and job results only");
  ExpectUsageError({"--server", "s", "job", "results", "x", "--out", "d"},
                   "--out applies to job dashboard only");
  ExpectUsageError({"--server", "s", "job", "list", "--out", "d"},
                   "--out applies to job dashboard only");
  ExpectUsageError({"--server", "s", "models", "--json"},
                   "--json is not a flag of the models command");
}

TEST(CliParseTest, UsageListsScanAndJob) {
  const std::string usage = UsageText();
  EXPECT_THAT(usage, HasSubstr("glassbox [global flags] scan MODEL (--corpus PATH | "));
  EXPECT_THAT(usage, HasSubstr("glassbox [global flags] job list [--json]\n"));
  EXPECT_THAT(usage, HasSubstr("results ID [--offset N] [--limit N] [--top 5] [--json]\n"));
  EXPECT_THAT(usage, HasSubstr("dashboard ID --out DIR [--offset N] [--limit N]\n"));
  EXPECT_THAT(usage, HasSubstr("  --out DIR "));
  EXPECT_THAT(usage, HasSubstr("Scan flags"));
  EXPECT_THAT(usage, HasSubstr("  --neurons HOOK[:LIST]"));
  EXPECT_THAT(usage, HasSubstr("  --detach "));
  EXPECT_THAT(usage, HasSubstr("Job flags:\n  --offset N"));
}

TEST(CliExitCodeTest, ServerStatusesMapToDocumentedCodes) {
  EXPECT_EQ(ExitCodeForStatus(absl::OkStatus()), 0);
  EXPECT_EQ(ExitCodeForStatus(absl::InvalidArgumentError("")), 3);
  EXPECT_EQ(ExitCodeForStatus(absl::NotFoundError("")), 3);
  EXPECT_EQ(ExitCodeForStatus(absl::FailedPreconditionError("")), 3);
  EXPECT_EQ(ExitCodeForStatus(absl::OutOfRangeError("")), 3);
  EXPECT_EQ(ExitCodeForStatus(absl::UnavailableError("")), 4);
  EXPECT_EQ(ExitCodeForStatus(absl::DeadlineExceededError("")), 4);
  EXPECT_EQ(ExitCodeForStatus(absl::ResourceExhaustedError("")), 5);
  EXPECT_EQ(ExitCodeForStatus(absl::InternalError("")), 1);
  EXPECT_EQ(ExitCodeForStatus(absl::UnauthenticatedError("")), 1);
  EXPECT_EQ(ExitCodeForStatus(absl::PermissionDeniedError("")), 1);
  EXPECT_EQ(ExitCodeForStatus(absl::CancelledError("")), 1);
  EXPECT_EQ(ExitCodeForStatus(absl::UnknownError("")), 1);
}

TEST(CliExitCodeTest, LocalFailuresAreNotTheServersVerdict) {
  const absl::Status local = MarkLocal(absl::NotFoundError("cannot open /nope/x.safetensors"));
  EXPECT_TRUE(IsLocal(local));
  EXPECT_EQ(local.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ExitCodeForStatus(local), 1);
  EXPECT_FALSE(IsLocal(absl::NotFoundError("x")));
  EXPECT_TRUE(MarkLocal(absl::OkStatus()).ok());
  // Usage problems found after parsing (a --position outside a tokenized row) exit with 2.
  EXPECT_EQ(ExitCodeForStatus(MarkUsage(absl::InvalidArgumentError("--position 9"))), 2);
  EXPECT_EQ(ExitCodeForStatus(absl::InvalidArgumentError("--position 9")), 3);
}

TEST(CliFormatTest, QuoteToken) {
  EXPECT_EQ(QuoteToken("Hello"), "'Hello'");
  EXPECT_EQ(QuoteToken(" world"), "' world'");
  EXPECT_EQ(QuoteToken("\n\t"), "'\\n\\t'");
  EXPECT_EQ(QuoteToken("it's"), "'it\\'s'");
  EXPECT_EQ(QuoteToken("a\\b"), "'a\\\\b'");
  EXPECT_EQ(QuoteToken(std::string("\x01\x7f", 2)), "'\\x01\\x7f'");
  EXPECT_EQ(QuoteToken("\xc3\xa9"), "'\xc3\xa9'");  // UTF-8 kept
}

}  // namespace
}  // namespace glassbox::cli
