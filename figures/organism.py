"""Figures of neuron discovery and of the training dynamics (pure: data in, Figure out)."""

from __future__ import annotations

import numpy as np

from .plots import plt

GERMAN, ENGLISH, OTHER = "#DD8452", "#4C72B0", "#B0B0B0"


def discovery_figure(f1: np.ndarray, coef: np.ndarray, best: str | None, context: str | None):
    """Probe F1 of every neuron (`[n_layers, d_mlp]`), one jittered column per layer;
    German-positive neurons coloured, the best and the context neuron labelled."""
    n_layers, d_mlp = f1.shape
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    for layer in range(n_layers):
        x = layer + rng.uniform(-0.3, 0.3, d_mlp)
        pos = coef[layer] > 0
        ax.scatter(x[~pos], f1[layer][~pos], s=3, color=OTHER, alpha=0.5, lw=0,
                   label="English-positive" if layer == 0 else None)
        ax.scatter(x[pos], f1[layer][pos], s=3, color=GERMAN, alpha=0.7, lw=0,
                   label="German-positive" if layer == 0 else None)
    for name, marker in ((best, "*"), (context, "o")):
        if not name:
            continue
        layer, index = (int(v) for v in name[1:].split("N"))
        ax.scatter([layer], [f1[layer, index]], s=90, marker=marker, facecolor="none", edgecolor="black")
        ax.annotate(name, (layer, f1[layer, index]), xytext=(6, 4), textcoords="offset points", fontsize=8)
    ax.set_xticks(range(n_layers))
    ax.set_xlabel("layer")
    ax.set_ylabel("probe F1 (German)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Single-neuron probe F1 of every MLP neuron")
    ax.legend(frameon=False, markerscale=4, loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def dynamics_figure(result: dict):
    """Three panels over training steps (symlog axis, step 0 included): probe F1 of the
    context neuron and of each checkpoint's best neuron; the context neuron's mean-ablation
    loss increase on German and English; the German and English loss."""
    rows = result["rows"]
    steps = np.array([r["step"] for r in rows], dtype=float)
    ctx = result["context_neuron"]
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.3), dpi=110)
    ax = axes[0]
    ax.plot(steps, [r["context"]["f1"] for r in rows], "o-", color=GERMAN, label=ctx)
    ax.plot(steps, [r["best"]["f1"] if r["best"] else np.nan for r in rows], "s--", color="black",
            ms=3, lw=1, label="best neuron")
    ax.set_ylabel("probe F1 (German)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Probe F1")
    ax = axes[1]
    for lang, color in (("german", GERMAN), ("english", ENGLISH)):
        ax.plot(steps, [r["context"][lang]["percent_increase"] for r in rows], "o-", color=color,
                label=lang.capitalize())
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("loss increase (%)")
    ax.set_title(f"Mean-ablating {ctx}")
    ax = axes[2]
    for lang, color in (("german", GERMAN), ("english", ENGLISH)):
        ax.plot(steps, [r["loss"][lang] for r in rows], "o-", color=color, label=lang.capitalize())
    ax.set_ylabel("loss (nats)")
    ax.set_title("Next-token loss")
    for ax in axes:
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=0)
        ax.set_xlabel("training step")
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig
