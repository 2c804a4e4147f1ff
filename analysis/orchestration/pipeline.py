"""The analysis DAG of one report run: steps cached by content hash, figures, report.

    data ─┬─> activations ─┬─> probes ──┐
          │                └─> ablation ─┴─> ... ─> cards (one card per studied neuron)
    model ┘
    (artifacts) ──> figures ──> report (notebook → HTML, PDF)

The nodes are the `StepSpec`s in `STEPS`; see `analysis.core.runner` for the caching.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..controls import planted_check as planted_check_mod
from ..controls import sources  # noqa: F401  (registers the controls' models with core.models)
from ..controls.planted import DEFAULT_PLANT, PLANTED_MODEL
from ..core.config import Neuron, RunConfig
from ..core.data import CORPORA
from ..core.errors import ReportError, UsageError
from ..core.models import (
    PYTHIA_70M_SHAPE,
    TINY_SHAPE,
    check_checkpoint_dir,
    pythia_shape,
    unknown_model,
)
from ..core.pythia import parse_pythia
from ..core.runner import StepSpec, open_run
from ..families import ablation as ablation_mod
from ..families import activations as activations_mod
from ..families import backup as backup_mod
from ..families import cards as cards_mod
from ..families import correlations as correlations_mod
from ..families import discovery as discovery_mod
from ..families import dla as dla_mod
from ..families import downstream as downstream_mod
from ..families import dynamics as dynamics_mod
from ..families import l3_tokens as l3_tokens_mod
from ..families import language_probes as language_probes_mod
from ..families import neurons as neurons_mod
from ..families import ngrams as ngrams_mod
from ..families import paper as paper_mod
from ..families import probes as probes_mod
from ..families import probes_ablated as probes_ablated_mod
from ..families import robustness as robustness_mod
from ..families import unigrams as unigrams_mod
from .references import reference_neurons

SEED_REFERENCE = Path(__file__).resolve().parents[1] / "resources" / "seed_reference.json"


def model_shape(name: str) -> tuple[int, int]:
    """(n_layers, d_mlp) of a model, read without loading weights (to validate neurons
    before any compute): a Pythia name's from its cached config.json or the Pythia table
    (`models.pythia_shape`), a generated model's from its shape, a folder's from its config.

    Raises:
        UsageError: a name that is no known model and no checkpoint folder (one line: the
            accepted forms), or a folder that is not a GPT-NeoX checkpoint.
    """
    shape = pythia_shape(name)
    if shape is not None:
        return shape["n_layers"], shape["d_mlp"]
    if name in ("pythia-70m-random", "pythia-70m-planted"):
        return PYTHIA_70M_SHAPE["num_hidden_layers"], PYTHIA_70M_SHAPE["intermediate_size"]
    if name == "tiny":
        return TINY_SHAPE["num_hidden_layers"], TINY_SHAPE["intermediate_size"]
    if name == "organism":
        from ..controls.organism import require_final_checkpoint

        name = str(require_final_checkpoint())
    if not Path(name).expanduser().is_dir():
        raise unknown_model(name)  # named as given, not as a resolved path
    cfg = check_checkpoint_dir(Path(name).expanduser().resolve())
    return int(cfg["num_hidden_layers"]), int(cfg["intermediate_size"])


def default_context_neuron(model: str) -> Neuron | None:
    """The context neuron when `--neuron` is not given: the seed's L3N669 for `pythia-70m`
    and for the models of its shape that stand in for it (`pythia-70m-random`, `tiny`,
    checkpoint folders); None (`--neuron auto`: discovery's top German-positive neuron) for
    the organism, the planted control and every other Pythia model, where L3N669 is only
    the seed's index, found in other weights."""
    from ..controls.organism import is_organism

    run = parse_pythia(model)
    if model == PLANTED_MODEL or is_organism(model) or (run is not None and not run.is_seed_model):
        return None
    return Neuron.parse("L3N669")


# The analysis DAG, in execution order (a step's deps come before it). Each family's
# module holds its pure functions, its step (`run_step`) and its figures.
STEPS: tuple[StepSpec, ...] = (
    StepSpec("discovery", discovery_mod.run_step, (), discovery_mod.figures),
    StepSpec("activations", activations_mod.run_step, (), activations_mod.figures),
    StepSpec("probes", probes_mod.run_step, ("activations",)),
    StepSpec("ablation", ablation_mod.run_step, ("activations",), ablation_mod.figures),
    StepSpec("dynamics", dynamics_mod.run_step, ("discovery", "ablation"), dynamics_mod.figures,
             when=dynamics_mod.has_series),
    # before paper: the paper's claims read its direct/indirect split
    StepSpec("ngrams", ngrams_mod.run_step, ("activations",), ngrams_mod.figures),
    # the authors' published curves and claims beside ours (EleutherAI/pythia-70m only)
    StepSpec("paper", paper_mod.run_step, ("probes", "ablation", "dynamics", "ngrams"), paper_mod.figures,
             when=paper_mod.applies),
    StepSpec("dla", dla_mod.run_step, ("activations",), dla_mod.figures),
    StepSpec("l3_tokens", l3_tokens_mod.run_step, ("activations",), l3_tokens_mod.figures),
    StepSpec("unigrams", unigrams_mod.run_step, ("l3_tokens",), unigrams_mod.figures),
    StepSpec("probes_ablated", probes_ablated_mod.run_step, ("activations",), probes_ablated_mod.figures),
    StepSpec("probes_english_neurons", language_probes_mod.run_english),
    StepSpec("probes_french_neurons", language_probes_mod.run_french, when=language_probes_mod.has_french),
    StepSpec("correlations", correlations_mod.run_step, ("activations",), correlations_mod.figures),
    StepSpec("backup", backup_mod.run_step, ("activations", "ablation"), when=backup_mod.has_pairs),
    StepSpec("downstream", downstream_mod.run_step, ("activations",), downstream_mod.figures,
             when=downstream_mod.has_downstream),
    StepSpec("neurons", neurons_mod.run_step, ("activations",), neurons_mod.figures),
    StepSpec("robustness", robustness_mod.run_step, ("discovery", "activations"), robustness_mod.figures),
    StepSpec("cards", cards_mod.run_step, ("activations", "probes", "ablation"), cards_mod.figures),
    # the known-answer control checks itself (pythia-70m-planted only)
    StepSpec("planted", planted_check_mod.run_step, planted_check_mod.DEPS,
             when=planted_check_mod.has_plant),
)


# ---------------------------------------------------------------- entry point


def _regression(arts: dict, out: Path, log) -> dict:
    """Check the run against the baseline recorded for its configuration (model and
    weights, context neuron, corpus, profile sizes, seed; `regression.select_baseline`).
    The table goes to artifacts/regression.json and the report's appendix (a failure does
    not stop the report: `german-neuron regression` is the gate); when no baseline applies,
    the appendix says why in one sentence and no number is checked."""
    from . import regression as reg

    sel = reg.select_baseline(arts)
    if not sel["applies"]:
        result = reg.not_applicable_result(sel, arts)
        reg.write_result(out, result)
        log(f"  regression: {sel['sentence']}")
        return result
    path = sel["path"]
    result = reg.compare(sel["baseline"], arts)
    result["baseline"]["path"] = reg.display_path(path)
    reg.write_result(out, result)
    log(f"  regression: {result['n_checked']} metrics vs {path.name}, {result['n_failed']} outside tolerance")
    if result["precision"]["policy"]:
        log(f"  regression: {result['precision']['sentence']}")
    return result


def figure_key(spec: StepSpec, arts: dict) -> str:
    """Cache key of the figures of `spec`: the figure code they run (`codehash.
    figure_code_record`), the keys of every artifact (a figure function may read any), and
    the plotting libraries' versions. The analysis code is covered through the artifact keys."""
    from importlib import metadata

    from ..core.artifacts import canonical_json, sha256_text
    from ..core.codehash import figure_code_record

    return sha256_text(canonical_json({
        "step": spec.name, "code": figure_code_record(spec.figures.__module__),
        "artifacts": {k: a["key"] for k, a in sorted(arts.items())},
        "matplotlib": metadata.version("matplotlib"), "plotly": metadata.version("plotly"),
    }))


def draw_figures(spec: StepSpec, run, arts: dict, fig_dir: Path) -> list[dict]:
    """The figure records of `spec`, drawn by `spec.figures` unless a manifest
    (`figures/.cache/<step>.json`) holds the same `figure_key` and every file it lists
    still has its recorded sha256. Editing a figure module thus redraws only the figures
    that import it; editing a template redraws none."""
    import hashlib

    from ..core.artifacts import atomic_write_text

    key = figure_key(spec, arts)
    manifest = fig_dir / ".cache" / f"{spec.name}.json"
    try:
        m = json.loads(manifest.read_text())
        files = m["files"]
        if m["key"] == key and all(
                hashlib.sha256((fig_dir.parent / f).read_bytes()).hexdigest() == h
                for f, h in files.items()):
            run.log(f"  figures {spec.name}: cached ({key[:12]}), not redrawn")
            return m["records"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    records = spec.figures(run, arts, fig_dir)
    for r in records:
        r["figure_key"] = key
    files = {}
    for r in records:
        for f in (r.get("png"), r.get("svg"), r.get("csv"), r.get("plotly"),
                  f"figures/{r['name']}.json"):
            if f and (fig_dir.parent / f).is_file():
                files[f] = hashlib.sha256((fig_dir.parent / f).read_bytes()).hexdigest()
    atomic_write_text(manifest, json.dumps({"key": key, "records": records, "files": files},
                                           indent=1, sort_keys=True))
    run.log(f"  figures {spec.name}: drawn {len(records)} ({key[:12]})")
    return records


def default_out(model: str, plant=None, dtype: str = "float32", tf32: bool = False) -> Path:
    """`build/<model-id>/`; for `pythia-70m-planted` with a plant other than the default,
    `build/pythia-70m-planted-<LxNy>/`; a run in another precision than float32 gets its own
    folder (`precision.out_suffix`: `build/<model-id>-bfloat16/`, `-tf32`), so it never
    replaces the float32 artifacts, figures, report and regression.json.

    Raises:
        UsageError: a dtype or TF32 value `precision` refuses.
    """
    from ..core.models import model_slug
    from ..core.precision import out_suffix

    slug = model_slug(model)
    if model == PLANTED_MODEL and plant is not None and str(plant) != DEFAULT_PLANT:
        slug += f"-{plant}"
    return Path("build") / (slug + out_suffix(dtype, tf32))


def check_folder_precision(out: Path, dtype: str, tf32: bool, default: Path | None = None) -> None:
    """Refuse a run whose precision differs from that of the artifacts already in `out`:
    their slots (`artifacts/<step>.json`), figures, report and regression.json would be
    replaced. Artifacts recorded before `--dtype` existed count as float32.

    Raises:
        UsageError: `out/artifacts` holds a step artifact of another precision (its hint
            names `default`, the folder of this precision).
    """
    from ..core.precision import describe

    for p in sorted((Path(out) / "artifacts").glob("*.json")):
        try:
            art = json.loads(p.read_text())
            model = art["provenance"]["model"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a step artifact (regression.json) or unreadable: nothing to protect
        theirs = (model.get("dtype") or "float32", bool(model.get("tf32")))
        if theirs != (dtype, bool(tf32)):
            raise UsageError(
                f"{out} holds {describe(*theirs)} artifacts ({p.name}); a {describe(dtype, tf32)} run "
                "would replace them",
                hint="pass another --out" + (f" (this precision's default is {default})" if default else ""))
        return


def check_plant(cfg: RunConfig, n_layers: int, d_mlp: int) -> None:
    """`--plant` only with `pythia-70m-planted`, and inside the model (as `--neuron`).

    Raises:
        UsageError: `--plant` with another model, or a planted neuron out of range.
    """
    if cfg.model != PLANTED_MODEL:
        if cfg.plant is not None:
            raise UsageError(f"--plant applies only to --model {PLANTED_MODEL} (the model is {cfg.model})")
        return
    (cfg.plant or Neuron.parse(DEFAULT_PLANT)).check(n_layers, d_mlp)


def with_dependencies(names, auto: bool) -> set[str]:
    """The steps `names` and every step they depend on (transitively); `discovery` too when
    the context neuron is `auto` (it resolves it).

    Raises:
        UsageError: a name that is not a step.
    """
    specs = {s.name: s for s in STEPS}
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise UsageError(f"unknown step {', '.join(unknown)}; steps: {', '.join(specs)}")
    todo, out = list(names) + (["discovery"] if auto else []), set()
    while todo:
        n = todo.pop()
        if n not in out:
            out.add(n)
            todo.extend(specs[n].deps)
    return out


def run_report(cfg: RunConfig, *, render: bool = True, renderer: str = "auto",
               show_progress: bool | None = None, log: Callable[[str], None] | None = None,
               corpus: str | None = None, command: str = "",
               steps: Sequence[str] | None = None, sweep: str | None = None,
               figures: bool = True) -> dict:
    """Compute (or reuse) every artifact, draw the figures and build the report.

    `corpus` None: `europarl-heldout` for the organism (its held-out passages), else `seed`.
    `cfg.neuron` None (`--neuron auto`): the top German-positive neuron of the `discovery` step.
    `steps`: compute only these steps and those they depend on (`with_dependencies`); a
    partial run (e.g. for the tests) draws, checks against a baseline, renders and removes
    nothing else. None: every step.
    `figures` False: every step and the baseline check, no figure and no report (`render`
    is then ignored): what a maintainer needs to see which number moved.
    `sweep`: a training-dynamics sweep's folder (`german-neuron sweep --out DIR`), whose
    curves over checkpoints and model sizes the report shows beside its own dynamics.

    Returns {"out": Path, "artifacts": {...}, "figures": [...], "report": {...} | None}.

    Raises:
        UsageError / DataError / ModelUnavailableError: bad input, before any compute where
            the input can be checked without the model.
        ReportError: another run holds the output folder's lock.
    """
    from filelock import FileLock, Timeout

    from ..core.precision import matmul_precision, parse_dtype, parse_tf32

    parse_dtype(cfg.dtype)  # a one-line UsageError before any compute
    parse_tf32(cfg.tf32)
    log = log or (lambda s: print(s, file=sys.stderr))
    show_progress = sys.stderr.isatty() if show_progress is None else show_progress
    if corpus is None:
        from ..controls.organism import default_corpus

        corpus = default_corpus(cfg.model)
    if corpus not in CORPORA:
        raise UsageError(f"unknown corpus set {corpus!r}; choose one of: {', '.join(CORPORA)}")
    if sweep is not None:
        from .sweep.summary import sweep_summary

        sweep_summary(sweep)  # UsageError before any compute when DIR holds no sweep
    cfg = with_paper_dir(cfg)  # DataError before any compute for a changed or missing file
    n_layers, d_mlp = model_shape(cfg.model)
    if cfg.neuron is not None:
        cfg.neuron.check(n_layers, d_mlp)
    check_plant(cfg, n_layers, d_mlp)
    wanted = None if steps is None else with_dependencies(steps, cfg.neuron is None)
    own = default_out(cfg.model, cfg.plant, cfg.dtype, cfg.tf32)
    out = Path(cfg.out) if cfg.out else own
    check_folder_precision(out, parse_dtype(cfg.dtype), parse_tf32(cfg.tf32), own)
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ReportError(f"another run is writing to {out} (lock {out / '.lock'})",
                          hint="wait for it to finish, or pass a different --out") from None
    try:
        _remove_stale_temporaries(out)
        with matmul_precision(cfg.tf32):  # TF32 (CUDA float32 matmuls) as asked, restored after
            return _run_locked(cfg, out, render and figures, renderer, show_progress, log, corpus,
                               command, wanted, sweep, figures)
    except OSError as exc:
        # e.g. ENOSPC while writing: every write is atomic, so what is on disk is either
        # the previous complete file or nothing.
        raise ReportError(f"could not write to {out}: {exc.strerror or exc}",
                          hint="free space or pass another --out; previous results are intact") from None
    finally:
        lock.release()


def with_paper_dir(cfg: RunConfig) -> RunConfig:
    """`cfg` with `paper_dir` resolved (`core.paper.resolve_paper_dir`: `--paper-dir`, else
    `$GERMAN_NEURON_PAPER_DIR`, else `paper` beside the data folder) and its files checked,
    or None when there is none (the report then says how to pass it).

    Raises:
        DataError: a named folder does not exist, or a file in it is missing or changed.
    """
    import dataclasses

    from ..core.paper import resolve_paper_dir, verify

    folder = resolve_paper_dir(cfg.paper_dir, cfg.data_dir)
    if folder is not None:
        verify(folder)
    return dataclasses.replace(cfg, paper_dir=None if folder is None else str(folder))


def _remove_skipped_artifacts(folder: Path, arts: dict) -> None:
    """Remove the artifacts of steps this run skipped (e.g. `downstream` for a context
    neuron in the last layer), left by an earlier run with another configuration in the
    same folder: the folder then holds this run's artifacts only, which is what
    `german-neuron regression` and `diff` read."""
    for spec in STEPS:
        if spec.name not in arts:
            (folder / f"{spec.name}.json").unlink(missing_ok=True)
            for p in folder.glob(f"{spec.name}.*.npy"):
                p.unlink(missing_ok=True)


def _remove_stale_temporaries(out: Path) -> None:
    """Temporaries left by a killed run (we hold the lock, so none is in use)."""
    import shutil

    for p in list(out.glob(".report-tmp-*")):
        shutil.rmtree(p, ignore_errors=True)
    for sub in ("artifacts", "figures"):
        for p in list((out / sub).glob(".*.tmp")):
            p.unlink(missing_ok=True)


def precision_context(info: dict) -> dict:
    """What the report's Setup section says about the run's precision: the model record's
    `dtype`, `matmul`, `tf32`, `tf32_effective`, `precision_note`, and, when the numbers are
    not float32's (bfloat16, or TF32 in effect), the tolerance policy they are held to
    (`regression.precision_policy`: its file and the largest differences from float32 it
    measured, per metric family)."""
    from ..core.errors import ReportError
    from . import regression as reg

    out = {k: info.get(k) for k in ("dtype", "matmul", "tf32", "tf32_effective", "precision_note")}
    out["dtype"] = out["dtype"] or "float32"
    out["policy"] = None
    if reg.precision_label(out["dtype"], bool(out["tf32_effective"])) != reg.REFERENCE_PRECISION:
        try:
            out["policy"] = reg.policy_summary()
        except ReportError as exc:  # the numbers stand; the report says the bounds are unknown
            out["policy"] = {"path": reg.display_path(reg.PRECISION_POLICY), "error": str(exc).splitlines()[0]}
    return out


def _run_locked(cfg, out, render, renderer, show_progress, log, corpus, command, wanted=None,
                sweep=None, draw=True):
    """The body of `run_report`, with the output folder's lock held (`wanted`: the steps
    of a partial run, or None)."""
    t0 = time.perf_counter()
    run = open_run(cfg, corpus, out / "artifacts", log, show_progress)
    model = run.model
    if model.info.get("dtype", "float32") != "float32" or cfg.tf32:
        log(f"  precision: {model.info['precision_note']}")
    log(f"Steps (profile {cfg.profile.label}) -> {out}/artifacts")
    arts: dict[str, dict] = {}
    for spec in STEPS:
        if wanted is not None and spec.name not in wanted:
            continue
        if spec.when is None or spec.when(run):
            arts[spec.name] = spec.run(run, arts)
            if spec.name == "discovery":  # resolves --neuron auto (dataclasses.replace)
                cfg = discovery_mod.apply(run, arts["discovery"])
    if wanted is None:  # a partial run leaves the other steps' artifacts alone
        _remove_skipped_artifacts(out / "artifacts", arts)
    figs: list[dict] = []
    for spec in STEPS if wanted is None and draw else ():
        if spec.figures is not None and spec.name in arts:
            figs += draw_figures(spec, run, arts, out / "figures")
    sweep_context = None
    if sweep is not None and draw:
        from .sweep.figures import draw_sweep_figures
        from .sweep.report import paper_figure_map
        from .sweep.summary import sweep_summary

        sweep_context = sweep_summary(sweep, cfg.paper_dir)
        sweep_figs = draw_sweep_figures(sweep, out / "figures", cfg.paper_dir)
        sweep_context["paper_figures"] = paper_figure_map([f["name"] for f in sweep_figs])
        figs += sweep_figs
    context = {
        "title": f"The German context neuron {cfg.neuron} in {model.model_id}",
        "run": {
            "model_id": model.model_id, "model_source": model.info.get("source"),
            "revision": model.info.get("revision"), "commit": model.info.get("commit"),
            "fingerprint": model.info.get("fingerprint"),
            "is_pythia": model.model_id == "pythia-70m", "neuron": str(cfg.neuron),
            "profile": cfg.profile.name, "profile_label": cfg.profile.label,
            "overrides": dict(cfg.profile.overrides), "sizes": cfg.profile.sizes(), "device": cfg.device,
            "precision": precision_context(model.info),
            "corpus": corpus, "command": command,
            "is_organism": "organism" in model.info, "banner": cfg.note,
            "is_planted": bool(model.info.get("plant")), "plant": model.info.get("plant"),
            "neuron_discovered": cfg.neuron_discovered,
            # a Pythia model of the registry (None for generated models and folders), and the
            # German neurons published for it, shown as references only
            "pythia": model.info.get("pythia"),
            "reference_neurons": reference_neurons(model.model_id),
            "created": (arts.get("ablation") or next(iter(arts.values()), {})).get("created"),
        },
        "artifacts": arts,
        "figures": figs,
        "seed": json.loads(SEED_REFERENCE.read_text()) if model.model_id == "pythia-70m" else None,
        "sweep": sweep_context,
    }
    context["regression"] = _regression(arts, out, log) if wanted is None else None
    report = None
    if render and wanted is None:
        from report.build import build_report

        log("Rendering report ...")
        report = build_report(out, context, renderer=renderer)
    peak = run.note_peak_rss()
    log(f"Done in {time.perf_counter() - t0:.1f} s (peak resident memory {peak / 2**30:.2f} GiB): {out}")
    return {"out": out, "artifacts": arts, "figures": figs, "report": report, "context": context,
            "peak_rss_bytes": peak, "wall_s": time.perf_counter() - t0}
