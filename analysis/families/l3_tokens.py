"""Tokens the context layer boosts directly (seed: "Tokens boosted by L3 directly").

Two vocabulary-wide logit differences, both reported as **active minus inactive** (positive:
the context neuron at its German mean raises the token's logit):

* **Residual stream after the context layer.** Seed `get_unembed_differences`: run each
  example with the context neuron's `hook_post` set to its German mean ("active") and to
  its English mean ("inactive"), unembed `blocks.{layer}.hook_resid_post` through
  `ln_final` (`unembed(ln_final(resid))`), average over every position and then over
  examples. The seed computed *ablated − original* = inactive − active, so its chart
  titled "Top boosted tokens from L3N669" lists the tokens our sign calls most
  *inhibited*. Because the unembedding is linear after the LayerNorm, the mean of the
  logits equals the unembedding of the mean normalised residual: one `[d_model] @ W_U`
  instead of `[tokens, d_vocab]` logits.
* **Neuron direction.** Seed: `unembed(W_out[layer, neuron] * active) - unembed(W_out[...] *
  inactive)` (no LayerNorm; `b_U` cancels) = `W_out[layer, neuron] @ W_U * (active - inactive)`.
  As in the seed, only the boosted list drops whitespace and the seed's garbage tokens
  (`filter_garbage_tokens`, applied to `boosted_labels` alone); the inhibited list is the
  plain `torch.topk(token_differences, 1000, largest=False)` head, garbage included. This is
  the `token_differences` the seed's unigram section averages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..core.config import Neuron
from ..core.engine import Batch, Forward, layer_norm_pre, progress, set_neurons

SEED_SECTION = "Tokens boosted by L3 directly"
TOP_K = 100
SEED_TOPK = 1000  # the seed filters within torch.topk(token_differences, 1000)

# The seed's `filter_garbage_tokens` set (compared with the stripped token string).
GARBAGE_TOKENS = frozenset({"", "ÃÂÃÂÃÂÃÂ", "ÃÂÃÂÃÂÃÂÃÂÃÂÃÂÃÂ", "ÃÂÃÂ", "��", "�", "14514500",
                            "1451450014514500", "{¶"})


def mean_normalised_resid_post(fwd: Forward, batches: Sequence[Batch], context: Neuron,
                               values: Mapping[str, float], desc: str = "l3 tokens",
                               show_progress: bool = True) -> dict[str, np.ndarray]:
    """For each named value of the context neuron: the mean over examples of the mean over
    every position (BOS and last included) of `ln_final(blocks.{layer}.hook_resid_post)`.

    The blocks before the context layer run once per batch; each value reruns only the
    context layer. Returns {name: float64 [d_model]}.
    """
    d = fwd.w.W_E.shape[1]
    sums = {k: torch.zeros(d, dtype=torch.float64) for k in values}
    n_ex = 0
    with torch.inference_mode():
        for batch in progress(batches, desc, show_progress):
            prefix = fwd.run(batch.tokens, stop_layer=context.layer)
            n = batch.tokens.shape[1]
            valid = (torch.arange(n, device=prefix.device)[None, :] < batch.lengths[:, None]).to(prefix.dtype)
            for name, v in values.items():
                r = fwd.run(resid=prefix, start_layer=context.layer, stop_layer=context.layer + 1,
                            edits={context.hook(): set_neurons([context.index], v)})
                x = layer_norm_pre(r, fwd.w.eps)
                per_ex = (x * valid[..., None]).sum(1) / batch.lengths[:, None].to(x.dtype)
                sums[name] += per_ex.double().sum(0).cpu()
            n_ex += len(batch.index)
    return {k: (s / max(n_ex, 1)).numpy() for k, s in sums.items()}


def neuron_direction_logit_diff(W_out: Tensor, W_U: Tensor, neuron: Neuron, active: float,
                                inactive: float) -> np.ndarray:
    """`W_out[layer, index] @ W_U * (active - inactive)`, float64 `[d_vocab]`."""
    w = W_out[neuron.layer, neuron.index].double()
    return ((w @ W_U.double()) * (active - inactive)).cpu().numpy()


def filter_garbage(labels: Sequence[str]) -> list[bool]:
    """Seed `filter_garbage_tokens`: keep a token unless its stripped string is empty or
    one of the seed's garbage strings."""
    return [label.strip() not in GARBAGE_TOKENS for label in labels]


def top_tokens(values: np.ndarray, k: int, largest: bool, to_str, filtered: bool = False,
               pool: int = SEED_TOPK) -> list[dict]:
    """Top `k` tokens by value (ties: lower id first). With `filtered`, the seed's garbage
    filter is applied within the top `pool` first (so fewer than `k` may remain)."""
    order = np.lexsort((np.arange(len(values)), -values if largest else values))
    idx = order[: (min(pool, len(values)) if filtered else k)]
    labels = to_str(idx.tolist())
    keep = filter_garbage(labels) if filtered else [True] * len(idx)
    rows = [{"token_id": int(i), "token": s, "value": float(values[i])}
            for i, s, ok in zip(idx, labels, keep, strict=True) if ok]
    return rows[:k]


