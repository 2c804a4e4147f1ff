"""Plot functions (pure: data in, Figure out) and the one writer `save`."""

from __future__ import annotations

import io
import json
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Fixed metadata keeps PNG/SVG bytes identical across runs (no dates, no random ids).
_PNG_META = {"Software": None}
_SVG_META = {"Date": None, "Creator": None}
plt.rcParams["svg.hashsalt"] = "german-neuron"


# ------------------------------------------------------------------ token labels

_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥"}


@lru_cache(maxsize=1)
def _glyphs() -> frozenset[int]:
    """Code points the default font (DejaVu Sans) can draw."""
    from matplotlib import font_manager

    font = font_manager.get_font(font_manager.findfont("DejaVu Sans"))
    return frozenset(font.get_charmap())


def _spell(token: str, drawable, escapes: dict[str, str]) -> str:
    """`token` with `escapes` applied and any character not `drawable` as `\\u{hex}`."""
    out = []
    for ch in token:
        if ch in escapes:
            out.append(escapes[ch])
        elif not drawable(ch):
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return "".join(out) or "∅"


def token_label(token: str) -> str:
    """A token as a tick label: spaces as `␣`, newlines as `↵`, tabs as `⇥`, `$` escaped
    (mathtext), and characters the font lacks as `\\u{hex}`."""
    return _spell(token, lambda ch: ch.isprintable() and ord(ch) in _glyphs(), {**_VISIBLE, "$": r"\$"})


def md_token(token: str) -> str:
    """A token as a markdown code span for the report tables: spaces `␣`, newlines `↵`,
    tabs `⇥`, other non-printable characters as `\\u{hex}`; a token with a backtick gets a
    double-backtick fence."""
    s = _spell(token, str.isprintable, _VISIBLE)
    return f"`` {s} ``" if "`" in s else f"`{s}`"


def activation_histogram(english: np.ndarray, german: np.ndarray, neuron: str, bins: int = 60):
    """Histogram (percent of activations) of one neuron's `hook_post` on English vs German.
    Seed: `two_histogram(english_activations[layer][:, neuron], german_activations[...])`."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    lo = float(min(english.min(), german.min()))
    hi = float(max(english.max(), german.max()))
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
    for data, label, color in ((english, "English", "#4C72B0"), (german, "German", "#DD8452")):
        w = np.full(len(data), 100.0 / max(len(data), 1))
        ax.hist(data, bins=edges, weights=w, alpha=0.6, label=f"{label} (n={len(data):,})", color=color)
    ax.set_xlabel(f"{neuron} activation (hook_post)")
    ax.set_ylabel("% of activations")
    ax.set_title(f"{neuron} activations on English vs German text")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def error_bars(values, intervals) -> np.ndarray | None:
    """Matplotlib's asymmetric `yerr` ([2, n] distances below and above each value) from
    95% intervals `[[lo, hi], ...]`; None when any interval is missing."""
    if any(c is None for c in intervals):
        return None
    v = np.asarray(values, dtype=float)
    c = np.asarray(intervals, dtype=float)
    return np.clip(np.stack([v - c[:, 0], c[:, 1] - v]), 0.0, None)


def ablation_bar(rows: list[dict]):
    """Loss increase (%) from mean-ablating each neuron, German and English side by side,
    with 95% paired-bootstrap intervals as error bars.
    `rows`: [{"neuron", "german": {"percent_increase", "percent_increase_ci"}, "english": {...}}]."""
    names = [r["neuron"] for r in rows]
    x = np.arange(len(names))
    de = [r["german"]["percent_increase"] for r in rows]
    en = [r["english"]["percent_increase"] for r in rows]
    de_err = error_bars(de, [r["german"].get("percent_increase_ci") for r in rows])
    en_err = error_bars(en, [r["english"].get("percent_increase_ci") for r in rows])
    fig, ax = plt.subplots(figsize=(7.0, 3.6), dpi=110)
    ax.bar(x - 0.2, de, 0.4, yerr=de_err, capsize=2, label="German", color="#DD8452")
    ax.bar(x + 0.2, en, 0.4, yerr=en_err, capsize=2, label="English", color="#4C72B0")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("loss increase (%)")
    ax.set_title("Mean ablation: loss increase per neuron (bars: 95% interval)")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def save(fig, out_dir: Path, name: str, meta: dict) -> dict:
    """Write `<name>.png`, `<name>.svg` and `<name>.json` (meta + file names) atomically."""
    from analysis.core.artifacts import atomic_write_bytes, atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for ext, md in (("png", _PNG_META), ("svg", _SVG_META)):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, metadata=md)
        atomic_write_bytes(out_dir / f"{name}.{ext}", buf.getvalue())
    plt.close(fig)
    record = {"name": name, "png": f"figures/{name}.png", "svg": f"figures/{name}.svg", **meta}
    atomic_write_text(out_dir / f"{name}.json", json.dumps(record, indent=1, sort_keys=True))
    return record
