#include "server/engine/kv_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace glassbox {

absl::StatusOr<KvCache> KvCache::Create(Backend& backend, const ModelConfig& config, DType dtype,
                                        int64_t batch, int64_t capacity) {
  if (batch <= 0 || capacity <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("a KV cache needs rows and slots, got ", batch, " x ", capacity));
  }
  KvCache cache;
  cache.batch_ = batch;
  cache.capacity_ = capacity;
  const Shape shape = {batch, capacity, config.n_kv_heads, config.d_head};
  // Zeroed, not just allocated: attention multiplies the empty slots' values by a probability
  // of 0, and 0 · NaN from stale memory would be NaN.
  const Tensor zeros = Tensor::ZerosHost(dtype, shape);
  for (int64_t l = 0; l < config.n_layers; ++l) {
    GB_ASSIGN_OR_RETURN(Tensor k, backend.Allocate(dtype, shape));
    GB_ASSIGN_OR_RETURN(Tensor v, backend.Allocate(dtype, shape));
    GB_RETURN_IF_ERROR(backend.CopyFromHost(zeros, k));
    GB_RETURN_IF_ERROR(backend.CopyFromHost(zeros, v));
    cache.keys_.push_back(std::move(k));
    cache.values_.push_back(std::move(v));
  }
  cache.key_mask_ = Tensor::ZerosHost(DType::kI32, {batch, capacity});
  cache.real_.assign(batch, 0);
  return cache;
}

Tensor KvCache::KeyMaskWith(const Tensor& mask) const {
  Tensor out = Tensor::EmptyHost(DType::kI32, key_mask_.shape());
  std::copy_n(key_mask_.data<int32_t>(), key_mask_.numel(), out.data<int32_t>());
  const int64_t count = mask.dim(1);
  for (int64_t b = 0; b < batch_; ++b) {
    std::copy_n(mask.data<int32_t>() + b * count, count,
                out.data<int32_t>() + b * capacity_ + length_);
  }
  return out;
}

Tensor KvCache::NextSlots(int64_t count) const {
  Tensor slots = Tensor::EmptyHost(DType::kI32, {batch_ * count});
  for (int64_t b = 0; b < batch_; ++b) {
    for (int64_t s = 0; s < count; ++s) {
      slots.data<int32_t>()[b * count + s] = static_cast<int32_t>(b * capacity_ + length_ + s);
    }
  }
  return slots;
}

void KvCache::Advance(const Tensor& mask) {
  key_mask_ = KeyMaskWith(mask);
  const int64_t count = mask.dim(1);
  for (int64_t b = 0; b < batch_; ++b) {
    for (int64_t s = 0; s < count; ++s) real_[b] += mask.data<int32_t>()[b * count + s];
  }
  length_ += count;
}

}  // namespace glassbox
