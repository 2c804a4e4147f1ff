"""Downstream-neuron analyses (`analysis.families.downstream`, `analysis.families.neurons`) against direct
computations with the bridge, and the heat-map renderers (`figures.neurons`)."""

from __future__ import annotations

import html as html_lib
import re

import numpy as np
import pytest
import torch

from analysis.core.config import Neuron
from analysis.core.engine import make_batches
from analysis.families.downstream import clustered_se, difference_sums, mean_std, rank_neurons
from analysis.families.neurons import (
    context_shift_samples,
    neuron_unembed,
    position_index,
    shift_loss_differences,
    top_differences,
    top_indices,
    top_k_excluding,
    weighted_max,
    weird_tokens,
)
from figures.neurons import heatmap_bundle, heatmap_html, heatmap_typst, token_rgb, typst_string

CTX = Neuron(3, 669)
TEXTS = [
    "Die Kommission hat heute einen neuen Vorschlag für die Verbesserung der Wasserqualität vorgelegt.",
    "Click the button in the toolbar to open the settings dialog of the application.",
    "Wir müssen gemeinsam dafür sorgen, dass die Vorschläge umgesetzt werden.",
]
# Far from the tiny model's own means, so that every effect is large.
ACTIVE, INACTIVE = 4.0, -2.0


def _bridge_run(tiny, ids, ctx_value, shift=None, capture=()):
    """One example through the bridge with the context neuron's hook_post set to
    `ctx_value`, optionally a neuron's hook_pre moved by `shift=(neuron, delta)`; returns
    the log-softmax and the captured activations."""
    saved = {}

    def set_ctx(v, hook):
        v[:, :, CTX.index] = ctx_value
        return v

    def add(v, hook):
        v[:, :, shift[0].index] += shift[1]
        return v

    def save(v, hook):
        saved[hook.name] = v.detach().clone()
        return v

    hooks = [(CTX.hook(), set_ctx)]
    if shift is not None:
        hooks.append((shift[0].hook("hook_pre"), add))
    hooks += [(name, save) for name in capture]
    with torch.inference_mode():
        logits = tiny.bridge.run_with_hooks(torch.tensor([ids]), fwd_hooks=hooks)
    return logits[0].double().log_softmax(-1), saved


def test_difference_sums_equal_the_direct_difference(tiny, tiny_fwd):
    toks = [tiny.to_tokens(t) for t in TEXTS]
    sums, sumsq, count, clusters = difference_sums(tiny_fwd, make_batches(toks, 4096, 1), CTX, ACTIVE,
                                                   INACTIVE, [4, 5], show_progress=False)
    assert count == sum(len(t) for t in toks)  # every position, BOS included, no padding
    names = ["blocks.4.mlp.hook_pre", "blocks.5.mlp.hook_pre"]
    diffs = {n: [] for n in names}
    for ids in toks:
        _, on = _bridge_run(tiny, ids, ACTIVE, capture=names)
        _, off = _bridge_run(tiny, ids, INACTIVE, capture=names)
        for n in names:
            diffs[n].append((on[n] - off[n])[0].double())
    for layer, n in zip((4, 5), names, strict=True):
        d = torch.cat(diffs[n])
        mean, std = mean_std(sums[layer], sumsq[layer], count)
        np.testing.assert_allclose(mean, d.mean(0).numpy(), atol=2e-5)
        np.testing.assert_allclose(std, d.std(0).numpy(), atol=2e-5)  # ddof=1, as torch.std
        assert np.abs(mean).max() > 1e-3  # the edit does move layer-4/5 pre-activations
        # standard error over examples (cluster-robust), against its definition
        per = [x.sum(0).numpy() for x in diffs[n]]
        n_e = np.array([len(x) for x in diffs[n]], dtype=float)
        mu = d.mean(0).numpy()
        E = len(per)
        want = np.sqrt(E / (E - 1) * sum((s - k * mu) ** 2 for s, k in zip(per, n_e, strict=True))) / n_e.sum()
        se = clustered_se(sums[layer], clusters["s2"][layer], clusters["sn"][layer], clusters["n2"],
                          count, clusters["examples"])
        np.testing.assert_allclose(se, want, rtol=1e-4, atol=1e-7)
        assert clusters["examples"] == len(toks) and se.max() > 0
        top = rank_neurons(mean, std, k=5)
        score = np.abs(d.mean(0).numpy()) - d.std(0).numpy()
        assert top[0]["neuron"] == int(np.argmax(score))
        assert [r["score"] for r in top] == sorted((r["score"] for r in top), reverse=True)
    # active minus inactive: swapping the two negates the mean
    sums2, _, _, _ = difference_sums(tiny_fwd, make_batches(toks, 4096, 1), CTX, INACTIVE, ACTIVE,
                                  [4], show_progress=False)
    np.testing.assert_allclose(sums2[4], -sums[4], atol=1e-6)
    with pytest.raises(ValueError):
        difference_sums(tiny_fwd, make_batches(toks, 4096, 1), CTX, ACTIVE, INACTIVE, [3])


