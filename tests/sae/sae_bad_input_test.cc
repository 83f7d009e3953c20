// Bad configs, files and requests are precise INVALID_ARGUMENT / NOT_FOUND statuses, never
// crashes; plus the paths the parity fixtures are too small to reach (several token tiles,
// empty batches).
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "base/float16.h"
#include "base/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine/sae/npz.h"
#include "server/engine/sae/sae.h"
#include "server/engine/sae/sae_config.h"
#include "server/engine/sae/sae_loader.h"

namespace glassbox {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kSaeDir = std::string(GLASSBOX_FIXTURES_DIR) + "/saes";

#define EXPECT_INVALID(expr, substring)                                     \
  do {                                                                      \
    auto status_ = (expr);                                                  \
    EXPECT_EQ(status_.code(), absl::StatusCode::kInvalidArgument) << status_; \
    EXPECT_THAT(std::string(status_.message()), HasSubstr(substring));      \
  } while (false)

Tensor Random(Shape shape, std::mt19937& rng, float scale = 1.0f, float mean = 0.0f) {
  std::normal_distribution<float> dist(mean, scale);
  Tensor t = Tensor::EmptyHost(DType::kF32, std::move(shape));
  for (float& v : t.span<float>()) v = dist(rng);
  return t;
}

SaeConfig SmallConfig(SaeArchitecture arch, int64_t d_in = 8, int64_t d_sae = 24) {
  SaeConfig c;
  c.architecture = arch;
  c.d_in = d_in;
  c.d_sae = d_sae;
  c.k = arch == SaeArchitecture::kTopK ? 4 : 0;
  c.hook_name = "blocks.0.hook_resid_pre";
  return c;
}

SaeWeights SmallWeights(const SaeConfig& c, std::mt19937& rng) {
  SaeWeights w;
  w.W_enc = Random({c.d_in, c.d_sae}, rng, 0.5f);
  w.W_dec = Random({c.d_sae, c.d_in}, rng, 0.5f);
  w.b_dec = Random({c.d_in}, rng, 0.3f);
  if (c.architecture == SaeArchitecture::kGated) {
    w.b_gate = Random({c.d_sae}, rng, 0.3f);
    w.r_mag = Random({c.d_sae}, rng, 0.3f);
    w.b_mag = Random({c.d_sae}, rng, 0.3f);
  } else {
    w.b_enc = Random({c.d_sae}, rng, 0.3f);
  }
  if (c.architecture == SaeArchitecture::kJumpRelu) w.threshold = Random({c.d_sae}, rng, 0.1f, 0.3f);
  return w;
}

std::unique_ptr<Sae> SmallSae(SaeArchitecture arch, SaeNormalization norm = SaeNormalization::kNone,
                              int64_t d_sae = 24) {
  std::mt19937 rng(7);
  SaeConfig c = SmallConfig(arch, 8, d_sae);
  c.normalization = norm;
  auto sae = Sae::Create(c, SmallWeights(c, rng));
  EXPECT_TRUE(sae.ok()) << sae.status();
  return sae.ok() ? std::move(*sae) : nullptr;
}

// ---- cfg.json ----

TEST(SaeConfigTest, RejectsBadConfigsPrecisely) {
  const std::string v6 = R"("metadata": {"sae_lens_version": "6.1.0", "hook_name": "blocks.0.hook_resid_pre"})";
  EXPECT_INVALID(ParseSaeLensConfig("{not json", "cfg.json").status(), "not valid JSON");
  EXPECT_INVALID(ParseSaeLensConfig("[1]", "cfg.json").status(), "JSON object");
  EXPECT_INVALID(ParseSaeLensConfig(R"({"architecture": "batchtopk", "d_in": 4, "d_sae": 8, )" + v6 + "}", "c").status(),
                 "unsupported SAE architecture \"batchtopk\"");
  EXPECT_INVALID(ParseSaeLensConfig(R"({"d_in": 4, "d_sae": 8, )" + v6 + "}", "c").status(),
                 "no \"architecture\"");
  EXPECT_INVALID(ParseSaeLensConfig(R"({"architecture": "standard", "d_in": -4, "d_sae": 8, )" + v6 + "}", "c").status(),
                 "\"d_in\" must be a positive integer");
  EXPECT_INVALID(ParseSaeLensConfig(R"({"architecture": "standard", "d_in": 4, )" + v6 + "}", "c").status(),
                 "\"d_sae\"");
  EXPECT_INVALID(ParseSaeLensConfig(R"({"architecture": "standard", "d_in": 4, "d_sae": 8, "normalize_activations": "rms", )" + v6 + "}", "c").status(),
                 "unknown normalize_activations \"rms\"");
  EXPECT_INVALID(ParseSaeLensConfig(R"({"architecture": "standard", "d_in": 4, "d_sae": 8, "normalize_activations": "covariance_whitening", )" + v6 + "}", "c").status(),
                 "fold the whitening");
  EXPECT_INVALID(ParseSaeLensConfig(R"({"architecture": "topk", "k": 9, "d_in": 4, "d_sae": 8, )" + v6 + "}", "c").status(),
                 "topk k = 9 must be in [1, d_sae = 8]");
  EXPECT_INVALID(ParseSaeLensConfig(R"({"architecture": "standard", "d_in": 4, "d_sae": 8, "reshape_activations": "hook_z", )" + v6 + "}", "c").status(),
                 "is not a hook_z hook");
  EXPECT_INVALID(ParseSaeLensConfig(R"({"architecture": "standard", "d_in": 4, "d_sae": 8, "dtype": "int8", )" + v6 + "}", "c").status(),
                 "unknown dtype \"int8\"");
  // Errors carry the label (the path).
  EXPECT_INVALID(ParseSaeLensConfig("{", "/some/dir/cfg.json").status(), "/some/dir/cfg.json");
}

TEST(SaeConfigTest, LegacyLayoutIsConvertedAsSaeLensDoes) {
  auto c = ParseSaeLensConfig(R"({"hook_point": "blocks.2.attn.hook_z", "d_in": 64, "d_sae": 128,
      "normalize_activations": true, "activation_fn_str": "relu", "model_name": "gpt2-small",
      "hook_point_head_index": 3, "dtype": "torch.float32"})", "c");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, SaeArchitecture::kStandard);
  EXPECT_EQ(c->normalization, SaeNormalization::kExpectedAverageOnlyIn);
  EXPECT_TRUE(c->reshape_hook_z);
  EXPECT_TRUE(c->apply_b_dec_to_input);
  EXPECT_EQ(c->hook_name, "blocks.2.attn.hook_z");
  EXPECT_EQ(c->hook_head_index, 3);
  EXPECT_EQ(c->model_name, "gpt2-small");

