"""The plan of a sweep: every task's spec (plain data that crosses the scheduler) and
cache key, before anything runs; the specs of a `--neuron auto` model's checkpoints once
its anchor names the neuron."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from ...core.errors import UsageError
from ...families.dynamics import PYTHIA_TOKENS_PER_STEP
from . import task
from .args import (
    REVISION_SETS,
    ModelEntry,
    keep_weights_for,
    parse_models,
    parse_revisions,
    pythia_revisions,
    step_of,
)
from .hub import HubRefs, hub_config

DEFAULT_THREADS = 1         # torch threads per task unless --threads (part of every task's key)
DEFAULT_OUT = Path("build") / "sweep"  # float32; other precisions: `default_sweep_out`


@dataclasses.dataclass
class SweepPlan:
    """Everything `run_sweep` needs: the task specs (plain dicts that cross the scheduler),
    their keys, the models, and the settings recorded in `sweep.json`.

    Attributes:
        tasks: one spec per (model, checkpoint) whose key is known, see
            `task.task_inputs`; for `--neuron auto` the specs of a model's other
            checkpoints are made once its anchor (final checkpoint) is measured
            (`deferred`).
        deferred: `{model name: [checkpoint dicts]}` waiting for the model's auto neuron.
    """

    out: Path
    models: list[ModelEntry]
    tasks: list[dict]
    deferred: dict[str, list[dict]]
    settings: dict
    base: dict                  # spec fields shared by every task of a model (by name)
    code: dict
    refs: HubRefs | None = None  # the Hub branches' commits, and their moves

    @property
    def n_total(self) -> int:
        return len(self.tasks) + sum(len(v) for v in self.deferred.values())


def default_sweep_out(dtype: str = "float32", tf32: bool = False) -> Path:
    """`build/sweep` for float32, `build/sweep-bfloat16`, `build/sweep-tf32`, ... otherwise
    (`precision.out_suffix`): a bf16 or TF32 sweep never replaces float32's sweep.json and
    table (its artifacts are keyed apart anyway)."""
    from ...core.precision import out_suffix

    return DEFAULT_OUT.with_name(DEFAULT_OUT.name + out_suffix(dtype, tf32))


def check_sweep_precision(out: Path, dtype: str, tf32: bool) -> None:
    """Refuse a sweep into a folder whose `sweep.json` records another precision: its
    sweep.json, table and report would be replaced.

    Raises:
        UsageError: `out/sweep.json` records another `dtype` or `tf32`.
    """
    from ...core.precision import describe

    try:
        settings = json.loads((Path(out) / "sweep.json").read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no earlier sweep there (or an unreadable one, rewritten as before)
    theirs = (settings.get("dtype") or "float32", bool(settings.get("tf32")))
    if theirs != (dtype, bool(tf32)):
        raise UsageError(f"{out} holds a {describe(*theirs)} sweep; a {describe(dtype, tf32)} sweep would "
                         "replace its sweep.json and table",
                         hint=f"pass another --out (this precision's default is {default_sweep_out(dtype, tf32)})")


def plan_sweep(models: str, revisions: str = "quick", *, neuron: str | None = None,
               profile: str = "quick", overrides: Iterable[str] = (), device: str = "cpu",
               out: str | os.PathLike | None = None, data_dir: str | None = None,
               corpus: str | None = None, batch_tokens: int | None = None,
               threads: int | None = None, keep_weights: str = "auto", dtype: str = "float32",
               tf32: str | bool = "off", paper_dir: str | os.PathLike | None = None,
               log: Callable[[str], None] = lambda s: None) -> SweepPlan:
    """Validate the request and plan every task (see the module docstring). Nothing is
    downloaded here but, online, a Pythia model's config.json when it is not cached.

    `paper_dir`: the authors' folder (`core.paper`, already resolved); a model that is
    `EleutherAI/pythia-70m` itself then measures the paper's 228 trigrams at every revision
    (`ngram_params`), any other model (or without the folder) trigrams chosen from the text.

    Raises:
        UsageError: bad `--models`, `--revisions`, `--neuron` (malformed, or outside a
            model whose config.json is known), `--profile`/`--set`, `--corpus`,
            `--keep-weights`, `--batch-tokens`, `--threads`, `--device`, `--dtype` (float32 or
            bfloat16) or `--tf32` (on or off).
        DataError: a data file is missing or has the wrong checksum.
    """
    from ...core.codehash import code_record
    from ...core.config import Neuron, get_profile
    from ...core.data import CORPORA, load_corpus
    from ...core.models import PYTHIA_REPO
    from ...core.paper import is_real_pythia_70m

    if device not in ("cpu", "cuda") and not re.fullmatch(r"cuda:\d+", device):
        raise UsageError(f"unknown device {device!r}; choose cpu or cuda")
    from ...core.precision import parse_dtype, parse_tf32, precision_note, tf32_effective

    dtype, tf32 = parse_dtype(dtype), parse_tf32(tf32)
    if keep_weights not in ("auto", "yes", "no"):
        raise UsageError(f"--keep-weights {keep_weights!r}: choose auto, yes or no")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads {threads}: must be at least 1")
    # In the key: 1 and 2 torch threads give different bytes (measured on CPU: the probes'
    # coefficients, tests/test_sweep.py), so the default is fixed rather than sized to the
    # machine, and a rerun elsewhere or with another scheduler reuses what it can.
    threads = DEFAULT_THREADS if threads is None else threads
    prof = get_profile(profile).with_overrides(list(overrides))
    if batch_tokens is not None:
        if batch_tokens < 64:
            raise UsageError(f"--batch-tokens {batch_tokens}: must be at least 64")
        prof = dataclasses.replace(prof, batch_tokens=batch_tokens)
    auto = neuron is not None and neuron.strip().lower() == "auto"
    given = None if neuron is None or auto else Neuron.parse(neuron)
    rev_choice = parse_revisions(revisions)
    entries = parse_models(models)
    if corpus is not None and corpus not in CORPORA:
        raise UsageError(f"unknown corpus set {corpus!r}; choose one of: {', '.join(CORPORA)}")
    out = Path(out) if out else default_sweep_out(dtype, tf32)
    check_sweep_precision(out, dtype, tf32)
    refs_dir = out / "refs"
    data_dir = str(Path(data_dir).expanduser().resolve()) if data_dir else None

    hub_refs = HubRefs(refs_dir, log)
    corpora: dict[str, dict] = {}
    base: dict[str, dict] = {}
    tasks: list[dict] = []
    deferred: dict[str, list[dict]] = {}
    code = code_record(task.__name__)
    for e in entries:
        if e.kind == "hub":
            revs = pythia_revisions(rev_choice)
            e.checkpoints = [{"revision": r, "step": step_of(r), "train_loss": None,
                              "tokens_seen": step_of(r) * PYTHIA_TOKENS_PER_STEP} for r in revs]
            e.config = hub_config(e.repo, revs[-1])
        series = list(e.checkpoints)  # an organism's whole run (the auto anchor is its final)
        if e.kind == "organism" and rev_choice not in REVISION_SETS:
            have = {c["revision"]: c for c in e.checkpoints}
            e.checkpoints = [have[r] for r in rev_choice if r in have]
            for r in rev_choice:
                if r not in have:
                    log(f"  {e.name}: no saved checkpoint {r}; not swept")
            if not e.checkpoints:
                raise UsageError(f"the organism run has none of the checkpoints {', '.join(rev_choice)}",
                                 hint=f"its checkpoints: {', '.join(c['revision'] for c in have.values())}")
        e_neuron = given if given is not None else (
            None if auto or e.repo != PYTHIA_REPO else Neuron.parse("L3N669"))
        shape = _known_shape(e)
        if e_neuron is not None and shape is not None:
            try:
                e_neuron.check(*shape)
            except UsageError as exc:
                raise UsageError(f"{e.name}: {exc}") from None
        cname = corpus or ("europarl-heldout" if e.kind == "organism" else "seed")
        if cname not in corpora:
            corpora[cname] = {lang: load_corpus(name, data_dir) for lang, name in CORPORA[cname].items()}
        data = {lang: c.provenance() for lang, c in corpora[cname].items()}
        params = {
            "measurement": "analysis.families.dynamics.measure_checkpoint",
            "context_neuron": "auto" if e_neuron is None else str(e_neuron),
            "context_neuron_source": "given" if e_neuron is not None else "auto: this checkpoint's best",
            "activation_examples": prof.activation_examples, "loss_examples": prof.loss_examples,
            "crop": [prof.crop_start, prof.crop_end], "n_per_language": prof.probe_samples,
            "test_size": prof.probe_test_size, "split_seed": prof.seed,
            "batch_tokens": prof.batch_tokens, "threads": threads, "dtype": dtype, "tf32": tf32,
            "ablation": "mean (English mean at that checkpoint, hook_post)",
            "ngrams": ngram_params(prof, paper_dir if is_real_pythia_70m(e.source, e.kind) else None),
        }
        base[e.name] = {
            "model": e.name, "kind": "hub" if e.kind == "hub" else "folder", "repo": e.repo,
            "corpus": dict(CORPORA[cname]), "data_dir": data_dir, "data": data, "params": params,
            "seed": prof.seed, "device": device, "upstream": {},
            "profile": {"name": prof.name, "label": prof.label, "overrides": dict(prof.overrides),
                        "sizes": prof.sizes(), "batch_tokens": prof.batch_tokens},
            # relative to the sweep's folder, which a worker may see elsewhere (task.OUT_ENV)
            "out": str(out.resolve()), "store": "store", "refs": "refs", "threads": threads,
            "keep_weights": keep_weights_for(e, keep_weights),
        }
        cks = list(e.checkpoints)
        known, missing, moved = ({}, {}, {})
        if e.kind == "hub":
            need = [c["revision"] for c in cks]
            if e_neuron is None and e.final not in need:
                need.append(e.final)
            known, missing, moved = hub_refs.resolve(e.repo, need)
        if e_neuron is None:  # --neuron auto: anchor on the model's final checkpoint
            final = next((c for c in cks if c["revision"] == e.final), None)
            if final is None:
                final = next((c for c in series if c["revision"] == e.final), None) or {
                    "revision": e.final, "step": step_of(e.final), "train_loss": None,
                    "tokens_seen": step_of(e.final) * PYTHIA_TOKENS_PER_STEP}
                cks.append(final)
                log(f"  {e.name}: --neuron auto anchors on the final checkpoint {e.final}; added to the sweep")
            tasks.append(_spec(base[e.name], final, known, missing, code, anchor=True, moved=moved))
            deferred[e.name] = [c for c in cks if c is not final]
        else:
            tasks += [_spec(base[e.name], c, known, missing, code, moved=moved) for c in cks]
    settings = {
        "models": [{"name": e.name, "kind": e.kind, "source": e.source, "size": e.size,
                    "deduped": e.deduped, "final": e.final, "pythia": e.pythia,
                    "shape": None if e.config is None else {
                        k: e.config.get(k) for k in ("num_hidden_layers", "hidden_size", "intermediate_size",
                                                     "num_attention_heads", "vocab_size")},
                    "neuron": base[e.name]["params"]["context_neuron"],
                    "keep_weights": base[e.name]["keep_weights"],
                    "corpus": base[e.name]["corpus"], "data": base[e.name]["data"]} for e in entries],
        "revisions": rev_choice, "profile": base[entries[0].name]["profile"],
        "device": device, "dtype": dtype, "tf32": tf32,
        "tf32_effective": tf32_effective(dtype, tf32, device),
        "precision_note": precision_note(dtype, tf32, device), "threads": threads, "data_dir": data_dir,
    }
    return SweepPlan(out=out, models=entries, tasks=tasks, deferred=deferred, settings=settings,
                     base=base, code=code, refs=hub_refs)


def ngram_params(prof, paper_dir: str | os.PathLike | None) -> dict:
    """The n-gram part of a task's parameters (in its key; `families.ngram_dynamics`): the
    sizes it reads from the profile (`ngram_examples`, `ngram_prompts`, `ngram_trigrams`,
    and `null_german_neurons` for the other German neurons), the prompts' shape, the
    frequent-token DLA's token count and counting rule (`frequent_token_dla`, the paper's
    figure 7: `ngram_dynamics.DLA_TOKENS` per language), and the trigrams: `{"kind": "paper", "file", "sha256", "n", "strings"}` (the authors' list,
    sha256-verified, its strings carried to the worker) when `paper_dir` is given, else
    `{"kind": "selected", "n", "rule"}`.

    Raises:
        DataError: the authors' trigram file is missing or changed.
    """
    from ...core import paper as ref
    from ...families.ngrams import COMMON_TOKENS, CONTEXT_LENGTH

    if paper_dir is not None:
        strings = ref.read_trigrams(paper_dir)
        digest = ref.verify(paper_dir, (ref.TRIGRAM_LIST,))[ref.TRIGRAM_LIST]
        source = {"kind": "paper", "file": ref.TRIGRAM_LIST, "sha256": digest, "n": len(strings),
                  "strings": strings}
    else:
        source = {"kind": "selected", "n": prof.ngram_trigrams,
                  "rule": "the most frequent trigrams of letter tokens in the German text that never "
                          "occur in the English text (families.ngram_dynamics.text_trigrams)"}
    from ...families.ngram_dynamics import DLA_TOKENS

    return {"measurement": "analysis.families.ngram_dynamics", "examples": prof.ngram_examples,
            "prompts": prof.ngram_prompts, "context_length": CONTEXT_LENGTH, "common_tokens": COMMON_TOKENS,
            "other_neurons": prof.null_german_neurons, "trigrams": source,
            "frequent_token_dla": {
                "tokens": DLA_TOKENS, "measurement": "analysis.families.ngram_dynamics.frequent_token_dla",
                "definition": "W_out[context neuron] @ W_U (logits per unit activation, final LayerNorm "
                              "scale 1), mean over each language's most frequent tokens (Quirke et al. "
                              "figure 7)",
                "count": "occurrences over every example of each language's data, BOS excluded, tokens "
                         "holding a letter (families.ngrams.common_tokens)"}}


def _known_shape(e: ModelEntry) -> tuple[int, int] | None:
    """(layers, d_mlp) of a model before any task: its config.json when read, else, for a
    Pythia model offline with nothing cached, the registry's table (`models.pythia_shape`)."""
    from ...core.models import pythia_shape

    if e.config is not None:
        return int(e.config["num_hidden_layers"]), int(e.config["intermediate_size"])
    shape = pythia_shape(e.repo) if e.kind == "hub" else None
    return None if shape is None else (shape["n_layers"], shape["d_mlp"])


