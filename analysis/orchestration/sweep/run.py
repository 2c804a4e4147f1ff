"""Running a planned sweep: reuse what the store holds, submit the rest, check what the
workers report, and record `sweep.json` and the table."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ...core.errors import ReportError
from .executors import start_executor
from .plan import SweepPlan, dependent_specs
from .progress import SweepProgress
from .table import write_table

SWEEP_SCHEMA = 1


class Interrupted(ReportError):
    """Ctrl-C: what was computed is stored and recorded; the same command resumes."""

    exit_code = 130


def _record(spec: dict, rec: dict) -> dict:
    """A task's entry in `sweep.json`."""
    keys = ("model", "kind", "repo", "path", "revision", "step", "tokens_seen", "train_loss", "anchor")
    out = {k: spec.get(k) for k in keys}
    out.update({"key": rec.get("key", spec["key"]), "planned_key": spec["key"], "status": rec["status"],
                "reason": rec.get("reason"), "commit": rec.get("commit", spec.get("commit")),
                "commit_moved_from": spec.get("commit_moved_from"),
                "context_neuron": spec["params"]["context_neuron"],
                "wall_s": rec.get("wall_s"), "worker": rec.get("worker")})
    return out


def run_sweep(plan: SweepPlan, scheduler: str = "local", workers: int | None = None,
              log: Callable[[str], None] | None = None, live: bool | None = None,
              command: str = "") -> dict:
    """Run the planned sweep: reuse what the store has, compute the rest on the chosen
    executor (started only when something is left to compute), then write `sweep.json` and
    the table (`write_table`).

    Returns `{"out", "tasks": [entries of sweep.json], "counts": {status: n}, "wall_s",
    "executor", "dashboard", "table": {...paths}}`.

    Raises:
        UsageError: see `start_executor` (before any task runs).
        ReportError: another sweep holds the output folder; interrupted (Ctrl-C): what was
            done is kept and recorded, a rerun resumes.
    """
    from filelock import FileLock, Timeout

    log = log or (lambda s: print(s, file=sys.stderr))
    live = sys.stderr.isatty() if live is None else live
    t0 = time.perf_counter()
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ReportError(f"another sweep is writing to {out} (lock {out / '.lock'})",
                          hint="wait for it to finish, or pass a different --out") from None
    records: list[dict] = []
    executor = None
    try:
        _remove_stale_temporaries(out / "store")
        if plan.refs is not None:
            plan.refs.write()
        todo = _triage(plan, list(plan.tasks), records, log)
        n_reused = sum(r["status"] == "reused" for r in records)
        n_waiting = sum(len(v) for v in plan.deferred.values())
        log(f"Sweep: {len(records) + len(todo) + n_waiting} tasks over {len(plan.models)} model(s); "
            f"{n_reused} reused from {out / 'store'}, {len(todo)} to compute"
            + (f" (+{n_waiting} once their auto neuron is known)" if n_waiting else ""))
        if todo:
            executor, threads = start_executor(scheduler, plan.settings["device"], workers,
                                               plan.settings["threads"], len(todo) + n_waiting, log)
            log(f"  {executor.description}" + (f"; dashboard {executor.dashboard}" if executor.dashboard else ""))
            for b in plan.base.values():
                b["threads"] = b.get("threads") or threads
            progress = SweepProgress(len(records) + len(todo) + n_waiting, log, live, records)
            # anchors first: the checkpoints waiting on their auto neuron are released sooner
            for spec in sorted(todo, key=lambda t: not t.get("anchor")):
                spec["threads"] = spec.get("threads") or threads
                executor.submit(spec)
            while executor.pending():
                spec, res = executor.next_done()
                rec = verify_artifact(plan, spec, res) if isinstance(res, dict) else {
                    "status": "failed", "reason": f"{type(res).__name__}: {(str(res).splitlines() or [''])[0][:300]}"}
                records.append(_record(spec, rec))
                progress.update(spec, rec)
                if spec.get("anchor") and spec["model"] in plan.deferred:
                    n0 = len(records)
                    for new in _triage(plan, _anchor_done(plan, spec, rec, records, log), records, log):
                        new["threads"] = new.get("threads") or threads
                        executor.submit(new)
                    for r in records[n0:]:  # reused or skipped without running
                        progress.update(r, r, ran=False)
            progress.close()
        for name in list(plan.deferred):  # anchors that were never measured
            _skip_deferred(plan, name, "its --neuron auto anchor was not measured", records)
    except KeyboardInterrupt:
        if executor is not None:
            executor.cancel()
        _finish(plan, records, out, t0, executor, command, interrupted=True)
        raise Interrupted(f"interrupted: {sum(r['status'] in ('computed', 'reused') for r in records)} "
                          "tasks are stored; rerun the same command to resume") from None
    finally:
        if executor is not None:
            executor.close()
        lock.release()
    return _finish(plan, records, out, t0, executor, command)


