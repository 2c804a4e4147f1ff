"""The German-neuron probes repeated with the context neuron mean-ablated (seed: "Remaining
analysis": `get_mlp_activations` under `model.hooks(ABLATE_HOOK)`, then the same
`run_single_neuron_lr`).

Activations are collected on the same examples and positions as the `activations` step,
with the context neuron's `hook_post` set to its English mean during the pass. The context
neuron's own recorded activation is then that constant, so its probe collapses to chance
(the seed printed F1 0.00, accuracy 0.50); the other neurons show how much of their
German/English separation survives without it.
"""

from __future__ import annotations

from collections.abc import Sequence

SEED_SECTION = "Remaining analysis"


def crop_tokens(token_lists: Sequence[Sequence[int]], end: int) -> list[list[int]]:
    """Each example cut to its first `end` tokens: under the causal mask the activations at
    positions < `end` do not depend on later tokens, so activations cropped to
    `[start, end)` are unchanged and the pass is shorter."""
    return [list(t[:end]) for t in token_lists]


# ------------------------------------------------------------------ pipeline step


def run_step(run, arts: dict) -> dict:
    """Step `probes_ablated`: probes of the studied neurons on activations with the context
    neuron set to its English mean."""
    import sys

    from ..core.engine import set_neurons
    from ..core.runner import LANGUAGES
    from .activations import collect_mlp_activations
    from .probes import probe_rows

    p = run.profile
    ctx = run.context
    acts = arts["activations"]["result"]
    value = acts["context_mean_inactive"]
    neurons = list(dict.fromkeys([*run.studied, ctx]))
    layers = sorted({n.layer for n in neurons})
    toks = {lang: run.tokens(lang, p.activation_examples) for lang in LANGUAGES}
    params = {"examples_per_language": p.activation_examples, "crop": [p.crop_start, p.crop_end],
              "hook": "mlp.hook_post", "neurons": [str(n) for n in neurons],
              "context_neuron": str(ctx), "ablation": "context neuron hook_post set to its English "
              "mean during the pass", "n_per_language": p.probe_samples,
              "test_size": p.probe_test_size, "split_seed": p.seed, "positive_class": "german",
              "tokens": {lang: toks[lang][1] for lang in toks}}

    def compute():
        edits = {ctx.hook(): set_neurons([ctx.index], value)}
        samples, counts = {}, {}
        for lang in LANGUAGES:
            s, _, c = collect_mlp_activations(
                run.fwd, run.batches(crop_tokens(toks[lang][0], p.crop_end)), layers, neurons,
                (p.crop_start, p.crop_end), edits=edits, desc=f"ablated activations {lang}",
                show_progress=run.show_progress)
            samples[lang], counts[lang] = s, c
        cols = [str(n) for n in neurons]
        rows = probe_rows(run.studied, samples["german"], samples["english"], cols,
                          p.probe_samples, p.probe_test_size, p.seed)
        result = {"context_neuron": str(ctx), "ablation_value": value,
                  "neurons": [str(n) for n in run.studied], "n_per_language": p.probe_samples,
                  "test_size": p.probe_test_size, "split_seed": p.seed,
                  "n_examples": {lang: toks[lang][1]["used"] for lang in toks},
                  "n_activations": counts, "rows": rows}
        return result, {"german": samples["german"], "english": samples["english"]}

    inputs = run.inputs("probes_ablated", sys.modules[__name__], params, run.data_prov(*LANGUAGES),
                        {"activations": arts["activations"]["key"]})
    return run.step(inputs, compute)


def figures(run, arts: dict, fig_dir) -> list[dict]:
    import figures.dla as plots_dla
    from figures.plots import save

    art = arts["probes_ablated"]
    r = art["result"]
    if "probes" not in arts:
        return []
    probes = {row["neuron"]: row for row in arts["probes"]["result"]["rows"]}
    rows = [row for row in r["rows"] if row["neuron"] in probes]
    fig = plots_dla.probe_f1_before_after([row["neuron"] for row in rows],
                                          [probes[row["neuron"]]["f1"] for row in rows],
                                          [row["f1"] for row in rows], r["context_neuron"],
                                          [probes[row["neuron"]].get("f1_ci") for row in rows],
                                          [row.get("f1_ci") for row in rows])
    return [save(fig, fig_dir, "probes_ablated_f1", {
        "step": "probes_ablated", "artifact_key": art["key"],
        "function": "figures.dla.probe_f1_before_after",
        "caption": f"Test F1 of each single-neuron German-vs-English probe, on the original "
                   f"activations and with {r['context_neuron']} mean-ablated.",
        "seed_cell": SEED_SECTION, "upstream": {"probes": arts["probes"]["key"]}})]


def regression_metrics(arts):
    """(name, value, seed section) for `analysis.orchestration.regression`
    (`probes_context_ablated.<neuron>.<f1|train_acc|test_acc|mean_english|mean_german>`)."""
    if "probes_ablated" not in arts:
        return
    for r in arts["probes_ablated"]["result"]["rows"]:
        for k in ("f1", "train_acc", "test_acc", "mean_english", "mean_german"):
            yield f"probes_context_ablated.{r['neuron']}.{k}", r[k], SEED_SECTION
