"""The authors' curves and claims in a sweep's report: for the sweep's models that are
`EleutherAI/pythia-70m` itself (`core.paper.is_real_pythia_70m`: a Hub model of that
repository, whatever its revisions), the paper's claims (`families.paper.CLAIMS`) are checked
on the sweep's table and written to `<out>/claims.json`; `figures.py` overlays the authors'
series on the figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .table import TRIGRAM_TABLE

CLAIMS_FILE = "claims.json"


def _sha256(path: Path) -> str | None:
    """The file's sha256, None when there is none (a sweep from before the trigram table)."""
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def real_models(models: list[dict]) -> list[str]:
    """The names of the sweep's models (`sweep.json` settings) that are Pythia-70M itself."""
    from ...core.paper import is_real_pythia_70m

    return [m["name"] for m in models if is_real_pythia_70m(m.get("source"), m.get("kind"))]


def ours_from_table(table, model: str, trigrams=None):
    """`families.paper.Ours` of one model from the sweep's tidy table: per checkpoint the
    context neuron's F1 and its German mean-ablation increase in nats (the table's percent
    times the German loss, the same mean the percent is of; its interval likewise); the
    total / direct / indirect split of its effect on German (`context_effect_*`) at every
    checkpoint that measured it; and, from `trigrams` (the sweep's per-trigram table,
    `table.TRIGRAM_COLUMNS`), each trigram's clean and ablated loss per checkpoint, when
    they are the paper's trigrams (a list chosen from the text is another set of trigrams:
    the claim is then not measured, and `missing` says why)."""
    import pandas as pd

    from ...families.paper import FINAL_STEP, Ours

    t = table[(table["model"] == model) & table["step"].notna()]

    def rows(measure, language=None):
        r = t[(t["measure"] == measure) & ((t["language"] == language) if language else t["language"].isna())]
        return r.set_index(r["step"].astype(int)).sort_index()

    f1, pct, loss = rows("context_f1"), rows("context_ablation_pct", "german"), rows("loss", "german")
    steps = [s for s in f1.index if s in pct.index and s in loss.index]
    inc = [float(pct.loc[s, "value"]) / 100.0 * float(loss.loc[s, "value"]) for s in steps]
    cks = pd.DataFrame({"step": steps, "f1": [float(f1.loc[s, "value"]) for s in steps], "increase": inc})
    final = None
    if FINAL_STEP in steps:
        lo, hi, base = (float(pct.loc[FINAL_STEP, c]) for c in ("ci_low", "ci_high", "value"))
        scale = float(loss.loc[FINAL_STEP, "value"]) / 100.0
        final = {"f1": float(f1.loc[FINAL_STEP, "value"]), "f1_ci": None,
                 "increase": base * scale,
                 "increase_ci": None if pd.isna(lo) or pd.isna(hi) else [lo * scale, hi * scale]}
    neuron = str(f1["neuron"].iloc[-1]) if len(f1) else "none"
    missing = {}
    tot, dire, ind = (rows(f"context_effect_{k}", "german") for k in ("total", "direct", "indirect"))
    split = None
    if len(tot):
        s = [x for x in tot.index if x in dire.index and x in ind.index]
        # our `indirect` effect: only the path through later layers ablated (the authors'
        # "Direct Effect" column, `indirect_path_ablated`); `direct` the converse
        split = pd.DataFrame({"step": s, "total": [float(tot.loc[x, "value"]) for x in s],
                              "indirect_path_ablated": [float(ind.loc[x, "value"]) for x in s],
                              "direct_path_ablated": [float(dire.loc[x, "value"]) for x in s]})
    else:
        missing["effect_split"] = "the sweep's artifacts hold no n-gram measurement (an older sweep); rerun it"
    tri = None
    mine = None if trigrams is None else trigrams[(trigrams["model"] == model) & trigrams["step"].notna()]
    if mine is None or mine.empty:
        missing["trigram_losses"] = "the sweep measured no trigram losses for this model (an older sweep); rerun it"
    elif set(mine["source"]) != {"paper"}:
        missing["trigram_losses"] = ("the sweep measured trigrams chosen from the text, not the paper's 228 (the "
                                     "authors' folder was not given to the sweep: pass --paper-dir to it)")
    else:
        tri = pd.DataFrame({"step": mine["step"].astype(int).to_numpy(), "trigram": mine["trigram"].to_numpy(),
                            "original": mine["clean"].to_numpy(dtype=float),
                            "ablated": mine["ablated"].to_numpy(dtype=float)})
    return Ours(neuron=neuron, checkpoints=cks, final=final, effect_split=split, trigram_losses=tri,
                missing=missing)


def paper_context(out: str | os.PathLike, table, models: list[dict], paper_dir: str | os.PathLike | None,
                  table_sha256: str, trigrams=None) -> dict | None:
    """What the sweep's report says about the paper (`trigrams`: the sweep's per-trigram
    table, None for an older sweep without one): None when no model of the sweep is
    Pythia-70M itself; `{"available": False, "hint", "models"}` when the authors' folder is
    not available; else the claims checked for each such model, written first to
    `<out>/claims.json` (atomically; the report reads them back from there) and returned as
    `{"available": True, "dir", "files", "path", "sha256", "models": [{"name", "claims",
    "counts"}]}`.

    Raises:
        DataError: a file of the authors' folder is missing or changed.
    """
    import hashlib

    from ...core import paper as ref
    from ...core.artifacts import atomic_write_text
    from ...core.codehash import code_record
    from ...families import paper as claims

    names = real_models(models)
    if not names:
        return None
    if paper_dir is None:
        return {"available": False, "hint": ref.HOW_TO_PASS, "models": names}
    data = ref.load_paper(paper_dir)
    record = {"schema": 1, "kind": "german-neuron sweep claims",
              "paper": {"dir": str(Path(paper_dir).resolve()),
                        "files": {n: {"sha256": d, "source": ref.FILES[n].source} for n, d in data.files.items()}},
              "table_sha256": table_sha256, "trigrams_sha256": _sha256(Path(out) / TRIGRAM_TABLE),
              "code": code_record(claims.__name__),
              "definitions": claims.definitions(),
              "models": {m: claims.evaluate(data, ours_from_table(table, m, trigrams)) for m in names}}
    path = Path(out) / CLAIMS_FILE
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True, allow_nan=False) + "\n")
    raw = path.read_bytes()
    back = json.loads(raw)
    return {"available": True, "dir": back["paper"]["dir"], "files": back["paper"]["files"],
            "path": str(path.resolve()), "sha256": hashlib.sha256(raw).hexdigest(),
            "models": [{"name": m, **back["models"][m]} for m in names]}
