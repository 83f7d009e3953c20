// `glassbox lre`: a linear relational embedding (Hernandez et al. 2023; docs/methods.md) fitted
// from the server's Jacobians, o ≈ β W s + b with s the subject's representation and o the
// object's at the prompt's last token: W the mean Jacobian over the fitting prompts, b the mean of
// o − W s. The last --holdout prompts measure its faithfulness: how often the model, with o
// replaced by β W s + b, predicts its own top token. glassbox.lre (Python) adds the concepts.
#include <cmath>
#include <ostream>
#include <set>
#include <utility>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/errors.h"
#include "client/cpp/cli/out_file.h"
#include "client/cpp/cli/rows.h"
#include "client/cpp/cli/table.h"
#include "client/cpp/cli/tokens.h"

namespace glassbox::cli {
namespace {

namespace pb = glassbox::v1;

// What the command sends: the prompts and hooks as a JacobianRequest, and the evaluation.
struct LreRequest {
  pb::JacobianRequest jacobian;  // model, inputs (every prompt), in/out hooks and positions
  int32_t holdout = 0;
  double beta = 1.0;
};

constexpr Flag kFlags[] = {
    kModelFlag,
    kTextFlag,
    kTokensFlag,
    kPrependBosFlag,
    {"subject_hook", FlagKind::kValue, "--subject_hook HOOK",
     "where the subject is read, e.g. blocks.0.hook_resid_pre"},
    {"subject_position", FlagKind::kValue, "--subject_position P",
     "the subject's last token in every prompt (negative from the end)"},
    {"object_hook", FlagKind::kValue, "--object_hook HOOK",
     "where the object is read, at each prompt's last token, e.g. blocks.3.hook_resid_post"},
    {"holdout", FlagKind::kValue, "--holdout N",
     "the last N prompts are not fitted but measure faithfulness (default 0)"},
    {"beta", FlagKind::kValue, "--beta B", "the scale of W s (default 1)"},
    {"out", FlagKind::kValue, "--out FILE", "\"weight\" [d_object, d_subject], \"bias\", \"beta\""},
};

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  LreRequest& lre = invocation.request.emplace<LreRequest>();
  pb::JacobianRequest& request = lre.jacobian;
  GB_RETURN_IF_ERROR(ParseModelAndRows(line, request));
  for (const char* flag : {"subject_hook", "subject_position", "object_hook"}) {
    if (!line.raw.Has(flag)) {
      return UsageError(absl::StrCat("lre needs --subject_hook, --subject_position and ",
                                     "--object_hook; --", flag, " is missing"));
    }
  }
  request.set_in_hook(*line.raw.Value("subject_hook"));
  request.set_out_hook(*line.raw.Value("object_hook"));
  GB_ASSIGN_OR_RETURN(int32_t position,
                      ParseInt32Flag(line.raw, "subject_position", "", INT32_MIN));
  request.add_in_positions(position);
  request.add_out_positions(-1);
  GB_ASSIGN_OR_RETURN(lre.holdout, ParseInt32Flag(line.raw, "holdout", "0", 0));
  const int prompts = request.inputs().texts_size() + request.inputs().token_ids_size();
  if (lre.holdout >= prompts) {
    return UsageError(absl::StrFormat(
        "--holdout %d leaves no prompt to fit (%d given)", lre.holdout, prompts));
  }
  if (line.raw.Has("beta") && !absl::SimpleAtod(*line.raw.Value("beta"), &lre.beta)) {
    return UsageError(absl::StrFormat("--beta: \"%s\" is not a number", *line.raw.Value("beta")));
  }
  return ParseOutPath(line, invocation);
}

// The prompt as a one-row request's inputs.
pb::Inputs OneRow(const std::vector<int32_t>& row) {
  pb::Inputs inputs;
  inputs.add_token_ids()->mutable_ids()->Add(row.begin(), row.end());
  return inputs;
}

int32_t TopToken(const std::vector<float>& logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best]) best = static_cast<int32_t>(i);
  }
  return best;
}

