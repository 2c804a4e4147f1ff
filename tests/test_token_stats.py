"""L3 unembedding differences, the seed's garbage filter and the unigram counts."""

from __future__ import annotations

import numpy as np
import torch

from analysis.core.config import Neuron
from analysis.core.engine import layer_norm_pre, make_batches, set_neurons
from analysis.families.l3_tokens import (
    GARBAGE_TOKENS,
    filter_garbage,
    mean_normalised_resid_post,
    neuron_direction_lists,
    neuron_direction_logit_diff,
    top_tokens,
)
from analysis.families.unigrams import document_counts, top_unigrams

CTX = Neuron(3, 669)
TEXTS = ["Die Kommission hat heute einen neuen Vorschlag vorgelegt.",
         "Click the button in the toolbar to open the settings dialog.",
         "Wir müssen gemeinsam dafür sorgen, dass die Regeln gelten."]


def test_mean_logit_difference_equals_the_seeds_per_prompt_unembedding(tiny, tiny_fwd):
    """Seed `get_unembed_differences`: per prompt, (unembed(ln_final(resid_post[active])) -
    unembed(...[inactive])).mean over positions, averaged over prompts. Ours unembeds the
    mean normalised residual once; the two must agree."""
    w = tiny_fwd.w
    ids = [tiny.to_tokens(t) for t in TEXTS]
    values = {"active": 2.5, "inactive": -0.1}
    means = mean_normalised_resid_post(tiny_fwd, make_batches(ids, 4096, 1), CTX, values,
                                       show_progress=False)
    ours = (means["active"] - means["inactive"]) @ w.W_U.double().numpy()
    per_prompt = []
    with torch.inference_mode():
        for t in ids:
            toks = torch.tensor([t])
            logits = {}
            for k, v in values.items():
                cap = {f"blocks.{CTX.layer}.hook_resid_post": None}
                tiny_fwd.run(toks, stop_layer=CTX.layer + 1,
                             edits={CTX.hook(): set_neurons([CTX.index], v)}, capture=cap)
                r = cap[f"blocks.{CTX.layer}.hook_resid_post"]
                logits[k] = layer_norm_pre(r, w.eps) @ w.W_U + w.b_U
            per_prompt.append((logits["active"] - logits["inactive"]).mean((0, 1)).double().numpy())
    ref = np.mean(per_prompt, axis=0)
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    assert np.abs(ref).max() > 1e-4  # the two values really differ


def test_neuron_direction_is_the_seeds_unembed_difference(tiny_fwd):
    w = tiny_fwd.w
    a, b = 3.8, -0.07
    row = w.W_out[CTX.layer, CTX.index]
    seed = ((row * a) @ w.W_U + w.b_U) - ((row * b) @ w.W_U + w.b_U)  # model.unembed(...) twice
    ours = neuron_direction_logit_diff(w.W_out, w.W_U, CTX, a, b)
    np.testing.assert_allclose(ours, seed.double().numpy(), atol=1e-5)
    assert ours.shape == (w.W_U.shape[1],)


def test_garbage_filter_and_top_tokens():
    labels = [" der", "  ", "ÃÂÃÂ", "\n", "�", " die", "{¶", "x"]
    assert filter_garbage(labels) == [True, False, False, False, False, True, False, True]
    assert "" in GARBAGE_TOKENS and "14514500" in GARBAGE_TOKENS
    values = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 3.0])
    to_str = lambda ids: [labels[i] for i in ids]  # noqa: E731
    top = top_tokens(values, 3, True, to_str, filtered=True)
    assert [r["token_id"] for r in top] == [0, 5, 7]
    # unfiltered, ties by lower id first
    low = top_tokens(values, 2, False, to_str)
    assert [r["token_id"] for r in low] == [6, 7]


def test_neuron_direction_lists_filter_the_boosted_list_only():
    """Seed "Tokens boosted by L3 directly": `filter_garbage_tokens` ran on the boosted
    labels only; the inhibited chart plotted `inhibited_values[:100]` unfiltered, so a
    garbage or whitespace token can be among the inhibited tokens."""
    labels = [" der", "  ", "ÃÂÃÂ", " die", "�", "x"]
    values = np.array([9.0, 8.0, -9.0, 1.0, -8.0, 0.0])
    lists = neuron_direction_lists(values, 3, lambda ids: [labels[i] for i in ids])
    assert [r["token_id"] for r in lists["boosted"]] == [0, 3, 5]    # "  " (8.0) dropped
    assert [r["token_id"] for r in lists["inhibited"]] == [2, 4, 5]  # "ÃÂÃÂ" and "�" kept
    assert lists["inhibited"][0]["token"] == "ÃÂÃÂ"


def test_unigram_counts_examples_containing_a_token_as_the_seed():
    examples = [[0, 5, 5, 7], [0, 7], [0, 9, 5, 5, 5], [0]]
    docs, total = document_counts(examples, d_vocab=12)
    # by hand: token 5 is in two examples (4 times), 7 in two, 9 in one, BOS never counted
    assert docs[5] == 2 and docs[7] == 2 and docs[9] == 1 and docs[0] == 0
    assert total[5] == 5 and total[7] == 2 and total.sum() == 8
    # the seed's torch semantics: advanced-index += counts a repeated index once per example
    seed = torch.zeros(12)
    for t in examples:
        seed[torch.tensor(t[1:], dtype=torch.long)] += 1
    np.testing.assert_array_equal(docs, seed.numpy().astype(np.int64))
    assert top_unigrams(docs, 3).tolist() == [5, 7, 9]
