"""Neuron discovery: the seed's single-neuron probe (German vs English logistic regression on
one neuron's `hook_post` activations) for every neuron of every layer, ranked by F1.

The seed found L3N669 by probing neurons one at a time (`run_single_neuron_lr`, sklearn
`LogisticRegression()` defaults). Thousands of neurons make sklearn's per-neuron fit slow, so
`fit_logistic` solves the same problem (L2 penalty 1/2·w² on the coefficient, C = 1, free
intercept) for all neurons at once by damped Newton steps in float64, on the same
train/test split (`train_test_split(..., random_state=seed)`); the top `verify` neurons are
then refitted with `analysis.families.probes.single_neuron_probe` itself and ranked by its numbers.

"German-positive" means the probe's coefficient is positive (the neuron fires more on
German); the ranking lists those first and the top one becomes the context neuron when the
run was given `--neuron auto`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from ..core.config import Neuron
from ..core.engine import Forward, make_batches, progress

TOP_ROWS = 50  # German-positive rows kept in the artifact (all neurons are in the arrays)
TOP_ENGLISH_ROWS = 10
VERIFY = 10  # top neurons refitted with sklearn (single_neuron_probe)
N_STUDIED = 8  # discovered neurons studied when none of the seed's neurons exists in the model


def crop_counts(toks: Sequence[Sequence[int]], crop: tuple[int, int]) -> list[int]:
    """How many positions of each example the crop `crop[0]:crop[1]` keeps (position 0 is
    BOS; none for an example no longer than the crop start): the rows each example gives
    `sample_all_neurons`, in example order."""
    start, end = crop
    return [max(0, min(end, len(t)) - start) for t in toks]


def sample_all_neurons(fwd: Forward, toks: Sequence[Sequence[int]], crop: tuple[int, int],
                       n_samples: int, batch_tokens: int, device: str = "cpu",
                       desc: str = "discovery", show_progress: bool = True) -> np.ndarray:
    """`hook_post` of every neuron of every layer at positions `crop[0]:crop[1]` of each
    example, in example order then position order (as `collect_mlp_activations`), first
    `n_samples` rows only: float32 `[min(n_samples, available), n_layers * d_mlp]`, columns
    layer-major (`layer * d_mlp + index`). Only the examples needed are run."""
    start, end = crop
    counts = crop_counts(toks, crop)
    need, total = 0, 0
    for c in counts:
        if total >= n_samples:
            break
        need += 1
        total += c
    chosen = list(toks[:need])
    n_layers = fwd.w.n_layers
    names = [f"blocks.{layer}.mlp.hook_post" for layer in range(n_layers)]
    # Rows are written straight into their place (example order), so the samples are held
    # once rather than per example and again concatenated.
    offsets = np.concatenate([[0], np.cumsum(counts[:need])]).astype(int)
    out = np.empty((int(offsets[-1]), n_layers * fwd.w.d_mlp), dtype=np.float32)
    with torch.inference_mode():
        for batch in progress(make_batches(chosen, batch_tokens, pad_id=1, device=device), desc,
                              show_progress):
            capture = dict.fromkeys(names)
            fwd.run(batch.tokens, capture=capture)
            for row, ex in enumerate(batch.index):
                hi = min(end, int(batch.lengths[row]))
                if hi <= start:
                    continue
                dst = out[offsets[ex]:offsets[ex + 1]]
                for layer, n in enumerate(names):
                    dst[:, layer * fwd.w.d_mlp:(layer + 1) * fwd.w.d_mlp] = capture[n][row, start:hi].float().cpu().numpy()
    return out[:n_samples].copy() if len(out) > n_samples else out


def _objective(X, sy, w, b, C):
    """Per column: w²/2 + C·Σ softplus(-s·(w·x + b)), with `sy` = s = ±1 as `[n, 1]`."""
    return 0.5 * w * w + C * torch.nn.functional.softplus(-sy * (X * w + b)).sum(0)


def fit_logistic(X: torch.Tensor, y: torch.Tensor, C: float = 1.0, max_iter: int = 100,
                 tol: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One-feature logistic regression for every column of `X` at once.

    Minimises `w²/2 + C·Σ log(1 + exp(-s·(w·x + b)))` (s = ±1), sklearn's
    `LogisticRegression()` objective (L2 on the coefficient only), by Newton steps with
    Armijo backtracking, column by column until the Newton decrement is below `tol`
    (relative to the objective; default 1e-10 in float64, 1e-6 in float32). X: `[n, m]`;
    y: `[n]` in {0, 1}. Returns (w, b) in X's dtype.
    """
    if tol is None:
        tol = 1e-10 if X.dtype == torch.float64 else 1e-6
    n, m = X.shape
    y = y.to(X.dtype)[:, None]
    sy = 2 * y - 1
    w = torch.zeros(m, dtype=X.dtype)
    p0 = float(y.mean().clamp(1e-6, 1 - 1e-6))
    b = torch.full((m,), float(np.log(p0 / (1 - p0))), dtype=X.dtype)
    f = _objective(X, sy, w, b, C)
    active = torch.arange(m)
    for _ in range(max_iter):
        if len(active) == 0:
            break
        Xa, wa, ba, f0 = X[:, active], w[active], b[active], f[active]
        p = torch.sigmoid(Xa * wa + ba)
        r = p - y
        s = p * (1 - p)
        sx = s * Xa
        gw = C * (r * Xa).sum(0) + wa
        gb = C * r.sum(0)
        hww = C * (sx * Xa).sum(0) + 1.0
        hwb = C * sx.sum(0)
        hbb = C * s.sum(0) + 1e-12
        det = hww * hbb - hwb * hwb
        dw = (hbb * gw - hwb * gb) / det
        db = (hww * gb - hwb * gw) / det
        slope = gw * dw + gb * db  # Newton decrement squared, >= 0: the step -d descends
        t = torch.ones_like(wa)
        f1 = _objective(Xa, sy, wa - dw, ba - db, C)
        for _ in range(40):
            bad = f1 > f0 - 1e-4 * t * slope
            if not bool(bad.any()):
                break
            t = torch.where(bad, t / 2, t)
            idx = torch.nonzero(bad).flatten()  # re-evaluate only the columns still backtracking
            f1[idx] = _objective(Xa[:, idx], sy, wa[idx] - t[idx] * dw[idx], ba[idx] - t[idx] * db[idx], C)
        w[active] = wa - t * dw
        b[active] = ba - t * db
        f[active] = f1
        active = active[slope > tol * (1.0 + f0.abs())]
    return w, b


