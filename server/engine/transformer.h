// A loaded model and its hooked forward pass. One generic block, parameterised by the config's
// architecture traits, serves GPT-2 and the Llama family.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "server/engine/hook_plan.h"
#include "server/engine/hook_points.h"
#include "server/engine/kv_cache.h"
#include "server/engine/logits_outputs.h"
#include "server/engine/model_weights.h"
#include "server/model/model_config.h"

namespace glassbox {

struct ForwardInput {
  Tensor tokens;          // [batch, pos] i32 on the host
  // [batch, pos] i32 on the host, 1 for real tokens and 0 for padding (left or right). Undefined
  // means every token is real. Real tokens are numbered from position 0 whatever the padding, so
  // each sequence's values equal those of an unpadded run of it.
  Tensor attention_mask;
  // Decoding: `tokens` continue the sequences whose keys and values the cache holds. They fill
  // its next slots (so the cache must be this model's, with this batch and room for them), their
  // positions continue each row's count, and they attend to every cached key. The plan may then
  // not touch attention scores or patterns, nor edit with position selectors or edits that
  // read other positions (mean ablations, patches): those need the whole sequence.
  KvCache* cache = nullptr;
};

struct ForwardOptions {
  // The logits returned: none, each row's last real token, or every position.
  LogitsMode logits = LogitsMode::kAll;
  // Outputs computed from the logits on the device, at every position or, with outputs_at =
  // kLast, at each row's last real token; they need no logits returned.
  int64_t top_k = 0;                  // > 0: the top_k logits' values and token ids
  std::vector<int32_t> target_tokens; // log_softmax(logits)[..., target_tokens]
  OutputPositions outputs_at = OutputPositions::kAll;
  bool loss_per_token = false;
  // Run only blocks [0, stop_at_layer), as TransformerLens's stop_at_layer; -1 runs them all.
  // Outputs (logits and everything above) need the whole pass, so they must be off when this is
  // set.
  int stop_at_layer = -1;
  // Checked between blocks: when it becomes true the pass stops with CANCELLED. Lets a
  // disconnected client or a passed deadline free the device within one layer's time.
  const std::atomic<bool>* cancelled = nullptr;

  LogitsRequest logits_request() const {
    return {.logits = logits, .top_k = top_k, .target_tokens = target_tokens,
            .outputs_at = outputs_at, .loss_per_token = loss_per_token};
  }
};

// Exactly the outputs ForwardOptions asked for, on the host (see logits_outputs.h for shapes).
using ForwardOutput = LogitsOutputs;

// Receives captured activations in the order the forward pass produces them.
class CaptureSink {
 public:
  virtual ~CaptureSink() = default;
  // `value` has the hook's shape and lives on the backend's device. The forward pass never
  // writes to it again, so a sink may keep it (sharing, not copying).
  virtual absl::Status OnCapture(HookId id, const HookInfo& info, const Tensor& value) = 0;
};

// Whether an edit treats every token alike and reads no other token (zero, scale, and add / set
// of a one-token value, at every position): such edits give the same result whether the
// sequence runs at once or token by token over a KV cache.
bool IsPositionLocal(const Intervention& edit, const HookInfo& info);
// OK when a pass over a KV cache can run `plan`: it touches no attention scores or patterns and
// its edits are position-local (INVALID_ARGUMENT naming the first that is not).
absl::Status CheckPlanForCache(const HookPlan& plan);

class Transformer {
 public:
  // Loads a HuggingFace model directory (config.json + model.safetensors or shards) onto the
  // backend, converting weights to `dtype`.
  static absl::StatusOr<std::unique_ptr<Transformer>> Load(const std::string& model_dir,
                                                           std::shared_ptr<Backend> backend,
                                                           DType dtype = DType::kF32);

  absl::StatusOr<ForwardOutput> Forward(const ForwardInput& input, const HookPlan& plan,
                                        CaptureSink* sink, const ForwardOptions& options) const;

  const ModelConfig& config() const { return config_; }
  const HookRegistry& hooks() const { return hooks_; }
  Backend& backend() const { return *backend_; }
  DType dtype() const { return dtype_; }
  // The parameters, for analyses that read weights (unembedding, W_O, final norm).
  const ModelWeights& weights() const { return weights_; }

 private:
  Transformer(ModelConfig config, ModelWeights weights, std::shared_ptr<Backend> backend,
              DType dtype)
      : config_(std::move(config)), hooks_(config_), weights_(std::move(weights)),
        backend_(std::move(backend)), dtype_(dtype) {}

  ModelConfig config_;
  HookRegistry hooks_;
  ModelWeights weights_;
  std::shared_ptr<Backend> backend_;
  DType dtype_;
};

}  // namespace glassbox
