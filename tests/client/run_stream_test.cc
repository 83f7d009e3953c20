// The Run stream assembler, fed hand-built message sequences: well-formed streams assemble into
// the right tensors, and every protocol violation is an INTERNAL error that says what happened.
#include "client/cpp/run_stream.h"

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glassbox::client {
namespace {

using glassbox::v1::RunResponse;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct TensorSpec {
  int id;
  std::string name;
  std::vector<int64_t> shape;
  glassbox::v1::DType dtype = glassbox::v1::DTYPE_F32;
  int64_t nbytes = -1;  // -1: computed from shape and dtype
};

RunResponse Header(const std::vector<TensorSpec>& specs) {
  RunResponse response;
  glassbox::v1::Header& header = *response.mutable_header();
  header.set_model("m");
  header.add_sequence_lengths(2);
  for (const TensorSpec& spec : specs) {
    glassbox::v1::CapturedTensorInfo* info = header.add_tensors();
    info->set_id(spec.id);
    info->set_name(spec.name);
    info->mutable_shape()->Add(spec.shape.begin(), spec.shape.end());
    info->set_dtype(spec.dtype);
    int64_t count = 1;
    for (int64_t d : spec.shape) count *= d;
    const int64_t size =
        spec.dtype == glassbox::v1::DTYPE_F32 || spec.dtype == glassbox::v1::DTYPE_I32 ? 4 : 2;
    info->set_nbytes(spec.nbytes >= 0 ? spec.nbytes : count * size);
  }
  return response;
}

RunResponse Chunk(int id, int64_t offset, std::string data, bool last) {
  RunResponse response;
  glassbox::v1::TensorChunk& chunk = *response.mutable_chunk();
  chunk.set_capture_id(id);
  chunk.set_offset(offset);
  chunk.set_data(std::move(data));
  chunk.set_last(last);
  return response;
}

RunResponse Summary() {
  RunResponse response;
  response.mutable_summary()->set_bytes_sent(0);
  response.mutable_summary()->mutable_timings()->set_total_seconds(1.0);
  return response;
}

std::string Floats(std::vector<float> values) {
  std::string bytes(values.size() * 4, '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

// Feeds the messages; returns the first error (from Add or Finish).
absl::Status Feed(std::vector<RunResponse> messages) {
  return AssembleRun(std::move(messages)).status();
}

void ExpectViolation(std::vector<RunResponse> messages, const std::string& text) {
  absl::Status status = Feed(std::move(messages));
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("malformed Run stream"));
  EXPECT_THAT(std::string(status.message()), HasSubstr(text));
}

TEST(RunStreamTest, AssemblesChunkedTensorsInStreamOrder) {
  const std::string a = Floats({1, 2, 3, 4, 5, 6});
  const std::string b = Floats({-1, -2});
  absl::StatusOr<RunResult> result = AssembleRun({
      Header({{3, "blocks.0.hook_resid_post", {1, 2, 3}}, {9, "logits", {1, 2}}}),
      Chunk(3, 0, a.substr(0, 10), false),
      Chunk(3, 10, a.substr(10, 10), false),
      Chunk(3, 20, a.substr(20), true),
      Chunk(9, 0, b, true),
      Summary(),
  });
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->tensors.size(), 2u);
  const ReceivedTensor& first = result->tensors[0];
  EXPECT_EQ(first.name, "blocks.0.hook_resid_post");
  EXPECT_THAT(first.shape, ElementsAre(1, 2, 3));
  EXPECT_EQ(first.dtype, glassbox::v1::DTYPE_F32);
  EXPECT_EQ(first.bytes, a);
  EXPECT_EQ(first.num_elements(), 6);
  absl::StatusOr<std::vector<float>> values = first.ToFloats();
  ASSERT_TRUE(values.ok());
  EXPECT_THAT(*values, ElementsAre(1, 2, 3, 4, 5, 6));
  EXPECT_EQ(result->tensors[1].name, "logits");
  EXPECT_EQ(result->tensors[1].bytes, b);
  EXPECT_EQ(result->Find("logits"), &result->tensors[1]);
  EXPECT_EQ(result->Find("nope"), nullptr);
  EXPECT_EQ(result->header.model(), "m");
  EXPECT_DOUBLE_EQ(result->summary.timings().total_seconds(), 1.0);
}

TEST(RunStreamTest, CallbacksSeeHeaderThenEachTensorWhenCompleteThenSummary) {
  std::vector<std::string> events;
  RunStreamAssembler assembler(RunCallbacks{
      .on_header =
          [&](const glassbox::v1::Header& h) {
            events.push_back("header:" + std::to_string(h.tensors_size()));
            return absl::OkStatus();
          },
      .on_tensor =
          [&](ReceivedTensor t) {
            events.push_back("tensor:" + t.name);
            return absl::OkStatus();
          },
      .on_summary =
          [&](glassbox::v1::Summary) {
            events.push_back("summary");
            return absl::OkStatus();
          },
  });
  const std::string a = Floats({1, 2});
  // Interleaved chunks: b completes first.
  std::vector<RunResponse> messages = {
      Header({{1, "a", {2}}, {2, "b", {1}}}), Chunk(1, 0, a.substr(0, 4), false),
      Chunk(2, 0, Floats({7}), true), Chunk(1, 4, a.substr(4), true), Summary()};
  for (size_t i = 0; i < messages.size(); ++i) {
    ASSERT_TRUE(assembler.Add(messages[i]).ok());
    if (i == 2) {
      EXPECT_THAT(events, ElementsAre("header:2", "tensor:b"));
    }
  }
  EXPECT_TRUE(assembler.Finish().ok());
  EXPECT_THAT(events, ElementsAre("header:2", "tensor:b", "tensor:a", "summary"));
}

TEST(RunStreamTest, EmptyTensorsAndEmptyIntermediateChunks) {
  absl::StatusOr<RunResult> result = AssembleRun({
      Header({{0, "empty", {0, 4}}, {1, "x", {1}}}),
      Chunk(0, 0, "", true),
      Chunk(1, 0, "", false),
      Chunk(1, 0, Floats({3}), false),
      Chunk(1, 4, "", true),
      Summary(),
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->tensors[0].bytes.size(), 0u);
  EXPECT_EQ(result->tensors[0].num_elements(), 0);
  EXPECT_EQ(result->tensors[1].bytes, Floats({3}));
}

TEST(RunStreamTest, NoTensorsAtAll) {
  absl::StatusOr<RunResult> result = AssembleRun({Header({}), Summary()});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->tensors.empty());
}

TEST(RunStreamTest, KeepsDimNames) {
  RunResponse header = Header({{0, "x", {1, 2}}});
  header.mutable_header()->mutable_tensors(0)->add_dim_names("batch");
  header.mutable_header()->mutable_tensors(0)->add_dim_names("d_model");
  absl::StatusOr<RunResult> result =
      AssembleRun({header, Chunk(0, 0, Floats({1, 2}), true), Summary()});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->tensors[0].dim_names, ElementsAre("batch", "d_model"));
}

TEST(RunStreamTest, HeaderMustComeFirstAndOnce) {
  ExpectViolation({Chunk(0, 0, "", true)}, "before the header");
  ExpectViolation({Summary()}, "summary arrived before the header");
  ExpectViolation({Header({}), Header({})}, "a second header");
  ExpectViolation({}, "ended before the header");
}

TEST(RunStreamTest, HeaderIsChecked) {
  ExpectViolation({Header({{1, "a", {2}}, {1, "b", {2}}})}, "capture id 1 twice");
  ExpectViolation({Header({{1, "a", {2, 3}, glassbox::v1::DTYPE_F32, 20}})},
                  "needs 6 elements of 4 bytes, but has 20 bytes");
  ExpectViolation({Header({{1, "a", {2}, glassbox::v1::DTYPE_UNSPECIFIED, 8}})}, "unknown dtype");
  ExpectViolation({Header({{1, "a", {-2}, glassbox::v1::DTYPE_F32, 8}})}, "negative dimension");
  RunResponse names = Header({{1, "a", {2, 3}}});
  names.mutable_header()->mutable_tensors(0)->add_dim_names("batch");
  ExpectViolation({names}, "1 dim names for 2 dimensions");
}

TEST(RunStreamTest, ChunksMustNameKnownIncompleteTensors) {
  ExpectViolation({Header({{1, "a", {1}}}), Chunk(2, 0, Floats({1}), true)},
                  "capture id 2, which the header does not list");
  ExpectViolation({Header({{1, "a", {1}}}), Chunk(1, 0, Floats({1}), true), Chunk(1, 4, "", true)},
                  "after its last chunk");
}

TEST(RunStreamTest, OffsetsMustBeContiguous) {
  const std::string data = Floats({1, 2});
  ExpectViolation({Header({{1, "a", {2}}}), Chunk(1, 0, data.substr(0, 4), false),
                   Chunk(1, 6, data.substr(4), true)},
                  "chunk at byte offset 6, but 4 bytes had arrived");
  ExpectViolation(
      {Header({{1, "a", {2}}}), Chunk(1, 0, data.substr(0, 4), false), Chunk(1, 0, data, true)},
      "chunk at byte offset 0, but 4 bytes had arrived");
  ExpectViolation({Header({{1, "a", {2}}}), Chunk(1, 4, data.substr(4), true)},
                  "offset 4, but 0 bytes");
}

TEST(RunStreamTest, SizesMustMatchTheHeader) {
  ExpectViolation({Header({{1, "a", {2}}}), Chunk(1, 0, Floats({1, 2, 3}), true)},
                  "a chunk of 12 bytes at offset 0 runs past its 8 bytes");
  ExpectViolation({Header({{1, "a", {2}}}), Chunk(1, 0, Floats({1}), true)},
                  "the last chunk ends at byte 4 of 8");
}

TEST(RunStreamTest, SummaryMustComeLast) {
  ExpectViolation(
      {Header({{1, "a", {2}}, {2, "b", {1}}}), Chunk(1, 0, Floats({1}), false), Summary()},
      "before these tensors were complete: \"a\" (4 of 8 bytes), \"b\" (0 of 4 bytes)");
  ExpectViolation({Header({}), Summary(), Summary()}, "after the summary");
  ExpectViolation({Header({{1, "a", {1}}}), Chunk(1, 0, Floats({1}), true)},
                  "ended before the summary");
  ExpectViolation({Header({}), RunResponse()}, "no header, chunk or summary");
}

TEST(RunStreamTest, CallbackErrorsPassThroughUnchanged) {
  RunCallbacks callbacks;
  callbacks.on_tensor = [](ReceivedTensor) { return absl::DataLossError("disk full"); };
  RunStreamAssembler assembler(callbacks);
  RunResponse header = Header({{1, "a", {1}}});
  RunResponse chunk = Chunk(1, 0, Floats({1}), true);
  ASSERT_TRUE(assembler.Add(header).ok());
  absl::Status status = assembler.Add(chunk);
  EXPECT_EQ(status, absl::DataLossError("disk full"));
}

TEST(RunStreamTest, ToFloatsChecksTheSize) {
  ReceivedTensor tensor;
  tensor.name = "t";
  tensor.shape = {3};
  tensor.dtype = glassbox::v1::DTYPE_F32;
  tensor.bytes = Floats({1, 2});
  EXPECT_EQ(tensor.ToFloats().status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace glassbox::client