def probe_all(german: np.ndarray, english: np.ndarray, n_samples: int, test_size: float,
              seed: int, chunk: int = 1024, dtype: torch.dtype = torch.float32) -> dict[str, np.ndarray]:
    """`single_neuron_probe` for every column of `[n, n_neurons]` activation samples, vectorised.

    Same inputs as the seed's probe: the first `n_samples` activations per class, German
    positive, the `train_test_split(test_size, random_state=seed)` split.

    The fit runs in `dtype` (float32 by default: half the memory traffic; the coefficients
    match float64 to about 1e-5 relative, and the top neurons are refitted with sklearn).

    Returns float64 arrays `[n_neurons]`: coef, intercept, train_acc, test_acc, f1 (German
    class, test split; 0 when nothing is predicted German), mean_german, mean_english,
    separation (difference of means over the pooled standard deviation).
    """
    from sklearn.model_selection import train_test_split

    pos = np.asarray(german[:n_samples])
    neg = np.asarray(english[:n_samples])
    if min(len(pos), len(neg)) < 10:
        raise ValueError(f"too few activations for a probe: {len(pos)} vs {len(neg)}")
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    tr, te = train_test_split(np.arange(len(y)), test_size=test_size, random_state=seed)
    y_tr, y_te = torch.as_tensor(y[tr]).to(dtype), torch.as_tensor(y[te]).to(dtype)
    m = pos.shape[1]
    out = {k: np.zeros(m) for k in ("coef", "intercept", "train_acc", "test_acc", "f1")}
    for s in range(0, m, chunk):
        cols = slice(s, min(s + chunk, m))
        X = torch.as_tensor(np.concatenate([pos[:, cols], neg[:, cols]])).to(dtype)
        w, b = fit_logistic(X[tr], y_tr)
        pred_tr = (X[tr] * w + b) > 0
        pred_te = (X[te] * w + b) > 0
        out["coef"][cols] = w.double().numpy()
        out["intercept"][cols] = b.double().numpy()
        out["train_acc"][cols] = (pred_tr == y_tr[:, None].bool()).double().mean(0).numpy()
        out["test_acc"][cols] = (pred_te == y_te[:, None].bool()).double().mean(0).numpy()
        yt = y_te[:, None].bool()
        tp = (pred_te & yt).sum(0).double()
        fp = (pred_te & ~yt).sum(0).double()
        fn = (~pred_te & yt).sum(0).double()
        denom = 2 * tp + fp + fn
        out["f1"][cols] = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp)).numpy()
    # float64 statistics a column block at a time (a full float64 copy would double memory).
    var_g, var_e = np.zeros(m), np.zeros(m)
    out["mean_german"], out["mean_english"] = np.zeros(m), np.zeros(m)
    for s in range(0, m, chunk):
        cols = slice(s, min(s + chunk, m))
        p64, n64 = pos[:, cols].astype(np.float64), neg[:, cols].astype(np.float64)
        out["mean_german"][cols], out["mean_english"][cols] = p64.mean(0), n64.mean(0)
        var_g[cols], var_e[cols] = p64.var(0), n64.var(0)
    pooled = np.sqrt(0.5 * (var_g + var_e))
    out["separation"] = (out["mean_german"] - out["mean_english"]) / np.maximum(pooled, 1e-12)
    return out


