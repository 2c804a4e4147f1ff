"""`german-neuron sweep`: the training-dynamics measurements over many checkpoints and model
sizes, on Dask distributed (or serially), with one cached artifact per (model, revision).

    german-neuron sweep --models pythia-70m,pythia-160m --revisions all|quick|paper|step1000,...
        [--neuron L3N669|auto] [--profile quick|paper] [--set NAME=VALUE]
        [--scheduler local|tcp://HOST:8786|none] [--workers N] [--device cpu|cuda] [--out DIR]

The driver (this module) plans every task (`plan_sweep`): it validates the input (a one-line
`UsageError`, exit 2, before any task runs), resolves what each checkpoint is without
downloading it, and computes every task's cache key (`sweep_task.task_inputs`). Tasks whose
artifact is already in the store are reused; only the missing ones are submitted
(`run_sweep`): a rerun after a crash, a Ctrl-C or with a longer revision list computes only
what is new. A task (`sweep_task.run_task`) runs on a worker: it downloads (or finds) its
checkpoint, measures it with the `dynamics` step's own functions, writes one artifact and
frees the model (and, with `--keep-weights no`, the downloaded weights).

What a Hub checkpoint's key covers (repo, revision, commit): online, the commit is the Hub's
(its list of branches, one request per repository, no download), for every branch, so a
branch re-uploaded since the sweep last looked (Pythia's were: EleutherAI/pythia issues 107,
108, 141) is measured at its new commit and the move (old -> new) is logged and recorded in
`sweep.json` (`refs.moved`, each task's `commit_moved_from`) and in `<out>/refs/`. Offline
(`HF_HUB_OFFLINE=1` or the Hub unreachable) it is the sweep's own record (`<out>/refs/`:
commits learnt from the Hub, and those workers resolved; it survives `--keep-weights no`),
else the driver's Hugging Face cache (`refs/<revision>`), unchecked, and the driver says so
(`HubRefs`). When none knows it the driver's key has `commit: null`: it is provisional. The
worker resolves the revision while downloading it, computes the final key with the commit it
got, records the resolution, and reuses an artifact with that key if the store has one; the
next run of the driver knows the commit from the record. A checkpoint folder's key covers
its weights fingerprint (sha256 of its config, tokenizer and weight files), read on the
driver.

Scheduling (`--scheduler`): `local` starts a `dask.distributed.LocalCluster` of worker
processes sized to the machine (on CPU, workers x torch threads per task <= cores; with
`--device cuda`, one worker per GPU, each pinned to its own device through
`CUDA_VISIBLE_DEVICES`); `tcp://HOST:PORT` attaches to a running scheduler (`scheduler_command` and
`worker_command`: the LocalCluster's settings, from `SCHEDULER_CONFIG`, `WORKER_CONFIG`; or
dask-jobqueue on Slurm with the same), through the same code path;
`none` runs the tasks one after another in this process, without importing Dask. Each Dask
worker runs one task at a time (one model in memory). A worker that dies mid-task leaves no
partial artifact (writes are atomic) and the scheduler reruns its task on another worker;
a task that raises is retried (`RETRIES`).

Outputs under `--out` (default `build/sweep`; `build/sweep-bfloat16`, `-tf32` for the other
precisions, `default_sweep_out`): `store/` (the artifacts), `refs/`, `sweep.json`
(the manifest: every task, its key and status), `table.parquet` and `table.csv` (one row per
model x revision x measure, `TABLE_COLUMNS`), and the report (`report.html`, `report.pdf`,
`figures/`). See docs/ARTIFACTS.md.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..core.errors import ReportError, UsageError
from ..families.dynamics import PYTHIA_TOKENS_PER_STEP

RETRIES = 2                 # reruns of a task that raised (a worker that died is rerun anyway)
ALLOWED_FAILURES = 3        # worker deaths a task may cause before the scheduler gives it up
# Every sweep cluster's Dask settings, in one place: `start_executor` applies them to a
# LocalCluster, `scheduler_command` and `worker_command` print them for one you start (and the
# README shows those commands). A worker holds one model at a time, whose size Dask does not
# know: its default memory thresholds would pause a worker loading a large checkpoint (80%)
# and kill it mid-task (95%), so memory is not managed by Dask (no limit, no spilling: a task's
# data is a spec and a record); the kernel's OOM killer ends a worker that truly runs out, and
# the scheduler reruns its task (up to ALLOWED_FAILURES).
SCHEDULER_CONFIG = {"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}
WORKER_CONFIG = {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False,
                 "distributed.worker.memory.pause": False, "distributed.worker.memory.terminate": False}
WORKER_MEMORY_LIMIT = 0     # `--memory-limit 0`: no limit
CONNECT_TIMEOUT_S = 5       # --scheduler tcp://...: how long to wait for the scheduler to answer
SWEEP_SCHEMA = 1
DEFAULT_THREADS = 1         # torch threads per task unless --threads (part of every task's key)
DEFAULT_OUT = Path("build") / "sweep"  # float32; other precisions: `default_sweep_out`
THRESHOLD_F1 = 0.9          # "the neuron has formed": the context neuron's probe F1 reaches this
TABLE_COLUMNS = ("model", "kind", "source", "size", "n_params", "deduped", "revision", "step",
                 "tokens_seen", "commit", "key", "measure", "language", "neuron", "value",
                 "ci_low", "ci_high")
REVISION_SETS = ("all", "quick", "paper")
_REVISION = re.compile(r"^step(\d+)$")
_TCP = re.compile(r"^tcp://[^\s/:]+:\d{1,5}$")




class Interrupted(ReportError):
    """Ctrl-C: what was computed is stored and recorded; the same command resumes."""

    exit_code = 130


# ------------------------------------------------------------------ what the user asked for


@dataclasses.dataclass
class ModelEntry:
    """One `--models` item, resolved.

    Attributes:
        name: the model's name in the table and figures (`pythia-160m`, `organism`, a
            folder's name).
        kind: `hub` (a Pythia repository), `folder` (a checkpoint folder) or `organism`
            (the saved checkpoints of the latest organism run).
        repo: the Hub repository (`EleutherAI/pythia-160m`) for `hub`.
        checkpoints: `[{"revision", "step", "tokens_seen", "train_loss", "path"?}]` in step
            order (for `hub`, filled by `plan_sweep` from `--revisions`).
        config: the model's `config.json` when it can be read without a download, else None.
        size: the nominal size (`160m`) for Pythia, else None.
        final: the revision of the model's final checkpoint (anchor of `--neuron auto`).
    """

    name: str
    kind: str
    repo: str | None = None
    path: str | None = None
    checkpoints: list = dataclasses.field(default_factory=list)
    config: dict | None = None
    size: str | None = None
    final: str | None = None

    @property
    def deduped(self) -> bool:
        return bool(self.repo and self.repo.endswith("-deduped"))

    @property
    def source(self) -> str:
        return self.repo or self.path or self.name


def parse_models(text: str) -> list[ModelEntry]:
    """`--models`: comma-separated `pythia-<size>[-deduped]` (or `EleutherAI/pythia-...`;
    sizes 14m, 31m, 70m, 160m, 410m, 1b, 1.4b, 2.8b, 6.9b, 12b), `organism`, or checkpoint
    folders (a Hugging Face GPT-NeoX folder; an organism run folder, with `manifest.json`,
    expands to its checkpoints). Duplicates are dropped.

    Raises:
        UsageError: an empty list, a name that is none of these (a misspelt size, a
            non-Pythia repository), a folder that is not a GPT-NeoX checkpoint, or
            `organism` with no trained organism in the cache.
    """
    from ..controls import organism
    from ..core.models import PYTHIA_SIZES, check_checkpoint_dir, pythia_repo

    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not items:
        raise UsageError("--models is empty", hint="e.g. --models pythia-70m,pythia-160m")
    out: list[ModelEntry] = []
    seen: set[str] = set()
    for item in items:
        repo = pythia_repo(item)
        if repo is not None:
            entry = ModelEntry(name=repo.rpartition("/")[2], kind="hub", repo=repo,
                               size=repo.rpartition("pythia-")[2].removesuffix("-deduped"),
                               final="step143000")
        elif item == "organism":
            final = organism.require_final_checkpoint()
            entry = _organism_entry("organism", final)
        elif Path(item).expanduser().is_dir():
            path = Path(item).expanduser().resolve()
            if organism.read_manifest(path) is not None:  # an organism run folder
                m = organism.read_manifest(path)
                entry = _organism_entry(path.name, path / m["final"]["path"])
            else:
                cfg = check_checkpoint_dir(path)
                info = organism.checkpoint_info(path) or {}
                entry = ModelEntry(name=path.name, kind="folder", path=str(path), config=cfg,
                                   final=path.name,
                                   checkpoints=[{"revision": path.name, "step": info.get("step"),
                                                 "tokens_seen": info.get("tokens_seen"),
                                                 "train_loss": info.get("train_loss"), "path": str(path)}])
        elif item.startswith(("EleutherAI/", "pythia")) or "/" not in item:
            raise UsageError(
                f"unknown model {item!r}: expected pythia-<size>[-deduped] with a size among "
                f"{', '.join(PYTHIA_SIZES)}, organism, or a checkpoint folder",
                hint="e.g. --models pythia-70m,pythia-160m-deduped")
        else:
            raise UsageError(f"model {item!r} is neither a Pythia name nor an existing checkpoint folder",
                             hint="a folder needs config.json, model.safetensors and tokenizer.json")
        if entry.source not in seen:
            seen.add(entry.source)
            out.append(entry)
    names = [e.name for e in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise UsageError(f"two models would share the name {sorted(dup)[0]!r} in the table",
                         hint="rename one of the checkpoint folders")
    return out


def _organism_entry(name: str, final: Path) -> ModelEntry:
    from ..controls import organism
    from ..core.models import check_checkpoint_dir

    cfg = check_checkpoint_dir(Path(final))
    cks = [{"revision": f"step{c['step']}", "step": c["step"], "tokens_seen": c["tokens_seen"],
            "train_loss": c["train_loss"], "path": c["path"]} for c in organism.series(final)]
    if not cks:
        raise UsageError(f"the organism run of {final} lists no saved checkpoint")
    return ModelEntry(name=name, kind="organism", path=str(Path(final).parent), config=cfg,
                      checkpoints=cks, final=f"step{organism.checkpoint_info(final)['step']}")


def parse_revisions(text: str) -> str | list[str]:
    """`--revisions`: `all` (Pythia's 154 checkpoints), `quick`, `paper` (the `dynamics`
    step's subsets), or comma-separated `step<N>`. Returns the set's name or the list.

    Raises:
        UsageError: an empty list or an item that is not `step<N>`.
    """
    text = (text or "").strip()
    if text in REVISION_SETS:
        return text
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UsageError("--revisions is empty", hint="all, quick, paper, or e.g. step1000,step2000")
    for it in items:
        if not _REVISION.match(it):
            raise UsageError(f"revision {it!r} is malformed: expected step<N> (e.g. step1000), "
                             f"or one of {', '.join(REVISION_SETS)}")
    return list(dict.fromkeys(items))


def step_of(revision: str) -> int:
    """The training step of a `step<N>` revision."""
    return int(_REVISION.match(revision).group(1))


def pythia_revisions(choice: str | list[str]) -> list[str]:
    """The Hub branches a revision choice names for a Pythia model, in step order.

    Raises:
        UsageError: an explicit `step<N>` that is not one of Pythia's 154 checkpoints.
    """
    from ..core.models import PYTHIA_CHECKPOINTS, PYTHIA_DYNAMICS_REVISIONS

    if choice == "all":
        revs = list(PYTHIA_CHECKPOINTS)
    elif isinstance(choice, str):
        revs = list(PYTHIA_DYNAMICS_REVISIONS[choice])
    else:
        bad = [r for r in choice if r not in PYTHIA_CHECKPOINTS]
        if bad:
            raise UsageError(f"{bad[0]} is not one of Pythia's 154 checkpoints (step0, step1, step2, "
                             "step4 ... step512, then every 1,000 steps to step143000)")
        revs = list(choice)
    return sorted(revs, key=step_of)


def parse_scheduler(text: str) -> tuple[str, str | None]:
    """`--scheduler`: `("local", None)`, `("none", None)` or `("tcp", "tcp://host:port")`.

    Raises:
        UsageError: anything else.
    """
    text = (text or "").strip()
    if text in ("local", "none"):
        return text, None
    if _TCP.match(text):
        return "tcp", text
    raise UsageError(f"--scheduler {text!r}: expected local, none, or tcp://HOST:PORT",
                     hint="e.g. --scheduler tcp://127.0.0.1:8786 for a cluster started with `dask scheduler`")


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def keep_weights_for(entry: ModelEntry, choice: str) -> bool:
    """`--keep-weights yes|no|auto` for one model: auto keeps them below 1B parameters.
    Checkpoint folders are never deleted."""
    from ..core.models import pythia_size_params

    if entry.kind != "hub":
        return True
    if choice == "auto":
        return (pythia_size_params(entry.repo) or 0) < 1e9
    return choice == "yes"


# ------------------------------------------------------------------ the plan


@dataclasses.dataclass
class SweepPlan:
    """Everything `run_sweep` needs: the task specs (plain dicts that cross the scheduler),
    their keys, the models, and the settings recorded in `sweep.json`.

    Attributes:
        tasks: one spec per (model, checkpoint) whose key is known, see
            `sweep_task.task_inputs`; for `--neuron auto` the specs of a model's other
            checkpoints are made once its anchor (final checkpoint) is measured
            (`deferred`).
        deferred: `{model name: [checkpoint dicts]}` waiting for the model's auto neuron.
    """

    out: Path
    models: list[ModelEntry]
    tasks: list[dict]
    deferred: dict[str, list[dict]]
    settings: dict
    base: dict                  # spec fields shared by every task of a model (by name)
    code: dict
    refs: HubRefs | None = None  # the Hub branches' commits, and their moves

    @property
    def n_total(self) -> int:
        return len(self.tasks) + sum(len(v) for v in self.deferred.values())


def default_sweep_out(dtype: str = "float32", tf32: bool = False) -> Path:
    """`build/sweep` for float32, `build/sweep-bfloat16`, `build/sweep-tf32`, ... otherwise
    (`precision.out_suffix`): a bf16 or TF32 sweep never replaces float32's sweep.json and
    table (its artifacts are keyed apart anyway)."""
    from ..core.precision import out_suffix

    return DEFAULT_OUT.with_name(DEFAULT_OUT.name + out_suffix(dtype, tf32))


def check_sweep_precision(out: Path, dtype: str, tf32: bool) -> None:
    """Refuse a sweep into a folder whose `sweep.json` records another precision: its
    sweep.json, table and report would be replaced.

    Raises:
        UsageError: `out/sweep.json` records another `dtype` or `tf32`.
    """
    from ..core.precision import describe

    try:
        settings = json.loads((Path(out) / "sweep.json").read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no earlier sweep there (or an unreadable one, rewritten as before)
    theirs = (settings.get("dtype") or "float32", bool(settings.get("tf32")))
    if theirs != (dtype, bool(tf32)):
        raise UsageError(f"{out} holds a {describe(*theirs)} sweep; a {describe(dtype, tf32)} sweep would "
                         "replace its sweep.json and table",
                         hint=f"pass another --out (this precision's default is {default_sweep_out(dtype, tf32)})")


class HubRefs:
    """The commits of the Hub branches a sweep measures, and what changed since it last
    looked (Pythia's branches have been re-uploaded: EleutherAI/pythia issues 107, 108, 141).

    Offline (`HF_HUB_OFFLINE=1`, or the Hub unreachable) a branch's commit is this sweep's
    record (`<out>/refs/`), else the local Hugging Face cache's `refs/<branch>`, unchecked
    (`unchecked` counts them and the driver says so). Online the Hub's branch list (one
    request per repository) is the truth for every branch: a commit that differs from the
    one recorded or cached is a move, kept in `moved` (`{"repo", "revision", "old", "new",
    "old_from"}`) and in `sweep.json`, and the new commit is measured (its own key); `write`
    records every commit learnt from the Hub under `<out>/refs/`, so that a later offline run
    uses it (a download by commit leaves the cache's `refs/<branch>` where it was).
    """

    def __init__(self, refs_dir: Path, log: Callable[[str], None] = lambda s: None):
        self.refs_dir, self.log = Path(refs_dir), log
        self.checked: dict[str, str] = {}          # repo -> "hub" | "offline" | "unreachable"
        self.moved: list[dict] = []
        self.unchecked: dict[str, int] = {}
        self._branches: dict[str, dict | None] = {}
        self._pending: dict[tuple[str, str], dict] = {}

    def _hub(self, repo: str) -> dict[str, str] | None:
        if repo not in self._branches:
            if _hub_offline():
                self._branches[repo], self.checked[repo] = None, "offline"
            else:
                self._branches[repo] = _hub_branches(repo)
                self.checked[repo] = "hub" if self._branches[repo] is not None else "unreachable"
        return self._branches[repo]

    def resolve(self, repo: str, revisions: list[str]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """({revision: commit}, {revision: why it does not exist}, {revision: the commit it
        moved from}) for branches of `repo`, without downloading anything."""
        from ..core.models import local_commit
        from .sweep_task import recorded_commit

        known, source = {}, {}
        for rev in revisions:
            rec, loc = recorded_commit(self.refs_dir, repo, rev), local_commit(repo, rev)
            if rec or loc:
                known[rev] = rec or loc
                source[rev] = "this sweep's record" if rec else "the local Hugging Face cache"
        branches = self._hub(repo)
        if branches is None:
            n = len(known)
            if n:
                self.unchecked[repo] = self.unchecked.get(repo, 0) + n
                how = "offline" if self.checked[repo] == "offline" else "the Hub did not answer"
                self.log(f"  {repo}: {how}: the commits of {n} branches are those recorded, not checked "
                         "against the Hub")
            return known, {}, {}
        missing, moved_from = {}, {}
        for rev in revisions:
            new = branches.get(rev)
            if new is None:
                if rev not in known:
                    missing[rev] = f"the Hub has no revision {rev}"
                continue  # a branch the Hub dropped: measured as recorded, if it is cached
            old = known.get(rev)
            if old is not None and old != new:
                moved_from[rev] = old
                self.moved.append({"repo": repo, "revision": rev, "old": old, "new": new,
                                   "old_from": source[rev]})
                self.log(f"  {repo} {rev} moved on the Hub: {old[:12]} -> {new[:12]} ({source[rev]} had "
                         f"{old[:12]}); the new commit is measured")
            known[rev] = new
            if recorded_commit(self.refs_dir, repo, rev) != new:
                self._pending[(repo, rev)] = {"repo": repo, "revision": rev, "commit": new,
                                              "moved_from": old if old != new else None}
        return known, missing, moved_from

    def write(self) -> None:
        """Record the commits learnt from the Hub under `<out>/refs/` (with the commit each
        moved from), for later runs (offline ones included)."""
        from ..core.artifacts import atomic_write_text
        from .sweep_task import refs_path

        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for (repo, rev), rec in sorted(self._pending.items()):
            atomic_write_text(refs_path(self.refs_dir, repo, rev),
                              json.dumps({**rec, "checked": stamp, "source": "hub"}, sort_keys=True))
        self._pending.clear()

    def record(self) -> dict:
        """What `sweep.json` says about it: `{"checked": {repo: hub|offline|unreachable},
        "moved": [...], "unchecked": {repo: branches}}`."""
        return {"checked": dict(self.checked), "moved": list(self.moved), "unchecked": dict(self.unchecked)}


def _hub_offline() -> bool:
    """True when the driver should not ask the Hub: `HF_HUB_OFFLINE=1`, or its endpoint
    does not accept a connection within 3 s (so an offline machine without the variable
    does not wait for huggingface_hub's retries)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or not _reachable(constants.ENDPOINT)


@functools.lru_cache(maxsize=4)
def _reachable(endpoint: str) -> bool:
    import socket
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                      timeout=3):
            return True
    except OSError:
        return False


def _hub_branches(repo: str) -> dict[str, str] | None:
    """{branch: commit} of a Hub repository (one request), None when it cannot be asked."""
    try:
        from huggingface_hub import HfApi

        refs = HfApi().list_repo_refs(repo)
        return {b.name: b.target_commit for b in refs.branches}
    except Exception:
        return None


def _hub_config(repo: str, revision: str) -> dict | None:
    """A Pythia model's config.json without its weights: from the cache, else (online) the
    one small file from the Hub; None when neither works."""
    from ..core.models import cached_config

    cfg = cached_config(repo)
    if cfg is not None or _hub_offline():
        return cfg
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(repo, "config.json", revision=revision)).read_text())
    except Exception:
        return None