def test_mean_std_from_running_sums():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(500, 4))
    mean, std = mean_std(x.sum(0), (x * x).sum(0), len(x))
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, x.std(0, ddof=1), rtol=1e-9)


def test_context_shift_is_deactivated_minus_activated(tiny, tiny_fwd):
    neurons = [Neuron(5, 1336), Neuron(4, 683)]
    crop = (3, 400)
    toks = [tiny.to_tokens(t) for t in TEXTS]
    samples, count = context_shift_samples(tiny_fwd, make_batches(toks, 4096, 1), CTX, ACTIVE,
                                           INACTIVE, neurons, crop, show_progress=False)
    assert count == sum(min(len(t), crop[1]) - crop[0] for t in toks)
    for j, n in enumerate(neurons):
        direct = {}
        for name, value in (("activated", ACTIVE), ("deactivated", INACTIVE)):
            vals = []
            for ids in toks:
                _, cap = _bridge_run(tiny, ids, value, capture=[n.hook("hook_pre")])
                vals.append(cap[n.hook("hook_pre")][0, crop[0]:crop[1], n.index].double())
            direct[name] = torch.cat(vals)
        np.testing.assert_allclose(samples["activated"][:, j], direct["activated"].numpy(), atol=2e-5)
        shift = samples["deactivated"][:, j].mean() - samples["activated"][:, j].mean()
        expected = float(direct["deactivated"].mean() - direct["activated"].mean())
        assert abs(shift - expected) < 1e-5
        assert abs(expected) > 1e-3  # not trivially zero
    # cutting the examples at crop_end changes nothing (causal attention)
    cut, _ = context_shift_samples(tiny_fwd, make_batches([t[:12] for t in toks], 4096, 1), CTX,
                                   ACTIVE, INACTIVE, neurons, (3, 12), show_progress=False)
    full, _ = context_shift_samples(tiny_fwd, make_batches(toks, 4096, 1), CTX, ACTIVE, INACTIVE,
                                    neurons, (3, 12), show_progress=False)
    np.testing.assert_allclose(cut["deactivated"], full["deactivated"], atol=1e-5)


def test_weird_tokens_on_a_hand_made_matrix():
    # W_U columns with norms 20, 1, 16, 1, 1, 15; W_E rows with norms 1, .3, 1, .39, .4, 1
    W_U = torch.zeros(3, 6)
    W_U[0] = torch.tensor([20.0, 1.0, 16.0, 1.0, 1.0, 15.0])
    W_E = torch.zeros(6, 3)
    W_E[:, 1] = torch.tensor([1.0, 0.3, 1.0, 0.39, 0.4, 1.0])
    w = weird_tokens(W_U, W_E)
    assert w["w_u"].tolist() == [0, 2]          # > 15: 15 itself is kept
    assert w["w_e"].tolist() == [1, 3]          # < 0.4: 0.4 itself is kept
    assert w["all"].tolist() == [0, 1, 2, 3]
    # the seed's axes: W_U is [d_model, d_vocab] (column norms), W_E is [d_vocab, d_model]
    w2 = weird_tokens(W_U, W_E, w_u_threshold=0.5, w_e_threshold=0.0)
    assert w2["w_u"].tolist() == [0, 1, 2, 3, 4, 5] and w2["w_e"].tolist() == []


