"""The known-answer control `pythia-70m-planted` (analysis.controls.planted, .planted_check).

Cheap tests first (option validation, the pure functions on synthetic inputs and a tiny
model); then the known-answer tests on the real tokenizer and text (`shared_inputs`), which
run only the steps the checks read (`run_report(steps=...)`, quick profile, the planted
neuron as the only studied neuron besides the discovered one), not a whole report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

# builds a report or model of its own: scheduled first (conftest)
pytestmark = pytest.mark.slow

PLANTED = "pythia-70m-planted"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "analysis", *args], capture_output=True,
                          text=True, env=dict(os.environ), timeout=600)


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize("args, message", [
    (["--model", PLANTED, "--plant", "L6N0"], "neuron L6N0 is out of range: the model has layers 0..5"),
    (["--model", PLANTED, "--plant", "L3N2048"], "neuron L3N2048 is out of range: layer 3 has neurons 0..2047"),
    (["--model", PLANTED, "--plant", "L3X669"], "neuron 'L3X669' is not of the form LxNy"),
    (["--model", "tiny", "--plant", "L3N669"], "--plant applies only to --model pythia-70m-planted"),
])
def test_bad_plant_fails_before_compute_with_one_line(tmp_path, args, message):
    r = _cli("report", "--corpus", "fixture", "--out", str(tmp_path / "o"), *args)
    assert r.returncode == 2, r.stderr
    lines = [s for s in r.stderr.splitlines() if s.strip()]
    assert lines == [f"error: {lines[0][len('error: '):]}"] and message in lines[0], r.stderr
    assert not (tmp_path / "o" / "artifacts").exists()


def test_plant_is_checked_like_neuron_in_the_api(tmp_path):
    from analysis.core.config import Neuron, RunConfig, get_profile
    from analysis.core.errors import UsageError
    from analysis.orchestration.pipeline import default_out, run_report

    for plant, model, match in ((Neuron(3, 4096), PLANTED, "out of range"),
                                (Neuron(3, 669), "pythia-70m-random", "--plant applies only")):
        cfg = RunConfig(model=model, neuron=None, profile=get_profile("quick"), plant=plant,
                        out=str(tmp_path / "o"))
        with pytest.raises(UsageError, match=match):
            run_report(cfg, render=False)
    assert not (tmp_path / "o").exists()
    assert default_out(PLANTED) == default_out(PLANTED, Neuron(3, 669)) == Path("build") / PLANTED
    assert default_out(PLANTED, Neuron(2, 100)) == Path("build") / f"{PLANTED}-L2N100"


# ----------------------------------------------------------------------------- pure functions


def test_fisher_direction_whitens_and_tends_to_the_mean_difference():
    from analysis.controls.planted import fisher_direction

    rng = np.random.default_rng(0)
    # class difference along axis 0, with large shared noise along axis 0 + axis 1
    noise = rng.normal(size=(4000, 2)) @ np.array([[3.0, 3.0], [0.0, 0.3]])
    de, en = noise[:2000] + [1.0, 0.0], noise[2000:]
    w = fisher_direction(de, en, shrinkage=0.0)
    assert w @ (de.mean(0) - en.mean(0)) > 0 and np.isclose(np.linalg.norm(w), 1.0)
    def sep(v):
        a, b = de @ v, en @ v
        return (a.mean() - b.mean()) / np.sqrt(0.5 * (a.var() + b.var()))

    md = de.mean(0) - en.mean(0)
    assert sep(w) > 2 * sep(md / np.linalg.norm(md))  # whitening separates better
    w_inf = fisher_direction(de, en, shrinkage=1e9)
    assert np.allclose(w_inf, md / np.linalg.norm(md), atol=1e-6)
    with pytest.raises(ValueError):
        fisher_direction(de, de)


def test_german_token_weights():
    from analysis.controls.planted import german_token_weights

    de = [[0, 5, 5, 6, 7], [0, 5, 6]]        # BOS 0 excluded: 5: 3/6, 6: 2/6, 7: 1/6
    en = [[0, 7, 7, 8, 6]]                   # 7: 2/4, 8: 1/4, 6: 1/4
    w, rec = german_token_weights(de, en, d_vocab=10, k=5)
    assert rec["ids"] == [5, 6]              # 7 is more frequent in English
    assert np.isclose(w[5], 0.5) and np.isclose(w[6], 2 / 6 - 0.25) and w[7] == w[8] == 0
    w1, rec1 = german_token_weights(de, en, d_vocab=10, k=1)
    assert rec1["ids"] == [5] and w1[6] == 0


def test_plant_neuron_reads_and_writes_what_it_records():
    """On a small random GPT-NeoX with non-trivial LayerNorms: the planted neuron's
    pre-activation is exactly `scale · (ŵ·x̂ − threshold)` (the LayerNorm's affine part
    divided out) and its output column is the recorded write."""
    from analysis.controls.planted import (
        fisher_direction,
        german_token_weights,
        grid_step,
        plant_neuron,
        snap_to_grid,
    )
    from analysis.core.config import Neuron
    from analysis.core.models import TINY_SHAPE, _perturb_norms_and_biases, random_model

    model = random_model(TINY_SHAPE, 3)
    _perturb_norms_and_biases(model, 3)
    d = TINY_SHAPE["hidden_size"]
    rng = np.random.default_rng(1)
    shift = np.where(np.arange(d) < d // 2, 0.8, -0.8)  # survives the LayerNorm's centring
    X_de, X_en = rng.normal(size=(300, d)) + shift, rng.normal(size=(300, d))
    X_de = (X_de - X_de.mean(1, keepdims=True)) / X_de.std(1, keepdims=True)
    X_en = (X_en - X_en.mean(1, keepdims=True)) / X_en.std(1, keepdims=True)
    F_de = rng.normal(size=(300, d))
    w, _ = german_token_weights([[0, 3, 4, 4]], [[0, 9]], TINY_SHAPE["vocab_size"])
    n = Neuron(2, 17)
    rec = plant_neuron(model, n, X_de, X_en, F_de, w)
    layer = model.gpt_neox.layers[2]
    x = torch.as_tensor(X_en[:5], dtype=torch.float32)
    with torch.no_grad():
        # ln2 applied to an already normalised vector is its affine map (up to eps)
        pre = layer.mlp.dense_h_to_4h(layer.post_attention_layernorm(x))[:, 17].double().numpy()
    ŵ = fisher_direction(X_de, X_en)
    expected = rec["input"]["scale"] * (X_en[:5] @ ŵ - rec["input"]["threshold_projection"])
    # The written values are snapped to a grid (cross-machine determinism): each entry moves
    # by at most half a step, which bounds how far the pre-activation and the column move.
    w_in = layer.mlp.dense_h_to_4h.weight[17].detach().double().numpy()
    b_in = float(layer.mlp.dense_h_to_4h.bias[17].detach())
    assert np.array_equal(snap_to_grid(w_in), w_in) and snap_to_grid(np.array([b_in]))[0] == b_in
    with torch.no_grad():
        x_ln = layer.post_attention_layernorm(x).double().numpy()
    slack = 0.5 * grid_step(w_in) * np.abs(x_ln).sum(1) + 0.5 * grid_step(np.array([b_in]))
    assert np.all(np.abs(pre - expected) <= slack + 1e-4 * np.abs(expected))  # + float32 and record rounding
    out_col = layer.mlp.dense_4h_to_h.weight[:, 17].detach().double()
    step = grid_step(out_col.numpy())
    assert abs(float(out_col.norm()) - rec["output"]["scale"]) <= 0.5 * step * d ** 0.5 + 1e-5 * rec["output"]["scale"]
    assert abs(float(out_col.mean())) <= 0.5 * step  # centred (the final LayerNorm would remove the mean), up to the grid
    assert rec["input"]["mean_activation"]["german"] > 1.0 > abs(rec["input"]["mean_activation"]["english"])


def test_recovery_rows_pass_and_fail():
    from analysis.controls.planted_check import recovery_rows
    from analysis.core.config import Neuron

    n = Neuron(2, 100)
    abl = {"german": {"percent_increase": 2.0}, "english": {"percent_increase": -0.5}}
    boosted = [{"token_id": i, "token": str(i)} for i in range(20)]
    ok = recovery_rows(n, 1, {"f1": 0.9}, abl, boosted, list(range(5)) + [99], n, True)
    assert ok["passed"] and ok["n_checked"] == 6 and ok["rows"][4]["measured"] == 5
    bad = recovery_rows(n, 2, {"f1": 0.79}, {"german": {"percent_increase": 0.9},
                                             "english": {"percent_increase": -0.31}},
                        boosted, [0, 1, 2, 3], Neuron(3, 669), True)
    assert not bad["passed"] and bad["n_passed"] == 0
    # |English| counts, whatever its sign; a context neuron given with --neuron is not checked
    r = recovery_rows(n, 1, {"f1": 0.9}, {"german": {"percent_increase": 3.0},
                                          "english": {"percent_increase": -1.2}},
                      boosted, list(range(20)), Neuron(3, 669), False)
    assert [x["passed"] for x in r["rows"]] == [True, True, True, False, True, None]
    assert r["n_checked"] == 5


def test_the_planted_bigram_is_german_only_and_almost_always_followed():
    from analysis.controls.planted import ngram_bigram

    to_str = {5: " Pr", 6: "äsident", 7: " und", 8: ",", 9: "ident", 3: " Herr"}.get
    german = [[0, 3, 5, 6, 7, 5, 6, 8], [0, 3, 5, 6], [0, 7, 8, 8, 7, 8]]
    english = [[0, 7, 9]]
    got = ngram_bigram(german, english, lambda ids: [to_str(i) for i in ids])
    # (7, 8) is more frequent but holds punctuation; 7 occurs in English anyway
    assert got["ids"] == [3, 5, 6] and got["count"] == 3 and got["follow"] == 1.0 and got["t0_count"] == 2
    assert got["tokens"] == [" Herr", " Pr", "äsident"]
    # t2 must follow t1 at least `min_follow` of the time: now " Pr" is followed by " Herr"
    # as often as by "äsident", and " Herr" by " Pr" 4 times in 5
    german[0] += [5, 3, 5, 3, 5, 3]
    with pytest.raises(ValueError, match="no German bigram"):
        ngram_bigram(german, english, lambda ids: [to_str(i) for i in ids], 0.9)
    looser = ngram_bigram(german, english, lambda ids: [to_str(i) for i in ids], 0.5)
    assert looser["ids"] == [5, 3, 5] and looser["count"] == 4 and looser["follow"] == 0.8


def test_plant_ngram_fires_only_on_the_current_token_in_context():
    """On a small random GPT-NeoX with synthetic layer inputs: the n-gram neuron's
    pre-activation (through its LayerNorm) is positive on average at t1 with the context
    write present and negative with either alone; its output raises t2's logit most."""
    from analysis.controls.planted import CLASS_PRE_ACTIVATION, plant_ngram
    from analysis.core.config import Neuron
    from analysis.core.models import TINY_SHAPE, _perturb_norms_and_biases, random_model

    model = random_model(TINY_SHAPE, 5)
    _perturb_norms_and_biases(model, 5)
    d = TINY_SHAPE["hidden_size"]
    rng = np.random.default_rng(2)
    ctx, nrn = Neuron(3, 7), Neuron(5, 11)
    v = model.gpt_neox.layers[3].mlp.dense_4h_to_h.weight[:, 7].detach().double().numpy()
    v = 8 * v / np.linalg.norm(v)
    with torch.no_grad():
        model.gpt_neox.layers[3].mlp.dense_4h_to_h.weight[:, 7] = torch.as_tensor(v, dtype=torch.float32)
    n = 3000
    T = rng.integers(20, 40, n)
    T[::10] = 7  # t1
    A = 1.0 + 0.1 * rng.normal(size=n)  # German text: the context neuron on everywhere
    e = rng.normal(size=d)
    R = rng.normal(size=(n, d)) + A[:, None] * v + (T == 7)[:, None] * 3 * e
    rec = plant_ngram(model, ctx, nrn, {"ids": [3, 7, 9], "tokens": ["a", "b", "c"]}, R, A, T, 0.0, 5.0)
    layer = model.gpt_neox.layers[5]

    def pre(resid):
        with torch.no_grad():
            x = layer.post_attention_layernorm(torch.as_tensor(resid, dtype=torch.float32))
            return layer.mlp.dense_h_to_4h(x)[:, 11].double().numpy()

    on, off = pre(R), pre(R - A[:, None] * v)  # off: the context neuron's write removed
    t1 = T == 7
    assert on[t1].mean() == pytest.approx(CLASS_PRE_ACTIVATION, rel=0.01)
    assert on[~t1].mean() < -CLASS_PRE_ACTIVATION / 2 and off[t1].mean() < -CLASS_PRE_ACTIVATION / 2
    assert off[~t1].mean() < on[~t1].mean()
    # the record says what the written weights do (up to the grid and float32)
    fire = rec["input"]["fire_rate"]
    for key, p in (("t1_with_context", on[t1]), ("other_with_context", on[~t1]),
                   ("t1_context_removed", off[t1]), ("other_context_removed", off[~t1])):
        assert fire[key] == pytest.approx(float((p > 0).mean()), abs=0.01), key
    assert fire["t1_with_context"] > 0.9 and fire["t1_context_removed"] < 0.01
    W_U = model.get_output_embeddings().weight.detach().double().numpy()
    g = model.gpt_neox.final_layer_norm.weight.detach().double().numpy()
    col = layer.mlp.dense_4h_to_h.weight[:, 11].detach().double().numpy()
    gain = (W_U * g) @ (col - col.mean())  # logit change per unit write, through the final LN
    assert int(np.argmax(gain)) == 9


