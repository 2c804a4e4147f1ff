"""Degenerate output: what the report summarises in one sentence, with its reason and the
numbers behind it, instead of printing it as if it meant something.

Each rule is a pure function of artifact rows (and a display threshold of the profile,
`analysis.core.config.Profile.heatmap_min_delta_e` / `negligible_percent`); it returns None
(or nothing to leave out) when the output carries signal and is printed in full, else the
sentence that replaces it. The templates reach them through `Rules`, bound to the run's
profile (template variable `degenerate`).

The rules and their principles:

* `blank_heatmaps`: the most coloured token of a set of heat maps is within a
  just-noticeable colour difference of white, so every token would look white;
* `same_picks`: two neurons' example searches over the same examples pick the same
  examples, so the picks do not depend on the neuron (the score's log-prob term decides);
* `empty_predictions`: every token list at a position is empty, because the model's best
  log-prob there is below the seed's cut;
* `negligible_rows`: mean-ablation rows whose value and interval print as ±0.00;
* `noise_ratios`: backup ratios whose denominator (B alone) prints as ±0.00.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

LANGUAGES = ("german", "english")


def names(items: Sequence[Any]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    items = [str(i) for i in items]
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _lab(rgb: Sequence[int]) -> tuple[float, float, float]:
    # sRGB (D65) -> CIE L*a*b*, the textbook formulas
    def lin(c: float) -> float:
        c /= 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(c) for c in rgb)
    xyz = (0.4124 * r + 0.3576 * g + 0.1805 * b, 0.2126 * r + 0.7152 * g + 0.0722 * b,
           0.0193 * r + 0.1192 * g + 0.9505 * b)
    white = (0.9505, 1.0, 1.089)

    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    fx, fy, fz = (f(v / w) for v, w in zip(xyz, white, strict=True))
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def delta_e(rgb1: Sequence[int], rgb2: Sequence[int] = (255, 255, 255)) -> float:
    """CIE76 colour difference of two sRGB colours (default: from white)."""
    return math.dist(_lab(rgb1), _lab(rgb2))


def blank_heatmaps(values: Sequence[Sequence[float | None]], scale: float, min_delta_e: float,
                   what: str = "loss difference", unit: str = "nats") -> str | None:
    """Heat maps (one value list each, coloured by `figures.neurons.token_rgb` on ±`scale`)
    that would be blank to the eye: the most coloured token differs from white by less than
    `min_delta_e` (CIE76). Returns the sentence that replaces them, or None (draw them)."""
    from figures.neurons import hex_color, token_rgb

    flat = [v for vs in values for v in vs if v is not None and math.isfinite(v)]
    if not flat:
        return None
    peak = max(flat, key=abs)
    rgb = token_rgb(peak, scale)
    de = delta_e(rgb)
    if de >= min_delta_e:
        return None
    n = len(values)
    return (f"{'The heat map is' if n == 1 else f'The {n} heat maps are'} not drawn: over "
            f"{len(flat):,} tokens the largest |{what}| is {abs(peak):.2g} {unit}, "
            f"{100 * abs(peak) / scale:.2g}% of the colour scale (±{scale:g} "
            f"{unit[:-1] if scale == 1 and unit.endswith('s') else unit}); its colour "
            f"{hex_color(rgb)} differs from white by ΔE {de:.1f}, below the just-noticeable "
            f"{min_delta_e:g}, so every token would look white.")


def search_terms(search: Mapping[str, Any]) -> list[tuple[float, float]]:
    """(loss difference, log-prob term) at each pick's best token: a pick's score is their
    sum, the loss difference plus the log-prob weight × the larger log-prob of the target."""
    w = search["log_prob_weight"]
    out = []
    for t in search["top"]:
        p = t["position"]
        out.append((t["loss_difference"][p],
                    w * max(t["original_logprob"][p], t["ablated_logprob"][p])))
    return out


def same_picks(searches: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[int, str]:
    """Example searches whose picks do not depend on the neuron. `searches`: (neuron,
    search) pairs, in any order; a search is flagged when another neuron's search over the
    same pool (language and size) picks the same examples in the same order. Returns, by
    index into `searches`, the sentence that says so with each pick's two score terms."""
    out: dict[int, str] = {}
    for i, (neuron, x) in enumerate(searches):
        picks = [t["example"] for t in x["top"]]
        if not picks:
            continue
        same = [n for j, (n, y) in enumerate(searches) if j != i and n != neuron
                and (y["language"], y["pool"]) == (x["language"], x["pool"])
                and [t["example"] for t in y["top"]] == picks]
        if not same:
            continue
        terms = search_terms(x)
        loss = max(abs(d) for d, _ in terms)
        lo, hi = min(t for _, t in terms), max(t for _, t in terms)
        span = f"{lo:+.2f}" if f"{lo:+.2f}" == f"{hi:+.2f}" else f"{lo:+.2f} to {hi:+.2f}"
        out[i] = (f"The picks do not depend on {neuron}: the search for {names(sorted(set(same)))} "
                  f"over the same {x['pool']:,} {x['language'].capitalize()} examples picks the same "
                  f"examples ({names(picks)}). At each pick's best token the loss difference is at "
                  f"most {loss:.2g} nats, while the log-prob term ({x['log_prob_weight']:g} × "
                  f"log-prob) is {span}: the ranking is the model's "
                  "confidence, not this neuron's effect.")
    return out


