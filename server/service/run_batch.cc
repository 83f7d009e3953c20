// Dynamic batching of Run requests: one forward pass over the rows of several queued runs. Each
// run's rows sit at an offset of the merged batch, its edits are moved to those rows, and every
// captured value and output is cut back to its rows and its own padded length before it streams,
// so a merged run returns what it would alone. Right padding keeps that exact: the extra padding
// a shorter run gets sits after its real tokens, which causal attention never lets them see.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "server/engine/host_math.h"
#include "server/service/run_job.h"

namespace glassbox {

// A merged pass stops between layers once every run in it has been cancelled or has failed.
struct MergedCancel {
  std::atomic<int> live{0};
  std::atomic<bool> all{false};
  void Leave() {
    if (live.fetch_sub(1) == 1) all = true;
  }
};

bool RunJob::JoinMerged(std::shared_ptr<MergedCancel> merged) {
  std::lock_guard lock(merged_mu_);
  if (cancelled_) return false;
  merged->live.fetch_add(1);
  merged_ = std::move(merged);
  return true;
}

void RunJob::LeaveMerged() {
  std::lock_guard lock(merged_mu_);
  if (merged_) merged_->Leave();
  merged_.reset();
}

void RunJob::OnCancel() { LeaveMerged(); }

namespace {

// The request's outputs as the engine's: it computes them on the device and returns exactly the
// tensors the stream carries.
ForwardOptions OutputOptions(const RunPlan& plan, const std::atomic<bool>* cancelled) {
  ForwardOptions options{.logits = LogitsMode::kNone,
                         .target_tokens = plan.target_tokens,
                         .loss_per_token = plan.loss_per_token,
                         .stop_at_layer = plan.stop_at_layer,
                         .cancelled = cancelled};
  switch (plan.logits_mode) {
    case glassbox::v1::LOGITS_LAST:
      options.logits = LogitsMode::kLast;
      break;
    case glassbox::v1::LOGITS_ALL:
      options.logits = LogitsMode::kAll;
      break;
    case glassbox::v1::LOGITS_TOP_K:
      options.top_k = plan.logits_k;
      break;
    default:
      break;
  }
  return options;
}

// `edit` of a run whose `rows` rows start at `offset` of a merged batch of `batch` rows.
Intervention MoveToRows(const Intervention& edit, int32_t offset, int32_t rows, int32_t batch) {
  Intervention moved = edit;
  if (edit.select.rows.empty()) {
    moved.select.rows.resize(rows);
    std::iota(moved.select.rows.begin(), moved.select.rows.end(), offset);
  } else {
    for (int32_t& r : moved.select.rows) r += offset;
  }
  if (edit.kind == InterventionKind::kPatchRow || edit.kind == InterventionKind::kPatchFrom) {
    // Only the run's own (selected) rows read their entry. A row patched from another row of
    // the same run reads it at its new place; a kept run's rows keep their numbering.
    const int32_t shift = edit.kind == InterventionKind::kPatchRow ? offset : 0;
    moved.source_rows.assign(batch, 0);
    for (int32_t b = 0; b < rows; ++b) moved.source_rows[offset + b] = edit.source_rows[b] + shift;
  }
  return moved;
}

}  // namespace

class MergedRun : public CaptureSink {
 public:
  explicit MergedRun(std::span<Task* const> batch) : cancel_(std::make_shared<MergedCancel>()) {
    for (Task* task : batch) members_.push_back({.job = static_cast<RunJob*>(task)});
  }

  // Runs the pass and completes every job.
  void Execute() {
    int32_t batch = 0;
    for (Member& m : members_) {
      m.job->Started();
      if (!m.job->JoinMerged(cancel_)) {
        Fail(m, absl::CancelledError("cancelled while queued"));
        continue;
      }
      m.offset = batch;
      m.rows = static_cast<int32_t>(m.job->plan().rows.size());
      m.seq = m.job->plan().tokens.dim(1);
      batch += m.rows;
      seq_ = std::max(seq_, m.seq);
      ++live_;
    }
    batch_ = batch;
    if (live_ > 0) Pass();
    for (Member& m : members_) {
      m.job->LeaveMerged();
      m.job->Complete(m.status);
    }
  }

 private:
  struct Member {
    RunJob* job;
    int32_t offset = 0, rows = 0;
    int64_t seq = 0;
    absl::Status status;  // not OK once the run has left the pass
    bool live() const { return status.ok(); }
  };

  void Fail(Member& m, absl::Status status) {
    if (!m.live()) return;
    m.status = std::move(status);
    m.job->LeaveMerged();
  }

