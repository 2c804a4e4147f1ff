"""`german-neuron bench` (`nox -s bench`): how fast the engine is, measured side by side.

Five figures (issue 5), all measured in one run on `pythia-70m-random` and real text:

1. `speedup`: the nine mean ablations of the seed's German-neuron table (the context
   neuron, then each of the 8 German neurons, the context neuron among them again) on the
   same German examples, run the seed's way (`haystack_utils.get_ablated_performance`:
   per example, batch 1, the bridge's `return_type="loss"` with and without the hook)
   and by the engine (`per_example_losses`, as the `ablation` step calls it: the repeated
   context-neuron edit once); every loss pair must agree to 1e-4 relative.
2. `efficiency`: the engine's full forward (to the per-token loss) in tokens/s over the
   same batches as a bare batched Hugging Face forward of the same checkpoint (no hooks,
   logits returned).
3. `limit_ratio`: the engine's forward FLOP/s (counted from the model's shape) over the
   machine's fp32 matmul FLOP/s (a 2048 x 2048 x 2048 `torch.mm`).
4. `passes_ratio`: tokens forwarded by a whole quick-profile report (read from each
   artifact's `cost`) over the tokens the seed's code path forwards for the same analyses
   (`SEED_PASSES`).
5. `peak_rss_gb`: peak resident memory of that report (a child process), and
   `paper_peak_rss_gb_estimate`: the worst per-batch working set any profile can form
   plus the largest growth of kept data from quick to paper sizes (see `memory_detail`).

Nothing here is a test: it prints figures and writes `bench.json`; the targets are
printed beside them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing as mp
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..controls import sources  # noqa: F401  (registers the controls' models with core.models)
from ..core.config import GERMAN_NEURONS, Neuron, Profile, RunConfig, get_profile
from ..core.engine import Batch, Forward, Weights, per_example_losses, set_neurons

TARGETS = {"speedup": (">=", 5.0), "efficiency": (">=", 0.85), "limit_ratio": (">=", 0.5),
           "passes_ratio": ("<=", 0.4), "paper_peak_rss_gb_estimate": ("<=", 6.0)}
CONTEXT = Neuron(3, 669)


# ------------------------------------------------------------------ the nine ablations


def nine_ablations(english_means: dict[str, float]) -> list[tuple[str, Neuron, float]]:
    """(row name, neuron, value) of the seed's German-neuron table: the context neuron's
    own cell, then the 8 German neurons (seed `german_neurons`, L3N669 last), each set to
    its English mean."""
    rows = [("context L3N669", CONTEXT, english_means[str(CONTEXT)])]
    rows += [(str(n), n, english_means[str(n)]) for n in GERMAN_NEURONS]
    return rows


def seed_style_losses(bridge, token_lists: Sequence[Sequence[int]],
                      ablations: Sequence[tuple[str, Neuron, float]],
                      show_progress: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The seed's `get_ablated_performance` loop for each ablation: per example, batch 1,
    `model(tokens, return_type="loss")` without and with the mean-ablation hook.

    Returns:
        {row: (original [n_examples], ablated [n_examples])} per-example mean losses (nats).
    """
    from tqdm.auto import tqdm

    out = {}
    with torch.inference_mode():
        for name, nrn, value in ablations:
            def hook(act, hook=None, idx=nrn.index, v=value):
                act[:, :, idx] = v
                return act

            orig, abl = [], []
            for toks in tqdm(token_lists, desc=f"seed-style {name}", disable=not show_progress, leave=False):
                x = torch.tensor([list(toks)], dtype=torch.long, device=bridge.cfg.device)
                orig.append(float(bridge(x, return_type="loss")))
                abl.append(float(bridge.run_with_hooks(x, return_type="loss",
                                                       fwd_hooks=[(nrn.hook(), hook)])))
            out[name] = (np.array(orig), np.array(abl))
    return out