def plan_sweep(models: str, revisions: str = "quick", *, neuron: str | None = None,
               profile: str = "quick", overrides: Iterable[str] = (), device: str = "cpu",
               out: str | os.PathLike | None = None, data_dir: str | None = None,
               corpus: str | None = None, batch_tokens: int | None = None,
               threads: int | None = None, keep_weights: str = "auto", dtype: str = "float32",
               tf32: str | bool = "off", log: Callable[[str], None] = lambda s: None) -> SweepPlan:
    """Validate the request and plan every task (see the module docstring). Nothing is
    downloaded here but, online, a Pythia model's config.json when it is not cached.

    Raises:
        UsageError: bad `--models`, `--revisions`, `--neuron` (malformed, or outside a
            model whose config.json is known), `--profile`/`--set`, `--corpus`,
            `--keep-weights`, `--batch-tokens`, `--threads`, `--device`, `--dtype` (float32 or
            bfloat16) or `--tf32` (on or off).
        DataError: a data file is missing or has the wrong checksum.
    """
    from ..core.codehash import code_record
    from ..core.config import Neuron, get_profile
    from ..core.data import CORPORA, load_corpus
    from ..core.models import PYTHIA_REPO

    if device not in ("cpu", "cuda") and not re.fullmatch(r"cuda:\d+", device):
        raise UsageError(f"unknown device {device!r}; choose cpu or cuda")
    from ..core.precision import parse_dtype, parse_tf32, precision_note, tf32_effective

    dtype, tf32 = parse_dtype(dtype), parse_tf32(tf32)
    if keep_weights not in ("auto", "yes", "no"):
        raise UsageError(f"--keep-weights {keep_weights!r}: choose auto, yes or no")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads {threads}: must be at least 1")
    # In the key: 1 and 2 torch threads give different bytes (measured on CPU: the probes'
    # coefficients, tests/test_sweep.py), so the default is fixed rather than sized to the
    # machine, and a rerun elsewhere or with another scheduler reuses what it can.
    threads = DEFAULT_THREADS if threads is None else threads
    prof = get_profile(profile).with_overrides(list(overrides))
    if batch_tokens is not None:
        if batch_tokens < 64:
            raise UsageError(f"--batch-tokens {batch_tokens}: must be at least 64")
        prof = dataclasses.replace(prof, batch_tokens=batch_tokens)
    auto = neuron is not None and neuron.strip().lower() == "auto"
    given = None if neuron is None or auto else Neuron.parse(neuron)
    rev_choice = parse_revisions(revisions)
    entries = parse_models(models)
    if corpus is not None and corpus not in CORPORA:
        raise UsageError(f"unknown corpus set {corpus!r}; choose one of: {', '.join(CORPORA)}")
    out = Path(out) if out else default_sweep_out(dtype, tf32)
    check_sweep_precision(out, dtype, tf32)
    refs_dir = out / "refs"
    data_dir = str(Path(data_dir).expanduser().resolve()) if data_dir else None

    hub_refs = HubRefs(refs_dir, log)
    corpora: dict[str, dict] = {}
    base: dict[str, dict] = {}
    tasks: list[dict] = []
    deferred: dict[str, list[dict]] = {}
    code = code_record("analysis.orchestration.sweep_task")
    for e in entries:
        if e.kind == "hub":
            revs = pythia_revisions(rev_choice)
            e.checkpoints = [{"revision": r, "step": step_of(r), "train_loss": None,
                              "tokens_seen": step_of(r) * PYTHIA_TOKENS_PER_STEP} for r in revs]
            e.config = _hub_config(e.repo, revs[-1])
        series = list(e.checkpoints)  # an organism's whole run (the auto anchor is its final)
        if e.kind == "organism" and rev_choice not in REVISION_SETS:
            have = {c["revision"]: c for c in e.checkpoints}
            e.checkpoints = [have[r] for r in rev_choice if r in have]
            for r in rev_choice:
                if r not in have:
                    log(f"  {e.name}: no saved checkpoint {r}; not swept")
            if not e.checkpoints:
                raise UsageError(f"the organism run has none of the checkpoints {', '.join(rev_choice)}",
                                 hint=f"its checkpoints: {', '.join(c['revision'] for c in have.values())}")
        e_neuron = given if given is not None else (
            None if auto or e.repo != PYTHIA_REPO else Neuron.parse("L3N669"))
        if e_neuron is not None and e.config is not None:
            try:
                e_neuron.check(int(e.config["num_hidden_layers"]), int(e.config["intermediate_size"]))
            except UsageError as exc:
                raise UsageError(f"{e.name}: {exc}") from None
        cname = corpus or ("europarl-heldout" if e.kind == "organism" else "seed")
        if cname not in corpora:
            corpora[cname] = {lang: load_corpus(name, data_dir) for lang, name in CORPORA[cname].items()}
        data = {lang: c.provenance() for lang, c in corpora[cname].items()}
        params = {
            "measurement": "analysis.families.dynamics.measure_checkpoint",
            "context_neuron": "auto" if e_neuron is None else str(e_neuron),
            "context_neuron_source": "given" if e_neuron is not None else "auto: this checkpoint's best",
            "activation_examples": prof.activation_examples, "loss_examples": prof.loss_examples,
            "crop": [prof.crop_start, prof.crop_end], "n_per_language": prof.probe_samples,
            "test_size": prof.probe_test_size, "split_seed": prof.seed,
            "batch_tokens": prof.batch_tokens, "threads": threads, "dtype": dtype, "tf32": tf32,
            "ablation": "mean (English mean at that checkpoint, hook_post)",
        }
        base[e.name] = {
            "model": e.name, "kind": "hub" if e.kind == "hub" else "folder", "repo": e.repo,
            "corpus": dict(CORPORA[cname]), "data_dir": data_dir, "data": data, "params": params,
            "seed": prof.seed, "device": device, "upstream": {},
            "profile": {"name": prof.name, "label": prof.label, "overrides": dict(prof.overrides),
                        "sizes": prof.sizes(), "batch_tokens": prof.batch_tokens},
            # relative to the sweep's folder, which a worker may see elsewhere (sweep_task.OUT_ENV)
            "out": str(out.resolve()), "store": "store", "refs": "refs", "threads": threads,
            "keep_weights": keep_weights_for(e, keep_weights),
        }
        cks = list(e.checkpoints)
        known, missing, moved = ({}, {}, {})
        if e.kind == "hub":
            need = [c["revision"] for c in cks]
            if e_neuron is None and e.final not in need:
                need.append(e.final)
            known, missing, moved = hub_refs.resolve(e.repo, need)
        if e_neuron is None:  # --neuron auto: anchor on the model's final checkpoint
            final = next((c for c in cks if c["revision"] == e.final), None)
            if final is None:
                final = next((c for c in series if c["revision"] == e.final), None) or {
                    "revision": e.final, "step": step_of(e.final), "train_loss": None,
                    "tokens_seen": step_of(e.final) * PYTHIA_TOKENS_PER_STEP}
                cks.append(final)
                log(f"  {e.name}: --neuron auto anchors on the final checkpoint {e.final}; added to the sweep")
            tasks.append(_spec(base[e.name], final, known, missing, code, anchor=True, moved=moved))
            deferred[e.name] = [c for c in cks if c is not final]
        else:
            tasks += [_spec(base[e.name], c, known, missing, code, moved=moved) for c in cks]
    settings = {
        "models": [{"name": e.name, "kind": e.kind, "source": e.source, "size": e.size,
                    "deduped": e.deduped, "final": e.final,
                    "shape": None if e.config is None else {
                        k: e.config.get(k) for k in ("num_hidden_layers", "hidden_size", "intermediate_size",
                                                     "num_attention_heads", "vocab_size")},
                    "neuron": base[e.name]["params"]["context_neuron"],
                    "keep_weights": base[e.name]["keep_weights"],
                    "corpus": base[e.name]["corpus"], "data": base[e.name]["data"]} for e in entries],
        "revisions": rev_choice, "profile": base[entries[0].name]["profile"],
        "device": device, "dtype": dtype, "tf32": tf32,
        "tf32_effective": tf32_effective(dtype, tf32, device),
        "precision_note": precision_note(dtype, tf32, device), "threads": threads, "data_dir": data_dir,
    }
    return SweepPlan(out=out, models=entries, tasks=tasks, deferred=deferred, settings=settings,
                     base=base, code=code, refs=hub_refs)


