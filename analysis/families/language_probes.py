"""Single-neuron probes for the seed's English and French neuron lists.

The seed's setup cell lists `english_neurons` and `french_neurons` beside the German ones
but never prints a probe for them. Here each gets the same single-neuron logistic
regression as the German neurons (seed `run_single_neuron_lr`), on the same positions
(`crop`) of the same first examples as the `activations` step. The probe reads only the
first `probe_samples` activations per class (in example order), so only the shortest prefix
of those examples that yields them is run (`examples_for`): the probe is the one the full
`activation_examples` would give, and the mean activations are over that prefix.

* English neurons: English (positive class) vs German (`kde4_english` vs `wmt_german_large`);
* French neurons: French (positive class) vs English (`kde4_french` vs `kde4_english`),
  only when the run has the French corpus (the seed corpus set).

Neurons that do not exist in the model (smaller test models) are skipped and listed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.config import ENGLISH_NEURONS, FRENCH_NEURONS, Neuron

SEED_SECTION = "Set up model, data, and deactivate German neuron hook (english_neurons, french_neurons)"

LISTS = {
    "english": {"neurons": ENGLISH_NEURONS, "positive": "english", "negative": "german"},
    "french": {"neurons": FRENCH_NEURONS, "positive": "french", "negative": "english"},
}


def existing(neurons: Sequence[Neuron], n_layers: int, d_mlp: int) -> tuple[list[Neuron], list[Neuron]]:
    """(neurons that exist in a model of this shape, those that do not)."""
    keep = [n for n in neurons if 0 <= n.layer < n_layers and 0 <= n.index < d_mlp]
    return keep, [n for n in neurons if n not in keep]


def probe_table(neurons: Sequence[Neuron], positive: np.ndarray, negative: np.ndarray,
                names: tuple[str, str], n_samples: int, test_size: float, seed: int) -> list[dict]:
    """One probe row per neuron; columns of `positive`/`negative` follow `neurons`.
    `names`: (positive, negative) class names, used for the mean keys."""
    from .probes import single_neuron_probe

    rows = []
    for i, n in enumerate(neurons):
        r = single_neuron_probe(positive[:, i], negative[:, i], n_samples, test_size, seed)
        rows.append({"neuron": str(n), "layer": n.layer, "index": n.index, **r,
                     f"mean_{names[0]}": float(positive[:, i].mean()),
                     f"mean_{names[1]}": float(negative[:, i].mean())})
    return rows


def examples_for(lengths: Sequence[int], crop: tuple[int, int], n_needed: int) -> int:
    """How many of the first examples (token counts `lengths`, BOS included) give at least
    `n_needed` activations at positions `crop[0]:crop[1]`; all of them if they give fewer."""
    total = 0
    for i, n in enumerate(lengths):
        total += max(0, min(n, crop[1]) - crop[0])
        if total >= n_needed:
            return i + 1
    return len(lengths)


def has_french(run) -> bool:
    return "french" in run.corpora


# ------------------------------------------------------------------ pipeline steps


def _run_list(run, arts: dict, which: str) -> dict:
    import sys

    from .activations import collect_mlp_activations
    from .probes_ablated import crop_tokens

    spec = LISTS[which]
    step = f"probes_{which}_neurons"
    p = run.profile
    w = run.fwd.w
    neurons, skipped = existing(spec["neurons"], w.n_layers, w.d_mlp)
    langs = (spec["positive"], spec["negative"])
    toks = {}
    crop = (p.crop_start, p.crop_end)
    for lang in langs:
        t, rec = run.tokens(lang, p.activation_examples)
        k = examples_for([len(x) for x in t], crop, p.probe_samples)
        toks[lang] = (t[:k], {**rec, "used_for_probe": k})
    params = {"neurons": [str(n) for n in neurons], "skipped": [str(n) for n in skipped],
              "positive_class": spec["positive"], "negative_class": spec["negative"],
              "examples_per_language": p.activation_examples, "crop": [p.crop_start, p.crop_end],
              "hook": "mlp.hook_post", "n_per_language": p.probe_samples,
              "test_size": p.probe_test_size, "split_seed": p.seed,
              "classifier": "sklearn LogisticRegression() defaults",
              "tokens": {lang: toks[lang][1] for lang in toks}}

    def compute():
        result = {"list": which, "neurons": [str(n) for n in neurons], "skipped": [str(n) for n in skipped],
                  "positive_class": spec["positive"], "negative_class": spec["negative"],
                  "n_per_language": p.probe_samples, "test_size": p.probe_test_size,
                  "split_seed": p.seed,
                  "n_examples": {lang: toks[lang][1]["used_for_probe"] for lang in toks},
                  "sample": "the first examples (of the activations step's) that give "
                            f"{p.probe_samples} activations per class at positions "
                            f"{p.crop_start}-{p.crop_end}; means over the same activations",
                  "rows": []}
        if not neurons:
            result["n_activations"] = {lang: 0 for lang in langs}
            return result, {}
        layers = sorted({n.layer for n in neurons})
        samples, counts = {}, {}
        for lang in langs:
            s, _, c = collect_mlp_activations(
                run.fwd, run.batches(crop_tokens(toks[lang][0], p.crop_end)), layers, neurons,
                (p.crop_start, p.crop_end), desc=f"{which} neurons: {lang}",
                show_progress=run.show_progress)
            samples[lang], counts[lang] = s, c
        result["n_activations"] = counts
        result["rows"] = probe_table(neurons, samples[langs[0]], samples[langs[1]], langs,
                                     p.probe_samples, p.probe_test_size, p.seed)
        return result, {lang: samples[lang] for lang in langs}

    inputs = run.inputs(step, sys.modules[__name__], params, run.data_prov(*langs), {})
    return run.step(inputs, compute)


def run_english(run, arts: dict) -> dict:
    """Step `probes_english_neurons`: the seed's English neurons, English vs German."""
    return _run_list(run, arts, "english")


def run_french(run, arts: dict) -> dict:
    """Step `probes_french_neurons`: the seed's French neurons, French vs English."""
    return _run_list(run, arts, "french")
