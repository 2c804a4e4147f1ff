"""Where a sweep's tasks run: one after another in this process (`SerialExecutor`), or as
Dask futures (`DaskExecutor`) on a LocalCluster sized to the machine or a scheduler's
address; and the commands that start a scheduler and workers with the same settings."""

from __future__ import annotations

import os
from collections.abc import Callable

from ...core.errors import UsageError
from .args import parse_scheduler

RETRIES = 2                 # reruns of a task that raised (a worker that died is rerun anyway)
ALLOWED_FAILURES = 3        # worker deaths a task may cause before the scheduler gives it up
# Every sweep cluster's Dask settings, in one place: `start_executor` applies them to a
# LocalCluster, `scheduler_command` and `worker_command` print them for one you start (and the
# README shows those commands). A worker holds one model at a time, whose size Dask does not
# know: its default memory thresholds would pause a worker loading a large checkpoint (80%)
# and kill it mid-task (95%), so memory is not managed by Dask (no limit, no spilling: a task's
# data is a spec and a record); the kernel's OOM killer ends a worker that truly runs out, and
# the scheduler reruns its task (up to ALLOWED_FAILURES).
SCHEDULER_CONFIG = {"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}
WORKER_CONFIG = {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False,
                 "distributed.worker.memory.pause": False, "distributed.worker.memory.terminate": False}
WORKER_MEMORY_LIMIT = 0     # `--memory-limit 0`: no limit
CONNECT_TIMEOUT_S = 5       # --scheduler tcp://...: how long to wait for the scheduler to answer


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class SerialExecutor:
    """`--scheduler none`: tasks run one after another in this process (no Dask)."""

    description = "serial (this process, no Dask)"
    dashboard = None

    def __init__(self):
        self._queue: list[dict] = []

    def submit(self, spec: dict) -> None:
        self._queue.append(spec)

    def pending(self) -> int:
        return len(self._queue)

    def next_done(self) -> tuple[dict, dict | BaseException]:
        from .task import run_task

        spec = self._queue.pop(0)
        try:
            return spec, run_task(spec)
        except Exception as exc:  # what Dask would retry: recorded as failed here
            return spec, exc

    def cancel(self) -> None:
        self._queue.clear()

    def close(self) -> None:
        pass


class DaskExecutor:
    """Tasks as Dask futures on a `LocalCluster` started here or a scheduler at `address`;
    only the spec (plain data) is sent, only the task's record comes back."""

    def __init__(self, client, cluster=None, description: str = ""):
        from distributed import as_completed

        self.client, self.cluster, self.description = client, cluster, description
        self._pending: dict[str, tuple] = {}
        self._ac = as_completed([], with_results=False)
        try:
            self.dashboard = client.dashboard_link if _has_dashboard(client) else None
        except Exception:
            self.dashboard = None
        if self.dashboard and not _bokeh():
            self.dashboard += " (its pages need bokeh: pip install bokeh)"

    def submit(self, spec: dict) -> None:
        key = f"checkpoint-{spec['model']}-{spec['revision']}-{spec['key'][:12]}"
        fut = self.client.submit(_run_task_remote, spec, key=key, pure=False, retries=RETRIES)
        self._pending[fut.key] = (fut, spec)
        self._ac.add(fut)

    def pending(self) -> int:
        return len(self._pending)

    def next_done(self) -> tuple[dict, dict | BaseException]:
        fut = next(self._ac)
        _, spec = self._pending.pop(fut.key)
        try:
            return spec, fut.result()
        except Exception as exc:  # retries used up, or KilledWorker
            return spec, exc
        finally:
            fut.release()

    def cancel(self) -> None:
        try:
            self.client.cancel([f for f, _ in self._pending.values()])
        except Exception:
            pass
        self._pending.clear()

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def _run_task_remote(spec: dict) -> dict:
    from .task import run_task

    return run_task(spec)


def _has_dashboard(client) -> bool:
    """Whether the scheduler serves a dashboard (it needs bokeh on the scheduler)."""
    info = client.scheduler_info()
    return bool((info.get("services") or {}).get("dashboard"))


def local_sizing(device: str, workers: int | None, threads: int | None, n_tasks: int) -> tuple[int, int]:
    """(workers, torch threads per task) of a LocalCluster on this machine.

    CPU: `workers` (default: as many as tasks, at most the cores over `threads`) x threads
    (default: the cores over the workers) <= cores. CUDA: one worker per GPU (`workers` at
    most that), each task with `threads` (default the cores over the workers). A sweep plan
    always gives `threads` (it is in the task keys).

    Raises:
        UsageError: `--workers` below 1; `--device cuda` without a GPU; more workers than GPUs.
    """
    cores = available_cores()
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: must be at least 1")
    if device.startswith("cuda"):
        import torch

        n_gpu = torch.cuda.device_count()
        if n_gpu == 0:
            raise UsageError("--device cuda was given but no CUDA device is available")
        if workers is not None and workers > n_gpu:
            raise UsageError(f"--workers {workers}: only {n_gpu} GPUs; one worker per GPU")
        n = workers or n_gpu
        return n, threads or max(1, cores // n)
    n = workers or max(1, min(cores // (threads or 1), n_tasks))
    t = threads or max(1, cores // n)
    if n * t > cores:
        raise UsageError(f"--workers {n} x --threads {t} = {n * t} exceeds the {cores} cores here",
                         hint="fewer workers or threads (workers x threads <= cores)")
    return n, t


def start_executor(scheduler: str, device: str, workers: int | None, threads: int | None,
                   n_tasks: int, log: Callable[[str], None]):
    """The executor of `--scheduler` (see the module docstring) and the torch threads per
    task it implies (None: decided on each worker).

    Raises:
        UsageError: a malformed `--scheduler`; a scheduler that does not answer within
            `CONNECT_TIMEOUT_S`; see `local_sizing`.
    """
    kind, address = parse_scheduler(scheduler)
    if kind == "none":
        return SerialExecutor(), threads or available_cores()
    import logging

    import dask
    from distributed import Client

    dask.config.set({**SCHEDULER_CONFIG, **WORKER_CONFIG})
    if kind == "tcp":
        try:
            client = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError) as exc:
            raise UsageError(f"no Dask scheduler answers at {address} ({type(exc).__name__})",
                             hint=f"start one (`{scheduler_command(int(address.rpartition(':')[2]))}`, "
                                  f"then per machine or GPU `{worker_command(address)}`), or use "
                                  "--scheduler local") from None
        n_workers = len(client.scheduler_info().get("workers", {}))
        if n_workers == 0:
            log(f"  the scheduler at {address} has no workers yet; tasks wait for them")
        log(f"  a worker for this sweep: {worker_command(address)}")
        return DaskExecutor(client, None, f"Dask scheduler {address} ({n_workers} workers)"), threads
    n, t = local_sizing(device, workers, threads, n_tasks)
    dash = ":8787"  # Dask's default; another free port when it is taken
    if device.startswith("cuda"):
        # One worker per GPU, each seeing only its own device (untested here: no GPU).
        from distributed import Nanny, Scheduler, SpecCluster

        specs = {f"gpu{i}": {"cls": Nanny, "options": {"nthreads": 1, "memory_limit": WORKER_MEMORY_LIMIT,
                                                       "env": {"CUDA_VISIBLE_DEVICES": str(i)}}}
                 for i in range(n)}
        cluster = SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": {"dashboard_address": dash}},
                              silence_logs=logging.ERROR)
        desc = f"LocalCluster: {n} workers, one per GPU, {t} threads per task"
    else:
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, memory_limit=WORKER_MEMORY_LIMIT,
                               dashboard_address=dash, silence_logs=logging.ERROR)
        desc = f"LocalCluster: {n} workers x 1 task, {t} torch threads per task"
    client = Client(cluster)
    return DaskExecutor(client, cluster, desc), t


def dask_env(config: dict) -> dict[str, str]:
    """The environment variables that give a Dask process `config` (`{"distributed.worker.
    memory.pause": False}` -> `{"DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "False"}`; Dask
    reads them at import, `dask.config.collect_env`)."""
    return {"DASK_" + k.upper().replace(".", "__").replace("-", "_"): repr(v) for k, v in config.items()}


def _with_env(config: dict, command: str) -> str:
    import shlex

    return " ".join(f"{k}={shlex.quote(v)}" for k, v in dask_env(config).items()) + " " + command


def scheduler_command(port: int = 8786) -> str:
    """The shell command that starts a scheduler for `--scheduler tcp://HOST:PORT` with the
    settings a LocalCluster gets (`SCHEDULER_CONFIG`)."""
    return _with_env(SCHEDULER_CONFIG, f"dask scheduler --port {port}")


def worker_command(address: str = "tcp://HOST:8786") -> str:
    """The shell command that starts one sweep worker for the scheduler at `address` with
    the settings of a LocalCluster's workers: one task at a time, `WORKER_MEMORY_LIMIT`,
    `WORKER_CONFIG`. Run it where the sweep's folder and data are visible (set
    `GERMAN_NEURON_SWEEP_OUT` too when the folder is mounted elsewhere than on the driver)."""
    return _with_env(WORKER_CONFIG, f"dask worker {address} --nworkers 1 --nthreads 1 "
                                    f"--memory-limit {WORKER_MEMORY_LIMIT}")


def _bokeh() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True
