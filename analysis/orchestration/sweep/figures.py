"""The sweep's figures: one per measure, one line per model, from its table."""

from __future__ import annotations

import os
from pathlib import Path

from .summary import THRESHOLD_F1, first_reaching


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
