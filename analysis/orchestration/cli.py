"""Command line: `german-neuron report ...` (also `python -m analysis report ...`).

nox's `report` session only wraps this entry point.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys

import typer

from ..core.config import settable_sizes
from ..core.errors import ReportError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Reproducible report on the German context neuron (L3N669) in Pythia-70M.")


@contextlib.contextmanager
def one_line_errors(debug: bool):
    """A `ReportError` raised inside becomes `error: <cause>` (with its hint) on stderr and the
    error's exit code; with `--debug` the traceback is kept."""
    try:
        yield
    except ReportError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


@app.callback()
def _root() -> None:
    """Reproducible report on the German context neuron (L3N669) in Pythia-70M."""


_SET_HELP = ("override one size of the profile, NAME=VALUE (repeatable), e.g. --set "
             "loss_examples=200; names: " + ", ".join(settable_sizes()))


_DTYPE_HELP = ("float32 (the reference, default) | bfloat16: the model is loaded in float32, then "
               "the forward's matmuls run in bf16 (losses and statistics stay float32); numbers "
               "differ from float32 within baselines/tolerance/bf16.json")
_TF32_HELP = ("on | off (default): TF32 for float32 matmuls on CUDA; no effect on CPU or with "
              "bfloat16 (recorded as such)")
_PAPER_HELP = ("folder of the authors' published measurements (the layout of shared/paper, files "
               "checked by sha256); default: the folder `paper` beside --data-dir when it exists. "
               "For EleutherAI/pythia-70m the report draws their curves beside ours and checks "
               "their claims; without it the report says they were not available")


