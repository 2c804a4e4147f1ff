"""The driver's progress: one line (rich, on a terminal), else one log line per task."""

from __future__ import annotations

import time
from collections.abc import Callable


class SweepProgress:
    """One progress line on the driver: tasks done / total, reused, failed, skipped,
    tokens/s and ETA (rich, on a terminal); otherwise one log line per finished task.
    `records`: the tasks already settled (reused, skipped) before any ran."""

    def __init__(self, total: int, log: Callable[[str], None], live: bool, records: list[dict] = ()):
        self.total, self.log, self._live = total, log, None
        self.counts = {"computed": 0, "reused": 0, "failed": 0, "skipped": 0}
        for r in records:
            self.counts[r["status"]] += 1
        self.tokens, self.t0, self.ran = 0.0, time.perf_counter(), 0
        if live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn

            self._live = Progress(TextColumn("sweep"), BarColumn(), TextColumn("{task.fields[text]}"),
                                  console=Console(stderr=True), transient=False)
            self._live.start()
            self._task = self._live.add_task("sweep", total=total, completed=self.done(), text=self.text())

    def done(self) -> int:
        return sum(self.counts.values())

    def text(self, eta: bool = True) -> str:
        """`7/14 tasks, 3 reused, 0 failed, 1 skipped, 1,234 tokens/s, ETA 2.0 min`."""
        el = time.perf_counter() - self.t0
        rate = self.tokens / el if el > 0 else 0.0
        c = self.counts
        txt = (f"{self.done()}/{self.total} tasks, {c['reused']} reused, {c['failed']} failed, "
               f"{c['skipped']} skipped, {rate:,.0f} tokens/s")
        if eta:
            left = self.total - self.done()
            t = el / self.ran * left if self.ran else None
            txt += ", ETA " + ("?" if t is None else (f"{t:.0f} s" if t < 120 else f"{t / 60:.1f} min"))
        return txt

    def update(self, spec: dict, rec: dict, ran: bool = True) -> None:
        st = rec["status"]
        self.counts[st] += 1
        self.ran += ran
        if st == "computed":
            self.tokens += rec.get("tokens_forwarded") or 0
        what = f"{spec['model']} {spec['revision']}: {st}"
        if st == "computed":
            what += f" in {rec.get('wall_s') or 0:.1f} s"
        elif rec.get("reason"):
            what += f" ({rec['reason']})"
        if self._live is not None:
            self._live.update(self._task, completed=self.done(), text=self.text())
            if st in ("failed", "skipped"):
                self._live.console.print(f"  {what}")
        else:
            self.log(f"  [{self.done()}/{self.total}] {what}")

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self._task, completed=self.done(), text=self.text(eta=False))
            self._live.stop()
        self.log(f"  done: {self.text(eta=False)}, {time.perf_counter() - self.t0:.1f} s")
