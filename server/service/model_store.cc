#include "server/service/model_store.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"

namespace glassbox {

absl::StatusOr<ModelSpec> ParseModelSpec(absl::string_view flag_value) {
  const size_t eq = flag_value.find('=');
  if (eq == absl::string_view::npos || eq == 0 || eq + 1 == flag_value.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--model expects NAME=DIR (e.g. gpt2=/models/gpt2), got \"", flag_value, "\""));
  }
  return ModelSpec{std::string(flag_value.substr(0, eq)), std::string(flag_value.substr(eq + 1))};
}

absl::StatusOr<std::unique_ptr<ModelStore>> ModelStore::Load(const std::vector<ModelSpec>& specs,
                                                             std::shared_ptr<Backend> backend,
                                                             const std::string& device_name,
                                                             DType dtype) {
  auto store = std::make_unique<ModelStore>();
  for (const ModelSpec& spec : specs) {
    if (store->models_.count(spec.name)) {
      return absl::InvalidArgumentError(absl::StrCat("model name \"", spec.name, "\" is given twice"));
    }
    auto served = std::make_unique<ServedModel>();
    served->name = spec.name;
    served->directory = spec.directory;
    served->device = device_name;
    auto model = Transformer::Load(spec.directory, backend, dtype);
    if (!model.ok()) {
      return absl::Status(model.status().code(),
                          absl::StrCat("model \"", spec.name, "\": ", model.status().message()));
    }
    served->model = *std::move(model);
    namespace fs = std::filesystem;
    const fs::path dir(spec.directory);
    if (fs::exists(dir / "tokenizer.json") || fs::exists(dir / "vocab.json")) {
      auto tokenizer = Tokenizer::LoadFromDirectory(spec.directory);
      if (!tokenizer.ok()) {
        return absl::Status(tokenizer.status().code(),
                            absl::StrCat("model \"", spec.name, "\" tokenizer: ", tokenizer.status().message()));
      }
      served->tokenizer = *std::move(tokenizer);
    }
    store->models_[spec.name] = std::move(served);
  }
  return store;
}

absl::Status ModelStore::LoadSaes(const std::vector<SaeSpec>& specs) {
  for (const SaeSpec& spec : specs) {
    if (saes_.count(spec.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("SAE name \"", spec.name, "\" is given twice"));
    }
    auto model = Find(spec.model);
    if (!model.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("SAE \"", spec.name, "\" is attached to ", model.status().message()));
    }
    GB_ASSIGN_OR_RETURN(saes_[spec.name], LoadServedSae(spec, **model));
  }
  return absl::OkStatus();
}

absl::StatusOr<const ServedSae*> ModelStore::FindSae(absl::string_view name) const {
  auto it = saes_.find(std::string(name));
  if (it != saes_.end()) return it->second.get();
  std::vector<std::string> names;
  for (const auto& [n, s] : saes_) names.push_back(n);
  return absl::NotFoundError(absl::StrCat(
      "no SAE named \"", name, "\"; this server has: ",
      names.empty() ? "none (load them with --sae NAME=PATH@MODEL)" : absl::StrJoin(names, ", ")));
}

absl::StatusOr<const ServedModel*> ModelStore::Find(absl::string_view name) const {
  auto it = models_.find(std::string(name));
  if (it != models_.end()) return it->second.get();
  std::vector<std::string> names;
  for (const auto& [n, m] : models_) names.push_back(n);
  return absl::NotFoundError(absl::StrCat("no model named \"", name, "\"; this server has: ",
                                          names.empty() ? "none" : absl::StrJoin(names, ", ")));
}

}  // namespace glassbox
