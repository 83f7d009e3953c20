// Static HTML dashboards of dataset-scan results (ScanTargetResult): one self-contained page per
// target (inline CSS and SVG, no script, nothing fetched) and an index page linking them. The
// same pages as the Python client's glassbox._dashboard (dashboard_html, write_dashboards): the
// same markup, class names and data- attributes, so that either client's pages read alike.
// Usable without gRPC.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "glassbox/v1/glassbox.pb.h"

namespace glassbox::client {

// A float as the shortest text that reads back to the same float (%.9g); "nan", "inf", "-inf"
// otherwise. What the pages' data- attributes hold.
std::string DashboardFloat(float value);

// How a token is shown on a page (before HTML escaping): a newline as ↵, a carriage return as
// ␍, a tab as ⇥; a token of only spaces as one · per space; other control characters as \xNN;
// the empty token as ∅. Other text is shown as it is.
std::string VisibleToken(std::string_view text);

// Text escaped for HTML content and attribute values (& < > " '), a carriage return as &#13;.
std::string HtmlEscape(std::string_view text);

// One target's dashboard page: its name (h1.target-name) and statistics (table.stats), the top,
// quantile and random records (div.record of one span.tok per token, with data-act, data-raw,
// data-token and a title; the record's max token with class max), the histogram of nonzero
// activations (an inline svg.histogram of rect.bar[data-count]) and the logit effects
// (table.logits[data-kind=top|bottom] of tr.logit rows).
std::string DashboardHtml(const glassbox::v1::ScanTargetResult& result);

// The file a target's page is written to: its index and a filesystem-safe form of its name,
// e.g. "00003_blocks.1.mlp.hook_post_5_.html".
std::string DashboardFilename(const glassbox::v1::ScanTargetResult& result);

// A line of the index page: a page written and its target's summary.
struct DashboardEntry {
  std::string file;  // DashboardFilename
  std::string name;
  std::string kind;
  float max = 0;
  double mean = 0;
  double firing_frequency = 0;
};
DashboardEntry DashboardEntryOf(const glassbox::v1::ScanTargetResult& result);

// The index page: `title`, the number of targets and a table.index of a tr.target per entry,
// linking its page.
std::string DashboardIndexHtml(std::string_view title, std::span<const DashboardEntry> entries);

}  // namespace glassbox::client