def engine_losses(fwd: Forward, batches: Sequence[Batch], ablations: Sequence[tuple[str, Neuron, float]],
                  show_progress: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The same nine rows by the engine, as the `ablation` step computes them: one
    unablated pass per batch, each distinct ablation once (the context neuron's own row and
    its row among the German neurons are the same edit), restarted at its layer, or, for
    last-layer neurons, the exact last-layer shortcut with no forward pass."""
    distinct = {(str(nrn), value): {nrn.hook(): set_neurons([nrn.index], value)}
                for _, nrn, value in ablations}
    names = {key: f"v{i}" for i, key in enumerate(distinct)}
    res = per_example_losses(fwd, batches, {names[k]: v for k, v in distinct.items()},
                             desc="engine ablations", show_progress=show_progress)
    return {name: (res["original"], res[names[(str(nrn), value)]]) for name, nrn, value in ablations}


# ------------------------------------------------------------------ throughput and FLOPs


def forward_flops(w: Weights, batches: Sequence[Batch]) -> float:
    """FLOPs of a full forward with the loss over `batches`, counted on real tokens only
    (multiply-add = 2): per token and layer the Q/K/V/O projections `8 d_model²`, the MLP
    `4 d_model d_mlp`, causal attention scores and mixing `4 d_model (t+1)/2` on average
    at position t; plus the unembedding `2 d_model d_vocab` per position with a target."""
    d, d_mlp, n_layers = w.W_E.shape[1], w.d_mlp, w.n_layers
    d_vocab = w.W_U.shape[1]
    total = 0.0
    for b in batches:
        for n in b.lengths.tolist():
            per_layer = n * (8 * d * d + 4 * d * d_mlp) + 4 * d * n * (n + 1) / 2
            total += n_layers * per_layer + 2 * d * d_vocab * max(n - 1, 0)
    return total


def matmul_flops_per_s(n: int = 2048, seconds: float = 2.0, rounds: int = 3, device: str = "cpu") -> float:
    """The machine's sustained fp32 matmul rate: `[n, n] @ [n, n]` (2 n³ FLOPs) repeated for
    about `seconds` per round, best round of `rounds` (sustained like the engine's timed
    passes, which last seconds, rather than one burst of 50 ms)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)
    _sync(device)
    t0 = time.perf_counter()
    torch.mm(a, b)
    _sync(device)
    reps = max(1, int(seconds / max(time.perf_counter() - t0, 1e-6)))
    best = 0.0
    for _ in range(rounds):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        _sync(device)
        best = max(best, reps * 2 * n**3 / (time.perf_counter() - t0))
    return best


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_best(fn: Callable[[], object], repeats: int, device: str = "cpu") -> float:
    """Best wall time (s) of `repeats` calls after one warm-up call."""
    fn()
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def engine_forward(fwd: Forward, batches: Sequence[Batch]) -> None:
    """A full forward to the per-token loss over every batch (what every loss pass does)."""
    with torch.inference_mode():
        for b in batches:
            fwd.token_losses(fwd.run(b.tokens), b.tokens, b.lengths)


def hf_forward(hf_model, batches: Sequence[Batch]) -> None:
    """Hugging Face's own batched forward, no hooks, logits returned (attention mask for the
    right padding)."""
    with torch.inference_mode():
        for b in batches:
            mask = (torch.arange(b.tokens.shape[1], device=b.tokens.device)[None] < b.lengths[:, None]).long()
            _ = hf_model(input_ids=b.tokens, attention_mask=mask).logits


# ------------------------------------------------------------------ passes


def seed_passes(step: str, art: dict, n_layers: int) -> list[tuple[str, int | None, float]]:
    """Full forward passes per example the seed's code makes for what `step` computed, as
    `[(language, examples, passes per example)]`. From the seed's cells:

    - discovery (not in the seed; its way): `get_mlp_activations` once per layer -> n_layers;
    - activations: `get_mlp_activations` for each of layers 3-5 -> 3 per language;
    - ablation: `get_ablated_performance`, original and ablated per variant -> 2 each,
      including the backup pairs (computed in the ablation step's pass; `backup` itself
      forwards nothing and is counted there);
    - dla: `DLA` original and ablated (2) plus `get_direct_loss_increase_for_component`
      (original and patched, 2) per component;
    - l3_tokens: `get_unembed_differences`, with ACTIVATE and ABLATE hooks -> 2;
    - probes_ablated: `get_mlp_activations` under the ablation hook, layers 3-5 -> 3;
    - downstream: `compare_activations`, activated and deactivated -> 2;
    - neurons: `get_mlp_context_shift`'s activations for layers 4 and 5, activated and
      deactivated (4 per shift example); per example search (one per seed
      `get_examples_by_neuron` cell, over its own pool) `get_mlp_loss_difference` (2 per
      example) and `highlight_mlp_difference` on its top examples (4 each);
    - probes, English/French probes, correlations, unigrams: 0 (the seed reuses the first
      cell's full activation tensors or only counts tokens).
    """
    p = art["provenance"]["params"]
    r = art["result"]
    tk = p.get("tokens") or {}

    def n(lang: str, rec: dict | None = None) -> int:
        rec = rec if rec is not None else tk[lang]
        return int(rec["requested"])

    if step == "discovery":
        return [(lang, n(lang), float(n_layers)) for lang in tk]
    if step in ("activations", "probes_ablated"):
        return [(lang, n(lang), float(len(p["layers"]) if "layers" in p else 3)) for lang in tk]
    if step == "ablation":  # its German rows include the backup step's pairs
        rows = r["per_example_losses"]["rows"]
        return [(lang, n(lang), 2.0 * (len(rows[lang]) - 1)) for lang in tk]
    if step == "dla":
        return [("german", int(tk["requested"]), 2.0 + 2.0 * len(p["components"]))]
    if step == "l3_tokens":
        return [("german", int(tk["requested"]), 2.0)]
    if step == "downstream":
        return [(lang, n(lang), 2.0) for lang in tk]
    if step == "neurons":  # one get_examples_by_neuron per search, over its own pool
        top = int(p["top_examples"])
        out = [(lang, n(lang, rec), 4.0) for lang, rec in tk["shift"].items()]
        for entry in p.get("plan") or []:
            for x in entry["searches"]:
                ex = min(int(x["seed_pool"]), int(p["neuron_examples"]))
                out.append((x["language"], ex, 2.0 + 4.0 * top / max(ex, 1)))
        return out
    return []


def token_total(run_tokens: Callable[[str, int | None], tuple[list, dict]], lang: str, n: int | None) -> int:
    toks, _ = run_tokens(lang, n)
    return sum(len(t) for t in toks)


