"""The `ngrams` family (analysis.families.ngrams): identities of its pure functions on the
`tiny` model, its selection and scoring on synthetic inputs, and the step's artifact and
section in the session's `tiny` report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.core.config import Neuron
from analysis.families import ngrams as ng


@pytest.fixture(scope="module")
def german_batch(tiny):
    """Three fixture German examples (BOS first), cut to 48 tokens, as one right-padded batch."""
    from analysis.core.data import load_corpus
    from analysis.core.engine import make_batches

    toks = [tiny.to_tokens(t)[:48] for t in load_corpus("fixture_german").examples[:3]]
    return toks, make_batches(toks, 4096, pad_id=1)[0]


def _rows(fwd, batch, context, value):
    """Every position with a target: (clean, ablated final residual rows, the context
    neuron's activation there, targets)."""
    r, r_abl, act = ng._clean_and_ablated(fwd, batch.tokens, context, value)
    n = batch.tokens.shape[1]
    valid = torch.arange(n - 1)[None, :] < (batch.lengths[:, None] - 1)
    return r[:, :-1][valid], r_abl[:, :-1][valid], act[:, :-1][valid], batch.tokens[:, 1:][valid]


def _full_loss(fwd, rows, targets):
    lg = fwd.logits(rows)
    return torch.logsumexp(lg, -1) - lg.gather(-1, targets[:, None])[:, 0]


def test_path_losses_are_the_authors_frozen_runs(tiny_fwd, german_batch):
    """The rank-1 shortcut equals a full unembedding of the edited streams, and those streams
    are the authors' runs with the later layers' attention and MLP outputs frozen
    (`get_context_effect`): frozen at their unedited values with the neuron ablated = only
    the direct path ablated; frozen at their ablated values with the neuron as is = only
    the indirect path ablated."""
    from analysis.core.engine import set_neurons

    fwd, (_, batch) = tiny_fwd, german_batch
    ctx, value = Neuron(3, 669), 0.37
    with torch.inference_mode():
        rc, ra, act, tgt = _rows(fwd, batch, ctx, value)
        got = ng.path_losses(fwd, rc, ra, act, value, fwd.w.W_out[3, 669], tgt)
        u = fwd.w.W_out[3, 669]
        want = {"clean": _full_loss(fwd, rc, tgt), "ablated": _full_loss(fwd, ra, tgt),
                "direct_ablated": _full_loss(fwd, rc + (value - act)[:, None] * u, tgt),
                "indirect_ablated": _full_loss(fwd, ra + (act - value)[:, None] * u, tgt)}
        for k in ng.PATHS:
            assert torch.allclose(got[k], want[k], atol=2e-5), k
        # the same streams by freezing the downstream components (hooks, as the authors do)
        later = [f"blocks.{layer}.{h}" for layer in (4, 5) for h in ("hook_attn_out", "hook_mlp_out")]
        cap_c, cap_a = dict.fromkeys(later), dict.fromkeys(later)
        fwd.run(batch.tokens, capture=cap_c)
        fwd.run(batch.tokens, edits={ctx.hook(): set_neurons([669], value)}, capture=cap_a)
        ablate = {ctx.hook(): set_neurons([669], value)}
        frozen_clean = fwd.run(batch.tokens, edits={**ablate, **{h: (lambda x, h=h: cap_c[h]) for h in later}})
        frozen_abl = fwd.run(batch.tokens, edits={h: (lambda x, h=h: cap_a[h]) for h in later})
        n = batch.tokens.shape[1]
        valid = torch.arange(n - 1)[None, :] < (batch.lengths[:, None] - 1)
        assert torch.allclose(_full_loss(fwd, frozen_clean[:, :-1][valid], tgt), got["direct_ablated"], atol=2e-5)
        assert torch.allclose(_full_loss(fwd, frozen_abl[:, :-1][valid], tgt), got["indirect_ablated"], atol=2e-5)
    assert not torch.allclose(got["direct_ablated"], got["clean"])  # the edit does something


def test_a_context_neuron_in_the_last_layer_has_no_indirect_path(tiny_fwd, german_batch):
    """No layer reads a last-layer neuron: the indirect effect is 0 and direct = total, at
    every position; there are no downstream neurons to attribute to."""
    fwd, (toks, batch) = tiny_fwd, german_batch
    ctx = Neuron(fwd.w.n_layers - 1, 17)
    losses, offsets = ng.text_path_losses(fwd, [batch], ctx, 0.8, show_progress=False)
    assert losses.shape == (4, sum(len(t) - 1 for t in toks)) and offsets[-1] == losses.shape[1]
    clean, ablated, direct, indirect = losses
    assert np.abs(ablated - clean).max() > 1e-4  # the ablation matters ...
    np.testing.assert_allclose(indirect, clean, atol=2e-5)  # ... through the direct path only
    np.testing.assert_allclose(direct, ablated, atol=2e-5)
    split = ng.effect_split(ng.per_example_means(losses, offsets))
    e = split["effects"]
    assert abs(e["indirect"]["nats"]) < 1e-5 and e["direct"]["nats"] == pytest.approx(e["total"]["nats"], abs=1e-5)
    with pytest.raises(ValueError, match="no layer follows"):
        ng.neuron_attribution(fwd, batch.tokens[:1, :20], ctx, 0.8)


def test_per_position_losses_match_the_engine_and_are_in_example_order(tiny_fwd, german_batch):
    """The clean and ablated per-position losses are the engine's own (`token_losses`), laid
    out example by example whatever the batch order."""
    from analysis.core.engine import make_batches, set_neurons

    fwd, (full, _) = tiny_fwd, german_batch
    toks = [full[0][:30], full[1][:48], full[2][:40]]
    ctx = Neuron(3, 669)
    batches = make_batches(toks, 60, pad_id=1)  # one example per batch, longest first
    assert [b.index for b in batches] == [[1], [2], [0]]
    losses, offsets = ng.text_path_losses(fwd, batches, ctx, 0.2, show_progress=False)
    with torch.inference_mode():
        for i, t in enumerate(toks):
            tt = torch.tensor([t])
            lengths = torch.tensor([len(t)])
            base = fwd.token_losses(fwd.run(tt), tt, lengths)[0]
            abl = fwd.token_losses(fwd.run(tt, edits={ctx.hook(): set_neurons([669], 0.2)}), tt, lengths)[0]
            np.testing.assert_allclose(losses[0, offsets[i]:offsets[i + 1]], base.numpy(), atol=2e-5)
            np.testing.assert_allclose(losses[1, offsets[i]:offsets[i + 1]], abl.numpy(), atol=2e-5)


def test_select_trigrams_ranks_by_the_interest_measure():
    """Positions after BOS only, all three tokens holding a letter, clean loss at most the
    median, interest min(ablated − clean, indirect − clean) > 0; a trigram scores its best
    occurrence."""
    letter = np.ones(20, dtype=bool)
    letter[9] = False  # token 9 is punctuation
    toks = [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 9, 4]]
    # positions with a target: 5 per example; position t predicts token t + 1
    clean = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 9]], dtype=np.float32).ravel()
    abl = clean + np.array([[5, 5, 0.5, 0.2, 3], [0, 0, 0.9, 2, 2]], dtype=np.float32).ravel()
    ind = clean + np.array([[5, 5, 0.4, 0.3, 3], [0, 0, 0.6, 2, 2]], dtype=np.float32).ravel()
    losses = np.stack([clean, abl, abl, ind])
    offsets = np.array([0, 5, 10])
    rows = ng.select_trigrams(toks, losses, offsets, letter, k=5)
    # positions 0 and 1 are skipped (the trigram would start at or before BOS); example 1:
    # (2,3,9) and (3,9,4) hold punctuation, and its last position is above the median
    assert [r["ids"] for r in rows] == [[3, 4, 5], [1, 2, 3], [2, 3, 4]]
    assert rows[1]["occurrences"] == 2 and rows[1]["interest"] == pytest.approx(0.6)
    assert rows[1]["example"] == 1 and rows[1]["position"] == 2
    assert rows[0]["interest"] == pytest.approx(3.0) and rows[2]["interest"] == pytest.approx(0.2)
    assert [r["ids"] for r in ng.select_trigrams(toks, losses, offsets, letter, k=1)] == [[3, 4, 5]]


