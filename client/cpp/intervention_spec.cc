#include "client/cpp/intervention_spec.h"

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/safetensors.h"
#include "base/file.h"
#include "base/status_macros.h"
#include "client/cpp/tensor_decode.h"

namespace glassbox::cli {
namespace {

namespace pb = ::glassbox::v1;

absl::Status SpecError(absl::string_view spec, absl::string_view problem) {
  return cli::SpecError("intervene", spec, problem);
}

struct KindName {
  absl::string_view name;
  pb::InterventionKind kind;
};
constexpr KindName kKinds[] = {
    {"zero", pb::INTERVENTION_ZERO},
    {"scale", pb::INTERVENTION_SCALE},
    {"add", pb::INTERVENTION_ADD},
    {"set", pb::INTERVENTION_SET},
    {"mean_batch", pb::INTERVENTION_MEAN_BATCH},
    {"mean_pos", pb::INTERVENTION_MEAN_POS},
    {"patch_row", pb::INTERVENTION_PATCH_ROW},
    {"patch_cached", pb::INTERVENTION_PATCH_CACHED},
    {"project_out", pb::INTERVENTION_PROJECT_OUT},
    {"orthogonal_decomp", pb::INTERVENTION_ORTHOGONAL_DECOMP},
    {"projection_cap", pb::INTERVENTION_PROJECTION_CAP},
};

absl::StatusOr<std::vector<int32_t>> ParseInts(absl::string_view spec, absl::string_view key,
                                               absl::string_view text, bool allow_negative) {
  return ParseSpecInts("intervene", spec, key, text, allow_negative);
}

absl::StatusOr<float> ParseFloat(absl::string_view spec, absl::string_view key,
                                 absl::string_view text) {
  return ParseSpecFloat("intervene", spec, key, text);
}

absl::StatusOr<std::vector<float>> LoadSafetensors(const std::string& path,
                                                   const std::string& name) {
  GB_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(path));
  const TensorView* view = nullptr;
  if (name.empty()) {
    if (file->tensors().size() != 1) {
      std::vector<std::string> names;
      for (const TensorView& t : file->tensors()) names.push_back(t.name);
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s holds %d tensors; name one as @FILE#NAME (%s)", path, names.size(),
          absl::StrJoin(names, ", ")));
    }
    view = &file->tensors().front();
  } else {
    view = file->Find(name);
    if (view == nullptr) {
      return absl::NotFoundError(absl::StrFormat("%s has no tensor \"%s\"", path, name));
    }
  }
  const int64_t n = view->numel();
  std::vector<float> values(static_cast<size_t>(n));
  const std::byte* data = view->bytes.data();
  switch (view->dtype) {
    case SafetensorsDtype::kF32:
      std::memcpy(values.data(), data, n * sizeof(float));
      break;
    case SafetensorsDtype::kF64:
      for (int64_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, data + i * 8, 8);
        values[i] = static_cast<float>(d);
      }
      break;
    case SafetensorsDtype::kF16:
    case SafetensorsDtype::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, data + i * 2, 2);
        values[i] = view->dtype == SafetensorsDtype::kF16 ? client::HalfToFloat(bits)
                                                          : client::BFloat16ToFloat(bits);
      }
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: tensor \"%s\" is %s; a value must be F32, F16, BF16 or F64", path,
                          view->name, SafetensorsDtypeName(view->dtype)));
  }
  return values;
}

// The value of `key` in a .npy header dict ("{'descr': '<f4', 'fortran_order': False,
// 'shape': (3, 4), }"), up to the next top-level comma or the closing brace.
std::optional<std::string> NpyHeaderField(absl::string_view header, absl::string_view key) {
  const std::string quoted = absl::StrCat("'", key, "'");
  size_t at = header.find(quoted);
  if (at == absl::string_view::npos) return std::nullopt;
  at = header.find(':', at + quoted.size());
  if (at == absl::string_view::npos) return std::nullopt;
  size_t end = at + 1;
  int depth = 0;
  for (; end < header.size(); ++end) {
    const char c = header[end];
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
  }
  return std::string(absl::StripAsciiWhitespace(header.substr(at + 1, end - at - 1)));
}

