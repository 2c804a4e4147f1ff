"""The text the analyses read: a registry of checksummed files, fetched or read locally.

Online, files are downloaded with pooch from the public repository the seed's data came
from, pinned to one commit, and verified by sha256. Offline, the same files are read from
`--data-dir` (or `$GERMAN_NEURON_DATA_DIR`) and verified the same way. Either way the
bytes the analyses see are exactly those whose checksums are recorded in every artifact.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

SOURCE_REPO = "lovis-heindrich/superposition"
SOURCE_COMMIT = "d088859fc14a195c3ad67e1fc2a517d1c63fd267"
_RAW = f"https://raw.githubusercontent.com/{SOURCE_REPO}/{SOURCE_COMMIT}/"

DATA_DIR_ENV = "GERMAN_NEURON_DATA_DIR"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    path: str  # relative to the data dir (the layout of shared/data)
    sha256: str
    language: str
    remote: str | None  # path in SOURCE_REPO at SOURCE_COMMIT; None: shipped in the package

    @property
    def url(self) -> str:
        return _RAW + str(self.remote)


REGISTRY: dict[str, DatasetSpec] = {
    s.name: s
    for s in [
        DatasetSpec("kde4_english", "kde4_english.txt",
                    "ce3c8d85516979553adf804d9cc41347ded1dbb290a571723f1d0c148899596d",
                    "english", "context_neuron/data/kde4_english.txt"),
        DatasetSpec("wmt_german_large", "wmt_german_large.txt",
                    "31a40dc8eae06f71baa7089f30e9626a82cc9323f0a60c3e9f6a6a77234a027d",
                    "german", "context_neuron/data/wmt_german_large.txt"),
        DatasetSpec("kde4_french", "kde4_french.txt",
                    "e431f21c0265f438dae8150ada860fb6f661f29fe09dc68102db565b5d8e1151",
                    "french", "context_neuron/data/kde4_french.txt"),
        DatasetSpec("europarl_de_200", "europarl/de_200_samples.txt",
                    "45daff8c8081756978b3fb32309c7ad3f5655363bd25d17638e5766c5cb95987",
                    "german", "context_neuron/data/europarl/de_200_samples.txt"),
        DatasetSpec("europarl_en_200", "europarl/en_200_samples.txt",
                    "7b39a3fe6e02698493fe1936deacfb0de86cbe790d53bd1c44fb88a6f9895a37",
                    "english", "en_200_samples.txt"),
        DatasetSpec("europarl_english", "europarl/english_europarl.json",
                    "0c1c29a93e40fbe363a9934d4867b88f933807ea2de5bde92f049fed14e7080a",
                    "english", "context_neuron/data/english_europarl.json"),
        DatasetSpec("europarl_german", "europarl/german_europarl.json",
                    "7a7636b62ad49ecaf95f1a538bee34172240c31c7ecec1e22600fba2d24b746d",
                    "german", "context_neuron/data/german_europarl.json"),
        # Hermetic corpora for `tiny` and the unit tests: short English/German passages
        # written for this project (analysis/resources/fixtures), not from the seed.
        DatasetSpec("fixture_english", "english.txt",
                    "fae020cbc0abcaaa24951d8b4d3f3ea3065c8bfe02d35a9a3c60150f9c6cbac3",
                    "english", None),
        DatasetSpec("fixture_german", "german.txt",
                    "e6377ac5fc7ee1593f591ffde3d5956b0657ef71ec873a68a793a41a73d366c6",
                    "german", None),
    ]
}

# The seed's two corpora: `haystack_utils.load_txt_data("kde4_english.txt")` and
# `load_txt_data("wmt_german_large.txt")`.
CORPORA = {
    "seed": {"english": "kde4_english", "german": "wmt_german_large", "french": "kde4_french"},
    "fixture": {"english": "fixture_english", "german": "fixture_german"},
    # The organism's held-out Europarl passages (see `heldout_indices`): same domain as its
    # training text, never trained on. Chosen automatically when the model is the organism.
    "europarl-heldout": {"english": "europarl_english_heldout", "german": "europarl_german_heldout"},
}

# Held-out subsets of the Europarl passages: {subset name: (dataset, part)}. The organism
# (analysis.controls.organism) trains on the complement and records these indices in its manifest.
SUBSETS = {
    "europarl_english_heldout": ("europarl_english", "heldout"),
    "europarl_german_heldout": ("europarl_german", "heldout"),
}
HELDOUT_PER_LANGUAGE = 200
HELDOUT_SALT = "german-neuron-heldout-v1"
FIXTURES = Path(__file__).resolve().parents[1] / "resources" / "fixtures"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("german-neuron")) / "data" / SOURCE_COMMIT[:12]


def resolve(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Return a verified local path of dataset `name`.

    With `data_dir` (or `$GERMAN_NEURON_DATA_DIR`) the file is read from there; otherwise it
    is downloaded once into the user cache with pooch. Either way its sha256 is checked.

    Raises:
        DataError: unknown name; directory or file missing; checksum mismatch; download
            impossible (offline) with no local copy.
    """
    if name not in REGISTRY:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(REGISTRY)}")
    spec = REGISTRY[name]
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    if spec.remote is None:
        data_dir = FIXTURES
    if data_dir:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise DataError(
                f"data directory {root} does not exist",
                hint=f"pass --data-dir pointing at the folder that holds {spec.path}",
            )
        path = root / spec.path
        if not path.is_file():
            raise DataError(
                f"data file {path} is missing",
                hint=f"the data directory must hold {spec.path} (sha256 {spec.sha256[:12]}…)",
            )
        actual = sha256_file(path)
        if actual != spec.sha256:
            raise DataError(
                f"data file {path} has sha256 {actual[:12]}…, expected {spec.sha256[:12]}…",
                hint="the file was changed or truncated; restore the original from "
                f"{SOURCE_REPO}@{SOURCE_COMMIT[:7]} ({spec.remote})",
            )
        return path
    import pooch

    try:
        fetched = pooch.retrieve(
            spec.url,
            known_hash=f"sha256:{spec.sha256}",
            fname=spec.path.replace("/", "__"),
            path=_cache_dir(),
            progressbar=False,
        )
    except Exception as exc:  # pooch raises requests/ValueError variants
        raise DataError(
            f"could not download {spec.path} from {SOURCE_REPO}@{SOURCE_COMMIT[:7]}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            hint=f"offline, pass --data-dir DIR (or set ${DATA_DIR_ENV}) with a copy of the files",
        ) from None
    return Path(fetched)


