#include "client/cpp/sae_spec.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "client/cpp/intervention_spec.h"

namespace glassbox::cli {
namespace {

namespace pb = ::glassbox::v1;

struct EditKindName {
  absl::string_view name;
  pb::FeatureEditKind kind;
};
constexpr EditKindName kEditKinds[] = {
    {"zero", pb::FEATURE_EDIT_ZERO},
    {"clamp", pb::FEATURE_EDIT_CLAMP},
    {"scale", pb::FEATURE_EDIT_SCALE},
    {"add", pb::FEATURE_EDIT_ADD},
};

std::vector<std::string> SplitSpec(absl::string_view spec) { return absl::StrSplit(spec, ':'); }

// rows= and positions= (the selectors both edits and steering take); false for other keys.
absl::StatusOr<bool> ParseSelector(absl::string_view flag, absl::string_view spec,
                                   const std::string& key, const std::string& value,
                                   google::protobuf::RepeatedField<int32_t>& rows,
                                   google::protobuf::RepeatedField<int32_t>& positions) {
  if (key != "rows" && key != "positions") return false;
  GB_ASSIGN_OR_RETURN(std::vector<int32_t> v,
                      ParseSpecInts(flag, spec, key, value, key == "positions"));
  (key == "rows" ? rows : positions).Add(v.begin(), v.end());
  return true;
}

std::string Selection(const google::protobuf::RepeatedField<int32_t>& rows,
                      const google::protobuf::RepeatedField<int32_t>& positions) {
  std::string text;
  if (!rows.empty()) absl::StrAppend(&text, " rows ", absl::StrJoin(rows, ","));
  if (!positions.empty()) absl::StrAppend(&text, " positions ", absl::StrJoin(positions, ","));
  return text;
}

}  // namespace

absl::StatusOr<pb::SaeSplice> ParseSaeSpliceSpec(absl::string_view spec) {
  const std::vector<std::string> parts = SplitSpec(spec);
  if (parts[0].empty() || parts.size() > 2) {
    return SpecError("sae_splice", spec, "expected NAME or NAME:error_term");
  }
  pb::SaeSplice splice;
  splice.set_sae(parts[0]);
  if (parts.size() == 2) {
    const std::string option = absl::AsciiStrToLower(parts[1]);
    if (option != "error_term" && option != "use_error_term" && option != "error") {
      return SpecError("sae_splice", spec,
                       absl::StrCat("unknown option \"", parts[1], "\" (error_term)"));
    }
    splice.set_use_error_term(true);
  }
  return splice;
}

absl::StatusOr<std::pair<std::string, pb::FeatureEdit>> ParseSaeEditSpec(absl::string_view spec) {
  constexpr absl::string_view kFlag = "sae_edit";
  const std::vector<std::string> parts = SplitSpec(spec);
  if (parts.size() < 3 || parts[0].empty()) {
    return SpecError(kFlag, spec,
                     "expected NAME:KIND:features=LIST[:value=X][:rows=LIST][:positions=LIST]");
  }
  pb::FeatureEdit edit;
  const std::string kind = absl::AsciiStrToLower(parts[1]);
  for (const EditKindName& k : kEditKinds) {
    if (k.name == kind) edit.set_kind(k.kind);
  }
  if (edit.kind() == pb::FEATURE_EDIT_UNSPECIFIED) {
    return SpecError(kFlag, spec,
                     absl::StrCat("unknown kind \"", parts[1], "\" (zero, clamp, scale, add)"));
  }
  GB_ASSIGN_OR_RETURN(auto keys, ParseSpecKeys(kFlag, spec, parts, 2));
  bool has_value = false;
  for (const auto& [key, value] : keys) {
    GB_ASSIGN_OR_RETURN(bool selector, ParseSelector(kFlag, spec, key, value, *edit.mutable_rows(),
                                                     *edit.mutable_positions()));
    if (selector) continue;
    if (key == "features") {
      GB_ASSIGN_OR_RETURN(std::vector<int32_t> v, ParseSpecInts(kFlag, spec, key, value, false));
      edit.mutable_features()->Add(v.begin(), v.end());
    } else if (key == "value") {
      GB_ASSIGN_OR_RETURN(float v, ParseSpecFloat(kFlag, spec, key, value));
      edit.set_value(v);
      has_value = true;
    } else {
      return SpecError(
          kFlag, spec,
          absl::StrCat("unknown key \"", key, "\" (features, value, rows, positions)"));
    }
  }
  if (edit.features().empty()) return SpecError(kFlag, spec, "needs features=LIST");
  if (has_value == (edit.kind() == pb::FEATURE_EDIT_ZERO)) {
    return SpecError(kFlag, spec,
                     has_value ? "zero takes no value="
                               : absl::StrCat(kind,
                                              " needs value=X (clamp: the activation, "
                                              "scale: the factor, add: the amount)"));
  }
  return std::make_pair(parts[0], edit);
}

absl::StatusOr<pb::SaeSteering> ParseSaeSteerSpec(absl::string_view spec) {
  constexpr absl::string_view kFlag = "sae_steer";
  const std::vector<std::string> parts = SplitSpec(spec);
  if (parts.size() < 2 || parts[0].empty()) {
    return SpecError(kFlag, spec, "expected NAME:features=LIST[:coef=LIST][:positions=LIST]");
  }
  pb::SaeSteering steer;
  steer.set_sae(parts[0]);
  GB_ASSIGN_OR_RETURN(auto keys, ParseSpecKeys(kFlag, spec, parts, 1));
  std::vector<float> coefficients;
  for (const auto& [key, value] : keys) {
    GB_ASSIGN_OR_RETURN(bool selector, ParseSelector(kFlag, spec, key, value, *steer.mutable_rows(),
                                                     *steer.mutable_positions()));
    if (selector) continue;
    if (key == "features") {
      GB_ASSIGN_OR_RETURN(std::vector<int32_t> v, ParseSpecInts(kFlag, spec, key, value, false));
      steer.mutable_features()->Add(v.begin(), v.end());
    } else if (key == "coef") {
      for (absl::string_view piece : absl::StrSplit(value, ',')) {
        GB_ASSIGN_OR_RETURN(float c, ParseSpecFloat(kFlag, spec, key, piece));
        coefficients.push_back(c);
      }
    } else {
      return SpecError(kFlag, spec,
                       absl::StrCat("unknown key \"", key, "\" (features, coef, rows, positions)"));
    }
  }
  if (steer.features().empty()) return SpecError(kFlag, spec, "needs features=LIST");
  if (coefficients.empty()) coefficients.push_back(1.0f);
  if (coefficients.size() == 1) coefficients.resize(steer.features_size(), coefficients[0]);
  if (static_cast<int>(coefficients.size()) != steer.features_size()) {
    return SpecError(kFlag, spec,
                     absl::StrCat("coef= has ", coefficients.size(), " values for ",
                                  steer.features_size(), " features; give one or one each"));
  }
  steer.mutable_coefficients()->Add(coefficients.begin(), coefficients.end());
  return steer;
}

absl::Status AddSaeFlags(const std::vector<std::string>& splices,
                         const std::vector<std::string>& edits,
                         const std::vector<std::string>& steers, pb::RunRequest& request) {
  for (const std::string& spec : splices) {
    GB_ASSIGN_OR_RETURN(*request.add_sae_splices(), ParseSaeSpliceSpec(spec));
  }
  for (const std::string& spec : edits) {
    GB_ASSIGN_OR_RETURN(auto named, ParseSaeEditSpec(spec));
    pb::SaeSplice* target = nullptr;
    for (pb::SaeSplice& splice : *request.mutable_sae_splices()) {
      if (splice.sae() == named.first) target = &splice;
    }
    if (target == nullptr) {
      return SpecError("sae_edit", spec,
                       absl::StrCat("SAE \"", named.first, "\" is not spliced; add --sae_splice ",
                                    named.first, " (or ", named.first, ":error_term)"));
    }
    *target->add_edits() = std::move(named.second);
  }
  for (const std::string& spec : steers) {
    GB_ASSIGN_OR_RETURN(*request.add_sae_steering(), ParseSaeSteerSpec(spec));
  }
  return absl::OkStatus();
}

std::string FormatSaeSplice(const pb::SaeSplice& splice) {
  std::string text = absl::StrCat(splice.sae(), splice.use_error_term() ? " (error term)" : "");
  for (int i = 0; i < splice.edits_size(); ++i) {
    const pb::FeatureEdit& e = splice.edits(i);
    absl::string_view kind = "?";
    for (const EditKindName& k : kEditKinds) {
      if (k.kind == e.kind()) kind = k.name;
    }
    absl::StrAppend(&text, i == 0 ? ": " : "; ", kind, " features ",
                    absl::StrJoin(e.features(), ","));
    if (e.kind() != pb::FEATURE_EDIT_ZERO) absl::StrAppend(&text, " value ", e.value());
    absl::StrAppend(&text, Selection(e.rows(), e.positions()));
  }
  return text;
}

std::string FormatSaeSteering(const pb::SaeSteering& steering) {
  std::vector<std::string> terms;
  for (int i = 0; i < steering.features_size(); ++i) {
    terms.push_back(absl::StrCat(steering.coefficients(i), " * W_dec[", steering.features(i), "]"));
  }
  return absl::StrCat(steering.sae(), ": + ", absl::StrJoin(terms, " + "),
                      Selection(steering.rows(), steering.positions()));
}

}  // namespace glassbox::cli
