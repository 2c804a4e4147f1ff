"""DLA, component patching, L3 unembedding differences and unigram counts, on `tiny`,
against TransformerLens's own cache functions where they exist."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.core.config import Neuron
from analysis.core.engine import make_batches, per_example_losses, set_neurons
from analysis.families.dla import (
    accumulated_dla,
    accumulated_labels,
    component_hooks,
    dla_and_patching,
    patched_losses,
    summarise,
)

TEXTS = [
    "Die Kommission hat heute einen neuen Vorschlag vorgelegt, den wir prüfen werden.",
    "Click the button in the toolbar to open the settings dialog of the application.",
    "Wir müssen gemeinsam dafür sorgen",
]
CTX = Neuron(3, 669)
VALUE = 1.7  # far from the neuron's activations, so the ablation changes something


def _batch(tiny, texts=TEXTS):
    return make_batches([tiny.to_tokens(t) for t in texts], 4096, pad_id=1)


def test_component_hooks_are_the_seeds_components_for_l3():
    assert list(component_hooks(CTX, 6)) == ["3_mlp_out", "4_attn_out", "4_mlp_out", "5_attn_out", "5_mlp_out"]
    assert component_hooks(CTX, 6)["4_attn_out"] == "blocks.4.hook_attn_out"
    assert accumulated_labels(2) == ["0_pre", "1_pre", "final_post"]


def test_final_dla_component_is_the_correct_logit_minus_bias(tiny, tiny_fwd):
    (b,) = _batch(tiny)
    w = tiny_fwd.w
    with torch.inference_mode():
        cap = {f"blocks.{i}.hook_resid_pre": None for i in range(w.n_layers)}
        final = tiny_fwd.run(b.tokens, capture=cap)
        stack = [cap[f"blocks.{i}.hook_resid_pre"] for i in range(w.n_layers)] + [final]
        dla = accumulated_dla(stack, final, w.W_U, b.tokens, b.lengths, w.eps)
        logits = tiny_fwd.logits(final)
    assert dla.shape == (w.n_layers + 1, len(b.index))
    for row in range(len(b.index)):
        n = int(b.lengths[row])
        tgt = b.tokens[row, 1:n]
        direct = logits[row, : n - 1].gather(-1, tgt[:, None])[:, 0] - w.b_U[tgt]
        assert abs(float(dla[-1, row]) - float(direct.mean())) < 1e-4
    # the first component is the embedding alone: not the logit
    assert abs(float(dla[0, 0]) - float(dla[-1, 0])) > 1e-3


def test_dla_matches_transformer_lens_accumulated_resid(tiny, tiny_fwd):
    """Seed `haystack_utils.DLA`, with the bridge's own cache, unedited and ablated."""
    text = TEXTS[0]
    ids = tiny.to_tokens(text)
    toks = torch.tensor([ids])
    per = dla_and_patching(tiny_fwd, make_batches([ids], 4096, 1), CTX, VALUE, show_progress=False)
    bridge = tiny.bridge

    def tl_dla(hooks):
        with torch.inference_mode(), bridge.hooks(fwd_hooks=hooks):
            _, cache = bridge.run_with_cache(toks[:, :-1])
            acc, labels = cache.accumulated_resid(layer=-1, incl_mid=False, return_labels=True)
            scaled = cache.apply_ln_to_stack(acc, layer=-1)
            dirs = bridge.W_U[:, toks[0, 1:]].T  # tokens_to_residual_directions
            return (scaled[:, 0] * dirs).sum((-1, -2)).detach() / (len(ids) - 1), labels

    def ablate(value, hook):
        value = value.clone()
        value[:, :, CTX.index] = VALUE
        return value

    ref_o, labels = tl_dla([])
    ref_a, _ = tl_dla([(CTX.hook(), ablate)])
    assert labels == accumulated_labels(tiny_fwd.w.n_layers)
    np.testing.assert_allclose(per["dla_original"][:, 0], ref_o.double().numpy(), atol=2e-4)
    np.testing.assert_allclose(per["dla_ablated"][:, 0], ref_a.double().numpy(), atol=2e-4)
    # the ablation moves the components after the context layer
    assert np.abs(per["dla_original"][-1] - per["dla_ablated"][-1]).max() > 1e-5


