"""Individual downstream neurons of the context neuron (seed sections "Looking at individual
neurons", "Direct unembed", "Positive L5", "Negative L5" and "L5N1336").

For a neuron N in a layer after the context neuron's:

* its *context shift* (seed `get_mlp_context_shift`): the mean of N's `hook_pre` with the
  context neuron set to its inactive (English) mean minus the mean with it set to its active
  (German) mean, over English + German examples, positions `crop_start:crop_end`;
* its *unembedding* (seed `haystack_utils.get_neuron_unembed`): `W_out[layer, N]` scaled by
  (mean `hook_pre` with context active minus with context deactivated) through `W_U`, top
  boosted and inhibited tokens with the "weird" tokens excluded;
* its *top examples* (seed `get_examples_by_neuron` / `get_mlp_loss_difference` with
  `weight_by_logprob=True`): with the context neuron held active, N's `hook_pre` is moved by
  its shift; per token, loss(shifted) - loss(unshifted) + w * max(log-prob) of the target;
  examples ranked by the maximum over positions. One search per seed cell, each over the
  seed's pool for that cell (`SEED_SEARCHES`: `german_data[:500]` in "Positive L5",
  `german_data[:1000]` and `english_data[:500]` in "Negative L5", `german_data[:1000]` in
  "L5N1336"), capped by the profile's `neuron_examples`;
* heat maps of the per-token loss difference (seed `highlight_mlp_difference`) and the top
  predictions at one position (seed `get_top_differences_at_position`).

"Weird" tokens (seed `haystack_utils.get_weird_tokens`): `W_U.norm(dim=0) > 15` (unembedding
column norm) or `W_E.norm(dim=1) < 0.4` (embedding row norm), on the processed weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..core.config import Neuron
from ..core.engine import Batch, Edit, Forward, progress, set_neurons

# The seed's lists (cell "Looking at individual neurons"), found in Pythia-70M by the
# downstream activation-difference ranking for L3N669.
TOP_POSITIVE_L4 = (683, 482, 1445, 326, 1213, 578, 102, 1236, 45, 1791)
TOP_NEGATIVE_L4 = (1331, 1682, 1248, 1080, 233, 1187, 1677, 290, 1584, 1230)
TOP_POSITIVE_L5 = (1336, 1460, 1709, 1693, 395, 1528, 697, 316, 13, 312)
TOP_NEGATIVE_L5 = (1292, 213, 975, 134, 838, 1991, 1230, 752, 1804, 965)
SEED_LISTS = {"top_positive_l4": TOP_POSITIVE_L4, "top_negative_l4": TOP_NEGATIVE_L4,
              "top_positive_l5": TOP_POSITIVE_L5, "top_negative_l5": TOP_NEGATIVE_L5}

W_U_THRESHOLD = 15.0       # get_weird_tokens(w_u_threshold=15)
W_E_THRESHOLD = 0.4        # get_weird_tokens(w_e_threshold=0.4)
LOG_PROB_THRESHOLD = -7.0  # seed LOG_PROB_THRESHOLD
UNEMBED_TOP_K = 50         # seed get_neuron_unembed(..., top_k=50)
MAX_SHIFT_SAMPLES = 20_000  # activation samples kept per distribution for the histograms
L5N1336 = Neuron(5, 1336)


@dataclass(frozen=True)
class ExampleSearch:
    """One seed `get_examples_by_neuron` call: the examples it searched, its log-prob weight.

    The searched examples are the first `pool` of the language's corpus (seed
    `german_data[:pool]` / `english_data[:pool]`), capped by the profile's
    `neuron_examples`; `seed_call` is the seed's cell (None for the quick profile's
    stand-ins, which have no seed cell)."""

    language: str           # "german" or "english"
    pool: int               # seed `{language}_data[:pool]`
    log_prob_weight: float  # get_examples_by_neuron(log_prob_weight=...), default 0.5
    seed_cell: str          # the seed section of the call
    seed_call: str | None = None

    def as_dict(self) -> dict:
        return {"language": self.language, "seed_pool": self.pool,
                "log_prob_weight": self.log_prob_weight, "seed_cell": self.seed_cell,
                "seed_call": self.seed_call}


@dataclass(frozen=True)
class PlanEntry:
    """One neuron studied individually, and how the seed studied it."""

    neuron: Neuron
    role: str              # where it comes from, e.g. "top_negative_l5[1]"
    seed_cell: str
    searches: tuple[ExampleSearch, ...]

    def as_dict(self) -> dict:
        return {"neuron": str(self.neuron), "role": self.role, "seed_cell": self.seed_cell,
                "searches": [x.as_dict() for x in self.searches]}


# The seed's `get_examples_by_neuron` cells (execution count, call), each with its pool.
SEED_SEARCHES = {
    "top_positive_l5[0]": (ExampleSearch(
        "german", 500, 0.5, "Positive L5",
        "In [50]: get_examples_by_neuron(german_data[:500], neuron=top_positive_l5[0], layer=5, "
        "plot_hist=True, num_examples=5)"),),
    "top_positive_l5[1]": (ExampleSearch(
        "german", 500, 0.5, "Positive L5",
        "In [51]: get_examples_by_neuron(german_data[:500], neuron=top_positive_l5[1], layer=5, "
        "plot_hist=True, num_examples=5)"),),
    "top_positive_l5[2]": (ExampleSearch(
        "german", 500, 0.5, "Positive L5",
        "In [52]: get_examples_by_neuron(german_data[:500], neuron=top_positive_l5[2], layer=5, "
        "plot_hist=True, num_examples=5)"),),
    "top_negative_l5[1]": (
        ExampleSearch(
            "german", 1000, 0.3, "Negative L5",
            "In [119]: get_examples_by_neuron(german_data[:1000], neuron=neuron, layer=layer, "
            "plot_hist=False, num_examples=5, log_prob_weight=0.3)"),
        ExampleSearch(
            "english", 500, 0.5, "Negative L5",
            "In [95]: get_examples_by_neuron(english_data[:500], neuron=neuron, layer=layer, "
            "plot_hist=False, num_examples=5)")),
    "L5N1336": (ExampleSearch(
        "german", 1000, 0.5, "L5N1336",
        "In [111]: get_examples_by_neuron(german_data[:1000], neuron=neuron, layer=layer, "
        "num_examples=5)"),),
}


def neuron_plan(profile_name: str) -> list[PlanEntry]:
    """The neurons studied one by one, each with its example searches.

    `paper`: the seed's choices and its pools cell by cell: L5N1336 (= top_positive_l5[0];
    seed "Positive L5" searched `german_data[:500]`, section "L5N1336" `german_data[:1000]`),
    top_positive_l5[1] and [2] ("Positive L5", `german_data[:500]` each), top_negative_l5[1]
    ("Negative L5": `german_data[:1000]` with log-prob weight 0.3 and `english_data[:500]`
    with the default 0.5).
    Otherwise (quick): L5N1336 (its "L5N1336" search only: capped, the "Positive L5" pool
    would be the same examples), the first neuron of each L4 list (not searched in the seed:
    a German stand-in) and top_negative_l5[0] with the searches of the seed's negative L5
    neuron. `run_step` caps every pool by the profile's `neuron_examples`.
    """
    main_searches = SEED_SEARCHES["top_positive_l5[0]"] + SEED_SEARCHES["L5N1336"]
    main = PlanEntry(L5N1336, "L5N1336 = top_positive_l5[0]", "L5N1336", main_searches)
    if profile_name == "paper":
        return [main,
                PlanEntry(Neuron(5, TOP_POSITIVE_L5[1]), "top_positive_l5[1]", "Positive L5",
                          SEED_SEARCHES["top_positive_l5[1]"]),
                PlanEntry(Neuron(5, TOP_POSITIVE_L5[2]), "top_positive_l5[2]", "Positive L5",
                          SEED_SEARCHES["top_positive_l5[2]"]),
                PlanEntry(Neuron(5, TOP_NEGATIVE_L5[1]), "top_negative_l5[1]", "Negative L5",
                          SEED_SEARCHES["top_negative_l5[1]"])]
    stand_in = (ExampleSearch("german", 1000, 0.5, "Looking at individual neurons"),)
    return [PlanEntry(L5N1336, main.role, main.seed_cell, SEED_SEARCHES["L5N1336"]),
            PlanEntry(Neuron(4, TOP_POSITIVE_L4[0]), "top_positive_l4[0]", "Looking at individual neurons",
                      stand_in),
            PlanEntry(Neuron(4, TOP_NEGATIVE_L4[0]), "top_negative_l4[0]", "Looking at individual neurons",
                      stand_in),
            PlanEntry(Neuron(5, TOP_NEGATIVE_L5[0]), "top_negative_l5[0]", "Negative L5",
                      SEED_SEARCHES["top_negative_l5[1]"])]


def search_pool(search: ExampleSearch, cap: int) -> int:
    """Examples a search reads: the seed's pool for its cell, at most `cap` (the profile's
    `neuron_examples`)."""
    return min(search.pool, cap)


def resolve_plan(plan: Sequence[PlanEntry], context: Neuron, n_layers: int,
                 d_mlp: int) -> tuple[list[PlanEntry], list[dict]]:
    """Keep the entries whose neuron exists and sits after the context layer (a neuron in
    the context layer or before it does not read the context neuron: its shift is zero)."""
    keep, skipped = [], []
    for e in plan:
        n = e.neuron
        if not (0 <= n.layer < n_layers and 0 <= n.index < d_mlp):
            skipped.append({"neuron": str(n), "role": e.role, "reason": "not in this model"})
        elif n.layer <= context.layer:
            skipped.append({"neuron": str(n), "role": e.role,
                            "reason": f"not after the context neuron's layer {context.layer}"})
        else:
            keep.append(e)
    return keep, skipped


# The seed's prompts (section "L5N1336" and its "Direct unembed" cell).
PREPEND = "Alice und Bob besprechen die Arbeit. "
PROMPT_SETS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Prague and Vienna", "Direct unembed", (
        "Prague, the capital city of the Czech Republic",
        "Prague, the capital city of Tschechien",
        "Prag, die Hauptstadt von Tschechien",
        "Prag, die Hauptstadt von Tschechischen Republik",
        "Prag, die Hauptstadt von Czech Republic",
        "Vienna is the capital of Austria.",
        "Vienna is the capital of Österreich.",
        "Die Goethe-Universität in Frankfurt zählt zu den renommiertesten Universitäten Deutschlands.",
        "Ich plane einen Besuch in Frankfurt, um die imposante Skyline zu bewundern.",
        "Next summer, I'd like to go to Croatia",
        "Nächsten Sommer würde Ich gerne nach Kroatien gehen",
    )),
    ("Vorschläge", "L5N1336", (
        "Ich habe ein paar Vorschläge für die Verbesserung des Projekts.",
        "Welche Vorschläge hast du für die Gestaltung des neuen Logos?",
        "Die Lehrerin bat die Schüler um ihre Vorschläge für das Klassenprojekt.",
        "Ich habe einige Vorschläge für Aktivitäten während unseres Urlaubs.",
        "Die Geschäftsleitung freut sich über neue Vorschläge zur Prozessoptimierung.",
        "Die Politiker diskutieren verschiedene Vorschläge zur Lösung des Verkehrsproblems.",
        "Wir haben Vorschläge für die Tagesordnung der nächsten Teambesprechung gesammelt.",
        "Bitte senden Sie Ihre Vorschläge bis zum Ende der Woche ein.",
        "Die Firma nimmt gerne Kundenwünsche und Vorschläge entgegen.",
        "Die Arbeitsgruppe arbeitet gemeinsam an konkreten Vorschlägen zur Kostensenkung.",
    )),
    ("die gemeinsame", "L5N1336", (
        "Die gemeinsame Entscheidung führte zu einem positiven Ergebnis.",
        "Wir sollten die gemeinsame Zeit nutzen, um uns besser kennenzulernen.",
        "Die gemeinsame Verantwortung liegt bei uns allen.",
        "Wir sollten die gemeinsame Vision nicht aus den Augen verlieren.",
        "Die gemeinsame Anstrengung hat sich gelohnt.",
        "Die gemeinsame Reise war ein unvergessliches Erlebnis.",
        "Die gemeinsame Zusammenarbeit war äußerst effektiv.",
        "Die gemeinsame Interessenlage ermöglicht eine erfolgreiche Kooperation.",
        "Wir haben die gemeinsame Herausforderung erfolgreich gemeistert.",
        "Die gemeinsame Initiative hat zu bedeutenden Fortschritten geführt.",
    )),
    ("Gemeinsam (after a German sentence)", "L5N1336", tuple(PREPEND + s for s in (
        "Gemeinsam können wir Großes erreichen.",
        "Gemeinsam können wir Hindernisse überwinden.",
        "Gemeinsam sind wir stark.",
        "Gemeinsam können wir diese Aufgabe bewältigen.",
        "Gemeinsame Entscheidungen sind oft effektiver als individuelle.",
        "Gemeinsame Interessen verbinden Menschen miteinander.",
        "Gemeinsame Ziele sind der Schlüssel zum Erfolg.",
        "Gemeinsame Projekte eröffnen neue Möglichkeiten.",
    ))),
    ("gemeinsam mid-sentence (after a German sentence)", "L5N1336", tuple(PREPEND + s for s in (
        "Lass uns gemeinsam an diesem Projekt arbeiten.",
        "Wir haben gemeinsam viel Spaß.",
        "Lass uns gemeinsam neue Wege gehen.",
        "Wir haben gemeinsam viel erreicht.",
        "Lass uns gemeinsame Projekte starten.",
        "Wir haben gemeinsame Interessen.",
        "Lass uns gemeinsame Ziele verfolgen.",
        "Die Projekte, die sie gemeinsam bearbeitet haben",
        "Die Projekte, die sie gemeinsamen Partnern vorgestellt haben",
    ))),
    ("Geminsam and Gemeinschaft", "L5N1336", (
        "Lass uns die Geminsame",
        "Lass uns die Geminsam",
        "Lass uns die Geminsamkeiten",
        "Wir haben gemeinsam viel erreicht.",
        "Wir haben gemeinsame Interessen.",
        "In der Gemeinschaft sind wir stark.",
        "Eine starke Gemeinschaft baut auf Vertrauen und Zusammenhalt.",
        "In unserer Gemeinschaft werden gemeinsame Werte hochgeschätzt.",
    )),
)

HAUSHALT = ("zu diesem Zweck auf der Einnahmen- und der Ausgabenseite des Haushaltsplans eine "
            "spezielle Haushaltslinie zu schaffen und dabei den Haushaltsgrundsätzen der "
            "Spezialität und Neutralität Rechnung zu tragen, wobei")
# (prompt, seed position, top_k, which neuron: "L5N1336" or the studied negative L5 neuron)
POSITION_PROMPTS: tuple[tuple[str, int, int, str, str], ...] = (
    ("Die Lehrerin bat die Schüler um ihre Vorschläge", -3, 10, "L5N1336", "L5N1336"),
    ("Wir haben gemeinsam viel erreicht.", 6, 5, "L5N1336", "L5N1336"),
    (HAUSHALT, -3, 5, "negative_l5", "Negative L5"),
)


# ------------------------------------------------------------------ pure functions


def weird_tokens(W_U: Tensor, W_E: Tensor, w_u_threshold: float = W_U_THRESHOLD,
                 w_e_threshold: float = W_E_THRESHOLD) -> dict[str, np.ndarray]:
    """Token ids whose unembedding column norm exceeds `w_u_threshold` or whose embedding
    row norm is below `w_e_threshold` (seed `get_weird_tokens`; `W_U` is
    `[d_model, d_vocab]`, `W_E` is `[d_vocab, d_model]`)."""
    # float32 norms of (possibly bf16) weights: a bf16 norm would move the thresholds' cut
    w_u_norm = W_U.float().norm(dim=0)
    w_e_norm = W_E.float().norm(dim=1)
    by_u = w_u_norm > w_u_threshold
    by_e = w_e_norm < w_e_threshold

    def ids(mask: Tensor) -> np.ndarray:
        return torch.nonzero(mask).flatten().cpu().numpy().astype(np.int64)

    return {"w_u": ids(by_u), "w_e": ids(by_e), "all": ids(by_u | by_e),
            "w_u_norm": w_u_norm.double().cpu().numpy(), "w_e_norm": w_e_norm.double().cpu().numpy()}


def top_k_excluding(values: Tensor, k: int, exclude: Tensor | np.ndarray | Sequence[int],
                    largest: bool = True) -> tuple[Tensor, Tensor]:
    """The top `k` values (and indices) of a 1-d tensor, never an excluded index (seed
    `haystack_utils.top_k_with_exclude`); fewer than `k` when fewer remain."""
    v = values.detach().clone().double()
    ex = torch.as_tensor(np.asarray(exclude, dtype=np.int64), device=v.device)
    if ex.numel():
        v[ex] = -float("inf") if largest else float("inf")
    k = min(k, int(v.numel() - torch.unique(ex).numel()))
    vals, idx = torch.topk(v, k=max(k, 0), largest=largest)
    return values[idx], idx


def neuron_unembed(W_out: Tensor, W_U: Tensor, neuron: Neuron, mean_active: float,
                   mean_inactive: float) -> Tensor:
    """Direct logit effect of the neuron moving from `mean_inactive` to `mean_active`
    (seed `get_neuron_unembed`: `unembed(W_out[l, n] * active) - unembed(W_out[l, n] * inactive)`;
    the bias cancels, no final LayerNorm). `[d_vocab]`, float32 (of bf16 weights in a
    bfloat16 run: a statistic of the weights, not a forward matmul)."""
    return (W_out[neuron.layer, neuron.index].float() * (mean_active - mean_inactive)) @ W_U.float()


def add_to_neurons(indices: Sequence[int], delta: float) -> Edit:
    """An edit that adds `delta` to neurons `indices` (seed `value[:, :, neuron] += shift`)."""
    idx = list(indices)

    def fn(x: Tensor) -> Tensor:
        x = x.clone()
        x[..., idx] += delta
        return x

    return fn


def context_shift_samples(fwd: Forward, batches: Sequence[Batch], context: Neuron, active: float,
                          inactive: float, neurons: Sequence[Neuron], crop: tuple[int, int],
                          show_progress: bool = True) -> tuple[dict[str, np.ndarray], int]:
    """`hook_pre` of `neurons` at positions `crop[0]:crop[1]` of every example with the
    context neuron's `hook_post` set to `inactive` ("deactivated") and to `active`
    ("activated") (seed `DEACTIVATED_ACTIVATIONS` / `ACTIVATED_ACTIVATIONS`, from
    `get_mlp_activations(..., hook_pre=True)`). A neuron's context shift is
    `samples["deactivated"][:, j].mean() - samples["activated"][:, j].mean()`.

    Returns ({"deactivated": float32 [n, len(neurons)], "activated": ...}, n), rows in
    example order then position order (as the seed concatenates them).

    The blocks before the context layer run once per batch; both variants restart from
    there and stop after the last layer of `neurons`.
    """
    if any(n.layer <= context.layer for n in neurons):
        raise ValueError("every neuron must come after the context layer")
    start, end = crop
    names = sorted({n.hook("hook_pre") for n in neurons})
    stop = max(n.layer for n in neurons) + 1
    per_example: dict[str, dict[int, np.ndarray]] = {"deactivated": {}, "activated": {}}
    with torch.inference_mode():
        for batch in progress(batches, "context shift", show_progress):
            prefix = fwd.run(batch.tokens, stop_layer=context.layer)
            for name, value in (("deactivated", inactive), ("activated", active)):
                cap = dict.fromkeys(names)
                fwd.run(resid=prefix, start_layer=context.layer, stop_layer=stop,
                        edits={context.hook(): set_neurons([context.index], value)}, capture=cap)
                cols = torch.stack([cap[n.hook("hook_pre")][..., n.index] for n in neurons], -1)
                for row, ex in enumerate(batch.index):
                    hi = min(end, int(batch.lengths[row]))
                    per_example[name][ex] = cols[row, start:max(hi, start)].float().cpu().numpy()
    samples = {name: (np.concatenate([d[i] for i in sorted(d)], axis=0) if d
                      else np.zeros((0, len(neurons)), dtype=np.float32))
               for name, d in per_example.items()}
    return samples, int(len(samples["activated"]))


def shift_loss_differences(fwd: Forward, batches: Sequence[Batch], context: Neuron,
                           active_value: float, shifts: Sequence[tuple[Neuron, float]],
                           desc: str = "loss differences", show_progress: bool = True) -> list[list[dict]]:
    """Per-token losses with the context neuron held at `active_value`, without and with
    each neuron's `hook_pre` moved by its shift (seed `get_mlp_loss_difference` and
    `highlight_mlp_difference`).

    The prefix before the context layer runs once per batch; the unshifted pass runs once
    from there and caches `hook_resid_pre` of every shifted neuron's layer; each shifted
    pass restarts from that cache. Losses come from the chunked unembedding.

    Returns:
        out[j][i]: for shift j and example i (caller order), float64 arrays over the
        positions with a target (token t+1 predicted at t): `loss_difference` (shifted
        minus unshifted loss), `original_logprob`, `ablated_logprob` (of the target).
    """
    if any(n.layer <= context.layer for n, _ in shifts):
        raise ValueError("every shifted neuron must come after the context layer")
    n_ex = sum(len(b.index) for b in batches)
    out: list[list[dict]] = [[{} for _ in range(n_ex)] for _ in shifts]
    ctx_edit = {context.hook(): set_neurons([context.index], active_value)}
    names = {n.layer: f"blocks.{n.layer}.hook_resid_pre" for n, _ in shifts}
    with torch.inference_mode():
        for batch in progress(batches, desc, show_progress):
            prefix = fwd.run(batch.tokens, stop_layer=context.layer)
            cap = dict.fromkeys(names.values())
            final = fwd.run(resid=prefix, start_layer=context.layer, edits=ctx_edit, capture=cap)
            base = fwd.token_losses(final, batch.tokens, batch.lengths).double().cpu().numpy()
            for j, (nrn, delta) in enumerate(shifts):
                r = fwd.run(resid=cap[names[nrn.layer]], start_layer=nrn.layer,
                            edits={nrn.hook("hook_pre"): add_to_neurons([nrn.index], delta)})
                abl = fwd.token_losses(r, batch.tokens, batch.lengths).double().cpu().numpy()
                for row, ex in enumerate(batch.index):
                    m = int(batch.lengths[row]) - 1
                    out[j][ex] = {"loss_difference": abl[row, :m] - base[row, :m],
                                  "original_logprob": -base[row, :m], "ablated_logprob": -abl[row, :m]}
    return out


def weighted_max(per_token: dict, log_prob_weight: float) -> tuple[float, int]:
    """Seed `get_mlp_loss_difference(weight_by_logprob=True)`: the maximum over positions of
    `loss_difference + log_prob_weight * max(original, ablated log-prob)`, and where."""
    score = per_token["loss_difference"] + log_prob_weight * np.maximum(
        per_token["original_logprob"], per_token["ablated_logprob"])
    if len(score) == 0:
        return float("-inf"), -1
    i = int(np.argmax(score))
    return float(score[i]), i


def top_indices(scores: np.ndarray, k: int) -> list[int]:
    """Indices of the `k` largest finite scores, best first, ties by lower index."""
    finite = [i for i in range(len(scores)) if np.isfinite(scores[i])]
    finite.sort(key=lambda i: (-scores[i], i))
    return finite[:k]


def position_index(n_tokens: int, position: int) -> int | None:
    """The seed's `position` (an index into the BOS-prefixed tokens, negative from the end)
    as a non-negative index, or None if there is no next token to predict from it."""
    idx = position if position >= 0 else n_tokens + position
    return idx if 0 <= idx <= n_tokens - 2 else None


def position_logprobs(fwd: Forward, tokens: Sequence[int], context: Neuron, active_value: float,
                      neuron: Neuron, delta: float, index: int) -> tuple[Tensor, Tensor]:
    """Log-probabilities over the vocabulary at token `index` (the prediction of token
    `index + 1`), context neuron held active, without and with the neuron's shift."""
    t = torch.tensor([list(tokens)], dtype=torch.long, device=fwd.w.device)
    with torch.inference_mode():
        prefix = fwd.run(t, stop_layer=context.layer)
        name = f"blocks.{neuron.layer}.hook_resid_pre"
        cap = {name: None}
        final = fwd.run(resid=prefix, start_layer=context.layer,
                        edits={context.hook(): set_neurons([context.index], active_value)}, capture=cap)
        abl = fwd.run(resid=cap[name], start_layer=neuron.layer,
                      edits={neuron.hook("hook_pre"): add_to_neurons([neuron.index], delta)})
        orig_lp = fwd.logits(final[0, index]).double().log_softmax(-1)
        abl_lp = fwd.logits(abl[0, index]).double().log_softmax(-1)
    return orig_lp.cpu(), abl_lp.cpu()


