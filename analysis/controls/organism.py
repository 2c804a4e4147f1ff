"""A positive control trained here: a small GPT-NeoX (Pythia's architecture) trained from
scratch on English and German Europarl passages with the GPT-NeoX-20B tokenizer.

`train` is the pure training function (config + tokenizer + passages -> checkpoints and a
manifest); `train_europarl` prepares the data (the training split of the Europarl JSON
passages; the held-out split `analysis.core.data.heldout_indices` is kept for the analyses);
`german-neuron organism` / `nox -s organism` call it. Checkpoints are Hugging Face folders
(model + tokenizer) at log-spaced steps and at the end, under
`models_cache_dir()/organism-<hash of config, tokenizer, data, libraries>/step<NNNNNN>/`,
with `manifest.json` beside them; `--model organism` loads the final checkpoint of the
most recently completed run.

Deterministic on CPU: fixed seed, explicit generators for the data order, deterministic
algorithms, a fixed thread count (recorded); two runs with the same inputs give identical
weights (tests/test_organism.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..core.errors import UsageError

MANIFEST = "manifest.json"
CHECKPOINT_INFO = "organism.json"
LANGUAGES = ("english", "german")
SCHEMA = 1


@dataclass(frozen=True)
class OrganismConfig:
    """Everything the trained weights depend on, besides the tokenizer and the text.

    Attributes:
        n_layers, d_model, n_heads, d_mlp: model shape (Pythia architecture: rotary on
            `rotary_pct` of each head, parallel attention + MLP, GELU, untied unembedding).
        seq_len: tokens per training sequence; also the model's context length.
        batch_size: sequences per optimiser step (`micro_batch` per forward pass).
        steps: optimiser steps.
        lr, warmup_steps, min_lr_ratio: AdamW peak rate, linear warm-up, cosine decay to
            `min_lr_ratio * lr`.
        weight_decay: on matrices only (not on biases or LayerNorm).
        german_fraction: fraction of each batch's sequences that are German (a minority, as
            in Pythia's data, so that "German" is the exception a neuron can detect).
        train_per_language: cap on training passages per language (None: the whole
            training split).
        n_checkpoints: log-spaced checkpoints between step 1 and the end (plus step 0).
        seed: weights initialisation and data order.
        threads: torch CPU threads (fixed for bitwise reproducibility; 1 is fastest on a
            shared 2-core machine, where a second thread mostly waits for a busy core).
    """

    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    rotary_pct: float = 0.25
    seq_len: int = 256
    batch_size: int = 8
    micro_batch: int = 4
    steps: int = 500
    lr: float = 2e-3
    warmup_steps: int = 30
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    german_fraction: float = 0.25
    train_per_language: int | None = None
    n_checkpoints: int = 10
    seed: int = 0
    threads: int = 1

    def shape(self, vocab_size: int) -> dict:
        """The GPT-NeoX config of the model (Pythia-70M's settings, this size)."""
        from ..core.models import PYTHIA_70M_SHAPE

        return dict(PYTHIA_70M_SHAPE, vocab_size=vocab_size, hidden_size=self.d_model,
                    num_hidden_layers=self.n_layers, num_attention_heads=self.n_heads,
                    intermediate_size=self.d_mlp, rotary_pct=self.rotary_pct,
                    max_position_embeddings=self.seq_len)

    def check(self) -> None:
        """Raises UsageError for sizes that cannot train."""
        problems = []
        if min(self.n_layers, self.d_model, self.n_heads, self.d_mlp, self.seq_len,
               self.batch_size, self.micro_batch, self.steps) < 1:
            problems.append("sizes and steps must be positive")
        if self.d_model % self.n_heads:
            problems.append(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if not 0.0 <= self.german_fraction <= 1.0:
            problems.append("german_fraction must be in [0, 1]")
        if self.lr <= 0:
            problems.append("lr must be positive")
        if problems:
            raise UsageError("organism: " + "; ".join(problems))


def _padded_vocab(tokenizer) -> int:
    """The tokenizer's size rounded up to a multiple of 128 (GPT-NeoX-20B: 50277 -> 50304,
    Pythia's embedding size)."""
    return int(math.ceil(len(tokenizer) / 128) * 128)


def checkpoint_steps(total: int, n: int) -> list[int]:
    """Step 0, about `n` log-spaced steps in [1, total], and `total` (ascending, unique)."""
    if total < 1:
        return [0]
    steps = {0, total}
    if n > 1 and total > 1:
        for k in range(n):
            steps.add(int(round(total ** (k / (n - 1)))))
    return sorted(s for s in steps if 0 <= s <= total)


def _libraries() -> dict:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def _tokenizer_sha(tokenizer) -> str:
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


def _texts_sha(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def config_hash(cfg: OrganismConfig, tokenizer_sha: str, data: Mapping) -> str:
    """The organism's identity: config, tokenizer, training text, library versions and the
    code that trains it (`models.generator_code_sha256`: this module and everything it
    runs), so an edit of the training loop trains a new organism instead of reusing one."""
    from ..core.models import generator_code_sha256

    blob = json.dumps({"config": asdict(cfg), "tokenizer": tokenizer_sha, "data": data,
                       "libraries": _libraries(), "schema": SCHEMA,
                       "code": generator_code_sha256()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def default_out_dir(key: str) -> Path:
    from ..core.models import models_cache_dir

    return models_cache_dir() / f"organism-{key[:16]}"


# ----------------------------------------------------------------------------- data


def _chunks(tokenizer, texts: Sequence[str], seq_len: int, eos: int) -> torch.Tensor:
    """Pack `[EOS] + passage` for every passage into one stream and cut it into
    `seq_len`-token rows (the remainder is dropped), as Pythia's packed training data."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    stream: list[int] = []
    for t in ids:
        stream.append(eos)
        stream.extend(t)
    n = len(stream) // seq_len
    if n == 0:
        raise UsageError(f"organism: the training text ({len(stream)} tokens) is shorter than "
                         f"one sequence ({seq_len} tokens)")
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)


class _Sampler:
    """Rows drawn epoch by epoch (a fresh seeded permutation per epoch) from one language."""

    def __init__(self, rows: torch.Tensor, generator: torch.Generator):
        self.rows, self.g = rows, generator
        self.order = torch.randperm(len(rows), generator=self.g)
        self.pos = 0
        self.epochs = 0

    def take(self, k: int) -> torch.Tensor:
        out = []
        while k > 0:
            if self.pos == len(self.order):
                self.order = torch.randperm(len(self.rows), generator=self.g)
                self.pos = 0
                self.epochs += 1
            m = min(k, len(self.order) - self.pos)
            out.append(self.rows[self.order[self.pos:self.pos + m]])
            self.pos += m
            k -= m
        return torch.cat(out) if out else self.rows[:0]


def _lr_at(step: int, cfg: OrganismConfig) -> float:
    """Learning rate of optimiser step `step` (1-based): linear warm-up, cosine decay."""
    if step <= cfg.warmup_steps:
        return cfg.lr * step / max(cfg.warmup_steps, 1)
    frac = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


# ----------------------------------------------------------------------------- training


def _atomic_json(path: Path, obj) -> None:
    from ..core.artifacts import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


class quiet_hf_progress:
    """Silence transformers' own progress bars ("Writing model shards", "Loading weights")."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self.was = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        if self.was:
            hf_logging.enable_progress_bar()


def _save_checkpoint(model, tokenizer, out_dir: Path, name: str, info: dict) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out_dir))
    try:
        with quiet_hf_progress():
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _atomic_json(tmp / CHECKPOINT_INFO, info)
        target = out_dir / name
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def train(cfg: OrganismConfig, tokenizer, texts: Mapping[str, Sequence[str]], out_dir: Path, *,
          data: Mapping | None = None, max_seconds: float | None = None,
          log: Callable[[str], None] | None = None, show_progress: bool = True) -> dict:
    """Train the organism and write checkpoints + `manifest.json` into `out_dir`.

    Args:
        cfg: sizes and optimiser settings.
        tokenizer: a fast tokenizer whose id 0 is `<|endoftext|>` (GPT-NeoX-20B or `tiny`'s).
        texts: training passages, `{"english": [...], "german": [...]}`.
        out_dir: created if needed; each checkpoint is written atomically.
        data: what the passages are (files, sha256, split indices), recorded in the
            manifest; the passages' own sha256 is recorded either way.
        max_seconds: wall-time limit; when hit, the current step is saved as the final
            checkpoint and the manifest says `stopped_by_time_limit`.

    Returns:
        the manifest (also written to `out_dir/manifest.json`, `complete: true` at the end).
    """
    from tqdm.auto import tqdm

    from ..core.models import random_model

    log = log or (lambda s: print(s, file=sys.stderr))
    cfg.check()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for lang in LANGUAGES:
        if not texts.get(lang):
            raise UsageError(f"organism: no {lang} training text")
    eos = int(tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0)
    vocab = _padded_vocab(tokenizer)
    shape = cfg.shape(vocab)
    tok_sha = _tokenizer_sha(tokenizer)
    data_rec = {lang: {"passages": len(texts[lang]), "passages_sha256": _texts_sha(texts[lang]),
                       **(dict(data[lang]) if data and lang in data else {})} for lang in LANGUAGES}
    key = config_hash(cfg, tok_sha, data_rec)

    threads_before = torch.get_num_threads()
    det_before = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    try:
        rows = {lang: _chunks(tokenizer, texts[lang], cfg.seq_len, eos) for lang in LANGUAGES}
        g = torch.Generator().manual_seed(cfg.seed)
        samplers = {lang: _Sampler(rows[lang], g) for lang in LANGUAGES}
        n_de = int(round(cfg.batch_size * cfg.german_fraction))
        per_lang = {"german": n_de, "english": cfg.batch_size - n_de}
        model = random_model(shape, cfg.seed)
        model.train()
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, foreach=False)
        save_at = set(checkpoint_steps(cfg.steps, cfg.n_checkpoints))
        manifest = {
            "schema": SCHEMA, "kind": "german-neuron organism", "config_hash": key,
            "config": asdict(cfg), "seed": cfg.seed, "model_shape": shape,
            "tokenizer": {"sha256": tok_sha, "name": str(getattr(tokenizer, "name_or_path", "") or ""),
                          "vocab_size": len(tokenizer), "padded_vocab_size": vocab},
            "data": data_rec,
            "training_rows": {lang: {"rows": int(len(rows[lang])), "tokens": int(rows[lang].numel()),
                                     "per_batch": per_lang[lang]} for lang in LANGUAGES},
            "tokens_per_step": cfg.batch_size * cfg.seq_len,
            "optimizer": {"name": "AdamW", "betas": [0.9, 0.95], "eps": 1e-8,
                          "schedule": "linear warm-up, cosine decay to min_lr_ratio * lr",
                          "weight_decay_on": "parameters with ndim >= 2"},
            "loss": "mean next-token cross-entropy (nats) over every position of each packed sequence",
            "train_loss_definition": "mean of the per-step batch losses of the (up to) 20 steps before "
                                     "the checkpoint; step 0: the loss of the first batch at initialisation",
            "libraries": _libraries(), "threads": cfg.threads, "device": "cpu",
            "checkpoints": [], "complete": False, "started": _now(),
        }
        log(f"organism: {sum(p.numel() for p in model.parameters()):,} parameters, "
            f"{cfg.steps} steps of {cfg.batch_size} x {cfg.seq_len} tokens "
            f"({per_lang['german']} German, {per_lang['english']} English per step) -> {out_dir}")
        losses: list[float] = []

        def checkpoint(step: int, first_loss: float | None = None) -> None:
            recent = losses[-20:] if losses else ([first_loss] if first_loss is not None else [])
            rec = {"step": step, "tokens_seen": step * cfg.batch_size * cfg.seq_len,
                   "train_loss": float(sum(recent) / len(recent)) if recent else None,
                   "lr": _lr_at(step, cfg) if step else 0.0, "path": f"step{step:06d}",
                   "wall_time_s": round(time.perf_counter() - t0, 3)}
            info = {"kind": "german-neuron organism checkpoint", "config_hash": key, "manifest": f"../{MANIFEST}",
                    **{k: rec[k] for k in ("step", "tokens_seen", "train_loss")}}
            _save_checkpoint(model, tokenizer, out_dir, rec["path"], info)
            manifest["checkpoints"].append(rec)
            _atomic_json(out_dir / MANIFEST, manifest)

        def batch_loss(batch: torch.Tensor) -> torch.Tensor:
            total = torch.zeros(())
            for s in range(0, len(batch), cfg.micro_batch):
                x = batch[s:s + cfg.micro_batch]
                logits = model(input_ids=x).logits
                # next-token targets; the last position has none (no copy of the logits)
                target = torch.cat([x[:, 1:], torch.full_like(x[:, :1], -100)], 1)
                loss = torch.nn.functional.cross_entropy(
                    logits.view(-1, logits.shape[-1]), target.view(-1), ignore_index=-100)
                (loss * len(x) / len(batch)).backward()
                total += loss.detach() * len(x) / len(batch)
            return total

        t0 = time.perf_counter()
        stopped = False
        step = 0
        bar = tqdm(total=cfg.steps, desc="organism", unit="step", disable=not show_progress,
                   dynamic_ncols=True)
        try:
            for step in range(1, cfg.steps + 1):
                batch = torch.cat([samplers["german"].take(per_lang["german"]),
                                   samplers["english"].take(per_lang["english"])])
                for group in opt.param_groups:
                    group["lr"] = _lr_at(step, cfg)
                opt.zero_grad(set_to_none=True)
                loss = float(batch_loss(batch))
                if step == 1 and 0 in save_at:
                    checkpoint(0, first_loss=loss)  # the initial weights (gradients untouched)
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=False)
                opt.step()
                losses.append(loss)
                elapsed = time.perf_counter() - t0
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{step * cfg.batch_size * cfg.seq_len / elapsed:,.0f}")
                over = max_seconds is not None and elapsed > max_seconds
                if step in save_at or over:
                    checkpoint(step)
                if over and step < cfg.steps:
                    stopped = True
                    log(f"organism: time limit ({max_seconds:.0f} s) reached at step {step} of {cfg.steps}")
                    break
        finally:
            bar.close()
        wall = time.perf_counter() - t0
        tokens = step * cfg.batch_size * cfg.seq_len
        manifest.update({
            "complete": True, "finished": _now(), "final": manifest["checkpoints"][-1],
            "steps_done": step, "stopped_by_time_limit": stopped,
            "max_seconds": max_seconds, "wall_time_s": round(wall, 3), "tokens_seen": tokens,
            "tokens_per_s": tokens / wall if wall > 0 else None,
            "final_train_loss": manifest["checkpoints"][-1]["train_loss"],
            "epochs": {lang: samplers[lang].epochs + samplers[lang].pos / max(len(rows[lang]), 1)
                       for lang in LANGUAGES},
            "loss_curve": [round(v, 5) for v in losses],
        })
        _atomic_json(out_dir / MANIFEST, manifest)
        log(f"organism: {step} steps, {tokens:,} tokens in {wall:.1f} s "
            f"({manifest['tokens_per_s']:,.0f} tokens/s), final training loss "
            f"{manifest['final_train_loss']:.3f} -> {out_dir / manifest['final']['path']}")
        return manifest
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(det_before)


# ----------------------------------------------------------------------------- Europarl


def europarl_training_text(data_dir: str | None, train_per_language: int | None = None
                            ) -> tuple[dict[str, list[str]], dict]:
    """The training split of the Europarl passages (everything but the held-out passages
    the analyses use), and its record (files, sha256, split indices)."""
    from ..core.data import HELDOUT_SALT, indices_record, load_corpus, split_indices

    texts, record = {}, {}
    for lang in LANGUAGES:
        corpus = load_corpus(f"europarl_{lang}", data_dir)
        train_idx, held = split_indices(len(corpus.examples))
        if train_per_language is not None:
            train_idx = train_idx[:train_per_language]
        texts[lang] = [corpus.examples[i] for i in train_idx]
        tr = indices_record(train_idx)
        record[lang] = {
            "dataset": corpus.name, "file": corpus.file, "sha256": corpus.sha256,
            "n_examples": len(corpus.examples),
            "train": {"n": tr["n"], "indices_sha256": tr["indices_sha256"],
                      "first": train_idx[:5]},
            "heldout": {"corpus": f"europarl_{lang}_heldout", "salt": HELDOUT_SALT, **indices_record(held)},
        }
    return texts, record


def train_europarl(cfg: OrganismConfig, tokenizer_file: str | None, data_dir: str | None, *,
                   out: str | os.PathLike | None = None, force: bool = False,
                   max_seconds: float | None = 20 * 60, log: Callable[[str], None] | None = None,
                   show_progress: bool = True) -> tuple[Path, dict]:
    """Train (or reuse) the organism on the Europarl training split.

    Returns (output folder, manifest). A completed run with the same inputs in the output
    folder is reused unless `force`.

    Raises:
        UsageError: no tokenizer; DataError: missing/corrupt data files.
    """
    from ..core.models import fast_tokenizer

    log = log or (lambda s: print(s, file=sys.stderr))
    cfg.check()
    if not tokenizer_file:
        raise UsageError("organism: no tokenizer given",
                         hint="pass --tokenizer PATH/tokenizer.json (GPT-NeoX-20B) or set $GERMAN_NEURON_TOKENIZER")
    tok = fast_tokenizer(tokenizer_file)
    texts, record = europarl_training_text(data_dir, cfg.train_per_language)
    data_rec = {lang: {"passages": len(texts[lang]), "passages_sha256": _texts_sha(texts[lang]),
                       **record[lang]} for lang in LANGUAGES}
    key = config_hash(cfg, _tokenizer_sha(tok), data_rec)
    out_dir = Path(out) if out else default_out_dir(key)
    existing = read_manifest(out_dir)
    if existing and existing.get("complete") and existing.get("config_hash") == key and not force:
        log(f"organism: reusing the trained checkpoints in {out_dir} (pass --force to retrain)")
        return out_dir, existing
    if out_dir.exists() and (out_dir / MANIFEST).exists():
        shutil.rmtree(out_dir)  # an incomplete or different run: start over
    manifest = train(cfg, tok, texts, out_dir, data=record, max_seconds=max_seconds, log=log,
                     show_progress=show_progress)
    return out_dir, manifest


# ----------------------------------------------------------------------------- finding checkpoints


def read_manifest(folder: str | os.PathLike) -> dict | None:
    p = Path(folder) / MANIFEST
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def completed_runs() -> list[tuple[Path, dict]]:
    """Completed organism runs in the model cache, most recently finished first."""
    from ..core.models import models_cache_dir

    runs = []
    for d in models_cache_dir().glob("organism-*"):
        m = read_manifest(d)
        if m and m.get("complete") and (d / m["final"]["path"] / "config.json").is_file():
            runs.append((d, m))
    runs.sort(key=lambda r: (r[1].get("finished", ""), str(r[0])), reverse=True)
    return runs


def latest_final_checkpoint() -> Path | None:
    """The final checkpoint of the most recently completed organism run, or None."""
    runs = completed_runs()
    if not runs:
        return None
    d, m = runs[0]
    return d / m["final"]["path"]


def require_final_checkpoint() -> Path:
    path = latest_final_checkpoint()
    if path is None:
        raise UsageError(
            "no trained organism in the model cache",
            hint="train it first: german-neuron organism --tokenizer PATH/tokenizer.json "
                 "--data-dir DIR (or nox -s organism -- ...)")
    return path


def load_final(tokenizer: str | None = None, device: str = "cpu", seed: int = 0, **_):
    """`load_model("organism", ...)` (registered by `analysis.controls.sources`): the final
    checkpoint of the latest organism run, loaded as its folder is (its own tokenizer, its
    record in `info["organism"]`, the id `organism`).

    Raises:
        UsageError: no trained organism in the model cache.
    """
    from ..core.models import load_model

    return load_model(str(require_final_checkpoint()), None, device)


def checkpoint_info(path: str | os.PathLike) -> dict | None:
    """The organism record of a checkpoint folder (None if it is not an organism's)."""
    p = Path(path) / CHECKPOINT_INFO
    if not p.is_file():
        return None
    try:
        info = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    manifest = read_manifest(Path(path).parent)
    if manifest is not None:
        info = {**info, "run": Path(path).parent.name,
                "heldout": {lang: {k: v for k, v in manifest["data"][lang].get("heldout", {}).items()
                                   if k != "indices"} for lang in LANGUAGES}}
    return info


def series(path: str | os.PathLike) -> list[dict]:
    """The saved checkpoints of the organism run a checkpoint belongs to, in step order
    (`[{"step", "tokens_seen", "train_loss", "path"}]`); empty if not an organism's."""
    path = Path(path)
    if checkpoint_info(path) is None:
        return []
    m = read_manifest(path.parent)
    if m is None:
        return []
    out = []
    for c in m["checkpoints"]:
        p = path.parent / c["path"]
        if (p / "config.json").is_file():
            out.append({**c, "path": str(p)})
    return sorted(out, key=lambda c: c["step"])


# ----------------------------------------------------------------------------- default model


def fallback_note(path: Path, reason: str) -> str:
    m = read_manifest(path.parent) or {}
    cfg = m.get("config", {})
    shape = (f"{cfg.get('n_layers')} layers, d_model {cfg.get('d_model')}, d_mlp {cfg.get('d_mlp')}"
             if cfg else "a small GPT-NeoX")
    return (f"Pythia-70M could not be loaded ({reason}), so this report is built on the organism: "
            f"a small GPT-NeoX ({shape}) trained here from scratch on English and German Europarl "
            f"passages ({path}), analysed on held-out passages. Its numbers are a positive control "
            "of the method, not the Pythia-70M finding; pass --model pythia-70m to require Pythia.")


def resolve_default_model(tokenizer: str | None, data_dir: str | None, *,
                          log: Callable[[str], None] | None = None,
                          probe: Callable[[], object] | None = None) -> tuple[str, str | None]:
    """The model a report uses when `--model` is not given: `pythia-70m` if it can be
    loaded (Hub or local cache), else the organism's latest final checkpoint (training it
    first if none is cached). Returns (model name, note for the console and the report, or
    None when Pythia-70M is used)."""
    from ..core.errors import ModelUnavailableError
    from ..core.models import _hub_snapshot

    log = log or (lambda s: print(s, file=sys.stderr))
    try:
        (probe or _hub_snapshot)()
        return "pythia-70m", None
    except ModelUnavailableError:
        reason = "not in the local cache and the Hugging Face Hub cannot be reached"
    path = latest_final_checkpoint()
    if path is None:
        log("Pythia-70M is not available and no organism is cached: training it first "
            "(at most 20 minutes) ...")
        out_dir, manifest = train_europarl(OrganismConfig(), tokenizer, data_dir, log=log)
        path = out_dir / manifest["final"]["path"]
    note = fallback_note(path, reason)
    log(note)
    return str(path), note


def replace(cfg: OrganismConfig, **changes) -> OrganismConfig:
    """`dataclasses.replace` that drops None values (CLI options left unset)."""
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})


