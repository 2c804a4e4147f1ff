"""Is the finding robust? Null distributions for the context neuron's ablation effects, a
family-wise threshold for discovery's probe F1, and a specification curve over analysis
choices (issue 21 §1, §2, §4; not a seed cell: the seed reports one analysis and no null).

**Null (§2).** Each ablation effect of the context neuron (German and English loss change,
nats) is set beside the same mean ablation (`hook_post` set to its English mean, the
`ablation` step's definition) of `null_neurons_per_layer` random neurons per layer (drawn
with `numpy.random.default_rng([seed, NULL_SALT])`, recorded) and of discovery's other
German-positive neurons (its top `null_german_neurons`). All variants ride one unedited pass
over the first `null_loss_examples` loss examples cut to `null_loss_tokens` tokens
(`single_neuron_losses`: each variant restarts after its own layer from that pass); the
context neuron's effect is measured again in that same pass, so the percentile compares like
with like (its effect on the `ablation` step's full texts is that step's number). The quick
profile draws 2 random neurons per layer and 4 German-positive ones (paper: 10 and 20): the
null's losses are full unembeddings, one per variant, and these sizes keep that part near
13 s of one CPU thread on Pythia-70M's shape. Percentile: the share of null neurons whose effect is below the context
neuron's, ties counted half (a mid-rank percentile, in %).

**Family-wise threshold (§2).** Discovery ranks every neuron by probe F1 and reports the
best; under the null that no neuron tells German from English, how high would the best F1
of all of them be? We permute the language labels of whole *sequences* (the exchangeable
unit: tokens of one text share its language, so a per-token label permutation would make
the null far too easy to beat) and, per permutation, take the maximum F1 over all neurons
of the sequence-mean probe (`discovery.probe_all` on per-sequence mean activations, the
split and seed of the real fit). The sequence means (and every neuron's token mean, the
null's ablation values) are read from the `activations` artifact, whose pass computes them.
Each top neuron's permutation p-value is `(1 + #{max ≥ its F1}) / (1 + n_permutations)`
(Westfall–Young max-statistic) and it passes at 5% when p ≤ 0.05; the threshold reported is
the null maximum that says the same (`fwer_threshold`: for 19 permutations the largest),
not an interpolated 95th percentile, which would pass an F1 with p = 0.10. What the null
denies is that the neuron separates the two sets of *texts*: the seed's German (WMT news)
and English (KDE4 software strings) differ in domain as well as language, so passing it
says "tells these texts apart", which the specification curve's Europarl data (one domain)
then narrows to language. The per-token probe gets the same (below).

**Specification curve (§1).** The finding's three numbers (probe F1, German and English
loss change) and the context neuron's discovery rank under every combination of ablation
type (`ABLATIONS`), probe aggregation (`AGGREGATIONS`) and data (`DATA`): the run's corpus
and, where the run reads one of the two real corpora, the other one (`OTHER_DATA`: the
seed's WMT German / KDE4 English and the paper's Europarl de/en), so N = 5 × 2 × 2 = 20 on
a real model and 10 on the hermetic fixture corpus (which has no second corpus without
`--data-dir`; the result's `data_note` says so). On the second corpus everything is
measured on that corpus alone, exactly as on the run's: its first `activation_examples`
passages per language give every neuron's per-token samples (the first `probe_samples`),
sequence means and token means (the ablation values and the resample pool), in one pass
(`corpus_activations`); every neuron is probed on them under both aggregations
(`discovery.probe_all`, the split and seed of discovery; per token its rank by `discovery.rank`
on the vectorised fit, without discovery's sklearn refit of its top rows); the losses are
those of its first `null_loss_examples` passages cut to `null_loss_tokens` tokens. The
criterion (`holds`) is fixed in this module before any run. Under the sequence-mean
aggregation, on either data set, the rank is Gurnee et al.'s (`sequence_rank`: their
candidates by difference of class means, then F1), because F1 alone saturates there:
hundreds of neurons of a random-weight model separate a few dozen whole German and English
passages perfectly (`f1_rank` reports how many tie).

Europarl here is the `europarl-heldout` corpus (`data.CORPORA`): the 200 + 200 held-out
passages of the Europarl files, disjoint from the organism's training text and from the
planted control's fitting passages (both drawn from the other split, `data.split_indices`),
so neither control is measured on text it was built from.

**Per-token family-wise threshold (§2).** Discovery ranks by the *per-token* probe, so its
top neurons get the same max-statistic on that probe: the exchangeable units are the
sequences whose positions make discovery's samples (its first `probe_samples` positions per
language, `discovery.sample_all_neurons`, sampled again here in one pass; the last sequence
of each language contributes only the positions discovery took). Per permutation the
sequences are shuffled and split into two classes of (about) equal numbers of positions, as
discovery's, and every neuron's probe is refitted (`probe_all`: the split and seed of
discovery; `max_f1_null_per_token`); the statistic is the largest German-positive F1. Observed F1s
are discovery's vectorised fit, the same function as the null's (its sklearn refit of the
top rows differs by ~1e-5). `min(permutations, TOKEN_PERMUTATIONS_MAX)` permutations: each
refits all neurons (about 1.5 s with two CPU threads at the quick profile's 2,000 + 2,000
positions on Pythia-70M's shape; an earlier measurement of 13-21 s was on a machine shared
with other jobs), so the quick profile's 19 add about 30 s to the step (measured: 20 s → 48 s
on the planted quick report) and the paper profile gets 99 (smallest p-value 0.01), not its
1,000.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from ..core.config import Neuron
from ..core.engine import Batch, Edit, Forward, progress, set_neurons, shortcut_losses

NULL_SALT = 21  # the null's random neurons: default_rng([profile seed, NULL_SALT])
PERMUTATION_SALT = 2121
FWER_LEVEL = 0.05
MIN_SEQUENCES = 10  # `discovery.probe_all` refuses fewer samples per class (train/test split)
GURNEE_CANDIDATES = 10  # Gurnee et al. probe the 10 neurons of largest mean difference per language
SEQUENCE_RANK_RULE = (f"Gurnee et al.: the {GURNEE_CANDIDATES} German-positive neurons with the largest "
                      "difference of class means of the sequence means, by F1, then that difference; "
                      "the others after them, ordered the same way (sequence_rank)")

TOKEN_PERMUTATIONS_MAX = 99  # per-token max-statistic: each permutation refits every neuron's probe
TOKEN_PERMUTATION_SALT = 2122
MIN_TOKEN_ROWS = 10  # `discovery.probe_all` refuses fewer samples per class

# Ablation types of the specification curve: what the context neuron's `hook_post` is set to.
# `english_mean` is the seed's (and the `ablation` step's).
ABLATIONS = {
    "english_mean": "its mean on English text (the seed's mean ablation)",
    "german_mean": "its mean on German text",
    "all_mean": "its mean over English and German text pooled (token-weighted)",
    "zero": "zero (zero ablation)",
    "resample_english": "at each position, an activation drawn at random from its English "
                        "activations (resample ablation)",
}
AGGREGATIONS = {
    "per_token": "per token (the seed's probe: one sample per position)",
    "sequence_mean": "sequence mean (Gurnee et al.: one sample per text, its mean activation)",
}
# Data of the specification curve: the two real corpora (`data.CORPORA`). The run's corpus is
# always one of the specifications' data; the other real corpus joins it (`OTHER_DATA`).
DATA = {
    "seed": "WMT German / KDE4 English (the seed's corpus)",
    "europarl-heldout": "Europarl de/en (the paper's and Gurnee et al.'s domain): the held-out "
                        "passages, disjoint from the organism's training text and the plant's fit",
}
OTHER_DATA = {"seed": "europarl-heldout", "europarl-heldout": "seed"}
SEED_SPEC = ("english_mean", "per_token", "seed")

# The criterion, fixed before running (the same targets as the planted control's rows,
# analysis.controls.planted_check.TARGETS, which restate the seed's claims): the neuron
# separates German from English (probe F1 ≥ 0.8), ablating it raises the German loss (the
# 95% paired-bootstrap interval of the increase lies above 0) and leaves English nearly
# alone (|English change| < ⅓ of the German change, both in nats).
HOLDS = {"f1": 0.8, "english_fraction": 1 / 3}

# Which specifications the plant's construction says must hold (§4), written before
# running: the planted neuron is rewired to fire on German and to boost German tokens, so
# (a) under both aggregations its probe separates the languages (a per-token detector's
# sequence mean separates them too); (b) any ablation that replaces its German-level
# activation by an English-like value removes the boost: English mean, pooled mean (mostly
# English-like when the neuron is sparse on English) and resampled English activations.
# Zero ablation holds only where the plant's English activation is near zero, which its
# construction does not fix; German-mean ablation keeps the neuron "on" and so should NOT
# raise the German loss: the finding is expected to fail there.
# (c) Data: both. The plant's input direction and its boosted tokens were fitted on Europarl
# passages (the training split; `controls.planted`), so on the held-out Europarl passages
# (same domain, other passages) the construction predicts the same as on WMT/KDE4, where the
# planted-recovered rows already check it. So 3 ablations × 2 aggregations × 2 data = 12.
PLANTED_MUST_HOLD = [(a, g, data) for a in ("english_mean", "all_mean", "resample_english")
                     for g in AGGREGATIONS for data in DATA]


def null_neurons(n_layers: int, d_mlp: int, k: int, seed: int,
                 exclude: Sequence[Neuron] = ()) -> list[Neuron]:
    """`k` distinct random neurons per layer (never one of `exclude`), drawn with
    `numpy.random.default_rng([seed, NULL_SALT])`, layer by layer, sorted in each layer.

    Raises:
        ValueError: a layer has fewer than `k` neurons outside `exclude`."""
    rng = np.random.default_rng([seed, NULL_SALT])
    out = []
    for layer in range(n_layers):
        pool = np.array([i for i in range(d_mlp) if Neuron(layer, i) not in set(exclude)])
        if len(pool) < k:
            raise ValueError(f"layer {layer} has only {len(pool)} neurons to draw {k} from")
        out += [Neuron(layer, int(i)) for i in np.sort(rng.choice(pool, size=k, replace=False))]
    return out


def percentile_of(value: float, null: np.ndarray) -> float:
    """Mid-rank percentile (%) of `value` in the null sample `null` `[n]`: 100 ·
    (#below + ½ #equal) / n. Raises ValueError on an empty null."""
    null = np.asarray(null, dtype=np.float64)
    if null.size == 0:
        raise ValueError("empty null distribution")
    return float(100.0 * (np.sum(null < value) + 0.5 * np.sum(null == value)) / null.size)


def permutation_p_value(observed: float, maxima: np.ndarray) -> float:
    """Max-statistic permutation p-value: `(1 + #{maxima ≥ observed}) / (1 + n)` (ties count
    against the observed value; the observed labelling counts as one permutation)."""
    return float((1 + np.sum(np.asarray(maxima) >= observed)) / (1 + len(maxima)))


def fwer_threshold(maxima: np.ndarray, level: float = FWER_LEVEL) -> float | None:
    """The family-wise threshold at `level` that agrees with `permutation_p_value`: an
    observed value strictly above it has p ≤ `level`, and only such a value. It is the k-th
    largest null maximum, k = ⌊level · (n + 1)⌋ (for 19 permutations at 5%: the largest);
    None when k = 0 (too few permutations for any p ≤ `level`). Not an interpolated quantile,
    which lies below the largest maximum and would pass a value with p = 0.10."""
    k = int(np.floor(level * (len(maxima) + 1) + 1e-9))
    if k < 1:
        return None
    return float(np.sort(np.asarray(maxima, dtype=np.float64))[::-1][k - 1])


def single_neuron_losses(fwd: Forward, batches: Sequence[Batch],
                         variants: Mapping[str, tuple[Neuron, Edit]], stack_tokens: int,
                         desc: str = "losses", show_progress: bool = True) -> dict[str, np.ndarray]:
    """Mean next-token loss (nats) of every example under the unedited model (`"original"`)
    and under each variant, an edit of ONE neuron's `hook_post`, in the caller's example
    order: the numbers `engine.per_example_losses` gives for the same edits, computed with
    less work, because a `hook_post` edit of neuron i in layer l changes nothing before
    layer l's MLP output, and that output only by `Δpost_i · W_out[l, i]`:

    * the unedited pass runs once per batch and keeps each edited layer's `hook_resid_post`
      and `hook_post`; a variant's residual after layer l is that cached stream plus the
      rank-1 write (exact up to float rounding: the MLP output is linear in `hook_post`),
      so no block up to and including layer l is recomputed;
    * the variants of one layer run the remaining layers stacked along the batch axis, at
      most `stack_tokens` padded tokens per stack (the profile's `batch_tokens`: memory);
    * last-layer variants need no block at all (`engine.shortcut_losses`, as there).

    `variants`: `{name: (neuron, edit)}` with `edit` a function of the layer's full
    `hook_post` `[batch, pos, d_mlp]` (e.g. `set_neurons`, `resample_edit`); only the
    neuron's own column of its output is used. An edit is called once per batch, in batch
    order (a resample edit's draws are reproducible).

    Returns:
        {"original": float64 [n_examples], name: float64 [n_examples], ...}
    """
    n = sum(len(b.index) for b in batches)
    out = {k: np.zeros(n, dtype=np.float64) for k in ["original", *variants]}
    last = fwd.w.n_layers - 1
    by_layer: dict[int, list[str]] = {}
    for name, (nrn, _) in variants.items():
        by_layer.setdefault(nrn.layer, []).append(name)

    def delta(name: str, post: torch.Tensor) -> torch.Tensor:
        nrn, fn = variants[name]
        return fn(post)[..., nrn.index] - post[..., nrn.index]  # [batch, pos]

    with torch.inference_mode():
        for batch in progress(batches, desc, show_progress):
            capture = {f"blocks.{layer}.mlp.hook_post": None for layer in by_layer}
            capture |= {f"blocks.{layer}.hook_resid_post": None for layer in by_layer if layer < last}
            resid = fwd.run(batch.tokens, capture=capture)
            denom = (batch.lengths - 1).clamp(min=1).to(resid.dtype)
            fast = by_layer.get(last, [])
            post_last = capture.get(f"blocks.{last}.mlp.hook_post")
            deltas = [([variants[k][0].index], delta(k, post_last)[..., None]) for k in fast]
            base_tok, fast_tok = shortcut_losses(fwd, resid, batch.tokens, batch.lengths, deltas)
            out["original"][batch.index] = (base_tok.sum(1) / denom).double().cpu().numpy()
            for name, tok in zip(fast, fast_tok, strict=True):
                out[name][batch.index] = (tok.sum(1) / denom).double().cpu().numpy()
            stack = max(1, stack_tokens // max(batch.tokens.numel(), 1))
            for layer in sorted(k for k in by_layer if k < last):
                post = capture[f"blocks.{layer}.mlp.hook_post"]
                r = capture[f"blocks.{layer}.hook_resid_post"]
                names = by_layer[layer]
                for s0 in range(0, len(names), stack):
                    group = names[s0:s0 + stack]
                    edited = torch.cat([r + fwd.matmul(delta(k, post)[..., None],
                                                       fwd.w.W_out[layer, variants[k][0].index][None])
                                        for k in group])
                    final = fwd.run(resid=edited, start_layer=layer + 1)
                    v = len(group)
                    tok = fwd.token_losses(final, batch.tokens.repeat(v, 1), batch.lengths.repeat(v))
                    per = (tok.sum(1) / denom.repeat(v)).view(v, -1).double().cpu().numpy()
                    for j, name in enumerate(group):
                        out[name][batch.index] = per[j]
    return out


def resample_edit(index: int, pool: np.ndarray, seed: int) -> Callable:
    """An edit setting neuron `index` of a `hook_post` `[batch, pos, d_mlp]` to values drawn
    with replacement from `pool` (float `[n]`, e.g. its English activations) independently
    at each position (resample ablation). The draws come from one generator seeded with
    `seed`, advanced in call order: deterministic for a fixed batch order."""
    gen = torch.Generator().manual_seed(int(seed))
    values = torch.as_tensor(np.asarray(pool, dtype=np.float32))

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        idx = torch.randint(len(values), x.shape[:-1], generator=gen)
        x[..., index] = values[idx].to(x.dtype).to(x.device)
        return x

    return fn


def max_f1_null(german: np.ndarray, english: np.ndarray, test_size: float, seed: int,
                n_permutations: int) -> np.ndarray:
    """Max-statistic null of the probe F1 over all neurons: per permutation of the language
    labels of the pooled samples (rows of `german` `[n_de, m]` and `english` `[n_en, m]`,
    one row per sequence), the largest F1 of `discovery.probe_all` over the `m` columns,
    counting only German-positive fits (coef > 0) as discovery does. Permutation i uses
    `default_rng([seed, PERMUTATION_SALT, i])`. Returns float64 `[n_permutations]`."""
    from .discovery import probe_all

    pooled = np.concatenate([german, english])
    n_de = len(german)
    out = np.zeros(n_permutations)
    for i in range(n_permutations):
        perm = np.random.default_rng([seed, PERMUTATION_SALT, i]).permutation(len(pooled))
        stats = probe_all(pooled[perm[:n_de]], pooled[perm[n_de:]], len(pooled), test_size, seed,
                          chunk=pooled.shape[1])
        f1 = np.where(stats["coef"] > 0, stats["f1"], 0.0)
        out[i] = float(f1.max())
    return out


def sequence_of_rows(toks: Sequence[Sequence[int]], crop: tuple[int, int], n_rows: int) -> np.ndarray:
    """The example index of each row of `discovery.sample_all_neurons(toks, crop, n_rows)`
    (example order, then position order; an example contributes its positions in the crop):
    int64 `[min(n_rows, available)]`."""
    from .discovery import crop_counts

    return np.repeat(np.arange(len(toks)), crop_counts(toks, crop))[:n_rows]


def max_f1_null_per_token(german: np.ndarray, english: np.ndarray, seq_de: np.ndarray, seq_en: np.ndarray,
                          test_size: float, seed: int, n_permutations: int) -> np.ndarray:
    """Max-statistic null of the per-token probe F1 over all neurons, permuting the language
    labels of whole sequences (module docstring). `german` `[n_de, m]`, `english` `[n_en, m]`:
    per-token samples; `seq_de`, `seq_en` `[n_de]`, `[n_en]`: the sequence of each row
    (`sequence_of_rows`).

    The observed probe sees equal numbers of German and English positions, whole sequences in
    order; each permutation keeps that design: permutation i
    (`default_rng([seed, TOKEN_PERMUTATION_SALT, i])`) shuffles the pooled sequences and
    labels German the first of them until they hold half of the positions, the rest English;
    both classes are their sequences' rows in pooled order, cut to the smaller class's count
    (a few rows below the observed count when the split falls inside a long sequence: a
    slightly noisier, so conservative, null). Unbalanced classes would not do: a probe that
    calls everything English scores F1 0 for German, one that calls everything German 2/3 on
    balanced classes. The statistic is the largest F1 of `discovery.probe_all` over the `m`
    columns among German-positive fits. Returns float64 `[n_permutations]`.

    Raises:
        ValueError: a permutation's classes have fewer than `MIN_TOKEN_ROWS` positions each (one
            sequence holds most of them)."""
    from .discovery import probe_all

    pooled = np.concatenate([german, english])
    units = np.concatenate([seq_de, seq_en + (int(seq_de.max()) + 1 if len(seq_de) else 0)])
    ids, sizes = np.unique(units, return_counts=True)
    out = np.zeros(n_permutations)
    for i in range(n_permutations):
        order = np.random.default_rng([seed, TOKEN_PERMUTATION_SALT, i]).permutation(len(ids))
        filled = np.cumsum(sizes[order])
        # the first k sequences, k where their positions come closest to half
        k = int(np.argmin(np.abs(filled[:-1] - len(units) / 2))) + 1 if len(ids) > 1 else 1
        mask = np.isin(units, ids[order[:k]])
        pos, neg = pooled[mask], pooled[~mask]
        n = min(len(pos), len(neg))
        if n < MIN_TOKEN_ROWS:
            raise ValueError(f"a permutation of the per-token null leaves {n} positions per class "
                             f"(at least {MIN_TOKEN_ROWS}): too few sequences; raise activation_examples "
                             "or probe_samples")
        stats = probe_all(pos[:n], neg[:n], n, test_size, seed)
        out[i] = float(np.where(stats["coef"] > 0, stats["f1"], 0.0).max())
    return out


def corpus_activations(fwd: Forward, toks: Sequence[Sequence[int]], crop: tuple[int, int],
                       n_samples: int, col: int, batch_tokens: int, device: str = "cpu",
                       desc: str = "activations", show_progress: bool = True) -> dict:
    """Every neuron's `hook_post` on one language's examples at positions `crop[0]:crop[1]`
    (position 0 is BOS), in one pass: what the `activations` and `discovery` steps give on
    the run's corpus, for another corpus (the specification curve's second data set).

    Args:
        toks: token lists (BOS prepended), in example order.
        n_samples: per-token rows kept (discovery's `probe_samples`).
        col: the context neuron's column (`layer * d_mlp + index`), kept at every position.

    Returns:
        `{"samples": float32 [min(n_samples, n_positions), n_layers * d_mlp]` (the first rows
        in example then position order, as `discovery.sample_all_neurons`),
        `"sequence_means": float32 [examples with a position in the crop, n_layers * d_mlp]`
        (example order), `"token_mean": float64 [n_layers * d_mlp]` (over every kept
        position), `"context": float32 [n_positions]` (column `col` at every kept position,
        example then position order), `"n_positions": int}`; columns layer-major.
    """
    from ..core.engine import make_batches
    from .discovery import crop_counts

    start, end = crop
    L, d = fwd.w.n_layers, fwd.w.d_mlp
    counts = crop_counts(toks, crop)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    total = int(offsets[-1])
    keep = min(n_samples, total)
    samples = np.empty((keep, L * d), dtype=np.float32)
    context = np.empty(total, dtype=np.float32)
    seq: dict[int, np.ndarray] = {}
    sums = torch.zeros(L * d, dtype=torch.float64)
    names = [f"blocks.{layer}.mlp.hook_post" for layer in range(L)]
    with torch.inference_mode():
        for batch in progress(make_batches(toks, batch_tokens, pad_id=1, device=device), desc,
                              show_progress):
            capture = dict.fromkeys(names)
            fwd.run(batch.tokens, stop_layer=L, capture=capture)
            for row, ex in enumerate(batch.index):
                hi = min(end, int(batch.lengths[row]))
                if hi <= start:
                    continue
                acts = torch.cat([capture[n][row, start:hi] for n in names], -1).float().cpu()  # [pos, L*d]
                sums += acts.double().sum(0)
                seq[ex] = acts.mean(0).numpy()
                context[offsets[ex]:offsets[ex + 1]] = acts[:, col].numpy()
                lo_row, hi_row = offsets[ex], min(offsets[ex + 1], keep)
                if lo_row < keep:
                    samples[lo_row:hi_row] = acts[:hi_row - lo_row].numpy()
    return {"samples": samples,
            "sequence_means": (np.stack([seq[i] for i in sorted(seq)]) if seq
                               else np.zeros((0, L * d), dtype=np.float32)),
            "token_mean": (sums / max(total, 1)).numpy(), "context": context, "n_positions": total}


def ablation_values(col: int, mean_de: np.ndarray, mean_en: np.ndarray, n_de: int, n_en: int) -> dict:
    """The constant values of `ABLATIONS` for column `col`, from every neuron's token means
    `[n_neurons]` over German and English positions (`n_de`, `n_en` of them): English mean,
    German mean, the pooled (token-weighted) mean, zero."""
    return {"english_mean": float(mean_en[col]), "german_mean": float(mean_de[col]),
            "all_mean": float((mean_en[col] * n_en + mean_de[col] * n_de) / (n_en + n_de)),
            "zero": 0.0}


def specifications(probe: Mapping, losses: Mapping, data: str) -> list[dict]:
    """The specifications of one data set: for each ablation type and aggregation, the
    context neuron's probe F1 and rank (`probe[aggregation] = {"f1", "rank"}`) and its German
    and English loss change (`losses[language]` from `single_neuron_losses`, with a variant
    `ctx:<ablation>` per ablation type; nats), and whether the finding holds (`holds`)."""
    from .ablation import loss_summary

    out = []
    for a in ABLATIONS:
        summ = {lang: loss_summary(losses[lang]["original"], losses[lang][f"ctx:{a}"])
                for lang in ("german", "english")}
        de_nats = summ["german"]["ablated"] - summ["german"]["original"]
        en_nats = summ["english"]["ablated"] - summ["english"]["original"]
        for g in AGGREGATIONS:
            out.append({"ablation": a, "aggregation": g, "data": data,
                        "seed_choice": (a, g, data) == SEED_SPEC,
                        "f1": probe[g]["f1"], "rank": probe[g]["rank"],
                        "german": summ["german"], "english": summ["english"],
                        "german_nats": de_nats, "english_nats": en_nats,
                        "holds": holds(probe[g]["f1"], summ["german"], en_nats)})
    return out


def holds(f1: float, german: Mapping, english_nats: float) -> bool:
    """The finding's criterion (`HOLDS`, fixed in advance): probe F1 ≥ 0.8, the German
    increase's 95% interval (nats) above 0, and |English change| < ⅓ of the German change
    (nats). `german`: a `loss_summary` dict with `original`, `ablated`, `increase_nats_ci`."""
    de = german["ablated"] - german["original"]
    ci = german["increase_nats_ci"]
    return bool(f1 >= HOLDS["f1"] and ci is not None and ci[0] > 0
                and abs(english_nats) < HOLDS["english_fraction"] * de)


def rank_of(col: int, stats: Mapping[str, np.ndarray]) -> int | None:
    """1-based rank of column `col` among German-positive neurons by `discovery.rank`
    (None when its coefficient is not positive)."""
    from .discovery import rank

    order = rank(stats, True)
    hit = np.flatnonzero(order == col)
    return int(hit[0]) + 1 if hit.size else None


def sequence_rank(col: int, stats: Mapping[str, np.ndarray], candidates: int = GURNEE_CANDIDATES) -> int | None:
    """1-based rank of column `col` among German-positive neurons (coef > 0) under the
    sequence-mean aggregation, by Gurnee et al.'s rule for language neurons
    (`find_context_neurons.py` of wesg52/llm-context-neurons, the source of
    `europarl_lang_neurons_gurnee.csv`): the `candidates` neurons with the largest
    difference of class means of the sequence means (`mean_german − mean_english`, activation
    units) are probed and ordered by F1; ties in F1 by that difference. The neurons outside
    the candidates follow them, ordered the same way (Gurnee et al. do not rank them). None
    when the coefficient is not positive.

    `stats`: `discovery.probe_all` arrays, each `[n_neurons]` (`coef`, `f1`, `mean_german`,
    `mean_english`). Deviations from Gurnee et al.: German vs English only (they probe
    one language against seven others, so a neuron that also fires on Dutch loses
    precision: L3N669's F1 0.49 there); the seed's train/test split (they score on the
    sequences they fit); German-positive neurons only (they take |difference|).
    Why a rule and not F1 alone: F1 on a few dozen test sequences saturates (hundreds of
    neurons of a random-weight model separate whole German and English passages perfectly),
    and the published selection is what the aggregation `sequence_mean` stands for."""
    idx = np.flatnonzero(stats["coef"] > 0)
    if col not in set(idx.tolist()):
        return None
    diff = (stats["mean_german"] - stats["mean_english"])[idx]
    by_diff = np.lexsort((idx, -diff))
    top = np.zeros(len(idx), dtype=bool)
    top[by_diff[:candidates]] = True
    # candidates first, then F1, then the mean difference, then position (layer-major)
    order = idx[np.lexsort((idx, -diff, -stats["f1"][idx], ~top))]
    return int(np.flatnonzero(order == col)[0]) + 1


def f1_rank(col: int, stats: Mapping[str, np.ndarray]) -> dict | None:
    """Column `col`'s rank by probe F1 alone among German-positive neurons, ties shared
    (1 + how many have a strictly larger F1), and how many others have exactly its F1:
    `{"rank", "tied"}`; None when its coefficient is not positive. Where the F1 saturates (a
    sequence-mean probe separates two languages perfectly for hundreds of neurons of a
    random-weight model) this says that F1 alone cannot single out one neuron; the rank the
    report gives is `sequence_rank`'s (Gurnee et al.'s candidates by mean difference)."""
    pos = stats["coef"] > 0
    if not pos[col]:
        return None
    f1, mine = stats["f1"][pos], stats["f1"][col]
    return {"rank": int((f1 > mine).sum()) + 1, "tied": int((f1 == mine).sum()) - 1}


# ------------------------------------------------------------------ pipeline step


def run_step(run, arts: dict) -> dict:
    """Step `robustness`: null distributions of the mean-ablation effect, the family-wise F1
    threshold, and the specification curve (module docstring).

    Arrays: `null_german`, `null_english` float64 `[n_null]` (loss change, nats, random
    neurons then German-positive ones, in `result.null.neurons` order); `max_f1_null`
    float64 `[n_permutations]`; `max_f1_null_per_token` float64 `[min(n_permutations,
    TOKEN_PERMUTATIONS_MAX)]`; `sequence_f1` float64 `[n_layers, d_mlp]`; with a second
    data set (`result.data`), `<data>_per_token_f1` and `<data>_sequence_f1` float64
    `[n_layers, d_mlp]` (every neuron's probe F1 on it)."""
    import sys

    from ..core.data import CORPORA, load_corpus
    from ..core.errors import ReportError
    from ..core.runner import LANGUAGES, tokenize_examples
    from ..core.stats import METHODS
    from .discovery import probe_all, rank, sample_all_neurons

    p = run.profile
    n_token_perm = min(p.permutations, TOKEN_PERMUTATIONS_MAX)
    ctx = run.context
    disc, acts = arts["discovery"], arts["activations"]
    L, d = disc["result"]["n_layers"], disc["result"]["d_mlp"]
    act_toks = {lang: run.tokens(lang, p.activation_examples) for lang in LANGUAGES}
    loss_toks = {lang: run.tokens(lang, p.null_loss_examples) for lang in LANGUAGES}
    german_pos = [Neuron.parse(r["neuron"]) for r in disc["result"]["ranked"]
                  if r["neuron"] != str(ctx)][:p.null_german_neurons]
    randoms = null_neurons(L, d, p.null_neurons_per_layer, p.seed, exclude=[ctx, *german_pos])
    # The specification curve's second data set (module docstring): its corpora are read and
    # checksum-verified here, so a missing file fails before any compute, and their sha256
    # are in the key (`data` below).
    other = OTHER_DATA.get(run.corpus)
    other_corpora = ({lang: load_corpus(CORPORA[other][lang], run.data_dir) for lang in LANGUAGES}
                     if other else {})
    other_act = {lang: tokenize_examples(run.model, c.examples, p.activation_examples, lang)
                 for lang, c in other_corpora.items()}
    other_loss = {lang: tokenize_examples(run.model, c.examples, p.null_loss_examples, lang)
                  for lang, c in other_corpora.items()}
    params = {"context_neuron": str(ctx), "random_neurons": [str(n) for n in randoms],
              "german_positive_neurons": [str(n) for n in german_pos],
              "null_salt": NULL_SALT, "permutation_salt": PERMUTATION_SALT,
              "null_loss_examples": p.null_loss_examples, "null_loss_tokens": p.null_loss_tokens,
              "permutations": p.permutations, "token_permutations": n_token_perm,
              "token_permutation_salt": TOKEN_PERMUTATION_SALT, "crop": [p.crop_start, p.crop_end],
              "split_seed": p.seed, "test_size": p.probe_test_size,
              "probe_samples": p.probe_samples, "activation_examples": p.activation_examples,
              "ablations": ABLATIONS, "aggregations": AGGREGATIONS, "holds": HOLDS,
              "data": [run.corpus, *([other] if other else [])],
              "act_tokens": {k: v[1] for k, v in act_toks.items()},
              "loss_tokens": {k: v[1] for k, v in loss_toks.items()},
              "other_act_tokens": {k: v[1] for k, v in other_act.items()},
              "other_loss_tokens": {k: v[1] for k, v in other_loss.items()}}
    data_prov = {**run.data_prov(*LANGUAGES),
                 **{f"{other}:{lang}": c.provenance() for lang, c in other_corpora.items()}}

    def cut(toks):
        return [t[:p.null_loss_tokens] for t in toks]

    def compute():
        # Every neuron's sequence means and token mean over the activation examples, read
        # from the `activations` artifact (its one pass over those examples), not recomputed.
        seq = {lang: run.store.load_array("activations", f"sequence_means_{lang}") for lang in LANGUAGES}
        tok_mean = {lang: np.concatenate([run.store.load_array("activations", f"layer{layer}_mean_{lang}")
                                          for layer in range(L)]) for lang in LANGUAGES}
        n_pos = acts["result"]["n_activations"]
        too_few = {lang: len(seq[lang]) for lang in LANGUAGES if len(seq[lang]) < MIN_SEQUENCES}
        if too_few:
            raise ReportError(
                "the robustness step's sequence-mean probe needs at least "
                f"{MIN_SEQUENCES} examples per language with a position in the crop; "
                + ", ".join(f"{lang} has {n}" for lang, n in too_few.items())
                + " (raise activation_examples)")
        col = ctx.layer * d + ctx.index
        en_mean = tok_mean["english"]
        values = ablation_values(col, tok_mean["german"], en_mean, n_pos["german"], n_pos["english"])
        ctx_i = acts["result"]["neurons"].index(str(ctx))
        pool = run.store.load_array("activations", "english")[:, ctx_i]
        variants = {f"ctx:{a}": (ctx, set_neurons([ctx.index], v)) for a, v in values.items()}
        null = [*randoms, *german_pos]
        for n in null:
            variants[f"null:{n}"] = (n, set_neurons([n.index], float(en_mean[n.layer * d + n.index])))
        losses = {}
        for lang in LANGUAGES:
            # the resample draws restart per language so each language's draws are reproducible alone
            v = {**variants, "ctx:resample_english": (ctx, resample_edit(
                ctx.index, pool, p.seed + (0 if lang == "german" else 1)))}
            losses[lang] = single_neuron_losses(run.fwd, run.batches(cut(loss_toks[lang][0])), v,
                                                p.batch_tokens, desc=f"robustness losses {lang}",
                                                show_progress=run.show_progress)

        def effect(name, lang):
            return float(np.mean(losses[lang][name] - losses[lang]["original"]))

        null_de = np.array([effect(f"null:{n}", "german") for n in null])
        null_en = np.array([effect(f"null:{n}", "english") for n in null])
        k = len(randoms)
        ctx_de, ctx_en = effect("ctx:english_mean", "german"), effect("ctx:english_mean", "english")
        null_result = {
            "neurons": [str(n) for n in null], "n_random": k, "n_german_positive": len(german_pos),
            "random_per_layer": p.null_neurons_per_layer, "rng": f"numpy default_rng([{p.seed}, {NULL_SALT}])",
            "examples": {lang: len(loss_toks[lang][0]) for lang in LANGUAGES},
            "tokens_per_example_max": p.null_loss_tokens,
            "context": {"german_nats": ctx_de, "english_nats": ctx_en},
            "rows": [{"neuron": str(n), "kind": "random" if i < k else "german_positive",
                      "german_nats": float(null_de[i]), "english_nats": float(null_en[i])}
                     for i, n in enumerate(null)],
            "percentile": {
                "random": {"german": percentile_of(ctx_de, null_de[:k]),
                           "english": percentile_of(ctx_en, null_en[:k])},
                "german_positive": ({"german": percentile_of(ctx_de, null_de[k:]),
                                     "english": percentile_of(ctx_en, null_en[k:])}
                                    if len(german_pos) else None),
            },
            "random_p99": {"german": float(np.percentile(null_de[:k], 99)),
                           "english": float(np.percentile(null_en[:k], 99))},
        }
        # Family-wise threshold on the sequence-mean probe (module docstring).
        de_seq, en_seq = seq["german"], seq["english"]
        # one chunk: few rows, so the per-chunk Newton loop, not the arithmetic, is the cost
        stats = probe_all(de_seq, en_seq, max(len(de_seq), len(en_seq)), p.probe_test_size, p.seed,
                          chunk=de_seq.shape[1])
        maxima = max_f1_null(de_seq, en_seq, p.probe_test_size, p.seed, p.permutations)
        threshold = fwer_threshold(maxima)
        # The same on the per-token probe (module docstring): discovery's samples again, and
        # the sequence each row comes from.
        crop = (p.crop_start, p.crop_end)
        samples = {lang: sample_all_neurons(run.fwd, act_toks[lang][0], crop, p.probe_samples, p.batch_tokens,
                                            run.cfg.device, desc=f"robustness per-token {lang}",
                                            show_progress=run.show_progress) for lang in LANGUAGES}
        rows_seq = {lang: sequence_of_rows(act_toks[lang][0], crop, p.probe_samples) for lang in LANGUAGES}
        try:
            tok_maxima = max_f1_null_per_token(samples["german"], samples["english"], rows_seq["german"],
                                               rows_seq["english"], p.probe_test_size, p.seed, n_token_perm)
        except ValueError as e:
            raise ReportError(f"the robustness step's per-token threshold: {e}") from None
        del samples
        tok_threshold = fwer_threshold(tok_maxima)

        top = []
        for r in disc["result"]["ranked"][:10]:
            c = r["layer"] * d + r["index"]
            f1s = float(stats["f1"][c]) if stats["coef"][c] > 0 else 0.0
            f1t = float(r.get("vectorised", r)["f1"])  # the null's function: the vectorised fit
            top.append({"neuron": r["neuron"], "per_token_rank": r["rank"], "per_token_f1": r["f1"],
                        "per_token_f1_vectorised": f1t, "per_token_p_value": permutation_p_value(f1t, tok_maxima),
                        "per_token_above_threshold": permutation_p_value(f1t, tok_maxima) <= FWER_LEVEL,
                        "sequence_mean_f1": f1s,
                        "sequence_mean_rank": sequence_rank(c, stats),
                        "p_value": permutation_p_value(f1s, maxima),
                        "above_threshold": permutation_p_value(f1s, maxima) <= FWER_LEVEL})
        fwer = {"statistic": "max over all neurons of the sequence-mean probe F1 (German-positive fits)",
                "permuted": "language labels of whole sequences",
                "n_permutations": p.permutations, "level": FWER_LEVEL, "threshold": threshold,
                "n_sequences": {"german": int(len(de_seq)), "english": int(len(en_seq))},
                "top": top,
                "per_token": {
                    "statistic": "max over all neurons of the per-token probe F1 (German-positive fits, "
                                 "discovery's vectorised fit)",
                    "permuted": "language labels of the sequences whose positions make discovery's samples",
                    "n_permutations": n_token_perm, "threshold": tok_threshold,
                    "n_sequences": {lang: int(len(np.unique(rows_seq[lang]))) for lang in LANGUAGES},
                    "n_positions": {lang: int(len(rows_seq[lang])) for lang in LANGUAGES},
                    "why_fewer": (f"each permutation refits every neuron's probe, so at most "
                                  f"{TOKEN_PERMUTATIONS_MAX}" if n_token_perm < p.permutations else None)}}
        # Specification curve, the run's corpus.
        d_stats = {k2: run.store.load_array("discovery", k2).reshape(-1)
                   for k2 in ("coef", "f1", "test_acc", "separation")}
        # discovery's own row when it lists the neuron (its top rows are refitted with sklearn
        # and reordered), else the vectorised arrays, as the planted check reads the rank
        row = next((r for r in disc["result"]["ranked"] if r["neuron"] == str(ctx)), None)
        probe = {"per_token": {"f1": float(row["f1"]) if row else float(d_stats["f1"][col]),
                               "rank": int(row["rank"]) if row else rank_of(col, d_stats)},
                 "sequence_mean": {"f1": float(stats["f1"][col]) if stats["coef"][col] > 0 else 0.0,
                                   "rank": sequence_rank(col, stats), "by_f1": f1_rank(col, stats),
                                   "by_separation": rank_of(col, stats)}}
        specs = specifications(probe, losses, run.corpus)
        arrays = {"null_german": null_de, "null_english": null_en, "max_f1_null": maxima,
                  "max_f1_null_per_token": tok_maxima,
                  "sequence_f1": stats["f1"].reshape(L, d)}
        by_data = {run.corpus: {"probe": probe, "ablation_values": values,
                                "n_examples": {lang: len(loss_toks[lang][0]) for lang in LANGUAGES},
                                "n_sequences": {"german": int(len(de_seq)), "english": int(len(en_seq))}}}
        if other:
            o_specs, o_rec, o_arrays = other_data(other)
            specs += o_specs
            by_data[other] = o_rec
            arrays |= o_arrays
        must = [s for s in specs if (s["ablation"], s["aggregation"], s["data"]) in PLANTED_MUST_HOLD]
        result = {
            "context_neuron": str(ctx), "run_corpus": run.corpus, "interval": METHODS["loss"],
            "sequence_rank_rule": SEQUENCE_RANK_RULE, "sequence_rank_candidates": GURNEE_CANDIDATES,
            "ablation_values": values,
            "ablation_step_value": acts["result"]["english_means"][str(ctx)], "ablations": ABLATIONS, "aggregations": AGGREGATIONS,
            "criterion": HOLDS, "probe": probe, "null": null_result, "fwer": fwer,
            "data": {name: {"description": DATA.get(name, f"the run's corpus ({name})"), **rec}
                     for name, rec in by_data.items()},
            "specifications": specs, "n_specifications": len(specs),
            "n_hold": sum(s["holds"] for s in specs),
            # §4: read on the planted control only, where PLANTED_MUST_HOLD is its prediction
            "planted_must_hold": {
                "specifications": [f"{a} / {g} / {dd}" for a, g, dd in PLANTED_MUST_HOLD],
                "ablations": list(dict.fromkeys(a for a, _, _ in PLANTED_MUST_HOLD)),
                "n_predicted": len(PLANTED_MUST_HOLD), "n_measured": len(must),
                "n_hold": sum(s["holds"] for s in must),
                "failed": [f"{s['ablation']} / {s['aggregation']} / {s['data']}" for s in must if not s["holds"]]},
            "data_note": (f"two data sets: the run's corpus ({run.corpus}) and {other}" if other else
                          f"one data set: the run's corpus ({run.corpus}) is neither of the two real "
                          "corpora (the seed's WMT/KDE4, Europarl), so the data dimension is not varied"),
        }
        return result, arrays

    def other_data(name):
        """The specifications on the second data set `name`, measured on it alone (module
        docstring): (specs, record, arrays)."""
        col = ctx.layer * d + ctx.index
        got = {lang: corpus_activations(run.fwd, other_act[lang][0], (p.crop_start, p.crop_end),
                                        p.probe_samples, col, p.batch_tokens, run.cfg.device,
                                        desc=f"robustness {name} {lang}", show_progress=run.show_progress)
               for lang in LANGUAGES}
        n_seq = {lang: len(got[lang]["sequence_means"]) for lang in LANGUAGES}
        if min(n_seq.values()) < MIN_SEQUENCES:
            raise ReportError(f"the robustness step's {name} data have too few examples with a "
                              f"position in the crop ({n_seq}; at least {MIN_SEQUENCES} per language)")
        tok_stats = probe_all(got["german"]["samples"], got["english"]["samples"], p.probe_samples,
                              p.probe_test_size, p.seed)
        de_s, en_s = got["german"]["sequence_means"], got["english"]["sequence_means"]
        seq_stats = probe_all(de_s, en_s, max(len(de_s), len(en_s)), p.probe_test_size, p.seed,
                              chunk=de_s.shape[1])
        probe = {"per_token": {"f1": float(tok_stats["f1"][col]), "rank": rank_of(col, tok_stats)},
                 "sequence_mean": {"f1": float(seq_stats["f1"][col]) if seq_stats["coef"][col] > 0 else 0.0,
                                   "rank": sequence_rank(col, seq_stats), "by_f1": f1_rank(col, seq_stats),
                                   "by_separation": rank_of(col, seq_stats)}}
        values = ablation_values(col, got["german"]["token_mean"], got["english"]["token_mean"],
                                 got["german"]["n_positions"], got["english"]["n_positions"])
        variants = {f"ctx:{a}": (ctx, set_neurons([ctx.index], v)) for a, v in values.items()}
        losses = {}
        for lang in LANGUAGES:
            v = {**variants, "ctx:resample_english": (ctx, resample_edit(
                ctx.index, got["english"]["context"], p.seed + (0 if lang == "german" else 1)))}
            losses[lang] = single_neuron_losses(run.fwd, run.batches(cut(other_loss[lang][0])), v,
                                                p.batch_tokens, desc=f"robustness {name} losses {lang}",
                                                show_progress=run.show_progress)
        best = rank(tok_stats, True)
        record = {"probe": probe, "ablation_values": values,
                  "n_examples": {lang: len(other_loss[lang][0]) for lang in LANGUAGES},
                  "n_sequences": n_seq,
                  "n_per_token_samples": {lang: int(len(got[lang]["samples"])) for lang in LANGUAGES},
                  "best_per_token": (str(Neuron(*divmod(int(best[0]), d))) if len(best) else None),
                  "rank_method": {"per_token": "discovery.rank on the vectorised fit (no sklearn refit of "
                                                "the top rows)",
                                  "sequence_mean": SEQUENCE_RANK_RULE}}
        arrays = {f"{name.replace('-', '_')}_per_token_f1": tok_stats["f1"].reshape(L, d),
                  f"{name.replace('-', '_')}_sequence_f1": seq_stats["f1"].reshape(L, d)}
        return specifications(probe, losses, name), record, arrays

    inputs = run.inputs("robustness", sys.modules[__name__], params, data_prov,
                        {"discovery": disc["key"], "activations": acts["key"]})
    return run.step(inputs, compute)


def figures(run, arts: dict, fig_dir) -> list[dict]:
    import figures.plots as plots
    import figures.robustness as figs

    art = arts["robustness"]
    res = art["result"]
    ctx = res["context_neuron"]
    return [
        plots.save(figs.spec_curve(res["specifications"], ctx), fig_dir, "robustness_spec_curve", {
            "step": "robustness", "artifact_key": art["key"],
            "caption": f"Specification curve: the German loss change (nats) when {ctx} is ablated, "
                       "under each combination of ablation type, probe aggregation and data "
                       f"({', '.join(res['data'])}), sorted "
                       "(bars: 95% paired-bootstrap intervals; filled: the finding holds by the "
                       "criterion fixed in advance; ringed: the seed's choice).",
            "seed_cell": "Check loss increase from disabling each German neuron on German data",
        }),
        plots.save(figs.null_scatter(res["null"]["rows"], res["null"]["context"], ctx), fig_dir,
                   "robustness_null", {
            "step": "robustness", "artifact_key": art["key"],
            "caption": f"German vs English loss change (nats) when each null neuron is mean-ablated "
                       f"(random neurons, discovery's German-positive neurons) and {ctx}, on the "
                       "same examples.",
            "seed_cell": "Check loss increase from disabling each German neuron on German data",
        }),
    ]
