"""Step `planted`: the known-answer control checks itself. On `pythia-70m-planted` (see
`analysis.controls.planted`) the answer is known by construction — the planted neuron —
so the report's own artifacts must recover it. One row per claim of the founding notebook
about L3N669, measured on the planted neuron, each with its target and pass or fail:

| claim (seed cell) | measured from | target |
| --- | --- | --- |
| it is the German neuron one finds by probing every neuron ("Check classification accuracy of German neurons", run over all neurons) | `discovery`: rank among German-positive neurons | first |
| a single-neuron probe separates German from English (same cell) | `probes`: test F1 | ≥ 0.80 |
| mean-ablating it raises the German loss ("Check loss increase from disabling each German neuron") | `ablation`: German % increase | ≥ 1% |
| ... and leaves English alone (its English sanity check) | `ablation`: English % change | \\|·\\| < ⅓ of the German increase |
| its output helps predict German tokens ("Tokens boosted by L3 directly", "Get German unigram statistics") | the model's behaviour: on the report's German examples (never the fitting passages), the `TOP_TOKENS` target tokens whose loss rises most, on average over their ≥ `MIN_OCCURRENCES` occurrences, when it is mean-ablated (`token_loss_changes`), vs `unigrams`' top 100 German unigrams | ≥ 5 of 20 |
| the report studies it (`--neuron auto`, only then) | the run's context neuron | the planted neuron |

And for the planted contextual n-gram (`planted.plant_ngram`: a last-layer neuron that fires
when the planted neuron is active AND the current token is t1, and raises t2's logit), the
claims of Quirke et al. that the `ngrams` step tests, written before the first run:

| claim | measured from | target |
| --- | --- | --- |
| the trigram is among those that depend most on the context neuron | `ngrams`: rank by total effect of the best-ranked measured trigram ending in t1 t2 | ≤ 3 |
| its dependence goes through later layers, not the direct path | its indirect- and direct-path effects (nats, 95% intervals over prompts) | indirect > direct, intervals apart |
| ... through the n-gram neuron | its AND circuit: the neuron carrying most of the dependence, and its share of the total | the planted n-gram neuron, ≥ 50% |
| that neuron is an AND of current token and context | its `current_x_context` score (YYY − YYN − YNY + YNN, previous token present) | interval above 0, and ≥ ½ (YYY − YNN) |

And for the robustness step (issue 21 §4); the first row was written before the first run,
the second after it: that run ranked the plant 72nd (WMT/KDE4) and 208th (Europarl) under the
sequence mean in discovery's scale-free order (F1, test accuracy, |separation|), with
hundreds of neurons tied at F1 1.0, and the rule the row now uses, Gurnee et al.'s, ranks by
activation scale first, which the plant's construction sets large:

| claim | measured from | target |
| --- | --- | --- |
| ablating it matters more than ablating an arbitrary neuron | `robustness`: its German loss change (nats) vs the random null's | ≥ the null's 99th percentile |
| any reasonable probe finds it (added after the first run) | `robustness`: its rank under each aggregation (per token; sequence mean by Gurnee et al.'s rule, `robustness.sequence_rank`) on each data set | first |

The token check reads losses, not weights. Its first form compared the neuron's output
direction read by the unembedding (`W_out · W_U`) with German unigrams: that is the plant's
own construction read back (close to circular), and blind to LayerNorm, biases and the
later layers, which the loss passes through. The boosted tokens (`W_out · W_U`, as
`l3_tokens`) are still recorded in the artifact, as information.

With an explicit `--neuron`, the last check does not run: `n_checked` counts the checks
that ran, and the summary says how many.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from ..core.config import Neuron
from ..core.engine import Batch, Forward, progress, set_neurons

DEPS = ("discovery", "activations", "probes", "ablation", "l3_tokens", "unigrams", "ngrams", "robustness")
TOP_TOKENS = 20
MIN_OCCURRENCES = 5  # a token's mean loss change is ranked only over this many occurrences
TARGETS = {"rank": 1, "f1": 0.8, "german_percent": 1.0, "english_fraction": 1 / 3,
           "german_tokens": 5, "ngram_rank": 3, "ngram_share": 0.5, "ngram_and_fraction": 0.5}


def has_plant(run) -> bool:
    """True when the run's model is the planted control (its info carries a plant record)."""
    return bool(run.model.info.get("plant"))