absl::StatusOr<std::vector<float>> LoadNpy(const std::string& path) {
  GB_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
  auto bad = [&](absl::string_view problem) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a .npy file we read: ", problem));
  };
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) return bad("no NUMPY magic");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len, header_start;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | static_cast<unsigned char>(bytes[9]) << 8;
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return bad("truncated header");
    header_len = 0;
    for (int i = 3; i >= 0; --i) header_len = header_len << 8 | static_cast<unsigned char>(bytes[8 + i]);
    header_start = 12;
  } else {
    return bad(absl::StrCat("format version ", major));
  }
  if (header_start + header_len > bytes.size()) return bad("truncated header");
  const absl::string_view header(bytes.data() + header_start, header_len);
  std::optional<std::string> descr = NpyHeaderField(header, "descr");
  std::optional<std::string> fortran = NpyHeaderField(header, "fortran_order");
  std::optional<std::string> shape_text = NpyHeaderField(header, "shape");
  if (!descr || !fortran || !shape_text) return bad("header lacks descr, fortran_order or shape");
  if (*fortran != "False") return bad("fortran_order arrays are not supported; save C order");
  std::string dtype(absl::StripSuffix(absl::StripPrefix(*descr, "'"), "'"));
  int element = 0;
  if (dtype == "<f4") element = 4;
  if (dtype == "<f8") element = 8;
  if (dtype == "<f2") element = 2;
  if (element == 0) return bad(absl::StrCat("dtype ", dtype, " (use float32, float64 or float16)"));
  absl::string_view dims = absl::StripSuffix(absl::StripPrefix(*shape_text, "("), ")");
  int64_t n = 1;
  for (absl::string_view dim : absl::StrSplit(dims, ',', absl::SkipWhitespace())) {
    int64_t size;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(dim), &size) || size < 0) {
      return bad(absl::StrCat("shape ", *shape_text));
    }
    n *= size;
  }
  const size_t data_start = header_start + header_len;
  if (bytes.size() - data_start != static_cast<size_t>(n) * element) {
    return bad(absl::StrFormat("%d bytes of data for %d elements of %s", bytes.size() - data_start,
                               n, dtype));
  }
  std::vector<float> values(static_cast<size_t>(n));
  const char* data = bytes.data() + data_start;
  for (int64_t i = 0; i < n; ++i) {
    if (element == 4) {
      std::memcpy(&values[i], data + i * 4, 4);
    } else if (element == 8) {
      double d;
      std::memcpy(&d, data + i * 8, 8);
      values[i] = static_cast<float>(d);
    } else {
      uint16_t bits;
      std::memcpy(&bits, data + i * 2, 2);
      values[i] = client::HalfToFloat(bits);
    }
  }
  return values;
}

}  // namespace

absl::string_view InterventionKindName(pb::InterventionKind kind) {
  for (const KindName& k : kKinds) {
    if (k.kind == kind) return k.name;
  }
  return "?";
}

absl::StatusOr<std::vector<float>> LoadValueFile(const std::string& path, const std::string& name) {
  if (absl::EndsWithIgnoreCase(path, ".npy")) {
    if (!name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": a .npy file holds one array; drop #", name));
    }
    return LoadNpy(path);
  }
  if (absl::EndsWithIgnoreCase(path, ".safetensors")) return LoadSafetensors(path, name);
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": a value file must end in .safetensors or .npy"));
}

absl::Status SpecError(absl::string_view flag, absl::string_view spec, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, " \"", spec, "\": ", problem));
}