  auto topk = ParseSaeLensConfig(R"({"hook_name": "blocks.0.hook_resid_pre", "d_in": 8, "d_sae": 16,
      "activation_fn": "topk", "activation_fn_kwargs": {"k": 3}, "sae_lens_version": "5.2.0"})", "c");
  ASSERT_TRUE(topk.ok()) << topk.status();
  EXPECT_EQ(topk->architecture, SaeArchitecture::kTopK);
  EXPECT_EQ(topk->k, 3);

  auto odd_fn = ParseSaeLensConfig(R"({"hook_point": "h", "d_in": 8, "d_sae": 16,
      "activation_fn_str": "tanh-relu"})", "c");
  ASSERT_TRUE(odd_fn.ok()) << odd_fn.status();
  ASSERT_EQ(odd_fn->warnings.size(), 1u);
  EXPECT_THAT(odd_fn->warnings[0], HasSubstr("tanh-relu"));

  // A v6 topk config without k gets TopKSAEConfig's default.
  auto default_k = ParseSaeLensConfig(R"({"architecture": "topk", "d_in": 8, "d_sae": 256,
      "metadata": {"sae_lens_version": "6.0.0"}})", "c");
  ASSERT_TRUE(default_k.ok()) << default_k.status();
  EXPECT_EQ(default_k->k, 100);
}

