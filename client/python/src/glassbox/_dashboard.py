"""Dashboards and exports of dataset-scan results (``ScanTargetResult``), in pure Python + numpy.

- ``to_neuronpedia_json``: one target as a Neuronpedia feature/neuron object (the ``Neuron`` row
  of Neuronpedia's database with its ``Activation`` rows, as its API returns a feature and as
  SAEDashboard's ``NeuronpediaConverter`` writes one), plus ``examples_quantiles``.
- ``to_neuron_explainer_records``: one target as openai/automated-interpretability's
  ``NeuronRecord`` (JSON that ``neuron_explainer.fast_dataclasses.loads`` reads back).
- ``dashboard_html``: one self-contained static HTML page per target (no script, no external
  resource); ``write_dashboards`` / ``DashboardWriter``: a directory of them with an index.html.

This module imports nothing of the package: it reads a ``ScanTargetResult`` by its attributes
(``glassbox._scans`` imports this module, for ``ScanJob.write_dashboards``).
"""

from __future__ import annotations

import html
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

_LAYER = re.compile(r"^blocks\.(\d+)\.")
# Characters a token may hold that would not show, or would break a page: each has a visible
# stand-in (the raw text stays in the span's data-raw attribute).
_VISIBLE = {"\n": "\u21b5", "\r": "\u240d", "\t": "\u21e5", " ": "\u00b7"}


# ---- values ----


def _num(value: Any) -> Optional[float]:
    """A finite float for JSON, None for NaN or an infinity (JSON has neither)."""
    x = float(value)
    return x if math.isfinite(x) else None


def _fmt(value: Any) -> str:
    """A float as the shortest text that reads back to the same float32 (9 significant
    digits always do): what data-* attributes hold."""
    x = float(np.float32(value))
    return format(x, ".9g") if math.isfinite(x) else str(x)


def _short(value: Any) -> str:
    """A float for people: 4 significant digits."""
    return format(float(value), ".4g")


def token_texts(record: Any) -> List[str]:
    """A record's tokens as strings: its ``token_strings``, or the ids as decimal strings when
    the model has no tokenizer (``token_strings`` empty)."""
    if len(record.token_strings) == len(record.tokens) and len(record.tokens) > 0:
        return list(record.token_strings)
    return [str(int(t)) for t in record.tokens]


