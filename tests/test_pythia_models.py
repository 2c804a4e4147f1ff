"""Every Pythia name the sweep takes is a `report --model` (issue 21 §3): one registry
(`analysis/core/pythia.py`) for both, shapes known before any compute, `--neuron auto` by
default for every Pythia model but pythia-70m, and the seed's printed values for pythia-70m
only. Offline, on the Hub-layout fixture (tests/hub_fixture.py: tiny random models under
the Hub's names), with partial runs (`--steps discovery`) and the smallest sizes."""

from __future__ import annotations

import json
import re

import hub_fixture
import pytest
from typer.testing import CliRunner

from analysis.core.pythia import PYTHIA_SHAPES, parse_pythia, pythia_names
from analysis.orchestration.cli import app
from analysis.orchestration.references import reference_neurons

SIZES = ("activation_examples=4", "probe_samples=60", "loss_examples=4")
# The report's sentences that quote a number the seed notebook printed (its method is
# described for every model; its values only beside pythia-70m's).
SEED_VALUES = re.compile(r"\bseed (?:notebook )?printed [+\-−]?\d|The \*seed\* columns show|\(seed [+\-−]?\d", re.I)
SERVED = {"EleutherAI/pythia-70m-seed1": hub_fixture.PYTHIA_RUNS["EleutherAI/pythia-70m-seed1"],
          "EleutherAI/pythia-14m": hub_fixture.PYTHIA_RUNS["EleutherAI/pythia-14m"]}


def _report(*args: str):
    return CliRunner().invoke(app, ["report", "--corpus", "fixture", "--profile", "quick", *args])


def _one_line_error(r, needle: str) -> str:
    """The single `error:` line of a failed command (only hint lines may follow it)."""
    lines = r.output.strip().splitlines()
    err = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(err) == 1 and needle in lines[err[0]], (needle, r.output)
    assert all(line.startswith("Hint: ") for line in lines[err[0] + 1:]), r.output
    assert "Traceback" not in r.output
    return lines[err[0]]


def test_one_registry_names_shapes_and_defaults_for_report_and_sweep(tmp_path, monkeypatch):
    from analysis.core.config import Neuron
    from analysis.core.models import PYTHIA_70M_SHAPE, model_slug, pythia_repo
    from analysis.orchestration.pipeline import default_context_neuron, model_shape
    from analysis.orchestration.sweep.args import parse_models

    hub_fixture.patch_offline(monkeypatch, tmp_path / "hf")  # an empty cache: shapes from the table
    names = pythia_names()
    assert len(names) == len(set(names)) == 10 * 2 + 5 * 9 + 2 * 3
    assert {"pythia-160m", "pythia-70m-deduped", "pythia-70m-seed1", "pythia-70m-seed9",
            "pythia-410m-seed9", "pythia-160m-weight-seed3", "pythia-12b-deduped"} <= set(names)
    for name in names:  # the sweep's name, the report's folder and shape: the same model
        (entry,) = parse_models(f"EleutherAI/{name}")
        run = parse_pythia(name)
        assert (entry.name, entry.repo, entry.kind) == (name, f"EleutherAI/{name}", "hub") == \
            (run.name, pythia_repo(name), "hub")
        assert model_slug(f"EleutherAI/{name}") == model_slug(name) == name
        shape = PYTHIA_SHAPES[run.size]
        assert model_shape(name) == (shape[0], shape[3]) and shape[3] == 4 * shape[1]
    assert model_shape("pythia-70m") == (PYTHIA_70M_SHAPE["num_hidden_layers"], PYTHIA_70M_SHAPE["intermediate_size"])
    for bad in ("pythia-71m", "pythia-70m-seed10", "pythia-70m-seed0", "pythia-70m-seed01", "pythia-1b-seed1",
                "pythia-70m-deduped-seed1", "pythia-160m-data-seed4", "EleutherAI/gpt-neox-20b", "gpt2"):
        assert parse_pythia(bad) is None, bad
    assert parse_pythia("pythia-70m-seed3").record()["seed"] == 3
    # the seed's L3N669 only where the seed found it; auto for every other Pythia model
    assert default_context_neuron("EleutherAI/pythia-70m") == default_context_neuron("pythia-70m") == Neuron(3, 669)
    assert default_context_neuron("tiny") == Neuron(3, 669)
    for name in ("pythia-70m-seed1", "pythia-70m-deduped", "EleutherAI/pythia-160m", "pythia-70m-planted"):
        assert default_context_neuron(name) is None, name
    ref = reference_neurons("EleutherAI/pythia-160m")
    assert [n["neuron"] for n in ref["neurons"]] == ["L5N2649", "L8N2994"]  # never a default
    assert reference_neurons("pythia-70m-seed1") is None and reference_neurons("pythia-160m-deduped") is None