// ---- weights ----

TEST(SaeCreateTest, RejectsInconsistentWeights) {
  std::mt19937 rng(1);
  SaeConfig c = SmallConfig(SaeArchitecture::kJumpRelu);
  {
    SaeWeights w = SmallWeights(c, rng);
    w.W_enc = Random({c.d_sae, c.d_in}, rng);  // transposed
    EXPECT_INVALID(Sae::Create(c, std::move(w)).status(),
                   "tensor \"W_enc\" has shape [24,8] but d_in = 8, d_sae = 24 need [8,24]");
  }
  {
    SaeWeights w = SmallWeights(c, rng);
    w.threshold = Tensor();
    EXPECT_INVALID(Sae::Create(c, std::move(w)).status(),
                   "missing tensor \"threshold\": jumprelu SAEs need W_enc, W_dec, b_dec, b_enc, threshold");
  }
  {
    SaeWeights w = SmallWeights(c, rng);
    w.b_gate = Random({c.d_sae}, rng);
    EXPECT_INVALID(Sae::Create(c, std::move(w)).status(), "unexpected tensor \"b_gate\"");
  }
  {
    SaeWeights w = SmallWeights(c, rng);
    w.b_dec.data<float>()[3] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_INVALID(Sae::Create(c, std::move(w)).status(), "\"b_dec\" holds a non-finite value");
  }
  {
    SaeConfig e = c;
    e.normalization = SaeNormalization::kExpectedAverageOnlyIn;
    e.norm_scaling_factor = -2.0;
    EXPECT_INVALID(Sae::Create(e, SmallWeights(c, rng)).status(), "must be finite and positive");
  }
}

// A SAELens directory in a temp folder, with weights written by our safetensors writer.
class SaeDirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sae_bad_input_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void WriteCfg(const std::string& text) { std::ofstream(dir_ / "cfg.json") << text; }
  void WriteWeights(const std::vector<std::pair<std::string, Tensor>>& tensors,
                    SafetensorsDtype dtype = SafetensorsDtype::kF32) {
    std::vector<std::vector<std::byte>> storage;
    std::vector<TensorToWrite> out;
    for (const auto& [name, t] : tensors) {
      std::vector<std::byte> bytes(t.nbytes());
      std::memcpy(bytes.data(), t.raw_data(), bytes.size());
      if (dtype == SafetensorsDtype::kI32) {
        for (size_t i = 0; i < bytes.size(); i += 4) bytes[i + 3] = std::byte{0};
      }
      storage.push_back(std::move(bytes));
      out.push_back({name, dtype, t.shape(), storage.back()});
    }
    ASSERT_TRUE(WriteSafetensors((dir_ / "sae_weights.safetensors").string(), out).ok());
  }
  std::vector<std::pair<std::string, Tensor>> StandardTensors(int64_t d_in, int64_t d_sae) {
    std::mt19937 rng(3);
    return {{"W_enc", Random({d_in, d_sae}, rng)}, {"W_dec", Random({d_sae, d_in}, rng)},
            {"b_enc", Random({d_sae}, rng)}, {"b_dec", Random({d_in}, rng)}};
  }
  static std::string Cfg(const std::string& extra = "") {
    return R"({"architecture": "standard", "d_in": 4, "d_sae": 6, )" + extra +
           R"("metadata": {"sae_lens_version": "6.5.0", "hook_name": "blocks.0.hook_resid_pre"}})";
  }

  fs::path dir_;
};

TEST_F(SaeDirectoryTest, MissingFilesAreNotFound) {
  EXPECT_EQ(LoadSae((dir_ / "nope").string()).status().code(), absl::StatusCode::kNotFound);
  auto empty = LoadSaeLensDirectory(dir_.string());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(empty.status().message()), HasSubstr("no cfg.json"));
  WriteCfg(Cfg());
  auto no_weights = LoadSae(dir_.string());
  EXPECT_EQ(no_weights.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(no_weights.status().message()), HasSubstr("no sae_weights.safetensors"));
  std::ofstream(dir_ / "notes.txt") << "hi";
  EXPECT_INVALID(LoadSae((dir_ / "notes.txt").string()).status(), "not an SAE");
}

