"""`--dtype float32|bfloat16` and `--tf32 on|off` (analysis.core.precision, the engine's bf16
matmuls, the regression check's precision policy).

Cheap tests first (option validation, the policy, the engine on a few examples); then two
partial `tiny` runs (fixture corpus, the steps of three metric families, small sizes), one
per dtype, shared by the key, provenance and tolerance tests.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

# activations (activation means), probes (F1, accuracies), dla (losses in nats, percent
# increases, logit values) and l3_tokens/unigrams (logits of the weights); sizes as small as
# the steps allow (the probe keeps the quick profile's split, the policy's floor's basis).
STEPS = ("probes", "dla", "unigrams")
SIZES = ("activation_examples=10", "dla_examples=4")


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize("args, message", [
    (["report", "--model", "tiny", "--dtype", "float16"], "unknown --dtype 'float16'; choose float32 or bfloat16"),
    (["report", "--model", "tiny", "--dtype", "junk"], "unknown --dtype 'junk'; choose float32 or bfloat16"),
    (["report", "--model", "tiny", "--tf32", "maybe"], "unknown --tf32 'maybe'; choose on or off"),
    (["sweep", "--models", "pythia-70m", "--dtype", "float16", "--no-report"], "unknown --dtype 'float16'"),
])
def test_bad_dtype_or_tf32_is_one_line_before_any_compute(tmp_path, args, message):
    from typer.testing import CliRunner

    from analysis.orchestration.cli import app

    out = tmp_path / "o"
    r = CliRunner().invoke(app, [*args, "--corpus", "fixture", "--out", str(out)])
    assert r.exit_code == 2, r.output
    lines = [s for s in r.output.splitlines() if s.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.output
    assert not out.exists()


def test_the_api_refuses_a_bad_dtype_before_loading(tmp_path):
    from analysis.core.config import RunConfig, get_profile
    from analysis.core.errors import UsageError
    from analysis.orchestration.pipeline import run_report

    cfg = RunConfig(model="tiny", neuron=None, profile=get_profile("quick"), out=str(tmp_path / "o"),
                    dtype="float16")
    with pytest.raises(UsageError, match="float16 is not supported"):
        run_report(cfg, render=False)
    assert not (tmp_path / "o").exists()


def test_precision_record_says_where_tf32_has_no_effect():
    from analysis.core.precision import record

    cpu = record("bfloat16", False, "cpu")
    assert cpu["dtype"] == "bfloat16" and cpu["load_dtype"] == "float32" and cpu["matmul"] == "emulated"
    assert record("bfloat16", False, "cuda")["matmul"] == "native"
    on_cpu = record("float32", True, "cpu")
    assert on_cpu["tf32"] and not on_cpu["tf32_effective"] and "without effect on CPU" in on_cpu["precision_note"]
    on_cuda = record("float32", True, "cuda:0")
    assert on_cuda["tf32_effective"] and "TF32 on" in on_cuda["precision_note"]
    assert not record("bfloat16", True, "cuda")["tf32_effective"]
    assert record("float32", False, "cpu")["matmul"] == "float32"


def test_tf32_context_sets_and_restores_the_flags():
    from analysis.core.precision import matmul_precision

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with matmul_precision(True):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    with matmul_precision(False):
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


# ----------------------------------------------------------------------------- the policy


def test_the_committed_policy_covers_every_metric_family():
    from analysis.orchestration import regression as reg

    pol = reg.precision_policy()
    assert pol["path"] == "baselines/tolerance/bf16.json"
    for fam, f in pol["families"].items():
        assert f["abs"] >= f["max_measured"] and f["abs"] >= f["floor"] and f["rel"] >= 0, fam
    # every metric of the committed tiny baseline falls in a family with a measurement
    base = reg.load_baseline(reg.BASELINES / "tiny-quick.json")
    assert {reg.metric_family(m) for m in base["metrics"]} <= set(pol["families"])
    assert reg.metric_family("ablation.context.german.original") == "loss"
    assert reg.metric_family("ablation.L3N669.german.percent_increase_ci_low") == "percent_increase"
    assert reg.metric_family("component_patching.4_mlp_out.percent_increase") == "percent_increase"
    assert reg.metric_family("probes.L3N669.f1_ci_high") == "proportion"
    assert reg.metric_family("probes_context_ablated.L5N1336.mean_german") == "activation"
    assert reg.metric_family("activations.context_mean_active") == "activation"
    assert reg.metric_family("dla.final_post.difference") == "logit"
    assert reg.metric_family("unigrams.german_mean_logit_diff") == "logit"
    assert reg.metric_family("weird_tokens.unique") == "count"


def _fake_arts(dtype: str, active: float, tf32: bool = False) -> dict:
    prov = {"model": {"id": "tiny", "fingerprint": "f", "dtype": dtype, "tf32_effective": tf32}, "seed": 0,
            "run": {"context_neuron": "L3N669", "corpus": "fixture", "profile": "quick", "sizes": {}}}
    return {"activations": {"step": "activations", "key": "k", "provenance": prov,
                            "result": {"context_mean_active": active, "context_mean_inactive": 0.0}}}


def test_a_bf16_run_against_a_float32_baseline_gets_the_widened_tolerance():
    from analysis.orchestration import regression as reg

    pol = reg.precision_policy()
    act = pol["families"]["activation"]
    act_tol = act["abs"] + act["rel"] * 1.0  # at the baseline value 1.0
    assert reg.policy_tolerance(pol, "activations.context_mean_active", 1.0) == pytest.approx(act_tol)
    base = {"model": "tiny", "profile": "quick", "configuration": {"model": "tiny"},
            "metrics": {"activations.context_mean_active": {"value": 1.0, "tolerance": 1e-6},
                        "activations.context_mean_inactive": {"value": 0.0, "tolerance": 1e-6}}}
    moved = 1.0 + act_tol / 2  # outside the float32 tolerance, inside the bf16 policy's
    fp32 = reg.compare(base, _fake_arts("float32", moved))
    assert not fp32["passed"] and fp32["precision"]["policy"] is None
    bf16 = reg.compare(base, _fake_arts("bfloat16", moved))
    assert bf16["passed"] and bf16["precision"]["policy"] == "baselines/tolerance/bf16.json"
    assert "run in bfloat16, baseline in float32" in bf16["precision"]["sentence"]
    row = next(r for r in bf16["rows"] if r["metric"] == "activations.context_mean_active")
    assert row["tolerance"] == pytest.approx(1e-6 + act_tol) and row["policy_tolerance"] == pytest.approx(act_tol)
    assert not reg.compare(base, _fake_arts("bfloat16", 1.0 + 2 * act_tol))["passed"]  # the policy can fail
    assert reg.compare(base, _fake_arts("float32", moved, tf32=True))["precision"]["run"] == "float32+tf32"


def test_a_bf16_baseline_gets_its_own_name_and_is_preferred(tmp_path):
    from analysis.orchestration import regression as reg

    cfg = {"model": "tiny", "revision": None, "fingerprint": "f", "context_neuron": "L3N669",
           "corpus": "fixture", "profile": "quick", "sizes": {}, "seed": 0}
    fp32 = {"schema_version": 1, "model": "tiny", "profile": "quick", "configuration": dict(cfg), "metrics": {}}
    (tmp_path / "tiny-quick.json").write_text(json.dumps(fp32))
    bf16 = {**fp32, "configuration": {**cfg, "dtype": "bfloat16", "tf32": False}}
    assert reg.baseline_target(bf16, tmp_path) == tmp_path / "tiny-quick-bfloat16.json"
    assert reg.baseline_target({**fp32, "configuration": {**cfg, "dtype": "float32"}}, tmp_path) == \
        tmp_path / "tiny-quick.json"
    (tmp_path / "tiny-quick-bfloat16.json").write_text(json.dumps(bf16))
    arts = _fake_arts("bfloat16", 1.0)
    arts["activations"]["provenance"]["run"]["sizes"] = {}
    paths = sorted(tmp_path.glob("*.json"))
    assert reg.select_baseline(arts, paths)["path"].name == "tiny-quick-bfloat16.json"
    assert reg.select_baseline(_fake_arts("float32", 1.0), paths)["path"].name == "tiny-quick.json"


# ----------------------------------------------------------------------------- the engine


def test_bf16_forward_is_float32_out_and_close_to_float32(tiny, tiny_fwd):
    """float32 tensors leave the bf16 pass; its losses are near float32's but not equal; the
    CPU emulation and the native bf16 GEMMs agree within the same rounding."""
    from analysis.core.engine import Forward, Weights, make_batches, per_example_losses, set_neurons

    toks = [tiny.to_tokens(t) for t in ("Die Kommission hat heute beschlossen, dass", "The committee met today and")]
    batches = make_batches(toks, 4096, 1)
    w = Weights.from_bridge(tiny.bridge, tiny.info["rotary_pct"])
    emu, nat = Forward(w, "bfloat16"), Forward(w, "bfloat16", native=True)
    assert emu.mode == "emulated" and emu.w.W_U.dtype == torch.float32
    assert nat.mode == "native" and nat.w.W_U.dtype == torch.bfloat16
    assert torch.equal(emu.w.W_in, emu.w.W_in.to(torch.bfloat16).float())  # bf16 values
    cap = {"blocks.3.mlp.hook_post": None}
    resid = emu.run(batches[0].tokens, capture=cap)
    assert resid.dtype == cap["blocks.3.mlp.hook_post"].dtype == torch.float32
    variants = {"l3": {"blocks.3.mlp.hook_post": set_neurons([669], 0.0)},
                "l5": {"blocks.5.mlp.hook_post": set_neurons([1336], 0.0)}}
    ref = per_example_losses(tiny_fwd, batches, variants, show_progress=False)
    got = {m: per_example_losses(f, batches, variants, show_progress=False) for m, f in (("emu", emu), ("nat", nat))}
    for k in ref:
        for m in got:
            d = np.abs(got[m][k] - ref[k])
            assert 0 < d.max() < 5e-3, (m, k, d)
        assert np.abs(got["emu"][k] - got["nat"][k]).max() < 5e-3, k


# ----------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Partial `tiny` runs (`STEPS`) in float32 and bfloat16, and float32 with `--tf32 on`
    for the activations step only."""
    from analysis.core.config import Neuron, RunConfig, get_profile
    from analysis.orchestration.pipeline import run_report

    root = tmp_path_factory.mktemp("dtype")
    prof = get_profile("quick").with_overrides(list(SIZES))
    base = RunConfig(model="tiny", neuron=Neuron.parse("L3N669"), profile=prof, studied=(Neuron(3, 669),))
    out = {}
    for name, cfg, steps in (("float32", base, STEPS), ("bfloat16", replace(base, dtype="bfloat16"), STEPS),
                             ("tf32", replace(base, tf32=True), ("activations",))):
        cfg = replace(cfg, out=str(root / name))
        out[name] = run_report(cfg, render=False, corpus="fixture", steps=steps, show_progress=False,
                               log=lambda s: None)
    return out


