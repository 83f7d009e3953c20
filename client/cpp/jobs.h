// Dataset-scan jobs as the client sees them (proto "dataset scans"; docs/scans.md): job states,
// and the checks Client runs on what the job RPCs return before handing it over. Usable without
// gRPC.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "glassbox/v1/glassbox.pb.h"

namespace glassbox::client {

// Whether the job has ended: succeeded, failed or cancelled.
bool JobEnded(glassbox::v1::JobState state);

// "queued", "running", "succeeded", "failed", "cancelled"; "unknown" otherwise.
std::string_view JobStateName(glassbox::v1::JobState state);

// INTERNAL (a malformed response) unless every record of every target is consistent: as many
// activations as tokens, token strings absent or one per token, the max's position inside the
// window, and histogram edges absent or one more than the counts.
absl::Status CheckScanResults(const glassbox::v1::ScanResults& results);

// INTERNAL unless the response has one row of true activations per excerpt of `request`, each
// as long as its excerpt.
absl::Status CheckScoreExplanationResponse(const glassbox::v1::ScoreExplanationRequest& request,
                                           const glassbox::v1::ScoreExplanationResponse& response);

}  // namespace glassbox::client