def test_top_k_excluding_and_top_differences():
    v = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    vals, idx = top_k_excluding(v, 2, [0, 2])
    assert idx.tolist() == [1, 3] and vals.tolist() == [4.0, 2.0]
    vals, idx = top_k_excluding(v, 10, [0, 0, 2])  # fewer left than k
    assert idx.tolist() == [1, 3, 4]
    assert top_k_excluding(v, 2, [4], largest=False)[1].tolist() == [3, 2]
    orig = torch.tensor([-1.0, -2.0, -8.0, -9.0, -0.5, -3.0]).double()
    abl = torch.tensor([-2.0, -1.0, -6.0, -9.5, -0.4, -3.0]).double()
    out = top_differences(orig, abl, np.array([4]), k=3)
    # token 3 (both <= -7) and 4 (weird) never appear; 2 stays (ablated -6 > -7)
    for rows in out.values():
        assert not {r["id"] for r in rows} & {3, 4}
    assert [r["id"] for r in out["active_top"]] == [0, 1, 5]
    assert [r["id"] for r in out["ablated_top"]] == [1, 0, 5]
    assert [r["id"] for r in out["boosted"]] == [0, 5, 1]       # diff = orig - abl: 1, 0, -1
    assert out["reduced"][0]["id"] == 2 and out["reduced"][0]["difference"] == -2.0


def test_position_index_handles_short_prompts():
    assert position_index(5, -3) == 2 and position_index(5, 3) == 3
    assert position_index(5, 4) is None       # the last token has no next token
    assert position_index(3, 6) is None       # beyond the prompt
    assert position_index(5, -6) is None
    assert position_index(2, -2) == 0


def test_log_prob_weighted_max_equals_the_direct_computation(tiny, tiny_fwd):
    shifts = [(Neuron(5, 1336), 3.0), (Neuron(4, 683), -2.5)]
    toks = [tiny.to_tokens(t) for t in TEXTS]
    out = shift_loss_differences(tiny_fwd, make_batches(toks, 4096, 1), CTX, ACTIVE, shifts,
                                 show_progress=False)
    for j, shift in enumerate(shifts):
        scores = []
        for i, ids in enumerate(toks):
            lp_orig, _ = _bridge_run(tiny, ids, ACTIVE)
            lp_abl, _ = _bridge_run(tiny, ids, ACTIVE, shift=shift)
            tgt = torch.tensor(ids[1:])
            o = lp_orig[:-1].gather(-1, tgt[:, None])[:, 0]
            a = lp_abl[:-1].gather(-1, tgt[:, None])[:, 0]
            diff = (-a) - (-o)  # loss(shifted) - loss(unshifted)
            ref = float((diff + 0.5 * torch.maximum(o, a)).max())
            got, pos = weighted_max(out[j][i], 0.5)
            assert abs(got - ref) < 1e-4, (shift, i)
            assert abs(float((diff + 0.5 * torch.maximum(o, a))[pos]) - ref) < 1e-4
            np.testing.assert_allclose(out[j][i]["loss_difference"], diff.numpy(), atol=1e-4)
            np.testing.assert_allclose(out[j][i]["original_logprob"], o.numpy(), atol=1e-4)
            assert np.abs(out[j][i]["loss_difference"]).max() > 1e-3
            scores.append(got)
        assert top_indices(np.array(scores), 2) == sorted(range(3), key=lambda k: -scores[k])[:2]
    with pytest.raises(ValueError):
        shift_loss_differences(tiny_fwd, make_batches(toks, 4096, 1), CTX, ACTIVE,
                               [(Neuron(3, 1), 1.0)], show_progress=False)