def test_ngram_rows_pass_and_fail():
    from analysis.controls.planted_check import ngram_rows

    planted = {"neuron": "L5N1000", "trigram": {"ids": [3, 5, 6]}}

    def result(rank, ind, dr, first, share, score, yyy):
        trig = {"rank": rank, "ids": [9, 5, 6], "trigram": "x", "direct": dr, "direct_ci": [dr - 0.1, dr + 0.1],
                "indirect": ind, "indirect_ci": [ind - 0.1, ind + 0.1]}
        neurons = [{"neuron": first, "share": share, "scores": {"current_x_context": {"value": score, "ci": [score - 0.2, score + 0.2]}},
                    "conditions": {"YYY": yyy, "YNN": 0.0}}]
        if first != "L5N1000":
            neurons.append({"neuron": "L5N1000", "share": 0.1, "conditions": {"YYY": yyy, "YNN": 0.0},
                            "scores": {"current_x_context": {"value": score, "ci": [score - 0.2, score + 0.2]}}})
        return {"trigrams": [{"rank": 1, "ids": [1, 2, 3], "trigram": "y"}, trig],
                "and": {"circuits": [{"ids": [9, 5, 6], "neurons": neurons}]}}

    ok = ngram_rows(planted, result(2, 3.0, 0.5, "L5N1000", 0.8, 3.5, 4.0))
    assert [r["passed"] for r in ok] == [True, True, True, True] and ok[0]["measured"] == 2
    bad = ngram_rows(planted, result(4, 0.55, 0.5, "L5N2", 0.8, 1.0, 4.0))
    # rank 4 > 3; intervals overlap; another neuron first; the AND is under half of YYY − YNN
    assert [r["passed"] for r in bad] == [False, False, False, False]
    missing = ngram_rows(planted, {"trigrams": [], "and": {"circuits": []}})
    assert [r["passed"] for r in missing] == [False] * 4 and missing[0]["measured"] is None
    assert ngram_rows(None, {"trigrams": []}) == []
