"""The real path, `--model pythia-70m`, without the Hub: a Hugging Face Hub cache in the Hub's
own layout is built here (tests/hub_fixture.py, tiny models under Pythia's revisions) and
read with `HF_HUB_OFFLINE=1`. What the Hub is asked for is checked against a fake
`snapshot_download`, so no test needs the network."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import hub_fixture
import pytest
import torch

from analysis.core.errors import ModelUnavailableError, UsageError
from analysis.core.models import (
    HUB_PATTERNS_PICKLE,
    HUB_PATTERNS_SAFETENSORS,
    PYTHIA_DYNAMICS_REVISIONS,
    PYTHIA_REPO,
    PYTHIA_REVISION,
)

# builds a report or model of its own: scheduled first (conftest)
pytestmark = pytest.mark.slow

# ----------------------------------------------------------------------------- what is asked for


class FakeHub:
    """`snapshot_download` over a fake repository `{revision: [file names]}`: "downloads" the
    files matching `allow_patterns` (as huggingface_hub does, with fnmatch) into
    `root/<revision>/`, and records `(revision, allow_patterns, files fetched)` per call."""

    def __init__(self, root: Path, files: dict[str, list[str]]):
        self.root, self.files, self.calls = root, files, []

    def __call__(self, repo_id, revision=None, allow_patterns=None, **kwargs):
        from huggingface_hub.errors import LocalEntryNotFoundError

        assert repo_id == PYTHIA_REPO
        if revision not in self.files:
            raise LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder")
        folder = self.root / revision
        folder.mkdir(parents=True, exist_ok=True)
        got = [n for n in self.files[revision] if any(fnmatch(n, p) for p in allow_patterns)]
        for name in got:
            (folder / name).write_bytes(b"")
        self.calls.append((revision, list(allow_patterns), got))
        return str(folder)


def _revision_not_found():
    from huggingface_hub.errors import RevisionNotFoundError

    err = RevisionNotFoundError.__new__(RevisionNotFoundError)  # its __init__ wants an HTTP response
    Exception.__init__(err, "404 Client Error: Revision Not Found")
    return err


def test_hub_is_asked_for_safetensors_first_and_for_the_pickle_only_without_them(tmp_path, monkeypatch):
    import huggingface_hub

    from analysis.core.models import _hub_snapshot

    fake = FakeHub(tmp_path, {
        "step143000": ["config.json", "tokenizer.json", "model.safetensors", "pytorch_model.bin"],
        "step1": ["config.json", "tokenizer.json", "pytorch_model.bin"],
    })
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    snap = _hub_snapshot("step143000")  # has both: one request, the pickle never fetched
    assert fake.calls == [("step143000", HUB_PATTERNS_SAFETENSORS,
                           ["config.json", "tokenizer.json", "model.safetensors"])]
    assert snap == tmp_path / "step143000" and not (snap / "pytorch_model.bin").exists()
    fake.calls.clear()
    snap = _hub_snapshot("step1")  # a pickle only: asked for safetensors, then for the pickle
    assert [c[1] for c in fake.calls] == [HUB_PATTERNS_SAFETENSORS, HUB_PATTERNS_PICKLE]
    assert [n for c in fake.calls for n in c[2] if not n.endswith(".json")] == ["pytorch_model.bin"]
    assert (snap / "pytorch_model.bin").is_file()

    with pytest.raises(ModelUnavailableError) as exc:  # not cached, Hub unreachable
        _hub_snapshot("step32000")
    assert exc.value.reason == "not in the local Hugging Face cache and the Hub cannot be reached"
    assert "step32000" in str(exc.value) and "\n" not in str(exc.value)

    def no_such_revision(*args, **kwargs):
        raise _revision_not_found()

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_such_revision)
    with pytest.raises(ModelUnavailableError) as exc:
        _hub_snapshot("step7")
    assert exc.value.reason == "the Hub has no revision step7"


# ----------------------------------------------------------------------------- what is read


def test_pythia_70m_loads_from_the_hub_cache_reading_only_safetensors(hub_cache, monkeypatch):
    from analysis.core.models import _fingerprint_dir, load_model

    home, commits = hub_cache({PYTHIA_REVISION: 0}, trap_bin=[PYTHIA_REVISION])
    commit = commits[PYTHIA_REVISION]
    hub_fixture.patch_offline(monkeypatch, home)
    called = []

    def no_pickle(*args, **kwargs):
        called.append(args)
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_pickle)
    m = load_model("pythia-70m")
    assert not called and not hub_fixture.trap_marker(home, commit).exists()
    snap = hub_fixture.repo_folder(home) / "snapshots" / commit
    assert m.checkpoint == snap.resolve() and (snap / "pytorch_model.bin").is_symlink()
    assert (m.model_id, m.info["source"], m.info["revision"], m.info["commit"]) == (
        "pythia-70m", PYTHIA_REPO, PYTHIA_REVISION, commit)
    (snap / "pytorch_model.bin").unlink()  # the unread pickle is not part of the fingerprint
    assert _fingerprint_dir(snap) == m.info["fingerprint"]


def test_a_pickle_only_snapshot_is_read_with_weights_only(hub_cache, monkeypatch):
    from analysis.core.models import load_model, load_revision

    home, _ = hub_cache({PYTHIA_REVISION: 1})
    commit = hub_fixture.add_revision(home, "step1", 1, weights="bin")  # same weights, as a pickle
    hub_fixture.patch_offline(monkeypatch, home)
    real_load, seen = torch.load, []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    m = load_revision("step1")
    assert seen and all(w is True for w in seen), seen
    assert (m.model_id, m.info["revision"], m.info["commit"]) == ("pythia-70m@step1", "step1", commit)
    seen.clear()
    ref = load_model("pythia-70m")
    assert not seen  # safetensors
    assert m.info["fingerprint"] != ref.info["fingerprint"]
    a, b = m.bridge.state_dict(), ref.bridge.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_pickle_that_is_not_a_state_dict_is_refused_in_one_line(hub_cache, monkeypatch):
    from analysis.core.models import load_revision

    home, _ = hub_cache({})
    commit = hub_fixture.add_revision(home, "step8", 2, trap_only=True)
    hub_fixture.patch_offline(monkeypatch, home)
    with pytest.raises(UsageError) as exc:
        load_revision("step8")
    cause, hint = str(exc.value).split("\nHint: ")
    assert cause.startswith("could not load the weights in ") and "\n" not in cause
    assert "weights_only=True" in hint and "model.safetensors" in hint
    marker = hub_fixture.trap_marker(home, commit)
    assert not marker.exists()  # refused, never run
    snap = hub_fixture.repo_folder(home) / "snapshots" / commit
    with pytest.raises(RuntimeError, match="magic number"):  # the trap is live: unrestricted
        # unpickling runs it (and then finds no tensors)
        torch.load(snap / "pytorch_model.bin", weights_only=False)
    assert marker.exists()


# ----------------------------------------------------------------------------- end to end

MISSING = "step32000"  # a dynamics revision left out of the cache


# Fewer examples than the quick profile: these tests read where each number comes from
# (snapshot, revision, seed column, the authors' overlay), not the numbers, and the report
# is otherwise the suite's costliest fixture (the dynamics step probes every neuron at each
# revision). The report shows the sizes it ran with.
HUB_SIZES = ("activation_examples=10", "probe_samples=500", "loss_examples=10", "dla_examples=5",
             "downstream_examples=5", "shift_examples=5", "neuron_examples=5", "ngram_examples=4",
             "ngram_prompts=2", "null_neurons_per_layer=1", "null_german_neurons=2",
             "null_loss_examples=4", "null_loss_tokens=32", "permutations=3")


@pytest.fixture(scope="module")
def hub_report(tmp_path_factory):
    """`german-neuron report --model pythia-70m --corpus fixture --profile quick --set ...`
    (`HUB_SIZES`) in a child process with `HF_HUB_OFFLINE=1`, on a cache holding step143000 (with a trap pickle beside
    its safetensors) and every quick dynamics revision but `MISSING`, each seeded differently;
    with `--paper-dir` (the authors' published measurements) when the real data's folder has
    them beside it (`conftest.paper_dir_beside_data`): the fixture serves random weights
    under the real id, so the report overlays the authors' curves and checks their claims."""
    from conftest import paper_dir_beside_data

    revisions = PYTHIA_DYNAMICS_REVISIONS["quick"]
    assert revisions[-1] == PYTHIA_REVISION and MISSING in revisions
    home = tmp_path_factory.mktemp("hub") / "hf"
    commits = hub_fixture.build_hub_cache(
        home, {r: i for i, r in enumerate(revisions) if r != MISSING}, trap_bin=[PYTHIA_REVISION])
    out = home.parent / "out"
    paper = paper_dir_beside_data()
    r = subprocess.run([sys.executable, "-m", "analysis", "report", "--model", "pythia-70m",
                        "--corpus", "fixture", "--profile", "quick", "--out", str(out)]
                       + [a for size in HUB_SIZES for a in ("--set", size)]
                       + (["--paper-dir", paper] if paper else []),
                       capture_output=True, text=True, env=hub_fixture.offline_env(home), timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    arts = {p.stem: json.loads(p.read_text()) for p in (out / "artifacts").glob("*.json")}
    html = re.sub(r"data:[^\"')\s]+", "", (out / "report.html").read_text(encoding="utf-8"))
    return {"home": home, "commits": commits, "out": out, "stderr": r.stderr, "arts": arts, "html": html,
            "paper_dir": paper}


def _tables(html: str) -> dict[str, tuple[list[str], list[list[str]]]]:
    """{caption: (headers, rows of cell texts)} of the report's HTML tables."""
    tables = {}
    for tab in re.findall(r"<table.*?</table>", html, re.S):
        cap = re.search(r"<caption>(.*?)</caption>", tab, re.S)
        heads = [re.sub(r"<[^>]+>", "", h).strip() for h in re.findall(r"<th[^>]*>(.*?)</th>", tab, re.S)]
        rows = [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
                for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", tab, re.S)]
        tables[cap.group(1) if cap else ""] = (heads, [r for r in rows if r])
    return tables


def test_hub_report_names_the_snapshot_in_every_artifact(hub_report):
    commit = hub_report["commits"][PYTHIA_REVISION]
    assert "Traceback" not in hub_report["stderr"]
    from analysis.orchestration.pipeline import STEPS

    assert hub_report["arts"] and (hub_report["out"] / "report.pdf").is_file()
    steps = {s.name for s in STEPS}
    # regression.json is the baseline check's verdict, not a step's artifact
    assert set(hub_report["arts"]) - {"regression"} <= steps
    for step, art in hub_report["arts"].items():
        if step == "regression":
            continue
        model = art["provenance"]["model"]
        assert (model["id"], model["source"], model["revision"], model["commit"]) == (
            "pythia-70m", PYTHIA_REPO, PYTHIA_REVISION, commit), step
    # Pythia-70M counts as such for the n-gram step (its weights come from the real id): with
    # --paper-dir it measures the paper's trigrams, without it it selects its own and says so
    ng = hub_report["arts"]["ngrams"]["result"]
    src = ng["trigram_source"]
    assert src["kind"] == ("paper" if hub_report["paper_dir"] else "selected") and src["pythia_70m"] is True
    if hub_report["paper_dir"]:
        from analysis.core.paper import read_trigrams

        # the 228 used as given: every one measured, in the authors' order, none selected
        given = read_trigrams(hub_report["paper_dir"])
        assert ng["trigram_list"] == given and ng["selection"] is None
        assert sorted(r["index"] for r in ng["trigrams"]) == list(range(len(given)))
        assert f"The {len(given)} German trigrams of the paper are" in hub_report["html"]
    else:
        assert "trigram list was not found" in hub_report["html"]
    heads, rows = _tables(hub_report["html"])["Model and run"]
    setup = {r[0]: r[1] for r in rows}
    assert setup["Source"] == PYTHIA_REPO and setup["Is Pythia-70M"] == "yes"
    assert setup["Revision"] == f"{PYTHIA_REVISION}, commit {commit}"
    # the pickle beside the safetensors was never unpickled (neither by the report's model
    # nor by the dynamics step's own load of step143000)
    assert not list(hub_report["home"].glob(f"{hub_fixture.TRAP_MARKER}-*"))


# Captions (a distinctive part) of the tables that show the seed's printed value beside ours.
SEED_TABLES = ("Single-neuron logistic-regression probes", "mean-ablated on its own",
               "all German neurons except the context neuron", "one component",
               "unigrams of each language", "with L3N669 mean-ablated", "Weird tokens excluded",
               "The three numbers that carry the finding")


def test_hub_report_shows_the_seed_beside_ours_in_every_seed_table(hub_report):
    from analysis.orchestration.pipeline import SEED_REFERENCE

    tables = _tables(hub_report["html"])
    for needle in SEED_TABLES:
        found = [c for c in tables if needle in c]
        assert len(found) == 1, (needle, found)
        heads, rows = tables[found[0]]
        seed_cols = [i for i, h in enumerate(heads) if h == "seed"]
        assert seed_cols and all(i > 0 and heads[i - 1] != "seed" for i in seed_cols), heads
        for i in seed_cols:  # beside ours, and holding the seed's values
            assert any(r[i] not in ("", "—") for r in rows), (needle, heads[i - 1])
    ref = json.loads(SEED_REFERENCE.read_text())
    heads, rows = tables[next(c for c in tables if SEED_TABLES[0] in c)]
    l3 = next(r for r in rows if r[0] == "L3N669")
    assert l3[heads.index("F1 [95% CI]") + 1] == f"{ref['probes']['rows']['L3N669']['f1']:.2f}"
    assert not any(h == "seed" for c, (hs, _) in tables.items() for h in hs
                   if not any(n in c for n in SEED_TABLES))


def test_hub_report_dynamics_reads_each_revision_from_its_own_snapshot(hub_report):
    arts, commits = hub_report["arts"], hub_report["commits"]
    dyn = arts["dynamics"]["result"]
    expected = [r for r in PYTHIA_DYNAMICS_REVISIONS["quick"] if r != MISSING]
    assert [r["label"] for r in dyn["rows"]] == expected and dyn["n_checkpoints"] == len(expected)
    assert [r["commit"] for r in dyn["rows"]] == [commits[r] for r in expected]
    assert len({r["fingerprint"] for r in dyn["rows"]}) == len(expected)
    assert dyn["rows"][-1]["fingerprint"] == arts["probes"]["provenance"]["model"]["fingerprint"]
    reason = "not in the local Hugging Face cache and the Hub cannot be reached"
    assert dyn["skipped"] == [{"label": MISSING, "reason": reason}]
    assert f"<code>{MISSING}</code> ({reason})" in hub_report["html"]
    # the last checkpoint is the report's own model: the same numbers on the same examples
    last = dyn["rows"][-1]
    probe = {r["neuron"]: r for r in arts["probes"]["result"]["rows"]}["L3N669"]
    ctx = arts["ablation"]["result"]["context"]
    assert last["context"]["f1"] == pytest.approx(probe["f1"], abs=1e-12)
    assert last["context"]["test_acc"] == pytest.approx(probe["test_acc"], abs=1e-12)
    for lang in ("german", "english"):
        assert last["loss"][lang] == pytest.approx(ctx[lang]["original"], abs=1e-9)
        assert last["context"][lang]["percent_increase"] == pytest.approx(
            ctx[lang]["percent_increase"], abs=1e-9)
    tables = _tables(hub_report["html"])
    heads, rows = tables[next(c for c in tables if c.startswith("The snapshot of each training"))]
    assert [r[heads.index("Commit")] for r in rows] == [commits[r] for r in expected]


def test_hub_report_says_whether_the_authors_curves_were_available(hub_report):
    """The fixture's weights are served as EleutherAI/pythia-70m, so the `paper` step runs:
    with the authors' folder its section opens with the claims' verdicts, without it one
    sentence says how to pass it; the run succeeds either way."""
    import html

    res = hub_report["arts"]["paper"]["result"]
    assert res["available"] == (hub_report["paper_dir"] is not None)
    section = html.unescape(hub_report["html"]).split("The paper's curves and claims</h1>", 1)[1]
    if res["available"]:
        assert "headline claims reproduce" in section.split("</p>", 1)[0]
    else:
        assert "were not available to this run" in section and "--paper-dir DIR" in section


def test_hub_report_overlays_the_authors_curves_and_lists_the_claims(hub_report, paper_dir):
    """On random weights served as the real model, the report draws the authors' curves
    beside ours and lists every claim with both numbers; none reproduces (those this run
    cannot measure say not measured, and why), and the run does not fail."""
    from analysis.core.paper import FILES, SERIES
    from analysis.families.paper import CLAIMS, NOT_MEASURED, NOT_REPRODUCED

    art = hub_report["arts"]["paper"]
    res = art["result"]
    assert res["available"] and Path(res["dir"]) == Path(paper_dir).resolve()
    assert {k.removeprefix("paper/"): v["sha256"] for k, v in art["provenance"]["data"].items()} == {
        n: f.sha256 for n, f in FILES.items()}
    claims = {c["id"]: c for c in res["claims"]}
    assert list(claims) == [c.id for c in CLAIMS]
    for c in claims.values():
        assert isinstance(c["authors"]["value"], (int, float)) and c["authors"]["where"]
        if c["verdict"] == NOT_MEASURED:  # the split is measured by the ngrams step; timing needs checkpoints
            assert c["id"] == "trigrams_first" and c["why"], c
        else:
            assert c["verdict"] == NOT_REPRODUCED and c["ours"]["text"] and c["why"] is None, c
    for cid in ("final_f1", "final_increase"):  # the final checkpoint is the report's own model
        assert isinstance(claims[cid]["ours"]["value"], float)
    probe = {r["neuron"]: r for r in hub_report["arts"]["probes"]["result"]["rows"]}["L3N669"]
    assert claims["final_f1"]["ours"]["value"] == probe["f1"]
    # the indirect share is our ngrams step's split at the report's own checkpoint (step143000)
    e = hub_report["arts"]["ngrams"]["result"]["text"]["effects"]
    assert claims["indirect_share"]["ours"]["value"] == pytest.approx(e["indirect"]["nats"] / e["total"]["nats"])
    assert hub_report["arts"]["paper"]["provenance"]["upstream"]["ngrams"] == hub_report["arts"]["ngrams"]["key"]
    import html

    tables = _tables(html.unescape(hub_report["html"]))
    heads, rows = tables[next(c for c in tables if c.startswith("The paper's claims checked on this run"))]
    assert heads == ["Claim", "Authors' value (file, row)", "Our value", "Tolerance", "Verdict"]
    assert len(rows) == len(CLAIMS)
    assert [r[4].split(":")[0] for r in rows] == [claims[c.id]["verdict"] for c in CLAIMS]
    assert rows[2][1].startswith(claims["final_increase"]["authors"]["text"])
    # the dynamics figure overlays the authors' series; the ones we do not measure stand alone
    fig_dir = hub_report["out"] / "figures"
    dyn = json.loads((fig_dir / "dynamics.json").read_text())
    assert dyn["reference_artifact_key"] == art["key"] and "Quirke et al." in dyn["caption"]
    csv = (fig_dir / "dynamics.csv").read_text()
    for name in ("f1", "mcc", "ablation_pct_german", "loss_german", "loss_english"):
        assert f"{SERIES[name][0]} ({SERIES[name][2]})" in csv, name
    assert csv.count("Quirke et al.") > 5 * 100 and csv.count("\nours,") == len(
        hub_report["arts"]["dynamics"]["result"]["rows"]) * 6
    for name in ("paper_effect_split", "paper_trigram_losses", "paper_other_neurons"):
        rec = json.loads((fig_dir / f"{name}.json").read_text())
        assert rec["artifact_key"] == art["key"] and "alone" in rec["caption"], name
        assert (fig_dir / f"{name}.png").is_file()
    heads, rows = _tables(hub_report["html"])["Data files"]
    assert {r[1].strip("`") for r in rows} >= set(FILES)