def passes_table(arts: dict[str, dict], run_tokens, n_layers: int) -> list[dict]:
    """Per step: tokens forwarded by the engine (`cost.tokens_forwarded`: tokens x blocks
    run / n_layers, padding included) and by the seed's code path (full passes x tokens),
    and rows unembedded by each."""
    rows = []
    for step, art in arts.items():
        cost = art.get("cost") or {}
        seed = sum(passes * token_total(run_tokens, lang, n)
                   for lang, n, passes in seed_passes(step, art, n_layers))
        seed_rows = sum(passes * (token_total(run_tokens, lang, n) - len(run_tokens(lang, n)[0]))
                        for lang, n, passes in seed_passes(step, art, n_layers))
        rows.append({"step": step, "engine_tokens": float(cost.get("tokens_forwarded", 0.0)),
                     "seed_tokens": float(seed),
                     "engine_unembedded_rows": float(cost.get("unembedded_rows", 0)),
                     "seed_unembedded_rows": float(seed_rows),
                     "peak_rss_bytes": cost.get("peak_rss_bytes")})
    return rows


# ------------------------------------------------------------------ memory


def scaled_profile(profile: Profile, factor: int) -> Profile:
    """`profile` with every sample size multiplied by `factor` (a new name)."""
    sizes = {k: (v * factor if isinstance(v, int) and k in _SIZE_FIELDS and v is not None else v)
             for k, v in dataclasses.asdict(profile).items()}
    sizes["name"] = f"{profile.name}x{factor}"
    return Profile(**sizes)


_SIZE_FIELDS = ("activation_examples", "probe_samples", "loss_examples", "dla_examples",
                "downstream_examples", "shift_examples", "neuron_examples")

# What each step's memory can grow with. Discovery holds every neuron's activations for the
# probe's samples: its size is `probe_samples` (it reads only the examples that fill them).
STEP_FIELD_SIZE = {"discovery": "probe_samples"}

# The example sets each other step reads, as (profile field, languages); None: all examples.
STEP_INPUTS: dict[str, list[tuple[str | None, tuple[str, ...]]]] = {
    "activations": [("activation_examples", ("german", "english"))],
    "probes": [("activation_examples", ("german", "english"))],
    "ablation": [("loss_examples", ("german", "english"))],
    "backup": [("loss_examples", ("german",))],
    "dla": [("dla_examples", ("german",))],
    "l3_tokens": [("dla_examples", ("german",))],
    "unigrams": [(None, ("german", "english"))],
    "probes_ablated": [("activation_examples", ("german", "english"))],
    "probes_english_neurons": [("activation_examples", ("german", "english"))],
    "probes_french_neurons": [("activation_examples", ("english", "french"))],
    "correlations": [("activation_examples", ("german", "english"))],
    "downstream": [("downstream_examples", ("german", "english"))],
    "neurons": [("shift_examples", ("german", "english")), ("neuron_examples", ("german", "english"))],
}


def step_sizes(profile: Profile, run_tokens) -> dict[str, int]:
    """What each step's memory can grow with under `profile`: the tokens it reads, or for
    the steps in `STEP_FIELD_SIZE` that profile field's value."""
    out = {step: int(getattr(profile, fld)) for step, fld in STEP_FIELD_SIZE.items()}
    for step, inputs in STEP_INPUTS.items():
        total = 0
        for fld, langs in inputs:
            n = None if fld is None else getattr(profile, fld)
            for lang in langs:
                try:
                    total += token_total(run_tokens, lang, n)
                except KeyError:  # a corpus this run does not have (French)
                    pass
        out[step] = total
    return out


def linear_growth(size_a: float, value_a: float, size_b: float, value_b: float, size_target: float) -> float:
    """Growth of a quantity from `size_a` to `size_target`, linear through two measurements
    (a falling quantity does not grow: 0)."""
    if size_b <= size_a:
        return 0.0
    slope = max(0.0, (value_b - value_a) / (size_b - size_a))
    return slope * max(0.0, size_target - size_a)


def kept_bytes(art: dict, out: Path) -> int:
    """Bytes of the arrays a step's artifact keeps (what it holds at its end, besides JSON)."""
    return sum((out / "artifacts" / f"{art['step']}.{name}.npy").stat().st_size
               for name in (art.get("arrays") or {}))


