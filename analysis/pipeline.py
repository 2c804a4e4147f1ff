"""The analysis DAG of one report run: steps cached by content hash, figures, report.

    data ─┬─> activations ─┬─> probes
          │                └─> ablation
    model ┘
    (artifacts) ──> figures ──> report (notebook → HTML, PDF)

Each step is a pure compute function (model, tokens, parameters → result, arrays) wrapped
by `_step`, which derives the step's cache key (`StepInputs.key`), reuses a valid artifact
with that key, or computes and writes a new one atomically.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import ablation as ablation_mod
from . import activations as activations_mod
from . import probes as probes_mod
from .artifacts import ArtifactStore, StepInputs, module_hash
from .config import GERMAN_NEURONS, Neuron, RunConfig
from .data import CORPORA, Corpus, load_corpus
from .engine import Forward, Weights, make_batches, per_example_losses
from .errors import ReportError, UsageError
from .models import PYTHIA_70M_SHAPE, TINY_SHAPE, LoadedModel, check_checkpoint_dir, load_model

SEED_REFERENCE = Path(__file__).resolve().parent / "seed_reference.json"


def model_shape(name: str) -> tuple[int, int]:
    """(n_layers, d_mlp) of a model, read without loading weights (to validate neurons
    before any compute)."""
    if name in ("pythia-70m", "pythia-70m-random"):
        return PYTHIA_70M_SHAPE["num_hidden_layers"], PYTHIA_70M_SHAPE["intermediate_size"]
    if name == "tiny":
        return TINY_SHAPE["num_hidden_layers"], TINY_SHAPE["intermediate_size"]
    cfg = check_checkpoint_dir(Path(name).expanduser().resolve())
    return int(cfg["num_hidden_layers"]), int(cfg["intermediate_size"])


@dataclass
class Run:
    """State shared by the steps of one run."""

    cfg: RunConfig
    model: LoadedModel
    fwd: Forward
    corpora: dict[str, Corpus]
    store: ArtifactStore
    studied: tuple[Neuron, ...]
    log: Callable[[str], None]
    show_progress: bool = True

    def tokens(self, language: str, n: int) -> tuple[list[list[int]], dict]:
        """Token ids of the first `n` examples (BOS prepended, truncated to the context),
        and what was truncated or skipped (examples with no next-token target)."""
        ex = self.corpora[language].examples[:n]
        toks, skipped, truncated = [], 0, 0
        for text in ex:
            t = self.model.to_tokens(text)
            if len(t) < 2:
                skipped += 1
                continue
            if len(t) == self.model.n_ctx:
                truncated += 1
            toks.append(t)
        if not toks:
            raise ReportError(f"no usable {language} example among the first {n}")
        return toks, {"requested": n, "available": len(ex), "used": len(toks),
                      "skipped_empty": skipped, "truncated_to_n_ctx": truncated}

    def batches(self, toks):
        return make_batches(toks, self.cfg.profile.batch_tokens, pad_id=1, device=self.cfg.device)

    def data_prov(self, *languages: str) -> dict:
        return {lang: self.corpora[lang].provenance() for lang in languages}

    def inputs(self, step: str, module, params: dict, data: dict, upstream: dict) -> StepInputs:
        return StepInputs(step=step, code={"module": module.__name__, "sha256": module_hash(module)},
                          model=self.model.info, data=data, params=params,
                          seed=self.cfg.profile.seed, upstream=upstream, device=self.cfg.device)


def _step(run: Run, inputs: StepInputs, compute: Callable[[], tuple[dict, dict]]) -> dict:
    key = inputs.key()
    cached = run.store.load_valid(inputs.step, key)
    if cached is not None:
        run.log(f"  {inputs.step}: cached ({key[:12]}), not recomputed")
        return cached
    t0 = time.perf_counter()
    result, arrays = compute()
    wall = time.perf_counter() - t0
    art = run.store.save(inputs, result, wall, arrays or None)
    run.log(f"  {inputs.step}: computed in {wall:.1f} s ({key[:12]})")
    return art


# ---------------------------------------------------------------- steps


def step_activations(run: Run) -> dict:
    p = run.cfg.profile
    neurons = list(dict.fromkeys([*run.studied, run.cfg.neuron]))
    layers = sorted({n.layer for n in neurons})
    toks = {lang: run.tokens(lang, p.activation_examples) for lang in ("german", "english")}
    params = {"examples_per_language": p.activation_examples, "crop": [p.crop_start, p.crop_end],
              "hook": "mlp.hook_post", "layers": layers, "neurons": [str(n) for n in neurons],
              "context_neuron": str(run.cfg.neuron),
              "tokens": {lang: toks[lang][1] for lang in toks}}

    def compute():
        samples, means, counts = {}, {}, {}
        for lang in ("german", "english"):
            s, m, c = activations_mod.collect_mlp_activations(
                run.fwd, run.batches(toks[lang][0]), layers, neurons, (p.crop_start, p.crop_end),
                desc=f"activations {lang}", show_progress=run.show_progress)
            samples[lang], means[lang], counts[lang] = s, m, c
        if min(counts.values()) == 0:
            raise ReportError("no activation was collected: every example is shorter than the "
                              f"crop start ({p.crop_start} tokens)")
        col = {str(n): i for i, n in enumerate(neurons)}
        ctx = str(run.cfg.neuron)
        result = {
            "context_neuron": ctx, "neurons": [str(n) for n in neurons], "layers": layers,
            "hook": "mlp.hook_post", "crop": [p.crop_start, p.crop_end],
            "n_examples": {lang: toks[lang][1]["used"] for lang in toks},
            "n_activations": counts,
            "context_mean_active": float(samples["german"][:, col[ctx]].mean()),
            "context_mean_inactive": float(samples["english"][:, col[ctx]].mean()),
            "german_means": {n: float(samples["german"][:, i].mean()) for n, i in col.items()},
            "english_means": {n: float(samples["english"][:, i].mean()) for n, i in col.items()},
        }
        arrays = {"german": samples["german"], "english": samples["english"]}
        for lang in ("german", "english"):
            for layer, m in means[lang].items():
                arrays[f"layer{layer}_mean_{lang}"] = m.astype(np.float64)
        return result, arrays

    inputs = run.inputs("activations", activations_mod, params, run.data_prov("german", "english"), {})
    return _step(run, inputs, compute)


def step_probes(run: Run, acts: dict) -> dict:
    p = run.cfg.profile
    params = {"n_per_language": p.probe_samples, "test_size": p.probe_test_size,
              "split_seed": p.seed, "neurons": [str(n) for n in run.studied],
              "classifier": "sklearn LogisticRegression() defaults", "positive_class": "german"}

    def compute():
        de = run.store.load_array("activations", "german")
        en = run.store.load_array("activations", "english")
        col = {n: i for i, n in enumerate(acts["result"]["neurons"])}
        rows = []
        for n in run.studied:
            i = col[str(n)]
            r = probes_mod.single_neuron_probe(de[:, i], en[:, i], p.probe_samples,
                                               p.probe_test_size, p.seed)
            rows.append({"neuron": str(n), "layer": n.layer, "index": n.index, **r,
                         "mean_english": float(en[:, i].mean()), "mean_german": float(de[:, i].mean())})
        return {"neurons": [str(n) for n in run.studied], "n_per_language": p.probe_samples,
                "test_size": p.probe_test_size, "split_seed": p.seed, "rows": rows}, {}

    inputs = run.inputs("probes", probes_mod, params, run.data_prov("german", "english"),
                        {"activations": acts["key"]})
    return _step(run, inputs, compute)


def step_ablation(run: Run, acts: dict) -> dict:
    p = run.cfg.profile
    ctx = run.cfg.neuron
    toks = {lang: run.tokens(lang, p.loss_examples) for lang in ("german", "english")}
    params = {"examples_per_language": p.loss_examples, "context_neuron": str(ctx),
              "neurons": [str(n) for n in run.studied], "ablation": "mean (English mean, hook_post)",
              "tokens": {lang: toks[lang][1] for lang in toks}}

    def compute():
        res = acts["result"]
        values = res["english_means"]
        layer_means = {layer: run.store.load_array("activations", f"layer{layer}_mean_english")
                       for layer in res["layers"]}
        single = ablation_mod.single_neuron_variants(list(dict.fromkeys([*run.studied, ctx])), values)
        variants = dict(single)
        rest = [n for n in run.studied if n != ctx]
        if rest:
            for k, v in ablation_mod.all_except_context_variants(run.studied, ctx, values, layer_means).items():
                variants[f"all_except_context:{k}"] = v
        losses = {lang: per_example_losses(run.fwd, run.batches(toks[lang][0]), variants,
                                           desc=f"losses {lang}", show_progress=run.show_progress)
                  for lang in ("german", "english")}

        def summary(name):
            return {lang: ablation_mod.loss_summary(losses[lang]["original"], losses[lang][name])
                    for lang in ("german", "english")}

        result = {
            "n_examples": {lang: toks[lang][1]["used"] for lang in toks},
            "loss_definition": "mean over examples of the per-example mean next-token "
                               "cross-entropy (nats), BOS prepended",
            "context": {"neuron": str(ctx), "value": values[str(ctx)], **summary(str(ctx))},
            "single": [{"neuron": str(n), "value": values[str(n)], **summary(str(n))}
                       for n in run.studied],
        }
        if rest:
            result["all_except_context"] = {
                "intended": {"description": "each listed neuron except the context neuron set to "
                                            "its own English mean, in its own layer",
                             "neurons": [str(n) for n in rest],
                             **summary("all_except_context:intended")},
                "seed_literal": {"description": "the seed's hook as written: `layer == layer` is "
                                                "always true, so all listed indices are set in both "
                                                "layers to one scalar (the mean English activation "
                                                "over those indices in that layer)",
                                 "neurons": [str(n) for n in rest],
                                 **summary("all_except_context:seed_literal")},
            }
        names = list(losses["german"])
        result["per_example_losses"] = {"rows": names, "arrays": ["losses_german", "losses_english"]}
        arrays = {f"losses_{lang}": np.stack([losses[lang][k] for k in names]).astype(np.float64)
                  for lang in losses}
        return result, arrays

    inputs = run.inputs("ablation", ablation_mod, params, run.data_prov("german", "english"),
                        {"activations": acts["key"]})
    return _step(run, inputs, compute)


# ---------------------------------------------------------------- figures


def make_figures(run: Run, arts: dict[str, dict], fig_dir: Path) -> list[dict]:
    import figures.plots as plots

    out = []
    acts = arts["activations"]
    de = run.store.load_array("activations", "german")
    en = run.store.load_array("activations", "english")
    neurons = acts["result"]["neurons"]
    ctx = acts["result"]["context_neuron"]
    order = [ctx] + [n for n in neurons if n != ctx]
    for n in order:
        i = neurons.index(n)
        fig = plots.activation_histogram(en[:, i], de[:, i], n)
        out.append(plots.save(fig, fig_dir, f"activation_hist_{n}", {
            "step": "activations", "artifact_key": acts["key"],
            "function": "figures.plots.activation_histogram",
            "caption": f"{n} activations (blocks.{Neuron.parse(n).layer}.mlp.hook_post, positions "
                       f"{acts['result']['crop'][0]}–{acts['result']['crop'][1]}) on English vs German text.",
            "seed_cell": "Check classification accuracy of German neurons (two_histogram)",
            "neuron": n,
        }))
    abl = arts["ablation"]
    fig = plots.ablation_bar(abl["result"]["single"])
    out.append(plots.save(fig, fig_dir, "ablation_loss_increase", {
        "step": "ablation", "artifact_key": abl["key"], "function": "figures.plots.ablation_bar",
        "caption": "Loss increase (%) when each neuron is mean-ablated (set to its English mean), "
                   "on German and on English text.",
        "seed_cell": "Check loss increase from disabling each German neuron on German data",
    }))
    return out


# ---------------------------------------------------------------- entry point


def resolve_studied(n_layers: int, d_mlp: int, log) -> tuple[Neuron, ...]:
    """The seed's German neurons that exist in this model (all of them for Pythia's shape)."""
    keep = tuple(n for n in GERMAN_NEURONS if n.layer < n_layers and n.index < d_mlp)
    dropped = [str(n) for n in GERMAN_NEURONS if n not in keep]
    if dropped:
        log(f"  note: the seed's neurons {', '.join(dropped)} do not exist in this model; skipped")
    return keep


def default_out(model: str) -> Path:
    from .models import model_slug

    return Path("build") / model_slug(model)


def run_report(cfg: RunConfig, *, render: bool = True, renderer: str = "auto",
               show_progress: bool | None = None, log: Callable[[str], None] | None = None,
               corpus: str = "seed", command: str = "") -> dict:
    """Compute (or reuse) every artifact, draw the figures and build the report.

    Returns {"out": Path, "artifacts": {...}, "figures": [...], "report": {...} | None}.

    Raises:
        UsageError / DataError / ModelUnavailableError: bad input, before any compute where
            the input can be checked without the model.
        ReportError: another run holds the output folder's lock.
    """
    from filelock import FileLock, Timeout

    log = log or (lambda s: print(s, file=sys.stderr))
    show_progress = sys.stderr.isatty() if show_progress is None else show_progress
    if corpus not in CORPORA:
        raise UsageError(f"unknown corpus set {corpus!r}; choose one of: {', '.join(CORPORA)}")
    n_layers, d_mlp = model_shape(cfg.model)
    cfg.neuron.check(n_layers, d_mlp)
    out = Path(cfg.out) if cfg.out else default_out(cfg.model)
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ReportError(f"another run is writing to {out} (lock {out / '.lock'})",
                          hint="wait for it to finish, or pass a different --out") from None
    try:
        t0 = time.perf_counter()
        corpora = {lang: load_corpus(name, cfg.data_dir) for lang, name in CORPORA[corpus].items()
                   if lang in ("german", "english")}
        log(f"Loading {cfg.model} on {cfg.device} ...")
        model = load_model(cfg.model, cfg.tokenizer, cfg.device, cfg.profile.seed)
        weights = Weights.from_bridge(model.bridge, model.info["rotary_pct"])
        studied = resolve_studied(n_layers, d_mlp, log)
        run = Run(cfg, model, Forward(weights), corpora, ArtifactStore(out / "artifacts"),
                  studied, log, show_progress)
        log(f"Steps (profile {cfg.profile.name}) -> {out}/artifacts")
        arts = {"activations": step_activations(run)}
        arts["probes"] = step_probes(run, arts["activations"])
        arts["ablation"] = step_ablation(run, arts["activations"])
        figs = make_figures(run, arts, out / "figures")
        context = {
            "title": f"The German context neuron {cfg.neuron} in {model.model_id}",
            "run": {
                "model_id": model.model_id, "model_source": model.info.get("source"),
                "revision": model.info.get("revision"), "fingerprint": model.info.get("fingerprint"),
                "is_pythia": model.model_id == "pythia-70m", "neuron": str(cfg.neuron),
                "profile": cfg.profile.name, "sizes": cfg.profile.sizes(), "device": cfg.device,
                "corpus": corpus, "command": command,
                "created": arts["ablation"]["created"],
            },
            "artifacts": arts,
            "figures": figs,
            "seed": json.loads(SEED_REFERENCE.read_text()) if model.model_id == "pythia-70m" else None,
        }
        report = None
        if render:
            from report.build import build_report

            log("Rendering report ...")
            report = build_report(out, context, renderer=renderer)
        log(f"Done in {time.perf_counter() - t0:.1f} s: {out}")
        return {"out": out, "artifacts": arts, "figures": figs, "report": report, "context": context}
    finally:
        lock.release()
