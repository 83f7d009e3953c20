#include "server/service/scan_request.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace glassbox {
namespace {

// proto value -> option: 0 takes the default, -1 turns the item off.
int32_t CountOption(int32_t value, int32_t fallback) {
  return value == 0 ? fallback : value == -1 ? 0 : value;
}

pb::ScanRecord RecordProto(const ScanRecord& r, const Tensor& contexts, const Tokenizer* tokenizer) {
  pb::ScanRecord out;
  out.set_context(r.context);
  out.set_position(r.position);
  out.set_value(r.value);
  out.set_window_start(r.window_start);
  const int64_t len = contexts.dim(1);
  const int32_t* row = contexts.data<int32_t>() + r.context * len;
  const std::span<const int32_t> window(row + r.window_start, r.activations.size());
  out.mutable_tokens()->Assign(window.begin(), window.end());
  if (tokenizer != nullptr) {
    if (auto strings = tokenizer->ToStrTokens(window); strings.ok()) {
      out.mutable_token_strings()->Assign(strings->begin(), strings->end());
    }
  }
  out.mutable_activations()->Assign(r.activations.begin(), r.activations.end());
  return out;
}

}  // namespace

absl::StatusOr<ResolvedScan> ResolveScan(const ModelStore& store,
                                         const pb::StartScanRequest& request) {
  ResolvedScan scan;
  GB_ASSIGN_OR_RETURN(scan.served, store.Find(request.model()));
  const Transformer& model = *scan.served->model;
  ScanOptions& o = scan.plan.options;
  o.context_length = request.context_length() == 0 ? 64 : request.context_length();
  o.first_counted_position = request.no_bos() ? 0 : 1;
  o.top_k = CountOption(request.top_k(), 20);
  o.random_k = CountOption(request.random_k(), 20);
  o.quantile_bins = CountOption(request.quantile_bins(), 10);
  o.per_quantile_k = CountOption(request.per_quantile_k(), 5);
  o.histogram_bins = CountOption(request.histogram_bins(), 50);
  o.window_before = request.window_before() == 0 ? -1 : request.window_before();
  o.window_after = request.window_after() == 0 ? -1 : request.window_after();
  o.seed = request.seed();
  if (request.logit_k() < -1 || request.logit_k() > 1000)
    return absl::InvalidArgumentError("logit_k must be in [-1, 1000] (0: 10, -1: none)");
  if (request.batch_contexts() < 0)
    return absl::InvalidArgumentError("batch_contexts must be >= 0 (0: chosen by the server)");
  scan.batch_contexts = request.batch_contexts() > 0
                            ? request.batch_contexts()
                            : std::max(1, 4096 / std::max(1, o.context_length));
  if (request.targets_size() == 0)
    return absl::InvalidArgumentError(
        "a scan needs targets: neurons (a hook and indices), SAE features, directions or attention heads");
  for (int i = 0; i < request.targets_size(); ++i) {
    const pb::ScanTarget& t = request.targets(i);
    ScanTargetGroup group;
    ResolvedScan::Group about;
    switch (t.kind_case()) {
      case pb::ScanTarget::kNeurons: {
        GB_ASSIGN_OR_RETURN(group.hook, model.hooks().Resolve(t.neurons().hook()));
        group.kind = ScanTargetGroup::Kind::kNeurons;
        group.indices.assign(t.neurons().indices().begin(), t.neurons().indices().end());
        about = {.kind = "neuron", .hook = t.neurons().hook()};
        break;
      }
      case pb::ScanTarget::kSaeFeatures: {
        GB_ASSIGN_OR_RETURN(const ServedSae* sae, store.FindSae(t.sae_features().sae()));
        if (sae->served_model != scan.served)
          return absl::InvalidArgumentError(absl::StrCat(
              "SAE \"", sae->name, "\" is attached to model \"", sae->served_model->name,
              "\", not \"", request.model(), "\""));
        group.kind = ScanTargetGroup::Kind::kSaeFeatures;
        group.hook = sae->hook;
        group.sae = sae->sae.get();
        group.indices.assign(t.sae_features().features().begin(), t.sae_features().features().end());
        about = {.kind = "sae_feature", .hook = sae->hook_name, .sae = sae->name};
        break;
      }
      case pb::ScanTarget::kDirection: {
        const pb::DirectionTarget& d = t.direction();
        GB_ASSIGN_OR_RETURN(group.hook, model.hooks().Resolve(d.hook()));
        group.kind = ScanTargetGroup::Kind::kDirections;
        group.directions = Tensor::FromHost(std::span<const float>(d.vector().data(), d.vector().size()),
                                            {1, d.vector_size()});
        about = {.kind = "direction", .hook = d.hook(),
                 .direction_name = d.name().empty() ? absl::StrCat("direction ", i) : d.name()};
        break;
      }
      case pb::ScanTarget::kHeads: {
        const pb::HeadTargets& h = t.heads();
        if (h.layer() < 0 || h.layer() >= model.config().n_layers)
          return absl::InvalidArgumentError(absl::StrCat("targets[", i, "].heads.layer ", h.layer(),
                                                         " is out of range [0, ",
                                                         model.config().n_layers, ")"));
        const std::string block = absl::StrCat("blocks.", h.layer(), ".attn.");
        std::string hook;
        switch (h.measure()) {
          case pb::HeadTargets::OUTPUT_NORM:
            group.kind = ScanTargetGroup::Kind::kHeadNorms;
            hook = block + "hook_result";
            about = {.kind = "head_output_norm", .measure = "output norm"};
            break;
          case pb::HeadTargets::ATTENTION_TO_POSITION:
          case pb::HeadTargets::ATTENTION_TO_OFFSET: {
            if (h.key() < 0)
              return absl::InvalidArgumentError(
                  absl::StrCat("targets[", i, "].heads.key is ", h.key(), "; it must be >= 0"));
            const bool position = h.measure() == pb::HeadTargets::ATTENTION_TO_POSITION;
            group.kind = ScanTargetGroup::Kind::kAttentionTo;
            (position ? group.key_position : group.key_offset) = h.key();
            hook = block + "hook_pattern";
            about = {.kind = "head_attention",
                     .measure = position ? absl::StrCat("attention to position ", h.key())
                                         : absl::StrCat("attention to ", h.key(), " back")};
            break;
          }
          default:
            return absl::InvalidArgumentError(absl::StrCat(
                "targets[", i, "].heads.measure ", h.measure(),
                " is unknown; use OUTPUT_NORM, ATTENTION_TO_POSITION or ATTENTION_TO_OFFSET"));
        }
        GB_ASSIGN_OR_RETURN(group.hook, model.hooks().Resolve(hook));
        group.indices.assign(h.heads().begin(), h.heads().end());
        about.hook = hook;
        about.layer = h.layer();
        break;
      }
      case pb::ScanTarget::KIND_NOT_SET:
        return absl::InvalidArgumentError(absl::StrCat("targets[", i, "] sets no kind"));
    }
    scan.plan.groups.push_back(std::move(group));
    scan.groups.push_back(std::move(about));
  }
  GB_RETURN_IF_ERROR(ValidateScanPlan(model, scan.plan));
  scan.targets = ScanTargetCount(model, scan.plan);
  return scan;
}

