"""Is a German neuron a backup for the context neuron? (the seed's TODO after the
all-except-L3 ablation: "ablate them each individually then together and see if the loss
increase is greater than the sum of the individual losses. %_backup_B = AB - A - B / B").

For each studied neuron B other than the context neuron A, the German loss with A and B
mean-ablated together is compared with each alone (A alone and B alone come from the
`ablation` step, on the same examples). `excess = AB − A − B` (percentage points of loss
increase) is > 0 when B partly makes up for A's absence (or the two interact);
`backup_ratio = excess / B`, the seed's formula, is reported where B's own effect is not ~0.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import numpy as np

from ..core.config import Neuron
from ..core.engine import Edits, set_neurons


def pair_variants(context: Neuron, others: Sequence[Neuron], values: Mapping[str, float]) -> dict[str, Edits]:
    """One variant per B: A and B set to their English means together (one edit per hook;
    both neurons in one edit when they share a layer)."""
    out: dict[str, Edits] = {}
    for b in others:
        by_hook: dict[str, list[Neuron]] = {}
        for n in (context, b):
            by_hook.setdefault(n.hook(), []).append(n)
        out[str(b)] = {hook: set_neurons([n.index for n in ns], [values[str(n)] for n in ns])
                       for hook, ns in by_hook.items()}
    return out


def backup_row(pct_a: float, pct_b: float, pct_ab: float, min_effect: float = 1e-9) -> dict:
    """The seed's backup measure from three loss increases (in %)."""
    excess = pct_ab - pct_a - pct_b
    return {"a": pct_a, "b": pct_b, "ab": pct_ab, "excess": excess,
            "backup_ratio": excess / pct_b if abs(pct_b) > min_effect else None}


def run_step(run, arts: dict) -> dict:
    """Step `backup`: pairwise mean ablations (context neuron + each studied neuron) on the
    German loss examples, computed by the `ablation` step in its unablated German pass
    (rows `pair:<neuron>` of its `losses_german` array); this step only summarises them."""
    from .ablation import loss_summary

    p = run.profile
    ctx = run.context
    abl = arts["ablation"]
    others = [n for n in run.studied if n != ctx]
    _, rec = run.tokens("german", p.loss_examples)
    params = {"examples": p.loss_examples, "language": "german", "context_neuron": str(ctx),
              "neurons": [str(n) for n in others], "tokens": {"german": rec},
              "source": "ablation step, rows pair:<neuron> of losses_german"}

    def compute():
        info = abl["result"]["per_example_losses"]
        table = run.store.load_array("ablation", info["arrays"]["german"])
        rows = info["rows"]["german"]
        losses = {"original": table[rows.index("original")]}
        for b in others:
            losses[str(b)] = table[rows.index(info["pair_prefix"] + str(b))]
        single = {r["neuron"]: r["german"]["percent_increase"] for r in abl["result"]["single"]}
        pct_a = abl["result"]["context"]["german"]["percent_increase"]
        rows = []
        for b in others:
            pair = loss_summary(losses["original"], losses[str(b)])
            rows.append({"neuron": str(b), **backup_row(pct_a, single[str(b)], pair["percent_increase"]),
                         "ablated_together": pair["ablated"]})
        original = float(np.mean(losses["original"]))
        return {"context_neuron": str(ctx), "n_examples": int(table.shape[1]), "original": original,
                "rows": rows}, {}

    inputs = run.inputs("backup", sys.modules[__name__], params, run.data_prov("german"),
                        {"activations": arts["activations"]["key"], "ablation": abl["key"]})
    return run.step(inputs, compute)


def has_pairs(run) -> bool:
    return any(n != run.context for n in run.studied)