absl::StatusOr<std::vector<int32_t>> ParseSpecInts(absl::string_view flag, absl::string_view spec,
                                                   absl::string_view key, absl::string_view text,
                                                   bool allow_negative) {
  std::vector<int32_t> values;
  if (text.empty()) return SpecError(flag, spec, absl::StrCat(key, "= needs a list of integers"));
  for (absl::string_view piece : absl::StrSplit(absl::string_view(text.data(), text.size()), ',')) {
    piece = absl::StripAsciiWhitespace(piece);
    int32_t value;
    if (!absl::SimpleAtoi(piece, &value)) {
      return SpecError(flag, spec, absl::StrFormat("%s: \"%s\" is not an integer", key, piece));
    }
    if (value < 0 && !allow_negative) {
      return SpecError(flag, spec, absl::StrFormat("%s: %d is negative", key, value));
    }
    values.push_back(value);
  }
  return values;
}

absl::StatusOr<float> ParseSpecFloat(absl::string_view flag, absl::string_view spec,
                                     absl::string_view key, absl::string_view text) {
  float value;
  text = absl::StripAsciiWhitespace(text);
  if (!absl::SimpleAtof(text, &value) || !std::isfinite(value)) {
    return SpecError(flag, spec, absl::StrFormat("%s: \"%s\" is not a finite number", key, text));
  }
  return value;
}