// The top token at the last position, with `edit` applied when given; and, when `capture` is
// not empty, its value at `position`.
struct Probe {
  int32_t top = -1;
  std::vector<float> captured;
};
absl::StatusOr<Probe> RunProbe(client::Client& client, const std::string& model,
                               const std::vector<int32_t>& row, const std::string& capture,
                               int32_t position, const pb::Intervention* edit) {
  pb::RunRequest request;
  request.set_model(model);
  *request.mutable_inputs() = OneRow(row);
  request.mutable_outputs()->set_logits(pb::LOGITS_LAST);
  if (!capture.empty()) {
    pb::Capture* c = request.add_captures();
    c->set_hook(capture);
    c->add_positions(position);
  }
  if (edit != nullptr) *request.add_interventions() = *edit;
  GB_ASSIGN_OR_RETURN(client::RunResult run, client.Run(request));
  Probe probe;
  const client::ReceivedTensor* logits = run.Find("logits");
  if (logits == nullptr) return absl::InternalError("malformed response: no logits");
  GB_ASSIGN_OR_RETURN(std::vector<float> values, logits->ToFloats());
  probe.top = TopToken(values);
  if (!capture.empty()) {
    const client::ReceivedTensor* value = run.Find(capture);
    if (value == nullptr) return absl::InternalError("malformed response: no " + capture);
    GB_ASSIGN_OR_RETURN(probe.captured, value->ToFloats());
  }
  return probe;
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream& err) {
  LreRequest lre = Request<LreRequest>(invocation);
  pb::JacobianRequest& request = lre.jacobian;
  const std::string model = request.model();
  GB_ASSIGN_OR_RETURN(TokenRows rows, ResolveRows(client, model, *request.mutable_inputs()));
  const int64_t n = static_cast<int64_t>(rows.size()), fitted = n - lre.holdout;
  const int32_t position = request.in_positions(0);

  // W = mean over the fitting prompts of ∂o/∂s; b = mean of o − W s. One prompt per call, so
  // prompts may differ in length.
  std::vector<double> weight;
  std::vector<std::vector<float>> outs, ins;
  int64_t d_out = 0, d_in = 0;
  for (int64_t i = 0; i < fitted; ++i) {
    err << absl::StrFormat("lre: Jacobian %d/%d\n", i + 1, fitted);
    pb::JacobianRequest one = request;
    *one.mutable_inputs() = OneRow(rows[i]);
    GB_ASSIGN_OR_RETURN(pb::JacobianResponse j, client.Jacobian(one));
    d_out = j.jacobian().shape(1);
    d_in = j.jacobian().shape(2);
    if (weight.empty()) weight.assign(d_out * d_in, 0.0);
    for (int64_t k = 0; k < d_out * d_in; ++k) weight[k] += j.jacobian().values(k) / fitted;
    outs.emplace_back(j.out_value().values().begin(), j.out_value().values().end());
    ins.emplace_back(j.in_value().values().begin(), j.in_value().values().end());
  }
  auto times_weight = [&](const std::vector<float>& s) {
    std::vector<double> ws(d_out, 0.0);
    for (int64_t o = 0; o < d_out; ++o) {
      for (int64_t k = 0; k < d_in; ++k) ws[o] += weight[o * d_in + k] * s[k];
    }
    return ws;
  };
  std::vector<double> bias(d_out, 0.0);
  for (int64_t i = 0; i < fitted; ++i) {
    const std::vector<double> ws = times_weight(ins[i]);
    for (int64_t o = 0; o < d_out; ++o) bias[o] += (outs[i][o] - ws[o]) / fitted;
  }
  double weight_norm = 0, bias_norm = 0;
  for (double w : weight) weight_norm += w * w;
  for (double b : bias) bias_norm += b * b;
  out << absl::StrFormat(
      "LRE on %s: %s[%d] -> %s[-1], W [%d, %d] from %d prompts: |W| %s, |b| %s, beta %s\n",
      model, request.in_hook(), position, request.out_hook(), d_out, d_in, fitted,
      Number(std::sqrt(weight_norm)), Number(std::sqrt(bias_norm)), Number(lre.beta));

  if (lre.holdout > 0) {
    std::vector<std::pair<int32_t, int32_t>> tops;  // (the model's, the LRE's), per prompt
    for (int64_t i = fitted; i < n; ++i) {
      err << absl::StrFormat("lre: faithfulness %d/%d\n", i - fitted + 1, lre.holdout);
      GB_ASSIGN_OR_RETURN(Probe own, RunProbe(client, model, rows[i], request.in_hook(),
                                              position, nullptr));
      const std::vector<double> ws = times_weight(own.captured);
      pb::Intervention set;
      set.set_hook(request.out_hook());
      set.set_kind(pb::INTERVENTION_SET);
      set.add_positions(-1);
      for (int64_t o = 0; o < d_out; ++o) {
        set.add_value(static_cast<float>(lre.beta * ws[o] + bias[o]));
      }
      GB_ASSIGN_OR_RETURN(Probe edited, RunProbe(client, model, rows[i], "", 0, &set));
      tops.emplace_back(own.top, edited.top);
    }
    std::set<int32_t> ids;
    for (const auto& [own, predicted] : tops) ids.insert({own, predicted});
    GB_ASSIGN_OR_RETURN(auto strings, TokenStrings(client, model, ids));
    std::vector<std::vector<std::string>> table = {
        {"prompt", "model's top token", "LRE's top token", "same"}};
    int agree = 0;
    for (size_t k = 0; k < tops.size(); ++k) {
      const auto [own, predicted] = tops[k];
      agree += own == predicted;
      table.push_back({absl::StrCat(fitted + static_cast<int64_t>(k)), TokenLabel(own, strings),
                       TokenLabel(predicted, strings), own == predicted ? "yes" : "no"});
    }
    PrintTable(table, out);
    out << absl::StrFormat("faithfulness %d/%d = %s\n", agree, lre.holdout,
                           Number(static_cast<double>(agree) / lre.holdout));
  }
  return WriteOutFile(invocation, model, request, out, [&](SafetensorsBuilder& file) {
    file.AddFloats("weight", {d_out, d_in}, std::vector<float>(weight.begin(), weight.end()));
    file.AddFloats("bias", {d_out}, std::vector<float>(bias.begin(), bias.end()));
    file.AddFloats("beta", {1}, {static_cast<float>(lre.beta)});
    file.AddTokenRows(rows);
  });
}

}  // namespace

extern constinit const Command kLreCommand = {
    .name = "lre",
    .brief = "lre --model MODEL ... --subject_hook H --subject_position P --object_hook H",
    .synopsis = "lre --model MODEL (--text TEXT | --tokens IDS)...\n"
                "--subject_hook HOOK --subject_position P --object_hook HOOK\n"
                "[--holdout N] [--beta 1] [--out FILE.safetensors]",
    .summary = "a linear relational embedding o = beta W s + b fitted from Jacobians, and its\n"
               "faithfulness on held-out prompts",
    .flags = kFlags,
    .flags_heading = "Lre flags:",
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