def test_bf16_changes_every_key_and_records_its_precision(runs):
    a32, a16 = runs["float32"]["artifacts"], runs["bfloat16"]["artifacts"]
    assert set(a32) == set(a16) and {"activations", "probes", "dla", "l3_tokens", "unigrams"} <= set(a16)
    for step in a32:
        assert a32[step]["key"] != a16[step]["key"], step
        m32, m16 = a32[step]["provenance"]["model"], a16[step]["provenance"]["model"]
        assert (m32["dtype"], m32["matmul"], m32["tf32"]) == ("float32", "float32", False), step
        assert (m16["dtype"], m16["load_dtype"], m16["matmul"], m16["tf32"]) == \
            ("bfloat16", "float32", "emulated", False), step
        assert not m16["tf32_effective"] and "bfloat16" in m16["precision_note"]
    ctx = runs["bfloat16"]["context"]["run"]["precision"]
    assert ctx["dtype"] == "bfloat16" and ctx["policy"]["path"] == "baselines/tolerance/bf16.json"
    assert runs["float32"]["context"]["run"]["precision"]["policy"] is None


def test_bf16_numbers_are_within_the_policy_and_not_identical(runs):
    from analysis.orchestration import regression as reg

    a32, a16 = runs["float32"]["artifacts"], runs["bfloat16"]["artifacts"]
    baseline = reg.record_fixture_baseline(a32, "tiny", "quick")  # float32, tolerances ~1e-4 rel
    res = reg.compare(baseline, a16)
    assert res["precision"]["policy"] and res["precision"]["run"] == "bfloat16"
    assert res["passed"], [(r["metric"], r["difference"], r["tolerance"]) for r in res["rows"] if r["status"] != "ok"]
    moved = [r for r in res["rows"] if r["difference"] not in (0, None)]
    families = {reg.metric_family(r["metric"]) for r in moved}
    assert {"loss", "percent_increase", "activation", "logit"} <= families, families
    # the widening is needed: against float32's own tolerances some number moves
    assert not reg.compare(baseline, a16, policy={"families": {f: {"abs": 0.0} for f in reg.FAMILY_UNITS},
                                                  "path": "none"})["passed"]


