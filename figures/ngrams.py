"""Plots for the contextual n-gram analysis (`analysis.families.ngrams`). Pure: artifact rows
in, `Chart` out (its table, its matplotlib and its plotly rendering); `figures.plots.save`
writes them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from . import interactive as ia
from .plots import Chart, Table, check_spec, plt, table_error, token_label

TOTAL = "#C44E52"
DIRECT = "#4C72B0"
INDIRECT = "#DD8452"
CLEAN = "#8C8C8C"
PATH_COLORS = {"clean": CLEAN, "ablated": TOTAL, "direct_ablated": DIRECT, "indirect_ablated": INDIRECT}
PATH_LABELS = {"clean": "unedited", "ablated": "ablated", "direct_ablated": "direct path ablated",
               "indirect_ablated": "indirect path ablated"}


def effect_split(effects: Mapping[str, Mapping], neuron: str) -> Chart:
    """Total, direct and indirect effect (nats) of ablating `neuron` on the loss, with 95%
    intervals. `effects`: the `ngrams` artifact's `text.effects`."""
    names = ["total", "direct", "indirect"]
    ci = [effects[n]["nats_ci"] or [None, None] for n in names]
    table = Table({"effect": names, "value": [effects[n]["nats"] for n in names],
                   "ci_low": [c[0] for c in ci], "ci_high": [c[1] for c in ci],
                   "percent": [effects[n]["percent"] for n in names]})
    colors = [TOTAL, DIRECT, INDIRECT]
    err = table_error(table)
    fig, ax = plt.subplots(figsize=(4.8, 3.2), dpi=110)
    x = np.arange(len(names))
    ax.bar(x, table["value"], yerr=None if err is None else np.array(err), capsize=3, color=colors)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, names)
    ax.set_ylabel("loss increase (nats)")
    title = f"Effect of {neuron} on the German loss"
    ax.set_title(title)
    fig.tight_layout()
    data = [ia.bar_trace(names, table["value"], "effect", colors,
                         "<b>%{x}</b><br>%{y:+.4f} nats (%{customdata:+.3f}%)",
                         customdata=ia.num(table["percent"], 5), error=err, showlegend=False)]
    lay = ia.layout(ia.plot_text(title), xaxis=ia.axis(None, type="category"),
                    yaxis=ia.axis("loss increase (nats)"))
    return Chart(table, fig, check_spec(ia.spec(data, lay)), "figures.ngrams.effect_split")


def trigram_paths(rows: Sequence[Mapping], neuron: str) -> Chart:
    """One point per trigram: its direct effect (x) against its indirect effect (y), nats,
    with the diagonal. `rows`: the `ngrams` artifact's `trigrams`."""
    table = Table({"trigram": [r["trigram"] for r in rows], "rank": [r["rank"] for r in rows],
                   "direct": [r["direct"] for r in rows], "indirect": [r["indirect"] for r in rows],
                   "total": [r["total"] for r in rows], "clean": [r["clean"] for r in rows]})
    fig, ax = plt.subplots(figsize=(4.8, 4.0), dpi=110)
    ax.scatter(table["direct"], table["indirect"], s=12, color=INDIRECT, alpha=0.8, lw=0)
    lo = min(table["direct"] + table["indirect"] + [0.0])
    hi = max(table["direct"] + table["indirect"] + [0.0])
    pad = (hi - lo) * 0.05 or 1e-6
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color=CLEAN, lw=0.8, ls="--")
    ax.axhline(0, color="black", lw=0.5)
    ax.axvline(0, color="black", lw=0.5)
    ax.set_xlabel("direct path ablated: loss increase (nats)")
    ax.set_ylabel("indirect path ablated: loss increase (nats)")
    title = f"Trigrams: direct vs indirect dependence on {neuron}"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    data = [{"type": "scatter", "mode": "markers", "name": "trigram", "x": ia.num(table["direct"]),
             "y": ia.num(table["indirect"]), "marker": {"color": INDIRECT, "size": 6},
             "customdata": [[ia.plot_token(t), r, tot] for t, r, tot in
                            zip(table["trigram"], table["rank"], ia.num(table["total"]), strict=True)],
             "hovertemplate": "<b>%{customdata[0]}</b> (rank %{customdata[1]})<br>direct %{x:+.4f}"
                              "<br>indirect %{y:+.4f}<br>total %{customdata[2]:+.4f} nats<extra></extra>"},
            {"type": "scatter", "mode": "lines", "name": "direct = indirect", "x": [lo - pad, hi + pad],
             "y": [lo - pad, hi + pad], "line": {"color": CLEAN, "dash": "dash", "width": 1},
             "hoverinfo": "skip"}]
    lay = ia.layout(ia.plot_text(title), xaxis=ia.axis("direct path ablated: loss increase (nats)"),
                    yaxis=ia.axis("indirect path ablated: loss increase (nats)"))
    return Chart(table, fig, check_spec(ia.spec(data, lay)), "figures.ngrams.trigram_paths")


