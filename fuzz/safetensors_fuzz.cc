// libFuzzer target for the safetensors parser: any byte string must either be rejected with a
// status or yield views that lie inside the input and survive a write/read round trip unchanged.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "base/safetensors.h"

namespace {

void Fail(const char* what) {
  std::fprintf(stderr, "safetensors_fuzz: %s\n", what);
  std::abort();
}

bool SameBytes(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);
  std::map<std::string, std::string> metadata;
  auto views = glassbox::ParseSafetensors(input, "fuzz", &metadata);
  if (!views.ok()) {
    if (views.status().message().empty()) Fail("error without a message");
    return 0;
  }

  // Touch every byte so ASan sees any view that strays outside the input.
  unsigned sum = 0;
  for (const glassbox::TensorView& view : *views) {
    if (view.bytes.data() < input.data() ||
        view.bytes.data() + view.bytes.size() > input.data() + input.size()) {
      Fail("view outside the input");
    }
    if (static_cast<int64_t>(view.bytes.size()) !=
        view.numel() * glassbox::SafetensorsDtypeSize(view.dtype)) {
      Fail("view size does not match its shape");
    }
    for (std::byte b : view.bytes) sum += static_cast<unsigned>(b);
  }
  volatile unsigned sink = sum;
  (void)sink;

  std::vector<glassbox::TensorToWrite> tensors;
  tensors.reserve(views->size());
  for (const glassbox::TensorView& view : *views) {
    tensors.push_back({view.name, view.dtype, view.shape, view.bytes});
  }
  auto image = glassbox::SerializeSafetensors(tensors, metadata);
  if (!image.ok()) Fail("re-serializing a parsed file failed");

  std::map<std::string, std::string> metadata2;
  auto views2 = glassbox::ParseSafetensors(
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(image->data()), image->size()),
      "fuzz-reserialized", &metadata2);
  if (!views2.ok()) Fail("re-parsing a re-serialized file failed");
  if (metadata2 != metadata) Fail("metadata changed in the round trip");
  if (views2->size() != views->size()) Fail("tensor count changed in the round trip");
  for (size_t i = 0; i < views->size(); ++i) {
    const glassbox::TensorView& a = (*views)[i];
    const glassbox::TensorView& b = (*views2)[i];
    if (a.name != b.name || a.dtype != b.dtype || a.shape != b.shape ||
        !SameBytes(a.bytes, b.bytes)) {
      Fail("tensor changed in the round trip");
    }
  }
  return 0;
}
