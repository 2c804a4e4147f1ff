"""Measure how far bfloat16 numbers are from float32 ones, and derive the bf16 tolerance policy.

    PYTHONPATH=. python scripts/bf16_tolerance.py [--tokenizer PATH] [--data-dir DIR]
        [--out build/bf16-tolerance] [--skip-planted] [--factor 4] [--write]

It runs the same steps twice on this machine, `--dtype float32` and `--dtype bfloat16`
(`run_report(..., render=False)`; on CPU the bf16 GEMMs are emulated, see
`analysis.core.precision`), and prints, per metric of the regression check
(`regression.flatten_metrics`), the float32 value, the bfloat16 value and the difference:

* `tiny` on the fixture corpus, quick profile, every step (all metric families);
* `pythia-70m-planted` (Pythia-70M's shape, its vocabulary and real text; needs
  `--tokenizer` and `--data-dir`, or $GERMAN_NEURON_TOKENIZER / $GERMAN_NEURON_DATA_DIR),
  quick profile, context neuron L3N669 (the plant), the steps `PLANTED_STEPS` (a partial
  run, as tests/test_planted.py does), plus the weird-token counts from the weights.

Then, per metric family (`regression.metric_family`), the policy's tolerance is
`abs + rel x |value|`: `abs` is `--factor` times the largest difference measured in that
family, and at least the family's floor (`FLOORS`); `rel` is `--factor` times the largest
relative difference among the family's metrics of at least unit size (`REL_FROM`: where
a relative error is meaningful; a percent increase of 11.6 on Pythia-70M moves about 4.6x
as much as one of 2.5 on the planted control, since both losses round relatively). The
largest difference seen on two models and one sample size is not the largest possible one:
the factor leaves room for other examples, seeds and sizes, and the floors for effects too
rare to show up here (one flipped probe prediction; a weird token whose norm lies within
bf16's rounding of the threshold). Both models have random (or planted) weights, whose
logits are small: a trained model's larger logits round with larger absolute errors, so
re-measure with `--also pythia-70m` where its weights are available.

Also printed: native bf16 GEMMs vs the CPU emulation on `tiny` (per-example losses), the
check that the emulation's rounding behaves as the real thing.

`--write` saves the policy to `baselines/tolerance/bf16.json` (what the regression check of a
bfloat16 run reads) and the measurements to `docs/BF16.md`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.core.config import Neuron, RunConfig, get_profile  # noqa: E402
from analysis.orchestration import regression as reg  # noqa: E402
from analysis.orchestration.pipeline import STEPS, run_report  # noqa: E402

POLICY = REPO / "baselines" / "tolerance" / "bf16.json"
DOC = REPO / "docs" / "BF16.md"
PLANTED_STEPS = ("probes", "ablation", "dla", "unigrams")  # + activations, l3_tokens (deps)
# Smallest tolerance per family, whatever was measured (see the module docstring):
# proportion: one flipped prediction among the quick profile's 800 probe test points moves
#   an accuracy by 1/800 and an F1 by about twice that;
# count: set per run from the weights (`weird_band`), 0 here.
FLOORS = {"loss": 0.0, "percent_increase": 0.0, "proportion": 2 / 800, "activation": 0.0,
          "logit": 0.0, "count": 0}
# The smallest |value| whose relative difference feeds `rel` (None: no relative part: F1 and
# accuracies flip by whole test points, counts by whole tokens).
REL_FROM = {"loss": 1.0, "percent_increase": 1.0, "proportion": None, "activation": 1.0,
            "logit": 1.0, "count": None}


def run_pair(label: str, model: str, corpus: str, out: Path, steps=None, **cfg) -> dict:
    """Metrics (`flatten_metrics`) of one configuration in float32 and in bfloat16, and each
    run's compute time (the steps' recorded `wall_time_s`, which a rerun that reuses the
    artifacts keeps)."""
    res = {}
    for dtype in ("float32", "bfloat16"):
        c = RunConfig(model=model, profile=get_profile("quick"), out=str(out / f"{label}-{dtype}"),
                      dtype=dtype, **cfg)
        r = run_report(c, render=False, corpus=corpus, steps=steps, show_progress=False,
                       log=lambda s, tag=f"[{label} {dtype}]": print(tag, s, file=sys.stderr))
        res[dtype] = {"metrics": {k: v["value"] for k, v in reg.flatten_metrics(r["artifacts"]).items()},
                      "wall_s": round(sum(a["wall_time_s"] for a in r["artifacts"].values()), 1),
                      "model_info": {k: r["artifacts"][next(iter(r["artifacts"]))]["provenance"]["model"].get(k)
                                     for k in ("dtype", "matmul", "tf32", "tf32_effective")}}
    return res


def weird_band(model: str, **load_kw) -> dict:
    """Weird-token counts (`neurons.weird_tokens`) of a model's processed weights in float32
    and rounded to bfloat16, and how many tokens lie within bf16's relative rounding
    (2^-8) of either threshold: only those can change class."""
    import torch

    from analysis.core.engine import Forward, Weights
    from analysis.core.models import load_model
    from analysis.families.neurons import W_E_THRESHOLD, W_U_THRESHOLD, weird_tokens

    m = load_model(model, **load_kw)
    w32 = Weights.from_bridge(m.bridge, m.info["rotary_pct"])
    w16 = Forward(w32, "bfloat16", native=False).w
    a, b = weird_tokens(w32.W_U, w32.W_E), weird_tokens(w16.W_U, w16.W_E)
    u, e = torch.as_tensor(a["w_u_norm"]), torch.as_tensor(a["w_e_norm"])
    rel = 2.0 ** -8
    band = int(((u - W_U_THRESHOLD).abs() <= rel * W_U_THRESHOLD).sum()
               + ((e - W_E_THRESHOLD).abs() <= rel * W_E_THRESHOLD).sum())
    return {"float32": {k: len(a[k]) for k in ("w_u", "w_e", "all")},
            "bfloat16": {k: len(b[k]) for k in ("w_u", "w_e", "all")}, "tokens_in_band": band}


def emulation_check() -> dict:
    """Per-example losses on `tiny` (20 fixture examples, the context neuron and one last-layer
    neuron mean-ablated): max |difference| of float32, emulated bf16 and native bf16."""
    import numpy as np

    from analysis.core.data import CORPORA, load_corpus
    from analysis.core.engine import Forward, Weights, make_batches, per_example_losses, set_neurons
    from analysis.core.models import load_model
    from analysis.core.runner import tokenize_examples

    m = load_model("tiny")
    w = Weights.from_bridge(m.bridge, m.info["rotary_pct"])
    toks, _ = tokenize_examples(m, load_corpus(CORPORA["fixture"]["german"], None).examples, 20)
    batches = make_batches(toks, 4096, 1)
    variants = {"L3N669": {"blocks.3.mlp.hook_post": set_neurons([669], 0.0)},
                "L5N1336": {"blocks.5.mlp.hook_post": set_neurons([1336], 0.0)}}
    out = {mode: per_example_losses(Forward(w, dt_, native=nat), batches, variants, show_progress=False)
           for mode, dt_, nat in (("float32", "float32", False), ("emulated", "bfloat16", False),
                                  ("native", "bfloat16", True))}

    def gap(a, b):
        return float(max(np.abs(out[a][k] - out[b][k]).max() for k in out[a]))

    return {"examples": len(toks), "float32_vs_emulated": gap("float32", "emulated"),
            "float32_vs_native": gap("float32", "native"), "emulated_vs_native": gap("emulated", "native")}


def sig(x: float, digits: int = 2) -> float:
    """`x` rounded up to `digits` significant digits (a tolerance never shrinks by rounding)."""
    if x <= 0:
        return 0.0
    e = math.floor(math.log10(x)) - digits + 1
    return math.ceil(x / 10 ** e) * 10 ** e


def build_policy(runs: dict, factor: float, counts: dict) -> dict:
    """The policy: per family, the largest |bf16 - fp32| over every run's metrics and the
    metric it came from, the largest relative one among metrics of at least `REL_FROM`, and
    the tolerance `abs = max(factor x largest, floor)`, `rel = factor x largest relative`."""
    fams: dict[str, dict] = {f: {"max_measured": 0.0, "max_measured_metric": None, "n_metrics": 0,
                                 "max_relative": 0.0, "max_relative_metric": None}
                             for f in reg.FAMILY_UNITS}
    for label, r in runs.items():
        m32, m16 = r["float32"]["metrics"], r["bfloat16"]["metrics"]
        for name in sorted(set(m32) & set(m16)):
            fam = reg.metric_family(name)
            f = fams[fam]
            d = abs(m16[name] - m32[name])
            f["n_metrics"] += 1
            if d > f["max_measured"] or f["max_measured_metric"] is None:
                f["max_measured"], f["max_measured_metric"] = d, f"{label}: {name}"
            if REL_FROM[fam] is not None and abs(m32[name]) >= REL_FROM[fam] and \
                    d / abs(m32[name]) > f["max_relative"]:
                f["max_relative"], f["max_relative_metric"] = d / abs(m32[name]), f"{label}: {name}"
    for label, c in counts.items():  # weird-token counts measured from the weights
        f = fams["count"]
        for k in ("w_u", "w_e", "all"):
            d = abs(c["bfloat16"][k] - c["float32"][k])
            f["n_metrics"] += 1
            if d > f["max_measured"]:
                f["max_measured"], f["max_measured_metric"] = d, f"{label}: weights {k}"
    floors = dict(FLOORS, count=max([c["tokens_in_band"] for c in counts.values()] or [0]))
    for name, f in fams.items():
        f["unit"] = reg.FAMILY_UNITS[name]
        f["floor"] = floors[name]
        f["abs"] = max(sig(factor * f["max_measured"]), floors[name])
        f["rel"] = sig(factor * f["max_relative"])
        if name == "count":
            f["abs"] = int(math.ceil(f["abs"]))
    return fams


def print_run(label: str, r: dict) -> None:
    """Every metric of one configuration: float32, bfloat16, difference (stdout)."""
    m32, m16 = r["float32"]["metrics"], r["bfloat16"]["metrics"]
    print(f"\n## {label}: float32 {r['float32']['wall_s']} s, bfloat16 {r['bfloat16']['wall_s']} s")
    print(f"{'metric':<62} {'float32':>14} {'bfloat16':>14} {'difference':>12}")
    for name in sorted(set(m32) & set(m16)):
        print(f"{name:<62} {m32[name]:>14.8g} {m16[name]:>14.8g} {m16[name] - m32[name]:>12.3g}")


def markdown(policy: dict) -> str:
    """docs/BF16.md: the policy's families, the checks, every measured metric."""
    fams, runs = policy["families"], policy["runs"]
    lines = [
        "# bfloat16 vs float32: measured differences and the tolerance policy", "",
        "Generated by `PYTHONPATH=. python scripts/bf16_tolerance.py --write` "
        f"({policy['created']}, torch {policy['environment']['torch']}, "
        f"{policy['environment']['device']}, bf16 GEMMs {policy['environment']['matmul']}). "
        "Do not edit by hand; rerun the script.", "",
        "`--dtype bfloat16` loads and processes the model in float32, casts the engine's weights "
        "to bf16 and runs the forward pass's matmuls in bf16; the residual stream, LayerNorm, "
        "softmax, GELU, log-sum-exp, losses and every statistic stay float32 "
        "(`analysis/core/precision.py`). The committed baselines are float32, so a bfloat16 run "
        "is checked against them with each tolerance widened by the policy in "
        "`baselines/tolerance/bf16.json`: per metric family, "
        f"{policy['factor']:g} x the largest difference measured here (at least the family's "
        f"floor), plus {policy['factor']:g} x the largest relative difference among its metrics "
        "of at least unit size times the baseline value. Both models measured have random (or "
        "planted) weights and small logits; a trained model's larger logits round with larger "
        "absolute errors, so re-measure with `--also pythia-70m` where its weights are available. "
        "For `pythia-70m` the seed baseline's own tolerances (half a printed unit plus 1e-3 of "
        "the value) are larger than this policy's. TF32 (`--tf32 on`, CUDA float32) rounds matmul operands to a 10-bit "
        "mantissa, finer than bf16's 7 bits, so the bf16 policy bounds it too; it was not "
        "measured here (no GPU).", "",
        f"Measured on: {policy['measured_on']}.", "",
        "| Family | Unit | Metrics compared | Largest difference | Where | Largest relative (values of size ≥ 1) "
        "| Floor | Tolerance added |",
        "|:--|:--|--:|--:|:--|--:|--:|:--|",
    ]
    for name, f in fams.items():
        rel = f"{f['max_relative']:.3g} ({f['max_relative_metric']})" if f["max_relative_metric"] else "—"
        lines.append(f"| {name} | {f['unit']} | {f['n_metrics']} | {f['max_measured']:.3g} | "
                     f"{f['max_measured_metric'] or '—'} | {rel} | {f['floor']:.3g} | "
                     f"{f['abs']:.3g} + {f['rel']:.3g} x abs(value) |")
    em = policy["emulation_check"]
    lines += ["", "Emulation check (`tiny`, per-example losses of "
              f"{em['examples']} German fixture examples, two ablations, max |difference| in nats): "
              f"float32 vs emulated bf16 {em['float32_vs_emulated']:.3g}, float32 vs native bf16 "
              f"{em['float32_vs_native']:.3g}, emulated vs native bf16 {em['emulated_vs_native']:.3g}: "
              "the CPU emulation is another bf16 rounding of the same size as the native GEMMs', "
              "not closer to float32.", ""]
    for label, c in policy["weird_tokens"].items():
        lines.append(f"Weird tokens of `{label}`'s weights (W_U norm > 15 or W_E norm < threshold): "
                     f"float32 {c['float32']['all']}, bfloat16 {c['bfloat16']['all']}; "
                     f"{c['tokens_in_band']} tokens within bf16 rounding (2^-8) of a threshold.")
    for label, r in runs.items():
        lines += ["", f"## {label}", "",
                  f"{r['description']}. Wall time float32 {r['wall_s']['float32']} s, bfloat16 "
                  f"{r['wall_s']['bfloat16']} s; {r['n_metrics']} metrics, {r['n_identical']} "
                  "bit-identical.", "",
                  "| Metric | Family | float32 | bfloat16 | Difference |", "|:--|:--|--:|--:|--:|"]
        for row in r["metrics"]:
            lines.append(f"| `{row['metric']}` | {row['family']} | {row['float32']:.8g} | "
                         f"{row['bfloat16']:.8g} | {row['difference']:.3g} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", default=os.environ.get("GERMAN_NEURON_TOKENIZER"))
    ap.add_argument("--data-dir", default=os.environ.get("GERMAN_NEURON_DATA_DIR"))
    ap.add_argument("--out", default=str(REPO / "build" / "bf16-tolerance"))
    ap.add_argument("--skip-planted", action="store_true")
    ap.add_argument("--also", action="append", default=[], metavar="MODEL",
                    help="another model (e.g. pythia-70m, a checkpoint folder) measured like the "
                         "planted control (seed corpus, PLANTED_STEPS); repeatable")
    ap.add_argument("--factor", type=float, default=4.0)
    ap.add_argument("--write", action="store_true", help="write baselines/tolerance/bf16.json and docs/BF16.md")
    args = ap.parse_args()
    out = Path(args.out)
    import torch

    # Every step, as a partial run: no figures, and no regression check (which reads the
    # policy this script writes).
    every = tuple(spec.name for spec in STEPS)
    runs_raw = {"tiny": run_pair("tiny", "tiny", "fixture", out, steps=every, neuron=Neuron.parse("L3N669"))}
    descriptions = {"tiny": "`tiny`, fixture corpus, quick profile, every step"}
    counts = {"tiny": weird_band("tiny")}
    if not args.skip_planted:
        if not (args.tokenizer and args.data_dir):
            sys.exit("pythia-70m-planted needs --tokenizer and --data-dir (or --skip-planted)")
        kw = {"tokenizer": args.tokenizer, "data_dir": args.data_dir}
        runs_raw["pythia-70m-planted"] = run_pair(
            "pythia-70m-planted", "pythia-70m-planted", "seed", out, steps=PLANTED_STEPS,
            neuron=Neuron.parse("L3N669"), studied=(), **kw)
        descriptions["pythia-70m-planted"] = ("`pythia-70m-planted` (plant L3N669), seed corpus, quick "
                                              f"profile, steps {', '.join(PLANTED_STEPS)} and their "
                                              "dependencies")
        counts["pythia-70m-planted"] = weird_band("pythia-70m-planted", **kw)
    for model in args.also:
        kw = {"tokenizer": args.tokenizer, "data_dir": args.data_dir}
        label = Path(model).name
        runs_raw[label] = run_pair(label, model, "seed", out, steps=PLANTED_STEPS,
                                   neuron=Neuron.parse("L3N669"), studied=(), **kw)
        descriptions[label] = (f"`{model}`, seed corpus, quick profile, steps {', '.join(PLANTED_STEPS)} "
                               "and their dependencies")
        counts[label] = weird_band(model, **kw)
    for label, r in runs_raw.items():
        print_run(label, r)
    em = emulation_check()
    fams = build_policy(runs_raw, args.factor, counts)
    print("\n## per family (largest |bfloat16 - float32|; tolerance added = "
          f"max({args.factor:g} x largest, floor) + {args.factor:g} x largest relative x |value|)")
    for name, f in fams.items():
        print(f"{name:<17} {f['n_metrics']:>4} metrics  largest {f['max_measured']:<10.3g} "
              f"({f['max_measured_metric']})  largest relative {f['max_relative']:.3g} "
              f"({f['max_relative_metric']})  floor {f['floor']:.3g}  tolerance {f['abs']:.3g} "
              f"+ {f['rel']:.3g} x |value| ({f['unit']})")
    print(f"\nweird tokens: {json.dumps(counts)}")
    print(f"emulation check (nats): {json.dumps(em)}")
    runs = {}
    for label, r in runs_raw.items():
        m32, m16 = r["float32"]["metrics"], r["bfloat16"]["metrics"]
        rows = [{"metric": k, "family": reg.metric_family(k), "float32": m32[k], "bfloat16": m16[k],
                 "difference": m16[k] - m32[k]} for k in sorted(set(m32) & set(m16))]
        runs[label] = {"description": descriptions[label],
                       "wall_s": {d: r[d]["wall_s"] for d in ("float32", "bfloat16")},
                       "model_info": {d: r[d]["model_info"] for d in ("float32", "bfloat16")},
                       "n_metrics": len(rows), "n_identical": sum(x["difference"] == 0 for x in rows),
                       "metrics": rows}
    device = "cpu"
    policy = {
        "schema_version": 1, "policy": "bf16",
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        "description": "Tolerance added to a float32 baseline's when the run's precision differs "
                       "(bfloat16, or TF32 in effect): per metric family, abs + rel x |baseline value|.",
        "measured_with": "PYTHONPATH=. python scripts/bf16_tolerance.py --write",
        "measured_on": "; ".join(descriptions.values()) + f"; on {device}, bf16 GEMMs emulated",
        "factor": args.factor,
        "environment": {"torch": torch.__version__, "device": device, "matmul": "emulated"},
        "families": fams, "weird_tokens": counts, "emulation_check": em, "runs": runs,
    }
    if args.write:
        POLICY.parent.mkdir(parents=True, exist_ok=True)
        POLICY.write_text(json.dumps(policy, indent=1) + "\n")
        DOC.write_text(markdown(policy))
        print(f"\nwrote {POLICY.relative_to(REPO)} and {DOC.relative_to(REPO)}")


if __name__ == "__main__":
    main()
