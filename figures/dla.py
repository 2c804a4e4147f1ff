"""Plots for the DLA, component-patching, L3-token, unigram, ablated-probe and correlation
analyses (`analysis.families.dla`, `analysis.families.l3_tokens`, `analysis.families.unigrams`,
`analysis.families.probes_ablated`, `analysis.families.correlations`). Pure: data in, `Chart`
out (its table, its matplotlib and its plotly rendering); `figures.plots.save` writes them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from . import interactive as ia
from .plots import (  # noqa: F401  (md_token: used by the templates)
    Chart,
    Table,
    check_spec,
    draw_histogram,
    error_bars,
    histogram_table,
    md_token,
    plt,
    table_error,
    token_label,
    token_table,
)

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
                   neuron: str, se: Sequence[float] | None = None) -> Chart:
    """Seed `line(logit_diffs, xticks=labels)`: (original − ablated) DLA per component, and
    the two DLA values side by side. `se`: standard error of each difference (hover only)."""
    o, a = np.asarray(original, dtype=float), np.asarray(ablated, dtype=float)
    table = Table({"component": list(labels), "original": o.tolist(), "ablated": a.tolist(),
                   "difference": (o - a).tolist(),
                   "difference_se": list(se) if se is not None else [None] * len(o)})
    x = np.arange(len(labels))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.0, 3.6), dpi=110)
    ax1.bar(x, table["difference"], color=GERMAN)
    ax1.axhline(0, color="black", lw=0.6)
    ax1.set_xticks(x, labels, rotation=30, ha="right")
    ax1.set_ylabel("logit (original − ablated)")
    ax1.set_title(f"DLA difference, {neuron} ablated")
    ax2.bar(x - 0.2, table["original"], 0.4, label="original", color=GERMAN)
    ax2.bar(x + 0.2, table["ablated"], 0.4, label="ablated", color=GREY)
    ax2.axhline(0, color="black", lw=0.6)
    ax2.set_xticks(x, labels, rotation=30, ha="right")
    ax2.set_ylabel("DLA of correct token")
    ax2.set_title("DLA per accumulated component")
    ax2.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    lab = [ia.plot_text(v) for v in labels]
    se_text = ["" if s is None else f" ± {s:.4f} (se)" for s in table["difference_se"]]
    d1, d2 = ia.panel_domains(2, 0.12)
    data = [ia.bar_trace(lab, table["difference"], "original − ablated", GERMAN,
                         "<b>%{x}</b><br>original − ablated %{y:+.4f}%{customdata}",
                         customdata=se_text, showlegend=False),
            ia.bar_trace(lab, table["original"], "original", GERMAN,
                         "<b>%{x}</b><br>original DLA %{y:.4f}", axes=("x2", "y2")),
            ia.bar_trace(lab, table["ablated"], "ablated", GREY,
                         "<b>%{x}</b><br>ablated DLA %{y:.4f}", axes=("x2", "y2"))]
    lay = ia.layout(f"Direct logit attribution, {ia.plot_text(neuron)} ablated", barmode="group",
                    xaxis=ia.axis(None, domain=d1, type="category", tickangle=-30),
                    yaxis=ia.axis("logit (original − ablated)"),
                    xaxis2=ia.axis(None, domain=d2, anchor="y2", type="category", tickangle=-30),
                    yaxis2=ia.axis("DLA of correct token", anchor="x2"),
                    annotations=[ia.subplot_title("DLA difference", sum(d1) / 2),
                                 ia.subplot_title("DLA per accumulated component", sum(d2) / 2)])
    return Chart(table, fig, check_spec(ia.spec(data, lay)), "figures.dla.dla_difference")


def component_patching(original: float, rows: Sequence[Mapping], neuron: str) -> Chart:
    """Seed `line(losses, xticks=["Original loss", components...], hover_data=percent)`: the
    loss increase (%) of each patched component, as bars from zero, with the patched loss
    written on each."""
    table = Table({"component": [r["component"] for r in rows],
                   "patched": [r["patched"] for r in rows],
                   "original": [original] * len(rows),
                   "percent_increase": [r["percent_increase"] for r in rows],
                   "ci_low": [(r.get("percent_increase_ci") or [None, None])[0] for r in rows],
                   "ci_high": [(r.get("percent_increase_ci") or [None, None])[1] for r in rows]})
    names, pct = table["component"], table["percent_increase"]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=110)
    err = table_error(table, "percent_increase")
    ax.bar(x, pct, yerr=None if err is None else np.array(err), capsize=2,
           color=[GERMAN if v >= 0 else GREY for v in pct])
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
    cd = [[lo_, hi_, p] for lo_, hi_, p in zip(ia.num(table["ci_low"], 5), ia.num(table["ci_high"], 5),
                                               ia.num(table["patched"]), strict=True)]
    data = [ia.bar_trace([ia.plot_text(n) for n in names], pct, "loss increase",
                         [GERMAN if v >= 0 else GREY for v in pct],
                         f"<b>%{{x}}</b><br>patched loss %{{customdata[2]:.4f}} nats (original {original:.4f})"
                         "<br>increase %{y:+.3f}% [95% CI %{customdata[0]:+.3f}, %{customdata[1]:+.3f}]",
                         customdata=cd, error=err, text=[f"{p:.3f}" for p in table["patched"]],
                         textposition="outside", showlegend=False)]
    lay = ia.layout(f"Direct loss increase per component, {ia.plot_text(neuron)} ablated "
                    f"(original loss {original:.3f} nats)",
                    xaxis=ia.axis(None, type="category", tickangle=-30),
                    yaxis=ia.axis("loss increase (%)"))
    return Chart(table, fig, check_spec(ia.spec(data, lay)), "figures.dla.component_patching")


def logit_diff_histogram(series: Mapping[str, np.ndarray], title: str, bins: int = 100) -> Chart:
    """Seed `px.histogram(token_differences)`: one panel per series (log count axis), each
    with its own bins; the table holds the bin counts over the vocabulary."""
    table = histogram_table(series, bins, shared_edges=False)
    names = list(series)
    colors = dict(zip(names, (GERMAN, ENGLISH, GREY), strict=False))
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.4), dpi=110, squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        draw_histogram(ax, table.where(series=name), y="count", colors=colors, alpha=1.0,
                       legend=False)
        ax.set_yscale("log")
        ax.axvline(0, color="black", lw=0.6)
        ax.set_xlabel("logit difference (active − inactive)")
        ax.set_ylabel("tokens")
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    doms = ia.panel_domains(len(names), 0.1)
    data, lay = [], ia.layout(ia.plot_text(title), barmode="overlay", bargap=0, showlegend=False)
    notes = []
    for i, name in enumerate(names):
        sx = "" if i == 0 else str(i + 1)
        data += ia.histogram_traces(table, [name], y="count", axes=(f"x{sx}", f"y{sx}"),
                                    opacity=1.0, unit="tokens", colors=colors, showlegend=False)
        lay[f"xaxis{sx}"] = ia.axis("logit difference (active − inactive)", domain=doms[i],
                                    anchor=f"y{sx}")
        lay[f"yaxis{sx}"] = ia.axis("tokens", type="log", anchor=f"x{sx}")
        notes.append(ia.subplot_title(ia.plot_text(name), sum(doms[i]) / 2))
    lay["annotations"] = notes
    return Chart(table, fig, check_spec(ia.spec(data, lay)), "figures.dla.logit_diff_histogram")


def top_token_bars(boosted: Sequence[Mapping], inhibited: Sequence[Mapping], what: str, n: int = 30) -> Chart:
    """Seed `line(boosted_values[:100], xticks=labels)`: the boosted and inhibited token
    lists. The table (and the interactive chart, zoomable) hold every listed token; the
    static figure shows the top `n` of each as horizontal bars."""
    table = Table.concat([token_table(boosted, list="boosted"), token_table(inhibited, list="inhibited")])
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 0.16 * n + 1.2), dpi=110)
    for ax, key, color in ((axes[0], "boosted", BOOST), (axes[1], "inhibited", INHIBIT)):
        t = table.where(list=key).head(n)
        y = np.arange(len(t))
        ax.barh(y, t["value"], color=color)
        ax.set_yticks(y, [token_label(tok) for tok in t["token"]], fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0, color="black", lw=0.6)
        ax.set_xlabel("logit difference (active − inactive)", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{what}: top {key}", fontsize=9)
    fig.tight_layout()
    panels = [(f"{what}: top {len(table.where(list=k))} {k}", table.where(list=k), c)
              for k, c in (("boosted", BOOST), ("inhibited", INHIBIT)) if len(table.where(list=k))]
    spec = ia.token_bars(panels, ia.plot_text(f"{what}: boosted and inhibited tokens (drag to zoom)"),
                         "logit difference (active − inactive)")
    return Chart(table, fig, check_spec(spec), "figures.dla.top_token_bars")


def unigram_counts(rows: Sequence[Mapping], title: str, per_row: int = 50) -> Chart:
    """Seed `line(unigram_highest_counts[:100], xticks=labels)`, as bars, `per_row` tokens
    per panel so that the labels stay readable."""
    table = token_table(rows, value="examples")
    table = Table({**table.columns,
                   "neuron_direction_logit_diff": [r.get("neuron_direction_logit_diff") for r in rows]})
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
    trace = ia.token_bar_trace(table, title, color, "examples containing it")
    trace["hovertemplate"] = ("rank %{customdata[2]}: <b>%{customdata[0]}</b> (token id %{customdata[1]})"
                              "<br>in %{y:,} examples<br>neuron-direction logit diff "
                              "%{customdata[3]:+.4f}<extra></extra>")
    trace["customdata"] = [c + [d] for c, d in zip(trace["customdata"], ia.num(
        table["neuron_direction_logit_diff"]), strict=True)]
    lay = ia.layout(ia.plot_text(title) + " (drag to zoom)", height=380, showlegend=False,
                    xaxis=ia.token_axis(table), yaxis=ia.axis("examples", rangemode="tozero"))
    return Chart(table, fig, check_spec(ia.spec([trace], lay)), "figures.dla.unigram_counts")


def unigram_logit_diffs(series: Mapping[str, Sequence[float]], neuron: str, bins: int = 30) -> Chart:
    """Seed `px.histogram(top_german_token_differences)` and the English one, overlaid;
    dashed lines at each series' mean (the table's `mean` column)."""
    table = histogram_table({k: np.asarray(v, dtype=float) for k, v in series.items()}, bins)
    means = {k: float(np.mean(v)) for k, v in series.items()}
    table = Table({**table.columns, "mean": [means[s] for s in table["series"]]})
    colors = dict(zip(series, (GERMAN, ENGLISH), strict=False))
    fig, ax = plt.subplots(figsize=(6.0, 3.0), dpi=110)
    for name in series:
        t = table.where(series=name)
        left = np.asarray(t["left"])
        ax.bar(left, t["count"], width=np.asarray(t["right"]) - left, align="edge", alpha=0.6,
               color=colors[name], linewidth=0,
               label=f"top {name} unigrams (mean {means[name]:.4g})")
        ax.axvline(means[name], color=colors[name], ls="--", lw=1)
    xlabel = f"{neuron} direction logit difference (active − inactive)"
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("tokens", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    data = ia.histogram_traces(table, y="count", unit="tokens", colors=colors)
    for tr, name in zip(data, series, strict=True):
        tr["name"] = ia.plot_text(f"top {name} unigrams (mean {means[name]:.4g})")
    shapes = [{"type": "line", "xref": "x", "yref": "paper", "x0": m, "x1": m, "y0": 0, "y1": 1,
               "line": {"color": colors[k], "dash": "dash", "width": 1}} for k, m in means.items()]
    lay = ia.layout(f"{ia.plot_text(neuron)} direction logit difference over the top unigrams",
                    barmode="overlay", bargap=0, shapes=shapes,
                    xaxis=ia.axis(ia.plot_text(xlabel)), yaxis=ia.axis("tokens"))
    return Chart(table, fig, check_spec(ia.spec(data, lay)), "figures.dla.unigram_logit_diffs")


def probe_f1_before_after(neurons: Sequence[str], before: Sequence[float], after: Sequence[float],
                          context: str, before_ci: Sequence | None = None,
                          after_ci: Sequence | None = None) -> Chart:
    """Test F1 of each single-neuron probe on the original activations and with the context
    neuron ablated (95% intervals when given)."""
    n = len(neurons)
    bci = list(before_ci) if before_ci is not None else [None] * n
    aci = list(after_ci) if after_ci is not None else [None] * n
    table = Table({"neuron": list(neurons) * 2, "condition": ["original"] * n + [f"{context} ablated"] * n,
                   "f1": list(before) + list(after),
                   "ci_low": [(c or [None, None])[0] for c in bci + aci],
                   "ci_high": [(c or [None, None])[1] for c in bci + aci]})
    x = np.arange(n)
    fig, ax = plt.subplots(figsize=(7.0, 3.4), dpi=110)
    data = []
    for off, cond, color in ((-0.2, "original", GERMAN), (0.2, f"{context} ablated", GREY)):
        t = table.where(condition=cond)
        err = table_error(t, "f1")
        ax.bar(x + off, t["f1"], 0.4, yerr=None if err is None else np.array(err), capsize=2,
               label=cond, color=color)
        data.append(ia.bar_trace(t["neuron"], t["f1"], cond, color,
                                 f"<b>%{{x}}</b>, {ia.plot_text(cond)}<br>F1 %{{y:.3f}}", error=err))
    ax.set_xticks(x, neurons, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test F1 (German)")
    title = "Single-neuron probes with and without the context neuron"
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    lay = ia.layout(title, barmode="group", xaxis=ia.axis("neuron", type="category"),
                    yaxis=ia.axis("test F1 (German)", range=[0, 1.05]))
    return Chart(table, fig, check_spec(ia.spec(data, lay)), "figures.dla.probe_f1_before_after")


def correlation_bars(rows: Sequence[Mapping], context: str) -> Chart:
    """Pearson r of each neuron with the context neuron, within German, within English and
    pooled (None: undefined, a constant neuron; no bar)."""
    keys = ("german", "english", "pooled")
    table = Table({"neuron": [r["neuron"] for r in rows for _ in keys],
                   "subset": [k for _ in rows for k in keys],
                   "r": [r[k] for r in rows for k in keys]})
    names = [r["neuron"] for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7.0, 3.4), dpi=110)
    data = []
    for off, key, color in ((-0.27, "german", GERMAN), (0.0, "english", ENGLISH), (0.27, "pooled", GREY)):
        t = table.where(subset=key)
        ax.bar(x + off, [np.nan if v is None else v for v in t["r"]], 0.27, label=key, color=color)
        data.append(ia.bar_trace(t["neuron"], t["r"], key, color,
                                 f"<b>%{{x}}</b>, {key}<br>r = %{{y:+.3f}}"))
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel(f"Pearson r with {context}")
    ax.legend(frameon=False, fontsize=8, ncol=3)
    fig.tight_layout()
    lay = ia.layout(f"Correlation with {ia.plot_text(context)}", barmode="group",
                    xaxis=ia.axis("neuron", type="category"),
                    yaxis=ia.axis(f"Pearson r with {ia.plot_text(context)}", range=[-1.05, 1.05]))
    return Chart(table, fig, check_spec(ia.spec(data, lay)), "figures.dla.correlation_bars")
