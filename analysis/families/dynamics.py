"""Training dynamics: neuron discovery, the context neuron's probe and mean ablation, and the
German/English loss at every saved checkpoint of the model's training run.

For the organism (`analysis.controls.organism`) the checkpoints are those in its manifest. For
Pythia-70M they are Hugging Face revisions of `EleutherAI/pythia-70m` (`step1` ...
`step143000`, `models.PYTHIA_DYNAMICS_REVISIONS`), each found in the Hugging Face cache
(downloaded when online) and loaded from its own snapshot through `models.load_revision`,
so that online users reproduce the paper's curves; a revision that cannot be obtained is
listed as skipped, with the reason, and the rest of the report completes.

Each checkpoint is loaded and processed exactly as the report's model and measured with the
report's own functions on the same examples: `discovery.discover` (best German-positive
neuron), `probes.single_neuron_probe` on the context neuron, `engine.per_example_losses`
with the context neuron and the checkpoint's best neuron mean-ablated (set to their mean
English activation at that checkpoint, over the activation examples' crop positions, as the
`ablation` step). At the final checkpoint the numbers equal the report's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..core.config import Neuron

PYTHIA_TOKENS_PER_STEP = 1024 * 2048  # Pythia's batch: 1,024 sequences of 2,048 tokens


def checkpoint_series(run) -> list[dict]:
    """The checkpoints of the run's model, in step order: `[{"step", "tokens_seen",
    "train_loss", "label", "path" | "revision"}]`; empty when the model has none."""
    from ..controls import organism
    from ..core.models import PYTHIA_DYNAMICS_REVISIONS

    info = run.model.info
    if "organism" in info:
        return [{"step": c["step"], "tokens_seen": c["tokens_seen"], "train_loss": c["train_loss"],
                 "label": f"step{c['step']}", "path": c["path"]}
                for c in organism.series(info["source"])]
    if run.model.model_id == "pythia-70m":
        revs = PYTHIA_DYNAMICS_REVISIONS.get(run.profile.name, PYTHIA_DYNAMICS_REVISIONS["quick"])
        return [{"step": int(r.removeprefix("step")), "revision": r, "label": r, "train_loss": None,
                 "tokens_seen": int(r.removeprefix("step")) * PYTHIA_TOKENS_PER_STEP} for r in revs]
    return []


def has_series(run) -> bool:
    return len(checkpoint_series(run)) >= 2


def locate(series: list[dict]) -> list[dict]:
    """Find each Hub revision of `series` in the local Hugging Face cache (downloading it
    when online), before the step's cache key is derived: returns copies of the entries with
    `snapshot` (the folder) and `commit` (its commit id), or `unavailable` (why it cannot be
    obtained, one line). Entries with a `path` are returned unchanged."""
    from ..controls.organism import quiet_hf_progress
    from ..core.errors import ModelUnavailableError
    from ..core.models import _hub_snapshot, snapshot_commit

    out = []
    for ck in series:
        ck = dict(ck)
        if "revision" in ck:
            try:
                with quiet_hf_progress():
                    ck["snapshot"] = _hub_snapshot(ck["revision"])
                ck["commit"] = snapshot_commit(ck["snapshot"])
            except ModelUnavailableError as exc:
                ck["unavailable"] = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        out.append(ck)
    return out


def _loader(run, ck: dict) -> Callable:
    from ..core.errors import ModelUnavailableError
    from ..core.models import load_checkpoint, load_revision

    if "unavailable" in ck:
        def unavailable():
            raise ModelUnavailableError(ck["unavailable"])
        return unavailable
    if "revision" in ck:
        return lambda: load_revision(ck["revision"], run.cfg.tokenizer, run.cfg.device,
                                     snapshot=ck.get("snapshot"))
    return lambda: load_checkpoint(ck["path"], None, run.cfg.device, model_id=f"checkpoint {ck['label']}")


def checkpoint_metrics(model, toks: dict, context: Neuron, profile, device: str = "cpu",
                       show_progress: bool = False, dtype: str = "float32") -> dict:
    """Discovery, the context neuron's probe and ablation, and the losses of one checkpoint
    (`measure_checkpoint` on the model's processed weights; the model stays usable).

    `toks`: `{"activation": {lang: token lists}, "loss": {lang: token lists}}`. `dtype`: the
    forward's matmul dtype (the run's `--dtype`, `analysis.core.precision`).
    """
    from ..core.engine import Forward, Weights

    fwd = Forward(Weights.from_bridge(model.bridge, model.info["rotary_pct"]), dtype)
    return measure_checkpoint(fwd, toks, context, profile, device, show_progress)[0]


def measure_checkpoint(fwd, toks: dict, context: Neuron | None, profile, device: str = "cpu",
                       show_progress: bool = False) -> tuple[dict, dict]:
    """The per-checkpoint measurements of training dynamics, on an engine `Forward`.

    `toks`: `{"activation": {lang: token lists}, "loss": {lang: token lists}}` (BOS
    prepended; the activation examples feed discovery and the probe, their crop positions
    the English means; the loss examples the losses). `context`: the context neuron; None
    (`--neuron auto`) studies the checkpoint's own best German-positive neuron.

    Returns:
        (row, arrays): row `{"loss": {lang: nats}, "context": {"neuron", "f1", "test_acc",
        "mean_german", "value", "fires_more_on", "german"/"english": loss_summary},
        "best": {...} | None, "best_per_layer": [...]}`; arrays `{"discovery_f1",
        "discovery_coef"}`, float32 `[n_layers, d_mlp]` (the vectorised probe of every
        neuron; coef > 0: German-positive).

    Raises:
        ReportError: `context` is None and discovery finds no German-positive neuron.
    """
    import numpy as np

    from ..core.engine import make_batches, per_example_losses, set_neurons
    from ..core.errors import ReportError
    from .ablation import loss_summary
    from .activations import collect_mlp_activations
    from .discovery import discover
    from .probes import single_neuron_probe

    p = profile
    crop = (p.crop_start, p.crop_end)
    disc, disc_arrays = discover(fwd, toks["activation"], crop, p.probe_samples, p.probe_test_size,
                                 p.seed, p.batch_tokens, device, show_progress=show_progress)
    best = Neuron.parse(disc["best"]) if disc["best"] else None
    if context is None:
        if best is None:
            raise ReportError("--neuron auto: discovery finds no German-positive neuron at this checkpoint",
                              hint="pass --neuron LxNy")
        context = best
    neurons = list(dict.fromkeys([context] + ([best] if best else [])))
    samples = {}
    for lang in ("german", "english"):
        batches = make_batches(toks["activation"][lang], p.batch_tokens, pad_id=1, device=device)
        samples[lang], _, _ = collect_mlp_activations(fwd, batches, [n.layer for n in neurons], neurons, crop,
                                                      show_progress=False)
    values = {str(n): float(samples["english"][:, i].mean()) for i, n in enumerate(neurons)}
    ctx_probe = single_neuron_probe(samples["german"][:, 0], samples["english"][:, 0], p.probe_samples,
                                    p.probe_test_size, p.seed)
    variants = {str(n): {n.hook(): set_neurons([n.index], values[str(n)])} for n in neurons}
    losses = {lang: per_example_losses(fwd, make_batches(toks["loss"][lang], p.batch_tokens, pad_id=1,
                                                         device=device), variants, show_progress=False)
              for lang in ("german", "english")}

    def summary(name):
        return {lang: loss_summary(losses[lang]["original"], losses[lang][name]) for lang in losses}

    ctx_sign = "german" if float(np.mean(samples["german"][:, 0])) > values[str(context)] else "english"
    row = {
        "loss": {lang: float(np.mean(losses[lang]["original"])) for lang in losses},
        "context": {"neuron": str(context), "f1": ctx_probe["f1"], "test_acc": ctx_probe["test_acc"],
                    "mean_german": float(samples["german"][:, 0].mean()), "value": values[str(context)],
                    "fires_more_on": ctx_sign, **summary(str(context))},
        "best": None,
        "best_per_layer": disc["best_per_layer"],
    }
    if best is not None:
        r0 = disc["ranked"][0]
        row["best"] = {"neuron": str(best), "f1": r0["f1"], "test_acc": r0["test_acc"],
                       "value": values[str(best)], **summary(str(best))}
    arrays = {f"discovery_{k}": np.asarray(disc_arrays[k], dtype=np.float32) for k in ("f1", "coef")}
    return row, arrays


def compute_series(run, series: list[dict], toks: dict, log) -> tuple[list[dict], list[dict]]:
    """(rows, skipped) over the checkpoints (entries of `checkpoint_series`, after `locate`
    for Hub revisions); a checkpoint that cannot be loaded is skipped:
    `skipped = [{"label", "reason"}]`, the reason in one line. Each row records the loaded
    weights' `fingerprint` and, for a Hub revision, its `revision` and snapshot `commit`."""
    import gc

    from ..controls.organism import quiet_hf_progress
    from ..core.errors import ModelUnavailableError

    rows, skipped = [], []
    for i, ck in enumerate(series, 1):
        try:
            with quiet_hf_progress():
                model = _loader(run, ck)()
        except ModelUnavailableError as exc:
            skipped.append({"label": ck["label"], "reason": str(exc).splitlines()[0]})
            continue
        log(f"  dynamics: {ck['label']} ({i}/{len(series)})")
        m = checkpoint_metrics(model, toks, run.context, run.profile, run.cfg.device, dtype=run.cfg.dtype)
        source = ({"revision": ck["revision"], "commit": model.info.get("commit")}
                  if "revision" in ck else {})
        rows.append({"step": ck["step"], "tokens_seen": ck["tokens_seen"], "label": ck["label"],
                     "train_loss": ck["train_loss"], "fingerprint": model.info["fingerprint"],
                     **source, **m})
        del model
        gc.collect()
    return rows, skipped


# ------------------------------------------------------------------ pipeline step


def run_step(run, arts: dict) -> dict:
    """Step `dynamics` (after `ablation`): the curves over the training checkpoints."""
    from pathlib import Path

    from ..core.models import _fingerprint_dir
    from ..core.runner import LANGUAGES

    p = run.profile
    series = locate(checkpoint_series(run))
    act = {lang: run.tokens(lang, p.activation_examples) for lang in LANGUAGES}
    loss = {lang: run.tokens(lang, p.loss_examples) for lang in LANGUAGES}
    toks = {"activation": {lang: act[lang][0] for lang in LANGUAGES},
            "loss": {lang: loss[lang][0] for lang in LANGUAGES}}
    # What each checkpoint is: a Hub revision by its snapshot's commit (or why it is missing,
    # so that a revision which becomes available is computed on the next run), a folder by
    # its fingerprint.
    ident = [{k: ck[k] for k in ("step", "label", "tokens_seen", "train_loss")} |
             ({k: ck[k] for k in ("revision", "commit", "unavailable") if k in ck}
              if "revision" in ck else {"fingerprint": _fingerprint_dir(Path(ck["path"]))})
             for ck in series]
    params = {"context_neuron": str(run.context), "checkpoints": ident,
              "activation_examples": p.activation_examples, "loss_examples": p.loss_examples,
              "crop": [p.crop_start, p.crop_end], "n_per_language": p.probe_samples,
              "test_size": p.probe_test_size, "split_seed": p.seed,
              "ablation": "mean (English mean at that checkpoint, hook_post)",
              "tokens": {"activation": {lang: act[lang][1] for lang in LANGUAGES},
                         "loss": {lang: loss[lang][1] for lang in LANGUAGES}}}

    def compute():
        rows, skipped = compute_series(run, series, toks, run.log)
        from ..controls.organism import training_summary

        is_org = "organism" in run.model.info
        source = "organism manifest" if is_org else "EleutherAI/pythia-70m revisions"
        f1_steps = [r["step"] for r in rows if r["context"]["f1"] >= 0.9]
        return {"context_neuron": str(run.context), "source": source, "n_checkpoints": len(rows),
                "training": training_summary(run.model.info["source"]) if is_org else None,
                "first_step_context_f1_0_9": f1_steps[0] if f1_steps else None,
                "skipped": skipped, "rows": rows,
                "final": rows[-1] if rows else None,
                "definitions": {
                    "best": "top German-positive neuron of neuron discovery at that checkpoint",
                    "percent_increase": "loss increase (%) when the neuron is set to its mean English "
                                        "activation at that checkpoint",
                    "loss": "mean over examples of the per-example mean next-token loss (nats)"}}, {}

    upstream = {k: arts[k]["key"] for k in ("discovery", "ablation") if k in arts}
    inputs = run.inputs("dynamics", sys.modules[__name__], params, run.data_prov(*LANGUAGES), upstream)
    return run.step(inputs, compute)


def figures(run, arts: dict, fig_dir) -> list[dict]:
    import figures.organism as figs
    import figures.plots as plots

    art = arts["dynamics"]
    if not art["result"]["rows"]:
        return []
    # For EleutherAI/pythia-70m, the authors' published series beside ours (the `paper`
    # step's artifact holds them; it records the files' sha256).
    ref = arts.get("paper")
    authors = None
    if ref is not None and ref["result"]["available"]:
        import pandas as pd  # not families.paper: its code would enter this step's cache key

        authors = pd.DataFrame(ref["result"]["authors"])
    fig = figs.dynamics_figure(art["result"], authors)
    caption = ("Over the training checkpoints: probe F1 of the context neuron and of the best "
               "German-positive neuron; loss increase (%) when the context neuron is mean-ablated, "
               "on German and English; the German and English loss.")
    if authors is not None:
        caption += (" Dashed: Quirke et al.'s published series for L3N669 in EleutherAI/pythia-70m "
                    "(checkpoint_eval.csv: F1 and MCC of their probe, the German-loss increase from "
                    "ablating it, the German and English loss on their text), checkpoint index mapped "
                    "to training step.")
    meta = {"step": "dynamics", "artifact_key": art["key"], "function": "figures.organism.dynamics_figure",
            "caption": caption, "seed_cell": None}
    if authors is not None:
        meta["reference_artifact_key"] = ref["key"]
    return [plots.save(fig, fig_dir, "dynamics", meta)]
