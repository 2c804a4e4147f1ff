"""The `robustness` family (issue 21 §1, §2): null neurons, percentiles, the finding's
criterion, resample ablation and the max-statistic permutation null."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.core.config import Neuron
from analysis.families.robustness import (
    corpus_activations,
    holds,
    max_f1_null,
    max_f1_null_per_token,
    null_neurons,
    percentile_of,
    resample_edit,
    sequence_of_rows,
    single_neuron_losses,
)


def test_null_neurons_are_seeded_distinct_per_layer_and_never_excluded():
    ctx = Neuron(1, 3)
    a = null_neurons(3, 10, 4, seed=0, exclude=[ctx])
    assert a == null_neurons(3, 10, 4, seed=0, exclude=[ctx])
    assert a != null_neurons(3, 10, 4, seed=1, exclude=[ctx])
    assert len(a) == 12 and len(set(a)) == 12 and ctx not in a
    assert [sum(n.layer == layer for n in a) for layer in range(3)] == [4, 4, 4]
    # every other neuron of a layer is drawn when k is all that is left
    full = null_neurons(2, 5, 4, seed=0, exclude=[Neuron(0, 2)])
    assert {n.index for n in full if n.layer == 0} == {0, 1, 3, 4}
    with pytest.raises(ValueError):
        null_neurons(2, 5, 5, seed=0, exclude=[Neuron(0, 2)])


def test_percentile_is_mid_rank():
    null = np.array([1.0, 2.0, 3.0, 4.0])
    assert percentile_of(5.0, null) == 100.0
    assert percentile_of(0.0, null) == 0.0
    assert percentile_of(2.0, null) == 37.5  # one below, one tied
    with pytest.raises(ValueError):
        percentile_of(1.0, np.array([]))


def _summary(original, ablated, ci):
    return {"original": original, "ablated": ablated, "increase_nats_ci": ci}


def test_holds_needs_all_three_parts_of_the_criterion():
    de = _summary(3.0, 3.3, [0.2, 0.4])
    assert holds(0.9, de, 0.05)
    assert not holds(0.7, de, 0.05)                        # probe too weak
    assert not holds(0.9, _summary(3.0, 3.3, [-0.1, 0.6]), 0.05)  # interval reaches 0
    assert not holds(0.9, de, 0.15)                        # English moves by ≥ ⅓ of German
    assert not holds(0.9, de, -0.15)
    assert not holds(0.9, _summary(3.0, 3.3, None), 0.0)   # no interval: not shown to hold


def test_resample_edit_draws_from_the_pool_and_is_reproducible():
    pool = np.array([5.0, 7.0, 11.0])
    x = torch.zeros(2, 6, 4)
    y1, y2 = resample_edit(2, pool, 3)(x), resample_edit(2, pool, 3)(x)
    assert torch.equal(y1, y2)
    assert set(y1[..., 2].flatten().tolist()) <= {5.0, 7.0, 11.0}
    assert len(set(y1[..., 2].flatten().tolist())) > 1      # drawn per position, not one value
    assert float(y1[..., [0, 1, 3]].abs().sum()) == 0.0 and float(x.abs().sum()) == 0.0


def test_max_f1_null_is_below_a_planted_separating_column():
    """One column separates the classes perfectly; under sequence-label permutations the
    best F1 over 200 noise columns (and that column) stays well below 1."""
    rng = np.random.default_rng(0)
    de, en = rng.normal(size=(40, 200)).astype(np.float32), rng.normal(size=(40, 200)).astype(np.float32)
    de[:, 7] += 6.0
    maxima = max_f1_null(de, en, 0.2, 0, 5)
    assert maxima.shape == (5,)
    assert np.array_equal(maxima, max_f1_null(de, en, 0.2, 0, 5))  # seeded
    assert float(np.quantile(maxima, 0.95)) < 0.95


def test_sequence_of_rows_follows_the_samples_layout():
    """Rows are example order then position order, an example giving its positions in the
    crop (none when it is shorter than the crop start), cut at n_rows."""
    toks = [list(range(8)), list(range(3)), list(range(5)), list(range(20))]
    # crop (2, 6): 4, 1, 3, 4 positions
    assert sequence_of_rows(toks, (2, 6), 100).tolist() == [0] * 4 + [1] + [2] * 3 + [3] * 4
    assert sequence_of_rows(toks, (2, 6), 6).tolist() == [0, 0, 0, 0, 1, 2]
    assert sequence_of_rows(toks, (4, 6), 100).tolist() == [0, 0, 2, 3, 3]


def test_per_token_null_permutes_sequences_not_tokens():
    """Ten sequences per language of 30 tokens. Noise columns carry a per-sequence offset (the
    tokens of one text share it) and no language effect; column 7 is a language effect alone.
    Permuting sequence labels, the null's best per-token F1 sits well below column 7's
    observed F1. Seeded. (That each permutation keeps whole sequences together is checked
    below, on the rows the probe receives.)"""
    from analysis.families.discovery import probe_all

    rng = np.random.default_rng(1)
    n_seq, n_tok, m = 10, 30, 60

    def language(shift):
        offsets = rng.normal(scale=2.0, size=(n_seq, 1, m))
        offsets[..., 7] = 0.0  # column 7: a clean language feature
        x = offsets + rng.normal(size=(n_seq, n_tok, m))
        x[:, :, 7] += shift
        return x.reshape(n_seq * n_tok, m).astype(np.float32)

    de, en = language(4.0), language(0.0)
    seq = np.repeat(np.arange(n_seq), n_tok)
    observed = probe_all(de, en, len(de), 0.2, 0)["f1"][7]
    maxima = max_f1_null_per_token(de, en, seq, seq, 0.2, 0, 19)
    assert maxima.shape == (19,) and np.array_equal(maxima, max_f1_null_per_token(de, en, seq, seq, 0.2, 0, 19))
    assert observed > 0.95 and float(np.quantile(maxima, 0.95)) < observed - 0.1


def test_per_token_null_keeps_the_classes_balanced_and_sequences_whole(monkeypatch):
    """Sequences of unequal length (as WMT's German and KDE4's English): every permutation
    probes two classes of equal size within half the longest sequence of half the positions,
    each made of whole sequences (the larger one cut after its last rows), never sharing one."""
    import analysis.families.discovery as discovery

    seen, real = [], discovery.probe_all

    def spy(pos, neg, n, *a, **k):
        seen.append((pos[:, 0].copy(), neg[:, 0].copy(), n))
        return real(pos, neg, n, *a, **k)

    monkeypatch.setattr(discovery, "probe_all", spy)
    rng = np.random.default_rng(0)
    sizes_de, seq_en = [90, 80, 60, 20], np.repeat(np.arange(9), 28)[:250]
    seq_de = np.repeat(np.arange(4), sizes_de)
    de, en = rng.normal(size=(250, 5)).astype(np.float32), rng.normal(size=(250, 5)).astype(np.float32)
    # column 0 names each row's sequence (German 0-3, English 10-18), so the spy sees the units
    de[:, 0], en[:, 0] = seq_de, 10 + seq_en
    size = {**dict(enumerate(sizes_de)), **{10 + u: int(c) for u, c in zip(*np.unique(seq_en, return_counts=True), strict=True)}}
    max_f1_null_per_token(de, en, seq_de, seq_en, 0.2, 0, 12)
    assert len(seen) == 12
    for pos, neg, n in seen:
        assert len(pos) == len(neg) == n and 250 - 45 <= n <= 250
        assert not set(pos) & set(neg)
        for rows in (pos, neg):
            units, counts = np.unique(rows, return_counts=True)
            cut = rows[-1]  # only the last sequence of a class may be cut
            assert all(c == size[u] for u, c in zip(units, counts, strict=True) if u != cut)
            assert all(np.all(np.diff(np.flatnonzero(rows == u)) == 1) for u in units)  # contiguous
        # at least one class is all whole sequences (the smaller one, uncut)
        assert any(all(c == size[u] for u, c in zip(*np.unique(r, return_counts=True), strict=True)) for r in (pos, neg))
    # one sequence holding nearly every position: no balanced split, a one-line cause
    with pytest.raises(ValueError, match="too few sequences"):
        max_f1_null_per_token(de, en[:8], np.zeros(250, dtype=int), np.zeros(8, dtype=int), 0.2, 0, 1)


def test_fwer_threshold_agrees_with_the_permutation_p_value():
    """An observed value passes the threshold exactly when its p-value is at most the level,
    ties included, for several permutation counts; too few permutations give no threshold."""
    from analysis.families.robustness import fwer_threshold, permutation_p_value

    rng = np.random.default_rng(3)
    for n in (19, 20, 39, 40, 99):
        maxima = np.round(rng.uniform(0.5, 0.9, n), 2)  # ties on purpose
        t = fwer_threshold(maxima, 0.05)
        for obs in np.concatenate([maxima, np.linspace(0.45, 0.95, 101)]):
            assert (obs > t) == (permutation_p_value(obs, maxima) <= 0.05), (n, obs, t)
    assert fwer_threshold(np.array([0.6, 0.7, 0.8]), 0.05) is None
    assert fwer_threshold(np.array([0.6, 0.7, 0.8]), 0.25) == 0.8


def test_the_tiny_report_carries_the_robustness_step_its_figures_and_section(tiny_report):
    """Read from the session's `tiny` report (no new build): the step ran with the profile's
    sizes, its percentiles are read from its own null arrays, and the report shows it."""
    from pathlib import Path

    from analysis.core.artifacts import ArtifactStore
    from analysis.core.config import get_profile
    from analysis.families.robustness import (
        ABLATIONS,
        AGGREGATIONS,
        fwer_threshold,
        permutation_p_value,
    )

    res, _, cfg = tiny_report
    art = res["artifacts"]["robustness"]
    r = art["result"]
    p = get_profile("quick")
    assert r["null"]["n_random"] == p.null_neurons_per_layer * 6
    assert r["fwer"]["n_permutations"] == p.permutations
    assert r["n_specifications"] == len(ABLATIONS) * len(AGGREGATIONS)
    # the fixture corpus is neither real corpus: the data dimension is not varied, and it says so
    assert list(r["data"]) == ["fixture"] and "not varied" in r["data_note"]
    assert {s["data"] for s in r["specifications"]} == {"fixture"}
    assert not any(s["seed_choice"] for s in r["specifications"])  # the seed's data is not here
    assert r["n_hold"] == sum(s["holds"] for s in r["specifications"])
    store = ArtifactStore(Path(cfg.out) / "artifacts")
    null_de = store.load_array("robustness", "null_german")
    k = r["null"]["n_random"]
    de = r["null"]["context"]["german_nats"]
    assert r["null"]["percentile"]["random"]["german"] == percentile_of(de, null_de[:k])
    assert len(store.load_array("robustness", "max_f1_null")) == p.permutations
    # the per-token max-statistic (discovery's probe), with its own permutations
    ft = r["fwer"]["per_token"]
    tok_null = store.load_array("robustness", "max_f1_null_per_token")
    assert len(tok_null) == ft["n_permutations"] == min(p.permutations, 99)
    assert ft["threshold"] == fwer_threshold(tok_null) == float(tok_null.max())  # 19 permutations at 5%
    assert 0 < ft["n_positions"]["german"] <= p.probe_samples and 0 < ft["n_positions"]["english"] <= p.probe_samples
    for row in r["fwer"]["top"]:
        assert row["per_token_p_value"] == permutation_p_value(row["per_token_f1_vectorised"], tok_null)
        assert row["per_token_above_threshold"] == (row["per_token_p_value"] <= 0.05)
    # the seed's mean ablation here is the `ablation` step's: the same English mean
    assert r["ablation_values"]["english_mean"] == pytest.approx(r["ablation_step_value"], rel=1e-4)
    names = {f["name"] for f in res["figures"] if f.get("step") == "robustness"}
    assert names == {"robustness_spec_curve", "robustness_null"}
    html = (Path(cfg.out) / "report.html").read_text(encoding="utf-8")
    assert "specifications" in html and "Robustness: null distributions" in html


@pytest.mark.parametrize("stack_tokens", [1, 1 << 20])
def test_single_neuron_losses_equal_the_full_pass(tiny, tiny_fwd, stack_tokens):
    """The step's loss pass (rank-1 restart after the edited layer, variants of one layer
    stacked, last-layer variants by the shortcut) gives the losses of the engine's full pass
    with the same edits (`per_example_losses` without its shortcut): every layer, constant
    and resampled values; one variant per stack and all of a layer in one stack."""
    from analysis.core.engine import make_batches, per_example_losses, set_neurons

    texts = ["Die Kommission hat heute einen Vorschlag angenommen, der die Regeln ändert.",
             "The committee adopted the report without a vote after a short debate.",
             "Wir müssen die Frage noch einmal prüfen."]
    batches = make_batches([tiny.to_tokens(t) for t in texts], 4096, 1)
    pool = np.array([0.3, -0.1, 1.2, 0.0])
    spec = {f"set:{n}": (n, v) for n, v in ((Neuron(0, 5), 0.7), (Neuron(0, 9), -0.2),
                                            (Neuron(2, 100), 1.5), (Neuron(4, 33), 0.0),
                                            (Neuron(5, 7), 2.0))}
    ours = {k: (n, set_neurons([n.index], v)) for k, (n, v) in spec.items()}
    ours["resample"] = (Neuron(3, 11), resample_edit(11, pool, 4))
    full = {k: {n.hook(): set_neurons([n.index], v)} for k, (n, v) in spec.items()}
    full["resample"] = {Neuron(3, 11).hook(): resample_edit(11, pool, 4)}
    got = single_neuron_losses(tiny_fwd, batches, ours, stack_tokens, show_progress=False)
    want = per_example_losses(tiny_fwd, batches, full, show_progress=False, shortcut=False)
    assert set(got) == set(want)
    for k in want:
        assert np.allclose(got[k], want[k], rtol=1e-5, atol=1e-6), k
    # the edits change the losses: the comparison above is not between unedited passes
    assert sum(not np.allclose(got[k], got["original"], rtol=0, atol=1e-6) for k in ours) >= 4



def test_corpus_activations_equal_the_activations_and_discovery_passes(tiny, tiny_fwd):
    """The second data set's one pass gives what the run's corpus gets from two steps: the
    per-token samples of `discovery.sample_all_neurons` (first rows, example order), the
    sequence means and token means of `activations.collect_mlp_activations`, and the
    context neuron's activations at every kept position; examples shorter than the crop
    start contribute nothing."""
    from analysis.core.engine import make_batches
    from analysis.families.activations import collect_mlp_activations
    from analysis.families.discovery import sample_all_neurons

    texts = ["Die Kommission hat heute einen Vorschlag angenommen, der die Regeln für den Markt ändert.",
             "Kurz.",
             "The committee adopted the report without a vote after a short debate on the budget.",
             "Wir müssen die Frage noch einmal prüfen, bevor das Parlament darüber abstimmt."]
    toks = [tiny.to_tokens(t) for t in texts]
    crop, ctx = (5, 40), Neuron(2, 17)
    L, d = tiny_fwd.w.n_layers, tiny_fwd.w.d_mlp
    col = ctx.layer * d + ctx.index
    n_pos = sum(max(0, min(crop[1], len(t)) - crop[0]) for t in toks)
    assert len(toks[1]) <= crop[0] < n_pos  # one example has no kept position
    got = corpus_activations(tiny_fwd, toks, crop, n_pos - 5, col, batch_tokens=64, show_progress=False)
    want = sample_all_neurons(tiny_fwd, toks, crop, n_pos - 5, 4096, show_progress=False)
    assert got["samples"].shape == want.shape == (n_pos - 5, L * d)
    assert np.allclose(got["samples"], want, atol=1e-6)
    seq: dict = {}
    samples, means, count = collect_mlp_activations(tiny_fwd, make_batches(toks, 4096, pad_id=1), range(L),
                                                    [ctx], crop, show_progress=False, sequence_means=seq)
    assert got["n_positions"] == count == n_pos
    assert np.allclose(got["sequence_means"], np.stack([seq[i] for i in sorted(seq) if i != 1]), atol=1e-6)
    assert np.allclose(got["token_mean"], np.concatenate([means[layer] for layer in range(L)]), atol=1e-6)
    assert np.allclose(got["context"], samples[:, 0], atol=1e-6)
