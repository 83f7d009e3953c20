// The --intervene SPEC syntax (client/cpp/intervention_spec.h): what each spec turns into, every
// usage error, and reading values from .safetensors and .npy files.
#include "client/cpp/intervention_spec.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glassbox::cli {
namespace {

namespace pb = ::glassbox::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A loader that serves one fake file and records what it was asked for.
struct FakeLoader {
  std::string path, name;
  absl::StatusOr<std::vector<float>> operator()(const std::string& p, const std::string& n) {
    path = p;
    name = n;
    if (p == "missing.npy") return absl::NotFoundError("cannot open missing.npy");
    return std::vector<float>{1.5f, -2.0f, 0.25f};
  }
};

absl::StatusOr<pb::Intervention> Parse(absl::string_view spec) {
  FakeLoader loader;
  return ParseInterventionSpec(spec, std::ref(loader));
}

void ExpectSpecError(absl::string_view spec, const std::string& text) {
  absl::StatusOr<pb::Intervention> in = Parse(spec);
  ASSERT_FALSE(in.ok()) << "accepted: " << spec;
  EXPECT_EQ(in.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(in.status().message()), HasSubstr(text)) << spec;
  EXPECT_THAT(std::string(in.status().message()), HasSubstr(std::string(spec)));
}

TEST(InterventionSpecTest, ZeroAHead) {
  absl::StatusOr<pb::Intervention> in = Parse("zero:blocks.0.attn.hook_z:heads=1");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->kind(), pb::INTERVENTION_ZERO);
  EXPECT_EQ(in->hook(), "blocks.0.attn.hook_z");
  EXPECT_THAT(in->heads(), ElementsAre(1));
  EXPECT_TRUE(in->rows().empty());
  EXPECT_TRUE(in->positions().empty());
  EXPECT_TRUE(in->dims().empty());
  EXPECT_FALSE(in->has_coefficient());
  EXPECT_TRUE(in->value().empty());
}

TEST(InterventionSpecTest, EveryKindAndSelector) {
  absl::StatusOr<pb::Intervention> in =
      Parse("add:blocks.6.hook_resid_pre:positions=-1,0:coef=4:value=0.1,-0.2, 3e-1");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->kind(), pb::INTERVENTION_ADD);
  EXPECT_THAT(in->positions(), ElementsAre(-1, 0));
  ASSERT_TRUE(in->has_coefficient());
  EXPECT_EQ(in->coefficient(), 4.0f);
  EXPECT_THAT(in->value(), ElementsAre(0.1f, -0.2f, 0.3f));

  in = Parse("project_out:blocks.*.hook_resid_pre:value=1,0,2");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->kind(), pb::INTERVENTION_PROJECT_OUT);
  EXPECT_THAT(in->value(), ElementsAre(1.0f, 0.0f, 2.0f));
  EXPECT_FALSE(in->has_coefficient());
  EXPECT_FALSE(Parse("project_out:blocks.0.hook_resid_pre").ok());  // needs the direction
  in = Parse("orthogonal_decomp:blocks.2.hook_resid_post:value=1,2:coef=-0.5");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->kind(), pb::INTERVENTION_ORTHOGONAL_DECOMP);
  EXPECT_FLOAT_EQ(in->coefficient(), -0.5f);
  in = Parse("projection_cap:blocks.2.hook_resid_post:value=1,2:max=3.5");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->kind(), pb::INTERVENTION_PROJECTION_CAP);
  EXPECT_FALSE(in->has_projection_min());
  EXPECT_FLOAT_EQ(in->projection_max(), 3.5f);
  EXPECT_EQ(FormatIntervention(*in, 4), "projection_cap:blocks.2.hook_resid_post:max=3.5:value=1,2");

  in = Parse("scale:blocks.1.attn.hook_v:heads=0:coef=0.5");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->kind(), pb::INTERVENTION_SCALE);
  EXPECT_EQ(in->coefficient(), 0.5f);

  in = Parse("set:blocks.0.hook_mlp_out:rows=1:value=1,2");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->kind(), pb::INTERVENTION_SET);
  EXPECT_THAT(in->rows(), ElementsAre(1));
  EXPECT_THAT(in->value(), ElementsAre(1.0f, 2.0f));

  in = Parse("mean_batch:blocks.0.mlp.hook_post:dims=3,7,11");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->kind(), pb::INTERVENTION_MEAN_BATCH);
  EXPECT_THAT(in->dims(), ElementsAre(3, 7, 11));

  in = Parse("MEAN_POS:blocks.*.hook_mlp_out:row=0");  // kind and keys are case-insensitive
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->kind(), pb::INTERVENTION_MEAN_POS);
  EXPECT_EQ(in->hook(), "blocks.*.hook_mlp_out");
  EXPECT_THAT(in->rows(), ElementsAre(0));

  in = Parse("patch_row:blocks.1.hook_attn_out:pos=4:source_rows=2,0,1");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->kind(), pb::INTERVENTION_PATCH_ROW);
  EXPECT_THAT(in->positions(), ElementsAre(4));
  EXPECT_THAT(in->source_rows(), ElementsAre(2, 0, 1));

  in = Parse("patch_cached:blocks.0.hook_resid_pre:pos=2:from=clean.v1");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->kind(), pb::INTERVENTION_PATCH_CACHED);
  EXPECT_EQ(in->cached_run(), "clean.v1");
  EXPECT_THAT(in->positions(), ElementsAre(2));
  EXPECT_EQ(in->source_rows_size(), 0);

  in = Parse("add:hook_embed:coefficient=-1:value=2");  // add's coef may be negative
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->coefficient(), -1.0f);

  // Key positions of a pattern count from the end like positions do.
  in = Parse("zero:blocks.0.attn.hook_pattern:positions=-1:heads=2:dims=0,-2");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_THAT(in->dims(), ElementsAre(0, -2));
}