def rank(stats: dict[str, np.ndarray], german_positive: bool = True) -> np.ndarray:
    """Column indices of the neurons of one sign (coef > 0: German-positive), best first:
    F1, then test accuracy, then |separation|, then position (layer-major)."""
    sign = stats["coef"] > 0 if german_positive else stats["coef"] < 0
    idx = np.flatnonzero(sign)
    keys = (idx, -np.abs(stats["separation"][idx]), -stats["test_acc"][idx], -stats["f1"][idx])
    return idx[np.lexsort(keys)]


def discover(fwd: Forward, toks: dict[str, Sequence[Sequence[int]]], crop: tuple[int, int],
             n_samples: int, test_size: float, seed: int, batch_tokens: int, device: str = "cpu",
             verify: int = VERIFY, show_progress: bool = True) -> tuple[dict, dict]:
    """Probe every MLP neuron; return (result, arrays) for the `discovery` artifact.

    The top `verify` German-positive neurons are refitted with `single_neuron_probe`
    (sklearn) and reordered by its F1 (ties as in `rank`); `result["best"]` is the first.
    """
    from .probes import single_neuron_probe

    samples = {lang: sample_all_neurons(fwd, toks[lang], crop, n_samples, batch_tokens, device,
                                        desc=f"discovery {lang}", show_progress=show_progress)
               for lang in ("german", "english")}
    d_mlp, n_layers = fwd.w.d_mlp, fwd.w.n_layers
    stats = probe_all(samples["german"], samples["english"], n_samples, test_size, seed)

    def row(col: int, r: int) -> dict:
        layer, index = divmod(int(col), d_mlp)
        return {"rank": r, "neuron": str(Neuron(layer, index)), "layer": layer, "index": index,
                "sign": "german" if stats["coef"][col] > 0 else "english",
                **{k: float(stats[k][col]) for k in ("f1", "train_acc", "test_acc", "coef", "intercept",
                                                     "mean_german", "mean_english", "separation")}}

    order = rank(stats, True)
    top = [row(c, 0) for c in order[:max(TOP_ROWS, verify)]]
    for r in top[:verify]:
        col = r["layer"] * d_mlp + r["index"]
        sk = single_neuron_probe(samples["german"][:, col], samples["english"][:, col], n_samples,
                                 test_size, seed)
        r["vectorised"] = {k: r[k] for k in ("f1", "train_acc", "test_acc")}
        r.update({k: sk[k] for k in ("f1", "train_acc", "test_acc")})
        r["verified"] = True
    head = sorted(top[:verify], key=lambda r: (-r["f1"], -r["test_acc"], -abs(r["separation"]),
                                               r["layer"], r["index"]))
    ranked = (head + top[verify:])[:TOP_ROWS]
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
    english = [row(c, i) for i, c in enumerate(rank(stats, False)[:TOP_ENGLISH_ROWS], 1)]
    positive_rank = {int(c): i for i, c in enumerate(order, 1)}
    for r in ranked[:verify]:
        positive_rank[r["layer"] * d_mlp + r["index"]] = r["rank"]
    seed_neurons = []
    from ..core.config import GERMAN_NEURONS

    for n in GERMAN_NEURONS:
        if n.layer < n_layers and n.index < d_mlp:
            col = n.layer * d_mlp + n.index
            seed_neurons.append({"neuron": str(n), "rank": positive_rank.get(col),
                                 "f1": float(stats["f1"][col]),
                                 "sign": "german" if stats["coef"][col] > 0 else "english"})
    best = ranked[0] if ranked else None
    layer_best = []
    for layer in range(n_layers):
        cols = np.arange(layer * d_mlp, (layer + 1) * d_mlp)
        pos = cols[stats["coef"][cols] > 0]
        c = int(pos[np.argmax(stats["f1"][pos])]) if len(pos) else int(cols[np.argmax(stats["f1"][cols])])
        layer_best.append({"layer": layer, "neuron": str(Neuron(*divmod(c, d_mlp))),
                           "f1": float(stats["f1"][c])})
    result = {
        "n_layers": n_layers, "d_mlp": d_mlp, "n_neurons": n_layers * d_mlp,
        "hook": "mlp.hook_post", "crop": list(crop),
        "n_per_language": {lang: int(len(samples[lang])) for lang in samples},
        "n_samples_requested": n_samples, "test_size": test_size, "split_seed": seed,
        "classifier": "L2 logistic regression on one neuron (sklearn LogisticRegression() objective), "
                      "vectorised Newton fit; the top neurons refitted with sklearn",
        "verified": verify, "positive_class": "german",
        "n_german_positive": int((stats["coef"] > 0).sum()),
        "best": best["neuron"] if best else None,
        "best_f1": best["f1"] if best else None,
        "ranked": ranked, "top_english_positive": english, "seed_neurons": seed_neurons,
        "best_per_layer": layer_best,
        "arrays": "discovery.<stat>.npy, float64 [n_layers, d_mlp]",
    }
    arrays = {k: stats[k].reshape(n_layers, d_mlp) for k in
              ("f1", "coef", "intercept", "train_acc", "test_acc", "mean_german", "mean_english", "separation")}
    return result, arrays