def test_robustness_row_passes_and_fails():
    """Issue 21 §4: the planted neuron's German effect against the random null's 99th
    percentile, and its rank under each aggregation on each data set (per token on the run's
    own corpus is discovery's row); not checked when the plant is not the context neuron."""
    from analysis.controls.planted_check import robustness_rows
    from analysis.core.config import Neuron

    def res(context="L2N100", de=0.2, p99=0.01, seq=1, other_tok=1, other_seq=1):
        return {"context_neuron": context, "run_corpus": "seed",
                "null": {"n_random": 18, "random_p99": {"german": p99}, "context": {"german_nats": de},
                         "examples": {"german": 8, "english": 8}, "tokens_per_example_max": 64},
                "data": {"europarl-heldout": {"probe": {"per_token": {"rank": other_tok},
                                                        "sequence_mean": {"rank": other_seq}}},
                         "seed": {"probe": {"per_token": {"rank": 1}, "sequence_mean": {"rank": seq}}}}}

    n = Neuron(2, 100)
    rows = robustness_rows(n, res())
    assert [r["passed"] for r in rows] == [True] * 4
    assert [bool(r.get("added_after_first_run")) for r in rows] == [False, True, True, True]
    assert "8 examples of ≤ 64 tokens" in rows[0]["check"]
    assert sorted(r["check"].split(" (")[0] for r in rows[1:]) == [
        "rank among German-positive neurons, per-token probe on europarl-heldout",
        "rank among German-positive neurons, sequence-mean probe on europarl-heldout",
        "rank among German-positive neurons, sequence-mean probe on seed"]
    assert [r["passed"] for r in robustness_rows(n, res(de=0.01))][0]  # at the percentile
    assert [r["passed"] for r in robustness_rows(n, res(de=0.005))] == [False, True, True, True]
    assert sum(not r["passed"] for r in robustness_rows(n, res(seq=2, other_seq=None))) == 2
    bad = [r["check"] for r in robustness_rows(n, res(other_tok=3)) if not r["passed"]]
    assert len(bad) == 1 and "per-token probe on europarl-heldout" in bad[0]
    assert [r["passed"] for r in robustness_rows(n, res(context="L3N669"))] == [None] * 4


