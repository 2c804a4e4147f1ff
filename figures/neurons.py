"""Plots and token heat maps for the downstream-neuron analyses (`analysis.families.downstream`,
`analysis.families.neurons`). Pure: data in, `Chart` (or HTML/Typst text) out;
`figures.plots.save` writes the figures.

Heat maps follow the seed's `haystack_utils.print_strings_as_html`: one coloured box per
token, red for a positive value and blue for a negative one, the colour saturating at
`max_value`; whitespace in a token is shown as `_`; in HTML each token's `title` (hover)
gives its value and, for loss differences, the original and ablated log-probs. The PDF
(pandoc -> Typst) cannot hover, and pandoc drops HTML there: `heatmap_bundle` therefore
pairs the HTML with a Typst rendering of the same boxes (a raw Typst block in a markdown
output, which the report's Typst conversion keeps), with the values printed in the boxes
where there are few tokens.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

import numpy as np

from . import interactive as ia
from .plots import (  # pyplot with the Agg backend and the fixed metadata
    Chart,
    Table,
    check_spec,
    histogram_chart,
    histogram_table,
    plt,
    token_label,
    token_table,
)

GERMAN = "#DD8452"
ENGLISH = "#4C72B0"


# ------------------------------------------------------------------ labels


def _short(label: str, n: int = 16) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


# ------------------------------------------------------------------ figures


def downstream_bar(top: Sequence[dict], layer: int, context: str) -> Chart:
    """Mean active-minus-inactive `hook_pre` difference with one-std error bars for the
    top neurons by `|mean| - std` (seed `barplot(activation_differences.mean(0)[...],
    activation_differences.std(0)[...])`). `top`: [{"neuron", "mean", "std"}]."""
    table = Table({"rank": list(range(1, len(top) + 1)),
                   "neuron": [f"L{layer}N{r['neuron']}" for r in top],
                   "mean": [float(r["mean"]) for r in top], "std": [float(r["std"]) for r in top],
                   "score": [float(r.get("score", abs(r["mean"]) - r["std"])) for r in top]})
    x = np.arange(len(top))
    means = np.array(table["mean"], dtype=float)
    stds = np.array(table["std"], dtype=float)
    colors = [GERMAN if m > 0 else ENGLISH for m in means]
    fig, ax = plt.subplots(figsize=(12.0, 3.8), dpi=110)
    ax.bar(x, means, yerr=stds, color=colors, width=0.8,
           error_kw={"elinewidth": 0.6, "capsize": 1.2, "ecolor": "#333333"})
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, [str(r["neuron"]) for r in top], rotation=90, fontsize=5.5)
    ax.set_xlim(-0.8, len(top) - 0.2)
    ax.set_xlabel(f"MLP {layer} neuron (best |mean| − std first)")
    ax.set_ylabel("active − inactive hook_pre")
    title = f"MLP {layer} activation difference with {context} active vs inactive"
    ax.set_title(title)
    fig.tight_layout()
    trace = ia.bar_trace(table["rank"], table["mean"], "mean difference", colors,
                         # the rank from customdata: %{x} would print the tick label (the neuron)
                         "rank %{customdata[3]}: <b>%{customdata[0]}</b><br>mean %{y:+.4f}, std "
                         "%{customdata[1]:.4f}<br>score (|mean| − std) %{customdata[2]:+.4f}",
                         customdata=[[n, s, sc, r] for n, s, sc, r in zip(
                             table["neuron"], ia.num(table["std"]), ia.num(table["score"]),
                             table["rank"], strict=True)],
                         error=(table["std"], table["std"]), showlegend=False)
    lay = ia.layout(ia.plot_text(title) + " (drag to zoom)", height=400,
                    xaxis=ia.axis(f"MLP {layer} neuron (best |mean| − std first)", tickmode="array",
                                  tickvals=table["rank"], ticktext=[str(r["neuron"]) for r in top],
                                  tickangle=-90, tickfont={"size": 8}),
                    yaxis=ia.axis("active − inactive hook_pre"))
    return Chart(table, fig, check_spec(ia.spec([trace], lay)), "figures.neurons.downstream_bar")


def shift_histogram(deactivated: np.ndarray, activated: np.ndarray, neuron: str, shift: float,
                    bins: int = 60) -> Chart:
    """Histograms (percent) of a neuron's `hook_pre` with the context neuron deactivated
    and activated (seed `two_histogram` in `get_mlp_context_shift`)."""
    table = histogram_table({"Deactivated context neuron": deactivated,
                             "Activated context neuron": activated}, bins)
    return histogram_chart(table, f"{neuron} pre-activation (hook_pre)",
                           f"Pre-GELU {neuron} activations (shift = {shift:.4f})",
                           "figures.neurons.shift_histogram",
                           colors={"Deactivated context neuron": ENGLISH,
                                   "Activated context neuron": GERMAN})


def unembed_tokens(boosted: Sequence[dict], inhibited: Sequence[dict], neuron: str) -> Chart:
    """The most boosted and most inhibited tokens of a neuron's direct unembedding (seed
    `get_neuron_unembed(..., plot=True)`). Rows: [{"token", "id", "value"}]."""
    table = Table.concat([token_table(boosted, list="boosted"), token_table(inhibited, list="inhibited")])
    fig, axes = plt.subplots(2, 1, figsize=(12.0, 7.6), dpi=110)
    for ax, key, title, color in ((axes[0], "boosted", "Boosted", GERMAN),
                                  (axes[1], "inhibited", "Inhibited", ENGLISH)):
        t = table.where(list=key)
        x = np.arange(len(t))
        ax.plot(x, t["value"], marker="o", ms=2.5, lw=1.0, color=color)
        ax.set_xticks(x, [_short(token_label(tok)) for tok in t["token"]], rotation=90, fontsize=6.5)
        ax.set_xlim(-0.6, max(len(t) - 0.4, 0.6))
        ax.set_ylabel("logit difference")
        ax.set_title(f"{title} tokens from active {neuron}", fontsize=10)
        ax.grid(axis="y", lw=0.3)
    fig.tight_layout()
    panels = [(f"{title} tokens from active {neuron}", table.where(list=key), color)
              for key, title, color in (("boosted", "Boosted", GERMAN), ("inhibited", "Inhibited", ENGLISH))
              if len(table.where(list=key))]
    spec = ia.token_bars(panels, ia.plot_text(f"Direct unembedding of {neuron} (drag to zoom)"),
                         "logit difference", mode="line")
    return Chart(table, fig, check_spec(spec), "figures.neurons.unembed_tokens")


# ------------------------------------------------------------------ heat maps


def token_rgb(value: float, max_value: float) -> tuple[int, int, int]:
    """Background colour: white at 0, red towards +max_value, blue towards -max_value."""
    x = value / max_value if max_value > 0 else 0.0
    if not np.isfinite(x):
        x = 0.0
    if value < 0:
        level = int(max(0.0, min(255.0, (1.0 + x) * 255.0)))
        return level, level, 255
    level = int(max(0.0, min(255.0, (1.0 - x) * 255.0)))
    return 255, level, level


def text_color(rgb: tuple[int, int, int]) -> str:
    r, g, b = rgb
    return "black" if (0.299 * r + 0.587 * g + 0.114 * b) / 255.0 > 0.5 else "white"


def visible(token: str) -> str:
    """A token as shown in a PDF heat map box (seed: runs of whitespace become `_`)."""
    return re.sub(r"\s+", "_", token)


# Tokens in the HTML heat maps are the text itself, contiguous (no inserted spaces or
# markers; the page keeps whitespace with `white-space: pre-wrap`); only characters that
# would vanish or break the line are made visible.
_HTML_VISIBLE = {"\n": "↵", "\r": "␍", "\t": "⇥"}


def html_token(token: str) -> str:
    """A token as the HTML heat maps print it: its own characters, newlines as `↵`, tabs as
    `⇥`, other non-printable characters as `\\u{hex}`, the empty token as `∅`."""
    out = []
    for ch in token:
        if ch in _HTML_VISIBLE:
            out.append(_HTML_VISIBLE[ch])
        elif not ch.isprintable() and ch != " ":
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return "".join(out) or "∅"


def _titles(values, original, ablated) -> list[str]:
    if original is not None and ablated is not None:
        return [f"Δ loss {v:+.4f} · log-prob {o:.3f} → {a:.3f}"
                for v, o, a in zip(values, original, ablated, strict=True)]
    return [f"{v:+.4f}" for v in values]


def hex_color(rgb: tuple[int, int, int]) -> str:
    """`#rrggbb` (shorter in the page than `rgb(r, g, b)`)."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def heatmap_html(tokens: Sequence[str], values: Sequence[float], max_value: float,
                 original: Sequence[float] | None = None, ablated: Sequence[float] | None = None,
                 label: str | None = None, titles: Sequence[str] | None = None,
                 mark: int | None = None, unit: str = "") -> str:
    """A `<div class="heatmap">` of contiguous coloured `<span>`s, each token's text as it is
    (`html_token`), its hover text in `data-t` (the report's CSS draws it as a tooltip, offline;
    `titles`, one per token, replace the default "Δ loss / log-prob" text). The colour scale is
    absolute, ±`max_value` (`unit`), and printed after the label; `mark`: the index of a token
    to outline (the maximum). Every token and text is HTML-escaped."""
    if len(tokens) != len(values):
        raise ValueError(f"{len(tokens)} tokens but {len(values)} values")
    if titles is not None and len(titles) != len(tokens):
        raise ValueError(f"{len(tokens)} tokens but {len(titles)} titles")
    scale = f"colour ±{max_value:.3g}{' ' + unit if unit else ''}"
    parts = ['<div class="heatmap">']
    parts.append(f'<div class="heatmap-label">{html.escape(label or "")}'
                 f' <span class="hm-scale">{html.escape(scale)}</span></div>')
    spans = []
    for k, (tok, v, title) in enumerate(zip(tokens, values, titles if titles is not None
                                            else _titles(values, original, ablated), strict=True)):
        rgb = token_rgb(v, max_value)
        cls = " ".join(c for c in ("w" if text_color(rgb) == "white" else "",
                                   "max" if k == mark else "") if c)
        spans.append(f'<span{f" class={chr(34)}{cls}{chr(34)}" if cls else ""} '
                     f'style="background:{hex_color(rgb)}" data-t="{html.escape(title, quote=True)}">'
                     f"{html.escape(html_token(tok))}</span>")
    parts.append("".join(spans))
    parts.append("</div>")
    return "".join(parts)


