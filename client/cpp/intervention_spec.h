// The compact intervention syntax of `glassbox run --intervene SPEC` (docs/interventions.md):
//
//   KIND:HOOK[:KEY=VALUE]...
//
//   KIND   zero | scale | add | set | mean_batch | mean_pos | patch_row | patch_cached |
//          project_out | orthogonal_decomp | projection_cap
//   HOOK   a hook name or glob: blocks.0.attn.hook_z, 'blocks.*.hook_resid_pre'
//   KEY    rows=LIST  positions=LIST (or pos=)  heads=LIST  dims=LIST    the selectors
//          coef=X (or coefficient=)            scale and add (default 1 for add)
//          value=V                              add, set; the direction of the last three
//          min=X max=X                          projection_cap: the bounds of x . u
//          source_rows=LIST                     patch_row, patch_cached: one source row per batch
//          row from=NAME                            patch_cached: the run kept as NAME (run
//          --cache_as)
//   LIST   comma-separated integers; positions may be negative (-1 = each row's last token)
//   V      0.1,0.2,...         the numbers themselves
//          @FILE.safetensors#NAME   a tensor of a safetensors file (#NAME may be left out when
//                                   the file holds exactly one tensor)
//          @FILE.npy           a NumPy array (float32/float64/float16, little-endian, C order)
//
// Parsing is a pure function of the text and a loader for value files, so that it can be
// tested without files; LoadValueFile is the loader the CLI uses.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "glassbox/v1/glassbox.pb.h"

namespace glassbox::cli {

// Reads the float values of `path` (and tensor `name` within it, "" = the only one).
using ValueLoader = std::function<absl::StatusOr<std::vector<float>>(const std::string& path,
                                                                     const std::string& name)>;

// Parses one SPEC. Any error is INVALID_ARGUMENT with a message naming the problem; errors of
// the loader are returned as INVALID_ARGUMENT too, prefixed with the file.
absl::StatusOr<glassbox::v1::Intervention> ParseInterventionSpec(absl::string_view spec,
                                                                 const ValueLoader& load);

// Values of a .safetensors tensor (F32, F16, BF16 or F64; any shape, flattened row-major) or
// of a .npy array ('<f4', '<f8', '<f2', fortran_order False). The kind is chosen by the file's
// extension; `name` applies to .safetensors only.
absl::StatusOr<std::vector<float>> LoadValueFile(const std::string& path, const std::string& name);

// Pieces shared by the compact specs (--intervene, --sae_edit, --sae_steer). Errors are
// INVALID_ARGUMENT reading "--FLAG "SPEC": problem".
absl::Status SpecError(absl::string_view flag, absl::string_view spec, absl::string_view problem);
// "1,2,-3" (negative values only when allowed).
absl::StatusOr<std::vector<int32_t>> ParseSpecInts(absl::string_view flag, absl::string_view spec,
                                                   absl::string_view key, absl::string_view text,
                                                   bool allow_negative);
absl::StatusOr<float> ParseSpecFloat(absl::string_view flag, absl::string_view spec,
                                     absl::string_view key, absl::string_view text);
// A value V: numbers ("0.5,-1") or @FILE.safetensors#NAME / @FILE.npy read by `load`.
absl::StatusOr<std::vector<float>> ParseSpecValues(absl::string_view flag, absl::string_view spec,
                                                   absl::string_view text, const ValueLoader& load);
// The KEY=VALUE parts parts[first..], in order: keys lower-cased, aliases folded (pos and
// position -> positions, row -> rows, head -> heads, feature -> features, coefficient(s) and
// coefs -> coef); a part without '=' or a key given twice is an error.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseSpecKeys(
    absl::string_view flag, absl::string_view spec, const std::vector<std::string>& parts,
    size_t first);

// "zero", "scale", ... for an InterventionKind; "?" for others.
absl::string_view InterventionKindName(glassbox::v1::InterventionKind kind);

// The spec of an intervention, in the syntax above with the values written out (at most
// `max_values` of them, then "..."). For display.
std::string FormatIntervention(const glassbox::v1::Intervention& intervention,
                               int max_values = 4);

}  // namespace glassbox::cli
