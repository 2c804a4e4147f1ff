"""The per-seed figure of a sweep over Pythia's training seeds (issue 21 §3): each run's best
German neuron followed through training, where it forms, and its ablation effect."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .plots import Chart, Table, check_spec, plt


def seed_table(rows: Sequence[Mapping]) -> Table:
    """One row per (seed run, checkpoint): the run (`model`, `label`), its best German neuron,
    the step, that neuron's probe F1 there, whether this is where it forms (first F1 ≥ the
    threshold) or the last checkpoint, and at the last checkpoint its German loss increase
    (%) with the 95% interval (empty elsewhere). `rows`: `seeds.seed_rows` with a neuron."""
    cols: dict[str, list] = {k: [] for k in ("model", "label", "neuron", "step", "f1", "formed", "final",
                                              "german_pct", "german_lo", "german_hi")}
    for r in rows:
        for step, f1 in r["series"]:
            final = step == r["final_step"]
            ci = r.get("german_ci") or [None, None]
            for k, v in (("model", r["model"]), ("label", r["label"]), ("neuron", r["neuron"]), ("step", step),
                         ("f1", f1), ("formed", step == r.get("formed_step")), ("final", final),
                         ("german_pct", r.get("german_pct") if final else None),
                         ("german_lo", ci[0] if final else None), ("german_hi", ci[1] if final else None)):
                cols[k].append(v)
    return Table(cols)


def seed_figure(rows: Sequence[Mapping], threshold: float) -> Chart:
    """Left: each seed run's best German neuron's probe F1 against training step (symlog axis,
    0 at the left), a dot where it forms, the threshold dashed. Right: its German loss
    increase (%) when mean-ablated at the last checkpoint, one bar per run with its 95%
    interval, labelled with the neuron."""
    from . import interactive as ia

    t = seed_table(rows)
    labels = list(dict.fromkeys(t["label"]))
    cmap = plt.get_cmap("tab10")
    colors = {lab: cmap(i % 10) for i, lab in enumerate(labels)}
    from matplotlib.colors import to_hex

    hexes = {lab: to_hex(colors[lab]) for lab in labels}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.0, 3.9), dpi=110, layout="constrained",
                                 gridspec_kw={"width_ratios": [1.6, 1]})
    data = []
    domains = ia.panel_domains(2, 0.12)
    bars = []
    for lab in labels:
        s = t.where(label=lab)
        x, y = np.array(s["step"], dtype=float), np.array(s["f1"], dtype=float)
        neuron = s["neuron"][0]
        ax.plot(x, y, "o-", ms=3, lw=1.2, color=colors[lab], label=f"{lab}: {neuron}")
        formed = [i for i, f in enumerate(s["formed"]) if f]
        if formed:
            ax.scatter(x[formed], y[formed], s=60, facecolor="none", edgecolor=colors[lab], lw=1.6, zorder=3)
        data.append({"type": "scatter", "mode": "lines+markers", "x": ia.num(list(x)), "y": ia.num(list(y)),
                     "name": f"{lab}: {neuron}", "line": {"color": hexes[lab]}, "xaxis": "x", "yaxis": "y",
                     "hovertemplate": f"{lab}, {neuron}<br>step %{{x}}<br>F1 %{{y:.3f}}<extra></extra>"})
        fin = [i for i, f in enumerate(s["final"]) if f]
        if fin and s["german_pct"][fin[0]] is not None:
            i = fin[0]
            bars.append((lab, neuron, s["german_pct"][i], s["german_lo"][i], s["german_hi"][i]))
    ax.axhline(threshold, color="grey", ls="--", lw=0.8)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training step (log scale; 0 at the left)")
    ax.set_ylabel("probe F1 of the run's best German neuron")
    ax.legend(frameon=False, fontsize=7)
    ypos = np.arange(len(bars))
    val = np.array([b[2] for b in bars], dtype=float)
    lo = np.array([np.nan if b[3] is None else b[3] for b in bars], dtype=float)
    hi = np.array([np.nan if b[4] is None else b[4] for b in bars], dtype=float)
    bx.barh(ypos, val, color=[colors[b[0]] for b in bars], alpha=0.8)
    bx.errorbar(val, ypos, xerr=[val - lo, hi - val], fmt="none", ecolor="black", capsize=2, lw=0.8)
    bx.set_yticks(ypos, [f"{b[0]}: {b[1]}" for b in bars], fontsize=7)
    bx.invert_yaxis()
    bx.axvline(0, color="black", lw=0.6)
    bx.set_xlabel("German loss increase when mean-ablated (%)")
    fig.suptitle("Best German neuron per training seed", fontsize=10)
    data.append({"type": "bar", "orientation": "h", "x": ia.num(list(val)),
                 "y": [f"{b[0]}: {b[1]}" for b in bars], "name": "German loss increase (%)",
                 "marker": {"color": [hexes[b[0]] for b in bars]}, "xaxis": "x2", "yaxis": "y2",
                 "error_x": {"type": "data", "symmetric": False, "array": ia.num(list(hi - val)),
                             "arrayminus": ia.num(list(val - lo))}, "showlegend": False})
    lay = ia.layout("Best German neuron per training seed", height=420,
                    xaxis=ia.axis("training step", type="log", domain=domains[0]),
                    yaxis=ia.axis("probe F1", range=[-0.02, 1.02]),
                    xaxis2=ia.axis("German loss increase (%)", domain=domains[1], anchor="y2"),
                    yaxis2=ia.axis(None, anchor="x2", type="category", autorange="reversed"),
                    shapes=[{"type": "line", "xref": "x domain", "yref": "y", "x0": 0, "x1": 1,
                             "y0": threshold, "y1": threshold, "line": {"dash": "dash", "color": "grey"}}])
    return Chart(t, fig, check_spec(ia.spec(data, lay)), "figures.sweep_seeds.seed_figure")
