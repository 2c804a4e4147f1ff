"""What a sweep is asked for: `--models` (Pythia names, `organism`, checkpoint folders),
`--revisions`, `--scheduler` and `--keep-weights`, parsed and checked before anything runs
(a one-line `UsageError`)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from ...core.errors import UsageError

REVISION_SETS = ("all", "quick", "paper")
_REVISION = re.compile(r"^step(\d+)$")
_TCP = re.compile(r"^tcp://[^\s/:]+:\d{1,5}$")


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
        pythia: the registry's record of a Pythia model (`pythia.PythiaModel.record`:
            suite, deduped, PolyPythias variation and seed), else None.
    """

    name: str
    kind: str
    repo: str | None = None
    path: str | None = None
    checkpoints: list = dataclasses.field(default_factory=list)
    config: dict | None = None
    size: str | None = None
    final: str | None = None
    pythia: dict | None = None

    @property
    def deduped(self) -> bool:
        return bool(self.repo and self.repo.endswith("-deduped"))

    @property
    def source(self) -> str:
        return self.repo or self.path or self.name


def parse_models(text: str) -> list[ModelEntry]:
    """`--models`: comma-separated Pythia names (the registry's, `pythia.ACCEPTED_FORMS`,
    the same as `report --model` takes: `pythia-<size>[-deduped]`, sizes 14m, 31m, 70m,
    160m, 410m, 1b, 1.4b, 2.8b, 6.9b, 12b; PolyPythias `pythia-<size>-seed<1-9>`; each also
    as `EleutherAI/...`), `organism`, or checkpoint folders (a Hugging Face GPT-NeoX folder;
    an organism run folder, with `manifest.json`, expands to its checkpoints). Duplicates
    are dropped.

    Raises:
        UsageError: an empty list, a name that is none of these (a misspelt size, a
            non-Pythia repository), a folder that is not a GPT-NeoX checkpoint, or
            `organism` with no trained organism in the cache.
    """
    from ...controls import organism
    from ...core.models import check_checkpoint_dir
    from ...core.pythia import ACCEPTED_FORMS, FINAL_REVISION, parse_pythia

    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not items:
        raise UsageError("--models is empty", hint="e.g. --models pythia-70m,pythia-160m")
    out: list[ModelEntry] = []
    seen: set[str] = set()
    for item in items:
        run = parse_pythia(item)
        if run is not None:
            entry = ModelEntry(name=run.name, kind="hub", repo=run.repo, size=run.size,
                               final=FINAL_REVISION, pythia=run.record())
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
                f"unknown model {item!r}: expected {ACCEPTED_FORMS}; organism; or a checkpoint folder",
                hint="e.g. --models pythia-70m,pythia-160m-deduped or --models pythia-70m-seed1,pythia-70m-seed2")
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
    from ...controls import organism
    from ...core.models import check_checkpoint_dir

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
    from ...core.models import PYTHIA_CHECKPOINTS, PYTHIA_DYNAMICS_REVISIONS

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


def keep_weights_for(entry: ModelEntry, choice: str) -> bool:
    """`--keep-weights yes|no|auto` for one model: auto keeps them below 1B parameters.
    Checkpoint folders are never deleted."""
    from ...core.models import pythia_size_params

    if entry.kind != "hub":
        return True
    if choice == "auto":
        return (pythia_size_params(entry.repo) or 0) < 1e9
    return choice == "yes"
