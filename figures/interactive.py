"""Interactive renderings of the report's figures: plotly figure specs (`{"data", "layout"}`,
plain JSON) that plotly.js draws in the HTML report.

Every spec is built from the same `figures.plots.Table` as the figure's static (matplotlib)
rendering, so the HTML and the PDF show the same numbers; the table is saved as CSV beside
the figure. Pure: table in, dict out. Conventions:

* hover shows the exact value; on a token axis also the token (whitespace made visible),
  its id and its rank (`token_bars`);
* token axes are numeric (rank) with the tokens as tick labels, so two tokens that print
  alike never merge into one category;
* text that plotly renders (tick labels, hover text) is HTML-escaped: plotly reads `<`
  and `&` as markup;
* histograms are drawn from bin counts (`figures.plots.histogram_table`), never from raw
  values.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

GERMAN = "#DD8452"
ENGLISH = "#4C72B0"
GREY = "#8C8C8C"
BOOST = "#C44E52"
INHIBIT = "#4C72B0"
SERIES_COLORS = {"German": GERMAN, "English": ENGLISH, "german": GERMAN, "english": ENGLISH,
                 "pooled": GREY}

# plotly.js options for every figure (the report passes them to Plotly.newPlot).
CONFIG = {"displaylogo": False, "responsive": True, "typesetMath": False, "scrollZoom": False,
          "modeBarButtonsToRemove": ["select2d", "lasso2d"]}
FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif",
        "size": 12}

_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥"}


def plot_text(text: str) -> str:
    """Any text as plotly shows it literally (HTML-escaped)."""
    return html.escape(str(text), quote=False)


def plot_token(token: str) -> str:
    """A token as plotly shows it: spaces `␣`, newlines `↵`, tabs `⇥`, other non-printable
    characters as `\\u{hex}`, HTML-escaped; the empty token as `∅`."""
    out = []
    for ch in token:
        if ch in _VISIBLE:
            out.append(_VISIBLE[ch])
        elif not ch.isprintable():
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return plot_text("".join(out) or "∅")


def tick_token(token: str, n: int = 14) -> str:
    """A token as a tick label: `plot_token` of its first `n` characters, `…` when cut (the
    hover shows it whole)."""
    return plot_token(token[:n]) + ("…" if len(token) > n else "")


def num(values: Sequence, digits: int = 6) -> list:
    """JSON-safe numbers (`None` for missing or non-finite), rounded to `digits` significant
    decimals to keep the HTML small."""
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            out.append(None)
        elif isinstance(v, (bool, int)):
            out.append(int(v))
        else:
            f = float(v)
            out.append(float(f"{f:.{digits}g}") if math.isfinite(f) else None)
    return out


def axis(title: str | None = None, **kw) -> dict:
    """A plotly axis with the report's styling."""
    out = {"gridcolor": "#e8e8e8", "zerolinecolor": "#444", "automargin": True,
           "linecolor": "#999", "showline": True, "ticks": "outside",
           "exponentformat": "none"}  # 0.0002, not plotly's SI "200µ"
    if title:
        out["title"] = {"text": title, "font": {"size": 12}}
    out.update(kw)
    return out


def layout(title: str, height: int = 380, **kw) -> dict:
    """A plotly layout: title, white background, the report's font, legend above the plot."""
    out = {"title": {"text": title, "font": {"size": 14}, "x": 0.02, "xanchor": "left"},
           "height": height, "font": FONT, "paper_bgcolor": "white", "plot_bgcolor": "white",
           "margin": {"l": 60, "r": 20, "t": 60, "b": 50}, "hovermode": "closest",
           "legend": {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02,
                      "yanchor": "bottom", "bgcolor": "rgba(255,255,255,0.6)"},
           "hoverlabel": {"font": {"size": 12}, "align": "left"}}
    out.update(kw)
    return out


