"""Step `planted`: the known-answer control checks itself. On `pythia-70m-planted` (see
`analysis.controls.planted`) the answer is known by construction — the planted neuron —
so the report's own artifacts must recover it. One row per claim of the founding notebook
about L3N669, measured on the planted neuron, each with its target and pass or fail:

| claim (seed cell) | measured from | target |
| --- | --- | --- |
| it is the German neuron one finds by probing every neuron ("Check classification accuracy of German neurons", run over all neurons) | `discovery`: rank among German-positive neurons | first |
| a single-neuron probe separates German from English (same cell) | `probes`: test F1 | ≥ 0.80 |
| mean-ablating it raises the German loss ("Check loss increase from disabling each German neuron") | `ablation`: German % increase | ≥ 1% |
| ... and leaves English alone (its English sanity check) | `ablation`: English % change | \\|·\\| < ⅓ of the German increase |
| its output boosts German tokens ("Tokens boosted by L3 directly", "Get German unigram statistics") | its top `TOP_TOKENS` boosted tokens (`W_out[l, n] @ W_U × (German − English mean)`, the seed's garbage filter, as `l3_tokens`) vs `unigrams`' top 100 German unigrams | ≥ 5 of 20 |
| the report studies it (`--neuron auto`) | the run's context neuron | the planted neuron |

The boosted tokens are computed here for the planted neuron (the `l3_tokens` step computes
them for the context neuron only, which need not be the planted one) with the same
functions, `l3_tokens.neuron_direction_logit_diff` and `l3_tokens.top_tokens`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..core.config import Neuron

DEPS = ("discovery", "activations", "probes", "ablation", "l3_tokens", "unigrams")
TOP_TOKENS = 20
TARGETS = {"rank": 1, "f1": 0.8, "german_percent": 1.0, "english_fraction": 1 / 3,
           "german_tokens": 5}


def has_plant(run) -> bool:
    """True when the run's model is the planted control (its info carries a plant record)."""
    return bool(run.model.info.get("plant"))


def discovery_rank(neuron: Neuron, ranked: Sequence[Mapping], coef: np.ndarray, f1: np.ndarray,
                   test_acc: np.ndarray, separation: np.ndarray) -> int | None:
    """1-based rank of `neuron` among German-positive neurons in the `discovery` artifact:
    its row in `ranked` (the top rows, sklearn-verified) when there, else its place in
    `discovery.rank` over the arrays (`[n_layers, d_mlp]` each); None when its probe
    coefficient is not positive (it fires more on English)."""
    for r in ranked:
        if r["neuron"] == str(neuron):
            return int(r["rank"])
    from ..families.discovery import rank

    col = neuron.layer * coef.shape[1] + neuron.index
    stats = {"coef": coef.reshape(-1), "f1": f1.reshape(-1), "test_acc": test_acc.reshape(-1),
             "separation": separation.reshape(-1)}
    if stats["coef"][col] <= 0:
        return None
    order = rank(stats, True)
    return int(np.flatnonzero(order == col)[0]) + 1


def recovery_rows(plant: Neuron, rank: int | None, probe: Mapping, ablation: Mapping,
                  boosted: Sequence[Mapping], german_top: Sequence[int], context: Neuron | None,
                  discovered: bool, targets: Mapping = TARGETS) -> dict:
    """The "planted → recovered" table: one row per check, each
    `{"check", "measured", "target", "passed"}` (`passed` None: not checked), and
    `passed` overall (every checked row).

    Args:
        rank: `discovery_rank` (None: not German-positive).
        probe: the planted neuron's row of the `probes` artifact (`f1`, ...).
        ablation: its row of `ablation.result.single` (`german`/`english` summaries, % increase).
        boosted: its top boosted tokens (`l3_tokens.top_tokens` rows: token_id, token, value).
        german_top: token ids of the top German unigrams (`unigrams` artifact), here 100.
        context, discovered: the run's context neuron and whether discovery chose it.
    """
    de = float(ablation["german"]["percent_increase"])
    en = float(ablation["english"]["percent_increase"])
    top = set(int(i) for i in german_top)
    hits = [t for t in boosted if int(t["token_id"]) in top]
    rows = [
        {"check": "discovery rank among German-positive neurons", "measured": rank,
         "target": f"≤ {targets['rank']} (first)", "passed": rank is not None and rank <= targets["rank"]},
        {"check": "single-neuron probe F1 (German vs English)", "measured": float(probe["f1"]),
         "target": f"≥ {targets['f1']:.2f}", "passed": float(probe["f1"]) >= targets["f1"]},
        {"check": "German loss increase when mean-ablated (%)", "measured": de,
         "target": f"≥ {targets['german_percent']:g}%", "passed": de >= targets["german_percent"]},
        {"check": "English loss change when mean-ablated (%)", "measured": en,
         "target": "|·| < ⅓ of the German increase",
         "passed": abs(en) < targets["english_fraction"] * de},
        {"check": f"top {len(boosted)} boosted tokens among the {len(top)} most frequent German unigrams",
         "measured": len(hits), "target": f"≥ {targets['german_tokens']}",
         "passed": len(hits) >= targets["german_tokens"],
         "tokens": [t["token"] for t in hits]},
        {"check": "context neuron studied by the report", "measured": str(context),
         "target": f"{plant}, found by --neuron auto",
         "passed": (context == plant) if discovered else None},
    ]
    checked = [r["passed"] for r in rows if r["passed"] is not None]
    return {"rows": rows, "passed": all(checked), "n_passed": sum(checked), "n_checked": len(checked)}