def signed(v: float) -> str:
    """A value with its sign and three significant digits (small values stay readable)."""
    return f"{v:+.3g}" if v != 0 and abs(v) < 0.01 else f"{v:+.2f}"


def typst_string(text: str) -> str:
    """A Typst string literal (`"..."`) holding `text` exactly."""
    out = []
    for ch in text:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "`" or not ch.isprintable():
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


# Longest token text in a PDF heat-map box: a Typst box never breaks, and 40 characters of
# 7 pt monospace (about 170 pt) leave room for the value beside it on a 482 pt line.
TYPST_TOKEN_MAX = 40


def heatmap_typst(tokens: Sequence[str], values: Sequence[float], max_value: float,
                  label: str | None = None, annotate: bool = False) -> str:
    """The same heat map as Typst markup: a block of filled boxes (monospace tokens);
    `annotate` prints each value in its box (for short token lists)."""
    if len(tokens) != len(values):
        raise ValueError(f"{len(tokens)} tokens but {len(values)} values")
    lines = ["#block(width: 100%, above: 0.7em, below: 0.7em)["]
    lines.append("#set par(justify: false, leading: 0.75em)")
    if label:
        lines.append(f"#text(size: 8pt, style: \"italic\", {typst_string(label)}) \\")
    for tok, v in zip(tokens, values, strict=True):
        rgb = token_rgb(v, max_value)
        shown = visible(tok)
        if len(shown) > TYPST_TOKEN_MAX:  # a box cannot break: cut it (the HTML shows it whole)
            shown = shown[: TYPST_TOKEN_MAX - 1] + "…"
        body = f'#text(font: "DejaVu Sans Mono", size: 7pt, fill: {text_color(rgb)}, {typst_string(shown)})'
        if annotate:
            body += f'#text(size: 5.5pt, fill: {text_color(rgb)}, {typst_string(" " + signed(v))})'
        lines.append(f"#box(fill: rgb({rgb[0]}, {rgb[1]}, {rgb[2]}), inset: (x: 1pt, y: 1.5pt), "
                     f"outset: (y: 0.5pt))[{body}]")
    lines.append("]")
    return "\n".join(lines)