@app.command()
def report(
    model: str | None = typer.Option(None, help="pythia-70m | any Pythia name the sweep takes (pythia-<size>[-deduped], 14m ... 12b; PolyPythias pythia-<size>-seed<1-9>; also EleutherAI/<name>; final checkpoint step143000) | pythia-70m-planted | pythia-70m-random | tiny | organism | PATH to a HF GPT-NeoX checkpoint folder; default: pythia-70m if it can be loaded, else the organism (trained first if none is cached)"),
    tokenizer: str | None = typer.Option(None, envvar="GERMAN_NEURON_TOKENIZER", help="tokenizer.json (GPT-NeoX-20B) for pythia-70m-random or a checkpoint without one"),
    data_dir: str | None = typer.Option(None, envvar="GERMAN_NEURON_DATA_DIR", help="folder with the seed's data files (offline); default $GERMAN_NEURON_DATA_DIR, else download"),
    neuron: str | None = typer.Option(None, help="the context neuron under study, LxNy, or auto (the top German-positive neuron found by probing every neuron); default L3N669 (the seed's neuron of pythia-70m), auto for every other Pythia model, the organism and pythia-70m-planted"),
    plant: str | None = typer.Option(None, help="pythia-70m-planted only: the neuron rewired to detect German, LxNy (default L3N669)"),
    profile: str = typer.Option("quick", help="quick | paper (sample sizes)"),
    set_: list[str] | None = typer.Option(None, "--set", help=_SET_HELP),  # noqa: B008 (typer idiom)
    device: str = typer.Option("cpu", help="cpu | cuda"),
    dtype: str = typer.Option("float32", help=_DTYPE_HELP),
    tf32: str = typer.Option("off", help=_TF32_HELP),
    out: str | None = typer.Option(None, help="output folder (default build/<model-id>/; build/<model-id>-bfloat16/ for --dtype bfloat16, -tf32 for --tf32 on)"),
    corpus: str | None = typer.Option(None, help="seed (KDE4 English / WMT German) | fixture (the package's own short texts) | europarl-heldout (the organism's held-out passages); default: europarl-heldout for the organism, else seed"),
    renderer: str = typer.Option("auto", help="auto (quarto if installed, else pandoc+typst) | quarto | pandoc"),
    render: bool = typer.Option(True, help="build report.html/report.pdf after the artifacts"),
    figures: bool = typer.Option(True, help="draw the figures; --no-figures: the artifacts and their baseline check only, the quickest way to see which number moved (implies --no-render)"),
    steps: str | None = typer.Option(None, help="a partial run: compute only these steps (comma-separated, e.g. discovery) and the steps they need; no figure, baseline check or report"),
    sweep: str | None = typer.Option(None, help="a sweep's output folder (german-neuron sweep --out DIR): without --model, build that sweep's report (curves over checkpoints and sizes) in DIR; with --model, add its curves to the model's report"),
    paper_dir: str | None = typer.Option(None, envvar="GERMAN_NEURON_PAPER_DIR", help=_PAPER_HELP),
    debug: bool = typer.Option(False, help="show tracebacks"),
) -> None:
    """Compute (or reuse) the artifacts and build report.html + report.pdf; or, with
    `--sweep DIR` alone, the report of a training-dynamics sweep."""
    from ..core.config import Neuron, RunConfig, get_profile
    from ..core.errors import UsageError
    from .pipeline import run_report

    with one_line_errors(debug):
        if sweep is not None and model is None:
            from .sweep.report import build_sweep_report

            paths = build_sweep_report(sweep, renderer=renderer, log=lambda s: typer.echo(s, err=True),
                                       paper_dir=paper_dir, data_dir=data_dir)
            for kind in ("html", "pdf"):
                typer.echo(f"{kind}: {paths[kind]}")
            return
        if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
            raise UsageError(f"unknown device {device!r}; choose cpu or cuda")
        from ..core.precision import parse_dtype, parse_tf32

        dtype, tf32_on = parse_dtype(dtype), parse_tf32(tf32)  # before any default-model work
        if renderer not in ("auto", "quarto", "pandoc"):
            raise UsageError(f"unknown renderer {renderer!r}; choose auto, quarto or pandoc")
        from ..controls.organism import resolve_default_model
        from ..controls.planted import PLANTED_MODEL
        from ..core.pythia import parse_pythia
        from .pipeline import default_context_neuron

        auto = neuron is not None and neuron.strip().lower() == "auto"
        context_neuron = None if auto or neuron is None else Neuron.parse(neuron)
        planted = None if plant is None else Neuron.parse(plant)
        if planted is not None and model != PLANTED_MODEL:  # before any default-model work
            raise UsageError(f"--plant applies only to --model {PLANTED_MODEL}")
        prof, note = get_profile(profile).with_overrides(set_ or []), None
        if model is None:  # pythia-70m if loadable, else the organism (said on the console)
            model, note = resolve_default_model(tokenizer, data_dir, log=lambda s: typer.echo(s, err=True))
        run = parse_pythia(model)
        if run is not None:  # `EleutherAI/pythia-160m` is `pythia-160m` (its id and folder)
            model = run.name
        if neuron is None:
            # the seed's L3N669 for pythia-70m; the other Pythia models, the organism and the
            # planted control find their own (`--neuron auto`)
            context_neuron = default_context_neuron(model)
        cfg = RunConfig(model=model, neuron=context_neuron, profile=prof, device=device,
                        data_dir=data_dir, tokenizer=tokenizer, out=out, note=note, plant=planted,
                        dtype=dtype, tf32=tf32_on, paper_dir=paper_dir)
        wanted = None if steps is None else [t.strip() for t in steps.split(",") if t.strip()]
        if wanted is not None and not wanted:
            raise UsageError("--steps is empty", hint="e.g. --steps discovery")
        res = run_report(cfg, render=render, renderer=renderer, corpus=corpus, sweep=sweep,
                         figures=figures, command="german-neuron " + shlex.join(sys.argv[1:]),
                         steps=wanted)
    if res["report"]:
        for kind in ("html", "pdf"):
            typer.echo(f"{kind}: {res['report'][kind]}")
    if wanted is not None:
        typer.echo(f"artifacts: {res['out'] / 'artifacts'} ({', '.join(sorted(res['artifacts']))})")
    if res["context"].get("regression") is not None:
        from .regression import outcome_sentence

        # Last, where it is read: a run that checked no number must not look like one that passed.
        typer.echo(f"baseline check: {outcome_sentence(res['context']['regression'])}")