def verify_artifact(plan: SweepPlan, spec: dict, rec: dict) -> dict:
    """A worker's record, checked: a task it reports `computed` or `reused` whose artifact is
    not (valid) in the driver's store is `failed`, with a one-line cause naming where the
    worker wrote it (a worker that sees another folder than the driver's)."""
    from .task import OUT_ENV, load_artifact

    if rec.get("status") not in ("computed", "reused"):
        return rec
    key = rec.get("key") or spec["key"]
    if load_artifact(plan.out / spec["store"], key) is not None:
        return rec
    rel = rec.get("artifact") or f"{spec['store']}/{key[:2]}/{key}/checkpoint.json"
    return {**rec, "status": "failed",
            "reason": f"worker {rec.get('worker')} reported it {rec['status']} but {rel} is not in "
                      f"{plan.out} (the worker wrote {rec.get('wrote')}): every worker must see the "
                      f"sweep's folder (set {OUT_ENV} on a worker that mounts it elsewhere)"}


def _triage(plan: SweepPlan, specs: list[dict], records: list[dict], log) -> list[dict]:
    """Record the specs that need no run (skipped: known not to exist; reused: their
    artifact is in the store, and a reused anchor releases its model's other checkpoints,
    triaged in turn); return the rest, to compute."""
    from .task import load_artifact

    todo, queue = [], list(specs)
    while queue:
        spec = queue.pop(0)
        if spec.get("skip_reason"):
            records.append(_record(spec, {"status": "skipped", "reason": spec["skip_reason"]}))
        elif load_artifact(plan.out / spec["store"], spec["key"]) is not None:
            rec = {"status": "reused", "key": spec["key"]}
            records.append(_record(spec, rec))
            if spec.get("anchor") and spec["model"] in plan.deferred:
                queue += _anchor_done(plan, spec, rec, records, log)
        else:
            todo.append(spec)
    return todo


def _anchor_done(plan: SweepPlan, spec: dict, rec: dict, records: list[dict], log) -> list[dict]:
    """A `--neuron auto` anchor finished: the specs of its model's other checkpoints (with
    the neuron it discovered), or, if it was not measured, those checkpoints skipped."""
    from .task import load_artifact

    art = load_artifact(plan.out / spec["store"], rec.get("key") or spec["key"]) \
        if rec["status"] in ("computed", "reused") else None
    if art is None:
        _skip_deferred(plan, spec["model"], f"--neuron auto: its anchor {spec['revision']} was "
                                            f"{rec['status']} ({rec.get('reason')})", records)
        return []
    deps = dependent_specs(plan, spec["model"], art, spec)
    log(f"  {spec['model']}: --neuron auto is {art['result']['context']['neuron']} "
        f"(discovered at {spec['revision']}); {len(deps)} more checkpoints")
    return deps


def _skip_deferred(plan: SweepPlan, model: str, reason: str, records: list[dict]) -> None:
    base = plan.base[model]
    for c in plan.deferred.pop(model, []):
        records.append(_record({**base, **c, "key": None, "anchor": False},
                               {"status": "skipped", "reason": reason}))


def _remove_stale_temporaries(store: Path, older_than_s: float = 3600) -> None:
    """Temporary files of writes that never finished (a killed worker), older than an hour
    (a live worker may be writing a newer one)."""
    if not store.is_dir():
        return
    now = time.time()
    for p in store.glob("*/*/.*.tmp"):
        try:
            if now - p.stat().st_mtime > older_than_s:
                p.unlink()
        except OSError:
            pass


def _finish(plan: SweepPlan, records: list[dict], out: Path, t0: float, executor, command: str,
            interrupted: bool = False) -> dict:
    from ...core.artifacts import atomic_write_text, library_versions

    order = {e.name: i for i, e in enumerate(plan.models)}
    records.sort(key=lambda r: (order.get(r["model"], 0), r["step"] if r["step"] is not None else -1,
                                r["revision"]))
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    manifest = {
        "schema": SWEEP_SCHEMA, "kind": "german-neuron sweep", "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "interrupted": interrupted, "executor": getattr(executor, "description", None) or "nothing to compute",
        "settings": plan.settings, "code": {"module": plan.code["module"], "sha256": plan.code["sha256"]},
        "libraries": library_versions(), "counts": counts, "wall_time_s": round(time.perf_counter() - t0, 2),
        "refs": plan.refs.record() if plan.refs is not None else None,
        "tasks": records,
    }
    atomic_write_text(out / "sweep.json", json.dumps(manifest, indent=1, sort_keys=True, default=str))
    table = write_table(out, manifest)
    return {"out": out, "tasks": records, "counts": counts, "wall_s": manifest["wall_time_s"],
            "executor": manifest["executor"], "dashboard": getattr(executor, "dashboard", None),
            "table": table, "manifest": manifest}