  // The block [starts, starts + counts) of a host tensor: a view when only rows are cut (the
  // common case: a run of the longest padded length), else a copy.
  static Tensor Cut(const Tensor& t, const std::vector<int64_t>& starts,
                    const std::vector<int64_t>& counts) {
    for (size_t i = 1; i < counts.size(); ++i) {
      if (starts[i] != 0 || counts[i] != t.dim(static_cast<int>(i)))
        return SliceHost(t, starts, counts);
    }
    return t.Slice0(starts[0], starts[0] + counts[0]);
  }

  // Whether the pass is one run's own batch, unchanged.
  bool Alone() const { return members_.size() == 1; }

  void Pass() {
    const Member* lead = nullptr;
    for (const Member& m : members_) {
      if (m.live() && lead == nullptr) lead = &m;
    }
    const RunPlan& lead_plan = lead->job->plan();
    const Transformer& model = *lead_plan.model->model;
    backend_ = &model.backend();

    Tensor tokens = lead_plan.tokens, mask = lead_plan.attention_mask;
    if (!Alone()) {
      tokens = Tensor::ZerosHost(DType::kI32, {batch_, seq_});
      mask = Tensor::ZerosHost(DType::kI32, {batch_, seq_});
      for (const Member& m : members_) {
        if (!m.live()) continue;
        const RunPlan& plan = m.job->plan();
        for (int32_t r = 0; r < m.rows; ++r) {
          const int64_t to = (m.offset + r) * seq_, from = r * m.seq;
          std::copy_n(plan.tokens.data<int32_t>() + from, m.seq, tokens.data<int32_t>() + to);
          std::copy_n(plan.attention_mask.data<int32_t>() + from, m.seq, mask.data<int32_t>() + to);
        }
      }
    }

    HookPlan hook_plan(model.hooks());
    absl::Status edits = absl::OkStatus();
    for (const Member& m : members_) {
      if (!m.live()) continue;
      const RunPlan& plan = m.job->plan();
      for (const ResolvedCapture& rc : plan.captures) {
        // hook_sae_* captures (ids past the registry) travel with their splice instead.
        if (rc.hook < model.hooks().size()) hook_plan.CaptureId(rc.hook);
      }
      if (plan.keep) {
        for (HookId id : plan.keep->hooks) hook_plan.CaptureId(id);
      }
      if (Alone()) {
        edits.Update(AddEdits(plan, hook_plan));
      } else {
        for (const Intervention& edit : plan.interventions) {
          edits.Update(hook_plan.AddIntervention(MoveToRows(edit, m.offset, m.rows, batch_)));
        }
      }
    }
    if (!edits.ok()) {
      for (Member& m : members_) Fail(m, edits);
      return;
    }

    const ForwardOptions options = OutputOptions(lead_plan, &cancel_->all);
    const auto start = std::chrono::steady_clock::now();
    auto out = model.Forward({.tokens = tokens, .attention_mask = mask}, hook_plan, this, options);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (Member& m : members_) {
      m.job->forward_seconds_ = seconds;
      m.job->batch_requests_ = live_;
    }
    for (Member& m : members_) {
      if (!m.live()) continue;
      if (!out.ok()) {
        Fail(m, out.status());
      } else if (absl::Status s = m.job->StreamOutputs(Alone() ? *out : OutputsOf(m, *out));
                 !s.ok()) {
        Fail(m, s);
      }
    }
  }

  absl::Status OnCapture(HookId id, const HookInfo& info, const Tensor& value) override {
    Tensor host;
    for (Member& m : members_) {
      if (!m.live() || !m.job->Wants(id)) continue;
      if (!host.defined()) {
        GB_ASSIGN_OR_RETURN(host, CopyToHostF32(*backend_, value));
      }
      absl::Status delivered = Alone() ? m.job->Deliver(id, info, host)
                                       : m.job->Deliver(id, info, RowsOf(m, info, host));
      if (!delivered.ok()) Fail(m, delivered);
    }
    for (const Member& m : members_) {
      if (m.live()) return absl::OkStatus();
    }
    return absl::CancelledError("every run of the pass was cancelled");
  }

  // A hook's merged value cut to the member's rows and padded length.
  Tensor RowsOf(const Member& m, const HookInfo& info, const Tensor& host) const {
    std::vector<int64_t> starts(host.rank(), 0), counts(host.shape().begin(), host.shape().end());
    for (size_t i = 0; i < info.dims.size() && i < counts.size(); ++i) {
      if (info.dims[i].symbol == HookDim::Symbol::kBatch) {
        starts[i] = m.offset;
        counts[i] = m.rows;
      } else if (info.dims[i].symbol == HookDim::Symbol::kPos) {
        counts[i] = m.seq;
      }
    }
    return Cut(host, starts, counts);
  }

