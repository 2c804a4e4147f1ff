"""Single-neuron logistic-regression probes, German vs English (seed: "Check classification
accuracy of German neurons", `run_single_neuron_lr`)."""

from __future__ import annotations

import numpy as np


def single_neuron_probe(positive: np.ndarray, negative: np.ndarray, n_samples: int,
                        test_size: float, seed: int) -> dict:
    """Fit `LogisticRegression()` on one neuron's activations.

    Args:
        positive: `[n]` activations on the positive class (German), in collection order.
        negative: `[n]` activations on the negative class (English).
        n_samples: the first `n_samples` of each are used (seed: 5,000).
        test_size: held-out fraction (seed: 0.2); `seed` fixes the split (the seed notebook
            left it unseeded, so its numbers carry split noise).

    Returns:
        {"train_acc", "test_acc", "f1", "n_per_class", "test_acc_ci", "f1_ci"}; F1 of the
        positive class on the test split; the intervals (95%) resample the test points with
        the fitted probe fixed (`core.stats.probe_bootstrap`).

    Raises:
        ValueError: fewer than 10 activations in a class.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    pos = np.asarray(positive[:n_samples], dtype=np.float64)
    neg = np.asarray(negative[:n_samples], dtype=np.float64)
    if min(len(pos), len(neg)) < 10:
        raise ValueError(f"too few activations for a probe: {len(pos)} vs {len(neg)}")
    X = np.concatenate([pos, neg]).reshape(-1, 1)
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, random_state=seed)
    from ..core.stats import probe_bootstrap

    clf = LogisticRegression()
    clf.fit(X_train, y_train)
    pred = clf.predict(X_test)
    ci = probe_bootstrap(y_test, pred)
    return {
        "train_acc": float(clf.score(X_train, y_train)),
        "test_acc": float(clf.score(X_test, y_test)),
        "f1": float(f1_score(y_test, pred, zero_division=0.0)),
        "n_per_class": [int(len(pos)), int(len(neg))],
        "test_acc_ci": ci["test_acc"], "f1_ci": ci["f1"],
    }


# ------------------------------------------------------------------ pipeline step


def probe_rows(neurons, german: np.ndarray, english: np.ndarray, columns: list[str],
               n_samples: int, test_size: float, seed: int) -> list[dict]:
    """One probe row per neuron from `[n_acts, n_columns]` activation samples."""
    col = {n: i for i, n in enumerate(columns)}
    rows = []
    for n in neurons:
        i = col[str(n)]
        r = single_neuron_probe(german[:, i], english[:, i], n_samples, test_size, seed)
        rows.append({"neuron": str(n), "layer": n.layer, "index": n.index, **r,
                     "mean_english": float(english[:, i].mean()),
                     "mean_german": float(german[:, i].mean())})
    return rows


def run_step(run, arts: dict) -> dict:
    """Step `probes`: the seed's probe table for the German neurons (seed cell "Check
    classification accuracy of German neurons")."""
    import sys

    from ..core.runner import LANGUAGES

    p = run.profile
    acts = arts["activations"]
    params = {"n_per_language": p.probe_samples, "test_size": p.probe_test_size,
              "split_seed": p.seed, "neurons": [str(n) for n in run.studied],
              "classifier": "sklearn LogisticRegression() defaults", "positive_class": "german"}

    def compute():
        rows = probe_rows(run.studied, run.store.load_array("activations", "german"),
                          run.store.load_array("activations", "english"),
                          acts["result"]["neurons"], p.probe_samples, p.probe_test_size, p.seed)
        from ..core.stats import METHODS

        return {"neurons": [str(n) for n in run.studied], "n_per_language": p.probe_samples,
                "interval": METHODS["probe"],
                "test_size": p.probe_test_size, "split_seed": p.seed, "rows": rows}, {}

    inputs = run.inputs("probes", sys.modules[__name__], params, run.data_prov(*LANGUAGES),
                        {"activations": acts["key"]})
    return run.step(inputs, compute)
