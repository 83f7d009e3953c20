// The models a server holds: each loaded once at start, weights resident on its device, with
// the tokenizer found in its directory (if any), and the SAEs attached to them.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/transformer.h"
#include "server/model/tokenizer/tokenizer.h"
#include "server/service/served_sae.h"

namespace glassbox {

struct ServedModel {
  std::string name;
  std::string directory;
  std::string device;  // "cpu", "cuda:0"
  std::unique_ptr<Transformer> model;
  std::unique_ptr<Tokenizer> tokenizer;  // null when the directory has no tokenizer files
};

struct ModelSpec {
  std::string name;
  std::string directory;
};

// Parses "NAME=DIR" (the --model flag).
absl::StatusOr<ModelSpec> ParseModelSpec(absl::string_view flag_value);

class ModelStore {
 public:
  // Loads every model onto `backend`; the first failure aborts with the model's name in the
  // message.
  static absl::StatusOr<std::unique_ptr<ModelStore>> Load(const std::vector<ModelSpec>& specs,
                                                          std::shared_ptr<Backend> backend,
                                                          const std::string& device_name,
                                                          DType dtype = DType::kF32);

  // NOT_FOUND naming the models this server has.
  absl::StatusOr<const ServedModel*> Find(absl::string_view name) const;
  const std::map<std::string, std::unique_ptr<ServedModel>>& models() const { return models_; }

  // Loads SAEs onto models already loaded (host memory, f32); the first failure aborts with the
  // SAE's name in the message.
  absl::Status LoadSaes(const std::vector<SaeSpec>& specs);
  // NOT_FOUND naming the SAEs this server has.
  absl::StatusOr<const ServedSae*> FindSae(absl::string_view name) const;
  const std::map<std::string, std::unique_ptr<ServedSae>>& saes() const { return saes_; }

 private:
  std::map<std::string, std::unique_ptr<ServedModel>> models_;
  std::map<std::string, std::unique_ptr<ServedSae>> saes_;
};

}  // namespace glassbox