def test_and_scores_are_zero_for_additive_values_and_positive_for_an_and():
    from itertools import product

    conds = {"".join(c): tuple(x == "Y" for x in c) for c in product("YN", repeat=3)}
    assert set(conds) == set(ng.CONDITIONS)
    additive = {k: 0.3 * p + 1.2 * c - 0.7 * x + 2.0 for k, (p, c, x) in conds.items()}
    for name, v in ng.and_scores(additive).items():
        assert v == pytest.approx(0.0, abs=1e-12), name
    all_three = ng.and_scores({k: float(p and c and x) for k, (p, c, x) in conds.items()})
    assert all_three["single_features"] == 1 and all_three["two_features"] == 1
    assert all_three["current_x_context"] == all_three["previous_x_context"] == all_three["previous_x_current"] == 1
    # an n-gram neuron that ignores the previous token: an AND of current token and context
    cur_ctx = ng.and_scores({k: float(c and x) for k, (p, c, x) in conds.items()})
    assert cur_ctx["current_x_context"] == 1 and cur_ctx["previous_x_context"] == 0
    assert cur_ctx["previous_x_current"] == 0 and cur_ctx["single_features"] == 1
    assert set(ng.SCORES) == set(all_three)


def test_prompts_and_replacements_are_deterministic_and_never_keep_the_token():
    common = np.array([10, 11, 12, 13, 14])
    space = np.array([True, True, False, False, False])
    a, b = ng.context_prompts(common, 6, 4, seed=3), ng.context_prompts(common, 6, 4, seed=3)
    assert a.shape == (6, 4) and np.array_equal(a, b) and set(a.ravel()) <= set(common)
    prompts = np.concatenate([a, np.tile([10, 12, 99], (6, 1))], 1)
    v = ng.condition_prompts(prompts, common, space, seed=0)
    L = prompts.shape[1]
    assert np.array_equal(v["YY"], prompts)
    assert np.all(v["NY"][:, L - 3] == 11)  # the only other word-start token
    assert np.all(np.isin(v["YN"][:, L - 2], [13, 14]))  # a word piece, never 12 itself
    assert np.array_equal(v["NN"][:, L - 3], v["NY"][:, L - 3]) and np.array_equal(v["NN"][:, L - 2], v["YN"][:, L - 2])
    for k in v:  # only the two columns ever change, and t2 never
        assert np.array_equal(v[k][:, :L - 3], prompts[:, :L - 3]) and np.all(v[k][:, -1] == 99)
    to_str = {5: " der", 6: ",", 7: "ung", 8: "42"}.get
    counts = [[0, 5, 6, 6, 6, 7, 8, 8, 8, 8]]
    assert ng.common_tokens(counts, 10, lambda ids: [to_str(i) for i in ids], k=5).tolist() == [5, 7]


