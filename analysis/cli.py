"""Command line: `german-neuron report ...` (also `python -m analysis report ...`).

nox's `report` session only wraps this entry point.
"""

from __future__ import annotations

import os
import shlex
import sys

import typer

from .errors import ReportError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Reproducible report on the German context neuron (L3N669) in Pythia-70M.")


@app.callback()
def _root() -> None:
    """Reproducible report on the German context neuron (L3N669) in Pythia-70M."""


@app.command()
def report(
    model: str = typer.Option("pythia-70m", help="pythia-70m | pythia-70m-random | tiny | PATH to a HF GPT-NeoX checkpoint folder"),
    tokenizer: str | None = typer.Option(None, envvar="GERMAN_NEURON_TOKENIZER", help="tokenizer.json (GPT-NeoX-20B) for pythia-70m-random or a checkpoint without one"),
    data_dir: str | None = typer.Option(None, envvar="GERMAN_NEURON_DATA_DIR", help="folder with the seed's data files (offline); default $GERMAN_NEURON_DATA_DIR, else download"),
    neuron: str = typer.Option("L3N669", help="the context neuron under study, LxNy"),
    profile: str = typer.Option("quick", help="quick | paper (sample sizes)"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    out: str | None = typer.Option(None, help="output folder (default build/<model-id>/)"),
    corpus: str = typer.Option("seed", help="seed (KDE4 English / WMT German) | fixture (the package's own short texts)"),
    renderer: str = typer.Option("auto", help="auto (quarto if installed, else pandoc+typst) | quarto | pandoc"),
    render: bool = typer.Option(True, help="build report.html/report.pdf after the artifacts"),
    debug: bool = typer.Option(False, help="show tracebacks"),
) -> None:
    """Compute (or reuse) the artifacts and build report.html + report.pdf."""
    from .config import Neuron, RunConfig, get_profile
    from .errors import UsageError
    from .pipeline import run_report

    try:
        if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
            raise UsageError(f"unknown device {device!r}; choose cpu or cuda")
        if renderer not in ("auto", "quarto", "pandoc"):
            raise UsageError(f"unknown renderer {renderer!r}; choose auto, quarto or pandoc")
        cfg = RunConfig(model=model, neuron=Neuron.parse(neuron), profile=get_profile(profile),
                        device=device, data_dir=data_dir, tokenizer=tokenizer, out=out)
        res = run_report(cfg, render=render, renderer=renderer, corpus=corpus,
                         command="german-neuron " + shlex.join(sys.argv[1:]))
    except ReportError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    if res["report"]:
        for kind in ("html", "pdf"):
            typer.echo(f"{kind}: {res['report'][kind]}")


def main() -> None:
    # Tracebacks only with --debug (or GERMAN_NEURON_DEBUG=1); typer's pretty exceptions off.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app(prog_name="german-neuron")


if __name__ == "__main__":
    main()