absl::StatusOr<std::vector<float>> ParseSpecValues(absl::string_view flag, absl::string_view spec,
                                                   absl::string_view text,
                                                   const ValueLoader& load) {
  if (text.empty()) return SpecError(flag, spec, "value= needs numbers or @FILE");
  std::vector<float> values;
  if (text[0] == '@') {
    std::string path(text.substr(1));
    std::string name;
    // "#NAME" after a .safetensors file names the tensor; a '#' elsewhere is part of the file
    // name.
    if (const size_t hash = path.rfind('#');
        hash != std::string::npos &&
        absl::EndsWithIgnoreCase(absl::string_view(path).substr(0, hash), ".safetensors")) {
      name = path.substr(hash + 1);
      path.resize(hash);
      if (name.empty()) return SpecError(flag, spec, "value=@FILE#NAME has an empty NAME");
    }
    if (path.empty()) return SpecError(flag, spec, "value=@ needs a file name");
    absl::StatusOr<std::vector<float>> loaded = load(path, name);
    if (!loaded.ok()) return SpecError(flag, spec, loaded.status().message());
    if (loaded->empty()) return SpecError(flag, spec, absl::StrCat(path, ": the value is empty"));
    return *std::move(loaded);
  }
  for (absl::string_view piece : absl::StrSplit(text, ',')) {
    GB_ASSIGN_OR_RETURN(float v, ParseSpecFloat(flag, spec, "value", piece));
    values.push_back(v);
  }
  return values;
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseSpecKeys(
    absl::string_view flag, absl::string_view spec, const std::vector<std::string>& parts,
    size_t first) {
  std::vector<std::pair<std::string, std::string>> keys;
  std::set<std::string> seen;
  for (size_t i = first; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    const size_t eq = part.find('=');
    if (eq == std::string::npos) {
      return SpecError(flag, spec, absl::StrFormat("\"%s\" is not KEY=VALUE", part));
    }
    std::string key = absl::AsciiStrToLower(part.substr(0, eq));
    if (key == "pos" || key == "position") key = "positions";
    if (key == "coefficient" || key == "coefs" || key == "coefficients") key = "coef";
    if (key == "head") key = "heads";
    if (key == "row") key = "rows";
    if (key == "feature") key = "features";
    if (!seen.insert(key).second)
      return SpecError(flag, spec, absl::StrFormat("%s= given twice", key));
    keys.push_back({key, part.substr(eq + 1)});
  }
  return keys;
}

absl::StatusOr<pb::Intervention> ParseInterventionSpec(absl::string_view spec,
                                                       const ValueLoader& load) {
  const std::vector<std::string> parts = absl::StrSplit(absl::string_view(spec.data(), spec.size()), ':');
  if (parts.size() < 2 || parts[1].empty()) {
    return SpecError(spec, "expected KIND:HOOK[:KEY=VALUE]... (e.g. zero:blocks.0.attn.hook_z:heads=1)");
  }
  pb::Intervention in;
  const std::string kind = absl::AsciiStrToLower(parts[0]);
  for (const KindName& k : kKinds) {
    if (k.name == kind) in.set_kind(k.kind);
  }
  if (in.kind() == pb::INTERVENTION_UNSPECIFIED) {
    return SpecError(
        spec, absl::StrFormat(
                  "unknown kind \"%s\" (zero, scale, add, set, mean_batch, mean_pos, patch_row, "
                  "patch_cached)",
                  parts[0]));
  }
  in.set_hook(parts[1]);

  GB_ASSIGN_OR_RETURN(auto keys, ParseSpecKeys("intervene", spec, parts, 2));
  std::set<std::string> seen;
  for (const auto& [key, value] : keys) {
    seen.insert(key);
    if (key == "rows") {
      GB_ASSIGN_OR_RETURN(std::vector<int32_t> v, ParseInts(spec, key, value, false));
      in.mutable_rows()->Add(v.begin(), v.end());
    } else if (key == "positions") {
      GB_ASSIGN_OR_RETURN(std::vector<int32_t> v, ParseInts(spec, key, value, true));
      in.mutable_positions()->Add(v.begin(), v.end());
    } else if (key == "heads") {
      GB_ASSIGN_OR_RETURN(std::vector<int32_t> v, ParseInts(spec, key, value, false));
      in.mutable_heads()->Add(v.begin(), v.end());
    } else if (key == "dims") {
      // Negative dims are key positions of hook_pattern / hook_attn_scores counted from the
      // end; on other hooks the server rejects them.
      GB_ASSIGN_OR_RETURN(std::vector<int32_t> v, ParseInts(spec, key, value, true));
      in.mutable_dims()->Add(v.begin(), v.end());
    } else if (key == "source_rows") {
      GB_ASSIGN_OR_RETURN(std::vector<int32_t> v, ParseInts(spec, key, value, false));
      in.mutable_source_rows()->Add(v.begin(), v.end());
    } else if (key == "from") {
      if (value.empty()) return SpecError(spec, "from= needs the name a run was kept under");
      in.set_cached_run(value);
    } else if (key == "coef") {
      GB_ASSIGN_OR_RETURN(float c, ParseFloat(spec, key, value));
      in.set_coefficient(c);
    } else if (key == "min") {
      GB_ASSIGN_OR_RETURN(float c, ParseFloat(spec, key, value));
      in.set_projection_min(c);
    } else if (key == "max") {
      GB_ASSIGN_OR_RETURN(float c, ParseFloat(spec, key, value));
      in.set_projection_max(c);
    } else if (key == "value") {
      GB_ASSIGN_OR_RETURN(std::vector<float> v, ParseSpecValues("intervene", spec, value, load));
      in.mutable_value()->Add(v.begin(), v.end());
    } else {
      return SpecError(
          spec,
          absl::StrFormat(
              "unknown key \"%s\" (rows, positions, heads, dims, coef, value, min, max, "
              "source_rows, from)",
              key));
    }
  }

  // What each kind needs and accepts, so that a spec that would be a silent no-op or would be
  // misread is a usage error here rather than a surprise later.
  const pb::InterventionKind k = in.kind();
  const bool directional = k == pb::INTERVENTION_PROJECT_OUT ||
                           k == pb::INTERVENTION_ORTHOGONAL_DECOMP ||
                           k == pb::INTERVENTION_PROJECTION_CAP;
  const bool takes_coef = k == pb::INTERVENTION_SCALE || k == pb::INTERVENTION_ADD ||
                          k == pb::INTERVENTION_PROJECT_OUT ||
                          k == pb::INTERVENTION_ORTHOGONAL_DECOMP;
  const bool takes_value = k == pb::INTERVENTION_ADD || k == pb::INTERVENTION_SET || directional;
  if (seen.contains("coef") && !takes_coef) {
    return SpecError(spec, absl::StrCat("coef= applies to scale, add, project_out and "
                                        "orthogonal_decomp, not ", kind));
  }
  if (k == pb::INTERVENTION_SCALE && !seen.contains("coef")) {
    return SpecError(spec, "scale needs coef=X (x[S] *= X)");
  }
  if (k == pb::INTERVENTION_ORTHOGONAL_DECOMP && !seen.contains("coef")) {
    return SpecError(spec, "orthogonal_decomp needs coef=X (the component along value becomes X times itself)");
  }
  const bool bounds = seen.contains("min") || seen.contains("max");
  if (bounds && k != pb::INTERVENTION_PROJECTION_CAP) {
    return SpecError(spec, absl::StrCat("min= and max= apply to projection_cap, not ", kind));
  }
  if (k == pb::INTERVENTION_PROJECTION_CAP && !bounds) {
    return SpecError(spec, "projection_cap needs min=X, max=X or both (the bounds of x . u)");
  }
  if (takes_value && !seen.contains("value")) {
    return SpecError(spec, absl::StrCat(kind, " needs value=V (numbers, @FILE.safetensors#NAME or @FILE.npy)"));
  }
  if (!takes_value && seen.contains("value")) {
    return SpecError(spec, absl::StrCat("value= applies to add, set and the directional kinds "
                                        "(project_out, orthogonal_decomp, projection_cap), not ",
                                        kind));
  }
  if (k == pb::INTERVENTION_PATCH_ROW && !seen.contains("source_rows")) {
    return SpecError(spec, "patch_row needs source_rows=LIST (one source row per batch row)");
  }
  const bool patch = k == pb::INTERVENTION_PATCH_ROW || k == pb::INTERVENTION_PATCH_CACHED;
  if (!patch && seen.contains("source_rows")) {
    return SpecError(
        spec, absl::StrCat("source_rows= applies to patch_row and patch_cached, not ", kind));
  }
  if (k == pb::INTERVENTION_PATCH_CACHED && !seen.contains("from")) {
    return SpecError(spec, "patch_cached needs from=NAME (the name given to run --cache_as)");
  }
  if (k != pb::INTERVENTION_PATCH_CACHED && seen.contains("from")) {
    return SpecError(spec, absl::StrCat("from= applies to patch_cached, not ", kind));
  }
  return in;
}

std::string FormatIntervention(const pb::Intervention& in, int max_values) {
  std::string text = absl::StrCat(InterventionKindName(in.kind()), ":", in.hook());
  auto list = [&](absl::string_view key, const auto& values) {
    if (!values.empty()) absl::StrAppend(&text, ":", key, "=", absl::StrJoin(values, ","));
  };
  list("rows", in.rows());
  list("positions", in.positions());
  list("heads", in.heads());
  list("dims", in.dims());
  if (in.has_coefficient()) absl::StrAppend(&text, ":coef=", in.coefficient());
  if (in.has_projection_min()) absl::StrAppend(&text, ":min=", in.projection_min());
  if (in.has_projection_max()) absl::StrAppend(&text, ":max=", in.projection_max());
  if (in.value_size() > 0) {
    std::vector<std::string> shown;
    for (int i = 0; i < in.value_size() && i < max_values; ++i) {
      shown.push_back(absl::StrCat(in.value(i)));
    }
    if (in.value_size() > max_values) {
      shown.push_back(absl::StrFormat("... (%d values)", in.value_size()));
    }
    absl::StrAppend(&text, ":value=", absl::StrJoin(shown, ","));
  }
  list("source_rows", in.source_rows());
  if (!in.cached_run().empty()) absl::StrAppend(&text, ":from=", in.cached_run());
  return text;
}

}  // namespace glassbox::cli
