// A StartScanRequest resolved against the server's models and SAEs: the engine's ScanPlan, the
// name of every target, and the results of a finished scan as ScanTargetResult messages.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "glassbox/v1/glassbox.pb.h"
#include "server/engine/feature_scan.h"
#include "server/engine/logit_effects.h"
#include "server/service/model_store.h"

namespace glassbox {

namespace pb = ::glassbox::v1;

struct ResolvedScan {
  const ServedModel* served = nullptr;
  ScanPlan plan;
  // Per group: what clients see of its targets.
  struct Group {
    std::string kind;  // ScanTargetResult.kind
    std::string hook;
    std::string sae;
    std::string direction_name;
    int32_t layer = -1;     // heads
    std::string measure;    // heads: "output norm", "attention to position 0", ...
  };
  std::vector<Group> groups;
  int64_t targets = 0;
  int32_t batch_contexts = 0;
};

// The request's defaults filled in (docs/scans.md) and every target checked: NOT_FOUND for an
// unknown model or SAE, INVALID_ARGUMENT for a hook, index, direction or option that does not
// fit. The corpus is checked separately (scan_corpus.h).
absl::StatusOr<ResolvedScan> ResolveScan(const ModelStore& store, const pb::StartScanRequest& request);

// Target `index`'s group and unit (neuron or feature index, or the direction's row).
TargetUnit LocateTarget(const ResolvedScan& scan, int64_t index);

// The logit effects of `results`' targets (those that write the residual stream), `k` each, with
// token strings when the model has a tokenizer. Runs on the device's thread.
absl::Status AddLogitEffects(const ResolvedScan& scan, int64_t k, pb::ScanResults& results);

// Target `index` of a finished scan: its identity, statistics and records, with each record's
// tokens read from `contexts` [n, context_length] and decoded with `tokenizer` when there is one.
pb::ScanTargetResult TargetResult(const ResolvedScan& scan, const TargetAccumulator& target,
                                  int64_t index, const Tensor& contexts, const Tokenizer* tokenizer);

}  // namespace glassbox
