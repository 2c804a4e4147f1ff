"""Figures of neuron discovery and of the training dynamics (pure: data in, `Chart` out)."""

from __future__ import annotations

import numpy as np

from . import interactive as ia
from .plots import Chart, Table, check_spec, plt

GERMAN, ENGLISH, OTHER = "#DD8452", "#4C72B0", "#B0B0B0"


def discovery_table(f1: np.ndarray, coef: np.ndarray) -> Table:
    """One row per neuron of `[n_layers, d_mlp]` probe F1 / coefficient arrays: `neuron,
    layer, index, f1, coef, sign, x` (x: the layer plus a fixed jitter in [-0.3, 0.3], for
    the strip plot; seed 0, so the figure is reproducible)."""
    n_layers, d_mlp = f1.shape
    rng = np.random.default_rng(0)
    jitter = np.concatenate([layer + rng.uniform(-0.3, 0.3, d_mlp) for layer in range(n_layers)])
    layer = np.repeat(np.arange(n_layers), d_mlp)
    index = np.tile(np.arange(d_mlp), n_layers)
    c = coef.reshape(-1)
    return Table({"neuron": [f"L{a}N{b}" for a, b in zip(layer, index, strict=True)],
                  "layer": layer.tolist(), "index": index.tolist(),
                  "f1": [round(float(v), 6) for v in f1.reshape(-1)],
                  "coef": [round(float(v), 6) for v in c],
                  "sign": ["german" if v > 0 else "english" for v in c],
                  "x": [round(float(v), 4) for v in jitter]})


def discovery_figure(f1: np.ndarray, coef: np.ndarray, best: str | None, context: str | None) -> Chart:
    """Probe F1 of every neuron (`[n_layers, d_mlp]`), one jittered column per layer;
    German-positive neurons coloured, the best and the context neuron labelled."""
    table = discovery_table(f1, coef)
    n_layers = f1.shape[0]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    data = []
    for sign, color, label, alpha in (("english", OTHER, "English-positive", 0.5),
                                      ("german", GERMAN, "German-positive", 0.7)):
        t = table.where(sign=sign)
        ax.scatter(t["x"], t["f1"], s=3, color=color, alpha=alpha, lw=0, label=label)
        data.append({"type": "scatter", "mode": "markers", "name": label, "x": t["x"],
                     "y": ia.num(t["f1"], 4), "text": t["neuron"],
                     "customdata": ia.num(t["coef"], 3),
                     "marker": {"color": color, "size": 4, "opacity": alpha},
                     "hovertemplate": "<b>%{text}</b><br>probe F1 %{y:.3f}<br>coefficient "
                                      "%{customdata:+.3f}<extra></extra>"})
    notes = []
    for name, marker, symbol in ((best, "*", "star-open"), (context, "o", "circle-open")):
        if not name:
            continue
        layer, index = (int(v) for v in name[1:].split("N"))
        y = float(f1[layer, index])
        ax.scatter([layer], [y], s=90, marker=marker, facecolor="none", edgecolor="black")
        ax.annotate(name, (layer, y), xytext=(6, 4), textcoords="offset points", fontsize=8)
        data.append({"type": "scatter", "mode": "markers", "name": name, "x": [layer], "y": [y],
                     "showlegend": False, "marker": {"symbol": symbol, "size": 14, "color": "black"},
                     "hovertemplate": f"<b>{name}</b><br>probe F1 %{{y:.3f}}<extra></extra>"})
        notes.append({"x": layer, "y": y, "text": name, "showarrow": True, "arrowhead": 0,
                      "ax": 30, "ay": -20, "font": {"size": 11}})
    ax.set_xticks(range(n_layers))
    ax.set_xlabel("layer")
    ax.set_ylabel("probe F1 (German)")
    ax.set_ylim(-0.02, 1.02)
    title = "Single-neuron probe F1 of every MLP neuron"
    ax.set_title(title)
    ax.legend(frameon=False, markerscale=4, loc="lower right", fontsize=8)
    fig.tight_layout()
    lay = ia.layout(title, height=420, annotations=notes,
                    xaxis=ia.axis("layer", tickmode="array", tickvals=list(range(n_layers)),
                                  zeroline=False),
                    yaxis=ia.axis("probe F1 (German)", range=[-0.02, 1.02]))
    return Chart(table, fig, check_spec(ia.spec(data, lay)), "figures.organism.discovery_figure")


