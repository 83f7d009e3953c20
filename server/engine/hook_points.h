// The hook points of a model, named and shaped as TransformerLens names them, listed in the order
// the forward pass produces them. A hook point is identified by its index in that list.
#pragma once

#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "server/model/model_config.h"

namespace glassbox {

enum class HookKind : uint8_t {
  // model level
  kEmbed, kPosEmbed, kLnFinalScale, kLnFinalNormalized,
  // per block
  kResidPre, kLn1Scale, kLn1Normalized, kQ, kK, kV, kQNormScale, kQNormNormalized, kKNormScale,
  kKNormNormalized, kRotQ, kRotK, kAttnScores, kPattern, kZ,
  kResult, kLn1PostScale, kLn1PostNormalized, kAttnOut, kResidMid, kLn2Scale, kLn2Normalized,
  kMlpPre, kMlpPreLinear, kMlpPost, kLn2PostScale, kLn2PostNormalized, kMlpOut, kResidPost,
};

// One dimension of a hook's shape: a symbol bound per request (batch, pos) or a model constant.
struct HookDim {
  enum class Symbol : uint8_t { kBatch, kPos, kFixed };
  Symbol symbol;
  int64_t size = 0;  // for kFixed
};

struct HookInfo {
  std::string name;  // e.g. "blocks.3.attn.hook_pattern"
  HookKind kind;
  int layer;  // -1 for model-level hooks
  std::vector<HookDim> dims;
  std::vector<std::string> dim_names;  // "batch", "pos", "head_index", "d_model", ...

  Shape ShapeFor(int64_t batch, int64_t pos) const;
};

using HookId = int;

class HookRegistry {
 public:
  explicit HookRegistry(const ModelConfig& config);

  const std::vector<HookInfo>& hooks() const { return hooks_; }
  const HookInfo& info(HookId id) const { return hooks_[id]; }
  int size() const { return static_cast<int>(hooks_.size()); }

  // The id of a hook (layer -1 for model-level); -1 when the model has no such hook.
  HookId Find(HookKind kind, int layer) const;
  // Exact name lookup; INVALID_ARGUMENT naming the valid hooks otherwise, since a hook the
  // model lacks is a mistake in the request, never a silent no-op.
  absl::StatusOr<HookId> Resolve(absl::string_view name) const;
  // Names or globs ('*' matches any run of characters, '?' one character), e.g.
  // "blocks.*.hook_resid_post". An error when nothing matches.
  absl::StatusOr<std::vector<HookId>> Match(absl::string_view pattern) const;

 private:
  absl::Status UnknownHook(absl::string_view name) const;

  std::vector<HookInfo> hooks_;
  absl::flat_hash_map<std::string, HookId> by_name_;
  std::vector<std::vector<HookId>> by_kind_layer_;  // [kind][layer + 1]
};

// Matches a glob against a name ('*' any run, '?' one character, no escapes).
bool GlobMatch(absl::string_view pattern, absl::string_view name);

}  // namespace glassbox
