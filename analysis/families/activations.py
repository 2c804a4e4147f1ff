"""MLP activations on English and German text (seed: "Set up model, data, and deactivate
German neuron hook", `haystack_utils.get_mlp_activations`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..core.config import Neuron
from ..core.engine import Batch, Edits, Forward, progress


def collect_mlp_activations(
    fwd: Forward,
    batches: Sequence[Batch],
    layers: Sequence[int],
    neurons: Sequence[Neuron],
    crop: tuple[int, int],
    hook: str = "hook_post",
    edits: Edits | None = None,
    desc: str = "activations",
    show_progress: bool = True,
    sequence_means: dict[int, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[int, np.ndarray], int]:
    """Activations of `blocks.{layer}.mlp.{hook}` at positions `crop[0]:crop[1]` of every
    example (position 0 is BOS), in example order then position order, as the seed's
    `get_mlp_activations(..., mean=False)` concatenates them.

    The pass stops after the last layer in `layers` (no unembedding).

    Returns:
        samples: float32 `[n_activations, len(neurons)]`, the listed neurons' activations.
        layer_means: `{layer: float64 [d_mlp]}`, every neuron's mean over the same positions.
        n_activations: number of (example, position) pairs kept.

    `sequence_means`, when given, is filled with `{example index: float32 [len(layers) * d_mlp]}`:
    each example's mean over its kept positions of every neuron of the captured layers
    (layer-major, ascending layers; Gurnee et al.'s sequence-mean aggregation, read by the
    `robustness` step). Examples with no kept position are left out. It rides this pass so
    that no step forwards the same examples again for it.
    """
    layers = sorted(set(layers) | {n.layer for n in neurons})
    names = [f"blocks.{layer}.mlp.{hook}" for layer in layers]
    start, end = crop
    per_example: dict[int, np.ndarray] = {}
    sums = {layer: torch.zeros(fwd.w.d_mlp, dtype=torch.float64) for layer in layers}
    count = 0
    with torch.inference_mode():
        for batch in progress(batches, desc, show_progress):
            capture = dict.fromkeys(names)
            fwd.run(batch.tokens, stop_layer=max(layers) + 1, edits=edits, capture=capture)
            for row, ex in enumerate(batch.index):
                n_tok = int(batch.lengths[row])
                hi = min(end, n_tok)
                if hi <= start:
                    per_example[ex] = np.zeros((0, len(neurons)), dtype=np.float32)
                    continue
                cols = []
                row_sums = []
                for layer, name in zip(layers, names, strict=True):
                    acts = capture[name][row, start:hi]  # [pos, d_mlp]
                    s = acts.sum(0).double().cpu()
                    sums[layer] += s
                    row_sums.append(s)
                if sequence_means is not None:
                    sequence_means[ex] = (torch.cat(row_sums) / (hi - start)).float().numpy()
                for nrn in neurons:
                    cols.append(capture[f"blocks.{nrn.layer}.mlp.{hook}"][row, start:hi, nrn.index])
                per_example[ex] = torch.stack(cols, -1).float().cpu().numpy()
                count += hi - start
    samples = np.concatenate([per_example[i] for i in sorted(per_example)], axis=0)
    means = {layer: (sums[layer] / max(count, 1)).numpy() for layer in layers}
    return samples, means, count


# ------------------------------------------------------------------ pipeline step


def run_step(run, arts: dict) -> dict:
    """Step `activations`: `hook_post` of the studied neurons' layers on the first
    `activation_examples` German and English examples (seed cell "Set up model, data...")."""
    from ..core.errors import ReportError
    from ..core.runner import LANGUAGES

    p = run.profile
    neurons = list(dict.fromkeys([*run.studied, run.context]))
    layers = sorted({n.layer for n in neurons})
    n_layers = run.fwd.w.n_layers
    toks = {lang: run.tokens(lang, p.activation_examples) for lang in LANGUAGES}
    params = {"examples_per_language": p.activation_examples, "crop": [p.crop_start, p.crop_end],
              "hook": "mlp.hook_post", "layers": layers, "neurons": [str(n) for n in neurons],
              "context_neuron": str(run.context),
              "tokens": {lang: toks[lang][1] for lang in toks}}

    def compute():
        samples, means, counts, seq = {}, {}, {}, {}
        for lang in LANGUAGES:
            # Every layer is captured (not only the studied neurons' layers): the `robustness`
            # step reads every neuron's token mean and sequence means from this pass instead
            # of forwarding the same examples again. The seed's neuron lists reach the last
            # layer, so for Pythia-70M's shape this adds no block to the pass.
            seq[lang] = {}
            s, m, c = collect_mlp_activations(
                run.fwd, run.batches(toks[lang][0]), range(n_layers), neurons, (p.crop_start, p.crop_end),
                desc=f"activations {lang}", show_progress=run.show_progress, sequence_means=seq[lang])
            samples[lang], means[lang], counts[lang] = s, m, c
        if min(counts.values()) == 0:
            raise ReportError("no activation was collected: every example is shorter than the "
                              f"crop start ({p.crop_start} tokens)")
        col = {str(n): i for i, n in enumerate(neurons)}
        ctx = str(run.context)
        result = {
            "context_neuron": ctx, "neurons": [str(n) for n in neurons], "layers": layers,
            "hook": "mlp.hook_post", "crop": [p.crop_start, p.crop_end],
            "mean_layers": list(range(n_layers)),
            "sequence_means": "activations.sequence_means_<language>.npy: float32 [examples with a "
                              "position in the crop, n_layers * d_mlp], layer-major",
            "n_examples": {lang: toks[lang][1]["used"] for lang in toks},
            "n_activations": counts,
            # examples with no position in the crop window contribute no activation
            "examples_shorter_than_crop": {lang: sum(len(t) <= p.crop_start for t in toks[lang][0])
                                           for lang in toks},
            "context_mean_active": float(samples["german"][:, col[ctx]].mean()),
            "context_mean_inactive": float(samples["english"][:, col[ctx]].mean()),
            "german_means": {n: float(samples["german"][:, i].mean()) for n, i in col.items()},
            "english_means": {n: float(samples["english"][:, i].mean()) for n, i in col.items()},
        }
        arrays = {"german": samples["german"], "english": samples["english"]}
        for lang in LANGUAGES:
            for layer, m in means[lang].items():
                arrays[f"layer{layer}_mean_{lang}"] = m.astype(np.float64)
            arrays[f"sequence_means_{lang}"] = np.stack([seq[lang][i] for i in sorted(seq[lang])])
        return result, arrays

    import sys

    inputs = run.inputs("activations", sys.modules[__name__], params,
                        run.data_prov(*LANGUAGES), {})
    return run.step(inputs, compute)


def figures(run, arts: dict, fig_dir) -> list[dict]:
    """English-vs-German histograms of the context neuron and of each studied neuron."""
    import figures.plots as plots

    from ..core.config import Neuron

    acts = arts["activations"]
    de = run.store.load_array("activations", "german")
    en = run.store.load_array("activations", "english")
    neurons = acts["result"]["neurons"]
    ctx = acts["result"]["context_neuron"]
    out = []
    for n in [ctx] + [n for n in neurons if n != ctx]:
        i = neurons.index(n)
        fig = plots.activation_histogram(en[:, i], de[:, i], n)
        out.append(plots.save(fig, fig_dir, f"activation_hist_{n}", {
            "step": "activations", "artifact_key": acts["key"],
            "function": "figures.plots.activation_histogram",
            "caption": f"{n} activations (blocks.{Neuron.parse(n).layer}.mlp.hook_post, positions "
                       f"{acts['result']['crop'][0]}–{acts['result']['crop'][1]}) on English vs German text.",
            "seed_cell": "Check classification accuracy of German neurons (two_histogram)",
            "neuron": n,
        }))
    return out