def spec(data: list, lay: dict) -> dict:
    """A plotly figure spec: traces, layout and the plotly.js options (`CONFIG`)."""
    return {"data": data, "layout": lay, "config": CONFIG}


def panel_domains(n: int, gap: float = 0.08) -> list[list[float]]:
    """`n` equal domains on [0, 1], first to last, separated by `gap`."""
    width = (1.0 - gap * (n - 1)) / n
    return [[round(i * (width + gap), 4), round(i * (width + gap) + width, 4)] for i in range(n)]


def subplot_title(text: str, x: float, y: float = 1.0, xref: str = "paper") -> dict:
    return {"text": text, "x": x, "y": y, "xref": xref, "yref": "paper", "xanchor": "center",
            "yanchor": "bottom", "showarrow": False, "font": {"size": 12}}


def histogram_traces(table, series: Sequence[str] | None = None, y: str = "percent",
                     axes: tuple[str, str] = ("x", "y"), opacity: float = 0.6,
                     unit: str = "activations", colors: Mapping[str, str] | None = None,
                     showlegend: bool = True) -> list[dict]:
    """One bar trace per series of a histogram table (`series, left, right, count, percent`),
    each bin a bar from `left` to `right`; hover: the bin, its count and its share."""
    names = list(dict.fromkeys(table["series"])) if series is None else list(series)
    colors = {**SERIES_COLORS, **(colors or {})}
    out = []
    for i, name in enumerate(names):
        t = table.where(series=name)
        lo, hi = t["left"], t["right"]
        total = sum(t["count"])
        out.append({
            "type": "bar", "name": plot_text(f"{name} (n={total:,})"), "x": num([(a + b) / 2 for a, b in zip(lo, hi, strict=True)]),
            "y": num(t[y]), "width": num([b - a for a, b in zip(lo, hi, strict=True)]),
            "opacity": opacity, "xaxis": axes[0], "yaxis": axes[1], "showlegend": showlegend,
            "marker": {"color": colors.get(name, (GERMAN, ENGLISH, GREY)[i % 3]),
                       "line": {"width": 0}},
            "customdata": [[a, b, c, p] for a, b, c, p in
                           zip(num(lo), num(hi), t["count"], num(t["percent"], 4), strict=True)],
            "hovertemplate": (f"<b>{plot_text(name)}</b><br>bin [%{{customdata[0]:.4g}}, "
                              f"%{{customdata[1]:.4g}})<br>%{{customdata[2]:,}} {unit} "
                              "(%{customdata[3]:.2f}%)<extra></extra>"),
        })
    return out


def token_bar_trace(table, name: str, color: str, value_label: str,
                    axes: tuple[str, str] = ("x", "y"), mode: str = "bar") -> dict:
    """Bars (or a line with markers) over a ranked token table (`rank, token, token_id, value`):
    x = rank, y = value; hover: rank, token, id and value."""
    kind = {"type": "bar", "marker": {"color": color}} if mode == "bar" else {
        "type": "scatter", "mode": "lines+markers", "line": {"color": color, "width": 1.2},
        "marker": {"color": color, "size": 5}}
    return {
        **kind, "name": plot_text(name), "x": table["rank"], "y": num(table["value"]),
        "xaxis": axes[0], "yaxis": axes[1], "showlegend": False,
        "customdata": [[plot_token(t), i, r] for t, i, r in
                       zip(table["token"], table["token_id"], table["rank"], strict=True)],
        "hovertemplate": ("rank %{customdata[2]}: <b>%{customdata[0]}</b> (token id "
                          f"%{{customdata[1]}})<br>{plot_text(value_label)} %{{y:.6~g}}<extra></extra>"),
    }


def token_axis(table, title: str = "token (by rank)", **kw) -> dict:
    """A numeric rank axis labelled with the tokens (zoom in to read them all)."""
    return axis(title, tickmode="array", tickvals=table["rank"],
                ticktext=[tick_token(t) for t in table["token"]], tickangle=-60,
                tickfont={"size": 9}, zeroline=False, **kw)


