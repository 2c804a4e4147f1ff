"""Figures of a training-dynamics sweep (pure: the sweep's tidy table in, a Figure out).

One figure per measure, one line per model (ordered and coloured by size), against the
training step on a log axis (step 0 on the linear stretch of a symlog axis), with tokens
seen on a second axis where every model has the same tokens per step, and the first
checkpoint where each model's context neuron reaches the F1 threshold marked.
"""

from __future__ import annotations

import numpy as np

from .plots import plt

# name: figure file; measure/language: rows of the table; ylabel; caption; authors: the
# series of the authors (`core.paper.SERIES`) drawn beside a model that is Pythia-70M itself
# (L3N669's: the authors measured no other neuron over training; none for the best neuron).
MEASURES = (
    {"name": "sweep_context_f1", "measure": "context_f1", "language": None, "ylim": (-0.02, 1.02),
     "authors": ("f1", "mcc"),
     "ylabel": "probe F1 (German)", "title": "Context neuron: probe F1",
     "caption": "Probe F1 (German vs English) of each model's context neuron at each checkpoint."},
    {"name": "sweep_ablation_german", "measure": "context_ablation_pct", "language": "german",
     "authors": ("ablation_pct_german",),
     "ylabel": "German loss increase (%)", "title": "Mean-ablating the context neuron: German",
     "caption": "Loss increase on German (%) when the context neuron is set to its mean English "
                "activation at that checkpoint (band: 95% interval)."},
    {"name": "sweep_ablation_english", "measure": "context_ablation_pct", "language": "english",
     "ylabel": "English loss increase (%)", "title": "Mean-ablating the context neuron: English",
     "caption": "Loss increase on English (%) when the context neuron is set to its mean English "
                "activation at that checkpoint (band: 95% interval)."},
    {"name": "sweep_best_f1", "measure": "best_f1", "language": None, "ylim": (-0.02, 1.02),
     "ylabel": "probe F1 (German)", "title": "Best German neuron: probe F1", "label_neurons": True,
     "caption": "Probe F1 of the best German-positive neuron found by discovery at each checkpoint; "
                "its name is printed where it changes."},
    {"name": "sweep_loss_german", "measure": "loss", "language": "german", "ylabel": "loss (nats)",
     "authors": ("loss_german",),
     "title": "German loss", "caption": "Mean next-token loss on the German examples (nats)."},
    {"name": "sweep_loss_english", "measure": "loss", "language": "english", "ylabel": "loss (nats)",
     "authors": ("loss_english",),
     "title": "English loss", "caption": "Mean next-token loss on the English examples (nats)."},
    # The n-gram measurements of each checkpoint (families.ngram_dynamics; issue 19 §2).
    {"name": "sweep_trigram_loss", "measure": "trigram_loss_clean", "language": "german",
     "authors": ("trigram_original",), "ylabel": "loss (nats), mean over trigrams",
     "title": "Trigram loss", "caption": "Loss on the last token of each German trigram at the end of "
     "random prompts of common German tokens, mean over prompts, then over the trigrams (for "
     "EleutherAI/pythia-70m with the authors' folder: their 228; otherwise the most frequent "
     "German-only trigrams of the text)."},
    {"name": "sweep_trigram_loss_ablated", "measure": "trigram_loss_ablated", "language": "german",
     "authors": ("trigram_ablated",), "ylabel": "loss (nats), mean over trigrams",
     "title": "Trigram loss, context neuron mean-ablated",
     "caption": "The same trigram loss with the context neuron set to its mean English activation at "
                "that checkpoint."},
    {"name": "sweep_trigram_loss_indirect", "measure": "trigram_loss_indirect_ablated", "language": "german",
     "authors": ("trigram_indirect_path_ablated",), "ylabel": "loss (nats), mean over trigrams",
     "title": "Trigram loss, only the context neuron's indirect path ablated",
     "caption": "The same trigram loss with only the context neuron's path through later layers "
                "ablated (its own write to the unembedding kept)."},
    {"name": "sweep_trigram_loss_direct", "measure": "trigram_loss_direct_ablated", "language": "german",
     "authors": ("trigram_direct_path_ablated",), "ylabel": "loss (nats), mean over trigrams",
     "title": "Trigram loss, only the context neuron's direct path ablated",
     "caption": "The same trigram loss with only the context neuron's own write to the unembedding "
                "ablated (later components frozen at their unedited values)."},
    {"name": "sweep_effect_total", "measure": "context_effect_total", "language": "german",
     "authors": ("effect_total",), "ylabel": "German loss increase (nats)",
     "title": "Context neuron's total effect on German loss",
     "caption": "German loss increase (nats) when the context neuron is mean-ablated, on the n-gram "
                "step's German examples (band: 95% paired-bootstrap interval)."},
    {"name": "sweep_effect_indirect", "measure": "context_effect_indirect", "language": "german",
     "authors": ("effect_indirect_path",), "ylabel": "German loss increase (nats)",
     "title": "Context neuron's indirect effect (through later layers)",
     "caption": "German loss increase (nats) when only the context neuron's path through later layers "
                "is ablated (later attention and MLP outputs frozen at their ablated values)."},
    {"name": "sweep_effect_direct", "measure": "context_effect_direct", "language": "german",
     "authors": ("effect_direct_path",), "ylabel": "German loss increase (nats)",
     "title": "Context neuron's direct effect (to the unembedding)",
     "caption": "German loss increase (nats) when only the context neuron's own write to the "
                "unembedding is ablated (later components frozen at their unedited values)."},
    {"name": "sweep_ablation_nats", "measure": "context_ablation_nats", "language": "german",
     "authors": ("neurons_l3n669",), "ylabel": "German loss increase (nats)",
     "title": "Mean-ablating the context neuron: German (nats)",
     "caption": "German loss increase (nats) when the context neuron is mean-ablated, on the loss "
                "examples (band: 95% interval)."},
    {"name": "sweep_other_ablation", "measure": "other_ablation_max", "language": "german",
     "authors": ("neurons_other_max", "neurons_other_median"), "ylabel": "German loss increase (nats)",
     "title": "Mean-ablating the other German neurons: the largest effect", "label_neurons": True,
     "caption": "The largest German loss increase (nats) among the checkpoint's best German-positive "
                "neurons of discovery other than the context neuron, each mean-ablated alone (its "
                "name printed where it changes)."},
    {"name": "sweep_other_f1", "measure": "other_f1_median", "language": None, "ylim": (-0.02, 1.02),
     "ylabel": "probe F1 (German)", "title": "Other German neurons: median probe F1",
     "caption": "Median probe F1 of the best German-positive neurons of discovery at each checkpoint, "
                "the context neuron excluded (those mean-ablated in the figure above)."},
    # The paper's figure 7 (families.ngram_dynamics.frequent_token_dla): both languages on one axis.
    {"name": "sweep_dla_frequent", "measure": "context_dla_frequent", "language": ("german", "english"),
     "ylabel": "logit per unit activation", "zero_line": True, "title": "Context neuron's direct logit attribution on frequent tokens",
     "caption": "Direct logit attribution of the context neuron (its output weights through the unembedding, "
                "W_out[neuron] @ W_U, in logits per unit of its activation, final LayerNorm scale 1) "
                "averaged over the 200 most frequent German tokens (solid) and the 200 most frequent English "
                "tokens (dashed) of the sweep's data, as Quirke et al. define it for their figure 7."},
    {"name": "sweep_german_candidates", "measure": "german_candidates_f1_0_85", "language": None,
     "ylabel": "neurons", "title": "German neurons: how many have probe F1 > 0.85",
     "caption": "German-positive neurons whose single-neuron probe F1 exceeds 0.85 at that checkpoint "
                "(the authors' threshold for their candidate German neurons)."},
)