def discovery_rank(neuron: Neuron, ranked: Sequence[Mapping], coef: np.ndarray, f1: np.ndarray,
                   test_acc: np.ndarray, separation: np.ndarray) -> int | None:
    """1-based rank of `neuron` among German-positive neurons in the `discovery` artifact:
    its row in `ranked` (the top rows, sklearn-verified) when there, else its place in
    `discovery.rank` over the arrays (`[n_layers, d_mlp]` each); None when its probe
    coefficient is not positive (it fires more on English)."""
    for r in ranked:
        if r["neuron"] == str(neuron):
            return int(r["rank"])
    from ..families.discovery import rank

    col = neuron.layer * coef.shape[1] + neuron.index
    stats = {"coef": coef.reshape(-1), "f1": f1.reshape(-1), "test_acc": test_acc.reshape(-1),
             "separation": separation.reshape(-1)}
    if stats["coef"][col] <= 0:
        return None
    order = rank(stats, True)
    return int(np.flatnonzero(order == col)[0]) + 1


def ngram_rows(planted: Mapping | None, ngrams: Mapping, targets: Mapping = TARGETS) -> list[dict]:
    """The rows of the planted contextual n-gram (the module docstring's second table), each
    `{"check", "kind", "measured", "target", "passed"}`; [] when the plant has none (a plant in
    the last layer).

    Args:
        planted: the plant record's `ngram` part (`planted.plant_ngram`): `neuron`,
            `trigram.ids` [t0, t1, t2].
        ngrams: the `ngrams` artifact's result (`trigrams`, `and.circuits`).
    """
    if not planted:
        return []
    t1, t2 = planted["trigram"]["ids"][1:]
    neuron = planted["neuron"]
    hits = [r for r in ngrams["trigrams"] if r["ids"][-2:] == [t1, t2]]
    row = min(hits, key=lambda r: r["rank"]) if hits else None
    out = [{"check": f"planted n-gram: rank of the best trigram ending in the planted pair, by its dependence on "
                     f"the context neuron, among the {len(ngrams['trigrams'])} measured",
            "kind": "ngram_rank", "measured": row and row["rank"], "trigram": row and row["trigram"],
            "target": f"≤ {targets['ngram_rank']}",
            "passed": row is not None and row["rank"] <= targets["ngram_rank"]}]
    paths = row and {k: row[k] for k in ("direct", "direct_ci", "indirect", "indirect_ci")}
    out.append({"check": "planted n-gram: its dependence goes through later layers: indirect- vs direct-path "
                         "effect on its last token (nats)",
                "kind": "ngram_paths", "measured": paths, "target": "indirect > direct, 95% intervals apart",
                "passed": bool(paths) and paths["indirect"] > paths["direct"]
                and paths["indirect_ci"][0] > paths["direct_ci"][1]})
    circuit = next((c for c in ngrams["and"]["circuits"] if row and c["ids"] == row["ids"]), None)
    first = circuit["neurons"][0] if circuit and circuit["neurons"] else None
    out.append({"check": "planted n-gram: the later neuron that carries most of that dependence, and its share "
                         "of the total effect",
                "kind": "ngram_carrier", "measured": first and {"neuron": first["neuron"], "share": first["share"]},
                "target": f"{neuron}, ≥ {targets['ngram_share']:.0%}",
                "passed": first is not None and first["neuron"] == neuron and first["share"] is not None
                and first["share"] >= targets["ngram_share"]})
    mine = next((n for n in circuit["neurons"] if n["neuron"] == neuron), None) if circuit else None
    score = mine and {**mine["scores"]["current_x_context"],
                      "both_minus_none": mine["conditions"]["YYY"] - mine["conditions"]["YNN"]}
    out.append({"check": f"planted n-gram: {neuron} ANDs current token and context (previous token present): "
                         "YYY − YYN − YNY + YNN of its activation",
                "kind": "ngram_and", "measured": score,
                "target": f"95% interval above 0, and ≥ {targets['ngram_and_fraction']:g} × (YYY − YNN)",
                "passed": bool(score) and score["ci"] is not None and score["ci"][0] > 0
                and score["value"] >= targets["ngram_and_fraction"] * score["both_minus_none"]})
    return out