def _spec(base: dict, ck: dict, known: dict, missing: dict, code: dict, anchor: bool = False,
          neuron: str | None = None, upstream: dict | None = None, source: str | None = None,
          moved: dict | None = None) -> dict:
    """A task spec (see `sweep_task.task_inputs`) with its key."""
    from ..core.models import _fingerprint_dir
    from .sweep_task import task_inputs

    spec = {**base, "revision": ck["revision"], "step": ck.get("step"), "tokens_seen": ck.get("tokens_seen"),
            "train_loss": ck.get("train_loss"), "anchor": anchor, "params": dict(base["params"])}
    if neuron is not None:
        spec["params"]["context_neuron"] = neuron
        spec["params"]["context_neuron_source"] = source
        spec["upstream"] = upstream or {}
    if base["kind"] == "hub":
        spec["commit"] = known.get(ck["revision"])
        spec["commit_moved_from"] = (moved or {}).get(ck["revision"])
        if ck["revision"] in missing:
            spec["skip_reason"] = missing[ck["revision"]]
    else:
        spec["path"] = ck["path"]
        spec["fingerprint"] = _fingerprint_dir(Path(ck["path"]))
    spec["key"] = task_inputs(spec, code=code).key()
    return spec


def dependent_specs(plan: SweepPlan, model: str, anchor_art: dict, anchor_spec: dict) -> list[dict]:
    """The specs of a `--neuron auto` model's other checkpoints, once its anchor's artifact
    names the neuron (the best German-positive neuron of discovery at the final
    checkpoint); the anchor's key is their upstream."""
    cks = plan.deferred.pop(model, [])
    if not cks:
        return []
    base = plan.base[model]
    neuron = anchor_art["result"]["context"]["neuron"]
    known, missing, moved = {}, {}, {}
    if base["kind"] == "hub":
        if plan.refs is None:
            plan.refs = HubRefs(plan.out / "refs")
        known, missing, moved = plan.refs.resolve(base["repo"], [c["revision"] for c in cks])
        plan.refs.write()
    src = f"auto: best neuron of discovery at {anchor_spec['revision']}"
    return [_spec(base, c, known, missing, plan.code, neuron=neuron,
                  upstream={"anchor": anchor_art["key"]}, source=src, moved=moved) for c in cks]


