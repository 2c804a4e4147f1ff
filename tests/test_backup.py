"""The backup test (seed TODO): pairwise ablations and the seed's backup ratio."""

from __future__ import annotations

import numpy as np
import torch

from analysis.core.config import Neuron
from analysis.core.engine import make_batches, per_example_losses
from analysis.families.backup import backup_row, pair_variants


def test_backup_row_is_the_seeds_formula():
    r = backup_row(pct_a=10.0, pct_b=0.5, pct_ab=11.0)
    assert r["excess"] == 0.5 and r["backup_ratio"] == 1.0
    assert backup_row(1.0, 0.0, 1.0)["backup_ratio"] is None


def test_pair_variant_merges_neurons_of_one_layer():
    v = pair_variants(Neuron(5, 1336), [Neuron(5, 250), Neuron(4, 482)],
                      {"L5N1336": 1.0, "L5N250": 2.0, "L4N482": 3.0})
    x = torch.zeros(1, 1, 2048)
    (hook, fn), = v["L5N250"].items()
    assert hook == "blocks.5.mlp.hook_post"
    y = fn(x)
    assert float(y[0, 0, 1336]) == 1.0 and float(y[0, 0, 250]) == 2.0 and float(y.sum()) == 3.0
    assert set(v["L4N482"]) == {"blocks.5.mlp.hook_post", "blocks.4.mlp.hook_post"}


def test_pair_loss_equals_the_bridge_with_both_hooks(tiny, tiny_fwd):
    ids = tiny.to_tokens("Die Kommission hat heute einen neuen Vorschlag vorgelegt.")
    values = {"L3N669": 0.7, "L4N482": -0.3}
    v = pair_variants(Neuron(3, 669), [Neuron(4, 482)], values)
    got = per_example_losses(tiny_fwd, make_batches([ids], 4096, 1), v, show_progress=False)["L4N482"][0]

    def h3(x, hook):
        x[:, :, 669] = 0.7
        return x

    def h4(x, hook):
        x[:, :, 482] = -0.3
        return x

    with torch.inference_mode():
        ref = tiny.bridge.run_with_hooks(torch.tensor([ids]), return_type="loss",
                                         fwd_hooks=[("blocks.3.mlp.hook_post", h3),
                                                    ("blocks.4.mlp.hook_post", h4)]).item()
    assert abs(got - ref) < 1e-4


def test_backup_step_in_the_tiny_report(tiny_report):
    res, _, _ = tiny_report
    bk = res["artifacts"]["backup"]["result"]
    assert len(bk["rows"]) == 7
    assert bk["original"] == res["artifacts"]["ablation"]["result"]["context"]["german"]["original"]
    html = (res["out"] / "report.html").read_text()
    assert "Backup test: pairs of ablated neurons" in html


def test_backup_pairs_shared_with_the_ablation_pass_equal_a_separate_run(tiny_report, tiny, tiny_fwd):
    """The pairs ride on the `ablation` step's unablated German pass; each equals the same
    pair computed on its own (its own unablated pass), and the backup rows are built from
    exactly those per-example losses."""
    from analysis.core.config import Neuron, RunConfig, get_profile
    from analysis.core.data import CORPORA, load_corpus
    from analysis.core.runner import Run
    from analysis.families.ablation import loss_summary

    res, _, _ = tiny_report
    abl = res["artifacts"]["ablation"]["result"]
    values = res["artifacts"]["activations"]["result"]["english_means"]
    profile = get_profile("quick")
    corpora = {lang: load_corpus(name, None) for lang, name in CORPORA["fixture"].items()}
    run = Run(RunConfig(model="tiny", neuron=Neuron(3, 669), profile=profile), tiny, tiny_fwd,
              corpora, None, (), lambda s: None, show_progress=False)
    toks, _ = run.tokens("german", profile.loss_examples)
    alone = per_example_losses(tiny_fwd, run.batches(toks),
                               pair_variants(Neuron(3, 669), [Neuron(4, 482), Neuron(5, 1336)], values),
                               show_progress=False)
    table = np.load(res["out"] / "artifacts" / "ablation.losses_german.npy")
    rows = abl["per_example_losses"]["rows"]["german"]
    for name in ("L4N482", "L5N1336"):
        shared = table[rows.index("pair:" + name)]
        np.testing.assert_allclose(shared, alone[name], rtol=1e-6)
        row = next(r for r in res["artifacts"]["backup"]["result"]["rows"] if r["neuron"] == name)
        assert row["ab"] == loss_summary(table[0], shared)["percent_increase"]
