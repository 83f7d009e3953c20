// GlassboxService::Generate: the request is validated as a Run of its prompts and edits (one
// plan builder for both), then generated on the device's scheduler while this thread relays each
// step to the client.
#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/service/generate_job.h"
#include "server/service/glassbox_service.h"
#include "server/service/job_stream.h"
#include "server/service/status_util.h"

namespace glassbox {
namespace {

namespace pb = ::glassbox::v1;

// Edits that would mean something else as the sequence grows are refused: a negative position
// would follow the newest token (and leave earlier ones unedited at the next step), and a cached
// run's value has the prompt's length.
absl::Status CheckEditsForGeneration(const pb::GenerateRequest& request) {
  for (int i = 0; i < request.interventions_size(); ++i) {
    const pb::Intervention& in = request.interventions(i);
    if (in.kind() == pb::INTERVENTION_PATCH_CACHED) {
      return absl::InvalidArgumentError(absl::StrCat(
          "interventions[", i, "]: PATCH_CACHED is not available in Generate (the cached value has "
          "the prompt's length, not the growing sequence's)"));
    }
    for (int32_t p : in.positions()) {
      if (p < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "interventions[", i, "]: position ", p, " is negative; in Generate positions index "
            "real tokens from 0 (prompt then generated), or leave them empty for every position"));
      }
    }
  }
  for (int i = 0; i < request.sae_splices_size(); ++i) {
    const pb::SaeSplice& splice = request.sae_splices(i);
    for (int j = 0; j < splice.edits_size(); ++j) {
      if (splice.edits(j).rows_size() > 0 || splice.edits(j).positions_size() > 0) {
        return absl::UnimplementedError(absl::StrCat(
            "sae_splices[", i, "].edits[", j, "]: feature edits that select rows or positions are "
            "not available in Generate yet; leave them empty to edit every token, or steer chosen "
            "positions with sae_steering"));
      }
    }
  }
  for (int i = 0; i < request.captures_size(); ++i) {
    if (request.captures(i).positions_size() > 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "captures[", i, "] \"", request.captures(i).hook(), "\": positions are not available "
          "in Generate (each step reports the position that chose its token, capture_prompt adds "
          "the prompt, capture_at_end reports every position); leave them empty"));
    }
  }
  if (request.capture_prompt() && request.capture_at_end()) {
    return absl::InvalidArgumentError(
        "capture_prompt and capture_at_end exclude each other: capture_at_end already reports "
        "every prompt position");
  }
  constexpr int kMaxStopStrings = 16;
  constexpr size_t kMaxStopStringBytes = 256;
  if (request.stop_strings_size() > kMaxStopStrings) {
    return absl::InvalidArgumentError(absl::StrCat("stop_strings has ", request.stop_strings_size(),
                                                   " entries; at most ", kMaxStopStrings));
  }
  for (int i = 0; i < request.stop_strings_size(); ++i) {
    const size_t n = request.stop_strings(i).size();
    if (n == 0 || n > kMaxStopStringBytes) {
      return absl::InvalidArgumentError(absl::StrCat("stop_strings[", i, "] has ", n,
                                                     " bytes; each must have 1 to ",
                                                     kMaxStopStringBytes));
    }
  }
  for (int i = 0; i < request.sae_steering_size(); ++i) {
    for (int32_t p : request.sae_steering(i).positions()) {
      if (p < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sae_steering[", i, "]: position ", p, " is negative; in Generate positions index "
            "real tokens from 0"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<GenerateParams> ParamsOf(const pb::GenerateRequest& request, const ModelConfig& c) {
  GenerateParams params;
  params.max_new_tokens = request.max_new_tokens();
  const pb::Sampling& s = request.sampling();
  params.sampling = {.temperature = s.temperature(),
                     .top_k = s.top_k(),
                     .top_p = s.has_top_p() ? s.top_p() : 1.0,
                     .min_p = s.min_p(),
                     .repetition_penalty = s.has_repetition_penalty() ? s.repetition_penalty() : 1.0,
                     .frequency_penalty = s.frequency_penalty(),
                     .seed = s.seed()};
  params.stop_tokens.assign(request.stop_token_ids().begin(), request.stop_token_ids().end());
  if (!request.has_stop_at_eos() || request.stop_at_eos()) {
    params.stop_tokens.insert(params.stop_tokens.end(), c.eos_token_ids.begin(), c.eos_token_ids.end());
  }
  params.top_logprobs = request.top_logprobs();
  params.stop_strings.assign(request.stop_strings().begin(), request.stop_strings().end());
  params.capture_prompt = request.capture_prompt();
  return params;
}

pb::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength: return pb::FINISH_REASON_LENGTH;
    case FinishReason::kStopToken: return pb::FINISH_REASON_STOP_TOKEN;
    case FinishReason::kContext: return pb::FINISH_REASON_CONTEXT;
    case FinishReason::kStopString: return pb::FINISH_REASON_STOP_STRING;
  }
  return pb::FINISH_REASON_UNSPECIFIED;
}

void AddSequences(const GenerateResult& result,
                  google::protobuf::RepeatedPtrField<pb::GeneratedSequence>* sequences) {
  for (size_t r = 0; r < result.generated.size(); ++r) {
    auto* sequence = sequences->Add();
    sequence->mutable_tokens()->Add(result.generated[r].begin(), result.generated[r].end());
    sequence->set_text(result.texts[r]);
    sequence->set_finish_reason(ToProto(result.finish[r]));
  }
}

}  // namespace