TEST_F(SaeDirectoryTest, WeightProblemsNameTheTensor) {
  WriteCfg(Cfg());
  auto tensors = StandardTensors(4, 6);
  WriteWeights(tensors);
  auto ok = LoadSae(dir_.string());
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->config().hook_name, "blocks.0.hook_resid_pre");

  SaeLoadOptions wrong_width;
  wrong_width.expected_d_in = 768;
  EXPECT_INVALID(LoadSae(dir_.string(), wrong_width).status(),
                 "SAE d_in = 4 does not match the hook's width 768");
  SaeLoadOptions factor;
  factor.norm_scaling_factor = 2.0;
  EXPECT_INVALID(LoadSae(dir_.string(), factor).status(), "not expected_average_only_in");

  std::mt19937 rng(5);
  auto extra = tensors;
  extra.push_back({"log_threshold", Random({6}, rng)});
  WriteWeights(extra);
  EXPECT_INVALID(LoadSae(dir_.string()).status(), "unexpected tensor \"log_threshold\"");

  auto ones = tensors;
  Tensor one = Tensor::FromHost(std::vector<float>(6, 1.0f), {6});
  ones.push_back({"scaling_factor", one});
  WriteWeights(ones);
  EXPECT_TRUE(LoadSae(dir_.string()).ok()) << "an all-ones scaling_factor is dropped, as sae_lens does";
  ones.back().second.data<float>()[2] = 1.5f;
  WriteWeights(ones);
  EXPECT_INVALID(LoadSae(dir_.string()).status(), "scaling_factor that is not all ones");

  auto wrong_shape = StandardTensors(4, 5);
  WriteWeights(wrong_shape);
  EXPECT_INVALID(LoadSae(dir_.string()).status(), "\"W_enc\" has shape [4,5]");

  WriteWeights(tensors, SafetensorsDtype::kI32);
  EXPECT_INVALID(LoadSae(dir_.string()).status(), "has dtype I32");

  // bf16 weights are widened.
  std::vector<std::vector<std::byte>> storage;
  std::vector<TensorToWrite> bf16;
  for (const auto& [name, t] : tensors) {
    std::vector<std::byte> bytes(t.numel() * 2);
    for (int64_t i = 0; i < t.numel(); ++i) {
      const uint16_t b = FloatToBFloat16(t.data<float>()[i]);
      std::memcpy(bytes.data() + 2 * i, &b, 2);
    }
    storage.push_back(std::move(bytes));
    bf16.push_back({name, SafetensorsDtype::kBF16, t.shape(), storage.back()});
  }
  ASSERT_TRUE(WriteSafetensors((dir_ / "sae_weights.safetensors").string(), bf16).ok());
  auto widened = LoadSae(dir_.string());
  ASSERT_TRUE(widened.ok()) << widened.status();
  EXPECT_EQ((*widened)->weights().W_enc.data<float>()[0],
            BFloat16ToFloat(FloatToBFloat16(tensors[0].second.data<float>()[0])));
}

TEST_F(SaeDirectoryTest, ExpectedAverageWithoutFactorWarns) {
  WriteCfg(Cfg(R"("normalize_activations": "expected_average_only_in", )"));
  WriteWeights(StandardTensors(4, 6));
  auto sae = LoadSae(dir_.string());
  ASSERT_TRUE(sae.ok()) << sae.status();
  ASSERT_EQ((*sae)->config().warnings.size(), 1u);
  EXPECT_THAT((*sae)->config().warnings[0], HasSubstr("no scaling factor"));
  std::ofstream(dir_ / "activation_scaler.json") << R"({"scaling_factor": "big"})";
  EXPECT_INVALID(LoadSae(dir_.string()).status(), "scaling_factor must be a number or null");
  std::ofstream(dir_ / "activation_scaler.json") << R"({"scaling_factor": 0.5})";
  auto folded = LoadSae(dir_.string());
  ASSERT_TRUE(folded.ok()) << folded.status();
  EXPECT_EQ((*folded)->config().norm_scaling_factor, 0.5);
  EXPECT_TRUE((*folded)->config().warnings.empty());
}

