"""The training-dynamics sweep (analysis.orchestration.sweep: the driver, and the worker's task) on a Hugging Face
Hub cache built in the Hub's layout (tests/hub_fixture.py): two Pythia repositories of
different tiny shapes, read with `HF_HUB_OFFLINE=1`, on the fixture corpus with small sizes.
The serial run (`--scheduler none`) is the reference: a LocalCluster of 2 single-thread
workers, a resumed run and a run whose worker is killed mid-task must give the same bytes."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import hub_fixture
import pytest

# builds a report or model of its own: scheduled first (conftest)
pytestmark = pytest.mark.slow

# Shapes differ between the two repositories: each is read from its config.json.
SHAPE_70M = {"num_hidden_layers": 4, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 768}
SHAPE_160M = {"num_hidden_layers": 5, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 1024}
REVS_70M = ("step0", "step1", "step512", "step1000", "step2000", "step143000")
LATER = "step8000"                      # in the cache, requested only by the second run
MISSING = "step4000"                    # requested, never in the cache: skipped
REVS_160M = ("step1000", "step143000")
REQUEST = ",".join(sorted(REVS_70M + (MISSING,), key=lambda r: int(r[4:])))
# the n-gram measurements at small sizes too: 2 examples for the split, 2 prompts per trigram,
# 3 trigrams chosen from the text (pythia-70m with the authors' folder: their 228), 2 other neurons
SIZES = ("activation_examples=4", "probe_samples=60", "loss_examples=4", "ngram_examples=2",
         "ngram_prompts=2", "ngram_trigrams=3", "null_german_neurons=2")


def _plan(out, revisions=REQUEST, models="pythia-70m,pythia-160m", **kw):
    """The sweep's plan; with the authors' folder when the real data's has it beside it (as
    the CLI finds it), so that pythia-70m, the Hub id, measures the paper's trigrams."""
    from conftest import paper_dir_beside_data

    from analysis.orchestration.sweep.plan import plan_sweep

    kw.setdefault("paper_dir", paper_dir_beside_data())
    return plan_sweep(models, revisions, profile="quick", overrides=SIZES, corpus="fixture", out=out,
                      threads=1, **kw)


def _run(out, scheduler="none", workers=None, **kw):
    from analysis.orchestration.sweep.run import run_sweep

    logs: list[str] = []  # the plan's lines, then the run's
    res = run_sweep(_plan(out, log=logs.append, **kw), scheduler=scheduler, workers=workers, log=logs.append,
                    live=False)
    return res, logs