def slug(path: str | os.PathLike) -> str | None:
    """The model id of an organism checkpoint: `organism` for a run's final checkpoint,
    `organism-step<N>` for an earlier one; None for any other folder."""
    info = checkpoint_info(path)
    if info is None:
        return None
    m = read_manifest(Path(path).parent) or {}
    final = (m.get("final") or {}).get("path")
    return "organism" if final == Path(path).name else f"organism-step{info['step']}"


def default_corpus(model: str) -> str:
    """The corpus set of a report on `model`: the organism's held-out Europarl passages for
    an organism checkpoint, else the seed's corpora."""
    if model == "organism":
        return "europarl-heldout"
    path = Path(model).expanduser()
    return "europarl-heldout" if path.is_dir() and checkpoint_info(path) is not None else "seed"


def training_summary(path: str | os.PathLike) -> dict | None:
    """What the report says about an organism checkpoint's training run (None if not one)."""
    path = Path(path)
    if checkpoint_info(path) is None:
        return None
    m = read_manifest(path.parent)
    if not m:
        return None
    keys = ("config_hash", "config", "steps_done", "tokens_seen", "wall_time_s", "tokens_per_s",
            "final_train_loss", "stopped_by_time_limit", "tokens_per_step", "threads", "started", "finished")
    return {**{k: m.get(k) for k in keys}, "run": path.parent.name,
            "data": {lang: {"file": d.get("file"), "sha256": d.get("sha256"), "train_passages": d.get("passages"),
                            "heldout": {k: v for k, v in (d.get("heldout") or {}).items() if k != "indices"}}
                     for lang, d in m["data"].items()}}


def is_organism(model: str) -> bool:
    """`organism`, or a checkpoint folder written by `train`."""
    return default_corpus(model) == "europarl-heldout"