TEST(InterventionSpecTest, ValuesFromFiles) {
  FakeLoader loader;
  absl::StatusOr<pb::Intervention> in =
      ParseInterventionSpec("add:blocks.0.hook_resid_pre:value=@dir/steer.safetensors#refusal",
                            std::ref(loader));
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(loader.path, "dir/steer.safetensors");
  EXPECT_EQ(loader.name, "refusal");
  EXPECT_THAT(in->value(), ElementsAre(1.5f, -2.0f, 0.25f));

  in = ParseInterventionSpec("set:hook_embed:value=@v.npy", std::ref(loader));
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(loader.path, "v.npy");
  EXPECT_EQ(loader.name, "");

  // A '#' that does not follow .safetensors belongs to the file name.
  in = ParseInterventionSpec("set:hook_embed:value=@run#3.npy", std::ref(loader));
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(loader.path, "run#3.npy");

  ExpectSpecError("set:hook_embed:value=@missing.npy", "cannot open missing.npy");
  ExpectSpecError("set:hook_embed:value=@x.safetensors#", "empty NAME");
  ExpectSpecError("set:hook_embed:value=@", "needs a file name");
}

TEST(InterventionSpecTest, UsageErrors) {
  ExpectSpecError("zero", "expected KIND:HOOK");
  ExpectSpecError("zero:", "expected KIND:HOOK");
  ExpectSpecError("ablate:blocks.0.hook_z", "unknown kind \"ablate\"");
  ExpectSpecError("zero:blocks.0.attn.hook_z:heads", "\"heads\" is not KEY=VALUE");
  ExpectSpecError("zero:blocks.0.attn.hook_z:neurons=1", "unknown key \"neurons\"");
  ExpectSpecError("zero:blocks.0.attn.hook_z:heads=1:heads=2", "heads= given twice");
  ExpectSpecError("zero:blocks.0.attn.hook_z:heads=", "needs a list of integers");
  ExpectSpecError("zero:blocks.0.attn.hook_z:heads=x", "\"x\" is not an integer");
  ExpectSpecError("zero:blocks.0.attn.hook_z:heads=-1", "heads: -1 is negative");
  ExpectSpecError("zero:blocks.0.attn.hook_z:rows=-1", "rows: -1 is negative");
  ExpectSpecError("zero:blocks.0.attn.hook_z:coef=2", "coef= applies to scale, add, project_out");
  ExpectSpecError("scale:blocks.0.attn.hook_z", "scale needs coef=X");
  ExpectSpecError("scale:blocks.0.attn.hook_z:coef=nan", "not a finite number");
  ExpectSpecError("add:blocks.0.hook_resid_pre:coef=2", "add needs value=V");
  ExpectSpecError("set:blocks.0.hook_resid_pre", "set needs value=V");
  ExpectSpecError("add:blocks.0.hook_resid_pre:value=1,,2", "is not a finite number");
  ExpectSpecError("add:blocks.0.hook_resid_pre:value=", "needs numbers or @FILE");
  ExpectSpecError("zero:blocks.0.hook_resid_pre:value=1", "value= applies to add, set and the directional");
  ExpectSpecError("orthogonal_decomp:blocks.0.hook_resid_pre:value=1", "orthogonal_decomp needs coef=X");
  ExpectSpecError("projection_cap:blocks.0.hook_resid_pre:value=1", "projection_cap needs min=X, max=X");
  ExpectSpecError("add:blocks.0.hook_resid_pre:value=1:max=2", "min= and max= apply to projection_cap");
  ExpectSpecError("patch_row:blocks.0.hook_resid_pre", "patch_row needs source_rows=");
  ExpectSpecError("zero:blocks.0.hook_resid_pre:source_rows=1", "applies to patch_row");
  ExpectSpecError("patch_cached:blocks.0.hook_resid_pre", "patch_cached needs from=NAME");
  ExpectSpecError("patch_row:blocks.0.hook_resid_pre:source_rows=0:from=x",
                  "from= applies to patch_cached");
  ExpectSpecError("patch_cached:blocks.0.hook_resid_pre:from=", "from= needs");
}

