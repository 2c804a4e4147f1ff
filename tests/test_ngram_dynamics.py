"""The n-gram measurements of a sweep's checkpoint (analysis.families.ngram_dynamics) and
how the sweep's tables feed the paper's claims (analysis.orchestration.sweep.reference,
table): pure functions on synthetic inputs, and the other German neurons' ablation checked
against a plain forward pass of the `tiny` model. The sweep itself runs them in
tests/test_sweep.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.core.config import Neuron
from analysis.families import ngram_dynamics as nd


def test_text_trigrams_counts_german_only_letter_trigrams_without_bos():
    letter = np.ones(20, dtype=bool)
    letter[9] = False                      # token 9 holds no letter
    german = [[0, 1, 2, 3, 1, 2, 3], [0, 1, 2, 3, 4, 5, 6], [0, 4, 5, 6, 9, 7, 8]]
    english = [[0, 4, 5, 6]]              # (4, 5, 6) is English too: never German-only
    got = nd.text_trigrams(german, english, letter, k=10)
    assert got[0] == {"ids": [1, 2, 3], "count": 3}
    ids = [tuple(r["ids"]) for r in got]
    assert (4, 5, 6) not in ids                                # occurs in English
    assert not any(9 in g for g in ids)                        # a token without a letter
    assert not any(g[0] == 0 for g in ids)                     # BOS never starts one
    counts = [r["count"] for r in got]
    assert counts == sorted(counts, reverse=True)
    # ties: lower ids first
    assert ids[1:3] == [(2, 3, 1), (2, 3, 4)] and got[1]["count"] == got[2]["count"] == 1
    assert len(nd.text_trigrams(german, english, letter, k=2)) == 2


def test_other_german_neurons_are_the_best_german_positive_ones_but_the_context():
    f1 = np.array([[0.2, 0.9, 0.5], [0.95, 0.9, 0.1]])
    coef = np.array([[1.0, 1.0, 1.0], [1.0, -1.0, 1.0]])
    ctx = Neuron(1, 0)                     # the best F1: excluded
    got = nd.other_german_neurons(f1, coef, ctx, 3)
    # L1N1 has F1 0.9 but is English-positive; L0N1 (0.9) then L0N2 (0.5) then L0N0 (0.2)
    assert got == [Neuron(0, 1), Neuron(0, 2), Neuron(0, 0)]
    assert nd.other_german_neurons(f1, coef, ctx, 0) == []


def test_other_neurons_ablation_equals_a_plain_forward(tiny, tiny_fwd):
    """Each other neuron's increase is the German loss with it set, at every position, to
    its mean English activation over the crop positions, minus the unedited loss: both
    recomputed here with full forward passes (no shortcut, no batching)."""
    from analysis.core.config import get_profile
    from analysis.core.data import load_corpus
    from analysis.core.engine import set_neurons

    p = get_profile("quick").with_overrides(["crop_start=2"])
    toks = {"activation": {}, "loss": {}}
    for lang in ("german", "english"):
        ex = [tiny.to_tokens(t)[:24] for t in load_corpus(f"fixture_{lang}").examples[:3]]
        toks["activation"][lang] = toks["loss"][lang] = ex
    W = tiny_fwd.w
    rng = np.random.default_rng(0)
    f1 = rng.random((W.n_layers, W.d_mlp))
    coef = rng.standard_normal((W.n_layers, W.d_mlp))
    ctx = Neuron(1, 3)
    res = nd.measure_other_neurons(tiny_fwd, toks, f1, coef, ctx, 2, p)
    assert [r["neuron"] for r in res["neurons"]] == [str(n) for n in nd.other_german_neurons(f1, coef, ctx, 2)]
    assert res["n_candidates_f1_0_85"] == int(((f1 > 0.85) & (coef > 0)).sum())

    def mean_loss(edits=None):
        out = []
        for t in toks["loss"]["german"]:
            x = torch.tensor([t])
            lg = tiny_fwd.logits(tiny_fwd.run(x, edits=edits)[0, :-1])
            out.append(float((torch.logsumexp(lg, -1) - lg.gather(-1, x[0, 1:, None])[:, 0]).mean()))
        return float(np.mean(out))

    base = mean_loss()
    for r in res["neurons"]:
        n = Neuron.parse(r["neuron"])
        acts = []
        for t in toks["activation"]["english"]:
            cap = {n.hook(): None}
            tiny_fwd.run(torch.tensor([t]), capture=cap, stop_layer=n.layer + 1)
            acts.append(cap[n.hook()][0, p.crop_start:p.crop_end, n.index])
        m = float(torch.cat(acts).double().mean())
        assert r["value"] == pytest.approx(m, abs=1e-5)
        assert r["increase"] == pytest.approx(mean_loss({n.hook(): set_neurons([n.index], m)}) - base, abs=1e-4)
    assert res["increase_max"] == max(r["increase"] for r in res["neurons"])


def test_frequent_token_dla_is_the_neurons_output_weights_through_the_unembedding():
    """Known answer: W_out[1, 2] = (2, 0, 0, -1) and W_U's rows 0 and 3 = (0..5) and 1, so the
    DLA of token t is 2t - 1 logits per unit activation; other neurons never enter."""
    W_out = torch.zeros(2, 3, 4)
    W_out[1, 2] = torch.tensor([2.0, 0.0, 0.0, -1.0])
    W_out[0, 0] = W_out[1, 1] = 100.0
    W_U = torch.zeros(4, 6)
    W_U[0] = torch.arange(6.0)
    W_U[3] = 1.0
    W_U[1] = W_U[2] = 50.0                 # the neuron writes nothing along these
    got = nd.frequent_token_dla(W_out, W_U, Neuron(1, 2), {"german": [0, 2], "english": [5]})
    assert list(got) == ["german", "english"]
    assert got["german"]["mean"] == pytest.approx(1.0)     # (-1 + 3) / 2
    assert got["english"]["mean"] == pytest.approx(9.0)
    assert got["german"]["values"].tolist() == [-1.0, 3.0] and got["german"]["values"].dtype == np.float64
    for bad in ({"german": []}, {"german": [6]}, {"english": [-1]}):
        with pytest.raises(ValueError):
            nd.frequent_token_dla(W_out, W_U, Neuron(1, 2), bad)
    with pytest.raises(ValueError):
        nd.frequent_token_dla(W_out, W_U, Neuron(2, 0), {"german": [0]})


def _table(steps, share_paths=True):
    rows = []
    for s in steps:
        base = {"model": "pythia-70m", "step": s, "neuron": "L3N669"}
        rows += [{**base, "measure": "context_f1", "language": None, "value": 0.5, "ci_low": None, "ci_high": None},
                 {**base, "measure": "context_ablation_pct", "language": "german", "value": 10.0,
                  "ci_low": 8.0, "ci_high": 12.0},
                 {**base, "measure": "loss", "language": "german", "value": 3.0, "ci_low": None, "ci_high": None}]
        if share_paths:
            for name, v in (("total", 0.4), ("direct", 0.1), ("indirect", 0.3 + s * 1e-6)):
                rows.append({**base, "measure": f"context_effect_{name}", "language": "german", "value": v,
                             "ci_low": None, "ci_high": None})
    return pd.DataFrame(rows)


def _trigrams(steps, source):
    rows = []
    for s in steps:
        for i, t in enumerate((" Bundes", "reg ierung")):
            rows.append({"model": "pythia-70m", "revision": f"step{s}", "step": s, "key": "k", "source": source,
                         "index": i, "trigram": t, "clean": 4.0 - s / 50_000, "ablated": 4.0 + s / 100_000,
                         "direct_ablated": 4.0, "indirect_ablated": 4.0, "context_activation": 1.0})
    return pd.DataFrame(rows)


def test_the_sweeps_tables_give_the_claims_their_numbers():
    from analysis.families.paper import FINAL_STEP, trigram_timing
    from analysis.orchestration.sweep.reference import ours_from_table

    steps = [1000, 64_000, FINAL_STEP]
    ours = ours_from_table(_table(steps), "pythia-70m", _trigrams(steps, "paper"))
    split = ours.effect_split.set_index("step")
    # our indirect effect (later layers ablated) is the authors' "Direct Effect" column
    assert split.loc[FINAL_STEP, "indirect_path_ablated"] == pytest.approx(0.3 + FINAL_STEP * 1e-6)
    assert split.loc[FINAL_STEP, "direct_path_ablated"] == 0.1 and list(split.index) == steps
    t = trigram_timing(ours.trigram_losses)
    # clean loss below 3 nats from step 64,000 (4 - 1.28); the increase (3e-5 x step) passes 2 nats
    # only at 143,000 (1.92 at 64,000)
    assert (t["low"], t["dependent"], t["n"]) == (64_000, FINAL_STEP, 2)
    assert ours.missing == {}
    # trigrams chosen from the text are not the paper's: the claim is then not measured, saying why
    other = ours_from_table(_table(steps), "pythia-70m", _trigrams(steps, "selected"))
    assert other.trigram_losses is None and "--paper-dir" in other.missing["trigram_losses"]
    # a sweep from before the n-gram measurements: neither, each with its reason
    old = ours_from_table(_table(steps, share_paths=False), "pythia-70m", None)
    assert old.effect_split is None and old.trigram_losses is None and set(old.missing) == {
        "effect_split", "trigram_losses"}


def test_table_rows_of_a_checkpoint_with_ngrams():
    from analysis.orchestration.sweep.table import trigram_rows

    task = {"model": "m", "revision": "step1", "step": 1}
    art = {"key": "k", "result": {"ngrams": {
        "trigram_source": {"kind": "selected"}, "trigram_list": ["ab", "cd"],
        "trigrams": {"per_trigram": {"clean": [1.0, 2.0], "ablated": [1.5, 2.5], "direct_ablated": [1.1, 2.1],
                                     "indirect_ablated": [1.4, 2.4]}, "context_activation": [0.3, 0.4]}}}}
    rows = trigram_rows(task, art)
    assert [r["trigram"] for r in rows] == ["ab", "cd"] and [r["index"] for r in rows] == [0, 1]
    assert rows[1]["ablated"] == 2.5 and rows[0]["indirect_ablated"] == 1.4 and rows[0]["source"] == "selected"
    assert trigram_rows(task, {"key": "k", "result": {}}) == []
