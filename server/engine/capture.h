// What a researcher asks to capture at a hook, and how a captured tensor is cut down to that:
// position / head / layer selection, an optional reduction, and a compact wire dtype. This runs
// on the host copy of a captured value, before it is streamed.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "server/engine/hook_points.h"

namespace glassbox {

enum class CaptureReduction : uint8_t {
  kNone,
  kMeanPos,  // mean over the (query) position axis, real tokens only
  kTopK,     // the k largest along the last axis: values and i32 indices
  kNorm,     // L2 norm along the last axis, which is dropped
};

struct CaptureSpec {
  std::string hook;                // a name or a glob
  std::vector<int32_t> positions;  // (query) positions; negative counts from each row's end
  std::vector<int32_t> heads;      // head_index / kv_head_index
  std::vector<int32_t> layers;     // filters what a glob matches
  DType dtype = DType::kF32;       // wire dtype for float values: f32, f16 or bf16
  CaptureReduction reduction = CaptureReduction::kNone;
  int32_t k = 0;                   // for kTopK
};

// One tensor a capture produces: the values, or (top-k) the values and then the indices.
struct CaptureOutputInfo {
  std::string name;  // the hook's name, or "<hook>.indices"
  Shape shape;
  std::vector<std::string> dim_names;
  DType dtype;
  int64_t nbytes() const { return NumElements(shape) * DTypeSize(dtype); }
};

// A capture spec bound to one hook point of one request (batch, sequence lengths known).
struct ResolvedCapture {
  HookId hook;
  CaptureSpec spec;
  std::vector<CaptureOutputInfo> outputs;  // 1, or 2 for top-k
  int position_axis = -1;  // of the hook's tensor; -1 when it has none
  int head_axis = -1;
};

// Resolves every spec against the registry: globs expand, layers filter, selections are checked
// against the hook's dims and every row's length. INVALID_ARGUMENT with the offending spec
// otherwise. The result is in forward order (hook order), specs in request order within a hook.
absl::StatusOr<std::vector<ResolvedCapture>> ResolveCaptures(
    const HookRegistry& registry, const std::vector<CaptureSpec>& specs,
    const std::vector<int32_t>& sequence_lengths, int64_t padded_length);

// One spec bound to one hook point `info` (whose id in the caller's numbering is `id`): the
// selections checked against its dims, the outputs it produces. ResolveCaptures applies it to
// every hook a spec matches; SAE splices use it for their hook_sae_* points.
absl::StatusOr<ResolvedCapture> ResolveCaptureAt(HookId id, const HookInfo& info,
                                                 const CaptureSpec& spec, int64_t batch,
                                                 int64_t padded_length, int32_t shortest);

// Cuts a captured host f32 value down to the capture's outputs. The value has the hook's full
// shape for the request's batch and padded length, or (generation steps) fewer query positions
// and keys: the outputs' shapes follow the value's.
std::vector<Tensor> ApplyCapture(const ResolvedCapture& capture, const Tensor& value,
                                 const std::vector<int32_t>& sequence_lengths);

// Host conversion of an f32 tensor to f32/f16/bf16.
Tensor ToWireDType(const Tensor& f32, DType dtype);

}  // namespace glassbox