def read_examples(path: Path) -> list[str]:
    """Split a text file on "\\n" exactly, as the seed's `haystack_utils.load_txt_data`.

    JSON files (the Europarl passages) are a list of strings.

    Raises:
        DataError: the file is empty, not UTF-8, or holds no non-empty example.
    """
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})",
            hint="restore the original file; its checksum is in the dataset registry",
        ) from None
    if path.suffix == ".json":
        import json

        examples = json.loads(text)
        if not isinstance(examples, list) or not all(isinstance(x, str) for x in examples):
            raise DataError(f"{path} is not a JSON list of strings")
    else:
        examples = text.split("\n")
    if not any(e.strip() for e in examples):
        raise DataError(f"{path} holds no text")
    return examples


def heldout_indices(n_examples: int, n_heldout: int = HELDOUT_PER_LANGUAGE) -> list[int]:
    """The held-out passages of a file of `n_examples`: the `n_heldout` indices with the
    smallest sha256 of `"<salt>:<index>"`, ascending. A pure function of the two counts
    (no random generator whose stream could change between library versions)."""
    if not 0 < n_heldout < n_examples:
        raise DataError(f"cannot hold out {n_heldout} of {n_examples} examples")
    key = [hashlib.sha256(f"{HELDOUT_SALT}:{i}".encode()).hexdigest() for i in range(n_examples)]
    return sorted(sorted(range(n_examples), key=key.__getitem__)[:n_heldout])


def split_indices(n_examples: int, n_heldout: int = HELDOUT_PER_LANGUAGE) -> tuple[list[int], list[int]]:
    """(training indices, held-out indices), both ascending, disjoint, covering every index."""
    held = heldout_indices(n_examples, n_heldout)
    hs = set(held)
    return [i for i in range(n_examples) if i not in hs], held


def indices_record(indices: list[int]) -> dict:
    """How a subset is recorded in manifests and artifacts: count, indices, their sha256."""
    blob = ",".join(map(str, indices)).encode()
    return {"n": len(indices), "indices": list(indices), "indices_sha256": hashlib.sha256(blob).hexdigest()}


@dataclass(frozen=True)
class Corpus:
    """A dataset's examples, with the checksum that identifies them (and, for a subset,
    which examples of the file were kept)."""

    name: str
    language: str
    file: str
    sha256: str
    examples: tuple[str, ...]
    subset: dict | None = None

    def provenance(self) -> dict:
        prov = {"dataset": self.name, "file": self.file, "sha256": self.sha256,
                "n_examples": len(self.examples)}
        if self.subset is not None:
            prov["subset"] = self.subset
        return prov


def load_corpus(name: str, data_dir: str | os.PathLike | None = None) -> Corpus:
    """Resolve, verify and split dataset `name` (see `resolve` and `read_examples`); a name
    in `SUBSETS` is the held-out part of its dataset."""
    if name in SUBSETS:
        parent, part = SUBSETS[name]
        full = load_corpus(parent, data_dir)
        _, held = split_indices(len(full.examples))
        rec = {"of": parent, "part": part, "salt": HELDOUT_SALT, **indices_record(held)}
        return Corpus(name, full.language, full.file, full.sha256,
                      tuple(full.examples[i] for i in held), rec)
    path = resolve(name, data_dir)
    spec = REGISTRY[name]
    return Corpus(name, spec.language, spec.path, spec.sha256, tuple(read_examples(path)))
