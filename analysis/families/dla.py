"""Direct logit attribution and direct loss increase per component when the context
neuron is mean-ablated (seed: "Check DLA difference and loss breakdown by component for
L3N669", `haystack_utils.DLA` and `haystack_utils.get_direct_loss_increase_for_component`).

Both analyses run on the same German examples, from one unedited and one ablated pass per
batch (the ablated pass restarts at the context layer):

* **DLA.** TransformerLens `cache.accumulated_resid(layer=-1, incl_mid=False)` is the
  residual stream entering each block (`blocks.L.hook_resid_pre`) plus the final
  `hook_resid_post`; `cache.apply_ln_to_stack(..., layer=-1)` centres each of them and
  divides by the run's own final LayerNorm scale. Dotted with `W_U[:, answer]` (the next
  token), summed over positions and divided by the number of positions, per example; the
  table is the mean over examples. The last component is the logit of the correct token
  minus `b_U[answer]`. The ablated DLA is computed entirely from the ablated run (its own
  final scale), so components before the ablation differ only through that scale.
* **Direct loss increase.** For the context layer's `hook_mlp_out` and every later
  `hook_attn_out`/`hook_mlp_out`, the final residual stream of the unedited run has that
  component's output replaced by its output in the ablated run, and the loss is recomputed
  (the final LayerNorm sees the patched stream). Loss: per-example mean next-token
  cross-entropy, averaged over examples, as the seed's per-prompt `model(tokens, "loss")`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..core.config import Neuron
from ..core.engine import Batch, Forward, progress, set_neurons

SEED_SECTION = "Check DLA difference and loss breakdown by component for L3N669"


def component_hooks(context: Neuron, n_layers: int) -> dict[str, str]:
    """{seed component name: hook} for the components whose direct effect is patched: the
    context layer's MLP output and every later attention and MLP output (seed
    `component_names[8:13]` for L3 in a 6-layer model)."""
    out = {f"{context.layer}_mlp_out": f"blocks.{context.layer}.hook_mlp_out"}
    for layer in range(context.layer + 1, n_layers):
        out[f"{layer}_attn_out"] = f"blocks.{layer}.hook_attn_out"
        out[f"{layer}_mlp_out"] = f"blocks.{layer}.hook_mlp_out"
    return out


def accumulated_labels(n_layers: int) -> list[str]:
    """TransformerLens's labels of `accumulated_resid(layer=-1, incl_mid=False)`."""
    return [f"{layer}_pre" for layer in range(n_layers)] + ["final_post"]