# ------------------------------------------------------------------ executors


class SerialExecutor:
    """`--scheduler none`: tasks run one after another in this process (no Dask)."""

    description = "serial (this process, no Dask)"
    dashboard = None

    def __init__(self):
        self._queue: list[dict] = []

    def submit(self, spec: dict) -> None:
        self._queue.append(spec)

    def pending(self) -> int:
        return len(self._queue)

    def next_done(self) -> tuple[dict, dict | BaseException]:
        from .sweep_task import run_task

        spec = self._queue.pop(0)
        try:
            return spec, run_task(spec)
        except Exception as exc:  # what Dask would retry: recorded as failed here
            return spec, exc

    def cancel(self) -> None:
        self._queue.clear()

    def close(self) -> None:
        pass


class DaskExecutor:
    """Tasks as Dask futures on a `LocalCluster` started here or a scheduler at `address`;
    only the spec (plain data) is sent, only the task's record comes back."""

    def __init__(self, client, cluster=None, description: str = ""):
        from distributed import as_completed

        self.client, self.cluster, self.description = client, cluster, description
        self._pending: dict[str, tuple] = {}
        self._ac = as_completed([], with_results=False)
        try:
            self.dashboard = client.dashboard_link if _has_dashboard(client) else None
        except Exception:
            self.dashboard = None
        if self.dashboard and not _bokeh():
            self.dashboard += " (its pages need bokeh: pip install bokeh)"

    def submit(self, spec: dict) -> None:
        key = f"checkpoint-{spec['model']}-{spec['revision']}-{spec['key'][:12]}"
        fut = self.client.submit(_run_task_remote, spec, key=key, pure=False, retries=RETRIES)
        self._pending[fut.key] = (fut, spec)
        self._ac.add(fut)

    def pending(self) -> int:
        return len(self._pending)

    def next_done(self) -> tuple[dict, dict | BaseException]:
        fut = next(self._ac)
        _, spec = self._pending.pop(fut.key)
        try:
            return spec, fut.result()
        except Exception as exc:  # retries used up, or KilledWorker
            return spec, exc
        finally:
            fut.release()

    def cancel(self) -> None:
        try:
            self.client.cancel([f for f, _ in self._pending.values()])
        except Exception:
            pass
        self._pending.clear()

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def _run_task_remote(spec: dict) -> dict:
    from .sweep_task import run_task

    return run_task(spec)