TargetUnit LocateTarget(const ResolvedScan& scan, int64_t index) {
  const Transformer& model = *scan.served->model;
  for (const ScanTargetGroup& group : scan.plan.groups) {
    const int64_t count = group.size(model.hooks().info(group.hook));
    if (index < count) {
      return {.group = &group,
              .unit = group.indices.empty() ? static_cast<int32_t>(index) : group.indices[index]};
    }
    index -= count;
  }
  return {};
}

absl::Status AddLogitEffects(const ResolvedScan& scan, int64_t k, pb::ScanResults& results) {
  if (k <= 0 || results.targets_size() == 0) return absl::OkStatus();
  const Transformer& model = *scan.served->model;
  std::vector<TargetUnit> units;
  for (const pb::ScanTargetResult& t : results.targets()) units.push_back(LocateTarget(scan, t.index()));
  GB_ASSIGN_OR_RETURN(auto directions, OutputDirections(model, units));
  GB_ASSIGN_OR_RETURN(std::vector<LogitEffects> effects,
                      ComputeLogitEffects(model, directions.first, k));
  const Tokenizer* tokenizer = scan.served->tokenizer.get();
  auto add = [&](const std::vector<int32_t>& tokens, const std::vector<float>& values,
                 google::protobuf::RepeatedPtrField<pb::ScanLogit>* out) {
    std::vector<std::string> strings;
    if (tokenizer != nullptr) {
      if (auto s = tokenizer->ToStrTokens(tokens); s.ok()) strings = *std::move(s);
    }
    for (size_t j = 0; j < tokens.size(); ++j) {
      pb::ScanLogit& logit = *out->Add();
      logit.set_token(tokens[j]);
      logit.set_value(values[j]);
      if (j < strings.size()) logit.set_token_string(strings[j]);
    }
  };
  for (int i = 0; i < results.targets_size(); ++i) {
    if (!directions.second[i]) continue;
    pb::ScanTargetResult& t = *results.mutable_targets(i);
    add(effects[i].top_tokens, effects[i].top_values, t.mutable_top_logits());
    add(effects[i].bottom_tokens, effects[i].bottom_values, t.mutable_bottom_logits());
  }
  return absl::OkStatus();
}

