"""Dashboards and exports of scan results (glassbox._dashboard).

- Unit tests on a hand-built ScanTargetResult: the Neuronpedia and neuron-explainer exports
  have the fields and values their formats name; the HTML page escapes every token ("<script>",
  "&", quotes, a newline, a carriage return) and shows whitespace; the page holds what the
  result holds; write_dashboards writes a page per target and an index.
- A real-browser test: a scan of the demo model on the session's glassboxd, its dashboards
  written by ``ScanJob.write_dashboards``, loaded in headless Chromium (``--dump-dom``) and
  parsed back: what the browser shows equals the results (tokens in order, data-act values,
  the max outlined, histogram bars, logit rows, the index's links). Without a Chromium binary
  the test is skipped loudly, or fails when GLASSBOX_REQUIRE_BROWSER=1 (as CI sets it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import pytest

import glassbox
from glassbox import ScanLogit, ScanQuantile, ScanRecord, ScanStats, ScanTargetResult
from glassbox._dashboard import page_filename, visible_token

HOOK = "blocks.1.mlp.hook_post"

# ---- a hand-built result ----

TOKENS_A = ["<script>", "alert", "&", " cat", "\n", '"q"', "'", "  ", "\r", "\t", ""]
ACTS_A = [0.5, 0.25, 2.0, 0.0, -0.5, 1.0, 0.125, 0.75, 0.0, 0.3, 0.1]
TOKENS_B = [" the", " dog", "</span>", "\x01"]
ACTS_B = [0.0, 1.5, 0.734, -1.0]


def record(context: int, tokens: Sequence[str], acts: Sequence[float], window_start: int = 3) -> ScanRecord:
    activations = np.asarray(acts, dtype=np.float32)
    best = int(np.argmax(activations))
    return ScanRecord(context=context, position=window_start + best, value=float(activations[best]),
                      window_start=window_start, tokens=np.arange(100, 100 + len(tokens), dtype=np.int64),
                      token_strings=tuple(tokens), activations=activations)


def hand_built() -> ScanTargetResult:
    a, b = record(7, TOKENS_A, ACTS_A), record(2, TOKENS_B, ACTS_B, window_start=0)
    c = record(4, [" x", " y"], [0.2, 0.1], window_start=10)
    return ScanTargetResult(
        index=3, kind="neuron", hook=HOOK, sae=None, unit=5, name=f"{HOOK}[5]",
        stats=ScanStats(count=1000, mean=0.0625, variance=0.25, skewness=1.5, kurtosis=2.25, max=2.0, min=-1.0,
                        firing_frequency=0.25, nonzero=400),
        top=(a, b), random=(c, b),
        quantiles=(ScanQuantile(0.0, 1.0, (c,)), ScanQuantile(1.0, 2.0, (a, b))),
        histogram_edges=np.asarray([-1.0, 0.0, 1.0, 2.0], dtype=np.float32),
        histogram_counts=np.asarray([100, 250, 50], dtype=np.int64),
        top_logits=(ScanLogit(11, " <b>", 3.5), ScanLogit(12, "&amp;", 2.25)),
        bottom_logits=(ScanLogit(13, "\n", -4.0),),
    )


# ---- a small DOM, from html.parser ----


class Node:
    def __init__(self, tag: str, attrs: Dict[str, str]) -> None:
        self.tag, self.attrs = tag, attrs
        self.children: List[Union["Node", str]] = []

    @property
    def classes(self) -> List[str]:
        return self.attrs.get("class", "").split()

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, match: Callable[["Node"], bool]) -> List["Node"]:
        out = []
        for child in self.children:
            if isinstance(child, Node):
                if match(child):
                    out.append(child)
                out.extend(child.find_all(match))
        return out

    def select(self, tag: str, cls: Optional[str] = None, **attrs: str) -> List["Node"]:
        return self.find_all(lambda n: n.tag == tag and (cls is None or cls in n.classes)
                             and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items()))


class _TreeBuilder(HTMLParser):
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: (v if v is not None else "") for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, {k: (v if v is not None else "") for k, v in attrs}))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(text: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


def f32(text: str) -> np.float32:
    return np.float32(float(text))


def check_page(dom: Node, result: ScanTargetResult) -> None:
    """Everything a dashboard page shows equals ``result``."""
    assert not dom.select("script"), "a page must hold no script element"
    (h1,) = dom.select("h1", "target-name")
    assert h1.text() == result.name
    stats = {row.attrs["data-stat"]: row.select("td")[0].text() for row in dom.select("tr")
             if "data-stat" in row.attrs}
    for name in ("max", "min", "mean", "variance", "skewness", "kurtosis", "firing_frequency"):
        assert f32(stats[name]) == np.float32(getattr(result.stats, name)), name
    assert int(stats["count"]) == result.stats.count and int(stats["nonzero"]) == result.stats.nonzero

    def check_records(container: Node, records: Sequence[ScanRecord], kind: str) -> None:
        shown = container.select("div", "record", data_kind=kind)
        assert len(shown) == len(records)
        for div, r in zip(shown, records):
            assert int(div.attrs["data-context"]) == r.context
            assert int(div.attrs["data-position"]) == r.position
            assert f32(div.attrs["data-value"]) == np.float32(r.value)
            spans = div.select("span", "tok")
            want = list(r.token_strings) or [str(int(t)) for t in r.tokens]
            assert [s.attrs["data-raw"] for s in spans] == want  # every token, in order, exactly
            assert [s.text() for s in spans] == [visible_token(t) for t in want]
            assert [int(s.attrs["data-token"]) for s in spans] == [int(t) for t in r.tokens]
            acts = np.asarray([f32(s.attrs["data-act"]) for s in spans], dtype=np.float32)
            np.testing.assert_array_equal(acts, r.activations)
            assert [s.attrs["title"] for s in spans] == [s.attrs["data-act"] for s in spans]
            assert [i for i, s in enumerate(spans) if "max" in s.classes] == [r.max_index]
            top = float(result.stats.max)
            for s, a in zip(spans, r.activations):
                want_intensity = min(float(a) / top, 1.0) if a > 0 and top > 0 else None
                if want_intensity is not None:
                    assert float(s.attrs["data-intensity"]) == pytest.approx(want_intensity, abs=1e-4)

    (top,) = dom.find_all(lambda n: n.attrs.get("id") == "top")
    check_records(top, result.top, "top")
    (random,) = dom.find_all(lambda n: n.attrs.get("id") == "random")
    check_records(random, result.random, "random")
    quantiles = dom.select("div", "quantile")
    assert len(quantiles) == len(result.quantiles)
    for div, q in zip(quantiles, result.quantiles):
        assert (f32(div.attrs["data-lower"]), f32(div.attrs["data-upper"])) == (np.float32(q.lower), np.float32(q.upper))
        check_records(div, q.records, "quantile")

    bars = dom.select("rect", "bar")
    assert len(bars) == len(result.histogram_counts)
    assert [int(b.attrs["data-count"]) for b in bars] == result.histogram_counts.tolist()
    if len(bars):
        (svg,) = dom.select("svg", "histogram")
        assert int(svg.attrs["data-bins"]) == len(result.histogram_counts)
        labels = [t.text() for t in svg.select("text", "axis-label")]
        assert labels == ["activation", "count"]
        edges = [f32(b.attrs["data-lower"]) for b in bars] + [f32(bars[-1].attrs["data-upper"])]
        np.testing.assert_array_equal(np.asarray(edges, dtype=np.float32), result.histogram_edges)

    for kind, logits in (("top", result.top_logits), ("bottom", result.bottom_logits)):
        (table,) = dom.select("table", "logits", data_kind=kind)
        rows = table.select("tr", "logit")
        assert [(int(r.attrs["data-token"]), r.attrs["data-raw"], f32(r.attrs["data-value"])) for r in rows] == \
               [(x.token, x.token_string, np.float32(x.value)) for x in logits]
        assert [r.select("td", "logit-token")[0].text() for r in rows] == [visible_token(x.token_string) for x in logits]


# ---- unit tests ----


def test_neuronpedia_json_has_neuronpedias_fields_and_the_results_values():
    result = hand_built()
    out = glassbox.to_neuronpedia_json(result, model_id="demo", source_id="1-mlp")
    json.dumps(out, allow_nan=False)  # valid JSON, no NaN
    assert (out["modelId"], out["layer"], out["index"], out["hookName"]) == ("demo", "1-mlp", "5", HOOK)
    assert out["maxActApprox"] == 2.0 and out["frac_nonzero"] == 0.4
    assert out["freq_hist_data_bar_heights"] == [100.0, 250.0, 50.0]
    assert out["freq_hist_data_bar_values"] == [-0.5, 0.5, 1.5]  # bin middles
    assert (out["pos_str"], out["pos_values"]) == ([" <b>", "&amp;"], [3.5, 2.25])
    assert (out["neg_str"], out["neg_values"]) == (["\n"], [-4.0])
    assert (out["top_logits"], out["bottom_logits"]) == ([" <b>", "&amp;"], ["\n"])

    acts = out["activations"]
    assert len(acts) == 2 + 1 + 2  # the top records, then each quantile bin's
    first = acts[0]
    assert first["tokens"] == TOKENS_A
    assert first["values"] == [float(np.float32(v)) for v in ACTS_A]
    assert (first["maxValue"], first["maxValueTokenIndex"], first["minValue"]) == (2.0, 2, -0.5)
    assert (first["binMin"], first["binMax"], first["binContains"]) == (-1.0, 2.0, None)
    assert (first["modelId"], first["layer"], first["index"], first["dataIndex"]) == ("demo", "1-mlp", "5", "7")
    assert acts[1]["tokens"] == TOKENS_B and acts[1]["maxValueTokenIndex"] == 1
    assert [(a["binMin"], a["binMax"]) for a in acts[2:]] == [(0.0, 1.0), (1.0, 2.0), (1.0, 2.0)]
    assert [a["dataIndex"] for a in acts[2:]] == ["4", "7", "2"]

    groups = out["examples_quantiles"]
    assert [g["quantile_name"] for g in groups] == \
           ["Top activations", "Interval 0 (0, 1]", "Interval 1 (1, 2]", "Random samples"]
    assert [len(g["examples"]) for g in groups] == [2, 1, 2, 2]
    example = groups[0]["examples"][0]
    assert example == {"tokens": TOKENS_A, "tokens_acts_list": first["values"], "train_token_ind": 2,
                       "is_repeated_datapoint": False}
    extra = out["glassbox"]
    assert extra["name"] == result.name and extra["stats"]["kurtosis"] == 2.25
    assert extra["histogram_edges"] == [-1.0, 0.0, 1.0, 2.0]
    assert extra["quantile_bounds"] == [[0.0, 1.0], [1.0, 2.0]]


def test_neuronpedia_json_without_a_tokenizer_uses_token_ids():
    r = ScanRecord(context=0, position=1, value=1.0, window_start=0, tokens=np.asarray([5, 9], dtype=np.int64),
                   token_strings=(), activations=np.asarray([0.0, 1.0], dtype=np.float32))
    result = ScanTargetResult(index=0, kind="sae_feature", hook="blocks.0.hook_resid_pre", sae="res1", unit=3,
                              name="res1[3]", stats=ScanStats(10, 0.1, 0.1, 0.0, 0.0, 1.0, 0.0, 0.1, 1),
                              top=(r,), random=(), quantiles=(), histogram_edges=np.zeros(0, np.float32),
                              histogram_counts=np.zeros(0, np.int64))
    out = glassbox.to_neuronpedia_json(result, model_id="m", source_id="0-res")
    assert out["activations"][0]["tokens"] == ["5", "9"]
    assert out["freq_hist_data_bar_heights"] == [] and out["freq_hist_data_bar_values"] == []
    assert out["pos_str"] == [] and out["neg_values"] == []
    record = glassbox.to_neuron_explainer_records(result)
    assert record["neuron_id"]["layer_index"] == 0 and record["quantile_boundaries"] == []
    assert record["random_sample_by_quantile"] == [] and record["random_sample"] == []
    page = parse(glassbox.dashboard_html(result))
    check_page(page, result)
    assert page.select("p", "histogram-empty")


# NeuronRecord's and ActivationRecord's fields in openai/automated-interpretability
# (neuron-explainer/neuron_explainer/activations/activations.py), FastDataclass's dataclass_name.
NEURON_RECORD_FIELDS = {"dataclass_name", "neuron_id", "random_sample", "random_sample_by_quantile",
                        "quantile_boundaries", "mean", "variance", "skewness", "kurtosis",
                        "most_positive_activation_records"}


def test_neuron_explainer_record_has_neuronrecords_fields_and_the_results_values():
    result = hand_built()
    out = glassbox.to_neuron_explainer_records(result)
    json.dumps(out, allow_nan=False)
    assert set(out) == NEURON_RECORD_FIELDS and out["dataclass_name"] == "NeuronRecord"
    assert out["neuron_id"] == {"dataclass_name": "NeuronId", "layer_index": 1, "neuron_index": 5}
    assert glassbox.to_neuron_explainer_records(result, layer=9)["neuron_id"]["layer_index"] == 9
    top = out["most_positive_activation_records"]
    assert top[0] == {"dataclass_name": "ActivationRecord", "tokens": TOKENS_A,
                      "activations": [float(np.float32(v)) for v in ACTS_A]}
    assert [r["tokens"] for r in top] == [TOKENS_A, TOKENS_B]
    assert [r["tokens"] for r in out["random_sample"]] == [[" x", " y"], TOKENS_B]
    assert [[r["tokens"] for r in q] for q in out["random_sample_by_quantile"]] == \
           [[[" x", " y"]], [TOKENS_A, TOKENS_B]]
    assert out["quantile_boundaries"] == [0.0, 1.0, 2.0]
    assert (out["mean"], out["variance"], out["skewness"], out["kurtosis"]) == (0.0625, 0.25, 1.5, 2.25)


def test_visible_token_shows_whitespace_and_control_characters():
    assert visible_token("\n") == "\u21b5"
    assert visible_token("a\r\nb") == "a\u240d\u21b5b"
    assert visible_token("\t") == "\u21e5"
    assert visible_token(" ") == "\u00b7" and visible_token("   ") == "\u00b7" * 3
    assert visible_token(" cat") == " cat"  # the page keeps the space (white-space: pre)
    assert visible_token("") == "\u2205"
    assert visible_token("\x01") == "\\x01"
    assert visible_token("<b>") == "<b>"  # escaped by the page, not here


def test_dashboard_html_escapes_every_token_and_shows_the_result():
    result = hand_built()
    page = glassbox.dashboard_html(result)
    # Nothing from outside the page, no script, and no token text unescaped.
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\(|https?://(?!www\.w3\.org/2000/svg)", page, re.I)
    assert "&lt;script&gt;" in page and "&lt;/span&gt;" in page and "&lt;b&gt;" in page
    assert "<b>" not in page and ">\\x01<" in page  # a control character, visible
    assert ">&amp;<" in page and "&amp;amp;" in page  # the token "&" and the logit "&amp;"
    assert 'data-raw="&quot;q&quot;"' in page and 'data-raw="&#x27;"' in page
    assert 'data-raw="&#13;"' in page  # a carriage return survives parsing as one
    assert "\r" not in page
    assert ">\u21b5<" in page  # the newline token, visible
    dom = parse(page)
    check_page(dom, result)
    (title,) = dom.select("head")[0].select("title")
    assert title.text() == result.name
    assert parse(glassbox.dashboard_html(result, title="<my> title")).select("h1")[0].text() == "<my> title"
    spans = dom.select("div", "record", data_kind="top")[0].select("span", "tok")
    assert float(spans[2].attrs["data-intensity"]) == 1.0 and "max" in spans[2].classes
    assert float(spans[0].attrs["data-intensity"]) == 0.25
    assert "rgba(60,120,255,0.500)" in spans[4].attrs["style"]  # -0.5 of min -1: blue, half
    assert spans[3].attrs["style"] == "background-color: transparent"


def test_write_dashboards_writes_a_page_per_target_and_an_index(tmp_path):
    first = hand_built()
    second = ScanTargetResult(**{**first.__dict__, "index": 4, "unit": 6, "name": f"{HOOK}[6]"})
    index = glassbox.write_dashboards([first, second], tmp_path / "out")
    assert index == tmp_path / "out" / "index.html"
    names = [page_filename(first), page_filename(second)]
    assert names == ["00003_blocks.1.mlp.hook_post_5_.html", "00004_blocks.1.mlp.hook_post_6_.html"]
    assert sorted(p.name for p in index.parent.iterdir()) == sorted(names + ["index.html"])
    links = parse(index.read_text(encoding="utf-8")).select("a")
    assert [(a.attrs["href"], a.text()) for a in links] == [(names[0], first.name), (names[1], second.name)]
    check_page(parse((index.parent / names[1]).read_text(encoding="utf-8")), second)


# ---- a real browser ----


def chromium_binary() -> str:
    """The headless browser: $GLASSBOX_CHROMIUM, else chromium or chromium-browser on PATH.
    None found: fail under GLASSBOX_REQUIRE_BROWSER=1, else skip loudly."""
    explicit = os.environ.get("GLASSBOX_CHROMIUM")
    if explicit:
        if not (shutil.which(explicit) or Path(explicit).is_file()):
            pytest.fail(f"GLASSBOX_CHROMIUM={explicit} does not exist")
        return explicit
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    message = ("no Chromium binary (looked for $GLASSBOX_CHROMIUM, chromium, chromium-browser on PATH); "
               "install it (Debian: apt-get install chromium; tools/setup.sh does)")
    if os.environ.get("GLASSBOX_REQUIRE_BROWSER") == "1":
        pytest.fail(f"GLASSBOX_REQUIRE_BROWSER=1 but {message}")
    reason = f"!!! the real-browser dashboard test is SKIPPED: {message} !!!"
    sys.stderr.write(f"\n{reason}\n")
    pytest.skip(reason)


def dump_dom(browser: str, page: Path, profile: Path) -> Node:
    """The DOM headless Chromium builds from ``page``, serialized (--dump-dom) and parsed."""
    command = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
               "--disable-extensions", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
               "--dump-dom", page.resolve().as_uri()]
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=180,
                          env={**os.environ, "HOME": str(profile)})
    out = done.stdout.decode("utf-8")
    assert done.returncode == 0 and "</html>" in out, \
        f"{' '.join(command)} exited {done.returncode}:\n{done.stderr.decode('utf-8', 'replace')[-3000:]}"
    return parse(out)


SCAN_TEXTS = [
    'Alice wrote <script>alert("x")</script> & Bob said "no".\nThen a new line & more.',
    "When Mary and John went to the store, John gave a drink to Mary.",
    "The capital of Norway is Oslo. The capital of France is Paris.",
    "one two three four five six seven eight nine ten",
    "Monday Tuesday Wednesday Thursday Friday <b> & </b>\n\n\tend",
    "15 20 25 30 35 40 45 50",
]


def test_dashboards_in_a_real_browser_show_the_scan_results(client, tmp_path, capsys):
    browser = chromium_binary()
    demo = client.model("demo")
    job = demo.start_scan(SCAN_TEXTS, neurons={HOOK: [0, 3, 7]},
                          directions={"probe": ("blocks.2.hook_resid_post",
                                                np.random.default_rng(5).standard_normal(128))},
                          context_length=16, top_k=1000, random_k=3, quantile_bins=4, per_quantile_k=2,
                          histogram_bins=12, logit_k=5, seed=3, batch_contexts=4)
    job.wait(progress=False)
    results = job.all_results()
    assert len(results) == 4

    out = tmp_path / "dash"
    index = job.write_dashboards(out, limit=3, page_size=2)  # two pages, the last one cut
    assert "dashboards" in capsys.readouterr().err  # the progress bar
    assert index == out / "index.html"
    assert sorted(p.name for p in out.iterdir()) == sorted([page_filename(r) for r in results[:3]] + ["index.html"])
    assert job.write_dashboards(tmp_path / "all", progress=False).parent == tmp_path / "all"
    assert len(list((tmp_path / "all").glob("*.html"))) == 5

    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    links = dump_dom(browser, index, profile).select("a")
    assert [(a.attrs["href"], a.text()) for a in links] == [(page_filename(r), r.name) for r in results[:3]]

    pages = [(results[0], out / page_filename(results[0])), (results[3], tmp_path / "all" / page_filename(results[3]))]
    for result, path in pages:
        assert result.top and len(result.histogram_counts) == 12
        dom = dump_dom(browser, path, profile)
        check_page(dom, result)
        # Every context is a top record (top_k > contexts), so the corpus's markup is on the
        # page: shown as text, never parsed into elements.
        shown = [s.attrs["data-raw"] for s in dom.select("span", "tok")]
        markup = [t for t in shown if "<" in t and "endoftext" not in t]
        assert markup and any("&" in t for t in shown) and "\n" in "".join(shown), shown
        assert [s.text() for s in dom.select("span", "tok") if s.attrs["data-raw"] in markup] == \
               [visible_token(t) for t in shown if t in markup]
        assert not dom.select("b") and not dom.select("script")
    neuron = results[0]
    assert neuron.top_logits and neuron.bottom_logits  # the demo model's W_out gives logit effects
    exported = glassbox.to_neuronpedia_json(neuron, model_id="demo", source_id="1-mlp")
    assert [a["tokens"] for a in exported["activations"][: len(neuron.top)]] == [list(r.token_strings) for r in neuron.top]
    assert exported["pos_str"] == [x.token_string for x in neuron.top_logits]
    record = glassbox.to_neuron_explainer_records(neuron)
    assert record["neuron_id"] == {"dataclass_name": "NeuronId", "layer_index": 1, "neuron_index": 0}
    assert len(record["most_positive_activation_records"]) == len(neuron.top)
