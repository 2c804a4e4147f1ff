"""Mean ablation of the context neuron and of the seed's German neurons (seed: "Check loss
increase from disabling each German neuron on German data")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .config import Neuron
from .engine import Edits, set_neurons


def single_neuron_variants(neurons: Sequence[Neuron], values: Mapping[str, float]) -> dict[str, Edits]:
    """One variant per neuron: its `hook_post` set to `values[str(neuron)]` (its English mean),
    seed `get_deactivate_single_neuron_hook`."""
    return {str(n): {n.hook(): set_neurons([n.index], values[str(n)])} for n in neurons}


def all_except_context_variants(neurons: Sequence[Neuron], context: Neuron,
                                values: Mapping[str, float],
                                layer_means_english: Mapping[int, np.ndarray]) -> dict[str, Edits]:
    """The seed's "ablate all German neurons except the L3 one", two ways.

    `intended`: each listed neuron other than the context neuron set to its own English
    mean, in its own layer.

    `seed_literal`: what the seed's hook `all_except_l3` computed. Its filter
    `[neuron for layer, neuron in german_neurons_not_l3 if layer == layer]` compares the
    loop variable with itself, so every listed index is ablated in every hooked layer
    (4 and 5), and each is set to one scalar, `english_activations[layer][:, indices].mean()`
    (the mean over all those indices of that layer's English activations).
    """
    rest = [n for n in neurons if n != context]
    intended: dict[str, object] = {}
    for layer in sorted({n.layer for n in rest}):
        in_layer = [n for n in rest if n.layer == layer]
        intended[f"blocks.{layer}.mlp.hook_post"] = set_neurons(
            [n.index for n in in_layer], [values[str(n)] for n in in_layer])
    indices = [n.index for n in rest]
    literal: dict[str, object] = {}
    for layer in sorted({n.layer for n in rest}):
        scalar = float(np.mean(layer_means_english[layer][indices]))
        literal[f"blocks.{layer}.mlp.hook_post"] = set_neurons(indices, scalar)
    return {"intended": intended, "seed_literal": literal}


def loss_summary(original: np.ndarray, ablated: np.ndarray) -> dict:
    """Seed `get_ablated_performance`: means over examples of per-example mean losses (nats)
    and the increase in percent of the original."""
    o, a = float(np.mean(original)), float(np.mean(ablated))
    return {"original": o, "ablated": a, "percent_increase": (a - o) / o * 100.0,
            "n_examples": int(len(original))}