def test_neuron_unembed_is_the_difference_of_two_unembeddings(tiny_fwd):
    w = tiny_fwd.w
    n = Neuron(5, 1336)
    got = neuron_unembed(w.W_out, w.W_U, n, 1.7, -0.3)
    ref = (w.W_out[5, 1336] * 1.7 @ w.W_U + w.b_U) - (w.W_out[5, 1336] * -0.3 @ w.W_U + w.b_U)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_top_indices_break_ties_and_skip_non_finite():
    assert top_indices(np.array([1.0, 3.0, 3.0, -np.inf, 2.0]), 3) == [1, 2, 4]


# ------------------------------------------------------------------ heat maps


NASTY = ["<b>", "a&b", '"q"', " x\n", "</div>", "`x`", "#[y]", "\\", "$z$"]


def test_heatmap_html_escapes_tokens_and_titles():
    values = [0.5, -0.5, 2.0, -2.0, 0.0, 0.1, -0.1, 0.2, 0.3]
    h = heatmap_html(NASTY, values, 1.0, [-1.0] * 9, [-2.0] * 9, label="<i>label</i> & co",
                     mark=2, unit="nats")
    assert h.startswith('<div class="heatmap"')
    assert "<b>" not in h and "<i>" not in h
    assert h.count("<div") == 2 and h.count("</div>") == 2  # wrapper + label, nothing injected
    assert h.count("<span") == h.count("</span>") == len(NASTY) + 1  # tokens + the scale
    assert "&lt;b&gt;" in h and "a&amp;b" in h and "&quot;q&quot;" in h and "&lt;/div&gt;" in h
    assert "&lt;i&gt;label&lt;/i&gt; &amp; co" in h
    assert "colour ±1 nats" in h  # the absolute scale is printed
    spans = re.findall(r'<span(?: class="([^"]*)")? style="background:#([0-9a-f]{6})" '
                       r'data-t="([^"]*)">([^<]*)</span>', h)
    assert len(spans) == len(NASTY)
    # the tokens are the text itself, contiguous: no inserted spaces or "_" markers
    assert "".join(html_lib.unescape(t) for *_, t in spans) == "".join(NASTY).replace("\n", "↵")
    assert "</span><span" in h and "</span> <span" not in h
    assert spans[0][1] == "ff7f7f"  # +0.5 of 1: half red
    assert spans[1][1] == "7f7fff"  # -0.5: half blue
    assert spans[2][1] == "ff0000" and spans[2][0] == "w max"  # saturated, white text, marked
    assert [i for i, sp in enumerate(spans) if "max" in sp[0].split()] == [2]
    assert html_lib.unescape(spans[0][2]) == "Δ loss +0.5000 · log-prob -1.000 → -2.000"
    assert token_rgb(0.0, 1.0) == (255, 255, 255)
    with pytest.raises(ValueError):
        heatmap_html(["a"], [1.0, 2.0], 1.0)


def test_typst_heatmap_escapes_and_compiles(tmp_path):
    import typst

    assert typst_string('a"b\\c`d') == '"a\\"b\\\\c\\u{60}d"'
    typ = heatmap_typst(NASTY, [0.5] * len(NASTY), 1.0, label='label "#1" [x]', annotate=True)
    src = tmp_path / "h.typ"
    src.write_text(typ + "\n", encoding="utf-8")
    pdf = typst.compile(str(src))
    assert pdf[:5] == b"%PDF-"
    long = heatmap_typst(["-" * 120, "ab"], [0.5, 0.1], 1.0, annotate=True)
    assert "-" * 120 not in long and "-" * 39 + "…" in long  # cut to fit the line
    bundle = heatmap_bundle(NASTY, [0.1] * len(NASTY), 1.0)
    assert set(bundle) == {"text/html", "text/markdown", "text/plain"}
    md = bundle["text/markdown"]
    assert md.startswith("```{=typst}\n") and md.endswith("\n```")
    assert md.count("```") == 2  # no token can close the raw block early


