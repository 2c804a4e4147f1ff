"""Degenerate output (`report.degenerate`): each rule fires on the `tiny` model's output,
where there is nothing to see, and the report prints its sentence instead; real signal (the
planted neuron's recorded numbers, `baselines/pythia-70m-planted-quick.json`) is kept."""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path

from analysis.core.config import DISPLAY, Profile, get_profile
from report import degenerate as dg

P = get_profile("quick")
R = dg.Rules(P)
PLANTED = Path(__file__).resolve().parent.parent / "baselines" / "pythia-70m-planted-quick.json"


def planted_rows() -> list[dict]:
    """The planted run's mean-ablation rows, rebuilt from its recorded regression baseline."""
    m = json.loads(PLANTED.read_text(encoding="utf-8"))["metrics"]
    neurons = sorted({k.split(".")[1] for k in m if k.startswith("ablation.L")})

    def lang(n, lg):
        v = lambda s: m[f"ablation.{n}.{lg}.{s}"]["value"]  # noqa: E731
        return {"percent_increase": v("percent_increase"),
                "percent_increase_ci": [v("percent_increase_ci_low"), v("percent_increase_ci_high")]}

    return [{"neuron": n, "german": lang(n, "german"), "english": lang(n, "english")} for n in neurons]


def test_thresholds_live_in_the_profile_but_not_in_its_sizes():
    names = {f.name for f in fields(Profile)}
    assert set(DISPLAY) <= names
    for name in DISPLAY:  # never part of cache keys, regression configurations or --set
        assert name not in P.sizes()
    assert R.min_delta_e == P.heatmap_min_delta_e and R.bound == P.negligible_percent


def test_delta_e_is_zero_for_white_and_grows_with_the_tint():
    from figures.neurons import token_rgb

    assert dg.delta_e((255, 255, 255)) == 0
    des = [dg.delta_e(token_rgb(x, 1.0)) for x in (0.0, 0.01, 0.05, 0.5, 1.0)]
    assert des == sorted(des) and des[0] == 0 and des[-1] > 50


def test_blank_heatmaps_rule():
    from figures.neurons import token_rgb

    # the largest value whose colour is still within the just-noticeable difference of white
    faint = max(x / 1000 for x in range(1, 200)
                if dg.delta_e(token_rgb(x / 1000, 1.0)) < P.heatmap_min_delta_e)
    text = dg.blank_heatmaps([[faint / 2, -faint / 2, None, faint], [0.0]], 1.0, P.heatmap_min_delta_e)
    assert text and "The 2 heat maps are not drawn" in text and f"{faint:.2g} nats" in text, text
    assert "4 tokens" in text  # None is not a token value
    # one visible token and every heat map is drawn
    assert dg.blank_heatmaps([[faint, 2 * faint + 0.01], [0.0]], 1.0, P.heatmap_min_delta_e) is None
    assert dg.blank_heatmaps([], 1.0, P.heatmap_min_delta_e) is None


def _search(picks, pool=20, language="german", weight=0.5, delta=1e-4, logprob=-7.0):
    return {"top": [{"example": p, "position": 0, "loss_difference": [delta],
                     "original_logprob": [logprob], "ablated_logprob": [logprob - 1]} for p in picks],
            "pool": pool, "language": language, "log_prob_weight": weight}


def test_same_picks_rule():
    searches = [("L4N683", _search([8, 13, 11])), ("L4N1331", _search([8, 13, 11], delta=-0.002)),
                ("L5N1292", _search([8, 13, 11], language="english")),
                ("L5N1336", _search([8, 13, 11], pool=10)), ("L3N669", _search([2, 5, 7]))]
    out = dg.same_picks(searches)
    assert set(out) == {0, 1}  # another language, another pool, other picks: not the same search
    assert "do not depend on L4N683" in out[0] and "search for L4N1331" in out[0]
    assert "(8, 13 and 11)" in out[0] and "at most 0.002 nats" in out[1]
    assert "log-prob) is -3.50" in out[0]  # 0.5 × -7.0, the larger of the two log-probs


def test_empty_predictions_rule():
    row = {"neuron": "L5N1336", "active_top": [], "ablated_top": [], "boosted": [], "reduced": [],
           "max_logprob": {"original": -10.79, "ablated": -10.81}}
    text = dg.empty_predictions(row, -7.0, 50304)
    assert text and "≤ -7" in text and "the best is -10.79" in text
    assert f"{-math.log(50304):.2f}" in text
    assert dg.empty_predictions({**row, "boosted": [{"token": "x"}]}, -7.0, 50304) is None
    assert dg.empty_predictions({**row, "skipped": "too short"}, -7.0, 50304) is None
    weird = dg.empty_predictions({**row, "max_logprob": {"original": None, "ablated": None}}, -7.0, 512)
    assert "every one of the model's 512 tokens is a weird token" in weird