def test_unknown_names_fail_in_one_line_and_known_ones_are_checked_before_any_load(tmp_path, monkeypatch):
    hub_fixture.patch_offline(monkeypatch, tmp_path / "hf")  # nothing cached, no Hub
    out = tmp_path / "out"
    for name in ("pythia-71m", "EleutherAI/pythia-70m-seed10", "pythia-1b-seed1"):
        r = _report("--model", name, "--out", str(out))
        assert r.exit_code == 2, r.output
        line = _one_line_error(r, f"unknown Pythia model {name!r}: expected ")
        assert "pythia-<size>-seed<1-9>" in line and "EleutherAI/<name>" in line and "1.4b" in line
    r = _report("--model", "gpt2", "--out", str(out))
    assert r.exit_code == 2
    assert "pythia-<size>-seed<1-9>" in _one_line_error(r, "'gpt2' is neither a known model")
    assert not out.exists()
    # known, not cached: the neuron is checked against the Pythia table before anything loads
    for model, neuron, needle in (("pythia-160m", "L12N0", "the model has layers 0..11"),
                                  ("EleutherAI/pythia-160m", "L11N3072", "layer 11 has neurons 0..3071"),
                                  ("pythia-70m-seed2", "L3N2048", "layer 3 has neurons 0..2047")):
        r = _report("--model", model, "--neuron", neuron, "--out", str(out))
        assert r.exit_code == 2
        _one_line_error(r, f"neuron {neuron} is out of range: {needle}")
    r = _report("--model", "pythia-160m", "--steps", "discovery,nosuch", "--out", str(out))
    assert r.exit_code == 2
    _one_line_error(r, "unknown step nosuch; steps: discovery, activations")
    assert not out.exists()
    r = _report("--model", "pythia-160m", "--out", str(out))  # a real name, whose weights are absent
    assert r.exit_code == 3, r.output
    line = _one_line_error(r, "Cannot load pythia-160m (EleutherAI/pythia-160m at revision step143000)")
    assert "neither a known model" not in line


@pytest.fixture(scope="module")
def pythia_hub(tmp_path_factory):
    """A Hub cache serving `EleutherAI/pythia-70m-seed1` and `EleutherAI/pythia-14m` at
    step143000 (tiny models with the table's layers and MLP width), patched in offline."""
    home = tmp_path_factory.mktemp("pythia-hub") / "hf"
    commits = hub_fixture.build_pythia_runs(home, SERVED)
    mp = pytest.MonkeyPatch()
    hub_fixture.patch_offline(mp, home)
    yield {"home": home, "commits": commits}
    mp.undo()


