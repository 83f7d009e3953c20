#include "client/cpp/dashboard.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace glassbox::client {
namespace {

namespace pb = ::glassbox::v1;

// What a token shows for the characters that would not show (UTF-8).
constexpr char kNewline[] = "\xe2\x86\xb5";         // ↵
constexpr char kCarriageReturn[] = "\xe2\x90\x8d";  // ␍
constexpr char kTab[] = "\xe2\x87\xa5";             // ⇥
constexpr char kSpace[] = "\xc2\xb7";               // ·
constexpr char kEmpty[] = "\xe2\x88\x85";           // ∅

constexpr char kCss[] = R"(
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; text-align: left; }
table.stats th { font-weight: normal; color: #555; }
.record { font-family: ui-monospace, monospace; white-space: pre; margin: 4px 0; padding: 3px 4px;
          border-bottom: 1px solid #eee; overflow-x: auto; }
.record .meta { color: #888; font-size: 0.85em; margin-right: 1em; }
.tok { border-radius: 2px; }
.tok.max { outline: 2px solid #c00; outline-offset: -1px; }
.quantile h3 { font-size: 1em; font-weight: normal; color: #555; margin: 1em 0 0.2em; }
.logit-tables { display: flex; gap: 3em; }
.logit-token { font-family: ui-monospace, monospace; white-space: pre; }
.empty { color: #888; font-style: italic; }
svg.histogram text { font-size: 11px; fill: #333; }
)";

constexpr char kNone[] = "<p class=\"empty\">none</p>";

std::string NonFinite(double value) {
  if (std::isnan(value)) return "nan";
  return value > 0 ? "inf" : "-inf";
}

// A number for people: 4 significant digits.
std::string Short(double value) {
  if (!std::isfinite(value)) return NonFinite(value);
  return absl::StrFormat("%.4g", value);
}

// A double statistic as the float32 the Python pages show.
std::string F32(double value) { return DashboardFloat(static_cast<float>(value)); }

// The record's tokens as text: its token strings, or the ids in decimal without them.
std::vector<std::string> TokenTexts(const pb::ScanRecord& record) {
  std::vector<std::string> texts;
  if (record.tokens_size() > 0 && record.token_strings_size() == record.tokens_size()) {
    texts.assign(record.token_strings().begin(), record.token_strings().end());
  } else {
    for (int32_t id : record.tokens()) texts.push_back(absl::StrCat(id));
  }
  return texts;
}

// (intensity in [0, 1], CSS background): positive activations orange with alpha act / max,
// negative ones blue with alpha act / min.
std::pair<double, std::string> Color(double act, double top, double bottom) {
  if (act > 0 && top > 0) {
    const double a = std::min(act / top, 1.0);
    return {a, absl::StrFormat("rgba(255,140,0,%.3f)", a)};
  }
  if (act < 0 && bottom < 0) {
    const double a = std::min(act / bottom, 1.0);
    return {a, absl::StrFormat("rgba(60,120,255,%.3f)", a)};
  }
  return {0.0, "transparent"};
}

std::string RecordHtml(const pb::ScanRecord& record, double top, double bottom,
                       std::string_view kind) {
  const std::vector<std::string> texts = TokenTexts(record);
  const int64_t max_index = static_cast<int64_t>(record.position()) - record.window_start();
  const int n = std::min(static_cast<int>(texts.size()), record.activations_size());
  std::string out = absl::StrFormat(
      "<div class=\"record\" data-kind=\"%s\" data-context=\"%d\" data-position=\"%d\" "
      "data-value=\"%s\" data-window-start=\"%d\"><span class=\"meta\">ctx %d max %s</span>",
      kind, record.context(), record.position(), DashboardFloat(record.value()),
      record.window_start(), record.context(), Short(record.value()));
  for (int i = 0; i < n; ++i) {
    const float act = record.activations(i);
    const auto [intensity, background] = Color(act, top, bottom);
    const std::string value = DashboardFloat(act);
    absl::StrAppendFormat(
        &out,
        "<span class=\"%s\" data-act=\"%s\" data-intensity=\"%.4f\" data-token=\"%d\" "
        "data-raw=\"%s\" title=\"%s\" style=\"background-color: %s\">%s</span>",
        i == max_index ? "tok max" : "tok", value, intensity,
        i < record.tokens_size() ? record.tokens(i) : -1, HtmlEscape(texts[i]), HtmlEscape(value),
        background, HtmlEscape(VisibleToken(texts[i])));
  }
  out += "</div>";
  return out;
}

std::string RecordsHtml(const google::protobuf::RepeatedPtrField<pb::ScanRecord>& records,
                        double top, double bottom, std::string_view kind) {
  if (records.empty()) return kNone;
  std::vector<std::string> parts;
  for (const pb::ScanRecord& record : records) {
    parts.push_back(RecordHtml(record, top, bottom, kind));
  }
  return absl::StrJoin(parts, "\n");
}

std::string QuantileName(int i, const pb::ScanQuantile& quantile) {
  return absl::StrFormat("Interval %d (%s, %s]", i, Short(quantile.lower()),
                         Short(quantile.upper()));
}

// The histogram as an inline SVG bar chart: a rect.bar per bin (data-count, data-lower,
// data-upper and a tooltip), axes, tick labels and axis labels.
std::string HistogramSvg(const pb::ScanTargetResult& result) {
  const auto& counts = result.histogram_counts();
  const auto& edges = result.histogram_edges();
  if (counts.empty()) {
    return "<p class=\"empty histogram-empty\">no nonzero activation: no histogram</p>";
  }
  constexpr int kWidth = 640, kHeight = 220, kLeft = 56, kRight = 12, kTop = 10, kBottom = 40;
  constexpr int kPlotW = kWidth - kLeft - kRight, kPlotH = kHeight - kTop - kBottom;
  const int64_t most = std::max<int64_t>(*std::max_element(counts.begin(), counts.end()), 1);
  const double bar_w = static_cast<double>(kPlotW) / counts.size();
  auto edge = [&](int i) { return i < edges.size() ? edges[i] : 0.0f; };
  std::vector<std::string> parts = {absl::StrFormat(
      "<svg class=\"histogram\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
      "viewBox=\"0 0 %d %d\" data-bins=\"%d\" role=\"img\">",
      kWidth, kHeight, kWidth, kHeight, counts.size())};
  for (int i = 0; i < counts.size(); ++i) {
    const int64_t c = counts[i];
    const double h = static_cast<double>(kPlotH) * c / most;
    const double x = kLeft + i * bar_w, y = kTop + kPlotH - h;
    const float lo = edge(i), hi = edge(i + 1);
    parts.push_back(absl::StrFormat(
        "<rect class=\"bar\" data-count=\"%d\" data-lower=\"%s\" data-upper=\"%s\" x=\"%.2f\" "
        "y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#e8860c\"><title>[%s, %s): %d</title>"
        "</rect>",
        c, DashboardFloat(lo), DashboardFloat(hi), x, y, std::max(bar_w - 1, 0.5), h, Short(lo),
        Short(hi), c));
  }
  constexpr int x0 = kLeft, y0 = kTop + kPlotH;
  const double mid_x = x0 + kPlotW / 2.0, mid_y = kTop + kPlotH / 2.0;
  parts.push_back(absl::StrFormat(
      "<line class=\"axis\" x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>", x0, y0,
      x0 + kPlotW, y0));
  parts.push_back(absl::StrFormat(
      "<line class=\"axis\" x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>", x0, kTop,
      x0, y0));
  parts.push_back(
      absl::StrFormat("<text class=\"tick\" x=\"%d\" y=\"%d\" text-anchor=\"start\">%s</text>", x0,
                      y0 + 14, Short(edge(0))));
  parts.push_back(
      absl::StrFormat("<text class=\"tick\" x=\"%d\" y=\"%d\" text-anchor=\"end\">%s</text>",
                      x0 + kPlotW, y0 + 14, Short(edge(counts.size()))));
  parts.push_back(
      absl::StrFormat("<text class=\"tick\" x=\"%d\" y=\"%d\" text-anchor=\"end\">%d</text>",
                      x0 - 4, kTop + 8, most));
  parts.push_back(absl::StrFormat(
      "<text class=\"tick\" x=\"%d\" y=\"%d\" text-anchor=\"end\">0</text>", x0 - 4, y0));
  parts.push_back(absl::StrFormat(
      "<text class=\"axis-label\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">activation</text>",
      mid_x, kHeight - 6));
  parts.push_back(
      absl::StrFormat("<text class=\"axis-label\" x=\"14\" y=\"%.1f\" text-anchor=\"middle\" "
                      "transform=\"rotate(-90 14 %.1f)\">count</text>",
                      mid_y, mid_y));
  parts.push_back("</svg>");
  return absl::StrJoin(parts, "\n");
}

std::string LogitsHtml(const google::protobuf::RepeatedPtrField<pb::ScanLogit>& logits,
                       std::string_view kind, std::string_view caption) {
  std::string rows;
  for (const pb::ScanLogit& logit : logits) {
    absl::StrAppendFormat(&rows,
                          "<tr class=\"logit\" data-token=\"%d\" data-value=\"%s\" data-raw=\"%s\">"
                          "<td class=\"logit-token\">%s</td><td class=\"logit-value\">%s</td></tr>",
                          logit.token(), DashboardFloat(logit.value()),
                          HtmlEscape(logit.token_string()),
                          HtmlEscape(VisibleToken(logit.token_string())), Short(logit.value()));
  }
  if (rows.empty()) rows = "<tr><td class=\"empty\" colspan=\"2\">none</td></tr>";
  return absl::StrFormat("<table class=\"logits\" data-kind=\"%s\"><caption>%s</caption>%s</table>",
                         kind, caption, rows);
}

std::string Page(std::string_view title, const std::string& body) {
  return absl::StrCat("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>",
                      HtmlEscape(title), "</title><style>", kCss, "</style></head>\n<body>\n", body,
                      "\n</body></html>\n");
}

}  // namespace

std::string DashboardFloat(float value) {
  if (!std::isfinite(value)) return NonFinite(value);
  return absl::StrFormat("%.9g", value);
}

std::string VisibleToken(std::string_view text) {
  if (text.empty()) return kEmpty;
  if (text.find_first_not_of(' ') == std::string_view::npos) {
    std::string out;
    for (size_t i = 0; i < text.size(); ++i) out += kSpace;
    return out;
  }
  std::string out;
  for (char c : text) {
    if (c == '\n') {
      out += kNewline;
    } else if (c == '\r') {
      out += kCarriageReturn;
    } else if (c == '\t') {
      out += kTab;
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      absl::StrAppendFormat(&out, "\\x%02x", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  return out;
}

std::string HtmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#x27;";
        break;
      case '\r':
        out += "&#13;";  // HTML parsers turn a literal one into a newline
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string DashboardHtml(const pb::ScanTargetResult& result) {
  const pb::ScanTargetStats& stats = result.stats();
  const double top = stats.max(), bottom = stats.min();
  const std::string kind = result.sae().empty()
                               ? result.kind()
                               : absl::StrCat(result.kind(), " (SAE ", result.sae(), ")");
  const std::vector<std::pair<std::string, std::string>> stat_rows = {
      {"kind", kind},
      {"hook", result.hook()},
      {"unit", absl::StrCat(result.unit())},
      {"count", absl::StrCat(stats.count())},
      {"max", DashboardFloat(stats.max())},
      {"min", DashboardFloat(stats.min())},
      {"mean", F32(stats.mean())},
      {"variance", F32(stats.variance())},
      {"std", F32(std::sqrt(std::max(stats.variance(), 0.0)))},
      {"skewness", F32(stats.skewness())},
      {"kurtosis", F32(stats.kurtosis())},
      {"firing_frequency", F32(stats.firing_frequency())},
      {"nonzero", absl::StrCat(stats.nonzero())},
  };
  std::string stats_html = "<table class=\"stats\">";
  for (const auto& [name, value] : stat_rows) {
    std::string label = name;
    std::replace(label.begin(), label.end(), '_', ' ');
    absl::StrAppendFormat(&stats_html, "<tr data-stat=\"%s\"><th>%s</th><td>%s</td></tr>", name,
                          label, HtmlEscape(value));
  }
  stats_html += "</table>";
  std::vector<std::string> quantiles;
  for (int i = 0; i < result.quantiles_size(); ++i) {
    const pb::ScanQuantile& q = result.quantiles(i);
    quantiles.push_back(absl::StrFormat(
        "<div class=\"quantile\" data-index=\"%d\" data-lower=\"%s\" data-upper=\"%s\"><h3>%s: %d "
        "records</h3>%s</div>",
        i, DashboardFloat(q.lower()), DashboardFloat(q.upper()), HtmlEscape(QuantileName(i, q)),
        q.records_size(), RecordsHtml(q.records(), top, bottom, "quantile")));
  }
  const std::vector<std::string> body = {
      absl::StrFormat("<h1 class=\"target-name\" data-index=\"%d\">%s</h1>", result.index(),
                      HtmlEscape(result.name())),
      stats_html,
      "<section id=\"top\"><h2>Top activations</h2>",
      RecordsHtml(result.top(), top, bottom, "top"),
      "</section>",
      "<section id=\"quantiles\"><h2>Activation intervals</h2>",
      quantiles.empty() ? std::string(kNone) : absl::StrJoin(quantiles, "\n"),
      "</section>",
      "<section id=\"random\"><h2>Random samples</h2>",
      RecordsHtml(result.random(), top, bottom, "random"),
      "</section>",
      "<section id=\"histogram\"><h2>Histogram of nonzero activations</h2>",
      HistogramSvg(result),
      "</section>",
      "<section id=\"logits\"><h2>Logit effects</h2><div class=\"logit-tables\">",
      LogitsHtml(result.top_logits(), "top", "promoted (top)"),
      LogitsHtml(result.bottom_logits(), "bottom", "suppressed (bottom)"),
      "</div></section>",
  };
  return Page(result.name(), absl::StrJoin(body, "\n"));
}

std::string DashboardFilename(const pb::ScanTargetResult& result) {
  // Runs of other characters become one "_"; at most 80 characters; no leading or trailing ".".
  std::string slug;
  bool in_run = false;
  for (char c : result.name()) {
    const bool safe = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-';
    if (safe) {
      slug += c;
    } else if (!in_run) {
      slug += '_';
    }
    in_run = !safe;
  }
  slug.resize(std::min<size_t>(slug.size(), 80));
  const size_t first = slug.find_first_not_of('.');
  slug =
      first == std::string::npos ? "" : slug.substr(first, slug.find_last_not_of('.') - first + 1);
  if (slug.empty()) slug = "target";
  return absl::StrFormat("%05d_%s.html", result.index(), slug);
}

DashboardEntry DashboardEntryOf(const pb::ScanTargetResult& result) {
  return {.file = DashboardFilename(result),
          .name = result.name(),
          .kind = result.kind(),
          .max = result.stats().max(),
          .mean = result.stats().mean(),
          .firing_frequency = result.stats().firing_frequency()};
}

std::string DashboardIndexHtml(std::string_view title, std::span<const DashboardEntry> entries) {
  std::string rows;
  for (const DashboardEntry& e : entries) {
    absl::StrAppendFormat(&rows,
                          "<tr class=\"target\"><td><a href=\"%s\">%s</a></td><td>%s</td>"
                          "<td data-stat=\"max\">%s</td><td>%s</td><td>%s</td></tr>",
                          HtmlEscape(e.file), HtmlEscape(e.name), HtmlEscape(e.kind), Short(e.max),
                          Short(e.mean), Short(e.firing_frequency));
  }
  const std::string body = absl::StrFormat(
      "<h1>%s</h1><p>%d targets</p><table class=\"index\"><tr><th>target</th><th>kind</th>"
      "<th>max</th><th>mean</th><th>firing frequency</th></tr>%s</table>",
      HtmlEscape(title), entries.size(), rows);
  return Page(title, body);
}

}  // namespace glassbox::client