def test_tf32_is_recorded_and_on_cpu_changes_the_key_but_no_number(runs):
    act32 = runs["float32"]["artifacts"]["activations"]
    act = runs["tf32"]["artifacts"]["activations"]
    m = act["provenance"]["model"]
    assert m["tf32"] is True and m["tf32_effective"] is False and "without effect on CPU" in m["precision_note"]
    assert act["key"] != act32["key"]
    assert act["payload_sha256"] == act32["payload_sha256"]  # TF32 does nothing on a CPU
    assert not torch.backends.cuda.matmul.allow_tf32  # restored after the run


def test_a_bf16_sweep_task_is_keyed_and_recorded_apart(tmp_path):
    from analysis.orchestration.bench import bench_checkpoints
    from analysis.orchestration.sweep.plan import plan_sweep
    from analysis.orchestration.sweep.run import run_sweep
    from analysis.orchestration.sweep.task import load_artifact

    (ckpt,) = bench_checkpoints(tmp_path / "ckpts", 1)
    kw = dict(profile="quick", overrides=["activation_examples=4", "probe_samples=60", "loss_examples=4"],
              corpus="fixture", threads=1, neuron="L3N100")
    p32 = plan_sweep(str(ckpt), "quick", out=tmp_path / "o32", **kw)
    p16 = plan_sweep(str(ckpt), "quick", out=tmp_path / "o16", dtype="bfloat16", **kw)
    assert p16.settings["dtype"] == "bfloat16" and "bfloat16" in p16.settings["precision_note"]
    assert p16.tasks[0]["params"]["dtype"] == "bfloat16" and p16.tasks[0]["params"]["tf32"] is False
    assert p16.tasks[0]["key"] != p32.tasks[0]["key"]
    res = run_sweep(p16, scheduler="none", log=lambda s: None)
    (task,) = res["tasks"]
    assert task["status"] == "computed", task
    art = load_artifact(tmp_path / "o16" / "store", task["key"])
    assert art["provenance"]["params"]["dtype"] == "bfloat16"
    assert np.isfinite(art["result"]["loss"]["german"])
    assert Path(res["table"]["csv"]).is_file()


