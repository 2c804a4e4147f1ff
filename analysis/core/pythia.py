"""The Pythia models known by name: one registry for `report --model` and `sweep --models`.

Names, each also accepted with the Hub owner (`EleutherAI/pythia-160m`):

* `pythia-<size>` and `pythia-<size>-deduped`, sizes 14m, 31m, 70m, 160m, 410m, 1b, 1.4b,
  2.8b, 6.9b, 12b (the Pythia suite, Biderman et al. 2023; training seed 1234);
* `pythia-<size>-seed<k>`, k = 1..9, sizes 14m, 31m, 70m, 160m, 410m: the PolyPythias
  (van der Wal et al., ICLR 2025, arXiv 2503.09543), the same recipe with another seed of
  both the initialisation and the data order;
* `pythia-160m-data-seed<k>` and `pythia-160m-weight-seed<k>`, k = 1..3: PolyPythias runs
  that vary only the data order, or only the initialisation.

Every one of them publishes the same 154 training checkpoints as Hub branches (`step0`,
the log-spaced `step1` ... `step512`, then every 1,000 steps to `step143000`, the final
model), as the PolyPythias model cards state.

Shapes are known without a download (`PYTHIA_SHAPES`, from the Pythia paper's table 1 and
the PolyPythias model cards; a seed has its size's shape), so that `--neuron` and `--plant`
are checked before any compute. Only `pythia-70m` holds the weights the seed notebook
studied: its printed values, and L3N669, belong to that model alone.

The model loader imports this module, so its source is in every step's cache key and in the
generated models' key: what only the report's text needs (the German neurons other work
names) is kept in `analysis/orchestration/references.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OWNER = "EleutherAI"
FINAL_REVISION = "step143000"  # the final checkpoint's branch (`main` can move)
SEED_MODEL = "pythia-70m"      # the seed notebook's model: the only one its values describe

# (layers, d_model, attention heads, d_mlp) of each size; d_mlp is 4 d_model throughout.
PYTHIA_SHAPES: dict[str, tuple[int, int, int, int]] = {
    "14m": (6, 128, 4, 512),
    "31m": (6, 256, 8, 1024),
    "70m": (6, 512, 8, 2048),
    "160m": (12, 768, 12, 3072),
    "410m": (24, 1024, 16, 4096),
    "1b": (16, 2048, 8, 8192),
    "1.4b": (24, 2048, 16, 8192),
    "2.8b": (32, 2560, 32, 10240),
    "6.9b": (32, 4096, 32, 16384),
    "12b": (36, 5120, 40, 20480),
}
PYTHIA_SIZES = tuple(PYTHIA_SHAPES)
POLYPYTHIA_SIZES = ("14m", "31m", "70m", "160m", "410m")
# PolyPythias variation -> (the sizes that have it, the seeds k of `-<variation><k>`)
VARIATIONS: dict[str, tuple[tuple[str, ...], range]] = {
    "seed": (POLYPYTHIA_SIZES, range(1, 10)),
    "data-seed": (("160m",), range(1, 4)),
    "weight-seed": (("160m",), range(1, 4)),
}
VARIATION_MEANING = {
    "seed": "another seed of the initialisation and of the data order",
    "data-seed": "another data order, Pythia's initialisation",
    "weight-seed": "another initialisation, Pythia's data order",
}

# Pythia's 154 checkpoints: step0, the log-spaced step1 ... step512, then every 1,000 steps.
PYTHIA_CHECKPOINTS = tuple(["step0"] + [f"step{2 ** i}" for i in range(10)]
                           + [f"step{k * 1000}" for k in range(1, 144)])

_SIZE = "|".join(re.escape(s) for s in PYTHIA_SIZES)
_NAME = re.compile(rf"^(?:{OWNER}/)?pythia-({_SIZE})(?:-(deduped)|-(seed|data-seed|weight-seed)(\d+))?$")

ACCEPTED_FORMS = (
    f"pythia-<size> or pythia-<size>-deduped (size {', '.join(PYTHIA_SIZES)}), "
    f"pythia-<size>-seed<1-9> (PolyPythias: {', '.join(POLYPYTHIA_SIZES)}), "
    "pythia-160m-data-seed<1-3> or pythia-160m-weight-seed<1-3>, each also as EleutherAI/<name>"
)


@dataclass(frozen=True)
class PythiaModel:
    """One Pythia training run, as named on the Hub.

    Attributes:
        size: `70m`, `1.4b`, ... (a key of `PYTHIA_SHAPES`).
        deduped: trained on the deduplicated Pile.
        variation: None for the Pythia suite's run, else the PolyPythias variation (`seed`,
            `data-seed`, `weight-seed`).
        seed: the PolyPythias seed k (1..9), None for the Pythia suite's run (seed 1234).
    """

    size: str
    deduped: bool = False
    variation: str | None = None
    seed: int | None = None

    @property
    def name(self) -> str:
        """The short name: `pythia-70m`, `pythia-160m-deduped`, `pythia-70m-seed3`."""
        tail = "-deduped" if self.deduped else (f"-{self.variation}{self.seed}" if self.variation else "")
        return f"pythia-{self.size}{tail}"

    @property
    def repo(self) -> str:
        """The Hub repository: `EleutherAI/<name>`."""
        return f"{OWNER}/{self.name}"

    @property
    def suite(self) -> str:
        return "PolyPythias" if self.variation else "Pythia"

    @property
    def n_params(self) -> float:
        """The nominal size in parameters (`1.4b` -> 1.4e9)."""
        return float(self.size[:-1]) * (1e9 if self.size.endswith("b") else 1e6)

    @property
    def shape(self) -> dict:
        """`{"n_layers", "d_model", "n_heads", "d_mlp"}` from `PYTHIA_SHAPES`."""
        return dict(zip(("n_layers", "d_model", "n_heads", "d_mlp"), PYTHIA_SHAPES[self.size], strict=True))

    @property
    def is_seed_model(self) -> bool:
        """True for `pythia-70m` only: the weights the seed notebook's values were printed on."""
        return self.name == SEED_MODEL

    def describe(self) -> str:
        """One phrase for the report: which run of which suite this is."""
        base = f"Pythia-{self.size.upper()}"
        if self.variation:
            return (f"{base} retrained with PolyPythias {self.variation} {self.seed} "
                    f"({VARIATION_MEANING[self.variation]})")
        return f"{base}{', deduplicated Pile' if self.deduped else ''}, the Pythia suite's run"

    def record(self) -> dict:
        """What a model's provenance says about it (plain JSON)."""
        return {"name": self.name, "repo": self.repo, "suite": self.suite, "size": self.size,
                "deduped": self.deduped, "variation": self.variation, "seed": self.seed,
                "description": self.describe(), "seed_model": self.is_seed_model}


