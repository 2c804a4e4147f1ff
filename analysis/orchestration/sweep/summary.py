"""What the report says about a sweep: settings, counts, skipped and failed tasks, and per
model where its context neuron forms (`THRESHOLD_F1`) and its numbers at the last
checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ...core.errors import UsageError

THRESHOLD_F1 = 0.9          # "the neuron has formed": the context neuron's probe F1 reaches this
# The n-gram numbers the report states at each model's last checkpoint: (name, measure, language).
NGRAM_LAST = (("effect_total", "context_effect_total", "german"),
              ("effect_direct", "context_effect_direct", "german"),
              ("effect_indirect", "context_effect_indirect", "german"),
              ("trigram_clean", "trigram_loss_clean", "german"),
              ("trigram_ablated", "trigram_loss_ablated", "german"),
              ("other_max", "other_ablation_max", "german"),
              ("dla_german", "context_dla_frequent", "german"),   # the paper's figure 7
              ("dla_english", "context_dla_frequent", "english"))


def first_reaching(table, threshold: float = THRESHOLD_F1) -> dict[str, dict | None]:
    """{model: {"step", "tokens_seen", "revision", "f1"}} of the first checkpoint (in step
    order) whose context neuron's probe F1 is at least `threshold`; None where none is."""
    out = {}
    import pandas as pd

    f1 = table[(table["measure"] == "context_f1") & table["step"].notna()].sort_values("step")
    for model, g in f1.groupby("model", sort=False):
        hit = g[g["value"] >= threshold]
        if hit.empty:
            out[model] = None
            continue
        h = hit.iloc[0]
        out[model] = {"step": int(h["step"]), "revision": h["revision"], "f1": float(h["value"]),
                      "tokens_seen": None if pd.isna(h["tokens_seen"]) else int(h["tokens_seen"])}
    return out


def sweep_summary(out: str | os.PathLike, paper_dir: str | os.PathLike | None = None) -> dict:
    """What the report says about a sweep: settings, counts, skipped and failed tasks, and
    per model its checkpoints, the first checkpoint where the context neuron's F1 reaches
    `THRESHOLD_F1`, and its numbers at the last checkpoint; under `paper`, for the models
    that are Pythia-70M itself, the paper's claims checked on the table
    (`reference.paper_context`; `paper_dir`: the authors' folder, None when not available).

    Raises:
        UsageError: `out` holds no sweep (no sweep.json or table.parquet).
        DataError: a file of `paper_dir` is missing or changed.
    """
    import hashlib

    import pandas as pd

    out = Path(out)
    if not (out / "sweep.json").is_file() or not (out / "table.parquet").is_file():
        raise UsageError(f"{out} holds no sweep (sweep.json and table.parquet)",
                         hint="run german-neuron sweep --out DIR first")
    manifest = json.loads((out / "sweep.json").read_text())
    table = pd.read_parquet(out / "table.parquet")
    first = first_reaching(table)
    models = []
    for m in manifest["settings"]["models"]:
        t = table[table["model"] == m["name"]]
        if t.empty:
            models.append({**m, "n_checkpoints": 0, "first": None, "last": None})
            continue
        order = t["step"].fillna(-1)  # a folder without a step counts as one checkpoint
        last = t[order == order.max()]
        last_step = None if pd.isna(last["step"].iloc[0]) else int(last["step"].iloc[0])

        def val(measure, language=None, frame=last):
            r = frame[(frame["measure"] == measure) & ((frame["language"] == language) if language
                                                       else frame["language"].isna())]
            return None if r.empty else (float(r.iloc[0]["value"]), r.iloc[0]["neuron"])

        ctx_f1 = val("context_f1")
        best = val("best_f1")
        models.append({**m, "n_checkpoints": int(t["revision"].nunique()),
                       "n_params": int(t["n_params"].iloc[0]),
                       "steps": [int(s) for s in sorted(t["step"].dropna().unique())],
                       "context_neuron": ctx_f1[1], "first": first.get(m["name"]),
                       "last": {"step": last_step, "revision": last.iloc[0]["revision"],
                                "context_f1": ctx_f1[0],
                                "ablation_german": val("context_ablation_pct", "german")[0],
                                "ablation_english": val("context_ablation_pct", "english")[0],
                                "ablation_german_nats": (val("context_ablation_nats", "german") or (None,))[0],
                                "ablation_english_nats": (val("context_ablation_nats", "english") or (None,))[0],
                                "loss_german": val("loss", "german")[0], "loss_english": val("loss", "english")[0],
                                "best_neuron": best[1] if best else None, "best_f1": best[0] if best else None,
                                # the n-gram measurements (None in a sweep from before them)
                                **{k: (val(m_, lang) or (None,))[0] for k, m_, lang in NGRAM_LAST}}})
    digest = hashlib.sha256((out / "table.parquet").read_bytes()).hexdigest()
    from .reference import paper_context
    from .table import TRIGRAM_TABLE

    trigrams = pd.read_parquet(out / TRIGRAM_TABLE) if (out / TRIGRAM_TABLE).is_file() else None
    paper = paper_context(out, table, manifest["settings"]["models"], paper_dir, digest, trigrams)
    from .seeds import seed_rows

    seeds = seed_rows(out, manifest, table)  # issue 21 §3: per training seed (seeds.py)
    return {"paper": paper, "dir": str(out.resolve()), "table": str((out / "table.parquet").resolve()),
            "table_csv": str((out / "table.csv").resolve()), "table_sha256": digest,
            "n_rows": int(len(table)), "threshold": THRESHOLD_F1, "models": models, "seeds": seeds,
            # Quirke et al.'s figures 1-8 -> ours: set once the figures are drawn (`report.paper_figure_map`)
            "paper_figures": None,
            "counts": manifest["counts"], "settings": manifest["settings"], "command": manifest["command"],
            "created": manifest["created"], "executor": manifest["executor"],
            "code": manifest["code"], "libraries": manifest["libraries"],
            "skipped": [t for t in manifest["tasks"] if t["status"] == "skipped"],
            "skipped_groups": _groups([t for t in manifest["tasks"] if t["status"] == "skipped"]),
            "failed": [t for t in manifest["tasks"] if t["status"] == "failed"],
            "tasks": [t for t in manifest["tasks"] if t["status"] in ("computed", "reused")]}


def _groups(tasks: list[dict]) -> list[dict]:
    """Tasks grouped by (model, reason), in order: `[{"model", "reason", "revisions"}]`."""
    out: dict[tuple, dict] = {}
    for t in tasks:
        g = out.setdefault((t["model"], t["reason"]), {"model": t["model"], "reason": t["reason"], "revisions": []})
        g["revisions"].append(t["revision"])
    return list(out.values())
