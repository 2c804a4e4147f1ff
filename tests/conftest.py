"""Shared fixtures: the hermetic `tiny` model (fixture tokenizer, random weights) and one
end-to-end `tiny` report built once per test session. Only `shared_inputs` points at
../shared (when the caller passes it), for the tests that need the real tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The real tokenizer and text (../shared), when the caller passes them (`.ci/run` exports
# both); read before the hermetic fixture below removes them from the environment.
SHARED_INPUTS = {"data_dir": os.environ.get("GERMAN_NEURON_DATA_DIR"),
                 "tokenizer": os.environ.get("GERMAN_NEURON_TOKENIZER")}


@pytest.fixture(scope="session")
def shared_inputs():
    """`{"data_dir", "tokenizer"}` of the real text; skips without them, fails in CI."""
    if not all(SHARED_INPUTS.values()):
        msg = "GERMAN_NEURON_DATA_DIR and GERMAN_NEURON_TOKENIZER are not set"
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI must run the tests beside ../shared)")
        pytest.skip(msg)
    return dict(SHARED_INPUTS)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # Generated checkpoints go to a per-session cache, so tests never depend on (or
    # pollute) the user's cache.
    os.environ["GERMAN_NEURON_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("GERMAN_NEURON_DATA_DIR", None)
    os.environ.pop("GERMAN_NEURON_TOKENIZER", None)
    yield


@pytest.fixture
def hub_cache(tmp_path):
    """Factory for a Hugging Face Hub cache of `EleutherAI/pythia-70m` with tiny models
    (tests/hub_fixture.py): `hub_cache(revisions, trap_bin=()) -> (hf_home, {revision:
    commit})`, `revisions` as `{revision: seed}` or names. Read it in a child process with
    `hub_fixture.offline_env(hf_home)`, in this one with `hub_fixture.patch_offline`."""
    from hub_fixture import build_hub_cache

    def make(revisions, **kwargs):
        home = tmp_path / "hf"
        return home, build_hub_cache(home, revisions, **kwargs)

    return make


@pytest.fixture(scope="session")
def tiny():
    from analysis.core.models import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def tiny_fwd(tiny):
    from analysis.core.engine import Forward, Weights

    return Forward(Weights.from_bridge(tiny.bridge, tiny.info["rotary_pct"]))


@pytest.fixture(scope="session")
def tiny_report(tmp_path_factory):
    """A full `tiny` run (quick profile, fixture corpora) with the report rendered."""
    from analysis.core.config import Neuron, RunConfig, get_profile
    from analysis.core.pipeline import run_report

    out = Path(tmp_path_factory.mktemp("tiny-report"))
    logs: list[str] = []
    cfg = RunConfig(model="tiny", neuron=Neuron.parse("L3N669"), profile=get_profile("quick"), out=str(out))
    res = run_report(cfg, corpus="fixture", show_progress=False, log=logs.append)
    return res, logs, cfg
