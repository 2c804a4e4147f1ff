"""`pythia-70m-planted`: a known-answer control. `pythia-70m-random` (Pythia-70M's exact
shape, the same seed and tokenizer) with its LayerNorm weights and every bias drawn away
from 1 and 0 (`models._perturb_norms_and_biases`, as real Pythia has them: so LayerNorm
folding, bias handling and centring are exercised, not identities), and one MLP neuron
rewired, without training, to do the job the founding notebook attributes to L3N669: fire on German text and, when it
fires, raise the logits of tokens that are frequent in German. A report on it should
recover that neuron (discovery ranks it first, its probe separates German from English,
mean-ablating it raises the German loss and leaves English alone, its output direction
boosts German tokens); `analysis.controls.planted_check` checks each of those.

The plant, for neuron `LxNy` (`--plant`, default L3N669), in the Hugging Face weights:

* **Input** (row `y` of `gpt_neox.layers[x].mlp.dense_h_to_4h`, the neuron's `W_in` column).
  Pythia's blocks are parallel-residual, so the MLP of layer x reads
  `post_attention_layernorm(resid_pre_x)`. On the fitting passages (below) the plant
  collects that LayerNorm's normalised input x̂ = (r − mean r) / std r at every position
  from `FIT_CROP_START` on, and reads the direction that separates German from English:
  the class-mean difference μ_de − μ_en, whitened by the pooled within-class covariance
  shrunk towards the identity (Fisher's discriminant, `fisher_direction`). The plain
  mean difference was measured first: on the report's text it separates the two
  languages with F1 ≈ 0.80 at layers 2–3 of this random model (the current token's
  own features swamp the context signal), too close to the 0.8 target; the whitened
  direction gives ≈ 0.9 (see README, "The known-answer control"). The bias puts the
  threshold halfway between the two class means of the projection, and the scale makes
  the class means pre-activations of ±`CLASS_PRE_ACTIVATION` (the LayerNorm's affine
  weight and bias are divided out, so the neuron reads exactly `scale · (ŵ·x̂ − threshold)`).
* **Output** (column `y` of `gpt_neox.layers[x].mlp.dense_4h_to_h`, the neuron's `W_out`
  row). Token frequencies of the fitting passages give the `N_GERMAN_TOKENS` tokens most
  over-represented in German (largest p_de(t) − p_en(t) > 0, weight p_de − p_en). The
  direction is `W_U^T w` (the weighted sum of those tokens' unembedding vectors) divided
  by the final LayerNorm's weight and centred (the LayerNorm removes the mean), so that a
  small write along it changes the logits by a multiple of `W_U W_U^T w`. English-frequent
  tokens are not subtracted: in these corpora they include `,` `.` and newline, which are
  as frequent in German, and suppressing them made the German loss *worse* (measured).
  The scale makes the write at the neuron's mean German activation as long as the mean
  (centred) final residual stream of the unplanted model on German fitting tokens
  (`WRITE_TO_RESIDUAL` = 1): a clear effect, not a dominating one.

* **A contextual n-gram** (issue 19 §4), for a plant below the last layer: neuron
  `NGRAM_INDEX` of the last layer (`plant_ngram`) fires when the planted neuron is active
  AND the current token is t1, and then raises t2's logit, (t1, t2) chosen on the fitting
  passages (`ngram_bigram`). It is fitted on the model with the context neuron already
  planted, so the dependence of t2 on the context neuron runs through it: the indirect path
  the `ngrams` step must find (`planted_check.ngram_rows`).

Fitting passages: the first `FIT_PASSAGES` passages of the *training split* of the Europarl
files (`europarl/german_europarl.json`, `english_europarl.json`; `data.split_indices`),
each cut to its first `FIT_TOKENS` tokens. The report reads only the held-out split of these
files (the `europarl-heldout` corpus set, and the robustness step's second data set under
`seed`), so the fitting examples are disjoint from every example any profile reads. (The
seed's own files could not give that: `paper` reads 1,000 of KDE4's 1,007 English
examples, and `unigrams` and the paper `downstream` step read every example of both.)
Which passages (indices and their sha256, the file's sha256), the directions' summaries
and every scale are written to `plant.json` in the checkpoint folder (covered by the
weights fingerprint) and recorded in every artifact's model provenance (`info["plant"]`).

Deterministic on every machine, so that one committed baseline checks the control's
numbers everywhere: the random weights come from `models.random_model(shape, seed)` (torch's
CPU generator: the same bits on any machine); the fit runs the model in float64
(`collect_fit_states`) and every value written into the weights is snapped to a coarse
binary grid (`snap_to_grid`: 12 bits below the vector's largest entry, about 1e-4
relative), and every number in `plant.json` to 6 significant digits. A float32 fit landed
on other bits with another CPU or torch thread count (three fingerprints for one recipe
were measured), so a baseline recorded on one machine applied nowhere else; in float64 the
differences are ~1e-13 relative, about 1e9 times smaller than a grid step, so they
change a written value only if it lies that close to a grid midpoint (odds ~1e-6 for the
whole plant). `tests/test_planted.py` builds the plant with one and two threads and two
batch splits and compares the bytes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.config import Neuron
from ..core.models import (
    PYTHIA_70M_SHAPE,
    PYTHIA_REPO,
    PYTHIA_REVISION,
    LoadedModel,
    _hub_tokenizer,
    _materialise,
    _perturb_norms_and_biases,
    _tokenizer_hash,
    fast_tokenizer,
    generated_key,
    load_checkpoint,
    random_model,
)

PLANTED_MODEL = "pythia-70m-planted"  # the model's name (`--model`; `sources` registers it)
DEFAULT_PLANT = "L3N669"
PLANT_FILE = "plant.json"
PLANT_VERSION = 3         # 2: perturbed LayerNorms and biases; float64 fit; grid-snapped writes;
                          # 3: a contextual n-gram neuron in the last layer
GRID_BITS = 12            # written values: multiples of 2^(floor(log2 max|v|) - 12)
RECORD_DIGITS = 6         # significant digits of the floats in plant.json

FIT_DATASETS = {"german": "europarl_german", "english": "europarl_english"}
FIT_PASSAGES = 100        # per language: the first 100 passages of the training split
FIT_TOKENS = 128          # BOS + the first 127 tokens of each passage
FIT_CROP_START = 10       # positions used from here on (the report's crop start)
FIT_BATCH = 16            # passages per forward batch (memory, not results)
SHRINKAGE = 0.1           # covariance shrinkage towards (trace/d)·I, as a fraction
CLASS_PRE_ACTIVATION = 4.0  # pre-activation at the German (+) and English (−) class means
N_GERMAN_TOKENS = 200     # tokens whose logits the output direction raises
WRITE_TO_RESIDUAL = 1.0   # |write at the German mean activation| / mean |final residual|
NGRAM_INDEX = 1000        # the n-gram neuron: this index of the last layer (no seed list names it)
NGRAM_MIN_FOLLOW = 0.9    # the planted bigram (t1, t2): t2 follows t1 at least this often

CONSTANTS = {
    "version": PLANT_VERSION, "fit_datasets": FIT_DATASETS, "fit_passages": FIT_PASSAGES,
    "fit_tokens": FIT_TOKENS, "fit_crop_start": FIT_CROP_START, "shrinkage": SHRINKAGE,
    "class_pre_activation": CLASS_PRE_ACTIVATION, "n_german_tokens": N_GERMAN_TOKENS,
    "write_to_residual": WRITE_TO_RESIDUAL, "grid_bits": GRID_BITS, "record_digits": RECORD_DIGITS,
    "ngram_index": NGRAM_INDEX, "ngram_min_follow": NGRAM_MIN_FOLLOW,
    "base": "random_model + _perturb_norms_and_biases",
}


def default_plant() -> Neuron:
    """The neuron planted when `--plant` is not given: L3N669, the seed's context neuron."""
    return Neuron.parse(DEFAULT_PLANT)