@app.command()
def organism(
    tokenizer: str | None = typer.Option(None, envvar="GERMAN_NEURON_TOKENIZER", help="tokenizer.json of GPT-NeoX-20B"),
    data_dir: str | None = typer.Option(None, envvar="GERMAN_NEURON_DATA_DIR", help="folder with europarl/english_europarl.json and german_europarl.json (offline); default $GERMAN_NEURON_DATA_DIR, else download"),
    out: str | None = typer.Option(None, help="output folder (default: the model cache, organism-<hash of the config>)"),
    steps: int | None = typer.Option(None, help="optimiser steps (default 500)"),
    layers: int | None = typer.Option(None, help="layers (default 4)"),
    d_model: int | None = typer.Option(None, help="residual width (default 128)"),
    d_mlp: int | None = typer.Option(None, help="MLP neurons per layer (default 512)"),
    heads: int | None = typer.Option(None, help="attention heads (default 4)"),
    seq_len: int | None = typer.Option(None, help="tokens per sequence = context length (default 256)"),
    batch_size: int | None = typer.Option(None, help="sequences per step (default 8)"),
    lr: float | None = typer.Option(None, help="peak AdamW learning rate (default 2e-3)"),
    warmup: int | None = typer.Option(None, help="warm-up steps (default 30)"),
    german_fraction: float | None = typer.Option(None, help="fraction of German sequences per batch, rounded to whole sequences (default 0.25: 2 of 8)"),
    train_per_language: int | None = typer.Option(None, help="cap on training passages per language (default: the whole training split)"),
    seed: int | None = typer.Option(None, help="seed of the initialisation and the data order (default 0)"),
    max_minutes: float = typer.Option(20.0, help="wall-time limit; when reached, the current step is the final checkpoint"),
    force: bool = typer.Option(False, help="retrain even if a completed run with the same inputs exists"),
    debug: bool = typer.Option(False, help="show tracebacks"),
) -> None:
    """Train the positive control: a small GPT-NeoX on English + German Europarl (CPU, seeded)."""
    from ..controls.organism import OrganismConfig, replace, train_europarl

    with one_line_errors(debug):
        cfg = replace(OrganismConfig(), steps=steps, n_layers=layers, d_model=d_model, d_mlp=d_mlp,
                      n_heads=heads, seq_len=seq_len, batch_size=batch_size, lr=lr, warmup_steps=warmup,
                      german_fraction=german_fraction, train_per_language=train_per_language, seed=seed)
        folder, manifest = train_europarl(cfg, tokenizer, data_dir, out=out, force=force,
                                          max_seconds=max_minutes * 60, show_progress=sys.stderr.isatty())
    final = manifest["final"]
    typer.echo(f"wall time {manifest['wall_time_s']:.1f} s, {manifest['tokens_per_s']:,.0f} tokens/s, "
               f"{manifest['steps_done']} steps, {manifest['tokens_seen']:,} tokens, "
               f"final training loss {manifest['final_train_loss']:.3f}"
               + (" (stopped by the time limit)" if manifest["stopped_by_time_limit"] else ""))
    typer.echo(f"manifest: {folder / 'manifest.json'}")
    typer.echo(f"final checkpoint: {folder / final['path']}  (use --model organism)")


def _out_dir(model: str, out: str | None, dtype: str = "float32", tf32: str = "off"):
    """`--out`, else the run's default folder for its precision (`pipeline.default_out`).

    Raises:
        UsageError: a bad `--dtype` or `--tf32`.
    """
    from pathlib import Path

    from ..core.precision import parse_dtype, parse_tf32
    from .pipeline import default_out

    return Path(out) if out else default_out(model, dtype=parse_dtype(dtype), tf32=parse_tf32(tf32))


_RUN_DTYPE_HELP = ("the run's --dtype, which picks its default folder (build/<model-id>-bfloat16/ "
                   "for bfloat16); ignored with --out")
_RUN_TF32_HELP = "the run's --tf32, which picks its default folder (-tf32); ignored with --out"


# `german-neuron regression` exits with this when no baseline applies to the run (1 means
# "numbers moved", 2 bad input).
NO_BASELINE_EXIT = 4
NO_BASELINE_MESSAGE = "no baseline for this configuration; record one with `nox -s baseline -- --update`"


@app.command(epilog="Exit status: 0 every metric within tolerance; 1 a metric moved (named); "
                    "2 bad input (no artifacts, no such --baseline file, wrong --profile); "
                    f"{NO_BASELINE_EXIT} no baseline applies to the run's configuration (model and "
                    "weights fingerprint, context neuron, corpus, profile sizes, seed), so nothing "
                    "was compared.")
