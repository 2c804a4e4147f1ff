"""Property-based tests (hypothesis): loss masking under padding, and the cache key."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.core.artifacts import StepInputs
from analysis.core.engine import make_batches, per_example_losses

sequences = st.lists(st.lists(st.integers(2, 511), min_size=1, max_size=40), min_size=1, max_size=6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seqs=sequences, budget=st.integers(8, 200))
def test_padded_batches_give_the_unpadded_per_example_mean_loss(tiny_fwd, seqs, budget):
    token_lists = [[0, *s] for s in seqs]  # BOS + body: every example has >= 1 target
    batched = per_example_losses(tiny_fwd, make_batches(token_lists, budget, pad_id=1), {},
                                 show_progress=False)["original"]
    for i, t in enumerate(token_lists):
        alone = per_example_losses(tiny_fwd, make_batches([t], 10_000, pad_id=1), {},
                                   show_progress=False)["original"][0]
        assert np.isclose(batched[i], alone, rtol=1e-5, atol=1e-6)


json_scalars = st.one_of(st.integers(-5, 5), st.text(max_size=5), st.booleans(), st.none())
small_dicts = st.dictionaries(st.text(min_size=1, max_size=4), json_scalars, max_size=3)
FIELDS = ("step", "code", "model", "data", "params", "seed", "upstream", "device")


@settings(max_examples=200, deadline=None)
@given(base=st.fixed_dictionaries({
    "step": st.text(min_size=1, max_size=6), "code": small_dicts, "model": small_dicts,
    "data": small_dicts, "params": small_dicts, "seed": st.integers(0, 10),
    "upstream": small_dicts, "device": st.sampled_from(["cpu", "cuda"])}),
    field=st.sampled_from(FIELDS), data=st.data())
def test_any_change_of_an_input_changes_the_cache_key(base, field, data):
    a = StepInputs(**base)
    if field == "seed":
        new = data.draw(st.integers(0, 10).filter(lambda v: v != base["seed"]))
    elif field in ("step", "device"):
        new = data.draw(st.text(min_size=1, max_size=6).filter(lambda v: v != base[field]))
    else:
        new = data.draw(small_dicts.filter(lambda v: v != base[field]))
    b = dataclasses.replace(a, **{field: new})
    assert a.key() != b.key()
    assert a.key() == StepInputs(**base).key()  # and the key is a pure function of the inputs
