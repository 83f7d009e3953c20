// HostCaptures: what a pass captures, in capture order, found by hook id and name, shared with
// the pass or copied.
#include "server/engine/host_captures.h"

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/hook_plan.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::glassbox::testing::FixturePath;

class HostCapturesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = Transformer::Load(FixturePath("models/tiny-gpt2"), std::make_shared<CpuBackend>());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
  }

  // Captures the hooks over a fixed batch of 2 x 5 tokens.
  void Run(const std::vector<std::string>& hooks, HostCaptures& sink) {
    HookPlan plan(model_->hooks());
    for (const std::string& h : hooks) ASSERT_TRUE(plan.Capture(h).ok()) << h;
    const std::vector<int32_t> ids = {1, 7, 3, 9, 2, 4, 4, 8, 0, 5};
    auto out = model_->Forward({.tokens = Tensor::FromHost(ids, {2, 5})}, plan, &sink,
                               {.logits = LogitsMode::kNone});
    ASSERT_TRUE(out.ok()) << out.status();
  }

  std::unique_ptr<Transformer> model_;
};

TEST_F(HostCapturesTest, ValuesComeInForwardOrderAndAreFoundByIdAndName) {
  HostCaptures sink(model_->backend());
  Run({"blocks.1.hook_resid_post", "hook_embed", "blocks.0.mlp.hook_post"}, sink);
  ASSERT_EQ(sink.values().size(), 3u);
  EXPECT_EQ(sink.values()[0].info.name, "hook_embed");
  EXPECT_EQ(sink.values()[1].info.name, "blocks.0.mlp.hook_post");
  EXPECT_EQ(sink.values()[2].info.name, "blocks.1.hook_resid_post");
  for (const HostCaptures::Value& v : sink.values()) {
    EXPECT_EQ(v.value.device(), Device::kCpu);
    EXPECT_EQ(v.value.dtype(), DType::kF32);
    EXPECT_EQ(v.value.shape(), v.info.ShapeFor(2, 5)) << v.info.name;
    EXPECT_EQ(sink.at(v.id).raw_data(), v.value.raw_data());
    EXPECT_EQ(sink.at(v.info.name).raw_data(), v.value.raw_data());
  }
  EXPECT_TRUE(sink.has("hook_embed"));
  EXPECT_FALSE(sink.has("blocks.1.mlp.hook_post"));
  EXPECT_FALSE(sink.at("blocks.1.mlp.hook_post").defined());
  EXPECT_FALSE(sink.at(HookId{-1}).defined());
  EXPECT_EQ(sink.TakeValues().size(), 3u);
}

TEST_F(HostCapturesTest, CopiesAreEqualAndOwnTheirMemory) {
  HostCaptures shared(model_->backend());
  HostCaptures copied(model_->backend(), /*copy_host_values=*/true);
  Run({"blocks.0.hook_resid_mid"}, shared);
  Run({"blocks.0.hook_resid_mid"}, copied);
  const Tensor& a = shared.at("blocks.0.hook_resid_mid");
  const Tensor& b = copied.at("blocks.0.hook_resid_mid");
  ASSERT_EQ(a.numel(), b.numel());
  for (int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(a.data<float>()[i], b.data<float>()[i]) << i;
  // A copy of a value the pass handed over is a buffer of its own.
  HostCaptures sink(model_->backend(), /*copy_host_values=*/true);
  const Tensor value = a;
  ASSERT_TRUE(sink.OnCapture(7, shared.values()[0].info, value).ok());
  EXPECT_NE(sink.at(HookId{7}).raw_data(), value.raw_data());
  HostCaptures keep(model_->backend());
  ASSERT_TRUE(keep.OnCapture(7, shared.values()[0].info, value).ok());
  EXPECT_EQ(keep.at(HookId{7}).raw_data(), value.raw_data());
}

}  // namespace
}  // namespace glassbox