def top_differences(original: Tensor, ablated: Tensor, exclude: np.ndarray, k: int,
                    threshold: float = LOG_PROB_THRESHOLD) -> dict[str, list[dict]]:
    """Seed `get_top_differences_at_position`: excluding the weird tokens and every token
    with both log-probs <= `threshold`, the top `k` tokens with the neuron active
    (unablated), with it shifted (ablated), and by `original - ablated` log-prob
    (boosted: largest; reduced: smallest)."""
    low = torch.nonzero((original <= threshold) & (ablated <= threshold)).flatten().numpy()
    ex = np.union1d(np.asarray(exclude, dtype=np.int64), low)
    diff = original - ablated

    def rows(idx: Tensor) -> list[dict]:
        return [{"id": int(i), "difference": float(diff[i]), "original": float(original[i]),
                 "ablated": float(ablated[i])} for i in idx]

    return {"active_top": rows(top_k_excluding(original, k, ex)[1]),
            "ablated_top": rows(top_k_excluding(ablated, k, ex)[1]),
            "boosted": rows(top_k_excluding(diff, k, ex)[1]),
            "reduced": rows(top_k_excluding(diff, k, ex, largest=False)[1])}


def even_subsample(n: int, m: int) -> np.ndarray:
    """`min(n, m)` evenly spaced indices of `range(n)` (deterministic)."""
    if n <= m:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, m).round().astype(np.int64))