grpc::ServerWriteReactor<pb::GenerateResponse>* GlassboxService::Generate(
    grpc::CallbackServerContext* context, const pb::GenerateRequest* request) {
  using Response = pb::GenerateResponse;
  const auto start = std::chrono::steady_clock::now();
  if (draining_) return Refuse<Response>(absl::UnavailableError("the server is shutting down"));
  auto admitted = Admit(context, CallKind::kDevice);
  if (!admitted.ok()) return Refuse<Response>(admitted.status());
  // The caller's run slot is held until the stream ends: the summary (kept by the stream) owns it.
  auto caller = std::make_shared<const Caller>(*std::move(admitted));
  auto stream = streams_.Acquire();
  if (!stream.ok()) return Refuse<Response>(stream.status());
  const ServiceLimits& limits = caller->limits();
  if (auto s = CheckEditsForGeneration(*request); !s.ok()) return Refuse<Response>(s);
  pb::RunRequest as_run;
  as_run.set_model(request->model());
  *as_run.mutable_inputs() = request->inputs();
  *as_run.mutable_interventions() = request->interventions();
  *as_run.mutable_sae_splices() = request->sae_splices();
  *as_run.mutable_sae_steering() = request->sae_steering();
  *as_run.mutable_captures() = request->captures();
  auto plan = BuildRunPlan(as_run, store_, limits, caller->cache());
  if (!plan.ok()) return Refuse<Response>(plan.status());
  const ModelConfig& config = plan->model->model->config();
  auto params = ParamsOf(*request, config);
  if (!params.ok()) return Refuse<Response>(params.status());
  // The token budget holds the finished batch: every row padded to the longest prompt plus the
  // new tokens, at most the model's context.
  int64_t longest = 0;
  for (const auto& row : plan->rows) longest = std::max<int64_t>(longest, std::ssize(row));
  const int64_t rows = std::ssize(plan->rows);
  const int64_t final_length =
      std::min<int64_t>(longest + std::max(request->max_new_tokens(), 0), config.n_ctx);
  if (rows * final_length > limits.max_tokens_per_request) {
    return Refuse<Response>(absl::ResourceExhaustedError(
        absl::StrCat("the generation would hold ", rows * final_length, " tokens (", rows,
                     " rows x ", final_length, ", prompt and new tokens); this server allows ",
                     limits.max_tokens_per_request,
                     " per request (--max_tokens): generate fewer tokens or fewer rows")));
  }
  if (!params->stop_strings.empty() && plan->model->tokenizer == nullptr) {
    return Refuse<Response>(absl::FailedPreconditionError(
        absl::StrCat("stop_strings need a tokenizer; model \"", request->model(),
                     "\" has none (stop on token ids with stop_token_ids)")));
  }
  // Counted as --max_tokens counts them: the finished batch.
  if (absl::Status charged = caller->ChargeTokens(rows * final_length); !charged.ok()) {
    return Refuse<Response>(charged);
  }

  pb::GenerateResponse header_message;
  auto* header = header_message.mutable_header();
  header->set_model(request->model());
  for (size_t r = 0; r < plan->rows.size(); ++r) {
    header->add_sequence_lengths(plan->lengths[r]);
    header->add_tokens()->mutable_ids()->Add(plan->rows[r].begin(), plan->rows[r].end());
  }
  TaskInfo task{.owner = caller->cache().owner, .rpc = "Generate", .model = request->model(),
                .tokens = rows * final_length};
  auto job = std::make_shared<GenerateJob>(std::move(task), *std::move(plan), *std::move(params),
                                           request->include_unsteered(), request->capture_at_end(),
                                           limits);
  auto summarize = [this, context, job, caller, start, rows, final_length,
                    include_unsteered = request->include_unsteered(),
                    model = request->model()]() -> absl::StatusOr<Response> {
    Response summary_message;
    auto* summary = summary_message.mutable_summary();
    AddSequences(job->steered(), summary->mutable_sequences());
    if (include_unsteered) AddSequences(job->unsteered(), summary->mutable_unsteered_sequences());
    summary->set_bytes_sent(job->bytes_sent());
    metrics_.Annotate(context, [&](RequestRecord& r) {
      r.model = model;
      r.tokens = rows * final_length;
      r.queue_seconds = job->queue_seconds();
      r.run_seconds = job->seconds();
      r.bytes = job->bytes_sent();
      r.batch_requests = 1;
    });
    summary->mutable_timings()->set_queue_seconds(job->queue_seconds());
    summary->mutable_timings()->set_forward_seconds(job->seconds());
    summary->mutable_timings()->set_total_seconds(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return summary_message;
  };
  auto* reactor = new JobStream<Response>(context, job, *std::move(stream), "the generation",
                                          std::move(summarize));
  if (auto queued = GenerateJob::Submit(scheduler_, job); !queued.ok()) {
    reactor->Refuse(queued.status());
    return reactor;
  }
  reactor->Begin(std::move(header_message));
  return reactor;
}

}  // namespace glassbox