def _worst_batch_child(cfg: RunConfig, queue) -> None:
    """Child process: the peak memory of the largest batch any profile can form
    (`batch_tokens // n_ctx` rows of `n_ctx` tokens) through the engine's heaviest
    per-batch operations: a forward capturing every layer's `hook_post` (discovery), and a
    loss pass with a variant restarted at a middle layer and a last-layer shortcut variant."""
    try:
        from ..core.config import Neuron
        from ..core.engine import Batch
        from ..core.models import load_model
        from ..core.runner import peak_rss_bytes, reset_peak_rss

        model = load_model(cfg.model, cfg.tokenizer, cfg.device, cfg.profile.seed)
        w = Weights.from_bridge(model.bridge, model.info["rotary_pct"])
        fwd = Forward(w)
        n = model.n_ctx
        rows = max(1, cfg.profile.batch_tokens // n)
        g = torch.Generator().manual_seed(0)
        toks = torch.randint(0, w.W_U.shape[1], (rows, n), generator=g)
        batch = Batch(toks, torch.full((rows,), n), list(range(rows)))
        base = peak_rss_bytes() or 0
        reset_peak_rss()
        mid, last = Neuron(w.n_layers // 2, 0), Neuron(w.n_layers - 1, 0)
        with torch.inference_mode():
            cap = {f"blocks.{layer}.mlp.hook_post": None for layer in range(w.n_layers)}
            fwd.run(toks, capture=cap)
            del cap
            per_example_losses(fwd, [batch], {
                "mid": {mid.hook(): set_neurons([0], 0.0)}, "last": {last.hook(): set_neurons([0], 0.0)}},
                show_progress=False)
        queue.put({"peak_rss_bytes": peak_rss_bytes(), "after_load_bytes": base,
                   "batch": [rows, n]})
    except BaseException as exc:  # reported by the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def _report_child(cfg: RunConfig, queue) -> None:
    """Child process: one report run from an empty folder; sends back its peak and wall."""
    from .pipeline import run_report

    try:
        res = run_report(cfg, render=True, show_progress=False, log=lambda s: None)
        queue.put({"peak_rss_bytes": res["peak_rss_bytes"], "wall_s": res["wall_s"]})
    except BaseException as exc:  # reported by the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def run_report_in_child(cfg: RunConfig, target: Callable = _report_child) -> dict:
    """Run a report (or another `target(cfg, queue)`) in a fresh (spawned) process, so its
    peak memory is its own."""
    from ..core.errors import ReportError

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=target, args=(cfg, q))
    proc.start()
    res = q.get()
    proc.join()
    if "error" in res:
        raise ReportError(f"the benchmark's report run failed: {res['error']}")
    return res


def _load_artifacts(out: Path) -> dict[str, dict]:
    arts = {}
    for p in sorted((out / "artifacts").glob("*.json")):
        a = json.loads(p.read_text())
        if "step" in a and "cost" in a:
            arts[a["step"]] = a
    return arts


# ------------------------------------------------------------------ the benchmark


def run_bench(model_name: str, tokenizer: str | None, data_dir: str | None, out: Path,
              examples: int | None = None, device: str = "cpu", repeats: int = 3,
              report_runs: bool = True, log: Callable[[str], None] = print,
              show_progress: bool = True) -> dict:
    """Measure the five figures and write `out/bench.json` (atomically).

    Args:
        examples: German examples for the speedup and throughput parts (default: the
            quick profile's `loss_examples`, 40).
        report_runs: also run the quick-profile report and its doubled-size variant in
            child processes (passes and memory); False skips figures 4 and 5.

    Raises:
        UsageError / DataError / ModelUnavailableError: as `german-neuron report`.
    """
    from ..core.artifacts import atomic_write_text, library_versions
    from ..core.data import CORPORA, load_corpus
    from ..core.models import load_model
    from ..core.runner import Run
    from ..families.activations import collect_mlp_activations

    quick = get_profile("quick")
    n_ex = examples or quick.loss_examples
    out.mkdir(parents=True, exist_ok=True)
    corpora = {lang: load_corpus(name, data_dir) for lang, name in CORPORA["seed"].items()}
    model = load_model(model_name, tokenizer, device, quick.seed)
    w = Weights.from_bridge(model.bridge, model.info["rotary_pct"])
    fwd = Forward(w)
    cfg = RunConfig(model=model_name, neuron=CONTEXT, profile=quick, device=device,
                    tokenizer=tokenizer, data_dir=data_dir)
    run = Run(cfg, model, fwd, corpora, None, (), log, show_progress)
    result: dict = {"model": model_name, "model_info": model.info, "device": device,
                    "threads": torch.get_num_threads(), "platform": platform.platform(),
                    "libraries": library_versions(), "examples": n_ex}

    # English means for the mean ablations (seed: english_activations[layer][:, n].mean()).
    en, _ = run.tokens("english", quick.activation_examples)
    neurons = list(dict.fromkeys([CONTEXT, *GERMAN_NEURONS]))
    samples, _, _ = collect_mlp_activations(fwd, run.batches(en), [n.layer for n in neurons], neurons,
                                            (quick.crop_start, quick.crop_end), show_progress=False)
    means = {str(n): float(samples[:, i].mean()) for i, n in enumerate(neurons)}
    ablations = nine_ablations(means)

    de, _ = run.tokens("german", n_ex)
    n_tokens = sum(len(t) for t in de)
    log(f"[1/5] speedup: {len(ablations)} ablations x {len(de)} German examples ({n_tokens:,} tokens)")
    t0 = time.perf_counter()
    seed_res = seed_style_losses(model.bridge, de, ablations, show_progress)
    t_seed = time.perf_counter() - t0
    t0 = time.perf_counter()
    eng_res = engine_losses(fwd, run.batches(de), ablations, show_progress)
    t_engine = time.perf_counter() - t0
    pairs, worst = [], 0.0
    for name, _, _ in ablations:
        for kind, i in (("original", 0), ("ablated", 1)):
            a, b = seed_res[name][i], eng_res[name][i]
            rel = float(np.max(np.abs(a - b) / np.abs(a)))
            worst = max(worst, rel)
            pairs.append({"row": name, "loss": kind, "seed_style": float(a.mean()),
                          "engine": float(b.mean()), "max_rel_diff_per_example": rel})
    result["speedup_detail"] = {"seed_style_s": t_seed, "engine_s": t_engine, "pairs": pairs,
                                "max_rel_diff": worst, "agree_1e-4": worst <= 1e-4}
    result["speedup"] = t_seed / t_engine

    log("[2/5] efficiency and [3/5] limit ratio")
    from transformers import GPTNeoXForCausalLM

    hf = GPTNeoXForCausalLM.from_pretrained(str(model.checkpoint), dtype=torch.float32).to(device).eval()
    batches = run.batches(de)
    t_eng = time_best(lambda: engine_forward(fwd, batches), repeats, device)
    t_hf = time_best(lambda: hf_forward(hf, batches), repeats, device)
    del hf
    flops = forward_flops(w, batches)
    peak = matmul_flops_per_s(device=device)
    result["efficiency_detail"] = {"tokens": n_tokens, "batches": len(batches),
                                   "engine_tokens_per_s": n_tokens / t_eng,
                                   "hf_tokens_per_s": n_tokens / t_hf,
                                   "hf_attn_implementation": "transformers default"}
    result["efficiency"] = t_hf / t_eng
    result["limit_detail"] = {"forward_flops": flops, "engine_flops_per_s": flops / t_eng,
                              "matmul_flops_per_s": peak,
                              "matmul": "fp32 2048x2048 @ 2048x2048, best of 3 rounds of ~2 s"}
    result["limit_ratio"] = flops / t_eng / peak

    if report_runs:
        log("[4/5] passes and [5/5] memory: quick-profile report in a child process ...")
        runs = {}
        for factor in (1, 2):
            prof = quick if factor == 1 else scaled_profile(quick, factor)
            folder = out / f"report-{prof.name}"
            if folder.exists():
                import shutil

                shutil.rmtree(folder)
            rc = dataclasses.replace(cfg, profile=prof, out=str(folder))
            child = run_report_in_child(rc)
            runs[factor] = {"profile": prof, "child": child, "arts": _load_artifacts(folder)}
            log(f"  {prof.name}: {child['wall_s']:.1f} s, peak {child['peak_rss_bytes'] / 2**30:.2f} GiB")
        table = passes_table(runs[1]["arts"], run.tokens, w.n_layers)
        eng_total = sum(r["engine_tokens"] for r in table)
        seed_total = sum(r["seed_tokens"] for r in table)
        result["passes_detail"] = {"steps": table, "engine_tokens": eng_total, "seed_tokens": seed_total,
                                   "engine_unembedded_rows": sum(r["engine_unembedded_rows"] for r in table),
                                   "seed_unembedded_rows": sum(r["seed_unembedded_rows"] for r in table)}
        result["passes_ratio"] = eng_total / seed_total
        peaks = {s: float(a["cost"]["peak_rss_bytes"]) for s, a in runs[1]["arts"].items()
                 if a["cost"].get("peak_rss_bytes")}
        sizes = {f: step_sizes(runs[f]["profile"], run.tokens) for f in runs}
        paper_sizes = step_sizes(get_profile("paper"), run.tokens)
        kept = {f: {s: kept_bytes(a, out / f"report-{runs[f]['profile'].name}") for s, a in runs[f]["arts"].items()}
                for f in runs}
        growth = {}
        for s in peaks:
            a, b, t = sizes[1].get(s, 0), sizes[2].get(s, 0), paper_sizes.get(s, 0)
            growth[s] = linear_growth(a, kept[1].get(s, 0), b, kept[2].get(s, 0), t)
        # Discovery holds every neuron's activations for the probe's samples in memory
        # (float32 [probe_samples, n_layers * d_mlp] per language), not as saved arrays.
        per_sample = 2 * w.n_layers * w.d_mlp * 4
        growth["discovery"] = growth.get("discovery", 0.0) + per_sample * max(
            0, get_profile("paper").probe_samples - quick.probe_samples)
        log("  worst batch: the largest batch any profile forms, in a child process ...")
        worst = run_report_in_child(cfg, _worst_batch_child)
        top = max(growth, key=growth.get)
        base = max(*peaks.values(), worst["peak_rss_bytes"], runs[1]["child"]["peak_rss_bytes"],
                   runs[2]["child"]["peak_rss_bytes"])
        result["peak_rss_gb"] = runs[1]["child"]["peak_rss_bytes"] / 1e9
        result["paper_peak_rss_gb_estimate"] = (base + growth[top]) / 1e9
        result["memory_detail"] = {
            "quick_wall_s": runs[1]["child"]["wall_s"], "doubled_wall_s": runs[2]["child"]["wall_s"],
            "doubled_peak_rss_gb": runs[2]["child"]["peak_rss_bytes"] / 1e9,
            "worst_batch": worst["batch"], "worst_batch_peak_gb": worst["peak_rss_bytes"] / 1e9,
            "model_loaded_gb": worst["after_load_bytes"] / 1e9,
            "largest_growth_step": top,
            "steps": {s: {"quick_peak_gb": peaks[s] / 1e9, "quick_size": sizes[1].get(s),
                          "doubled_size": sizes[2].get(s), "paper_size": paper_sizes.get(s),
                          "kept_quick_mb": kept[1].get(s, 0) / 1e6, "kept_doubled_mb": kept[2].get(s, 0) / 1e6,
                          "paper_growth_gb": growth[s] / 1e9}
                      for s in peaks},
            "method": "the largest of (the quick and doubled runs' peaks, the peak of the "
                      "largest batch any profile forms: batch_tokens // n_ctx rows of n_ctx tokens "
                      "through the engine's heaviest per-batch operations) plus the largest growth "
                      "of data a step keeps from quick to paper sizes (its arrays' bytes, linear "
                      "in its size through the quick and doubled runs; for discovery also its "
                      "in-memory probe samples). Batches are capped at batch_tokens, so nothing "
                      "else grows with the number of examples.",
        }
    result["targets"] = {k: {"op": op, "target": t, "value": result.get(k),
                             "met": None if result.get(k) is None else
                             (result[k] >= t if op == ">=" else result[k] <= t)}
                         for k, (op, t) in TARGETS.items()}
    atomic_write_text(out / "bench.json", json.dumps(result, indent=1, sort_keys=True, default=str))
    return result


def print_bench(res: dict, echo: Callable[[str], None] = print) -> None:
    """The five figures, then the loss pairs of the speedup measurement."""
    sd = res["speedup_detail"]
    echo(f"model {res['model']} on {res['device']} ({res['threads']} threads), "
         f"{res['examples']} German examples")
    echo(f"{'figure':<28}{'value':>12}  target   met")
    for k, t in res["targets"].items():
        v = t["value"]
        echo(f"{k:<28}{'n/a' if v is None else f'{v:.3f}':>12}  {t['op']} {t['target']:<5} "
             f"{'-' if t['met'] is None else ('yes' if t['met'] else 'NO')}")
    echo(f"\nspeedup: seed-style loop {sd['seed_style_s']:.1f} s, engine {sd['engine_s']:.1f} s; "
         f"largest per-example relative difference {sd['max_rel_diff']:.2e} "
         f"({'within' if sd['agree_1e-4'] else 'OUTSIDE'} 1e-4)")
    echo(f"{'row':<16}{'loss':<10}{'seed-style':>12}{'engine':>12}{'max rel diff':>14}")
    for p in sd["pairs"]:
        echo(f"{p['row']:<16}{p['loss']:<10}{p['seed_style']:>12.6f}{p['engine']:>12.6f}"
             f"{p['max_rel_diff_per_example']:>14.2e}")
    ed, ld = res["efficiency_detail"], res["limit_detail"]
    echo(f"\nefficiency: engine {ed['engine_tokens_per_s']:,.0f} tok/s, Hugging Face "
         f"{ed['hf_tokens_per_s']:,.0f} tok/s ({ed['tokens']:,} tokens, {ed['batches']} batches)")
    echo(f"limit: engine {ld['engine_flops_per_s'] / 1e9:.1f} GFLOP/s, matmul "
         f"{ld['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s")
    if "passes_detail" in res:
        pd = res["passes_detail"]
        echo(f"\npasses: engine {pd['engine_tokens']:,.0f} token-passes vs seed path "
             f"{pd['seed_tokens']:,.0f}; unembedded rows {pd['engine_unembedded_rows']:,.0f} vs "
             f"{pd['seed_unembedded_rows']:,.0f}")
        echo(f"{'step':<26}{'engine':>12}{'seed path':>12}{'peak GB':>9}")
        for r in pd["steps"]:
            pk = r["peak_rss_bytes"]
            echo(f"{r['step']:<26}{r['engine_tokens']:>12,.0f}{r['seed_tokens']:>12,.0f}"
                 f"{'' if pk is None else f'{pk / 1e9:.2f}':>9}")
        md = res["memory_detail"]
        echo(f"\nmemory: quick report peak {res['peak_rss_gb']:.2f} GB ({md['quick_wall_s']:.0f} s), "
             f"doubled sizes {md['doubled_peak_rss_gb']:.2f} GB ({md['doubled_wall_s']:.0f} s); "
             f"model loaded {md['model_loaded_gb']:.2f} GB, worst batch {md['worst_batch']} "
             f"{md['worst_batch_peak_gb']:.2f} GB; largest kept-data growth to paper sizes: "
             f"{md['largest_growth_step']} +{md['steps'][md['largest_growth_step']]['paper_growth_gb']:.2f} GB; "
             f"paper estimate {res['paper_peak_rss_gb_estimate']:.2f} GB")


# ------------------------------------------------------------------ the sweep (`bench --sweep`)

# A task of about a second: a small GPT-NeoX (fixture tokenizer) on the fixture corpus.
SWEEP_BENCH_SHAPE = {"num_hidden_layers": 4, "hidden_size": 32, "num_attention_heads": 2,
                     "intermediate_size": 512}
# the n-gram sizes at their minimum too: the bench times the sweep's machinery, not the measurement
SWEEP_BENCH_SIZES = ("activation_examples=4", "probe_samples=60", "loss_examples=4", "ngram_examples=2",
                     "ngram_prompts=2", "ngram_trigrams=1", "null_german_neurons=1")
SWEEP_TARGETS = {"overhead_fraction": ("<=", 0.05)}


def bench_checkpoints(folder: Path, n: int) -> list[Path]:
    """`n` small random checkpoints (`SWEEP_BENCH_SHAPE`, seeds 0..n-1, the fixture BPE
    tokenizer) saved as Hugging Face folders under `folder` (reused when present)."""
    from ..core.models import TINY_SHAPE, _perturb_norms_and_biases, random_model
    from ..core.tiny_tokenizer import train_fixture_tokenizer

    tok = None
    paths = []
    for i in range(n):
        p = folder / f"ckpt-{i}"
        if not (p / "config.json").is_file():
            tok = tok or train_fixture_tokenizer(vocab_size=TINY_SHAPE["vocab_size"])
            model = random_model({**TINY_SHAPE, **SWEEP_BENCH_SHAPE}, i)
            _perturb_norms_and_biases(model, i)
            model.save_pretrained(p)
            tok.save_pretrained(p)
        paths.append(p)
    return paths


def _timed_batch(executor, specs: list[dict]) -> tuple[float, list[dict]]:
    """Submit every spec at once; (seconds until the last result, the task records)."""
    t0 = time.perf_counter()
    for s in specs:
        executor.submit(s)
    recs = []
    while executor.pending():
        _, rec = executor.next_done()
        if not isinstance(rec, dict) or rec["status"] != "computed":
            from ..core.errors import ReportError

            raise ReportError(f"a benchmark task did not compute: {rec}")
        recs.append(rec)
    return time.perf_counter() - t0, recs


def _sweep_specs(paths: list[Path], out: Path, threads: int) -> list[dict]:
    from .sweep.plan import plan_sweep

    plan = plan_sweep(",".join(str(p) for p in paths), "quick", neuron="L3N100", overrides=SWEEP_BENCH_SIZES,
                      corpus="fixture", out=out, threads=threads)
    return plan.tasks


def _memory_child(spec: dict, queue) -> None:
    """Child process: one sweep task from a fresh interpreter; sends back its record and the
    artifact's cost."""
    try:
        from .sweep.task import load_artifact, run_task, task_store

        rec = run_task(spec)
        art = load_artifact(task_store(spec), rec["key"])
        queue.put({"rec": rec, "cost": art["cost"], "payload_sha256": art["payload_sha256"]})
    except BaseException as exc:  # reported by the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def _in_child(target: Callable, *args) -> dict:
    from ..core.errors import ReportError

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, q))
    proc.start()
    res = q.get()
    proc.join()
    if "error" in res:
        raise ReportError(f"the benchmark's child process failed: {res['error']}")
    return res


