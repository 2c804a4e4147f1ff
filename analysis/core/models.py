"""Loading models through TransformerLens 4, the way the seed's loader did.

The seed called `HookedTransformer.from_pretrained("EleutherAI/pythia-70m", fold_ln=True,
center_writing_weights=True, center_unembed=True)`. TransformerLens 4 has no
HookedTransformer; `TransformerBridge.boot_transformers(...)` followed by one call of
`enable_compatibility_mode()` applies the same processing (a second call would re-centre
the weights, so `load_model` is the only place that calls it).

The bridge's `to_tokens` does not prepend BOS on a local GPT-NeoX checkpoint, while the
seed's loader did (`to_str_tokens(" von") == ['<|endoftext|>', ' von']`), and every loss
moves without it. So tokenisation is done here, explicitly: `[BOS] + encode(text)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import pythia
from .errors import ModelUnavailableError, UsageError

PYTHIA_REPO = "EleutherAI/pythia-70m"  # the seed notebook's model
# The final-checkpoint branch of every Pythia run: a stable pin (the `main` branch can move).
PYTHIA_REVISION = pythia.FINAL_REVISION

PROCESSING = {
    "fold_ln": True,
    "center_writing_weights": True,
    "center_unembed": True,
    "fold_value_biases": True,
}

# Pythia-70M's exact shape (config.json of EleutherAI/pythia-70m).
PYTHIA_70M_SHAPE = dict(
    vocab_size=50304,
    hidden_size=512,
    num_hidden_layers=6,
    num_attention_heads=8,
    intermediate_size=2048,
    rotary_pct=0.25,
    rotary_emb_base=10000,
    max_position_embeddings=2048,
    use_parallel_residual=True,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    tie_word_embeddings=False,
    bos_token_id=0,
    eos_token_id=0,
)

# `tiny`: Pythia's layer count and MLP width (so every neuron the seed names exists) on a
# 64-wide residual stream and a 512-token vocabulary: about 1.8M parameters.
TINY_SHAPE = dict(
    PYTHIA_70M_SHAPE,
    vocab_size=512,
    hidden_size=64,
    num_attention_heads=4,
)

# The models this module builds or fetches itself; the controls add theirs
# (`pythia-70m-planted`, `organism`) through `register_source` (see `model_names`).
BUILTIN_MODELS = ("pythia-70m", "pythia-70m-random", "tiny")

# Pythia-70M training checkpoints (Hub branches) for the training-dynamics step: log-spaced
# as the paper's curves (`paper`), or a short subset (`quick`).
PYTHIA_DYNAMICS_REVISIONS = {
    "quick": ("step512", "step2000", "step8000", "step32000", "step143000"),
    "paper": ("step1", "step8", "step64", "step512", "step1000", "step2000", "step4000", "step8000",
              "step16000", "step32000", "step64000", "step100000", "step143000"),
}


@dataclass
class LoadedModel:
    """A processed bridge plus what identifies it.

    Attributes:
        bridge: the TransformerBridge after `enable_compatibility_mode()`.
        tokenizer: the Hugging Face tokenizer (fast).
        model_id: the name given by the user (or the checkpoint folder's name).
        info: provenance recorded in every artifact (source, revision, fingerprint, shape,
            dtype, attention implementation, BOS policy, weight processing).
    """

    bridge: Any
    tokenizer: Any
    model_id: str
    info: dict = field(default_factory=dict)
    checkpoint: Path | None = None  # the Hugging Face folder it was loaded from

    @property
    def bos_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return 0 if bos is None else int(bos)

    @property
    def n_ctx(self) -> int:
        return int(self.bridge.cfg.n_ctx)

    def to_tokens(self, text: str) -> list[int]:
        """`[BOS] + encode(text)`, truncated to the context length (seed `model.to_tokens`)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ([self.bos_id] + list(ids))[: self.n_ctx]

    def to_str_tokens(self, ids) -> list[str]:
        return [self.tokenizer.decode([int(i)]) for i in ids]


# Hugging Face's names for a checkpoint's weights: one file, or shards listed by an index
# (`{"weight_map": {tensor name: shard file}}`), e.g. pythia-12b's
# `pytorch_model-00001-of-00003.bin` ... with `pytorch_model.bin.index.json`.
WEIGHT_LAYOUTS = (("model.safetensors", "model.safetensors.index.json", "*.safetensors"),
                  ("pytorch_model.bin", "pytorch_model.bin.index.json", "*.bin"))


def _index_shards(index: Path) -> list[str] | None:
    """The shard files a `*.index.json` names (sorted, each once), None when there is no
    index file.

    Raises:
        UsageError: the index is not JSON or has no `weight_map` of file names.
    """
    if not index.is_file():
        return None
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UsageError(f"{index} is not a weights index (a JSON object with a weight_map)") from None
    if not shards or not all(isinstance(n, str) and n and "/" not in n for n in shards):
        raise UsageError(f"{index} names no shard files, or names one outside its folder")
    return shards


def _weight_layout(path: Path) -> tuple[list[str], list[str]]:
    """(weight file names present, shard names an index lists but the folder lacks) of the
    layout `transformers` loads: safetensors before pickles; within each, the single file,
    else the index's shards, else every file of that suffix."""
    for single, index, pattern in WEIGHT_LAYOUTS:
        if (path / single).is_file():
            return [single], []
        shards = _index_shards(path / index)
        if shards is not None:
            return ([n for n in shards if (path / n).is_file()],
                    [n for n in shards if not (path / n).is_file()])
        found = sorted(p.name for p in path.glob(pattern) if p.is_file())
        if found:
            return found, []
    return [], []


def weight_files(path: Path) -> list[Path]:
    """The weight files a checkpoint folder is loaded from: safetensors when it has any (a
    `pytorch_model.bin` beside them is never read), else pickles; either one file
    (`model.safetensors`, `pytorch_model.bin`) or the shards its index names
    (`model.safetensors.index.json`, `pytorch_model.bin.index.json`; only those present, see
    `missing_shards`).

    Raises:
        UsageError: an index file that is not a weights index.
    """
    path = Path(path)
    return [path / n for n in _weight_layout(path)[0]]


def checkpoint_n_params(path: Path) -> int:
    """How many parameters a checkpoint folder stores: the elements of every tensor in its
    weight files (`weight_files`; safetensors read from their headers, pickles loaded
    memory-mapped onto the meta device), each stored tensor once. Counted from the files, not
    from the loaded TransformerLens bridge, whose GPT-NeoX adapter holds split q, k, v copies
    beside each layer's fused `query_key_value` (75,154,432 "parameters" for Pythia-70M's
    70,426,624).

    Raises:
        UsageError: the folder has no weight files, or an index that is not a weights index.
    """
    import math

    files = weight_files(Path(path))
    if not files:
        raise UsageError(f"{path} holds no weight files (model.safetensors, pytorch_model.bin or shards)")
    total = 0
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), "pt") as st:
                total += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
        else:
            state = torch.load(f, map_location="meta", weights_only=True, mmap=True)
            total += sum(t.numel() for t in state.values() if isinstance(t, torch.Tensor))
    return int(total)


