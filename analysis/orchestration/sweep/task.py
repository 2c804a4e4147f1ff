"""One task of a training-dynamics sweep: one (model, revision) checkpoint, on a worker.

The driver (the rest of `analysis.orchestration.sweep`) plans the tasks and schedules them;
this module is what a worker runs, and the only code whose source is in a task's cache key
(its import closure within `analysis`, `codehash.code_record`), so editing the driver
(progress display, scheduling, the table, the report) recomputes nothing, while editing anything a
measurement executes (this module, `families.dynamics`, the engine, model loading) does.

Only plain data crosses the scheduler: a task spec in (`run_task`'s argument, a dict of
names, revision, commit or fingerprint, paths relative to the sweep's folder, parameters and
the key; see `task_inputs`), a small record out (key, status, timings, tokens, where the
artifact went). Weights, tensors and
tokens never do: the worker downloads (or finds) the checkpoint, tokenises the examples
from the data files itself (their sha256 are checked against the spec's), measures, writes
one artifact into the sweep's store, and frees the model.

The artifact is an `ArtifactStore` envelope (`store/<key[:2]>/<key>/checkpoint.json`, arrays
beside it), written atomically: a worker killed mid-task leaves no partial artifact, and a
rerun of the task (Dask reschedules it elsewhere) writes the same payload.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

TASK_STEP = "checkpoint"
# The sweep's output folder as a worker sees it, when it is mounted elsewhere than on the
# driver (a spec's `store` and `refs` are relative to it; without the variable, the
# driver's path, `spec["out"]`, is used: the same machine or the same mount point).
OUT_ENV = "GERMAN_NEURON_SWEEP_OUT"
# Test only: a folder. A task writes `started-<pid>-<revision>` there just before it saves
# its artifact, then waits until `release` exists (so that a test can kill its worker).
HOLD_ENV = "GERMAN_NEURON_SWEEP_TEST_HOLD"


def artifact_dir(store: str | os.PathLike, key: str) -> Path:
    """The folder of the artifact with `key` in a sweep store: `<store>/<key[:2]>/<key>/`."""
    return Path(store) / key[:2] / key


def load_artifact(store: str | os.PathLike, key: str) -> dict | None:
    """The valid artifact with `key` in the store (payload and arrays still hash to what
    was recorded, `ArtifactStore.load_valid`), else None."""
    from ...core.artifacts import ArtifactStore

    return ArtifactStore(artifact_dir(store, key)).load_valid(TASK_STEP, key)


def model_identity(spec: dict, commit: str | None = None) -> dict:
    """What identifies the weights of a task in its key.

    A Hub checkpoint: `{"kind": "hub", "repo", "revision", "commit"}`, `commit` None when
    neither the driver's Hugging Face cache, the sweep's own record of earlier resolutions,
    nor the Hub's list of branches knew it (the worker then resolves it, see `run_task`).
    A checkpoint folder: `{"kind": "folder", "fingerprint"}` (sha256 of its config,
    tokenizer and weight files, `models._fingerprint_dir`): where the folder lives is not
    part of what it is. Plus how it is loaded (`models.PROCESSING`, eager attention, BOS).
    """
    from ...core.models import PROCESSING

    load = {"attn_implementation": "eager", "prepend_bos": True, "processing": dict(PROCESSING),
            "loader": "TransformerBridge.boot_transformers + enable_compatibility_mode"}
    if spec["kind"] == "hub":
        return {"kind": "hub", "repo": spec["repo"], "revision": spec["revision"],
                "commit": commit if commit is not None else spec.get("commit"), **load}
    return {"kind": "folder", "fingerprint": spec["fingerprint"], **load}


def task_inputs(spec: dict, commit: str | None = None, code: dict | None = None):
    """The `StepInputs` of a task (its key is the task's cache key): this module's code
    record, `model_identity`, the data files' provenance (sha256), the measurement's
    parameters, the seed, `upstream` (for `--neuron auto`: the key of the checkpoint the
    neuron was discovered at) and the device."""
    from ...core.artifacts import StepInputs
    from ...core.codehash import code_record

    return StepInputs(step=TASK_STEP, code=code or code_record(__name__),
                      model=model_identity(spec, commit), data=spec["data"], params=spec["params"],
                      seed=spec["seed"], upstream=spec.get("upstream") or {}, device=spec["device"],
                      run={"profile": spec.get("profile")})


def sweep_folder(spec: dict) -> Path:
    """The sweep's output folder on this machine: `$GERMAN_NEURON_SWEEP_OUT` when set (a
    worker whose mount point differs from the driver's), else the driver's `spec["out"]`."""
    return Path(os.environ.get(OUT_ENV) or spec.get("out") or ".")


def task_store(spec: dict) -> Path:
    """The store a task reads and writes on this machine (`spec["store"]`, relative to
    `sweep_folder`)."""
    return sweep_folder(spec) / spec["store"]


def task_refs(spec: dict) -> Path:
    """Where a task records the commit it resolved, on this machine."""
    return sweep_folder(spec) / spec["refs"]


def artifact_relpath(spec: dict, key: str) -> str:
    """The artifact's JSON, relative to the sweep's folder (`store/<key[:2]>/<key>/checkpoint.json`):
    what a worker reports and the driver checks against its own folder."""
    return (Path(spec["store"]) / key[:2] / key / f"{TASK_STEP}.json").as_posix()


def refs_path(refs_dir: str | os.PathLike, repo: str, revision: str) -> Path:
    """Where a sweep records the commit a worker resolved a Hub branch to."""
    return Path(refs_dir) / repo.replace("/", "--") / f"{revision}.json"


def recorded_commit(refs_dir: str | os.PathLike, repo: str, revision: str) -> str | None:
    """The commit an earlier task of this sweep resolved `repo@revision` to, or None."""
    try:
        return json.loads(refs_path(refs_dir, repo, revision).read_text())["commit"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def profile_from_spec(spec: dict):
    """The `Profile` whose sizes the task measures with."""
    from ...core.config import Profile

    p = spec["profile"]
    return Profile(name=p["name"], batch_tokens=int(p["batch_tokens"]), **p["sizes"])


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to `n` for the block (restored after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _worker_threads() -> int:
    """Threads for a task on a worker that was not told: the cores over the worker's
    concurrent task slots (a Dask worker's `nthreads`), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        from distributed import get_worker

        slots = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        slots = 1
    return max(1, cores // max(1, slots))


def _trim_memory() -> None:
    """Return freed heap to the OS (glibc), so the worker's resident memory (which Dask and
    the kernel see) drops when the model is freed."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _hold(spec: dict) -> None:
    folder = os.environ.get(HOLD_ENV)
    if not folder:
        return
    folder = Path(folder)
    (folder / f"started-{os.getpid()}-{spec['revision']}").write_text(spec["key"])
    deadline = time.monotonic() + 300
    while not (folder / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _one_line(exc: BaseException) -> str:
    return (getattr(exc, "reason", None) or (str(exc).splitlines() or [type(exc).__name__])[0])[:300]


def run_task(spec: dict) -> dict:
    """Measure one checkpoint and write its artifact (the function a worker runs).

    Returns a record: `{"key", "status", "reason", "commit", "wall_s", "tokens_forwarded",
    "peak_rss_bytes", "threads", "worker", "artifact", "wrote"}` (`artifact`: the artifact's
    path relative to the sweep's folder, which the driver checks; `wrote`: where this worker
    put it, `sweep_folder`); `status` is `computed`, `reused` (a Hub
    revision whose commit only the worker could resolve, already in the store), `skipped`
    (the checkpoint cannot be obtained: not cached and the Hub unreachable, no such
    revision; `reason` says which) or `failed` (a deterministic error: out of memory on the
    GPU, naming model, revision and batch size; a neuron outside the model; a folder that
    changed since the sweep was planned; a worker whose code or libraries give another key
    than the driver's). Anything else raises, and Dask retries the task.
    """
    t0 = time.perf_counter()
    # the threads the key names (`params.threads`); a spec from before threads were keyed: as given
    threads = spec["params"].get("threads") or spec.get("threads") or _worker_threads()
    base = {"key": spec["key"], "commit": spec.get("commit"), "threads": threads,
            "worker": f"{socket.gethostname()}:{os.getpid()}", "tokens_forwarded": 0,
            "peak_rss_bytes": None, "reason": None}
    with torch_threads(threads):
        try:
            out = _measure(spec, base, t0)
        except Exception as exc:
            out = _known_failure(spec, base, exc)
            if out is None:
                raise
    out["wall_s"] = time.perf_counter() - t0
    if out["status"] in ("computed", "reused"):
        out["artifact"] = artifact_relpath(spec, out["key"])
        out["wrote"] = str(sweep_folder(spec) / out["artifact"])
    return out


def _known_failure(spec: dict, base: dict, exc: Exception) -> dict | None:
    import torch

    from ...core.errors import ModelUnavailableError, ReportError

    if isinstance(exc, ModelUnavailableError):
        return {**base, "status": "skipped", "reason": _one_line(exc)}
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        p = spec["profile"]
        return {**base, "status": "failed",
                "reason": f"out of memory on {spec['device']} measuring {spec['model']} at "
                          f"{spec['revision']} with batches of {p['batch_tokens']} tokens "
                          "(lower --batch-tokens, or use a GPU with more memory)"}
    if isinstance(exc, ReportError):
        return {**base, "status": "failed", "reason": _one_line(exc)}
    return None


def _measure(spec: dict, base: dict, t0: float) -> dict:
    from ...controls.organism import quiet_hf_progress
    from ...core.artifacts import ArtifactStore, atomic_write_text
    from ...core.codehash import code_record
    from ...core.config import Neuron
    from ...core.data import load_corpus
    from ...core.engine import Forward, Weights
    from ...core.errors import ReportError
    from ...core.models import (
        _fingerprint_dir,
        _hub_snapshot,
        checkpoint_n_params,
        delete_cached_weights,
        load_checkpoint,
        load_revision,
        snapshot_commit,
    )
    from ...core.precision import matmul_precision
    from ...core.runner import peak_rss_bytes, reset_peak_rss, tokenize_examples
    from ...families.dynamics import measure_checkpoint

    code = code_record(__name__)
    if task_inputs(spec, code=code).key() != spec["key"]:
        raise ReportError(f"the worker {base['worker']} computes another key for {spec['model']} "
                          f"{spec['revision']} than the driver: its code or library versions differ",
                          hint="run the driver and the workers from the same environment")
    reset_peak_rss()
    device, key, commit = spec["device"], spec["key"], spec.get("commit")
    snap = None
    try:
        with quiet_hf_progress():
            if spec["kind"] == "hub":
                snap = _hub_snapshot(commit or spec["revision"], spec["repo"])
                got = snapshot_commit(snap)
                if commit is None and got is not None:  # resolved here: the final key
                    commit = got
                    atomic_write_text(refs_path(task_refs(spec), spec["repo"], spec["revision"]),
                                      json.dumps({"repo": spec["repo"], "revision": spec["revision"],
                                                  "commit": commit}))
                    key = task_inputs(spec, commit, code).key()
                    if load_artifact(task_store(spec), key) is not None:
                        return {**base, "key": key, "commit": commit, "status": "reused"}
                model = load_revision(spec["revision"], None, device, snapshot=snap, repo=spec["repo"])
            else:
                if _fingerprint_dir(Path(spec["path"])) != spec["fingerprint"]:
                    raise ReportError(f"checkpoint folder {spec['path']} changed since the sweep was "
                                      "planned (its fingerprint differs)", hint="rerun the sweep")
                model = load_checkpoint(spec["path"], None, device, model_id=spec["model"])
        t_load = time.perf_counter() - t0
        info = model.info
        n_params = checkpoint_n_params(Path(snap) if snap is not None else Path(spec["path"]))
        toks, records = {}, {}
        # the driver's data folder, else (mounted elsewhere here) this worker's own; the
        # sha256 check below holds either to the driver's files
        data_dir = spec["data_dir"]
        if data_dir and not Path(data_dir).is_dir():
            data_dir = os.environ.get("GERMAN_NEURON_DATA_DIR") or data_dir
        corpora = {lang: load_corpus(name, data_dir) for lang, name in spec["corpus"].items()}
        for lang, corpus in corpora.items():
            if corpus.provenance() != spec["data"][lang]:
                raise ReportError(f"the {lang} data file on worker {base['worker']} differs from the driver's",
                                  hint="point every worker at the same --data-dir")
        profile = profile_from_spec(spec)
        for part, n in (("activation", profile.activation_examples), ("loss", profile.loss_examples)):
            toks[part], records[part] = {}, {}
            for lang, corpus in corpora.items():
                toks[part][lang], records[part][lang] = tokenize_examples(model, corpus.examples, n, lang)
        ngram_spec = spec["params"].get("ngrams")
        ngram_in = _ngram_inputs(model, corpora, ngram_spec, profile) if ngram_spec else None
        # One copy of the weights: the engine's, taken from the bridge without cloning; the
        # bridge (and the Hugging Face model inside it) is dropped before measuring.
        keep_bridge = bool(spec.get("keep_bridge"))  # the old way, for `bench --sweep` only
        weights = Weights.from_bridge(model.bridge, info["rotary_pct"], copy=keep_bridge)
        if not keep_bridge:
            model.bridge = None
            _trim_memory()
        # bfloat16: the engine keeps only its bf16 copy (`Weights.to_precision`); the float32
        # tensors go with `weights`.
        fwd = Forward(weights, spec["params"].get("dtype", "float32"))
        weights = fwd.w
        _trim_memory()
        rss_measuring = _current_rss()
        context = None if spec["params"]["context_neuron"] == "auto" else Neuron.parse(spec["params"]["context_neuron"])
        if context is not None:
            context.check(weights.n_layers, weights.d_mlp)
        t1 = time.perf_counter()
        t_ngrams = None
        with matmul_precision(bool(spec["params"].get("tf32", False))):
            row, arrays = measure_checkpoint(fwd, toks, context, profile, device)
            if ngram_in is not None:
                t2 = time.perf_counter()
                row, arrays = _measure_ngrams(fwd, toks, row, arrays, ngram_in, ngram_spec, profile, device)
                t_ngrams = time.perf_counter() - t2
        t_measure = time.perf_counter() - t1
        result = {
            "model": {"kind": spec["kind"], "repo": spec.get("repo"), "revision": spec["revision"] if spec["kind"] == "hub" else None,
                      "commit": commit, "fingerprint": info["fingerprint"], "n_params": n_params,
                      **{k: info[k] for k in ("n_layers", "d_model", "d_mlp", "n_heads", "d_vocab", "n_ctx")}},
            "context_neuron_source": spec["params"]["context_neuron_source"],
            "tokens": records | ({"ngram": ngram_in["records"]} if ngram_in else {}),
            **row,
        }
        _hold(spec)
        cost = {"tokens_forwarded": fwd.tokens_forwarded, "unembedded_rows": fwd.unembedded_rows,
                "peak_rss_bytes": peak_rss_bytes(), "rss_measuring_bytes": rss_measuring,
                "threads": base["threads"], "load_s": round(t_load, 3), "measure_s": round(t_measure, 3),
                "ngrams_s": None if t_ngrams is None else round(t_ngrams, 3),
                "worker": base["worker"]}
        inputs = task_inputs(spec, commit, code)
        ArtifactStore(artifact_dir(task_store(spec), key)).save(inputs, result, time.perf_counter() - t0,
                                                             arrays, cost)
        del model, weights, fwd
        _trim_memory()
        return {**base, "key": key, "commit": commit, "status": "computed",
                "tokens_forwarded": cost["tokens_forwarded"], "peak_rss_bytes": cost["peak_rss_bytes"],
                "load_s": t_load, "measure_s": t_measure}
    finally:
        if snap is not None and not spec.get("keep_weights", True):
            model = weights = fwd = None  # noqa: F841 (release the files' mappings first)
            gc.collect()
            commit_dir = snapshot_commit(snap)
            if commit_dir:
                delete_cached_weights(spec["repo"], commit_dir)


def _ngram_inputs(model, corpora: dict, ngram_spec: dict, profile) -> dict:
    """What the n-gram measurement of a task reads, from the tokenizer and the text only
    (the same at every checkpoint of a model): the German examples of the split (the first
    `ngram_examples`), the trigrams (`ngram_dynamics.trigram_ids`: the paper's strings from
    the spec, or chosen from the whole German and English texts), and the random contexts
    (`ngrams.context_prompts` over the German text's `ngrams.common_tokens`), and with
    `frequent_token_dla` in the spec, `frequent`: `{language: int64 [k]}`, the
    `ngrams.common_tokens` of every German and every English example (the paper's figure 7)."""
    import numpy as np

    from ...core.runner import tokenize_examples
    from ...families.ngram_dynamics import trigram_ids
    from ...families.ngrams import common_tokens, context_prompts

    text, rec = tokenize_examples(model, corpora["german"].examples, int(ngram_spec["examples"]), "german")
    pools = {lang: tokenize_examples(model, corpora[lang].examples, None, lang)[0] for lang in ("german", "english")}
    ids, strings = trigram_ids(model, ngram_spec["trigrams"], pools["german"], pools["english"],
                               int(ngram_spec["trigrams"].get("n") or 0))
    common = common_tokens(pools["german"], int(model.info["d_vocab"]), model.to_str_tokens,
                           int(ngram_spec["common_tokens"]))
    contexts = context_prompts(common, int(ngram_spec["prompts"]), int(ngram_spec["context_length"]), profile.seed)
    out = {"text": text, "records": rec, "ids": ids, "strings": strings,
           "contexts": np.asarray(contexts, dtype=np.int64), "common": common}
    dla = ngram_spec.get("frequent_token_dla")
    if dla:  # the paper's figure 7: the most frequent tokens of each language's whole text
        out["frequent"] = {lang: common_tokens(pools[lang], int(model.info["d_vocab"]), model.to_str_tokens,
                                               int(dla["tokens"])) for lang in ("german", "english")}
    return out


def _measure_ngrams(fwd, toks: dict, row: dict, arrays: dict, ngram_in: dict, ngram_spec: dict,
                    profile, device: str) -> tuple[dict, dict]:
    """`row`/`arrays` of `measure_checkpoint` with the n-gram measurements added (the
    context neuron: the one `measure_checkpoint` studied, so that `--neuron auto` measures
    the checkpoint's own; ablation value: its mean English activation there): `ngrams`
    (`ngram_dynamics.measure_ngram_checkpoint`), `other_neurons`
    (`ngram_dynamics.measure_other_neurons`) and, when the spec asks for it,
    `frequent_token_dla` (`ngram_dynamics.frequent_token_dla`, the paper's figure 7: logits
    per unit activation; arrays `frequent_dla_<language>` float64 `[k]`, each token's DLA)."""
    from ...core.config import Neuron
    from ...families.ngram_dynamics import (
        frequent_token_dla,
        measure_ngram_checkpoint,
        measure_other_neurons,
    )

    ctx = Neuron.parse(row["context"]["neuron"])
    value = float(row["context"]["value"])
    ng, ng_arrays = measure_ngram_checkpoint(fwd, ngram_in["text"], ngram_in["ids"], ngram_in["contexts"], ctx,
                                             value, profile.batch_tokens, device)
    src = {k: v for k, v in ngram_spec["trigrams"].items() if k != "strings"}
    row = {**row, "ngrams": {"context_neuron": str(ctx), "ablation_value": value, "trigram_source": src,
                             "trigram_list": ngram_in["strings"], "trigram_ids": ngram_in["ids"], **ng},
           "other_neurons": measure_other_neurons(fwd, toks, arrays["discovery_f1"], arrays["discovery_coef"],
                                                  ctx, int(ngram_spec["other_neurons"]), profile, device)}
    arrays = {**arrays, **ng_arrays, "ngram_contexts": ngram_in["contexts"]}
    if "frequent" in ngram_in:
        dla = frequent_token_dla(fwd.w.W_out, fwd.w.W_U, ctx, ngram_in["frequent"])
        row["frequent_token_dla"] = {
            "neuron": str(ctx), "units": "logits per unit of the neuron's activation (final LayerNorm scale 1)",
            "tokens": int(ngram_spec["frequent_token_dla"]["tokens"]),
            **{lang: {"mean": d["mean"], "n_tokens": int(len(d["values"])),
                      "token_ids": [int(i) for i in ngram_in["frequent"][lang]]} for lang, d in dla.items()},
            "difference": dla["german"]["mean"] - dla["english"]["mean"]}
        arrays |= {f"frequent_dla_{lang}": d["values"] for lang, d in dla.items()}
    return row, arrays


def _current_rss() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
