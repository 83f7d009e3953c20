// `glassbox job list | watch ID | cancel ID | results ID | dashboard ID`: the server's
// dataset-scan jobs (started by `glassbox scan`): list them, follow one to its end, cancel one,
// print a finished scan's targets (statistics and top-activating contexts) as text or JSON, and
// write them as static HTML dashboards (client/cpp/dashboard.h).
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <any>
#include <filesystem>
#include <fstream>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/errors.h"
#include "client/cpp/cli/job_progress.h"
#include "client/cpp/cli/table.h"
#include "client/cpp/cli/tokens.h"
#include "client/cpp/dashboard.h"
#include "client/cpp/jobs.h"

namespace glassbox::cli {
namespace {

namespace pb = ::glassbox::v1;

constexpr Flag kFlags[] = {
    {"offset", FlagKind::kValue, "--offset N", "results, dashboard: the first target (default 0)"},
    {"limit", FlagKind::kValue, "--limit N",
     "results: targets in the page (default: the server's, 64); dashboard:\n"
     "targets written (default: all)"},
    {"top", FlagKind::kValue, "--top N",
     "results: records and logit effects printed per target (default 5;\n"
     "0 = all)"},
    {"json", FlagKind::kBool, "--json",
     "list, results: print the response as JSON (the proto's field names)"},
    {"out", FlagKind::kValue, "--out DIR",
     "dashboard: the directory the pages are written to (created if needed)"},
};

constexpr char kNotes[] =
    "  job results prints per target its statistics and top-activating contexts, the window\n"
    "  around each record's max with the max token in [[ ]]; --json prints the whole page\n"
    "  (random and quantile records, histogram and logit effects too).\n"
    "  job dashboard writes a static HTML page per target (its records shaded by activation,\n"
    "  histogram, logit effects; no script, nothing external) and DIR/index.html linking them,\n"
    "  fetching the results 64 targets at a time; it prints the index's path.\n";

constexpr char kSubcommands[] = "list, watch ID, cancel ID, results ID or dashboard ID";

// Results pages a dashboard is fetched in: the server's largest.
constexpr int64_t kDashboardPage = 64;

// Flags that only some subcommands take.
absl::Status CheckFlags(const RawCommandLine& raw, std::string_view sub) {
  for (std::string_view flag : {"offset", "limit"}) {
    if (raw.Has(flag) && sub != "results" && sub != "dashboard") {
      return UsageError(
          absl::StrFormat("--%s applies to job results and job dashboard only", flag));
    }
  }
  if (raw.Has("top") && sub != "results") return UsageError("--top applies to job results only");
  if (raw.Has("out") && sub != "dashboard") {
    return UsageError("--out applies to job dashboard only");
  }
  if (raw.Has("json") && sub != "results" && sub != "list") {
    return UsageError("--json applies to job list and job results only");
  }
  return absl::OkStatus();
}

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  const RawCommandLine& raw = line.raw;
  if (line.operands.empty()) {
    return UsageError(absl::StrFormat("job needs a subcommand: %s", kSubcommands));
  }
  const std::string& sub = line.operands[0];
  const size_t given = line.operands.size() - 1;
  if (sub == "list") {
    if (given != 0) {
      return UsageError(absl::StrFormat("job list takes no arguments (got %d)", given));
    }
    invocation.request = pb::ListJobsRequest();
  } else if (sub == "watch" || sub == "cancel" || sub == "results" || sub == "dashboard") {
    if (given != 1) {
      return UsageError(
          absl::StrFormat("job %s takes 1 argument: glassbox job %s ID (got %d)", sub, sub, given));
    }
    const std::string& id = line.operands[1];
    if (id.empty()) return UsageError(absl::StrFormat("job %s needs a job ID", sub));
    if (sub == "watch") {
      invocation.request.emplace<pb::WatchJobRequest>().set_job_id(id);
    } else if (sub == "cancel") {
      invocation.request.emplace<pb::CancelJobRequest>().set_job_id(id);
    } else {
      // results: the page asked for; dashboard: the targets to write (limit 0 = all), fetched
      // page by page.
      pb::GetScanResultsRequest& request = invocation.request.emplace<pb::GetScanResultsRequest>();
      request.set_job_id(id);
      if (std::optional<std::string> offset = raw.Value("offset")) {
        GB_ASSIGN_OR_RETURN(int64_t n, ParseInt("offset", *offset, 0, INT64_MAX));
        request.set_target_offset(n);
      }
      if (std::optional<std::string> limit = raw.Value("limit")) {
        GB_ASSIGN_OR_RETURN(int64_t n, ParseInt("limit", *limit, 1, INT64_MAX));
        request.set_target_limit(n);
      }
      if (sub == "dashboard") {
        if (!raw.Has("out")) {
          return UsageError("job dashboard needs --out DIR: the directory to write the pages to");
        }
        invocation.out_path = raw.Value("out").value_or("");
        if (invocation.out_path.empty()) return UsageError("--out needs a directory name");
      } else {
        if (raw.Has("top") && raw.IsTrue("json")) {
          return UsageError("--top applies to the text output; --json prints every record");
        }
        GB_ASSIGN_OR_RETURN(invocation.top, ParseInt32Flag(raw, "top", "5", 0));
      }
    }
  } else {
    return UsageError(absl::StrFormat("unknown job subcommand \"%s\" (job %s)", sub, kSubcommands));
  }
  GB_RETURN_IF_ERROR(CheckFlags(raw, sub));
  invocation.json = raw.IsTrue("json");
  return absl::OkStatus();
}

absl::Status PrintJson(const google::protobuf::Message& message, std::ostream& out) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return MarkLocal(absl::InternalError(absl::StrCat("cannot write JSON: ", status.ToString())));
  }
  out << json << "\n";
  return absl::OkStatus();
}

