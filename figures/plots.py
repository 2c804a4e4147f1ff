"""Plot functions and the one writer `save`.

A plot function is pure: artifact data in, a `Chart` out. It first builds the figure's data
as a small `Table` (bin counts, ranked tokens, bars with their intervals), then draws it
twice from that table: with matplotlib (PNG/SVG, the PDF) and as a plotly spec
(`figures.interactive`, the HTML). `save` writes both and the table as CSV."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Fixed metadata keeps PNG/SVG bytes identical across runs (no dates, no random ids).
_PNG_META = {"Software": None}
_SVG_META = {"Date": None, "Creator": None}
plt.rcParams["svg.hashsalt"] = "german-neuron"


# ------------------------------------------------------------------ token labels

_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥"}


@lru_cache(maxsize=1)
def _glyphs() -> frozenset[int]:
    """Code points the default font (DejaVu Sans) can draw."""
    from matplotlib import font_manager

    font = font_manager.get_font(font_manager.findfont("DejaVu Sans"))
    return frozenset(font.get_charmap())


def _spell(token: str, drawable, escapes: dict[str, str]) -> str:
    """`token` with `escapes` applied and any character not `drawable` as `\\u{hex}`."""
    out = []
    for ch in token:
        if ch in escapes:
            out.append(escapes[ch])
        elif not drawable(ch):
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return "".join(out) or "∅"


def token_label(token: str) -> str:
    """A token as a tick label: spaces as `␣`, newlines as `↵`, tabs as `⇥`, `$` escaped
    (mathtext), and characters the font lacks as `\\u{hex}`."""
    return _spell(token, lambda ch: ch.isprintable() and ord(ch) in _glyphs(), {**_VISIBLE, "$": r"\$"})


def md_token(token: str) -> str:
    """A token as a markdown code span for the report tables: spaces `␣`, newlines `↵`,
    tabs `⇥`, other non-printable characters as `\\u{hex}`; a token with a backtick gets a
    double-backtick fence."""
    s = _spell(token, str.isprintable, _VISIBLE)
    return f"`` {s} ``" if "`" in s else f"`{s}`"


# ------------------------------------------------------------------ figure data


class Table:
    """A figure's data: named columns of equal length, one row per mark (tidy). The one
    source both renderings draw from (matplotlib for the PDF, plotly for the HTML) and
    written as `<name>.csv` beside the figure.

    Values are plain Python numbers and strings; None (or NaN) is a missing value (an
    empty CSV cell).
    """

    def __init__(self, columns: Mapping[str, Sequence]):
        cols = {str(k): [_plain(v) for v in vals] for k, vals in columns.items()}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise ValueError(f"table columns of different lengths: "
                             f"{ {k: len(v) for k, v in cols.items()} }")
        self.columns = cols

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def __getitem__(self, name: str) -> list:
        return self.columns[name]

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    def rows(self) -> list[dict]:
        return [dict(zip(self.columns, r, strict=True)) for r in zip(*self.columns.values(), strict=True)]

    def where(self, **match) -> Table:
        """The rows whose columns equal `match`."""
        keep = [i for i in range(len(self))
                if all(self.columns[k][i] == v for k, v in match.items())]
        return Table({k: [v[i] for i in keep] for k, v in self.columns.items()})

    def head(self, n: int) -> Table:
        return Table({k: v[:n] for k, v in self.columns.items()})

    @classmethod
    def concat(cls, tables: Sequence[Table]) -> Table:
        names = list(dict.fromkeys(k for t in tables for k in t.columns))
        return cls({k: [v for t in tables for v in (t.columns.get(k) or [None] * len(t))]
                    for k in names})

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(list(self.columns))
        for row in zip(*self.columns.values(), strict=True):
            w.writerow(["" if v is None or (isinstance(v, float) and not math.isfinite(v))
                        else repr(v) if isinstance(v, float) else v for v in row])
        return buf.getvalue()


def _plain(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@dataclass(frozen=True)
class Chart:
    """One figure, drawn twice from one table: `static` (a matplotlib Figure: PNG and SVG,
    shown in the PDF) and `interactive` (a plotly spec `{"data", "layout"}`, shown in the
    HTML). `function` names the plot function that built it."""

    table: Table
    static: object
    interactive: dict
    function: str = ""


def check_spec(spec: dict) -> dict:
    """Validate a plotly spec against plotly's schema (raises ValueError naming the bad
    property); returns it unchanged (no template or defaults are added)."""
    import plotly.graph_objects as go

    go.Figure({"data": spec["data"], "layout": spec["layout"]})
    return spec


def histogram_table(series: Mapping[str, np.ndarray], bins: int = 60,
                    shared_edges: bool = True) -> Table:
    """Bin counts of each series (`{name: values}`): columns `series, bin, left, right,
    count, percent` (percent of that series' values). `shared_edges`: one set of `bins`
    equal bins over the range of all series; else each series its own. Raw values never
    leave this function: the figures and their CSV hold counts only."""
    def edges_of(values: list[np.ndarray]) -> np.ndarray:
        vals = [np.asarray(v, dtype=np.float64) for v in values if len(v)]
        lo = float(min(v.min() for v in vals)) if vals else 0.0
        hi = float(max(v.max() for v in vals)) if vals else 1.0
        return np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)

    shared = edges_of(list(series.values())) if shared_edges else None
    cols: dict[str, list] = {k: [] for k in ("series", "bin", "left", "right", "count", "percent")}
    for name, values in series.items():
        v = np.asarray(values, dtype=np.float64)
        edges = shared if shared is not None else edges_of([v])
        counts, _ = np.histogram(v, bins=edges)
        pct = counts * (100.0 / max(len(v), 1))
        cols["series"] += [name] * bins
        cols["bin"] += list(range(bins))
        cols["left"] += [float(x) for x in edges[:-1]]
        cols["right"] += [float(x) for x in edges[1:]]
        cols["count"] += [int(c) for c in counts]
        cols["percent"] += [float(p) for p in pct]
    return Table(cols)


def counts_table(edges: Sequence[float], counts: Mapping[str, Sequence[int]]) -> Table:
    """A `histogram_table` from bin counts already made (`edges`: `[bins + 1]`; `counts`:
    `{series: [bins]}`), e.g. an artifact's."""
    cols: dict[str, list] = {k: [] for k in ("series", "bin", "left", "right", "count", "percent")}
    for name, c in counts.items():
        total = max(int(sum(c)), 1)
        cols["series"] += [name] * len(c)
        cols["bin"] += list(range(len(c)))
        cols["left"] += [float(x) for x in edges[:-1]]
        cols["right"] += [float(x) for x in edges[1:]]
        cols["count"] += [int(x) for x in c]
        cols["percent"] += [100.0 * int(x) / total for x in c]
    return Table(cols)


def draw_histogram(ax, table: Table, y: str = "percent", colors: Mapping[str, str] | None = None,
                   alpha: float = 0.6, legend: bool = True) -> None:
    """Matplotlib bars of a `histogram_table` (each bin from `left` to `right`)."""
    colors = {"English": "#4C72B0", "German": "#DD8452", **(colors or {})}
    for i, name in enumerate(dict.fromkeys(table["series"])):
        t = table.where(series=name)
        left = np.asarray(t["left"])
        width = np.asarray(t["right"]) - left
        ax.bar(left, t[y], width=width, align="edge", alpha=alpha, linewidth=0,
               color=colors.get(name, ("#DD8452", "#4C72B0", "#8C8C8C")[i % 3]),
               label=f"{name} (n={sum(t['count']):,})" if legend else None)


def token_table(rows: Sequence[Mapping], value: str = "value", **extra) -> Table:
    """A ranked token list (`[{"token", "token_id" or "id", value}]`) as a table: `rank`
    (from 1), `token`, `token_id`, `value`, plus constant columns `extra`."""
    n = len(rows)
    return Table({**{k: [v] * n for k, v in extra.items()},
                  "rank": list(range(1, n + 1)), "token": [r["token"] for r in rows],
                  "token_id": [r.get("token_id", r.get("id")) for r in rows],
                  "value": [float(r[value]) for r in rows]})


# ------------------------------------------------------------------ figures


def activation_histogram(english: np.ndarray, german: np.ndarray, neuron: str, bins: int = 60,
                         title: str | None = None) -> Chart:
    """Histogram (percent of activations) of one neuron's `hook_post` on English vs German.
    Seed: `two_histogram(english_activations[layer][:, neuron], german_activations[...])`."""
    table = histogram_table({"English": english, "German": german}, bins)
    return histogram_chart(table, f"{neuron} activation (hook_post)",
                           title or f"{neuron} activations on English vs German text",
                           "figures.plots.activation_histogram")


def histogram_chart(table: Table, xlabel: str, title: str, function: str,
                    colors: Mapping[str, str] | None = None, unit: str = "activations") -> Chart:
    """An overlaid percent histogram of a `histogram_table`, static and interactive."""
    from . import interactive as ia

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    draw_histogram(ax, table, colors=colors)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"% of {unit}")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    spec = ia.spec(ia.histogram_traces(table, colors=colors, unit=unit),
                   ia.layout(ia.plot_text(title), barmode="overlay", bargap=0,
                             xaxis=ia.axis(ia.plot_text(xlabel)),
                             yaxis=ia.axis(f"% of {unit}", rangemode="tozero")))
    return Chart(table, fig, check_spec(spec), function)