# ----------------------------------------------------------------------------- folders


def _files(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_a_bf16_run_gets_its_own_default_folder_and_leaves_float32_untouched(runs, tmp_path, monkeypatch):
    import shutil

    from analysis.core.errors import UsageError
    from analysis.orchestration.pipeline import default_out, run_report

    assert default_out("tiny") == Path("build") / "tiny"
    assert default_out("tiny", dtype="bfloat16") == Path("build") / "tiny-bfloat16"
    assert default_out("tiny", tf32=True) == Path("build") / "tiny-tf32"
    assert default_out("tiny", dtype="bfloat16", tf32=True) == Path("build") / "tiny-bfloat16-tf32"
    monkeypatch.chdir(tmp_path)
    fp32 = tmp_path / "build" / "tiny"  # the float32 run, where a default float32 run writes
    shutil.copytree(runs["float32"]["out"], fp32)
    before = _files(fp32)
    assert any(k.startswith("artifacts/") for k in before)
    from analysis.core.config import Neuron, RunConfig, get_profile

    cfg = RunConfig(model="tiny", neuron=Neuron.parse("L3N669"), profile=get_profile("quick").with_overrides(
        list(SIZES)), studied=(Neuron(3, 669),), dtype="bfloat16")
    res = run_report(cfg, render=False, corpus="fixture", steps=("activations",), show_progress=False,
                     log=lambda s: None)
    assert res["out"] == Path("build") / "tiny-bfloat16"
    assert res["artifacts"]["activations"]["provenance"]["model"]["dtype"] == "bfloat16"
    assert (tmp_path / "build" / "tiny-bfloat16" / "artifacts" / "activations.json").is_file()
    assert _files(fp32) == before  # bytes and modification times
    # an explicit --out holding float32 artifacts is refused before any compute
    with pytest.raises(UsageError, match=r"holds float32 artifacts .* a bfloat16 run would replace them") as e:
        run_report(replace(cfg, out=str(fp32)), render=False, corpus="fixture", steps=("activations",),
                   show_progress=False, log=lambda s: None)
    assert "build/tiny-bfloat16" in e.value.hint
    assert _files(fp32) == before


def test_a_bf16_sweep_defaults_to_its_own_folder_and_refuses_a_float32_one(tmp_path):
    from analysis.core.errors import UsageError
    from analysis.orchestration.sweep.plan import DEFAULT_OUT, default_sweep_out, plan_sweep

    assert default_sweep_out() == DEFAULT_OUT == Path("build") / "sweep"
    assert default_sweep_out("bfloat16") == Path("build") / "sweep-bfloat16"
    assert default_sweep_out("float32", True) == Path("build") / "sweep-tf32"
    out = tmp_path / "s"
    out.mkdir()
    manifest = json.dumps({"settings": {"dtype": "float32", "tf32": False}})
    (out / "sweep.json").write_text(manifest)
    with pytest.raises(UsageError, match="holds a float32 sweep; a bfloat16 sweep would replace") as e:
        plan_sweep("pythia-70m", "step1", out=out, dtype="bfloat16", corpus="fixture")
    assert "build/sweep-bfloat16" in e.value.hint
    with pytest.raises(UsageError, match="holds a float32 sweep; a float32 \\+ TF32 sweep"):
        plan_sweep("pythia-70m", "step1", out=out, tf32="on", corpus="fixture")
    assert (out / "sweep.json").read_text() == manifest and sorted(os.listdir(out)) == ["sweep.json"]
