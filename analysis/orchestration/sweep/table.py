"""The sweep's tidy table: one row per model x revision x measure (`TABLE_COLUMNS`), from
`sweep.json` and the tasks' artifacts; written as `table.parquet` and `table.csv`. Beside it
the per-trigram table (`TRIGRAM_COLUMNS`: one row per model x revision x trigram), written as
`trigrams.parquet` and `trigrams.csv`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ...core.errors import ReportError

TRIGRAM_TABLE = "trigrams.parquet"  # the per-trigram losses (and trigrams.csv)
TABLE_COLUMNS = ("model", "kind", "source", "size", "n_params", "deduped", "revision", "step",
                 "tokens_seen", "commit", "key", "measure", "language", "neuron", "value",
                 "ci_low", "ci_high")


def table_rows(task: dict, art: dict, model: dict) -> list[dict]:
    """The tidy rows of one measured checkpoint (see `TABLE_COLUMNS` and docs/ARTIFACTS.md):
    `loss` (nats), `context_f1`, `context_test_acc`, `context_english_mean` (the ablation
    value), `context_ablation_pct` (loss increase in %, with its 95% interval), `best_f1`,
    `best_test_acc`, `best_ablation_pct` (`neuron`: the best German-positive neuron at
    that checkpoint), and `train_loss` (organism checkpoints). With the task's n-gram
    measurements (`families.ngram_dynamics`; `neuron`: the context neuron, nats):
    `context_ablation_nats` (per language, the increase the percent is of, with its
    interval), `context_effect_total` / `_direct` / `_indirect` (German, the split of the
    context neuron's effect on the German examples, with 95% paired-bootstrap intervals),
    `trigram_loss_clean` / `_ablated` / `_direct_ablated` / `_indirect_ablated` (German,
    the mean over the trigrams of each trigram's mean last-token loss over its prompts; the
    trigrams themselves in `trigram_rows`), `context_dla_frequent` (per language, the
    context neuron's direct logit attribution `W_out[neuron] @ W_U` averaged over the
    language's most frequent tokens, in logits per unit activation: the paper's figure 7),
    and for the other German neurons
    (`neuron`: the one with the largest value) `other_ablation_median` / `_max` (German
    loss increase, nats), `other_f1_median` / `_max` (their discovery F1), and `german_candidates_f1_0_85` (how many
    German-positive neurons have discovery F1 > 0.85)."""
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
    ng = res.get("ngrams")
    if ng:
        for lang in ("german", "english"):
            c = ctx[lang]
            add("context_ablation_nats", c["ablated"] - c["original"], lang, ctx["neuron"], c.get("increase_nats_ci"))
        for name, e in ng["text"]["effects"].items():
            add(f"context_effect_{name}", e["nats"], "german", ng["context_neuron"], e["nats_ci"])
        if ng.get("trigrams"):
            for path, v in ng["trigrams"]["mean"].items():
                add(f"trigram_loss_{path}", v, "german", ng["context_neuron"])
    dla = res.get("frequent_token_dla")
    if dla:
        for lang in ("german", "english"):
            add("context_dla_frequent", dla[lang]["mean"], lang, dla["neuron"])
    other = res.get("other_neurons")
    if other:
        add("german_candidates_f1_0_85", other["n_candidates_f1_0_85"])
        if other["neurons"]:
            top = max(other["neurons"], key=lambda r: r["increase"])
            add("other_ablation_median", other["increase_median"], "german")
            add("other_ablation_max", other["increase_max"], "german", top["neuron"])
            add("other_f1_median", other["f1_median"])
            add("other_f1_max", other["f1_max"], neuron=max(other["neurons"], key=lambda r: r["f1"])["neuron"])
    return rows


TRIGRAM_COLUMNS = ("model", "revision", "step", "key", "source", "index", "trigram", "clean", "ablated",
                   "direct_ablated", "indirect_ablated", "context_activation")


def trigram_rows(task: dict, art: dict) -> list[dict]:
    """One row per trigram of one measured checkpoint (`TRIGRAM_COLUMNS`): its mean
    last-token loss over its prompts (nats) with the context neuron as is (`clean`),
    mean-ablated, only its direct path ablated and only its indirect path ablated, and the
    context neuron's mean activation at the predicting position; `source`: `paper` (the
    authors' 228) or `selected` (`ngram_dynamics.text_trigrams`); `index`: the trigram's
    place in the measured list. Empty without n-gram measurements."""
    ng = art["result"].get("ngrams")
    if not ng or not ng.get("trigrams"):
        return []
    per = ng["trigrams"]["per_trigram"]
    act = ng["trigrams"]["context_activation"]
    return [{"model": task["model"], "revision": task["revision"], "step": task["step"], "key": art["key"],
             "source": ng["trigram_source"]["kind"], "index": i, "trigram": t,
             **{p: float(per[p][i]) for p in ("clean", "ablated", "direct_ablated", "indirect_ablated")},
             "context_activation": float(act[i])} for i, t in enumerate(ng["trigram_list"])]


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


def build_trigram_table(out: str | os.PathLike, manifest: dict | None = None):
    """The per-trigram table (pandas DataFrame, `TRIGRAM_COLUMNS`) of the sweep's computed
    and reused tasks, from their artifacts (checked as in `build_table`)."""
    import pandas as pd

    from .task import load_artifact

    out = Path(out)
    manifest = manifest or json.loads((out / "sweep.json").read_text())
    rows = []
    for t in manifest["tasks"]:
        if t["status"] not in ("computed", "reused"):
            continue
        art = load_artifact(out / "store", t["key"])
        if art is None:
            raise ReportError(f"{out / 'sweep.json'} lists {t['model']} {t['revision']} as {t['status']} but "
                              f"its artifact {t['key'][:12]} is not (valid) in {out / 'store'}",
                              hint="rerun the sweep: it recomputes what its store lacks")
        rows += trigram_rows(t, art)
    df = pd.DataFrame(rows, columns=list(TRIGRAM_COLUMNS))
    df["step"] = df["step"].astype("Int64")
    df["index"] = df["index"].astype("int64")
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
    tri = build_trigram_table(out, manifest)
    buf = io.BytesIO()
    tri.to_parquet(buf, index=False, engine="pyarrow")
    atomic_write_bytes(out / TRIGRAM_TABLE, buf.getvalue())
    atomic_write_text(out / TRIGRAM_TABLE.replace(".parquet", ".csv"), tri.to_csv(index=False))
    return {"parquet": out / "table.parquet", "csv": out / "table.csv", "rows": len(df),
            "trigrams": out / TRIGRAM_TABLE, "trigram_rows": len(tri)}
