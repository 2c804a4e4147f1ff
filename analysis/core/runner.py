"""The state one report run shares between its steps, and the cached-step mechanism.

A step is a function `fn(run, arts) -> artifact` registered as a `StepSpec` in
`analysis.orchestration.pipeline.STEPS`. Inside it, the step's compute function (pure: model, tokens,
parameters -> result, arrays) is wrapped by `run.step(...)`, which derives the cache key
from the step's inputs, reuses a valid artifact with that key, or computes and writes a
new artifact atomically. Figures are drawn by the spec's `figures(run, arts, fig_dir)`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from .artifacts import ArtifactStore, StepInputs
from .codehash import code_record
from .config import GERMAN_NEURONS, Neuron, RunConfig
from .data import CORPORA, Corpus, load_corpus
from .engine import Batch, Forward, Weights, make_batches
from .errors import ReportError
from .models import LoadedModel, load_model

LANGUAGES = ("german", "english")


@dataclass
class Run:
    """What the steps of one run share: config, model, engine, corpora, artifact store."""

    cfg: RunConfig
    model: LoadedModel
    fwd: Forward
    corpora: dict[str, Corpus]
    store: ArtifactStore
    studied: tuple[Neuron, ...]
    log: Callable[[str], None]
    show_progress: bool = True
    data_dir: str | None = None
    corpus: str | None = None  # the corpus set (`seed`, `fixture`, ...), recorded in provenance
    _token_cache: dict = field(default_factory=dict)
    # Highest resident memory seen so far (bytes): each computed step resets the kernel's
    # high-water mark to read its own peak, so the whole run's peak is kept here.
    peak_rss: int = 0

    @property
    def profile(self):
        return self.cfg.profile

    @property
    def context(self) -> Neuron:
        return self.cfg.neuron

    def tokens(self, language: str, n: int | None) -> tuple[list[list[int]], dict]:
        """Token ids of the first `n` examples (all if None) of a language's corpus (BOS
        prepended, truncated to the context), and a record of what was used, truncated or
        skipped (examples with no next-token target)."""
        key = (language, n)
        if key not in self._token_cache:
            self._token_cache[key] = tokenize_examples(self.model, self.corpora[language].examples,
                                                       n, language)
        return self._token_cache[key]

    def note_peak_rss(self) -> int:
        """Fold the current high-water mark into `peak_rss`; returns the run's peak (bytes)."""
        self.peak_rss = max(self.peak_rss, peak_rss_bytes() or 0)
        return self.peak_rss

    def batches(self, toks: Sequence[Sequence[int]]) -> list[Batch]:
        return make_batches(toks, self.cfg.profile.batch_tokens, pad_id=1, device=self.cfg.device)

    def data_prov(self, *languages: str) -> dict:
        return {lang: self.corpora[lang].provenance() for lang in languages}

    def configuration(self) -> dict:
        """What defines this run's numbers beyond the model, the data and the seed (all
        three in every artifact's provenance): recorded as `provenance.run` of each artifact
        (outside the key) and read by the regression check (`regression.run_configuration`).
        `context_neuron` is `auto` until neuron discovery has resolved it."""
        p = self.cfg.profile
        return {"context_neuron": str(self.cfg.neuron) if self.cfg.neuron is not None else "auto",
                "corpus": self.corpus, "profile": p.name, "profile_label": p.label,
                "overrides": dict(p.overrides), "sizes": p.sizes()}

    def inputs(self, step: str, module: ModuleType, params: dict, data: dict,
               upstream: dict) -> StepInputs:
        return StepInputs(step=step, code=code_record(module.__name__),
                          model=self.model.info, data=data, params=params,
                          seed=self.cfg.profile.seed, upstream=upstream, device=self.cfg.device,
                          run=self.configuration())

    def step(self, inputs: StepInputs, compute: Callable[[], tuple[dict, dict]]) -> dict:
        """Reuse the artifact of `inputs.step` if its key matches and it is intact, else
        run `compute() -> (result, arrays)` and write the artifact atomically."""
        key = inputs.key()
        cached = self.store.load_valid(inputs.step, key)
        if cached is not None:
            self.log(f"  {inputs.step}: cached ({key[:12]}), not recomputed")
            if inputs.run is not None and cached["provenance"].get("run") != inputs.run:
                # reused by another configuration (e.g. another context neuron, which this
                # step does not depend on): the record names the run that now uses it
                cached = self.store.refresh_run(cached, inputs.run)
            return cached
        t0 = time.perf_counter()
        fwd0 = (self.fwd.tokens_forwarded, self.fwd.unembedded_rows) if self.fwd else (0, 0)
        self.note_peak_rss()
        reset_peak_rss()
        result, arrays = compute()
        wall = time.perf_counter() - t0
        cost = {"tokens_forwarded": (self.fwd.tokens_forwarded - fwd0[0]) if self.fwd else 0,
                "unembedded_rows": (self.fwd.unembedded_rows - fwd0[1]) if self.fwd else 0,
                "peak_rss_bytes": peak_rss_bytes()}
        self.note_peak_rss()
        art = self.store.save(inputs, result, wall, arrays or None, cost)
        self.log(f"  {inputs.step}: computed in {wall:.1f} s ({key[:12]})")
        return art


