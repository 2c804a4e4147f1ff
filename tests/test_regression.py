"""Regression checks: baselines, the comparison table, and a perturbed model failing it."""

from __future__ import annotations

import json

import pytest
import torch

from analysis.orchestration import regression as reg

# builds a report or model of its own: scheduled first (conftest)
pytestmark = pytest.mark.slow


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


def _arts(f1=0.9, pct=1.0, **config):
    """One synthetic `probes` artifact; `config` overrides its run configuration (model,
    revision, fingerprint, seed, context_neuron, corpus, profile, sizes)."""
    from analysis.core.config import get_profile

    c = {"model": "tiny", "revision": None, "fingerprint": "f" * 64, "seed": 0,
         "context_neuron": "L3N669", "corpus": "fixture", "profile": "quick",
         "sizes": get_profile("quick").sizes()} | config
    return {"probes": {"result": {"rows": [{"neuron": "L3N669", "f1": f1, "train_acc": 0.9,
                                            "test_acc": 0.9, "mean_english": 0.0, "mean_german": 1.0}]},
                       "provenance": {"data": {"german": {"sha256": "aa"}},
                                      "model": {"id": c["model"], "revision": c["revision"],
                                                "fingerprint": c["fingerprint"]},
                                      "seed": c["seed"],
                                      "run": {k: c[k] for k in ("context_neuron", "corpus", "profile", "sizes")}},
                       "key": "k"}}


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


def _text(html: str) -> str:
    """The visible text of a report: no tags, no embedded images, entities decoded,
    whitespace collapsed, apostrophes as pandoc's typographic ones."""
    import re
    from html import unescape

    html = re.sub(r"data:[^\"')\s]+", "", html)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).replace("'", "’")


def _sizes(**changes):
    from analysis.core.config import get_profile

    return get_profile("quick").sizes() | changes


@pytest.mark.parametrize(("change", "reason"), [
    ({"model": "pythia-70m-random"}, "model pythia-70m-random; baseline tiny-quick is for tiny"),
    ({"fingerprint": "e" * 64}, "weights fingerprint eeeeeeeeeeee; baseline tiny-quick is for ffffffffffff"),
    ({"context_neuron": "L5N10"}, "context neuron L5N10; baseline tiny-quick is for L3N669"),
    ({"corpus": "seed"}, "corpus seed; baseline tiny-quick is for fixture"),
    ({"sizes": _sizes(loss_examples=60)}, "profile sizes loss_examples 60; baseline tiny-quick is for loss_examples 40"),
    ({"seed": 1}, "seed 1; baseline tiny-quick is for 0"),
])
def test_a_baseline_applies_only_to_its_configuration(change, reason):
    base = reg.record_fixture_baseline(_arts(), "tiny", "quick")
    assert base["configuration"]["context_neuron"] == "L3N669"
    assert reg.applies(base, _arts()) == (True, [])
    ok, reasons = reg.applies(base, _arts(**change))
    assert not ok and reasons == [reason]
    # a different profile name with the same sizes computes the same numbers: it applies
    assert reg.applies(base, _arts(profile="renamed"))[0]


def test_applies_refuses_unrecorded_mixed_and_unconfigured():
    base = reg.record_fixture_baseline(_arts(), "tiny", "quick")
    legacy = _arts()
    del legacy["probes"]["provenance"]["run"]  # artifacts made before configurations were recorded
    ok, reasons = reg.applies(base, legacy)
    assert not ok and (
        "context neuron not recorded in the artifacts (rerun the report); baseline tiny-quick is for L3N669") in reasons
    with pytest.raises(ValueError, match="do not record"):
        reg.record_fixture_baseline(legacy, "tiny", "quick")
    mixed = _arts() | {"correlations": _arts(context_neuron="L5N10")["probes"]}
    ok, reasons = reg.applies(base, mixed)
    assert not ok and any("artifacts of more than one run" in r for r in reasons), reasons
    with pytest.raises(ValueError, match="more than one run"):
        reg.record_fixture_baseline(mixed, "tiny", "quick")
    # `auto` (discovery, before the neuron was resolved) defers to the resolved neuron
    assert reg.applies(base, _arts() | {"discovery": _arts(context_neuron="auto")["probes"]})[0]
    unconfigured = {k: v for k, v in base.items() if k != "configuration"}
    ok, reasons = reg.applies(unconfigured, _arts())
    assert not ok and "records no configuration" in reasons[0]