def recovery_rows(plant: Neuron, rank: int | None, probe: Mapping, ablation: Mapping,
                  helped: Sequence[Mapping], german_top: Sequence[int], context: Neuron | None,
                  discovered: bool, targets: Mapping = TARGETS, extra: Sequence[Mapping] = (),
                  robustness: Mapping | None = None) -> dict:
    """The "planted → recovered" table: one row per check, each
    `{"check", "measured", "target", "passed"}` (`passed` None: not checked), and
    `passed` overall (every checked row).

    Args:
        rank: `discovery_rank` (None: not German-positive).
        probe: the planted neuron's row of the `probes` artifact (`f1`, ...).
        ablation: its row of `ablation.result.single` (`german`/`english` summaries, % increase).
        helped: the tokens whose loss rises most when it is mean-ablated (`most_helped`
            rows: token_id, token, value = mean Δ loss in nats, count).
        german_top: token ids of the top German unigrams (`unigrams` artifact), here 100.
        context, discovered: the run's context neuron and whether discovery chose it.
        extra: further rows (`ngram_rows`), appended and counted like the others.
        robustness: the `robustness` artifact's result (None: its rows are left out), see
            `robustness_rows`.
    """
    de = float(ablation["german"]["percent_increase"])
    en = float(ablation["english"]["percent_increase"])
    top = set(int(i) for i in german_top)
    hits = [t for t in helped if int(t["token_id"]) in top]
    rows = [
        {"check": "discovery rank among German-positive neurons", "measured": rank,
         "target": f"≤ {targets['rank']} (first)", "passed": rank is not None and rank <= targets["rank"]},
        {"check": "single-neuron probe F1 (German vs English)", "measured": float(probe["f1"]),
         "target": f"≥ {targets['f1']:.2f}", "passed": float(probe["f1"]) >= targets["f1"]},
        {"check": "German loss increase when mean-ablated (%)", "measured": de,
         "target": f"≥ {targets['german_percent']:g}%", "passed": de >= targets["german_percent"]},
        {"check": "English loss change when mean-ablated (%)", "measured": en,
         "target": "|·| < ⅓ of the German increase",
         "passed": abs(en) < targets["english_fraction"] * de},
        {"check": f"top {len(helped)} tokens whose German loss rises most when it is mean-ablated, "
                  f"among the {len(top)} most frequent German unigrams",
         "measured": len(hits), "target": f"≥ {targets['german_tokens']}",
         "passed": len(hits) >= targets["german_tokens"],
         "tokens": [t["token"] for t in hits]},
        {"check": "context neuron studied by the report", "measured": str(context),
         "target": f"{plant}, found by --neuron auto",
         "passed": (context == plant) if discovered else None},
        *extra,
    ]
    if robustness is not None:
        rows += robustness_rows(plant, robustness)
    checked = [r["passed"] for r in rows if r["passed"] is not None]
    return {"rows": rows, "passed": all(checked), "n_passed": sum(checked), "n_checked": len(checked),
            "n_added_after_first_run": sum(bool(r.get("added_after_first_run")) for r in rows)}


