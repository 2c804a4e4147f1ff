"""The authors' published measurements on the real Pythia-70M (Quirke et al. 2023, "Training
Dynamics of Contextual N-Grams in Language Models", arXiv 2311.00863), read from a folder
laid out as `shared/paper` (its README says what each file is and where it comes from).

The files are results the authors published in their repositories, copied unchanged; each
one this module reads is pinned by its sha256 below (as `data.REGISTRY` pins the seed's
text), so a changed file is refused with a one-line cause, never read. The folder reaches
the code as `--paper-dir` (or `$GERMAN_NEURON_PAPER_DIR`), else the `paper` folder beside
`--data-dir` when it exists (`resolve_paper_dir`); nothing here names a path.

Checkpoint axis: the files index Pythia's checkpoints by TransformerLens `checkpoint_index`
(0-153), not by training step; `checkpoint_step` maps one to the other (tested against the
rule and against the files).

Naming of the direct/indirect columns (`context_effect_split.csv`,
`trigram_losses_checkpoints.csv`): the authors' `get_context_effect`
(luciaquirke/contextual-ngrams, generate_indirect_effects_data.py and
generate_ngrams_data.py) computes the column headed "Direct Effect" with L3N669 left as it is
and the outputs of layers 4-5 (attention and MLP) frozen at their values under the ablation:
only the path *through later layers* is ablated, and generate_ngrams_data.py itself calls
that loss `indirect_effect_removal_loss`; "Indirect Effect" is the converse (L3N669 ablated,
layers 4-5 frozen at their clean values: only the *direct* path to the unembedding is
ablated). Their figure code (figures.py, figure_5) relabels the columns accordingly. The
tidy tables here name each column by what was ablated (`indirect_path_ablated`,
`direct_path_ablated`), so the header's word never decides a meaning. The files agree: over
the 228 trigrams at the last checkpoint the mean "Direct Effect Loss" is 0.04 nats below the
fully ablated loss, the mean "Indirect Effect Loss" 0.29 nats above the clean one, with
2.9 nats between those two (the trigrams depend on L3N669 through later layers, the paper's
contextual n-gram circuit; checked in `tests/test_paper.py`). This deviates from
shared/paper/README.md, which takes the headers literally.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .data import DATA_DIR_ENV, sha256_file
from .errors import DataError

PAPER_DIR_ENV = "GERMAN_NEURON_PAPER_DIR"

# Pythia's checkpoint schedule, as TransformerLens indexes it: 154 checkpoints, the first 11
# (index 0-10) at steps 0, 1, 2, 4, ..., 512, then every 1,000 steps to 143,000.
N_CHECKPOINTS = 154
N_LOG_SPACED = 11
STEP_SPACING = 1000

CONTEXT_NEURON = "L3N669"  # the neuron every file measures (its checkpoint_eval rows, its ablations)


@dataclass(frozen=True)
class PaperFile:
    """One published file: its name in the folder, its sha256, and where the authors
    published it (repository, path, commit)."""

    name: str
    sha256: str
    source: str


# The files this project reads (shared/paper/SHA256SUMS holds the same digests).
FILES: dict[str, PaperFile] = {f.name: f for f in (
    PaperFile("checkpoint_eval.csv",
              "381b08098d81fd3091d1bd05422799d77237aeb20d48afc9606bd38f71367eba",
              "lovis-heindrich/superposition@d088859 context_neuron/data/checkpoint_eval.csv"),
    PaperFile("checkpoint_ablation_data_all_neurons.csv",
              "e6a97adf11b95c3890febe06565593714e4f7e22897f2aed7afecc1ff326e4a4",
              "luciaquirke/contextual-ngrams@3f582ff data/checkpoint_ablation_data_all_neurons.csv"),
    PaperFile("context_effect_split.csv",
              "aa86a13f0bd22a334fdb1420ad269f09944b21c1e3b59c6a04792be244846a2e",
              "luciaquirke/contextual-ngrams@3f582ff output/pythia-70m/context_effect_split.csv"),
    PaperFile("trigram_losses_checkpoints.csv",
              "4ad892d65f9165a7585085356bb7fd5ba718e8757ffa7d5e853af76e7cb02b15",
              "luciaquirke/contextual-ngrams@3f582ff "
              "output/pythia-70m/indirect_loss_trigram_losses_checkpoints.csv"),
    PaperFile("low_indirect_loss_trigrams.json",
              "77f1943b69c4a972164c11b40c173654c1941ab5e5ba1bb25d1a11b66b7759e1",
              "luciaquirke/contextual-ngrams@3f582ff output/pythia-70m/low_indirect_loss_trigrams.json"),
)}
TRIGRAM_LIST = "low_indirect_loss_trigrams.json"  # the 228 trigrams of trigram_losses_checkpoints.csv
HOW_TO_PASS = (f"pass --paper-dir DIR (or set ${PAPER_DIR_ENV}) with the authors' files "
               "(the layout of shared/paper), or put them in a folder `paper` beside --data-dir")


# ------------------------------------------------------------------ checkpoint axis


def checkpoint_step(index: int) -> int:
    """The training step of Pythia checkpoint `index` (TransformerLens `checkpoint_index`).

    Indices 0-10 are steps 0, 1, 2, 4, 8, ..., 512 (0, then powers of two); indices 11-153
    are steps 1,000, 2,000, ..., 143,000. The same schedule as `models.PYTHIA_CHECKPOINTS`
    (the Hub's `step<N>` branches).

    Raises:
        ValueError: `index` is not an integer in 0-153.
    """
    if isinstance(index, bool) or int(index) != index or not 0 <= index < N_CHECKPOINTS:
        raise ValueError(f"checkpoint index {index!r} is not one of Pythia's 0-{N_CHECKPOINTS - 1}")
    index = int(index)
    if index == 0:
        return 0
    if index < N_LOG_SPACED:
        return 2 ** (index - 1)
    return (index - N_LOG_SPACED + 1) * STEP_SPACING


def axis_note() -> str:
    """The index -> step rule in words (for the report)."""
    return (f"indices 0–{N_LOG_SPACED - 1} are steps 0, 1, 2, 4, …, {checkpoint_step(N_LOG_SPACED - 1):,}; "
            f"indices {N_LOG_SPACED}–{N_CHECKPOINTS - 1} are steps {checkpoint_step(N_LOG_SPACED):,} to "
            f"{checkpoint_step(N_CHECKPOINTS - 1):,}, every {STEP_SPACING:,}")


def checkpoint_index(step: int) -> int:
    """The inverse of `checkpoint_step`.

    Raises:
        ValueError: `step` is not one of Pythia's 154 checkpoint steps.
    """
    if step == 0:
        return 0
    if 0 < step <= 2 ** (N_LOG_SPACED - 2) and step & (step - 1) == 0:
        return step.bit_length()
    if step > 0 and step % STEP_SPACING == 0 and step // STEP_SPACING <= N_CHECKPOINTS - N_LOG_SPACED:
        return step // STEP_SPACING + N_LOG_SPACED - 1
    raise ValueError(f"step {step!r} is not one of Pythia's {N_CHECKPOINTS} checkpoints")


# ------------------------------------------------------------------ which runs are the real model


def is_real_pythia_70m(source: str | None, kind: str | None = "hub") -> bool:
    """Whether a model is `EleutherAI/pythia-70m` itself (any revision): its weights come
    from that Hub repository (`info["source"]` of a loaded model; a sweep model's `source`
    with `kind` "hub"). A checkpoint folder named `pythia-70m`, `pythia-70m-random`,
    `pythia-70m-deduped` or the planted control is not: the authors' curves are this
    repository's. (The Hub-layout test fixture serves other weights under this id, which
    is how the path is tested offline.)"""
    from .models import PYTHIA_REPO

    return kind == "hub" and source == PYTHIA_REPO


# ------------------------------------------------------------------ the folder and its files


def resolve_paper_dir(paper_dir: str | os.PathLike | None = None,
                      data_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder of the authors' files: `paper_dir` (`--paper-dir`), else
    `$GERMAN_NEURON_PAPER_DIR`, else the folder `paper` beside the data folder (`data_dir`,
    else `$GERMAN_NEURON_DATA_DIR`) when it exists, else None (not available: the report says
    so and how to pass it).

    Raises:
        DataError: a folder was named (option or variable) but does not exist.
    """
    named = paper_dir or os.environ.get(PAPER_DIR_ENV)
    if named:
        p = Path(named).expanduser()
        if not p.is_dir():
            raise DataError(f"the authors' folder {p} does not exist", hint=HOW_TO_PASS)
        return p.resolve()
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    if data_dir:
        beside = Path(data_dir).expanduser().resolve().parent / "paper"
        if beside.is_dir():
            return beside
    return None


