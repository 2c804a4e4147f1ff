"""The authors' published measurements (`analysis.core.paper`) and the paper's claims as
checks (`analysis.families.paper`): the checkpoint index -> step rule, against the rule and
against the files; the files read, and refused when changed; each claim's check on synthetic
numbers, one passing and one failing case each. The report's and the sweep's use of them are
tested on the Hub-layout fixtures (tests/test_hub.py, tests/test_sweep.py)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis.core import paper as ref
from analysis.core.errors import DataError
from analysis.families import paper as fp

# ----------------------------------------------------------------------------- the checkpoint axis


def test_checkpoint_index_maps_to_pythias_training_steps():
    from analysis.core.models import PYTHIA_CHECKPOINTS

    steps = [ref.checkpoint_step(i) for i in range(154)]
    assert steps[:12] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    assert steps[11:] == [1000 * k for k in range(1, 144)]
    assert steps == [int(r.removeprefix("step")) for r in PYTHIA_CHECKPOINTS]  # the Hub's branches
    assert [ref.checkpoint_index(s) for s in steps] == list(range(154))
    for bad in (-1, 154, 2.5, True):
        with pytest.raises(ValueError):
            ref.checkpoint_step(bad)
    for bad in (3, 1024, 1500, 144_000, -1000):
        with pytest.raises(ValueError):
            ref.checkpoint_index(bad)


# ----------------------------------------------------------------------------- the files


@pytest.fixture(scope="module")
def paper(paper_dir):
    return ref.load_paper(paper_dir)


def test_the_files_follow_the_mapping(paper):
    """Loss about 11 nats (uniform over the vocabulary) at index 0 and about 3.0 at the end,
    as shared/paper/README.md says; and the log-spaced head: still above 5 nats at index 10
    (step 512) and near its final value by index 20 (step 10,000), which a uniform spacing of
    1,000 steps (index 10 = step 10,000) would contradict."""
    tri, ev, na = paper.trigram_losses, paper.eval, paper.neuron_ablation
    assert sorted(tri["index"].unique()) == list(range(154)) and tri["step"].max() == 143_000
    for loss0 in (ev.iloc[0]["german_loss"], na[na["index"] == 0]["original_loss"].iloc[0],
                  paper.effect_split.iloc[0]["original_loss"]):
        assert 10.5 < loss0 < 11.5
    assert 2.8 < ev.iloc[-1]["german_loss"] < 3.2 and ev.iloc[-1]["step"] == 131_000
    l3 = na[na["neuron"] == "L3N669"].set_index("step")["original_loss"]
    assert l3.index.max() == 140_000 and 2.8 < l3.loc[140_000] < 3.2
    assert l3.loc[512] > 5.0 and l3.loc[10_000] < 3.5
    assert (ev["step"] == [ref.checkpoint_step(i) for i in ev["index"]]).all()


def test_the_files_read_as_the_readme_quotes_them(paper, paper_dir):
    ev, na, split = paper.eval, paper.neuron_ablation, paper.effect_split
    assert len(ev) == 142 and na["neuron"].nunique() == 229 and na["index"].nunique() == 16
    assert len(split) == 31 and paper.trigram_losses["trigram"].nunique() == 228
    assert round(ev.iloc[-1]["f1"], 3) == 0.979 and round(ev.iloc[-1]["mcc"], 3) == 0.958
    assert round(ev.iloc[-1]["ablation_increase"], 3) == 0.325
    last = na[(na["neuron"] == "L3N669")].iloc[-1]
    assert last["index"] == 150 and round(last["ablation_increase"], 3) == 0.356
    s = split.iloc[-1]
    assert (s["index"], round(s["total"], 3), round(s["indirect_path_ablated"], 3),
            round(s["direct_path_ablated"], 3)) == (150, 0.348, 0.305, 0.176)
    trigrams = ref.read_trigrams(paper_dir)
    assert len(trigrams) == 228 and set(trigrams) == set(paper.trigram_losses["trigram"])
    assert " Abgeord" in trigrams  # leading spaces kept, as Pythia's tokens have them
    series = ref.authors_series(paper)
    assert set(series["series"]) == set(ref.SERIES) and series["value"].notna().all()


def test_the_direct_effect_columns_hold_the_indirect_path_ablated(paper):
    """The authors' code computes the column headed "Direct Effect (Loss)" with layers 4-5
    frozen at their ablated values (the path through later layers ablated). The trigram file
    agrees: at the last checkpoint that loss is the fully ablated one, give or take 0.1 nats,
    and the one headed "Indirect Effect Loss" is within 0.5 nats of the clean loss, while
    ablating L3N669 costs more than 2 nats; read the other way round, the paper's
    contextual n-grams would not depend on later layers at all."""
    last = paper.trigram_losses[paper.trigram_losses["index"] == 153].mean(numeric_only=True)
    assert last["ablated"] - last["original"] > 2.0
    assert abs(last["indirect_path_ablated"] - last["ablated"]) < 0.1
    assert last["direct_path_ablated"] - last["original"] < 0.5


def test_a_changed_or_missing_file_is_refused_in_one_line(paper_dir, tmp_path):
    copy = shutil.copytree(paper_dir, tmp_path / "paper")
    (copy / "checkpoint_eval.csv").chmod(0o644)
    raw = bytearray((copy / "checkpoint_eval.csv").read_bytes())
    raw[-2] = ord("9") if raw[-2] != ord("9") else ord("8")  # one digit of the last number
    (copy / "checkpoint_eval.csv").write_bytes(bytes(raw))
    with pytest.raises(DataError) as exc:
        ref.load_paper(copy)
    cause, hint = str(exc.value).split("\nHint: ")
    assert "checkpoint_eval.csv has sha256" in cause and ref.FILES["checkpoint_eval.csv"].sha256[:12] in cause
    assert "lovis-heindrich/superposition@d088859" in hint
    (copy / "checkpoint_eval.csv").unlink()
    with pytest.raises(DataError, match="checkpoint_eval.csv is missing"):
        ref.verify(copy)


def test_the_folder_is_named_or_found_beside_the_data(paper_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(ref.PAPER_DIR_ENV, raising=False)
    monkeypatch.delenv("GERMAN_NEURON_DATA_DIR", raising=False)
    data = Path(paper_dir).parent / "data"
    assert ref.resolve_paper_dir(None, data) == Path(paper_dir).resolve()
    assert ref.resolve_paper_dir(paper_dir, tmp_path / "data") == Path(paper_dir).resolve()
    assert ref.resolve_paper_dir(None, tmp_path / "data") is None  # no `paper` beside it
    assert ref.resolve_paper_dir(None, None) is None
    with pytest.raises(DataError, match="does not exist"):
        ref.resolve_paper_dir(tmp_path / "nowhere")
    monkeypatch.setenv(ref.PAPER_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="does not exist"):
        ref.resolve_paper_dir(None, data)


def test_the_cli_refuses_a_changed_file_before_any_compute(paper_dir, tmp_path):
    from typer.testing import CliRunner

    from analysis.orchestration.cli import app

    copy = shutil.copytree(paper_dir, tmp_path / "paper")
    (copy / "context_effect_split.csv").chmod(0o644)
    with open(copy / "context_effect_split.csv", "a") as f:
        f.write("\n")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["report", "--model", "tiny", "--corpus", "fixture", "--paper-dir", str(copy),
                                 "--out", str(out)])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].startswith("error: the authors' file ") and "context_effect_split.csv has sha256" in lines[0]
    assert lines[1].startswith("Hint: ") and not (out / "artifacts").exists()


# ----------------------------------------------------------------------------- the checks (synthetic)


def test_check_crossing_step():
    c = fp.first_crossing([8000, 512, 2000, 32000], [0.96, 0.4, 0.8, 0.97], 0.95)
    assert c == {"step": 8000, "value": 0.96, "previous": 2000}
    assert fp.check_crossing_step(13_000, c)          # inside (2000/2, 8000*2]
    assert not fp.check_crossing_step(40_000, c)      # later than twice our crossing
    assert not fp.check_crossing_step(500, c)         # earlier than half our previous checkpoint
    assert fp.first_crossing([512, 2000], [0.4, 0.5], 0.95) is None
    assert not fp.check_crossing_step(13_000, None)   # never formed


def test_check_within():
    assert fp.check_within(0.985, 0.979, fp.FINAL_F1_TOL)
    assert not fp.check_within(0.62, 0.979, fp.FINAL_F1_TOL)
    assert fp.check_within(0.30, 0.356, fp.FINAL_INCREASE_TOL)
    assert not fp.check_within(0.001, 0.356, fp.FINAL_INCREASE_TOL)


def test_check_growth():
    g = fp.growth([512, 8000, 32000, 143000], [0.5, 0.96, 0.98, 0.98], [0.0, 0.03, 0.2, 0.36])
    assert g == {"step": 8000, "at": 0.03, "final_step": 143000, "final": 0.36}
    assert fp.check_growth(g["at"], g["final"])
    assert not fp.check_growth(0.2, 0.3)        # not doubled
    assert not fp.check_growth(-0.001, 0.01)    # "doubled" from about zero: below the margin
    assert fp.growth([512, 143000], [0.5, 0.6], [0.0, 0.1]) is None


def _trigrams(learned: dict, dependent: dict, steps=(0, 512, 2000, 8000, 32000, 143000)) -> pd.DataFrame:
    """A synthetic trigram table: each trigram's clean loss is 10 nats before its `learned`
    step and 1 from then on; ablating the context neuron costs 3 nats from its `dependent`
    step (None: never), 0.1 before."""
    rows = []
    for t in learned:
        for s in steps:
            original = 1.0 if s >= learned[t] else 10.0
            cost = 3.0 if dependent[t] is not None and s >= dependent[t] else 0.1
            rows.append({"step": s, "trigram": t, "original": original, "ablated": original + cost})
    return pd.DataFrame(rows)


def test_check_trigram_timing():
    early = _trigrams({" der": 512, " und": 2000, "ung": 2000}, {" der": 32000, " und": 32000, "ung": 143000})
    t = fp.trigram_timing(early)
    assert (t["low"], t["dependent"], t["n"]) == (2000, 32000, 3)
    assert fp.check_trigram_timing(t["low"], t["dependent"])
    together = _trigrams({" der": 2000, " und": 2000, "ung": 8000}, {" der": 2000, " und": 2000, "ung": 8000})
    t = fp.trigram_timing(together)
    assert not fp.check_trigram_timing(t["low"], t["dependent"])
    never = _trigrams({" der": 512, " und": 512, "ung": 512}, {" der": None, " und": None, "ung": 8000})
    t = fp.trigram_timing(never)
    assert math.isinf(t["dependent"]) and t["never_dependent"] == 2
    assert not fp.check_trigram_timing(t["low"], t["dependent"])


def _synthetic_paper() -> ref.PaperData:
    """Authors' tables with the files' columns: F1 first >= 0.95 at step 8,000, the ablation
    increase 0.02 there and 0.35 at the end, an indirect share of 0.8, trigrams learned at
    step 512-2,000 and dependent from 32,000."""
    steps = [0, 512, 2000, 8000, 32000, 143000]
    index = [ref.checkpoint_index(s) for s in steps]
    ev = pd.DataFrame({"index": index, "step": steps, "f1": [0.4, 0.6, 0.9, 0.96, 0.97, 0.98],
                       "mcc": [0.0, 0.3, 0.8, 0.9, 0.94, 0.96], "german_loss": [11.0, 6.0, 3.5, 3.2, 3.0, 3.0],
                       "english_loss": [11.0, 6.0, 4.0, 3.8, 3.6, 3.5],
                       "ablated_loss": [11.0, 6.0, 3.51, 3.22, 3.1, 3.35]})
    ev["ablation_increase"] = ev["ablated_loss"] - ev["german_loss"]
    na = pd.DataFrame({"index": index, "step": steps, "neuron": "L3N669", "original_loss": ev["german_loss"],
                       "ablated_loss": ev["ablated_loss"], "ablation_increase": ev["ablation_increase"]})
    split = pd.DataFrame({"index": index, "step": steps, "original_loss": ev["german_loss"],
                          "total": [0.0, 0.0, 0.01, 0.02, 0.1, 0.35],
                          "indirect_path_ablated": [0.0, 0.0, 0.005, 0.01, 0.08, 0.28],
                          "direct_path_ablated": [0.0, 0.0, 0.005, 0.01, 0.03, 0.1]})
    tri = _trigrams({" der": 512, " und": 2000, "ung": 2000}, {" der": 32000, " und": 32000, "ung": 143000}, steps)
    tri.insert(0, "index", [ref.checkpoint_index(s) for s in tri["step"]])
    tri["indirect_path_ablated"], tri["direct_path_ablated"] = tri["ablated"], tri["original"]
    return ref.PaperData(Path("synthetic"), {}, ev, na, split, tri)


def test_every_claim_reproduces_on_the_authors_numbers_and_not_on_others():
    paper = _synthetic_paper()
    same = fp.Ours("L3N669", paper.eval[["step", "f1"]].assign(increase=paper.eval["ablation_increase"]),
                   final={"f1": 0.98, "f1_ci": None, "increase": 0.35, "increase_ci": None},
                   effect_split=paper.effect_split, trigram_losses=paper.trigram_losses, missing={})
    res = fp.evaluate(paper, same)
    assert [c["id"] for c in res["claims"]] == [c.id for c in fp.CLAIMS]
    assert {c["id"]: c["verdict"] for c in res["claims"]} == {c.id: fp.REPRODUCED for c in fp.CLAIMS}
    # a model whose neuron never forms, with no effect and trigrams learned when they depend
    flat = pd.DataFrame({"step": [0, 512, 2000, 8000, 32000, 143000], "f1": [0.5] * 6, "increase": [0.0] * 6})
    split = paper.effect_split.assign(indirect_path_ablated=paper.effect_split["total"] * 0.2)
    late = _trigrams({" der": 32000, " und": 32000, "ung": 32000}, {" der": 32000, " und": 32000, "ung": 32000})
    other = fp.Ours("L3N669", flat, final={"f1": 0.5, "f1_ci": None, "increase": 0.0, "increase_ci": None},
                    effect_split=split, trigram_losses=late, missing={})
    res = fp.evaluate(paper, other)
    assert {c["id"]: c["verdict"] for c in res["claims"]} == {c.id: fp.NOT_REPRODUCED for c in fp.CLAIMS}
    assert all(c["ours"]["text"] and c["authors"]["where"] for c in res["claims"])
    assert res["counts"] == {fp.REPRODUCED: 0, fp.NOT_REPRODUCED: len(fp.CLAIMS), fp.NOT_MEASURED: 0}


def test_a_claim_without_our_number_is_not_measured_never_passed():
    paper = _synthetic_paper()
    none = fp.Ours("L3N669", pd.DataFrame({"step": [], "f1": [], "increase": []}))
    res = {c["id"]: c for c in fp.evaluate(paper, none)["claims"]}
    assert all(c["verdict"] == fp.NOT_MEASURED and c["why"] and c["ours"]["value"] is None for c in res.values())
    assert "no checkpoint" in res["f1_formed"]["why"] and "final checkpoint" in res["final_f1"]["why"]
    assert res["indirect_share"]["why"] == fp.NOT_MEASURED_YET
    short = fp.Ours("L3N669", pd.DataFrame({"step": [512, 8000], "f1": [0.5, 0.97], "increase": [0.0, 0.05]}))
    assert "stops at step 8,000" in {c["id"]: c for c in fp.evaluate(paper, short)["claims"]}["effect_grows"]["why"]
    another = fp.Ours("L4N482", paper.eval[["step", "f1"]].assign(increase=paper.eval["ablation_increase"]),
                      final={"f1": 0.98, "f1_ci": None, "increase": 0.35, "increase_ci": None})
    assert all("studies L4N482" in c["why"] for c in fp.evaluate(paper, another)["claims"])


def test_the_indirect_share_is_read_from_the_ngrams_split_at_the_final_checkpoint():
    """`ours_from_report` takes the ngrams step's split (our `indirect`: only the path through
    later layers ablated, the authors' "Direct Effect" column) at the report's revision; the
    claim is then judged on it. Without the step, or at another revision, it is not measured
    and says why; the trigram timing never comes from one checkpoint."""
    paper = _synthetic_paper()
    effects = {"total": {"nats": 0.35}, "indirect": {"nats": 0.28}, "direct": {"nats": 0.1}}
    arts = {"ngrams": {"result": {"text": {"effects": effects}}}}
    ours = fp.ours_from_report(arts, "L3N669", "step143000")
    row = ours.effect_split.iloc[0]
    assert (row["step"], row["total"], row["indirect_path_ablated"], row["direct_path_ablated"]) == (
        143000, 0.35, 0.28, 0.1)
    res = {c["id"]: c for c in fp.evaluate(paper, ours)["claims"]}
    assert res["indirect_share"]["verdict"] == fp.REPRODUCED  # 0.80 vs the synthetic authors' 0.80
    assert res["indirect_share"]["ours"]["value"] == pytest.approx(0.8)
    assert res["trigrams_first"]["verdict"] == fp.NOT_MEASURED and res["trigrams_first"]["why"] == fp.ONE_CHECKPOINT
    # the same numbers with the paths swapped (most of the effect direct) do not reproduce it
    swapped = {**effects, "indirect": effects["direct"], "direct": effects["indirect"]}
    ours = fp.ours_from_report({"ngrams": {"result": {"text": {"effects": swapped}}}}, "L3N669", "step143000")
    assert {c["id"]: c for c in fp.evaluate(paper, ours)["claims"]}["indirect_share"]["verdict"] == fp.NOT_REPRODUCED
    for a, revision, why in (({}, "step143000", fp.NO_NGRAMS), (arts, "main", "not a training step")):
        ours = fp.ours_from_report(a, "L3N669", revision)
        assert ours.effect_split is None and why in ours.missing["effect_split"]
        assert {c["id"]: c for c in fp.evaluate(paper, ours)["claims"]}["indirect_share"]["verdict"] == fp.NOT_MEASURED
    # a revision before the final checkpoint: measured there, but the claim is about the final one
    ours = fp.ours_from_report(arts, "L3N669", "step8000")
    share = {c["id"]: c for c in fp.evaluate(paper, ours)["claims"]}["indirect_share"]
    assert share["verdict"] == fp.NOT_MEASURED and "143,000" in share["why"]


def test_the_section_says_so_when_the_authors_files_are_absent():
    """Without the folder the `paper` artifact says so, and its section is one sentence
    saying how to pass it (no table, no figure): the section's template rendered on such an
    artifact."""
    from report.build import SECTIONS, _render, make_environment

    section = next(s for s in SECTIONS if s.template == "72_paper.md.j2")
    art = {"result": fp.unavailable_result()}
    assert section.included({"artifacts": {"paper": art}})
    text = _render(make_environment(), f"sections/{section.template}",
                   {"artifacts": {"paper": art}, "figures_for": lambda *steps: []})
    assert "were not available to\nthis run" in text and "--paper-dir DIR" in text
    assert "| Claim |" not in text and "show_figure" not in text
