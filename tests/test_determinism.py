"""Two runs from scratch give identical artifacts (keys, payloads, arrays)."""

from __future__ import annotations

from analysis.regression import diff_runs


def test_two_fresh_tiny_runs_give_identical_artifacts(tiny_report, tmp_path):
    from analysis.config import Neuron, RunConfig, get_profile
    from analysis.pipeline import run_report

    res, _, _ = tiny_report
    cfg = RunConfig(model="tiny", neuron=Neuron.parse("L3N669"), profile=get_profile("quick"),
                    out=str(tmp_path / "second"))
    run_report(cfg, corpus="fixture", show_progress=False, log=lambda s: None, render=False)
    d = diff_runs(res["out"], tmp_path / "second")
    assert d["identical"], d
    assert {s["step"] for s in d["steps"]} >= {"activations", "probes", "ablation"}