def _has_dashboard(client) -> bool:
    """Whether the scheduler serves a dashboard (it needs bokeh on the scheduler)."""
    info = client.scheduler_info()
    return bool((info.get("services") or {}).get("dashboard"))


def local_sizing(device: str, workers: int | None, threads: int | None, n_tasks: int) -> tuple[int, int]:
    """(workers, torch threads per task) of a LocalCluster on this machine.

    CPU: `workers` (default: as many as tasks, at most the cores over `threads`) x threads
    (default: the cores over the workers) <= cores. CUDA: one worker per GPU (`workers` at
    most that), each task with `threads` (default the cores over the workers). A sweep plan
    always gives `threads` (it is in the task keys).

    Raises:
        UsageError: `--workers` below 1; `--device cuda` without a GPU; more workers than GPUs.
    """
    cores = available_cores()
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: must be at least 1")
    if device.startswith("cuda"):
        import torch

        n_gpu = torch.cuda.device_count()
        if n_gpu == 0:
            raise UsageError("--device cuda was given but no CUDA device is available")
        if workers is not None and workers > n_gpu:
            raise UsageError(f"--workers {workers}: only {n_gpu} GPUs; one worker per GPU")
        n = workers or n_gpu
        return n, threads or max(1, cores // n)
    n = workers or max(1, min(cores // (threads or 1), n_tasks))
    t = threads or max(1, cores // n)
    if n * t > cores:
        raise UsageError(f"--workers {n} x --threads {t} = {n * t} exceeds the {cores} cores here",
                         hint="fewer workers or threads (workers x threads <= cores)")
    return n, t


def start_executor(scheduler: str, device: str, workers: int | None, threads: int | None,
                   n_tasks: int, log: Callable[[str], None]):
    """The executor of `--scheduler` (see the module docstring) and the torch threads per
    task it implies (None: decided on each worker).

    Raises:
        UsageError: a malformed `--scheduler`; a scheduler that does not answer within
            `CONNECT_TIMEOUT_S`; see `local_sizing`.
    """
    kind, address = parse_scheduler(scheduler)
    if kind == "none":
        return SerialExecutor(), threads or available_cores()
    import logging

    import dask
    from distributed import Client

    dask.config.set({**SCHEDULER_CONFIG, **WORKER_CONFIG})
    if kind == "tcp":
        try:
            client = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError) as exc:
            raise UsageError(f"no Dask scheduler answers at {address} ({type(exc).__name__})",
                             hint=f"start one (`{scheduler_command(int(address.rpartition(':')[2]))}`, "
                                  f"then per machine or GPU `{worker_command(address)}`), or use "
                                  "--scheduler local") from None
        n_workers = len(client.scheduler_info().get("workers", {}))
        if n_workers == 0:
            log(f"  the scheduler at {address} has no workers yet; tasks wait for them")
        log(f"  a worker for this sweep: {worker_command(address)}")
        return DaskExecutor(client, None, f"Dask scheduler {address} ({n_workers} workers)"), threads
    n, t = local_sizing(device, workers, threads, n_tasks)
    dash = ":8787"  # Dask's default; another free port when it is taken
    if device.startswith("cuda"):
        # One worker per GPU, each seeing only its own device (untested here: no GPU).
        from distributed import Nanny, Scheduler, SpecCluster

        specs = {f"gpu{i}": {"cls": Nanny, "options": {"nthreads": 1, "memory_limit": WORKER_MEMORY_LIMIT,
                                                       "env": {"CUDA_VISIBLE_DEVICES": str(i)}}}
                 for i in range(n)}
        cluster = SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": {"dashboard_address": dash}},
                              silence_logs=logging.ERROR)
        desc = f"LocalCluster: {n} workers, one per GPU, {t} threads per task"
    else:
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, memory_limit=WORKER_MEMORY_LIMIT,
                               dashboard_address=dash, silence_logs=logging.ERROR)
        desc = f"LocalCluster: {n} workers x 1 task, {t} torch threads per task"
    client = Client(cluster)
    return DaskExecutor(client, cluster, desc), t


def dask_env(config: dict) -> dict[str, str]:
    """The environment variables that give a Dask process `config` (`{"distributed.worker.
    memory.pause": False}` -> `{"DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "False"}`; Dask
    reads them at import, `dask.config.collect_env`)."""
    return {"DASK_" + k.upper().replace(".", "__").replace("-", "_"): repr(v) for k, v in config.items()}


def _with_env(config: dict, command: str) -> str:
    import shlex

    return " ".join(f"{k}={shlex.quote(v)}" for k, v in dask_env(config).items()) + " " + command


def scheduler_command(port: int = 8786) -> str:
    """The shell command that starts a scheduler for `--scheduler tcp://HOST:PORT` with the
    settings a LocalCluster gets (`SCHEDULER_CONFIG`)."""
    return _with_env(SCHEDULER_CONFIG, f"dask scheduler --port {port}")


def worker_command(address: str = "tcp://HOST:8786") -> str:
    """The shell command that starts one sweep worker for the scheduler at `address` with
    the settings of a LocalCluster's workers: one task at a time, `WORKER_MEMORY_LIMIT`,
    `WORKER_CONFIG`. Run it where the sweep's folder and data are visible (set
    `GERMAN_NEURON_SWEEP_OUT` too when the folder is mounted elsewhere than on the driver)."""
    return _with_env(WORKER_CONFIG, f"dask worker {address} --nworkers 1 --nthreads 1 "
                                    f"--memory-limit {WORKER_MEMORY_LIMIT}")


def _bokeh() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------ progress


class SweepProgress:
    """One progress line on the driver: tasks done / total, reused, failed, skipped,
    tokens/s and ETA (rich, on a terminal); otherwise one log line per finished task.
    `records`: the tasks already settled (reused, skipped) before any ran."""

    def __init__(self, total: int, log: Callable[[str], None], live: bool, records: list[dict] = ()):
        self.total, self.log, self._live = total, log, None
        self.counts = {"computed": 0, "reused": 0, "failed": 0, "skipped": 0}
        for r in records:
            self.counts[r["status"]] += 1
        self.tokens, self.t0, self.ran = 0.0, time.perf_counter(), 0
        if live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn

            self._live = Progress(TextColumn("sweep"), BarColumn(), TextColumn("{task.fields[text]}"),
                                  console=Console(stderr=True), transient=False)
            self._live.start()
            self._task = self._live.add_task("sweep", total=total, completed=self.done(), text=self.text())

    def done(self) -> int:
        return sum(self.counts.values())

    def text(self, eta: bool = True) -> str:
        """`7/14 tasks, 3 reused, 0 failed, 1 skipped, 1,234 tokens/s, ETA 2.0 min`."""
        el = time.perf_counter() - self.t0
        rate = self.tokens / el if el > 0 else 0.0
        c = self.counts
        txt = (f"{self.done()}/{self.total} tasks, {c['reused']} reused, {c['failed']} failed, "
               f"{c['skipped']} skipped, {rate:,.0f} tokens/s")
        if eta:
            left = self.total - self.done()
            t = el / self.ran * left if self.ran else None
            txt += ", ETA " + ("?" if t is None else (f"{t:.0f} s" if t < 120 else f"{t / 60:.1f} min"))
        return txt

    def update(self, spec: dict, rec: dict, ran: bool = True) -> None:
        st = rec["status"]
        self.counts[st] += 1
        self.ran += ran
        if st == "computed":
            self.tokens += rec.get("tokens_forwarded") or 0
        what = f"{spec['model']} {spec['revision']}: {st}"
        if st == "computed":
            what += f" in {rec.get('wall_s') or 0:.1f} s"
        elif rec.get("reason"):
            what += f" ({rec['reason']})"
        if self._live is not None:
            self._live.update(self._task, completed=self.done(), text=self.text())
            if st in ("failed", "skipped"):
                self._live.console.print(f"  {what}")
        else:
            self.log(f"  [{self.done()}/{self.total}] {what}")

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self._task, completed=self.done(), text=self.text(eta=False))
            self._live.stop()
        self.log(f"  done: {self.text(eta=False)}, {time.perf_counter() - self.t0:.1f} s")


