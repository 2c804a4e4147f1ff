"""Interrupted runs, concurrent runs and full disks never leave a file that looks complete."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.core.artifacts import ArtifactStore

# builds a report or model of its own: scheduled first (conftest)
pytestmark = pytest.mark.slow


def _start(out: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "analysis", "report", "--model", "tiny",
                             "--corpus", "fixture", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _kill_when(proc: subprocess.Popen, marker: str, timeout: float = 300) -> str:
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return "".join(seen)
    proc.kill()
    raise AssertionError(f"marker {marker!r} not seen: {''.join(seen)[-2000:]}")


def _complete_artifacts(out: Path) -> dict[str, dict]:
    """Every artifact JSON on disk parses and its payload matches its hash (none partial)."""
    store = ArtifactStore(out / "artifacts")
    found = {}
    for p in (out / "artifacts").glob("*.json"):
        art = json.loads(p.read_text())
        if p.stem == "regression":
            continue
        assert store.load_valid(p.stem, art["key"]) is not None, p
        found[p.stem] = art
    return found


def test_sigkill_mid_analysis_leaves_no_partial_artifact_and_the_rerun_reuses_work(tmp_path):
    out = tmp_path / "o"
    _kill_when(_start(out), "activations: computed")
    done = _complete_artifacts(out)
    assert "activations" in done
    assert not (out / "report.html").exists() and not (out / "report.pdf").exists()
    # the rerun is a partial one (--steps) over two steps that read the killed run's
    # activations: what is tested is that its work is reused and nothing partial is read
    # (the rendering's own crash safety is the next test's)
    r = subprocess.run([sys.executable, "-m", "analysis", "report", "--model", "tiny", "--corpus",
                        "fixture", "--steps", "probes,correlations", "--out", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "activations: cached" in r.stderr and ": computed" in r.stderr
    assert set(_complete_artifacts(out)) > set(done)
    assert not list(out.glob(".report-tmp-*")) and not list((out / "artifacts").glob(".*.tmp"))


def test_sigkill_mid_rendering_keeps_the_previous_report(tiny_report, tmp_path):
    res, _, _ = tiny_report
    out = tmp_path / "o"
    shutil.copytree(res["out"], out)
    before = {n: (out / n).read_bytes() for n in ("report.html", "report.pdf")}
    (out / "report.html").write_bytes(before["report.html"])
    _kill_when(_start(out), "Rendering report")
    for name, data in before.items():
        assert (out / name).read_bytes() == data, name  # untouched, not half-written
    _complete_artifacts(out)


def test_second_run_on_the_same_folder_refuses_with_a_clear_message(tmp_path):
    from filelock import FileLock

    out = tmp_path / "o"
    out.mkdir()
    with FileLock(str(out / ".lock")):
        r = subprocess.run([sys.executable, "-m", "analysis", "report", "--model", "tiny",
                            "--corpus", "fixture", "--out", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "another run is writing to" in r.stderr and "Traceback" not in r.stderr
    assert not (out / "artifacts").exists()


def test_disk_full_while_writing_the_report_keeps_the_previous_one(tiny_report, tmp_path, monkeypatch):
    import report.build as rb
    from analysis.core.errors import ReportError
    from analysis.orchestration.pipeline import run_report

    res, _, cfg = tiny_report
    out = tmp_path / "o"
    shutil.copytree(res["out"], out)
    before = (out / "report.html").read_bytes()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rb.os, "replace", full)
    import dataclasses

    with pytest.raises(ReportError, match="No space left on device"):
        run_report(dataclasses.replace(cfg, out=str(out)), corpus="fixture", show_progress=False,
                   log=lambda s: None)
    assert (out / "report.html").read_bytes() == before
    assert not list(out.glob(".report-tmp-*"))


def test_disk_full_while_writing_an_artifact_leaves_no_file(tmp_path, monkeypatch):
    import analysis.core.artifacts as A

    store = A.ArtifactStore(tmp_path)
    inputs = A.StepInputs("s", {"module": "m", "sha256": "x"}, {}, {}, {}, 0, {}, "cpu")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(A.os, "fsync", full)
    with pytest.raises(OSError):
        store.save(inputs, {"v": 1}, 0.0)
    assert list(tmp_path.iterdir()) == []
