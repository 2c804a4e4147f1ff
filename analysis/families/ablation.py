"""Mean ablation of the context neuron and of the seed's German neurons (seed: "Check loss
increase from disabling each German neuron on German data")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..core.config import Neuron
from ..core.engine import Edits, set_neurons


def single_neuron_variants(neurons: Sequence[Neuron], values: Mapping[str, float]) -> dict[str, Edits]:
    """One variant per neuron: its `hook_post` set to `values[str(neuron)]` (its English mean),
    seed `get_deactivate_single_neuron_hook`."""
    return {str(n): {n.hook(): set_neurons([n.index], values[str(n)])} for n in neurons}


def all_except_context_variants(neurons: Sequence[Neuron], context: Neuron,
                                values: Mapping[str, float],
                                layer_means_english: Mapping[int, np.ndarray]) -> dict[str, Edits]:
    """The seed's cell "Ablating all German neurons except the L3 one" (hook `all_except_l3`,
    in section "Check loss increase from disabling each German neuron on German data"),
    three ways. The seed's hook:

        def all_except_l3(value, hook):
            layer = hook.layer()
            layer_neurons = [neuron for layer, neuron in german_neurons_not_l3 if layer == layer]
            value[:, :, layer_neurons] = english_activations[layer][:, layer_neurons].mean()

    In Python 3 the comprehension has its own scope: its `layer` is the tuple's layer and
    shadows the outer `layer` only inside the comprehension, so `layer == layer` compares
    that value with itself and is always true, and the outer `layer` (the hooked layer) is
    unchanged afterwards.

    `intended`: each listed neuron other than the context neuron set to its own English
    mean, in its own layer.

    `seed_literal`: what the hook as written computed: every listed index in every hooked
    layer (4 and 5), all set to one scalar, `english_activations[layer][:, indices].mean()`
    (the mean English activation of the hooked layer over all those columns).

    `filter_fixed`: the hook with only its filter fixed (`if l == layer`): in each hooked
    layer the listed neurons of that layer, all set to one pooled scalar, the mean English
    activation of that layer over those neurons' columns.

    `layer_means_english[layer]` is the per-neuron mean English activation of that layer;
    every column has the same number of positions, so the mean of column means equals the
    seed's mean over the `[positions, columns]` block.
    """
    rest = [n for n in neurons if n != context]
    layers = sorted({n.layer for n in rest})
    intended: dict[str, object] = {}
    fixed: dict[str, object] = {}
    for layer in layers:
        in_layer = [n.index for n in rest if n.layer == layer]
        intended[f"blocks.{layer}.mlp.hook_post"] = set_neurons(
            in_layer, [values[str(n)] for n in rest if n.layer == layer])
        fixed[f"blocks.{layer}.mlp.hook_post"] = set_neurons(
            in_layer, float(np.mean(layer_means_english[layer][in_layer])))
    indices = [n.index for n in rest]
    literal: dict[str, object] = {}
    for layer in layers:
        scalar = float(np.mean(layer_means_english[layer][indices]))
        literal[f"blocks.{layer}.mlp.hook_post"] = set_neurons(indices, scalar)
    return {"intended": intended, "seed_literal": literal, "filter_fixed": fixed}


# One sentence per variant of the all-except-context ablation (artifact and report).
ALL_EXCEPT_DESCRIPTIONS = {
    "intended": "each listed neuron except the context neuron set to its own English mean, "
                "in its own layer",
    "seed_literal": "the seed's hook as written: its filter `layer == layer` is always true, so "
                    "every listed index is set in each hooked layer to one scalar, that layer's "
                    "mean English activation over all those indices",
    "filter_fixed": "the seed's hook with only its filter fixed: each layer's listed neurons set "
                    "to one pooled scalar, that layer's mean English activation over those "
                    "neurons' columns",
}


PAIR_PREFIX = "pair:"  # rows of the German losses with the context neuron and one other ablated


def loss_summary(original: np.ndarray, ablated: np.ndarray) -> dict:
    """Seed `get_ablated_performance`: means over examples of per-example mean losses (nats)
    and the increase in percent of the original, with 95% intervals on the increase.

    Args:
        original, ablated: float `[n_examples]` per-example mean next-token losses (nats),
            example i of both the same text.
    Returns:
        `{"original", "ablated"` (nats), `"percent_increase"` (%), `"n_examples"`,
        `"increase_nats_ci"`, `"percent_increase_ci"`}`: the intervals are the paired
        bootstrap's (`core.stats.paired_bootstrap`, method in `core.stats.METHODS["loss"]`),
        None for a single example.
    """
    from ..core.stats import paired_bootstrap

    o, a = float(np.mean(original)), float(np.mean(ablated))
    ci = paired_bootstrap(original, ablated) if len(original) >= 2 else None
    return {"original": o, "ablated": a, "percent_increase": (a - o) / o * 100.0,
            "n_examples": int(len(original)),
            "increase_nats_ci": ci and ci["increase_nats"],
            "percent_increase_ci": ci and ci["percent_increase"]}


# ------------------------------------------------------------------ pipeline step


def run_step(run, arts: dict) -> dict:
    """Step `ablation`: mean-ablation losses of the context neuron, each studied neuron,
    and the all-except-context set (seed cells "Check loss increase from disabling each
    German neuron", its English sanity check, and the all-except-L3 cell); on German also
    the context neuron paired with each other neuron, for the `backup` step.

    Arrays `losses_{language}`: float64 `[rows, examples]`, per-example mean losses (nats)
    in the order of `result.per_example_losses.rows[language]` (`original` first)."""
    import sys

    from ..core.engine import per_example_losses
    from ..core.runner import LANGUAGES
    from .backup import pair_variants

    p = run.profile
    ctx = run.context
    acts = arts["activations"]
    toks = {lang: run.tokens(lang, p.loss_examples) for lang in LANGUAGES}
    params = {"examples_per_language": p.loss_examples, "context_neuron": str(ctx),
              "neurons": [str(n) for n in run.studied], "ablation": "mean (English mean, hook_post)",
              "tokens": {lang: toks[lang][1] for lang in toks}}

    def compute():
        res = acts["result"]
        values = res["english_means"]
        layer_means = {layer: run.store.load_array("activations", f"layer{layer}_mean_english")
                       for layer in res["layers"]}
        variants = dict(single_neuron_variants(list(dict.fromkeys([*run.studied, ctx])), values))
        rest = [n for n in run.studied if n != ctx]
        if rest:
            for k, v in all_except_context_variants(run.studied, ctx, values, layer_means).items():
                variants[f"all_except_context:{k}"] = v
        # The `backup` step's pairs (context neuron + each other neuron, German only) ride on
        # this step's unablated German pass instead of repeating it; `backup` reads them here.
        pairs = {f"{PAIR_PREFIX}{k}": v for k, v in pair_variants(ctx, rest, values).items()}
        losses = {lang: per_example_losses(run.fwd, run.batches(toks[lang][0]),
                                           {**variants, **(pairs if lang == "german" else {})},
                                           desc=f"losses {lang}", show_progress=run.show_progress)
                  for lang in LANGUAGES}

        def summary(name):
            return {lang: loss_summary(losses[lang]["original"], losses[lang][name])
                    for lang in LANGUAGES}

        from ..core.stats import METHODS

        result = {
            "n_examples": {lang: toks[lang][1]["used"] for lang in toks},
            "interval": METHODS["loss"],
            "loss_definition": "mean over examples of the per-example mean next-token "
                               "cross-entropy (nats), BOS prepended",
            "context": {"neuron": str(ctx), "value": values[str(ctx)], **summary(str(ctx))},
            "single": [{"neuron": str(n), "value": values[str(n)], **summary(str(n))}
                       for n in run.studied],
        }
        if rest:
            result["all_except_context"] = {
                k: {"description": ALL_EXCEPT_DESCRIPTIONS[k], "neurons": [str(n) for n in rest],
                    **summary(f"all_except_context:{k}")}
                for k in ALL_EXCEPT_DESCRIPTIONS}
        result["per_example_losses"] = {
            "rows": {lang: list(losses[lang]) for lang in LANGUAGES},
            "arrays": {lang: f"losses_{lang}" for lang in LANGUAGES},
            "pair_prefix": PAIR_PREFIX,
        }
        arrays = {f"losses_{lang}": np.stack(list(losses[lang].values())).astype(np.float64)
                  for lang in losses}
        return result, arrays

    inputs = run.inputs("ablation", sys.modules[__name__], params, run.data_prov(*LANGUAGES),
                        {"activations": acts["key"]})
    return run.step(inputs, compute)


def figures(run, arts: dict, fig_dir) -> list[dict]:
    import figures.plots as plots

    abl = arts["ablation"]
    fig = plots.ablation_bar(abl["result"]["single"])
    out = [plots.save(fig, fig_dir, "ablation_loss_increase", {
        "step": "ablation", "artifact_key": abl["key"], "function": "figures.plots.ablation_bar",
        "caption": "Loss increase (%) when each neuron is mean-ablated (set to its English mean), "
                   "on German and on English text.",
        "seed_cell": "Check loss increase from disabling each German neuron on German data",
    })]
    ctx = abl["result"]["context"]
    probe = next((r for r in arts["probes"]["result"]["rows"] if r["neuron"] == ctx["neuron"]),
                 None) if "probes" in arts else None
    seed = seed_values(ctx["neuron"]) if run.model.model_id == "pythia-70m" else None
    fig = plots.effect_summary(ctx, probe, seed)
    out.append(plots.save(fig, fig_dir, "summary_effect", {
        "step": "ablation", "artifact_key": abl["key"], "function": "figures.plots.effect_summary",
        "upstream": {"probes": arts["probes"]["key"]} if probe else {},
        "caption": f"The finding at a glance: the loss increase (%) on German and on English when "
                   f"{ctx['neuron']} is mean-ablated (bars: 95% paired-bootstrap intervals)"
                   + (", and its probe F1 (95% bootstrap interval over test points)" if probe else "")
                   + ("; black diamonds: the seed notebook's printed values" if seed else "") + ".",
        "seed_cell": "Check loss increase from disabling each German neuron on German data",
        "summary": True,
    }))
    return out


def seed_values(neuron: str) -> dict | None:
    """The seed notebook's printed loss increases (German, English) and probe F1 of
    `neuron`, from `analysis/resources/seed_reference.json` (None where it printed none)."""
    import json
    from pathlib import Path

    ref = json.loads((Path(__file__).resolve().parents[1] / "resources" / "seed_reference.json")
                     .read_text(encoding="utf-8"))
    single = ref["ablation"]["single"].get(neuron) or {}
    return {"german": (single.get("german") or {}).get("percent_increase"),
            "english": (single.get("english") or {}).get("percent_increase"),
            "f1": (ref["probes"]["rows"].get(neuron) or {}).get("f1")}
