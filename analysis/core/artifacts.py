"""Versioned, content-addressed result artifacts.

An artifact is a JSON envelope (see docs/ARTIFACTS.md) around one step's result. Its `key`
is the sha256 of everything the result depends on: schema version, step name, the source
of every project module the step can execute and the package's data files
(`codehash.code_record`), model fingerprint, data checksums, parameters, seed, upstream keys,
library versions and device. A step whose artifact on disk carries the same key, and whose
payload still hashes to the recorded `payload_sha256`, is not recomputed.

Writes are atomic (temporary file in the same folder, fsync, `os.replace`), so a killed
run leaves either the previous file or the new one, never a partial file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
LIBRARIES = ("torch", "transformer-lens", "transformers", "tokenizers", "numpy", "scikit-learn",
             "matplotlib", "jinja2", "nbclient")


def library_versions() -> dict[str, str]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "not installed"
    return out


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_default)


def _default(o):
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@dataclass(frozen=True)
class StepInputs:
    """Everything a step's result depends on; `key()` is its content hash."""

    step: str
    code: dict           # codehash.code_record: {"module", "sha256", "modules", "resources"}
    model: dict          # model provenance (includes the weights' fingerprint)
    data: dict           # {label: corpus provenance (file, sha256, n_examples)}
    params: dict
    seed: int
    upstream: dict       # {step: key}
    device: str
    # The configuration of the run that uses the step (context neuron, corpus, profile and
    # its sizes): a record, outside the key, so that a step that does not depend on (say)
    # the context neuron is still reused; read by the regression check.
    run: dict | None = None

    def key(self) -> str:
        return sha256_text(canonical_json({
            "schema_version": SCHEMA_VERSION, "step": self.step, "code": self.code,
            "model": self.model, "data": self.data, "params": self.params, "seed": self.seed,
            "upstream": self.upstream, "device": self.device, "libraries": library_versions(),
        }))


def envelope(inputs: StepInputs, result: dict, wall_time_s: float, cost: dict | None = None) -> dict:
    """The JSON envelope of one step's result. `cost` (tokens forwarded, peak memory) is,
    like the wall time, a record of how it was computed: outside the key and the payload."""
    return {
        "schema_version": SCHEMA_VERSION,
        "step": inputs.step,
        "key": inputs.key(),
        "payload_sha256": sha256_text(canonical_json(result)),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_time_s": round(wall_time_s, 3),
        "cost": cost or {},
        "provenance": {
            "model": inputs.model,
            "data": inputs.data,
            "params": inputs.params,
            "seed": inputs.seed,
            "code": inputs.code,
            "upstream": inputs.upstream,
            "libraries": library_versions(),
            "device": inputs.device,
            "platform": platform.platform(),
            "python": platform.python_version(),
            **({"run": inputs.run} if inputs.run is not None else {}),
        },
        "result": result,
    }


class ArtifactStore:
    """The `artifacts/` folder of one output directory."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, step: str) -> Path:
        return self.root / f"{step}.json"

    def array_path(self, step: str, name: str) -> Path:
        return self.root / f"{step}.{name}.npy"

    def load_valid(self, step: str, key: str) -> dict | None:
        """The artifact of `step` if it exists, parses, has this key and schema, and its
        payload (and arrays) still hash to what was recorded; else None (recompute)."""
        p = self.path(step)
        if not p.is_file():
            return None
        try:
            art = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        if not isinstance(art, dict) or art.get("schema_version") != SCHEMA_VERSION:
            return None
        if art.get("key") != key or "result" not in art:
            return None
        try:
            if sha256_text(canonical_json(art["result"])) != art.get("payload_sha256"):
                return None
        except (TypeError, ValueError):
            return None
        for name, digest in (art.get("arrays") or {}).items():
            ap = self.array_path(step, name)
            if not ap.is_file() or hashlib.sha256(ap.read_bytes()).hexdigest() != digest:
                return None
        return art

    def save(self, inputs: StepInputs, result: dict, wall_time_s: float,
             arrays: dict[str, np.ndarray] | None = None, cost: dict | None = None) -> dict:
        """Write arrays first, then the JSON envelope last: the envelope is what marks a
        step complete, and it records the arrays' hashes."""
        art = envelope(inputs, result, wall_time_s, cost)
        if arrays:
            art["arrays"] = {}
            for name, arr in arrays.items():
                import io

                buf = io.BytesIO()
                np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
                data = buf.getvalue()
                atomic_write_bytes(self.array_path(inputs.step, name), data)
                art["arrays"][name] = hashlib.sha256(data).hexdigest()
        atomic_write_text(self.path(inputs.step), json.dumps(art, indent=1, sort_keys=True,
                                                             allow_nan=False, default=_default))
        return art

    def refresh_run(self, art: dict, run: dict) -> dict:
        """A reused artifact, its `provenance.run` set to the run that reuses it (the JSON
        envelope rewritten atomically; key, payload and arrays unchanged)."""
        art = {**art, "provenance": {**art["provenance"], "run": run}}
        atomic_write_text(self.path(art["step"]), json.dumps(art, indent=1, sort_keys=True,
                                                              allow_nan=False, default=_default))
        return art

    def load_array(self, step: str, name: str) -> np.ndarray:
        return np.load(self.array_path(step, name), allow_pickle=False)