  // [batch, ...] outputs cut to the member's rows, and [batch, pos, ...] ones also to its padded
  // length (pos - 1 for the per-token loss).
  ForwardOutput OutputsOf(const Member& m, const ForwardOutput& out) const {
    auto cut = [&](const Tensor& t, int64_t positions) -> Tensor {
      if (!t.defined()) return t;
      std::vector<int64_t> starts(t.rank(), 0), counts(t.shape().begin(), t.shape().end());
      starts[0] = m.offset;
      counts[0] = m.rows;
      if (positions >= 0) counts[1] = positions;
      return Cut(t, starts, counts);
    };
    const auto by_position = [&](const Tensor& t) {
      return t.defined() && t.rank() == 3 ? m.seq : -1;
    };
    ForwardOutput mine;
    mine.logits = cut(out.logits, by_position(out.logits));
    mine.top_k_values = cut(out.top_k_values, by_position(out.top_k_values));
    mine.top_k_indices = cut(out.top_k_indices, by_position(out.top_k_indices));
    mine.target_log_probs = cut(out.target_log_probs, by_position(out.target_log_probs));
    mine.loss_per_token = cut(out.loss_per_token, m.seq - 1);
    return mine;
  }

  std::vector<Member> members_;
  std::shared_ptr<MergedCancel> cancel_;
  Backend* backend_ = nullptr;
  int32_t batch_ = 0;
  int64_t seq_ = 0;
  int live_ = 0;
};

void RunJob::Run(std::span<Task* const> batch) { MergedRun(batch).Execute(); }

// Never called: Run replaces StreamingJob's Execute, alone or merged (a pass of one).
absl::Status RunJob::Work() { return absl::InternalError("RunJob runs through Run"); }

std::string RunBatchKey(const RunPlan& plan) {
  if (!plan.splices.empty()) return "";
  const HookRegistry& hooks = plan.model->model->hooks();
  const int64_t seq = plan.tokens.dim(1);
  const int64_t batch = plan.tokens.dim(0);
  bool length_bound = false;
  for (const Intervention& edit : plan.interventions) {
    if (edit.kind == InterventionKind::kMeanBatch) return "";
    if (edit.kind == InterventionKind::kPatchFrom) {
      length_bound = true;  // its source rows are indexed with the padded length
      continue;
    }
    if (!edit.value.defined()) continue;
    const HookInfo& info = hooks.info(edit.hook);
    const Shape one_row = info.ShapeFor(1, seq);
    const int64_t n = edit.value.numel();
    const int64_t row = NumElements(one_row);
    if (batch > 1 && n == batch * row && n != row) return "";  // the request's own batch
    if (EditAxesOf(info.kind) == EditAxes::kAttention) {
      length_bound = true;  // key positions are the last axis
      continue;
    }
    const int64_t d = one_row.back();
    const int64_t m = one_row.size() == 4 ? one_row[2] : 1;
    if (n != d && n != m * d) length_bound = true;  // one row, indexed by padded position
  }
  return absl::StrCat(plan.model->name, "|stop=", plan.stop_at_layer, "|logits=", plan.logits_mode,
                      ":", plan.logits_k, "|loss=", plan.loss_per_token,
                      "|targets=", absl::StrJoin(plan.target_tokens, ","),
                      length_bound ? absl::StrCat("|length=", seq) : "");
}

int64_t EstimateRunBytes(const RunPlan& plan) {
  const ModelConfig& c = plan.model->model->config();
  const int64_t batch = plan.tokens.dim(0), seq = plan.tokens.dim(1);
  const int64_t tokens = batch * seq;
  const int64_t per_token = 4 * c.d_model + 3 * c.n_heads * c.d_head + 2 * c.d_mlp;
  int64_t bytes = tokens * per_token * 4;          // one block's activations, f32
  bytes += batch * c.n_heads * seq * seq * 4 * 2;  // scores and pattern, when materialised
  if (plan.logits_mode != glassbox::v1::LOGITS_NONE || plan.loss_per_token ||
      !plan.target_tokens.empty()) {
    bytes += tokens * c.vocab_size * 4;
  }
  bytes += plan.total_bytes;
  if (plan.keep) bytes += plan.keep->bytes;
  return bytes;
}

}  // namespace glassbox