def verify(folder: str | os.PathLike, names=tuple(FILES)) -> dict[str, str]:
    """`{name: sha256}` of the pinned files `names` in `folder`, each checked.

    Raises:
        DataError: a file is missing or its sha256 is not the pinned one (one line, with
            where the original comes from).
    """
    folder = Path(folder)
    out = {}
    for name in names:
        spec = FILES[name]
        path = folder / name
        if not path.is_file():
            raise DataError(f"the authors' file {path} is missing",
                            hint=f"the folder must hold {name} (sha256 {spec.sha256[:12]}…, from {spec.source})")
        digest = sha256_file(path)
        if digest != spec.sha256:
            raise DataError(f"the authors' file {path} has sha256 {digest[:12]}…, expected {spec.sha256[:12]}…",
                            hint=f"the file was changed; restore the original from {spec.source}")
        out[name] = digest
    return out


def provenance(folder: str | os.PathLike, files: dict[str, str]) -> dict:
    """The record of the files read, as the data of a step (`StepInputs.data`): one entry
    per file, `{"dataset": "paper", "file", "dir", "sha256", "source"}`."""
    return {f"paper/{name}": {"dataset": "paper", "file": name, "dir": str(folder), "sha256": digest,
                              "source": FILES[name].source} for name, digest in files.items()}