@pytest.mark.parametrize("given", ["pythia-70m-seed1", "EleutherAI/pythia-14m"])
def test_report_model_resolves_validates_and_runs_other_pythia_models(pythia_hub, tmp_path, given):
    run = parse_pythia(given)
    d_mlp = PYTHIA_SHAPES[run.size][3]
    cfg = json.loads(next(hub_fixture.repo_folder(pythia_hub["home"], run.repo).glob("snapshots/*/config.json"))
                     .read_text())
    assert (cfg["num_hidden_layers"], cfg["intermediate_size"]) == (6, d_mlp)  # the shape it serves
    out = tmp_path / "out"
    r = _report("--model", given, "--neuron", f"L3N{d_mlp}", "--out", str(out))  # checked before compute
    assert r.exit_code == 2 and not out.exists()
    _one_line_error(r, f"layer 3 has neurons 0..{d_mlp - 1}")

    args = ["--model", given, "--steps", "discovery", "--out", str(out)]
    r = _report(*args, *[a for s in SIZES for a in ("--set", s)])
    assert r.exit_code == 0, r.output
    found = re.search(r"discovery: the context neuron is (L\d+N\d+) \(top German-positive neuron", r.output)
    assert found, r.output  # --neuron auto, the default for a Pythia model other than pythia-70m
    assert f"artifacts: {out / 'artifacts'} (discovery)" in r.output
    art = json.loads((out / "artifacts" / "discovery.json").read_text())
    model = art["provenance"]["model"]
    assert (model["id"], model["source"], model["revision"], model["commit"]) == (
        run.name, run.repo, "step143000", pythia_hub["commits"][run.repo]["step143000"])
    assert model["pythia"] == run.record() and not model["pythia"]["seed_model"]
    assert (model["n_layers"], model["d_mlp"]) == (6, d_mlp)
    assert art["provenance"]["run"]["context_neuron"] == "auto"
    res = art["result"]
    assert res["n_neurons"] == 6 * d_mlp and res["best"] == found.group(1)
    assert not (out / "report.html").exists() and not (out / "figures").exists()


def test_the_seed_values_are_printed_for_pythia_70m_only(tiny_report):
    """The templates print the seed notebook's values beside ours for pythia-70m and never
    for another Pythia model (whose context has no seed reference: `pipeline` gives it to
    `model_id == "pythia-70m"` alone, and the partial runs above record the other ids).
    Built on the session's `tiny` report, its run record swapped for each model's."""
    from analysis.orchestration.pipeline import SEED_REFERENCE
    from report.build import build_notebook

    ctx = tiny_report[0]["context"]

    def notebook(name, **run):
        rec = parse_pythia(name).record()
        seed = json.loads(SEED_REFERENCE.read_text()) if rec["seed_model"] else None
        nb = build_notebook({**ctx, "seed": seed, "run": {
            **ctx["run"], "model_id": name, "model_source": f"EleutherAI/{name}", "revision": "step143000",
            "is_pythia": rec["seed_model"], "pythia": rec, "reference_neurons": reference_neurons(name), **run}})
        md = " ".join("\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
                      .replace("\n> ", "\n").split())  # one line: the banners wrap
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        return md, re.findall(r"^SEED = (.*)$", code, re.M)

    md, seeds = notebook("pythia-70m")
    assert seeds and any(s != "None" for s in seeds) and len(SEED_VALUES.findall(md)) >= 3  # it shows them
    for name in ("pythia-70m-seed1", "pythia-70m-deduped", "pythia-160m"):
        md, seeds = notebook(name, neuron_discovered=True)
        assert seeds and all(s == "None" for s in seeds), name
        assert not SEED_VALUES.findall(md), (name, SEED_VALUES.findall(md))
        assert "Another Pythia model, not the seed's Pythia-70M" in md, name
        assert "(`--neuron auto`, the default for every Pythia model but pythia-70m)" in md, name
        assert "Pipeline check" not in md, name
    assert "Pythia-70M retrained with PolyPythias seed 1" in notebook("pythia-70m-seed1")[0]
    md = notebook("pythia-160m")[0]
    assert "For reference only, never as a default: Gurnee et al. name **L5N2649** (F1 1.00; discovery here ranks it" in md
    assert re.search(r"\) and \*\*L8N2994\*\* \(F1 1.00; discovery here ranks it [^)]*\) as German neurons of this model \(", md)