// ---- npz ----

std::vector<std::byte> ReadBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> bytes(chars.size());
  std::memcpy(bytes.data(), chars.data(), chars.size());
  return bytes;
}

std::vector<std::byte> Npy(const std::string& header_dict, size_t data_bytes, int version = 1) {
  std::string header = header_dict;
  const size_t prefix = version == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(version);
  out += '\0';
  if (version == 1) {
    out += static_cast<char>(header.size() & 0xff);
    out += static_cast<char>(header.size() >> 8);
  } else {
    for (int i = 0; i < 4; ++i) out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  }
  out += header;
  std::vector<std::byte> bytes(out.size() + data_bytes, std::byte{0});
  std::memcpy(bytes.data(), out.data(), out.size());
  return bytes;
}

TEST(NpyTest, ParsesAndRejectsHeaders) {
  auto ok = ParseNpyAsF32(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24), "a");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->shape(), (Shape{2, 3}));
  auto v2 = ParseNpyAsF32(Npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", 24, 2), "a");
  ASSERT_TRUE(v2.ok()) << v2.status();

  // Fortran order is transposed into C order.
  auto f_bytes = Npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24);
  const float column_major[6] = {0, 3, 1, 4, 2, 5};  // [[0,1,2],[3,4,5]] by columns
  std::memcpy(f_bytes.data() + f_bytes.size() - 24, column_major, 24);
  auto f = ParseNpyAsF32(f_bytes, "a");
  ASSERT_TRUE(f.ok()) << f.status();
  for (int i = 0; i < 6; ++i) EXPECT_EQ(f->data<float>()[i], i);

  EXPECT_INVALID(ParseNpyAsF32(std::vector<std::byte>(4), "x.npy").status(), "bad magic");
  EXPECT_INVALID(ParseNpyAsF32(Npy("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8), "a").status(),
                 "big-endian");
  EXPECT_INVALID(ParseNpyAsF32(Npy("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", 16), "a").status(),
                 "is not a float array");
  EXPECT_INVALID(ParseNpyAsF32(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20), "a").status(),
                 "needs 24 bytes but 20 follow");
  EXPECT_INVALID(ParseNpyAsF32(Npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8), "a").status(),
                 "only simple dtypes");
  EXPECT_INVALID(ParseNpyAsF32(Npy("{'descr': '<f4', 'shape': (2,), }", 8), "a").status(), "lacks");
  EXPECT_INVALID(ParseNpyAsF32(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 99999999999), }", 8), "a").status(),
                 "too large");
}