TEST(InterventionSpecTest, FormatRoundTrips) {
  for (std::string spec :
       {"zero:blocks.0.attn.hook_z:heads=1",
        "add:blocks.6.hook_resid_pre:positions=-1:coef=4:value=0.5,-1",
        "patch_row:blocks.1.hook_attn_out:rows=0,1:positions=4:source_rows=1,0",
        "mean_batch:blocks.0.mlp.hook_post:dims=3,7",
        "patch_cached:blocks.0.attn.hook_z:heads=1:source_rows=0,0:from=clean"}) {
    absl::StatusOr<pb::Intervention> in = Parse(spec);
    ASSERT_TRUE(in.ok()) << in.status();
    EXPECT_EQ(FormatIntervention(*in), spec);
  }
  absl::StatusOr<pb::Intervention> in = Parse("set:hook_embed:value=1,2,3,4,5,6");
  ASSERT_TRUE(in.ok());
  EXPECT_EQ(FormatIntervention(*in, 2), "set:hook_embed:value=1,2,... (6 values)");
}

class ValueFileTest : public ::testing::Test {
 protected:
  std::string TempPath(const std::string& name) {
    return (std::filesystem::path(::testing::TempDir()) /
            absl::StrCat("value_file_test_", getpid(), "_", name))
        .string();
  }
  void WriteBytes(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  // A version 1.0 .npy image: magic, version, header length, header padded to 64 bytes.
  std::string Npy(const std::string& descr, const std::string& shape, const std::string& data,
                  const std::string& fortran = "False") {
    std::string header = absl::StrCat("{'descr': '", descr, "', 'fortran_order': ", fortran,
                                      ", 'shape': ", shape, ", }");
    while ((10 + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
    std::string bytes = "\x93NUMPY";
    bytes += '\x01';
    bytes += '\x00';
    bytes += static_cast<char>(header.size() & 0xff);
    bytes += static_cast<char>(header.size() >> 8);
    return bytes + header + data;
  }
  template <typename T>
  std::string Raw(const std::vector<T>& values) {
    std::string bytes(values.size() * sizeof(T), '\0');
    std::memcpy(bytes.data(), values.data(), bytes.size());
    return bytes;
  }
};

TEST_F(ValueFileTest, Safetensors) {
  const std::string path = TempPath("v.safetensors");
  const std::vector<float> a = {1, 2, 3, 4};
  const std::vector<uint16_t> b = {0x3c00, 0xc000};  // f16 1.0, -2.0
  const std::vector<double> c = {0.5, 0.25};
  const std::vector<int32_t> ids = {1, 2};
  const std::vector<TensorToWrite> tensors = {
      {.name = "a", .dtype = SafetensorsDtype::kF32, .shape = {2, 2},
       .bytes = std::as_bytes(std::span<const float>(a))},
      {.name = "b", .dtype = SafetensorsDtype::kF16, .shape = {2},
       .bytes = std::as_bytes(std::span<const uint16_t>(b))},
      {.name = "c", .dtype = SafetensorsDtype::kF64, .shape = {2},
       .bytes = std::as_bytes(std::span<const double>(c))},
      {.name = "ids", .dtype = SafetensorsDtype::kI32, .shape = {2},
       .bytes = std::as_bytes(std::span<const int32_t>(ids))}};
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());

  absl::StatusOr<std::vector<float>> values = LoadValueFile(path, "a");
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_THAT(*values, ElementsAre(1, 2, 3, 4));
  values = LoadValueFile(path, "b");
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_THAT(*values, ElementsAre(1.0f, -2.0f));
  values = LoadValueFile(path, "c");
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_THAT(*values, ElementsAre(0.5f, 0.25f));

  values = LoadValueFile(path, "ids");
  EXPECT_FALSE(values.ok());
  EXPECT_THAT(std::string(values.status().message()), HasSubstr("must be F32, F16, BF16 or F64"));
  values = LoadValueFile(path, "nope");
  EXPECT_FALSE(values.ok());
  EXPECT_THAT(std::string(values.status().message()), HasSubstr("has no tensor \"nope\""));
  values = LoadValueFile(path, "");
  EXPECT_FALSE(values.ok());
  EXPECT_THAT(std::string(values.status().message()), HasSubstr("holds 4 tensors; name one"));

  const std::string single = TempPath("single.safetensors");
  ASSERT_TRUE(WriteSafetensors(single, std::span<const TensorToWrite>(tensors).first(1)).ok());
  values = LoadValueFile(single, "");
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ(values->size(), 4u);

  // Through the spec parser with the real loader.
  absl::StatusOr<pb::Intervention> in =
      ParseInterventionSpec(absl::StrCat("add:hook_embed:value=@", path, "#b"), &LoadValueFile);
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_THAT(in->value(), ElementsAre(1.0f, -2.0f));
  std::filesystem::remove(path);
  std::filesystem::remove(single);
}

TEST_F(ValueFileTest, Npy) {
  const std::string f4 = TempPath("f4.npy");
  WriteBytes(f4, Npy("<f4", "(2, 2)", Raw<float>({1, 2, 3, 4})));
  absl::StatusOr<std::vector<float>> values = LoadValueFile(f4, "");
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_THAT(*values, ElementsAre(1, 2, 3, 4));

  const std::string f8 = TempPath("f8.npy");
  WriteBytes(f8, Npy("<f8", "(3,)", Raw<double>({0.5, -1, 8})));
  values = LoadValueFile(f8, "");
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_THAT(*values, ElementsAre(0.5f, -1.0f, 8.0f));

  const std::string f2 = TempPath("f2.npy");
  WriteBytes(f2, Npy("<f2", "(1,)", Raw<uint16_t>({0x3c00})));
  values = LoadValueFile(f2, "");
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_THAT(*values, ElementsAre(1.0f));

  const std::string fortran = TempPath("fortran.npy");
  WriteBytes(fortran, Npy("<f4", "(2, 2)", Raw<float>({1, 2, 3, 4}), "True"));
  EXPECT_THAT(std::string(LoadValueFile(fortran, "").status().message()),
              HasSubstr("fortran_order"));
  const std::string ints = TempPath("ints.npy");
  WriteBytes(ints, Npy("<i8", "(1,)", Raw<int64_t>({1})));
  EXPECT_THAT(std::string(LoadValueFile(ints, "").status().message()), HasSubstr("dtype <i8"));
  const std::string short_data = TempPath("short.npy");
  WriteBytes(short_data, Npy("<f4", "(3,)", Raw<float>({1, 2})));
  EXPECT_THAT(std::string(LoadValueFile(short_data, "").status().message()),
              HasSubstr("8 bytes of data for 3 elements"));
  const std::string junk = TempPath("junk.npy");
  WriteBytes(junk, "not numpy at all");
  EXPECT_THAT(std::string(LoadValueFile(junk, "").status().message()), HasSubstr("NUMPY magic"));
  EXPECT_FALSE(LoadValueFile(TempPath("absent.npy"), "").ok());
  EXPECT_THAT(std::string(LoadValueFile(f4, "x").status().message()), HasSubstr("drop #x"));
  EXPECT_THAT(std::string(LoadValueFile(TempPath("v.txt"), "").status().message()),
              HasSubstr("must end in .safetensors or .npy"));
  for (const std::string& p : {f4, f8, f2, fortran, ints, short_data, junk}) {
    std::filesystem::remove(p);
  }
}

}  // namespace
}  // namespace glassbox::cli
