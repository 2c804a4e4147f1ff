"""Correlation of each studied neuron with the context neuron (the seed's TODO after the
single-neuron ablations: "Correlational analyses of these neurons would let us narrow down
whether they just activate when L3N669 does ... or if they're also independent
German-detectors").

Pearson's r between each studied neuron's `hook_post` activation and the context neuron's,
over the (example, position) samples the `activations` step recorded: within German text,
within English text, and over both pooled. Within one language, r shows whether the neuron
follows the context neuron's token-to-token variation; pooled, it is dominated by the
language difference both neurons may share.
"""

from __future__ import annotations

import numpy as np

SEED_SECTION = ("Check loss increase from disabling each German neuron on German data "
                "(TODO: correlational analyses)")


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson's r in float64; None when either variable is constant (r undefined)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xc, yc = x - x.mean(), y - y.mean()
    den = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    if not np.isfinite(den) or den == 0.0:
        return None
    return float(np.clip((xc * yc).sum() / den, -1.0, 1.0))


def correlation_rows(german: np.ndarray, english: np.ndarray, columns: list[str],
                     context: str) -> list[dict]:
    """One row per column other than `context`: r within German, within English, pooled."""
    c = columns.index(context)
    pooled = np.concatenate([german, english], axis=0)
    rows = []
    for i, name in enumerate(columns):
        if i == c:
            continue
        rows.append({"neuron": name,
                     "german": pearson(german[:, i], german[:, c]),
                     "english": pearson(english[:, i], english[:, c]),
                     "pooled": pearson(pooled[:, i], pooled[:, c])})
    return rows


# ------------------------------------------------------------------ pipeline step


def run_step(run, arts: dict) -> dict:
    """Step `correlations`: from the `activations` step's arrays only (no forward pass)."""
    import sys

    from ..core.runner import LANGUAGES

    acts = arts["activations"]
    res = acts["result"]
    params = {"statistic": "Pearson r", "samples": "activations step arrays (hook_post, cropped "
              "positions)", "context_neuron": res["context_neuron"]}

    def compute():
        de = run.store.load_array("activations", "german")
        en = run.store.load_array("activations", "english")
        rows = correlation_rows(de, en, res["neurons"], res["context_neuron"])
        return {"context_neuron": res["context_neuron"], "n_activations": res["n_activations"],
                "rows": rows}, {}

    inputs = run.inputs("correlations", sys.modules[__name__], params, run.data_prov(*LANGUAGES),
                        {"activations": acts["key"]})
    return run.step(inputs, compute)


def figures(run, arts: dict, fig_dir) -> list[dict]:
    import figures.dla as plots_dla
    from figures.plots import save

    art = arts["correlations"]
    r = art["result"]
    fig = plots_dla.correlation_bars(r["rows"], r["context_neuron"])
    return [save(fig, fig_dir, "correlations", {
        "step": "correlations", "artifact_key": art["key"], "function": "figures.dla.correlation_bars",
        "caption": f"Pearson correlation of each studied neuron's activation with the activation "
                   f"of {r['context_neuron']}, within German, within English and pooled "
                   "(missing bar: r undefined because one neuron is constant).",
        "seed_cell": SEED_SECTION})]
