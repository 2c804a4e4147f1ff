"""Figures of the neuron cards (`analysis.families.cards`): the activation density and the
output-direction logits of one neuron. Pure: card data in, `Chart` out."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import interactive as ia
from .plots import (
    Chart,
    Table,
    check_spec,
    counts_table,
    histogram_chart,
    plt,
    token_label,
    token_table,
)


def card_density(density: Mapping, neuron: str) -> Chart:
    """Percent histogram of the neuron's activation on German and on English text, from
    the card's bin counts (`{"edges", "german", "english"}`), on a log scale: a neuron's
    activations pile up near zero, and its rare large activations (the ones that matter)
    would be invisible bars on a linear scale; empty bins are left out."""
    table = counts_table(density["edges"], {"German": density["german"], "English": density["english"]})
    chart = histogram_chart(table, f"{neuron} activation (hook_post)",
                            f"{neuron}: activation density on German and English text (log scale)",
                            "figures.cards.card_density")
    for ax in chart.static.axes:
        ax.set_yscale("log", nonpositive="clip")
    chart.static.tight_layout()  # the log ticks are wider than the linear ones
    yaxis = chart.interactive["layout"]["yaxis"]
    yaxis.pop("rangemode", None)  # a log axis has no zero
    yaxis.update(type="log", exponentformat="power")
    for trace in chart.interactive["data"]:  # log(0) has no bar: leave empty bins out
        keep = [i for i, y in enumerate(trace["y"]) if y and y > 0]
        for key in ("x", "y", "width", "customdata"):
            trace[key] = [trace[key][i] for i in keep]
    check_spec(chart.interactive)
    return chart


def card_logits(logits: Mapping, neuron: str) -> Chart:
    """The most boosted and most suppressed tokens of the neuron's output direction
    (`{"boosted": [{"id", "token", "value"}], "suppressed": [...]}`), as bars."""
    table = Table.concat([token_table(logits["boosted"], list="boosted"),
                          token_table(logits["suppressed"], list="suppressed")])
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 0.16 * max(len(logits["boosted"]), 1) + 1.3), dpi=110)
    for ax, key, color in ((axes[0], "boosted", ia.BOOST), (axes[1], "suppressed", ia.INHIBIT)):
        t = table.where(list=key)
        y = np.arange(len(t))
        ax.barh(y, t["value"], color=color)
        ax.set_yticks(y, [token_label(tok[:20]) + ("…" if len(tok) > 20 else "") for tok in t["token"]],
                      fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0, color="black", lw=0.6)
        ax.set_xlabel("logit per unit activation", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{neuron}: most {key}", fontsize=9)
    fig.tight_layout()
    panels = [(f"most {k}", table.where(list=k), c)
              for k, c in (("boosted", ia.BOOST), ("suppressed", ia.INHIBIT)) if len(table.where(list=k))]
    spec = ia.token_barh(panels, ia.plot_text(f"{neuron}: output direction W_out @ W_U"),
                         "logit per unit activation")
    return Chart(table, fig, check_spec(spec), "figures.cards.card_logits")
