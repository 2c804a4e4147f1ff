"""Intervals: coverage on synthetic data with a known answer, determinism, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.core import stats


def _coverage(draw, interval, truth, reps=200):
    hits = 0
    for rep in range(reps):
        lo, hi = interval(*draw(np.random.default_rng(1000 + rep)))
        hits += lo <= truth <= hi
    return hits / reps


def test_paired_bootstrap_covers_a_known_loss_increase_about_95_percent_of_the_time():
    # Per-example losses around 5 nats; the ablation adds 0.5 nats on average (10%), with
    # example-to-example spread larger than the effect, as in the seed's data.
    def draw(rng):
        o = rng.normal(5.0, 1.0, 100)
        return o, o + rng.normal(0.5, 0.8, 100)

    nats = _coverage(draw, lambda o, a: stats.paired_bootstrap(o, a)["increase_nats"], 0.5)
    pct = _coverage(draw, lambda o, a: stats.paired_bootstrap(o, a)["percent_increase"], 10.0)
    assert 0.90 <= nats <= 0.99, nats
    assert 0.90 <= pct <= 0.99, pct


def test_pairing_matters_an_unpaired_interval_would_be_far_wider():
    rng = np.random.default_rng(0)
    o = rng.normal(5.0, 1.0, 200)
    a = o + 0.1 + rng.normal(0, 0.01, 200)
    lo, hi = stats.paired_bootstrap(o, a)["increase_nats"]
    # Paired: the examples' shared spread (sd 1) cancels, leaving the noise of the effect
    # (sd 0.01 / sqrt(200)); resampling the two arrays independently would give a width
    # of about 4 * sqrt(2) / sqrt(200) = 0.4.
    assert hi - lo < 0.005 and lo < 0.1 + 0.003 and hi > 0.1 - 0.003


def test_probe_bootstrap_covers_a_known_accuracy():
    def draw(rng):
        y = rng.integers(0, 2, 400)
        correct = rng.random(400) < 0.8
        return y, np.where(correct, y, 1 - y)

    cov = _coverage(draw, lambda y, p: stats.probe_bootstrap(y, p)["test_acc"], 0.8)
    assert 0.90 <= cov <= 0.99, cov


def test_standard_error_matches_the_textbook_and_covers_a_known_mean():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert stats.standard_error(x) == pytest.approx(np.std(x, ddof=1) / 2)
    assert stats.standard_error(np.array([3.0])) == 0.0

    def draw(rng):
        return (rng.normal(2.0, 3.0, 50),)

    cov = _coverage(draw, lambda v: (v.mean() - 1.96 * stats.standard_error(v),
                                     v.mean() + 1.96 * stats.standard_error(v)), 2.0)
    assert 0.90 <= cov <= 0.99, cov


def test_intervals_are_deterministic_and_record_their_method():
    rng = np.random.default_rng(3)
    o, a = rng.normal(5, 1, 30), rng.normal(5.2, 1, 30)
    first, second = stats.paired_bootstrap(o, a), stats.paired_bootstrap(o, a)
    assert first == second
    assert first["resamples"] == 1000 and first["seed"] == 0 and first["level"] == 0.95
    assert "paired bootstrap" in first["method"]
    acc, f1 = stats.binary_scores(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    assert (acc, f1) == (0.75, pytest.approx(2 / 3))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="at least 2 examples"):
        stats.paired_bootstrap(np.array([1.0]), np.array([2.0]))
    with pytest.raises(ValueError, match="one shape"):
        stats.paired_bootstrap(np.zeros(3), np.zeros(4))
    assert stats.contains([1.0, 2.0], 1.5) is True and stats.contains(None, 1.0) is None