def error_bars(values, intervals) -> np.ndarray | None:
    """Matplotlib's asymmetric `yerr` ([2, n] distances below and above each value) from
    95% intervals `[[lo, hi], ...]`; None when any interval is missing."""
    if any(c is None for c in intervals):
        return None
    v = np.asarray(values, dtype=float)
    c = np.asarray(intervals, dtype=float)
    return np.clip(np.stack([v - c[:, 0], c[:, 1] - v]), 0.0, None)


def table_error(t: Table, value: str = "value") -> tuple[list, list] | None:
    """(below, above) distances from `value` to the `ci_low`/`ci_high` columns; None when
    any bound is missing."""
    if "ci_low" not in t or any(v is None for v in t["ci_low"] + t["ci_high"]):
        return None
    return ([max(v - lo, 0.0) for v, lo in zip(t[value], t["ci_low"], strict=True)],
            [max(hi - v, 0.0) for v, hi in zip(t[value], t["ci_high"], strict=True)])


def ablation_table(rows: Sequence[Mapping]) -> Table:
    """Mean-ablation rows (`ablation` artifact `single`) as a table: `neuron, language,
    percent_increase, ci_low, ci_high, original, ablated, value` (value: the ablation value)."""
    cols: dict[str, list] = {k: [] for k in ("neuron", "language", "percent_increase", "ci_low",
                                             "ci_high", "original", "ablated", "value")}
    for lang in ("german", "english"):
        for r in rows:
            d = r[lang]
            ci = d.get("percent_increase_ci") or [None, None]
            for k, v in (("neuron", r["neuron"]), ("language", lang),
                         ("percent_increase", d["percent_increase"]), ("ci_low", ci[0]),
                         ("ci_high", ci[1]), ("original", d["original"]),
                         ("ablated", d["ablated"]), ("value", r.get("value"))):
                cols[k].append(v)
    return Table(cols)