def empty_predictions(row: Mapping[str, Any], threshold: float, d_vocab: int | None) -> str | None:
    """A "top predictions at one position" row whose four token lists are all empty (every
    token but the weird ones has both log-probs ≤ `threshold`). Returns the sentence that
    replaces the four lists, with the best log-prob left (`max_logprob`, when recorded)
    and the uniform guess's (or, when every token is weird, that), or None."""
    if "skipped" in row or any(row.get(k) for k in ("active_top", "ablated_top", "boosted", "reduced")):
        return None
    best = row.get("max_logprob") or {}
    vals = [v for v in (best.get("original"), best.get("ablated")) if v is not None]
    if best and not vals:  # recorded, and no token survived the weird-token exclusion
        return (f"No token is listed: every one of the model's {d_vocab or 'tokens'}"
                f"{' tokens' if d_vocab else ''} is a weird token (excluded from every list), "
                "so none is left to rank.")
    text = (f"No token is listed: with {row['neuron']} as it is and shifted, every token other "
            f"than the weird ones has log-prob ≤ {threshold:g}, the seed's cut")
    if vals:
        text += f" (the best is {max(vals):.2f}"
        if d_vocab:
            text += (f"; a uniform guess over {d_vocab:,} tokens has −ln {d_vocab:,} = "
                     f"{-math.log(d_vocab):.2f}")
        text += ")"
    return text + ": the model predicts nothing at this position with any confidence."


def empty_lists(lists: Mapping[str, Sequence[Any]], what: str, weird: Mapping[str, Any]) -> str | None:
    """Token lists (`lists`, by name) that are all empty, for the reason the `weird_tokens`
    record gives (every token of the model is weird, so every list is empty); the sentence
    that replaces them, or None when any list has a token."""
    if any(lists.values()):
        return None
    why = (f"every one of the model's {weird['d_vocab']:,} tokens is a weird token (excluded)"
           if weird.get("n_unique") == weird.get("d_vocab") else
           f"the {weird.get('n_unique', 0):,} weird tokens are excluded and no other token ranks")
    return f"No token is listed for {what}: {why}."


def negligible(values: Sequence[float | None], bound: float) -> bool:
    """True when every value given lies within ±`bound` (it prints as ±0.00)."""
    return all(v is None or abs(v) < bound for v in values)


def _numbers(r: Mapping[str, Any]) -> list[float | None]:
    return [v for lang in LANGUAGES
            for v in (r[lang]["percent_increase"], *(r[lang].get("percent_increase_ci") or ()))]


def negligible_rows(rows: Sequence[Mapping[str, Any]], bound: float, keep: Sequence[str] = (),
                    seed: Mapping[str, Any] | None = None) -> tuple[list[str], str | None]:
    """Mean-ablation rows (`neuron`, and per language `percent_increase` with its
    `percent_increase_ci`) whose every number lies within ±`bound` percent: they print as
    +0.00 [+0.00, +0.00]. Rows in `keep` (the context neuron) and rows the seed printed a
    value beyond `bound` for (`seed[neuron][language]["percent_increase"]`: the comparison
    is the point) always stay. Returns (the neurons left in the table, the sentence about
    the others, or None when none is left out)."""
    seed = seed or {}
    flat = []
    for r in rows:
        s = seed.get(r["neuron"], {})
        seeded = [s.get(lang, {}).get("percent_increase") for lang in LANGUAGES]
        if r["neuron"] not in keep and negligible(_numbers(r), bound) and negligible(seeded, bound):
            flat.append(r)
    if not flat:
        return [r["neuron"] for r in rows], None
    largest = max(abs(v) for r in flat for v in _numbers(r) if v is not None)
    shown = [r["neuron"] for r in rows if r not in flat]
    n = len(flat)
    return shown, (f"{names([r['neuron'] for r in flat])} ({n} of {len(rows)} neurons) "
                   f"{'is' if n == 1 else 'are'} left out of the table: "
                   f"{'its' if n == 1 else 'each one’s'} German and English loss changes and their "
                   f"95% intervals all lie within ±{bound:g}% (the largest |value| is "
                   f"{largest:.2g}%), so {'it' if n == 1 else 'they'} would print as "
                   "+0.00 [+0.00, +0.00]: mean-ablating "
                   f"{'it' if n == 1 else 'them'} changes neither loss at this precision.")


