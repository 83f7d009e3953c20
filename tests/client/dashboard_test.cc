// The static HTML dashboards of scan results (client/cpp/dashboard.h), on a hand-built target:
// escaping, one span per token with its exact activation, the histogram's bars, the logit rows,
// file names and the index page.
#include "client/cpp/dashboard.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glassbox {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace pb = ::glassbox::v1;

int Count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Every value of `attribute` in `text`, in order.
std::vector<std::string> Attributes(const std::string& text, const std::string& attribute) {
  std::vector<std::string> values;
  const std::string key = " " + attribute + "=\"";
  for (size_t at = text.find(key); at != std::string::npos; at = text.find(key, at + 1)) {
    const size_t start = at + key.size();
    values.push_back(text.substr(start, text.find('"', start) - start));
  }
  return values;
}

pb::ScanTargetResult Target() {
  pb::ScanTargetResult target;
  target.set_index(3);
  target.set_kind("neuron");
  target.set_hook("blocks.1.mlp.hook_post");
  target.set_unit(5);
  target.set_name("blocks.1.mlp.hook_post[5]");
  pb::ScanTargetStats& stats = *target.mutable_stats();
  stats.set_count(40);
  stats.set_mean(0.25);
  stats.set_variance(0.5);
  stats.set_max(2.5f);
  stats.set_min(-1.0f);
  stats.set_firing_frequency(0.375);
  stats.set_nonzero(15);
  pb::ScanRecord& record = *target.add_top();
  record.set_context(7);
  record.set_window_start(10);
  record.set_position(12);  // the third token
  record.set_value(2.5f);
  const std::vector<std::string> strings = {"<script>", " a&b", "\"q'", "\n", "  "};
  const std::vector<float> acts = {0.1f, -1.0f, 2.5f, 1.0f / 3.0f, 0.0f};
  for (size_t i = 0; i < strings.size(); ++i) {
    record.add_tokens(100 + static_cast<int32_t>(i));
    record.add_token_strings(strings[i]);
    record.add_activations(acts[i]);
  }
  for (float edge : {0.0f, 0.5f, 1.0f, 2.5f}) target.add_histogram_edges(edge);
  for (int64_t count : {9, 4, 2}) target.add_histogram_counts(count);
  for (auto [id, text, value] : {std::tuple{1, "<b>", 0.75f}, std::tuple{2, "&", 0.5f}}) {
    pb::ScanLogit& logit = *target.add_top_logits();
    logit.set_token(id);
    logit.set_token_string(text);
    logit.set_value(value);
  }
  pb::ScanLogit& down = *target.add_bottom_logits();
  down.set_token(3);
  down.set_token_string("\n");
  down.set_value(-0.25f);
  return target;
}

TEST(DashboardTest, FloatsReadBackExactly) {
  EXPECT_EQ(client::DashboardFloat(2.5f), "2.5");
  EXPECT_EQ(client::DashboardFloat(0.1f), "0.100000001");
  EXPECT_EQ(client::DashboardFloat(1.0f / 3.0f), "0.333333343");
  for (float value : {0.1f, 1.0f / 3.0f, -7.25e-12f, 3.4e38f}) {
    EXPECT_EQ(std::strtof(client::DashboardFloat(value).c_str(), nullptr), value);
  }
}