def heatmap_bundle(tokens: Sequence[str], values: Sequence[float], max_value: float,
                   original: Sequence[float] | None = None, ablated: Sequence[float] | None = None,
                   label: str | None = None, annotate: bool = False,
                   titles: Sequence[str] | None = None, mark: int | None = None,
                   unit: str = "") -> dict[str, str]:
    """A notebook display bundle: `text/html` (interactive, for the HTML report) and a
    raw Typst block as `text/markdown` (kept by the PDF conversion)."""
    typ = heatmap_typst(tokens, values, max_value, label=label, annotate=annotate)
    return {"text/html": heatmap_html(tokens, values, max_value, original, ablated, label, titles,
                                      mark, unit),
            "text/markdown": "```{=typst}\n" + typ + "\n```",
            "text/plain": f"[heat map: {label or ''} ({len(tokens)} tokens)]"}


def show_heatmap(*args, **kwargs) -> None:
    """Display `heatmap_bundle(...)` in a notebook."""
    from IPython.display import display

    display(heatmap_bundle(*args, **kwargs), raw=True)


def token_list_bundle(rows: Sequence[dict], title: str, value: str = "value",
                      max_value: float | None = None, unit: str = "") -> dict[str, str]:
    """A heat map of a short token list (top-k tokens), values printed in the Typst boxes.
    `rows`: [{"token", value, optionally "original" and "ablated"}]; `max_value` defaults
    to the largest |value|."""
    tokens = [r["token"] for r in rows]
    values = [float(r[value]) for r in rows]
    both = bool(rows) and all("original" in r and "ablated" in r for r in rows)
    scale = max_value if max_value is not None else max([abs(v) for v in values] + [0.0])
    return heatmap_bundle(tokens, values, scale or 1.0,
                          [r["original"] for r in rows] if both else None,
                          [r["ablated"] for r in rows] if both else None,
                          label=title, annotate=True, unit=unit)