def test_f1_rank_shares_ties_and_skips_english_neurons():
    from analysis.families.robustness import f1_rank, rank_of

    stats = {"coef": np.array([1.0, 1.0, -1.0, 1.0, 1.0]), "f1": np.array([1.0, 0.9, 1.0, 1.0, 0.99]),
             "test_acc": np.array([1.0, 0.9, 1.0, 1.0, 0.99]),
             "separation": np.array([2.0, 1.0, -9.0, 3.0, 1.0])}
    # columns 0 and 3 tie at F1 1.0 (column 2 is English-positive and does not count)
    assert f1_rank(0, stats) == {"rank": 1, "tied": 1} and f1_rank(3, stats) == {"rank": 1, "tied": 1}
    assert rank_of(0, stats) == 2 and rank_of(3, stats) == 1  # |separation| breaks the tie
    assert f1_rank(4, stats) == {"rank": 3, "tied": 0} and f1_rank(2, stats) is None


def test_sequence_rank_takes_gurnee_candidates_by_mean_difference_then_f1():
    from analysis.families.robustness import sequence_rank

    # six neurons; column 2 is English-positive. Mean differences 0.5, 3, -, 1, 2, 0.1
    stats = {"coef": np.array([1.0, 1.0, -1.0, 1.0, 1.0, 1.0]),
             "f1": np.array([1.0, 0.9, 1.0, 1.0, 1.0, 1.0]),
             "mean_german": np.array([1.5, 4.0, 0.0, 2.0, 3.0, 1.1]),
             "mean_english": np.full(6, 1.0)}
    # three candidates (largest differences: 1, 4, 3): by F1 then difference -> 4, 3, 1;
    # then the rest by F1 then difference -> 0 (0.5), 5 (0.1)
    got = {c: sequence_rank(c, stats, candidates=3) for c in range(6)}
    assert got == {4: 1, 3: 2, 1: 3, 0: 4, 5: 5, 2: None}
    # with every neuron a candidate, F1 first: column 1 (F1 0.9) falls behind all the F1-1.0 ones
    assert sequence_rank(1, stats, candidates=10) == 5 and sequence_rank(4, stats, candidates=10) == 1