# ------------------------------------------------------------------ pipeline step


def run_step(run, arts: dict) -> dict:
    """Step `neurons`: context shift, unembedding, top examples and heat maps of the seed's
    individually studied neurons; the weird-token filter; the seed's prompts (seed sections
    "Looking at individual neurons", "Direct unembed", "Positive L5", "Negative L5",
    "L5N1336"; the example searches are the seed's `get_examples_by_neuron` cells In [50],
    In [51], In [52], In [119], In [95] and In [111], see `SEED_SEARCHES`)."""
    import sys

    from ..core.errors import ReportError
    from ..core.runner import LANGUAGES

    p = run.profile
    ctx = run.context
    w = run.fwd.w
    acts = arts["activations"]["result"]
    active, inactive = acts["context_mean_active"], acts["context_mean_inactive"]
    plan, skipped = resolve_plan(neuron_plan(p.name), ctx, w.n_layers, w.d_mlp)
    neurons = [e.neuron for e in plan]
    # Positions >= crop_end never influence the kept ones (causal attention): cut them.
    shift_toks = {lang: run.tokens(lang, p.shift_examples) for lang in ("english", "german")}
    # Example searches: per language, the largest pool any search of that language reads
    # (a smaller pool's examples are its first ones: the same token lists, a prefix).
    pools: dict[str, int] = {}
    for e in plan:
        for x in e.searches:
            pools[x.language] = max(pools.get(x.language, 0), search_pool(x, p.neuron_examples))
    ex_toks = {lang: run.tokens(lang, n) for lang, n in sorted(pools.items())}
    pool_used: dict[tuple[str, int], int] = {}  # examples with a target in each search's pool
    for e in plan:
        for x in e.searches:
            n = search_pool(x, p.neuron_examples)
            pool_used[(x.language, n)] = run.tokens(x.language, n)[1]["used"]
    params = {"context_neuron": str(ctx), "active_value": active, "inactive_value": inactive,
              "plan": [e.as_dict() for e in plan], "skipped": skipped,
              "shift_examples_per_language": p.shift_examples, "crop": [p.crop_start, p.crop_end],
              "neuron_examples": p.neuron_examples, "top_examples": p.top_examples,
              "w_u_threshold": W_U_THRESHOLD, "w_e_threshold": W_E_THRESHOLD,
              "log_prob_threshold": LOG_PROB_THRESHOLD, "unembed_top_k": UNEMBED_TOP_K,
              "max_shift_samples": MAX_SHIFT_SAMPLES,
              "prompt_sets": [[name, cell, list(texts)] for name, cell, texts in PROMPT_SETS],
              "position_prompts": [list(x) for x in POSITION_PROMPTS],
              "tokens": {"shift": {k: v[1] for k, v in shift_toks.items()},
                         "examples": {k: v[1] for k, v in ex_toks.items()}}}

    def compute():
        def s(ids) -> list[str]:
            return run.model.to_str_tokens(ids)

        weird = weird_tokens(w.W_U, w.W_E)
        result: dict = {
            "context_neuron": str(ctx), "active_value": active, "inactive_value": inactive,
            "weird_tokens": {"w_u_threshold": W_U_THRESHOLD, "w_e_threshold": W_E_THRESHOLD,
                             "n_w_u": len(weird["w_u"]), "n_w_e": len(weird["w_e"]),
                             "n_unique": len(weird["all"]), "d_vocab": int(w.W_U.shape[1]),
                             "w_u_norm_max": float(weird["w_u_norm"].max()),
                             "w_e_norm_min": float(weird["w_e_norm"].min())},
            "log_prob_threshold": LOG_PROB_THRESHOLD, "plan": [e.as_dict() for e in plan],
            "skipped": skipped, "neurons": [], "prompt_sets": [], "positions": [],
        }
        arrays: dict[str, np.ndarray] = {"weird_token_ids": weird["all"]}
        if not plan:
            return result, arrays

        # 1. Context shift: hook_pre with the context neuron deactivated vs activated
        # (seed order: english_data[:n] + german_data[:n]).
        toks = [t[: p.crop_end] for t in shift_toks["english"][0] + shift_toks["german"][0]]
        samples, count = context_shift_samples(run.fwd, run.batches(toks), ctx, active, inactive,
                                               neurons, (p.crop_start, p.crop_end),
                                               show_progress=run.show_progress)
        if count == 0:
            raise ReportError("no context-shift activation was collected: every example is "
                              f"shorter than the crop start ({p.crop_start} tokens)")
        keep = even_subsample(count, MAX_SHIFT_SAMPLES)
        arrays["shift_deactivated"] = samples["deactivated"][keep]
        arrays["shift_activated"] = samples["activated"][keep]
        result["shift"] = {
            "hook": "mlp.hook_pre", "crop": [p.crop_start, p.crop_end],
            "n_examples": {k: v[1]["used"] for k, v in shift_toks.items()}, "n_activations": count,
            "n_samples_kept": int(len(keep)), "columns": [str(n) for n in neurons],
            "definition": "mean hook_pre with the context neuron at its inactive mean minus the "
                          "mean with it at its active mean"}
        entries = []
        for col, e in enumerate(plan):
            n = e.neuron
            m_act = float(samples["activated"][:, col].astype(np.float64).mean())
            m_deact = float(samples["deactivated"][:, col].astype(np.float64).mean())
            vals = neuron_unembed(w.W_out, w.W_U, n, m_act, m_deact)
            b_v, b_i = top_k_excluding(vals, UNEMBED_TOP_K, weird["all"])
            i_v, i_i = top_k_excluding(vals, UNEMBED_TOP_K, weird["all"], largest=False)
            entries.append({
                "neuron": str(n), "role": e.role, "seed_cell": e.seed_cell,
                "layer": n.layer, "index": n.index,
                "mean_activated": m_act, "mean_deactivated": m_deact, "shift": m_deact - m_act,
                "unembed": {
                    "boosted": [{"id": int(i), "token": t, "value": float(v)}
                                for i, t, v in zip(b_i, s(b_i), b_v, strict=True)],
                    "inhibited": [{"id": int(i), "token": t, "value": float(v)}
                                  for i, t, v in zip(i_i, s(i_i), i_v, strict=True)]},
            })

        # 2. Top examples by the log-prob-weighted loss difference, one search per seed
        # `get_examples_by_neuron` cell: per language, one pass over the largest pool for
        # every neuron searched in it; each search ranks the first examples of its own pool.
        per_tok: dict[str, dict[str, list[dict]]] = {}
        for lang, (toks_l, _) in ex_toks.items():
            who = [(e.neuron, ent["shift"]) for e, ent in zip(plan, entries, strict=True)
                   if any(x.language == lang for x in e.searches)]
            out = shift_loss_differences(run.fwd, run.batches(toks_l), ctx, active, who,
                                         desc=f"loss differences {lang}",
                                         show_progress=run.show_progress)
            per_tok[lang] = {str(n): pts for (n, _), pts in zip(who, out, strict=True)}
        searches = [(j, x) for j, e in enumerate(plan) for x in e.searches]
        width = max(len(t) for t, _ in ex_toks.values())
        scores = np.full((len(searches), width), np.nan, dtype=np.float64)
        for ent in entries:
            ent["example_searches"] = []
        for row, (j, x) in enumerate(searches):
            ent = entries[j]
            toks_l = ex_toks[x.language][0]
            pool = search_pool(x, p.neuron_examples)
            n_used = pool_used[(x.language, pool)]
            pts = per_tok[x.language][ent["neuron"]][:n_used]
            where = []
            for i, pt in enumerate(pts):
                scores[row, i], pos = weighted_max(pt, x.log_prob_weight)
                where.append(pos)
            top = []
            for i in top_indices(scores[row, :n_used], p.top_examples):
                pt = pts[i]
                top.append({"example": i, "score": float(scores[row, i]), "position": where[i],
                            "token_ids": [int(t) for t in toks_l[i][1:]],
                            "tokens": s(toks_l[i][1:]),
                            **{k: [float(v) for v in vals] for k, vals in pt.items()}})
            ent["example_searches"].append({
                **x.as_dict(), "pool": pool, "n_examples": n_used, "scores_row": row,
                "top": top})
        arrays["example_scores"] = scores
        result["neurons"] = entries

        # 3. The seed's prompts for L5N1336 (heat maps) and the top predictions at a position.
        by_name = {ent["neuron"]: ent for ent in entries}
        negative = next((ent for ent in entries if "negative_l5" in ent["role"]), None)
        main = by_name.get(str(L5N1336))
        if main is not None:
            for name, cell, texts in PROMPT_SETS:
                tl = [run.model.to_tokens(t) for t in texts]
                keep_i = [i for i, t in enumerate(tl) if len(t) >= 2]
                res = shift_loss_differences(run.fwd, run.batches([tl[i] for i in keep_i]), ctx,
                                             active, [(L5N1336, main["shift"])], desc=name,
                                             show_progress=False)[0]
                result["prompt_sets"].append({
                    "name": name, "seed_cell": cell, "neuron": str(L5N1336), "shift": main["shift"],
                    "prompts": [{"text": texts[i], "tokens": s(tl[i][1:]),
                                 **{k: [float(x) for x in v] for k, v in r.items()}}
                                for i, r in zip(keep_i, res, strict=True)]})
        for text, position, k, who, cell in POSITION_PROMPTS:
            ent = main if who == "L5N1336" else negative
            if ent is None:
                continue
            nrn = Neuron(ent["layer"], ent["index"])
            tok = run.model.to_tokens(text)
            idx = position_index(len(tok), position)
            row = {"prompt": text, "neuron": ent["neuron"], "role": ent["role"], "seed_cell": cell,
                   "position": position, "top_k": k, "n_tokens": len(tok), "index": idx}
            if idx is None:
                row["skipped"] = (f"the prompt has {len(tok)} tokens (BOS included), so position "
                                  f"{position} has no next token")
            else:
                orig, abl = position_logprobs(run.fwd, tok, ctx, active, nrn, ent["shift"], idx)
                row["from_token"], row["to_token"] = s([tok[idx], tok[idx + 1]])
                lists = top_differences(orig, abl, weird["all"], k)
                # the best log-prob left after the weird-token exclusion: when the lists come
                # out empty, the report says how far below the cut the model's best guess is
                keep = torch.from_numpy(np.setdiff1d(np.arange(len(orig)), weird["all"]))
                row["max_logprob"] = {"original": float(orig[keep].max()) if len(keep) else None,
                                      "ablated": float(abl[keep].max()) if len(keep) else None}
                for rows in lists.values():
                    for r, t in zip(rows, s([r["id"] for r in rows]), strict=True):
                        r["token"] = t
                row.update(lists)
            result["positions"].append(row)
        return result, arrays

    inputs = run.inputs("neurons", sys.modules[__name__], params,
                        run.data_prov(*LANGUAGES), {"activations": arts["activations"]["key"]})
    return run.step(inputs, compute)


