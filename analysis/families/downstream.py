"""Downstream neurons whose pre-activation moves with the context neuron (seed: "(New):
Trying to find interesting downstream neurons by activation difference", `compare_activations`).

For every layer after the context neuron's, the seed runs each example twice, once with the
context neuron's `hook_post` set to its mean German activation ("active") and once set to its
mean English activation ("inactive"), takes `blocks.L.mlp.hook_pre` (active minus inactive)
at every position, and ranks neurons by `|mean| - std` of that difference: large and
consistent shifts first. Here the difference is accumulated as float64 running sums (sum and
sum of squares per neuron), never as a `[positions, d_mlp]` tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..core.config import Neuron
from ..core.engine import Batch, Forward, progress, set_neurons

TOP_K = 100  # seed: torch.topk(significance_measure, 100)
HOOK = "mlp.hook_pre"


def difference_sums(fwd: Forward, batches: Sequence[Batch], context: Neuron, active: float,
                    inactive: float, layers: Sequence[int], desc: str = "downstream",
                    show_progress: bool = True
                    ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], int, dict]:
    """Running sums of `hook_pre[active] - hook_pre[inactive]` over every real position
    (BOS included, padding excluded) of every example.

    The shared prefix (blocks before the context layer) runs once per batch; the two
    variants restart from `blocks.{context.layer}.hook_resid_pre` and stop after the last
    layer in `layers` (no unembedding).

    Returns:
        sums: {layer: float64 [d_mlp]} sum of the differences.
        sumsq: {layer: float64 [d_mlp]} sum of their squares.
        count: number of positions summed.
        clusters: the per-example sums `S_e` (over an example's positions) folded into
            `{"s2": {layer: [d_mlp]} sum of S_e², "sn": {layer: [d_mlp]} sum of S_e·n_e,
            "n2": sum of n_e², "examples": number of examples}`, for `clustered_se`.
    """
    layers = sorted(set(layers))
    if not layers or min(layers) <= context.layer:
        raise ValueError(f"downstream layers {layers} must come after the context layer {context.layer}")
    names = {layer: f"blocks.{layer}.{HOOK}" for layer in layers}
    d_mlp = fwd.w.d_mlp
    sums = {layer: torch.zeros(d_mlp, dtype=torch.float64) for layer in layers}
    sumsq = {layer: torch.zeros(d_mlp, dtype=torch.float64) for layer in layers}
    s2 = {layer: torch.zeros(d_mlp, dtype=torch.float64) for layer in layers}
    sn = {layer: torch.zeros(d_mlp, dtype=torch.float64) for layer in layers}
    n2, examples = 0.0, 0
    count = 0
    stop = max(layers) + 1
    with torch.inference_mode():
        for batch in progress(batches, desc, show_progress):
            prefix = fwd.run(batch.tokens, stop_layer=context.layer)
            caps = []
            for value in (active, inactive):
                cap = dict.fromkeys(names.values())
                fwd.run(resid=prefix, start_layer=context.layer, stop_layer=stop,
                        edits={context.hook(): set_neurons([context.index], value)}, capture=cap)
                caps.append(cap)
            n = batch.tokens.shape[1]
            valid = torch.arange(n, device=batch.tokens.device)[None, :] < batch.lengths[:, None]
            n_e = valid.sum(1).double().cpu()  # [batch] positions per example
            for layer, name in names.items():
                full = (caps[0][name] - caps[1][name]).double() * valid[..., None]
                diff = full[valid]  # [positions, d_mlp]
                sums[layer] += diff.sum(0).cpu()
                sumsq[layer] += diff.pow(2).sum(0).cpu()
                per_example = full.sum(1).cpu()  # [batch, d_mlp] S_e
                s2[layer] += per_example.pow(2).sum(0)
                sn[layer] += (per_example * n_e[:, None]).sum(0)
            n2 += float(n_e.pow(2).sum())
            examples += int(batch.tokens.shape[0])
            count += int(valid.sum())
    clusters = {"s2": {k: v.numpy() for k, v in s2.items()}, "sn": {k: v.numpy() for k, v in sn.items()},
                "n2": n2, "examples": examples}
    return ({k: v.numpy() for k, v in sums.items()}, {k: v.numpy() for k, v in sumsq.items()}, count,
            clusters)


def clustered_se(sums: np.ndarray, s2: np.ndarray, sn: np.ndarray, n2: float, count: int,
                 examples: int) -> np.ndarray:
    """Standard error over examples of the position-pooled mean difference, per neuron.

    Positions of one example share its context, so they are not independent; the
    examples are. With `S_e` the sum of example e's `n_e` differences and `mean = sum S_e /
    N`, the cluster-robust variance of the mean is `E/(E-1) * sum_e (S_e - n_e mean)^2 / N^2`
    (E examples, N positions), expanded here into the running sums `s2 = sum S_e^2`,
    `sn = sum S_e n_e`, `n2 = sum n_e^2`. Returns float64 `[d_mlp]`; zeros for one example.
    """
    if examples < 2:
        return np.zeros_like(sums)
    mean = sums / count
    ss = s2 - 2 * mean * sn + mean * mean * n2
    return np.sqrt(np.clip(ss, 0.0, None) * examples / (examples - 1)) / count


def mean_std(sums: np.ndarray, sumsq: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (ddof=1, as `torch.std`) from running sums."""
    if count < 2:
        raise ValueError(f"need at least two positions for a standard deviation, got {count}")
    mean = sums / count
    var = (sumsq - sums * sums / count) / (count - 1)
    return mean, np.sqrt(np.clip(var, 0.0, None))


def rank_neurons(mean: np.ndarray, std: np.ndarray, k: int = TOP_K) -> list[dict]:
    """The `k` neurons with the largest `|mean| - std` (seed `significance_measure`), best
    first; ties broken by the lower index."""
    score = np.abs(mean) - std
    order = np.lexsort((np.arange(len(score)), -score))[: min(k, len(score))]
    return [{"neuron": int(i), "mean": float(mean[i]), "std": float(std[i]), "score": float(score[i])}
            for i in order]


def seed_lists(layer: int, top: list[dict]) -> dict:
    """The seed's top positive/negative lists for this layer (found in Pythia-70M for
    L3N669, cell "Looking at individual neurons") and how many of them are in our top list."""
    from .neurons import SEED_LISTS

    out = {}
    ours = {r["neuron"] for r in top}
    for sign in ("positive", "negative"):
        seed = SEED_LISTS.get(f"top_{sign}_l{layer}")
        if seed is not None:
            out[f"seed_top_{sign}"] = list(seed)
            out[f"seed_top_{sign}_in_top"] = sum(n in ours for n in seed)
    return out


# ------------------------------------------------------------------ pipeline step


def downstream_layers(run) -> list[int]:
    return list(range(run.context.layer + 1, run.fwd.w.n_layers))


def has_downstream(run) -> bool:
    return bool(downstream_layers(run))


def run_step(run, arts: dict) -> dict:
    """Step `downstream`: activation differences of every later-layer neuron when the
    context neuron is set to its active vs inactive mean."""
    import sys

    from ..core.runner import LANGUAGES

    p = run.profile
    ctx = run.context
    acts = arts["activations"]["result"]
    active, inactive = acts["context_mean_active"], acts["context_mean_inactive"]
    layers = downstream_layers(run)
    toks = {lang: run.tokens(lang, p.downstream_examples) for lang in LANGUAGES}
    params = {"examples_per_language": p.downstream_examples, "context_neuron": str(ctx),
              "layers": layers, "hook": HOOK, "positions": "all", "top_k": TOP_K,
              "active_value": active, "inactive_value": inactive,
              "tokens": {lang: toks[lang][1] for lang in toks}}

    def compute():
        # Seed order: german_data + english_data (the sums do not depend on it).
        all_toks = toks["german"][0] + toks["english"][0]
        sums, sumsq, count, clusters = difference_sums(run.fwd, run.batches(all_toks), ctx, active,
                                                       inactive, layers, show_progress=run.show_progress)
        result = {
            "context_neuron": str(ctx), "active_value": active, "inactive_value": inactive,
            "hook": HOOK, "difference": "hook_pre with the context neuron at its active (German) "
                                        "mean minus at its inactive (English) mean",
            "score": "|mean| - std (sample std, ddof=1) of the difference over positions",
            "positions": "every token position, BOS included", "top_k": TOP_K,
            "n_examples": {lang: toks[lang][1]["used"] for lang in toks},
            "n_positions": count, "layers": [],
            "interval": "se: standard error over examples of the mean difference (cluster-robust: "
                        "an example's positions are not independent)",
        }
        arrays = {}
        for layer in layers:
            mean, std = mean_std(sums[layer], sumsq[layer], count)
            se = clustered_se(sums[layer], clusters["s2"][layer], clusters["sn"][layer],
                              clusters["n2"], count, clusters["examples"])
            top = rank_neurons(mean, std)
            for r in top:
                r["se"] = float(se[r["neuron"]])
            result["layers"].append({
                "layer": layer, "top": top,
                "top_positive": [r["neuron"] for r in top if r["mean"] > 0][:10],
                "top_negative": [r["neuron"] for r in top if r["mean"] < 0][:10],
                "max_abs_mean": float(np.abs(mean).max()),
                **seed_lists(layer, top),
            })
            arrays[f"layer{layer}_mean"] = mean
            arrays[f"layer{layer}_std"] = std
            arrays[f"layer{layer}_se"] = se
        return result, arrays

    inputs = run.inputs("downstream", sys.modules[__name__], params, run.data_prov(*LANGUAGES),
                        {"activations": arts["activations"]["key"]})
    return run.step(inputs, compute)


def figures(run, arts: dict, fig_dir) -> list[dict]:
    import figures.neurons as nplots
    from figures.plots import save

    art = arts["downstream"]
    res = art["result"]
    out = []
    for entry in res["layers"]:
        layer = entry["layer"]
        fig = nplots.downstream_bar(entry["top"], layer, res["context_neuron"])
        out.append(save(fig, fig_dir, f"downstream_L{layer}", {
            "step": "downstream", "artifact_key": art["key"],
            "function": "figures.neurons.downstream_bar",
            "caption": f"MLP {layer} `hook_pre` difference (context neuron {res['context_neuron']} "
                       f"active minus inactive) for the {len(entry['top'])} neurons with the largest "
                       "|mean| − std, best first; bars are means, error bars one standard deviation "
                       "over positions.",
            "seed_cell": "(New): Trying to find interesting downstream neurons by activation difference",
            "layer": layer,
        }))
    return out
