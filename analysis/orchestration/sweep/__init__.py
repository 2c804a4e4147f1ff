"""`german-neuron sweep`: the training-dynamics measurements over many checkpoints and model
sizes, on Dask distributed (or serially), with one cached artifact per (model, revision).

    german-neuron sweep --models pythia-70m,pythia-160m --revisions all|quick|paper|step1000,...
        [--neuron L3N669|auto] [--profile quick|paper] [--set NAME=VALUE]
        [--scheduler local|tcp://HOST:8786|none] [--workers N] [--device cpu|cuda] [--out DIR]

The driver (this package) plans every task (`plan.plan_sweep`): it validates the input (a one-line
`UsageError`, exit 2, before any task runs), resolves what each checkpoint is without
downloading it, and computes every task's cache key (`task.task_inputs`). Tasks whose
artifact is already in the store are reused; only the missing ones are submitted
(`run.run_sweep`): a rerun after a crash, a Ctrl-C or with a longer revision list computes only
what is new. A task (`task.run_task`) runs on a worker: it downloads (or finds) its
checkpoint, measures it with the `dynamics` step's own functions, writes one artifact and
frees the model (and, with `--keep-weights no`, the downloaded weights).

What a Hub checkpoint's key covers (repo, revision, commit): online, the commit is the Hub's
(its list of branches, one request per repository, no download), for every branch, so a
branch re-uploaded since the sweep last looked (Pythia's were: EleutherAI/pythia issues 107,
108, 141) is measured at its new commit and the move (old -> new) is logged and recorded in
`sweep.json` (`refs.moved`, each task's `commit_moved_from`) and in `<out>/refs/`. Offline
(`HF_HUB_OFFLINE=1` or the Hub unreachable) it is the sweep's own record (`<out>/refs/`:
commits learnt from the Hub, and those workers resolved; it survives `--keep-weights no`),
else the driver's Hugging Face cache (`refs/<revision>`), unchecked, and the driver says so
(`hub.HubRefs`). When none knows it the driver's key has `commit: null`: it is provisional. The
worker resolves the revision while downloading it, computes the final key with the commit it
got, records the resolution, and reuses an artifact with that key if the store has one; the
next run of the driver knows the commit from the record. A checkpoint folder's key covers
its weights fingerprint (sha256 of its config, tokenizer and weight files), read on the
driver.

Scheduling (`--scheduler`): `local` starts a `dask.distributed.LocalCluster` of worker
processes sized to the machine (on CPU, workers x torch threads per task <= cores; with
`--device cuda`, one worker per GPU, each pinned to its own device through
`CUDA_VISIBLE_DEVICES`); `tcp://HOST:PORT` attaches to a running scheduler (`executors.scheduler_command` and
`worker_command`: the LocalCluster's settings, from `SCHEDULER_CONFIG`, `WORKER_CONFIG`; or
dask-jobqueue on Slurm with the same), through the same code path;
`none` runs the tasks one after another in this process, without importing Dask. Each Dask
worker runs one task at a time (one model in memory). A worker that dies mid-task leaves no
partial artifact (writes are atomic) and the scheduler reruns its task on another worker;
a task that raises is retried (`executors.RETRIES`).

Outputs under `--out` (default `build/sweep`; `build/sweep-bfloat16`, `-tf32` for the other
precisions, `plan.default_sweep_out`): `store/` (the artifacts), `refs/`, `sweep.json`
(the manifest: every task, its key and status), `table.parquet` and `table.csv` (one row per
model x revision x measure, `table.TABLE_COLUMNS`), and the report (`report.html`, `report.pdf`,
`figures/`). See docs/ARTIFACTS.md.

The parts, in the order a sweep runs them: `args` (what `--models`, `--revisions`,
`--scheduler` and `--keep-weights` say), `hub` (the Hub branches' commits, without a
download), `plan` (the task specs and their keys), `executors` (serial, or Dask: a
LocalCluster or a scheduler's address), `progress` (the driver's progress line), `run`
(reuse, submit, record `sweep.json`), `table` (`table.parquet`, `table.csv`), `summary`
(what the report says), `figures` and `report` (`german-neuron report --sweep DIR`); and
`task`, what a worker runs. This file imports none of them: a task's key is the closure of
`task`'s imports, which takes its packages in too.
"""
