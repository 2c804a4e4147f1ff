"""Regression checks: baselines, the comparison table, and a perturbed model failing it."""

from __future__ import annotations

import json

import pytest
import torch

from analysis.core import regression as reg


def test_committed_seed_baseline_is_derived_from_the_seed_reference():
    committed = json.loads(reg.baseline_path("pythia-70m", "paper").read_text())
    assert committed == json.loads(json.dumps(reg.seed_baseline()))
    m = committed["metrics"]
    assert m["ablation.context.german.percent_increase"]["value"] == 11.57
    assert m["unigrams.german_mean_logit_diff"]["value"] == 1.7974
    assert m["weird_tokens.unique"]["tolerance"] == 0.0
    # a proportion's tolerance grows with its sampling variance
    assert m["probes.L5N407.f1"]["tolerance"] > m["probes.L3N669.f1"]["tolerance"]


def test_seed_tolerance_rule():
    assert reg.seed_tolerance("count", 367) == 0.0
    assert reg.seed_tolerance("proportion", 0.5) == pytest.approx(0.005 + 2 * (0.25 / 2000) ** 0.5, abs=1e-4)
    assert reg.seed_tolerance("deterministic", 3.18) == pytest.approx(0.005 + 0.00318, abs=1e-6)


def _arts(f1=0.9, pct=1.0):
    return {"probes": {"result": {"rows": [{"neuron": "L3N669", "f1": f1, "train_acc": 0.9,
                                            "test_acc": 0.9, "mean_english": 0.0, "mean_german": 1.0}]},
                       "provenance": {"data": {"german": {"sha256": "aa"}}}, "key": "k"}}


def test_compare_flags_moved_missing_and_new_metrics():
    base = reg.record_fixture_baseline(_arts(), "tiny", "quick")
    assert reg.compare(base, _arts())["passed"]
    moved = reg.compare(base, _arts(f1=0.95))
    assert not moved["passed"] and moved["failed"] == ["probes.L3N669.f1"]
    row = next(r for r in moved["rows"] if r["metric"] == "probes.L3N669.f1")
    assert row["difference"] == pytest.approx(0.05) and row["status"] == "FAIL"
    base["metrics"]["probes.L9N9.f1"] = {"value": 1.0, "tolerance": 0.1, "section": "x"}
    missing = reg.compare(base, _arts())
    assert "probes.L9N9.f1" in missing["failed"]
    other_data = _arts()
    other_data["probes"]["provenance"]["data"]["german"]["sha256"] = "bb"
    assert "data.german.sha256" in reg.compare(reg.record_fixture_baseline(_arts(), "t", "q"), other_data)["failed"]


def test_committed_tiny_baseline_passes_and_a_perturbed_weight_fails(tiny_report, tmp_path):
    """The tiny fixture run matches its committed baseline; changing one weight of `tiny`
    (one layer-5 neuron's output row) makes the check fail and name the metrics it moved."""
    from analysis.core.config import Neuron, RunConfig, get_profile
    from analysis.core.models import load_checkpoint, tiny_checkpoint
    from analysis.core.pipeline import run_report

    res, _, _ = tiny_report
    baseline = reg.load_baseline(reg.baseline_path("tiny", "quick"))
    clean = reg.compare(baseline, res["artifacts"])
    assert clean["passed"], clean["failed"]

    from transformers import GPTNeoXForCausalLM

    src = tiny_checkpoint(0)
    model = GPTNeoXForCausalLM.from_pretrained(str(src))
    with torch.no_grad():
        model.gpt_neox.layers[5].mlp.dense_4h_to_h.weight[:, 1336] *= 25.0
    ck = tmp_path / "tiny-perturbed"
    model.save_pretrained(ck)
    for f in src.glob("tokenizer*"):
        (ck / f.name).write_bytes(f.read_bytes())
    (ck / "special_tokens_map.json").write_text((src / "special_tokens_map.json").read_text()) \
        if (src / "special_tokens_map.json").exists() else None
    assert load_checkpoint(ck).info["fingerprint"] != res["artifacts"]["ablation"]["provenance"]["model"]["fingerprint"]

    cfg = RunConfig(model=str(ck), neuron=Neuron.parse("L3N669"), profile=get_profile("quick"),
                    out=str(tmp_path / "out"))
    perturbed = run_report(cfg, corpus="fixture", show_progress=False, log=lambda s: None, render=False)
    result = reg.compare(baseline, perturbed["artifacts"])
    assert not result["passed"]
    assert "ablation.L5N1336.german.percent_increase" in result["failed"]
    assert "ablation.context.german.original" in result["failed"]
    # layer-3 activations do not see a layer-5 weight: those metrics must not move
    assert "activations.context_mean_active" not in result["failed"]
    assert "probes.L3N669.f1" not in result["failed"]