pb::ScanTargetResult TargetResult(const ResolvedScan& scan, const TargetAccumulator& target,
                                  int64_t index, const Tensor& contexts, const Tokenizer* tokenizer) {
  pb::ScanTargetResult out;
  out.set_index(index);
  const TargetUnit located = LocateTarget(scan, index);
  const ResolvedScan::Group& about = scan.groups[located.group - scan.plan.groups.data()];
  const int32_t unit = located.unit;
  out.set_kind(about.kind);
  out.set_hook(about.hook);
  out.set_sae(about.sae);
  out.set_unit(unit);
  out.set_name(about.kind == "direction"     ? about.direction_name
               : about.kind == "sae_feature" ? absl::StrCat(about.sae, "[", unit, "]")
               : about.layer >= 0            ? absl::StrCat("L", about.layer, "H", unit, " ",
                                                            about.measure)
                                             : absl::StrCat(about.hook, "[", unit, "]"));
  const Moments& m = target.moments();
  pb::ScanTargetStats& stats = *out.mutable_stats();
  stats.set_count(m.n);
  stats.set_mean(m.mean);
  stats.set_variance(m.Variance());
  stats.set_skewness(m.Skewness());
  stats.set_kurtosis(m.ExcessKurtosis());
  stats.set_max(target.max());
  stats.set_min(target.min());
  stats.set_firing_frequency(m.n > 0 ? static_cast<double>(target.positive()) / m.n : 0);
  stats.set_nonzero(target.nonzero());
  for (const ScanRecord& r : target.top()) *out.add_top() = RecordProto(r, contexts, tokenizer);
  for (const ScanRecord& r : target.random()) *out.add_random() = RecordProto(r, contexts, tokenizer);
  const int64_t bins = static_cast<int64_t>(target.quantiles().size());
  for (int64_t b = 0; b < bins; ++b) {
    pb::ScanQuantile& q = *out.add_quantiles();
    q.set_lower(static_cast<float>(static_cast<double>(target.max()) * b / bins));
    q.set_upper(static_cast<float>(static_cast<double>(target.max()) * (b + 1) / bins));
    for (const ScanRecord& r : target.quantiles()[b]) *q.add_records() = RecordProto(r, contexts, tokenizer);
  }
  const int64_t hist = static_cast<int64_t>(target.histogram().size());
  if (hist > 0) {
    const double lo = target.min_nonzero(), hi = target.max_nonzero();
    for (int64_t b = 0; b <= hist; ++b) out.add_histogram_edges(static_cast<float>(lo + (hi - lo) * b / hist));
    out.mutable_histogram_counts()->Assign(target.histogram().begin(), target.histogram().end());
  }
  return out;
}

}  // namespace glassbox
