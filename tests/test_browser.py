"""The built report as a reader sees it: report.html in headless Chromium, report.pdf as
rendered pages.

Chromium (Debian package `chromium`) is driven over the Chrome DevTools Protocol through
`--remote-debugging-pipe`: commands are NUL-terminated JSON written to the browser's fd 3,
replies and events are read from its fd 4 (here the stdin/stdout pipes of a `bash -c exec`
that moves them there). No port, no websocket library, no downloaded browser. The PDF is
rasterised with `pdftoppm` (Debian package `poppler-utils`) and each page checked for ink
with Pillow. Both tools are installed by `.ci/run`; without them these tests are skipped,
except under CI (`CI` set), where they fail.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PDFTOPPM = shutil.which("pdftoppm")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe"]


def _need(tool: str | None, name: str) -> str:
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (.ci/run installs it)")
        pytest.skip(f"{name} is not installed (apt-get install {name})")
    return tool


class Browser:
    """A headless Chromium with a CDP session over its debugging pipe."""

    def __init__(self, user_data_dir: Path, timeout: float = 60.0):
        exe = _need(CHROMIUM, "chromium")
        # fd 3 <- our stdin pipe (commands), fd 4 -> our stdout pipe (replies)
        self.proc = subprocess.Popen(
            ["bash", "-c", 'exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null', exe, *FLAGS,
             f"--user-data-dir={user_data_dir}", "about:blank"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.timeout = timeout
        self.events: list[dict] = []
        self._buf = b""
        self._id = 0

    def _read_message(self, deadline: float) -> dict:
        fd = self.proc.stdout.fileno()
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from chromium")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"chromium closed the pipe (exit {self.proc.poll()})")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.proc.stdin.write(json.dumps(msg).encode() + b"\0")
        self.proc.stdin.flush()
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for ev in self.events:
            if ev.get("method") == method and ev.get("sessionId") == session:
                return ev
        while True:
            ev = self._read_message(deadline)
            self.events.append(ev)
            if ev.get("method") == method and ev.get("sessionId") == session:
                return ev

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


PAGE_CHECKS = """
(async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => i.complete ? null :
                             new Promise(r => { i.onload = r; i.onerror = r; })));
  return {
    images: imgs.map(i => ({src: i.src.slice(0, 48), width: i.naturalWidth, complete: i.complete})),
    h1: Array.from(document.querySelectorAll('h1')).map(h => h.textContent.trim()),
    heatmaps: document.querySelectorAll('.heatmap').length,
    heatmap_tokens: document.querySelectorAll('.heatmap span[title]').length,
    title: document.title,
  };
})()
"""


def inspect_page(path: Path, user_data_dir: Path) -> tuple[dict, list[str]]:
    """Load `path` in headless Chromium; return the page checks and every console error,
    uncaught exception and error log entry (failed loads included)."""
    b = Browser(user_data_dir)
    try:
        target = b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            b.call(f"{domain}.enable", session=sid)
        b.call("Page.navigate", {"url": path.resolve().as_uri()}, session=sid)
        b.wait_event("Page.loadEventFired", sid)
        res = b.call("Runtime.evaluate", {"expression": PAGE_CHECKS, "returnByValue": True,
                                          "awaitPromise": True}, session=sid)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page check script failed: {res['exceptionDetails']}")
        checks = res["result"]["value"]
    finally:
        b.close()
    errors = []
    for ev in b.events:
        p = ev.get("params", {})
        if ev.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                 for a in p.get("args", [])))
        elif ev.get("method") == "Runtime.exceptionThrown":
            errors.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:300])
        elif ev.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errors.append("log: " + p["entry"].get("text", ""))
    return checks, errors


def test_harness_detects_broken_images_and_console_errors(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<html><body><h1>A</h1><img src="data:image/png;base64,AAAA">'
                    '<img src="missing.png"><div class="heatmap"><span title="t">x</span></div>'
                    '<script>console.error("boom")</script></body></html>', encoding="utf-8")
    checks, errors = inspect_page(page, tmp_path / "profile")
    assert [i["width"] for i in checks["images"]] == [0, 0]
    assert checks["h1"] == ["A"] and checks["heatmaps"] == 1
    assert any("boom" in e for e in errors), errors
    assert any("missing.png" in e or "ERR_FILE_NOT_FOUND" in e for e in errors), errors


def test_report_html_in_chromium(tiny_report, tmp_path):
    from report.build import SECTIONS

    res, _, _ = tiny_report
    checks, errors = inspect_page(res["out"] / "report.html", tmp_path / "profile")
    assert not errors, errors
    assert len(checks["images"]) >= len({f["png"] for f in res["figures"]}) > 0
    bad = [i for i in checks["images"] if not (i["complete"] and i["width"] > 0)]
    assert not bad, bad
    expected = [s.heading for s in SECTIONS if s.included(res["context"])]
    assert "Downstream neurons by activation difference" in expected and "L5N1336" in expected
    for heading in expected:
        assert heading in checks["h1"], (heading, checks["h1"])
    nr = res["artifacts"]["neurons"]["result"]
    n_maps = (sum(len(x["top"]) for e in nr["neurons"] for x in e["example_searches"])
              + sum(len(s["prompts"]) for s in nr["prompt_sets"]))
    assert n_maps > 0 and checks["heatmaps"] >= n_maps
    assert checks["heatmap_tokens"] > 10 * n_maps


def blank_pages(pdf: Path, out: Path, dpi: int = 40, min_ink: int = 150) -> tuple[int, list[int]]:
    """Rasterise every page; a page is blank when fewer than `min_ink` pixels above the
    footer band (the bottom 8%, where the page number is) are darker than light grey."""
    from PIL import Image

    exe = _need(PDFTOPPM, "pdftoppm (poppler-utils)")
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([exe, "-r", str(dpi), "-png", str(pdf), str(out / "page")], check=True,
                   capture_output=True, timeout=300)
    pages = sorted(out.glob("page-*.png"), key=lambda p: int(p.stem.split("-")[-1]))
    blank = []
    for i, png in enumerate(pages, start=1):
        with Image.open(png) as im:
            g = im.convert("L")
            body = g.crop((0, 0, g.width, int(g.height * 0.92)))
            ink = sum(body.histogram()[:200])
        if ink < min_ink:
            blank.append(i)
    return len(pages), blank


def test_blank_page_check_can_fail(tmp_path):
    import typst

    src = tmp_path / "doc.typ"
    src.write_text('#set page(numbering: "1")\n= Heading\n#lorem(200)\n#pagebreak()\n#pagebreak()\n#lorem(40)\n',
                   encoding="utf-8")
    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(typst.compile(str(src)))
    n, blank = blank_pages(pdf, tmp_path / "png")
    assert n == 3 and blank == [2]


def test_report_pdf_has_no_blank_page(tiny_report, tmp_path):
    res, _, _ = tiny_report
    n, blank = blank_pages(res["out"] / "report.pdf", tmp_path / "png")
    assert n >= 5
    assert not blank, f"blank pages: {blank} of {n}"