def test_the_papers_list_comes_from_the_paper_dir_for_the_real_pythia_70m(paper_dir, tmp_path):
    """The 228 trigrams are the authors' `low_indirect_loss_trigrams.json` in the folder given
    as `--paper-dir`, read through `core.paper` (sha256-checked: a changed list is refused,
    not used); no folder, no list. Only weights from `EleutherAI/pythia-70m` count as
    Pythia-70M, whatever the model's name."""
    import shutil

    from analysis.core import paper as ref
    from analysis.core.errors import DataError

    assert ng.paper_trigrams(None) is None
    strings, rec = ng.paper_trigrams(paper_dir)
    assert strings == ref.read_trigrams(paper_dir) and len(strings) == rec["n"] == 228
    assert rec["sha256"] == ref.FILES[ref.TRIGRAM_LIST].sha256 and rec["file"] == ref.TRIGRAM_LIST
    copy = Path(shutil.copytree(paper_dir, tmp_path / "paper"))
    (copy / ref.TRIGRAM_LIST).write_text(json.dumps(strings[:-1]), encoding="utf-8")
    with pytest.raises(DataError, match="sha256"):
        ng.paper_trigrams(copy)
    assert ng.is_pythia_70m({"source": "EleutherAI/pythia-70m"})
    for source in (None, "pythia-70m", "EleutherAI/pythia-70m-deduped"):
        assert not ng.is_pythia_70m({"source": source})


