// StreamLimit: at most max_open slots at once, the next refused with a message that names the
// flag, a slot given back when destroyed or moved from.
#include "server/service/stream_limit.h"

#include <optional>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glassbox {
namespace {

using ::testing::HasSubstr;

TEST(StreamLimit, RefusesPastTheBoundAndFreesOnRelease) {
  StreamLimit limit(2);
  std::vector<StreamLimit::Slot> held;
  for (int i = 0; i < 2; ++i) {
    auto slot = limit.Acquire();
    ASSERT_TRUE(slot.ok()) << slot.status();
    held.push_back(*std::move(slot));
  }
  EXPECT_EQ(limit.open(), 2);
  auto refused = limit.Acquire();
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(),
              HasSubstr("2 streams (Run, Generate) are open; this server allows 2 at once "
                        "(--max_concurrent_streams)"));
  EXPECT_EQ(limit.open(), 2);  // a refusal holds nothing
  held.pop_back();
  EXPECT_EQ(limit.open(), 1);
  EXPECT_TRUE(limit.Acquire().ok());  // a temporary: acquired and given back at once
  EXPECT_EQ(limit.open(), 1);
}

TEST(StreamLimit, AMovedSlotCountsOnce) {
  StreamLimit limit(1);
  std::optional<StreamLimit::Slot> outer;
  {
    auto slot = limit.Acquire();
    ASSERT_TRUE(slot.ok());
    outer.emplace(*std::move(slot));
  }  // the moved-from StatusOr's slot gives nothing back
  EXPECT_EQ(limit.open(), 1);
  EXPECT_FALSE(limit.Acquire().ok());
  outer.reset();
  EXPECT_EQ(limit.open(), 0);
}

}  // namespace
}  // namespace glassbox