def robustness_rows(plant: Neuron, res: Mapping) -> list[dict]:
    """Issue 21 §4 rows from the `robustness` result, checked only when the step studied the
    planted neuron (it is the run's context neuron; otherwise `passed` is None):

    * its German loss change when mean-ablated is at or above the 99th percentile of the same
      ablation of the random null neurons (same examples, nats);
    * it ranks first under each aggregation on each data set of the specification curve
      (per token on the run's own corpus is discovery's row, not repeated): per token by
      `discovery.rank`, under the sequence mean by Gurnee et al.'s rule
      (`robustness.sequence_rank`), since F1 alone ties hundreds of neurons of this
      random-weight model at 1.0 on a few dozen test passages. These rows were added after
      the first run (module docstring), and the rule ranks by activation scale first.

    Not a row, because it does not pass on the quick profile (measured; the robustness
    section reports it): "the finding holds in every specification the plant's construction
    says it must" (`robustness.PLANTED_MUST_HOLD`, 12 with the data dimension; 10 hold): on
    WMT/KDE4 the pooled-mean ablation's German increase is positive but its interval reaches
    0 (quick: +0.043 nats [−0.017, +0.103]). The prediction assumed the pooled mean
    English-like; it is token-weighted, and WMT's German examples are longer than KDE4's
    English ones (8,595 vs 4,577 positions in the crop of 30 examples each), so it lies 65% of
    the way from the English to the German mean (0.15 → 2.45 of 3.67) and the ablation
    removes a third of the plant's German activation. On Europarl (about halfway) all 6 hold,
    and with more loss text (40 examples × 256 tokens instead of 8 × 64) all 12 do (WMT/KDE4:
    +0.054 nats [+0.039, +0.068]): a question of power at the quick sizes, measured, not a row."""
    studied = res["context_neuron"] == str(plant)
    null = res["null"]
    p99 = null["random_p99"]["german"]
    de = null["context"]["german_nats"]
    rows = [
        {"check": f"German loss change when mean-ablated vs {null['n_random']} random neurons "
                  f"(nats, on the null's {null['examples']['german']} examples of ≤ "
                  f"{null['tokens_per_example_max']} tokens, not the ablation row's full texts; "
                  "null's 99th percentile)",
         "measured": de, "target": f"≥ {p99:.4f} (99th percentile of the null)",
         "passed": (de >= p99) if studied else None},
    ]
    runs_on = res.get("run_corpus")
    for name, rec in res.get("data", {}).items():
        for agg, probe in rec["probe"].items():
            if agg == "per_token" and name == runs_on:
                continue
            rule = ("Gurnee et al.'s candidates by mean difference, then F1" if agg == "sequence_mean"
                    else "discovery's order")
            rank = probe["rank"]
            rows.append({"check": f"rank among German-positive neurons, {agg.replace('_', '-')} probe on "
                                  f"{name} ({rule})",
                         "measured": rank, "target": "1 (first)",
                         "passed": (rank == 1) if studied else None, "added_after_first_run": True})
    return rows