def _artifacts(out: Path) -> dict[str, tuple]:
    """{key: (payload_sha256, {array: sha256})} of every artifact in a sweep's store."""
    found = {}
    for p in (Path(out) / "store").glob("*/*/checkpoint.json"):
        art = json.loads(p.read_text())
        assert art["key"] == p.parent.name
        found[art["key"]] = (art["payload_sha256"], art.get("arrays"))
    return found


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The Hub cache (offline, patched into this process; spawned workers inherit it)."""
    home = tmp_path_factory.mktemp("sweep-hub") / "hf"
    commits = {"pythia-70m": hub_fixture.build_hub_cache(home, REVS_70M + (LATER,), shape=SHAPE_70M),
               "pythia-160m": hub_fixture.build_hub_cache(home, {r: 10 + i for i, r in enumerate(REVS_160M)},
                                                          repo="EleutherAI/pythia-160m", shape=SHAPE_160M)}
    mp = pytest.MonkeyPatch()
    hub_fixture.patch_offline(mp, home)
    mp.setenv("TOKENIZERS_PARALLELISM", "false")
    yield {"home": home, "commits": commits}
    mp.undo()


@pytest.fixture(scope="module")
def serial(hub, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep-serial")
    res, logs = _run(out)
    return {"out": out, "res": res, "logs": logs, "arts": _artifacts(out)}


@pytest.fixture(scope="module")
def cluster(hub, serial, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep-cluster")
    res, logs = _run(out, scheduler="local", workers=2)
    return {"out": out, "res": res, "logs": logs}


# ----------------------------------------------------------------------------- parsing


def test_revision_sets_and_model_names():
    from analysis.core.errors import UsageError
    from analysis.core.models import pythia_repo
    from analysis.orchestration.sweep.args import parse_revisions, parse_scheduler, pythia_revisions

    revs = pythia_revisions("all")
    assert len(revs) == 154 and revs[:4] == ["step0", "step1", "step2", "step4"]
    assert revs[10:12] == ["step512", "step1000"] and revs[-1] == "step143000"
    assert pythia_revisions(parse_revisions("step2000,step1000")) == ["step1000", "step2000"]
    assert pythia_repo("pythia-1.4b-deduped") == "EleutherAI/pythia-1.4b-deduped"
    assert pythia_repo("EleutherAI/pythia-12b") == "EleutherAI/pythia-12b"
    assert pythia_repo("pythia-70m-seed1") == "EleutherAI/pythia-70m-seed1"  # the report's names too
    assert pythia_repo("pythia-71m") is None and pythia_repo("gpt2") is None
    assert parse_scheduler("tcp://10.0.0.1:8786") == ("tcp", "tcp://10.0.0.1:8786")
    with pytest.raises(UsageError):
        parse_scheduler("udp://x:1")


# ----------------------------------------------------------------------------- equivalence


def test_serial_run_measures_every_cached_checkpoint_and_skips_the_missing_one(hub, serial):
    res = serial["res"]
    by = {(t["model"], t["revision"]): t for t in res["tasks"]}
    assert {r for (m, r), t in by.items() if m == "pythia-70m" and t["status"] == "computed"} == set(REVS_70M)
    reason = "not in the local Hugging Face cache and the Hub cannot be reached"
    assert by[("pythia-70m", MISSING)]["status"] == "skipped" and by[("pythia-70m", MISSING)]["reason"] == reason
    # pythia-160m: --neuron auto, anchored on its final checkpoint; its other revisions use
    # the neuron discovered there; those not in its cache are skipped
    anchor = by[("pythia-160m", "step143000")]
    assert anchor["anchor"] and anchor["status"] == "computed" and anchor["context_neuron"] == "auto"
    dep = by[("pythia-160m", "step1000")]
    assert dep["status"] == "computed" and dep["context_neuron"].startswith("L")
    assert sum(t["status"] == "skipped" for (m, _), t in by.items() if m == "pythia-160m") == 5
    assert res["counts"] == {"computed": 8, "skipped": 6}
    from analysis.orchestration.sweep.task import load_artifact

    store = serial["out"] / "store"
    a70 = load_artifact(store, by[("pythia-70m", "step0")]["key"])["result"]
    a160 = load_artifact(store, dep["key"])
    assert (a70["model"]["n_layers"], a70["model"]["d_mlp"]) == (4, 768)  # each from config.json
    assert (a160["result"]["model"]["n_layers"], a160["result"]["model"]["d_mlp"]) == (5, 1024)
    assert a160["provenance"]["upstream"] == {"anchor": anchor["key"]}
    assert a160["result"]["context"]["neuron"] == load_artifact(store, anchor["key"])["result"]["best"]["neuron"]
    assert a70["model"]["commit"] == hub["commits"]["pythia-70m"]["step0"]
    assert a70["context"]["neuron"] == "L3N669"


def test_the_table_is_tidy_parquet_and_csv(serial):
    import pandas as pd

    from analysis.orchestration.sweep.table import TABLE_COLUMNS

    df = pd.read_parquet(serial["out"] / "table.parquet")
    csv = pd.read_csv(serial["out"] / "table.csv")
    assert list(df.columns) == list(TABLE_COLUMNS) == list(csv.columns) and len(df) == len(csv)
    assert set(df["model"]) == {"pythia-70m", "pythia-160m"}
    one = df[(df["model"] == "pythia-70m") & (df["revision"] == "step1000")]
    assert set(one["measure"]) >= {"loss", "context_f1", "context_ablation_pct", "best_f1", "best_ablation_pct"}
    assert one["tokens_seen"].iloc[0] == 1000 * 2_097_152 and one["step"].iloc[0] == 1000
    assert not df.duplicated(["model", "revision", "measure", "language"]).any()
    assert MISSING not in set(df[df["model"] == "pythia-70m"]["revision"])
    assert (df.groupby("model")["n_params"].nunique() == 1).all()


def test_the_table_has_the_frequent_token_dla_of_every_measured_revision(hub, serial):
    """The paper's figure 7 per checkpoint (`ngram_dynamics.frequent_token_dla`): every
    measured revision of every model has `context_dla_frequent` for German and English,
    finite, about its checkpoint's context neuron; it moves over training; and at one
    checkpoint it is the context neuron's output weights through the unembedding of that
    revision's weights, recomputed here from the Hub cache over the ids the artifact lists."""
    import numpy as np
    import pandas as pd

    from analysis.core.engine import Weights
    from analysis.core.models import load_revision
    from analysis.orchestration.sweep.task import load_artifact

    df = pd.read_parquet(serial["out"] / "table.parquet")
    dla = df[df["measure"] == "context_dla_frequent"]
    measured = {(t["model"], t["revision"]) for t in serial["res"]["tasks"] if t["status"] in ("computed", "reused")}
    assert len(measured) == 8
    for lang in ("german", "english"):
        got = dla[dla["language"] == lang]
        assert set(zip(got["model"], got["revision"], strict=True)) == measured and len(got) == len(measured)
        assert np.isfinite(got["value"].to_numpy(dtype=float)).all()
    ctx = df[df["measure"] == "context_f1"].set_index(["model", "revision"])["neuron"]
    assert all(ctx[(m, r)] == n for m, r, n in zip(dla["model"], dla["revision"], dla["neuron"], strict=True))
    g70 = dla[(dla["model"] == "pythia-70m") & (dla["language"] == "german")]
    assert g70["value"].nunique() == len(g70)  # each revision's weights differ
    task = next(t for t in serial["res"]["tasks"] if (t["model"], t["revision"]) == ("pythia-70m", "step1000"))
    art = load_artifact(serial["out"] / "store", task["key"])["result"]["frequent_token_dla"]
    m = load_revision("step1000", None, "cpu", repo="EleutherAI/pythia-70m")
    w = Weights.from_bridge(m.bridge, m.info["rotary_pct"])
    direction = w.W_out[3, 669].double() @ w.W_U.double()  # [d_vocab]
    for lang in ("german", "english"):
        ids = art[lang]["token_ids"]
        assert 0 < len(ids) <= 200 and len(set(ids)) == len(ids) and art[lang]["n_tokens"] == len(ids)
        row = dla[(dla["model"] == "pythia-70m") & (dla["revision"] == "step1000") & (dla["language"] == lang)]
        assert float(row["value"].iloc[0]) == pytest.approx(float(direction[ids].mean()), rel=1e-9, abs=1e-12)
    assert art["german"]["token_ids"] != art["english"]["token_ids"] and art["tokens"] == 200
    assert art["difference"] == pytest.approx(art["german"]["mean"] - art["english"]["mean"])


def test_the_paper_figure_map_names_a_drawn_figure_for_figure_7():
    """Quirke et al.'s figure 7 (average DLA on frequent German and English tokens) is drawn
    by the sweep: its entry names a `MEASURES` figure of that measure, both languages."""
    from figures.sweep import MEASURES, PAPER_FIGURES

    entry = {n: names for n, _, names in PAPER_FIGURES}[7]
    assert entry
    specs = {s["name"]: s for s in MEASURES}
    assert all(n in specs for n in entry)
    assert any(specs[n]["measure"] == "context_dla_frequent" and set(specs[n]["language"]) == {"german", "english"}
               for n in entry)