TEST(NpzTest, CorruptArchivesAreRejected) {
  const fs::path good = fs::path(kSaeDir) / "gemma_scope_npz" / "params.npz";
  const std::vector<std::byte> bytes = ReadBytes(good);
  ASSERT_GT(bytes.size(), 1000u);
  auto members = ParseZipDirectory(bytes, "p.npz");
  ASSERT_TRUE(members.ok()) << members.status();
  EXPECT_EQ(members->size(), 5u);

  EXPECT_INVALID(ParseZipDirectory(std::span(bytes).first(bytes.size() - 30), "p.npz").status(),
                 "p.npz");
  EXPECT_INVALID(ParseZipDirectory(std::span(bytes).first(10), "p.npz").status(), "too small");
  std::vector<std::byte> junk(4096, std::byte{0x41});
  EXPECT_INVALID(ParseZipDirectory(junk, "p.npz").status(), "not a zip file");

  // A flipped byte in a member's data fails its CRC.
  std::vector<std::byte> flipped = bytes;
  const ZipMember& m = (*members)[0];
  flipped[m.data_offset + m.compressed_size / 2] ^= std::byte{0x10};
  EXPECT_INVALID(ReadZipMember(flipped, m, "p.npz").status(), "CRC-32 mismatch");

  const fs::path tmp = fs::temp_directory_path() / ("corrupt_" + std::to_string(::getpid()) + ".npz");
  std::ofstream(tmp, std::ios::binary).write(reinterpret_cast<const char*>(flipped.data()), flipped.size());
  EXPECT_INVALID(LoadSae(tmp.string()).status(), "CRC-32 mismatch");
  fs::remove(tmp);

  // Deflated members: corrupt compressed data fails to inflate or its CRC.
  const std::vector<std::byte> deflated =
      ReadBytes(fs::path(kSaeDir) / "gemma_scope_npz_deflate" / "params.npz");
  auto dm = ParseZipDirectory(deflated, "d.npz");
  ASSERT_TRUE(dm.ok()) << dm.status();
  EXPECT_EQ((*dm)[0].method, 8);
  std::vector<std::byte> bad = deflated;
  for (uint64_t i = 0; i < 8; ++i) bad[(*dm)[0].data_offset + 4 + i] ^= std::byte{0x5a};
  EXPECT_INVALID(ReadZipMember(bad, (*dm)[0], "d.npz").status(), "d.npz member");
  ZipMember lying = (*dm)[0];
  lying.uncompressed_size = uint64_t{1} << 40;
  EXPECT_INVALID(ReadZipMember(deflated, lying, "d.npz").status(), "claims");
}

TEST(NpzTest, GemmaScopeNeedsItsArrays) {
  EXPECT_EQ(LoadGemmaScopeNpz("/nonexistent/params.npz").status().code(), absl::StatusCode::kNotFound);
  SaeLoadOptions factor;
  factor.norm_scaling_factor = 3.0;
  EXPECT_INVALID(LoadGemmaScopeNpz(kSaeDir + "/gemma_scope_npz/params.npz", factor).status(),
                 "no activation normalisation");
  SaeLoadOptions width;
  width.expected_d_in = 2304;
  EXPECT_INVALID(LoadGemmaScopeNpz(kSaeDir + "/gemma_scope_npz/params.npz", width).status(),
                 "SAE d_in = 32 does not match the hook's width 2304");
}

// ---- requests ----

TEST(SaeRequestTest, InputShapesAndTypes) {
  auto sae = SmallSae(SaeArchitecture::kStandard);
  std::mt19937 rng(2);
  EXPECT_INVALID(sae->Encode(Random({3, 9}, rng)).status(),
                 "SAE input has shape [3,9] but this SAE reads d_in = 8 values per token");
  EXPECT_INVALID(sae->Encode(Random({3, 2, 4}, rng)).status(), "[3,2,4]");  // not a hook_z SAE
  EXPECT_INVALID(sae->Encode(Tensor::FromHost(std::vector<int32_t>(8, 1), {1, 8})).status(),
                 "host f32 tensor");
  EXPECT_INVALID(sae->Encode(Tensor()).status(), "undefined");
  EXPECT_INVALID(sae->Decode(Random({2, 23}, rng)).status(), "[..., d_sae = 24]");
  EXPECT_INVALID(sae->EncodeSparse(Random({2, 8}, rng), {.top_k = -1}).status(), "top_k = -1");

  // A single token [d_in] and an empty batch [0, d_in] are fine.
  auto one = sae->Encode(Random({8}, rng));
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->shape(), (Shape{24}));
  SpliceOptions with_error;
  with_error.use_error_term = true;
  auto none = sae->Splice(Tensor::EmptyHost(DType::kF32, {0, 5, 8}), with_error);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->output.shape(), (Shape{0, 5, 8}));
  auto none_sparse = sae->EncodeSparse(Tensor::EmptyHost(DType::kF32, {0, 8}));
  ASSERT_TRUE(none_sparse.ok());
  EXPECT_EQ(none_sparse->rows(), 0);
}

