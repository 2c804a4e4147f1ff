"""Intervals on the report's effects: paired bootstrap, bootstrap over test points, and
standard errors over examples.

The seed printed point estimates only. Its loss increases are means over 1,000 examples
and its probe scores come from 2,000 test points, so a reader needs to know how far a
rerun on other examples could move them. Every interval here is computed from numbers the
artifacts already hold (per-example losses, per-test-point predictions, per-example
differences): no extra forward pass.

Deterministic: each bootstrap draws its resamples from `numpy.random.default_rng(seed)`
with a fixed, recorded seed (`BOOTSTRAP_SEED`), so the same inputs give the same interval,
bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
LEVEL = 0.95

METHODS = {
    "loss": ("paired bootstrap over examples: examples resampled with replacement, each "
             f"example's original and ablated loss kept together; {BOOTSTRAP_RESAMPLES:,} "
             f"resamples, seed {BOOTSTRAP_SEED}, {LEVEL:.0%} percentile interval"),
    "probe": (f"bootstrap over test points ({BOOTSTRAP_RESAMPLES:,} resamples, seed "
              f"{BOOTSTRAP_SEED}, {LEVEL:.0%} percentile interval); the probe is not refitted"),
    "mean": "standard error of the mean over examples (sample standard deviation / sqrt(n))",
}


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, n] int64 indices drawn with replacement."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(resamples, n))


def _percentile(values: np.ndarray, level: float) -> list[float]:
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return [float(lo), float(hi)]


def paired_bootstrap(original: np.ndarray, ablated: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED, level: float = LEVEL) -> dict:
    """Interval on a mean-ablation effect by the paired bootstrap over examples.

    Args:
        original, ablated: float `[n_examples]`, each example's mean next-token loss (nats)
            without and with the ablation; example i of both arrays is the same text.
    Returns:
        `{"increase_nats": [lo, hi], "percent_increase": [lo, hi], "resamples", "seed",
        "level", "method"}`: percentile intervals of `mean(ablated) - mean(original)` (nats)
        and of `100 * (mean(ablated) - mean(original)) / mean(original)` (%), each over
        resampled example sets.
    Raises:
        ValueError: shapes differ, or fewer than 2 examples.
    """
    o = np.asarray(original, dtype=np.float64)
    a = np.asarray(ablated, dtype=np.float64)
    if o.shape != a.shape or o.ndim != 1:
        raise ValueError(f"paired bootstrap needs two 1-D arrays of one shape, got {o.shape} and {a.shape}")
    if len(o) < 2:
        raise ValueError(f"paired bootstrap needs at least 2 examples, got {len(o)}")
    idx = _indices(len(o), resamples, seed)
    mo, ma = o[idx].mean(axis=1), a[idx].mean(axis=1)
    return {"increase_nats": _percentile(ma - mo, level),
            "percent_increase": _percentile((ma - mo) / mo * 100.0, level),
            "resamples": resamples, "seed": seed, "level": level, "method": METHODS["loss"]}


def bootstrap_mean(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = BOOTSTRAP_SEED, level: float = LEVEL) -> list[float]:
    """Percentile interval `[lo, hi]` of the mean of float `[n]` values over resampled sets
    (examples or prompts drawn with replacement), for a per-item quantity that is already a
    difference (e.g. a non-additivity score per prompt).

    Raises:
        ValueError: not 1-D, or fewer than 2 values.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(v) < 2:
        raise ValueError(f"bootstrap of a mean needs a 1-D array of at least 2 values, got shape {v.shape}")
    return _percentile(v[_indices(len(v), resamples, seed)].mean(axis=1), level)


def binary_scores(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    """(accuracy, F1 of class 1) of 0/1 labels; F1 is 0 when there is no positive at all."""
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    tp = float(np.sum(t & p))
    denom = float(np.sum(t) + np.sum(p))
    return float(np.mean(t == p)), (2 * tp / denom if denom else 0.0)


def probe_bootstrap(y_true: np.ndarray, y_pred: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                    seed: int = BOOTSTRAP_SEED, level: float = LEVEL) -> dict:
    """Intervals on a fitted probe's test accuracy and F1 by resampling its test points.

    Args:
        y_true, y_pred: int `[n_test]` labels (1 = German) and the probe's predictions.
    Returns:
        `{"test_acc": [lo, hi], "f1": [lo, hi], "resamples", "seed", "level", "method"}`.
    Raises:
        ValueError: shapes differ or fewer than 2 test points.
    """
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    if t.shape != p.shape or t.ndim != 1 or len(t) < 2:
        raise ValueError(f"probe bootstrap needs two 1-D arrays of one shape (n >= 2), got {t.shape}, {p.shape}")
    idx = _indices(len(t), resamples, seed)
    tt, pp = t[idx], p[idx]
    acc = (tt == pp).mean(axis=1)
    tp = (tt & pp).sum(axis=1).astype(np.float64)
    denom = (tt.sum(axis=1) + pp.sum(axis=1)).astype(np.float64)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"test_acc": _percentile(acc, level), "f1": _percentile(f1, level),
            "resamples": resamples, "seed": seed, "level": level, "method": METHODS["probe"]}


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of float `[n]` values: sample standard deviation
    (ddof 1) / sqrt(n); NaN-free, 0.0 for a single value (no spread can be estimated,
    and the report then says n = 1)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if len(v) < 2:
        return 0.0
    return float(np.std(v, ddof=1) / math.sqrt(len(v)))


def contains(interval: list[float] | tuple[float, float] | None, value: float) -> bool | None:
    """Whether `value` lies in the closed interval (None when there is no interval)."""
    if interval is None:
        return None
    return bool(interval[0] <= value <= interval[1])
