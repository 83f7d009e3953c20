// A RunRequest translated into engine terms and validated before any work is queued: the padded
// batch, the resolved captures, the outputs, and every tensor the response will stream.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/strings/str_cat.h"
#include "glassbox/v1/glassbox.pb.h"
#include "server/engine/capture.h"
#include "server/engine/hook_plan.h"
#include "server/engine/intervention.h"
#include "server/engine/sae_hooks.h"
#include "server/service/model_store.h"
#include "server/service/run_cache.h"

namespace glassbox {

struct ServiceLimits {
  int64_t max_batch = 1024;
  int64_t max_tokens_per_request = 1 << 16;
  int64_t max_response_bytes = int64_t{8} << 30;
  // What set max_response_bytes, for RESOURCE_EXHAUSTED messages: the flag, or a key's quota
  // when that is smaller (Caller::limits).
  std::string max_response_bytes_source = "--max_response_bytes";
  uint32_t default_chunk_bytes = 1 << 20;
  uint32_t max_chunk_bytes = 4 << 20;
  size_t stream_buffer_bytes = size_t{16} << 20;  // per stream, between worker and writer
  // How long the device's worker waits for a reader whose buffer is full before giving up on it.
  absl::Duration stream_stall = absl::Seconds(10);
  int64_t max_concurrent_streams = 256;           // Run and Generate streams open at once
  int64_t max_sweep_cells = 1 << 18;              // cells one PatchingSweep patches
  RunCacheLimits cache;

  // "this server allows N (--max_response_bytes)", or the key's quota: what a response over the
  // limit is told.
  std::string ResponseBytesAllowed() const {
    return absl::StrCat("this server allows ", max_response_bytes, " (", max_response_bytes_source,
                        ")");
  }
  // OK when a response of `bytes` fits, else RESOURCE_EXHAUSTED: "<what> would take <bytes>
  // bytes; this server allows N (...): <advice>".
  absl::Status CheckResponseBytes(int64_t bytes, absl::string_view what,
                                  absl::string_view advice) const {
    if (bytes <= max_response_bytes) return absl::OkStatus();
    return absl::ResourceExhaustedError(absl::StrCat(what, " would take ", bytes, " bytes; ",
                                                     ResponseBytesAllowed(), ": ", advice));
  }
};

// Where a request finds cached runs: the server's cache, the caller's namespace and budget.
struct CacheAccess {
  RunCache* cache = nullptr;  // null: keep and PATCH_CACHED are refused
  std::string owner;          // the caller's key name; "" on a server without keys
  // An admin key reaches every owner's runs, naming another owner's as "OWNER/NAME".
  bool admin = false;
  std::optional<int64_t> quota_bytes;  // the key's cache_bytes quota

  // The (owner, name) a request's cached-run name refers to. Only an admin's "OWNER/NAME" leaves
  // the caller's namespace; anyone else's is looked up as it is in their own, where it does not
  // exist (names have no '/'), so it is NOT_FOUND like any unknown name.
  std::pair<std::string, std::string> Locate(const std::string& name) const;
};

// What RunRequest.keep asks to store once the run succeeds.
struct KeepPlan {
  std::string name;
  std::vector<HookId> hooks;  // forward order
  absl::Duration ttl;
  int64_t bytes = 0;
};

struct OutputTensorInfo {
  std::string name;
  Shape shape;
  std::vector<std::string> dim_names;
  DType dtype;
  int64_t nbytes() const { return NumElements(shape) * DTypeSize(dtype); }
};

// A request's inputs, tokenized, checked against the model and the limits, right-padded.
struct Batch {
  std::vector<std::vector<int32_t>> rows;  // unpadded token ids
  std::vector<int32_t> lengths;
  Tensor tokens;          // [batch, longest] i32, right-padded with 0
  Tensor attention_mask;  // [batch, longest] i32
};

absl::StatusOr<Batch> BuildBatch(const glassbox::v1::Inputs& inputs, const ServedModel& served,
                                 const ServiceLimits& limits);

struct RunPlan : Batch {
  const ServedModel* model = nullptr;
  std::vector<ResolvedCapture> captures;  // forward order
  std::vector<Intervention> interventions;            // request order, then SAE steering
  std::vector<std::pair<HookId, SaeSplice>> splices;  // request order
  glassbox::v1::LogitsMode logits_mode = glassbox::v1::LOGITS_NONE;
  int32_t logits_k = 0;
  bool loss_per_token = false;
  std::vector<int32_t> target_tokens;
  int stop_at_layer = -1;
  uint32_t chunk_bytes = 0;
  // Every tensor the stream carries, captures first (forward order), then outputs; a tensor's
  // index here is its id on the wire.
  std::vector<OutputTensorInfo> tensors;
  int64_t total_bytes = 0;
  std::optional<KeepPlan> keep;
};

absl::StatusOr<RunPlan> BuildRunPlan(const glassbox::v1::RunRequest& request,
                                     const ModelStore& store, const ServiceLimits& limits,
                                     const CacheAccess& cache = {});

// The plan's interventions (SAE steering included) and splices, added to `hook_plan` in order.
absl::Status AddEdits(const RunPlan& plan, HookPlan& hook_plan);

glassbox::v1::DType ToProtoDType(DType dtype);
// Whether a pass with stop_at_layer (-1: the whole model) reaches the hook.
bool ReachedWith(const HookInfo& info, int stop_at_layer);

// run_plan_sae.cc: the SAE parts of a request.
// Whether a capture names hook_sae_* points ("<hook>.hook_sae_acts_post", globs too).
bool IsSaeCapture(absl::string_view pattern);
// Steering entries as ADD interventions of c·W_dec[i] at the SAE's hook, after the request's.
absl::Status AddSaeSteering(const glassbox::v1::RunRequest& request, const ModelStore& store,
                            RunPlan& plan);
// Splices, their edits, and the hook_sae_* captures, merged into plan.captures in stream order.
absl::Status AddSaeSplices(const glassbox::v1::RunRequest& request, const ModelStore& store,
                           const std::vector<CaptureSpec>& sae_captures, RunPlan& plan);

// run_plan_cache.cc: the cached-run parts of a request.
// An INTERVENTION_PATCH_CACHED at one hook as a kPatchFrom edit reading the cached value.
absl::Status ResolveCachedPatch(const glassbox::v1::Intervention& in, const HookInfo& info,
                                const RunPlan& plan, const CacheAccess& cache, Intervention& edit);
// request.keep as plan.keep, checked against the budget; after the captures are resolved.
absl::Status AddKeep(const glassbox::v1::RunRequest& request, const CacheAccess& cache,
                     RunPlan& plan);
// plan.keep's values, stored once the run succeeded; what the Summary reports.
absl::StatusOr<glassbox::v1::CachedRunInfo> StoreKept(const RunPlan& plan, const CacheAccess& cache,
                                                      std::map<std::string, Tensor> values);
void FillCachedRunInfo(const CachedRun& run, glassbox::v1::CachedRunInfo* info);

}  // namespace glassbox
