"""Plots and token heat maps for the downstream-neuron analyses (`analysis.families.downstream`,
`analysis.families.neurons`). Pure: data in, Figure (or HTML/Typst text) out; `figures.plots.save`
writes the figures.

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

from .plots import plt, token_label  # pyplot with the Agg backend and the fixed metadata

GERMAN = "#DD8452"
ENGLISH = "#4C72B0"


# ------------------------------------------------------------------ labels


def _short(label: str, n: int = 16) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


# ------------------------------------------------------------------ figures


def downstream_bar(top: Sequence[dict], layer: int, context: str):
    """Mean active-minus-inactive `hook_pre` difference with one-std error bars for the
    top neurons by `|mean| - std` (seed `barplot(activation_differences.mean(0)[...],
    activation_differences.std(0)[...])`). `top`: [{"neuron", "mean", "std"}]."""
    x = np.arange(len(top))
    means = np.array([r["mean"] for r in top], dtype=float)
    stds = np.array([r["std"] for r in top], dtype=float)
    fig, ax = plt.subplots(figsize=(12.0, 3.8), dpi=110)
    ax.bar(x, means, yerr=stds, color=[GERMAN if m > 0 else ENGLISH for m in means], width=0.8,
           error_kw={"elinewidth": 0.6, "capsize": 1.2, "ecolor": "#333333"})
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, [str(r["neuron"]) for r in top], rotation=90, fontsize=5.5)
    ax.set_xlim(-0.8, len(top) - 0.2)
    ax.set_xlabel(f"MLP {layer} neuron (best |mean| − std first)")
    ax.set_ylabel("active − inactive hook_pre")
    ax.set_title(f"MLP {layer} activation difference with {context} active vs inactive")
    fig.tight_layout()
    return fig


def shift_histogram(deactivated: np.ndarray, activated: np.ndarray, neuron: str, shift: float,
                    bins: int = 60):
    """Histograms (percent) of a neuron's `hook_pre` with the context neuron deactivated
    and activated (seed `two_histogram` in `get_mlp_context_shift`)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    lo = float(min(deactivated.min(), activated.min()))
    hi = float(max(deactivated.max(), activated.max()))
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
    for data, label, color in ((deactivated, "Deactivated context neuron", ENGLISH),
                               (activated, "Activated context neuron", GERMAN)):
        wts = np.full(len(data), 100.0 / max(len(data), 1))
        ax.hist(data, bins=edges, weights=wts, alpha=0.6, color=color,
                label=f"{label} (n={len(data):,})")
    ax.set_xlabel(f"{neuron} pre-activation (hook_pre)")
    ax.set_ylabel("% of activations")
    ax.set_title(f"Pre-GELU {neuron} activations (shift = {shift:.4f})")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def unembed_tokens(boosted: Sequence[dict], inhibited: Sequence[dict], neuron: str):
    """The most boosted and most inhibited tokens of a neuron's direct unembedding (seed
    `get_neuron_unembed(..., plot=True)`). Rows: [{"token", "value"}]."""
    fig, axes = plt.subplots(2, 1, figsize=(12.0, 7.6), dpi=110)
    for ax, rows, title, color in ((axes[0], boosted, "Boosted", GERMAN),
                                   (axes[1], inhibited, "Inhibited", ENGLISH)):
        x = np.arange(len(rows))
        ax.plot(x, [r["value"] for r in rows], marker="o", ms=2.5, lw=1.0, color=color)
        ax.set_xticks(x, [_short(token_label(r["token"])) for r in rows], rotation=90, fontsize=6.5)
        ax.set_xlim(-0.6, max(len(rows) - 0.4, 0.6))
        ax.set_ylabel("logit difference")
        ax.set_title(f"{title} tokens from active {neuron}", fontsize=10)
        ax.grid(axis="y", lw=0.3)
    fig.tight_layout()
    return fig


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
    """A token as shown in a heat map (seed: runs of whitespace become `_`)."""
    return re.sub(r"\s+", "_", token)


def _titles(values, original, ablated) -> list[str]:
    if original is not None and ablated is not None:
        return [f"Difference: {v:.4f}, Original logprob: {o:.4f}, Ablated logprob: {a:.4f}"
                for v, o, a in zip(values, original, ablated, strict=True)]
    return [f"{v:.4f}" for v in values]


def heatmap_html(tokens: Sequence[str], values: Sequence[float], max_value: float,
                 original: Sequence[float] | None = None, ablated: Sequence[float] | None = None,
                 label: str | None = None) -> str:
    """A `<div class="heatmap">` of coloured `<span>`s with the values in `title`; every
    token and title is HTML-escaped."""
    if len(tokens) != len(values):
        raise ValueError(f"{len(tokens)} tokens but {len(values)} values")
    parts = ['<div class="heatmap" style="line-height: 2.1; margin: 0.5em 0;">']
    if label:
        parts.append(f'<div class="heatmap-label" style="font-size: 0.85em; font-style: italic;">'
                     f"{html.escape(label)}</div>")
    spans = []
    for tok, v, title in zip(tokens, values, _titles(values, original, ablated), strict=True):
        rgb = token_rgb(v, max_value)
        spans.append(f'<span style="background-color: rgb({rgb[0]}, {rgb[1]}, {rgb[2]}); '
                     f'color: {text_color(rgb)}; padding: 2px;" title="{html.escape(title, quote=True)}">'
                     f"{html.escape(visible(tok))}</span>")
    parts.append(" ".join(spans))
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
        body = f'#text(font: "DejaVu Sans Mono", size: 7pt, fill: {text_color(rgb)}, {typst_string(visible(tok))})'
        if annotate:
            body += f'#text(size: 5.5pt, fill: {text_color(rgb)}, {typst_string(" " + signed(v))})'
        lines.append(f"#box(fill: rgb({rgb[0]}, {rgb[1]}, {rgb[2]}), inset: (x: 1pt, y: 1.5pt), "
                     f"outset: (y: 0.5pt))[{body}]")
    lines.append("]")
    return "\n".join(lines)


def heatmap_bundle(tokens: Sequence[str], values: Sequence[float], max_value: float,
                   original: Sequence[float] | None = None, ablated: Sequence[float] | None = None,
                   label: str | None = None, annotate: bool = False) -> dict[str, str]:
    """A notebook display bundle: `text/html` (interactive, for the HTML report) and a
    raw Typst block as `text/markdown` (kept by the PDF conversion)."""
    typ = heatmap_typst(tokens, values, max_value, label=label, annotate=annotate)
    return {"text/html": heatmap_html(tokens, values, max_value, original, ablated, label),
            "text/markdown": "```{=typst}\n" + typ + "\n```",
            "text/plain": f"[heat map: {label or ''} ({len(tokens)} tokens)]"}


def show_heatmap(*args, **kwargs) -> None:
    """Display `heatmap_bundle(...)` in a notebook."""
    from IPython.display import display

    display(heatmap_bundle(*args, **kwargs), raw=True)


def token_list_bundle(rows: Sequence[dict], title: str, value: str = "value",
                      max_value: float | None = None) -> dict[str, str]:
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
                          label=title, annotate=True)


def show_token_list(rows: Sequence[dict], title: str, value: str = "value",
                    max_value: float | None = None) -> None:
    """Display `token_list_bundle(...)`, or a note when the list is empty."""
    from IPython.display import Markdown, display

    if not rows:
        display(Markdown(f"*{title}: no token is left after the exclusions.*"))
        return
    display(token_list_bundle(rows, title, value, max_value), raw=True)