// ---- job list ----

absl::Status List(const Invocation& invocation, client::Client& client, std::ostream& out) {
  GB_ASSIGN_OR_RETURN(std::vector<pb::JobInfo> jobs, client.ListJobs());
  if (invocation.json) {
    pb::ListJobsResponse response;
    response.mutable_jobs()->Add(jobs.begin(), jobs.end());
    return PrintJson(response, out);
  }
  if (jobs.empty()) {
    out << "no jobs\n";
    return absl::OkStatus();
  }
  // An admin key sees every key's jobs; without keys the column would be empty.
  const bool owners = std::any_of(jobs.begin(), jobs.end(),
                                  [](const pb::JobInfo& job) { return !job.owner().empty(); });
  std::vector<std::vector<std::string>> table = {
      {"job", "state", "model", "targets", "pass", "tokens", "done", "elapsed", "created"}};
  if (owners) table[0].insert(table[0].begin() + 1, "owner");
  for (const pb::JobInfo& job : jobs) {
    const int64_t percent =
        job.tokens_total() > 0 ? job.tokens_done() * 100 / job.tokens_total() : 0;
    table.push_back(
        {job.job_id(), std::string(client::JobStateName(job.state())), job.model(),
         absl::StrCat(job.targets()), absl::StrFormat("%d/%d", job.current_pass(), job.passes()),
         absl::StrFormat("%d/%d", job.tokens_done(), job.tokens_total()),
         absl::StrCat(percent, "%"), FormatSeconds(job.elapsed_seconds()),
         absl::FormatTime(
             "%Y-%m-%d %H:%M:%S",
             absl::FromUnixMicros(static_cast<int64_t>(job.created_unix_seconds() * 1e6)),
             absl::LocalTimeZone())});
    if (owners) {
      table.back().insert(table.back().begin() + 1, job.owner().empty() ? "-" : job.owner());
    }
  }
  PrintTable(table, out, owners ? 4 : 3, "");
  for (const pb::JobInfo& job : jobs) {
    if (job.state() == pb::JOB_FAILED) out << job.job_id() << " failed: " << job.error() << "\n";
  }
  return absl::OkStatus();
}

// ---- job cancel ----

absl::Status Cancel(const Invocation& invocation, client::Client& client, std::ostream& out) {
  const std::string& id = Request<pb::CancelJobRequest>(invocation).job_id();
  GB_ASSIGN_OR_RETURN(pb::JobInfo info, client.CancelJob(id));
  switch (info.state()) {
    case pb::JOB_CANCELLED:
      out << absl::StrFormat("cancelled %s\n", id);
      break;
    case pb::JOB_SUCCEEDED:
    case pb::JOB_FAILED:
      out << absl::StrFormat("%s had already ended: %s\n", id, client::JobStateName(info.state()));
      break;
    default:
      out << absl::StrFormat("cancelling %s: it stops within its current batch\n", id);
  }
  return absl::OkStatus();
}