# ------------------------------------------------------------------ fitting passages


@dataclass(frozen=True)
class FitSet:
    """The fitting passages: `texts[language]` (in index order) and their `record`
    (per language: dataset, file, file sha256, split part, indices, indices sha256,
    sha256 of the passages' text)."""

    texts: Mapping[str, tuple[str, ...]]
    record: dict


def fitting_set(data_dir: str | None) -> FitSet:
    """The first `FIT_PASSAGES` passages of the training split of each Europarl file
    (`FIT_DATASETS`), read and checksum-verified through `data.load_corpus`.

    Raises:
        DataError: a file is missing, corrupt, or cannot be downloaded (offline).
    """
    from ..core.data import HELDOUT_PER_LANGUAGE, indices_record, load_corpus, split_indices

    texts, record = {}, {}
    for lang, name in FIT_DATASETS.items():
        corpus = load_corpus(name, data_dir)
        train, _ = split_indices(len(corpus.examples), HELDOUT_PER_LANGUAGE)
        idx = train[:FIT_PASSAGES]
        texts[lang] = tuple(corpus.examples[i] for i in idx)
        record[lang] = {
            "dataset": name, "file": corpus.file, "sha256": corpus.sha256,
            "n_passages_in_file": len(corpus.examples),
            "part": "the first passages of the training split (data.split_indices), never in "
                    "the europarl-heldout corpus",
            **indices_record(idx),
            "texts_sha256": hashlib.sha256("\x00".join(texts[lang]).encode()).hexdigest(),
        }
    record["disjoint_from_report"] = (
        "the report reads the Europarl files only as the europarl-heldout corpus (held-out "
        "split); under the seed and fixture corpora it never reads them")
    return FitSet(texts, record)


def fit_token_lists(tokenizer, texts: Sequence[str], n_tokens: int = FIT_TOKENS) -> list[list[int]]:
    """`[BOS] + encode(text)` cut to `n_tokens` ids per passage (BOS id 0, as the report's
    `LoadedModel.to_tokens`)."""
    bos = tokenizer.bos_token_id or 0
    return [([bos] + list(tokenizer(t, add_special_tokens=False)["input_ids"]))[:n_tokens]
            for t in texts]


# ------------------------------------------------------------------ pure functions


