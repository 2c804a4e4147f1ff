"""Per training seed (issue 21 §3): in a sweep over one Pythia size trained with several
seeds (`pythia-70m` and the PolyPythias `pythia-70m-seed1` ... `-seed9`, or the 160m
`-data-seed` / `-weight-seed` runs), each run's best German neuron, its probe F1, its
mean-ablation effect and the step at which it forms, for one table and one figure of the
sweep's report.

Definitions (stated in the report):

* **Best German neuron**: the top German-positive neuron of discovery at the run's last
  measured checkpoint (`best` of that checkpoint's artifact; with `--neuron auto`, the
  context neuron the sweep anchored on the final checkpoint). Its **F1** is discovery's
  there (sklearn refit), its **ablation effect** the loss increase (%, 95% paired-bootstrap
  interval) when it is set to its mean English activation at that checkpoint (`best` of the
  artifact, the table's `best_ablation_pct`).
* **Forms at**: the first checkpoint, in step order, at which *that* neuron's probe F1
  reaches `summary.THRESHOLD_F1` (0.9, the threshold the sweep's report uses for the
  context neuron). Its F1 at every checkpoint is read from the checkpoint's
  `discovery_f1` array (discovery's vectorised fit of every neuron, float32
  `[n_layers, d_mlp]`), so the neuron is followed back through training even where
  another neuron was the best; None when no measured checkpoint reaches the threshold.

Driver code (not in any task's key): it reads the table and the store, computes nothing
on a model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .summary import THRESHOLD_F1

PYTHIA_SEED = 1234  # the Pythia suite's own training seed (the registry's description)


def seed_models(models: Sequence[dict]) -> list[dict]:
    """The sweep's models that are runs of one Pythia size with different seeds: for every
    size of which the sweep has a PolyPythias run (`pythia.variation` set), that size's
    non-deduplicated Pythia models (the suite's own run and its PolyPythias runs), ordered
    by size (as given), then the suite's run first, then variation and seed."""
    pyth = [m for m in models if m.get("pythia") and not m["pythia"].get("deduped")]
    sizes = [m["pythia"]["size"] for m in pyth if m["pythia"].get("variation")]
    sizes = list(dict.fromkeys(sizes))
    out = []
    for size in sizes:
        group = [m for m in pyth if m["pythia"]["size"] == size]
        out += sorted(group, key=lambda m: (m["pythia"].get("variation") is not None,
                                            m["pythia"].get("variation") or "", m["pythia"].get("seed") or 0))
    return out


def seed_label(m: dict) -> str:
    """`seed 3` (PolyPythias seed), `data-seed 2`, or `Pythia (seed 1234)` for the suite's run."""
    p = m["pythia"]
    if not p.get("variation"):
        return f"Pythia (seed {PYTHIA_SEED})"
    return f"{p['variation']} {p['seed']}"


def formation_step(steps: Sequence[int], f1: Sequence[float], threshold: float = THRESHOLD_F1) -> int | None:
    """The first step (in ascending step order) whose F1 is at least `threshold`, None when
    none is. `steps` and `f1` pair up; order does not matter."""
    for s, v in sorted(zip(steps, f1, strict=True)):
        if v >= threshold:
            return int(s)
    return None


def neuron_f1_series(store: str | os.PathLike, tasks: Sequence[dict], neuron: str) -> list[tuple[int, float]]:
    """`[(step, F1)]` of `neuron` (`LxNy`) at each task's checkpoint (tasks with a step),
    ascending: the checkpoint artifact's `discovery_f1[layer, index]` (float32, discovery's
    vectorised fit)."""
    from ...core.artifacts import ArtifactStore
    from ...core.config import Neuron
    from .task import TASK_STEP, artifact_dir

    n = Neuron.parse(neuron)
    out = []
    for t in tasks:
        if t.get("step") is None:
            continue
        f1 = ArtifactStore(artifact_dir(store, t["key"])).load_array(TASK_STEP, "discovery_f1")
        out.append((int(t["step"]), float(f1[n.layer, n.index])))
    return sorted(out)


def seed_rows(out: str | os.PathLike, manifest: dict, table, threshold: float = THRESHOLD_F1) -> list[dict]:
    """One row per seed model (`seed_models`) with a measured checkpoint that has a step:
    `{"model", "label", "size", "variation", "seed", "neuron", "layer", "f1", "german_pct",
    "german_ci", "english_pct", "english_ci", "final_step", "formed_step",
    "formed_tokens_seen", "n_checkpoints", "series": [(step, f1)]}` (module docstring;
    percentages in %, F1 in [0, 1]). `table`: the sweep's tidy table (pandas)."""
    import pandas as pd

    from ...core.config import Neuron

    models = seed_models(manifest["settings"]["models"])
    done = [t for t in manifest["tasks"] if t["status"] in ("computed", "reused")]
    rows = []
    for m in models:
        t = table[(table["model"] == m["name"]) & table["step"].notna()]
        if t.empty:
            continue
        last = t[t["step"] == t["step"].max()]

        def pick(measure, language=None, frame=last):
            r = frame[(frame["measure"] == measure)
                      & ((frame["language"] == language) if language else frame["language"].isna())]
            return None if r.empty else r.iloc[0]

        best = pick("best_f1")
        if best is None:  # no German-positive neuron at the last checkpoint
            rows.append({"model": m["name"], "label": seed_label(m), "size": m["pythia"]["size"],
                         "variation": m["pythia"].get("variation"), "seed": m["pythia"].get("seed"),
                         **dict.fromkeys(("neuron", "layer", "f1", "german_pct", "german_ci", "english_pct",
                                          "english_ci", "formed_step", "formed_tokens_seen")),
                         "final_step": int(last["step"].iloc[0]),
                         "n_checkpoints": int(t["revision"].nunique()), "series": []})
            continue
        neuron = best["neuron"]
        de, en = pick("best_ablation_pct", "german"), pick("best_ablation_pct", "english")
        series = neuron_f1_series(Path(out) / "store", [x for x in done if x["model"] == m["name"]], neuron)
        formed = formation_step([s for s, _ in series], [v for _, v in series], threshold)
        tok = t[(t["step"] == formed) & t["tokens_seen"].notna()] if formed is not None else t.iloc[:0]

        def ci(r):
            return None if r is None or pd.isna(r["ci_low"]) else [float(r["ci_low"]), float(r["ci_high"])]

        rows.append({"model": m["name"], "label": seed_label(m), "size": m["pythia"]["size"],
                     "variation": m["pythia"].get("variation"), "seed": m["pythia"].get("seed"),
                     "neuron": neuron, "layer": Neuron.parse(neuron).layer, "f1": float(best["value"]),
                     "german_pct": None if de is None else float(de["value"]), "german_ci": ci(de),
                     "english_pct": None if en is None else float(en["value"]), "english_ci": ci(en),
                     "final_step": int(last["step"].iloc[0]), "formed_step": formed,
                     "formed_tokens_seen": None if tok.empty else int(tok["tokens_seen"].iloc[0]),
                     "n_checkpoints": int(t["revision"].nunique()), "series": series})
    return rows


def draw_seed_figure(rows: Sequence[dict], fig_dir: Path, digest: str, table_path: str,
                     threshold: float = THRESHOLD_F1) -> list[dict]:
    """The per-seed figure (`figures.sweep_seeds.seed_figure`) saved into `fig_dir`; [] when
    no seed row has a neuron. Its record's `artifact_key` is the table's sha256 (`digest`)."""
    import figures.plots as plots
    import figures.sweep_seeds as figs

    rows = [r for r in rows if r.get("neuron")]
    if not rows:
        return []
    return [plots.save(figs.seed_figure(rows, threshold), fig_dir, "sweep_seeds", {
        "step": "sweep_seeds", "artifact_key": digest, "function": "figures.sweep_seeds.seed_figure",
        "caption": "Per training seed: left, the probe F1 of each run's best German neuron (at its last "
                   "measured checkpoint) at every checkpoint, the dot where it first reaches "
                   f"{threshold} (it forms); right, the German loss increase (%) when that neuron is "
                   "mean-ablated at the last checkpoint (bars: 95% paired-bootstrap interval).",
        "seed_cell": None, "table": table_path})]