def test_seed_baseline_applies_only_to_l3n669_on_the_seed_corpus_with_paper_sizes():
    from analysis.core.config import get_profile

    paper = dict(model="pythia-70m", revision="step143000", corpus="seed", profile="paper",
                 sizes=get_profile("paper").sizes())
    seed_base = reg.load_baseline(reg.baseline_path("pythia-70m", "paper"))
    # any weights fingerprint, any seed (the seed's probe split was unseeded)
    assert reg.applies(seed_base, _arts(**paper, fingerprint="a" * 64, seed=7)) == (True, [])
    sel = reg.select_baseline(_arts(**paper))
    assert sel["applies"] and sel["path"].name == "pythia-70m-paper.json"
    for change, label in (({"context_neuron": "L5N10"}, "context neuron"), ({"corpus": "fixture"}, "corpus"),
                          ({"sizes": get_profile("quick").sizes(), "profile": "quick"}, "profile sizes"),
                          ({"revision": "step512"}, "revision")):
        ok, reasons = reg.applies(seed_base, _arts(**(paper | change)))
        assert not ok and len(reasons) == 1 and reasons[0].startswith(label), reasons
    sel = reg.select_baseline(_arts(**(paper | {"context_neuron": "L5N10"})))
    assert not sel["applies"] and sel["sentence"] == (
        "No baseline was recorded for this configuration (context neuron L5N10; baseline "
        "pythia-70m-paper is for L3N669), so no number is checked.")


def test_committed_fixture_baselines_record_their_configuration():
    from analysis.core.config import get_profile

    for name, corpus in (("tiny-quick", "fixture"), ("pythia-70m-random-quick", "seed")):
        b = reg.load_baseline(reg.BASELINES / f"{name}.json")
        c = b["configuration"]
        assert (c["model"], c["profile"]) == (b["model"], b["profile"]), name
        assert c["context_neuron"] == "L3N669" and c["corpus"] == corpus and c["seed"] == 0, name
        assert c["sizes"] == get_profile("quick").sizes() and len(c["fingerprint"]) == 64, name
    # where a re-record goes: over the same configuration, never over another one
    tiny = reg.load_baseline(reg.BASELINES / "tiny-quick.json")
    assert reg.baseline_target(tiny) == reg.BASELINES / "tiny-quick.json"
    other = json.loads(json.dumps(tiny))
    other["configuration"]["fingerprint"] = "0" * 64  # regenerated weights: same file
    assert reg.baseline_target(other) == reg.BASELINES / "tiny-quick.json"
    other["configuration"]["context_neuron"] = "L5N10"
    assert reg.baseline_target(other) == reg.BASELINES / "tiny-quick-L5N10-fixture.json"


def test_committed_tiny_baseline_passes_and_a_perturbed_weight_fails(tiny_report, tmp_path):
    """The tiny fixture run matches its committed baseline; changing one weight of `tiny`
    (one layer-5 neuron's output row) makes the check fail and name the metrics it moved."""
    from analysis.core.config import Neuron, RunConfig, get_profile
    from analysis.core.models import load_checkpoint, tiny_checkpoint
    from analysis.orchestration.pipeline import run_report

    res, _, _ = tiny_report
    sel = reg.select_baseline(res["artifacts"])
    assert sel["applies"] and sel["path"] == reg.baseline_path("tiny", "quick"), sel["reasons"]
    baseline = reg.load_baseline(reg.baseline_path("tiny", "quick"))
    clean = reg.compare(baseline, res["artifacts"])
    assert clean["passed"], clean["failed"]
    assert res["context"]["regression"]["applies"] and res["context"]["regression"]["passed"]
    text = _text((res["out"] / "report.html").read_text(encoding="utf-8"))
    assert "which was recorded for this run’s configuration" in text, text[text.find("Regression"):][:600]
    assert "0 outside tolerance" in text and "No baseline was recorded" not in text

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
    # only the steps whose numbers are asserted below (figures and rendering add nothing here)
    perturbed = run_report(cfg, corpus="fixture", show_progress=False, log=lambda s: None,
                           steps=("ablation", "probes"))
    # other weights: the baseline does not apply (the report checks nothing) ...
    ok, reasons = reg.applies(baseline, perturbed["artifacts"])
    assert not ok and [r.split()[0] for r in reasons] == ["model", "weights"], reasons
    # ... and compared anyway, the numbers that the weight moves are named
    result = reg.compare(baseline, perturbed["artifacts"])
    assert not result["passed"]
    assert "ablation.L5N1336.german.percent_increase" in result["failed"]
    assert "ablation.context.german.original" in result["failed"]
    # layer-3 activations do not see a layer-5 weight: those metrics must not move
    assert "activations.context_mean_active" not in result["failed"]
    assert "probes.L3N669.f1" not in result["failed"]