def test_empty_lists_rule():
    weird = {"n_unique": 512, "d_vocab": 512}
    text = dg.empty_lists({"boosted": [], "inhibited": []}, "the direct unembedding of L4N683", weird)
    assert text == ("No token is listed for the direct unembedding of L4N683: every one of the "
                    "model's 512 tokens is a weird token (excluded).")
    assert dg.empty_lists({"boosted": [{"token": "a"}], "inhibited": []}, "x", weird) is None


def test_negligible_rows_and_noise_ratio_rules_keep_the_planted_signal():
    rows = planted_rows()
    shown, text = dg.negligible_rows(rows, P.negligible_percent)  # no `keep`: the rule alone
    assert "L3N669" in shown, "the planted neuron's loss increase must stay in the table"
    assert text and "L3N669" not in text and "would print as +0.00 [+0.00, +0.00]" in text
    # the seed-named neurons are noise in the planted model, except any the baseline says is not
    for r in rows:
        flat = dg.negligible(dg._numbers(r), P.negligible_percent)
        assert (r["neuron"] not in shown) == flat, r
    # a seed value beyond the bound keeps a row (the comparison with the seed is the point)
    quiet = next(r for r in rows if r["neuron"] not in shown)
    seed = {quiet["neuron"]: {"german": {"percent_increase": 1.0}}}
    assert quiet["neuron"] in dg.negligible_rows(rows, P.negligible_percent, seed=seed)[0]
    # backup rows: B alone is the planted run's single-neuron increase
    pct = {r["neuron"]: r["german"]["percent_increase"] for r in rows}
    a = pct["L3N669"]
    backup = [{"neuron": n, "a": a, "b": b, "excess": 0.0, "backup_ratio": 0.0 / b if b else None}
              for n, b in pct.items() if n != "L3N669"]
    noisy, sentence = dg.noise_ratios(backup, P.negligible_percent)
    assert set(noisy) == {r["neuron"] for r in backup if abs(r["b"]) < P.negligible_percent}
    assert noisy and "divide noise by about zero" in sentence
    assert dg.noise_ratios([{"neuron": "X", "b": a, "backup_ratio": 0.1}], P.negligible_percent) == ([], None)
    assert dg.negligible_excess([{"neuron": "X", "excess": a}], P.negligible_percent) is None


def test_every_rule_fires_on_tiny_and_the_report_says_why(tiny_report):
    """On the random-weight `tiny` model every rule has something to summarise, and the
    executed notebook prints each rule's sentence instead of the empty output."""
    import nbformat

    res, _, _ = tiny_report
    arts = res["artifacts"]
    nr = arts["neurons"]["result"]
    searches = [(e["neuron"], x) for e in nr["neurons"] for x in e["example_searches"]]
    blank = [R.blank_heatmaps([t["loss_difference"] for t in x["top"]]) for _, x in searches]
    assert any(blank), "no blank heat map on tiny"
    same = R.same_picks(searches)
    assert same, "no example search with another neuron's picks on tiny"
    empty = [R.empty_predictions(r, nr["log_prob_threshold"], nr["weird_tokens"]["d_vocab"])
             for r in nr["positions"]]
    assert any(empty)
    for r, e in zip(nr["positions"], empty, strict=True):  # each sentence gives its reason
        best = [v for v in r["max_logprob"].values() if v is not None] if e else []
        if e and best:
            assert max(best) <= nr["log_prob_threshold"] and f"the best is {max(best):.2f}" in e
        elif e:  # tiny: every token is weird
            assert nr["weird_tokens"]["n_unique"] == nr["weird_tokens"]["d_vocab"] and "weird" in e
    shown, flat = R.negligible_rows(arts["ablation"]["result"]["single"],
                                    [arts["ablation"]["result"]["context"]["neuron"]])
    assert flat
    noisy, ratio = R.noise_ratios(arts["backup"]["result"]["rows"])
    assert noisy and ratio
    nb = nbformat.read(str(res["out"] / "report.ipynb"), as_version=4)
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    outputs = json.dumps([c.get("outputs", []) for c in nb.cells if c.cell_type == "code"])
    lists = [R.empty_lists(e["unembed"], f"the direct unembedding of {e['neuron']}", nr["weird_tokens"])
             for e in nr["neurons"]]
    for text in ([b for b in blank if b] + list(same.values()) + [e for e in empty if e] + [flat, ratio]
                 + [t for t in lists if t]):
        assert text in md, text
    assert "no token is left after the exclusions" not in outputs
    # the ablation table lists exactly the rows left in
    table = next(c for c in nb.cells if c.cell_type == "code"
                 and 'rows = [r for r in ab["single"] if r["neuron"] in' in c.source)
    assert repr(shown) in table.source
    # tiny's loss differences are ~1e-6 nats: no search heat map is drawn, only the sentence
    assert all(blank)
    labels = [o["data"]["text/plain"] for c in nb.cells if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("data", {}).get("text/plain", "").startswith("[heat map")]
    assert labels and not any("weighted loss difference" in s for s in labels)
