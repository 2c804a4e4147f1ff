"""Contextual n-grams over training (issue 19 §2): the `ngrams` step's measurements at one
checkpoint of a sweep, plus the ablation of the other German neurons, so that the sweep
reproduces Quirke et al.'s training-dynamics figures (arXiv 2311.00863, figures 1–8:
trigram loss, ablated trigram loss, the other German neurons' F1 and ablation effect, the
direct vs indirect effect, German / English / trigram loss) checkpoint by checkpoint.

Everything is measured with `families.ngrams`' own functions (`text_path_losses`,
`effect_split`, `measure_trigrams`, `common_tokens`, `context_prompts`), so a sweep's number
at a checkpoint is the report's `ngrams` number on the same examples and trigrams. What
differs is only what a sweep can know before any checkpoint is measured:

* **The trigrams.** For `EleutherAI/pythia-70m` with the authors' folder, the paper's 228
  (`core.paper.read_trigrams`), as the `ngrams` step uses them; their strings travel in the
  task's spec (plain text, in the key with the file's sha256), so a worker needs no copy of
  the folder. For any other model one list must serve every checkpoint, and the authors'
  selection (and `ngrams.select_trigrams`) needs a trained model's losses; so the list is
  chosen from the text alone (`text_trigrams`): the most frequent trigrams of letter tokens
  in the German text that never occur in the English text. Deviation, documented: the
  authors select at the final checkpoint by clean loss and ablation increase.
* **The ablation value.** The context neuron's mean English activation at that checkpoint
  over the activation examples' crop positions (`dynamics.measure_checkpoint`'s `value`),
  the value every other ablation of the sweep uses; the report's `ngrams` step takes the
  same mean from its `activations` step.
* **Other German neurons.** The authors ablate 229 neurons whose F1 exceeds 0.85 at some
  checkpoint, fixed over training. A checkpoint's task cannot see the others, so it ablates
  that checkpoint's `k` best German-positive neurons of discovery other than the context
  neuron (`k`: the profile's `null_german_neurons`, the size of the report's German null,
  which ablates the same neurons), each set to its mean English activation, on the German
  loss examples.

No AND circuits per checkpoint: the paper draws them at the final checkpoint only (the
report's `ngrams` step).

**Direct logit attribution on frequent tokens (the paper's figure 7).** The authors'
`generate_dla_data.py` (luciaquirke/contextual-ngrams) computes, at every checkpoint,
`dla = model.W_out[layer, neuron] @ model.W_U` on TransformerLens weights loaded with
`fold_ln`, `center_writing_weights` and `center_unembed` (as `core.models.PROCESSING`
loads ours), and averages it over the 200 most frequent German and the 200 most frequent
English tokens (`get_common_tokens(..., k=200)`); `figures.py::figure_7` draws both means
against the checkpoint. No activation and no final LayerNorm scale enter: it is the logit
written per unit of the neuron's activation when the final LayerNorm divides by 1.
`frequent_token_dla` computes exactly that product (with `l3_tokens.neuron_direction_logit_diff`,
the unigram step's neuron-direction logits) for the checkpoint's context neuron. The token
lists are `ngrams.common_tokens` over every German and every English example the task reads
(occurrences, BOS excluded, tokens holding a letter), one list per language for every
checkpoint. Deviation, documented: the authors count on Europarl and also drop Pythia's
"weird" tokens (W_U / W_E norm thresholds at checkpoint 0) and tokens without an ASCII
letter; here the data are the sweep's, and any letter counts (as for the n-gram prompts).
(Their saved table swaps the column names "German DLA" / "English DLA"; their figure_7
swaps the legend back, so the figure is right; the definition above is the one it plots.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.config import Neuron

F1_CANDIDATE = 0.85   # the authors' German-neuron candidates: F1 above this (their figure_4 data)
DLA_TOKENS = 200      # frequent tokens per language of the paper's figure 7 (`get_common_tokens(k=200)`)


def text_trigrams(german: Sequence[Sequence[int]], english: Sequence[Sequence[int]],
                  letter: np.ndarray, k: int) -> list[dict]:
    """The `k` most frequent trigrams (t0, t1, t2) of the German token lists whose three
    tokens hold a letter (`letter`: bool `[d_vocab]`, `ngrams.is_letter_token`) and which
    never occur in the English lists; BOS (each list's first id) is never part of one.
    Ties: lower token ids first. Model-free, so every checkpoint of a run measures the same
    list (see the module docstring).

    Returns:
        `[{"ids": [t0, t1, t2], "count": occurrences in the German lists}]`, most frequent first.
    """
    def grams(lists):
        out: dict[tuple[int, int, int], int] = {}
        for t in lists:
            t = [int(x) for x in t[1:]]
            for i in range(len(t) - 2):
                g = (t[i], t[i + 1], t[i + 2])
                out[g] = out.get(g, 0) + 1
        return out

    de, en = grams(german), grams(english)
    keep = [(g, c) for g, c in de.items() if g not in en and all(letter[j] for j in g)]
    keep.sort(key=lambda gc: (-gc[1], gc[0]))
    return [{"ids": list(g), "count": c} for g, c in keep[:k]]


def other_german_neurons(f1: np.ndarray, coef: np.ndarray, context: Neuron, k: int) -> list[Neuron]:
    """The `k` German-positive neurons (probe coefficient > 0) with the highest discovery F1,
    the context neuron excluded; ties: lower layer, then lower index.

    Args:
        f1, coef: float `[n_layers, d_mlp]`, discovery's arrays (`discovery_f1`, `discovery_coef`).
    """
    f1 = np.asarray(f1, dtype=np.float64)
    ok = np.asarray(coef) > 0
    ok[context.layer, context.index] = False
    flat = np.flatnonzero(ok.reshape(-1))
    order = flat[np.lexsort((flat, -f1.reshape(-1)[flat]))][:k]
    d_mlp = f1.shape[1]
    return [Neuron(int(i // d_mlp), int(i % d_mlp)) for i in order]


def measure_ngram_checkpoint(fwd, german_text: Sequence[Sequence[int]], trigrams: Sequence[Sequence[int]],
                             contexts: np.ndarray, context: Neuron, value: float, batch_tokens: int,
                             device: str = "cpu") -> tuple[dict, dict]:
    """The context neuron's effect split and the trigrams' four losses at one checkpoint.

    Args:
        fwd: the checkpoint's engine `Forward`.
        german_text: token ids (BOS first) of the German examples of the split
            (`ngram_examples`).
        trigrams: token ids of each trigram; contexts: int64 `[n_prompts, CONTEXT_LENGTH]`
            (`ngrams.context_prompts`).
        value: the ablation value m (the context neuron's mean English `hook_post`).
    Returns:
        (row, arrays): row `{"text": {"n_examples", "n_positions", **ngrams.effect_split}
        (nats), "trigrams": {"n", "n_prompts", "mean": {path: nats, mean over trigrams of
        each trigram's mean over prompts}, "per_trigram": {path: [n_trigrams] nats},
        "context_activation": [n_trigrams]}}`; arrays `ngram_text_example_losses` float64
        `[4, n_examples]`, `ngram_trigram_losses` float64 `[4, n_trigrams, n_prompts]`,
        `ngram_trigram_context_activation` float64 `[n_trigrams, n_prompts]` (paths in
        `ngrams.PATHS` order).
    """
    from ..core.engine import make_batches
    from .ngrams import PATHS, effect_split, measure_trigrams, per_example_means, text_path_losses

    batches = make_batches(german_text, batch_tokens, pad_id=1, device=device)
    losses, offsets = text_path_losses(fwd, batches, context, value, show_progress=False)
    per_ex = per_example_means(losses, offsets)
    row = {"text": {"n_examples": int(per_ex.shape[1]), "n_positions": int(losses.shape[1]),
                    **effect_split(per_ex)}}
    arrays = {"ngram_text_example_losses": per_ex}
    if trigrams:
        tl, act = measure_trigrams(fwd, trigrams, contexts, context, value, batch_tokens, device,
                                   show_progress=False)
        per = tl.mean(2)  # [4, n_trigrams]
        row["trigrams"] = {"n": len(trigrams), "n_prompts": int(contexts.shape[0]),
                           "mean": {k: float(per[i].mean()) for i, k in enumerate(PATHS)},
                           "per_trigram": {k: [float(v) for v in per[i]] for i, k in enumerate(PATHS)},
                           "context_activation": [float(v) for v in act.mean(1)]}
        arrays |= {"ngram_trigram_losses": tl, "ngram_trigram_context_activation": act}
    else:
        row["trigrams"] = None
    return row, arrays


def measure_other_neurons(fwd, toks: dict, f1: np.ndarray, coef: np.ndarray, context: Neuron, k: int,
                          profile, device: str = "cpu") -> dict:
    """Mean-ablate each of the checkpoint's `k` best other German neurons
    (`other_german_neurons`) on the German loss examples.

    Args:
        toks: `{"activation": {lang: token lists}, "loss": {lang: token lists}}` (the
            task's); the English activation examples' crop positions give each neuron's
            ablation value, the German loss examples the losses.
        f1, coef: discovery's arrays `[n_layers, d_mlp]`.
    Returns:
        `{"n_candidates_f1_0_85": German-positive neurons with F1 > 0.85 (the context
        neuron included), "neurons": [{"neuron", "f1", "value", "original", "ablated",
        "increase"}] (nats), "increase_median", "increase_max", "f1_median", "f1_max"}`
        (None when k is 0 or no neuron qualifies).
    """
    from ..core.engine import make_batches, per_example_losses, set_neurons
    from .activations import collect_mlp_activations

    f1 = np.asarray(f1, dtype=np.float64)
    n_cand = int(((f1 > F1_CANDIDATE) & (np.asarray(coef) > 0)).sum())
    neurons = other_german_neurons(f1, coef, context, k) if k > 0 else []
    empty = {"n_candidates_f1_0_85": n_cand, "neurons": [], "increase_median": None,
             "increase_max": None, "f1_median": None, "f1_max": None}
    if not neurons:
        return empty
    p = profile
    layers = sorted({n.layer for n in neurons})
    batches = make_batches(toks["activation"]["english"], p.batch_tokens, pad_id=1, device=device)
    samples, _, _ = collect_mlp_activations(fwd, batches, layers, neurons, (p.crop_start, p.crop_end),
                                            show_progress=False)
    values = [float(samples[:, i].mean()) for i in range(len(neurons))]
    variants = {str(n): {n.hook(): set_neurons([n.index], v)} for n, v in zip(neurons, values, strict=True)}
    losses = per_example_losses(fwd, make_batches(toks["loss"]["german"], p.batch_tokens, pad_id=1, device=device),
                                variants, show_progress=False)
    o = float(np.mean(losses["original"]))
    rows = []
    for n, v in zip(neurons, values, strict=True):
        a = float(np.mean(losses[str(n)]))
        rows.append({"neuron": str(n), "f1": float(f1[n.layer, n.index]), "value": v, "original": o,
                     "ablated": a, "increase": a - o})
    inc = np.array([r["increase"] for r in rows])
    f = np.array([r["f1"] for r in rows])
    return {**empty, "neurons": rows, "increase_median": float(np.median(inc)), "increase_max": float(inc.max()),
            "f1_median": float(np.median(f)), "f1_max": float(f.max())}


def trigram_ids(model, source: dict, german_pool, english_pool, k: int) -> tuple[list[list[int]], list[str]]:
    """(token ids, strings) of the trigrams a task measures: the paper's strings of
    `source` (`{"kind": "paper", "strings"}`) tokenized without BOS, as the `ngrams` step
    tokenizes them; else (`{"kind": "selected"}`) `text_trigrams` on the task's German
    and English token lists. `model`: a `core.models.LoadedModel` (its tokenizer only)."""
    from .ngrams import is_letter_token

    if source["kind"] == "paper":
        strings = list(source["strings"])
        ids = [list(model.tokenizer(s, add_special_tokens=False)["input_ids"]) for s in strings]
        return ids, strings
    d_vocab = int(model.info["d_vocab"])
    letter = np.array([is_letter_token(s) for s in model.to_str_tokens(range(d_vocab))])
    picked = text_trigrams(german_pool, english_pool, letter, k)
    ids = [r["ids"] for r in picked]
    return ids, ["".join(model.to_str_tokens(i)) for i in ids]


def frequent_token_dla(W_out, W_U, neuron: Neuron, tokens: dict[str, Sequence[int]]) -> dict:
    """The context neuron's direct logit attribution averaged over frequent tokens, per
    language: Quirke et al.'s figure 7 at one checkpoint (see the module docstring).

    DLA of token t = (W_out[layer, index] @ W_U)[t]: the logit the neuron writes to t per unit
    of its activation (`hook_post`), with the final LayerNorm's scale taken as 1 and no
    `b_U` (the authors' `model.W_out[layer, neuron] @ model.W_U`); computed in float64 by
    `l3_tokens.neuron_direction_logit_diff(W_out, W_U, neuron, 1, 0)`.

    Args:
        W_out: `[n_layers, d_mlp, d_model]` (the engine's, writing weights centred).
        W_U: `[d_model, d_vocab]` (the engine's: final LayerNorm weight folded in, centred).
        neuron: the context neuron.
        tokens: `{language: token ids}` (e.g. `{"german": [k], "english": [k]}`).
    Returns:
        `{language: {"mean": logits per unit activation, mean over the ids, "values": [n_ids]
        float64 numpy array of each id's DLA}}`, in `tokens`' order.
    Raises:
        ValueError: a language has no token id, or an id is outside `[0, d_vocab)`; the
            neuron is outside `W_out`.
    """
    from .l3_tokens import neuron_direction_logit_diff

    if not (0 <= neuron.layer < W_out.shape[0] and 0 <= neuron.index < W_out.shape[1]):
        raise ValueError(f"{neuron} is outside W_out of shape {tuple(W_out.shape)}")
    per_token = neuron_direction_logit_diff(W_out, W_U, neuron, 1.0, 0.0)  # float64 [d_vocab]
    out = {}
    for lang, ids in tokens.items():
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            raise ValueError(f"no {lang} token to average the direct logit attribution over")
        if ids.min() < 0 or ids.max() >= per_token.shape[0]:
            raise ValueError(f"a {lang} token id is outside the vocabulary [0, {per_token.shape[0]})")
        values = per_token[ids]
        out[lang] = {"mean": float(values.mean()), "values": values}
    return out
