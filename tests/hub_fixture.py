"""A Hugging Face Hub cache for `EleutherAI/pythia-70m`, built locally, so that the real path
(`--model pythia-70m`, `HF_HUB_OFFLINE=1`) runs end to end without the Hub.

The layout is huggingface_hub's own (`$HF_HOME/hub`):

    models--EleutherAI--pythia-70m/
        refs/<revision>                 a file holding the 40-hex commit id (no newline)
        blobs/<sha256>                  the file contents
        snapshots/<commit>/<file>       relative symlinks to ../../blobs/<sha256>
                                        (plain copies where symlinks are not supported)

Each revision holds a tiny random GPT-NeoX (`analysis.core.models.TINY_SHAPE`, LayerNorms
and biases perturbed as the `tiny` model's) with its own seed, and the fixture BPE tokenizer
(`analysis.core.tiny_tokenizer`): `config.json`, `generation_config.json`,
`model.safetensors` (or `pytorch_model.bin`, or shards of either with their
`*.index.json`), `tokenizer.json`, `tokenizer_config.json`,
`special_tokens_map.json`. Reused by the dynamics tests and by sweeps over revisions.

Other repositories (`repo="EleutherAI/pythia-160m"`) and other shapes (`shape=`, keyword
arguments of `GPTNeoXConfig` over `TINY_SHAPE`) build the same layout, for sweeps over
model sizes. `build_pythia_runs` serves other Pythia runs by their registry names (PolyPythias
seeds of 70M, the 14M size) with the layer count and MLP width of the registry's table, so that
the shape checked before compute is the one loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

REPO = "EleutherAI/pythia-70m"
TRAP_MARKER = "UNPICKLED"  # `$HF_HOME/UNPICKLED-<commit>`: created if a trap file is ever unpickled


class _Trap:
    """Unpickling this runs `open(marker, "w")`: evidence that a pickle was executed.
    `torch.load(..., weights_only=True)` refuses it without running it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def repo_folder(hf_home: str | os.PathLike, repo: str = REPO) -> Path:
    """`$HF_HOME/hub/models--<owner>--<name>`."""
    return Path(hf_home) / "hub" / ("models--" + repo.replace("/", "--"))


def commit_id(revision: str, seed: int, repo: str = REPO) -> str:
    """A deterministic 40-hex commit id for a fixture revision."""
    return hashlib.sha1(f"{repo}@{revision}#{seed}".encode()).hexdigest()


def _add_file(repo_dir: Path, snapshot: Path, name: str, data: bytes) -> None:
    sha = hashlib.sha256(data).hexdigest()
    blob = repo_dir / "blobs" / sha
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
        blob.write_bytes(data)
    link = snapshot / name
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        link.symlink_to(os.path.relpath(blob, link.parent))
    except OSError:  # no symlinks (e.g. Windows without developer mode): huggingface_hub copies
        shutil.copyfile(blob, link)


WEIGHTS = ("safetensors", "bin", "safetensors-sharded", "bin-sharded")
SHARDS = 3  # of a sharded checkpoint: more than two, so that a middle shard exists


def _shard_files(state: Mapping, kind: str, n: int = SHARDS) -> dict[str, bytes]:
    """`state` split, in order, into `n` shards named as Hugging Face names them
    (`model-00001-of-00003.safetensors`, `pytorch_model-00001-of-00003.bin`), with their index
    (`model.safetensors.index.json`, `pytorch_model.bin.index.json`)."""
    import torch
    from safetensors.torch import save

    names = list(state)
    stem, ext, index = (("model", "safetensors", "model.safetensors.index.json") if kind == "safetensors"
                        else ("pytorch_model", "bin", "pytorch_model.bin.index.json"))
    files, weight_map = {}, {}
    for i in range(n):
        part = {k: state[k].contiguous().clone() for k in names[i * len(names) // n:(i + 1) * len(names) // n]}
        fname = f"{stem}-{i + 1:05d}-of-{n:05d}.{ext}"
        if kind == "safetensors":
            files[fname] = save(part, metadata={"format": "pt"})
        else:
            with tempfile.TemporaryDirectory() as tmp:
                torch.save(part, Path(tmp) / "w.bin")
                files[fname] = (Path(tmp) / "w.bin").read_bytes()
        weight_map.update(dict.fromkeys(part, fname))
    total = sum(int(v.numel() * v.element_size()) for v in state.values())
    files[index] = json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                              indent=2, sort_keys=True).encode()
    return files


def _checkpoint_files(seed: int, weights: str, shape: Mapping | None = None) -> dict[str, bytes]:
    """The files of a tiny checkpoint (`weights`: one of `WEIGHTS`: one `model.safetensors`
    or `pytorch_model.bin`, or `SHARDS` shards of either with their index; `shape`: config
    keyword arguments over `TINY_SHAPE`)."""
    import torch

    from analysis.core.models import TINY_SHAPE, _perturb_norms_and_biases, random_model
    from analysis.core.tiny_tokenizer import train_fixture_tokenizer

    model = random_model({**TINY_SHAPE, **(shape or {})}, seed)
    _perturb_norms_and_biases(model, seed)
    tok = train_fixture_tokenizer(vocab_size=TINY_SHAPE["vocab_size"])
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    files.setdefault("special_tokens_map.json", json.dumps(
        {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
         "pad_token": "<|padding|>"}).encode())
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, not {weights!r}")
    if weights == "bin":
        del files["model.safetensors"]
        with tempfile.TemporaryDirectory() as tmp:
            torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, Path(tmp) / "w.bin")
            files["pytorch_model.bin"] = (Path(tmp) / "w.bin").read_bytes()
    elif weights.endswith("-sharded"):
        # the tensors save_pretrained wrote (so the same names), split into shards
        from safetensors.torch import load

        state = load(files.pop("model.safetensors"))
        files.update(_shard_files(state, weights.removesuffix("-sharded")))
    return files