def token_bars(panels: Sequence[tuple[str, object, str]], title: str, value_label: str,
               mode: str = "bar", height_per_panel: int = 300) -> dict:
    """Stacked panels of ranked token bars: `panels` = [(panel title, table, colour)], each
    table `rank, token, token_id, value`. Zoom (drag) and pan on each panel."""
    n = len(panels)
    doms = panel_domains(n, gap=0.22 if n > 1 else 0)[::-1]  # first panel on top
    data, lay, notes = [], layout(title, height=height_per_panel * n + 80,
                                  margin={"l": 60, "r": 20, "t": 70, "b": 40}), []
    for i, (ptitle, t, color) in enumerate(panels):
        sx = "" if i == 0 else str(i + 1)
        data.append(token_bar_trace(t, ptitle, color, value_label, (f"x{sx}", f"y{sx}"), mode))
        lay[f"xaxis{sx}"] = token_axis(t, None, anchor=f"y{sx}")
        lay[f"yaxis{sx}"] = axis(value_label, domain=doms[i], anchor=f"x{sx}")
        notes.append(subplot_title(plot_text(ptitle), 0.5, doms[i][1] + 0.01))
    lay["annotations"] = notes
    lay["showlegend"] = False
    return spec(data, lay)


def token_barh(panels: Sequence[tuple[str, object, str]], title: str, value_label: str,
               row_height: int = 18) -> dict:
    """Side-by-side panels of horizontal token bars, rank 1 on top: `panels` = [(panel
    title, table, colour)], each table `rank, token, token_id, value` (short lists: the
    tokens stay readable as y tick labels; hover shows the whole token, its id and rank)."""
    n = max(len(t) for _, t, _ in panels)
    doms = panel_domains(len(panels), gap=0.2)
    lay = layout(title, height=max(260, row_height * n + 120), showlegend=False,
                 margin={"l": 110, "r": 20, "t": 70, "b": 50})
    data, notes = [], []
    for i, (ptitle, t, color) in enumerate(panels):
        sx = "" if i == 0 else str(i + 1)
        tr = token_bar_trace(t, ptitle, color, value_label, (f"x{sx}", f"y{sx}"))
        tr.update({"orientation": "h", "x": tr["y"], "y": tr["x"],
                   "hovertemplate": tr["hovertemplate"].replace("%{y:", "%{x:")})
        data.append(tr)
        lay[f"xaxis{sx}"] = axis(value_label, domain=doms[i], anchor=f"y{sx}")
        lay[f"yaxis{sx}"] = axis(None, anchor=f"x{sx}", autorange="reversed", tickmode="array",
                                 tickvals=t["rank"], ticktext=[tick_token(x) for x in t["token"]],
                                 tickfont={"size": 10}, ticks="")
        notes.append(subplot_title(plot_text(ptitle), sum(doms[i]) / 2))
    lay["annotations"] = notes
    return spec(data, lay)


def bar_trace(x: Sequence, y: Sequence, name: str, color, hover: str, customdata=None,
              error: tuple[Sequence, Sequence] | None = None, axes: tuple[str, str] = ("x", "y"),
              **kw) -> dict:
    """A bar trace; `error`: (distance below, distance above) each bar (asymmetric error bars)."""
    out = {"type": "bar", "name": plot_text(name), "x": list(x), "y": num(y),
           "marker": {"color": color}, "xaxis": axes[0], "yaxis": axes[1],
           "hovertemplate": hover + "<extra></extra>"}
    if customdata is not None:
        out["customdata"] = customdata
    if error is not None:
        out["error_y"] = {"type": "data", "symmetric": False, "array": num(error[1]),
                          "arrayminus": num(error[0]), "thickness": 1, "width": 3,
                          "color": "#333"}
    out.update(kw)
    return out