def visible_token(text: str) -> str:
    """How a token is shown on a page (before HTML escaping): a newline as ↵, a carriage
    return as ␍, a tab as ⇥; a token of only spaces as one · per space; other control
    characters as ``\\xNN``; the empty token as ∅. Other text is shown as it is (pages keep
    spaces with ``white-space: pre``)."""
    if text == "":
        return "\u2205"
    if text.strip(" ") == "":
        return _VISIBLE[" "] * len(text)
    out = []
    for ch in text:
        if ch in "\n\r\t":
            out.append(_VISIBLE[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def layer_index(hook: str) -> Optional[int]:
    """The block number in a hook name ("blocks.3.mlp.hook_post" -> 3); None without one."""
    match = _LAYER.match(hook or "")
    return int(match.group(1)) if match else None


# ---- Neuronpedia ----


def _np_activation(record: Any, *, model_id: str, source_id: str, index: str,
                   bin_min: Optional[float], bin_max: Optional[float]) -> Dict[str, Any]:
    values = [float(v) for v in np.asarray(record.activations, dtype=np.float32)]
    return {
        "modelId": model_id,
        "layer": source_id,
        "index": index,
        "dataIndex": str(int(record.context)),
        "tokens": token_texts(record),
        "values": values,
        "maxValue": float(np.float32(record.value)),
        "maxValueTokenIndex": int(record.max_index),
        "minValue": min(values) if values else 0.0,
        "binMin": bin_min,
        "binMax": bin_max,
        "binContains": None,
    }


def _example(record: Any) -> Dict[str, Any]:
    return {
        "tokens": token_texts(record),
        "tokens_acts_list": [float(v) for v in np.asarray(record.activations, dtype=np.float32)],
        "train_token_ind": int(record.max_index),
        "is_repeated_datapoint": False,
    }


def quantile_name(i: int, quantile: Any) -> str:
    """The name of quantile group ``i`` in exports and on pages."""
    return f"Interval {i} ({_short(quantile.lower)}, {_short(quantile.upper)}]"


def to_neuronpedia_json(result: Any, *, model_id: str, source_id: str) -> Dict[str, Any]:
    """One ``ScanTargetResult`` as a Neuronpedia feature/neuron object (a JSON-ready dict).

    Field names are Neuronpedia's (its ``Neuron`` and ``Activation`` tables, which its feature
    API returns and SAEDashboard's ``NeuronpediaConverter`` fills); every float is a Python
    float of the scan's float32 value (NaN or infinite: None), nothing is rounded. Sources:

    - ``modelId``: ``model_id``; ``layer``: ``source_id`` (Neuronpedia's source, such as
      "6-res-jb"); ``index``: ``str(result.unit)`` (the neuron or feature index; a direction's
      number); ``hookName``: ``result.hook``.
    - ``maxActApprox``: ``result.stats.max``, the largest activation over every counted token.
    - ``frac_nonzero``: ``stats.nonzero / stats.count``, the fraction of counted tokens whose
      activation is not 0 (for SAE features and ReLU neurons, the firing frequency).
    - ``freq_hist_data_bar_heights``: ``result.histogram_counts``;
      ``freq_hist_data_bar_values``: the middle of each bin, from ``result.histogram_edges``
      (the histogram of the nonzero activations; both empty when every activation is 0).
    - ``pos_str`` / ``pos_values``: ``result.top_logits`` (token strings, ``W_U · w`` values);
      ``neg_str`` / ``neg_values``: ``result.bottom_logits``.
    - ``activations``: the top records in order (``binMin`` -1 and ``binMax`` the max, as
      SAEDashboard marks its top group), then each quantile bin's records (``binMin`` /
      ``binMax`` the bin's ``(lower, upper]``). Each: ``tokens`` (strings), ``values`` (each
      token's activation), ``maxValue`` (``record.value``), ``maxValueTokenIndex``
      (``record.max_index``), ``minValue``, ``dataIndex`` (the context's number in the corpus),
      and ``modelId`` / ``layer`` / ``index``. ``binContains`` (the fraction of the corpus in
      the bin) is None: a scan does not count it.
    - ``examples_quantiles``: the same records grouped as Neuronpedia's attribution-graph
      feature details have them: ``{"quantile_name", "examples": [{"tokens",
      "tokens_acts_list", "train_token_ind" (the max's index), "is_repeated_datapoint"}]}``;
      groups "Top activations", one "Interval i (lower, upper]" per quantile bin (maybe empty),
      "Random samples". ``top_logits`` / ``bottom_logits``: the logit token strings, as those
      details list them.
    - ``glassbox``: what Neuronpedia has no field for: the target's name and kind, the full
      statistics, the histogram's edges, and the quantile bins' bounds.
    """
    index = str(int(result.unit))
    stats = result.stats
    edges = np.asarray(result.histogram_edges, dtype=np.float32).astype(np.float64)
    counts = np.asarray(result.histogram_counts, dtype=np.int64)
    activations = [_np_activation(r, model_id=model_id, source_id=source_id, index=index,
                                  bin_min=-1.0, bin_max=_num(stats.max)) for r in result.top]
    for q in result.quantiles:
        activations += [_np_activation(r, model_id=model_id, source_id=source_id, index=index,
                                       bin_min=_num(q.lower), bin_max=_num(q.upper)) for r in q.records]
    groups = [{"quantile_name": "Top activations", "examples": [_example(r) for r in result.top]}]
    groups += [{"quantile_name": quantile_name(i, q), "examples": [_example(r) for r in q.records]}
               for i, q in enumerate(result.quantiles)]
    groups.append({"quantile_name": "Random samples", "examples": [_example(r) for r in result.random]})
    return {
        "modelId": model_id,
        "layer": source_id,
        "index": index,
        "hookName": result.hook,
        "maxActApprox": _num(stats.max),
        "frac_nonzero": (stats.nonzero / stats.count) if stats.count else 0.0,
        "freq_hist_data_bar_heights": [float(c) for c in counts],
        "freq_hist_data_bar_values": [float(v) for v in (edges[:-1] + edges[1:]) / 2] if counts.size else [],
        "pos_str": [x.token_string for x in result.top_logits],
        "pos_values": [_num(x.value) for x in result.top_logits],
        "neg_str": [x.token_string for x in result.bottom_logits],
        "neg_values": [_num(x.value) for x in result.bottom_logits],
        "activations": activations,
        "examples_quantiles": groups,
        "top_logits": [x.token_string for x in result.top_logits],
        "bottom_logits": [x.token_string for x in result.bottom_logits],
        "glassbox": {
            "name": result.name,
            "kind": result.kind,
            "sae": result.sae,
            "stats": {
                "count": int(stats.count), "mean": _num(stats.mean), "variance": _num(stats.variance),
                "skewness": _num(stats.skewness), "kurtosis": _num(stats.kurtosis), "max": _num(stats.max),
                "min": _num(stats.min), "firing_frequency": _num(stats.firing_frequency),
                "nonzero": int(stats.nonzero),
            },
            "histogram_edges": [float(e) for e in edges],
            "quantile_bounds": [[_num(q.lower), _num(q.upper)] for q in result.quantiles],
        },
    }


# ---- neuron-explainer (Bills et al. 2023) ----


def _activation_record(record: Any) -> Dict[str, Any]:
    return {
        "dataclass_name": "ActivationRecord",
        "tokens": token_texts(record),
        "activations": [float(v) for v in np.asarray(record.activations, dtype=np.float32)],
    }


def to_neuron_explainer_records(result: Any, *, layer: Optional[int] = None) -> Dict[str, Any]:
    """One ``ScanTargetResult`` as openai/automated-interpretability's ``NeuronRecord``
    (``neuron_explainer.activations.activations``), a JSON-ready dict. Each dict carries the
    ``dataclass_name`` that ``neuron_explainer.fast_dataclasses.loads`` dispatches on, so
    ``loads(json.dumps(record))`` gives a ``NeuronRecord``. Sources:

    - ``neuron_id``: ``{"layer_index", "neuron_index"}``: ``layer`` if given, else the block
      number in ``result.hook`` ("blocks.3.mlp.hook_post" -> 3; -1 for a hook outside the
      blocks); ``result.unit``.
    - ``most_positive_activation_records``: ``result.top``, in order; ``random_sample``:
      ``result.random``; each an ``ActivationRecord`` ``{"tokens": [str], "activations":
      [float]}`` of the record's window.
    - ``random_sample_by_quantile``: each quantile bin's records; ``quantile_boundaries``: the
      bins' edges, ``[bin 0 lower, bin 0 upper = bin 1 lower, ..., last upper]`` (Q + 1 values
      for Q bins). The scan's bins are equal-width bins of the records' max values over
      (0, stats.max], not population quantiles (docs/methods.md); both empty without bins.
    - ``mean``, ``variance`` (population), ``skewness``, ``kurtosis`` (excess, Fisher's):
      ``result.stats``, over every counted token.
    """
    if layer is None:
        found = layer_index(result.hook)
        layer = -1 if found is None else found
    boundaries: List[Optional[float]] = []
    if result.quantiles:
        boundaries = [_num(result.quantiles[0].lower)] + [_num(q.upper) for q in result.quantiles]
    stats = result.stats
    return {
        "dataclass_name": "NeuronRecord",
        "neuron_id": {"dataclass_name": "NeuronId", "layer_index": int(layer), "neuron_index": int(result.unit)},
        "random_sample": [_activation_record(r) for r in result.random],
        "random_sample_by_quantile": [[_activation_record(r) for r in q.records] for q in result.quantiles],
        "quantile_boundaries": boundaries,
        "mean": _num(stats.mean),
        "variance": _num(stats.variance),
        "skewness": _num(stats.skewness),
        "kurtosis": _num(stats.kurtosis),
        "most_positive_activation_records": [_activation_record(r) for r in result.top],
    }


# ---- HTML ----

_CSS = """
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
"""


def _color(act: float, top: float, bottom: float) -> Tuple[float, str]:
    """(intensity in [0, 1], CSS background): positive activations orange with alpha
    act / max, negative ones blue with alpha act / min."""
    if act > 0 and top > 0:
        a = min(act / top, 1.0)
        return a, f"rgba(255,140,0,{a:.3f})"
    if act < 0 and bottom < 0:
        a = min(act / bottom, 1.0)
        return a, f"rgba(60,120,255,{a:.3f})"
    return 0.0, "transparent"


def _attr(value: Any) -> str:
    """Text for an attribute value. A carriage return is written as a character reference,
    which HTML parsers keep (a literal one they turn into a newline)."""
    return html.escape(str(value), quote=True).replace("\r", "&#13;")


def _record_html(record: Any, top: float, bottom: float, kind: str) -> str:
    texts = token_texts(record)
    acts = np.asarray(record.activations, dtype=np.float32)
    tokens = np.asarray(record.tokens, dtype=np.int64)
    spans = []
    for i, (text, act) in enumerate(zip(texts, acts)):
        intensity, background = _color(float(act), top, bottom)
        classes = "tok max" if i == record.max_index else "tok"
        token_id = int(tokens[i]) if i < tokens.size else -1
        spans.append(
            f'<span class="{classes}" data-act="{_fmt(act)}" data-intensity="{intensity:.4f}" '
            f'data-token="{token_id}" data-raw="{_attr(text)}" title="{_attr(_fmt(act))}" '
            f'style="background-color: {background}">{html.escape(visible_token(text))}</span>')
    return (f'<div class="record" data-kind="{kind}" data-context="{int(record.context)}" '
            f'data-position="{int(record.position)}" data-value="{_fmt(record.value)}" '
            f'data-window-start="{int(record.window_start)}">'
            f'<span class="meta">ctx {int(record.context)} max {_short(record.value)}</span>'
            + "".join(spans) + "</div>")


def _records_html(records: Sequence[Any], top: float, bottom: float, kind: str) -> str:
    if not records:
        return '<p class="empty">none</p>'
    return "\n".join(_record_html(r, top, bottom, kind) for r in records)


def histogram_svg(edges: Any, counts: Any, *, width: int = 640, height: int = 220) -> str:
    """The histogram as an inline SVG bar chart: one ``<rect class="bar">`` per bin (with
    ``data-count``, ``data-lower``, ``data-upper`` and a tooltip), axes, tick labels at the
    range's ends and the largest count, and the axis labels "activation" and "count"."""
    edges = np.asarray(edges, dtype=np.float32)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size == 0:
        return '<p class="empty histogram-empty">no nonzero activation: no histogram</p>'
    left, right, top, bottom = 56, 12, 10, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    most = max(int(counts.max()), 1)
    bar_w = plot_w / counts.size
    parts = [f'<svg class="histogram" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" data-bins="{counts.size}" role="img">']
    for i, c in enumerate(counts):
        h = plot_h * int(c) / most
        x, y = left + i * bar_w, top + plot_h - h
        lo, hi = edges[i], edges[i + 1]
        parts.append(
            f'<rect class="bar" data-count="{int(c)}" data-lower="{_fmt(lo)}" data-upper="{_fmt(hi)}" '
            f'x="{x:.2f}" y="{y:.2f}" width="{max(bar_w - 1, 0.5):.2f}" height="{h:.2f}" fill="#e8860c">'
            f'<title>[{_short(lo)}, {_short(hi)}): {int(c)}</title></rect>')
    x0, y0 = left, top + plot_h
    parts += [
        f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x0 + plot_w}" y2="{y0}" stroke="#333"/>',
        f'<line class="axis" x1="{x0}" y1="{top}" x2="{x0}" y2="{y0}" stroke="#333"/>',
        f'<text class="tick" x="{x0}" y="{y0 + 14}" text-anchor="start">{_short(edges[0])}</text>',
        f'<text class="tick" x="{x0 + plot_w}" y="{y0 + 14}" text-anchor="end">{_short(edges[-1])}</text>',
        f'<text class="tick" x="{x0 - 4}" y="{top + 8}" text-anchor="end">{most}</text>',
        f'<text class="tick" x="{x0 - 4}" y="{y0}" text-anchor="end">0</text>',
        f'<text class="axis-label" x="{x0 + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">activation</text>',
        f'<text class="axis-label" x="14" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">count</text>',
        "</svg>",
    ]
    return "\n".join(parts)


def _logits_html(logits: Sequence[Any], kind: str, caption: str) -> str:
    rows = "".join(
        f'<tr class="logit" data-token="{int(x.token)}" data-value="{_fmt(x.value)}" data-raw="{_attr(x.token_string)}">'
        f'<td class="logit-token">{html.escape(visible_token(x.token_string))}</td>'
        f'<td class="logit-value">{_short(x.value)}</td></tr>' for x in logits)
    body = rows or '<tr><td class="empty" colspan="2">none</td></tr>'
    return f'<table class="logits" data-kind="{kind}"><caption>{caption}</caption>{body}</table>'


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def dashboard_html(result: Any, *, title: Optional[str] = None) -> str:
    """One target's dashboard: a self-contained static HTML page (inline CSS and SVG, no
    script, nothing fetched).

    Shows the target's name (``h1.target-name``) and statistics (``table.stats``, a
    ``tr[data-stat]`` per statistic), the top records (``section#top``), the quantile bins
    (``section#quantiles``, a ``div.quantile[data-lower][data-upper]`` each) and the random
    records (``section#random``), the activation histogram (``svg.histogram``, see
    ``histogram_svg``) and the top / bottom logits (``table.logits[data-kind=top|bottom]``,
    a ``tr.logit[data-token][data-value]`` each).

    A record is a ``div.record`` (``data-context``, ``data-position``, ``data-value``) of one
    ``span.tok`` per token: ``data-act`` (its activation, text that reads back to the same
    float32; also the ``title`` tooltip), ``data-raw`` (the token's exact text),
    ``data-token`` (its id), a background whose intensity is activation / stats.max (orange;
    negative activations blue, activation / stats.min) and the record's max token outlined
    (class ``max``). Token text is escaped and shown by ``visible_token``.
    """
    stats = result.stats
    top, bottom = float(stats.max), float(stats.min)
    stat_rows = [
        ("kind", result.kind + (f" (SAE {result.sae})" if result.sae else "")), ("hook", result.hook),
        ("unit", int(result.unit)), ("count", int(stats.count)), ("max", _fmt(stats.max)),
        ("min", _fmt(stats.min)), ("mean", _fmt(stats.mean)), ("variance", _fmt(stats.variance)),
        ("std", _fmt(math.sqrt(max(float(stats.variance), 0.0)))), ("skewness", _fmt(stats.skewness)),
        ("kurtosis", _fmt(stats.kurtosis)), ("firing_frequency", _fmt(stats.firing_frequency)),
        ("nonzero", int(stats.nonzero)),
    ]
    stats_html = '<table class="stats">' + "".join(
        f'<tr data-stat="{name}"><th>{name.replace("_", " ")}</th><td>{html.escape(str(value))}</td></tr>'
        for name, value in stat_rows) + "</table>"
    quantiles = "\n".join(
        f'<div class="quantile" data-index="{i}" data-lower="{_fmt(q.lower)}" data-upper="{_fmt(q.upper)}">'
        f"<h3>{html.escape(quantile_name(i, q))}: {len(q.records)} records</h3>"
        f"{_records_html(q.records, top, bottom, 'quantile')}</div>"
        for i, q in enumerate(result.quantiles)) or '<p class="empty">none</p>'
    heading = title if title is not None else result.name
    body = "\n".join([
        f'<h1 class="target-name" data-index="{int(result.index)}">{html.escape(heading)}</h1>',
        stats_html,
        '<section id="top"><h2>Top activations</h2>', _records_html(result.top, top, bottom, "top"), "</section>",
        '<section id="quantiles"><h2>Activation intervals</h2>', quantiles, "</section>",
        '<section id="random"><h2>Random samples</h2>', _records_html(result.random, top, bottom, "random"),
        "</section>",
        '<section id="histogram"><h2>Histogram of nonzero activations</h2>',
        histogram_svg(result.histogram_edges, result.histogram_counts), "</section>",
        '<section id="logits"><h2>Logit effects</h2><div class="logit-tables">',
        _logits_html(result.top_logits, "top", "promoted (top)"),
        _logits_html(result.bottom_logits, "bottom", "suppressed (bottom)"),
        "</div></section>",
    ])
    return _page(heading, body)


def page_filename(result: Any) -> str:
    """The file a target's page is written to: its index and a filesystem-safe form of its
    name, e.g. "0003_blocks.1.mlp.hook_post_5_.html"."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", result.name)[:80].strip(".") or "target"
    return f"{int(result.index):05d}_{slug}.html"


class DashboardWriter:
    """Writes dashboards into ``directory`` (created if needed) one target at a time, so that
    pages of results need not all be in memory; ``finish()`` writes index.html."""

    def __init__(self, directory: Union[str, "os.PathLike[str]"], *, title: str = "Scan dashboards") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.title = title
        self.entries: List[Tuple[str, str, str, float, float, float]] = []

    def add(self, result: Any) -> Path:
        """Writes ``result``'s page; returns its path."""
        name = page_filename(result)
        path = self.directory / name
        path.write_text(dashboard_html(result), encoding="utf-8")
        s = result.stats
        self.entries.append((name, result.name, result.kind, float(s.max), float(s.mean), float(s.firing_frequency)))
        return path

    def finish(self) -> Path:
        """Writes index.html (a link to each page written, with its max, mean and firing
        frequency); returns its path."""
        rows = "".join(
            f'<tr class="target"><td><a href="{_attr(file)}">{html.escape(name)}</a></td><td>{html.escape(kind)}</td>'
            f'<td data-stat="max">{_short(mx)}</td><td>{_short(mean)}</td><td>{_short(freq)}</td></tr>'
            for file, name, kind, mx, mean, freq in self.entries)
        body = (f"<h1>{html.escape(self.title)}</h1><p>{len(self.entries)} targets</p>"
                '<table class="index"><tr><th>target</th><th>kind</th><th>max</th><th>mean</th>'
                f"<th>firing frequency</th></tr>{rows}</table>")
        path = self.directory / "index.html"
        path.write_text(_page(self.title, body), encoding="utf-8")
        return path


def write_dashboards(results: Iterable[Any], directory: Union[str, "os.PathLike[str]"], *,
                     title: str = "Scan dashboards") -> Path:
    """Writes ``dashboard_html`` of each result to ``directory`` (``page_filename``) and an
    index.html linking them; returns the index's path."""
    writer = DashboardWriter(directory, title=title)
    for result in results:
        writer.add(result)
    return writer.finish()
