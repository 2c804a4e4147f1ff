"""The authors' published series (Quirke et al. 2023) drawn beside ours (pure: tables in,
`Chart` or matplotlib lines out).

`REFERENCE_FIGURES` are the paper's training-dynamics figures of several series each (the
direct/indirect split, the trigram losses, the other German neurons). Each spec's `ours`
names the sweep table's measures (`{"measure", "language", "label"}`, one per series) that a
sweep draws beside the authors' (`families.ngram_dynamics` measures them per checkpoint); a
report over one checkpoint has no such series and draws the authors' alone, saying so
(`AUTHORS_ONLY`). `authors_lines` adds the authors' series to a figure that has ours (the
report's dynamics figure, the sweep's measure figures).
"""

from __future__ import annotations

from . import interactive as ia
from .plots import Chart, Table, check_spec, plt

AUTHORS = "Quirke et al."
# The authors' series: dashed, no markers, in colours no series of ours uses (ours have markers).
AUTHORS_COLORS = ("#7b3294", "#b08ccc", "#1b7837", "#a6611a")
# Ours: solid with markers, in colours the authors' series do not use.
OURS_COLORS = (ia.GERMAN, ia.ENGLISH, "#55A868", "#C44E52")
AUTHORS_ONLY = ("The authors' published series alone (dashed): this run does not measure it over "
                "training (the n-gram section measures the report's own checkpoint only; a sweep "
                "measures it at every checkpoint).")
OURS_NOTE = ("Solid, with markers: ours from this sweep, for the sweep's EleutherAI/pythia-70m, "
             "measured as the authors describe (families.ngram_dynamics) on the seed's text.")

REFERENCE_FIGURES = (
    {"name": "paper_effect_split",
     "ours": ({"measure": "context_effect_total", "language": "german", "label": "total"},
              {"measure": "context_effect_indirect", "language": "german", "label": "indirect path ablated"},
              {"measure": "context_effect_direct", "language": "german", "label": "direct path ablated"}),
     "authors": ("effect_total", "effect_indirect_path", "effect_direct_path"),
     "title": "L3N669's total, indirect and direct effect on German loss",
     "ylabel": "German loss increase (nats)",
     "caption": "Quirke et al.'s German-loss increase over training when L3N669 is mean-ablated "
                "(total), when only its path through later layers is ablated (layers 4–5 attention "
                "and MLP outputs frozen at their ablated values: the file's column 'Direct Effect'), "
                "and when only its direct path to the unembedding is ablated (column 'Indirect "
                "Effect'); context_effect_split.csv, every 5th checkpoint (their figure_5)."},
    {"name": "paper_trigram_losses",
     "ours": ({"measure": "trigram_loss_clean", "language": "german", "label": "trigram loss"},
              {"measure": "trigram_loss_ablated", "language": "german", "label": "context neuron ablated"},
              {"measure": "trigram_loss_indirect_ablated", "language": "german", "label": "indirect path ablated"},
              {"measure": "trigram_loss_direct_ablated", "language": "german", "label": "direct path ablated"}),
     "authors": ("trigram_original", "trigram_ablated", "trigram_indirect_path_ablated",
                 "trigram_direct_path_ablated"),
     "title": "The paper's 228 German trigrams: loss on their last token",
     "ylabel": "loss (nats), mean over trigrams",
     "caption": "Quirke et al.'s loss on the last token of their 228 German trigrams (mean over "
                "trigrams) as it is, with L3N669 mean-ablated, with only its indirect path ablated "
                "and with only its direct path ablated, at all 154 checkpoints; "
                "trigram_losses_checkpoints.csv (their figure_2 and figure_6 draw medians)."},
    {"name": "paper_other_neurons",
     "ours": ({"measure": "context_ablation_nats", "language": "german", "label": "context neuron"},
              {"measure": "other_ablation_median", "language": "german", "label": "other German neurons: median"},
              {"measure": "other_ablation_max", "language": "german", "label": "other German neurons: largest"}),
     "authors": ("neurons_l3n669", "neurons_other_median", "neurons_other_max"),
     "title": "Mean-ablating German neurons over training: L3N669 and the others",
     "ylabel": "German loss increase (nats)",
     "caption": "Quirke et al.'s German-loss increase when each of 229 candidate German neurons "
                "(F1 > 0.85 at some checkpoint) is mean-ablated: L3N669, and the median and the "
                "largest of the other 228; checkpoint_ablation_data_all_neurons.csv, every 10th "
                "checkpoint (their figure_4)."},
)


def _symlog(ax) -> None:
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.set_xlabel("training step (log scale; 0 at the left)")