def token_loss_changes(fwd: Forward, batches: Sequence[Batch], neuron: Neuron, value: float,
                       show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per target token id, the summed change of next-token loss (nats; mean-ablated minus
    original) when `neuron`'s `hook_post` is set to `value`, and how often the id is a
    target, over every position with a target in `batches` (the ablated pass restarts at
    the neuron's layer). Returns float64 `[d_vocab]` sums, int64 `[d_vocab]` counts.
    Seed: the per-token view of "Check loss increase from disabling each German neuron"."""
    layer = neuron.layer
    d_vocab = fwd.w.W_U.shape[1]
    sums = np.zeros(d_vocab, dtype=np.float64)
    counts = np.zeros(d_vocab, dtype=np.int64)
    edits = {neuron.hook(): set_neurons([neuron.index], value)}
    with torch.inference_mode():
        for batch in progress(batches, "token losses", show_progress):
            capture = {f"blocks.{layer}.hook_resid_pre": None}
            base = fwd.token_losses(fwd.run(batch.tokens, capture=capture), batch.tokens, batch.lengths)
            resid = fwd.run(resid=capture[f"blocks.{layer}.hook_resid_pre"], start_layer=layer, edits=edits)
            ablated = fwd.token_losses(resid, batch.tokens, batch.lengths)
            n = batch.tokens.shape[1]
            valid = torch.arange(n - 1, device=base.device)[None, :] < (batch.lengths[:, None] - 1)
            targets = batch.tokens[:, 1:][valid].cpu().numpy()
            np.add.at(sums, targets, (ablated - base)[valid].double().cpu().numpy())
            counts += np.bincount(targets, minlength=d_vocab)[:d_vocab]
    return sums, counts


def most_helped(sums: np.ndarray, counts: np.ndarray, to_str: Callable, k: int = TOP_TOKENS,
                min_count: int = MIN_OCCURRENCES) -> list[dict]:
    """The `k` token ids with the largest mean loss change (`sums / counts`, `[d_vocab]`
    each) among those that are a target at least `min_count` times (ties: lower id):
    `{"token_id", "token", "value" (mean Δ loss, nats), "count"}` rows, largest first."""
    ids = np.flatnonzero(counts >= min_count)
    mean = sums[ids] / counts[ids]
    order = ids[np.lexsort((ids, -mean))][:k]
    return [{"token_id": int(i), "token": to_str([int(i)])[0], "value": float(sums[i] / counts[i]),
             "count": int(counts[i])} for i in order]


# ------------------------------------------------------------------ pipeline step


def boosted_tokens(W_out, W_U, neuron: Neuron, active: float, inactive: float,
                   to_str: Callable, k: int = TOP_TOKENS) -> tuple[list[dict], np.ndarray]:
    """The `k` tokens `neuron` boosts most through its output direction alone, after the
    seed's garbage filter, and the whole float64 `[d_vocab]` logit difference
    (`W_out[layer, index] @ W_U × (active − inactive)`; `W_out` `[n_layers, d_mlp, d_model]`,
    `W_U` `[d_model, d_vocab]`, processed weights), as the `l3_tokens` step does for the
    context neuron."""
    from ..families.l3_tokens import neuron_direction_logit_diff, top_tokens

    diff = neuron_direction_logit_diff(W_out, W_U, neuron, active, inactive)
    return top_tokens(diff, k, True, to_str, filtered=True), diff


def run_step(run, arts: dict) -> dict:
    """Step `planted`: the "planted → recovered" table from the `discovery`, `probes`,
    `ablation` and `unigrams` artifacts and the per-token loss changes of mean-ablating the
    planted neuron on the `ablation` step's German examples (`token_loss_changes`); and, when
    the plant has a contextual n-gram and the run studies the planted neuron, its rows from
    the `ngrams` artifact (`ngram_rows`).

    Arrays: `neuron_direction_logit_diff` float64 `[d_vocab]` (the boosted-token logits);
    `token_loss_change_sum` float64 `[d_vocab]` (nats) and `token_count` int64 `[d_vocab]`."""
    import sys

    record = run.model.info["plant"]
    plant = Neuron.parse(record["neuron"])
    toks = run.tokens("german", run.profile.loss_examples)
    params = {"plant": str(plant), "targets": TARGETS, "top_tokens": TOP_TOKENS,
              "min_occurrences": MIN_OCCURRENCES, "tokens": toks[1],
              "context_neuron": str(run.context), "neuron_discovered": run.cfg.neuron_discovered}

    def compute():
        disc = arts["discovery"]["result"]
        load = run.store.load_array
        rank = discovery_rank(plant, disc["ranked"], load("discovery", "coef"), load("discovery", "f1"),
                              load("discovery", "test_acc"), load("discovery", "separation"))
        probe = next(r for r in arts["probes"]["result"]["rows"] if r["neuron"] == str(plant))
        ablation = next(r for r in arts["ablation"]["result"]["single"] if r["neuron"] == str(plant))
        acts = arts["activations"]["result"]
        active, inactive = acts["german_means"][str(plant)], acts["english_means"][str(plant)]
        boosted, diff = boosted_tokens(run.fwd.w.W_out, run.fwd.w.W_U, plant, active, inactive,
                                       run.model.to_str_tokens)
        sums, counts = token_loss_changes(run.fwd, run.batches(toks[0]), plant, inactive,
                                          run.show_progress)
        helped = most_helped(sums, counts, run.model.to_str_tokens)
        german_top = [t["token_id"] for t in arts["unigrams"]["result"]["languages"]["german"]["top"]]
        # the n-gram rows only where the study is of the planted neuron (else its dependence
        # is not what the ngrams step measured)
        ng = arts["ngrams"]["result"]
        extra = ngram_rows(record.get("ngram"), ng) if ng["context_neuron"] == str(plant) else []
        table = recovery_rows(plant, rank, probe, ablation, helped, german_top, run.context,
                              run.cfg.neuron_discovered, extra=extra,
                              robustness=arts["robustness"]["result"])
        result = {
            "plant": str(plant), "context_neuron": str(run.context),
            "neuron_discovered": run.cfg.neuron_discovered,
            "discovery_best": disc["best"], "discovery_best_f1": disc["best_f1"],
            "active_value": active, "inactive_value": inactive,
            "boosted": boosted, "helped": helped, "german_top_unigrams": len(german_top),
            "n_target_tokens": int(counts.sum()),
            "fit": {lang: {k: record["fit"][lang][k] for k in ("dataset", "sha256", "n", "indices_sha256")}
                    for lang in ("german", "english")},
            "scales": {"input": record["input"]["scale"], "bias": record["input"]["bias"],
                       "output": record["output"]["scale"]},
            "ngram": record.get("ngram") and {"neuron": record["ngram"]["neuron"],
                                              "trigram": record["ngram"]["trigram"]},
            **table,
        }
        return result, {"neuron_direction_logit_diff": diff, "token_loss_change_sum": sums,
                        "token_count": counts}

    inputs = run.inputs("planted", sys.modules[__name__], params, run.data_prov("german", "english"),
                        {k: arts[k]["key"] for k in DEPS})
    return run.step(inputs, compute)
