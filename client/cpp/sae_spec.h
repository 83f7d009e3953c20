// The SAE flags of `glassbox run` (docs/saes.md):
//
//   --sae_splice NAME[:error_term]        splice SAE NAME at its hook (with the error term)
//   --sae_edit NAME:KIND:features=LIST[:value=X][:rows=LIST][:positions=LIST]
//                                         edit the spliced SAE's feature activations;
//                                         KIND zero | clamp | scale | add (value= for all but
//                                         zero)
//   --sae_steer NAME:features=LIST[:coef=LIST][:rows=LIST][:positions=LIST]
//                                         add sum_i coef_i * W_dec[feature_i] at NAME's hook;
//                                         coef: one per feature, or one for all (default 1)
//
// Positions may be negative (-1 = each row's last token). Parsing is a pure function of the
// text; errors are INVALID_ARGUMENT naming the flag and spec.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "glassbox/v1/glassbox.pb.h"

namespace glassbox::cli {

absl::StatusOr<glassbox::v1::SaeSplice> ParseSaeSpliceSpec(absl::string_view spec);
// The edit and the name of the SAE it belongs to.
absl::StatusOr<std::pair<std::string, glassbox::v1::FeatureEdit>> ParseSaeEditSpec(
    absl::string_view spec);
absl::StatusOr<glassbox::v1::SaeSteering> ParseSaeSteerSpec(absl::string_view spec);

// All three flags into the request: each edit joins the splice of its SAE, which an
// --sae_splice must name.
absl::Status AddSaeFlags(const std::vector<std::string>& splices,
                         const std::vector<std::string>& edits,
                         const std::vector<std::string>& steers, glassbox::v1::RunRequest& request);

// "res6 (error term): zero f1,2; clamp f7 = 4 at positions 2" for display.
std::string FormatSaeSplice(const glassbox::v1::SaeSplice& splice);
std::string FormatSaeSteering(const glassbox::v1::SaeSteering& steering);

}  // namespace glassbox::cli
