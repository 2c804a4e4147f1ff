"""The engine against the bridge and Hugging Face: logits, hooks, losses, batching."""

from __future__ import annotations

import math

import numpy as np
import torch

from analysis.core.engine import make_batches, per_example_losses, set_neurons

TEXTS = [
    "Die Kommission hat heute einen neuen Vorschlag vorgelegt.",
    "Click the button in the toolbar to open the settings dialog of the application.",
    "Wir müssen gemeinsam dafür sorgen",
]


def test_bridge_log_softmax_matches_hugging_face(tiny):
    """The processed bridge (fold_ln, centring) must give HF's log-probabilities."""
    from transformers import GPTNeoXForCausalLM

    from analysis.core.models import tiny_checkpoint

    hf = GPTNeoXForCausalLM.from_pretrained(str(tiny_checkpoint(0)), attn_implementation="eager").eval()
    for text in TEXTS:
        toks = torch.tensor([tiny.to_tokens(text)])
        with torch.inference_mode():
            ref = hf(toks).logits.log_softmax(-1)
            got = tiny.bridge(toks).log_softmax(-1)
        assert (ref - got).abs().max().item() < 1e-4


def test_engine_matches_bridge_logits_and_hooks(tiny, tiny_fwd):
    for text in TEXTS:
        toks = torch.tensor([tiny.to_tokens(text)])
        with torch.inference_mode():
            ref_logits, cache = tiny.bridge.run_with_cache(toks)
            cap = {"blocks.3.mlp.hook_post": None, "blocks.5.mlp.hook_pre": None,
                   "blocks.4.hook_resid_pre": None}
            resid = tiny_fwd.run(toks, capture=cap)
            got = tiny_fwd.logits(resid)
        assert (ref_logits.log_softmax(-1) - got.log_softmax(-1)).abs().max() < 1e-4
        for name in cap:
            assert torch.allclose(cache[name], cap[name], atol=1e-5), name


def test_bos_is_prepended(tiny):
    ids = tiny.to_tokens(" von")
    assert ids[0] == 0 and tiny.to_str_tokens(ids)[0] == "<|endoftext|>"
    assert ids[1:] == tiny.tokenizer(" von", add_special_tokens=False)["input_ids"]


def test_ablation_edit_sets_exactly_the_targeted_activations(tiny_fwd, tiny):
    toks = torch.tensor([tiny.to_tokens(TEXTS[0])])
    with torch.inference_mode():
        clean = {"blocks.3.mlp.hook_post": None}
        tiny_fwd.run(toks, capture=clean)
        edited = {"blocks.3.mlp.hook_post": None}
        tiny_fwd.run(toks, edits={"blocks.3.mlp.hook_post": set_neurons([669, 7], [0.25, -1.5])},
                     capture=edited)
    a, b = clean["blocks.3.mlp.hook_post"], edited["blocks.3.mlp.hook_post"]
    assert torch.all(b[..., 669] == 0.25) and torch.all(b[..., 7] == -1.5)
    mask = torch.ones(a.shape[-1], dtype=torch.bool)
    mask[[669, 7]] = False
    assert torch.equal(a[..., mask], b[..., mask])
    assert not torch.equal(a[..., 669], b[..., 669])


def test_loss_equals_hand_computed_cross_entropy(tiny, tiny_fwd):
    ids = tiny.to_tokens("Die Schüler")
    toks = torch.tensor([ids])
    with torch.inference_mode():
        logits = tiny.bridge(toks)[0]
    by_hand = []
    for t in range(len(ids) - 1):
        row = logits[t].double()
        lse = math.log(sum(math.exp(float(x)) for x in row))
        by_hand.append(lse - float(row[ids[t + 1]]))
    out = per_example_losses(tiny_fwd, make_batches([ids], 4096, 1), {}, show_progress=False)
    assert abs(out["original"][0] - float(np.mean(by_hand))) < 1e-4
    with torch.inference_mode():
        bridge_loss = tiny.bridge(toks, return_type="loss").item()
    assert abs(out["original"][0] - bridge_loss) < 1e-4


def test_batched_padded_losses_equal_per_example(tiny, tiny_fwd):
    """Right padding + causal mask: batching changes nothing but float rounding; ablated
    variants restarted from the cached residual equal the bridge with a hook."""
    token_lists = [tiny.to_tokens(t) for t in TEXTS]
    variants = {"abl": {"blocks.4.mlp.hook_post": set_neurons([482], 0.3)}}
    batched = per_example_losses(tiny_fwd, make_batches(token_lists, 4096, 1), variants,
                                 show_progress=False)
    assert len(make_batches(token_lists, 4096, 1)) == 1

    def hook(v, hook):
        v[:, :, 482] = 0.3
        return v

    for i, ids in enumerate(token_lists):
        toks = torch.tensor([ids])
        with torch.inference_mode():
            ref = tiny.bridge(toks, return_type="loss").item()
            ref_abl = tiny.bridge.run_with_hooks(toks, return_type="loss",
                                                 fwd_hooks=[("blocks.4.mlp.hook_post", hook)]).item()
        assert abs(batched["original"][i] - ref) < 1e-4
        assert abs(batched["abl"][i] - ref_abl) < 1e-4


def test_batches_respect_token_budget_and_keep_every_example():
    lists = [[0] * n for n in (5, 9, 3, 7, 7, 2)]
    batches = make_batches(lists, batch_tokens=14, pad_id=1)
    seen = sorted(i for b in batches for i in b.index)
    assert seen == list(range(len(lists)))
    for b in batches:
        assert b.tokens.shape[0] * b.tokens.shape[1] <= 14 or b.tokens.shape[0] == 1
        for row, i in enumerate(b.index):
            assert int(b.lengths[row]) == len(lists[i])


def test_final_layer_shortcut_equals_the_full_pass(tiny, tiny_fwd):
    """The rank-k logit update for last-layer MLP edits equals restarting the pass."""
    from analysis.core.engine import Edits, is_final_mlp_edit

    token_lists = [tiny.to_tokens(t) for t in TEXTS]
    batches = make_batches(token_lists, 4096, 1)

    def shift(x):
        x = x.clone()
        x[..., 1336] += 1.7
        return x

    variants: dict[str, Edits] = {
        "post_one": {"blocks.5.mlp.hook_post": set_neurons([1336], -0.4)},
        "post_many": {"blocks.5.mlp.hook_post": set_neurons([1039, 407, 250], [0.5, -1.0, 2.0])},
        "pre_shift": {"blocks.5.mlp.hook_pre": shift},
    }
    assert all(is_final_mlp_edit(v, 6) for v in variants.values())
    assert not is_final_mlp_edit({"blocks.4.mlp.hook_post": set_neurons([1], 0.0)}, 6)
    fast = per_example_losses(tiny_fwd, batches, variants, show_progress=False, shortcut=True)
    full = per_example_losses(tiny_fwd, batches, variants, show_progress=False, shortcut=False)
    for k in ["original", *variants]:
        assert np.allclose(fast[k], full[k], rtol=1e-5, atol=1e-6), k
    assert not np.allclose(fast["post_many"], fast["original"], rtol=0, atol=1e-7)