def sweep_memory(tokenizer: str, out: Path, data_dir: str | None, log: Callable[[str], None]) -> dict:
    """Peak and measuring-time resident memory of one sweep task on `pythia-70m-random`
    (Pythia-70M's shape, the GPT-NeoX tokenizer), each in a fresh process: the weights
    cloned with the bridge kept alive (`keep_bridge`, the report's way: two copies and the
    Hugging Face model) vs taken without a copy and the bridge dropped (the sweep's way).
    The two artifacts must carry the same payload."""
    import shutil

    from ..core.models import pythia_random_checkpoint
    from .sweep.plan import plan_sweep

    path = pythia_random_checkpoint(tokenizer, 0)
    res = {}
    for mode, keep in (("bridge_kept", True), ("bridge_dropped", False)):
        store = out / f"mem-{mode}"
        shutil.rmtree(store, ignore_errors=True)
        plan = plan_sweep(str(path), "quick", neuron="L3N669", data_dir=data_dir,
                          corpus="seed" if data_dir else "fixture",
                          overrides=("activation_examples=8", "probe_samples=500", "loss_examples=8"),
                          out=store, threads=1)
        spec = {**plan.tasks[0], "keep_bridge": keep}
        log(f"  memory: {mode} ...")
        r = _in_child(_memory_child, spec)
        res[mode] = {"peak_rss_bytes": r["cost"]["peak_rss_bytes"],
                     "rss_measuring_bytes": r["cost"]["rss_measuring_bytes"],
                     "wall_s": r["rec"]["wall_s"], "payload_sha256": r["payload_sha256"]}
    res["same_payload"] = res["bridge_kept"]["payload_sha256"] == res["bridge_dropped"]["payload_sha256"]
    return res