# ------------------------------------------------------------------ the seed's example searches


def test_paper_plan_searches_the_seeds_pool_cell_by_cell():
    """Seed `get_examples_by_neuron` cells: "Positive L5" In [50]-[52] search
    `german_data[:500]` for top_positive_l5[0..2]; "Negative L5" In [119] searches
    `german_data[:1000]` (log-prob weight 0.3) and In [95] `english_data[:500]` for
    top_negative_l5[1]; "L5N1336" In [111] searches `german_data[:1000]`."""
    from analysis.families.neurons import neuron_plan, search_pool

    plan = {str(e.neuron): [(x.language, x.pool, x.log_prob_weight, x.seed_cell) for x in e.searches]
            for e in neuron_plan("paper")}
    assert plan == {
        "L5N1336": [("german", 500, 0.5, "Positive L5"), ("german", 1000, 0.5, "L5N1336")],
        "L5N1460": [("german", 500, 0.5, "Positive L5")],
        "L5N1709": [("german", 500, 0.5, "Positive L5")],
        "L5N213": [("german", 1000, 0.3, "Negative L5"), ("english", 500, 0.5, "Negative L5")],
    }
    for e in neuron_plan("paper"):
        for x in e.searches:
            assert f"{x.language}_data[:{x.pool}]" in x.seed_call
            assert search_pool(x, 1000) == x.pool and search_pool(x, 20) == 20
    from analysis.core.config import PROFILES

    assert PROFILES["paper"].neuron_examples >= max(
        x.pool for e in neuron_plan("paper") for x in e.searches)


def test_tiny_report_searches_english_examples_for_the_negative_l5_neuron(tiny, tiny_report):
    """The seed's cell In [95] (`get_examples_by_neuron(english_data[:500], ...)` for the
    negative L5 neuron) is computed, stored and shown; every pool is the seed's, capped by
    the quick profile, and each search's top examples are the first of its own pool."""
    from analysis.core.data import load_corpus

    res, _, cfg = tiny_report
    nr = res["artifacts"]["neurons"]["result"]
    cap, k = cfg.profile.neuron_examples, cfg.profile.top_examples
    scores = np.load(res["out"] / "artifacts" / "neurons.example_scores.npy")
    rows = 0
    for e in nr["neurons"]:
        for x in e["example_searches"]:
            assert x["pool"] == min(x["seed_pool"], cap)
            assert len(x["top"]) == min(k, x["n_examples"])
            row = scores[x["scores_row"]]
            assert np.isfinite(row[: x["n_examples"]]).all() and np.isnan(row[x["n_examples"]:]).all()
            assert [t["score"] for t in x["top"]] == sorted(row[: x["n_examples"]], reverse=True)[:k]
            rows += 1
    assert scores.shape[0] == rows
    neg = next(e for e in nr["neurons"] if "negative_l5" in e["role"])
    english = [x for x in neg["example_searches"] if x["language"] == "english"]
    assert len(english) == 1 and english[0]["seed_cell"] == "Negative L5"
    en = english[0]
    assert "english_data[:500]" in en["seed_call"] and en["log_prob_weight"] == 0.5
    usable = [t for t in load_corpus("fixture_english").examples if len(tiny.to_tokens(t)) >= 2]
    for top in en["top"]:
        assert top["token_ids"] == [int(i) for i in tiny.to_tokens(usable[top["example"]])[1:]]
    html = (res["out"] / "report.html").read_text(encoding="utf-8")
    assert re.search(rf"Top {len(en['top'])} English examples by loss difference, searched among the\s+"
                     rf"first {en['pool']} English examples", html)
    assert "English example" in html