# ----------------------------------------------------------------------------- known answers


def _planted_run(shared, out: Path, plant, steps):
    from analysis.core.config import RunConfig, get_profile
    from analysis.orchestration.pipeline import run_report

    cfg = RunConfig(model=PLANTED, neuron=None, profile=get_profile("quick"), plant=plant,
                    studied=(), out=str(out), data_dir=shared["data_dir"], tokenizer=shared["tokenizer"])
    t0 = time.perf_counter()
    res = run_report(cfg, render=False, steps=steps, show_progress=False, log=lambda s: None)
    return res, time.perf_counter() - t0


@pytest.fixture(scope="module")
def planted_default(shared_inputs, tmp_path_factory):
    """The default plant (L3N669), `--neuron auto`, every step the self-check reads."""
    res, wall = _planted_run(shared_inputs, tmp_path_factory.mktemp("planted"), None, ("planted",))
    print(f"\nplanted L3N669 known-answer run: {wall:.0f} s")
    return res


def test_default_plant_is_recovered(planted_default):
    """Targets (issue 12): rank 1 among German-positive neurons, probe F1 ≥ 0.8, German loss
    +≥ 1% when mean-ablated and English less than a third of that, ≥ 5 of the top 20 boosted
    tokens among the 100 most frequent German unigrams; `--neuron auto` studies it."""
    arts = planted_default["artifacts"]
    r = arts["planted"]["result"]
    rows = {row["check"].split(" (")[0].split(" when")[0]: row for row in r["rows"]}
    assert r["plant"] == r["context_neuron"] == "L3N669" and r["neuron_discovered"]
    assert arts["discovery"]["result"]["best"] == "L3N669"
    assert rows["discovery rank among German-positive neurons"]["measured"] == 1
    assert rows["single-neuron probe F1"]["measured"] >= 0.8
    de = rows["German loss increase"]["measured"]
    en = rows["English loss change"]["measured"]
    assert de >= 1.0 and abs(en) < de / 3
    # issue 21 §4: at or above the random null's 99th percentile
    rb = arts["robustness"]["result"]
    assert rows["German loss change"]["passed"] and rows["German loss change"]["measured"] >= rb["null"]["random_p99"]["german"]
    assert rb["probe"]["per_token"]["rank"] == 1
    # issue 21 §1 and §4: the data dimension. On the held-out Europarl passages (the plant's
    # domain, not its fitting passages) the plant is again the first per-token German neuron;
    # the specifications the construction says must hold (written before running) are all
    # measured, and how many hold is reported (printed here; the section states it)
    assert set(rb["data"]) == {"seed", "europarl-heldout"} and rb["n_specifications"] == 20
    assert {s["data"] for s in rb["specifications"]} == {"seed", "europarl-heldout"}
    assert rb["data"]["europarl-heldout"]["probe"]["per_token"]["rank"] == 1
    # §4: first under the sequence-mean aggregation too, on both data sets, by Gurnee et al.'s
    # rule (F1 alone ties hundreds of neurons at 1.0 here; printed, the section states it)
    assert [rb["data"][k]["probe"]["sequence_mean"]["rank"] for k in ("seed", "europarl-heldout")] == [1, 1]
    assert all(row["passed"] for row in r["rows"] if row["check"].startswith("rank among"))
    assert r["n_added_after_first_run"] == 3  # those rank rows, and the summary says so
    print("\nplanted: sequence-mean F1 ties " + ", ".join(
        f"{k}: {v['probe']['sequence_mean']['by_f1']}" for k, v in rb["data"].items()))
    must = rb["planted_must_hold"]
    assert must["n_predicted"] == must["n_measured"] == 12
    print(f"\nplanted: the finding holds in {rb['n_hold']} of {rb['n_specifications']} specifications, "
          f"{must['n_hold']} of the {must['n_predicted']} the construction predicts (not: {must['failed']})")
    assert arts["ablation"]["result"]["context"]["german"]["percent_increase"] == de
    tok = next(row for row in r["rows"] if "loss rises most" in row["check"])
    assert tok["measured"] >= 5 and len(r["helped"]) == 20
    # read from the model's losses: each helped token's loss rises on average when ablated
    assert all(t["value"] > 0 and t["count"] >= 5 for t in r["helped"])
    assert r["passed"] and r["n_passed"] == r["n_checked"] == 14  # 6 + 4 n-gram rows (issue 19 §4) + the null-percentile and 3 rank rows (issue 21 §4)
    # the planted contextual n-gram (issue 19 §4): recovered by the ngrams step, through the
    # indirect path and the planted L5 neuron, which ANDs current token and context
    assert r["ngram"]["neuron"] == "L5N1000"
    ng_rows = [row for row in r["rows"] if row.get("kind", "").startswith("ngram")]
    assert [row["kind"] for row in ng_rows] == ["ngram_rank", "ngram_paths", "ngram_carrier", "ngram_and"]
    assert all(row["passed"] for row in ng_rows)
    t1, t2 = r["ngram"]["trigram"]["ids"][1:]
    top = arts["ngrams"]["result"]["trigrams"][ng_rows[0]["measured"] - 1]
    assert top["ids"][-2:] == [t1, t2] and top["indirect"] > top["direct"]
    # the self-check's boosted tokens are those of the l3_tokens step (same neuron here)
    assert [t["token_id"] for t in r["boosted"]] == \
        [t["token_id"] for t in arts["l3_tokens"]["result"]["neuron_direction"]["boosted"][:20]]


