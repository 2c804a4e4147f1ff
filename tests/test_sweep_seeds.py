"""Per training seed in the sweep's report (issue 21 §3: `analysis.orchestration.sweep.seeds`,
`figures.sweep_seeds`, templates/sections/76_sweep_seeds.md.j2): the pure parts on synthetic
input, then a seed sweep offline on the Hub-layout fixture's PolyPythia runs (tiny random
models in the Hub's layout: the numbers mean nothing, the wiring is what is checked)."""

from __future__ import annotations

import json

import hub_fixture
import numpy as np
import pytest

from analysis.orchestration.sweep.seeds import formation_step, seed_label, seed_models

# Pythia-70M's layer count cut to 4 and its MLP to 768 (as tests/test_sweep.py): L3N669,
# pythia-70m's default neuron, still exists; every run's config says so.
SHAPE = {"num_hidden_layers": 4, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 768}
REVS = ("step0", "step1000", "step143000")
SIZES = ("activation_examples=4", "probe_samples=60", "loss_examples=4")
MODELS = ("pythia-70m", "pythia-70m-seed1", "pythia-70m-seed2")


def _model(name, size="70m", variation=None, seed=None, deduped=False):
    return {"name": name, "pythia": {"size": size, "variation": variation, "seed": seed, "deduped": deduped}}


def test_formation_is_the_first_step_at_or_above_the_threshold():
    assert formation_step([0, 512, 1000, 2000], [0.5, 0.95, 0.85, 0.97], 0.9) == 512  # first, not lasting
    assert formation_step([2000, 0, 1000], [0.97, 0.5, 0.9], 0.9) == 1000  # any order; equal counts
    assert formation_step([0, 1000], [0.2, 0.89], 0.9) is None
    assert formation_step([], [], 0.9) is None


def test_seed_models_are_the_runs_of_one_size_with_another_seed():
    base, s3, s1 = _model("pythia-70m"), _model("pythia-70m-seed3", variation="seed", seed=3), \
        _model("pythia-70m-seed1", variation="seed", seed=1)
    other = [_model("pythia-160m", "160m"), _model("pythia-70m-deduped", deduped=True), {"name": "organism"}]
    assert [m["name"] for m in seed_models([s3, *other, base, s1])] == \
        ["pythia-70m", "pythia-70m-seed1", "pythia-70m-seed3"]
    assert seed_models([base, *other]) == []  # no PolyPythias run: no per-seed table
    assert [seed_label(m) for m in (base, s3)] == ["Pythia (seed 1234)", "seed 3"]


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory):
    """A sweep of pythia-70m (L3N669 as given), -seed1 and -seed2 (`--neuron auto`) at three
    checkpoints each, serially, on the fixture corpus."""
    from analysis.orchestration.sweep.plan import plan_sweep
    from analysis.orchestration.sweep.run import run_sweep

    home = tmp_path_factory.mktemp("seed-hub") / "hf"
    hub_fixture.build_hub_cache(home, REVS, shape=SHAPE)
    hub_fixture.build_pythia_runs(home, ("EleutherAI/pythia-70m-seed1", "EleutherAI/pythia-70m-seed2"),
                                  REVS, shape=SHAPE)
    out = tmp_path_factory.mktemp("seed-sweep")
    mp = pytest.MonkeyPatch()
    hub_fixture.patch_offline(mp, home)
    mp.setenv("TOKENIZERS_PARALLELISM", "false")
    try:
        plan = plan_sweep(",".join(MODELS), ",".join(REVS), profile="quick", overrides=SIZES,
                          corpus="fixture", out=out, threads=1)
        res = run_sweep(plan, scheduler="none", log=lambda s: None, live=False)
    finally:
        mp.undo()
    assert res["counts"] == {"computed": 9}, res["tasks"]
    return out


