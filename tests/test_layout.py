"""The layers of `analysis` (issue 19): the machinery (`analysis/core`) at the bottom, the
analyses (`analysis/families`) and the controls (`analysis/controls`) on it, the
orchestration (`analysis/orchestration`: CLI, pipeline, sweep, regression, bench) on top.
An import may only go down. Read from the source (`codehash.direct_imports`: every import
anywhere in a module, function-local ones included), so nothing is run."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from analysis.core import codehash

REPO = Path(__file__).resolve().parent.parent
MACHINERY = "analysis.core"
ABOVE_MACHINERY = ("analysis.families", "analysis.controls", "analysis.orchestration")
ORCHESTRATION = "analysis.orchestration"


def modules(package: str, root: Path = REPO) -> list[str]:
    """Every module of `package` under `root` (`a/b/__init__.py` is `a.b`), sorted."""
    base = root.joinpath(*package.split("."))
    out = []
    for p in sorted(base.rglob("*.py")):
        parts = p.relative_to(root).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def upward_imports(lower: str, upper: tuple[str, ...], root: Path = REPO) -> list[str]:
    """`module -> imported` for every import of a module of `lower` from one of `upper`."""
    return [f"{m} -> {d}" for m in modules(lower, root)
            for d in sorted(codehash.direct_imports(m, root)) if within(d, upper)]


def test_the_machinery_imports_nothing_from_the_layers_above():
    assert modules(MACHINERY)  # the walk found the package
    assert upward_imports(MACHINERY, ABOVE_MACHINERY) == []


def test_the_machinerys_closure_stays_in_the_machinery():
    """Transitively too: through a parent package (`analysis/__init__.py`) nothing above
    is reached either, so a step's run context (`codehash.RUN_CONTEXT`) is machinery only."""
    for m in modules(MACHINERY):
        assert [d for d in codehash.closure(m) if not within(d, (MACHINERY,)) and d != "analysis"] == [], m


@pytest.mark.parametrize("package", ["analysis.families", "analysis.controls"])
def test_the_analyses_and_the_controls_import_nothing_from_the_orchestration(package):
    assert modules(package)
    assert upward_imports(package, (ORCHESTRATION,)) == []


def test_the_check_fails_on_an_upward_import(tmp_path):
    """The check can fail: a copy of the package with one lazy import of the pipeline in
    `core/engine.py`, and one of the sweep in `families/dla.py`, is caught on both counts."""
    shutil.copytree(REPO / "analysis", tmp_path / "analysis",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for rel, line in [("core/engine.py", "from ..orchestration.pipeline import STEPS"),
                      ("families/dla.py", "from ..orchestration.sweep import plan")]:
        with open(tmp_path / "analysis" / rel, "a", encoding="utf-8") as f:
            f.write(f"\n\ndef _upward():\n    {line}\n")
    assert upward_imports(MACHINERY, ABOVE_MACHINERY, tmp_path) == [
        "analysis.core.engine -> analysis.orchestration",
        "analysis.core.engine -> analysis.orchestration.pipeline"]
    assert upward_imports("analysis.families", (ORCHESTRATION,), tmp_path) == [
        "analysis.families.dla -> analysis.orchestration",
        "analysis.families.dla -> analysis.orchestration.sweep",
        "analysis.families.dla -> analysis.orchestration.sweep.plan"]


def test_every_module_that_builds_a_generated_checkpoint_is_in_the_generator_code_hash():
    """`core.models` names the generator modules (`GENERATOR_MODULES`) rather than importing
    the controls: every module that builds or keys a generated checkpoint (calls
    `_materialise`, `generated_key` or `generator_code_sha256`) must be in the union of
    their closures, or an edit of it would not rebuild the model."""
    from analysis.core.models import GENERATOR_MODULES

    covered = set().union(*(codehash.closure(m) for m in GENERATOR_MODULES))
    builders = set()
    for m in modules("analysis"):
        tree = ast.parse(codehash.module_file(m).read_text(encoding="utf-8"))
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        if names & {"_materialise", "generated_key", "generator_code_sha256"}:
            builders.add(m)
    assert {"analysis.core.models", "analysis.controls.planted", "analysis.controls.organism"} <= builders
    assert builders <= covered, sorted(builders - covered)
