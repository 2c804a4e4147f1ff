"""Contextual n-grams: how German trigrams depend on the context neuron, directly and
through later layers (Quirke, Heindrich, Gurnee, Nanda, "Training Dynamics of Contextual
N-Grams in Language Models", arXiv 2311.00863; the authors' code: `luciaquirke/contextual-ngrams`
`generate_ngrams_data.py`, `generate_indirect_effects_data.py`, and
`lovis-heindrich/superposition` `context_neuron/haystack_utils.py`, `compute_and_circuit_data.py`).
Read, not copied; where this module deviates, the docstring of the function says so.

**Paths.** With C the context neuron (`LxNy`), a its activation (`hook_post`) at a position
and m its mean English activation (the ablation value, as the `ablation` step uses it), the
final residual stream of the unedited run is r and that of the run with C set to m at every
position is r_abl. The *downstream components* are the attention and MLP outputs
(`hook_attn_out`, `hook_mlp_out`) of every layer after x; C's *direct path* is its own write
`a · W_out[x, y]` read by the unembedding, its *indirect path* everything that reaches the
unembedding through a downstream component. Four next-token losses (nats) per position:

* `clean`: r;
* `ablated`: r_abl (C mean-ablated; the *total effect* is `ablated − clean`);
* `direct_ablated`, only the direct path ablated: `r + (m − a) · W_out[x, y]`, i.e. the
  downstream components frozen at their values in the unedited run while C's own write is
  the ablated one (*direct effect*: `direct_ablated − clean`);
* `indirect_ablated`, only the indirect path ablated: `r_abl + (a − m) · W_out[x, y]`, i.e.
  the downstream components frozen at their values in the ablated run while C's own write
  is the unedited one (*indirect effect*: `indirect_ablated − clean`).

These are the authors' two frozen runs of `get_context_effect`: their `direct_effect_metric`
(context as is, downstream components patched from the ablated cache) is our
`indirect_ablated`, and their `indirect_effect_metric` (context ablated, downstream from the
unedited cache) our `direct_ablated`: each of their names says which path is left, ours
which path is removed (their `figures.py` `figure_5` relabels the columns the same way).
The final LayerNorm is recomputed on every stream, as in their runs. Direct and indirect
effects need not add up to the total (the final LayerNorm and the later layers are not
linear). When no layer follows x the indirect path is empty: `indirect_ablated == clean` and
`direct_ablated == ablated`.

**Trigrams.** Each trigram (t0, t1, t2) is measured, as the authors do, at the end of random
prompts: `CONTEXT_LENGTH` tokens drawn from the `COMMON_TOKENS` most frequent German tokens,
then the trigram's tokens; the four losses are taken on the last token (t2). For Pythia-70M
the paper's 228 trigrams are used as given; for any other model they are selected here on
the report's German text (`select_trigrams`).

**AND circuits.** For the trigrams most dependent on C, the layer-x+1.. neurons through which
most of that dependence flows (`neuron_attribution`, then `patched_neuron_losses`), and their
activations at t1's position under the 8 combinations of previous token (t0), current token
(t1) and context neuron present or not, with the authors' non-additivity scores (`and_scores`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..core.config import Neuron
from ..core.engine import LOSS_CHUNK_ROWS, Batch, Forward, make_batches, progress, set_neurons

PAPER = "Quirke et al. 2023, arXiv 2311.00863"
CONTEXT_LENGTH = 20   # random tokens before the trigram (the authors' `generate_random_prompts(..., 20)`)
COMMON_TOKENS = 100   # the pool they are drawn from (the authors' `get_common_tokens(k=100)`)
AND_TRIGRAMS = 3      # most dependent trigrams whose downstream neurons are examined
AND_CANDIDATES = 10   # neurons per trigram measured exactly after the attribution screen
AND_NEURONS = 5       # neurons per trigram shown with their 8 conditions
PATHS = ("clean", "ablated", "direct_ablated", "indirect_ablated")
EFFECTS = {"total": "ablated", "direct": "direct_ablated", "indirect": "indirect_ablated"}
# previous token (t0), current token (t1), context neuron: Y present, N absent
CONDITIONS = ("YYY", "YYN", "YNY", "NYY", "YNN", "NYN", "NNY", "NNN")


# ------------------------------------------------------------------ tokens and prompts


def is_letter_token(text: str) -> bool:
    """The authors' trigram filter (`get_all_non_letter_tokens`): a token counts when its
    text holds an ASCII letter."""
    return re.search(r"[a-zA-Z]", text) is not None


def common_tokens(token_lists: Sequence[Sequence[int]], d_vocab: int, to_str: Callable,
                  k: int = COMMON_TOKENS) -> np.ndarray:
    """The `k` most frequent tokens (occurrences, BOS — each list's first id — excluded; ties:
    lower id) among those whose text holds a letter, int64 `[k]`. The authors' `get_common_tokens`
    drops a list of punctuation tokens and the "weird" tokens of Pythia's weight norms;
    requiring a letter (any script) removes the same punctuation and needs no thresholds
    calibrated on Pythia's weights.

    Raises:
        ValueError: no token of the lists holds a letter.
    """
    counts = np.zeros(d_vocab, dtype=np.int64)
    for t in token_lists:
        if len(t) > 1:
            counts += np.bincount(np.asarray(t[1:], dtype=np.int64), minlength=d_vocab)[:d_vocab]
    seen = np.flatnonzero(counts)
    texts = to_str(seen.tolist())
    keep = seen[[any(ch.isalpha() for ch in s) for s in texts]]
    if keep.size == 0:
        raise ValueError("no token of the German text holds a letter")
    order = keep[np.lexsort((keep, -counts[keep]))]
    return order[:k].astype(np.int64)


def context_prompts(common: np.ndarray, n: int, length: int = CONTEXT_LENGTH, seed: int = 0) -> np.ndarray:
    """int64 `[n, length]`: random contexts, each token drawn uniformly (with replacement)
    from `common`, from `numpy.random.default_rng(seed)`. One set of contexts serves every
    trigram, so that trigrams are compared on the same contexts (the authors draw new ones
    per trigram, `generate_random_prompts`)."""
    rng = np.random.default_rng(seed)
    return np.asarray(common)[rng.integers(0, len(common), size=(n, length))].astype(np.int64)


def replace_column(prompts: np.ndarray, column: int, common: np.ndarray, space: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """A copy of int64 `[n, L]` `prompts` with column `column` replaced, row by row, by a
    token of `common` drawn uniformly among those of the same kind as the token it
    replaces (`space[i]`: common token i starts with a space, a new word; else a word
    piece), never the token itself (so "absent" means absent). The authors
    (`haystack_utils.replace_column`, `get_trigram_prompts`) draw from all common tokens or
    by a kind fixed per column, and may redraw the same token."""
    out = prompts.copy()
    common = np.asarray(common)
    lookup = dict(zip(common.tolist(), np.asarray(space).tolist(), strict=True))
    for i, tok in enumerate(prompts[:, column].tolist()):
        kind = lookup.get(tok)
        pool = common[(common != tok) & ((np.asarray(space) == kind) if kind is not None else True)]
        if pool.size == 0:
            pool = common[common != tok]
        out[i, column] = pool[rng.integers(0, pool.size)]
    return out


# ------------------------------------------------------------------ the four losses


def path_losses(fwd: Forward, r_clean: Tensor, r_abl: Tensor, act: Tensor, value: float,
                w_out: Tensor, targets: Tensor, chunk_rows: int = LOSS_CHUNK_ROWS) -> dict[str, Tensor]:
    """The four losses of the module docstring at a set of positions.

    Args:
        r_clean, r_abl: float32 `[rows, d_model]`, final residual stream (before the final
            LayerNorm) of the unedited and of the context-ablated run at those positions.
        act: float32 `[rows]`, the context neuron's unedited `hook_post` there; value: m.
        w_out: `[d_model]`, the neuron's output row `W_out[x, y]` (processed weights).
        targets: int64 `[rows]`, the next token at each position.
    Returns:
        `{path: float32 [rows]}` for `PATHS`, next-token cross-entropy in nats.

    The edited streams differ from r or r_abl by a multiple of one vector, so their logits
    are a rank-1 update of the unembedding already formed (as `engine.shortcut_losses` does
    for last-layer neurons): with x the centred stream, s its LayerNorm scale and z = (x/s) W_U,
    the stream x + c·w (w centred) has logits `(s/s') z + (c/s') (w W_U) + b_U`, s' its own
    scale. Two unembeddings instead of four; `tests/test_ngrams.py` checks it against the
    full recomputation.
    """
    W = fwd.w
    b_U = W.b_U.float()
    w = w_out.float()
    w = w - w.mean()
    v = fwd.matmul(w[None], W.W_U)[0]  # [d_vocab]
    coef = value - act.float()  # direct path ablated: r + (m − a) w; indirect: r_abl − (m − a) w
    n = r_clean.shape[0]
    out = {k: torch.empty(n, dtype=torch.float32, device=r_clean.device) for k in PATHS}
    for s0 in range(0, n, chunk_rows):
        sl = slice(s0, s0 + chunk_rows)
        tgt = targets[sl, None]
        for base, r, c, edited in (("clean", r_clean, coef, "direct_ablated"),
                                   ("ablated", r_abl, -coef, "indirect_ablated")):
            x = r[sl] - r[sl].mean(-1, keepdim=True)
            sc = (x.pow(2).mean(-1, keepdim=True) + W.eps).sqrt()
            z = fwd.matmul(x / sc, W.W_U)
            lg = z + b_U
            out[base][sl] = torch.logsumexp(lg, -1) - lg.gather(-1, tgt)[:, 0]
            cc = c[sl, None]
            x2 = x + cc * w
            sc2 = (x2.pow(2).mean(-1, keepdim=True) + W.eps).sqrt()
            lg2 = torch.addcmul(b_U + (cc / sc2) * v, z, sc / sc2)
            out[edited][sl] = torch.logsumexp(lg2, -1) - lg2.gather(-1, tgt)[:, 0]
    fwd.unembedded_rows += 2 * n
    return out


def _clean_and_ablated(fwd: Forward, tokens: Tensor, context: Neuron,
                       value: float) -> tuple[Tensor, Tensor, Tensor]:
    """(final residual unedited, final residual with `context` set to `value`, the context
    neuron's unedited `hook_post` `[batch, pos]`); the ablated pass restarts at the context
    layer."""
    pre = f"blocks.{context.layer}.hook_resid_pre"
    cap = dict.fromkeys([pre, context.hook()])
    r = fwd.run(tokens, capture=cap)
    r_abl = fwd.run(resid=cap[pre], start_layer=context.layer,
                    edits={context.hook(): set_neurons([context.index], value)})
    return r, r_abl, cap[context.hook()][..., context.index]


def text_path_losses(fwd: Forward, batches: Sequence[Batch], context: Neuron, value: float,
                     show_progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The four losses at every position with a target of every example (Quirke et al.
    `generate_indirect_effects_data.py`, which averages them over `german_data[:200]`).

    Returns:
        losses: float32 `[4, n_positions]` in `PATHS` order, positions in example order then
            position order (position t predicts token t + 1; BOS is position 0).
        offsets: int64 `[n_examples + 1]`: example i's positions are `offsets[i]:offsets[i+1]`.
    """
    per: dict[int, Tensor] = {}
    u = fwd.w.W_out[context.layer, context.index]
    with torch.inference_mode():
        for batch in progress(batches, "n-gram paths", show_progress):
            r, r_abl, act = _clean_and_ablated(fwd, batch.tokens, context, value)
            n = batch.tokens.shape[1]
            valid = torch.arange(n - 1, device=r.device)[None, :] < (batch.lengths[:, None] - 1)
            res = path_losses(fwd, r[:, :-1][valid], r_abl[:, :-1][valid], act[:, :-1][valid],
                              value, u, batch.tokens[:, 1:][valid])
            stacked = torch.stack([res[k] for k in PATHS])  # [4, rows], row-major over valid
            counts = (batch.lengths - 1).clamp(min=0).tolist()
            start = 0
            for ex, c in zip(batch.index, counts, strict=True):
                per[ex] = stacked[:, start:start + c].cpu()
                start += c
    order = sorted(per)
    offsets = np.cumsum([0] + [per[i].shape[1] for i in order]).astype(np.int64)
    return torch.cat([per[i] for i in order], 1).numpy().astype(np.float32), offsets


def per_example_means(losses: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """float64 `[4, n_examples]`: each example's mean over its positions (the seed's
    per-example loss), from `text_path_losses`."""
    out = np.zeros((losses.shape[0], len(offsets) - 1))
    for i in range(len(offsets) - 1):
        out[:, i] = losses[:, offsets[i]:offsets[i + 1]].astype(np.float64).mean(1)
    return out


def effect_split(per_example: np.ndarray) -> dict:
    """The total / direct / indirect effect of the context neuron on the loss (nats; Quirke
    et al. `context_effect_split.csv`, Figure 5) from float `[4, n_examples]` per-example
    mean losses (`PATHS` order): for each effect the difference of the means (nats), its
    percent of the clean loss, and 95% paired-bootstrap intervals over examples
    (`core.stats.paired_bootstrap`; None with one example). `indirect_share`: indirect /
    total."""
    from ..core.stats import paired_bootstrap

    means = {k: float(per_example[i].mean()) for i, k in enumerate(PATHS)}
    out = {"losses": means, "effects": {}}
    for name, path in EFFECTS.items():
        a = per_example[PATHS.index(path)]
        ci = paired_bootstrap(per_example[0], a) if per_example.shape[1] >= 2 else None
        d = means[path] - means["clean"]
        out["effects"][name] = {"nats": d, "nats_ci": ci and ci["increase_nats"],
                                "percent": d / means["clean"] * 100.0,
                                "percent_ci": ci and ci["percent_increase"]}
    tot = out["effects"]["total"]["nats"]
    out["indirect_share"] = out["effects"]["indirect"]["nats"] / tot if tot else None
    out["direct_share"] = out["effects"]["direct"]["nats"] / tot if tot else None
    return out


# ------------------------------------------------------------------ trigram selection


def select_trigrams(token_lists: Sequence[Sequence[int]], losses: np.ndarray, offsets: np.ndarray,
                    letter: np.ndarray, k: int) -> list[dict]:
    """The `k` trigrams of the text that depend most on the context neuron, by the authors'
    interest measure (`generate_ngrams_data.py`, `get_low_indirect_effect_loss_increase_interest_measure`):
    at each position, `min(ablated − clean, indirect_ablated − clean)` (nats) — the loss of
    the predicted token rises both when the neuron is ablated and when only its indirect
    path is. The trigram at position t is (token t−1, token t, token t+1), the last the
    predicted token; all three must hold a letter (`letter`: bool `[d_vocab]`) and t−1 must
    come after BOS.

    Deviation, a documented equivalent: the authors keep positions whose clean loss is below
    2.5 nats and whose interest exceeds 3 nats, then keep the trigrams whose loss on random
    prompts is below 3 nats and rises by more than 2; those absolute cut-offs fit the trained
    Pythia-70M and select nothing in a random or planted model. Here a position counts when
    its clean loss is at most the median clean loss of the text (the model predicts it at
    least as well as a typical token) and its interest is positive; each distinct trigram
    scores its largest interest over its occurrences, and the `k` highest are measured on
    random prompts like any given list (ties: lower token ids first).

    Args:
        token_lists: the examples' token ids (BOS first), as `text_path_losses` read them.
        losses, offsets: `text_path_losses`'s output.
    Returns:
        `[{"ids": [t0, t1, t2], "interest" (nats), "occurrences", "clean_loss"` (at the
        best occurrence)`, "example", "position"}]`, highest interest first.
    """
    clean, abl, ind = losses[0], losses[1], losses[3]
    interest = np.minimum(abl - clean, ind - clean).astype(np.float64)
    cutoff = float(np.median(clean)) if clean.size else 0.0
    best: dict[tuple[int, int, int], dict] = {}
    for i, toks in enumerate(token_lists):
        lo = int(offsets[i])
        for t in range(2, len(toks) - 1):
            p = lo + t
            if clean[p] > cutoff or interest[p] <= 0:
                continue
            key = (int(toks[t - 1]), int(toks[t]), int(toks[t + 1]))
            if not all(letter[j] for j in key):
                continue
            row = best.get(key)
            if row is None:
                best[key] = row = {"ids": list(key), "interest": -np.inf, "occurrences": 0}
            row["occurrences"] += 1
            if interest[p] > row["interest"]:
                row.update(interest=float(interest[p]), clean_loss=float(clean[p]), example=i, position=t)
    ranked = sorted(best.values(), key=lambda r: (-r["interest"], r["ids"]))
    return ranked[:k]


def paper_trigrams(paper_dir) -> tuple[list[str], dict] | None:
    """The paper's trigram strings (`analysis.core.paper.read_trigrams`: the authors'
    `low_indirect_loss_trigrams.json`, sha256-verified) and a record `{"file", "sha256", "n"}`;
    None when no authors' folder was given or found (`--paper-dir`, `RunConfig.paper_dir`).

    Raises:
        DataError: the file is missing from the folder, changed, or not a list of strings
            (a named folder is the user's statement that the list is there).
    """
    from ..core import paper as ref

    if not paper_dir:
        return None
    strings = ref.read_trigrams(paper_dir)
    digest = ref.verify(paper_dir, (ref.TRIGRAM_LIST,))[ref.TRIGRAM_LIST]
    return strings, {"file": ref.TRIGRAM_LIST, "dir": str(paper_dir), "sha256": digest, "n": len(strings)}


def is_pythia_70m(info: Mapping) -> bool:
    """The real Pythia-70M at any revision: its weights come from `EleutherAI/pythia-70m`
    (`analysis.core.paper.is_real_pythia_70m`, the rule the `paper` step uses), not a
    checkpoint that is merely named so."""
    from ..core.paper import is_real_pythia_70m

    return is_real_pythia_70m(info.get("source"))


# ------------------------------------------------------------------ trigrams on random prompts


def _last_rows(r: Tensor, lengths: Tensor) -> Tensor:
    """`[batch, d]`: each row's stream at its second-to-last real position (it predicts the
    last token)."""
    return r[torch.arange(r.shape[0], device=r.device), lengths - 2]


def measure_trigrams(fwd: Forward, trigrams: Sequence[Sequence[int]], contexts: np.ndarray,
                     context: Neuron, value: float, batch_tokens: int, device="cpu",
                     show_progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The four losses on each trigram's last token at the end of every random context
    (Quirke et al. `calculate_trigram_losses`: `get_context_effect(..., pos=-1)` on
    `generate_random_prompts(trigram, model, common_tokens, 100, 20)`). The prompts start
    with the context's first token, no BOS, as theirs do.

    Args:
        trigrams: token ids of each trigram (normally 3; a given string may tokenize to more
            or fewer). contexts: int64 `[n_prompts, length]` (`context_prompts`).
    Returns:
        losses: float64 `[4, n_trigrams, n_prompts]` (nats, `PATHS` order);
        activation: float64 `[n_trigrams, n_prompts]`, the context neuron's unedited
            `hook_post` at the position that predicts the last token (is the context on?).
    """
    n_p = contexts.shape[0]
    lists = [list(map(int, c)) + list(map(int, t)) for t in trigrams for c in contexts]
    losses = np.zeros((4, len(lists)))
    act_out = np.zeros(len(lists))
    u = fwd.w.W_out[context.layer, context.index]
    with torch.inference_mode():
        for batch in progress(make_batches(lists, batch_tokens, pad_id=1, device=device),
                              "trigrams", show_progress):
            r, r_abl, act = _clean_and_ablated(fwd, batch.tokens, context, value)
            rows, last = torch.arange(act.shape[0], device=act.device), batch.lengths - 2
            res = path_losses(fwd, _last_rows(r, batch.lengths), _last_rows(r_abl, batch.lengths),
                              act[rows, last], value, u, batch.tokens[rows, last + 1])
            for i, k in enumerate(PATHS):
                losses[i, batch.index] = res[k].double().cpu().numpy()
            act_out[batch.index] = act[rows, last].double().cpu().numpy()
    return losses.reshape(4, len(trigrams), n_p), act_out.reshape(len(trigrams), n_p)


def trigram_rows(labels: Sequence[str], tokens: Sequence[Sequence[str]], ids: Sequence[Sequence[int]],
                 losses: np.ndarray, activation: np.ndarray) -> list[dict]:
    """One row per trigram, most dependent on the context neuron first (largest total
    effect; ties: input order), with `rank` (1 = most dependent): the mean of each of the
    four losses over the prompts (nats), each effect (`total`, `direct`, `indirect`: mean
    difference from `clean`) with its 95% paired-bootstrap interval over prompts, and the
    context neuron's mean activation at the predicting position.

    Args:
        losses: float `[4, n_trigrams, n_prompts]`; activation: `[n_trigrams, n_prompts]`.
    """
    from ..core.stats import paired_bootstrap

    rows = []
    for j, label in enumerate(labels):
        row = {"trigram": label, "tokens": list(tokens[j]), "ids": [int(i) for i in ids[j]],
               "n_tokens": len(ids[j]), "context_activation": float(activation[j].mean())}
        for i, k in enumerate(PATHS):
            row[k] = float(losses[i, j].mean())
        for name, path in EFFECTS.items():
            a = losses[PATHS.index(path), j]
            row[name] = row[path] - row["clean"]
            ci = paired_bootstrap(losses[0, j], a) if losses.shape[2] >= 2 else None
            row[f"{name}_ci"] = ci and ci["increase_nats"]
        rows.append(row)
    order = sorted(range(len(rows)), key=lambda j: (-rows[j]["total"], j))
    out = []
    for rank, j in enumerate(order, 1):
        out.append({"rank": rank, "index": j, **rows[j]})
    return out


# ------------------------------------------------------------------ AND circuits


def _last_token_loss(fwd: Forward, r: Tensor, tokens: Tensor) -> Tensor:
    """`[batch]` loss (nats) of the last token of equal-length prompts, from the final
    residual stream `[batch, L, d]`."""
    lg = fwd.logits(r[:, -2])
    return torch.logsumexp(lg, -1) - lg.gather(-1, tokens[:, -1:])[:, 0]


def neuron_attribution(fwd: Forward, tokens: Tensor, context: Neuron, value: float) -> dict:
    """Which downstream neurons carry a trigram's dependence on the context neuron, to first
    order: for every MLP neuron j of the layers after the context layer, the change of the
    last token's loss when j alone takes its value from the context-ablated run, estimated
    as `Σ_positions (post_abl − post) · ∂loss/∂post` (attribution patching; the gradient
    through the later layers and the final LayerNorm, by autograd on the unedited run),
    averaged over prompts. The authors (`get_and_neuron_ablation_losses`,
    `and_neuron_analysis.py`) patch every neuron exactly, one forward pass each; the
    estimate only screens candidates for `patched_neuron_losses`, which measures them exactly.

    Args:
        tokens: int64 `[n_prompts, L]`, equal-length prompts ending with the trigram.
    Returns:
        `{"layers": [x+1, ...], "attribution": float64 [n_layers_after, d_mlp] (nats),
        "post": {layer: [n, L, d_mlp]}, "post_ablated": {...}, "resid_pre": {layer: ...},
        "clean_loss", "ablated_loss": float64 [n] (the last token's, nats)}`.
    Raises:
        ValueError: no layer follows the context layer.
    """
    L = fwd.w.n_layers
    layers = list(range(context.layer + 1, L))
    if not layers:
        raise ValueError(f"no layer follows {context}: it has no downstream neurons")
    posts = [f"blocks.{layer}.mlp.hook_post" for layer in layers]
    pres = [f"blocks.{layer}.hook_resid_pre" for layer in layers]
    with torch.no_grad():  # not inference mode: the gradient pass below starts from these
        cap = dict.fromkeys([f"blocks.{context.layer}.hook_resid_pre", *posts, *pres])
        r = fwd.run(tokens, capture=cap)
        cap_a = dict.fromkeys(posts)
        r_abl = fwd.run(resid=cap[f"blocks.{context.layer}.hook_resid_pre"], start_layer=context.layer,
                        edits={context.hook(): set_neurons([context.index], value)}, capture=cap_a)
        clean_loss = _last_token_loss(fwd, r, tokens)
        ablated_loss = _last_token_loss(fwd, r_abl, tokens)
    held: dict[str, Tensor] = {}

    def keep(name):
        def fn(x):
            x.retain_grad()
            held[name] = x
            return x
        return fn

    with torch.enable_grad():
        r_in = cap[pres[0]].detach().clone().requires_grad_(True)
        out = fwd.run(resid=r_in, start_layer=layers[0], edits={p: keep(p) for p in posts})
        _last_token_loss(fwd, out, tokens).sum().backward()
    attr = np.stack([((cap_a[p] - cap[p]) * held[p].grad).sum(1).mean(0).double().cpu().numpy()
                     for p in posts])
    return {"layers": layers, "attribution": attr,
            "post": {layer: cap[p] for layer, p in zip(layers, posts, strict=True)},
            "post_ablated": {layer: cap_a[p] for layer, p in zip(layers, posts, strict=True)},
            "resid_pre": {layer: cap[p] for layer, p in zip(layers, pres, strict=True)},
            "clean_loss": clean_loss.double().cpu().numpy(),
            "ablated_loss": ablated_loss.double().cpu().numpy()}


def patched_neuron_losses(fwd: Forward, tokens: Tensor, att: Mapping, neurons: Sequence[Neuron]) -> np.ndarray:
    """float64 `[len(neurons), n_prompts]`: the last token's loss (nats) with one neuron's
    `hook_post` set, at every position, to its value in the context-ablated run
    (`neuron_attribution`'s `post_ablated`) and everything else unedited (the authors'
    single-neuron path patching, `compute_path_patched_mlp_loss`). One pass for all: the
    prompts are repeated once per neuron and restart at the earliest neuron's layer, each
    copy with its own neuron patched."""
    if not neurons:
        return np.zeros((0, tokens.shape[0]))
    b = tokens.shape[0]
    start = min(n.layer for n in neurons)
    edits = {}
    for layer in sorted({n.layer for n in neurons}):
        rows = [(i, n.index) for i, n in enumerate(neurons) if n.layer == layer]

        def patch(x, rows=rows, vals=att["post_ablated"][layer]):
            x = x.clone()
            for i, j in rows:
                x[i * b:(i + 1) * b, :, j] = vals[..., j]
            return x

        edits[f"blocks.{layer}.mlp.hook_post"] = patch
    with torch.inference_mode():
        r = fwd.run(resid=att["resid_pre"][start].repeat(len(neurons), 1, 1), start_layer=start, edits=edits)
        loss = _last_token_loss(fwd, r, tokens.repeat(len(neurons), 1))
    return loss.double().cpu().numpy().reshape(len(neurons), b)


def condition_prompts(prompts: np.ndarray, common: np.ndarray, space: np.ndarray, seed: int,
                      n_tokens: int = 3) -> dict[str, np.ndarray]:
    """`{"YY", "NY", "YN", "NN"}` (previous token, current token present or not) → int64
    `[n, L]`: the trigram prompts with t0 (column L−3) and/or t1 (column L−2) replaced by
    common tokens (`replace_column`, generator `default_rng([seed, column])`). The same
    replacement is used wherever a token is absent, so conditions differ only where they
    should (as the authors' `create_ablation_prompts`). A trigram of fewer than 3 tokens
    has context tokens in those columns; they are replaced the same way."""
    L = prompts.shape[1]
    prev = replace_column(prompts, L - 3, common, space, np.random.default_rng([seed, L - 3]))
    cur = replace_column(prompts, L - 2, common, space, np.random.default_rng([seed, L - 2]))
    both = prev.copy()
    both[:, L - 2] = cur[:, L - 2]
    return {"YY": prompts, "NY": prev, "YN": cur, "NN": both}


def and_conditions(fwd: Forward, variants: Mapping[str, np.ndarray], context: Neuron, active: float,
                   inactive: float, neurons: Sequence[Neuron], device="cpu") -> tuple[dict, dict]:
    """The 8 conditions (Quirke et al. Figure 3; `haystack_utils.get_trigram_neuron_activations`,
    `compute_and_conditions`): each `condition_prompts` variant run with the context neuron
    set at every position to its German mean (`active`, context present) or its English
    mean (`inactive`, absent).

    Deviation: the authors also freeze some downstream components at their ablated values
    when the context is present (`get_direct_effect`); here every later layer runs, so a
    neuron sees the context through every path.

    Returns:
        (`{condition: float64 [n_prompts, len(neurons)]}` the neurons' `hook_post` at t1's
        position (column L−2, the one that predicts t2), `{condition: float64 [n_prompts]}`
        the last token's loss in nats), conditions named previous, current, context (`CONDITIONS`).
    """
    acts, losses = {}, {}
    hooks = sorted({n.hook() for n in neurons})
    keys = list(variants)
    n = next(iter(variants.values())).shape[0]
    # the four token variants in one batch: one pass to the context layer, two from it
    tokens = torch.as_tensor(np.concatenate([variants[k] for k in keys]), dtype=torch.long, device=device)
    with torch.inference_mode():
        r0 = fwd.run(tokens, stop_layer=context.layer)
        for flag, v in (("Y", active), ("N", inactive)):
            cap = dict.fromkeys(hooks)
            r = fwd.run(resid=r0, start_layer=context.layer,
                        edits={context.hook(): set_neurons([context.index], v)}, capture=cap)
            a = (torch.stack([cap[nr.hook()][:, -2, nr.index] for nr in neurons], -1).double().cpu().numpy()
                 if neurons else np.zeros((tokens.shape[0], 0)))
            loss = _last_token_loss(fwd, r, tokens).double().cpu().numpy()
            for i, key in enumerate(keys):
                acts[key + flag] = a[i * n:(i + 1) * n]
                losses[key + flag] = loss[i * n:(i + 1) * n]
    return acts, losses


# The authors' non-additivity scores (`haystack_utils.compute_and_feature_diffs`), named here
# by the pair of features whose interaction each measures; their names beside.
SCORES = {
    "single_features": "Single Features (diff): (YYY−NNN) − Σ over one feature present (·−NNN)",
    "two_features": "Two Features (diff): (YYY−NNN) − ½ Σ over two features present (·−NNN)",
    "current_x_context": "Previous Token (diff): YYY − YYN − YNY + YNN, the previous token held present",
    "previous_x_context": "Current Token (diff): YYY − YYN − NYY + NYN, the current token held present",
    "previous_x_current": "Context Neuron (diff): YYY − YNY − NYY + NNY, the context held present",
}


def and_scores(v: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Non-additivity of a value under the 8 conditions (`{condition: array}`, all of one
    shape, e.g. per prompt): `SCORES`. Positive: the features together raise the value more
    than the sum of their separate effects (an AND); 0 for a value additive in the three
    features."""
    N = v["NNN"]
    return {
        "single_features": (v["YYY"] - N) - ((v["YNN"] - N) + (v["NYN"] - N) + (v["NNY"] - N)),
        "two_features": (v["YYY"] - N) - ((v["YYN"] - N) + (v["YNY"] - N) + (v["NYY"] - N)) / 2,
        "current_x_context": v["YYY"] - v["YYN"] - v["YNY"] + v["YNN"],
        "previous_x_context": v["YYY"] - v["YYN"] - v["NYY"] + v["NYN"],
        "previous_x_current": v["YYY"] - v["YNY"] - v["NYY"] + v["NNY"],
    }


def _with_ci(values: np.ndarray) -> dict:
    from ..core.stats import bootstrap_mean

    v = np.asarray(values, dtype=np.float64)
    return {"value": float(v.mean()), "ci": bootstrap_mean(v) if len(v) >= 2 else None}


def and_circuit(fwd: Forward, prompts: np.ndarray, context: Neuron, value: float, active: float,
                common: np.ndarray, space: np.ndarray, seed: int, device="cpu",
                n_candidates: int = AND_CANDIDATES, n_neurons: int = AND_NEURONS) -> dict:
    """One trigram's AND analysis on its prompts (int64 `[n, L]`, equal length): the
    `n_candidates` downstream neurons with the largest `neuron_attribution`, each measured
    exactly (`patched_neuron_losses`: its effect, nats, with a 95% paired-bootstrap interval
    over prompts, and its share of the trigram's total effect), the `n_neurons` largest kept,
    and their 8 conditions (`and_conditions`) with `and_scores` (mean over prompts, 95%
    bootstrap interval), plus the same scores on the last token's log-probability (−loss).

    Returns:
        `{"neurons": [{"neuron", "effect", "effect_ci", "share", "attribution", "conditions"
        {condition: mean activation}, "scores": {name: {"value", "ci"}}}], "losses"
        {condition: mean loss}, "logprob_scores", "total_effect", "n_candidates", "arrays":
        {"activations": [8, n, K], "losses": [8, n]}}`.
    """
    from ..core.stats import paired_bootstrap

    tokens = torch.as_tensor(prompts, dtype=torch.long, device=device)
    att = neuron_attribution(fwd, tokens, context, value)
    flat = att["attribution"].reshape(-1)
    d_mlp = att["attribution"].shape[1]
    order = np.lexsort((np.arange(flat.size), -flat))[:n_candidates]
    cands = [Neuron(att["layers"][i // d_mlp], int(i % d_mlp)) for i in order]
    patched = patched_neuron_losses(fwd, tokens, att, cands)
    base = att["clean_loss"]
    total = att["ablated_loss"] - base
    effects = patched - base[None]
    keep = sorted(range(len(cands)), key=lambda i: (-effects[i].mean(), i))[:n_neurons]
    neurons = [cands[i] for i in keep]
    variants = condition_prompts(prompts, common, space, seed)
    acts, losses = and_conditions(fwd, variants, context, active, value, neurons, device)
    rows = []
    tot = float(total.mean())
    for k, i in enumerate(keep):
        ci = paired_bootstrap(base, patched[i])["increase_nats"] if len(base) >= 2 else None
        per = {c: acts[c][:, k] for c in CONDITIONS}
        rows.append({"neuron": str(cands[i]), "effect": float(effects[i].mean()), "effect_ci": ci,
                     "share": float(effects[i].mean()) / tot if tot else None,
                     "attribution": float(flat[order[i]]),
                     "conditions": {c: float(per[c].mean()) for c in CONDITIONS},
                     "scores": {name: _with_ci(s) for name, s in and_scores(per).items()}})
    logprob = and_scores({c: -losses[c] for c in CONDITIONS})
    return {"neurons": rows, "losses": {c: float(losses[c].mean()) for c in CONDITIONS},
            "logprob_scores": {name: _with_ci(s) for name, s in logprob.items()},
            "total_effect": tot, "n_candidates": len(cands),
            "arrays": {"activations": np.stack([acts[c] for c in CONDITIONS]),
                       "losses": np.stack([losses[c] for c in CONDITIONS])}}


# ------------------------------------------------------------------ pipeline step

SECTION = f"{PAPER}: contextual n-grams, direct and indirect effects"


def run_step(run, arts: dict) -> dict:
    """Step `ngrams`: on the first `ngram_examples` German examples, the four losses at every
    position (`text_path_losses`) and the total / direct / indirect split (`effect_split`);
    the trigrams (the paper's for Pythia-70M, else `select_trigrams` on the same positions)
    measured on `ngram_prompts` random prompts (`measure_trigrams`); for the `AND_TRIGRAMS`
    most dependent, their AND circuits (`and_circuit`). Ablation value: the context neuron's
    English mean, German mean for "context present" (both from `activations`).

    Arrays: `text_losses` float32 `[4, n_positions]` and `text_offsets` int64 `[n_examples+1]`
    (`text_path_losses`), `text_example_losses` float64 `[4, n_examples]`, `trigram_losses`
    float64 `[4, n_trigrams, n_prompts]` (trigrams in the order of `result.trigram_list`),
    `trigram_context_activation` float64 `[n_trigrams, n_prompts]`, `contexts` int64
    `[n_prompts, CONTEXT_LENGTH]`, and per AND trigram i `and_{i}_activations` float64
    `[8, n_prompts, n_neurons]` and `and_{i}_losses` float64 `[8, n_prompts]` (conditions in
    `CONDITIONS` order)."""
    p = run.profile
    ctx = run.context
    acts = arts["activations"]["result"]
    value, active = float(acts["context_mean_inactive"]), float(acts["context_mean_active"])
    toks, rec = run.tokens("german", p.ngram_examples)
    pool, pool_rec = run.tokens("german", None)
    pythia = is_pythia_70m(run.model.info)
    given = paper_trigrams(run.cfg.paper_dir) if pythia else None
    n_layers = run.fwd.w.n_layers
    params = {"examples": p.ngram_examples, "prompts": p.ngram_prompts, "trigrams": p.ngram_trigrams,
              "language": "german", "context_neuron": str(ctx),
              "ablation": "context neuron hook_post set to its English mean (activations step)",
              "context_present": "context neuron hook_post set to its German mean (activations step)",
              "context_length": CONTEXT_LENGTH, "common_tokens": COMMON_TOKENS,
              "and": {"trigrams": AND_TRIGRAMS, "candidates": AND_CANDIDATES, "neurons": AND_NEURONS},
              "tokens": {"german": rec}, "common_tokens_from": pool_rec,
              "given_trigrams": given and {"strings": given[0], "sha256": given[1]["sha256"]}}

    def compute():
        to_str = run.model.to_str_tokens
        d_vocab = int(run.fwd.w.W_U.shape[1])
        text_losses, offsets = text_path_losses(run.fwd, run.batches(toks), ctx, value, run.show_progress)
        per_ex = per_example_means(text_losses, offsets)
        common = common_tokens(pool, d_vocab, to_str)
        common_str = to_str(common.tolist())
        space = np.array([s.startswith(" ") for s in common_str])
        selection = None
        if given is not None:
            strings = given[0]
            ids = [list(run.model.tokenizer(s, add_special_tokens=False)["input_ids"]) for s in strings]
            source = {"kind": "paper", "pythia_70m": True, "file": given[1]["file"], "sha256": given[1]["sha256"],
                      "n": len(strings), "note": f"the {len(strings)} trigrams of {PAPER}, as given "
                      "(their strings tokenized here, without BOS)"}
        else:
            letter = np.array([is_letter_token(s) for s in to_str(range(d_vocab))])
            picked = select_trigrams(toks, text_losses, offsets, letter, p.ngram_trigrams)
            ids = [r["ids"] for r in picked]
            strings = ["".join(to_str(i)) for i in ids]
            why = ("Pythia-70M, but the paper's trigram list was not found (no --paper-dir, and "
                   "no `paper` folder beside --data-dir)" if pythia else
                   "not Pythia-70M")
            source = {"kind": "selected", "n": len(ids), "pythia_70m": pythia,
                      "note": f"{why}: the {len(ids)} trigrams of the report's German text that depend "
                              "most on the context neuron (select_trigrams)"}
            selection = {"measure": "min(ablated − clean, indirect_ablated − clean) at the trigram's "
                                    "last token, largest over its occurrences",
                         "clean_loss_cutoff": float(np.median(text_losses[0])) if text_losses.size else None,
                         "rows": picked}
        contexts = context_prompts(common, p.ngram_prompts, CONTEXT_LENGTH, p.seed)
        losses, activation = measure_trigrams(run.fwd, ids, contexts, ctx, value, p.batch_tokens,
                                              run.cfg.device, run.show_progress)
        rows = trigram_rows(strings, [to_str(i) for i in ids], ids, losses, activation)
        arrays = {"text_losses": text_losses, "text_offsets": offsets, "text_example_losses": per_ex,
                  "trigram_losses": losses, "trigram_context_activation": activation, "contexts": contexts}
        circuits = []
        if ctx.layer < n_layers - 1:
            for i, row in enumerate(rows[:AND_TRIGRAMS]):
                prompts = np.concatenate([contexts, np.tile(np.asarray(row["ids"], dtype=np.int64),
                                                            (len(contexts), 1))], 1)
                res = and_circuit(run.fwd, prompts, ctx, value, active, common, space, p.seed, run.cfg.device)
                arr = res.pop("arrays")
                arrays[f"and_{i}_activations"] = arr["activations"]
                arrays[f"and_{i}_losses"] = arr["losses"]
                circuits.append({"trigram": row["trigram"], "rank": row["rank"], "ids": row["ids"],
                                 "tokens": row["tokens"], **res})
        from ..core.stats import METHODS

        result = {
            "context_neuron": str(ctx), "context_layer": ctx.layer, "ablation_value": value,
            "active_value": active, "downstream_layers": list(range(ctx.layer + 1, n_layers)),
            "paths": list(PATHS), "interval": METHODS["loss"],
            "definitions": {
                "clean": "next-token loss (nats) of the unedited model",
                "ablated": "context neuron set to its English mean at every position",
                "direct_ablated": "only the direct path ablated: final residual stream + (m − a)·W_out "
                                  "(downstream components frozen at their unedited values); the "
                                  "authors' 'Indirect Effect Loss'",
                "indirect_ablated": "only the indirect path ablated: ablated run's final residual "
                                    "stream + (a − m)·W_out (downstream components frozen at their "
                                    "ablated values); the authors' 'Direct Effect Loss'",
                "total": "ablated − clean", "direct": "direct_ablated − clean",
                "indirect": "indirect_ablated − clean",
            },
            "text": {"language": "german", "n_examples": rec["used"], "n_positions": int(text_losses.shape[1]),
                     **effect_split(per_ex)},
            "trigram_source": source, "selection": selection,
            "prompts": {"n_prompts": int(contexts.shape[0]), "context_length": CONTEXT_LENGTH,
                        "seed": p.seed, "bos": False,
                        "common_tokens": [{"token_id": int(i), "token": s} for i, s in zip(common, common_str, strict=True)]},
            "trigram_list": strings,
            "trigrams": rows,
            "and": {"conditions": list(CONDITIONS),
                    "condition_order": "previous token (t0), current token (t1), context neuron; "
                                       "Y present, N absent",
                    "scores": SCORES, "n_trigrams": len(circuits),
                    "activation": "hook_post at t1's position (the one predicting t2)",
                    "circuits": circuits},
            "array_layout": {"text_losses": "[path, position] (text_offsets per example)",
                             "text_example_losses": "[path, example]",
                             "trigram_losses": "[path, trigram (trigram_list order), prompt]",
                             "trigram_context_activation": "[trigram, prompt]",
                             "and_{i}_activations": "[condition, prompt, neuron]",
                             "and_{i}_losses": "[condition, prompt]"},
        }
        return result, arrays

    data = run.data_prov("german")
    if given is not None:  # the authors' list is data this step reads: in its provenance and key
        from ..core import paper as ref

        data = {**data, **ref.provenance(given[1]["dir"], {given[1]["file"]: given[1]["sha256"]})}
    inputs = run.inputs("ngrams", sys.modules[__name__], params, data,
                        {"activations": arts["activations"]["key"]})
    return run.step(inputs, compute)


def figures(run, arts: dict, fig_dir) -> list[dict]:
    import figures.ngrams as plots_ng
    from figures.plots import save

    art = arts["ngrams"]
    r = art["result"]
    ctx = r["context_neuron"]
    meta = {"step": "ngrams", "artifact_key": art["key"], "seed_cell": SECTION}
    out = [save(plots_ng.effect_split(r["text"]["effects"], ctx), fig_dir, "ngrams_effect_split", {
        **meta, "function": "figures.ngrams.effect_split",
        "caption": f"Loss increase (nats) on {r['text']['n_examples']} German examples when {ctx} is "
                   "mean-ablated (total), when only its direct path to the unembedding is (direct), "
                   "and when only its path through later layers is (indirect); bars: 95% paired-bootstrap "
                   "intervals over examples (Quirke et al. Figure 5)."})]
    if r["trigrams"]:
        out.append(save(plots_ng.trigram_paths(r["trigrams"], ctx), fig_dir, "ngrams_trigram_paths", {
            **meta, "function": "figures.ngrams.trigram_paths",
            "caption": f"Each trigram's loss increase on its last token when only {ctx}'s direct path "
                       "(x) or only its indirect path (y) is ablated, mean over "
                       f"{r['prompts']['n_prompts']} random prompts; above the diagonal the "
                       "indirect path matters more (Quirke et al. Figure 6)."}))
        out.append(save(plots_ng.top_trigrams(r["trigrams"][:15]), fig_dir, "ngrams_top_trigrams", {
            **meta, "function": "figures.ngrams.top_trigrams",
            "caption": f"The trigrams most dependent on {ctx}: loss on the last token (nats), mean "
                       f"over {r['prompts']['n_prompts']} random prompts, unedited, {ctx} ablated, "
                       "only its direct path ablated, only its indirect path ablated; bars: 95% "
                       "paired-bootstrap intervals of the increase."}))
    for i, c in enumerate(r["and"]["circuits"][:1]):
        out.append(save(plots_ng.and_conditions(c, r["and"]["conditions"]), fig_dir, f"ngrams_and_{i}", {
            **meta, "function": "figures.ngrams.and_conditions",
            "caption": f"The downstream neurons that carry most of the trigram {c['trigram']!r}'s "
                       f"dependence on {ctx}: activation (hook_post) at its current token under the 8 "
                       "combinations of previous token, current token and context neuron present (Y) "
                       "or absent (N), mean over prompts (Quirke et al. Figure 3)."}))
    return out


def regression_metrics(arts: Mapping[str, dict]):
    """(name, value, section) for `analysis.orchestration.regression`: the split of the
    context neuron's effect on the German text (`ngrams.text.<effect>.nats` and its interval)."""
    if "ngrams" not in arts:
        return
    t = arts["ngrams"]["result"]["text"]
    yield "ngrams.text.clean", t["losses"]["clean"], SECTION
    for name, e in t["effects"].items():
        yield f"ngrams.text.{name}.nats", e["nats"], SECTION
        if e["nats_ci"] is not None:
            yield f"ngrams.text.{name}.nats_ci_low", e["nats_ci"][0], SECTION
            yield f"ngrams.text.{name}.nats_ci_high", e["nats_ci"][1], SECTION
