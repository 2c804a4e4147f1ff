"""The sweep's figures: one per measure, one line per model, from its table; for a model
that is Pythia-70M itself, the authors' published series beside it."""

from __future__ import annotations

import os
from pathlib import Path

from .summary import THRESHOLD_F1, first_reaching


def draw_sweep_figures(out: str | os.PathLike, fig_dir: Path, paper_dir: str | os.PathLike | None = None) -> list[dict]:
    """One figure per measure (`figures.sweep.MEASURES`), one line per model, from the
    sweep's table; saved with `figures.plots.save` into `fig_dir`. Each record's
    `artifact_key` is the sha256 of the table it was drawn from.

    `paper_dir`: the authors' folder (`core.paper`). When the sweep has a model that is
    Pythia-70M itself (`reference.real_models`), each measure the authors published is
    overlaid (`MEASURES`' `authors`), and their series this project does not measure yet
    are drawn alone (`figures.paper.REFERENCE_FIGURES`); their records name the files'
    sha256 (`reference_files`), with ours beside them where the sweep measured them.

    Raises:
        DataError: a file of `paper_dir` is missing or changed.
    """
    import hashlib
    import json

    import pandas as pd

    import figures.paper as ref_figs
    import figures.plots as plots
    import figures.sweep as figs

    from ...core import paper as ref
    from .reference import real_models

    table = pd.read_parquet(Path(out) / "table.parquet")
    if table.empty:
        return []
    digest = hashlib.sha256((Path(out) / "table.parquet").read_bytes()).hexdigest()
    marks = {m: (None if v is None else v["step"]) for m, v in first_reaching(table).items()}
    models = json.loads((Path(out) / "sweep.json").read_text())["settings"]["models"]
    real = real_models(models)
    data = ref.load_paper(paper_dir) if paper_dir is not None and real else None
    authors = ref.authors_series(data) if data is not None else None
    files = {"reference_files": data.files} if data is not None else {}
    note = (f" Dashed: {ref_figs.AUTHORS}'s published series for L3N669 in EleutherAI/pythia-70m "
            f"(beside {', '.join(real)}), checkpoint index mapped to training step.")
    records = []
    for spec in figs.MEASURES:
        overlay = authors if authors is not None and spec.get("authors") else None
        fig = figs.measure_figure(table, spec, marks, overlay)
        if fig is None:
            continue
        records.append(plots.save(fig, fig_dir, spec["name"], {
            "step": "sweep", "artifact_key": digest, "function": "figures.sweep.measure_figure",
            "caption": spec["caption"] + f" Dotted lines: the first checkpoint where the context neuron's "
                                          f"probe F1 reaches {THRESHOLD_F1}." + (note if overlay is not None else ""),
            "seed_cell": None, "table": str(Path(out).resolve() / "table.parquet"),
            **(files if overlay is not None else {})}))
    from .seeds import draw_seed_figure, seed_rows  # issue 21 §3: the per-seed figure

    rows = seed_rows(out, json.loads((Path(out) / "sweep.json").read_text()), table)
    records += draw_seed_figure(rows, fig_dir, digest, str(Path(out).resolve() / "table.parquet"))
    if authors is not None and not table["step"].dropna().empty:
        for spec in ref_figs.REFERENCE_FIGURES:
            ours = figs.ours_series(table, spec["ours"], real) if spec["ours"] else None
            if ours is not None and ours.empty:  # a sweep from before its n-gram measurements
                ours = None
            chart = ref_figs.reference_figure(spec, authors, ours)
            records.append(plots.save(chart, fig_dir, spec["name"], {
                "step": "sweep", "artifact_key": digest, "function": "figures.paper.reference_figure",
                "caption": spec["caption"] + " " + (ref_figs.OURS_NOTE if ours is not None else ref_figs.AUTHORS_ONLY),
                "seed_cell": None, "table": str(Path(out).resolve() / "table.parquet"), **files}))
    return records