def ablation_bar(rows: list[dict]) -> Chart:
    """Loss increase (%) from mean-ablating each neuron, German and English side by side,
    with 95% paired-bootstrap intervals as error bars.
    `rows`: [{"neuron", "german": {"percent_increase", "percent_increase_ci"}, "english": {...}}]."""
    from . import interactive as ia

    table = ablation_table(rows)
    de, en = table.where(language="german"), table.where(language="english")
    names = de["neuron"]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7.0, 3.6), dpi=110)
    for t, off, label, color in ((de, -0.2, "German", "#DD8452"), (en, 0.2, "English", "#4C72B0")):
        err = table_error(t, "percent_increase")
        ax.bar(x + off, t["percent_increase"], 0.4, yerr=None if err is None else np.array(err),
               capsize=2, label=label, color=color)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("loss increase (%)")
    title = "Mean ablation: loss increase per neuron (bars: 95% interval)"
    ax.set_title(title)
    ax.legend(frameon=False)
    fig.tight_layout()
    data = [ablation_trace(t, label, color) for t, label, color in
            ((de, "German", ia.GERMAN), (en, "English", ia.ENGLISH))]
    spec = ia.spec(data, ia.layout(title, barmode="group",
                                   xaxis=ia.axis("neuron", type="category"),
                                   yaxis=ia.axis("loss increase (%)")))
    return Chart(table, fig, check_spec(spec), "figures.plots.ablation_bar")


