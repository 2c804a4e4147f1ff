"""Regression checks: the numbers of a run against a committed baseline.

A maintainer who upgrades torch, transformers or TransformerLens reruns the report and
wants to know which number moved. `flatten_metrics` turns the artifacts into named scalars
(`probes.L3N669.f1`, `ablation.context.german.percent_increase`, ...); `compare` puts each
beside its baseline value and tolerance.

Baselines (`baselines/<model>-<profile>.json`):

* `pythia-70m-paper.json` holds the numbers the seed notebook printed (from
  `analysis/resources/seed_reference.json`), each with the seed section it comes from and a tolerance
  = half a unit of its printed precision + two standard errors of its method's sampling
  noise (see `seed_tolerance`). It is never rewritten by `--update`.
* fixture baselines (`tiny-quick.json`, `pythia-70m-random-quick.json`) are recorded from
  the project's own runs; the runs are deterministic on one machine, so their tolerance only
  covers float re-association across library versions (see `fixture_tolerance`).

A baseline holds only for the configuration it was recorded with: its `configuration`
block names the model (id, revision, weights fingerprint), the context neuron, the corpus,
the profile sizes and the seed. `applies` compares it with the run's configuration, read
from the artifacts' provenance (`run_configuration`), before any number is compared; a
run on another neuron, corpus or profile has no baseline (`select_baseline` says why) and
nothing is checked. A configuration value of null means "any" (the seed's baseline: any
`pythia-70m` weights of revision `step143000`, any seed, since the seed's probe split was
unseeded and its tolerance covers that sampling noise).

Precision is not a field a baseline must match: it selects the tolerances. Every committed
baseline is float32 (a baseline without `dtype` in its configuration is float32). A run whose
precision differs from its baseline's (`--dtype bfloat16`, or `--tf32 on` where it takes
effect) is compared with the baseline's tolerance widened by the precision policy
(`baselines/tolerance/bf16.json`, `precision_policy`): per metric family (losses in nats,
percent increases, proportions, activation means, logit values, counts) a tolerance derived
from the float32-vs-bfloat16 differences measured by `scripts/bf16_tolerance.py`; the table
and the report's appendix name the policy. A baseline recorded from a run of the same
precision is preferred when there is one.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..core.artifacts import atomic_write_text

REPO = Path(__file__).resolve().parents[2]
BASELINES = REPO / "baselines"
SEED_REFERENCE = Path(__file__).resolve().parents[1] / "resources" / "seed_reference.json"
SCHEMA_VERSION = 1
FIXTURE_REL_TOL = 1e-4
FIXTURE_ABS_TOL = 1e-6

Metric = tuple[str, float, str]  # (name, value, seed section)

EXTRACTORS: list[Callable[[Mapping[str, dict]], Iterable[Metric]]] = []


def extractor(fn):
    EXTRACTORS.append(fn)
    return fn


def _interval(name: str, ci) -> Iterable[tuple[str, float]]:
    """`name_ci_low`, `name_ci_high` of a 95% interval (nothing when there is none), so that
    the regression check and `diff` see an interval move as well as its value."""
    if ci is not None:
        yield f"{name}_ci_low", float(ci[0])
        yield f"{name}_ci_high", float(ci[1])


def _probe_metrics(prefix: str, rows, section: str) -> Iterable[Metric]:
    for r in rows:
        for k in ("f1", "train_acc", "test_acc", "mean_english", "mean_german"):
            if k in r:
                yield f"{prefix}.{r['neuron']}.{k}", float(r[k]), section
            for name, v in _interval(f"{prefix}.{r['neuron']}.{k}", r.get(f"{k}_ci")):
                yield name, v, section


@extractor
def _activations(arts):
    if "activations" in arts:
        r = arts["activations"]["result"]
        sec = "Set up model, data, and deactivate German neuron hook"
        yield "activations.context_mean_active", r["context_mean_active"], sec
        yield "activations.context_mean_inactive", r["context_mean_inactive"], sec


@extractor
def _probes(arts):
    if "probes" in arts:
        yield from _probe_metrics("probes", arts["probes"]["result"]["rows"],
                                  "Check classification accuracy of German neurons")


@extractor
def _ablation(arts):
    if "ablation" not in arts:
        return
    r = arts["ablation"]["result"]
    sec = "Check loss increase from disabling each German neuron on German data"
    for lang in ("german", "english"):
        for k in ("original", "ablated", "percent_increase"):
            yield f"ablation.context.{lang}.{k}", r["context"][lang][k], sec
        for name, v in _interval(f"ablation.context.{lang}.percent_increase",
                                 r["context"][lang].get("percent_increase_ci")):
            yield name, v, sec
    for row in r["single"]:
        for lang in ("german", "english"):
            for k in ("ablated", "percent_increase"):
                yield f"ablation.{row['neuron']}.{lang}.{k}", row[lang][k], sec
            for name, v in _interval(f"ablation.{row['neuron']}.{lang}.percent_increase",
                                     row[lang].get("percent_increase_ci")):
                yield name, v, sec
    for variant, v in (r.get("all_except_context") or {}).items():
        for lang in ("german", "english"):
            for k in ("ablated", "percent_increase"):
                yield f"ablation.all_except_context.{variant}.{lang}.{k}", v[lang][k], sec


@extractor
def _weird_tokens(arts):
    if "neurons" in arts:
        w = arts["neurons"]["result"]["weird_tokens"]
        sec = "Looking at individual neurons"
        yield "weird_tokens.W_U", w["n_w_u"], sec
        yield "weird_tokens.W_E", w["n_w_e"], sec
        yield "weird_tokens.unique", w["n_unique"], sec


def _family_extractors() -> None:
    """Metric extractors that live beside their analyses (names as the seed baseline's)."""
    from ..families import dla, ngrams, probes_ablated, unigrams

    for mod in (dla, unigrams, probes_ablated, ngrams):
        if mod.regression_metrics not in EXTRACTORS:
            EXTRACTORS.append(mod.regression_metrics)


def flatten_metrics(arts: Mapping[str, dict]) -> dict[str, dict]:
    """{metric name: {"value", "section"}} from every artifact an extractor knows."""
    _family_extractors()
    out: dict[str, dict] = {}
    for ex in EXTRACTORS:
        for name, value, section in ex(arts):
            out[name] = {"value": float(value), "section": section}
    return out


FIXTURE_PERCENT_ABS_TOL = 1e-3


def fixture_tolerance(name: str, value: float) -> float:
    """1e-4 relative + 1e-6 absolute; a `percent_increase` is a difference of two nearly
    equal losses (on a random model, 1e-4 % or less), so its float noise is relative to the
    loss, not to itself: it and its interval bounds get 1e-3 percentage points (1e-5 of the
    loss) absolute."""
    extra = FIXTURE_PERCENT_ABS_TOL if ".percent_increase" in name else FIXTURE_ABS_TOL
    return FIXTURE_REL_TOL * abs(value) + extra


def seed_tolerance(kind: str, value: float, n_test: int = 2000, decimals: int = 2) -> float:
    """Tolerance for a number the seed printed with `decimals` decimals.

    * accuracies and F1: the seed split 10,000 activations 80/20 without a seed, so a
      rerun differs by sampling noise: 2 standard errors of a proportion on the 2,000 test
      points, sqrt(p(1-p)/n), plus half a printed unit;
    * deterministic quantities (mean activations, losses, % increases, logit means): half
      a printed unit plus 1e-3 of the value for GPU-vs-CPU float differences;
    * counts: exact.
    """
    half = 0.5 * 10 ** (-decimals)
    if kind == "count":
        return 0.0
    if kind == "proportion":
        p = min(max(value, 0.0), 1.0)
        return round(half + 2 * math.sqrt(max(p * (1 - p), 0.0025) / n_test), 4)
    return round(half + 1e-3 * abs(value), 6)


def seed_baseline() -> dict:
    """The pythia-70m baseline, derived from the seed's printed numbers."""
    ref = json.loads(SEED_REFERENCE.read_text())
    m: dict[str, dict] = {}

    def add(name, value, kind, section, decimals=2):
        m[name] = {"value": value, "tolerance": seed_tolerance(kind, value, decimals=decimals),
                   "section": section, "kind": kind}

    for prefix, block in (("probes", ref["probes"]), ("probes_context_ablated", ref["probes_context_ablated"])):
        for neuron, row in block["rows"].items():
            for k, v in row.items():
                kind = "proportion" if k in ("f1", "train_acc", "test_acc") else "deterministic"
                add(f"{prefix}.{neuron}.{k}", v, kind, block["section"])
    abl = ref["ablation"]
    for k, v in abl["context"]["german"].items():
        add(f"ablation.context.german.{k}", v, "deterministic", abl["section"])
    for neuron, langs in abl["single"].items():
        for lang, vals in langs.items():
            for k in ("ablated", "percent_increase"):
                add(f"ablation.{neuron}.{lang}.{k}", vals[k], "deterministic", abl["section"])
    for lang, vals in abl["all_except_context"]["seed_literal"].items():
        for k in ("ablated", "percent_increase"):
            add(f"ablation.all_except_context.seed_literal.{lang}.{k}", vals[k], "deterministic",
                abl["section"])
    cp = ref["component_patching"]
    for comp, vals in cp["rows"].items():
        add(f"component_patching.{comp}.percent_increase", vals["percent_increase"], "deterministic",
            cp["section"])
    uni = ref["unigrams"]
    add("unigrams.german_mean_logit_diff", uni["german_mean_logit_diff"], "deterministic",
        uni["section"], decimals=4)
    add("unigrams.english_mean_logit_diff", uni["english_mean_logit_diff"], "deterministic",
        uni["section"], decimals=4)
    wt = ref["weird_tokens"]
    for k in ("W_U", "W_E", "unique"):
        add(f"weird_tokens.{k}", wt[k], "count", wt["section"])
    from ..core.config import PROFILES

    sizes = {k: v for k, v in PROFILES["paper"].sizes().items() if k != "seed"}
    configuration = {"model": "pythia-70m", "revision": "step143000", "fingerprint": None,
                     "context_neuron": "L3N669", "corpus": "seed", "profile": "paper",
                     "sizes": sizes, "seed": None}
    return {"schema_version": SCHEMA_VERSION, "model": "pythia-70m", "profile": "paper",
            "source": "seed notebook printed output (analysis/resources/seed_reference.json)",
            "configuration": configuration,
            "tolerance_rule": seed_tolerance.__doc__.strip(), "metrics": m}


def baseline_path(model_id: str, profile: str) -> Path:
    return BASELINES / f"{model_id}-{profile}.json"


def load_baseline(path: Path) -> dict:
    data = json.loads(Path(path).read_text())
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: baseline schema {data.get('schema_version')} != {SCHEMA_VERSION}")
    return data


# ------------------------------------------------------------ configurations

# What defines a run's numbers, in the order reasons are given. `profile` (the name) is
# recorded but not compared: its sizes are.
CONFIG_FIELDS = ("model", "revision", "fingerprint", "context_neuron", "corpus", "profile", "sizes", "seed",
                 "dtype", "tf32")
COMPARED = ("model", "revision", "fingerprint", "context_neuron", "corpus", "sizes", "seed")
REQUIRED = ("model", "fingerprint", "context_neuron", "corpus", "profile", "sizes", "seed")
LABELS = {"model": "model", "revision": "revision", "fingerprint": "weights fingerprint",
          "context_neuron": "context neuron", "corpus": "corpus", "sizes": "profile sizes",
          "seed": "seed"}


def run_configuration(arts: Mapping[str, dict]) -> dict:
    """The configuration a run's numbers were computed with, from its artifacts' provenance:
    `model.id`, `model.revision`, `model.fingerprint`, `seed`, `run` (context neuron,
    corpus, profile and its sizes; see `analysis.core.runner.Run.configuration`), and the
    precision: `dtype` (`model.dtype`; float32 for artifacts made before it was a choice) and
    `tf32` (`model.tf32_effective`: whether TF32 changed any number; False when unrecorded).

    A field no artifact records is None; one on which the artifacts disagree (a folder
    holding artifacts of more than one run) is None too, its values listed in
    `conflicts`. A context neuron recorded as `auto` (a step run before `--neuron auto`
    was resolved) defers to the resolved one."""
    seen: dict[str, list] = {f: [] for f in CONFIG_FIELDS}
    for a in arts.values():
        prov = a.get("provenance") or {}
        model = prov.get("model") or {}
        run = prov.get("run") or {}
        values = {"model": model.get("id"), "revision": model.get("revision"),
                  "fingerprint": model.get("fingerprint"), "seed": prov.get("seed"),
                  "context_neuron": run.get("context_neuron"), "corpus": run.get("corpus"),
                  "profile": run.get("profile"), "sizes": run.get("sizes"),
                  "dtype": model.get("dtype") or REFERENCE_DTYPE,
                  "tf32": bool(model.get("tf32_effective", False))}
        if values["context_neuron"] == "auto":
            values["context_neuron"] = None
        for f, v in values.items():
            if v is not None and v not in seen[f]:
                seen[f].append(v)
    config: dict = {f: (vs[0] if len(vs) == 1 else None) for f, vs in seen.items()}
    config["conflicts"] = {f: vs for f, vs in seen.items() if len(vs) > 1}
    return config


def baseline_name(baseline: Mapping, path: Path | None = None) -> str:
    return Path(path).stem if path is not None else f"{baseline.get('model')}-{baseline.get('profile')}"


def _sizes_without_seed(sizes: Mapping) -> dict:
    return {k: v for k, v in sizes.items() if k != "seed"}  # the seed is compared as `seed`


def _show(field: str, value) -> str:
    if field == "fingerprint" and isinstance(value, str):
        return value[:12]
    return str(value)


def mismatches(baseline: Mapping, arts: Mapping[str, dict]) -> list[tuple[str, str, str]]:
    """(label, the run's value, the baseline's value) for every compared field of the
    baseline's configuration the run does not match (a null baseline value matches any)."""
    want = baseline.get("configuration") or {}
    have = run_configuration(arts)
    out = []
    for f in COMPARED:
        w = want.get(f)
        if w is None:
            continue
        label = LABELS[f]
        if f in have["conflicts"]:
            vals = have["conflicts"][f]
            shown = [", ".join(f"{k} {v}" for k, v in sorted(_sizes_without_seed(x).items()))
                     if f == "sizes" else _show(f, x) for x in vals]
            out.append((label, " and ".join(shown) + " (artifacts of more than one run)", _show(f, w)
                        if f != "sizes" else "other sizes"))
            continue
        h = have.get(f)
        if h is None:
            out.append((label, "not recorded in the artifacts (rerun the report)",
                        ", ".join(f"{k} {v}" for k, v in sorted(_sizes_without_seed(w).items()))
                        if f == "sizes" else _show(f, w)))
        elif f == "sizes":
            w, h = _sizes_without_seed(w), _sizes_without_seed(h)
            # A size the baseline does not record was added to the profile after it was
            # recorded: it sizes only steps the baseline has no metric of (their metrics are
            # reported as new), so it does not make the baseline inapplicable.
            diff = sorted(k for k in w if w.get(k) != h.get(k))
            if diff:
                out.append((label, ", ".join(f"{k} {h.get(k)}" for k in diff),
                            ", ".join(f"{k} {w.get(k)}" for k in diff)))
        elif h != w:
            out.append((label, _show(f, h), _show(f, w)))
    return out


def applies(baseline: Mapping, arts: Mapping[str, dict], name: str | None = None) -> tuple[bool, list[str]]:
    """Whether `baseline` holds for the run of `arts`: every field of its `configuration`
    (model, revision, weights fingerprint, context neuron, corpus, profile sizes, seed)
    equals the run's (`run_configuration`); a null baseline value matches any. Returns
    (applies, reasons), one reason per field that differs, e.g.
    "context neuron L5N10; baseline tiny-quick is for L3N669"."""
    name = name or baseline_name(baseline)
    if not baseline.get("configuration"):
        return False, [f"baseline {name} records no configuration "
                       "(re-record it with `nox -s baseline -- --update`)"]
    reasons = [f"{label} {run}; baseline {name} is for {base}"
               for label, run, base in mismatches(baseline, arts)]
    return not reasons, reasons


def no_baseline_sentence(arts: Mapping[str, dict], nearest: Mapping | None = None,
                         name: str | None = None, available: Iterable[str] = ()) -> str:
    """One sentence saying that no baseline applies and why: against the `nearest`
    baseline (same model and profile, else same model) the fields that differ, e.g.
    "No baseline was recorded for this configuration (context neuron L5N10; baseline
    tiny-quick is for L3N669), so no number is checked."."""
    have = run_configuration(arts)
    if nearest is None:
        models = sorted(set(available))
        why = (f"model {have.get('model')}; the baselines are for {', '.join(models)}" if models
               else f"model {have.get('model')}; there are no baselines")
    elif not nearest.get("configuration"):
        why = f"baseline {name or baseline_name(nearest)} records no configuration"
    else:
        ms = mismatches(nearest, arts)
        name = name or baseline_name(nearest)
        if len(ms) == 1:
            label, run, base = ms[0]
            why = f"{label} {run}; baseline {name} is for {base}"
        else:
            why = (", ".join(f"{label} {run}" for label, run, _ in ms)
                   + f"; baseline {name} is for " + ", ".join(f"{label} {base}" for label, _, base in ms))
    return f"No baseline was recorded for this configuration ({why}), so no number is checked."


def select_baseline(arts: Mapping[str, dict], candidates: Iterable[Path] | None = None) -> dict:
    """The baseline that applies to the run of `arts`, among `candidates` (default: every
    `baselines/*.json`; those of the run's model and profile first).

    Returns {"applies", "path", "baseline", "reasons", "sentence"}: when none applies,
    `path`/`baseline` are the nearest candidate (same model and profile, else same model,
    else None), `reasons` why it does not apply and `sentence` the report's one sentence."""
    have = run_configuration(arts)
    paths = sorted(candidates if candidates is not None else BASELINES.glob("*.json"))
    loaded = [(p, load_baseline(p)) for p in paths]

    mine = precision_label(have.get("dtype"), have.get("tf32"))

    def rank(item):  # same model, then same precision (its own tolerances), then same profile
        b = item[1]
        return (b.get("model") != have.get("model"), baseline_precision(b) != mine,
                b.get("profile") != have.get("profile"))

    loaded.sort(key=rank)
    for p, b in loaded:
        ok, _ = applies(b, arts, baseline_name(b, p))
        if ok:
            return {"applies": True, "path": p, "baseline": b, "reasons": [], "sentence": None}
    near = next(((p, b) for p, b in loaded if b.get("model") == have.get("model")), None)
    if near is None and candidates is not None and loaded:
        near = loaded[0]  # a baseline named explicitly: explain against it
    if near is None:
        return {"applies": False, "path": None, "baseline": None,
                "reasons": [f"no baseline is for model {have.get('model')}"],
                "sentence": no_baseline_sentence(arts, available=[b.get("model") for _, b in loaded])}
    p, b = near
    name = baseline_name(b, p)
    return {"applies": False, "path": p, "baseline": b, "reasons": applies(b, arts, name)[1],
            "sentence": no_baseline_sentence(arts, b, name)}


# ------------------------------------------------------------ precision policy

REFERENCE_DTYPE = "float32"
REFERENCE_PRECISION = "float32"
PRECISION_POLICY = BASELINES / "tolerance" / "bf16.json"
# Metric families of the precision policy, each with one unit (see `metric_family`).
FAMILY_UNITS = {"loss": "nats", "percent_increase": "percentage points",
                "proportion": "fraction (F1, accuracy)", "activation": "activation units",
                "logit": "logits", "count": "tokens"}


def precision_label(dtype: str | None, tf32: bool | None = False) -> str:
    """`float32`, `float32+tf32` (TF32 in effect) or `bfloat16`; `mixed` when `dtype` is
    None (artifacts of more than one precision)."""
    if dtype is None:
        return "mixed"
    return f"{dtype}+tf32" if dtype == REFERENCE_DTYPE and tf32 else dtype


def baseline_precision(baseline: Mapping) -> str:
    """A baseline's precision: its configuration's `dtype` and `tf32` (a baseline recorded
    before precision was a choice is float32)."""
    c = baseline.get("configuration") or {}
    return precision_label(c.get("dtype") or REFERENCE_DTYPE, bool(c.get("tf32")))


def run_precision(arts: Mapping[str, dict]) -> str:
    """The precision of the run of `arts` (`precision_label`; `mixed` when its artifacts
    disagree)."""
    have = run_configuration(arts)
    if {"dtype", "tf32"} & set(have["conflicts"]):
        return "mixed"
    return precision_label(have.get("dtype"), have.get("tf32"))


def metric_family(name: str) -> str:
    """The policy family of a metric name (`flatten_metrics`): `percent_increase` (and its
    interval bounds; component patching), `proportion` (F1, accuracies, their bounds),
    `activation` (mean activations), `logit` (DLA, unigram logit differences), `count`
    (weird-token counts), else `loss` (original and ablated losses, nats)."""
    if ".percent_increase" in name:
        return "percent_increase"
    last = name.rsplit(".", 1)[-1]
    if last.split("_ci_")[0] in ("f1", "train_acc", "test_acc"):
        return "proportion"
    if last in ("mean_english", "mean_german") or name.startswith("activations."):
        return "activation"
    if name.startswith(("dla.", "unigrams.")):
        return "logit"
    if name.startswith("weird_tokens."):
        return "count"
    return "loss"


def precision_policy(path: Path | None = None) -> dict:
    """The committed precision policy (`baselines/tolerance/bf16.json`): `families` `{family:
    {"abs", "rel", "max_measured", "unit", ...}}`, how it was measured and on what.

    Raises:
        ReportError: the file is missing or not a policy."""
    from ..core.errors import ReportError

    path = Path(path) if path is not None else PRECISION_POLICY
    hint = "restore it from git, or measure it again: PYTHONPATH=. python scripts/bf16_tolerance.py --write"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ReportError(f"the precision policy {path} is missing or not JSON", hint=hint) from None
    if not isinstance(data, dict) or set(FAMILY_UNITS) - set(data.get("families") or {}):
        raise ReportError(f"{path} is not a precision policy with families {', '.join(FAMILY_UNITS)}",
                          hint=hint)
    data["path"] = display_path(path)
    return data


def policy_tolerance(policy: Mapping, name: str, value: float) -> float:
    """What the precision policy adds to a metric's tolerance: its family's `abs + rel ×
    |value|` (value: the baseline's)."""
    fam = policy["families"][metric_family(name)]
    return float(fam.get("abs", 0.0)) + float(fam.get("rel", 0.0)) * abs(value)


def precision_comparison(baseline: Mapping, arts: Mapping[str, dict], policy: Mapping | None = None) -> dict:
    """`{"run", "baseline", "policy", "sentence"}`: the two precisions, and when they differ
    the policy file that widens the tolerances (its display path) and one sentence saying
    so; `policy` and `sentence` None when they are the same."""
    run, base = run_precision(arts), baseline_precision(baseline)
    if run == base:
        return {"run": run, "baseline": base, "policy": None, "sentence": None}
    path = (policy or {}).get("path") or display_path(PRECISION_POLICY)
    return {"run": run, "baseline": base, "policy": path,
            "sentence": f"run in {run}, baseline in {base}: each tolerance is the baseline's plus "
                        f"the precision policy's for its metric family ({path})"}


def policy_summary(path: Path | None = None) -> dict:
    """The policy as the report's Setup section states it: its path and, per family, the
    largest float32-vs-bfloat16 difference measured and the tolerance added."""
    pol = precision_policy(path)
    return {"path": pol["path"], "measured_on": pol.get("measured_on"),
            "families": {f: {k: v for k, v in pol["families"][f].items()
                             if k in ("abs", "rel", "max_measured", "max_measured_metric", "unit")}
                         for f in FAMILY_UNITS}}


def not_applicable_result(selection: Mapping, arts: Mapping[str, dict]) -> dict:
    """The regression record of a run no baseline applies to (nothing compared)."""
    b = selection.get("baseline") or {}
    return {"applies": False, "sentence": selection["sentence"], "reasons": selection["reasons"],
            "configuration": run_configuration(arts),
            "baseline": {"model": b.get("model"), "profile": b.get("profile"), "source": b.get("source"),
                         "path": display_path(selection.get("path"))},
            "rows": [], "n_checked": 0, "n_failed": 0, "failed": [], "passed": None}


def outcome_sentence(result: Mapping) -> str:
    """One sentence on the baseline check of a run, for the console's last lines and the
    report's summary: how many numbers were compared against which baseline and how many
    moved, or that none was compared and why (the record of `compare` or
    `not_applicable_result`)."""
    if not result.get("applies", True):
        return f"no number was checked against a baseline: {result['sentence']}"
    base = Path(result["baseline"].get("path") or "?").name
    moved = f" ({', '.join(result['failed'][:5])}{', ...' if len(result['failed']) > 5 else ''})" \
        if result["failed"] else ""
    verdict = "PASSED" if result["passed"] else "FAILED"
    return (f"{result['n_checked']:,} numbers checked against the baseline {base}, "
            f"{result['n_failed']:,} outside tolerance{moved}: {verdict}")


def display_path(path: Path | None) -> str | None:
    if path is None:
        return None
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def configuration_block(arts: Mapping[str, dict]) -> dict:
    """The `configuration` of a fixture baseline recorded from `arts`.

    Raises:
        ValueError: the artifacts come from more than one run, or do not record a field."""
    have = run_configuration(arts)
    if have["conflicts"]:
        raise ValueError("the artifacts come from more than one run: "
                         + "; ".join(f"{LABELS.get(f, f)}: {vs}" for f, vs in have["conflicts"].items()))
    missing = [f for f in REQUIRED if have.get(f) is None]
    if missing:
        raise ValueError(f"the artifacts do not record {', '.join(missing)} (rerun the report)")
    return {f: have[f] for f in CONFIG_FIELDS}


def record_fixture_baseline(arts: Mapping[str, dict], model_id: str, profile: str) -> dict:
    """A fixture baseline: every metric of `arts` with its tolerance, and the run's
    configuration (see `configuration_block`: raises ValueError when incomplete)."""
    metrics = flatten_metrics(arts)
    keys = {step: a["key"] for step, a in arts.items()}
    return {"schema_version": SCHEMA_VERSION, "model": model_id, "profile": profile,
            "source": "recorded from the project's own run", "artifact_keys": keys,
            "configuration": configuration_block(arts), "data": data_checksums(arts),
            "tolerance_rule": fixture_tolerance.__doc__.strip(),
            "metrics": {k: {"value": v["value"], "tolerance": fixture_tolerance(k, v["value"]),
                            "section": v["section"]} for k, v in sorted(metrics.items())}}


def baseline_target(new: Mapping, directory: Path | None = None) -> Path:
    """Where `german-neuron baseline --update` writes the fixture baseline `new`: over the
    existing baseline of the same configuration apart from the weights fingerprint (a
    re-record after a library upgrade regenerated the random weights' files), else
    `<model>-<profile>.json` when that name is free, else
    `<model>-<profile>-<neuron>-<corpus>.json`: never over a baseline recorded for another
    configuration or precision (a bfloat16 baseline's names end in `-bfloat16`).

    Raises:
        ValueError: that last name too holds a baseline for another configuration."""
    directory = Path(directory) if directory is not None else BASELINES
    cfg = new["configuration"]

    prec = baseline_precision(new)

    def same(b: Mapping) -> bool:
        c = b.get("configuration") or {}
        return (all(c.get(f) == cfg.get(f) for f in COMPARED if f != "fingerprint")
                and baseline_precision(b) == prec)

    for p in sorted(directory.glob("*.json")):
        if same(load_baseline(p)):
            return p
    # a bfloat16 baseline never takes the float32 one's name
    suffix = "" if prec == REFERENCE_PRECISION else f"-{prec}"
    plain = directory / f"{new['model']}-{new['profile']}{suffix}.json"
    if not plain.exists():
        return plain
    alt = directory / f"{new['model']}-{new['profile']}-{cfg['context_neuron']}-{cfg['corpus']}{suffix}.json"
    if alt.exists():
        raise ValueError(f"{alt} holds a baseline for another configuration; move it aside first")
    return alt


def data_checksums(arts: Mapping[str, dict]) -> dict[str, str]:
    """{language: sha256} of the text the artifacts were computed on."""
    out: dict[str, str] = {}
    for a in arts.values():
        for lang, d in (a.get("provenance", {}).get("data") or {}).items():
            out[lang] = d["sha256"]
    return dict(sorted(out.items()))


def compare(baseline: Mapping, arts: Mapping[str, dict], policy: Mapping | None = None) -> dict:
    """Rows (metric, baseline, current, difference, tolerance, status) and a verdict.

    Status: `ok`, `FAIL` (outside tolerance), `missing` (in the baseline, not computed: a
    failure), `new` (computed, not in the baseline: listed, not a failure).
    Only meaningful when the baseline `applies` to the run (callers check that first).

    When the run's precision differs from the baseline's (`precision_label`), each
    tolerance is the baseline's plus the precision policy's for the metric's family
    (`policy`, default `precision_policy()`); `result["precision"]` says which policy and
    why, and each row's `policy_tolerance` the part it added."""
    current = flatten_metrics(arts)
    prec = precision_comparison(baseline, arts, policy)
    pol = prec["policy"] and (policy if policy is not None else precision_policy())
    rows = []
    for name, b in baseline["metrics"].items():
        c = current.get(name)
        extra = policy_tolerance(pol, name, b["value"]) if pol else 0.0
        tol = b["tolerance"] + extra
        if c is None:
            rows.append({"metric": name, "baseline": b["value"], "current": None, "difference": None,
                         "tolerance": tol, "policy_tolerance": extra, "status": "missing",
                         "section": b.get("section")})
            continue
        diff = c["value"] - b["value"]
        ok = abs(diff) <= tol
        rows.append({"metric": name, "baseline": b["value"], "current": c["value"], "difference": diff,
                     "tolerance": tol, "policy_tolerance": extra, "status": "ok" if ok else "FAIL",
                     "section": b.get("section")})
    for name in sorted(set(current) - set(baseline["metrics"])):
        rows.append({"metric": name, "baseline": None, "current": current[name]["value"],
                     "difference": None, "tolerance": None, "status": "new",
                     "section": current[name]["section"]})
    # A fixture baseline holds only for the text it was recorded on.
    for lang, digest in (baseline.get("data") or {}).items():
        cur = data_checksums(arts).get(lang)
        if cur != digest:
            rows.append({"metric": f"data.{lang}.sha256", "baseline": None, "current": None,
                         "difference": None, "tolerance": None, "status": "FAIL",
                         "section": f"baseline recorded on {digest[:12]}, run on {str(cur)[:12]}"})
    failed = [r["metric"] for r in rows if r["status"] in ("FAIL", "missing")]
    return {"applies": True, "baseline": {"model": baseline.get("model"), "profile": baseline.get("profile"),
                         "source": baseline.get("source")},
            "precision": prec, "rows": rows, "n_checked": sum(r["status"] in ("ok", "FAIL") for r in rows),
            "n_failed": len(failed), "failed": failed, "passed": not failed}


def print_table(result: dict, console=None, only_problems: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    # Full metric names even when piped (CI logs, closing notes): no truncation.
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    title = f"Regression check against {result['baseline']['model']}-{result['baseline']['profile']}"
    prec = result.get("precision") or {}
    if prec.get("policy"):
        title += f" ({prec['sentence']})"
    t = Table(title=title)
    for col in ("metric", "baseline", "current", "difference", "tolerance", "status"):
        t.add_column(col, justify="left" if col in ("metric", "status") else "right",
                     no_wrap=col == "metric")

    def f(x):
        return "—" if x is None else f"{x:.6g}"

    for r in result["rows"]:
        if only_problems and r["status"] == "ok":
            continue
        style = {"FAIL": "bold red", "missing": "red", "new": "yellow"}.get(r["status"])
        t.add_row(r["metric"], f(r["baseline"]), f(r["current"]), f(r["difference"]),
                  f(r["tolerance"]), r["status"], style=style)
    console.print(t)
    verdict = "PASSED" if result["passed"] else f"FAILED ({result['n_failed']}): " + ", ".join(result["failed"])
    console.print(f"{result['n_checked']} checked, {result['n_failed']} failed: {verdict}")


def write_result(out_dir: Path, result: dict) -> Path:
    p = Path(out_dir) / "artifacts" / "regression.json"
    atomic_write_text(p, json.dumps(result, indent=1, sort_keys=True, allow_nan=False))
    return p


def load_artifacts(out_dir: Path) -> dict[str, dict]:
    arts = {}
    for p in sorted((Path(out_dir) / "artifacts").glob("*.json")):
        if p.stem == "regression":
            continue
        a = json.loads(p.read_text())
        if isinstance(a, dict) and "result" in a and "step" in a:
            arts[a["step"]] = a
    return arts


def key_changes(a: Mapping, b: Mapping) -> list[str]:
    """Why two artifacts of one step have different cache keys, one phrase per input that
    differs: `code: analysis/core/engine.py` (one per changed source or data file, from the
    code records in the provenance), `model fingerprint`, `data: german`, `params: loss_examples`,
    `seed`, `upstream: activations`, `libraries: torch`, `device`, `schema`."""
    pa, pb = a.get("provenance") or {}, b.get("provenance") or {}
    out: list[str] = []
    if a.get("schema_version") != b.get("schema_version"):
        out.append("schema")
    from ..core.codehash import changed_modules

    ca, cb = pa.get("code") or {}, pb.get("code") or {}
    if ca.get("sha256") != cb.get("sha256"):
        names = changed_modules(ca, cb)
        files = [n if "/" in n else n.replace(".", "/") + ".py" for n in names]
        out += [f"code: {f}" for f in files] or ["code"]
    ma, mb = pa.get("model") or {}, pb.get("model") or {}
    if ma.get("fingerprint") != mb.get("fingerprint"):
        out.append("model fingerprint")
    out += [f"model: {k}" for k in sorted(set(ma) | set(mb))
            if k != "fingerprint" and ma.get(k) != mb.get(k)]
    for field in ("data", "params", "upstream", "libraries"):
        x, y = pa.get(field) or {}, pb.get(field) or {}
        out += [f"{field}: {k}" for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
    for field in ("seed", "device"):
        if pa.get(field) != pb.get(field):
            out.append(field)
    return out


def diff_runs(a_dir: Path, b_dir: Path) -> dict:
    """Artifact-by-artifact comparison of two output folders: same cache key, same payload
    hash, same array bytes; and every metric that differs. Used to prove determinism."""
    a, b = load_artifacts(a_dir), load_artifacts(b_dir)
    steps = []
    for step in sorted(set(a) | set(b)):
        if step not in a or step not in b:
            steps.append({"step": step, "status": "only in " + ("first" if step in a else "second")})
            continue
        same_key = a[step]["key"] == b[step]["key"]
        same_payload = a[step]["payload_sha256"] == b[step]["payload_sha256"]
        same_arrays = (a[step].get("arrays") or {}) == (b[step].get("arrays") or {})
        steps.append({"step": step, "same_key": same_key, "same_payload": same_payload,
                      "same_arrays": same_arrays,
                      "key_changed_by": [] if same_key else key_changes(a[step], b[step]),
                      "status": "identical" if (same_key and same_payload and same_arrays) else "DIFFERENT"})
    ma, mb = flatten_metrics(a), flatten_metrics(b)
    moved = [{"metric": k, "first": ma[k]["value"], "second": mb[k]["value"]}
             for k in sorted(set(ma) & set(mb)) if ma[k]["value"] != mb[k]["value"]]
    return {"steps": steps, "moved": moved,
            "identical": all(s["status"] == "identical" for s in steps) and not moved}