# Quirke et al.'s figures (luciaquirke/contextual-ngrams figures.py, figure_1 ... figure_8)
# and the sweep's figures that show the same series over training checkpoints; for
# EleutherAI/pythia-70m the authors' series are drawn beside ours where they published them.
PAPER_FIGURES = (
    (1, "trigram loss, ablated trigram loss and L3N669's F1",
     ("sweep_trigram_loss", "sweep_trigram_loss_ablated", "sweep_context_f1")),
    (2, "trigram losses with and without ablating L3N669",
     ("paper_trigram_losses", "sweep_trigram_loss", "sweep_trigram_loss_ablated")),
    (3, "F1 of L3N669 and of the other German neurons", ("sweep_context_f1", "sweep_other_f1",
                                                          "sweep_german_candidates")),
    (4, "German loss increase from ablating L3N669 and the other German neurons",
     ("paper_other_neurons", "sweep_ablation_nats", "sweep_other_ablation")),
    (5, "direct and indirect effect of L3N669 on German loss",
     ("paper_effect_split", "sweep_effect_total", "sweep_effect_indirect", "sweep_effect_direct")),
    (6, "trigram losses with only the direct or only the indirect path ablated",
     ("paper_trigram_losses", "sweep_trigram_loss_indirect", "sweep_trigram_loss_direct")),
    (7, "L3N669's average direct logit attribution on frequent German and English tokens", ("sweep_dla_frequent",)),
    (8, "German, English and trigram loss", ("sweep_loss_german", "sweep_loss_english", "sweep_trigram_loss")),
)


def model_order(table) -> list[str]:
    """Models by size (parameters), then name."""
    sizes = table.groupby("model", sort=False)["n_params"].max()
    return sorted(sizes.index, key=lambda m: (int(sizes[m]), str(m)))


def _colors(n: int) -> list:
    cmap = plt.get_cmap("viridis")
    return [cmap(0.15 + 0.7 * i / max(1, n - 1)) for i in range(n)]


