"""The code part of a cache key: the source of every project module a result depends on.

A step's result depends on its own module and on everything that module can execute: the
engine, the runner, data loading, model loading, configuration. Hashing only the step's
module (as this project first did) let a cached artifact survive an edit of the engine
that changed every loss by 1%. So the key covers the **transitive closure of project
imports** of the step's module, read from the import graph:

* The graph is built statically from the source (`ast`), with every `import` and
  `from ... import` anywhere in the module, function-local ones included: a lazy import
  inside a step is as much a dependency as one at the top. This over-approximates (a
  branch never taken still counts), which can only cause a recomputation, never a stale
  number.
* Why the closure and not the whole `analysis` package: an edit of one analysis family
  (say `families/dla.py`) then recomputes only the steps that import it, not all fifteen;
  yet an edit of anything they share (`core/engine.py`) recomputes every step that reaches
  it. The closure is computed, not declared, so it cannot fall out of date.
* Which packages count: for artifacts, `analysis` only. The report builder (`report`),
  the templates and the figure code (`figures`) turn artifacts into pages and pictures;
  they never feed a number back, so editing them recomputes no artifact. Figures have
  their own key (`figure_code_record`): the closure within `figures` of the step module's
  figure imports, so editing one figure module redraws only the figures that use it.
* The run context is a root too. A step module does not import the code that hands it
  its inputs: the `Run` object (`core.runner`) tokenises the examples (`core.models`:
  BOS prepended), loads the corpora (`core.data`), batches and forwards them
  (`core.engine`). Those run inside every step, so every key covers the closure of
  `core.runner` (`RUN_CONTEXT`), and the run is assembled there (`runner.open_run`), not
  in the pipeline, which also builds the report context.
* The model is an input, not code: a step's key holds the loaded model's record
  (`model.info`: the weights' fingerprint, and the plant's or the organism's record),
  whatever code built or found its folder. The code that builds the generated checkpoints
  (`core.models`, and the controls that register theirs with it) is covered by their own
  key (`models.generator_code_sha256`), so an edit of it gives a new folder.
* Parent packages (`analysis/__init__.py`, `analysis/core/__init__.py`) are in the
  closure: importing a module runs them.
* Non-code inputs: every file under `analysis/resources/` (the seed's printed numbers,
  the fixture texts that train the `tiny` tokenizer and make the `fixture` corpus) is
  hashed into every record, since a step may read them. The committed baselines feed
  no artifact (the regression check is recomputed on every run), so they are not hashed.

Third-party code is covered by the library versions in the key (`artifacts.library_versions`).
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT_PACKAGES = ("analysis",)
FIGURE_PACKAGES = ("figures",)
RESOURCES = Path("analysis") / "resources"
# Code that runs inside every step without the step importing it (see the module docstring).
RUN_CONTEXT = ("analysis.core.runner",)


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The source file of project module `name` (`a.b.c` -> `a/b/c.py` or
    `a/b/c/__init__.py`) under `root`, or None when it is not a project module."""
    base = root.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def direct_imports(name: str, root: Path = ROOT) -> set[str]:
    """Project modules that `name` imports anywhere in its source (relative imports
    resolved; `from pkg import sub` counted as `pkg.sub` when `sub` is a module).

    A module that does not parse imports nothing here (it cannot run either); its bytes
    are still hashed by whoever reaches it.

    Raises:
        FileNotFoundError: `name` is not a module under `root`.
    """
    path = module_file(name, root)
    if path is None:
        raise FileNotFoundError(f"no project module {name!r} under {root}")
    out = set()
    for mod in _imported_names(path.read_bytes(), _package_of(name, path)):
        # `import a.b.c` also runs a and a.b: keep every existing prefix.
        parts = mod.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if module_file(prefix, root) is not None:
                out.add(prefix)
    out.discard(name)
    return out


@lru_cache(maxsize=512)
def _imported_names(source: bytes, package: str) -> frozenset[str]:
    """Every dotted name a source imports (relative names resolved against `package`),
    cached by the source bytes themselves, so an edited file is parsed afresh."""
    try:
        tree = ast.parse(source.decode("utf-8", errors="replace"))
    except (SyntaxError, ValueError):
        return frozenset()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base_parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            for alias in node.names:
                found.add(f"{base}.{alias.name}")
    return frozenset(found)


def closure(name: str, packages: Iterable[str] = ARTIFACT_PACKAGES, root: Path = ROOT) -> list[str]:
    """`name` and every project module it reaches through imports, restricted to
    `packages` (top-level names), sorted. The walk does not continue through modules
    outside `packages`.

    Raises:
        FileNotFoundError: `name` is not a module under `root`.
    """
    packages = tuple(packages)

    def inside(mod: str) -> bool:
        return mod.split(".")[0] in packages

    seen: set[str] = set()
    todo = [name]
    # The packages that contain `name` run on import too.
    parts = name.split(".")
    todo += [".".join(parts[:i]) for i in range(1, len(parts))]
    while todo:
        mod = todo.pop()
        if mod in seen or module_file(mod, root) is None:
            continue
        if mod != name and not inside(mod):
            continue
        seen.add(mod)
        todo.extend(direct_imports(mod, root) - seen)
    return sorted(m for m in seen if m == name or inside(m))


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resource_hashes(root: Path = ROOT) -> dict[str, str]:
    """{path relative to root: sha256} of every file under `analysis/resources/`."""
    base = root / RESOURCES
    if not base.is_dir():
        return {}
    return {str(p.relative_to(root)): _sha256_file(p)
            for p in sorted(base.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def _record(name: str, modules: list[str], root: Path, resources: bool) -> dict:
    hashes = {m: _sha256_file(module_file(m, root)) for m in modules}
    res = resource_hashes(root) if resources else {}
    combined = hashlib.sha256(repr((sorted(hashes.items()), sorted(res.items()))).encode()).hexdigest()
    return {"module": name, "sha256": combined, "modules": hashes, "resources": res}


def code_record(name: str, root: Path = ROOT, context: Iterable[str] = RUN_CONTEXT) -> dict:
    """The code identity of an artifact computed by module `name`:
    `{"module": name, "sha256": hash of everything below, "modules": {module: sha256 of its
    source}, "resources": {file: sha256}}` over the closures of `name` and of the run
    context modules within `analysis`. The whole record goes into the cache key and the
    artifact's provenance, so that `german-neuron diff` can name the file that changed a key.

    Raises:
        FileNotFoundError: `name` (or a context module) is not a module under `root`.
    """
    mods = set(closure(name, ARTIFACT_PACKAGES, root))
    for c in context:
        mods.update(closure(c, ARTIFACT_PACKAGES, root))
    return _record(name, sorted(mods), root, resources=True)


def figure_code_record(name: str, root: Path = ROOT) -> dict:
    """The code identity of the figures drawn by module `name` (a family module whose
    `figures` function imports `figures.*`): the `figures` modules reachable from it.
    The artifacts a figure reads carry their own keys, so the analysis code is not
    repeated here.

    Raises:
        FileNotFoundError: `name` is not a module under `root`.
    """
    mods = sorted({m for d in direct_imports(name, root) if d.split(".")[0] in FIGURE_PACKAGES
                   for m in closure(d, FIGURE_PACKAGES, root)})
    return _record(name, mods, root, resources=False)


def changed_modules(a: dict, b: dict) -> list[str]:
    """Names of the modules and resource files whose hash differs between two code
    records (or that are in only one of them), sorted."""
    out = []
    for field in ("modules", "resources"):
        x, y = a.get(field) or {}, b.get(field) or {}
        out += [k for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
    return out
