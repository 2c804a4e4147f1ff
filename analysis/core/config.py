"""Run settings: neurons in `LxNy` notation, sample-size profiles, the seed's neuron lists.

Everything a run depends on that is not a model weight or a data byte lives here, so that
the cache key of every step can be derived from these values alone.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace

from .errors import UsageError

_NEURON_RE = re.compile(r"^L(\d+)N(\d+)$")


@dataclass(frozen=True, order=True)
class Neuron:
    """An MLP neuron, addressed as TransformerLens does: `blocks.{layer}.mlp.hook_post[..., index]`."""

    layer: int
    index: int

    @classmethod
    def parse(cls, text: str) -> Neuron:
        """Parse `LxNy` (e.g. `L3N669`).

        Raises:
            UsageError: the text is not of the form `L<int>N<int>`.
        """
        m = _NEURON_RE.match(text.strip())
        if not m:
            raise UsageError(
                f"neuron {text!r} is not of the form LxNy (layer x, neuron y), e.g. L3N669"
            )
        return cls(int(m.group(1)), int(m.group(2)))

    def check(self, n_layers: int, d_mlp: int) -> None:
        """Raise UsageError if this neuron does not exist in a model of that shape."""
        if not (0 <= self.layer < n_layers):
            raise UsageError(
                f"neuron {self} is out of range: the model has layers 0..{n_layers - 1}"
            )
        if not (0 <= self.index < d_mlp):
            raise UsageError(
                f"neuron {self} is out of range: layer {self.layer} has neurons 0..{d_mlp - 1}"
            )

    def __str__(self) -> str:
        return f"L{self.layer}N{self.index}"

    def hook(self, name: str = "hook_post") -> str:
        return f"blocks.{self.layer}.mlp.{name}"


def _neurons(pairs: list[tuple[int, int]]) -> tuple[Neuron, ...]:
    return tuple(Neuron(layer, index) for layer, index in pairs)


# The seed's lists (cell "Set up model, data, and deactivate German neuron hook"), kept as
# they are whatever --neuron says: they are what the seed studied in Pythia-70M.
ENGLISH_NEURONS = _neurons(
    [(5, 395), (5, 166), (5, 908), (5, 285), (3, 862), (5, 73), (4, 896), (5, 348), (5, 297), (3, 1204)]
)
GERMAN_NEURONS = _neurons(
    [(4, 482), (5, 1039), (5, 407), (5, 1516), (5, 1336), (4, 326), (5, 250), (3, 669)]
)
FRENCH_NEURONS = _neurons(
    [(5, 112), (4, 1080), (5, 1293), (5, 455), (5, 5), (5, 1901), (5, 486), (4, 975)]
)


@dataclass(frozen=True)
class Profile:
    """Sample sizes of a run. `paper` is the seed's; `quick` fits a 2-core CPU.

    Attributes:
        activation_examples: examples per language whose MLP activations are collected
            (seed: `german_data[:200]`, `english_data[:200]`).
        crop_start, crop_end: token positions kept per example (seed `get_mlp_activations`
            defaults 10 and 400; position 0 is BOS).
        probe_samples: activations per language fed to each single-neuron probe (seed 5,000).
        probe_test_size: held-out fraction of the probe split (seed 0.2).
        loss_examples: examples per language for the mean-ablation losses (seed 1,000).
        dla_examples: German examples for direct logit attribution, component patching and
            the L3 unembedding differences (seed `german_data[:1000]`).
        downstream_examples: examples per language for the downstream-neuron activation
            differences (seed: all German + all English, 3,466).
        shift_examples: examples per language for the L4/L5 `hook_pre` context shift
            (seed `num_activation_examples = 1000`).
        neuron_examples: the most examples any search for a neuron's top loss-difference
            examples reads: each search uses the seed's pool for its cell
            (`german_data[:500]`, `german_data[:1000]` or `english_data[:500]`, see
            `analysis.families.neurons.SEED_SEARCHES`) capped at this (paper 1,000: the
            seed's pools exactly).
        top_examples: examples shown per neuron as heat maps (seed 5).
        ngram_examples: German examples on which the `ngrams` step splits the context
            neuron's effect into direct and indirect parts and searches for trigrams that
            depend on it (Quirke et al.'s `generate_indirect_effects_data.py` and
            `generate_ngrams_data.py`: `german_data[:200]`).
        ngram_prompts: random prompts per trigram (20 common German tokens, then the
            trigram), over which each trigram's losses are averaged (the authors' 100).
        ngram_trigrams: trigrams selected from the text by their dependence on the context
            neuron, when no list is given (for Pythia-70M the paper's 228 are used as given).
        null_neurons_per_layer: random neurons per layer mean-ablated as the null of the
            context neuron's ablation effect (`robustness` step; the authors' null had 11).
            Quick draws 2 per layer and 4 German-positive ones (paper 10 and 20): each null
            neuron costs one full unembedding of the null examples per language, the bulk
            of the step's time on a CPU.
        null_german_neurons: discovery's top German-positive neurons (other than the context
            neuron) mean-ablated as a second null.
        null_loss_examples, null_loss_tokens: examples per language, and tokens per example
            at most, on which the null's losses (and the specification curve's) are measured.
        permutations: label permutations of the family-wise F1 threshold (`robustness`).
        seed: the seed of every random choice (the probe's train/test split; random weights).
        batch_tokens: padded tokens per forward batch (memory, not results).
        heatmap_min_delta_e, negligible_percent: display thresholds, not sizes (`DISPLAY`):
            they decide what the report summarises in one sentence instead of printing
            (`report.degenerate`), never a number of the run.
        heatmap_min_delta_e: a heat map is drawn only when its most coloured token differs
            from white by at least this CIE76 colour difference (2.3: the just-noticeable
            difference, Sharma 2003); below it every token looks white.
        negligible_percent: a loss increase (percent) whose value and interval all lie
            within ± this prints as ±0.00 in the report's 2-decimal tables (half the last
            printed digit): such a row, or a ratio with it as denominator, says nothing.
    """

    name: str
    activation_examples: int
    probe_samples: int
    loss_examples: int
    dla_examples: int = 1000
    downstream_examples: int | None = None
    shift_examples: int = 1000
    neuron_examples: int = 1000
    top_examples: int = 5
    ngram_examples: int = 200
    ngram_prompts: int = 100
    ngram_trigrams: int = 100
    null_neurons_per_layer: int = 10
    null_german_neurons: int = 20
    null_loss_examples: int = 200
    null_loss_tokens: int = 2048
    permutations: int = 1000
    crop_start: int = 10
    crop_end: int = 400
    probe_test_size: float = 0.2
    seed: int = 0
    batch_tokens: int = 4096
    heatmap_min_delta_e: float = 2.3
    negligible_percent: float = 0.005
    # `--set NAME=VALUE` overrides, as given (name, value): shown beside the profile's name.
    overrides: tuple[tuple[str, int | float | None], ...] = ()

    def sizes(self) -> dict:
        """The sizes that define the run's numbers (not `name`, `batch_tokens`, `overrides`,
        nor the display thresholds `DISPLAY`)."""
        d = asdict(self)
        for k in ("name", "batch_tokens", "overrides", *DISPLAY):
            d.pop(k)
        return d

    @property
    def label(self) -> str:
        """`quick`, or `quick with loss_examples=200, dla_examples=100` after `--set`."""
        if not self.overrides:
            return self.name
        return f"{self.name} with " + ", ".join(
            f"{k}={'all' if v is None else v}" for k, v in self.overrides)

    def with_overrides(self, items: list[str] | tuple[str, ...]) -> Profile:
        """This profile with `NAME=VALUE` items applied (`--set`, repeatable; a later item
        wins). VALUE is an integer (`downstream_examples` also takes `all`),
        `probe_test_size` a fraction.

        Raises:
            UsageError: an item without `=`, an unknown name (the message lists the valid
                ones), a value of the wrong type, or a value below what a step needs
                (`SIZE_MINIMUMS`), checked before any compute.
        """
        changes: dict = {}
        for item in items:
            name, sep, raw = item.partition("=")
            name, raw = name.strip(), raw.strip()
            if not sep or not name:
                raise UsageError(f"--set {item!r} is not of the form NAME=VALUE",
                                 hint="e.g. --set loss_examples=200")
            changes[name] = _parse_size(name, raw)
        merged = {**dict(self.overrides), **changes}
        out = replace(self, **changes, overrides=tuple(sorted(merged.items())))
        out.check()
        return out

    def check(self) -> None:
        """Raise UsageError when a size is below what its step needs."""
        for name, low in SIZE_MINIMUMS.items():
            v = getattr(self, name)
            if v is not None and v < low:
                raise UsageError(f"{name}={v} is too small: the {SIZE_NEEDS[name]} needs at least {low}")
        if self.crop_end <= self.crop_start:
            raise UsageError(f"crop_end={self.crop_end} must be greater than crop_start={self.crop_start}")
        if not 0.0 < self.probe_test_size < 1.0:
            raise UsageError(f"probe_test_size={self.probe_test_size} must be a fraction between 0 and 1")
        if self.top_examples > self.neuron_examples:
            raise UsageError(f"top_examples={self.top_examples} exceeds neuron_examples="
                             f"{self.neuron_examples}: the examples shown are chosen among those searched")


# Fields of `Profile` that are display thresholds, not sizes: kept out of `sizes()` (so cache
# keys, regression baselines and `--set` see only what defines the run's numbers).
DISPLAY = ("heatmap_min_delta_e", "negligible_percent")

# What each size must at least be (`--set` is refused below it), and why.
SIZE_MINIMUMS = {"activation_examples": 2, "probe_samples": 10, "loss_examples": 2,
                 "dla_examples": 1, "downstream_examples": 1, "shift_examples": 1,
                 "neuron_examples": 1, "top_examples": 1, "crop_start": 1, "crop_end": 2,
                 "ngram_examples": 2, "ngram_prompts": 2, "ngram_trigrams": 1,
                 "null_neurons_per_layer": 1, "null_german_neurons": 0, "null_loss_examples": 2,
                 "null_loss_tokens": 2, "permutations": 1, "seed": 0}
SIZE_NEEDS = {"activation_examples": "activation mean and probe split", "probe_samples":
              "single-neuron probe's train/test split", "loss_examples": "paired bootstrap of the "
              "loss increase", "dla_examples": "DLA step", "downstream_examples": "downstream step",
              "shift_examples": "context-shift step", "neuron_examples": "example search",
              "top_examples": "heat-map section", "ngram_examples": "paired bootstrap of the "
              "direct/indirect split", "ngram_prompts": "paired bootstrap over a trigram's prompts",
              "ngram_trigrams": "n-gram section",
              "null_neurons_per_layer": "null distribution", "null_german_neurons": "null distribution",
              "null_loss_examples": "paired bootstrap of the null's losses",
              "null_loss_tokens": "next-token loss", "permutations": "family-wise threshold", "crop_start": "crop (position 0 is BOS)",
              "crop_end": "crop", "seed": "random generator"}


def settable_sizes() -> list[str]:
    """The names `--set` accepts: the fields of `Profile.sizes()`."""
    return [f.name for f in fields(Profile)
            if f.name not in ("name", "batch_tokens", "overrides", *DISPLAY)]


def _parse_size(name: str, raw: str):
    valid = settable_sizes()
    if name not in valid:
        raise UsageError(f"--set: unknown size {name!r}; valid names: {', '.join(valid)}")
    if name == "probe_test_size":
        try:
            return float(raw)
        except ValueError:
            raise UsageError(f"--set {name}={raw!r}: not a number (a fraction such as 0.2)") from None
    if name == "downstream_examples" and raw.lower() == "all":
        return None
    try:
        return int(raw, 10)
    except ValueError:
        raise UsageError(f"--set {name}={raw!r}: not an integer") from None


PROFILES: dict[str, Profile] = {
    "paper": Profile("paper", activation_examples=200, probe_samples=5000, loss_examples=1000,
                     dla_examples=1000, downstream_examples=None, shift_examples=1000,
                     neuron_examples=1000, top_examples=5, ngram_examples=200, ngram_prompts=100,
                     ngram_trigrams=100),
    "quick": Profile("quick", activation_examples=30, probe_samples=2000, loss_examples=40,
                     dla_examples=20, downstream_examples=20, shift_examples=20,
                     neuron_examples=20, top_examples=3, ngram_examples=20, ngram_prompts=10,
                     ngram_trigrams=10, null_neurons_per_layer=2, null_german_neurons=4,
                     null_loss_examples=8, null_loss_tokens=64, permutations=19),
}


def get_profile(name: str) -> Profile:
    """Raises UsageError for an unknown profile name."""
    try:
        return PROFILES[name]
    except KeyError:
        raise UsageError(
            f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}"
        ) from None


@dataclass(frozen=True)
class RunConfig:
    """What the user asked for, resolved (paths absolute, names validated).

    `neuron` None means `--neuron auto`: the run replaces it with the discovery step's top
    German-positive neuron (`neuron_discovered` then True). `note`: a paragraph shown as a
    banner at the top of the report (e.g. why the default model fell back to the organism).
    `plant`: the neuron planted in `pythia-70m-planted` (`--plant`; None: L3N669); only
    that model accepts it. `studied`: the neurons the per-neuron steps study besides the
    context neuron (the seed's German neurons; the CLI never changes it, a test may
    narrow it to save time). `dtype`: the forward's matmul dtype, `float32` (the reference)
    or `bfloat16`; `tf32`: TF32 for float32 matmuls on CUDA (see `analysis.core.precision`).
    `paper_dir`: the folder of the authors' published measurements (`--paper-dir`; the
    report resolves the default, `core.paper.resolve_paper_dir`), None when not available.
    """

    model: str
    neuron: Neuron | None
    profile: Profile
    device: str = "cpu"
    data_dir: str | None = None
    tokenizer: str | None = None
    out: str | None = None
    studied: tuple[Neuron, ...] = field(default=GERMAN_NEURONS)
    note: str | None = None
    neuron_discovered: bool = False
    plant: Neuron | None = None
    dtype: str = "float32"
    tf32: bool = False
    paper_dir: str | None = None