# ------------------------------------------------------------------ running


def _record(spec: dict, rec: dict) -> dict:
    """A task's entry in `sweep.json`."""
    keys = ("model", "kind", "repo", "path", "revision", "step", "tokens_seen", "train_loss", "anchor")
    out = {k: spec.get(k) for k in keys}
    out.update({"key": rec.get("key", spec["key"]), "planned_key": spec["key"], "status": rec["status"],
                "reason": rec.get("reason"), "commit": rec.get("commit", spec.get("commit")),
                "commit_moved_from": spec.get("commit_moved_from"),
                "context_neuron": spec["params"]["context_neuron"],
                "wall_s": rec.get("wall_s"), "worker": rec.get("worker")})
    return out


def run_sweep(plan: SweepPlan, scheduler: str = "local", workers: int | None = None,
              log: Callable[[str], None] | None = None, live: bool | None = None,
              command: str = "") -> dict:
    """Run the planned sweep: reuse what the store has, compute the rest on the chosen
    executor (started only when something is left to compute), then write `sweep.json` and
    the table (`write_table`).

    Returns `{"out", "tasks": [entries of sweep.json], "counts": {status: n}, "wall_s",
    "executor", "dashboard", "table": {...paths}}`.

    Raises:
        UsageError: see `start_executor` (before any task runs).
        ReportError: another sweep holds the output folder; interrupted (Ctrl-C): what was
            done is kept and recorded, a rerun resumes.
    """
    from filelock import FileLock, Timeout

    log = log or (lambda s: print(s, file=sys.stderr))
    live = sys.stderr.isatty() if live is None else live
    t0 = time.perf_counter()
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ReportError(f"another sweep is writing to {out} (lock {out / '.lock'})",
                          hint="wait for it to finish, or pass a different --out") from None
    records: list[dict] = []
    executor = None
    try:
        _remove_stale_temporaries(out / "store")
        if plan.refs is not None:
            plan.refs.write()
        todo = _triage(plan, list(plan.tasks), records, log)
        n_reused = sum(r["status"] == "reused" for r in records)
        n_waiting = sum(len(v) for v in plan.deferred.values())
        log(f"Sweep: {len(records) + len(todo) + n_waiting} tasks over {len(plan.models)} model(s); "
            f"{n_reused} reused from {out / 'store'}, {len(todo)} to compute"
            + (f" (+{n_waiting} once their auto neuron is known)" if n_waiting else ""))
        if todo:
            executor, threads = start_executor(scheduler, plan.settings["device"], workers,
                                               plan.settings["threads"], len(todo) + n_waiting, log)
            log(f"  {executor.description}" + (f"; dashboard {executor.dashboard}" if executor.dashboard else ""))
            for b in plan.base.values():
                b["threads"] = b.get("threads") or threads
            progress = SweepProgress(len(records) + len(todo) + n_waiting, log, live, records)
            # anchors first: the checkpoints waiting on their auto neuron are released sooner
            for spec in sorted(todo, key=lambda t: not t.get("anchor")):
                spec["threads"] = spec.get("threads") or threads
                executor.submit(spec)
            while executor.pending():
                spec, res = executor.next_done()
                rec = verify_artifact(plan, spec, res) if isinstance(res, dict) else {
                    "status": "failed", "reason": f"{type(res).__name__}: {(str(res).splitlines() or [''])[0][:300]}"}
                records.append(_record(spec, rec))
                progress.update(spec, rec)
                if spec.get("anchor") and spec["model"] in plan.deferred:
                    n0 = len(records)
                    for new in _triage(plan, _anchor_done(plan, spec, rec, records, log), records, log):
                        new["threads"] = new.get("threads") or threads
                        executor.submit(new)
                    for r in records[n0:]:  # reused or skipped without running
                        progress.update(r, r, ran=False)
            progress.close()
        for name in list(plan.deferred):  # anchors that were never measured
            _skip_deferred(plan, name, "its --neuron auto anchor was not measured", records)
    except KeyboardInterrupt:
        if executor is not None:
            executor.cancel()
        _finish(plan, records, out, t0, executor, command, interrupted=True)
        raise Interrupted(f"interrupted: {sum(r['status'] in ('computed', 'reused') for r in records)} "
                          "tasks are stored; rerun the same command to resume") from None
    finally:
        if executor is not None:
            executor.close()
        lock.release()
    return _finish(plan, records, out, t0, executor, command)


