"""Neuron cards: one page per studied neuron, as Neuronpedia shows a neuron (not a seed
section: the seed studies these neurons across its sections; a card gathers what the report
knows about one neuron and adds what a reader of a neuron page expects).

The neurons with a card (`card_neurons`): the context neuron, the seed's German neurons
(seed "Check classification accuracy of German neurons"), the downstream neurons (the ones
the `neurons` step studies one by one, seed "Looking at individual neurons", and the best
`N_DOWNSTREAM` of each layer of the `downstream` ranking, seed "(New): Trying to find
interesting downstream neurons by activation difference") and the top `N_DISCOVERED`
German-positive neurons of neuron discovery.

For each, from one forward pass over the activation examples (the `activations` step's
examples, `blocks.L.mlp.hook_post`):

* its activation density on German and on English text: bin counts over the positions
  `crop` of every example (the `activations` step's positions and order), never the raw
  activations (`density`);
* its top activating examples (`top_activating`): the examples with the largest activation
  at any position after BOS, each as a window of tokens around that position with the
  activation of every token (seed `haystack_utils.print_strings_as_html` style heat maps);
  examples across the quantiles of the per-example maximum of the examples below the top
  (`quantile_examples`: what a typical example looks like, not only the extreme ones) and the most negative examples
  (`most_negative`), as Neuronpedia shows them;
* its firing frequency on each language (`firing`: the fraction of positions with a
  positive activation);
* its single-neuron probe (German vs English), exactly the `probes` step's
  (`probes.single_neuron_probe` on the first `probe_samples` of those activations, the same
  split seed), so its F1 and test accuracy carry their 95% intervals;
* its mean-ablation effect (`ablation.loss_summary`: set to its English mean, on the
  `ablation` step's loss examples, paired-bootstrap intervals), read from the `ablation`
  artifact where that step ablated it (the seed's German neurons, the context neuron),
  computed here for the downstream neurons the `neurons` step studies one by one
  (`ablate_here`), and not computed for the other cards (each ablation costs a loss pass
  over every loss example in both languages; the card says so);
* the direct logit effect of its output direction, `W_out[layer, index] @ W_U` (logits per
  unit of activation; no LayerNorm): its most boosted and most suppressed tokens, the weird
  tokens excluded (`neurons.weird_tokens`, seed `get_weird_tokens`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..core.config import Neuron
from ..core.engine import Batch, Forward, progress

TOP_EXAMPLES = 20      # top activating examples per card (Neuronpedia shows 20 or more)
WINDOW = (24, 8)       # tokens shown before / after the top-activating token
# Only the first FULL_WINDOW top examples get the wide window; the others, the quantile and
# the negative examples get SHORT_WINDOW: 3x more examples per card for about 1.5x the page
# weight (every token is a coloured span with its hover text; the HTML must stay < 4 MB).
FULL_WINDOW = 5
SHORT_WINDOW = (10, 3)
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)  # quantiles of the per-example maximum activation
QUANTILE_EXAMPLES = 2  # examples shown per quantile
NEGATIVE_EXAMPLES = 5  # most negative examples per card
HIST_BINS = 60         # bins of the density histograms (as `figures.plots.activation_histogram`)
LOGIT_TOP_K = 20       # boosted / suppressed tokens of the output direction
N_DISCOVERED = 5       # top German-positive neurons of neuron discovery with a card
N_DOWNSTREAM = 2       # best neurons of each downstream layer with a card


# ------------------------------------------------------------------ pure functions


def card_neurons(context: str, studied: Sequence[str], neurons: Mapping | None = None,
                 downstream: Mapping | None = None, discovery: Mapping | None = None,
                 n_discovered: int = N_DISCOVERED, n_downstream: int = N_DOWNSTREAM) -> list[dict]:
    """The neurons that get a card, in card order, each with every reason it has one.

    Args:
        context: the context neuron ("L3N669").
        studied: the seed's German neurons that exist in the model.
        neurons, downstream, discovery: the `result` of those steps' artifacts, or None.

    Returns:
        [{"neuron": "L3N669", "kind": "context" | "german" | "downstream" | "discovered",
          "roles": ["context neuron", ...]}], the context neuron first, no neuron twice
        (its `kind` is its first reason).
    """
    cards: dict[str, dict] = {}

    def add(neuron: str, kind: str, role: str) -> None:
        entry = cards.setdefault(neuron, {"neuron": neuron, "kind": kind, "roles": []})
        if role not in entry["roles"]:
            entry["roles"].append(role)

    add(context, "context", "the context neuron")
    for n in studied:
        add(n, "german", "one of the seed's German neurons")
    for e in (neurons or {}).get("neurons", []):
        add(e["neuron"], "downstream", f"downstream neuron studied individually ({e['role']})")
    for layer in (downstream or {}).get("layers", []):
        for rank, r in enumerate(layer["top"][:n_downstream], start=1):
            add(f"L{layer['layer']}N{r['neuron']}", "downstream",
                f"downstream: rank {rank} of layer {layer['layer']} by |mean| − std")
    if discovery:
        german = [r for r in discovery.get("ranked", []) if r.get("sign") == "german"]
        for r in german[:n_discovered]:
            add(r["neuron"], "discovered", f"neuron discovery: rank {r['rank']} by probe F1")
    return list(cards.values())


def ablate_here(card: Mapping, ablated: Sequence[str]) -> bool:
    """Whether the cards step mean-ablates this card's neuron: not when the `ablation` step
    did (`ablated`), yes for a downstream neuron studied individually by the `neurons` step,
    no otherwise (the downstream ranking's and neuron discovery's extra neurons)."""
    return card["neuron"] not in ablated and any(r.startswith("downstream neuron studied individually")
                                                 for r in card["roles"])


def card_activations(fwd: Forward, batches: Sequence[Batch], neurons: Sequence[Neuron],
                     crop: tuple[int, int], desc: str = "card activations",
                     show_progress: bool = True) -> tuple[np.ndarray, list[np.ndarray]]:
    """`hook_post` of `neurons` in one pass over `batches` (stopped after their last layer).

    Returns:
        samples: float32 `[n_positions, len(neurons)]`, positions `crop[0]:crop[1]` of every
            example, in example order then position order (as `activations.
            collect_mlp_activations` orders them, so the first rows are the same samples);
        per_example: for example i (caller order), float32 `[n_tokens_i, len(neurons)]`,
            every position (position 0 is BOS).
    """
    start, end = crop
    names = sorted({n.hook() for n in neurons})
    stop = max(n.layer for n in neurons) + 1
    full: dict[int, np.ndarray] = {}
    with torch.inference_mode():
        for batch in progress(batches, desc, show_progress):
            cap = dict.fromkeys(names)
            fwd.run(batch.tokens, stop_layer=stop, capture=cap)
            cols = torch.stack([cap[n.hook()][..., n.index] for n in neurons], -1).float().cpu()
            for row, ex in enumerate(batch.index):
                full[ex] = cols[row, : int(batch.lengths[row])].numpy()
    per_example = [full[i] for i in sorted(full)]
    crops = [a[start:min(end, len(a))] for a in per_example]
    samples = (np.concatenate(crops, axis=0) if crops
               else np.zeros((0, len(neurons)), dtype=np.float32))
    return samples, per_example


def density(german: np.ndarray, english: np.ndarray, bins: int = HIST_BINS) -> dict:
    """Bin counts of one neuron's activations on German and on English, over `bins` equal
    bins spanning both: {"edges": [bins + 1], "german": [bins], "english": [bins],
    "n": {...}, "mean": {...}} (counts, not raw values: the card's histogram and its CSV)."""
    g = np.asarray(german, dtype=np.float64)
    e = np.asarray(english, dtype=np.float64)
    both = np.concatenate([g, e])
    lo, hi = (float(both.min()), float(both.max())) if len(both) else (0.0, 1.0)
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
    return {"edges": [float(x) for x in edges],
            "german": [int(c) for c in np.histogram(g, edges)[0]],
            "english": [int(c) for c in np.histogram(e, edges)[0]],
            "n": {"german": int(len(g)), "english": int(len(e))},
            "mean": {"german": float(g.mean()) if len(g) else None,
                     "english": float(e.mean()) if len(e) else None}}


def _extremes(per_example: Mapping[str, Sequence[np.ndarray]]) -> list[tuple]:
    """(language, example, n_tokens, argmax, max, argmin, min) of every example with a
    position after BOS (BOS, position 0, never counts), in language then example order."""
    out = []
    for lang, acts in per_example.items():
        for i, a in enumerate(acts):
            if len(a) < 2:
                continue
            hi, lo = 1 + int(np.argmax(a[1:])), 1 + int(np.argmin(a[1:]))
            out.append((lang, i, len(a), hi, float(a[hi]), lo, float(a[lo])))
    return out


def _window(lang: str, i: int, n: int, pos: int, window: tuple[int, int]) -> dict:
    return {"language": lang, "example": i, "position": pos,
            "start": max(1, pos - window[0]), "end": min(n, pos + window[1] + 1)}


def top_activating(per_example: Mapping[str, Sequence[np.ndarray]], k: int = TOP_EXAMPLES,
                   window: tuple[int, int] = WINDOW, short: tuple[int, int] | None = None,
                   n_full: int = FULL_WINDOW) -> list[dict]:
    """The `k` examples with the largest activation at any position after BOS, over every
    language: [{"language", "example", "position", "max_activation", "start", "end"}],
    best first (ties: language order, then example order); `start:end` is the window of
    positions shown, `window[0]` before the top position and `window[1]` after it, BOS
    excluded (from the `n_full`-th example on, the `short` window when given).
    `per_example[language][i]`: the neuron's activation at every position of example i
    (`[n_tokens]`, position 0 is BOS)."""
    found = sorted(_extremes(per_example), key=lambda f: -f[4])  # stable: language, example
    return [{**_window(lang, i, n, pos, window if short is None or r < n_full else short),
             "max_activation": v}
            for r, (lang, i, n, pos, v, _, _) in enumerate(found[:k])]


def quantile_examples(per_example: Mapping[str, Sequence[np.ndarray]],
                      quantiles: Sequence[float] = QUANTILES, per_quantile: int = QUANTILE_EXAMPLES,
                      window: tuple[int, int] = SHORT_WINDOW,
                      exclude: Sequence[tuple[str, int]] = ()) -> list[dict]:
    """Examples across the distribution of the per-example maximum activation, below the
    top examples: the examples not in `exclude` (`(language, example)` pairs: the top
    examples already shown) are the pool, and for each quantile q, the `per_quantile` pool
    examples whose maximum is nearest the pool's q-quantile (none twice). Quantiles of the
    pool, not of all examples: the top examples already cover the upper quantiles of all.
    Entries as `top_activating`'s plus "quantile" and "quantile_value", highest first."""
    skip = set(exclude)
    found = [f for f in _extremes(per_example) if (f[0], f[1]) not in skip]
    if not found:
        return []
    maxima = np.array([f[4] for f in found])
    taken: set[int] = set()
    out = []
    for q in sorted(quantiles, reverse=True):
        target = float(np.quantile(maxima, q))
        order = sorted(range(len(found)), key=lambda j: (abs(maxima[j] - target), j))
        for j in [j for j in order if j not in taken][:per_quantile]:
            lang, i, n, pos, v, _, _ = found[j]
            taken.add(j)
            out.append({**_window(lang, i, n, pos, window), "max_activation": v,
                        "quantile": q, "quantile_value": target})
    return out


def most_negative(per_example: Mapping[str, Sequence[np.ndarray]], k: int = NEGATIVE_EXAMPLES,
                  window: tuple[int, int] = SHORT_WINDOW) -> list[dict]:
    """The `k` examples with the most negative activation at any position after BOS
    (lowest first; ties: language, then example order), windowed around that position:
    entries as `top_activating`'s, with "min_activation" (and "max_activation", the
    example's largest, for the colour scale)."""
    found = sorted(_extremes(per_example), key=lambda f: f[6])
    return [{**_window(lang, i, n, lo, window), "min_activation": vlo, "max_activation": vhi}
            for lang, i, n, _, vhi, lo, vlo in found[:k]]


def firing(german: np.ndarray, english: np.ndarray, threshold: float = 0.0) -> dict:
    """Firing frequency: the fraction of positions where the activation exceeds `threshold`
    (0: GELU's output is positive exactly where the pre-activation is), per language."""
    def frac(a: np.ndarray) -> float | None:
        return float(np.mean(np.asarray(a) > threshold)) if len(a) else None

    return {"threshold": threshold, "german": frac(german), "english": frac(english)}


def output_logits(W_out: torch.Tensor, W_U: torch.Tensor, neuron: Neuron, exclude: np.ndarray,
                  k: int = LOGIT_TOP_K) -> tuple[torch.Tensor, dict]:
    """The direct logit effect of one unit of the neuron's activation: `W_out[layer, index]
    @ W_U` (`[d_vocab]`, no LayerNorm), and its top `k` boosted and suppressed token ids
    with the `exclude`d (weird) tokens left out: ({"boosted": (values, ids), "suppressed":
    (values, ids)})."""
    from .neurons import top_k_excluding

    vals = (W_out[neuron.layer, neuron.index].double() @ W_U.double()).cpu()
    return vals, {"boosted": top_k_excluding(vals, k, exclude),
                  "suppressed": top_k_excluding(vals, k, exclude, largest=False)}


# ------------------------------------------------------------------ pipeline step


def run_step(run, arts: dict) -> dict:
    """Step `cards`: the data of every neuron card (see the module docstring)."""
    import sys

    from ..core.engine import per_example_losses
    from ..core.runner import LANGUAGES
    from .ablation import loss_summary, single_neuron_variants
    from .neurons import weird_tokens
    from .probes import single_neuron_probe

    p = run.profile
    ctx = str(run.context)

    def result_of(step):
        return arts[step]["result"] if step in arts else None

    cards = card_neurons(ctx, [str(n) for n in run.studied], result_of("neurons"),
                         result_of("downstream"), result_of("discovery"))
    neurons = [Neuron.parse(c["neuron"]) for c in cards]
    ablated = {r["neuron"]: r for r in arts["ablation"]["result"]["single"]}
    ablated.setdefault(ctx, arts["ablation"]["result"]["context"])
    toks = {lang: run.tokens(lang, p.activation_examples) for lang in LANGUAGES}
    loss_toks = {lang: run.tokens(lang, p.loss_examples) for lang in LANGUAGES}
    upstream = {s: arts[s]["key"] for s in ("activations", "ablation", "probes", "discovery",
                                            "downstream", "neurons") if s in arts}
    params = {"cards": cards, "context_neuron": ctx, "crop": [p.crop_start, p.crop_end],
              "examples_per_language": p.activation_examples, "hook": "mlp.hook_post",
              "top_examples": TOP_EXAMPLES, "window": list(WINDOW), "bins": HIST_BINS,
              "full_window": FULL_WINDOW, "short_window": list(SHORT_WINDOW),
              "quantiles": list(QUANTILES), "quantile_examples": QUANTILE_EXAMPLES,
              "negative_examples": NEGATIVE_EXAMPLES,
              "logit_top_k": LOGIT_TOP_K, "n_discovered": N_DISCOVERED,
              "n_downstream": N_DOWNSTREAM, "probe": {"n_per_language": p.probe_samples,
                                                      "test_size": p.probe_test_size,
                                                      "split_seed": p.seed},
              "loss_examples": p.loss_examples,
              "tokens": {lang: toks[lang][1] for lang in toks},
              "loss_tokens": {lang: loss_toks[lang][1] for lang in loss_toks}}

    def compute():
        from ..core.stats import METHODS

        samples, per_example = {}, {}
        for lang in LANGUAGES:
            samples[lang], per_example[lang] = card_activations(
                run.fwd, run.batches(toks[lang][0]), neurons, (p.crop_start, p.crop_end),
                desc=f"card activations {lang}", show_progress=run.show_progress)
        english_means = {str(n): float(samples["english"][:, j].astype(np.float64).mean())
                         for j, n in enumerate(neurons)}
        # mean ablation of the neurons the ablation step did not ablate
        todo = [n for c, n in zip(cards, neurons, strict=True) if ablate_here(c, list(ablated))]
        computed = {}
        if todo:
            variants = single_neuron_variants(todo, english_means)
            losses = {lang: per_example_losses(run.fwd, run.batches(loss_toks[lang][0]), variants,
                                               desc=f"card ablations {lang}",
                                               show_progress=run.show_progress)
                      for lang in LANGUAGES}
            for n in todo:
                computed[str(n)] = {"neuron": str(n), "value": english_means[str(n)],
                                    **{lang: loss_summary(losses[lang]["original"], losses[lang][str(n)])
                                       for lang in LANGUAGES}}
        weird = weird_tokens(run.fwd.w.W_U, run.fwd.w.W_E)["all"]
        f1_all = run.store.load_array("discovery", "f1") if "discovery" in arts else None
        ranked = {r["neuron"]: r["rank"] for r in (result_of("discovery") or {}).get("ranked", [])}
        shifts = {e["neuron"]: e for e in (result_of("neurons") or {}).get("neurons", [])}
        ds_mean = {f"L{L['layer']}N{r['neuron']}": r for L in (result_of("downstream") or {}).get("layers", [])
                   for r in L["top"]}

        def s(ids) -> list[str]:
            return run.model.to_str_tokens([int(i) for i in ids])

        out = []
        for j, (card, n) in enumerate(zip(cards, neurons, strict=True)):
            name = str(n)
            de, en = samples["german"][:, j], samples["english"][:, j]
            probe = single_neuron_probe(de, en, p.probe_samples, p.probe_test_size, p.seed)
            abl = ablated.get(name) or computed.get(name)
            _, logits = output_logits(run.fwd.w.W_out, run.fwd.w.W_U, n, weird)
            cols = {lang: [a[:, j] for a in per_example[lang]] for lang in LANGUAGES}

            def with_tokens(found: list[dict], j: int = j) -> list[dict]:
                out_ = []
                for t in found:
                    ids = toks[t["language"]][0][t["example"]]
                    acts = per_example[t["language"]][t["example"]][t["start"]:t["end"], j]
                    out_.append({**t, "token_ids": [int(i) for i in ids[t["start"]:t["end"]]],
                                 "tokens": s(ids[t["start"]:t["end"]]),
                                 "activations": [float(a) for a in acts]})
                return out_

            examples = with_tokens(top_activating(cols, short=SHORT_WINDOW))
            quantile = with_tokens(quantile_examples(
                cols, exclude=[(e["language"], e["example"]) for e in examples]))
            negative = with_tokens(most_negative(cols))
            relation = None
            if n.layer > run.context.layer and (name in shifts or name in ds_mean):
                relation = {"context_neuron": ctx,
                            "shift": shifts[name]["shift"] if name in shifts else None,
                            "mean_difference": ds_mean[name]["mean"] if name in ds_mean else None,
                            "std_difference": ds_mean[name]["std"] if name in ds_mean else None}
            out.append({
                **card, "layer": n.layer, "index": n.index,
                "density": density(de, en),
                "top_examples": examples,
                "quantile_examples": quantile,
                "negative_examples": negative,
                "firing": firing(de, en),
                "probe": probe,
                "ablation": None if abl is None else {
                    "value": abl["value"], "source": "ablation" if name in ablated else "cards",
                    **{lang: abl[lang] for lang in LANGUAGES}},
                "logits": {k: [{"id": int(i), "token": t, "value": float(v)}
                               for v, i, t in zip(vals.tolist(), ids.tolist(), s(ids.tolist()), strict=True)]
                           for k, (vals, ids) in logits.items()},
                "discovery": None if f1_all is None else {"f1": float(f1_all[n.layer, n.index]),
                                                          "rank": ranked.get(name)},
                "reads_context": relation,
            })
        downstream = [c["neuron"] for c in out if c["reads_context"]]
        for c in out:
            c["links"] = downstream if c["kind"] == "context" else ([ctx] if c["neuron"] != ctx else [])
        return {"context_neuron": ctx, "cards": out, "crop": [p.crop_start, p.crop_end],
                "hook": "mlp.hook_post", "n_examples": {lang: toks[lang][1]["used"] for lang in toks},
                "n_activations": {lang: int(len(samples[lang])) for lang in LANGUAGES},
                "window": list(WINDOW), "short_window": list(SHORT_WINDOW), "full_window": FULL_WINDOW,
                "quantiles": list(QUANTILES), "bins": HIST_BINS, "logit_top_k": LOGIT_TOP_K,
                "n_weird_tokens": int(len(weird)),
                "loss_examples": {lang: loss_toks[lang][1]["used"] for lang in LANGUAGES},
                "interval": {"probe": METHODS["probe"], "loss": METHODS["loss"]},
                "logit_definition": "W_out[layer, index] @ W_U: logits per unit of the neuron's "
                                    "activation (no LayerNorm), weird tokens excluded"}, {}

    inputs = run.inputs("cards", sys.modules[__name__], params, run.data_prov(*LANGUAGES), upstream)
    return run.step(inputs, compute)


def figures(run, arts: dict, fig_dir) -> list[dict]:
    """Per card: the activation density (German vs English) and the output-direction logits."""
    import figures.cards as cplots
    from figures.plots import save

    art = arts["cards"]
    r = art["result"]
    out = []
    for c in r["cards"]:
        n = c["neuron"]
        meta = {"step": "cards", "artifact_key": art["key"], "neuron": n, "card": n}
        out.append(save(cplots.card_density(c["density"], n), fig_dir, f"card_density_{n}", {
            **meta, "function": "figures.cards.card_density",
            "caption": f"{n} activation density (`blocks.{c['layer']}.mlp.hook_post`, positions "
                       f"{r['crop'][0]}–{r['crop'][1]} of {r['n_examples']['german']:,} German and "
                       f"{r['n_examples']['english']:,} English examples), percent of each "
                       "language's activations per bin, on a log scale (empty bins left out).",
            "seed_cell": None}))
        if c["logits"]["boosted"] or c["logits"]["suppressed"]:
            out.append(save(cplots.card_logits(c["logits"], n), fig_dir, f"card_logits_{n}", {
                **meta, "function": "figures.cards.card_logits",
                "caption": f"Direct logit effect of {n}'s output direction, `W_out[{c['layer']}, "
                           f"{c['index']}] @ W_U` (logits per unit of activation): the "
                           f"{len(c['logits']['boosted'])} most boosted and most suppressed tokens, "
                           "weird tokens excluded.",
                "seed_cell": None}))
    return out
