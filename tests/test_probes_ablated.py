"""Probes on ablated activations, the English/French neuron lists, and the correlations."""

from __future__ import annotations

import numpy as np

from analysis.core.config import ENGLISH_NEURONS, Neuron
from analysis.core.engine import make_batches, set_neurons
from analysis.families.activations import collect_mlp_activations
from analysis.families.correlations import correlation_rows, pearson
from analysis.families.language_probes import examples_for, existing, probe_table
from analysis.families.probes import probe_rows
from analysis.families.probes_ablated import crop_tokens

CTX = Neuron(3, 669)
OTHER = Neuron(5, 1336)


def _corpus(name):
    from analysis.core.data import load_corpus

    return load_corpus(name).examples


def test_probe_on_the_ablated_context_neuron_collapses(tiny, tiny_fwd):
    neurons = [OTHER, CTX]
    value = -0.05
    edits = {CTX.hook(): set_neurons([CTX.index], value)}
    acts = {}
    for lang in ("fixture_german", "fixture_english"):
        toks = [tiny.to_tokens(t) for t in _corpus(lang)[:12] if t.strip()]
        acts[lang], _, n = collect_mlp_activations(tiny_fwd, make_batches(crop_tokens(toks, 60), 4096, 1),
                                                   [3, 5], neurons, (10, 60), edits=edits, show_progress=False)
        assert n > 100
        clean, _, _ = collect_mlp_activations(tiny_fwd, make_batches(toks, 4096, 1), [3, 5], neurons,
                                              (10, 60), show_progress=False)
        # the edited neuron records the constant; the later neuron moves with it
        assert np.all(acts[lang][:, 1] == np.float32(value))
        assert not np.allclose(clean[:, 1], value)
        assert not np.array_equal(clean[:, 0], acts[lang][:, 0])
    rows = probe_rows(neurons, acts["fixture_german"], acts["fixture_english"], [str(n) for n in neurons],
                      n_samples=400, test_size=0.2, seed=0)
    ctx_row = rows[1]
    assert ctx_row["neuron"] == "L3N669"
    assert abs(ctx_row["test_acc"] - 0.5) < 0.08 and ctx_row["mean_german"] == ctx_row["mean_english"]


def test_cropping_the_input_keeps_the_cropped_activations(tiny, tiny_fwd):
    toks = [tiny.to_tokens(t) for t in _corpus("fixture_german")[:4] if t.strip()]
    assert max(len(t) for t in toks) > 30
    full, means_full, n_full = collect_mlp_activations(tiny_fwd, make_batches(toks, 4096, 1), [5], [OTHER],
                                                       (5, 30), show_progress=False)
    cut, means_cut, n_cut = collect_mlp_activations(tiny_fwd, make_batches(crop_tokens(toks, 30), 4096, 1),
                                                    [5], [OTHER], (5, 30), show_progress=False)
    assert n_full == n_cut
    np.testing.assert_allclose(full, cut, atol=1e-5)


def test_probe_table_positive_class_and_existing_neurons():
    rng = np.random.default_rng(0)
    pos = rng.normal(3.0, 0.3, (500, 2))
    neg = rng.normal(0.0, 0.3, (500, 2))
    neurons = [Neuron(5, 395), Neuron(5, 166)]
    rows = probe_table(neurons, pos, neg, ("english", "german"), 400, 0.2, 0)
    assert rows[0]["f1"] == 1.0 and rows[0]["mean_english"] > rows[0]["mean_german"]
    keep, skipped = existing(ENGLISH_NEURONS, n_layers=4, d_mlp=1000)
    assert [str(n) for n in skipped] == ["L5N395", "L5N166", "L5N908", "L5N285", "L5N73",
                                         "L4N896", "L5N348", "L5N297", "L3N1204"]
    assert [str(n) for n in keep] == ["L3N862"]


def test_pearson_and_correlation_rows():
    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    y = 0.5 * x + rng.normal(size=300)
    assert abs(pearson(x, y) - np.corrcoef(x, y)[0, 1]) < 1e-12
    assert pearson(x, np.full(300, 2.0)) is None
    de = np.stack([x, y, -x], 1)
    en = np.stack([y, x, np.ones(300)], 1)
    rows = correlation_rows(de, en, ["A", "B", "CTX"], "CTX")
    assert [r["neuron"] for r in rows] == ["A", "B"]
    assert rows[0]["german"] == -1.0 and rows[0]["english"] is None
    pooled = np.concatenate([de, en])
    assert abs(rows[1]["pooled"] - np.corrcoef(pooled[:, 1], pooled[:, 2])[0, 1]) < 1e-12


def test_examples_for_the_probe_sample():
    # positions 10..400: lengths 5 (none), 110 (100), 500 (390), 50 (40)
    assert examples_for([5, 110, 500, 50], (10, 400), 100) == 2
    assert examples_for([5, 110, 500, 50], (10, 400), 101) == 3
    assert examples_for([5, 110, 500, 50], (10, 400), 10_000) == 4
