"""End to end on `tiny`: artifacts, cache, figures, report; and the error paths."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from analysis.core.artifacts import SCHEMA_VERSION, ArtifactStore, StepInputs

SECTIONS = ["Summary", "Setup", "Context neuron activations", "Single-neuron probes",
            "Mean ablation", "Provenance"]


def test_report_has_every_section_figure_and_no_template_text(tiny_report):
    res, logs, _ = tiny_report
    out = res["out"]
    html = (out / "report.html").read_text(encoding="utf-8")
    text = re.sub(r"data:[^\"')\s]+", "", html)  # embedded images are base64, not text
    text = re.sub(r"<(style|script)\b.*?</\1>", "", text, flags=re.S)  # plotly.js, figure specs
    for heading in SECTIONS:
        assert re.search(rf"<h[12][^>]*>\s*(<[^>]+>)*\s*{re.escape(heading)}", html), heading
    for leftover in ("{{", "}}", "{%", "%}", ">None<", " nan", "NaN"):
        assert leftover not in text, leftover
    pdf = (out / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 20_000
    figs = res["figures"]
    assert {f["name"] for f in figs} >= {"activation_hist_L3N669", "ablation_loss_increase"}
    for f in figs:
        assert (out / f["png"]).stat().st_size > 1000 and (out / f["svg"]).is_file()
        meta = json.loads((out / "figures" / f"{f['name']}.json").read_text())
        assert meta["artifact_key"] == res["artifacts"][meta["step"]]["key"]
        assert meta["function"].startswith("figures.")
        # one table per figure: its CSV (the data both renderings draw) and the plotly spec
        header = (out / meta["csv"]).read_text(encoding="utf-8").splitlines()[0]
        assert header.split(",") == meta["columns"] and meta["rows"] > 0
        spec = json.loads((out / meta["plotly"]).read_text(encoding="utf-8"))
        assert spec["data"] and "layout" in spec
        assert "template" not in spec["layout"]  # no plotly.py template bloat
    # histograms are bin counts, never the raw activations
    hist = (out / "figures" / "activation_hist_L3N669.csv").read_text().splitlines()
    assert hist[0] == "series,bin,left,right,count,percent" and len(hist) == 1 + 2 * 60


def test_artifacts_have_provenance_and_expected_results(tiny_report):
    res, _, cfg = tiny_report
    arts = res["artifacts"]
    assert set(arts) >= {"activations", "probes", "ablation", "downstream", "neurons"}
    for step, art in arts.items():
        on_disk = json.loads((res["out"] / "artifacts" / f"{step}.json").read_text())
        assert on_disk == art
        assert art["schema_version"] == SCHEMA_VERSION
        prov = art["provenance"]
        assert prov["model"]["id"] == "tiny" and prov["model"]["prepend_bos"] is True
        assert prov["model"]["processing"]["fold_ln"] is True
        assert prov["data"]["german"]["sha256"] and prov["seed"] == cfg.profile.seed
        assert prov["libraries"]["torch"] and prov["device"] == "cpu"
    probes = arts["probes"]["result"]["rows"]
    assert [r["neuron"] for r in probes][-1] == "L3N669" and len(probes) == 8
    for r in probes:
        assert 0.0 <= r["f1"] <= 1.0
    abl = arts["ablation"]["result"]
    assert abl["context"]["german"]["original"] > 0
    # mean ablation on a random model: a tiny change, computed not assumed
    assert abl["context"]["german"]["ablated"] != abl["context"]["german"]["original"]
    assert set(abl["all_except_context"]) == {"intended", "seed_literal", "filter_fixed"}


def test_rerun_hits_the_cache_and_a_changed_artifact_is_recomputed(tiny_report):
    from analysis.orchestration.pipeline import run_report

    res, _, cfg = tiny_report
    logs: list[str] = []
    again = run_report(cfg, corpus="fixture", show_progress=False, log=logs.append, render=False)
    steps_cached = [line for line in logs if "cached" in line and not line.strip().startswith("figures ")]
    assert len(steps_cached) == len(res["artifacts"]), logs
    assert all(f"figures {s}: cached" in "\n".join(logs) for s in ("activations", "cards"))
    assert {k: a["key"] for k, a in again["artifacts"].items()} == {k: a["key"] for k, a in res["artifacts"].items()}
    # an edited payload no longer matches its recorded hash: recomputed, never read
    p = res["out"] / "artifacts" / "probes.json"
    art = json.loads(p.read_text())
    art["result"]["rows"][0]["f1"] = 0.123
    p.write_text(json.dumps(art))
    logs.clear()
    fixed = run_report(cfg, corpus="fixture", show_progress=False, log=logs.append, render=False)
    assert any(line.strip().startswith("probes: computed") for line in logs), logs
    assert fixed["artifacts"]["probes"]["result"] == res["artifacts"]["probes"]["result"]


def test_store_key_covers_every_input(tmp_path):
    base = StepInputs("s", {"module": "m", "sha256": "a"}, {"fingerprint": "f"}, {"d": "x"},
                      {"n": 1}, 0, {}, "cpu")
    store = ArtifactStore(tmp_path)
    store.save(base, {"v": 1.5}, 0.1)
    assert store.load_valid("s", base.key())["result"] == {"v": 1.5}
    import dataclasses

    for change in ({"params": {"n": 2}}, {"seed": 1}, {"device": "cuda"},
                   {"model": {"fingerprint": "g"}}, {"data": {"d": "y"}},
                   {"code": {"module": "m", "sha256": "b"}}, {"upstream": {"a": "k"}}):
        other = dataclasses.replace(base, **change)
        assert other.key() != base.key(), change
        assert store.load_valid("s", other.key()) is None
    (tmp_path / "s.json").write_text((tmp_path / "s.json").read_text()[:-20])  # truncated
    assert store.load_valid("s", base.key()) is None


def _cli(*args, env_extra=None, cwd=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "analysis", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


def test_offline_pythia_error_is_one_paragraph_without_traceback(tmp_path):
    r = _cli("report", "--model", "pythia-70m", "--corpus", "fixture", "--out", str(tmp_path / "o"),
             env_extra={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 3
    assert "Traceback" not in r.stderr
    assert "EleutherAI/pythia-70m" in r.stderr and "step143000" in r.stderr
    assert "--model" in r.stderr  # says how to provide it
    assert not (tmp_path / "o" / "report.html").exists()


@pytest.mark.parametrize("args, message", [
    (["--neuron", "L6N0"], "out of range"),
    (["--neuron", "L3N4096"], "out of range"),
    (["--neuron", "L3X669"], "not of the form LxNy"),
    (["--profile", "huge"], "unknown profile"),
    (["--model", "no-such-model"], "neither a known model"),
    (["--device", "tpu"], "unknown device"),
])
def test_bad_options_fail_before_compute(tmp_path, args, message):
    r = _cli("report", "--model", "tiny", "--corpus", "fixture", "--out", str(tmp_path / "o"),
             *args) if "--model" not in args else _cli("report", "--corpus", "fixture",
                                                       "--out", str(tmp_path / "o"), *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o" / "artifacts").exists()


def test_data_dir_errors(tmp_path):
    from analysis.core.data import FIXTURES

    missing = _cli("report", "--model", "tiny", "--data-dir", str(tmp_path / "nope"),
                   "--out", str(tmp_path / "o"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad = tmp_path / "data"
    bad.mkdir()
    (bad / "wmt_german_large.txt").write_bytes((FIXTURES / "german.txt").read_bytes())
    r = _cli("report", "--model", "tiny", "--data-dir", str(bad), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and ("sha256" in r.stderr or "missing" in r.stderr), r.stderr


def test_checkpoint_folder_checks(tmp_path):
    from analysis.core.errors import UsageError
    from analysis.core.models import check_checkpoint_dir

    d = tmp_path / "ck"
    d.mkdir()
    with pytest.raises(UsageError, match="no config.json"):
        check_checkpoint_dir(d)
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UsageError, match="GPT-NeoX"):
        check_checkpoint_dir(d)
    (d / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    with pytest.raises(UsageError, match="no weights"):
        check_checkpoint_dir(d)


def test_local_checkpoint_folder_loads_like_tiny(tiny):
    from analysis.core.models import load_model, tiny_checkpoint

    folder = tiny_checkpoint(0)
    m = load_model(str(folder))
    assert m.info["fingerprint"] == tiny.info["fingerprint"]
    assert m.to_tokens("Hallo Welt") == tiny.to_tokens("Hallo Welt")


def test_python_m_entry_point_help():
    r = _cli("report", "--help")
    assert r.returncode == 0 and "--neuron" in r.stdout and "--profile" in r.stdout