def ablation_trace(t: Table, label: str, color: str, x: Sequence | None = None) -> dict:
    """A plotly bar trace of ablation rows (one language) with their 95% intervals."""
    from . import interactive as ia

    ci = [[lo, hi] for lo, hi in zip(ia.num(t["ci_low"], 5), ia.num(t["ci_high"], 5), strict=True)]
    return ia.bar_trace(
        x if x is not None else t["neuron"], t["percent_increase"], label, color,
        f"<b>%{{x}}</b>, {label}<br>loss %{{customdata[2]:.4f}} → %{{customdata[3]:.4f}} nats"
        "<br>increase %{y:+.3f}% [95% CI %{customdata[0]:+.3f}, %{customdata[1]:+.3f}]",
        customdata=[[c[0], c[1], o, a] for c, o, a in
                    zip(ci, ia.num(t["original"]), ia.num(t["ablated"]), strict=True)],
        error=table_error(t, "percent_increase"))


def effect_summary(ablation: Mapping, probe: Mapping | None, seed: Mapping | None = None) -> Chart:
    """The finding at a glance: the loss increase (%) on German and on English when the
    context neuron is mean-ablated, with 95% intervals, and its probe F1 with its interval;
    the seed's printed values as black diamonds when given.

    `ablation`: the `ablation` artifact's `context` entry; `probe`: the context neuron's
    `probes` row (or None); `seed`: {"german", "english", "f1"} (or None)."""
    from . import interactive as ia

    cols: dict[str, list] = {k: [] for k in ("metric", "language", "value", "ci_low", "ci_high",
                                             "seed")}
    for lang in ("german", "english"):
        d = ablation[lang]
        ci = d.get("percent_increase_ci") or [None, None]
        for k, v in (("metric", "loss increase (%)"), ("language", lang),
                     ("value", d["percent_increase"]), ("ci_low", ci[0]), ("ci_high", ci[1]),
                     ("seed", (seed or {}).get(lang))):
            cols[k].append(v)
    if probe is not None:
        ci = probe.get("f1_ci") or [None, None]
        for k, v in (("metric", "probe F1"), ("language", "German vs English"),
                     ("value", probe["f1"]), ("ci_low", ci[0]), ("ci_high", ci[1]),
                     ("seed", (seed or {}).get("f1"))):
            cols[k].append(v)
    table = Table(cols)
    neuron = ablation["neuron"]
    loss = table.where(metric="loss increase (%)")
    f1 = table.where(metric="probe F1")
    labels = [lang.capitalize() for lang in loss["language"]]
    colors = ["#DD8452", "#4C72B0"]
    n_panels = 2 if len(f1) else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(7.0 if n_panels == 2 else 4.6, 3.0), dpi=110,
                             squeeze=False, gridspec_kw={"width_ratios": [2, 1][:n_panels]})
    ax = axes[0, 0]
    err = table_error(loss)
    ax.bar(labels, loss["value"], yerr=None if err is None else np.array(err), capsize=4,
           color=colors, width=0.6)
    has_seed = any(s is not None for s in table["seed"])
    if has_seed:
        ax.scatter([lb for lb, s in zip(labels, loss["seed"], strict=True) if s is not None],
                   [s for s in loss["seed"] if s is not None], marker="D", color="black", zorder=3,
                   label="seed notebook")
        ax.legend(frameon=False, fontsize=8)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("loss increase (%)")
    ax.set_title(f"Mean-ablating {neuron}", fontsize=10)
    if n_panels == 2:
        ax = axes[0, 1]
        err = table_error(f1)
        ax.bar(["F1"], f1["value"], yerr=None if err is None else np.array(err), capsize=4,
               color="#8C8C8C", width=0.5)
        if f1["seed"][0] is not None:
            ax.scatter(["F1"], f1["seed"], marker="D", color="black", zorder=3)
        ax.set_ylim(0, 1.05)
        ax.set_title("probe, German vs English", fontsize=9)
    fig.tight_layout()

    data = [ia.bar_trace(labels, loss["value"], "loss increase", colors,
                         "<b>%{x}</b><br>loss increase %{y:+.3f}%"
                         "<br>95% CI [%{customdata[0]:+.3f}, %{customdata[1]:+.3f}]",
                         customdata=[[lo, hi] for lo, hi in zip(ia.num(loss["ci_low"]), ia.num(loss["ci_high"]), strict=True)],
                         error=table_error(loss), showlegend=False, width=0.6)]
    lay = ia.layout(f"{ia.plot_text(neuron)}: the effect at a glance", height=340,
                    xaxis=ia.axis(None, domain=[0, 0.6] if n_panels == 2 else [0, 1]),
                    yaxis=ia.axis("loss increase (%)"))
    if has_seed:
        keep = [i for i, s in enumerate(loss["seed"]) if s is not None]
        data.append({"type": "scatter", "mode": "markers", "name": "seed notebook",
                     "x": [labels[i] for i in keep], "y": ia.num([loss["seed"][i] for i in keep]),
                     "marker": {"symbol": "diamond", "color": "black", "size": 9},
                     "hovertemplate": "seed notebook: %{y:+.2f}%<extra></extra>"})
    if n_panels == 2:
        data.append(ia.bar_trace(["probe F1"], f1["value"], "probe F1", "#8C8C8C",
                                 "probe F1 %{y:.3f}<br>95% CI [%{customdata[0]:.3f}, %{customdata[1]:.3f}]",
                                 customdata=[ia.num([f1["ci_low"][0], f1["ci_high"][0]])],
                                 error=table_error(f1), axes=("x2", "y2"), showlegend=False,
                                 width=0.5))
        if f1["seed"][0] is not None:
            data.append({"type": "scatter", "mode": "markers", "name": "seed notebook (F1)",
                         "x": ["probe F1"], "y": ia.num(f1["seed"]), "xaxis": "x2", "yaxis": "y2",
                         "showlegend": False,
                         "marker": {"symbol": "diamond", "color": "black", "size": 9},
                         "hovertemplate": "seed notebook: %{y:.2f}<extra></extra>"})
        lay["xaxis2"] = ia.axis(None, domain=[0.72, 1], anchor="y2")
        lay["yaxis2"] = ia.axis("F1", anchor="x2", range=[0, 1.05])
    lay["showlegend"] = has_seed
    return Chart(table, fig, check_spec(ia.spec(data, lay)), "figures.plots.effect_summary")


