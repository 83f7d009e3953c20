#include "client/cpp/jobs.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"

namespace glassbox::client {
namespace {

namespace pb = ::glassbox::v1;

absl::Status Malformed(const std::string& what) {
  return absl::InternalError(absl::StrCat("malformed GetScanResults response: ", what));
}

absl::Status CheckRecord(const pb::ScanRecord& record, const std::string& where) {
  const int tokens = record.tokens_size();
  if (record.activations_size() != tokens) {
    return Malformed(absl::StrFormat("%s has %d tokens and %d activations", where, tokens,
                                     record.activations_size()));
  }
  if (record.token_strings_size() != 0 && record.token_strings_size() != tokens) {
    return Malformed(absl::StrFormat("%s has %d tokens and %d token strings", where, tokens,
                                     record.token_strings_size()));
  }
  const int64_t at = static_cast<int64_t>(record.position()) - record.window_start();
  if (record.window_start() < 0 || at < 0 || at >= tokens) {
    return Malformed(absl::StrFormat("%s puts its max at position %d, outside its window [%d, %d)",
                                     where, record.position(), record.window_start(),
                                     static_cast<int64_t>(record.window_start()) + tokens));
  }
  return absl::OkStatus();
}

}  // namespace

bool JobEnded(pb::JobState state) {
  return state == pb::JOB_SUCCEEDED || state == pb::JOB_FAILED || state == pb::JOB_CANCELLED;
}

std::string_view JobStateName(pb::JobState state) {
  switch (state) {
    case pb::JOB_QUEUED:
      return "queued";
    case pb::JOB_RUNNING:
      return "running";
    case pb::JOB_SUCCEEDED:
      return "succeeded";
    case pb::JOB_FAILED:
      return "failed";
    case pb::JOB_CANCELLED:
      return "cancelled";
    default:
      return "unknown";
  }
}

absl::Status CheckScanResults(const pb::ScanResults& results) {
  for (const pb::ScanTargetResult& target : results.targets()) {
    const std::string name = absl::StrFormat("target %d (%s)", target.index(), target.name());
    for (int i = 0; i < target.top_size(); ++i) {
      GB_RETURN_IF_ERROR(CheckRecord(target.top(i), absl::StrFormat("%s top[%d]", name, i)));
    }
    for (int i = 0; i < target.random_size(); ++i) {
      GB_RETURN_IF_ERROR(CheckRecord(target.random(i), absl::StrFormat("%s random[%d]", name, i)));
    }
    for (int q = 0; q < target.quantiles_size(); ++q) {
      for (int i = 0; i < target.quantiles(q).records_size(); ++i) {
        GB_RETURN_IF_ERROR(CheckRecord(target.quantiles(q).records(i),
                                       absl::StrFormat("%s quantiles[%d][%d]", name, q, i)));
      }
    }
    const int edges = target.histogram_edges_size(), counts = target.histogram_counts_size();
    if ((edges != 0 || counts != 0) && edges != counts + 1) {
      return Malformed(
          absl::StrFormat("%s has %d histogram edges for %d bins", name, edges, counts));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckScoreExplanationResponse(const pb::ScoreExplanationRequest& request,
                                           const pb::ScoreExplanationResponse& response) {
  if (response.true_activations_size() != request.excerpts_size()) {
    return absl::InternalError(absl::StrFormat(
        "malformed ScoreExplanation response: %d rows of true activations for %d excerpts",
        response.true_activations_size(), request.excerpts_size()));
  }
  for (int i = 0; i < request.excerpts_size(); ++i) {
    if (response.true_activations(i).values_size() != request.excerpts(i).tokens_size()) {
      return absl::InternalError(absl::StrFormat(
          "malformed ScoreExplanation response: excerpt %d has %d tokens and %d true activations",
          i, request.excerpts(i).tokens_size(), response.true_activations(i).values_size()));
    }
  }
  return absl::OkStatus();
}

}  // namespace glassbox::client
