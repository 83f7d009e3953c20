// The CPU backend's attention, in two parts. AttendBlocked computes z the way flash attention
// does: per (row, head, block of queries) it walks blocks of keys with an online softmax, so no
// [queries x keys] matrix is ever held, masked key blocks (after the diagonal, outside a window)
// are skipped, and every (row, head, query block) is a task for the OpenMP pool. Scores and the
// pattern, which TransformerLens-style hooks read, are materialised by MaterializeScores only for
// the layers whose hooks want them; z always comes from AttendBlocked, so capturing a pattern
// changes no value downstream.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "kernels/op_contract.h"

namespace glassbox::cpu {

// z[b, i, h, :] = sum_j softmax_j(s[b, h, i, j]) v[b, j, h / group, :] over the keys query i may
// see: j <= i + query_offset, key_mask[b, j] != 0, inside the window; s = scale q·k, soft-capped.
// A query that sees no key gets a zero row.
absl::Status AttendBlocked(const AttentionDims& d, const float* q, const float* k, const float* v,
                           const int32_t* key_mask, float scale, const AttentionOptions& options,
                           float* z);

// The scores [batch, heads, queries, keys] (masked entries -inf) and/or the pattern (softmax
// rows, zero where masked); either may be null.
absl::Status MaterializeScores(const AttentionDims& d, const float* q, const float* k,
                               const int32_t* key_mask, float scale,
                               const AttentionOptions& options, float* scores, float* pattern);

}  // namespace glassbox::cpu
