"""The benchmark's building blocks (not its timings: `nox -s bench` prints those)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.core.config import GERMAN_NEURONS, get_profile
from analysis.core.engine import make_batches
from analysis.orchestration.bench import (
    engine_losses,
    forward_flops,
    linear_growth,
    nine_ablations,
    scaled_profile,
    seed_passes,
    seed_style_losses,
)


def test_seed_style_loop_and_engine_give_the_same_nine_loss_pairs(tiny, tiny_fwd):
    texts = ["Die Kommission hat heute einen neuen Vorschlag vorgelegt.",
             "Wir haben gemeinsam viel erreicht, und das ist gut so."]
    toks = [tiny.to_tokens(t) for t in texts]
    means = {str(n): 0.1 * (i + 1) for i, n in enumerate(GERMAN_NEURONS)}
    ablations = nine_ablations(means)
    assert len(ablations) == 9 and ablations[0][1] == ablations[-1][1]  # L3N669 twice, as the seed
    seed = seed_style_losses(tiny.bridge, toks, ablations, show_progress=False)
    eng = engine_losses(tiny_fwd, make_batches(toks, 4096, 1), ablations, show_progress=False)
    for name, _, _ in ablations:
        for i in (0, 1):
            np.testing.assert_allclose(eng[name][i], seed[name][i], rtol=1e-4)
    # an ablation changes the loss, so the comparison is not between two unedited runs
    assert any(np.abs(seed[n][1] - seed[n][0]).max() > 1e-6 for n, _, _ in ablations)


def test_forward_flops_counts_real_tokens_from_the_shape(tiny_fwd):
    w = tiny_fwd.w
    d, d_mlp, L, V = w.W_E.shape[1], w.d_mlp, w.n_layers, w.W_U.shape[1]
    (b,) = make_batches([[0, 1, 2], [0, 1, 2, 3, 4]], 4096, 1)
    expect = sum(L * (n * (8 * d * d + 4 * d * d_mlp) + 4 * d * n * (n + 1) / 2) + 2 * d * V * (n - 1)
                 for n in (3, 5))
    assert forward_flops(w, [b]) == pytest.approx(expect)


def test_growth_is_linear_in_size_and_never_negative():
    assert linear_growth(10, 2.0, 20, 3.0, 100) == pytest.approx(9.0)  # 0.1 per unit, 90 units
    assert linear_growth(10, 3.0, 20, 2.5, 100) == 0.0  # a falling quantity does not grow
    assert linear_growth(10, 3.0, 10, 9.0, 100) == 0.0  # no second size, no slope


def test_scaled_profile_doubles_sample_sizes_only():
    q = get_profile("quick")
    d = scaled_profile(q, 2)
    assert d.loss_examples == 2 * q.loss_examples and d.probe_samples == 2 * q.probe_samples
    assert (d.crop_start, d.crop_end, d.seed, d.batch_tokens) == (q.crop_start, q.crop_end, q.seed, q.batch_tokens)
    assert d.name == "quickx2"


def test_seed_pass_counts_follow_the_seed_cells():
    def art(params, result):
        return {"provenance": {"params": params}, "result": result}

    tk = {"german": {"requested": 40}, "english": {"requested": 40}}
    abl = art({"tokens": tk}, {"per_example_losses": {"rows": {
        "german": ["original", "A", "B", "pair:B"], "english": ["original", "A", "B"]}}})
    assert seed_passes("ablation", abl, 6) == [("german", 40, 6.0), ("english", 40, 4.0)]
    act = art({"tokens": tk, "layers": [3, 4, 5]}, {})
    assert seed_passes("activations", act, 6) == [("german", 40, 3.0), ("english", 40, 3.0)]
    assert seed_passes("probes", art({}, {}), 6) == []
    dla = art({"tokens": {"requested": 20}, "components": {str(i): i for i in range(5)}}, {})
    assert seed_passes("dla", dla, 6) == [("german", 20, 12.0)]
    # neurons: one get_examples_by_neuron per seed cell, each over its own pool (capped)
    from analysis.families.neurons import neuron_plan

    plan = [e.as_dict() for e in neuron_plan("paper")]
    nrn = art({"tokens": {"shift": tk}, "top_examples": 5, "neuron_examples": 1000, "plan": plan}, {})
    assert seed_passes("neurons", nrn, 6) == [
        ("german", 40, 4.0), ("english", 40, 4.0),
        ("german", 500, 2.04), ("german", 1000, 2.02), ("german", 500, 2.04), ("german", 500, 2.04),
        ("german", 1000, 2.02), ("english", 500, 2.04)]
