"""Plots for the DLA, component-patching, L3-token, unigram, ablated-probe and correlation
analyses (`analysis.families.dla`, `analysis.families.l3_tokens`, `analysis.families.unigrams`,
`analysis.families.probes_ablated`, `analysis.families.correlations`). Pure: data in, Figure out;
`figures.plots.save` writes them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from .plots import md_token, plt, token_label  # noqa: F401  (md_token: used by the templates)

GERMAN = "#DD8452"
ENGLISH = "#4C72B0"
GREY = "#8C8C8C"
BOOST = "#C44E52"
INHIBIT = "#4C72B0"


def token_grid(rows: Sequence[Mapping], groups: int = 4) -> tuple[list, list[int]]:
    """Ranked `rows` ([{"token", "value"}]) as `groups` side-by-side blocks of (rank, token,
    value) columns for `show_table`; returns (columns, indices of the value columns)."""
    per = -(-len(rows) // groups) if rows else 0
    columns: list = []
    values: list[int] = []
    for g in range(groups):
        block = list(rows[g * per:(g + 1) * per])
        if not block:
            break
        pad = [None] * (per - len(block))
        columns.append(("#", [g * per + i + 1 for i in range(len(block))] + [""] * len(pad)))
        columns.append(("token", [md_token(r["token"]) for r in block] + [""] * len(pad)))
        values.append(len(columns))
        columns.append(("Δ logit", [r["value"] for r in block] + [""] * len(pad)))
    return columns, values


def dla_difference(labels: Sequence[str], original: Sequence[float], ablated: Sequence[float],
                   neuron: str):
    """Seed `line(logit_diffs, xticks=labels)`: (original − ablated) DLA per component, and
    the two DLA values side by side."""
    o, a = np.asarray(original), np.asarray(ablated)
    x = np.arange(len(labels))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.0, 3.6), dpi=110)
    ax1.bar(x, o - a, color=GERMAN)
    ax1.axhline(0, color="black", lw=0.6)
    ax1.set_xticks(x, labels, rotation=30, ha="right")
    ax1.set_ylabel("logit (original − ablated)")
    ax1.set_title(f"DLA difference, {neuron} ablated")
    ax2.bar(x - 0.2, o, 0.4, label="original", color=GERMAN)
    ax2.bar(x + 0.2, a, 0.4, label="ablated", color=GREY)
    ax2.axhline(0, color="black", lw=0.6)
    ax2.set_xticks(x, labels, rotation=30, ha="right")
    ax2.set_ylabel("DLA of correct token")
    ax2.set_title("DLA per accumulated component")
    ax2.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def component_patching(original: float, rows: Sequence[Mapping], neuron: str):
    """Seed `line(losses, xticks=["Original loss", components...], hover_data=percent)`: the
    loss increase (%) of each patched component, as bars from zero, with the patched loss
    written on each."""
    names = [r["component"] for r in rows]
    pct = [r["percent_increase"] for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=110)
    from .plots import error_bars

    err = error_bars(pct, [r.get("percent_increase_ci") for r in rows])
    ax.bar(x, pct, yerr=err, capsize=2, color=[GERMAN if v >= 0 else GREY for v in pct])
    ax.axhline(0, color="black", lw=0.6)
    for xi, r in zip(x, rows, strict=True):
        ax.annotate(f"{r['patched']:.3f}", (xi, r["percent_increase"]), ha="center",
                    va="bottom" if r["percent_increase"] >= 0 else "top", fontsize=8,
                    xytext=(0, 2 if r["percent_increase"] >= 0 else -2), textcoords="offset points")
    below, above = err if err is not None else (np.zeros(len(pct)), np.zeros(len(pct)))
    lo = min([v - b for v, b in zip(pct, below, strict=True)] + [0.0])
    hi = max([v + a for v, a in zip(pct, above, strict=True)] + [0.0])
    pad = (hi - lo) * 0.15 or 1e-6
    ax.set_ylim(lo - (pad if lo < 0 else 0), hi + pad)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("loss increase (%)")
    ax.set_title(f"Direct loss increase per component, {neuron} ablated\n"
                 f"(original loss {original:.3f} nats; bar labels: patched loss; 95% intervals)", fontsize=9)
    fig.tight_layout()
    return fig


def logit_diff_histogram(series: Mapping[str, np.ndarray], title: str, bins: int = 100):
    """Seed `px.histogram(token_differences)`: one panel per series (log count axis)."""
    fig, axes = plt.subplots(1, len(series), figsize=(4.6 * len(series), 3.4), dpi=110, squeeze=False)
    for ax, (name, values), color in zip(axes[0], series.items(), (GERMAN, ENGLISH, GREY), strict=False):
        ax.hist(values, bins=bins, color=color)
        ax.set_yscale("log")
        ax.axvline(0, color="black", lw=0.6)
        ax.set_xlabel("logit difference (active − inactive)")
        ax.set_ylabel("tokens")
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def top_token_bars(boosted: Sequence[Mapping], inhibited: Sequence[Mapping], what: str, n: int = 30):
    """Seed `line(boosted_values[:100], xticks=labels)`: horizontal bars of the top `n`
    boosted and inhibited tokens."""
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 0.16 * n + 1.2), dpi=110)
    for ax, rows, color, title in ((axes[0], boosted[:n], BOOST, "boosted"),
                                   (axes[1], inhibited[:n], INHIBIT, "inhibited")):
        y = np.arange(len(rows))
        ax.barh(y, [r["value"] for r in rows], color=color)
        ax.set_yticks(y, [token_label(r["token"]) for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0, color="black", lw=0.6)
        ax.set_xlabel("logit difference (active − inactive)", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{what}: top {title}", fontsize=9)
    fig.tight_layout()
    return fig


def unigram_counts(rows: Sequence[Mapping], title: str, per_row: int = 50):
    """Seed `line(unigram_highest_counts[:100], xticks=labels)`, as bars, `per_row` tokens
    per panel so that the labels stay readable."""
    n_panels = max(1, -(-len(rows) // per_row))
    fig, axes = plt.subplots(n_panels, 1, figsize=(10.0, 2.7 * n_panels + 0.4), dpi=110, squeeze=False)
    color = GERMAN if "German" in title else ENGLISH
    top = max([r["examples"] for r in rows] + [1])
    for p, ax in enumerate(axes[:, 0]):
        block = rows[p * per_row:(p + 1) * per_row]
        x = np.arange(p * per_row + 1, p * per_row + len(block) + 1)
        ax.bar(x, [r["examples"] for r in block], color=color)
        ax.set_xticks(x, [token_label(r["token"]) for r in block], rotation=90, fontsize=7)
        ax.set_xlim(p * per_row + 0.2, p * per_row + per_row + 0.8)
        ax.set_ylim(0, top * 1.05)
        ax.set_ylabel("examples")
        ax.set_title(f"{title}: ranks {p * per_row + 1}–{p * per_row + len(block)}", fontsize=9)
    fig.tight_layout()
    return fig


def unigram_logit_diffs(series: Mapping[str, Sequence[float]], neuron: str, bins: int = 30):
    """Seed `px.histogram(top_german_token_differences)` and the English one, overlaid."""
    fig, ax = plt.subplots(figsize=(6.0, 3.0), dpi=110)
    allv = np.concatenate([np.asarray(v, dtype=float) for v in series.values()])
    edges = np.linspace(allv.min(), allv.max() if allv.max() > allv.min() else allv.min() + 1e-6, bins + 1)
    for (name, values), color in zip(series.items(), (GERMAN, ENGLISH), strict=False):
        v = np.asarray(values, dtype=float)
        ax.hist(v, bins=edges, alpha=0.6, color=color, label=f"top {name} unigrams (mean {v.mean():.4g})")
        ax.axvline(v.mean(), color=color, ls="--", lw=1)
    ax.set_xlabel(f"{neuron} direction logit difference (active − inactive)", fontsize=9)
    ax.set_ylabel("tokens", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def probe_f1_before_after(neurons: Sequence[str], before: Sequence[float], after: Sequence[float],
                          context: str):
    x = np.arange(len(neurons))
    fig, ax = plt.subplots(figsize=(7.0, 3.4), dpi=110)
    ax.bar(x - 0.2, before, 0.4, label="original", color=GERMAN)
    ax.bar(x + 0.2, after, 0.4, label=f"{context} ablated", color=GREY)
    ax.set_xticks(x, neurons, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test F1 (German)")
    ax.set_title("Single-neuron probes with and without the context neuron", fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def correlation_bars(rows: Sequence[Mapping], context: str):
    names = [r["neuron"] for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7.0, 3.4), dpi=110)
    for off, key, color in ((-0.27, "german", GERMAN), (0.0, "english", ENGLISH), (0.27, "pooled", GREY)):
        vals = [np.nan if r[key] is None else r[key] for r in rows]
        ax.bar(x + off, vals, 0.27, label=key, color=color)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel(f"Pearson r with {context}")
    ax.legend(frameon=False, fontsize=8, ncol=3)
    fig.tight_layout()
    return fig
