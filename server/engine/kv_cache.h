// The keys (after rotary and any q/k norm) and values of every layer for a batch being decoded,
// so that each step runs the model over its new tokens only. Rows are aligned slot by slot (the
// batch is left-padded and every row advances by the same number of slots per step); a slot's
// key mask says whether it holds a real token.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "server/model/model_config.h"

namespace glassbox {

class KvCache {
 public:
  // Room for `capacity` slots per row, on the backend, in `dtype`.
  static absl::StatusOr<KvCache> Create(Backend& backend, const ModelConfig& config, DType dtype,
                                        int64_t batch, int64_t capacity);

  int64_t batch() const { return batch_; }
  int64_t capacity() const { return capacity_; }
  int64_t length() const { return length_; }  // slots filled, the same in every row
  // Real tokens row b holds so far: the position of its next real token.
  int32_t real_tokens(int64_t b) const { return real_[b]; }

  // [batch, capacity, kv_heads, d_head] on the backend.
  Tensor& keys(int layer) { return keys_[layer]; }
  Tensor& values(int layer) { return values_[layer]; }

  // The key mask [batch, capacity] (host) with the next `mask.dim(1)` slots set from `mask`
  // ([batch, new] i32), for the pass that fills them; the cache itself is unchanged until
  // Advance.
  Tensor KeyMaskWith(const Tensor& mask) const;
  // Row-major slot indices b·capacity + length + s of the next `count` slots of every row: where
  // ScatterRows writes the pass's keys and values.
  Tensor NextSlots(int64_t count) const;
  // Commits a pass over `mask` ([batch, new]): the slots are filled.
  void Advance(const Tensor& mask);

 private:
  int64_t batch_ = 0, capacity_ = 0, length_ = 0;
  std::vector<Tensor> keys_, values_;
  Tensor key_mask_;             // host [batch, capacity]
  std::vector<int32_t> real_;   // per row
};

}  // namespace glassbox
