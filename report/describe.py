"""One-line descriptions of neuron cards, generated from the card's data with the numbers
behind each claim (as Neuronpedia's explanation line, but measured, not guessed)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")


def md_token(token: str) -> str:
    """A token as Markdown text: every ASCII punctuation character backslash-escaped (so `*`
    or `_` stay characters); empty or whitespace-only tokens shown by their repr."""
    shown = token.strip() or repr(token)
    return _PUNCT.sub(r"\\\1", shown)


def _pct(x: float) -> str:
    return f"{x:.0%}" if x >= 0.01 or x == 0 else f"{x:.2%}"


def language_preference(card: Mapping[str, Any]) -> str | None:
    """"German" or "English" when the card's single-neuron probe separates the languages
    (the lower end of its test-accuracy interval is above chance, 0.5), by the sign of the
    mean-activation difference; None when it does not."""
    probe = card.get("probe") or {}
    ci = probe.get("test_acc_ci")
    if not ci or ci[0] is None or ci[0] <= 0.5:
        return None
    mean = card["density"]["mean"]
    return "German" if mean["german"] > mean["english"] else "English"


def describe(card: Mapping[str, Any]) -> str:
    """The card in one sentence: which language it fires on (probe and mean activation),
    how often it fires on each, where its top examples come from, the tokens its output
    direction boosts most, and its mean-ablation effect on the German loss."""
    mean = card["density"]["mean"]
    probe = card["probe"]
    fire = card.get("firing") or {}
    lang = language_preference(card)
    acc = f"probe accuracy {probe['test_acc']:.2f} [{probe['test_acc_ci'][0]:.2f}, {probe['test_acc_ci'][1]:.2f}]"
    if fire.get("german") == 0 and fire.get("english") == 0:
        head = "Never fires on either language (activation > 0 at no position)"
    elif lang:
        head = (f"{'More' if lang == 'German' else 'Less'} active on German than on English text "
                f"(mean {mean['german']:.3g} vs {mean['english']:.3g}; {acc})")
    else:
        head = f"Does not separate German from English ({acc}, chance 0.5)"
    parts = [head]
    if fire.get("german") is not None and fire.get("english") is not None and (fire["german"] or fire["english"]):
        parts.append(f"fires (activation > {fire['threshold']:g}) at {_pct(fire['german'])} of German "
                     f"and {_pct(fire['english'])} of English positions")
    top = card.get("top_examples") or []
    if top:
        de = sum(e["language"] == "german" for e in top)
        parts.append(f"{de} of its top {len(top)} examples are German")
    boosted = (card.get("logits") or {}).get("boosted") or []
    if boosted:
        toks = ", ".join(f"“{md_token(t['token'])}”" for t in boosted[:3])
        parts.append(f"its output boosts {toks} most ({boosted[0]['value']:+.2f} logits per unit)")
    abl = card.get("ablation")
    if abl:
        g = abl["german"]
        parts.append(f"mean-ablating it changes the German loss by {g['percent_increase']:+.2f}% "
                     f"[{g['percent_increase_ci'][0]:+.2f}, {g['percent_increase_ci'][1]:+.2f}]")
    return "; ".join(parts) + "."