def run_sweep_bench(out: Path, tokenizer: str | None = None, data_dir: str | None = None,
                    n_tasks: int = 8, log: Callable[[str], None] = print) -> dict:
    """`german-neuron bench --sweep`: the sweep's scheduler overhead, its scaling on this
    machine, the memory of one task before/after the single-copy fix, and the GPU line.

    - overhead: `n_tasks` tasks of about a second on a warm LocalCluster of one
      single-thread worker; per task, the end-to-end time (submission to result, divided
      by the tasks) minus the time inside the worker (`run_task`'s own wall), as a fraction
      of the latter (target <= 5%).
    - scaling: the same tasks serially in this process with 2 torch threads vs on a
      LocalCluster of 2 single-thread workers (cluster start-up reported apart).
    - memory (needs `tokenizer`): `sweep_memory`.

    Returns the figures (also written to `out/bench_sweep.json`).
    """
    import shutil

    import torch

    from .sweep.executors import SerialExecutor, available_cores, start_executor

    out = Path(out)
    ckpts = bench_checkpoints(out / "checkpoints", n_tasks + 1)
    res: dict = {"cores": available_cores(), "n_tasks": n_tasks, "platform": platform.platform(),
                 "task": {"shape": SWEEP_BENCH_SHAPE, "sizes": list(SWEEP_BENCH_SIZES), "corpus": "fixture"}}

    def fresh(name: str) -> Path:
        shutil.rmtree(out / name, ignore_errors=True)
        return out / name

    # 1. overhead: one warm worker, tasks back to back
    log("overhead: LocalCluster of 1 worker ...")
    t0 = time.perf_counter()
    ex, _ = start_executor("local", "cpu", 1, 1, n_tasks, log)
    try:
        start = time.perf_counter() - t0
        _timed_batch(ex, _sweep_specs(ckpts[-1:], fresh("overhead-warmup"), 1))  # imports, first load
        wall, recs = _timed_batch(ex, _sweep_specs(ckpts[:n_tasks], fresh("overhead"), 1))
    finally:
        ex.close()
    inside = sum(r["wall_s"] for r in recs)
    res["overhead"] = {"cluster_start_s": start, "end_to_end_s": wall, "inside_s": inside,
                       "task_s": inside / n_tasks, "per_task_overhead_s": (wall - inside) / n_tasks,
                       "overhead_fraction": (wall - inside) / inside}
    # 2. scaling: serial (2 threads) vs 2 workers x 1 thread
    log("scaling: serial, 2 threads ...")
    specs = _sweep_specs(ckpts[:n_tasks], fresh("serial"), 2)
    _timed_batch(SerialExecutor(), _sweep_specs(ckpts[-1:], fresh("serial-warmup"), 2))  # imports
    serial_s, _ = _timed_batch(SerialExecutor(), specs)
    log("scaling: LocalCluster of 2 single-thread workers ...")
    t0 = time.perf_counter()
    ex, _ = start_executor("local", "cpu", 2, 1, n_tasks, log)
    try:
        start2 = time.perf_counter() - t0
        warm_s, _ = _timed_batch(ex, _sweep_specs(ckpts[-1:], fresh("cluster-warmup"), 1) * 1)
        cluster_s, recs2 = _timed_batch(ex, _sweep_specs(ckpts[:n_tasks], fresh("cluster"), 1))
    finally:
        ex.close()
    res["scaling"] = {"serial_2_threads_s": serial_s, "cluster_2x1_s": cluster_s,
                      "cluster_start_s": start2, "cluster_warmup_task_s": warm_s,
                      "speedup": serial_s / cluster_s,
                      "speedup_with_start": serial_s / (cluster_s + start2 + warm_s),
                      "workers_used": len({r["worker"] for r in recs2})}
    # 3. memory
    if tokenizer:
        res["memory"] = sweep_memory(tokenizer, out, data_dir, log)
    else:
        res["memory"] = None
    # 4. GPU
    if torch.cuda.is_available():
        res["gpu"] = {"count": torch.cuda.device_count(),
                      "names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
    else:
        res["gpu"] = None
    ov = res["overhead"]["overhead_fraction"]
    res["targets"] = {k: {"value": v, "op": op, "target": t,
                          "met": (v <= t) if op == "<=" else (v >= t)}
                      for k, (op, t), v in [("overhead_fraction", SWEEP_TARGETS["overhead_fraction"], ov)]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_sweep.json").write_text(json.dumps(res, indent=1, default=str))
    return res


def print_sweep_bench(res: dict, echo: Callable[[str], None] = print) -> None:
    """The sweep benchmark's figures, with the target beside the overhead."""
    ov, sc = res["overhead"], res["scaling"]
    echo(f"sweep benchmark: {res['n_tasks']} tasks, {res['cores']} cores ({res['platform']})")
    echo(f"overhead: task {ov['task_s']:.2f} s inside the worker, {ov['per_task_overhead_s'] * 1000:.0f} ms "
         f"per task end to end beyond it = {ov['overhead_fraction'] * 100:.1f}% of the task "
         f"(target <= 5%: {'met' if ov['overhead_fraction'] <= 0.05 else 'NOT met'}); "
         f"cluster start {ov['cluster_start_s']:.1f} s (not counted)")
    echo(f"scaling: serial with 2 threads {sc['serial_2_threads_s']:.1f} s, 2 single-thread workers "
         f"{sc['cluster_2x1_s']:.1f} s: ratio {sc['speedup']:.2f}x ({sc['workers_used']} workers used); "
         f"with the cluster's start ({sc['cluster_start_s']:.1f} s) and first task "
         f"({sc['cluster_warmup_task_s']:.1f} s): {sc['speedup_with_start']:.2f}x")
    mem = res.get("memory")
    if mem:
        k, d = mem["bridge_kept"], mem["bridge_dropped"]
        echo(f"memory (pythia-70m-random, one task): peak RSS {k['peak_rss_bytes'] / 2**20:.0f} MiB with the "
             f"bridge kept -> {d['peak_rss_bytes'] / 2**20:.0f} MiB with it dropped; while measuring "
             f"{k['rss_measuring_bytes'] / 2**20:.0f} -> {d['rss_measuring_bytes'] / 2**20:.0f} MiB; "
             f"same payload: {'yes' if mem['same_payload'] else 'NO'}")
    else:
        echo("memory: skipped (needs --tokenizer, the GPT-NeoX-20B tokenizer.json, for pythia-70m-random)")
    if res["gpu"]:
        echo(f"GPU: {res['gpu']['count']} x {', '.join(res['gpu']['names'])} (run the sweep with --device cuda)")
    else:
        echo("GPU: none present; --device cuda (one worker per GPU) is not measured here")
