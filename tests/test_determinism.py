"""Two runs from scratch give identical artifacts (keys, payloads, arrays)."""

from __future__ import annotations

from analysis.core.regression import diff_runs


def test_two_fresh_tiny_runs_give_identical_artifacts(tiny_report, tmp_path):
    from analysis.core.config import Neuron, RunConfig, get_profile
    from analysis.core.pipeline import run_report

    res, _, _ = tiny_report
    cfg = RunConfig(model="tiny", neuron=Neuron.parse("L3N669"), profile=get_profile("quick"),
                    out=str(tmp_path / "second"))
    run_report(cfg, corpus="fixture", show_progress=False, log=lambda s: None, render=False)
    d = diff_runs(res["out"], tmp_path / "second")
    assert d["identical"], d
    assert {s["step"] for s in d["steps"]} >= {"activations", "probes", "ablation"}


SMALL = ["activation_examples=8", "probe_samples=300", "loss_examples=8", "dla_examples=4",
         "downstream_examples=4", "shift_examples=4", "neuron_examples=4", "top_examples=2"]


def test_two_fresh_quick_runs_of_pythia_70m_random_give_identical_artifacts(
        shared_inputs, tmp_path, monkeypatch):
    """Issue 4: `pythia-70m-random` on the real text, run twice from nothing (each with its
    own model cache, so the random checkpoint is generated twice, and its own output
    folder): every artifact has the same cache key, the same result payload and
    bit-identical arrays. Every step runs, on fewer examples than the quick profile
    (`--set`), to keep CI's time: determinism does not depend on the sizes, and the CI
    report itself runs the full quick profile."""
    from analysis.core.config import Neuron, RunConfig, get_profile
    from analysis.core.pipeline import run_report

    outs = []
    for name in ("first", "second"):
        monkeypatch.setenv("GERMAN_NEURON_CACHE", str(tmp_path / f"cache-{name}"))
        cfg = RunConfig(model="pythia-70m-random", neuron=Neuron.parse("L3N669"),
                        profile=get_profile("quick").with_overrides(SMALL), out=str(tmp_path / name),
                        tokenizer=shared_inputs["tokenizer"], data_dir=shared_inputs["data_dir"])
        run_report(cfg, show_progress=False, log=lambda s: None, render=False)
        outs.append(tmp_path / name)
    assert (tmp_path / "cache-first").is_dir() and (tmp_path / "cache-second").is_dir()
    d = diff_runs(*outs)
    assert d["identical"], d
    assert {s["step"] for s in d["steps"]} >= {"activations", "probes", "ablation", "dla",
                                                "backup", "downstream", "neurons"}