def dynamics_table(result: dict) -> Table:
    """The `dynamics` artifact's rows as `step, panel, series, value` (panels: probe F1,
    loss increase (%), loss (nats))."""
    ctx = result["context_neuron"]
    cols: dict[str, list] = {"step": [], "panel": [], "series": [], "value": []}

    def add(step, panel, series, value):
        for k, v in (("step", step), ("panel", panel), ("series", series), ("value", value)):
            cols[k].append(v)

    for r in result["rows"]:
        add(r["step"], "probe F1", ctx, r["context"]["f1"])
        add(r["step"], "probe F1", "best neuron", r["best"]["f1"] if r["best"] else None)
        for lang in ("german", "english"):
            add(r["step"], "loss increase (%)", lang.capitalize(),
                r["context"][lang]["percent_increase"])
        for lang in ("german", "english"):
            add(r["step"], "loss (nats)", lang.capitalize(), r["loss"][lang])
    return Table(cols)


def dynamics_figure(result: dict, authors=None) -> Chart:
    """Three panels over training steps (symlog axis, step 0 included): probe F1 of the
    context neuron and of each checkpoint's best neuron; the context neuron's mean-ablation
    loss increase on German and English; the German and English loss.

    `authors`: the authors' published series (pandas DataFrame, `core.paper.authors_series`;
    `EleutherAI/pythia-70m` only), drawn dashed in the panels `figures.paper.DYNAMICS_OVERLAYS`
    names (L3N669's F1 and MCC, its German ablation increase, the German and English loss)
    and added to the figure's table; None for none."""
    from .paper import DYNAMICS_OVERLAYS, authors_lines, authors_table, authors_traces

    table = dynamics_table(result)
    ctx = result["context_neuron"]
    panels = (("probe F1", "Probe F1", ((ctx, GERMAN, "o-"), ("best neuron", "black", "s--"))),
              ("loss increase (%)", f"Mean-ablating {ctx}",
               (("German", GERMAN, "o-"), ("English", ENGLISH, "o-"))),
              ("loss (nats)", "Next-token loss", (("German", GERMAN, "o-"), ("English", ENGLISH, "o-"))))
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.3), dpi=110)
    doms = ia.panel_domains(3, 0.09)
    data, lay, notes = [], ia.layout("Training dynamics", height=380), []
    for i, (ax, (panel, title, series)) in enumerate(zip(axes, panels, strict=True)):
        sx = "" if i == 0 else str(i + 1)
        for name, color, style in series:
            t = table.where(panel=panel, series=name)
            steps = np.array(t["step"], dtype=float)
            vals = [np.nan if v is None else v for v in t["value"]]
            ax.plot(steps, vals, style, color=color, ms=3 if style == "s--" else 6,
                    lw=1 if style == "s--" else 1.5, label=name)
            data.append({"type": "scatter", "mode": "lines+markers", "name": ia.plot_text(name),
                         "x": t["step"], "y": ia.num(t["value"]), "xaxis": f"x{sx}", "yaxis": f"y{sx}",
                         "legendgroup": name, "showlegend": i != 2,
                         "line": {"color": color, "dash": "dash" if "--" in style else "solid"},
                         "hovertemplate": f"<b>{ia.plot_text(name)}</b><br>step %{{x:,}}<br>"
                                          f"{panel} %{{y:.4f}}<extra></extra>"})
        if authors is not None:
            authors_lines(ax, authors, DYNAMICS_OVERLAYS[panel])
            data += authors_traces(authors, DYNAMICS_OVERLAYS[panel], f"x{sx}", f"y{sx}")
        if panel == "loss increase (%)":
            ax.axhline(0, color="black", lw=0.6)
        if panel == "probe F1":
            ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(panel)
        ax.set_title(title)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=0)
        ax.set_xlabel("training step")
        ax.legend(frameon=False, fontsize=8 if authors is None else 6)
        # plotly has no symlog axis: log axis, step 0 drawn at the axis' left end
        lay[f"xaxis{sx}"] = ia.axis("training step", domain=doms[i], anchor=f"y{sx}")
        lay[f"yaxis{sx}"] = ia.axis(panel, anchor=f"x{sx}")
        notes.append(ia.subplot_title(ia.plot_text(title), sum(doms[i]) / 2))
    fig.tight_layout()
    lay["annotations"] = notes
    if authors is not None:
        ours = Table({"who": ["ours"] * len(table), **table.columns})
        table = Table.concat([ours] + [authors_table(authors, names, panel)
                                       for panel, names in DYNAMICS_OVERLAYS.items()])
    return Chart(table, fig, check_spec(ia.spec(data, lay)), "figures.organism.dynamics_figure")