// ---- job results ----

// A token string on one line: control characters escaped.
std::string Printable(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          absl::StrAppendFormat(&out, "\\x%02x", static_cast<unsigned char>(c));
        } else {
          out += c;
        }
    }
  }
  return out;
}

// The record's window as text (token ids when the server has no strings), the max in [[ ]].
std::string RecordText(const pb::ScanRecord& record) {
  const int64_t max_at = static_cast<int64_t>(record.position()) - record.window_start();
  const bool strings = record.token_strings_size() == record.tokens_size();
  std::string text;
  for (int i = 0; i < record.tokens_size(); ++i) {
    std::string token = strings ? Printable(record.token_strings(i))
                                : absl::StrCat(i > 0 ? " " : "", record.tokens(i));
    if (i == max_at) {
      // Ids keep their separating space outside the brackets: "5 [[17]] 3".
      if (!strings && i > 0) {
        text += " ";
        token.erase(0, 1);
      }
      token = absl::StrCat("[[", token, "]]");
    }
    text += token;
  }
  return text;
}

std::string LogitList(const google::protobuf::RepeatedPtrField<pb::ScanLogit>& logits,
                      int32_t top) {
  std::vector<std::string> items;
  for (const pb::ScanLogit& logit : logits) {
    if (top > 0 && static_cast<int32_t>(items.size()) == top) break;
    const std::string token = logit.token_string().empty() ? absl::StrCat(logit.token())
                                                           : QuoteToken(logit.token_string());
    items.push_back(absl::StrCat(token, " ", Number(logit.value())));
  }
  return absl::StrJoin(items, ", ");
}

void PrintTarget(const pb::ScanTargetResult& target, int32_t top, std::ostream& out) {
  out << absl::StrFormat("[%d] %s (%s)\n", target.index(), target.name(), target.kind());
  const pb::ScanTargetStats& s = target.stats();
  out << absl::StrFormat("  mean %.4g  var %.4g  max %.4g  min %.4g  firing %.2f%% of %d tokens\n",
                         s.mean(), s.variance(), s.max(), s.min(), s.firing_frequency() * 100,
                         s.count());
  if (!target.top_logits().empty()) {
    out << "  logits up:   " << LogitList(target.top_logits(), top) << "\n";
  }
  if (!target.bottom_logits().empty()) {
    out << "  logits down: " << LogitList(target.bottom_logits(), top) << "\n";
  }
  const int shown = top > 0 ? std::min(top, target.top_size()) : target.top_size();
  if (shown == 0) {
    out << "  no top records\n";
    return;
  }
  out << absl::StrFormat("  top %d of %d (activation  context:position  window, max in [[ ]]):\n",
                         shown, target.top_size());
  std::vector<std::vector<std::string>> rows;
  for (int i = 0; i < shown; ++i) {
    const pb::ScanRecord& r = target.top(i);
    rows.push_back(
        {Number(r.value()), absl::StrFormat("%d:%d", r.context(), r.position()), RecordText(r)});
  }
  size_t value_width = 0, where_width = 0;
  for (const auto& row : rows) {
    value_width = std::max(value_width, row[0].size());
    where_width = std::max(where_width, row[1].size());
  }
  for (const auto& row : rows) {
    out << absl::StrFormat("    %*s  %-*s  %s\n", value_width, row[0], where_width, row[1], row[2]);
  }
}

absl::Status Results(const Invocation& invocation, client::Client& client, std::ostream& out) {
  const pb::GetScanResultsRequest& request = Request<pb::GetScanResultsRequest>(invocation);
  GB_ASSIGN_OR_RETURN(pb::ScanResults results, client.GetScanResults(request));
  if (invocation.json) return PrintJson(results, out);
  const pb::JobInfo& job = results.job();
  const int64_t first = request.target_offset();
  const int64_t end = first + results.targets_size();
  if (results.targets().empty()) {
    out << absl::StrFormat("%s on %s: no targets from %d (%d in all)\n", request.job_id(),
                           job.model(), first, results.targets_total());
    return absl::OkStatus();
  }
  const std::string shown = end - first == 1 ? absl::StrFormat("target %d", first)
                                             : absl::StrFormat("targets %d-%d", first, end - 1);
  out << absl::StrFormat("%s on %s: %s of %d (%d contexts, %d tokens)\n", request.job_id(),
                         job.model(), shown, results.targets_total(), job.contexts_total(),
                         job.tokens_total());
  for (const pb::ScanTargetResult& target : results.targets()) {
    out << "\n";
    PrintTarget(target, invocation.top, out);
  }
  if (end < results.targets_total()) {
    out << absl::StrFormat("\nmore: glassbox job results %s --offset %d\n", request.job_id(), end);
  }
  return absl::OkStatus();
}

