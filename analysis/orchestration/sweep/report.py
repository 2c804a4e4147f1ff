"""`german-neuron report --sweep DIR`: the report of a sweep."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .figures import draw_sweep_figures
from .summary import sweep_summary


def sweep_paper_dir(sweep_dir: str | os.PathLike, paper_dir: str | os.PathLike | None = None,
                    data_dir: str | os.PathLike | None = None) -> Path | None:
    """The authors' folder for a sweep's report (`core.paper.resolve_paper_dir`):
    `paper_dir`, else `$GERMAN_NEURON_PAPER_DIR`, else `paper` beside `data_dir` or beside the
    data folder the sweep recorded (`sweep.json`), else None.

    Raises:
        DataError: a named folder does not exist.
    """
    import json

    from ...core.paper import resolve_paper_dir

    recorded = None
    manifest = Path(sweep_dir) / "sweep.json"
    if data_dir is None and manifest.is_file():
        recorded = json.loads(manifest.read_text())["settings"].get("data_dir")
    return resolve_paper_dir(paper_dir, data_dir or recorded)


def paper_figure_map(drawn: list[str]) -> list[dict]:
    """Quirke et al.'s figures 1-8 and the figures of this sweep's report that show the same
    series (`figures.sweep.PAPER_FIGURES`, kept to those drawn, `drawn`: figure names):
    `[{"number", "what", "figures": [names]}]`; an empty list: not measured by the sweep."""
    from figures.sweep import PAPER_FIGURES

    have = set(drawn)
    return [{"number": n, "what": what, "figures": [f for f in names if f in have]}
            for n, what, names in PAPER_FIGURES]


def build_sweep_report(sweep_dir: str | os.PathLike, renderer: str = "auto",
                       log: Callable[[str], None] | None = None, paper_dir: str | os.PathLike | None = None,
                       data_dir: str | os.PathLike | None = None) -> dict:
    """`german-neuron report --sweep DIR`: the report of a sweep (its setup, one figure per
    measure with one line per model, the per-checkpoint table, skipped and failed tasks),
    written into DIR as `report.html`, `report.pdf`, `report.ipynb`. For a model that is
    Pythia-70M itself, the authors' series beside ours and the paper's claims checked
    (`sweep_paper_dir(DIR, paper_dir, data_dir)`; a sentence when there is no folder).

    Raises:
        UsageError: DIR holds no sweep.
        DataError: the authors' folder is named but missing, or a file in it changed.
        ReportError: the report cannot be built.
    """
    from report.build import SWEEP_SECTIONS, build_report

    log = log or (lambda s: print(s, file=sys.stderr))
    out = Path(sweep_dir)
    folder = sweep_paper_dir(out, paper_dir, data_dir)
    summary = sweep_summary(out, folder)
    figs = draw_sweep_figures(out, out / "figures", folder)
    summary["paper_figures"] = paper_figure_map([f["name"] for f in figs])
    names = ", ".join(m["name"] for m in summary["models"])
    context: dict[str, Any] = {
        "title": f"Training dynamics of the German context neuron: {names}",
        "run": {"created": summary["created"], "command": summary["command"], "neuron": None},
        "artifacts": {}, "figures": figs, "seed": None, "sweep": summary,
    }
    log("Rendering the sweep report ...")
    return build_report(out, context, renderer=renderer, sections=SWEEP_SECTIONS)