def test_patching_with_the_run_itself_changes_nothing(tiny, tiny_fwd):
    (b,) = _batch(tiny)
    comps = component_hooks(CTX, tiny_fwd.w.n_layers)
    with torch.inference_mode():
        cap = dict.fromkeys(comps.values())
        final = tiny_fwd.run(b.tokens, capture=cap)
        own = {c: cap[h] for c, h in comps.items()}
        out = patched_losses(tiny_fwd, final, own, own, b.tokens, b.lengths)
        base = tiny_fwd.token_losses(final, b.tokens, b.lengths).sum(1) / (b.lengths - 1)
    for v in out.values():
        assert torch.equal(v, base)


def test_patching_every_later_component_gives_the_ablated_run(tiny, tiny_fwd):
    """final - Σ original components + Σ ablated components = the ablated final residual:
    the per-component patches are a decomposition of the total ablation."""
    (b,) = _batch(tiny)
    comps = component_hooks(CTX, tiny_fwd.w.n_layers)
    edits = {CTX.hook(): set_neurons([CTX.index], VALUE)}
    with torch.inference_mode():
        co = dict.fromkeys(comps.values())
        final_o = tiny_fwd.run(b.tokens, capture=co)
        ca = dict.fromkeys(comps.values())
        final_a = tiny_fwd.run(b.tokens, edits=edits, capture=ca)
    patched = final_o - sum(co[h] for h in comps.values()) + sum(ca[h] for h in comps.values())
    assert torch.allclose(patched, final_a, atol=1e-4)
    assert not torch.allclose(final_o, final_a, atol=1e-4)


def test_dla_and_patching_losses_match_the_loss_engine_and_the_seed_hook(tiny, tiny_fwd):
    batches = _batch(tiny)
    per = dla_and_patching(tiny_fwd, batches, CTX, VALUE, show_progress=False)
    ref = per_example_losses(tiny_fwd, batches, {}, show_progress=False)
    np.testing.assert_allclose(per["loss_original"], ref["original"], rtol=1e-6)
    # seed get_direct_loss_increase_for_component for 5_mlp_out, with the bridge's hooks
    ids = tiny.to_tokens(TEXTS[2])
    toks = torch.tensor([ids])
    bridge = tiny.bridge

    def ablate(value, hook):
        value = value.clone()
        value[:, :, CTX.index] = VALUE
        return value

    with torch.inference_mode():
        _, cache_o = bridge.run_with_cache(toks)
        with bridge.hooks(fwd_hooks=[(CTX.hook(), ablate)]):
            _, cache_a = bridge.run_with_cache(toks)
        delta = cache_a["blocks.5.hook_mlp_out"] - cache_o["blocks.5.hook_mlp_out"]

        def swap(value, hook):
            return value + delta

        with bridge.hooks(fwd_hooks=[("blocks.5.hook_resid_post", swap)]):
            logits = bridge(toks)
    lp = logits[0, :-1].log_softmax(-1).gather(-1, toks[0, 1:, None])[:, 0]
    assert abs(float(-lp.mean()) - per["loss_5_mlp_out"][2]) < 1e-4
    dla, cp = summarise(per, accumulated_labels(6), list(component_hooks(CTX, 6)))
    assert [r["component"] for r in cp["rows"]][0] == "3_mlp_out"
    r = cp["rows"][-1]
    assert abs(r["percent_increase"] - (r["patched"] - cp["original"]) / cp["original"] * 100) < 1e-9
    assert dla["difference"][-1] == pytest.approx(dla["original"][-1] - dla["ablated"][-1])


# ------------------------------------------------------------------ end to end on tiny