def parse_pythia(text: str) -> PythiaModel | None:
    """The Pythia model a name denotes (`pythia-160m`, `EleutherAI/pythia-70m-seed3`,
    `pythia-1.4b-deduped`), None for any other text (a misspelt size, `pythia-70m-seed10`,
    `pythia-1b-seed1`, which PolyPythias did not train, a folder path)."""
    m = _NAME.match((text or "").strip())
    if m is None:
        return None
    size, deduped, variation, seed = m.group(1), bool(m.group(2)), m.group(3), m.group(4)
    if variation is not None:
        sizes, seeds = VARIATIONS[variation]
        if size not in sizes or seed.startswith("0") or int(seed) not in seeds:
            return None
        return PythiaModel(size, False, variation, int(seed))
    return PythiaModel(size, deduped)


def looks_like_pythia(text: str) -> bool:
    """True for text that was meant as a Pythia name (`pythia-...`, `EleutherAI/...`) but may
    be misspelt: such text gets the list of accepted forms, not the folder message."""
    return (text or "").strip().startswith(("pythia-", f"{OWNER}/"))


def pythia_names() -> tuple[str, ...]:
    """Every short name the registry accepts, in suite order (71 names)."""
    out = [n for s in PYTHIA_SIZES for n in (f"pythia-{s}", f"pythia-{s}-deduped")]
    for variation, (sizes, seeds) in VARIATIONS.items():
        out += [f"pythia-{s}-{variation}{k}" for s in sizes for k in seeds]
    return tuple(out)