# ------------------------------------------------------------------ pipeline step


def boosted_tokens(W_out, W_U, neuron: Neuron, active: float, inactive: float,
                   to_str: Callable, k: int = TOP_TOKENS) -> tuple[list[dict], np.ndarray]:
    """The `k` tokens `neuron` boosts most through its output direction alone, after the
    seed's garbage filter, and the whole float64 `[d_vocab]` logit difference
    (`W_out[layer, index] @ W_U × (active − inactive)`; `W_out` `[n_layers, d_mlp, d_model]`,
    `W_U` `[d_model, d_vocab]`, processed weights), as the `l3_tokens` step does for the
    context neuron."""
    from ..families.l3_tokens import neuron_direction_logit_diff, top_tokens

    diff = neuron_direction_logit_diff(W_out, W_U, neuron, active, inactive)
    return top_tokens(diff, k, True, to_str, filtered=True), diff


def run_step(run, arts: dict) -> dict:
    """Step `planted`: the "planted → recovered" table from the `discovery`, `probes`,
    `ablation` and `unigrams` artifacts and the planted neuron's boosted tokens."""
    import sys

    record = run.model.info["plant"]
    plant = Neuron.parse(record["neuron"])
    params = {"plant": str(plant), "targets": TARGETS, "top_tokens": TOP_TOKENS,
              "context_neuron": str(run.context), "neuron_discovered": run.cfg.neuron_discovered}

    def compute():
        disc = arts["discovery"]["result"]
        load = run.store.load_array
        rank = discovery_rank(plant, disc["ranked"], load("discovery", "coef"), load("discovery", "f1"),
                              load("discovery", "test_acc"), load("discovery", "separation"))
        probe = next(r for r in arts["probes"]["result"]["rows"] if r["neuron"] == str(plant))
        ablation = next(r for r in arts["ablation"]["result"]["single"] if r["neuron"] == str(plant))
        acts = arts["activations"]["result"]
        active, inactive = acts["german_means"][str(plant)], acts["english_means"][str(plant)]
        boosted, diff = boosted_tokens(run.fwd.w.W_out, run.fwd.w.W_U, plant, active, inactive,
                                       run.model.to_str_tokens)
        german_top = [t["token_id"] for t in arts["unigrams"]["result"]["languages"]["german"]["top"]]
        table = recovery_rows(plant, rank, probe, ablation, boosted, german_top, run.context,
                              run.cfg.neuron_discovered)
        result = {
            "plant": str(plant), "context_neuron": str(run.context),
            "neuron_discovered": run.cfg.neuron_discovered,
            "discovery_best": disc["best"], "discovery_best_f1": disc["best_f1"],
            "active_value": active, "inactive_value": inactive,
            "boosted": boosted, "german_top_unigrams": len(german_top),
            "fit": {lang: {k: record["fit"][lang][k] for k in ("dataset", "sha256", "n", "indices_sha256")}
                    for lang in ("german", "english")},
            "scales": {"input": record["input"]["scale"], "bias": record["input"]["bias"],
                       "output": record["output"]["scale"]},
            **table,
        }
        return result, {"neuron_direction_logit_diff": diff}

    inputs = run.inputs("planted", sys.modules[__name__], params, run.data_prov("german", "english"),
                        {k: arts[k]["key"] for k in DEPS})
    return run.step(inputs, compute)