def final_ln_scale(final: Tensor, eps: float) -> Tensor:
    """`ln_final.hook_scale` of a run: sqrt(mean of the centred final residual² + eps)."""
    centred = final - final.mean(-1, keepdim=True)
    return (centred.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def accumulated_dla(stack: Sequence[Tensor], final: Tensor, W_U: Tensor, tokens: Tensor,
                    lengths: Tensor, eps: float) -> Tensor:
    """Per-example direct logit attribution of each accumulated residual component.

    Args:
        stack: the components `[batch, pos, d_model]` (resid_pre of each layer, then the
            final resid_post), as `accumulated_resid` orders them.
        final: the final residual stream whose LayerNorm scale divides every component.
        W_U: `[d_model, d_vocab]` (centred). tokens: `[batch, pos]`; lengths: `[batch]`.

    Returns:
        `[n_components, batch]`: sum over positions t < length-1 of
        centre(component[t]) / scale[t] · W_U[:, tokens[t+1]], divided by length-1.
    """
    n = tokens.shape[1]
    scale = final_ln_scale(final, eps)[:, :-1]
    answers = W_U.T[tokens[:, 1:]].float()  # [batch, pos-1, d_model]; float32 of bf16 weights
    valid = (torch.arange(n - 1, device=tokens.device)[None, :] < (lengths[:, None] - 1)).to(final.dtype)
    denom = (lengths - 1).clamp(min=1).to(final.dtype)
    out = []
    for comp in stack:
        c = comp[:, :-1]
        c = (c - c.mean(-1, keepdim=True)) / scale
        out.append(((c * answers).sum(-1) * valid).sum(1) / denom)
    return torch.stack(out)


def patched_losses(fwd: Forward, final: Tensor, original: Mapping[str, Tensor],
                   ablated: Mapping[str, Tensor], tokens: Tensor, lengths: Tensor) -> dict[str, Tensor]:
    """Per-example mean loss with one component's output swapped at the final residual
    stream: `final - original[c] + ablated[c]` (seed `swap_cache_hook` on the last
    `hook_resid_post`)."""
    denom = (lengths - 1).clamp(min=1).to(final.dtype)
    out = {}
    for name in original:
        r = final - original[name] + ablated[name]
        out[name] = fwd.token_losses(r, tokens, lengths).sum(1) / denom
    return out


def dla_and_patching(fwd: Forward, batches: Sequence[Batch], context: Neuron, value: float,
                     desc: str = "dla", show_progress: bool = True) -> dict[str, np.ndarray]:
    """Per-example DLA (original and ablated) and per-example losses (original and each
    patched component), in the caller's example order.

    Returns:
        {"dla_original": [n_components, n], "dla_ablated": [n_components, n],
         "loss_original": [n], "loss_<component>": [n] for each `component_hooks` entry}
    """
    L = fwd.w.n_layers
    comps = component_hooks(context, L)
    n = sum(len(b.index) for b in batches)
    n_comp = L + 1
    out = {"dla_original": np.zeros((n_comp, n)), "dla_ablated": np.zeros((n_comp, n)),
           "loss_original": np.zeros(n), **{f"loss_{c}": np.zeros(n) for c in comps}}
    pre = [f"blocks.{layer}.hook_resid_pre" for layer in range(L)]
    edits = {context.hook(): set_neurons([context.index], value)}
    with torch.inference_mode():
        for batch in progress(batches, desc, show_progress):
            cap_o = dict.fromkeys([*pre, *comps.values()])
            final_o = fwd.run(batch.tokens, capture=cap_o)
            later = pre[context.layer + 1:]
            cap_a = dict.fromkeys([*later, *comps.values()])
            final_a = fwd.run(resid=cap_o[pre[context.layer]], start_layer=context.layer,
                              edits=edits, capture=cap_a)
            stack_o = [cap_o[h] for h in pre] + [final_o]
            stack_a = [cap_o[h] for h in pre[:context.layer + 1]] + [cap_a[h] for h in later] + [final_a]
            for key, stack, final in (("dla_original", stack_o, final_o), ("dla_ablated", stack_a, final_a)):
                d = accumulated_dla(stack, final, fwd.w.W_U, batch.tokens, batch.lengths, fwd.w.eps)
                out[key][:, batch.index] = d.double().cpu().numpy()
            denom = (batch.lengths - 1).clamp(min=1).to(final_o.dtype)
            base = fwd.token_losses(final_o, batch.tokens, batch.lengths).sum(1) / denom
            out["loss_original"][batch.index] = base.double().cpu().numpy()
            patched = patched_losses(fwd, final_o, {c: cap_o[h] for c, h in comps.items()},
                                     {c: cap_a[h] for c, h in comps.items()}, batch.tokens, batch.lengths)
            for c, v in patched.items():
                out[f"loss_{c}"][batch.index] = v.double().cpu().numpy()
    return out


def summarise(per_example: Mapping[str, np.ndarray], labels: Sequence[str],
              components: Sequence[str]) -> tuple[dict, dict]:
    """The `dla` and `component_patching` parts of the result from per-example values
    (`dla_and_patching`): mean DLA per component (original, ablated, difference) with the
    standard error of the difference over examples (`difference_se`), and each patched
    component's loss increase with its paired-bootstrap 95% interval."""
    from ..core.stats import paired_bootstrap, standard_error

    o = per_example["dla_original"].mean(1)
    a = per_example["dla_ablated"].mean(1)
    per_diff = per_example["dla_original"] - per_example["dla_ablated"]
    dla = {"labels": list(labels), "original": o.tolist(), "ablated": a.tolist(),
           "difference": (o - a).tolist(),
           "difference_se": [standard_error(row) for row in per_diff]}
    base = float(np.mean(per_example["loss_original"]))
    rows = []
    for c in components:
        p = float(np.mean(per_example[f"loss_{c}"]))
        ci = (paired_bootstrap(per_example["loss_original"], per_example[f"loss_{c}"])
              if len(per_example["loss_original"]) >= 2 else None)
        rows.append({"component": c, "patched": p, "increase": p - base,
                     "percent_increase": (p - base) / base * 100.0,
                     "increase_nats_ci": ci and ci["increase_nats"],
                     "percent_increase_ci": ci and ci["percent_increase"]})
    return dla, {"original": base, "rows": rows}


# ------------------------------------------------------------------ pipeline step


def run_step(run, arts: dict) -> dict:
    """Step `dla`: DLA difference and direct loss increase per component on the first
    `dla_examples` German examples, the context neuron set to its English mean."""
    import sys

    p = run.profile
    ctx = run.context
    acts = arts["activations"]["result"]
    value = acts["context_mean_inactive"]
    toks, rec = run.tokens("german", p.dla_examples)
    L = run.fwd.w.n_layers
    comps = component_hooks(ctx, L)
    params = {"examples": p.dla_examples, "language": "german", "context_neuron": str(ctx),
              "ablation": "context neuron hook_post set to its English mean (activations step)",
              "components": comps, "tokens": rec}

    def compute():
        per = dla_and_patching(run.fwd, run.batches(toks), ctx, value,
                               desc="dla german", show_progress=run.show_progress)
        labels = accumulated_labels(L)
        dla, patching = summarise(per, labels, list(comps))
        from ..core.stats import METHODS

        result = {
            "interval": {"dla": METHODS["mean"], "component_patching": METHODS["loss"]},
            "context_neuron": str(ctx), "context_layer": ctx.layer, "ablation_value": value,
            "n_examples": rec["used"], "language": "german",
            "dla": {**dla, "definition": "mean over examples of sum over positions of "
                    "centre(component)/final LN scale · W_U[:, next token], divided by the "
                    "number of positions; original minus ablated"},
            "component_patching": {**patching, "definition": "per-example mean next-token loss "
                                   "(nats) with the component's output at the final residual "
                                   "stream replaced by its ablated-run output, averaged over "
                                   "examples; % of the original"},
        }
        arrays = {"dla_original": per["dla_original"], "dla_ablated": per["dla_ablated"],
                  "losses": np.stack([per["loss_original"]] + [per[f"loss_{c}"] for c in comps])}
        result["array_layout"] = {"dla_original": "[component, example]", "dla_ablated": "[component, example]",
                            "losses": "[original + components, example] per-example mean loss"}
        return result, arrays

    inputs = run.inputs("dla", sys.modules[__name__], params, run.data_prov("german"),
                        {"activations": arts["activations"]["key"]})
    return run.step(inputs, compute)


def figures(run, arts: dict, fig_dir) -> list[dict]:
    import figures.dla as plots_dla
    from figures.plots import save

    art = arts["dla"]
    r = art["result"]
    ctx = r["context_neuron"]
    out = []
    fig = plots_dla.dla_difference(r["dla"]["labels"], r["dla"]["original"], r["dla"]["ablated"], ctx,
                                   r["dla"].get("difference_se"))
    out.append(save(fig, fig_dir, "dla_difference", {
        "step": "dla", "artifact_key": art["key"], "function": "figures.dla.dla_difference",
        "caption": f"Direct logit attribution of the correct next token per accumulated residual "
                   f"component, original minus {ctx}-ablated (left), and both values (right), "
                   f"mean over {r['n_examples']} German examples.",
        "seed_cell": SEED_SECTION,
    }))
    cp = r["component_patching"]
    fig = plots_dla.component_patching(cp["original"], cp["rows"], ctx)
    out.append(save(fig, fig_dir, "component_patching", {
        "step": "dla", "artifact_key": art["key"], "function": "figures.dla.component_patching",
        "caption": f"Loss increase (% of the original loss) on German text when one component's "
                   f"direct output is replaced by its output with {ctx} ablated; the label on each "
                   f"bar is the patched loss (nats).",
        "seed_cell": SEED_SECTION,
    }))
    return out


def regression_metrics(arts: Mapping[str, dict]):
    """(name, value, seed section) for `analysis.orchestration.regression`, named as its pythia-70m
    baseline names them (`component_patching.<component>.percent_increase`)."""
    if "dla" not in arts:
        return
    r = arts["dla"]["result"]
    cp = r["component_patching"]
    yield "component_patching.original", cp["original"], SEED_SECTION
    for row in cp["rows"]:
        yield f"component_patching.{row['component']}.percent_increase", row["percent_increase"], SEED_SECTION
    yield "dla.final_post.difference", r["dla"]["difference"][-1], SEED_SECTION