def layer_norm_normalise(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm without its affine part, in float64: `(x − mean) / sqrt(var + eps)` over
    the last axis (eps of Pythia's LayerNorms, 1e-5). `[..., d] -> [..., d]`."""
    x = x.double()
    x = x - x.mean(-1, keepdim=True)
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + PYTHIA_70M_SHAPE["layer_norm_eps"])


class _Stop(Exception):
    """Raised by a capture hook to end a forward pass early."""


def _forward_padded(model, token_lists: Sequence[Sequence[int]], batch: int, crop_start: int):
    """Forward `token_lists` through `model.gpt_neox`, `batch` lists at a time, each batch
    right-padded with id 1 to its longest list (a capture hook may end a pass early with
    `_Stop`); after each pass, yield `(row, tokens)` for every list of the batch with a
    position at or after `crop_start`, while the hooks' captures hold that batch."""
    for s in range(0, len(token_lists), batch):
        chunk = [list(t) for t in token_lists[s:s + batch]]
        n = max(len(t) for t in chunk)
        ids = torch.tensor([t + [1] * (n - len(t)) for t in chunk], dtype=torch.long)
        try:
            model.gpt_neox(input_ids=ids)
        except _Stop:
            pass
        for row, t in enumerate(chunk):
            if len(t) > crop_start:
                yield row, t


def collect_fit_states(model, layer: int, token_lists: Sequence[Sequence[int]], *,
                       final: bool, crop_start: int = FIT_CROP_START,
                       batch: int = FIT_BATCH) -> tuple[np.ndarray, np.ndarray | None]:
    """Run the (unplanted) Hugging Face GPT-NeoX on `token_lists` and collect, at every
    position from `crop_start` on (passage order, then position order):

    * `X`: float64 `[n, d_model]`, the LayerNorm-normalised input of
      `layers[layer].post_attention_layernorm` (parallel residual: the block's input
      resid_pre), i.e. what layer `layer`'s MLP reads before the LayerNorm's affine part;
    * `F` (when `final`): float64 `[n, d_model]`, the final residual stream (the input of
      `final_layer_norm`), centred over d_model. Without `final` the pass stops after
      capturing `X` and `F` is None.

    Passages are right-padded (pad id 1) in batches of `batch`; under the causal mask a
    real position never attends to padding. Pass a float64 model (`planted_checkpoint`
    does) for results that do not depend on the batch split or the thread count beyond
    ~1e-13 relative.
    """
    blocks = model.gpt_neox.layers
    cap: dict[str, torch.Tensor] = {}

    def grab_x(_mod, args):
        cap["x"] = args[0].detach()
        if not final:
            raise _Stop

    def grab_f(_mod, args):
        cap["f"] = args[0].detach()

    hooks = [blocks[layer].post_attention_layernorm.register_forward_pre_hook(grab_x)]
    if final:
        hooks.append(model.gpt_neox.final_layer_norm.register_forward_pre_hook(grab_f))
    xs, fs = [], []
    try:
        with torch.inference_mode():
            for row, t in _forward_padded(model, token_lists, batch, crop_start):
                xs.append(layer_norm_normalise(cap["x"][row, crop_start:len(t)]))
                if final:
                    f = cap["f"][row, crop_start:len(t)].double()
                    fs.append(f - f.mean(-1, keepdim=True))
    finally:
        for h in hooks:
            h.remove()
    X = torch.cat(xs).numpy()
    return X, (torch.cat(fs).numpy() if final else None)


def fisher_direction(german: np.ndarray, english: np.ndarray, shrinkage: float = SHRINKAGE) -> np.ndarray:
    """The unit direction that best separates two classes of `[n, d]` float64 vectors
    (Fisher's linear discriminant): `(S + shrinkage · tr(S)/d · I)^-1 (μ_de − μ_en)`, with S
    the mean of the two class covariances; `shrinkage` → ∞ gives the plain mean
    difference. Returns float64 `[d]`, unit norm, oriented so that German projects higher.

    Raises:
        ValueError: fewer than two vectors in a class, or the class means coincide.
    """
    if min(len(german), len(english)) < 2:
        raise ValueError("each class needs at least two vectors")
    diff = german.mean(0) - english.mean(0)
    if not np.any(diff):
        raise ValueError("the two classes have the same mean: no direction separates them")
    S = 0.5 * (np.cov(german, rowvar=False) + np.cov(english, rowvar=False))
    d = S.shape[0]
    w = np.linalg.solve(S + shrinkage * np.trace(S) / d * np.eye(d), diff)
    w /= np.linalg.norm(w)
    return w if w @ diff > 0 else -w


def german_token_weights(german: Sequence[Sequence[int]], english: Sequence[Sequence[int]],
                         d_vocab: int, k: int = N_GERMAN_TOKENS) -> tuple[np.ndarray, dict]:
    """Weights of the tokens more frequent in German than in English: p_de(t) − p_en(t)
    (occurrence rates over the token lists, BOS — the first id of each list — excluded)
    for the `k` tokens where it is largest and positive (ties: lower id), 0 elsewhere.

    Returns (float64 `[d_vocab]` weights, record {"ids", "p_german", "p_english"} of the
    chosen tokens in weight order).
    """
    def rates(lists):
        flat = np.concatenate([np.asarray(t[1:], dtype=np.int64) for t in lists if len(t) > 1])
        return np.bincount(flat, minlength=d_vocab)[:d_vocab] / max(len(flat), 1)

    p_de, p_en = rates(german), rates(english)
    diff = p_de - p_en
    order = np.lexsort((np.arange(d_vocab), -diff))
    ids = [int(i) for i in order[:k] if diff[i] > 0]
    w = np.zeros(d_vocab)
    w[ids] = diff[ids]
    return w, {"ids": ids, "p_german": [float(p_de[i]) for i in ids],
               "p_english": [float(p_en[i]) for i in ids]}


def snap_to_grid(x: np.ndarray, bits: int = GRID_BITS) -> np.ndarray:
    """`x` (float64, any shape, not all zero) rounded to the nearest multiple of
    `2^(floor(log2 max|x|) - bits)`: at most `bits + 1` significant bits per entry, so every
    entry is exact in float32, and a difference far below the step (reduction order,
    thread count, CPU) leaves the result unchanged. Returns float64 of `x`'s shape.

    Raises:
        ValueError: every entry is zero or one is not finite.
    """
    x = np.asarray(x, dtype=np.float64)
    step = grid_step(x, bits)
    return np.round(x / step) * step


def grid_step(x: np.ndarray, bits: int = GRID_BITS) -> float:
    """The grid spacing `snap_to_grid` uses for `x`: `2^(floor(log2 max|x|) - bits)`.

    Raises:
        ValueError: every entry is zero or one is not finite.
    """
    top = float(np.max(np.abs(x))) if np.size(x) else 0.0
    if not np.isfinite(top) or top == 0.0:
        raise ValueError("cannot snap an all-zero or non-finite vector to a grid")
    return float(2.0 ** (np.floor(np.log2(top)) - bits))


def rounded(obj, digits: int = RECORD_DIGITS):
    """`obj` (nested dicts/lists) with every float rounded to `digits` significant digits,
    so the plant record's bytes, like the weights', are the same on every machine."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj


def gelu(x: np.ndarray) -> np.ndarray:
    """The exact (erf) GELU of GPT-NeoX's `hidden_act="gelu"`, float64."""
    return torch.nn.functional.gelu(torch.as_tensor(x, dtype=torch.float64)).numpy()


def plant_neuron(model, neuron: Neuron, X_de: np.ndarray, X_en: np.ndarray, F_de: np.ndarray,
                 token_weights: np.ndarray) -> dict:
    """Rewire `neuron` of a Hugging Face GPT-NeoX in place (see the module docstring) and
    return what was done (the record's `input` and `output` parts). The input side plants
    the seed's claim "L3N669 fires on German" (cell "Check classification accuracy of German
    neurons"), the output side "it boosts German tokens" (cells "Tokens boosted by L3
    directly", "Get German unigram statistics").

    Args:
        X_de, X_en: float64 `[n, d_model]` normalised MLP inputs of layer `neuron.layer` on
            German / English fitting tokens (`collect_fit_states`).
        F_de: float64 `[n, d_model]` centred final residual on German fitting tokens.
        token_weights: float64 `[d_vocab]` (`german_token_weights`).

    Raises:
        ValueError: a LayerNorm weight is (near) zero, so the affine part cannot be divided out.
    """
    layer = model.gpt_neox.layers[neuron.layer]
    ln2, lnf = layer.post_attention_layernorm, model.gpt_neox.final_layer_norm
    g2, b2 = ln2.weight.detach().double().numpy(), ln2.bias.detach().double().numpy()
    gf = lnf.weight.detach().double().numpy()
    if np.min(np.abs(g2)) < 1e-6 or np.min(np.abs(gf)) < 1e-6:
        raise ValueError("a LayerNorm weight is zero: the plant cannot divide it out")

    # input: Fisher direction, threshold halfway between the class means of the projection
    w = fisher_direction(X_de, X_en)
    p_de, p_en = X_de @ w, X_en @ w
    threshold = 0.5 * (p_de.mean() + p_en.mean())
    half_gap = 0.5 * (p_de.mean() - p_en.mean())
    scale_in = CLASS_PRE_ACTIVATION / half_gap
    w_in = scale_in * w / g2                       # reads scale_in · ŵ·x̂ through ln2's affine part
    b_in = -scale_in * threshold - w_in @ b2
    pre_de, pre_en = scale_in * (p_de - threshold), scale_in * (p_en - threshold)
    act_de, act_en = gelu(pre_de).mean(), gelu(pre_en).mean()

    # output: weighted unembedding of the German-frequent tokens, through ln_f's weight
    W_U = model.get_output_embeddings().weight.detach().double().numpy()  # [d_vocab, d_model]
    u = (W_U.T @ token_weights) / gf
    u -= u.mean()
    v = u / np.linalg.norm(u)
    resid_norm = float(np.linalg.norm(F_de, axis=-1).mean())
    scale_out = WRITE_TO_RESIDUAL * resid_norm / act_de

    # Snapped, so the checkpoint's bytes do not depend on the machine that fitted it.
    w_in = snap_to_grid(w_in)
    b_in = float(snap_to_grid(np.array([b_in]))[0])
    w_out = snap_to_grid(scale_out * v)
    with torch.no_grad():
        layer.mlp.dense_h_to_4h.weight[neuron.index] = torch.as_tensor(w_in, dtype=torch.float32)
        layer.mlp.dense_h_to_4h.bias[neuron.index] = b_in
        layer.mlp.dense_4h_to_h.weight[:, neuron.index] = torch.as_tensor(w_out, dtype=torch.float32)

    def sep(a, b):
        return float((a.mean() - b.mean()) / np.sqrt(0.5 * (a.var() + b.var())))

    mean_diff = X_de.mean(0) - X_en.mean(0)
    return {
        "input": {
            "reads": f"gpt_neox.layers[{neuron.layer}].post_attention_layernorm(resid_pre) "
                     "(parallel residual), affine part divided out",
            "direction": "Fisher discriminant of German vs English normalised MLP inputs: "
                         "(S + shrinkage·tr(S)/d·I)^-1 (mean_de − mean_en)",
            "shrinkage": SHRINKAGE,
            "cosine_with_mean_difference": float(w @ mean_diff / np.linalg.norm(mean_diff)),
            "projection_mean": {"german": float(p_de.mean()), "english": float(p_en.mean())},
            "projection_separation_d": sep(p_de, p_en),
            "threshold_projection": float(threshold),
            "scale": float(scale_in),
            "class_pre_activation": CLASS_PRE_ACTIVATION,
            "w_in_norm": float(np.linalg.norm(w_in)),
            "grid": f"w_in, bias and W_out snapped to 2^(floor(log2 max|v|) - {GRID_BITS})",
            "bias": float(b_in),
            "fit_accuracy": float(0.5 * ((pre_de > 0).mean() + (pre_en <= 0).mean())),
            "mean_activation": {"german": float(act_de), "english": float(act_en)},
        },
        "output": {
            "writes": f"gpt_neox.layers[{neuron.layer}].mlp.dense_4h_to_h[:, {neuron.index}]",
            "direction": "W_U^T w / ln_f.weight, centred, unit norm; w = p_de − p_en on the "
                         f"{int((token_weights > 0).sum())} tokens most over-represented in German",
            "scale": float(scale_out),
            "write_norm_at_german_mean_activation": float(scale_out * act_de),
            "final_residual_norm_german": resid_norm,
            "write_to_residual": WRITE_TO_RESIDUAL,
        },
    }


# ------------------------------------------------------------------ the contextual n-gram


def _has_letter(text: str) -> bool:
    # The report's trigram filter (`families.ngrams.is_letter_token`), repeated here so that
    # the generator's code, which keys the checkpoint, does not take in the analyses.
    return re.search(r"[a-zA-Z]", text) is not None


def ngram_bigram(german: Sequence[Sequence[int]], english: Sequence[Sequence[int]], to_str: Callable,
                 min_follow: float = NGRAM_MIN_FOLLOW) -> dict:
    """The planted n-gram's tokens, chosen on the fitting passages alone (BOS, each list's
    first id, excluded): among the bigrams (t1, t2) of tokens that both hold an ASCII letter,
    where t1 never occurs in the English passages (a German-only current token) and t2
    follows at least `min_follow` of t1's occurrences (so that raising t2 after t1 costs
    little elsewhere), the most frequent (ties: lower ids). t0 is the token most often
    before the pair (ties: lower id); the plant ignores it, the report measures (t0, t1, t2).

    Returns:
        `{"ids": [t0, t1, t2], "tokens": [...], "count"` (of t1 t2), `"follow"` (count /
        occurrences of t1), `"t0_count"}`.
    Raises:
        ValueError: no bigram qualifies.
    """
    from collections import Counter

    uni, bi, tri = Counter(), Counter(), Counter()
    for t in german:
        t = [int(i) for i in t[1:]]
        uni.update(t)
        bi.update(zip(t[:-1], t[1:], strict=True))
        tri.update(zip(t[:-2], t[1:-1], t[2:], strict=True))
    in_english = {int(i) for t in english for i in t[1:]}
    ids = sorted({i for pair in bi for i in pair})
    letter = dict(zip(ids, (_has_letter(s) for s in to_str(ids)), strict=True))
    ok = [(c, a, b) for (a, b), c in bi.items()
          if letter[a] and letter[b] and a not in in_english and c >= min_follow * uni[a]]
    if not ok:
        raise ValueError("no German bigram qualifies for the planted n-gram")
    count, t1, t2 = min(ok, key=lambda x: (-x[0], x[1], x[2]))
    before = [(c, t0) for (t0, a, b), c in tri.items() if (a, b) == (t1, t2)]
    t0_count, t0 = min(before, key=lambda x: (-x[0], x[1])) if before else (0, None)
    return {"ids": [t0, t1, t2], "tokens": [None if t0 is None else to_str([t0])[0], *to_str([t1, t2])],
            "count": int(count), "follow": count / uni[t1], "t0_count": int(t0_count)}


def collect_ngram_states(model, context: Neuron, layer: int, token_lists: Sequence[Sequence[int]], *,
                         crop_start: int = FIT_CROP_START, batch: int = FIT_BATCH
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the (context-planted) Hugging Face GPT-NeoX on `token_lists` and collect, at every
    position from `crop_start` on (passage order, then position order): float64 `R [n,
    d_model]`, the residual stream entering `layers[layer]`'s MLP LayerNorm (unnormalised);
    float64 `A [n]`, the context neuron's activation (its MLP's GELU output); int64 `T [n]`,
    the current token. The pass stops there (no unembedding). Pass a float64 model, as
    `collect_fit_states`."""
    blocks = model.gpt_neox.layers
    cap: dict[str, torch.Tensor] = {}

    def grab_r(_mod, args):
        cap["r"] = args[0].detach()
        raise _Stop

    def grab_a(_mod, _args, out):
        cap["a"] = out[..., context.index].detach()

    hooks = [blocks[layer].post_attention_layernorm.register_forward_pre_hook(grab_r),
             blocks[context.layer].mlp.act.register_forward_hook(grab_a)]
    rs, acts, toks = [], [], []
    try:
        with torch.inference_mode():
            for row, t in _forward_padded(model, token_lists, batch, crop_start):
                rs.append(cap["r"][row, crop_start:len(t)].double())
                acts.append(cap["a"][row, crop_start:len(t)].double())
                toks.extend(t[crop_start:])
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(rs).numpy(), torch.cat(acts).numpy(), np.asarray(toks, dtype=np.int64)


def plant_ngram(model, context: Neuron, neuron: Neuron, bigram: Mapping, R: np.ndarray, A: np.ndarray,
                T: np.ndarray, inactive: float, resid_norm: float) -> dict:
    """Rewire `neuron` (a later layer than `context`) of a Hugging Face GPT-NeoX in place into
    a contextual n-gram neuron: it fires when the context neuron is active AND the current
    token is t1, and then raises t2's logit (`bigram`'s ids). Returns its record.

    Input, on the normalised MLP input x̂ of its layer (German fitting positions, `R`): two
    features, each scaled to 0 at "absent" and 1 at "present": z_c, the projection on the
    context neuron's own output direction (centred, unit), 0 at its mean with the context
    removed (each position's residual stream minus the context neuron's write
    `(A − inactive)·W_out`, the later layers' reaction ignored) and 1 at its mean on German;
    z_t, the projection on the Fisher direction that separates t1 positions from the other
    German positions (`fisher_direction`), 0 at the others' mean and 1 at t1's. The neuron
    reads `K·(z_c + z_t − θ)`: θ halfway between the mean of z_c + z_t at t1 positions
    (both present) and the larger of its means at t1 positions with the context removed and
    at other positions (one feature only); K puts the both-present mean at
    `CLASS_PRE_ACTIVATION`. The threshold makes it an AND: one feature alone stays below it.
    (Removing the context rescales x̂ by the LayerNorm, which inflates z_t at t1 positions:
    the threshold is placed with that measured, not assumed.)

    Output: `gf ⊙ W_U[t2]` (the direction that raises t2's logit most per unit norm through
    the final LayerNorm, weight gf), centred, scaled so that the write at the neuron's mean
    activation at t1 positions is `WRITE_TO_RESIDUAL` × the mean final residual norm on
    German (`resid_norm`), as the context neuron's write.

    Raises:
        ValueError: fewer than two t1 positions, or a LayerNorm weight is (near) zero.
    """
    t1, t2 = int(bigram["ids"][1]), int(bigram["ids"][2])
    layer = model.gpt_neox.layers[neuron.layer]
    ln2, lnf = layer.post_attention_layernorm, model.gpt_neox.final_layer_norm
    g2, b2 = ln2.weight.detach().double().numpy(), ln2.bias.detach().double().numpy()
    gf = lnf.weight.detach().double().numpy()
    if np.min(np.abs(g2)) < 1e-6:
        raise ValueError("a LayerNorm weight is zero: the plant cannot divide it out")
    is1 = T == t1
    if is1.sum() < 2:
        raise ValueError(f"token {t1} occurs fewer than twice in the fitting passages")
    v = model.gpt_neox.layers[context.layer].mlp.dense_4h_to_h.weight[:, context.index].detach().double().numpy()
    X = layer_norm_normalise(torch.as_tensor(R)).numpy()
    X0 = layer_norm_normalise(torch.as_tensor(R + (inactive - A)[:, None] * v[None])).numpy()
    c = v - v.mean()
    c /= np.linalg.norm(c)
    w = fisher_direction(X[is1], X[~is1])
    zc0, zc1 = float((X0 @ c).mean()), float((X @ c).mean())
    zt0, zt1 = float((X[~is1] @ w).mean()), float((X[is1] @ w).mean())

    def z(Y):
        return (Y @ c - zc0) / (zc1 - zc0), (Y @ w - zt0) / (zt1 - zt0)

    classes = {"t1_with_context": (X, is1), "t1_context_removed": (X0, is1),
               "other_with_context": (X, ~is1), "other_context_removed": (X0, ~is1)}
    means = {k: [float(a.mean()) for a in z(Y[m])] for k, (Y, m) in classes.items()}
    both = sum(means["t1_with_context"])
    one = max(sum(means["t1_context_removed"]), sum(means["other_with_context"]))
    theta = 0.5 * (both + one)
    K = CLASS_PRE_ACTIVATION / (both - theta)
    w_x = K * (c / (zc1 - zc0) + w / (zt1 - zt0))       # pre = w_x · x̂ + b_x
    b_x = -K * (zc0 / (zc1 - zc0) + zt0 / (zt1 - zt0) + theta)
    w_in = w_x / g2                                    # through ln2's affine part
    b_in = b_x - w_in @ b2
    pre = {k: K * (sum(z(Y[m])) - theta) for k, (Y, m) in classes.items()}
    act = float(gelu(pre["t1_with_context"]).mean())

    W_U = model.get_output_embeddings().weight.detach().double().numpy()
    u = gf * W_U[t2]
    u -= u.mean()
    u /= np.linalg.norm(u)
    scale_out = WRITE_TO_RESIDUAL * resid_norm / act

    w_in = snap_to_grid(w_in)
    b_in = float(snap_to_grid(np.array([b_in]))[0])
    w_out = snap_to_grid(scale_out * u)
    with torch.no_grad():
        layer.mlp.dense_h_to_4h.weight[neuron.index] = torch.as_tensor(w_in, dtype=torch.float32)
        layer.mlp.dense_h_to_4h.bias[neuron.index] = b_in
        layer.mlp.dense_4h_to_h.weight[:, neuron.index] = torch.as_tensor(w_out, dtype=torch.float32)
    return {
        "neuron": str(neuron), "layer": neuron.layer, "index": neuron.index, "context": str(context),
        "job": "fire when the context neuron is active AND the current token is t1; then raise t2's logit",
        "trigram": dict(bigram),
        "input": {
            "reads": f"gpt_neox.layers[{neuron.layer}].post_attention_layernorm(resid_pre), affine "
                     "part divided out: K·(z_c + z_t − θ)",
            "z_c": f"projection on {context}'s output column (centred, unit); 0 at its mean on German "
                   "with that neuron's write removed (later layers' reaction ignored), 1 at its mean on German",
            "z_t": "projection on the Fisher direction of t1 vs the other German positions; 0 at the "
                   "others' mean, 1 at t1's",
            "shrinkage": SHRINKAGE, "n_positions": int(len(T)), "n_t1_positions": int(is1.sum()),
            "class_means_zc_zt": means, "threshold": float(theta), "scale": float(K),
            "fire_rate": {k: float((p > 0).mean()) for k, p in pre.items()},
            "mean_activation": {k: float(gelu(p).mean()) for k, p in pre.items()},
            "bias": b_in, "w_in_norm": float(np.linalg.norm(w_in)),
        },
        "output": {
            "writes": f"gpt_neox.layers[{neuron.layer}].mlp.dense_4h_to_h[:, {neuron.index}]",
            "direction": "final LayerNorm weight ⊙ W_U[t2], centred, unit norm",
            "scale": float(scale_out), "write_norm_at_mean_activation": float(scale_out * act),
            "write_to_residual": WRITE_TO_RESIDUAL,
        },
    }


# ------------------------------------------------------------------ the checkpoint


def base_model(seed: int = 0):
    """The unplanted base, float32: `random_model(PYTHIA_70M_SHAPE, seed)` with its
    LayerNorm weights and biases perturbed (`_perturb_norms_and_biases`)."""
    model = random_model(PYTHIA_70M_SHAPE, seed)
    _perturb_norms_and_biases(model, seed)
    return model


def plant(model, tokenizer, fit: FitSet, neuron: Neuron, batch: int | None = None) -> dict:
    """Fit and plant `neuron` in `model` (a float32 Hugging Face GPT-NeoX, edited in place):
    `collect_fit_states` on a float64 copy, `german_token_weights`, `plant_neuron`. Returns
    the plant record (floats `rounded`); `batch` changes no byte of either (the test of the
    control's cross-machine determinism varies it and the thread count; None: `FIT_BATCH`)."""
    batch = batch or FIT_BATCH
    fit_model = copy.deepcopy(model).double()
    lists = {lang: fit_token_lists(tokenizer, fit.texts[lang]) for lang in FIT_DATASETS}
    X_de, F_de = collect_fit_states(fit_model, neuron.layer, lists["german"], final=True, batch=batch)
    X_en, _ = collect_fit_states(fit_model, neuron.layer, lists["english"], final=False, batch=batch)
    del fit_model
    weights, tokens = german_token_weights(lists["german"], lists["english"], model.config.vocab_size)
    record = {
        "neuron": str(neuron), "layer": neuron.layer, "index": neuron.index,
        "job": "fire on German text; when firing, raise the logits of tokens more "
               "frequent in German than in English",
        "constants": CONSTANTS,
        "fit": {**fit.record, "n_positions": {"german": int(len(X_de)), "english": int(len(X_en))}},
        **plant_neuron(model, neuron, X_de, X_en, F_de, weights),
        "german_tokens": {**tokens, "decoded_first_20": [tokenizer.decode([i]) for i in tokens["ids"][:20]]},
    }
    last = model.config.num_hidden_layers - 1
    record["ngram"] = None  # a plant in the last layer has no later layer to read it
    if neuron.layer < last:
        # fitted on the model with the context neuron planted: it reads that neuron's write
        fit_model = copy.deepcopy(model).double()
        R, A, T = collect_ngram_states(fit_model, neuron, last, lists["german"], batch=batch)
        del fit_model
        bigram = ngram_bigram(lists["german"], lists["english"],
                              lambda ids: [tokenizer.decode([i]) for i in ids])
        record["ngram"] = plant_ngram(model, neuron, Neuron(last, NGRAM_INDEX), bigram, R, A, T,
                                      record["input"]["mean_activation"]["english"],
                                      record["output"]["final_residual_norm_german"])
    return rounded(record)


def planted_checkpoint(tokenizer: str | None, data_dir: str | None, neuron: Neuron | None = None,
                       seed: int = 0, log=None) -> Path:
    """The `pythia-70m-planted` checkpoint folder for `neuron` (default L3N669), built once
    and cached like `pythia-70m-random` (`models._materialise`; the key,
    `models.generated_key`, covers the shape, seed, tokenizer, plant, fitting passages,
    constants and the generator code, this module included).

    Building: `random_model(PYTHIA_70M_SHAPE, seed)` — the same draw as `pythia-70m-random`
    — with `_perturb_norms_and_biases`, then `collect_fit_states` on a float64 copy, then
    `plant_neuron` (grid-snapped writes); `plant.json` (see `plant_info`, floats rounded)
    is written beside config.json. About a minute on two loaded CPU cores.

    Raises:
        UsageError: the tokenizer file does not exist; `neuron` is outside Pythia-70M's shape.
        ModelUnavailableError: no tokenizer given and the Hub cannot be reached.
        DataError: the Europarl files are missing or corrupt (offline without `data_dir`).
    """
    neuron = neuron if neuron is not None else default_plant()
    neuron.check(PYTHIA_70M_SHAPE["num_hidden_layers"], PYTHIA_70M_SHAPE["intermediate_size"])
    log = log or (lambda s: print(s, file=sys.stderr))
    tok = fast_tokenizer(tokenizer) if tokenizer else _hub_tokenizer()
    fit = fitting_set(data_dir)
    tok_hash = _tokenizer_hash(tok)
    extra = json.dumps({"plant": str(neuron), "fit": fit.record, "constants": CONSTANTS},
                       sort_keys=True)

    def build():
        log(f"Planting {neuron} in pythia-70m-random (seed {seed}, LayerNorms and biases "
            f"perturbed): fitting on {FIT_PASSAGES} + {FIT_PASSAGES} Europarl passages ...")
        model = base_model(seed)
        record = plant(model, tok, fit, neuron)
        record["base"] = {"model": "pythia-70m-random", "weights_seed": seed, "tokenizer_sha256": tok_hash,
                          "perturbed": "LayerNorm weights 1 + 0.1·N(0,1), LayerNorm and Linear "
                                       f"biases 0.02·N(0,1) (generator seed {seed + 1})"}
        return model, tok, {PLANT_FILE: json.dumps(record, indent=1, sort_keys=True) + "\n"}

    key = generated_key(PYTHIA_70M_SHAPE, seed, tok_hash, extra)
    return _materialise(f"pythia-70m-planted-{neuron}", build, key)


def load_planted(tokenizer: str | None, device: str = "cpu", seed: int = 0, *, plant: Neuron | None = None,
                 data_dir: str | None = None, **_) -> LoadedModel:
    """`load_model("pythia-70m-planted", ...)` (registered by `analysis.controls.sources`):
    the checkpoint of `planted_checkpoint` for `plant` (default L3N669), with its plant
    record (`plant.json`) in `info["plant"]`, so in every artifact's provenance.

    Raises:
        see `planted_checkpoint` and `core.models.load_checkpoint`.
    """
    neuron = plant if plant is not None else default_plant()
    path = planted_checkpoint(tokenizer, data_dir, neuron, seed)
    return load_checkpoint(path, None, device, model_id=PLANTED_MODEL,
                           source=f"random GPT-NeoX in Pythia-70M's shape (seed {seed}) with "
                                  f"{neuron} planted to detect German",
                           extra_info={"weights_seed": seed,
                                       "tokenizer": tokenizer or f"{PYTHIA_REPO}@{PYTHIA_REVISION}",
                                       "plant": plant_info(path)})


def plant_info(path: str | Path) -> dict | None:
    """The plant record of a checkpoint folder (`plant.json`), or None for any other
    folder: neuron, fitting passages (per language: dataset, file sha256, indices and their
    sha256), the input and output directions' summaries and scales, constants."""
    f = Path(path) / PLANT_FILE
    if not f.is_file():
        return None
    return json.loads(f.read_text(encoding="utf-8"))