# ------------------------------------------------------------------ writer


def save(fig, out_dir: Path, name: str, meta: dict) -> dict:
    """Write a figure: `<name>.png` and `<name>.svg` (static), and for a `Chart` also
    `<name>.csv` (its data table) and `<name>.plotly.json` (its interactive spec); then
    `<name>.json`, the record (meta + file names + the table's columns). Atomic writes."""
    from analysis.core.artifacts import atomic_write_bytes, atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chart = fig if isinstance(fig, Chart) else None
    static = chart.static if chart else fig
    for ext, md in (("png", _PNG_META), ("svg", _SVG_META)):
        buf = io.BytesIO()
        static.savefig(buf, format=ext, metadata=md)
        atomic_write_bytes(out_dir / f"{name}.{ext}", buf.getvalue())
    plt.close(static)
    record = {"name": name, "png": f"figures/{name}.png", "svg": f"figures/{name}.svg", **meta}
    if chart is not None:
        atomic_write_text(out_dir / f"{name}.csv", chart.table.to_csv())
        atomic_write_text(out_dir / f"{name}.plotly.json",
                          json.dumps(chart.interactive, separators=(",", ":"), ensure_ascii=False,
                                     allow_nan=False))
        record.update({"csv": f"figures/{name}.csv", "plotly": f"figures/{name}.plotly.json",
                       "columns": list(chart.table.columns), "rows": len(chart.table)})
        if chart.function and "function" not in meta:
            record["function"] = chart.function
    atomic_write_text(out_dir / f"{name}.json", json.dumps(record, indent=1, sort_keys=True))
    return record