@dataclass(frozen=True)
class PaperData:
    """The authors' files as tidy tables (pandas DataFrames; `index` is the checkpoint
    index, `step` its training step, losses and effects in nats).

    Attributes:
        dir: the folder read.
        files: `{name: sha256}` of the files read (verified).
        eval: `checkpoint_eval.csv`, L3N669 at indices 0-141: `index, step, f1, mcc,
            german_loss, english_loss, ablated_loss, ablation_increase` (ablated minus
            German loss).
        neuron_ablation: `checkpoint_ablation_data_all_neurons.csv`, 229 German neurons
            mean-ablated every 10th index 0-150: `index, step, neuron, original_loss,
            ablated_loss, ablation_increase`.
        effect_split: `context_effect_split.csv`, every 5th index 0-150: `index, step,
            original_loss, total, indirect_path_ablated` (header "Direct Effect", see the
            module docstring), `direct_path_ablated` (header "Indirect Effect"): loss
            increases over the original loss.
        trigram_losses: `trigram_losses_checkpoints.csv`, 228 trigrams x 154 indices:
            `index, step, trigram, original, ablated, indirect_path_ablated` (header "Direct
            Effect Loss"), `direct_path_ablated` (header "Indirect Effect Loss"): losses on
            the trigram's last token.
    """

    dir: Path
    files: dict
    eval: object
    neuron_ablation: object
    effect_split: object
    trigram_losses: object


def _with_steps(df):
    df.insert(1, "step", [checkpoint_step(i) for i in df["index"]])
    return df


def load_paper(folder: str | os.PathLike) -> PaperData:
    """Verify (`verify`) and read the authors' files in `folder` into tidy tables.

    Raises:
        DataError: a file is missing, changed, or does not have the columns it had when
            pinned.
    """
    import pandas as pd

    folder = Path(folder)
    files = verify(folder)

    def read(name, rename, **kw):
        # keep_default_na=False: a trigram such as " NA" is a string, not a missing value
        df = pd.read_csv(folder / name, keep_default_na=False, **kw)
        missing = [c for c in rename if c not in df.columns]
        if missing:
            raise DataError(f"{folder / name} lacks the columns {missing}",
                            hint=f"restore the original from {FILES[name].source}")
        return df[list(rename)].rename(columns=rename)

    ev = _with_steps(read("checkpoint_eval.csv", {
        "checkpoint": "index", "f1": "f1", "mcc": "mcc", "german_loss": "german_loss",
        "english_loss": "english_loss", "ablation_loss": "ablated_loss"}))
    ev["ablation_increase"] = ev["ablated_loss"] - ev["german_loss"]
    na = _with_steps(read("checkpoint_ablation_data_all_neurons.csv", {
        "Checkpoint": "index", "Label": "neuron", "OriginalLoss": "original_loss",
        "AblatedLoss": "ablated_loss", "AblationIncrease": "ablation_increase"}))
    split = _with_steps(read("context_effect_split.csv", {
        "Checkpoint": "index", "Original Loss": "original_loss", "Total Effect": "total",
        "Direct Effect": "indirect_path_ablated", "Indirect Effect": "direct_path_ablated"}))
    tri = _with_steps(read("trigram_losses_checkpoints.csv", {
        "Checkpoint": "index", "Trigram": "trigram", "Original Loss": "original", "Ablated Loss": "ablated",
        "Direct Effect Loss": "indirect_path_ablated", "Indirect Effect Loss": "direct_path_ablated"},
        dtype={"Trigram": str}))
    return PaperData(folder, files, ev, na, split, tri)


def read_trigrams(folder: str | os.PathLike) -> list[str]:
    """The paper's 228 German trigrams (strings as Pythia's tokenizer splits them, leading
    spaces kept), in the authors' order: `low_indirect_loss_trigrams.json`, the list whose
    losses `trigram_losses_checkpoints.csv` holds (the authors' selection at the final
    checkpoint: clean loss below 3 nats and a mean-ablation increase above 2 nats,
    generate_ngrams_data.py). Verified by sha256 first.

    Raises:
        DataError: the file is missing, changed, or not a JSON list of strings.
    """
    verify(folder, (TRIGRAM_LIST,))
    path = Path(folder) / TRIGRAM_LIST
    trigrams = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(trigrams, list) or not all(isinstance(t, str) for t in trigrams):
        raise DataError(f"{path} is not a JSON list of strings")
    return trigrams