def test_the_report_calls_it_a_known_answer_control(planted_default):
    """The summary's banner and its "planted → recovered" table (template only: the
    notebook is built from this run's context, not executed)."""
    from report.build import build_notebook

    nb = build_notebook(planted_default["context"])
    md = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    md = " ".join(md.replace(">", " ").replace("*", "").split())  # no quote marks, emphasis, wraps
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert ("Known-answer control, not Pythia-70M; L3N669 was planted to detect German; "
            "the report should recover it.") in md
    assert "Pipeline check, not the finding" not in md
    assert "Planted → recovered. The answer is known here: L3N669 was planted" in md
    assert "14 of the 14 checks that ran pass: the report recovers the planted neuron." in md
    assert "3 of the rows (the ranks under each probe aggregation" in md
    assert 'pc = load("planted")' in code


def test_plant_is_recorded_and_fitted_on_text_the_report_never_reads(planted_default):
    from analysis.controls.planted import FIT_DATASETS, FIT_PASSAGES
    from analysis.core.data import split_indices

    arts = planted_default["artifacts"]
    for step, art in arts.items():
        plant = art["provenance"]["model"]["plant"]
        assert plant["neuron"] == "L3N669", step
        for lang, name in FIT_DATASETS.items():
            fit = plant["fit"][lang]
            assert fit["dataset"] == name and fit["n"] == FIT_PASSAGES and len(fit["indices_sha256"]) == 64
            _, held = split_indices(fit["n_passages_in_file"])
            assert not set(fit["indices"]) & set(held)  # never in the europarl-heldout corpus
            # the report's corpora are other files, or (the robustness step's second data
            # set) the held-out passages of the fitting file, disjoint from the fit
            for d in art["provenance"]["data"].values():
                if d["file"] == fit["file"]:
                    assert d["subset"]["part"] == "heldout" and d["subset"]["indices"] == held, step
                    assert not set(d["subset"]["indices"]) & set(fit["indices"]), step
        assert plant["input"]["scale"] > 0 and plant["output"]["scale"] > 0
    assert arts["planted"]["result"]["scales"]["output"] == plant["output"]["scale"]
    # the loop above is not vacuous: the robustness step reads the held-out Europarl passages
    read = {d["file"] for d in arts["robustness"]["provenance"]["data"].values()}
    assert {plant["fit"][lang]["file"] for lang in FIT_DATASETS} <= read


