"""Probe, ablation variants and the seed's literal all-except-L3 hook."""

from __future__ import annotations

import numpy as np
import torch

from analysis.core.config import GERMAN_NEURONS, Neuron
from analysis.families.ablation import (
    all_except_context_variants,
    loss_summary,
    single_neuron_variants,
)
from analysis.families.probes import single_neuron_probe


def test_probe_reaches_f1_one_on_separable_activations():
    rng = np.random.default_rng(0)
    german = rng.normal(4.0, 0.3, 3000)
    english = rng.normal(-0.1, 0.3, 3000)
    r = single_neuron_probe(german, english, n_samples=2000, test_size=0.2, seed=0)
    assert r["f1"] == 1.0 and r["test_acc"] == 1.0
    assert r["n_per_class"] == [2000, 2000]


def test_probe_is_at_chance_on_identical_distributions():
    rng = np.random.default_rng(1)
    r = single_neuron_probe(rng.normal(0, 1, 2000), rng.normal(0, 1, 2000), 2000, 0.2, 0)
    assert 0.4 < r["test_acc"] < 0.6


def test_single_variants_target_their_own_layer_and_value():
    values = {str(n): float(i) for i, n in enumerate(GERMAN_NEURONS)}
    variants = single_neuron_variants(GERMAN_NEURONS, values)
    x = torch.zeros(1, 2, 2048)
    for n in GERMAN_NEURONS:
        (hook, fn), = variants[str(n)].items()
        assert hook == f"blocks.{n.layer}.mlp.hook_post"
        y = fn(x)
        assert torch.all(y[..., n.index] == values[str(n)])
        assert float(y.abs().sum()) == abs(values[str(n)]) * 2


def test_seed_literal_all_except_hook_reproduces_the_layer_eq_layer_bug():
    ctx = Neuron(3, 669)
    values = {str(n): 10.0 + i for i, n in enumerate(GERMAN_NEURONS)}
    means = {4: np.arange(2048, dtype=float), 5: -np.arange(2048, dtype=float)}
    v = all_except_context_variants(GERMAN_NEURONS, ctx, values, means)
    rest = [n for n in GERMAN_NEURONS if n != ctx]
    idx = [n.index for n in rest]
    x = torch.zeros(1, 1, 2048)
    # intended: layer 4 touches only L4 neurons, each with its own value
    y4 = v["intended"]["blocks.4.mlp.hook_post"](x)
    assert set(torch.nonzero(y4[0, 0]).flatten().tolist()) == {482, 326}
    assert float(y4[0, 0, 482]) == values["L4N482"]
    # literal: every listed index in both layers, set to the mean over those indices
    for layer in (4, 5):
        y = v["seed_literal"][f"blocks.{layer}.mlp.hook_post"](x)
        assert set(torch.nonzero(y[0, 0]).flatten().tolist()) == set(idx)
        assert torch.allclose(y[0, 0, idx], torch.tensor(float(np.mean(means[layer][idx]))))
    assert "blocks.3.mlp.hook_post" not in v["intended"]


def test_filter_fixed_all_except_hook_sets_each_layers_neurons_to_one_pooled_mean():
    """The seed's `all_except_l3` with only its filter fixed (`if l == layer`): in each hooked
    layer, that layer's listed neurons all set to
    `english_activations[layer][:, layer_neurons].mean()`, computed here directly from a
    `[positions, d_mlp]` activation matrix per layer."""
    ctx = Neuron(3, 669)
    rng = np.random.default_rng(0)
    acts = {4: rng.normal(0.0, 1.0, (50, 2048)), 5: rng.normal(1.0, 2.0, (50, 2048))}
    means = {layer: a.mean(0) for layer, a in acts.items()}
    values = {str(n): 10.0 + i for i, n in enumerate(GERMAN_NEURONS)}
    v = all_except_context_variants(GERMAN_NEURONS, ctx, values, means)
    assert set(v) == {"intended", "seed_literal", "filter_fixed"}
    pairs = [(n.layer, n.index) for n in GERMAN_NEURONS if n != ctx]
    assert set(v["filter_fixed"]) == {"blocks.4.mlp.hook_post", "blocks.5.mlp.hook_post"}
    x = torch.full((2, 3, 2048), 7.0, dtype=torch.float64)
    for layer in (4, 5):
        layer_neurons = [i for lyr, i in pairs if lyr == layer]
        expected = x.clone()
        expected[:, :, layer_neurons] = float(acts[layer][:, layer_neurons].mean())
        y = v["filter_fixed"][f"blocks.{layer}.mlp.hook_post"](x)
        torch.testing.assert_close(y, expected)
    assert sorted(i for lyr, i in pairs if lyr == 4) == [326, 482]
    # one scalar per layer, and not the seed-literal one (which pools all seven columns)
    y4 = v["filter_fixed"]["blocks.4.mlp.hook_post"](x)[0, 0]
    lit4 = v["seed_literal"]["blocks.4.mlp.hook_post"](x)[0, 0]
    assert float(y4[482]) == float(y4[326]) != float(lit4[482])


def test_loss_summary_percent():
    s = loss_summary(np.array([2.0, 4.0]), np.array([3.0, 4.5]))
    assert s["original"] == 3.0 and s["ablated"] == 3.75 and abs(s["percent_increase"] - 25.0) < 1e-12


def test_neuron_parsing_and_range():
    import pytest

    from analysis.core.errors import UsageError

    assert Neuron.parse("L3N669") == Neuron(3, 669) and str(Neuron(5, 1336)) == "L5N1336"
    for bad in ("L3X669", "3N669", "L3N", ""):
        with pytest.raises(UsageError):
            Neuron.parse(bad)
    with pytest.raises(UsageError, match="out of range"):
        Neuron.parse("L6N0").check(6, 2048)
    with pytest.raises(UsageError, match="out of range"):
        Neuron.parse("L3N4096").check(6, 2048)