def verify_artifact(plan: SweepPlan, spec: dict, rec: dict) -> dict:
    """A worker's record, checked: a task it reports `computed` or `reused` whose artifact is
    not (valid) in the driver's store is `failed`, with a one-line cause naming where the
    worker wrote it (a worker that sees another folder than the driver's)."""
    from .sweep_task import OUT_ENV, load_artifact

    if rec.get("status") not in ("computed", "reused"):
        return rec
    key = rec.get("key") or spec["key"]
    if load_artifact(plan.out / spec["store"], key) is not None:
        return rec
    rel = rec.get("artifact") or f"{spec['store']}/{key[:2]}/{key}/checkpoint.json"
    return {**rec, "status": "failed",
            "reason": f"worker {rec.get('worker')} reported it {rec['status']} but {rel} is not in "
                      f"{plan.out} (the worker wrote {rec.get('wrote')}): every worker must see the "
                      f"sweep's folder (set {OUT_ENV} on a worker that mounts it elsewhere)"}


def _triage(plan: SweepPlan, specs: list[dict], records: list[dict], log) -> list[dict]:
    """Record the specs that need no run (skipped: known not to exist; reused: their
    artifact is in the store, and a reused anchor releases its model's other checkpoints,
    triaged in turn); return the rest, to compute."""
    from .sweep_task import load_artifact

    todo, queue = [], list(specs)
    while queue:
        spec = queue.pop(0)
        if spec.get("skip_reason"):
            records.append(_record(spec, {"status": "skipped", "reason": spec["skip_reason"]}))
        elif load_artifact(plan.out / spec["store"], spec["key"]) is not None:
            rec = {"status": "reused", "key": spec["key"]}
            records.append(_record(spec, rec))
            if spec.get("anchor") and spec["model"] in plan.deferred:
                queue += _anchor_done(plan, spec, rec, records, log)
        else:
            todo.append(spec)
    return todo


def _anchor_done(plan: SweepPlan, spec: dict, rec: dict, records: list[dict], log) -> list[dict]:
    """A `--neuron auto` anchor finished: the specs of its model's other checkpoints (with
    the neuron it discovered), or, if it was not measured, those checkpoints skipped."""
    from .sweep_task import load_artifact

    art = load_artifact(plan.out / spec["store"], rec.get("key") or spec["key"]) \
        if rec["status"] in ("computed", "reused") else None
    if art is None:
        _skip_deferred(plan, spec["model"], f"--neuron auto: its anchor {spec['revision']} was "
                                            f"{rec['status']} ({rec.get('reason')})", records)
        return []
    deps = dependent_specs(plan, spec["model"], art, spec)
    log(f"  {spec['model']}: --neuron auto is {art['result']['context']['neuron']} "
        f"(discovered at {spec['revision']}); {len(deps)} more checkpoints")
    return deps


def _skip_deferred(plan: SweepPlan, model: str, reason: str, records: list[dict]) -> None:
    base = plan.base[model]
    for c in plan.deferred.pop(model, []):
        records.append(_record({**base, **c, "key": None, "anchor": False},
                               {"status": "skipped", "reason": reason}))


def _remove_stale_temporaries(store: Path, older_than_s: float = 3600) -> None:
    """Temporary files of writes that never finished (a killed worker), older than an hour
    (a live worker may be writing a newer one)."""
    if not store.is_dir():
        return
    now = time.time()
    for p in store.glob("*/*/.*.tmp"):
        try:
            if now - p.stat().st_mtime > older_than_s:
                p.unlink()
        except OSError:
            pass


def _finish(plan: SweepPlan, records: list[dict], out: Path, t0: float, executor, command: str,
            interrupted: bool = False) -> dict:
    from ..core.artifacts import atomic_write_text, library_versions

    order = {e.name: i for i, e in enumerate(plan.models)}
    records.sort(key=lambda r: (order.get(r["model"], 0), r["step"] if r["step"] is not None else -1,
                                r["revision"]))
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    manifest = {
        "schema": SWEEP_SCHEMA, "kind": "german-neuron sweep", "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "interrupted": interrupted, "executor": getattr(executor, "description", None) or "nothing to compute",
        "settings": plan.settings, "code": {"module": plan.code["module"], "sha256": plan.code["sha256"]},
        "libraries": library_versions(), "counts": counts, "wall_time_s": round(time.perf_counter() - t0, 2),
        "refs": plan.refs.record() if plan.refs is not None else None,
        "tasks": records,
    }
    atomic_write_text(out / "sweep.json", json.dumps(manifest, indent=1, sort_keys=True, default=str))
    table = write_table(out, manifest)
    return {"out": out, "tasks": records, "counts": counts, "wall_s": manifest["wall_time_s"],
            "executor": manifest["executor"], "dashboard": getattr(executor, "dashboard", None),
            "table": table, "manifest": manifest}


# ------------------------------------------------------------------ the table


def table_rows(task: dict, art: dict, model: dict) -> list[dict]:
    """The tidy rows of one measured checkpoint (see `TABLE_COLUMNS` and docs/ARTIFACTS.md):
    `loss` (nats), `context_f1`, `context_test_acc`, `context_english_mean` (the ablation
    value), `context_ablation_pct` (loss increase in %, with its 95% interval), `best_f1`,
    `best_test_acc`, `best_ablation_pct` (`neuron`: the best German-positive neuron at
    that checkpoint), and `train_loss` (organism checkpoints)."""
    res = art["result"]
    base = {"model": task["model"], "kind": model["kind"], "source": model["source"], "size": model["size"],
            "n_params": res["model"]["n_params"], "deduped": model["deduped"], "revision": task["revision"],
            "step": task["step"], "tokens_seen": task["tokens_seen"], "commit": res["model"].get("commit"),
            "key": art["key"]}
    rows = []

    def add(measure, value, language=None, neuron=None, ci=None):
        rows.append({**base, "measure": measure, "language": language, "neuron": neuron,
                     "value": None if value is None else float(value),
                     "ci_low": None if not ci else float(ci[0]), "ci_high": None if not ci else float(ci[1])})

    for lang in ("german", "english"):
        add("loss", res["loss"][lang], lang)
    ctx = res["context"]
    add("context_f1", ctx["f1"], neuron=ctx["neuron"])
    add("context_test_acc", ctx["test_acc"], neuron=ctx["neuron"])
    add("context_english_mean", ctx["value"], neuron=ctx["neuron"])
    for lang in ("german", "english"):
        add("context_ablation_pct", ctx[lang]["percent_increase"], lang, ctx["neuron"],
            ctx[lang].get("percent_increase_ci"))
    best = res.get("best")
    if best:
        add("best_f1", best["f1"], neuron=best["neuron"])
        add("best_test_acc", best["test_acc"], neuron=best["neuron"])
        for lang in ("german", "english"):
            add("best_ablation_pct", best[lang]["percent_increase"], lang, best["neuron"],
                best[lang].get("percent_increase_ci"))
    if task.get("train_loss") is not None:
        add("train_loss", task["train_loss"])
    return rows


def build_table(out: str | os.PathLike, manifest: dict | None = None):
    """The sweep's tidy table (pandas DataFrame, `TABLE_COLUMNS`) from `sweep.json` and the
    artifacts of its computed and reused tasks, rows in model order (as given), then step,
    then measure.

    Raises:
        ReportError: a task `sweep.json` lists as computed or reused has no valid artifact
            in `out/store` (a row is never dropped without a word).
    """
    import pandas as pd

    from .sweep_task import load_artifact

    out = Path(out)
    manifest = manifest or json.loads((out / "sweep.json").read_text())
    models = {m["name"]: m for m in manifest["settings"]["models"]}
    store = out / "store"
    rows = []
    for t in manifest["tasks"]:
        if t["status"] not in ("computed", "reused"):
            continue
        art = load_artifact(store, t["key"])
        if art is None:
            raise ReportError(f"{out / 'sweep.json'} lists {t['model']} {t['revision']} as {t['status']} but "
                              f"its artifact {t['key'][:12]} is not (valid) in {store}",
                              hint="rerun the sweep: it recomputes what its store lacks")
        rows += table_rows(t, art, models[t["model"]])
    df = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    for col in ("step", "tokens_seen", "n_params"):
        df[col] = df[col].astype("Int64")
    for col in ("value", "ci_low", "ci_high"):
        df[col] = df[col].astype("float64")
    df["deduped"] = df["deduped"].astype("bool")
    return df