def authors_lines(ax, authors, names, label_prefix: str = AUTHORS) -> list[str]:
    """Draw the authors' series `names` (rows of `core.paper.authors_series`) on a matplotlib
    axis, dashed, one colour each; returns the legend labels drawn (a series absent from
    `authors` is skipped)."""
    drawn = []
    for i, name in enumerate(names):
        s = authors[authors["series"] == name].sort_values("step")
        if s.empty:
            continue
        label = f"{label_prefix}: {s['label'].iloc[0]}"
        ax.plot(s["step"].to_numpy(dtype=float), s["value"].to_numpy(dtype=float), ls="--", lw=1.3,
                color=AUTHORS_COLORS[i % len(AUTHORS_COLORS)], label=label)
        drawn.append(label)
    return drawn


def authors_traces(authors, names, xaxis: str = "x", yaxis: str = "y", showlegend: bool = True) -> list[dict]:
    """The same series as plotly traces (dashed lines, hover: series, step, value)."""
    traces = []
    for i, name in enumerate(names):
        s = authors[authors["series"] == name].sort_values("step")
        if s.empty:
            continue
        label = f"{AUTHORS}: {s['label'].iloc[0]}"
        traces.append({"type": "scatter", "mode": "lines", "name": ia.plot_text(label),
                       "x": [int(v) for v in s["step"]], "y": ia.num(s["value"].tolist()),
                       "xaxis": xaxis, "yaxis": yaxis, "showlegend": showlegend,
                       "line": {"color": AUTHORS_COLORS[i % len(AUTHORS_COLORS)], "dash": "dash", "width": 1.6},
                       "hovertemplate": f"<b>{ia.plot_text(label)}</b><br>step %{{x:,}}<br>"
                                        f"%{{y:.4f}} {ia.plot_text(s['unit'].iloc[0])}<extra></extra>"})
    return traces


def authors_table(authors, names, panel: str | None = None) -> Table:
    """The authors' rows of a figure's data table: `who, panel, series, step, value`."""
    rows = authors[authors["series"].isin(list(names))].sort_values(["series", "step"])
    n = len(rows)
    return Table({"who": [AUTHORS] * n, "panel": [panel] * n,
                  "series": [f"{lab} ({src})" for lab, src in zip(rows["label"], rows["source"], strict=True)],
                  "step": [int(v) for v in rows["step"]], "value": [float(v) for v in rows["value"]]})


def reference_figure(spec: dict, authors, ours=None) -> Chart:
    """One of `REFERENCE_FIGURES`: the authors' series `spec["authors"]` over training steps
    (symlog axis, step 0 at the left; the HTML's log axis leaves step 0 out), and ours when
    given.

    Args:
        spec: an entry of `REFERENCE_FIGURES`.
        authors: pandas DataFrame of the authors' series (`core.paper.authors_series`).
        ours: pandas DataFrame `series, step, value` of our matching series, or None (not
            measured: the title says the curves are the authors' alone).
    """
    table = authors_table(authors, spec["authors"])
    fig, ax = plt.subplots(figsize=(6.8, 3.9), dpi=110, layout="constrained")
    authors_lines(ax, authors, spec["authors"])
    data = authors_traces(authors, spec["authors"])
    if ours is not None and len(ours):
        cols = {"who": [], "panel": [], "series": [], "step": [], "value": []}
        for i, (name, g) in enumerate(ours.sort_values("step").groupby("series", sort=False)):
            color = OURS_COLORS[i % len(OURS_COLORS)]
            ax.plot(g["step"].to_numpy(dtype=float), g["value"].to_numpy(dtype=float), "o-", ms=4, lw=1.5,
                    color=color, label=f"ours: {name}")
            data.append({"type": "scatter", "mode": "lines+markers", "name": ia.plot_text(f"ours: {name}"),
                         "x": [int(v) for v in g["step"]], "y": ia.num(g["value"].tolist()),
                         "line": {"color": color}, "hovertemplate": "step %{x:,}<br>%{y:.4f}<extra></extra>"})
            for k, v in (("who", ["ours"] * len(g)), ("panel", [None] * len(g)), ("series", [name] * len(g)),
                         ("step", [int(s) for s in g["step"]]), ("value", [float(x) for x in g["value"]])):
                cols[k] += v
        table = Table.concat([table, Table(cols)])
        title = spec["title"]
    else:
        title = spec["title"] + f" ({AUTHORS} only)"
    if "loss increase" in spec["ylabel"]:
        ax.axhline(0, color="black", lw=0.6)
    _symlog(ax)
    ax.set_ylabel(spec["ylabel"])
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=7)
    lay = ia.layout(ia.plot_text(title), height=400,
                    xaxis=ia.axis("training step (log scale)", type="log"),
                    yaxis=ia.axis(ia.plot_text(spec["ylabel"])))
    return Chart(table, fig, check_spec(ia.spec(data, lay)), "figures.paper.reference_figure")


# The dynamics figure's panels (figures.organism.dynamics_figure) and the authors' series
# each overlays. F1 and MCC are L3N669's: shown whatever neuron the run studies, labelled.
DYNAMICS_OVERLAYS = {"probe F1": ("f1", "mcc"), "loss increase (%)": ("ablation_pct_german",),
                     "loss (nats)": ("loss_german", "loss_english")}