def test_the_planted_checkpoint_is_the_same_with_one_thread_and_another_batch_split(
        planted_default, planted_rebuilt):
    """Issue 18: a second build in a fresh store, with one torch thread (the shared build
    used the default, two here) and the fitting passages forwarded 7 at a time instead of
    16, gives the same bytes (weights fingerprint), so the committed baseline applies on
    any machine. (A float32 fit moved the Fisher direction by 6e-9 with another batch
    split; float64 and the grid make that invisible.)"""
    from analysis.core.models import _fingerprint_dir

    store, path = planted_rebuilt
    assert path.is_relative_to(store)
    fingerprint = planted_default["artifacts"]["discovery"]["provenance"]["model"]["fingerprint"]
    assert _fingerprint_dir(path) == fingerprint


# Sizes of the determinism runs: determinism does not depend on them (the known-answer
# checks above read the quick profile's run). Every step runs, so every size is cut, as the
# Hub-layout report's (`test_hub.HUB_SIZES`).
SMALL = ["activation_examples=10", "probe_samples=500", "loss_examples=8", "dla_examples=4",
         "downstream_examples=4", "shift_examples=4", "neuron_examples=4", "top_examples=2",
         "ngram_examples=4", "ngram_prompts=2", "null_neurons_per_layer=1", "null_german_neurons=2",
         "null_loss_examples=4", "null_loss_tokens=32", "permutations=3"]