TEST(DashboardTest, VisibleTokensAndEscaping) {
  EXPECT_EQ(client::VisibleToken("\n"), "\xe2\x86\xb5");
  EXPECT_EQ(client::VisibleToken("a\tb\r"),
            "a\xe2\x87\xa5"
            "b\xe2\x90\x8d");
  EXPECT_EQ(client::VisibleToken("  "), "\xc2\xb7\xc2\xb7");
  EXPECT_EQ(client::VisibleToken(" hi"), " hi");
  EXPECT_EQ(client::VisibleToken(""), "\xe2\x88\x85");
  EXPECT_EQ(client::VisibleToken("\x01"), "\\x01");
  EXPECT_EQ(client::HtmlEscape("<a href=\"x\">&'\r"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;&#13;");
}

TEST(DashboardTest, PageShowsEveryTokenEscaped) {
  const std::string html = client::DashboardHtml(Target());
  EXPECT_THAT(html, testing::StartsWith("<!DOCTYPE html>\n"));
  EXPECT_THAT(
      html, HasSubstr("<h1 class=\"target-name\" data-index=\"3\">blocks.1.mlp.hook_post[5]</h1>"));
  // Self-contained: no script, nothing fetched; the token "<script>" only escaped.
  EXPECT_THAT(html, Not(HasSubstr("<script")));
  EXPECT_THAT(html, Not(HasSubstr("src=")));
  EXPECT_THAT(html, Not(HasSubstr("<link")));
  EXPECT_THAT(html, HasSubstr("data-raw=\"&lt;script&gt;\""));
  EXPECT_THAT(html, HasSubstr(">&lt;script&gt;</span>"));
  EXPECT_THAT(html, HasSubstr("data-raw=\" a&amp;b\""));
  EXPECT_THAT(html, HasSubstr(">&quot;q&#x27;</span>"));
  EXPECT_THAT(html, HasSubstr("data-raw=\"\n\""));  // the raw newline, shown as ↵
  EXPECT_THAT(html, HasSubstr(">\xe2\x86\xb5</span>"));
  EXPECT_THAT(html, HasSubstr(">\xc2\xb7\xc2\xb7</span>"));

  // One span per token, in order, with exact activations, token ids and titles.
  EXPECT_EQ(Count(html, "<span class=\"tok"), 5);
  EXPECT_EQ(Attributes(html, "data-act"),
            (std::vector<std::string>{"0.100000001", "-1", "2.5", "0.333333343", "0"}));
  EXPECT_EQ(Attributes(html, "title"), Attributes(html, "data-act"));
  EXPECT_EQ(Attributes(html, "data-token"),
            (std::vector<std::string>{"100", "101", "102", "103", "104", "1", "2", "3"}));
  EXPECT_EQ(Count(html, "<span class=\"tok max\""), 1);
  EXPECT_THAT(html,
              HasSubstr("<span class=\"tok max\" data-act=\"2.5\" data-intensity=\"1.0000\""));
  EXPECT_THAT(html, HasSubstr("data-act=\"-1\" data-intensity=\"1.0000\" data-token=\"101\""));
  EXPECT_THAT(html, HasSubstr("background-color: rgba(60,120,255,1.000)"));
  EXPECT_THAT(html, HasSubstr("<div class=\"record\" data-kind=\"top\" data-context=\"7\" "
                              "data-position=\"12\" data-value=\"2.5\" data-window-start=\"10\">"));

  // The histogram: a bar per bin with its count.
  EXPECT_EQ(Count(html, "<svg class=\"histogram\""), 1);
  EXPECT_THAT(html, HasSubstr("data-bins=\"3\""));
  EXPECT_EQ(Count(html, "<rect class=\"bar\""), 3);
  EXPECT_EQ(Attributes(html, "data-count"), (std::vector<std::string>{"9", "4", "2"}));
  EXPECT_THAT(html, HasSubstr("data-lower=\"1\" data-upper=\"2.5\""));

  // The logit tables: a row per logit, escaped.
  EXPECT_THAT(html, HasSubstr("<table class=\"logits\" data-kind=\"top\">"));
  EXPECT_THAT(html, HasSubstr("<table class=\"logits\" data-kind=\"bottom\">"));
  EXPECT_EQ(Count(html, "<tr class=\"logit\""), 3);
  EXPECT_THAT(html, HasSubstr("<tr class=\"logit\" data-token=\"1\" data-value=\"0.75\" "
                              "data-raw=\"&lt;b&gt;\"><td class=\"logit-token\">&lt;b&gt;</td>"));
  EXPECT_THAT(html, HasSubstr("data-value=\"-0.25\" data-raw=\"\n\"><td class=\"logit-token\">"
                              "\xe2\x86\xb5</td>"));

  // Statistics; empty sections say so.
  EXPECT_THAT(html, HasSubstr("<tr data-stat=\"firing_frequency\"><th>firing frequency</th>"
                              "<td>0.375</td></tr>"));
  EXPECT_THAT(html, HasSubstr("<tr data-stat=\"max\"><th>max</th><td>2.5</td></tr>"));
  EXPECT_THAT(html, HasSubstr("<section id=\"random\"><h2>Random samples</h2>\n"
                              "<p class=\"empty\">none</p>"));
}

TEST(DashboardTest, NoHistogramWithoutBins) {
  pb::ScanTargetResult target = Target();
  target.clear_histogram_counts();
  target.clear_histogram_edges();
  target.clear_top_logits();
  const std::string html = client::DashboardHtml(target);
  EXPECT_THAT(html, Not(HasSubstr("<rect")));
  EXPECT_THAT(html, HasSubstr("no nonzero activation: no histogram"));
  EXPECT_THAT(html, HasSubstr("<table class=\"logits\" data-kind=\"top\"><caption>promoted (top)"
                              "</caption><tr><td class=\"empty\" colspan=\"2\">none</td></tr>"));
}

TEST(DashboardTest, FilenamesAndIndex) {
  pb::ScanTargetResult target = Target();
  EXPECT_EQ(client::DashboardFilename(target), "00003_blocks.1.mlp.hook_post_5_.html");
  target.set_name("..<a> b/c..");
  EXPECT_EQ(client::DashboardFilename(target), "00003__a_b_c.html");
  target.set_name("...");
  EXPECT_EQ(client::DashboardFilename(target), "00003_target.html");

  std::vector<client::DashboardEntry> entries = {client::DashboardEntryOf(Target())};
  entries.push_back({.file = "00004_x.html", .name = "<x>", .kind = "direction"});
  const std::string index = client::DashboardIndexHtml("Scan <s>", entries);
  EXPECT_THAT(index, HasSubstr("<title>Scan &lt;s&gt;</title>"));
  EXPECT_THAT(index, HasSubstr("<p>2 targets</p>"));
  EXPECT_EQ(Count(index, "<tr class=\"target\">"), 2);
  EXPECT_THAT(index, HasSubstr("<tr class=\"target\"><td><a href=\"00003_blocks.1.mlp.hook_post_5_."
                               "html\">blocks.1.mlp.hook_post[5]</a></td><td>neuron</td>"
                               "<td data-stat=\"max\">2.5</td><td>0.25</td><td>0.375</td></tr>"));
  EXPECT_THAT(index, HasSubstr("<a href=\"00004_x.html\">&lt;x&gt;</a>"));
  EXPECT_THAT(index, Not(HasSubstr("<script")));
}

}  // namespace
}  // namespace glassbox
