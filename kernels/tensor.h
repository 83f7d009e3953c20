// A small dense tensor: device, dtype, shape and contiguous row-major storage. Not an autograd
// library: the engine allocates tensors through a Backend and ops write into them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "base/dtype.h"

namespace glassbox {

enum class Device : uint8_t { kCpu, kCuda };

using Shape = std::vector<int64_t>;

int64_t NumElements(std::span<const int64_t> shape);
std::string ShapeToString(std::span<const int64_t> shape);

// Owns (or shares) one allocation. The deleter returns the memory to whoever provided it: free(),
// a caching device allocator, or an object (such as a mapped file) kept alive by the lambda.
class Storage {
 public:
  Storage(void* data, size_t bytes, Device device, std::function<void(void*)> deleter)
      : data_(data), bytes_(bytes), device_(device), deleter_(std::move(deleter)) {}
  ~Storage() {
    if (deleter_) deleter_(data_);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

  // A form a backend derived from one view of this storage (its byte offset and shape), kept for
  // as long as the storage lives: the CPU backend's pre-packed Linear weights. Only for views
  // that are never written again, such as a model's weights once loaded. Attaching to a view
  // that has a form replaces it.
  void AttachDerived(size_t byte_offset, const std::vector<int64_t>& shape,
                     std::shared_ptr<const void> form);
  // The form attached to that view, or null.
  const void* FindDerived(size_t byte_offset, const std::vector<int64_t>& shape) const;

 private:
  struct Derived {
    size_t byte_offset;
    std::vector<int64_t> shape;
    std::shared_ptr<const void> form;
  };

  void* data_;
  size_t bytes_;
  Device device_;
  std::function<void(void*)> deleter_;
  mutable std::mutex derived_mu_;
  std::vector<Derived> derived_;  // a handful at most (the views of one weight file)
};

class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<Storage> storage, DType dtype, Shape shape, size_t byte_offset = 0);

  // Host tensor backed by 64-byte-aligned heap memory (uninitialised).
  static Tensor EmptyHost(DType dtype, Shape shape);
  static Tensor ZerosHost(DType dtype, Shape shape);
  // Host f32 / i32 tensors holding a copy of `values`.
  static Tensor FromHost(std::span<const float> values, Shape shape);
  static Tensor FromHost(std::span<const int32_t> values, Shape shape);

  bool defined() const { return storage_ != nullptr; }
  Device device() const { return storage_ ? storage_->device() : Device::kCpu; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  // dim(-1) is the last dimension.
  int64_t dim(int i) const { return shape_[i < 0 ? shape_.size() + i : i]; }
  int64_t numel() const { return NumElements(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel() * DTypeSize(dtype_)); }

  void* raw_data() const {
    return storage_ ? static_cast<std::byte*>(storage_->data()) + byte_offset_ : nullptr;
  }
  template <typename T>
  T* data() const {
    return static_cast<T*>(raw_data());
  }
  // Host-side element span; only for CPU tensors of the matching dtype.
  template <typename T>
  std::span<T> span() const {
    return {data<T>(), static_cast<size_t>(numel())};
  }

  // This view's derived form (Storage::AttachDerived), or null; null for an undefined tensor.
  const void* derived() const;
  void AttachDerived(std::shared_ptr<const void> form) const;

  // A view with another shape over the same elements (numel must match).
  Tensor Reshape(Shape shape) const;
  // A view of rows [begin, end) along dimension 0.
  Tensor Slice0(int64_t begin, int64_t end) const;

  std::string DebugString() const;

 private:
  std::shared_ptr<Storage> storage_;
  DType dtype_ = DType::kF32;
  Shape shape_;
  size_t byte_offset_ = 0;
};

}  // namespace glassbox
