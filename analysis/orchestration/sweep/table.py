"""The sweep's tidy table: one row per model x revision x measure (`TABLE_COLUMNS`), from
`sweep.json` and the tasks' artifacts; written as `table.parquet` and `table.csv`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ...core.errors import ReportError

TABLE_COLUMNS = ("model", "kind", "source", "size", "n_params", "deduped", "revision", "step",
                 "tokens_seen", "commit", "key", "measure", "language", "neuron", "value",
                 "ci_low", "ci_high")


def table_rows(task: dict, art: dict, model: dict) -> list[dict]:
    """The tidy rows of one measured checkpoint (see `TABLE_COLUMNS` and docs/ARTIFACTS.md):
    `loss` (nats), `context_f1`, `context_test_acc`, `context_english_mean` (the ablation
    value), `context_ablation_pct` (loss increase in %, with its 95% interval), `best_f1`,
    `best_test_acc`, `best_ablation_pct` (`neuron`: the best German-positive neuron at
    that checkpoint), and `train_loss` (organism checkpoints)."""
    res = art["result"]
    base = {"model": task["model"], "kind": model["kind"], "source": model["source"], "size": model["size"],
            "n_params": res["model"]["n_params"], "deduped": model["deduped"], "revision": task["revision"],
            "step": task["step"], "tokens_seen": task["tokens_seen"], "commit": res["model"].get("commit"),
            "key": art["key"]}
    rows = []

    def add(measure, value, language=None, neuron=None, ci=None):
        rows.append({**base, "measure": measure, "language": language, "neuron": neuron,
                     "value": None if value is None else float(value),
                     "ci_low": None if not ci else float(ci[0]), "ci_high": None if not ci else float(ci[1])})

    for lang in ("german", "english"):
        add("loss", res["loss"][lang], lang)
    ctx = res["context"]
    add("context_f1", ctx["f1"], neuron=ctx["neuron"])
    add("context_test_acc", ctx["test_acc"], neuron=ctx["neuron"])
    add("context_english_mean", ctx["value"], neuron=ctx["neuron"])
    for lang in ("german", "english"):
        add("context_ablation_pct", ctx[lang]["percent_increase"], lang, ctx["neuron"],
            ctx[lang].get("percent_increase_ci"))
    best = res.get("best")
    if best:
        add("best_f1", best["f1"], neuron=best["neuron"])
        add("best_test_acc", best["test_acc"], neuron=best["neuron"])
        for lang in ("german", "english"):
            add("best_ablation_pct", best[lang]["percent_increase"], lang, best["neuron"],
                best[lang].get("percent_increase_ci"))
    if task.get("train_loss") is not None:
        add("train_loss", task["train_loss"])
    return rows


def build_table(out: str | os.PathLike, manifest: dict | None = None):
    """The sweep's tidy table (pandas DataFrame, `TABLE_COLUMNS`) from `sweep.json` and the
    artifacts of its computed and reused tasks, rows in model order (as given), then step,
    then measure.

    Raises:
        ReportError: a task `sweep.json` lists as computed or reused has no valid artifact
            in `out/store` (a row is never dropped without a word).
    """
    import pandas as pd

    from .task import load_artifact

    out = Path(out)
    manifest = manifest or json.loads((out / "sweep.json").read_text())
    models = {m["name"]: m for m in manifest["settings"]["models"]}
    store = out / "store"
    rows = []
    for t in manifest["tasks"]:
        if t["status"] not in ("computed", "reused"):
            continue
        art = load_artifact(store, t["key"])
        if art is None:
            raise ReportError(f"{out / 'sweep.json'} lists {t['model']} {t['revision']} as {t['status']} but "
                              f"its artifact {t['key'][:12]} is not (valid) in {store}",
                              hint="rerun the sweep: it recomputes what its store lacks")
        rows += table_rows(t, art, models[t["model"]])
    df = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    for col in ("step", "tokens_seen", "n_params"):
        df[col] = df[col].astype("Int64")
    for col in ("value", "ci_low", "ci_high"):
        df[col] = df[col].astype("float64")
    df["deduped"] = df["deduped"].astype("bool")
    return df


def write_table(out: Path, manifest: dict) -> dict:
    """Write `table.parquet` and `table.csv` atomically; returns their paths and row count."""
    import io

    from ...core.artifacts import atomic_write_bytes, atomic_write_text

    df = build_table(out, manifest)
    buf = io.BytesIO()
    df.to_parquet(buf, index=False, engine="pyarrow")
    atomic_write_bytes(out / "table.parquet", buf.getvalue())
    atomic_write_text(out / "table.csv", df.to_csv(index=False))
    return {"parquet": out / "table.parquet", "csv": out / "table.csv", "rows": len(df)}