def measure_figure(table, spec: dict, marks: dict | None = None, authors=None):
    """One measure of the sweep against training step, one line per model.

    Args:
        table: the sweep's tidy table (pandas DataFrame, `analysis.orchestration.sweep.table.TABLE_COLUMNS`).
        spec: an entry of `MEASURES` (`measure`, `language`, `ylabel`, `title`, optional
            `ylim`, `label_neurons`, `authors`, `zero_line`); `language` None, one language, or a tuple
            of languages drawn as one line each per model (solid, dashed, dotted, in order).
        marks: `{model: step}` to mark with a dotted vertical line (the first checkpoint
            where the context neuron's probe F1 reaches the threshold), None for none.
        authors: the authors' published series (pandas DataFrame, `core.paper.authors_series`),
            of which `spec["authors"]` are drawn dashed; None for none.
    Returns:
        A matplotlib Figure, or None when the table has no row of this measure.
    """
    rows = table[table["measure"] == spec["measure"]]
    langs = spec["language"] if isinstance(spec["language"], tuple) else None
    if langs:
        rows = rows[rows["language"].isin(list(langs))]
    else:
        rows = rows[rows["language"] == spec["language"]] if spec["language"] else rows[rows["language"].isna()]
    rows = rows[rows["step"].notna()]
    if rows.empty:
        return None
    models = [m for m in model_order(table) if m in set(rows["model"])]
    colors = dict(zip(models, _colors(len(models)), strict=True))
    fig, ax = plt.subplots(figsize=(6.8, 4.1), dpi=110, layout="constrained")
    ratios = set()
    series = [(m, lang) for m in models for lang in (langs or (None,))]
    for m, lang in series:
        g = rows[rows["model"] == m]
        g = (g if lang is None else g[g["language"] == lang]).sort_values("step")
        if g.empty:
            continue
        x = g["step"].to_numpy(dtype=float)
        y = g["value"].to_numpy(dtype=float)
        style = "-" if lang is None else ("-", "--", ":")[langs.index(lang) % 3]
        ax.plot(x, y, "o" + style, ms=3.5, lw=1.4, color=colors[m],
                label=m if lang is None else f"{m}: {lang.capitalize()}")
        if g["ci_low"].notna().any():
            ax.fill_between(x, g["ci_low"].to_numpy(dtype=float), g["ci_high"].to_numpy(dtype=float),
                            color=colors[m], alpha=0.15, lw=0)
        if spec.get("label_neurons"):
            prev = None
            for xi, yi, n in zip(x, y, g["neuron"], strict=True):
                if n != prev:
                    ax.annotate(str(n), (xi, yi), xytext=(2, 4), textcoords="offset points", fontsize=6,
                                color=colors[m])
                prev = n
        mark = (marks or {}).get(m)
        if mark is not None:
            ax.axvline(mark, color=colors[m], ls=":", lw=1.2)
        tok = g[(g["step"] > 0) & g["tokens_seen"].notna()]
        ratios |= {round(float(t) / float(s), 6) for t, s in zip(tok["tokens_seen"], tok["step"], strict=True)}
    if authors is not None:
        from .paper import authors_lines

        authors_lines(ax, authors, spec.get("authors") or ())
    if spec["measure"].endswith("_pct") or spec.get("zero_line"):
        ax.axhline(0, color="black", lw=0.6)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.set_xlabel("training step (log scale; 0 at the left)")
    ax.set_ylabel(spec["ylabel"])
    if spec.get("ylim"):
        ax.set_ylim(*spec["ylim"])
    if len(ratios) == 1:
        per = ratios.pop()
        sec = ax.secondary_xaxis("top", functions=(lambda s, r=per: np.asarray(s) * r,
                                                   lambda t, r=per: np.asarray(t) / r))
        sec.set_xscale("symlog", linthresh=per)  # the step axis's scale, in tokens
        sec.set_xlabel("tokens seen", fontsize=8)
        sec.tick_params(labelsize=7)
    fig.suptitle(spec["title"], fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    return fig


def ours_series(table, ours, models: list[str]):
    """Our series of a `figures.paper.REFERENCE_FIGURES` spec from the sweep's table: for
    each entry of `ours` (one dict or a tuple of them: `measure`, optional `language` and
    `label`) the rows of that measure of `models`, as `series, step, value` (series: the
    model's name, followed by `: label` when the entry has one), for
    `figures.paper.reference_figure`."""
    import pandas as pd

    parts = []
    for o in (ours,) if isinstance(ours, dict) else ours:
        rows = table[(table["measure"] == o["measure"]) & table["model"].isin(models) & table["step"].notna()]
        if o.get("language"):
            rows = rows[rows["language"] == o["language"]]
        rows = rows.rename(columns={"model": "series"})[["series", "step", "value"]]
        if o.get("label"):
            rows = rows.assign(series=rows["series"] + f": {o['label']}")
        parts.append(rows)
    return pd.concat(parts, ignore_index=True)