def test_tiny_report_has_the_ngram_step_and_section(tiny_report):
    """The session's `tiny` report: the artifact's numbers agree with themselves and with the
    `ablation` step (same examples, same ablation), its figures are drawn, its section shown."""
    import re

    res, _, cfg = tiny_report
    arts, out = res["artifacts"], res["out"]
    r = arts["ngrams"]["result"]
    p = cfg.profile
    assert arts["ngrams"]["provenance"]["upstream"] == {"activations": arts["activations"]["key"]}
    assert r["ablation_value"] == arts["activations"]["result"]["context_mean_inactive"]
    assert r["downstream_layers"] == [4, 5] and r["trigram_source"]["kind"] == "selected"
    # the clean and ablated per-example losses are the ablation step's on the same examples
    ex = np.load(out / "artifacts" / "ngrams.text_example_losses.npy")
    abl = np.load(out / "artifacts" / "ablation.losses_german.npy")
    order = arts["ablation"]["result"]["per_example_losses"]["rows"]["german"]
    n = r["text"]["n_examples"]
    assert n == min(p.ngram_examples, p.loss_examples) == ex.shape[1]
    np.testing.assert_allclose(ex[0], abl[order.index("original"), :n], rtol=1e-6)
    np.testing.assert_allclose(ex[1], abl[order.index("L3N669"), :n], rtol=1e-6)
    t = r["text"]
    assert t["effects"]["total"]["nats"] == pytest.approx(t["losses"]["ablated"] - t["losses"]["clean"])
    # trigrams: ranked by total effect, each effect the difference of its mean losses
    rows = r["trigrams"]
    assert 0 < len(rows) <= p.ngram_trigrams and [x["rank"] for x in rows] == list(range(1, len(rows) + 1))
    assert all(a["total"] >= b["total"] for a, b in zip(rows, rows[1:], strict=False))
    tl = np.load(out / "artifacts" / "ngrams.trigram_losses.npy")
    assert tl.shape == (4, len(rows), p.ngram_prompts)
    for x in rows:
        assert x["total"] == pytest.approx(tl[1, x["index"]].mean() - tl[0, x["index"]].mean())
        assert len(x["total_ci"]) == 2 and x["total_ci"][0] <= x["total_ci"][1]
        assert r["trigram_list"][x["index"]] == x["trigram"] and len(x["ids"]) == 3
    # AND circuits for the most dependent trigrams, conditions and scores per neuron
    circuits = r["and"]["circuits"]
    assert [c["rank"] for c in circuits] == list(range(1, min(ng.AND_TRIGRAMS, len(rows)) + 1))
    for i, c in enumerate(circuits):
        a = np.load(out / "artifacts" / f"ngrams.and_{i}_activations.npy")
        assert a.shape == (8, p.ngram_prompts, len(c["neurons"])) and len(c["neurons"]) == ng.AND_NEURONS
        for k, nrow in enumerate(c["neurons"]):
            assert Neuron.parse(nrow["neuron"]).layer in (4, 5)
            assert nrow["conditions"]["YYY"] == pytest.approx(a[0, :, k].mean())
            assert set(nrow["scores"]) == set(ng.SCORES)
        assert [n["effect"] for n in c["neurons"]] == sorted((n["effect"] for n in c["neurons"]), reverse=True)
    names = {f["name"] for f in res["figures"] if f["step"] == "ngrams"}
    assert names == {"ngrams_effect_split", "ngrams_trigram_paths", "ngrams_top_trigrams", "ngrams_and_0"}
    meta = json.loads((out / "figures" / "ngrams_trigram_paths.json").read_text())
    assert meta["function"] == "figures.ngrams.trigram_paths" and meta["artifact_key"] == arts["ngrams"]["key"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert re.search(r"<h[12][^>]*>\s*(<[^>]+>)*\s*Contextual n-grams: direct and indirect effects", html)
    assert "AND circuits." in html
