"""The positive control (analysis.controls.organism), neuron discovery (analysis.families.discovery) and the
training dynamics (analysis.families.dynamics), on tiny hermetic models: the fixture tokenizer and
fixture text, training runs of a few seconds."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

TINY_CFG = dict(n_layers=2, d_model=32, n_heads=2, d_mlp=64, seq_len=64, batch_size=4, micro_batch=2,
                steps=8, n_checkpoints=3, lr=3e-3, warmup_steps=2)


def _fixture_texts():
    from analysis.core.data import indices_record, load_corpus, split_indices

    texts, record = {}, {}
    for lang in ("english", "german"):
        ex = [t for t in load_corpus(f"fixture_{lang}").examples if t.strip()]
        train_idx, held = split_indices(len(ex), 5)
        texts[lang] = [ex[i] for i in train_idx]
        record[lang] = {"dataset": f"fixture_{lang}", "heldout": indices_record(held)}
    return texts, record


def _train(out: Path, **changes):
    from analysis.controls.organism import OrganismConfig, train
    from analysis.core.tiny_tokenizer import train_fixture_tokenizer

    texts, record = _fixture_texts()
    cfg = OrganismConfig(**{**TINY_CFG, **changes})
    return train(cfg, train_fixture_tokenizer(512), texts, out, data=record, show_progress=False,
                 log=lambda s: None)


@pytest.fixture(scope="module")
def tiny_organism():
    """A tiny organism trained into the (per-session) model cache, as `german-neuron organism` would."""
    from analysis.core.models import models_cache_dir

    out = models_cache_dir() / "organism-tinytest"
    manifest = _train(out)
    return out, manifest


# ----------------------------------------------------------------------------- data split


def test_heldout_split_is_deterministic_disjoint_and_recorded():
    from analysis.core.data import (
        HELDOUT_PER_LANGUAGE,
        heldout_indices,
        indices_record,
        split_indices,
    )

    train, held = split_indices(2000)
    assert len(held) == HELDOUT_PER_LANGUAGE == 200 and len(train) == 1800
    assert set(train).isdisjoint(held) and sorted(train + held) == list(range(2000))
    assert held == heldout_indices(2000) and held == sorted(held)
    assert held != list(range(200)) and held != list(range(1800, 2000))  # spread, not a block
    rec = indices_record(held)
    assert rec["n"] == 200 and len(rec["indices_sha256"]) == 64
    assert indices_record(held[:-1] + [held[-1] + 1])["indices_sha256"] != rec["indices_sha256"]


def test_checkpoint_steps_are_log_spaced():
    from analysis.controls.organism import checkpoint_steps

    steps = checkpoint_steps(800, 10)
    assert steps[0] == 0 and steps[-1] == 800 and steps == sorted(set(steps))
    assert {1, 800} <= set(steps) and 9 <= len(steps) <= 11
    ratios = [b / a for a, b in zip(steps[1:], steps[2:], strict=False)]
    assert max(ratios) / min(ratios) < 2.5  # roughly geometric
    assert checkpoint_steps(8, 3) == [0, 1, 3, 8]


# ----------------------------------------------------------------------------- training


def test_tiny_training_writes_checkpoints_and_manifest(tiny_organism):
    from analysis.controls import sources  # noqa: F401  (model_slug knows the organism's folders)
    from analysis.controls.organism import (
        _texts_sha,
        checkpoint_info,
        checkpoint_steps,
        latest_final_checkpoint,
        series,
    )
    from analysis.core.data import indices_record
    from analysis.core.models import load_checkpoint, model_slug

    out, m = tiny_organism
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == m and m["complete"] is True and m["stopped_by_time_limit"] is False
    assert [c["step"] for c in m["checkpoints"]] == checkpoint_steps(8, 3)
    tokens_per_step = TINY_CFG["batch_size"] * TINY_CFG["seq_len"]
    assert m["tokens_per_step"] == tokens_per_step
    for c in m["checkpoints"]:
        assert c["tokens_seen"] == c["step"] * tokens_per_step
        assert math.isfinite(c["train_loss"]) and 0 < c["train_loss"] < 10
        folder = out / c["path"]
        assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
        assert checkpoint_info(folder)["step"] == c["step"]
    assert m["tokens_seen"] == 8 * tokens_per_step and m["wall_time_s"] > 0 and m["tokens_per_s"] > 0
    assert m["final_train_loss"] < m["checkpoints"][0]["train_loss"]  # it learned something
    assert len(m["loss_curve"]) == 8
    texts, _ = _fixture_texts()
    for lang in ("english", "german"):
        d = m["data"][lang]
        assert d["passages"] == len(texts[lang]) and d["passages_sha256"] == _texts_sha(texts[lang])
        assert d["heldout"]["n"] == 5
    assert m["seed"] == 0 and m["config"]["steps"] == 8 and len(m["config_hash"]) == 64
    assert m["model_shape"]["num_hidden_layers"] == 2 and m["model_shape"]["vocab_size"] == 512
    final = out / m["final"]["path"]
    assert latest_final_checkpoint() == final
    assert model_slug(str(final)) == "organism" and model_slug(str(out / "step000001")) == "organism-step1"
    assert [s["step"] for s in series(final)] == checkpoint_steps(8, 3)
    loaded = load_checkpoint(final)
    assert loaded.info["n_layers"] == 2 and loaded.info["d_mlp"] == 64
    assert indices_record(d["heldout"]["indices"])["n"] == 5


def test_training_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    a = _train(tmp_path / "a")
    b = _train(tmp_path / "b")
    c = _train(tmp_path / "c", seed=1)
    assert a["loss_curve"] == b["loss_curve"]
    assert a["config_hash"] == b["config_hash"] != c["config_hash"]
    for ck in a["checkpoints"]:
        wa = load_file(tmp_path / "a" / ck["path"] / "model.safetensors")
        wb = load_file(tmp_path / "b" / ck["path"] / "model.safetensors")
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), ck["path"]
    final = a["final"]["path"]
    wa = load_file(tmp_path / "a" / final / "model.safetensors")
    wc = load_file(tmp_path / "c" / final / "model.safetensors")
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_bad_organism_config_is_a_usage_error():
    from analysis.controls.organism import OrganismConfig
    from analysis.core.errors import UsageError

    with pytest.raises(UsageError, match="divisible"):
        OrganismConfig(d_model=30, n_heads=4).check()
    with pytest.raises(UsageError, match="german_fraction"):
        OrganismConfig(german_fraction=1.5).check()


# ----------------------------------------------------------------------------- discovery


def test_vectorised_probe_matches_sklearn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    from analysis.families.discovery import probe_all
    from analysis.families.probes import single_neuron_probe

    rng = np.random.default_rng(0)
    n, m = 600, 12
    shift = np.linspace(0.0, 3.0, m)
    de = (rng.normal(size=(n, m)) + shift).astype(np.float32)
    en = (rng.normal(size=(n, m)) * np.linspace(0.5, 2.0, m)).astype(np.float32)
    de[:, 0] = en[:, 0] = 0.25  # a dead neuron
    de[:, -1], en[:, -1] = rng.uniform(5, 6, n), rng.uniform(-1, 0, n)  # separable
    y = np.r_[np.ones(500), np.zeros(500)]
    for dtype in (torch.float64, torch.float32):
        st = probe_all(de, en, 500, 0.2, 0, dtype=dtype)
        for j in range(m):
            sk = single_neuron_probe(de[:, j], en[:, j], 500, 0.2, 0)
            # sklearn's lbfgs stops at its tolerance: a point on the boundary may flip
            for key in ("f1", "test_acc", "train_acc"):
                assert abs(st[key][j] - sk[key]) <= 0.01, (dtype, j, key, st[key][j], sk[key])
            X = np.r_[de[:500, j], en[:500, j]].astype(np.float64)[:, None]
            X_tr, _, y_tr, _ = train_test_split(X, y, test_size=0.2, random_state=0)
            ref = LogisticRegression().fit(X_tr, y_tr)
            assert st["coef"][j] == pytest.approx(ref.coef_[0, 0], rel=2e-2, abs=5e-3), (dtype, j)
            assert st["intercept"][j] == pytest.approx(ref.intercept_[0], rel=2e-2, abs=5e-3), (dtype, j)
    assert st["f1"][-1] == 1.0 and st["coef"][-1] > 0 and st["coef"][1:].min() > 0
    assert st["f1"][0] in (0.0, pytest.approx(2 / 3, abs=0.05))  # dead: nothing, or everything German


def test_ranking_keeps_only_german_positive_neurons_and_breaks_ties():
    from analysis.families.discovery import probe_all, rank

    rng = np.random.default_rng(1)
    n = 400
    de = rng.normal(size=(n, 4)).astype(np.float32)
    en = rng.normal(size=(n, 4)).astype(np.float32)
    en[:, 0] += 12.0  # English-positive, separable: the best F1 of all
    de[:, 1] += 1.0  # German-positive, weaker
    de[:, 2] += 2.0  # German-positive, stronger
    de[:, 3], en[:, 3] = 9.0, 0.0  # German-positive, perfectly separable and constant: ties with ...
    stats = probe_all(de, en, n, 0.2, 0)
    assert stats["f1"][0] == 1.0 and stats["coef"][0] < 0
    german = list(rank(stats, True))
    assert 0 not in german and german[-2:] == [2, 1]
    assert rank(stats, False)[0] == 0
    stats["f1"][2], stats["test_acc"][2] = stats["f1"][3], stats["test_acc"][3]  # ... a forced tie
    assert list(rank(stats, True))[:2] == [3, 2]  # broken by |separation|, not position


def _plant(model, toks, layer=3, index=669):
    """Weights of `model` with a German token direction planted: a fresh direction v is
    added to the embedding of every token more frequent in the German than in the English
    examples (subtracted for English-leaning tokens), neuron `L{layer}N{index}` reads v,
    and v is projected out of every other neuron's input weights and every attention
    value matrix (so that no other component reads it); the planted neuron writes nothing."""
    from analysis.core.engine import Weights

    w = Weights.from_bridge(model.bridge, model.info["rotary_pct"])
    de = Counter(i for t in toks["german"] for i in t)
    en = Counter(i for t in toks["english"] for i in t)
    lean = torch.zeros(w.W_E.shape[0])
    for t in set(de) | set(en):
        lean[t] = float(de[t] > en[t]) - float(en[t] > de[t])
    g = torch.Generator().manual_seed(0)
    v = torch.randn(w.W_E.shape[1], generator=g)
    v = v - v.mean()
    v = v / v.norm()
    W_E = w.W_E + 2.0 * w.W_E.norm(dim=1).mean() * lean[:, None] * v
    W_in = w.W_in - torch.einsum("d,lde->le", v, w.W_in)[:, None, :] * v[None, :, None]
    W_V = w.W_V - torch.einsum("d,lhde->lhe", v, w.W_V)[:, :, None, :] * v[None, None, :, None]
    b_in, W_out = w.b_in.clone(), w.W_out.clone()
    W_in[layer, :, index] = 4.0 * v
    b_in[layer, index] = 0.0
    W_out[layer, index] = 0.0
    return dataclasses.replace(w, W_E=W_E, W_in=W_in, b_in=b_in, W_V=W_V, W_out=W_out)


def test_discovery_ranks_a_planted_neuron_first(tiny):
    from analysis.core.data import load_corpus
    from analysis.core.engine import Forward, Weights
    from analysis.families.discovery import discover

    toks = {lang: [tiny.to_tokens(t) for t in load_corpus(f"fixture_{lang}").examples if t.strip()]
            for lang in ("german", "english")}
    kw = dict(crop=(10, 400), n_samples=600, test_size=0.2, seed=0, batch_tokens=4096, show_progress=False)
    planted, arrays = discover(Forward(_plant(tiny, toks)), toks, **kw)
    assert planted["best"] == "L3N669", planted["ranked"][:3]
    top = planted["ranked"][0]
    assert top["verified"] and top["sign"] == "german" and top["coef"] > 0
    assert abs(top["f1"] - top["vectorised"]["f1"]) < 5e-3
    assert top["f1"] > planted["ranked"][1]["f1"] + 0.03
    assert arrays["f1"].shape == (6, 2048) and arrays["f1"][3, 669] == pytest.approx(top["f1"], abs=5e-3)
    assert [r["rank"] for r in planted["ranked"]] == list(range(1, len(planted["ranked"]) + 1))
    assert {s["neuron"] for s in planted["seed_neurons"]} >= {"L3N669", "L4N482"}
    # control: the same model without the plant does not put L3N669 first
    plain, _ = discover(Forward(Weights.from_bridge(tiny.bridge, tiny.info["rotary_pct"])), toks, **kw)
    assert plain["best"] != "L3N669" and plain["best_f1"] < top["f1"]


# ----------------------------------------------------------------------------- report, dynamics, default model


def test_organism_report_with_auto_neuron_and_dynamics(tiny_organism, tmp_path):
    import re

    from analysis.core.config import RunConfig, get_profile
    from analysis.orchestration.pipeline import STEPS, run_report

    names = [s.name for s in STEPS]
    assert names.index("discovery") < names.index("activations") < names.index("dynamics")
    out_org, manifest = tiny_organism
    final = out_org / manifest["final"]["path"]
    logs: list[str] = []
    cfg = RunConfig(model=str(final), neuron=None, profile=get_profile("quick"), out=str(tmp_path / "o"),
                    note="BANNER-TEXT: Pythia-70M could not be loaded.")
    res = run_report(cfg, corpus="fixture", show_progress=False, log=logs.append)
    arts = res["artifacts"]
    disc = arts["discovery"]["result"]
    assert res["context"]["run"]["neuron"] == disc["best"] and res["context"]["run"]["neuron_discovered"]
    assert arts["activations"]["result"]["context_neuron"] == disc["best"]
    assert disc["n_neurons"] == 2 * 64 and (tmp_path / "o" / "artifacts" / "discovery.json").is_file()
    probe = {r["neuron"]: r for r in arts["probes"]["result"]["rows"]}
    assert disc["best"] in probe and probe[disc["best"]]["f1"] == pytest.approx(disc["best_f1"])
    dyn = arts["dynamics"]["result"]
    assert [r["step"] for r in dyn["rows"]] == [c["step"] for c in manifest["checkpoints"]]
    last, ctx = dyn["rows"][-1], arts["ablation"]["result"]["context"]
    for lang in ("german", "english"):  # the last checkpoint is the report's model: same numbers
        assert last["context"][lang]["percent_increase"] == pytest.approx(ctx[lang]["percent_increase"], abs=1e-9)
    assert last["context"]["f1"] == pytest.approx(probe[disc["best"]]["f1"])
    assert last["best"]["neuron"] == disc["best"]
    assert dyn["training"]["steps_done"] == 8 and dyn["training"]["config_hash"] == manifest["config_hash"]
    html = (res["out"] / "report.html").read_text(encoding="utf-8")
    text = re.sub(r"data:[^\"')\s]+", "", html)
    for needle in ("Neuron discovery", "Training dynamics", "BANNER-TEXT", "Positive control",
                   f"ranks <strong>{disc['best']}</strong> first"):
        assert needle in text, needle
    setup = re.search(r"<h[12][^>]*>\s*(<[^>]+>)*\s*Setup", text)
    assert setup and text.index("BANNER-TEXT") < setup.start()  # the banner is on the first page
    assert {f["name"] for f in res["figures"]} >= {"discovery_f1", "dynamics"}


def test_default_model_falls_back_to_the_cached_organism(tiny_organism):
    from analysis.controls.organism import resolve_default_model
    from analysis.core.errors import ModelUnavailableError

    out, manifest = tiny_organism
    said: list[str] = []

    def offline():
        raise ModelUnavailableError("offline")

    model, note = resolve_default_model(None, None, log=said.append, probe=offline)
    assert model == str(out / manifest["final"]["path"])
    assert "Pythia-70M could not be loaded" in note and "organism" in note and said == [note]
    assert "\n" not in note  # one short paragraph
    assert resolve_default_model(None, None, log=said.append, probe=lambda: None) == ("pythia-70m", None)


def test_default_corpus_is_the_heldout_split_for_the_organism(tiny_organism):
    from analysis.controls.organism import default_corpus, is_organism
    from analysis.core.data import CORPORA, SUBSETS

    out, manifest = tiny_organism
    assert default_corpus(str(out / manifest["final"]["path"])) == "europarl-heldout"
    assert is_organism(str(out / manifest["final"]["path"])) and is_organism("organism")
    assert not is_organism("tiny") and not is_organism("pythia-70m")
    assert default_corpus("organism") == "europarl-heldout"
    assert default_corpus("tiny") == "seed"
    assert set(CORPORA["europarl-heldout"].values()) <= set(SUBSETS)
