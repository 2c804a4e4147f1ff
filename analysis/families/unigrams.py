"""Unigram statistics of the German and English corpora (seed: "Get German unigram
statistics", `count_token_occurrences`).

The seed counts with `token_counts[tokens] += 1`, where `tokens` are an example's ids
without BOS. With repeated indices PyTorch's advanced-index `+=` writes each distinct index
once, so the count of a token is the **number of examples it occurs in** (document
frequency), not its number of occurrences. That is reproduced here; the total occurrence
count is recorded beside it.

The seed then averages `token_differences[top_100_unigrams]`. At that point in the notebook
`token_differences` had been reassigned to the **neuron-direction** unembedding difference
(`W_out[3, 669] @ W_U × (active − inactive)`, printed means 1.7974 German and 0.3300
English), not the residual-stream difference of the cell before it; both are reported,
labelled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SEED_SECTION = "Get German unigram statistics"
TOP_K = 100


def document_counts(token_lists: Sequence[Sequence[int]], d_vocab: int,
                    skip_first: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(examples containing each token, total occurrences of each token), BOS dropped
    (`skip_first`). Seed: `token_counts[tokens] += 1` per example."""
    docs = np.zeros(d_vocab, dtype=np.int64)
    total = np.zeros(d_vocab, dtype=np.int64)
    for toks in token_lists:
        t = np.asarray(toks[1:] if skip_first else toks, dtype=np.int64)
        if t.size == 0:
            continue
        docs[np.unique(t)] += 1
        total += np.bincount(t, minlength=d_vocab)
    return docs, total


def top_unigrams(counts: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Ids of the `k` largest counts (ties: lower id first)."""
    order = np.lexsort((np.arange(len(counts)), -counts))
    return order[:k]


# ------------------------------------------------------------------ pipeline step


def run_step(run, arts: dict) -> dict:
    """Step `unigrams`: top unigrams of every German and English example, and the mean
    logit differences of `l3_tokens` over them."""
    import sys

    from ..core.runner import LANGUAGES

    toks = {lang: run.tokens(lang, None) for lang in LANGUAGES}
    l3 = arts["l3_tokens"]
    params = {"examples": "all", "top_k": TOP_K, "count": "examples containing the token "
              "(seed token_counts[tokens] += 1), BOS excluded",
              "tokens": {lang: toks[lang][1] for lang in toks}}

    def compute():
        d_vocab = int(run.fwd.w.W_U.shape[1])
        diffs = {"neuron_direction": run.store.load_array("l3_tokens", "neuron_direction_logit_diff"),
                 "resid_post": run.store.load_array("l3_tokens", "resid_post_logit_diff")}
        result = {"top_k": TOP_K, "context_neuron": l3["result"]["context_neuron"],
                  "count_definition": params["count"], "languages": {}}
        arrays = {}
        for lang in LANGUAGES:
            docs, total = document_counts(toks[lang][0], d_vocab)
            top = top_unigrams(docs)
            labels = run.model.to_str_tokens(top.tolist())
            result["languages"][lang] = {
                "n_examples": toks[lang][1]["used"], "n_tokens": int(total.sum()),
                "n_distinct": int((docs > 0).sum()),
                "top": [{"token_id": int(i), "token": s, "examples": int(docs[i]),
                         "occurrences": int(total[i]),
                         "neuron_direction_logit_diff": float(diffs["neuron_direction"][i]),
                         "resid_post_logit_diff": float(diffs["resid_post"][i])}
                        for i, s in zip(top, labels, strict=True)],
                "mean_neuron_direction_logit_diff": float(diffs["neuron_direction"][top].mean()),
                "mean_resid_post_logit_diff": float(diffs["resid_post"][top].mean()),
            }
            arrays[f"counts_{lang}"] = docs
        r = result["languages"]
        result["overlap"] = len({t["token_id"] for t in r["german"]["top"]}
                                & {t["token_id"] for t in r["english"]["top"]})
        # names used by the regression baseline (seed printed value: neuron direction)
        result["german_mean_logit_diff"] = r["german"]["mean_neuron_direction_logit_diff"]
        result["english_mean_logit_diff"] = r["english"]["mean_neuron_direction_logit_diff"]
        return result, arrays

    inputs = run.inputs("unigrams", sys.modules[__name__], params, run.data_prov(*LANGUAGES),
                        {"l3_tokens": l3["key"]})
    return run.step(inputs, compute)


def figures(run, arts: dict, fig_dir) -> list[dict]:
    import figures.dla as plots_dla
    from figures.plots import save

    art = arts["unigrams"]
    r = art["result"]
    ctx = r["context_neuron"]
    meta = {"step": "unigrams", "artifact_key": art["key"], "seed_cell": SEED_SECTION}
    out = []
    for lang in ("german", "english"):
        d = r["languages"][lang]
        fig = plots_dla.unigram_counts(d["top"], f"Top {len(d['top'])} {lang.capitalize()} unigrams")
        out.append(save(fig, fig_dir, f"unigrams_{lang}", {
            **meta, "function": "figures.dla.unigram_counts",
            "caption": f"The {len(d['top'])} most frequent tokens of all {d['n_examples']:,} {lang.capitalize()} "
                       "examples: number of examples containing each token (the seed's count)."}))
    fig = plots_dla.unigram_logit_diffs(
        {lang.capitalize(): [t["neuron_direction_logit_diff"] for t in r["languages"][lang]["top"]]
         for lang in ("german", "english")}, ctx)
    out.append(save(fig, fig_dir, "unigrams_logit_diff", {
        **meta, "function": "figures.dla.unigram_logit_diffs",
        "caption": f"Neuron-direction logit difference of {ctx} (active − inactive) over the top "
                   f"{r['top_k']} German and the top {r['top_k']} English unigrams; dashed lines: means."}))
    return out


def regression_metrics(arts):
    """(name, value, seed section) for `analysis.orchestration.regression` (`unigrams.<lang>_mean_logit_diff`,
    the neuron-direction means the seed printed)."""
    if "unigrams" not in arts:
        return
    r = arts["unigrams"]["result"]
    yield "unigrams.german_mean_logit_diff", r["german_mean_logit_diff"], SEED_SECTION
    yield "unigrams.english_mean_logit_diff", r["english_mean_logit_diff"], SEED_SECTION