TEST(SaeRequestTest, HookZShapes) {
  std::mt19937 rng(4);
  SaeConfig c = SmallConfig(SaeArchitecture::kStandard);
  c.reshape_hook_z = true;
  c.hook_name = "blocks.0.attn.hook_z";
  auto sae = Sae::Create(c, SmallWeights(c, rng));
  ASSERT_TRUE(sae.ok());
  Tensor z = Random({2, 3, 2, 4}, rng);  // [batch, pos, n_heads, d_head], 2 * 4 = d_in
  auto acts = (*sae)->Encode(z);
  ASSERT_TRUE(acts.ok()) << acts.status();
  EXPECT_EQ(acts->shape(), (Shape{2, 3, 24}));
  auto recon = (*sae)->Reconstruct(z);
  ASSERT_TRUE(recon.ok());
  EXPECT_EQ(recon->shape(), z.shape());
  EXPECT_INVALID((*sae)->Encode(Random({2, 3, 3, 4}, rng)).status(),
                 "[..., n_heads, d_head] with n_heads * d_head = d_in");
}

TEST(SaeRequestTest, RuntimeNormNeedsItsState) {
  for (SaeNormalization norm : {SaeNormalization::kLayerNorm, SaeNormalization::kConstantNormRescale}) {
    auto sae = SmallSae(SaeArchitecture::kStandard, norm);
    std::mt19937 rng(8);
    Tensor x = Random({5, 8}, rng, 2.0f, 1.0f);
    SaeNormState state;
    auto acts = sae->Encode(x, &state);
    ASSERT_TRUE(acts.ok());
    EXPECT_INVALID(sae->Decode(*acts).status(), "needs the per-token norm state");
    SaeNormState short_state = state;
    short_state.scale.pop_back();
    EXPECT_INVALID(sae->Decode(*acts, &short_state).status(), "holds 4 tokens but the activations have 5");
    auto decoded = sae->Decode(*acts, &state);
    ASSERT_TRUE(decoded.ok());
    auto recon = sae->Reconstruct(x);
    ASSERT_TRUE(recon.ok());
    for (int i = 0; i < 40; ++i) EXPECT_NEAR(decoded->data<float>()[i], recon->data<float>()[i], 1e-5);
  }
  // SAEs without a runtime norm ignore the state.
  auto plain = SmallSae(SaeArchitecture::kGated);
  std::mt19937 rng(9);
  auto acts = plain->Encode(Random({2, 8}, rng));
  ASSERT_TRUE(acts.ok());
  EXPECT_TRUE(plain->Decode(*acts).ok());
}

TEST(SaeRequestTest, MalformedSparseActs) {
  auto sae = SmallSae(SaeArchitecture::kTopK);
  SparseActs acts;
  acts.leading_shape = {2};
  acts.d_sae = 24;
  acts.row_offsets = {0, 1, 2};
  acts.indices = {3, 24};
  acts.values = {1.0f, 2.0f};
  EXPECT_INVALID(sae->DecodeSparse(acts).status(), "feature index 24 is out of range [0, 24)");
  acts.indices = {3, 4};
  acts.row_offsets = {0, 2, 1};
  EXPECT_INVALID(sae->DecodeSparse(acts).status(), "malformed sparse activations");
  acts.row_offsets = {0, 1, 2};
  acts.d_sae = 12;
  EXPECT_INVALID(sae->DecodeSparse(acts).status(), "over d_sae = 12 features but this SAE has 24");
  acts.d_sae = 24;
  acts.leading_shape = {3};
  EXPECT_INVALID(sae->DecodeSparse(acts).status(), "malformed sparse activations");
  acts.leading_shape = {2};
  EXPECT_TRUE(sae->DecodeSparse(acts).ok());
}