def top_trigrams(rows: Sequence[Mapping]) -> Chart:
    """The listed trigrams' last-token losses (nats) unedited and with each ablation, bars
    side by side per trigram, the increases' 95% intervals as error bars."""
    paths = list(PATH_COLORS)
    ci_of = {"ablated": "total_ci", "direct_ablated": "direct_ci", "indirect_ablated": "indirect_ci"}
    cols: dict[str, list] = {k: [] for k in ("trigram", "rank", "path", "loss", "ci_low", "ci_high")}
    for r in rows:
        for p in paths:
            ci = r.get(ci_of.get(p, "")) or None
            cols["trigram"].append(r["trigram"])
            cols["rank"].append(r["rank"])
            cols["path"].append(p)
            cols["loss"].append(r[p])
            cols["ci_low"].append(None if ci is None else r["clean"] + ci[0])
            cols["ci_high"].append(None if ci is None else r["clean"] + ci[1])
    table = Table(cols)
    labels = [r["trigram"] for r in rows]
    x = np.arange(len(rows))
    width = 0.2
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(rows) + 2), 3.6), dpi=110)
    data = []
    for k, p in enumerate(paths):
        t = table.where(path=p)
        err = table_error(t, "loss") if p != "clean" else None
        ax.bar(x + (k - 1.5) * width, t["loss"], width, yerr=None if err is None else np.array(err),
               capsize=1.5, color=PATH_COLORS[p], label=PATH_LABELS[p])
        data.append(ia.bar_trace([ia.tick_token(s) for s in labels], t["loss"], PATH_LABELS[p], PATH_COLORS[p],
                                 f"<b>%{{customdata}}</b><br>{PATH_LABELS[p]}: %{{y:.3f}} nats",
                                 customdata=[ia.plot_token(s) for s in labels], error=err))
    ax.set_xticks(x, [token_label(s) for s in labels], rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("loss on the last token (nats)")
    title = "Trigrams most dependent on the context neuron"
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=7, ncol=2)
    fig.tight_layout()
    lay = ia.layout(title, barmode="group", xaxis=ia.axis(None, type="category", tickangle=-40),
                    yaxis=ia.axis("loss on the last token (nats)"))
    return Chart(table, fig, check_spec(ia.spec(data, lay)), "figures.ngrams.top_trigrams")


def and_conditions(circuit: Mapping, conditions: Sequence[str]) -> Chart:
    """One AND circuit (`ngrams` artifact `and.circuits[i]`): each neuron's mean activation
    under the 8 conditions (previous token, current token, context: Y present, N absent),
    bars grouped by neuron."""
    neurons = [n["neuron"] for n in circuit["neurons"]]
    cols: dict[str, list] = {"neuron": [], "condition": [], "activation": []}
    for n in circuit["neurons"]:
        for c in conditions:
            cols["neuron"].append(n["neuron"])
            cols["condition"].append(c)
            cols["activation"].append(n["conditions"][c])
    table = Table(cols)
    from matplotlib.colors import to_hex

    cmap = plt.get_cmap("viridis")
    colors = {c: to_hex(cmap(i / (len(conditions) - 1))) for i, c in enumerate(conditions)}
    x = np.arange(len(neurons))
    width = 0.8 / len(conditions)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(neurons) + 2), 3.4), dpi=110)
    data = []
    for k, c in enumerate(conditions):
        t = table.where(condition=c)
        ax.bar(x + (k - (len(conditions) - 1) / 2) * width, t["activation"], width, color=colors[c], label=c)
        data.append(ia.bar_trace(neurons, t["activation"], c, colors[c],
                                 f"<b>%{{x}}</b>, {c}<br>activation %{{y:.4f}}"))
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, neurons)
    ax.set_ylabel("activation (hook_post)")
    title = "AND conditions for {} (previous, current, context)"
    ax.set_title(title.format(token_label(circuit["trigram"])), fontsize=10)
    ax.legend(frameon=False, fontsize=7, ncol=4)
    fig.tight_layout()
    lay = ia.layout(title.format(ia.plot_token(circuit["trigram"])), barmode="group",
                    xaxis=ia.axis("neuron", type="category"),
                    yaxis=ia.axis("activation (hook_post)"))
    return Chart(table, fig, check_spec(ia.spec(data, lay)), "figures.ngrams.and_conditions")