def missing_shards(path: Path) -> list[str]:
    """The shard files the folder's weights index names but the folder lacks (an
    interrupted or partial download), in order; empty for a complete or unsharded folder.

    Raises:
        UsageError: an index file that is not a weights index.
    """
    return _weight_layout(Path(path))[1]


def _fingerprint_dir(path: Path) -> str:
    """sha256 over the config, tokenizer and weight files of a checkpoint folder (the weight
    files that are loaded, `weight_files`: a pickle beside safetensors files is not read)."""
    h = hashlib.sha256()
    files = sorted(
        [p for p in path.iterdir()
         if p.is_file() and (p.suffix == ".json" or p.name.startswith("tokenizer"))]
        + weight_files(path)
    )
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _boot(path: Path, hf_model, tokenizer, device: str):
    """Boot the bridge on a loaded HF model and apply the seed's weight processing once."""
    from transformer_lens.model_bridge import TransformerBridge

    hf_model = hf_model.to(device=device, dtype=torch.float32).eval()
    bridge = TransformerBridge.boot_transformers(
        str(path),  # a path, never a bare name: bare names are resolved as Hub aliases
        hf_model=hf_model,
        tokenizer=tokenizer,
        device=device,
        dtype=torch.float32,
    )
    bridge.enable_compatibility_mode(disable_warnings=True, **PROCESSING)
    bridge.eval()
    return bridge


def _rotary(cfg) -> tuple[float, float]:
    """(partial rotary factor, rotary base) from a GPT-NeoX config (transformers 4 or 5)."""
    rp = getattr(cfg, "rope_parameters", None) or {}
    pct = rp.get("partial_rotary_factor", getattr(cfg, "rotary_pct", None))
    base = rp.get("rope_theta", getattr(cfg, "rotary_emb_base", 10000))
    return float(pct if pct is not None else 1.0), float(base)


def _shape_info(cfg) -> dict:
    pct, base = _rotary(cfg)
    return {
        "n_layers": cfg.num_hidden_layers,
        "d_model": cfg.hidden_size,
        "d_mlp": cfg.intermediate_size,
        "n_heads": cfg.num_attention_heads,
        "d_vocab": cfg.vocab_size,
        "n_ctx": cfg.max_position_embeddings,
        "rotary_pct": pct,
        "rotary_base": base,
        "parallel_residual": cfg.use_parallel_residual,
    }


