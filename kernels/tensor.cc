#include "kernels/tensor.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/check.h"

namespace glassbox {

int64_t NumElements(std::span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeToString(std::span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

Tensor::Tensor(std::shared_ptr<Storage> storage, DType dtype, Shape shape, size_t byte_offset)
    : storage_(std::move(storage)), dtype_(dtype), shape_(std::move(shape)),
      byte_offset_(byte_offset) {
  GB_CHECK(storage_ == nullptr || byte_offset_ + nbytes() <= storage_->bytes(),
           "tensor %s does not fit its storage", ShapeToString(shape_).c_str());
}

Tensor Tensor::EmptyHost(DType dtype, Shape shape) {
  const size_t bytes = static_cast<size_t>(NumElements(shape) * DTypeSize(dtype));
  // aligned_alloc needs a size that is a multiple of the alignment, and some allocators dislike 0.
  const size_t rounded = std::max<size_t>(64, (bytes + 63) / 64 * 64);
  void* data = std::aligned_alloc(64, rounded);
  GB_CHECK(data != nullptr, "host allocation of %zu bytes failed", bytes);
  auto storage = std::make_shared<Storage>(data, bytes, Device::kCpu, [](void* p) { std::free(p); });
  return Tensor(std::move(storage), dtype, std::move(shape));
}

Tensor Tensor::ZerosHost(DType dtype, Shape shape) {
  Tensor t = EmptyHost(dtype, std::move(shape));
  if (t.nbytes() > 0) std::memset(t.raw_data(), 0, t.nbytes());
  return t;
}

Tensor Tensor::FromHost(std::span<const float> values, Shape shape) {
  Tensor t = EmptyHost(DType::kF32, std::move(shape));
  GB_CHECK(static_cast<size_t>(t.numel()) == values.size());
  // An empty span's data() may be null, which memcpy may not be given even for 0 bytes.
  if (t.nbytes() > 0) std::memcpy(t.raw_data(), values.data(), t.nbytes());
  return t;
}

Tensor Tensor::FromHost(std::span<const int32_t> values, Shape shape) {
  Tensor t = EmptyHost(DType::kI32, std::move(shape));
  GB_CHECK(static_cast<size_t>(t.numel()) == values.size());
  // An empty span's data() may be null, which memcpy may not be given even for 0 bytes.
  if (t.nbytes() > 0) std::memcpy(t.raw_data(), values.data(), t.nbytes());
  return t;
}

void Storage::AttachDerived(size_t byte_offset, const std::vector<int64_t>& shape,
                            std::shared_ptr<const void> form) {
  std::lock_guard lock(derived_mu_);
  for (Derived& d : derived_) {
    if (d.byte_offset == byte_offset && d.shape == shape) {
      d.form = std::move(form);
      return;
    }
  }
  derived_.push_back({byte_offset, shape, std::move(form)});
}

const void* Storage::FindDerived(size_t byte_offset, const std::vector<int64_t>& shape) const {
  std::lock_guard lock(derived_mu_);
  for (const Derived& d : derived_) {
    if (d.byte_offset == byte_offset && d.shape == shape) return d.form.get();
  }
  return nullptr;
}

const void* Tensor::derived() const {
  return storage_ ? storage_->FindDerived(byte_offset_, shape_) : nullptr;
}

void Tensor::AttachDerived(std::shared_ptr<const void> form) const {
  if (storage_) storage_->AttachDerived(byte_offset_, shape_, std::move(form));
}

Tensor Tensor::Reshape(Shape shape) const {
  GB_CHECK(NumElements(shape) == numel(), "cannot reshape %s to %s",
           ShapeToString(shape_).c_str(), ShapeToString(shape).c_str());
  return Tensor(storage_, dtype_, std::move(shape), byte_offset_);
}

Tensor Tensor::Slice0(int64_t begin, int64_t end) const {
  GB_CHECK(rank() >= 1 && 0 <= begin && begin <= end && end <= shape_[0]);
  Shape shape = shape_;
  shape[0] = end - begin;
  const size_t row_bytes = static_cast<size_t>(NumElements(std::span(shape_).subspan(1)) * DTypeSize(dtype_));
  return Tensor(storage_, dtype_, std::move(shape), byte_offset_ + begin * row_bytes);
}

std::string Tensor::DebugString() const {
  return absl::StrCat("Tensor(", DTypeName(dtype_), ShapeToString(shape_),
                      device() == Device::kCpu ? ", cpu)" : ", cuda)");
}

}  // namespace glassbox