// ---- job dashboard ----

absl::Status WriteText(const std::filesystem::path& path, const std::string& text) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << text;
  file.close();
  if (!file) {
    return MarkLocal(absl::PermissionDeniedError(absl::StrCat("cannot write ", path.string())));
  }
  return absl::OkStatus();
}

// Fetches the targets asked for page by page, writing each target's page as it comes (a
// progress line on `err` per results page), then index.html; prints the index's path.
absl::Status Dashboard(const Invocation& invocation, client::Client& client, std::ostream& out,
                       std::ostream& err) {
  const pb::GetScanResultsRequest& asked = Request<pb::GetScanResultsRequest>(invocation);
  const std::filesystem::path dir(invocation.out_path);
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return MarkLocal(absl::PermissionDeniedError(
        absl::StrFormat("cannot create directory %s: %s", dir.string(), error.message())));
  }
  const int64_t first = asked.target_offset();
  std::vector<client::DashboardEntry> entries;
  int64_t end = first;  // the first target not fetched yet
  for (;;) {
    int64_t limit = kDashboardPage;
    if (asked.target_limit() > 0) limit = std::min(limit, first + asked.target_limit() - end);
    if (limit <= 0) break;
    pb::GetScanResultsRequest request;
    request.set_job_id(asked.job_id());
    request.set_target_offset(end);
    request.set_target_limit(limit);
    GB_ASSIGN_OR_RETURN(pb::ScanResults page, client.GetScanResults(request));
    for (const pb::ScanTargetResult& target : page.targets()) {
      client::DashboardEntry entry = client::DashboardEntryOf(target);
      GB_RETURN_IF_ERROR(WriteText(dir / entry.file, client::DashboardHtml(target)));
      entries.push_back(std::move(entry));
    }
    end += page.targets_size();
    const int64_t last = asked.target_limit() > 0
                             ? std::min(page.targets_total(), first + asked.target_limit())
                             : page.targets_total();
    err << absl::StrFormat("%s: wrote %d/%d target pages\n", asked.job_id(), end - first,
                           std::max<int64_t>(last - first, 0));
    if (page.targets().empty() || end >= last) break;
  }
  const std::filesystem::path index = dir / "index.html";
  GB_RETURN_IF_ERROR(
      WriteText(index, client::DashboardIndexHtml(absl::StrCat("Scan ", asked.job_id()), entries)));
  out << index.string() << "\n";
  return absl::OkStatus();
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream& err) {
  const std::type_info& type = invocation.request.type();
  if (type == typeid(pb::ListJobsRequest)) return List(invocation, client, out);
  if (type == typeid(pb::CancelJobRequest)) return Cancel(invocation, client, out);
  if (type == typeid(pb::GetScanResultsRequest)) {
    // Only job dashboard has an --out.
    if (!invocation.out_path.empty()) return Dashboard(invocation, client, out, err);
    return Results(invocation, client, out);
  }
  return WatchToEnd(client, Request<pb::WatchJobRequest>(invocation).job_id(),
                    invocation.progress_in_place, out, err);
}

}  // namespace

extern constinit const Command kJobCommand = {
    .name = "job",
    .more_operands = true,
    .brief = "job list | watch ID | cancel ID | results ID | dashboard ID",
    .synopsis =
        "job list [--json]\n"
        "watch ID\n"
        "cancel ID\n"
        "results ID [--offset N] [--limit N] [--top 5] [--json]\n"
        "dashboard ID --out DIR [--offset N] [--limit N]",
    .summary =
        "the scans you started (all keys' for an admin key): list them, follow one to its\n"
        "end (exit code as for scan), cancel one, print a finished one's targets or write\n"
        "them as HTML dashboards",
    .flags = kFlags,
    .flags_heading = "Job flags:",
    .flags_notes = kNotes,
    .synopsis_rank = 2,
    .flags_rank = 2,
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