def _common_info() -> dict:
    return {
        "dtype": "float32",
        "attn_implementation": "eager",
        "prepend_bos": True,
        "processing": dict(PROCESSING),
        "loader": "TransformerBridge.boot_transformers + enable_compatibility_mode",
    }


def fast_tokenizer(tokenizer_file: str | os.PathLike):
    """A GPT-NeoX-style fast tokenizer from a `tokenizer.json` file (or a folder holding one).

    Raises:
        UsageError: the file does not exist or is not a tokenizer.
    """
    from transformers import PreTrainedTokenizerFast

    path = Path(tokenizer_file).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise UsageError(
            f"tokenizer file {path} does not exist",
            hint="pass --tokenizer PATH/tokenizer.json (the GPT-NeoX-20B tokenizer Pythia uses)",
        )
    try:
        tok = PreTrainedTokenizerFast(
            tokenizer_file=str(path),
            bos_token="<|endoftext|>",
            eos_token="<|endoftext|>",
            unk_token="<|endoftext|>",
            pad_token="<|padding|>",
        )
    except Exception as exc:
        raise UsageError(f"{path} is not a tokenizer.json file ({type(exc).__name__})") from None
    return tok


def random_model(shape: dict, seed: int):
    """A GPT-NeoX with Hugging Face's initialisation drawn from `torch.manual_seed(seed)`."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(**shape)
    cfg._attn_implementation = "eager"
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = GPTNeoXForCausalLM(cfg)
    finally:
        torch.random.set_rng_state(state)
    return model.eval()


def _perturb_norms_and_biases(model, seed: int) -> None:
    """Give LayerNorms and biases non-trivial values (weights 1 + 0.1·N(0,1), biases
    0.02·N(0,1), from a generator seeded `seed + 1`), so that folding LN and centring weights
    are exercised by every test that runs `tiny` and by the planted control, as real Pythia's
    would (HF initialises them to 1 and 0)."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "layernorm" in name or "final_layer_norm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))


def models_cache_dir() -> Path:
    import platformdirs

    return Path(os.environ.get("GERMAN_NEURON_CACHE") or platformdirs.user_cache_dir("german-neuron")) / "models"


def model_store_dir() -> Path:
    """Where generated checkpoints (`tiny`, `pythia-70m-random`, `pythia-70m-planted`) are
    kept, each in a folder named by its content key (`generated_key`): `$GERMAN_NEURON_MODEL_STORE`
    when set, else `models_cache_dir()`. A folder is reused only under the key of the code,
    inputs and libraries that built it, so one store can serve every run and test run
    (the test suite points it at the user's store to build each model once per machine)."""
    env = os.environ.get("GERMAN_NEURON_MODEL_STORE")
    return Path(env) if env else models_cache_dir()


def _materialise(name: str, build, key: str) -> Path:
    """Save a generated checkpoint once under the cache (atomically: a folder is renamed
    into place only when complete), so that every model is loaded the same way.

    `build() -> (model, tokenizer)` or `(model, tokenizer, {file name: text})`: the extra
    text files (e.g. the planted control's `plant.json`) are written beside config.json,
    so that the weights fingerprint covers them."""
    from filelock import FileLock

    target = model_store_dir() / f"{name}-{key[:16]}"

    def done() -> bool:
        return (target / "config.json").is_file() and any(target.glob("*.safetensors"))

    if done():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # one builder per model: a second process (another test worker, a second report) waits
    # for the first instead of fitting the same model again
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if not done():
            _build_into(target, build, name)
    return target


