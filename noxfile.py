"""Sessions: `report` (wraps `german-neuron report`), `tests`, `lint`.

pip/virtualenv backend on purpose: `torch==2.13.0` resolves to the CPU wheel on machines
that have it on disk, where uv would download a multi-GB CUDA build.
"""

import nox

nox.options.default_venv_backend = "virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

PYTHON = "3.11"


def _install(session: nox.Session) -> None:
    # constraints.txt pins every package to the versions the baselines were made with;
    # a maintainer upgrading a library edits it and reruns the regression checks.
    session.install("-c", "constraints.txt", "-e", ".[test]")


@nox.session(python=PYTHON)
def report(session: nox.Session) -> None:
    """Build the report: `nox -s report -- [--model ...] [--data-dir ...] ...`."""
    _install(session)
    session.run("german-neuron", "report", *session.posargs)


@nox.session(python=PYTHON)
def organism(session: nox.Session) -> None:
    """Train the positive control (CPU, at most 20 minutes):
    `nox -s organism -- --tokenizer PATH/tokenizer.json --data-dir DIR [--steps N ...]`."""
    _install(session)
    session.run("german-neuron", "organism", *session.posargs)


def _shared_inputs(posargs: list[str]) -> tuple[dict[str, str], list[str]]:
    """`--tokenizer PATH` and `--data-dir DIR` taken out of the session's arguments and
    handed to the tests as GERMAN_NEURON_TOKENIZER / GERMAN_NEURON_DATA_DIR (absolute paths),
    the rest left for pytest. Pytest itself would read `--data-dir ../shared/data` as a test
    path outside the project, pick its root folder from it and miss the project's options."""
    import argparse
    import os

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


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Every test: `-- --tokenizer PATH/tokenizer.json --data-dir DIR [pytest arguments]`
    (the real text and tokenizer, as the report takes them; `-m 'not shared'` deselects the
    tests that need them)."""
    _install(session)
    env, rest = _shared_inputs(list(session.posargs))
    session.run("pytest", "-q", *rest, env=env)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The engine's benchmark (prints its figures, writes build/bench/bench.json):
    `-- --tokenizer ... --data-dir ...` (or the GERMAN_NEURON_* variables)."""
    _install(session)
    session.run("german-neuron", "bench", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("-c", "constraints.txt", "ruff")
    session.run("ruff", "check", ".")


@nox.session(python=PYTHON)
def regression(session: nox.Session) -> None:
    """Compare the newest artifacts with a baseline: `-- --model tiny --profile quick`."""
    _install(session)
    session.run("german-neuron", "regression", *session.posargs)


@nox.session(python=PYTHON)
def baseline(session: nox.Session) -> None:
    """Show (and with `--update` write) a fixture baseline: `-- --model tiny --update`."""
    _install(session)
    session.run("german-neuron", "baseline", *session.posargs)


@nox.session(python=PYTHON)
def sweep(session: nox.Session) -> None:
    """Training dynamics over checkpoints and model sizes on Dask:
    `-- --models pythia-70m,pythia-160m --revisions quick [--scheduler local|tcp://...|none]`."""
    _install(session)
    session.run("german-neuron", "sweep", *session.posargs)