def write_table(out: Path, manifest: dict) -> dict:
    """Write `table.parquet` and `table.csv` atomically; returns their paths and row count."""
    import io

    from ..core.artifacts import atomic_write_bytes, atomic_write_text

    df = build_table(out, manifest)
    buf = io.BytesIO()
    df.to_parquet(buf, index=False, engine="pyarrow")
    atomic_write_bytes(out / "table.parquet", buf.getvalue())
    atomic_write_text(out / "table.csv", df.to_csv(index=False))
    return {"parquet": out / "table.parquet", "csv": out / "table.csv", "rows": len(df)}


# ------------------------------------------------------------------ the report


def first_reaching(table, threshold: float = THRESHOLD_F1) -> dict[str, dict | None]:
    """{model: {"step", "tokens_seen", "revision", "f1"}} of the first checkpoint (in step
    order) whose context neuron's probe F1 is at least `threshold`; None where none is."""
    out = {}
    import pandas as pd

    f1 = table[(table["measure"] == "context_f1") & table["step"].notna()].sort_values("step")
    for model, g in f1.groupby("model", sort=False):
        hit = g[g["value"] >= threshold]
        if hit.empty:
            out[model] = None
            continue
        h = hit.iloc[0]
        out[model] = {"step": int(h["step"]), "revision": h["revision"], "f1": float(h["value"]),
                      "tokens_seen": None if pd.isna(h["tokens_seen"]) else int(h["tokens_seen"])}
    return out


def sweep_summary(out: str | os.PathLike) -> dict:
    """What the report says about a sweep: settings, counts, skipped and failed tasks, and
    per model its checkpoints, the first checkpoint where the context neuron's F1 reaches
    `THRESHOLD_F1`, and its numbers at the last checkpoint.

    Raises:
        UsageError: `out` holds no sweep (no sweep.json or table.parquet).
    """
    import hashlib

    import pandas as pd

    out = Path(out)
    if not (out / "sweep.json").is_file() or not (out / "table.parquet").is_file():
        raise UsageError(f"{out} holds no sweep (sweep.json and table.parquet)",
                         hint="run german-neuron sweep --out DIR first")
    manifest = json.loads((out / "sweep.json").read_text())
    table = pd.read_parquet(out / "table.parquet")
    first = first_reaching(table)
    models = []
    for m in manifest["settings"]["models"]:
        t = table[table["model"] == m["name"]]
        if t.empty:
            models.append({**m, "n_checkpoints": 0, "first": None, "last": None})
            continue
        order = t["step"].fillna(-1)  # a folder without a step counts as one checkpoint
        last = t[order == order.max()]
        last_step = None if pd.isna(last["step"].iloc[0]) else int(last["step"].iloc[0])

        def val(measure, language=None, frame=last):
            r = frame[(frame["measure"] == measure) & ((frame["language"] == language) if language
                                                       else frame["language"].isna())]
            return None if r.empty else (float(r.iloc[0]["value"]), r.iloc[0]["neuron"])

        ctx_f1 = val("context_f1")
        best = val("best_f1")
        models.append({**m, "n_checkpoints": int(t["revision"].nunique()),
                       "n_params": int(t["n_params"].iloc[0]),
                       "steps": [int(s) for s in sorted(t["step"].dropna().unique())],
                       "context_neuron": ctx_f1[1], "first": first.get(m["name"]),
                       "last": {"step": last_step, "revision": last.iloc[0]["revision"],
                                "context_f1": ctx_f1[0],
                                "ablation_german": val("context_ablation_pct", "german")[0],
                                "ablation_english": val("context_ablation_pct", "english")[0],
                                "loss_german": val("loss", "german")[0], "loss_english": val("loss", "english")[0],
                                "best_neuron": best[1] if best else None, "best_f1": best[0] if best else None}})
    digest = hashlib.sha256((out / "table.parquet").read_bytes()).hexdigest()
    return {"dir": str(out.resolve()), "table": str((out / "table.parquet").resolve()),
            "table_csv": str((out / "table.csv").resolve()), "table_sha256": digest,
            "n_rows": int(len(table)), "threshold": THRESHOLD_F1, "models": models,
            "counts": manifest["counts"], "settings": manifest["settings"], "command": manifest["command"],
            "created": manifest["created"], "executor": manifest["executor"],
            "code": manifest["code"], "libraries": manifest["libraries"],
            "skipped": [t for t in manifest["tasks"] if t["status"] == "skipped"],
            "skipped_groups": _groups([t for t in manifest["tasks"] if t["status"] == "skipped"]),
            "failed": [t for t in manifest["tasks"] if t["status"] == "failed"],
            "tasks": [t for t in manifest["tasks"] if t["status"] in ("computed", "reused")]}


def _groups(tasks: list[dict]) -> list[dict]:
    """Tasks grouped by (model, reason), in order: `[{"model", "reason", "revisions"}]`."""
    out: dict[tuple, dict] = {}
    for t in tasks:
        g = out.setdefault((t["model"], t["reason"]), {"model": t["model"], "reason": t["reason"], "revisions": []})
        g["revisions"].append(t["revision"])
    return list(out.values())


def draw_sweep_figures(out: str | os.PathLike, fig_dir: Path) -> list[dict]:
    """One figure per measure (`figures.sweep.MEASURES`), one line per model, from the
    sweep's table; saved with `figures.plots.save` into `fig_dir`. Each record's
    `artifact_key` is the sha256 of the table it was drawn from."""
    import hashlib

    import pandas as pd

    import figures.plots as plots
    import figures.sweep as figs

    table = pd.read_parquet(Path(out) / "table.parquet")
    if table.empty:
        return []
    digest = hashlib.sha256((Path(out) / "table.parquet").read_bytes()).hexdigest()
    marks = {m: (None if v is None else v["step"]) for m, v in first_reaching(table).items()}
    records = []
    for spec in figs.MEASURES:
        fig = figs.measure_figure(table, spec, marks)
        if fig is None:
            continue
        records.append(plots.save(fig, fig_dir, spec["name"], {
            "step": "sweep", "artifact_key": digest, "function": "figures.sweep.measure_figure",
            "caption": spec["caption"] + f" Dotted lines: the first checkpoint where the context neuron's "
                                          f"probe F1 reaches {THRESHOLD_F1}.",
            "seed_cell": None, "table": str(Path(out).resolve() / "table.parquet")}))
    return records


def build_sweep_report(sweep_dir: str | os.PathLike, renderer: str = "auto",
                       log: Callable[[str], None] | None = None) -> dict:
    """`german-neuron report --sweep DIR`: the report of a sweep (its setup, one figure per
    measure with one line per model, the per-checkpoint table, skipped and failed tasks),
    written into DIR as `report.html`, `report.pdf`, `report.ipynb`.

    Raises:
        UsageError: DIR holds no sweep.
        ReportError: the report cannot be built.
    """
    from report.build import SWEEP_SECTIONS, build_report

    log = log or (lambda s: print(s, file=sys.stderr))
    out = Path(sweep_dir)
    summary = sweep_summary(out)
    figs = draw_sweep_figures(out, out / "figures")
    names = ", ".join(m["name"] for m in summary["models"])
    context: dict[str, Any] = {
        "title": f"Training dynamics of the German context neuron: {names}",
        "run": {"created": summary["created"], "command": summary["command"], "neuron": None},
        "artifacts": {}, "figures": figs, "seed": None, "sweep": summary,
    }
    log("Rendering the sweep report ...")
    return build_report(out, context, renderer=renderer, sections=SWEEP_SECTIONS)
