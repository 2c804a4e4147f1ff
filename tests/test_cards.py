"""Neuron cards (`analysis.families.cards`) and the figure data tables both renderings draw
from (`figures.plots.Table`, `figures.interactive`)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from analysis.families import cards


def test_card_neurons_order_roles_and_no_duplicates():
    neurons = {"neurons": [{"neuron": "L5N1336", "role": "L5N1336 = top_positive_l5[0]"},
                           {"neuron": "L4N683", "role": "top_positive_l4[0]"}]}
    downstream = {"layers": [{"layer": 4, "top": [{"neuron": 683}, {"neuron": 12}, {"neuron": 9}]},
                             {"layer": 5, "top": [{"neuron": 1336}, {"neuron": 7}]}]}
    discovery = {"ranked": [{"neuron": "L3N669", "rank": 1, "sign": "german"},
                            {"neuron": "L2N5", "rank": 2, "sign": "english"},
                            {"neuron": "L1N1", "rank": 3, "sign": "german"}]}
    got = cards.card_neurons("L3N669", ["L4N482", "L5N1336", "L3N669"], neurons, downstream,
                             discovery, n_discovered=2, n_downstream=2)
    names = [c["neuron"] for c in got]
    assert names == ["L3N669", "L4N482", "L5N1336", "L4N683", "L4N12", "L5N7", "L1N1"]
    assert len(set(names)) == len(names)
    first = got[0]
    assert first["kind"] == "context" and len(first["roles"]) == 3  # context, German, discovered
    l5 = next(c for c in got if c["neuron"] == "L5N1336")
    assert l5["kind"] == "german" and any("downstream" in r for r in l5["roles"])
    assert "L2N5" not in names  # English-positive neurons of discovery get no card
    assert cards.card_neurons("L3N669", [], None, None, None) == [
        {"neuron": "L3N669", "kind": "context", "roles": ["the context neuron"]}]


def test_density_is_counts_over_shared_bins():
    rng = np.random.default_rng(0)
    de, en = rng.normal(3, 1, 500), rng.normal(0, 0.2, 300)
    d = cards.density(de, en, bins=20)
    assert len(d["edges"]) == 21 and len(d["german"]) == len(d["english"]) == 20
    assert sum(d["german"]) == 500 and sum(d["english"]) == 300
    assert d["edges"][0] == pytest.approx(min(de.min(), en.min()))
    assert d["mean"]["german"] == pytest.approx(de.mean())
    const = cards.density(np.ones(5), np.ones(3), bins=4)  # a constant neuron still bins
    assert sum(const["german"]) == 5


def test_top_activating_picks_the_best_examples_and_windows_them():
    acts = {"german": [np.array([9.0, 0.1, 0.5, 0.2]), np.array([9.0, 2.0] + [0.0] * 40)],
            "english": [np.array([0.0, 1.0, 3.0]), np.array([5.0])]}  # BOS (9.0) never counts
    top = cards.top_activating(acts, k=2, window=(3, 1))
    assert [(t["language"], t["example"], t["position"]) for t in top] == [("english", 0, 2),
                                                                          ("german", 1, 1)]
    assert top[0]["max_activation"] == 3.0 and (top[0]["start"], top[0]["end"]) == (1, 3)
    assert (top[1]["start"], top[1]["end"]) == (1, 3)  # 3 before (clipped at BOS), 1 after


def test_top_activating_narrows_the_window_after_the_first_examples():
    acts = {"german": [np.array([0.0] + [0.0] * 30 + [float(i + 1)] + [0.0] * 30) for i in range(4)]}
    top = cards.top_activating(acts, k=3, window=(20, 5), short=(2, 1), n_full=2)
    assert [t["example"] for t in top] == [3, 2, 1]
    assert [t["end"] - t["start"] for t in top] == [26, 26, 4]


def test_quantile_examples_follow_the_distribution_of_maxima_below_the_top():
    maxima = [float(i) for i in range(1, 101)]  # example i has maximum i + 1
    acts = {"german": [np.array([0.0, 0.0, m]) for m in maxima]}
    top = [("german", i) for i in range(80, 100)]  # the top 20 are shown already
    got = cards.quantile_examples(acts, quantiles=(0.5, 0.9), per_quantile=2, window=(1, 0),
                                  exclude=top)
    assert [e["quantile"] for e in got] == [0.9, 0.9, 0.5, 0.5]  # highest quantile first
    pool = maxima[:80]  # quantiles of the examples below the top
    assert got[0]["quantile_value"] == pytest.approx(np.quantile(pool, 0.9))
    assert got[2]["quantile_value"] == pytest.approx(np.quantile(pool, 0.5))
    for e in got:  # the picks are the pool maxima nearest each quantile
        nearest = sorted(pool, key=lambda m: abs(m - e["quantile_value"]))[:2]
        assert e["max_activation"] in nearest and ("german", e["example"]) not in top
        assert (e["start"], e["end"], e["position"]) == (1, 3, 2)
    assert len({(e["language"], e["example"]) for e in got}) == 4


def test_most_negative_and_firing():
    acts = {"german": [np.array([-9.0, 0.5, -0.1]), np.array([-9.0, -0.3, 2.0])],
            "english": [np.array([0.0, -0.2])]}
    neg = cards.most_negative(acts, k=2, window=(5, 5))
    assert [(e["language"], e["example"], e["position"]) for e in neg] == [("german", 1, 1),
                                                                          ("english", 0, 1)]
    assert neg[0]["min_activation"] == -0.3 and neg[0]["max_activation"] == 2.0  # BOS never counts
    f = cards.firing(np.array([0.0, 1.0, 2.0, -1.0]), np.array([-1.0]))
    assert f == {"threshold": 0.0, "german": 0.5, "english": 0.0}


def test_description_states_its_numbers():
    from report.describe import describe, language_preference, md_token

    card = {"density": {"mean": {"german": 3.67, "english": 0.15}},
            "probe": {"test_acc": 0.94, "test_acc_ci": [0.92, 0.95]},
            "firing": {"threshold": 0.0, "german": 0.62, "english": 0.04},
            "top_examples": [{"language": "german"}] * 19 + [{"language": "english"}],
            "logits": {"boosted": [{"token": " der", "value": 1.234}, {"token": "*", "value": 1.0}]},
            "ablation": {"german": {"percent_increase": 2.42, "percent_increase_ci": [2.23, 2.63]}}}
    text = describe(card)
    for part in ("More active on German", "mean 3.67 vs 0.15", "probe accuracy 0.94 [0.92, 0.95]",
                 "62% of German and 4% of English", "19 of its top 20 examples are German",
                 "“der”, “\\*”", "+1.23 logits", "+2.42% [+2.23, +2.63]"):
        assert part in text, (part, text)
    chance = {**card, "probe": {"test_acc": 0.52, "test_acc_ci": [0.49, 0.55]}}
    assert language_preference(chance) is None and "Does not separate" in describe(chance)
    assert md_token("_a") == "\\_a"


def test_output_logits_exclude_weird_tokens():
    import torch

    from analysis.core.config import Neuron

    W_out = torch.zeros(2, 3, 4)
    W_out[1, 2] = torch.tensor([1.0, 0, 0, 0])
    W_U = torch.tensor([[5.0, 4.0, -1.0, -6.0, 0.5]] + [[0.0] * 5] * 3)
    vals, lists = cards.output_logits(W_out, W_U, Neuron(1, 2), np.array([0]), k=2)
    assert vals.tolist() == [5.0, 4.0, -1.0, -6.0, 0.5]
    assert lists["boosted"][1].tolist() == [1, 4] and lists["suppressed"][1].tolist() == [3, 2]


def test_table_csv_round_trip_and_missing_values():
    from figures.plots import Table

    t = Table({"token": [" a", "b,\"c\"", "\n"], "value": [1.5, float("nan"), np.float32(2.25)],
               "id": [np.int64(3), 4, 5]})
    rows = list(csv.reader(io.StringIO(t.to_csv())))
    assert rows[0] == ["token", "value", "id"]
    assert rows[1:] == [[" a", "1.5", "3"], ["b,\"c\"", "", "4"], ["\n", "2.25", "5"]]
    assert t.where(id=4)["token"] == ["b,\"c\""] and len(t.head(2)) == 2
    with pytest.raises(ValueError, match="different lengths"):
        Table({"a": [1], "b": [1, 2]})


def test_histogram_table_holds_counts_not_values():
    from figures.plots import counts_table, histogram_table

    rng = np.random.default_rng(1)
    t = histogram_table({"German": rng.normal(size=1000), "English": rng.normal(size=10)}, bins=7)
    assert list(t.columns) == ["series", "bin", "left", "right", "count", "percent"]
    assert len(t) == 14 and sum(t.where(series="German")["count"]) == 1000
    assert sum(t.where(series="English")["percent"]) == pytest.approx(100.0)
    again = counts_table([0, 1, 2], {"German": [3, 1]})
    assert again["percent"] == [75.0, 25.0] and again["right"] == [1.0, 2.0]


def test_plot_tokens_are_escaped_and_visible():
    from figures.interactive import plot_token

    assert plot_token(" <b>&x") == "␣&lt;b&gt;&amp;x"
    assert plot_token("\n\t") == "↵⇥" and plot_token("") == "∅"
    assert plot_token("\x01") == "\\u{1}"


def test_token_chart_hover_names_token_id_and_rank():
    from figures.dla import top_token_bars

    rows = [{"token": " Haus", "token_id": 42, "value": 1.25},
            {"token": "<", "token_id": 7, "value": 0.5}]
    chart = top_token_bars(rows, rows[::-1], "direction")
    trace = chart.interactive["data"][0]
    assert trace["customdata"][0] == ["␣Haus", 42, 1] and trace["customdata"][1][0] == "&lt;"
    assert "customdata[0]" in trace["hovertemplate"] and "token id" in trace["hovertemplate"]
    assert chart.table["token"] == [" Haus", "<", "<", " Haus"]  # the raw tokens in the CSV
    json.dumps(chart.interactive, allow_nan=False)  # plain JSON
    import matplotlib.pyplot as plt

    plt.close(chart.static)


def test_cards_agree_with_the_steps_they_summarise(tiny_report):
    """The card of a German neuron repeats the `probes` row and the `ablation` row exactly
    (same activations, same split, same losses); densities count every crop position."""
    res, _, _ = tiny_report
    arts = res["artifacts"]
    cr = arts["cards"]["result"]
    probes = {r["neuron"]: r for r in arts["probes"]["result"]["rows"]}
    single = {r["neuron"]: r for r in arts["ablation"]["result"]["single"]}
    act = arts["activations"]["result"]
    for c in cr["cards"]:
        n = c["neuron"]
        assert sum(c["density"]["german"]) == act["n_activations"]["german"]
        assert sum(c["density"]["english"]) == act["n_activations"]["english"]
        if n in probes:
            for k in ("f1", "f1_ci", "test_acc", "test_acc_ci", "train_acc"):
                assert c["probe"][k] == probes[n][k], (n, k)
            assert c["density"]["mean"]["german"] == pytest.approx(act["german_means"][n], rel=1e-5)
        if n in single:
            assert c["ablation"]["source"] == "ablation"
            assert c["ablation"]["german"] == single[n]["german"]
        elif cards.ablate_here(c, list(single)):
            assert c["ablation"]["source"] == "cards"
            assert c["ablation"]["german"]["percent_increase_ci"] is not None
        else:
            assert c["ablation"] is None
        assert len(c["top_examples"]) == cards.TOP_EXAMPLES
        shown = {(e["language"], e["example"]) for e in c["top_examples"]}
        quant = c["quantile_examples"]
        assert len(quant) == len(cards.QUANTILES) * cards.QUANTILE_EXAMPLES
        assert not shown & {(e["language"], e["example"]) for e in quant}
        neg = c["negative_examples"]
        assert len(neg) == cards.NEGATIVE_EXAMPLES
        assert [e["min_activation"] for e in neg] == sorted(e["min_activation"] for e in neg)
        for e in neg:
            assert min(e["activations"]) == pytest.approx(e["min_activation"])
        for lang in ("german", "english"):  # a share of the density's positions
            n = c["density"]["n"][lang]
            assert c["firing"][lang] * n == pytest.approx(round(c["firing"][lang] * n), abs=1e-6)
        for e in c["top_examples"] + quant:
            assert len(e["tokens"]) == len(e["activations"]) == e["end"] - e["start"]
            assert max(e["activations"]) == pytest.approx(e["max_activation"])
        if cr["n_weird_tokens"] < arts["neurons"]["result"]["weird_tokens"]["d_vocab"]:
            assert c["logits"]["boosted"] and c["logits"]["suppressed"]
            assert c["logits"]["boosted"][0]["value"] >= c["logits"]["suppressed"][0]["value"]
        else:  # tiny: every token is weird, nothing is listed
            assert c["logits"] == {"boosted": [], "suppressed": []}
    assert {c["kind"] for c in cr["cards"]} >= {"context", "german", "downstream", "discovered"}
    assert any(c["ablation"] and c["ablation"]["source"] == "cards" for c in cr["cards"])
