"""German neurons that published work names in a Pythia model, shown in a report beside
discovery's ranking as references, never used as a default context neuron.

Kept out of `analysis/core` on purpose: the report's text reads them, no step does, so
editing this table recomputes no artifact and rebuilds no generated model (the machinery's
source is in every step's key and in the generated models' key).

Gurnee et al.'s replication of the language-context neurons probes each neuron's
*sequence-mean* activation over Europarl (the seed probes per token, on other text), so a
neuron may rank differently here. Their pythia-70m table is
../shared/paper/europarl_lang_neurons_gurnee.csv (pythia-70m has the seed's L3N669 besides);
for pythia-160m, the German rows with F1 1.0 of the same repository's table.
"""

from __future__ import annotations

from ..core.pythia import parse_pythia

REFERENCE_GERMAN_NEURONS: dict[str, dict] = {
    "pythia-160m": {
        "authors": "Gurnee et al.",
        "source": "wesg52/llm-context-neurons@1f8083c, context_neurons/pythia-160m/europarl_lang_neurons.csv",
        "method": "single-neuron logistic probe on sequence-mean activations, Europarl German vs the "
                  "7 other languages, fitted and scored on the same sequences, among the 10 neurons "
                  "whose mean differs most",
        "neurons": ({"neuron": "L5N2649", "f1": 1.0, "mean_dif": 1.4336652},
                    {"neuron": "L8N2994", "f1": 1.0, "mean_dif": 2.6311102}),
    },
}


def reference_neurons(name: str) -> dict | None:
    """The published German neurons of a Pythia model, by any of its names (a copy, with
    lists), None for a model with none here."""
    p = parse_pythia(name)
    ref = REFERENCE_GERMAN_NEURONS.get(p.name) if p is not None else None
    return None if ref is None else {**ref, "neurons": [dict(n) for n in ref["neurons"]]}
