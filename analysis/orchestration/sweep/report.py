"""`german-neuron report --sweep DIR`: the report of a sweep."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .figures import draw_sweep_figures
from .summary import sweep_summary


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
