"""Sessions: `report` (wraps `german-neuron report`), `tests`, `lint`, and the project's other
commands (`organism`, `bench`, `regression`, `baseline`, `sweep`).

pip/virtualenv on purpose: `torch==2.13.0` resolves to the CPU wheel on machines that have
it on disk, where uv would download a multi-GB CUDA build.

Every session but `lint` runs in ONE environment, `.nox/project`, built by `_project` with
virtualenv and pip from `constraints.txt` and rebuilt when `pyproject.toml` or
`constraints.txt` change: the sessions need the same packages, and a separate environment
per session (nox's default) installed torch and ~100 packages again for each command — about
5 minutes each on a loaded 2-core machine, three times in CI.
"""

import hashlib
import os
import shutil
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

PYTHON = "3.11"
PROJECT_ENV = Path(".nox") / "project"


def _project(session: nox.Session) -> Path:
    """The shared environment's `bin` folder, created or updated first if needed (a stamp
    holds the sha256 of the files that decide what is installed)."""
    # constraints.txt pins every package to the versions the baselines were made with;
    # a maintainer upgrading a library edits it and reruns the regression checks.
    want = hashlib.sha256(Path("pyproject.toml").read_bytes() + Path("constraints.txt").read_bytes()).hexdigest()
    stamp = PROJECT_ENV / ".installed-sha256"
    bin_dir = PROJECT_ENV / ("Scripts" if os.name == "nt" else "bin")
    if stamp.is_file() and stamp.read_text() == want and (bin_dir / "python").exists():
        return bin_dir
    python = shutil.which(f"python{PYTHON}") or sys.executable
    if not (bin_dir / "python").exists():
        session.run(sys.executable, "-m", "virtualenv", "-q", "-p", python, str(PROJECT_ENV), external=True)
    # silent: nox prints pip's output only if it fails
    session.run(str(bin_dir / "python"), "-m", "pip", "install", "-c", "constraints.txt",
                "-e", ".[test]", external=True, silent=True)
    stamp.write_text(want)
    return bin_dir


def _run(session: nox.Session, command: str, *args: str, env: dict | None = None) -> None:
    session.run(str(_project(session) / command), *args, env=env, external=True)


@nox.session(venv_backend="none")
def report(session: nox.Session) -> None:
    """Build the report: `nox -s report -- [--model ...] [--data-dir ...] ...`."""
    _run(session, "german-neuron", "report", *session.posargs)


@nox.session(venv_backend="none")
def organism(session: nox.Session) -> None:
    """Train the positive control (CPU, at most 20 minutes):
    `nox -s organism -- --tokenizer PATH/tokenizer.json --data-dir DIR [--steps N ...]`."""
    _run(session, "german-neuron", "organism", *session.posargs)


def _shared_inputs(posargs: list[str]) -> tuple[dict[str, str], list[str]]:
    """`--tokenizer PATH` and `--data-dir DIR` taken out of the session's arguments and
    handed to the tests as GERMAN_NEURON_TOKENIZER / GERMAN_NEURON_DATA_DIR (absolute paths),
    the rest left for pytest. Pytest itself would read `--data-dir ../shared/data` as a test
    path outside the project, pick its root folder from it and miss the project's options."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--tokenizer")
    parser.add_argument("--data-dir")
    known, rest = parser.parse_known_args(posargs)
    env = {}
    if known.tokenizer:
        env["GERMAN_NEURON_TOKENIZER"] = os.path.abspath(known.tokenizer)
    if known.data_dir:
        env["GERMAN_NEURON_DATA_DIR"] = os.path.abspath(known.data_dir)
    return env, rest


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Every test: `-- --tokenizer PATH/tokenizer.json --data-dir DIR [pytest arguments]`
    (the real text and tokenizer, as the report takes them; `-m 'not shared'` deselects the
    tests that need them)."""
    env, rest = _shared_inputs(list(session.posargs))
    # two pytest-xdist workers unless the caller chose (`-n 0`: one process), a test file per
    # worker (`loadfile`: a module's fixture, e.g. the Hub-layout report, is built once;
    # `loadgroup` does not group with pytest 9.2 + xdist 3.8, measured)
    parallel = [] if any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in rest) \
        else ["-n", "2", "--dist", "loadfile", "--no-loadscope-reorder"]
    _run(session, "pytest", "-q", *parallel, *rest, env=env)


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """The engine's benchmark (prints its figures, writes build/bench/bench.json):
    `-- --tokenizer ... --data-dir ...` (or the GERMAN_NEURON_* variables)."""
    _run(session, "german-neuron", "bench", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("-c", "constraints.txt", "ruff")
    session.run("ruff", "check", ".")


@nox.session(venv_backend="none")
def regression(session: nox.Session) -> None:
    """Compare the newest artifacts with a baseline: `-- --model tiny --profile quick`."""
    _run(session, "german-neuron", "regression", *session.posargs)


@nox.session(venv_backend="none")
def baseline(session: nox.Session) -> None:
    """Show (and with `--update` write) a fixture baseline: `-- --model tiny --update`."""
    _run(session, "german-neuron", "baseline", *session.posargs)


@nox.session(venv_backend="none")
def sweep(session: nox.Session) -> None:
    """Training dynamics over checkpoints and model sizes on Dask:
    `-- --models pythia-70m,pythia-160m --revisions quick [--scheduler local|tcp://...|none]`."""
    _run(session, "german-neuron", "sweep", *session.posargs)