def add_revision(hf_home: str | os.PathLike, revision: str, seed: int, *, weights: str = "safetensors",
                 trap_bin: bool = False, trap_only: bool = False, repo: str = REPO,
                 shape: Mapping | None = None) -> str:
    """Put one revision into the cache; returns its commit id.

    `weights`: "safetensors" (model.safetensors), "bin" (pytorch_model.bin from
    `torch.save` of the state dict), "safetensors-sharded" or "bin-sharded" (the same tensors
    in `SHARDS` shards with Hugging Face's index file, as large Pythia checkpoints are). `trap_bin`: also place a `pytorch_model.bin` that, if
    ever unpickled without `weights_only=True`, creates `trap_marker(hf_home, commit)`.
    `trap_only`: that trap is the only weights file. `repo`, `shape`: see the module docstring.
    """
    repo_dir = repo_folder(hf_home, repo)
    commit = commit_id(revision, seed, repo)
    snapshot = repo_dir / "snapshots" / commit
    files = _checkpoint_files(seed, weights, shape)
    if trap_only:
        files.pop("model.safetensors", None)
        files.pop("pytorch_model.bin", None)
    if trap_bin or trap_only:
        marker = str(trap_marker(hf_home, commit))
        files["pytorch_model.bin"] = pickle.dumps(_Trap(marker), protocol=2)
    for name, data in sorted(files.items()):
        _add_file(repo_dir, snapshot, name, data)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / revision).write_text(commit)  # huggingface_hub writes no newline
    return commit


def trap_marker(hf_home: str | os.PathLike, commit: str) -> Path:
    """The file a trap `pytorch_model.bin` of `commit` creates if it is unpickled."""
    return Path(hf_home) / f"{TRAP_MARKER}-{commit}"


def build_hub_cache(hf_home: str | os.PathLike, revisions: Mapping[str, int] | Iterable[str], *,
                    trap_bin: Iterable[str] = (), repo: str = REPO,
                    shape: Mapping | None = None, weights: Mapping[str, str] | None = None) -> dict[str, str]:
    """A Hub cache under `hf_home` holding `revisions` of `repo` (default
    `EleutherAI/pythia-70m`; `shape`: config keyword arguments over `TINY_SHAPE`).

    `revisions`: `{revision: seed}`, or revision names (seeded 0, 1, 2, ... in order, so
    every revision's weights differ). `trap_bin`: revisions that also get a trap
    `pytorch_model.bin` beside their safetensors. `weights`: `{revision: layout}` (see
    `add_revision`; default "safetensors"). Returns `{revision: commit id}`; set
    `HF_HOME=hf_home` (and `HF_HUB_OFFLINE=1`) for a process to read it.
    """
    if not isinstance(revisions, Mapping):
        revisions = {r: i for i, r in enumerate(revisions)}
    traps = set(trap_bin)
    layouts = dict(weights or {})
    return {rev: add_revision(hf_home, rev, seed, weights=layouts.get(rev, "safetensors"),
                              trap_bin=rev in traps, repo=repo, shape=shape)
            for rev, seed in revisions.items()}


# Other Pythia runs, as tiny random models: `TINY_SHAPE` has Pythia-70M's 6 layers and 2,048
# MLP neurons, so only 14M's narrower MLP (512, `pythia.PYTHIA_SHAPES`) is set.
PYTHIA_RUNS: dict[str, dict] = {
    "EleutherAI/pythia-70m-seed1": {},
    "EleutherAI/pythia-70m-seed2": {},
    "EleutherAI/pythia-14m": {"intermediate_size": 512},
}


def build_pythia_runs(hf_home: str | os.PathLike, repos: Mapping[str, Mapping] | Iterable[str] = PYTHIA_RUNS,
                      revisions: Iterable[str] = ("step143000",), *, shape: Mapping | None = None,
                      seed: int = 100) -> dict[str, dict[str, str]]:
    """Put `revisions` of other Pythia repositories into the cache under `hf_home`: `repos`
    as `{repo: shape}` (default `PYTHIA_RUNS`) or repository names (shape `{}`); `shape`
    (keyword arguments over `TINY_SHAPE`) applies to all of them, before their own. The
    j-th revision of the i-th repository is seeded `seed + 10 i + j`, so no two share
    weights. Returns `{repo: {revision: commit id}}`."""
    if not isinstance(repos, Mapping):
        repos = {r: {} for r in repos}
    revisions = tuple(revisions)
    return {repo: build_hub_cache(hf_home, {r: seed + 10 * i + j for j, r in enumerate(revisions)},
                                  repo=repo, shape={**(shape or {}), **own})
            for i, (repo, own) in enumerate(repos.items())}


def offline_env(hf_home: str | os.PathLike, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process that reads the Hub only from `hf_home`'s cache:
    `HF_HOME=hf_home`, `HF_HUB_OFFLINE=1`, and no variable that would point
    huggingface_hub elsewhere."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_ENDPOINT")}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    return env


def patch_offline(monkeypatch, hf_home: str | os.PathLike) -> None:
    """The same for this process: huggingface_hub read its environment at import, so its
    constants are patched as well (undone by `monkeypatch` at the end of the test)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_ENDPOINT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(Path(hf_home) / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
