"""MLP activations on English and German text (seed: "Set up model, data, and deactivate
German neuron hook", `haystack_utils.get_mlp_activations`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .config import Neuron
from .engine import Batch, Edits, Forward, progress


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
) -> tuple[np.ndarray, dict[int, np.ndarray], int]:
    """Activations of `blocks.{layer}.mlp.{hook}` at positions `crop[0]:crop[1]` of every
    example (position 0 is BOS), in example order then position order, as the seed's
    `get_mlp_activations(..., mean=False)` concatenates them.

    The pass stops after the last layer in `layers` (no unembedding).

    Returns:
        samples: float32 `[n_activations, len(neurons)]`, the listed neurons' activations.
        layer_means: `{layer: float64 [d_mlp]}`, every neuron's mean over the same positions.
        n_activations: number of (example, position) pairs kept.
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
                for layer, name in zip(layers, names, strict=True):
                    acts = capture[name][row, start:hi]  # [pos, d_mlp]
                    sums[layer] += acts.sum(0).double().cpu()
                for nrn in neurons:
                    cols.append(capture[f"blocks.{nrn.layer}.mlp.{hook}"][row, start:hi, nrn.index])
                per_example[ex] = torch.stack(cols, -1).float().cpu().numpy()
                count += hi - start
    samples = np.concatenate([per_example[i] for i in sorted(per_example)], axis=0)
    means = {layer: (sums[layer] / max(count, 1)).numpy() for layer in layers}
    return samples, means, count