def test_a_seed_sweep_has_one_row_per_seed_from_its_artifacts(seed_sweep):
    """Each run's row names its best German neuron at step 143000 and that checkpoint's
    F1 and ablation (the table's `best_*` rows); the neuron's F1 is followed through every
    checkpoint from the artifacts' `discovery_f1`, and it forms where that series first
    reaches the threshold (checked at two thresholds read off the series, so that one run
    forms and one does not whatever the random weights give)."""
    import pandas as pd

    from analysis.core.config import Neuron
    from analysis.orchestration.sweep.seeds import seed_rows
    from analysis.orchestration.sweep.summary import THRESHOLD_F1, sweep_summary
    from analysis.orchestration.sweep.task import load_artifact

    summary = sweep_summary(seed_sweep)
    rows = summary["seeds"]
    assert [r["model"] for r in rows] == list(MODELS)
    assert [r["label"] for r in rows] == ["Pythia (seed 1234)", "seed 1", "seed 2"]
    table = pd.read_parquet(seed_sweep / "table.parquet")
    manifest = json.loads((seed_sweep / "sweep.json").read_text())
    for r in rows:
        last = table[(table["model"] == r["model"]) & (table["step"] == 143000)]
        best = last[last["measure"] == "best_f1"].iloc[0]
        de = last[(last["measure"] == "best_ablation_pct") & (last["language"] == "german")].iloc[0]
        assert (r["neuron"], r["f1"], r["german_pct"]) == (best["neuron"], best["value"], de["value"])
        assert r["german_ci"] == [de["ci_low"], de["ci_high"]] and r["final_step"] == 143000
        assert r["layer"] == Neuron.parse(r["neuron"]).layer and r["n_checkpoints"] == 3
        n = Neuron.parse(r["neuron"])
        want = []
        for t in manifest["tasks"]:
            if t["model"] == r["model"]:
                art = load_artifact(seed_sweep / "store", t["key"])
                assert art is not None
                f1 = np.load(seed_sweep / "store" / t["key"][:2] / t["key"] / "checkpoint.discovery_f1.npy")
                want.append((t["step"], float(f1[n.layer, n.index])))
        assert r["series"] == sorted(want)
        assert r["formed_step"] == formation_step([s for s, _ in r["series"]], [v for _, v in r["series"]], THRESHOLD_F1)
    # the auto runs' best neuron is their context neuron (anchored on the final checkpoint)
    ctx = table[(table["measure"] == "context_f1") & (table["step"] == 143000)].set_index("model")["neuron"]
    assert [r["neuron"] == ctx[r["model"]] for r in rows[1:]] == [True, True]
    # thresholds read off the series: the lowest final value forms by the last checkpoint at
    # the latest; above every value nothing forms
    values = [v for r in rows for _, v in r["series"]]
    low = min(r["series"][-1][1] for r in rows)
    for r in seed_rows(seed_sweep, manifest, table, threshold=low):
        first = next(s for s, v in r["series"] if v >= low)  # exists: the final value is ≥ low
        assert r["formed_step"] == first
    assert all(r["formed_step"] is None for r in seed_rows(seed_sweep, manifest, table, threshold=max(values) + 0.01))


def test_the_sweep_report_has_the_per_seed_table_and_figure(seed_sweep, tmp_path):
    """The figure (its CSV: one row per run and checkpoint) and the section's table, from
    the summary (template only: the notebook is built, not executed)."""
    import csv

    from analysis.orchestration.sweep.figures import draw_sweep_figures
    from analysis.orchestration.sweep.summary import sweep_summary
    from report.build import SWEEP_SECTIONS, build_notebook

    figs = draw_sweep_figures(seed_sweep, tmp_path / "figures")
    rec = next(f for f in figs if f["name"] == "sweep_seeds")
    assert rec["step"] == "sweep_seeds" and (tmp_path / "figures" / "sweep_seeds.png").is_file()
    with open(tmp_path / "figures" / "sweep_seeds.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == 9 and {r["model"] for r in csv_rows} == set(MODELS)
    assert sum(r["final"] == "True" for r in csv_rows) == 3
    summary = sweep_summary(seed_sweep)
    context = {"title": "t", "run": {"created": summary["created"], "command": summary["command"], "neuron": None},
               "artifacts": {}, "figures": figs, "seed": None, "sweep": summary}
    nb = build_notebook(context, sections=SWEEP_SECTIONS)
    md = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "Per training seed" in md and "show_figure('sweep_seeds'" in code
    for r in summary["seeds"]:
        line = next(s for s in md.splitlines() if s.startswith(f"| {r['label']} |"))
        assert r["neuron"] in line and f"{r['f1']:.3f}" in line
        assert (f"{r['formed_step']:,}" if r["formed_step"] is not None else "not by step 143,000") in line
