// What one generation step reports of a captured hook: the forward pass of a step computes its
// new query positions (the prompt at step 0, then one token) over left-padded rows; a step
// reports the position whose output chose its token, or at step 0 optionally the whole prompt,
// renumbered so that each row's real tokens start at 0 (right-padded, as Run reports them).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/tensor.h"
#include "server/engine/hook_points.h"

namespace glassbox {

struct StepLayout {
  // Left padding of each row: the slot of its first real token in the pass's positions.
  std::vector<int64_t> pad;
  // Real tokens each row has in the reported queries: its prompt length (whole prompt), 1, or 0
  // for a row that already finished (its values are zeros).
  std::vector<int32_t> lengths;
  bool whole_prompt = false;  // report every query position of the pass, not just the last
};

// `value` is a host f32 hook value of one step's pass (`info` names its axes: "pos" or
// "query_pos", and "key_pos" for scores and patterns). Returns it with the query axis cut to
// the reported positions and queries and keys shifted left by each row's padding (zeros past a
// row's real tokens and for finished rows).
Tensor CutStepCapture(const HookInfo& info, const Tensor& value, const StepLayout& layout);

}  // namespace glassbox