def figures(run, arts: dict, fig_dir) -> list[dict]:
    """Per studied neuron: the context-shift histogram and the unembedding."""
    import figures.neurons as nplots
    from figures.plots import save

    art = arts["neurons"]
    res = art["result"]
    if not res["neurons"]:
        return []
    act = run.store.load_array("neurons", "shift_activated")
    deact = run.store.load_array("neurons", "shift_deactivated")
    out = []
    for col, ent in enumerate(res["neurons"]):
        n = ent["neuron"]
        fig = nplots.shift_histogram(deact[:, col], act[:, col], n, ent["shift"])
        out.append(save(fig, fig_dir, f"shift_hist_{n}", {
            "step": "neurons", "artifact_key": art["key"], "function": "figures.neurons.shift_histogram",
            "caption": f"{n} pre-activation (`hook_pre`) with the context neuron "
                       f"{res['context_neuron']} deactivated vs activated, positions "
                       f"{res['shift']['crop'][0]}–{res['shift']['crop'][1]} of English + German "
                       f"examples (shift = deactivated mean − activated mean).",
            "seed_cell": ent["seed_cell"] + " (get_mlp_context_shift)", "neuron": n,
        }))
        un = ent["unembed"]
        if not (un["boosted"] or un["inhibited"]):
            continue  # every token is excluded: nothing to plot (the report says so)
        fig = nplots.unembed_tokens(un["boosted"], un["inhibited"], n)
        out.append(save(fig, fig_dir, f"unembed_{n}", {
            "step": "neurons", "artifact_key": art["key"], "function": "figures.neurons.unembed_tokens",
            "caption": f"Direct unembedding of {n}: `W_out[{ent['layer']}, {ent['index']}]` × "
                       "(activated − deactivated mean `hook_pre`) through `W_U`; the most boosted and "
                       "most inhibited tokens, weird tokens excluded.",
            "seed_cell": "Direct unembed (get_neuron_unembed)", "neuron": n,
        }))
    return out
