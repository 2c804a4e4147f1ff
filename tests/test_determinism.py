"""Two runs from scratch give identical artifacts (keys, payloads, arrays)."""

from __future__ import annotations

import os

from analysis.orchestration.pipeline import STEPS
from analysis.orchestration.regression import diff_runs


def test_two_fresh_tiny_runs_give_identical_artifacts(tiny_report, tmp_path):
    from analysis.core.config import Neuron, RunConfig, get_profile
    from analysis.orchestration.pipeline import run_report

    res, _, _ = tiny_report
    cfg = RunConfig(model="tiny", neuron=Neuron.parse("L3N669"), profile=get_profile("quick"),
                    out=str(tmp_path / "second"))
    run_report(cfg, corpus="fixture", show_progress=False, log=lambda s: None, steps=EVERY_STEP)
    d = diff_runs(res["out"], tmp_path / "second")
    assert d["identical"], d
    assert {s["step"] for s in d["steps"]} >= {"activations", "probes", "ablation"}


# Every step, as a partial run (`run_report(steps=...)`): the artifacts are computed and
# compared; figures, the baseline check and the rendering, which determinism does not
# concern, are left out (they took about half of each run).
EVERY_STEP = tuple(s.name for s in STEPS)

# activation_examples 10: the robustness step's sequence-mean probe needs 10 sequences per
# language (its train/test split, `robustness.MIN_SEQUENCES`); its own sizes are the
# smallest that still exercise every part (a random and a German-positive null neuron in
# each role, a paired bootstrap over several examples, more than one permutation).
SMALL = ["activation_examples=10", "probe_samples=300", "loss_examples=8", "dla_examples=4",
         "downstream_examples=4", "shift_examples=4", "neuron_examples=4", "top_examples=2",
         "null_neurons_per_layer=1", "null_german_neurons=2", "null_loss_examples=4",
         "null_loss_tokens=32", "permutations=3"]


def test_the_planted_control_rebuilt_from_nothing_gives_identical_artifacts(
        shared_inputs, planted_rebuilt, tmp_path, monkeypatch):
    """Issue 4 on the real text and Pythia-70M's shape: `pythia-70m-planted` from the user's
    model store and the same model rebuilt from nothing in a fresh store (with one thread and
    another batch split: `planted_rebuilt`) give artifacts with the same cache keys, result
    payloads and bit-identical arrays. Every step runs, on fewer examples than the quick
    profile (`--set`), to keep the suite's time: determinism does not depend on the sizes,
    and CI runs the README's first command on the full quick profile."""
    from analysis.core.config import Neuron, RunConfig, get_profile
    from analysis.orchestration.pipeline import run_report

    outs = []
    for name, store in (("first", os.environ["GERMAN_NEURON_MODEL_STORE"]), ("second", planted_rebuilt[0])):
        monkeypatch.setenv("GERMAN_NEURON_MODEL_STORE", str(store))
        cfg = RunConfig(model="pythia-70m-planted", neuron=Neuron.parse("L3N669"),
                        profile=get_profile("quick").with_overrides(SMALL), out=str(tmp_path / name),
                        tokenizer=shared_inputs["tokenizer"], data_dir=shared_inputs["data_dir"])
        run_report(cfg, show_progress=False, log=lambda s: None, steps=EVERY_STEP)
        outs.append(tmp_path / name)
    d = diff_runs(*outs)
    assert d["identical"], d
    assert {s["step"] for s in d["steps"]} >= {"activations", "probes", "ablation", "dla",
                                                "backup", "downstream", "neurons", "planted",
                                                "robustness"}


def test_pythia_70m_random_is_the_model_its_committed_baseline_was_recorded_on(shared_inputs):
    """`pythia-70m-random`, generated here (or read from the store under the key of the code
    that generates it), has the weights fingerprint that its committed baseline records: the
    generation gives the same bytes on this machine as on the one that recorded it."""
    import json
    from pathlib import Path

    from analysis.core.models import _fingerprint_dir, pythia_random_checkpoint
    from analysis.orchestration.regression import BASELINES

    path = pythia_random_checkpoint(shared_inputs["tokenizer"])
    recorded = json.loads(Path(BASELINES / "pythia-70m-random-quick.json").read_text())
    assert _fingerprint_dir(path) == recorded["configuration"]["fingerprint"]