def regression(
    model: str = typer.Option("pythia-70m", help="model id whose artifacts to check"),
    profile: str | None = typer.Option(None, help="profile the artifacts were made with (default: as recorded in them; checked against them)"),
    out: str | None = typer.Option(None, help="output folder of the run (default build/<model-id>/)"),
    dtype: str = typer.Option("float32", help=_RUN_DTYPE_HELP),
    tf32: str = typer.Option("off", help=_RUN_TF32_HELP),
    baseline: str | None = typer.Option(None, help="baseline JSON (default: the one in baselines/ recorded for the run's configuration)"),
    all_rows: bool = typer.Option(False, "--all", help="print every row, not only problems"),
) -> None:
    """Compare the newest artifacts with the baseline recorded for their configuration;
    exit 1 naming the metrics that moved, 4 when no baseline applies (see below)."""
    from pathlib import Path

    from . import regression as reg

    with one_line_errors(False):
        out_dir = _out_dir(model, out, dtype, tf32)
    arts = reg.load_artifacts(out_dir)
    if not arts:
        typer.echo(f"error: no artifacts in {out_dir / 'artifacts'}; build the report first", err=True)
        raise typer.Exit(2)
    recorded = reg.run_configuration(arts).get("profile")
    if profile is not None and recorded is not None and profile != recorded:
        typer.echo(f"error: the artifacts in {out_dir} were made with profile {recorded}, not {profile}", err=True)
        raise typer.Exit(2)
    candidates = None
    if baseline:
        if not Path(baseline).is_file():
            typer.echo(f"error: no baseline {baseline}", err=True)
            raise typer.Exit(2)
        candidates = [Path(baseline)]
    sel = reg.select_baseline(arts, candidates)
    if not sel["applies"]:
        result = reg.not_applicable_result(sel, arts)
        typer.echo(NO_BASELINE_MESSAGE, err=True)
        for reason in sel["reasons"]:
            typer.echo(f"  {reason}", err=True)
        typer.echo(f"record written to {reg.write_result(out_dir, result)}", err=True)
        raise typer.Exit(NO_BASELINE_EXIT)
    result = reg.compare(sel["baseline"], arts)
    result["baseline"]["path"] = reg.display_path(sel["path"])
    reg.print_table(result, only_problems=not all_rows)
    typer.echo(f"table written to {reg.write_result(out_dir, result)}")
    if not result["passed"]:
        raise typer.Exit(1)


@app.command()
def baseline(
    model: str = typer.Option(..., help="tiny | pythia-70m-random (fixture baselines only)"),
    profile: str | None = typer.Option(None, help="profile the artifacts were made with (default: as recorded in them)"),
    out: str | None = typer.Option(None, help="output folder of the run (default build/<model-id>/)"),
    dtype: str = typer.Option("float32", help=_RUN_DTYPE_HELP),
    tf32: str = typer.Option("off", help=_RUN_TF32_HELP),
    update: bool = typer.Option(False, "--update", help="write the baseline (otherwise only show the diff)"),
) -> None:
    """Record a fixture baseline from a run's artifacts, showing what changes. It is
    written over the baseline of the same configuration (apart from the weights
    fingerprint), else to baselines/<model>-<profile>.json when free, else to
    baselines/<model>-<profile>-<neuron>-<corpus>.json; never over a baseline recorded for
    another configuration. The pythia-70m baseline comes from the seed's printed numbers
    and is never rewritten here."""
    import json

    from ..controls import sources  # noqa: F401  (model_slug knows the organism's folders)
    from ..core.artifacts import atomic_write_text
    from ..core.models import model_slug
    from . import regression as reg

    slug = model_slug(model)
    if slug == "pythia-70m":
        typer.echo("error: the pythia-70m baseline is the seed's printed output "
                   "(analysis/resources/seed_reference.json); it is not recorded from a run", err=True)
        raise typer.Exit(2)
    with one_line_errors(False):
        arts = reg.load_artifacts(_out_dir(model, out, dtype, tf32))
    if not arts:
        typer.echo("error: no artifacts; build the report first", err=True)
        raise typer.Exit(2)
    recorded = reg.run_configuration(arts).get("profile")
    if profile is not None and recorded is not None and profile != recorded:
        typer.echo(f"error: the artifacts were made with profile {recorded}, not {profile}", err=True)
        raise typer.Exit(2)
    try:
        new = reg.record_fixture_baseline(arts, slug, recorded or profile or "quick")
        path = reg.baseline_target(new)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo("configuration: " + ", ".join(f"{k} {v}" for k, v in new["configuration"].items()))
    if path.is_file():
        old = reg.load_baseline(path)
        _, reasons = reg.applies(old, arts, path.stem)
        for reason in reasons:
            typer.echo(f"  differs: {reason}")
        reg.print_table(reg.compare(old, arts), only_problems=True)
    else:
        typer.echo(f"{path} does not exist yet ({len(new['metrics'])} metrics)")
    if update:
        atomic_write_text(path, json.dumps(new, indent=1, sort_keys=True) + "\n")
        typer.echo(f"wrote {path}")
    else:
        typer.echo(f"dry run: pass --update to write {path}")