TEST(SaeRequestTest, BadEditsAndSteering) {
  auto sae = SmallSae(SaeArchitecture::kJumpRelu);
  std::mt19937 rng(3);
  Tensor x = Random({2, 3, 8}, rng);
  auto splice = [&](FeatureEdit edit) {
    SpliceOptions o;
    o.edits = {std::move(edit)};
    return sae->Splice(x, o).status();
  };
  EXPECT_INVALID(splice({FeatureEditKind::kZero, {}, 0, {}}), "feature edit 0: names no features");
  EXPECT_INVALID(splice({FeatureEditKind::kClamp, {24}, 1, {}}), "feature 24 is out of range [0, 24)");
  EXPECT_INVALID(splice({FeatureEditKind::kScale, {1}, NAN, {}}), "value is not finite");
  EXPECT_INVALID(splice({FeatureEditKind::kAdd, {1}, 1, {6}}), "token 6 is out of range [0, 6)");
  EXPECT_INVALID(splice({FeatureEditKind::kAdd, {1}, 1, {-1}}), "token -1 is out of range");
  EXPECT_INVALID(sae->DecoderDirection(-1).status(), "feature -1 is out of range");
  EXPECT_INVALID(sae->DecoderDirection(2, INFINITY).status(), "not finite");

  // Duplicates edit once.
  SpliceOptions once, twice;
  once.edits = {{FeatureEditKind::kAdd, {5}, 1.0f, {2}}};
  twice.edits = {{FeatureEditKind::kAdd, {5, 5}, 1.0f, {2, 2}}};
  once.capture[static_cast<int>(SaeHook::kActsPost)] = true;
  twice.capture = once.capture;
  auto a = sae->Splice(x, once), b = sae->Splice(x, twice);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->Captured(SaeHook::kActsPost).data<float>()[2 * 24 + 5],
            b->Captured(SaeHook::kActsPost).data<float>()[2 * 24 + 5]);
}

// Many tokens: several tiles, dense and sparse paths, consistent with one token at a time.
// (One token at a time runs a different GEMM shape, so values agree to rounding; standard and
// topk SAEs are continuous or have wide top-k gaps, so rounding cannot flip a feature's firing.)
TEST(SaeTilingTest, ManyTokensMatchOneByOne) {
  for (SaeArchitecture arch : {SaeArchitecture::kStandard, SaeArchitecture::kTopK}) {
    // d_sae 16384: tiles of 512 tokens, so 1300 tokens take three.
    auto sae = SmallSae(arch, SaeNormalization::kLayerNorm, 16384);
    std::mt19937 rng(11);
    Tensor x = Random({1300, 8}, rng, 1.5f, 0.5f);
    auto acts = sae->Encode(x);
    ASSERT_TRUE(acts.ok());
    auto sparse = sae->EncodeSparse(x);
    ASSERT_TRUE(sparse.ok());
    auto recon = sae->Reconstruct(x);
    ASSERT_TRUE(recon.ok());
    // Same tiles, same GEMMs: the sparse encoding is exactly the dense one.
    for (int64_t t = 0; t < 1300; ++t) {
      int64_t e = sparse->row_offsets[t];
      for (int64_t f = 0; f < 16384; ++f) {
        const float v = acts->data<float>()[t * 16384 + f];
        if (v == 0.0f) continue;
        ASSERT_LT(e, sparse->row_offsets[t + 1]);
        ASSERT_EQ(sparse->indices[e], f);
        ASSERT_EQ(sparse->values[e], v);
        ++e;
      }
      ASSERT_EQ(e, sparse->row_offsets[t + 1]) << "token " << t;
    }
    for (int64_t t : {0, 511, 512, 1023, 1024, 1299}) {
      auto one = sae->Encode(x.Slice0(t, t + 1));
      ASSERT_TRUE(one.ok());
      for (int64_t f = 0; f < 16384; ++f) {
        ASSERT_NEAR(acts->data<float>()[t * 16384 + f], one->data<float>()[f], 1e-4)
            << "token " << t << " feature " << f;
      }
      auto one_recon = sae->Reconstruct(x.Slice0(t, t + 1));
      ASSERT_TRUE(one_recon.ok());
      for (int j = 0; j < 8; ++j) {
        EXPECT_NEAR(recon->data<float>()[t * 8 + j], one_recon->data<float>()[j], 1e-3) << t;
      }
    }
  }
}

}  // namespace
}  // namespace glassbox