def tokenize_examples(model: LoadedModel, examples: Sequence[str], n: int | None,
                      language: str = "") -> tuple[list[list[int]], dict]:
    """Token ids (`model.to_tokens`: BOS prepended, truncated to the context) of the first
    `n` examples (all if None), without those that have no next-token target, and a record
    `{"requested", "available", "used", "skipped_empty", "truncated_to_n_ctx"}`. The one
    tokenisation of the report's steps (`Run.tokens`) and of a sweep's tasks.

    Raises:
        ReportError: none of the examples is usable.
    """
    ex = examples if n is None else examples[:n]
    toks, skipped, truncated = [], 0, 0
    for text in ex:
        t = model.to_tokens(text)
        if len(t) < 2:
            skipped += 1
            continue
        if len(t) == model.n_ctx:
            truncated += 1
        toks.append(t)
    if not toks:
        raise ReportError(f"no usable {language} example among the first {n}")
    rec = {"requested": n if n is not None else len(ex), "available": len(ex), "used": len(toks),
           "skipped_empty": skipped, "truncated_to_n_ctx": truncated}
    return toks, rec


def resolve_studied(n_layers: int, d_mlp: int, log,
                    neurons: tuple[Neuron, ...] = GERMAN_NEURONS) -> tuple[Neuron, ...]:
    """The listed neurons (`RunConfig.studied`: the seed's German neurons unless a caller
    narrows it) that exist in this model (all of them for Pythia's shape)."""
    keep = tuple(n for n in neurons if n.layer < n_layers and n.index < d_mlp)
    dropped = [str(n) for n in neurons if n not in keep]
    if dropped:
        log(f"  note: the seed's neurons {', '.join(dropped)} do not exist in this model; skipped")
    return keep


def open_run(cfg: RunConfig, corpus: str, artifacts_dir: Path, log: Callable[[str], None],
             show_progress: bool = False) -> Run:
    """Load the corpora and the model and assemble the `Run` the steps share.

    It lives here, not in the pipeline, because everything it does (tokeniser, corpora,
    weights, studied neurons) shapes every step's result: the cache key of every step
    covers this module's import closure (`codehash.RUN_CONTEXT`).

    Precision (`cfg.dtype`, `cfg.tf32`): the model is loaded in float32 either way; the
    engine's weights are then cast for the forward (`engine.Forward`), and the precision's
    record (`precision.record`: dtype, matmul mode, TF32 requested and effective) is merged
    into `model.info`, so every step's cache key and provenance carry it.

    Studied neurons: the seed's German neurons that exist in the model, plus, for
    `pythia-70m-planted`, the planted neuron (so that its probe and ablation rows exist
    whatever `--neuron` says and whatever discovery finds).

    Raises:
        DataError: a corpus file is missing or does not match its checksum.
        UsageError / ModelUnavailableError: see `models.load_model`; a dtype
            `precision.parse_dtype` refuses.
    """
    from .precision import record as precision_record

    prec = precision_record(cfg.dtype, cfg.tf32, cfg.device)  # refuses a bad dtype before loading
    corpora = {lang: load_corpus(name, cfg.data_dir) for lang, name in CORPORA[corpus].items()}
    log(f"Loading {cfg.model} on {cfg.device} ...")
    model = load_model(cfg.model, cfg.tokenizer, cfg.device, cfg.profile.seed,
                       plant=cfg.plant, data_dir=cfg.data_dir)
    model.info = {**model.info, **prec}
    weights = Weights.from_bridge(model.bridge, model.info["rotary_pct"])
    studied = resolve_studied(model.info["n_layers"], model.info["d_mlp"], log, tuple(cfg.studied))
    if model.info.get("plant"):  # the known-answer control: the planted neuron is always studied
        planted = Neuron.parse(model.info["plant"]["neuron"])
        if planted not in studied:
            studied = (*studied, planted)
    return Run(cfg, model, Forward(weights, cfg.dtype), corpora, ArtifactStore(artifacts_dir),
               studied, log, show_progress, data_dir=cfg.data_dir, corpus=corpus)


def reset_peak_rss() -> bool:
    """Reset this process's resident-memory high-water mark (Linux `clear_refs` 5), so
    that each step's peak can be read; False where the platform cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    """Resident-memory high-water mark (bytes) since the last reset (Linux `VmHWM`), else
    the process's lifetime peak from `getrusage`, else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    except (ImportError, OSError):
        return None


@dataclass(frozen=True)
class StepSpec:
    """A node of the analysis DAG.

    Attributes:
        name: the step (and artifact file) name.
        run: `fn(run, arts) -> artifact`; `arts` holds the artifacts of earlier steps.
        deps: steps whose artifacts `run` reads (must come earlier in `STEPS`).
        figures: optional `fn(run, arts, fig_dir) -> [figure records]`.
        when: optional predicate on the run (e.g. only when a corpus exists).
    """

    name: str
    run: Callable[[Run, dict], dict]
    deps: tuple[str, ...] = ()
    figures: Callable[[Run, dict, Path], list[dict]] | None = None
    when: Callable[[Run], bool] | None = None