# ------------------------------------------------------------------ the authors' series

# name: (label, unit, file). The series a figure overlays, over training steps.
SERIES: dict[str, tuple[str, str, str]] = {
    "f1": ("L3N669 probe F1", "F1", "checkpoint_eval.csv"),
    "mcc": ("L3N669 probe MCC", "MCC", "checkpoint_eval.csv"),
    "loss_german": ("German loss", "nats", "checkpoint_eval.csv"),
    "loss_english": ("English loss", "nats", "checkpoint_eval.csv"),
    "ablated_loss_german": ("German loss, L3N669 mean-ablated", "nats", "checkpoint_eval.csv"),
    "ablation_increase_german": ("L3N669 mean-ablation increase, German", "nats", "checkpoint_eval.csv"),
    "ablation_pct_german": ("L3N669 mean-ablation increase, German", "%", "checkpoint_eval.csv"),
    "neurons_l3n669": ("L3N669", "nats", "checkpoint_ablation_data_all_neurons.csv"),
    "neurons_other_median": ("other German neurons: median", "nats", "checkpoint_ablation_data_all_neurons.csv"),
    "neurons_other_max": ("other German neurons: largest", "nats", "checkpoint_ablation_data_all_neurons.csv"),
    "effect_total": ("total effect (L3N669 ablated)", "nats", "context_effect_split.csv"),
    "effect_indirect_path": ("indirect path ablated (later layers frozen)", "nats", "context_effect_split.csv"),
    "effect_direct_path": ("direct path ablated", "nats", "context_effect_split.csv"),
    "trigram_original": ("trigram loss", "nats", "trigram_losses_checkpoints.csv"),
    "trigram_ablated": ("L3N669 ablated", "nats", "trigram_losses_checkpoints.csv"),
    "trigram_indirect_path_ablated": ("indirect path ablated", "nats", "trigram_losses_checkpoints.csv"),
    "trigram_direct_path_ablated": ("direct path ablated", "nats", "trigram_losses_checkpoints.csv"),
}


def authors_series(data: PaperData):
    """Every series of `SERIES` as one tidy table (pandas DataFrame): `series, label, unit,
    source, index, step, value`, rows in series then step order. Per checkpoint:
    `checkpoint_eval.csv`'s columns as they are (`ablation_pct_german`: the increase in % of
    the German loss); over `checkpoint_ablation_data_all_neurons.csv`'s 228 German neurons
    other than L3N669 their median and largest increase; over the 228 trigrams the mean of
    each loss (the authors' figures show medians with quartiles; the mean is what a reader
    compares with one number per checkpoint)."""
    import pandas as pd

    ev, na, split, tri = data.eval, data.neuron_ablation, data.effect_split, data.trigram_losses
    parts = {
        "f1": ev[["index", "step", "f1"]], "mcc": ev[["index", "step", "mcc"]],
        "loss_german": ev[["index", "step", "german_loss"]],
        "loss_english": ev[["index", "step", "english_loss"]],
        "ablated_loss_german": ev[["index", "step", "ablated_loss"]],
        "ablation_increase_german": ev[["index", "step", "ablation_increase"]],
        "ablation_pct_german": ev.assign(pct=ev["ablation_increase"] / ev["german_loss"] * 100.0)[
            ["index", "step", "pct"]],
        "neurons_l3n669": na[na["neuron"] == CONTEXT_NEURON][["index", "step", "ablation_increase"]],
    }
    others = na[na["neuron"] != CONTEXT_NEURON].groupby(["index", "step"], as_index=False)["ablation_increase"]
    parts["neurons_other_median"] = others.median()
    parts["neurons_other_max"] = others.max()
    for name, col in (("effect_total", "total"), ("effect_indirect_path", "indirect_path_ablated"),
                      ("effect_direct_path", "direct_path_ablated")):
        parts[name] = split[["index", "step", col]]
    means = tri.groupby(["index", "step"], as_index=False)[
        ["original", "ablated", "indirect_path_ablated", "direct_path_ablated"]].mean()
    for col in ("original", "ablated", "indirect_path_ablated", "direct_path_ablated"):
        parts[f"trigram_{col}"] = means[["index", "step", col]]
    frames = []
    for name, df in parts.items():
        label, unit, source = SERIES[name]
        df = df.set_axis(["index", "step", "value"], axis=1).sort_values("step")
        frames.append(df.assign(series=name, label=label, unit=unit, source=source))
    out = pd.concat(frames, ignore_index=True)
    out["value"] = out["value"].astype("float64")
    return out[["series", "label", "unit", "source", "index", "step", "value"]]
