"""`--set NAME=VALUE`: one size of a profile overridden, validated before any compute."""

from __future__ import annotations

import subprocess
import sys

import pytest

from analysis.core.config import get_profile, settable_sizes
from analysis.core.errors import UsageError


def test_overrides_change_only_the_named_sizes_and_are_labelled():
    base = get_profile("quick")
    p = base.with_overrides(["loss_examples=200", "dla_examples=100", "downstream_examples=all"])
    assert (p.loss_examples, p.dla_examples, p.downstream_examples) == (200, 100, None)
    changed = {k for k in base.sizes() if base.sizes()[k] != p.sizes()[k]}
    assert changed == {"loss_examples", "dla_examples", "downstream_examples"}
    assert p.name == "quick"
    assert p.label == "quick with dla_examples=100, downstream_examples=all, loss_examples=200"
    assert p.with_overrides(["loss_examples=50"]).loss_examples == 50  # a later item wins
    assert get_profile("quick").with_overrides([]) == base


@pytest.mark.parametrize("item, message", [
    ("loss_exampls=3", "unknown size 'loss_exampls'; valid names: " + ", ".join(settable_sizes())),
    ("loss_examples=x", "not an integer"),
    ("loss_examples=2.5", "not an integer"),
    ("loss_examples", "is not of the form NAME=VALUE"),
    ("probe_samples=9", "probe_samples=9 is too small"),
    ("loss_examples=1", "loss_examples=1 is too small"),
    ("crop_end=5", "crop_end=5 must be greater than crop_start=10"),
    ("probe_test_size=1.5", "must be a fraction"),
    ("name=paper", "unknown size 'name'"),
    ("batch_tokens=10", "unknown size 'batch_tokens'"),
])
def test_bad_overrides_are_refused_with_one_line(item, message):
    with pytest.raises(UsageError) as e:
        get_profile("quick").with_overrides([item])
    assert message in e.value.args[0] and "\n" not in e.value.args[0]


def test_the_cli_refuses_a_bad_override_before_any_compute(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "analysis", "report", "--model", "tiny", "--corpus",
                        "fixture", "--set", "probe_samples=3", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[0] == (
        "error: probe_samples=3 is too small: the single-neuron probe's train/test split needs at least 10")
    assert not out.exists()  # nothing written, nothing loaded
