"""The analysis DAG of one report run: steps cached by content hash, figures, report.

    data ─┬─> activations ─┬─> probes
          │                └─> ablation
    model ┘
    (artifacts) ──> figures ──> report (notebook → HTML, PDF)

The nodes are the `StepSpec`s in `STEPS`; see `analysis.runner` for the caching.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import ablation as ablation_mod
from . import activations as activations_mod
from . import probes as probes_mod
from .artifacts import ArtifactStore
from .config import GERMAN_NEURONS, Neuron, RunConfig
from .data import CORPORA, load_corpus
from .engine import Forward, Weights
from .errors import ReportError, UsageError
from .models import PYTHIA_70M_SHAPE, TINY_SHAPE, check_checkpoint_dir, load_model
from .runner import Run, StepSpec

SEED_REFERENCE = Path(__file__).resolve().parent / "seed_reference.json"


def model_shape(name: str) -> tuple[int, int]:
    """(n_layers, d_mlp) of a model, read without loading weights (to validate neurons
    before any compute)."""
    if name in ("pythia-70m", "pythia-70m-random"):
        return PYTHIA_70M_SHAPE["num_hidden_layers"], PYTHIA_70M_SHAPE["intermediate_size"]
    if name == "tiny":
        return TINY_SHAPE["num_hidden_layers"], TINY_SHAPE["intermediate_size"]
    cfg = check_checkpoint_dir(Path(name).expanduser().resolve())
    return int(cfg["num_hidden_layers"]), int(cfg["intermediate_size"])


# The analysis DAG, in execution order (a step's deps come before it). Each family's
# module holds its pure functions, its step (`run_step`) and its figures.
STEPS: tuple[StepSpec, ...] = (
    StepSpec("activations", activations_mod.run_step, (), activations_mod.figures),
    StepSpec("probes", probes_mod.run_step, ("activations",)),
    StepSpec("ablation", ablation_mod.run_step, ("activations",), ablation_mod.figures),
)


# ---------------------------------------------------------------- entry point


def resolve_studied(n_layers: int, d_mlp: int, log) -> tuple[Neuron, ...]:
    """The seed's German neurons that exist in this model (all of them for Pythia's shape)."""
    keep = tuple(n for n in GERMAN_NEURONS if n.layer < n_layers and n.index < d_mlp)
    dropped = [str(n) for n in GERMAN_NEURONS if n not in keep]
    if dropped:
        log(f"  note: the seed's neurons {', '.join(dropped)} do not exist in this model; skipped")
    return keep


def default_out(model: str) -> Path:
    from .models import model_slug

    return Path("build") / model_slug(model)


def run_report(cfg: RunConfig, *, render: bool = True, renderer: str = "auto",
               show_progress: bool | None = None, log: Callable[[str], None] | None = None,
               corpus: str = "seed", command: str = "") -> dict:
    """Compute (or reuse) every artifact, draw the figures and build the report.

    Returns {"out": Path, "artifacts": {...}, "figures": [...], "report": {...} | None}.

    Raises:
        UsageError / DataError / ModelUnavailableError: bad input, before any compute where
            the input can be checked without the model.
        ReportError: another run holds the output folder's lock.
    """
    from filelock import FileLock, Timeout

    log = log or (lambda s: print(s, file=sys.stderr))
    show_progress = sys.stderr.isatty() if show_progress is None else show_progress
    if corpus not in CORPORA:
        raise UsageError(f"unknown corpus set {corpus!r}; choose one of: {', '.join(CORPORA)}")
    n_layers, d_mlp = model_shape(cfg.model)
    cfg.neuron.check(n_layers, d_mlp)
    out = Path(cfg.out) if cfg.out else default_out(cfg.model)
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ReportError(f"another run is writing to {out} (lock {out / '.lock'})",
                          hint="wait for it to finish, or pass a different --out") from None
    try:
        t0 = time.perf_counter()
        corpora = {lang: load_corpus(name, cfg.data_dir) for lang, name in CORPORA[corpus].items()}
        log(f"Loading {cfg.model} on {cfg.device} ...")
        model = load_model(cfg.model, cfg.tokenizer, cfg.device, cfg.profile.seed)
        weights = Weights.from_bridge(model.bridge, model.info["rotary_pct"])
        studied = resolve_studied(n_layers, d_mlp, log)
        run = Run(cfg, model, Forward(weights), corpora, ArtifactStore(out / "artifacts"),
                  studied, log, show_progress, data_dir=cfg.data_dir)
        log(f"Steps (profile {cfg.profile.name}) -> {out}/artifacts")
        arts: dict[str, dict] = {}
        for spec in STEPS:
            if spec.when is None or spec.when(run):
                arts[spec.name] = spec.run(run, arts)
        figs: list[dict] = []
        for spec in STEPS:
            if spec.figures is not None and spec.name in arts:
                figs += spec.figures(run, arts, out / "figures")
        context = {
            "title": f"The German context neuron {cfg.neuron} in {model.model_id}",
            "run": {
                "model_id": model.model_id, "model_source": model.info.get("source"),
                "revision": model.info.get("revision"), "fingerprint": model.info.get("fingerprint"),
                "is_pythia": model.model_id == "pythia-70m", "neuron": str(cfg.neuron),
                "profile": cfg.profile.name, "sizes": cfg.profile.sizes(), "device": cfg.device,
                "corpus": corpus, "command": command,
                "created": arts["ablation"]["created"],
            },
            "artifacts": arts,
            "figures": figs,
            "seed": json.loads(SEED_REFERENCE.read_text()) if model.model_id == "pythia-70m" else None,
        }
        report = None
        if render:
            from report.build import build_report

            log("Rendering report ...")
            report = build_report(out, context, renderer=renderer)
        log(f"Done in {time.perf_counter() - t0:.1f} s: {out}")
        return {"out": out, "artifacts": arts, "figures": figs, "report": report, "context": context}
    finally:
        lock.release()
