"""Shared fixtures: the hermetic `tiny` model (fixture tokenizer, random weights) and one
end-to-end `tiny` report built once per test session. Only `shared_inputs` points at
../shared (when the caller passes it), for the tests that need the real tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The real tokenizer and text (../shared): `--data-dir` and `--tokenizer`, as the README's
# commands pass them (never hard-coded here), or the GERMAN_NEURON_* variables; read before
# the hermetic fixture below removes those from the environment.
ENV = {"data_dir": "GERMAN_NEURON_DATA_DIR", "tokenizer": "GERMAN_NEURON_TOKENIZER"}
HOW = ("run the tests as the README says: nox -s tests -- --tokenizer "
       "../shared/tokenizers/gpt-neox-20b/tokenizer.json --data-dir ../shared/data "
       "(or deselect them on purpose with -m 'not shared')")
# pytest-xdist workers share the machine's cores: each takes its share of torch threads (and
# so do the child processes its tests start), instead of every worker taking all of them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = _threads
    import torch

    torch.set_num_threads(int(_threads))
SHARED_INPUTS: dict[str, str | None] = {k: os.environ.get(v) for k, v in ENV.items()}
# Property tests draw the same examples on every run and machine (hypothesis derives the seed
# from the test's name), so a pass means the same everywhere and a failure reproduces;
# `HYPOTHESIS_PROFILE=explore` draws new ones (and keeps failures in .hypothesis/).
from hypothesis import settings as _hypothesis  # noqa: E402

_hypothesis.register_profile("deterministic", derandomize=True, database=None)
_hypothesis.register_profile("explore", derandomize=False)
_hypothesis.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))
# The user's store of generated checkpoints, kept across test runs (content-keyed: a model
# is reused only when the code and inputs that built it are unchanged).
MODEL_STORE = os.environ.get("GERMAN_NEURON_MODEL_STORE")


# For pytest run directly: `--tokenizer=PATH --data-dir=DIR` (with `=`: pytest reads a
# separate `../shared/...` as a test path and picks its root folder from it). The nox
# session takes the README's form and passes the variables.
def pytest_addoption(parser):
    group = parser.getgroup("german-neuron", "the real text and tokenizer (../shared)")
    group.addoption("--data-dir", default=None, help="folder of the seed's data files (../shared/data)")
    group.addoption("--tokenizer", default=None,
                    help="GPT-NeoX-20B tokenizer.json (../shared/tokenizers/gpt-neox-20b/tokenizer.json)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: the module builds a report or a model of its own (a minute or more); "
                   "such modules start first (see pytest_collection_modifyitems)")
    for key in ENV:
        value = config.getoption(key)
        if value:
            SHARED_INPUTS[key] = str(Path(value).expanduser().resolve())


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "shared_inputs" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared)
    # pytest-xdist hands out whole modules in this order (`--dist loadfile
    # --no-loadscope-reorder`, as the nox session runs it): the `slow` modules first, so that
    # no worker is left with a long one at the end while the other idles; among them, those
    # that do not read the shared `tiny` report first, so that one worker's long module
    # overlaps the other's building of that report instead of both waiting for it.
    modules: dict = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)

    def rank(module: str) -> tuple[bool, bool]:
        its = modules[module]
        return (not any(i.get_closest_marker("slow") for i in its),
                any("tiny_report" in getattr(i, "fixturenames", ()) for i in its))

    items[:] = [item for module in sorted(modules, key=rank) for item in modules[module]]


def paper_dir_beside_data() -> str | None:
    """The authors' published measurements (shared/paper) where the report looks for them by
    default: the folder `paper` beside the data folder, when the data folder was given and
    it exists; else None. For fixtures that build one report either way (with the folder when
    there is one); the tests that read it ask for `paper_dir`."""
    data = SHARED_INPUTS.get("data_dir")
    if not data:
        return None
    beside = Path(data).resolve().parent / "paper"
    return str(beside) if beside.is_dir() else None


@pytest.fixture(scope="session")
def paper_dir(shared_inputs):
    """The folder of the authors' files beside the real data (fails, never skips, when it
    is missing)."""
    found = paper_dir_beside_data()
    if found is None:
        pytest.fail(f"no folder `paper` beside {shared_inputs['data_dir']} (the authors' files, "
                    "shared/paper)", pytrace=False)
    return found


@pytest.fixture(scope="session")
def shared_inputs():
    """`{"data_dir", "tokenizer"}` of the real text. A test that needs them fails when they
    are missing (with the command that passes them), never skips: the known-answer tests
    must run for whoever runs the suite."""
    missing = [f"--{k.replace('_', '-')}" for k, v in SHARED_INPUTS.items() if not v]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not given: {HOW}", pytrace=False)
    bad = [v for v in SHARED_INPUTS.values() if not Path(v).exists()]
    if bad:
        pytest.fail(f"{bad[0]} does not exist: {HOW}", pytrace=False)
    return dict(SHARED_INPUTS)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # Everything but the generated checkpoints goes to a per-session cache, so tests never
    # depend on (or pollute) the user's cache; the checkpoints go to the user's model store,
    # built once per machine (a content-keyed folder, written atomically).
    from analysis.core.models import models_cache_dir

    store = MODEL_STORE or str(models_cache_dir())
    os.environ["GERMAN_NEURON_MODEL_STORE"] = store
    os.environ["GERMAN_NEURON_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("GERMAN_NEURON_DATA_DIR", None)
    os.environ.pop("GERMAN_NEURON_TOKENIZER", None)
    os.environ.pop("GERMAN_NEURON_PAPER_DIR", None)  # the authors' folder is passed explicitly
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


def _rebased(value, old: str, new: str):
    """`value` (nested dicts, lists, tuples, paths, strings) with every path under `old`
    moved under `new`."""
    if isinstance(value, dict):
        return {k: _rebased(v, old, new) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_rebased(v, old, new) for v in value)
    if isinstance(value, Path) and str(value).startswith(old):
        return Path(new + str(value)[len(old):])
    if isinstance(value, str) and value.startswith(old):
        return new + value[len(old):]
    return value


@pytest.fixture(scope="session")
def tiny_report(tmp_path_factory):
    """A full `tiny` run (quick profile, fixture corpora) with the report rendered:
    `(run_report's result, its log lines, its RunConfig)`, in a folder of this worker's own.

    Built once per test run, not once per pytest-xdist worker: the first worker to ask builds
    it under a file lock in the run's shared temporary folder, and every worker (the builder
    too) gets its own copy of the folder, so a test that edits its copy (deletes a figure,
    reruns into it) never races a test on another worker."""
    import dataclasses
    import pickle
    import shutil

    from filelock import FileLock

    from analysis.core.config import Neuron, RunConfig, get_profile
    from analysis.orchestration.pipeline import run_report

    def build(out: Path):
        logs: list[str] = []
        cfg = RunConfig(model="tiny", neuron=Neuron.parse("L3N669"), profile=get_profile("quick"), out=str(out))
        res = run_report(cfg, corpus="fixture", show_progress=False, log=logs.append)
        return res, logs, cfg

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    built, done = shared / "tiny-report-shared", shared / "tiny-report-shared.pickle"
    with FileLock(str(shared / "tiny-report-shared.lock")):
        if not done.exists():
            done.write_bytes(pickle.dumps(build(built)))
    own = Path(tmp_path_factory.mktemp("tiny-report"))
    shutil.copytree(built, own, dirs_exist_ok=True)
    res, logs, cfg = pickle.loads(done.read_bytes())
    return _rebased(res, str(built), str(own)), logs, dataclasses.replace(cfg, out=str(own))


@pytest.fixture(scope="session")
def planted_rebuilt(shared_inputs, tmp_path_factory):
    """`pythia-70m-planted` built again from nothing in a fresh model store, with one torch
    thread and the fitting passages forwarded 7 at a time (16 by default): `(store,
    checkpoint folder)`. The control must come out byte-identical (issue 18), and the
    pipeline run on it must give the same artifacts as on the stored one (tests/test_planted.py)."""
    import time

    import torch

    from analysis.controls import planted

    store = tmp_path_factory.mktemp("fresh-model-store")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GERMAN_NEURON_MODEL_STORE", str(store))
        mp.setattr(planted, "FIT_BATCH", 7)
        torch.set_num_threads(1)
        try:
            t0 = time.perf_counter()
            path = planted.planted_checkpoint(shared_inputs["tokenizer"], shared_inputs["data_dir"],
                                              log=lambda s: None)
            print(f"\nplanted rebuilt (1 thread, batch 7): {time.perf_counter() - t0:.0f} s")
        finally:
            torch.set_num_threads(threads)
    return store, path
