"""Figures of the `robustness` step: the specification curve and the ablation null."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from .plots import Chart, Table, check_spec


def spec_curve_table(specs: Sequence[Mapping]) -> Table:
    """One row per specification, sorted by the German loss change (nats): its label
    (ablation / aggregation / data), its data set, the change with its 95% interval, the
    English change, probe F1, whether the finding holds, and whether it is the seed's choice."""
    rows = sorted(specs, key=lambda s: s["german_nats"])
    return Table({
        "specification": [f"{s['ablation']} / {s['aggregation']}"
                          + (f" / {s['data']}" if s.get("data") else "") for s in rows],
        "data": [s.get("data") for s in rows],
        "german_nats": [s["german_nats"] for s in rows],
        "german_lo": [(s["german"]["increase_nats_ci"] or [None, None])[0] for s in rows],
        "german_hi": [(s["german"]["increase_nats_ci"] or [None, None])[1] for s in rows],
        "english_nats": [s["english_nats"] for s in rows],
        "f1": [s["f1"] for s in rows],
        "holds": [bool(s["holds"]) for s in rows],
        "seed_choice": [bool(s["seed_choice"]) for s in rows],
    })


def spec_curve(specs: Sequence[Mapping], neuron: str) -> Chart:
    """Specification curve: each specification's German loss change (nats, 95% paired-
    bootstrap interval) sorted, filled where the finding holds, the seed's choice ringed."""
    from . import interactive as ia

    t = spec_curve_table(specs)
    x = np.arange(len(t))
    y = np.array(t["german_nats"], dtype=float)
    lo = np.array([np.nan if v is None else v for v in t["german_lo"]], dtype=float)
    hi = np.array([np.nan if v is None else v for v in t["german_hi"]], dtype=float)
    # wider with the data dimension: 20 labelled specifications instead of 10
    fig, ax = plt.subplots(figsize=(7.0 if len(t) <= 10 else 9.0, 3.8), dpi=110)
    ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="none", ecolor="grey", capsize=2)
    held = np.array(t["holds"])
    ax.scatter(x[held], y[held], color="#DD8452", label="finding holds", zorder=3)
    ax.scatter(x[~held], y[~held], facecolor="white", edgecolor="#DD8452", label="does not hold", zorder=3)
    seed = np.array(t["seed_choice"])
    ax.scatter(x[seed], y[seed], s=160, facecolor="none", edgecolor="black", label="seed's choice", zorder=4)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, t["specification"], rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("German loss change (nats)")
    title = f"Specification curve: {neuron} ablated, German loss change"
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    err = {"type": "data", "symmetric": False, "array": ia.num(list(hi - y)),
           "arrayminus": ia.num(list(y - lo))}
    data = [{"type": "scatter", "mode": "markers", "x": t["specification"], "y": ia.num(list(y)),
             "error_y": err, "name": "German loss change",
             "marker": {"color": ["#DD8452" if h else "white" for h in t["holds"]],
                        "line": {"color": ["black" if s else "#DD8452" for s in t["seed_choice"]],
                                 "width": [3 if s else 1 for s in t["seed_choice"]]},
                        "size": 10}}]
    spec = ia.spec(data, ia.layout(title, xaxis=ia.axis("specification", type="category"),
                                   yaxis=ia.axis("German loss change (nats)")))
    return Chart(t, fig, check_spec(spec), "figures.robustness.spec_curve")


def null_table(rows: Sequence[Mapping], context: Mapping, neuron: str) -> Table:
    """The null's neurons and the context neuron: kind, German and English change (nats)."""
    return Table({
        "neuron": [r["neuron"] for r in rows] + [neuron],
        "kind": [r["kind"] for r in rows] + ["context"],
        "german_nats": [r["german_nats"] for r in rows] + [context["german_nats"]],
        "english_nats": [r["english_nats"] for r in rows] + [context["english_nats"]],
    })


def null_scatter(rows: Sequence[Mapping], context: Mapping, neuron: str) -> Chart:
    """German vs English loss change (nats) when each null neuron is mean-ablated, random
    and German-positive neurons apart, the context neuron marked."""
    from . import interactive as ia

    t = null_table(rows, context, neuron)
    colors = {"random": "#999999", "german_positive": "#4C72B0", "context": "#DD8452"}
    fig, ax = plt.subplots(figsize=(6.0, 3.8), dpi=110)
    data = []
    for kind, color in colors.items():
        s = t.where(kind=kind)
        if not len(s):
            continue
        ax.scatter(s["german_nats"], s["english_nats"], color=color, label=kind.replace("_", "-"),
                   s=60 if kind == "context" else 18, zorder=3 if kind == "context" else 2)
        data.append({"type": "scatter", "mode": "markers", "x": ia.num(s["german_nats"]),
                     "y": ia.num(s["english_nats"]), "text": s["neuron"], "name": kind.replace("_", "-"),
                     "marker": {"color": color, "size": 12 if kind == "context" else 7}})
    ax.axhline(0, color="black", lw=0.5)
    ax.axvline(0, color="black", lw=0.5)
    ax.set_xlabel("German loss change (nats)")
    ax.set_ylabel("English loss change (nats)")
    title = "Mean ablation of null neurons vs the context neuron"
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    spec = ia.spec(data, ia.layout(title, xaxis=ia.axis("German loss change (nats)"),
                                   yaxis=ia.axis("English loss change (nats)")))
    return Chart(t, fig, check_spec(spec), "figures.robustness.null_scatter")