def test_every_step_is_deterministic_on_the_plant_rebuilt_from_nothing(
        shared_inputs, planted_rebuilt, tmp_path, monkeypatch):
    """Issue 4 on the real text and Pythia-70M's shape: the whole pipeline (every step a plant
    runs but backup, which needs a studied neuron besides the context neuron:
    test_determinism.py runs it on `tiny`) on the plant from the user's store and on the one rebuilt from nothing in a
    fresh store (one thread, another batch split: `planted_rebuilt`), with fewer examples than
    the quick profile (`SMALL`), gives artifacts with the same cache keys, result payloads and
    bit-identical arrays. A spy on `planted._materialise` checks that the second run read the
    rebuilt checkpoint, not the user's."""
    from analysis.controls import planted
    from analysis.core.config import RunConfig, get_profile
    from analysis.orchestration.pipeline import STEPS, run_report
    from analysis.orchestration.regression import diff_runs

    read = []
    materialise = planted._materialise
    outs = []
    for name, store in (("stored", os.environ["GERMAN_NEURON_MODEL_STORE"]), ("rebuilt", planted_rebuilt[0])):
        monkeypatch.setenv("GERMAN_NEURON_MODEL_STORE", str(store))
        if name == "rebuilt":
            monkeypatch.setattr(planted, "_materialise", lambda *a: read.append(materialise(*a)) or read[-1])
        cfg = RunConfig(model=PLANTED, neuron=None, profile=get_profile("quick").with_overrides(SMALL),
                        studied=(), out=str(tmp_path / name),
                        tokenizer=shared_inputs["tokenizer"], data_dir=shared_inputs["data_dir"])
        t0 = time.perf_counter()
        run_report(cfg, render=False, show_progress=False, log=lambda s: None)
        print(f"\nplanted, every step at small sizes, {name} model: {time.perf_counter() - t0:.0f} s")
        outs.append(tmp_path / name)
    assert read and set(read) == {planted_rebuilt[1]}  # the rebuilt checkpoint, not the user's
    d = diff_runs(*outs)
    assert d["identical"], d
    # not run on a plant: dynamics (checkpoints over training) and paper (the real Pythia-70M)
    assert {s["step"] for s in d["steps"]} == {s.name for s in STEPS} - {"backup", "dynamics", "paper"}


def test_the_plant_is_the_model_its_committed_baseline_was_recorded_on(planted_default):
    """The default plant built here has the weights fingerprint that the committed quick
    baseline records, so the README's first command compares its numbers on this machine
    (issue 18). A change to the plant's generator that moves its bytes fails here until the
    baseline is recorded again (`nox -s baseline -- --model pythia-70m-planted --update`)."""
    import json

    from analysis.orchestration.regression import BASELINES

    recorded = json.loads((BASELINES / "pythia-70m-planted-quick.json").read_text())["configuration"]
    model = planted_default["artifacts"]["discovery"]["provenance"]["model"]
    assert model["fingerprint"] == recorded["fingerprint"], "record the baseline again"


def test_a_plant_elsewhere_is_found_there(shared_inputs, tmp_path):
    """L2N100 planted, `--neuron auto`: discovery ranks it first and the report studies it
    (so nothing depends on L3N669 being the answer); its probe and boosted tokens meet the
    targets. (The ablation targets are asserted on the default plant, to save CI time:
    the ablation step is the costliest, a full-vocabulary loss per variant.)"""
    from analysis.controls.planted_check import TARGETS, discovery_rank
    from analysis.core.config import Neuron

    n = Neuron(2, 100)
    res, wall = _planted_run(shared_inputs, tmp_path, n, ("probes", "l3_tokens", "unigrams"))
    print(f"\nplanted L2N100 known-answer run: {wall:.0f} s")
    arts = res["artifacts"]
    disc = arts["discovery"]["result"]
    assert disc["best"] == "L2N100" and res["context"]["run"]["neuron"] == "L2N100"
    assert res["context"]["run"]["neuron_discovered"] and res["context"]["run"]["plant"]["neuron"] == "L2N100"
    arrays = {k: np.load(res["out"] / "artifacts" / f"discovery.{k}.npy")
              for k in ("coef", "f1", "test_acc", "separation")}
    assert discovery_rank(n, disc["ranked"], **arrays) == 1
    probe = next(r for r in arts["probes"]["result"]["rows"] if r["neuron"] == "L2N100")
    assert probe["f1"] >= TARGETS["f1"]
    l3 = arts["l3_tokens"]["result"]  # the context neuron's boosted tokens: the plant's here
    assert l3["context_neuron"] == "L2N100"
    german_top = {t["token_id"] for t in arts["unigrams"]["result"]["languages"]["german"]["top"]}
    hits = [t for t in l3["neuron_direction"]["boosted"][:20] if t["token_id"] in german_top]
    assert len(german_top) == 100 and len(hits) >= TARGETS["german_tokens"]
    assert "planted" not in arts and "ablation" not in arts  # only what was asked for