def test_cluster_artifacts_equal_the_serial_ones_byte_for_byte(serial, cluster):
    assert "LocalCluster: 2 workers" in "\n".join(cluster["logs"])
    assert cluster["res"]["counts"] == serial["res"]["counts"]
    theirs = _artifacts(cluster["out"])
    assert theirs == serial["arts"] and len(theirs) == 8  # payload sha256 and every array's sha256
    for p in (cluster["out"] / "store").glob("*/*/*.npy"):  # and the arrays' bytes themselves
        assert p.read_bytes() == (serial["out"] / p.relative_to(cluster["out"])).read_bytes()
    workers = {t["worker"] for t in cluster["res"]["tasks"] if t["status"] == "computed"}
    assert len(workers) == 2 and all(w.split(":")[1] != str(os.getpid()) for w in workers)


def test_resume_computes_nothing_then_one_new_revision(hub, serial, cluster):
    out = cluster["out"]
    res, logs = _run(out)  # the cluster's store, read by a serial rerun: the same keys
    assert res["counts"].get("computed", 0) == 0 and res["counts"]["reused"] == 8
    assert any(line.startswith("Sweep: ") and "8 reused" in line for line in logs)
    res, logs = _run(out, revisions=REQUEST + "," + LATER)
    computed = [(t["model"], t["revision"]) for t in res["tasks"] if t["status"] == "computed"]
    assert computed == [("pythia-70m", LATER)] and res["counts"]["reused"] == 8
    assert _artifacts(out).items() >= serial["arts"].items()


def test_a_worker_killed_mid_task_is_rerun_and_the_sweep_completes(hub, serial, tmp_path, monkeypatch):
    from analysis.orchestration.sweep.task import HOLD_ENV

    hold = tmp_path / "hold"
    hold.mkdir()
    monkeypatch.setenv(HOLD_ENV, str(hold))
    killed: list[tuple[int, str]] = []

    def killer():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not killed:
            started = sorted(hold.glob("started-*"))
            if started:
                _, pid, rev = started[0].name.split("-", 2)
                os.kill(int(pid), signal.SIGKILL)  # mid-task: measured, not yet saved
                killed.append((int(pid), rev))
            time.sleep(0.05)
        (hold / "release").write_text("")

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    out = tmp_path / "out"
    revs = "step0,step1,step512"
    res, logs = _run(out, scheduler="local", workers=2, revisions=revs, models="pythia-70m")
    th.join(timeout=10)
    assert killed, "no task reached the hold point"
    assert res["counts"] == {"computed": 3}
    pid, rev = killed[0]
    done = {t["revision"]: t for t in res["tasks"]}
    assert done[rev]["status"] == "computed" and done[rev]["worker"].split(":")[1] != str(pid)
    mine = _artifacts(out)
    assert len(mine) == 3 and mine.items() <= serial["arts"].items()
    assert not list((out / "store").rglob("*.tmp"))