def _build_into(target: Path, build, name: str) -> None:
    """`build()`'s checkpoint written to a temporary folder renamed to `target` when complete."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        built = build()
        model, tok = built[:2]
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        for fname, text in (built[2] if len(built) > 2 else {}).items():
            (tmp / fname).write_text(text, encoding="utf-8")
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# The modules whose code builds the generated checkpoints: this one (the random
# initialisation and perturbation, and through its imports the tiny tokenizer), the plant
# and the organism's training. Named, not imported: the controls stand above this module
# (tests/test_layout.py checks that every module that builds one is covered).
GENERATOR_MODULES = ("analysis.core.models", "analysis.controls.planted", "analysis.controls.organism")


def generator_code_sha256(modules: tuple[str, ...] = GENERATOR_MODULES, root: Path | None = None) -> str:
    """sha256 of the source of every project module the generated checkpoints' builders can
    run (the union of the closures of `modules`' imports within `analysis`, as the steps'
    keys use) and of the package resources (the fixture text the tiny tokenizer is trained
    on). Editing any of them, e.g. the `0.02` of `_perturb_norms_and_biases`, gives every
    generated model a new key, so it is rebuilt rather than read from a store filled by
    older code. Over-approximates (a loader's docstring counts too): at worst a rebuild."""
    from .codehash import ROOT, code_record

    return code_record(modules[0], root or ROOT, context=modules[1:])["sha256"]


def generated_key(shape: dict, seed: int, tokenizer_hash: str, extra: str = "") -> str:
    """The content key of a generated checkpoint: shape, seed, tokenizer, the builder's
    own inputs (`extra`), the generator code (`generator_code_sha256`) and the versions of
    the libraries that draw and save the weights."""
    import transformers

    blob = json.dumps({"shape": shape, "seed": seed, "tok": tokenizer_hash, "extra": extra,
                       "code": generator_code_sha256(), "torch": torch.__version__,
                       "transformers": transformers.__version__},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def tiny_checkpoint(seed: int = 0) -> Path:
    """`tiny`: random ~1.8M-parameter GPT-NeoX + byte-level BPE trained on fixture text.
    Hermetic: needs nothing outside the package."""
    from .tiny_tokenizer import train_fixture_tokenizer

    tok = train_fixture_tokenizer(vocab_size=TINY_SHAPE["vocab_size"])

    def build():
        model = random_model(TINY_SHAPE, seed)
        _perturb_norms_and_biases(model, seed)
        return model, tok

    return _materialise("tiny", build, generated_key(TINY_SHAPE, seed, _tokenizer_hash(tok), "perturbed"))


def pythia_random_checkpoint(tokenizer: str | None, seed: int = 0) -> Path:
    """`pythia-70m-random`: Pythia-70M's exact shape with random weights from `seed`, and
    the GPT-NeoX-20B tokenizer from `tokenizer` (else Pythia's own, from the Hub).

    Raises:
        UsageError: the tokenizer file does not exist.
        ModelUnavailableError: no tokenizer given and the Hub cannot be reached.
    """
    tok = fast_tokenizer(tokenizer) if tokenizer else _hub_tokenizer()
    return _materialise(
        "pythia-70m-random",
        lambda: (random_model(PYTHIA_70M_SHAPE, seed), tok),
        generated_key(PYTHIA_70M_SHAPE, seed, _tokenizer_hash(tok)),
    )


def _tokenizer_hash(tok) -> str:
    return hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest()


def _offline_message(what: str, revision: str = PYTHIA_REVISION,
                     reason: str = "the Hugging Face Hub cannot be reached and the files are "
                                   "not in the local cache", repo: str = PYTHIA_REPO) -> str:
    return (
        f"Cannot load {what} ({repo} at revision {revision}): {reason}. Provide it by running "
        "once with network access (the files are then cached under $HF_HOME), by pointing "
        "--model at a local checkpoint folder (config.json, model.safetensors or "
        "pytorch_model.bin, tokenizer.json), or use --model pythia-70m-planted (a known-answer "
        "control) or pythia-70m-random or tiny (pipeline checks on random weights)."
    )


# What `_hub_snapshot` asks the Hub for: the safetensors weights, and the pickled
# `pytorch_model.bin` only for a revision that has no safetensors file (never both).
# Both cover sharded checkpoints: `*.json` brings the index (`model.safetensors.index.json`,
# `pytorch_model.bin.index.json`) and the globs its shards (`model-00001-of-00002.safetensors`,
# `pytorch_model-00001-of-00003.bin`, as pythia-12b's branches are published).
HUB_PATTERNS_SAFETENSORS = ["*.json", "*.safetensors"]
HUB_PATTERNS_PICKLE = ["*.json", "pytorch_model*.bin"]
_COMMIT = re.compile(r"[0-9a-f]{40}")


def _unavailable_reason(exc: Exception, revision: str, repo: str = PYTHIA_REPO) -> str:
    """Why a Hub revision could not be obtained, in one line (no trailing period)."""
    from huggingface_hub import errors

    if isinstance(exc, errors.RevisionNotFoundError):
        return f"the Hub has no revision {revision}"
    if isinstance(exc, errors.RepositoryNotFoundError):  # also gated / private
        return f"the Hub has no accessible repository {repo}"
    if isinstance(exc, getattr(errors, "IncompleteSnapshotError", ())):
        return "the cached snapshot is incomplete and the Hub cannot be reached"
    if isinstance(exc, OSError):  # offline, unreachable, or the Hub is down; not cached
        return "not in the local Hugging Face cache and the Hub cannot be reached"
    first = (str(exc).splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first}"


def _hub_snapshot(revision: str = PYTHIA_REVISION, repo: str = PYTHIA_REPO) -> Path:
    """The local snapshot folder of Hub repository `repo` (default `EleutherAI/pythia-70m`)
    at `revision` (a Hub branch such as `step143000`, or a commit id), downloaded if needed.

    The Hub is asked for `*.json` and `*.safetensors` first (`HUB_PATTERNS_SAFETENSORS`);
    only when the revision has no safetensors file are `pytorch_model.bin` or its shards
    fetched (`HUB_PATTERNS_PICKLE`), so a download never fetches both. A sharded checkpoint
    comes with its index; one whose index names a shard the snapshot lacks is unavailable
    (`missing_shards`). Offline (`HF_HUB_OFFLINE=1`
    or no network) the same calls return what the cache (`$HF_HOME/hub`) holds.

    Raises:
        ModelUnavailableError: not cached and the Hub cannot be reached, the revision does
            not exist, or the snapshot lacks a shard its index names; its message says
            which, and its `reason` attribute says it in a few words.
    """
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo, revision=revision,
                                      allow_patterns=HUB_PATTERNS_SAFETENSORS))
        if not any(path.glob("*.safetensors")):  # e.g. an early checkpoint published as a pickle
            path = Path(snapshot_download(repo, revision=revision,
                                          allow_patterns=HUB_PATTERNS_PICKLE))
        lacking = missing_shards(path)
    except Exception as exc:
        lacking, path = [], None
        reason = _unavailable_reason(exc, revision, repo)
    if lacking:
        reason = f"the snapshot lacks {len(lacking)} of the weight shards its index names ({lacking[0]})"
    if path is None or lacking:
        what = "Pythia-70M" if repo == PYTHIA_REPO else repo.rpartition("/")[2]
        err = ModelUnavailableError(_offline_message(what, revision, reason, repo))
        err.reason = reason  # the short cause, for lists of skipped revisions
        raise err from None
    return path