# ------------------------------------------------------------------ pipeline step


def run_step(run, arts: dict) -> dict:
    """Step `discovery`: probe every neuron on the activation examples (seed's probe,
    German vs English), rank by F1."""
    import sys

    from ..core.runner import LANGUAGES

    p = run.profile
    toks = {lang: run.tokens(lang, p.activation_examples) for lang in LANGUAGES}
    params = {"examples_per_language": p.activation_examples, "crop": [p.crop_start, p.crop_end],
              "n_per_language": p.probe_samples, "test_size": p.probe_test_size, "split_seed": p.seed,
              "verify": VERIFY, "top_rows": TOP_ROWS, "hook": "mlp.hook_post", "layers": "all",
              "tokens": {lang: toks[lang][1] for lang in toks}}

    def compute():
        return discover(run.fwd, {lang: toks[lang][0] for lang in toks}, (p.crop_start, p.crop_end),
                        p.probe_samples, p.probe_test_size, p.seed, p.batch_tokens, run.cfg.device,
                        show_progress=run.show_progress)

    inputs = run.inputs("discovery", sys.modules[__name__], params, run.data_prov(*LANGUAGES), {})
    return run.step(inputs, compute)


def apply(run, art: dict):
    """Resolve `--neuron auto` (cfg.neuron None) to the top German-positive neuron, and study
    the discovered neurons when none of the seed's exists in this model. Returns run.cfg."""
    res = art["result"]
    auto = run.cfg.neuron is None
    if auto:
        if res["best"] is None:
            from ..core.errors import ReportError

            raise ReportError("neuron discovery found no German-positive neuron; pass --neuron LxNy")
        run.cfg = dataclasses.replace(run.cfg, neuron=Neuron.parse(res["best"]), neuron_discovered=True)
        run.log(f"  discovery: the context neuron is {run.cfg.neuron} (top German-positive neuron, "
                f"probe F1 {res['best_f1']:.3f}, of {res['n_neurons']:,} neurons)")
    ctx = run.cfg.neuron
    if not run.studied:
        top = [Neuron.parse(r["neuron"]) for r in res["ranked"][:N_STUDIED]]
        run.studied = tuple(top if ctx in top else [*top[:N_STUDIED - 1], ctx])
        run.log(f"  discovery: studying the top {len(run.studied)} German-positive neurons "
                "(none of the seed's neurons exists in this model)")
    elif auto and ctx not in run.studied:
        run.studied = (*run.studied, ctx)
    return run.cfg


def figures(run, arts: dict, fig_dir) -> list[dict]:
    import figures.organism as figs
    import figures.plots as plots

    art = arts["discovery"]
    f1 = run.store.load_array("discovery", "f1")
    coef = run.store.load_array("discovery", "coef")
    fig = figs.discovery_figure(f1, coef, art["result"]["best"], str(run.context))
    return [plots.save(fig, fig_dir, "discovery_f1", {
        "step": "discovery", "artifact_key": art["key"], "function": "figures.organism.discovery_figure",
        "caption": "Single-neuron probe F1 (German vs English, test split) of every MLP neuron, by "
                   "layer; German-positive neurons (probe coefficient > 0) in colour, the others grey.",
        "seed_cell": "Check classification accuracy of German neurons (run_single_neuron_lr)",
    })]