def noise_ratios(rows: Sequence[Mapping[str, Any]], bound: float) -> tuple[list[str], str | None]:
    """Backup rows (`neuron`, `b`: B alone, percent) whose ratio excess / B divides by a B
    within ±`bound`% (it prints as ±0.00 in the mean-ablation table): the ratio is noise over
    about zero. Returns (those neurons, the sentence saying so, or None)."""
    noisy = [r for r in rows if r.get("backup_ratio") is not None and abs(r["b"]) < bound]
    if not noisy:
        return [], None
    largest = max(abs(r["b"]) for r in noisy)
    every = len(noisy) == len([r for r in rows if r.get("backup_ratio") is not None])
    who = (f"any of the {len(noisy)} neurons" if every and len(noisy) > 2
           else names([r["neuron"] for r in noisy]))
    return [r["neuron"] for r in noisy], (
        f"The ratio excess / B is not given for {who}: B alone is within ±{bound:g}% "
        f"(largest |B| {largest:.2g}%, +0.00% in the mean-ablation table), so the ratio would "
        "divide noise by about zero.")


def negligible_excess(rows: Sequence[Mapping[str, Any]], bound: float) -> str | None:
    """The backup test's sentence when no pair has an excess beyond ±`bound` percentage
    points (they print as ±0.00), or None."""
    if not rows or not negligible([r["excess"] for r in rows], bound):
        return None
    top = max(rows, key=lambda r: abs(r["excess"]))
    return (f"No neuron is a backup here: every excess AB − A − B lies within ±{bound:g} "
            f"percentage points (the largest is {top['neuron']}'s, {top['excess']:+.2g}), "
            "so ablating each pair costs what the two cost apart.")


class Rules:
    """The rules bound to a profile's display thresholds, for the templates."""

    def __init__(self, profile: Any):
        self.min_delta_e = profile.heatmap_min_delta_e
        self.bound = profile.negligible_percent

    def blank_heatmaps(self, values: Sequence[Sequence[float | None]], scale: float = 1.0,
                       what: str = "loss difference", unit: str = "nats") -> str | None:
        """`blank_heatmaps` with the profile's `heatmap_min_delta_e`."""
        return blank_heatmaps(values, scale, self.min_delta_e, what, unit)

    def same_picks(self, searches: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[int, str]:
        """`same_picks` (no threshold: identical picks)."""
        return same_picks(searches)

    def search_note(self, neurons: Mapping[str, Any], neuron: str, k: int) -> str | None:
        """`same_picks` over every search of the `neurons` artifact's result, for the `k`-th
        search of `neuron`."""
        pairs = [(e["neuron"], x) for e in neurons["neurons"] for x in e["example_searches"]]
        index = [(e["neuron"], j) for e in neurons["neurons"] for j in range(len(e["example_searches"]))]
        return same_picks(pairs).get(index.index((neuron, k)))

    def empty_predictions(self, row: Mapping[str, Any], threshold: float,
                          d_vocab: int | None) -> str | None:
        """`empty_predictions` (no threshold of its own: the seed's log-prob cut)."""
        return empty_predictions(row, threshold, d_vocab)

    def empty_lists(self, lists, what: str, weird) -> str | None:
        """`empty_lists` (no threshold: empty is empty)."""
        return empty_lists(lists, what, weird)

    def negligible_rows(self, rows, keep=(), seed=None) -> tuple[list[str], str | None]:
        """`negligible_rows` with the profile's `negligible_percent`."""
        return negligible_rows(rows, self.bound, keep, seed)

    def noise_ratios(self, rows) -> tuple[list[str], str | None]:
        """`noise_ratios` with the profile's `negligible_percent`."""
        return noise_ratios(rows, self.bound)

    def negligible_excess(self, rows) -> str | None:
        """`negligible_excess` with the profile's `negligible_percent`."""
        return negligible_excess(rows, self.bound)