def snapshot_commit(path: str | os.PathLike) -> str | None:
    """The commit id of a Hugging Face cache snapshot folder (`.../snapshots/<commit>`), or
    None for a folder that is not one."""
    name = Path(path).name
    return name if _COMMIT.fullmatch(name) and Path(path).parent.name == "snapshots" else None


def load_revision(revision: str, tokenizer: str | None = None, device: str = "cpu",
                  snapshot: str | os.PathLike | None = None, repo: str = PYTHIA_REPO) -> LoadedModel:
    """A GPT-NeoX Hub repository (default Pythia-70M) at a Hub branch (`step0` ...
    `step143000`) or commit, for training dynamics; loaded and processed exactly as
    `load_model("pythia-70m")`. `snapshot`: the folder already found by
    `_hub_snapshot(revision, repo)` (looked up here when None). The model id is
    `<name>@<revision>` (`pythia-70m@step1000`); the snapshot's commit id is recorded in
    `info["commit"]`. The shape comes from the snapshot's own `config.json`.

    Raises:
        ModelUnavailableError: not cached and the Hub cannot be reached.
        UsageError: the snapshot's files cannot be loaded (see `load_checkpoint`).
    """
    snap = Path(snapshot) if snapshot is not None else _hub_snapshot(revision, repo)
    return load_checkpoint(snap, tokenizer, device, model_id=f"{repo.rpartition('/')[2]}@{revision}",
                           revision=revision, source=repo,
                           extra_info={"commit": snapshot_commit(snap)})


# ------------------------------------------------------------------ any Pythia, the HF cache

# The names, shapes and checkpoints of every Pythia run are the registry's (`pythia.py`);
# these two are kept here for the callers that import them from this module.
PYTHIA_SIZES = pythia.PYTHIA_SIZES
PYTHIA_CHECKPOINTS = pythia.PYTHIA_CHECKPOINTS


def pythia_repo(name: str) -> str | None:
    """`EleutherAI/<name>` for a Pythia name of the registry (`pythia-160m`,
    `EleutherAI/pythia-1.4b-deduped`, `pythia-70m-seed3`), None for anything else."""
    p = pythia.parse_pythia(name)
    return None if p is None else p.repo


def pythia_size_params(repo: str) -> float | None:
    """The nominal size of a Pythia repository in parameters (`pythia-1.4b` -> 1.4e9)."""
    p = pythia.parse_pythia(repo)
    return None if p is None else p.n_params