def test_keep_weights_no_frees_each_revision_after_its_task(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    commits = hub_fixture.build_hub_cache(home, ["step1", "step143000"], shape=SHAPE_70M)
    hub_fixture.patch_offline(monkeypatch, home)
    repo = hub_fixture.repo_folder(home)
    blobs_before = {p.name for p in (repo / "blobs").iterdir()}
    res, _ = _run(tmp_path / "out", revisions="step1,step143000", models="pythia-70m", keep_weights="no")
    assert res["counts"] == {"computed": 2}
    for commit in commits.values():
        snap = repo / "snapshots" / commit
        assert not list(snap.glob("*.safetensors")) and (snap / "config.json").is_file()
        assert (snap / "tokenizer.json").is_file()  # shared small files stay
    gone = blobs_before - {p.name for p in (repo / "blobs").iterdir()}
    assert len(gone) == 2  # the two weight blobs
    res, _ = _run(tmp_path / "out", revisions="step1,step143000", models="pythia-70m", keep_weights="no")
    assert res["counts"] == {"reused": 2}  # commits known from refs/: nothing to download


def test_a_seed_sweep_over_polypythias_plans_and_runs(tmp_path, monkeypatch):
    """`--models pythia-70m-seed1,EleutherAI/pythia-70m-seed2`: the registry's names (the
    ones `report --model` takes), each its own repository, `--neuron auto` by default
    (L3N669 is the seed's neuron of pythia-70m only), anchored on its final checkpoint."""
    from analysis.core.errors import UsageError
    from analysis.orchestration.sweep.task import load_artifact

    home = tmp_path / "hf"
    repos = ("EleutherAI/pythia-70m-seed1", "EleutherAI/pythia-70m-seed2")
    commits = hub_fixture.build_pythia_runs(home, repos, shape=SHAPE_70M)
    hub_fixture.patch_offline(monkeypatch, home)
    with pytest.raises(UsageError, match="pythia-70m-seed1: neuron L4N0 is out of range"):  # its config
        _plan(tmp_path / "out", revisions="step143000", models="pythia-70m-seed1", neuron="L4N0")
    res, _ = _run(tmp_path / "out", revisions="step143000", models="pythia-70m-seed1,EleutherAI/pythia-70m-seed2")
    assert res["counts"] == {"computed": 2}, res["tasks"]
    settings = res["manifest"]["settings"]["models"]
    assert [(m["name"], m["source"], m["neuron"], m["pythia"]["seed"]) for m in settings] == [
        ("pythia-70m-seed1", repos[0], "auto", 1), ("pythia-70m-seed2", repos[1], "auto", 2)]
    by = {t["model"]: t for t in res["tasks"]}
    for repo in repos:
        task = by[repo.removeprefix("EleutherAI/")]
        assert task["anchor"] and task["context_neuron"] == "auto" and task["revision"] == "step143000"
        art = load_artifact(tmp_path / "out" / "store", task["key"])["result"]
        assert art["model"]["commit"] == commits[repo]["step143000"]
        assert art["context"]["neuron"] == art["best"]["neuron"]  # its own best neuron, not L3N669
    import pandas as pd

    df = pd.read_parquet(tmp_path / "out" / "table.parquet")
    assert set(df["model"]) == {"pythia-70m-seed1", "pythia-70m-seed2"} and set(df["size"]) == {"70m"}


def test_organism_expands_to_its_saved_checkpoints(tmp_path):
    from test_organism import _train

    from analysis.core.models import models_cache_dir

    run = models_cache_dir() / "organism-sweeptest"
    manifest = _train(run, n_checkpoints=3, steps=6)
    res, logs = _run(tmp_path / "out", revisions="all", models="organism")
    steps = [t["step"] for t in res["tasks"]]
    assert steps == sorted(c["step"] for c in manifest["checkpoints"]) and res["counts"] == {"computed": len(steps)}
    import pandas as pd

    df = pd.read_parquet(tmp_path / "out" / "table.parquet")
    tl = df[df["measure"] == "train_loss"].sort_values("step")
    assert list(tl["value"]) == pytest.approx([c["train_loss"] for c in manifest["checkpoints"]])
    assert set(df[df["measure"] == "context_f1"]["neuron"]) == {
        df[(df["measure"] == "best_f1") & (df["step"] == max(steps))]["neuron"].iloc[0]}
    # the n-gram curves over its checkpoints: one trigram list (chosen from the text) at every step
    for measure in ("trigram_loss_clean", "trigram_loss_ablated", "context_effect_total", "context_effect_indirect"):
        assert sorted(df[df["measure"] == measure]["step"]) == steps, measure
    tri = pd.read_parquet(tmp_path / "out" / "trigrams.parquet")
    lists = {step: tuple(g.sort_values("index")["trigram"]) for step, g in tri.groupby("step")}
    assert sorted(lists) == steps and len(set(lists.values())) == 1 and set(tri["source"]) == {"selected"}
    clean = df[df["measure"] == "trigram_loss_clean"].set_index("step")["value"]
    assert tri.groupby("step")["clean"].mean().to_numpy() == pytest.approx(clean.sort_index().to_numpy())


def test_a_mistake_is_one_line_before_any_task(hub, tmp_path):
    import socket

    from typer.testing import CliRunner

    from analysis.orchestration.cli import app

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    base = ["sweep", "--corpus", "fixture", "--out", str(out), "--no-report", "--threads", "1"]
    cases = {
        "unknown model 'pythia-71m'": ["--models", "pythia-71m"],
        "unknown model 'gpt2'": ["--models", "gpt2"],
        "revision 'step1k' is malformed": ["--models", "pythia-70m", "--revisions", "step1k"],
        "step1500 is not one of Pythia's 154 checkpoints": ["--models", "pythia-70m", "--revisions", "step1500"],
        f"no Dask scheduler answers at tcp://127.0.0.1:{port}": [
            "--models", "pythia-70m", "--revisions", "step1", "--scheduler", f"tcp://127.0.0.1:{port}"],
        "--scheduler 'localhost'": ["--models", "pythia-70m", "--scheduler", "localhost"],
        "neuron L9N1 is out of range": ["--models", "pythia-70m", "--neuron", "L9N1"],
    }
    for needle, args in cases.items():
        r = CliRunner().invoke(app, base + args)
        assert r.exit_code == 2, (needle, r.output)
        lines = r.output.strip().splitlines()
        err = [i for i, line in enumerate(lines) if line.startswith("error: ")]
        assert len(err) == 1 and needle in lines[err[0]], (needle, r.output)
        assert all(line.startswith("Hint: ") for line in lines[err[0] + 1:]), r.output  # then only a hint
        assert "Traceback" not in r.output and "computed" not in r.output
    assert not list(out.glob("store/*/*/checkpoint.json"))


@pytest.fixture(scope="module")
def sweep_report(serial):
    """`german-neuron report --sweep DIR` on the serial sweep; with `--paper-dir` (the
    authors' published measurements) when the real data's folder has them beside it: the
    sweep's pythia-70m is the Hub id with random weights, so its report overlays the
    authors' curves and checks their claims."""
    import re

    from conftest import paper_dir_beside_data
    from typer.testing import CliRunner

    from analysis.orchestration.cli import app

    paper = paper_dir_beside_data()
    r = CliRunner().invoke(app, ["report", "--sweep", str(serial["out"])] + (["--paper-dir", paper] if paper else []))
    assert r.exit_code == 0, r.output
    html = re.sub(r"data:[^\"')\s]+", "", (serial["out"] / "report.html").read_text(encoding="utf-8"))
    return {"html": html, "paper_dir": paper}


def test_sweep_report_shows_one_curve_per_model(serial, sweep_report):
    html = sweep_report["html"]
    from figures.sweep import MEASURES

    for spec in MEASURES:
        assert (serial["out"] / "figures" / f"{spec['name']}.png").is_file()
        assert spec["caption"].split(" (")[0][:40] in html
    for needle in ("Training dynamics across checkpoints and model sizes", "pythia-160m", "L3N669",
                   f"{MISSING}", "discovered at the final checkpoint"):
        assert needle in html, needle
    if sweep_report["paper_dir"] is None:  # pythia-70m is the real id: the report says how to pass them
        assert "were not available to this report" in html and "--paper-dir DIR" in html
    # the final ablation in % and in nats (the effect split beside it is in nats)
    assert re.search(r"changes the German loss by\s+[+−-][0-9.]+% \([+−-][0-9.]+ nats\)", html)


def test_sweep_report_overlays_the_authors_curves_and_lists_the_claims(serial, sweep_report, paper_dir):
    """Beside the sweep's pythia-70m (random weights under the real id) the authors' series
    are drawn and every claim is listed with both numbers; none reproduces, those the sweep
    does not measure say not measured; pythia-160m gets neither."""
    import pandas as pd

    from analysis.core.paper import FILES
    from analysis.families.paper import CLAIMS, NOT_MEASURED, NOT_REPRODUCED
    from analysis.orchestration.sweep.reference import CLAIMS_FILE

    out = serial["out"]
    rec = json.loads((out / CLAIMS_FILE).read_text())
    assert list(rec["models"]) == ["pythia-70m"]
    assert {n: f["sha256"] for n, f in rec["paper"]["files"].items()} == {n: f.sha256 for n, f in FILES.items()}
    claims = {c["id"]: c for c in rec["models"]["pythia-70m"]["claims"]}
    assert list(claims) == [c.id for c in CLAIMS]
    for c in claims.values():  # every claim measured now, the split and the trigrams included
        assert isinstance(c["authors"]["value"], (int, float)) and c["authors"]["where"]
        assert c["verdict"] == NOT_REPRODUCED, c
    assert rec["models"]["pythia-70m"]["counts"][NOT_MEASURED] == 0
    df = pd.read_parquet(out / "table.parquet")
    final = df[(df["model"] == "pythia-70m") & (df["step"] == 143000)].set_index("measure")["value"]
    assert claims["final_f1"]["ours"]["value"] == float(final["context_f1"])
    # the indirect share is our indirect effect over our total at step143000, from the table
    assert claims["indirect_share"]["ours"]["value"] == pytest.approx(
        final["context_effect_indirect"] / final["context_effect_total"])
    # trigrams_first reads the paper's 228 trigrams at each of pythia-70m's computed checkpoints
    tri = pd.read_parquet(out / "trigrams.parquet")
    mine = tri[tri["model"] == "pythia-70m"]
    assert set(mine["source"]) == {"paper"} and mine.groupby("step")["trigram"].count().eq(228).all()
    assert claims["trigrams_first"]["ours"]["timing"]["n"] == mine["trigram"].nunique()
    import html as escape

    html = escape.unescape(sweep_report["html"])
    assert "pythia-70m: 0 of the paper's 6 headline claims reproduce" in html
    assert html.count("Authors' value (file, row)") == 1  # one table: pythia-160m is not Pythia-70M
    for name in ("sweep_context_f1", "sweep_ablation_german", "sweep_loss_german", "sweep_loss_english"):
        fig = json.loads((out / "figures" / f"{name}.json").read_text())
        assert fig["reference_files"] == {n: f.sha256 for n, f in FILES.items()} and "Quirke" in fig["caption"]
    assert "reference_files" not in json.loads((out / "figures" / "sweep_best_f1.json").read_text())
    for name in ("paper_effect_split", "paper_trigram_losses", "paper_other_neurons"):
        assert (out / "figures" / f"{name}.png").is_file() and name in html
        # theirs and ours: our pythia-70m's series beside the authors'
        drawn = pd.read_csv(out / "figures" / f"{name}.csv")
        assert {"ours", "Quirke et al."} <= set(drawn["who"]), name
        assert drawn[drawn["who"] == "ours"]["series"].str.startswith("pythia-70m: ").all()
    for name in ("sweep_trigram_loss", "sweep_effect_indirect", "sweep_other_ablation"):
        fig = json.loads((out / "figures" / f"{name}.json").read_text())
        assert fig["reference_files"] == {n: f.sha256 for n, f in FILES.items()}, name
    # the closing map of the paper's figures 1-8 to this report's
    import re

    fig5 = re.search(r"Figure 5 \(direct and indirect effect of L3N669 on German loss\):(.*?)Figure 6", html, re.S)
    assert fig5 and "paper_effect_split" in fig5.group(1) and "sweep_effect_indirect" in fig5.group(1)
    fig7 = re.search(r"Figure 7 \(L3N669's average direct logit attribution[^)]*\):(.*?)Figure 8", html, re.S)
    assert fig7 and "sweep_dla_frequent" in fig7.group(1) and "not measured" not in fig7.group(1)


def test_weights_without_a_copy_equal_the_copy_and_outlive_the_bridge():
    import torch

    from analysis.core.engine import Forward, Weights, make_batches, per_example_losses
    from analysis.core.models import load_model

    m = load_model("tiny")
    a = Weights.from_bridge(m.bridge, m.info["rotary_pct"])
    b = Weights.from_bridge(m.bridge, m.info["rotary_pct"], copy=False)
    toks = [m.to_tokens("Die Kommission hat heute einen Vorschlag vorgelegt.")]
    ref = per_example_losses(Forward(a), make_batches(toks, 4096, 1), {}, show_progress=False)
    m.bridge = None
    import gc

    gc.collect()
    got = per_example_losses(Forward(b), make_batches(toks, 4096, 1), {}, show_progress=False)
    assert all(torch.equal(getattr(a, n), getattr(b, n)) for n in ("W_E", "W_Q", "W_in", "W_U", "b_U"))
    assert (ref["original"] == got["original"]).all()


def test_out_of_memory_names_model_revision_and_batch():
    import torch

    from analysis.orchestration.sweep.task import _known_failure

    spec = {"model": "pythia-12b", "revision": "step1000", "device": "cuda", "profile": {"batch_tokens": 4096}}
    rec = _known_failure(spec, {"key": "k"}, torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert rec["status"] == "failed"
    assert all(s in rec["reason"] for s in ("pythia-12b", "step1000", "4096 tokens", "--batch-tokens"))


def test_a_plain_checkpoint_folder_is_one_task_keyed_by_its_fingerprint(tmp_path):
    from analysis.core.models import _fingerprint_dir
    from analysis.orchestration.bench import bench_checkpoints
    from analysis.orchestration.sweep.figures import draw_sweep_figures
    from analysis.orchestration.sweep.summary import sweep_summary
    from analysis.orchestration.sweep.task import load_artifact

    (ckpt,) = bench_checkpoints(tmp_path / "ckpts", 1)
    res, _ = _run(tmp_path / "out", models=str(ckpt), neuron="auto")
    (task,) = res["tasks"]
    assert task["status"] == "computed" and task["step"] is None and task["anchor"]
    art = load_artifact(tmp_path / "out" / "store", task["key"])
    assert art["provenance"]["model"]["kind"] == "folder"
    assert art["provenance"]["model"]["fingerprint"] == _fingerprint_dir(ckpt)
    summary = sweep_summary(tmp_path / "out")
    (m,) = summary["models"]
    assert m["last"]["step"] is None and m["context_neuron"] == art["result"]["best"]["neuron"]
    # the parameter count is the checkpoint's own, as transformers loads it (not the
    # TransformerLens bridge's, which adds split q, k, v copies)
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(ckpt)
    assert art["result"]["model"]["n_params"] == m["n_params"] == sum(p.numel() for p in hf.parameters())
    assert draw_sweep_figures(tmp_path / "out", tmp_path / "figs") == []  # no training step to plot against
    import shutil

    moved = shutil.copytree(ckpt, tmp_path / "elsewhere" / "renamed")  # the same weights elsewhere
    res, _ = _run(tmp_path / "out", models=str(moved), neuron="auto")
    assert res["counts"] == {"reused": 1} and res["tasks"][0]["key"] == task["key"]


@pytest.mark.parametrize("layout", ["safetensors", "sharded", "pickle"])
def test_checkpoint_n_params_counts_the_stored_tensors(tmp_path, layout):
    """One file, shards with their index, or a pickle: the count is the model's parameters
    (a small GPT-NeoX, untied embeddings), and a folder without weights is refused."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from analysis.core.errors import UsageError
    from analysis.core.models import checkpoint_n_params

    cfg = GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=32)
    model = GPTNeoXForCausalLM(cfg)
    kw = {"safetensors": {}, "sharded": {"max_shard_size": "20KB"},
          "pickle": {"safe_serialization": False}}[layout]
    model.save_pretrained(tmp_path / "m", **kw)
    names = {f.name for f in (tmp_path / "m").iterdir()}
    assert (layout == "sharded") == any(n.endswith(".index.json") for n in names)
    assert checkpoint_n_params(tmp_path / "m") == sum(p.numel() for p in model.parameters())
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no weight files"):
        checkpoint_n_params(tmp_path / "empty")


def test_a_model_report_shows_the_sweep_beside_its_own_dynamics(tiny_report, serial, tmp_path):
    from analysis.core.config import Neuron, RunConfig, get_profile
    from analysis.core.errors import UsageError
    from analysis.orchestration.pipeline import run_report
    from analysis.orchestration.sweep.figures import draw_sweep_figures
    from analysis.orchestration.sweep.summary import sweep_summary
    from report.build import build_notebook

    res, _, _ = tiny_report
    context = {**res["context"], "sweep": sweep_summary(serial["out"]),
               "figures": res["context"]["figures"] + draw_sweep_figures(serial["out"], tmp_path / "figures")}
    nb = build_notebook(context)
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "# Training dynamics across checkpoints and model sizes" in md and "# Setup" in md
    assert "show_figure('sweep_context_f1'" in code and "table.parquet" in code
    cfg = RunConfig(model="tiny", neuron=Neuron.parse("L3N669"), profile=get_profile("quick"),
                    out=str(tmp_path / "o"))
    with pytest.raises(UsageError, match="holds no sweep"):  # checked before any compute
        run_report(cfg, corpus="fixture", sweep=str(tmp_path), log=lambda s: None)
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- scale


LAYOUTS = {"step1": "safetensors", "step2": "safetensors-sharded", "step4": "bin-sharded"}


def test_sharded_checkpoints_with_their_index_measure_as_one_file(tmp_path, monkeypatch):
    """The same weights (one seed) as one model.safetensors, as safetensors shards and as
    pickled shards (pythia-12b's layout), each with Hugging Face's index: every layout is
    fetched by the Hub patterns, loaded, and measured to the same numbers."""
    from fnmatch import fnmatch

    from analysis.core.models import HUB_PATTERNS_PICKLE, HUB_PATTERNS_SAFETENSORS, weight_files
    from analysis.orchestration.sweep.task import load_artifact

    home = tmp_path / "hf"
    commits = {rev: hub_fixture.add_revision(home, rev, 7, weights=w, shape=SHAPE_70M) for rev, w in LAYOUTS.items()}
    hub_fixture.patch_offline(monkeypatch, home)
    snaps = {rev: hub_fixture.repo_folder(home) / "snapshots" / c for rev, c in commits.items()}
    bins = sorted(p.name for p in snaps["step4"].iterdir() if "pytorch_model" in p.name)
    assert bins == [f"pytorch_model-0000{i}-of-00003.bin" for i in (1, 2, 3)] + ["pytorch_model.bin.index.json"]
    for name in bins:  # what _hub_snapshot asks the Hub for covers every file of the layout
        assert any(fnmatch(name, pat) for pat in HUB_PATTERNS_PICKLE), name
    for p in snaps["step2"].iterdir():
        if p.name.startswith("model"):
            assert any(fnmatch(p.name, pat) for pat in HUB_PATTERNS_SAFETENSORS), p.name
    assert [p.name for p in weight_files(snaps["step2"])] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    res, _ = _run(tmp_path / "out", revisions=",".join(LAYOUTS), models="pythia-70m")
    assert res["counts"] == {"computed": 3}, res["tasks"]
    arts = {t["revision"]: load_artifact(tmp_path / "out" / "store", t["key"]) for t in res["tasks"]}
    assert {r: a["result"]["model"]["commit"] for r, a in arts.items()} == commits
    one = arts["step1"]
    for rev in ("step2", "step4"):
        assert {k: v for k, v in arts[rev]["result"].items() if k != "model"} == \
            {k: v for k, v in one["result"].items() if k != "model"}, rev
        assert arts[rev]["arrays"] == one["arrays"], rev  # every array's sha256


def test_a_sharded_snapshot_missing_a_shard_is_skipped_and_a_folder_refused(tmp_path, monkeypatch):
    import shutil

    from analysis.core.errors import UsageError
    from analysis.core.models import check_checkpoint_dir

    home = tmp_path / "hf"
    commit = hub_fixture.add_revision(home, "step2", 7, weights="safetensors-sharded", shape=SHAPE_70M)
    hub_fixture.patch_offline(monkeypatch, home)
    snap = hub_fixture.repo_folder(home) / "snapshots" / commit
    folder = shutil.copytree(snap, tmp_path / "ckpt")  # a plain folder (symlinks resolved)
    (snap / "model-00002-of-00003.safetensors").unlink()
    res, _ = _run(tmp_path / "out", revisions="step2", models="pythia-70m")
    (task,) = res["tasks"]
    assert task["status"] == "skipped"
    assert task["reason"] == "the snapshot lacks 1 of the weight shards its index names (model-00002-of-00003.safetensors)"
    check_checkpoint_dir(folder)
    (folder / "model-00003-of-00003.safetensors").unlink()
    with pytest.raises(UsageError, match=r"lacks 1 of the weight shards its index names \(model-00003-of-00003"):
        check_checkpoint_dir(folder)


def test_a_branch_that_moved_on_the_hub_is_refreshed_recorded_and_kept_offline(tmp_path, monkeypatch):
    """A branch re-uploaded on the Hub (as Pythia's were): online, the Hub's commit replaces
    the cached one, the move is logged and recorded; offline afterwards the record wins over
    the cache's stale `refs/` and nothing is recomputed. The Hub is a stand-in (no network)."""
    from analysis.orchestration.sweep import hub
    from analysis.orchestration.sweep.task import load_artifact, refs_path

    home = tmp_path / "hf"
    old = hub_fixture.add_revision(home, "step1", 3, shape=SHAPE_70M)
    new = hub_fixture.add_revision(home, "step2", 4, shape=SHAPE_70M)  # the re-upload's snapshot
    hub_fixture.patch_offline(monkeypatch, home)
    out = tmp_path / "out"
    res, logs = _run(out, revisions="step1", models="pythia-70m")
    assert res["tasks"][0]["commit"] == old and res["counts"] == {"computed": 1}
    assert res["manifest"]["refs"]["checked"] == {"EleutherAI/pythia-70m": "offline"}
    assert any("offline: the commits of 1 branches are those recorded, not checked" in line for line in logs)

    asked = []
    monkeypatch.setattr(hub, "_hub_offline", lambda: False)
    monkeypatch.setattr(hub, "_hub_branches", lambda repo: asked.append(repo) or {"step1": new})
    res, logs = _run(out, revisions="step1", models="pythia-70m")
    (task,) = res["tasks"]
    assert asked == ["EleutherAI/pythia-70m"]  # one request per repository
    assert task["status"] == "computed" and task["commit"] == new and task["commit_moved_from"] == old
    assert load_artifact(out / "store", task["key"])["result"]["model"]["commit"] == new
    assert res["manifest"]["refs"]["moved"] == [{"repo": "EleutherAI/pythia-70m", "revision": "step1", "old": old,
                                                 "new": new, "old_from": "the local Hugging Face cache"}]
    assert any(f"step1 moved on the Hub: {old[:12]} -> {new[:12]}" in line for line in logs)
    rec = json.loads(refs_path(out / "refs", "EleutherAI/pythia-70m", "step1").read_text())
    assert (rec["commit"], rec["moved_from"], rec["source"]) == (new, old, "hub")
    assert json.loads((out / "sweep.json").read_text())["tasks"][0]["commit_moved_from"] == old

    monkeypatch.undo()  # offline again; the cache's refs/step1 still names the old commit
    hub_fixture.patch_offline(monkeypatch, home)
    assert (hub_fixture.repo_folder(home) / "refs" / "step1").read_text() == old
    res, _ = _run(out, revisions="step1", models="pythia-70m")
    assert res["counts"] == {"reused": 1} and res["tasks"][0]["commit"] == new


def test_specs_carry_relative_paths_and_a_missing_artifact_is_a_failed_task(tmp_path, monkeypatch):
    """A worker that sees another folder than the driver's (its `GERMAN_NEURON_SWEEP_OUT`)
    writes its artifact there: the driver finds none in its store and the task fails with a
    one-line cause, not "computed" with a row silently missing from the table. The same
    folder under another path (a symlink: another mount point) works."""
    import pandas as pd

    from analysis.core.errors import ReportError
    from analysis.orchestration.sweep.table import build_table
    from analysis.orchestration.sweep.task import OUT_ENV

    home = tmp_path / "hf"
    hub_fixture.add_revision(home, "step1", 3, shape=SHAPE_70M)
    hub_fixture.patch_offline(monkeypatch, home)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    plan = _plan(out, revisions="step1", models="pythia-70m")
    (spec,) = plan.tasks
    assert (spec["store"], spec["refs"], spec["out"]) == ("store", "refs", str(out.resolve()))

    monkeypatch.setenv(OUT_ENV, str(elsewhere))
    res, _ = _run(out, revisions="step1", models="pythia-70m")
    (task,) = res["tasks"]
    assert res["counts"] == {"failed": 1} and task["status"] == "failed"
    rel = f"store/{task['key'][:2]}/{task['key']}/checkpoint.json"
    assert task["reason"].startswith(f"worker {task['worker']} reported it computed but {rel} is not in {out}")
    assert f"the worker wrote {elsewhere / rel}" in task["reason"] and OUT_ENV in task["reason"]
    assert "\n" not in task["reason"] and (elsewhere / rel).is_file() and not (out / rel).exists()
    assert json.loads((out / "sweep.json").read_text())["tasks"][0]["status"] == "failed"
    assert pd.read_parquet(out / "table.parquet").empty

    (tmp_path / "mount").symlink_to(out, target_is_directory=True)  # the same folder, another path
    monkeypatch.setenv(OUT_ENV, str(tmp_path / "mount"))
    res, _ = _run(out, revisions="step1", models="pythia-70m")
    assert res["counts"] == {"computed": 1} and (out / rel).is_file() and res["table"]["rows"] > 0

    import shutil

    shutil.rmtree((out / rel).parent)  # the store lost an artifact sweep.json lists as computed
    with pytest.raises(ReportError, match=f"lists pythia-70m step1 as computed but its artifact {task['key'][:12]}"):
        build_table(out)


def test_the_readme_worker_commands_give_the_local_clusters_settings():
    """The README's scheduler and worker commands are the ones the sweep prints, and Dask
    reads from their environment exactly what a LocalCluster gets."""
    import shlex

    import dask

    from analysis.orchestration.sweep.executors import (
        SCHEDULER_CONFIG,
        WORKER_CONFIG,
        WORKER_MEMORY_LIMIT,
        scheduler_command,
        worker_command,
    )

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert scheduler_command() in readme and worker_command() in readme
    words = shlex.split(worker_command("tcp://10.0.0.1:8786"))
    env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
    args = words[len(env):]
    assert args[:3] == ["dask", "worker", "tcp://10.0.0.1:8786"]
    assert args[args.index("--nthreads") + 1] == "1" and args[args.index("--memory-limit") + 1] == str(WORKER_MEMORY_LIMIT)
    env.update(dict(w.split("=", 1) for w in shlex.split(scheduler_command()) if "=" in w))
    read = dask.config.collect_env(env)
    for key, value in {**WORKER_CONFIG, **SCHEDULER_CONFIG}.items():
        assert dask.config.get(key, config=read) == value, key
    assert WORKER_CONFIG["distributed.worker.memory.pause"] is False  # never paused mid-load


def test_the_dashboard_the_sweep_prints_serves_its_pages():
    from urllib.request import urlopen

    from analysis.orchestration.sweep.executors import start_executor

    logs: list[str] = []
    executor, _ = start_executor("local", "cpu", 1, 1, 1, logs.append)
    try:
        link = executor.dashboard
        assert link and link.startswith("http://") and " " not in link  # no "needs bokeh" note
        with urlopen(link.rsplit("/", 1)[0] + "/status", timeout=30) as page:
            assert page.status == 200 and b"Dask" in page.read()
    finally:
        executor.close()


def test_the_ngram_inputs_are_in_the_key(hub, paper_dir, tmp_path, monkeypatch):
    """The n-gram sizes (from the profile), the trigram list and the number of frequent
    tokens of the DLA (the paper's figure 7) are in each task's key: the
    authors' folder changes the key of pythia-70m (the Hub id: it then measures their 228
    trigrams, whose strings and sha256 the spec carries) and not that of pythia-160m."""
    paper = paper_dir

    def keys(**kw):
        return {t["model"]: t["key"] for t in _plan(tmp_path / "o", revisions="step143000", **kw).tasks}

    with_paper, without = keys(paper_dir=paper), keys(paper_dir=None)
    assert with_paper["pythia-70m"] != without["pythia-70m"]
    assert with_paper["pythia-160m"] == without["pythia-160m"]
    plan = _plan(tmp_path / "o", revisions="step143000", paper_dir=paper)
    spec = {t["model"]: t for t in plan.tasks}
    src = spec["pythia-70m"]["params"]["ngrams"]["trigrams"]
    assert src["kind"] == "paper" and len(src["strings"]) == 228 and src["sha256"]
    assert spec["pythia-160m"]["params"]["ngrams"]["trigrams"]["kind"] == "selected"
    from analysis.orchestration.sweep.plan import plan_sweep

    more = plan_sweep("pythia-70m", "step143000", profile="quick", corpus="fixture", out=tmp_path / "o",
                      threads=1, paper_dir=paper, overrides=SIZES + ("ngram_prompts=3",))
    assert more.tasks[0]["key"] != with_paper["pythia-70m"]
    assert spec["pythia-70m"]["params"]["ngrams"]["frequent_token_dla"]["tokens"] == 200
    from analysis.families import ngram_dynamics

    monkeypatch.setattr(ngram_dynamics, "DLA_TOKENS", 100)
    fewer = keys(paper_dir=paper)
    assert all(fewer[m] != with_paper[m] for m in ("pythia-70m", "pythia-160m"))


def test_torch_threads_and_the_batch_size_are_in_the_key(tmp_path, monkeypatch):
    """Measured here (2-core CPU, `tiny`'s shape): the same task with 1 and 2 torch threads
    gives different bytes (the payload: the probes' coefficients; the F1 array was equal), so
    the thread count is in the key (`params.threads`, default 1 whatever the machine), as the
    forward batch (`--batch-tokens`, `params.batch_tokens`) is; a worker runs with the
    threads its key names."""
    from analysis.orchestration.sweep.plan import plan_sweep
    from analysis.orchestration.sweep.run import run_sweep

    home = tmp_path / "hf"
    hub_fixture.add_revision(home, "step1", 5)
    hub_fixture.patch_offline(monkeypatch, home)

    def plan(**kw):
        return plan_sweep("pythia-70m", "step1", profile="quick", overrides=SIZES, corpus="fixture",
                          out=tmp_path / "out", **kw)

    keys = {kw: plan(**dict(kw)).tasks[0]["key"] for kw in (
        (), (("threads", 1),), (("threads", 2),), (("threads", 1), ("batch_tokens", 256)))}
    assert keys[()] == keys[(("threads", 1),)]  # the default, on any machine
    assert len(set(keys.values())) == 3
    p = plan(threads=2)
    assert p.tasks[0]["params"]["threads"] == 2 and p.settings["threads"] == 2
    res = run_sweep(p, scheduler="none", log=lambda s: None, live=False)
    assert res["counts"] == {"computed": 1}
    art = json.loads(next((tmp_path / "out").glob("store/*/*/checkpoint.json")).read_text())
    assert art["cost"]["threads"] == 2 and art["provenance"]["params"]["threads"] == 2