def _spec(base: dict, ck: dict, known: dict, missing: dict, code: dict, anchor: bool = False,
          neuron: str | None = None, upstream: dict | None = None, source: str | None = None,
          moved: dict | None = None) -> dict:
    """A task spec (see `task.task_inputs`) with its key."""
    from ...core.models import _fingerprint_dir
    from .task import task_inputs

    spec = {**base, "revision": ck["revision"], "step": ck.get("step"), "tokens_seen": ck.get("tokens_seen"),
            "train_loss": ck.get("train_loss"), "anchor": anchor, "params": dict(base["params"])}
    if neuron is not None:
        spec["params"]["context_neuron"] = neuron
        spec["params"]["context_neuron_source"] = source
        spec["upstream"] = upstream or {}
    if base["kind"] == "hub":
        spec["commit"] = known.get(ck["revision"])
        spec["commit_moved_from"] = (moved or {}).get(ck["revision"])
        if ck["revision"] in missing:
            spec["skip_reason"] = missing[ck["revision"]]
    else:
        spec["path"] = ck["path"]
        spec["fingerprint"] = _fingerprint_dir(Path(ck["path"]))
    spec["key"] = task_inputs(spec, code=code).key()
    return spec


def dependent_specs(plan: SweepPlan, model: str, anchor_art: dict, anchor_spec: dict) -> list[dict]:
    """The specs of a `--neuron auto` model's other checkpoints, once its anchor's artifact
    names the neuron (the best German-positive neuron of discovery at the final
    checkpoint); the anchor's key is their upstream."""
    cks = plan.deferred.pop(model, [])
    if not cks:
        return []
    base = plan.base[model]
    neuron = anchor_art["result"]["context"]["neuron"]
    known, missing, moved = {}, {}, {}
    if base["kind"] == "hub":
        if plan.refs is None:
            plan.refs = HubRefs(plan.out / "refs")
        known, missing, moved = plan.refs.resolve(base["repo"], [c["revision"] for c in cks])
        plan.refs.write()
    src = f"auto: best neuron of discovery at {anchor_spec['revision']}"
    return [_spec(base, c, known, missing, plan.code, neuron=neuron,
                  upstream={"anchor": anchor_art["key"]}, source=src, moved=moved) for c in cks]
