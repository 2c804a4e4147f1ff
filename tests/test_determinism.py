"""Two runs from scratch give identical artifacts (keys, payloads, arrays)."""

from __future__ import annotations

import pytest

from analysis.orchestration.pipeline import STEPS
from analysis.orchestration.regression import diff_runs

# builds a report or model of its own: scheduled first (conftest)
pytestmark = pytest.mark.slow


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
# concern, are left out (they took about half of each run). The planted control on the real
# text and Pythia-70M's shape: tests/test_planted.py (it compares against the known-answer
# run that file builds anyway).
EVERY_STEP = tuple(s.name for s in STEPS)

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