def pythia_shape(name: str) -> dict | None:
    """`{"n_layers", "d_mlp", "source"}` of a Pythia name, known without loading weights:
    from the `config.json` of a snapshot of its repository in the local Hugging Face cache
    (what `load_model` will load), else from the registry's table (`pythia.PYTHIA_SHAPES`,
    what the Hub serves); None when `name` is no Pythia name. Never touches the network."""
    p = pythia.parse_pythia(name)
    if p is None:
        return None
    cfg = cached_config(p.repo)
    try:
        return {"n_layers": int(cfg["num_hidden_layers"]), "d_mlp": int(cfg["intermediate_size"]),
                "source": f"config.json of {p.repo} in the local Hugging Face cache"}
    except (TypeError, KeyError, ValueError):  # not cached (None) or not a GPT-NeoX config
        return {"n_layers": p.shape["n_layers"], "d_mlp": p.shape["d_mlp"],
                "source": f"the Pythia table for size {p.size}"}


def hub_repo_dir(repo: str) -> Path:
    """`$HF_HOME/hub/models--<owner>--<name>` (read at call time, so a changed `HF_HOME`
    or patched constants are honoured)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + repo.replace("/", "--"))


def local_commit(repo: str, revision: str) -> str | None:
    """The commit a branch of `repo` points to in the local Hugging Face cache
    (`refs/<revision>`), or `revision` itself when it is a 40-hex commit; None when the cache
    does not know it. Never touches the network."""
    if _COMMIT.fullmatch(revision):
        return revision
    ref = hub_repo_dir(repo) / "refs" / revision
    try:
        commit = ref.read_text().strip()
    except OSError:
        return None
    return commit if _COMMIT.fullmatch(commit) else None


def cached_config(repo: str) -> dict | None:
    """The `config.json` of any snapshot of `repo` in the local Hugging Face cache (a
    model's shape is the same at every training checkpoint), or None."""
    for cfg in sorted((hub_repo_dir(repo) / "snapshots").glob("*/config.json")):
        try:
            return json.loads(cfg.read_text())
        except (OSError, ValueError):
            continue
    return None


def delete_cached_weights(repo: str, commit: str) -> int:
    """Free a revision's weights from the Hugging Face cache: the weight files of snapshot
    `commit` (`*.safetensors`, `*.bin`: large and unique to a revision) and their blobs, a
    blob only when no other snapshot of the repository links to it. The small files
    (config, tokenizer) stay, shared as they are with other revisions; the `refs/` entry
    stays, so the commit is still known. Returns the bytes freed (0 when nothing was cached).
    """
    repo_dir = hub_repo_dir(repo)
    snap = repo_dir / "snapshots" / commit
    if not snap.is_dir():
        return 0
    weights = [p for p in snap.iterdir() if p.suffix in (".safetensors", ".bin")]
    others = {os.path.realpath(p) for s in (repo_dir / "snapshots").iterdir() if s != snap and s.is_dir()
              for p in s.iterdir() if p.suffix in (".safetensors", ".bin")}
    freed = 0
    for p in weights:
        target = os.path.realpath(p)
        if p.is_symlink() and target not in others and os.path.isfile(target):
            freed += os.path.getsize(target)
            os.unlink(target)
        elif not p.is_symlink():
            freed += p.stat().st_size
        p.unlink(missing_ok=True)
    return freed


def _hub_tokenizer():
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(PYTHIA_REPO, "tokenizer.json", revision=PYTHIA_REVISION)
    except Exception:
        raise ModelUnavailableError(
            _offline_message("the Pythia tokenizer"),
            hint="offline, pass --tokenizer PATH/tokenizer.json",
        ) from None
    return fast_tokenizer(path)


def check_checkpoint_dir(path: Path) -> dict:
    """Validate a Hugging Face checkpoint folder and return its config.json.

    Raises:
        UsageError: the folder, its config.json or its weights are missing, or the config is
            not a GPT-NeoX model (the analyses assume Pythia's architecture).
    """
    if not path.is_dir():
        raise unknown_model(str(path))
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise UsageError(f"checkpoint folder {path} has no config.json")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UsageError(f"{cfg_path} is not valid JSON") from None
    if cfg.get("model_type") != "gpt_neox":
        raise UsageError(
            f"checkpoint {path} is a {cfg.get('model_type')!r} model; the analyses need a "
            "GPT-NeoX (Pythia-architecture) model"
        )
    lacking = missing_shards(path)
    if lacking:
        raise UsageError(f"checkpoint folder {path} lacks {len(lacking)} of the weight shards its "
                         f"index names ({', '.join(lacking[:3])})",
                         hint="copy or download the missing shards")
    if not weight_files(path):
        raise UsageError(
            f"checkpoint folder {path} has no weights (model.safetensors or pytorch_model.bin, or "
            "their shards with model.safetensors.index.json or pytorch_model.bin.index.json)"
        )
    return cfg


def unknown_model(name: str) -> UsageError:
    """The one-line error for a `--model` that names nothing: the accepted Pythia forms for
    text meant as a Pythia name (`pythia-71m`, `EleutherAI/pythia-70m-seed10`), else the
    known names besides and the checkpoint folder it is not."""
    hint = "e.g. --model pythia-160m, or the path of a Hugging Face GPT-NeoX checkpoint folder"
    if pythia.looks_like_pythia(name):
        return UsageError(f"unknown Pythia model {name!r}: expected {pythia.ACCEPTED_FORMS}", hint=hint)
    return UsageError(f"model {name!r} is neither a known model ({', '.join(model_names())}, or a "
                      f"Pythia name: {pythia.ACCEPTED_FORMS}) nor an existing checkpoint folder", hint=hint)


def _saved_tokenizer(tokenizer: str | None, path: Path):
    """A tokenizer loaded with `from_pretrained` (TransformerLens re-opens it by its
    `name_or_path`), from `--tokenizer` or from the checkpoint folder."""
    from transformers import AutoTokenizer

    if tokenizer:
        tok = fast_tokenizer(tokenizer)
        key = _tokenizer_hash(tok)
        folder = models_cache_dir() / f"tokenizer-{key[:16]}"
        if not (folder / "tokenizer.json").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            tok.save_pretrained(folder)
        return AutoTokenizer.from_pretrained(str(folder))
    if not (path / "tokenizer.json").is_file():
        raise UsageError(f"checkpoint folder {path} has no tokenizer.json", hint="pass --tokenizer PATH")
    return AutoTokenizer.from_pretrained(str(path))


def load_checkpoint(path: str | os.PathLike, tokenizer: str | None = None, device: str = "cpu",
                    model_id: str | None = None, revision: str | None = None,
                    source: str | None = None, extra_info: dict | None = None) -> LoadedModel:
    """Load a local Hugging Face GPT-NeoX checkpoint folder through the bridge.

    Only the folder's safetensors files are read when it has any (`weight_files`); a folder
    with only `pytorch_model.bin` is read with `torch.load(weights_only=True)`, which loads
    tensors and refuses any other pickled object. `extra_info` is merged into `info`.

    Raises:
        UsageError: see `check_checkpoint_dir`; no tokenizer in the folder and none given;
            the weights cannot be loaded (e.g. a pickle that is not a plain state dict).
    """
    from transformers import GPTNeoXForCausalLM

    path = Path(path).expanduser().resolve()
    check_checkpoint_dir(path)
    tok = _saved_tokenizer(tokenizer, path)
    safetensors = any(p.suffix == ".safetensors" for p in weight_files(path))
    try:
        # Safetensors only when the folder has them (a pickle beside them is never opened);
        # a pickled pytorch_model.bin is read with weights_only=True (tensors, no code).
        model = GPTNeoXForCausalLM.from_pretrained(
            str(path), attn_implementation="eager", dtype=torch.float32,
            use_safetensors=safetensors, weights_only=True,
        )
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        hint = None if safetensors else (
            "pytorch_model.bin is read with torch.load(weights_only=True), which refuses "
            "anything but tensors; convert the checkpoint to model.safetensors")
        raise UsageError(f"could not load the weights in {path}: {type(exc).__name__}: {first}",
                         hint=hint) from None
    info = {
        "id": model_id or path.name,
        "source": source or str(path),
        "revision": revision,
        "fingerprint": _fingerprint_dir(path),
        "tokenizer": str(tokenizer) if tokenizer else "checkpoint's tokenizer.json",
        "tokenizer_sha256": _tokenizer_hash(tok),
        **_shape_info(model.config),
        **_common_info(),
        **(extra_info or {}),
    }
    return LoadedModel(_boot(path, model, tok, device), tok, info["id"], info, checkpoint=path)


def load_model(name: str, tokenizer: str | None = None, device: str = "cpu", seed: int = 0, *,
               plant=None, data_dir: str | None = None) -> LoadedModel:
    """Load a Pythia model by name (`pythia-70m`, `pythia-160m`, `EleutherAI/pythia-70m-seed1`:
    any name of the registry `pythia.parse_pythia`, at its final checkpoint `step143000`,
    from the Hugging Face cache or the Hub; its record in `info["pythia"]`, its id the short
    name), `pythia-70m-random`, `tiny`, a registered model (`register_source`:
    `pythia-70m-planted`, `organism`), or a checkpoint folder (one of a registered kind,
    `register_checkpoint_kind`, with its own tokenizer and its record in `info[kind]`).

    `plant` (a `config.Neuron`; default L3N669) and `data_dir` (where the Europarl passages
    the plant is fitted on are read) apply to `pythia-70m-planted` only; its plant record
    (`plant.json`: neuron, fitting examples, scales) goes into `info["plant"]`, so into every
    artifact's provenance.

    Raises:
        UsageError: unknown name / bad folder / bad tokenizer path / unavailable device /
            `plant` out of range.
        DataError: (`pythia-70m-planted`) the fitting passages are missing or corrupt.
        ModelUnavailableError: a Pythia model is not cached and the Hub cannot be reached.
    """
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was given but no CUDA device is available")
    if name == "tiny":
        return load_checkpoint(tiny_checkpoint(seed), None, device, model_id="tiny",
                               source=f"random GPT-NeoX (seed {seed}) + fixture BPE tokenizer",
                               extra_info={"weights_seed": seed})
    if name == "pythia-70m-random":
        return load_checkpoint(pythia_random_checkpoint(tokenizer, seed), None, device,
                               model_id="pythia-70m-random",
                               source=f"random GPT-NeoX in Pythia-70M's shape (seed {seed})",
                               extra_info={"weights_seed": seed,
                                           "tokenizer": tokenizer or f"{PYTHIA_REPO}@{PYTHIA_REVISION}"})
    if name in _SOURCES:
        return _SOURCES[name](tokenizer, device, seed, plant=plant, data_dir=data_dir)
    run = pythia.parse_pythia(name)
    if run is not None:
        snap = _hub_snapshot(pythia.FINAL_REVISION, run.repo)
        return load_checkpoint(snap, tokenizer, device, model_id=run.name,
                               revision=pythia.FINAL_REVISION, source=run.repo,
                               extra_info={"commit": snapshot_commit(snap), "pythia": run.record()})
    path = Path(name).expanduser()
    for kind in _KINDS.values():
        record = kind.record(path)
        if record is not None:  # e.g. the organism trained here: its own tokenizer, its record
            return load_checkpoint(path, None, device, model_id=model_slug(str(path)),
                                   source=str(path.resolve()), extra_info={kind.name: record})
    if not path.is_dir():
        raise unknown_model(name)
    return load_checkpoint(name, tokenizer, device)


def model_slug(name: str) -> str:
    """A folder-safe id for `build/<model-id>/`: a known model's name (a Pythia model's
    short name, `EleutherAI/pythia-160m` -> `pythia-160m`), the id a registered kind gives
    its checkpoint folders (`organism-step<N>`), else the folder's name."""
    if name in model_names():
        return name
    run = pythia.parse_pythia(name)
    if run is not None:
        return run.name
    path = Path(name).expanduser().resolve()
    slugs = (kind.slug(path) for kind in _KINDS.values())
    return next((s for s in slugs if s), None) or path.name or "checkpoint"


# ------------------------------------------------------------------ models built above

# The controls (`analysis.controls`) build models of their own: `pythia-70m-planted`, the
# organism trained on Europarl. They stand above this module, so they tell it about them
# (`analysis.controls.sources`, imported by the orchestration) rather than being imported
# here: a name `load_model` hands to the control's loader, and a kind of checkpoint folder
# that a control recognises by a record it wrote there.

ModelLoader = Callable[..., LoadedModel]  # (tokenizer, device, seed, *, plant, data_dir)


@dataclass(frozen=True)
class CheckpointKind:
    """Checkpoint folders that a control recognises (the organism's, by its training
    record): loaded with their own tokenizer, named by `slug`, their `record` kept in
    `info[name]`.

    Attributes:
        name: the kind, and the key of its record in the model's `info`.
        record: `record(path)`: the folder's record, None when it is not one of this kind.
        slug: `slug(path)`: the folder's model id (`model_slug`), None when not of this kind.
    """

    name: str
    record: Callable[[Path], dict | None]
    slug: Callable[[Path], str | None]


_SOURCES: dict[str, ModelLoader] = {}
_KINDS: dict[str, CheckpointKind] = {}


def register_source(name: str, load: ModelLoader) -> None:
    """Make `load_model(name, tokenizer, device, seed, plant=..., data_dir=...)` return
    `load(tokenizer, device, seed, plant=..., data_dir=...)`. Registering a name again
    replaces its loader.

    Raises:
        ValueError: `name` is one of `BUILTIN_MODELS`.
    """
    if name in BUILTIN_MODELS:
        raise ValueError(f"{name!r} is built in; a source cannot replace it")
    _SOURCES[name] = load


def register_checkpoint_kind(kind: CheckpointKind) -> None:
    """Recognise the checkpoint folders of `kind` in `load_model` and `model_slug`
    (registering a kind of the same name again replaces it)."""
    _KINDS[kind.name] = kind


def model_names() -> tuple[str, ...]:
    """The models `load_model` knows by a name of their own: the built-in ones, then the
    registered ones (and any Pythia name, `pythia.parse_pythia`, not listed here)."""
    return BUILTIN_MODELS + tuple(_SOURCES)