@app.command()
def bench(
    model: str = typer.Option("pythia-70m-random", help="model to measure (pythia-70m-random: Pythia-70M's shape)"),
    tokenizer: str | None = typer.Option(None, envvar="GERMAN_NEURON_TOKENIZER", help="tokenizer.json (GPT-NeoX-20B)"),
    data_dir: str | None = typer.Option(None, envvar="GERMAN_NEURON_DATA_DIR", help="folder with the seed's data files"),
    out: str = typer.Option("build/bench", help="output folder: bench.json and the benchmark's report runs"),
    examples: int | None = typer.Option(None, help="German examples for the speedup/throughput parts (default 40, the quick profile's)"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    repeats: int = typer.Option(3, help="timed repeats of each throughput measurement (best is kept)"),
    reports: bool = typer.Option(True, help="also run the quick report and its doubled-size variant (passes and memory)"),
    sweep: bool = typer.Option(False, "--sweep", help="benchmark the sweep instead: scheduler overhead, scaling on this machine, one task's memory before/after the single-copy fix, GPU line (bench_sweep.json)"),
    debug: bool = typer.Option(False, help="show tracebacks"),
) -> None:
    """Measure the engine: speedup over the seed's per-example loop, efficiency vs Hugging
    Face, FLOP/s vs matmul, passes vs the seed's code path, peak memory (bench.json); with
    `--sweep`, the training-dynamics sweep."""
    from pathlib import Path

    from .bench import print_bench, print_sweep_bench, run_bench, run_sweep_bench

    if sweep:
        with one_line_errors(debug):
            res = run_sweep_bench(Path(out), tokenizer, data_dir, log=lambda s: typer.echo(s, err=True))
        print_sweep_bench(res, typer.echo)
        typer.echo(f"\nwritten: {Path(out) / 'bench_sweep.json'}")
        return
    with one_line_errors(debug):
        res = run_bench(model, tokenizer, data_dir, Path(out), examples=examples, device=device,
                        repeats=repeats, report_runs=reports, log=lambda s: typer.echo(s, err=True))
    print_bench(res, typer.echo)
    typer.echo(f"\nwritten: {Path(out) / 'bench.json'}")
    if not res["speedup_detail"]["agree_1e-4"]:  # a speedup of wrong numbers is no speedup
        typer.echo("error: the engine's losses differ from the seed-style loop by more than 1e-4", err=True)
        raise typer.Exit(1)


@app.command()
def sweep(
    models: str = typer.Option(..., help="comma-separated: pythia-<size>[-deduped] (14m, 31m, 70m, 160m, 410m, 1b, 1.4b, 2.8b, 6.9b, 12b), PolyPythias pythia-<size>-seed<1-9> (14m ... 410m) or pythia-160m-data-seed<1-3>/-weight-seed<1-3> (each also EleutherAI/<name>; the names report --model takes), organism (its saved checkpoints), or checkpoint folders"),
    revisions: str = typer.Option("quick", help="all (Pythia's 154 checkpoints) | quick | paper | step1000,step2000,... (for the organism: its saved checkpoints, or a list of them)"),
    neuron: str | None = typer.Option(None, help="LxNy, or auto (the best German-positive neuron of discovery at each model's final checkpoint, tracked through its training); default L3N669 for pythia-70m, auto for the others"),
    profile: str = typer.Option("quick", help="quick | paper (sample sizes)"),
    set_: list[str] | None = typer.Option(None, "--set", help=_SET_HELP),  # noqa: B008 (typer idiom)
    scheduler: str = typer.Option("local", help="local (a Dask LocalCluster started here) | tcp://HOST:PORT (a running Dask scheduler) | none (serial, no Dask)"),
    workers: int | None = typer.Option(None, help="workers of the local cluster (default: as many as fit the cores, one per GPU with --device cuda)"),
    threads: int | None = typer.Option(None, help="torch threads per task (default 1; in each task's key, as the thread count changes a CPU's bytes; workers x threads <= cores)"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    out: str | None = typer.Option(None, help="output folder (default build/sweep; build/sweep-bfloat16 for --dtype bfloat16, -tf32 for --tf32 on): store/, sweep.json, table.parquet, table.csv, the report"),
    data_dir: str | None = typer.Option(None, envvar="GERMAN_NEURON_DATA_DIR", help="folder with the seed's data files (offline; every worker must see it)"),
    corpus: str | None = typer.Option(None, help="seed | fixture | europarl-heldout; default: europarl-heldout for the organism, else seed"),
    keep_weights: str = typer.Option("auto", help="auto | yes | no: keep each Hub revision's downloaded weights after its task (auto: no for 1B parameters and up)"),
    batch_tokens: int | None = typer.Option(None, help="padded tokens per forward batch (default 4,096; lower it after an out-of-memory)"),
    dtype: str = typer.Option("float32", help=_DTYPE_HELP),
    tf32: str = typer.Option("off", help=_TF32_HELP),
    report: bool = typer.Option(True, help="write the sweep's report (report.html, report.pdf) at the end"),
    renderer: str = typer.Option("auto", help="auto | quarto | pandoc"),
    paper_dir: str | None = typer.Option(None, envvar="GERMAN_NEURON_PAPER_DIR", help=_PAPER_HELP),
    debug: bool = typer.Option(False, help="show tracebacks"),
) -> None:
    """Measure the German neuron across training checkpoints and model sizes (Dask), one
    cached artifact per checkpoint, and write a tidy table (Parquet, CSV) and a report."""
    from ..core.paper import resolve_paper_dir, verify
    from .sweep.plan import plan_sweep
    from .sweep.report import build_sweep_report
    from .sweep.run import run_sweep

    def log(s):
        typer.echo(s, err=True)

    with one_line_errors(debug):
        # also without a report: pythia-70m's tasks measure the paper's trigrams from it
        folder = resolve_paper_dir(paper_dir, data_dir)
        if folder is not None:  # a changed file is refused before any task runs
            verify(folder)
        plan = plan_sweep(models, revisions, neuron=neuron, profile=profile, overrides=set_ or [],
                          device=device, out=out, data_dir=data_dir, corpus=corpus,
                          batch_tokens=batch_tokens, threads=threads, keep_weights=keep_weights,
                          dtype=dtype, tf32=tf32, paper_dir=folder, log=log)
        res = run_sweep(plan, scheduler=scheduler, workers=workers, log=log,
                        command="german-neuron " + shlex.join(sys.argv[1:]))
        c = res["counts"]
        typer.echo(f"{sum(c.values())} tasks: {c.get('computed', 0)} computed, {c.get('reused', 0)} reused, "
                   f"{c.get('skipped', 0)} skipped, {c.get('failed', 0)} failed in {res['wall_s']:.1f} s")
        groups: dict = {}
        for t in res["tasks"]:
            if t["status"] in ("skipped", "failed"):
                groups.setdefault((t["status"], t["model"], t["reason"]), []).append(t["revision"])
        for (status, model, reason), revs in groups.items():
            shown = ", ".join(revs[:6]) + (f" and {len(revs) - 6} more" if len(revs) > 6 else "")
            typer.echo(f"  {status}: {model} {shown}: {reason}")
        typer.echo(f"table: {res['table']['parquet']} ({res['table']['rows']} rows), {res['table']['csv']}")
        if report and res["table"]["rows"]:
            paths = build_sweep_report(res["out"], renderer=renderer, log=log, paper_dir=folder, data_dir=data_dir)
            for kind in ("html", "pdf"):
                typer.echo(f"{kind}: {paths[kind]}")
    if c.get("failed"):
        raise typer.Exit(1)


@app.command()
def diff(first: str = typer.Argument(..., help="output folder of one run"),
         second: str = typer.Argument(..., help="output folder of another run")) -> None:
    """Compare the artifacts of two runs; exit 1 unless every artifact is identical."""
    from pathlib import Path

    from .regression import diff_runs

    res = diff_runs(Path(first), Path(second))
    for s in res["steps"]:
        typer.echo(f"{s['step']:<28} {s['status']}")
        for why in s.get("key_changed_by") or []:
            typer.echo(f"  key changed by {why}")
    for m in res["moved"]:
        typer.echo(f"  moved: {m['metric']}: {m['first']!r} -> {m['second']!r}")
    typer.echo("identical" if res["identical"] else "DIFFERENT")
    if not res["identical"]:
        raise typer.Exit(1)


def main() -> None:
    # Tracebacks only with --debug (or GERMAN_NEURON_DEBUG=1); typer's pretty exceptions off.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app(prog_name="german-neuron")


if __name__ == "__main__":
    main()