def neuron_direction_lists(values: np.ndarray, k: int, to_str) -> dict[str, list[dict]]:
    """The two top-`k` token lists of the neuron-direction difference, as the seed's cell
    "Unembed neuron direction directly" (section "Tokens boosted by L3 directly") made them:
    `filter_garbage_tokens(boosted_labels, boosted_values)` on the top 1,000 boosted tokens
    (then the first `k`), while the inhibited chart plots `inhibited_values[:k]` unfiltered
    (only its labels stripped for display)."""
    return {"boosted": top_tokens(values, k, True, to_str, filtered=True),
            "inhibited": top_tokens(values, k, False, to_str)}


def summary(values: np.ndarray) -> dict:
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "max": float(values.max()), "n_positive": int((values > 0).sum()), "n": int(len(values))}


# ------------------------------------------------------------------ pipeline step


def run_step(run, arts: dict) -> dict:
    """Step `l3_tokens`: both logit differences on the first `dla_examples` German examples."""
    import sys

    p = run.profile
    ctx = run.context
    acts = arts["activations"]["result"]
    active, inactive = acts["context_mean_active"], acts["context_mean_inactive"]
    toks, rec = run.tokens("german", p.dla_examples)
    params = {"examples": p.dla_examples, "language": "german", "context_neuron": str(ctx),
              "active": "German mean (activations step)", "inactive": "English mean (activations step)",
              "top_k": TOP_K, "filter_pool": SEED_TOPK, "tokens": rec}

    def compute():
        means = mean_normalised_resid_post(run.fwd, run.batches(toks), ctx,
                                           {"active": active, "inactive": inactive},
                                           show_progress=run.show_progress)
        W_U = run.fwd.w.W_U.double().cpu().numpy()
        resid_diff = (means["active"] - means["inactive"]) @ W_U
        nd_diff = neuron_direction_logit_diff(run.fwd.w.W_out, run.fwd.w.W_U, ctx, active, inactive)
        to_str = run.model.to_str_tokens
        result = {
            "context_neuron": str(ctx), "context_layer": ctx.layer, "context_index": ctx.index,
            "active_value": active, "inactive_value": inactive,
            "n_examples": rec["used"], "language": "german", "sign": "active minus inactive",
            "resid_post": {
                "hook": f"blocks.{ctx.layer}.hook_resid_post",
                "definition": "mean over examples of the mean over positions of "
                              "unembed(ln_final(resid_post)) with the neuron at its German mean, "
                              "minus the same at its English mean",
                "seed_sign_note": "the seed printed ablated − original (inactive − active): its "
                                  "'Top boosted tokens' chart is the most negative end here",
                "summary": summary(resid_diff),
                "boosted": top_tokens(resid_diff, TOP_K, True, to_str),
                "inhibited": top_tokens(resid_diff, TOP_K, False, to_str),
            },
            "neuron_direction": {
                "definition": "W_out[layer, neuron] @ W_U × (German mean − English mean); no "
                              "LayerNorm",
                "norm_w_out": float(run.fwd.w.W_out[ctx.layer, ctx.index].float().norm()),
                "summary": summary(nd_diff),
                **neuron_direction_lists(nd_diff, TOP_K, to_str),
                "filter": "seed filter_garbage_tokens within the top "
                          f"{SEED_TOPK}: drops whitespace-only tokens and {len(GARBAGE_TOKENS) - 1} "
                          "garbage strings",
                "filtered_lists": ["boosted"],
            },
        }
        arrays = {"resid_post_logit_diff": resid_diff, "neuron_direction_logit_diff": nd_diff}
        return result, arrays

    inputs = run.inputs("l3_tokens", sys.modules[__name__], params, run.data_prov("german"),
                        {"activations": arts["activations"]["key"]})
    return run.step(inputs, compute)


def figures(run, arts: dict, fig_dir) -> list[dict]:
    import figures.dla as plots_dla
    from figures.plots import save

    art = arts["l3_tokens"]
    r = art["result"]
    ctx = r["context_neuron"]
    layer = Neuron.parse(ctx).layer
    resid = run.store.load_array("l3_tokens", "resid_post_logit_diff")
    nd = run.store.load_array("l3_tokens", "neuron_direction_logit_diff")
    meta = {"step": "l3_tokens", "artifact_key": art["key"], "seed_cell": SEED_SECTION}
    out = []
    fig = plots_dla.logit_diff_histogram(
        {f"L{layer} resid_post": resid, f"{ctx} direction": nd},
        f"Logit difference over the vocabulary ({ctx} active − inactive)")
    out.append(save(fig, fig_dir, "l3_logit_diff_hist", {
        **meta, "function": "figures.dla.logit_diff_histogram",
        "caption": f"Histogram over all {len(resid):,} tokens of the logit difference (active − "
                   f"inactive) from unembedding blocks.{layer}.hook_resid_post (mean over "
                   f"{r['n_examples']} German examples) and from the output direction of {ctx} alone."}))
    for key, title in (("resid_post", f"L{layer} resid_post"), ("neuron_direction", f"{ctx} direction")):
        fig = plots_dla.top_token_bars(r[key]["boosted"], r[key]["inhibited"], title)
        out.append(save(fig, fig_dir, f"l3_top_tokens_{key}", {
            **meta, "function": "figures.dla.top_token_bars",
            "caption": f"Tokens whose logit {title} raises (boosted) and lowers (inhibited) most "
                       f"when {ctx} goes from its English to its German mean: every token of the "
                       "tables in the interactive chart (hover for the token, its id, rank and value; "
                       "drag to zoom), the top 30 of each in the static one."
                       + (" Whitespace and the seed's garbage tokens removed from the raised "
                          "tokens only (as in the seed)." if key == "neuron_direction" else "")}))
    return out