def show_token_list(rows: Sequence[dict], title: str, value: str = "value",
                    max_value: float | None = None, unit: str = "") -> None:
    """Display `token_list_bundle(...)`, or a note when the list is empty."""
    from IPython.display import Markdown, display

    if not rows:
        display(Markdown(f"*{title}: no token is left after the exclusions.*"))
        return
    display(token_list_bundle(rows, title, value, max_value, unit), raw=True)


def activation_titles(tokens: Sequence[str], token_ids: Sequence[int], activations: Sequence[float],
                      start: int, top: int | None = None, mark: str = "top") -> list[str]:
    """Hover text of an activation heat map: each token, its id, its position and the
    neuron's activation there (`start`: position of the first token; `top`: the position of
    the top activation, marked "(`mark`)")."""
    return [f"token {t!r} (id {i}), position {start + k}: activation {a:.4f}"
            + (f" ({mark})" if top is not None and start + k == top else "")
            for k, (t, i, a) in enumerate(zip(tokens, token_ids, activations, strict=True))]


def show_activations(example: dict, max_value: float, label: str, mark: str = "top") -> None:
    """Display a card's example (`cards` artifact `top_examples`, `quantile_examples` or
    `negative_examples` entry) as a heat map of the neuron's activation on every token,
    hover: token, id, activation; the token at `position` is outlined, its hover text says
    "(`mark`)"."""
    from IPython.display import display

    titles = activation_titles(example["tokens"], example["token_ids"], example["activations"],
                               example["start"], example["position"], mark)
    display(heatmap_bundle(example["tokens"], example["activations"], max_value, label=label,
                           titles=titles, mark=example["position"] - example["start"],
                           unit="activation"), raw=True)