@pytest.fixture(scope="module")
def l5n10_report(tiny_report, tmp_path_factory):
    """`--neuron L5N10` on `tiny` (quick profile, fixture corpus), rendered, in a folder
    seeded with the default run's artifacts: the steps that do not depend on the context
    neuron (discovery, ...) are reused from it, and `downstream` (skipped for a last-layer
    neuron) is left there by it, as when a user reruns into the same --out."""
    import shutil

    from analysis.core.config import Neuron, RunConfig, get_profile
    from analysis.orchestration.pipeline import run_report

    res, _, _ = tiny_report
    out = tmp_path_factory.mktemp("tiny-l5n10")
    shutil.copytree(res["out"] / "artifacts", out / "artifacts")
    logs: list[str] = []
    cfg = RunConfig(model="tiny", neuron=Neuron.parse("L5N10"), profile=get_profile("quick"), out=str(out))
    return run_report(cfg, corpus="fixture", show_progress=False, log=logs.append), logs


def test_another_context_neuron_has_no_baseline_and_no_regression(l5n10_report):
    import subprocess
    import sys

    res, logs = l5n10_report
    arts = res["artifacts"]
    assert any(line.strip().startswith("discovery: cached") for line in logs), logs
    assert "downstream" not in arts and not (res["out"] / "artifacts" / "downstream.json").exists()
    config = reg.run_configuration(arts)
    assert config["context_neuron"] == "L5N10" and not config["conflicts"], config
    sentence = ("No baseline was recorded for this configuration (context neuron L5N10; "
                "baseline tiny-quick is for L3N669), so no number is checked.")
    rg = res["context"]["regression"]
    assert rg["applies"] is False and rg["n_checked"] == 0 and rg["sentence"] == sentence
    text = _text((res["out"] / "report.html").read_text(encoding="utf-8"))
    assert sentence in text
    assert "outside tolerance" not in text and "metrics checked" not in text
    # said in the verdict box on the first screen too, not only in the appendix (issue 18)
    assert f"Baseline check: no number was checked against a baseline: {sentence}" in text
    assert text.find("Baseline check:") < text.rfind("Regression check"), "the verdict comes before the appendix"
    # the individual-neuron section says that none is studied, and why
    assert ("None of them is studied here (quick profile): all 4 (L5N1336, L4N683, L4N1331, L5N1292) "
            "are not after the context neuron’s layer 5.") in text, text[text.find("None of"):][:300]
    assert "Skipped:" not in text

    r = subprocess.run([sys.executable, "-m", "analysis", "regression", "--model", "tiny",
                        "--out", str(res["out"])], capture_output=True, text=True, timeout=300)
    assert r.returncode == 4, r.stdout + r.stderr
    assert "no baseline for this configuration; record one with `nox -s baseline -- --update`" in r.stderr
    assert "context neuron L5N10; baseline tiny-quick is for L3N669" in r.stderr
    assert "FAILED" not in r.stdout + r.stderr


def test_regression_command_passes_the_default_run(tiny_report):
    import subprocess
    import sys

    res, _, _ = tiny_report
    r = subprocess.run([sys.executable, "-m", "analysis", "regression", "--model", "tiny",
                        "--out", str(res["out"])], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "failed: PASSED" in r.stdout
    rg = res["context"]["regression"]
    assert reg.outcome_sentence(rg) == (f"{rg['n_checked']:,} numbers checked against the baseline "
                                        "tiny-quick.json, 0 outside tolerance: PASSED") and rg["n_checked"] > 100
    text = _text((res["out"] / "report.html").read_text(encoding="utf-8"))
    assert f"Baseline check: {reg.outcome_sentence(rg)}" in text


def test_a_size_added_after_the_baseline_does_not_make_it_inapplicable():
    """A profile size the baseline does not record (added later, e.g. the robustness step's
    `permutations`) sizes only steps the baseline has no metric of; a size it records that
    the run lacks or changes still refuses it."""
    base = reg.record_fixture_baseline(_arts(), "tiny", "quick")
    older = {k: v for k, v in base["configuration"]["sizes"].items() if k != "permutations"}
    base["configuration"]["sizes"] = older
    assert reg.applies(base, _arts()) == (True, [])
    ok, reasons = reg.applies(base, _arts(sizes={k: v for k, v in _sizes().items() if k != "loss_examples"}))
    assert not ok and reasons == ["profile sizes loss_examples None; baseline tiny-quick is for loss_examples 40"]