MY_STEPS = {"dla", "l3_tokens", "unigrams", "probes_ablated", "probes_english_neurons", "correlations"}
MY_SECTIONS = ["Direct logit attribution and loss by component", "Tokens boosted by the context layer",
               "Unigram statistics", "Probes with the context neuron ablated",
               "English and French neuron probes", "Correlation with the context neuron"]


def test_report_has_the_dla_unigram_probe_and_correlation_sections(tiny_report):
    import json
    import re

    res, logs, _ = tiny_report
    arts = res["artifacts"]
    assert MY_STEPS <= set(arts)
    assert "probes_french_neurons" not in arts  # the fixture corpus set has no French
    html = (res["out"] / "report.html").read_text(encoding="utf-8")
    for heading in MY_SECTIONS:
        assert re.search(rf"<h[12][^>]*>\s*(<[^>]+>)*\s*{re.escape(heading)}", html), heading
    names = {f["name"]: f for f in res["figures"]}
    for name in ("dla_difference", "component_patching", "l3_logit_diff_hist", "l3_top_tokens_resid_post",
                 "unigrams_german", "unigrams_english", "unigrams_logit_diff", "probes_ablated_f1",
                 "correlations"):
        assert name in names, name
        assert names[name]["seed_cell"], name
        meta = json.loads((res["out"] / "figures" / f"{name}.json").read_text())
        assert meta["function"].startswith("figures.dla.")
    d = arts["dla"]["result"]
    assert d["dla"]["labels"][-1] == "final_post" and len(d["component_patching"]["rows"]) == 5
    assert arts["dla"]["provenance"]["upstream"] == {"activations": arts["activations"]["key"]}
    u = arts["unigrams"]["result"]
    assert len(u["languages"]["german"]["top"]) == 100
    ex = u["languages"]["german"]["top"][0]["examples"]
    assert ex <= u["languages"]["german"]["n_examples"]
    # the context neuron's own probe collapses once it is ablated
    own = [r for r in arts["probes_ablated"]["result"]["rows"] if r["neuron"] == "L3N669"][0]
    assert own["mean_german"] == own["mean_english"] and abs(own["test_acc"] - 0.5) < 0.06
    assert "Top 100 tokens raised via blocks.3.hook_resid_post" in html


def test_regression_metrics_cover_the_seed_baseline_names():
    """`analysis.orchestration.regression`'s pythia-70m baseline checks these seed numbers by name; the
    modules' `regression_metrics` must produce every one of them."""
    from analysis.core.config import GERMAN_NEURONS
    from analysis.families import dla, probes_ablated, unigrams
    from analysis.orchestration import regression

    comps = list(component_hooks(CTX, 6))
    probe = {"f1": 0.5, "train_acc": 0.5, "test_acc": 0.5, "mean_english": 0.0, "mean_german": 0.0}
    arts = {
        "dla": {"result": {"component_patching": {"original": 3.0, "rows": [
            {"component": c, "percent_increase": 1.0} for c in comps]},
            "dla": {"difference": [0.0] * 7}}},
        "unigrams": {"result": {"german_mean_logit_diff": 1.0, "english_mean_logit_diff": 0.1}},
        "probes_ablated": {"result": {"rows": [{"neuron": str(n), **probe} for n in GERMAN_NEURONS]}},
    }
    names = {m[0] for mod in (dla, unigrams, probes_ablated) for m in mod.regression_metrics(arts)}
    wanted = {k for k in regression.seed_baseline()["metrics"]
              if k.startswith(("component_patching.", "unigrams.", "probes_context_ablated."))}
    assert len(wanted) == 47 and wanted <= names


def test_token_labels_make_whitespace_visible_and_escape_what_cannot_be_drawn():
    from figures.plots import md_token, token_label

    assert token_label(" a$\tb\x01") == "␣a\\$⇥b\\u{1}"
    assert token_label("") == "∅"
    assert md_token(" x\n") == "`␣x↵`"
    assert md_token("a`b") == "`` a`b ``"
