"""Render the report: Jinja templates -> notebook -> executed notebook -> HTML + PDF.

Pipeline (``build_report``):

1. Every section in ``SECTIONS`` whose artifacts are present is rendered from
   ``templates/sections/<name>.md.j2`` with the report context (Jinja2, ``StrictUndefined``).
   A section template is a sequence of notebook cells: text up to the first marker line and
   after a ``%%% markdown`` line is a markdown cell, text after a ``%%% code`` line is a code
   cell.  Prose numbers come from ``context["artifacts"][step]["result"]`` through the
   ``fmt``/``num`` filters; code cells load ``artifacts/<step>.json`` and show tables/figures.
2. The cells (after ``templates/cells/setup.py.j2``) form an nbformat v4 notebook, executed
   with nbclient in ``out_dir`` (so ``artifacts/`` and ``figures/`` resolve).
3. The executed notebook is converted with quarto (if installed and allowed) or with the
   pandoc bundled in pypandoc-binary (HTML; Typst source compiled to PDF by the ``typst``
   package).
4. Everything is written into ``out_dir/.report-tmp-*`` and moved into place with
   ``os.replace`` only once every output exists; on failure the previous report is untouched.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import nbformat

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

RENDERERS = ("auto", "pandoc", "quarto")


from analysis.core import stats  # noqa: E402
from analysis.core.config import PROFILES  # noqa: E402
from analysis.core.errors import ReportError as _BaseReportError  # noqa: E402
from analysis.orchestration.regression import outcome_sentence  # noqa: E402
from report.degenerate import Rules  # noqa: E402
from report.describe import describe  # noqa: E402


class ReportError(_BaseReportError):
    """The report could not be built; the message says why in one line."""


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class Section:
    """One report section: heading, template, and the artifacts it needs.

    The section is included only when every step in ``requires`` is in
    ``context["artifacts"]`` (and ``when(context)`` is true, if given).  Figures whose
    ``step`` is in ``figure_steps`` are shown by this section's template (``figures_for``).
    """

    heading: str
    template: str
    requires: tuple[str, ...] = ()
    figure_steps: tuple[str, ...] = ()
    when: Callable[[Mapping[str, Any]], bool] | None = None
    # The section studies neurons named by the seed's Pythia-70M indices (not found in this
    # run's data): in another model they are arbitrary neurons, and a badge says so.
    seed_named: bool = False

    def included(self, context: Mapping[str, Any]) -> bool:
        artifacts = context.get("artifacts") or {}
        if any(step not in artifacts for step in self.requires):
            return False
        return self.when is None or bool(self.when(context))


def seed_named_badge(run: Mapping[str, Any]) -> str | None:
    """The one-line badge of a section about seed-named neurons, or None for Pythia-70M
    (where the seed's indices are the neurons it studied)."""
    if run.get("is_pythia", False):
        return None
    kind = ("known-answer control" if run.get("is_planted") else
            "positive control" if run.get("is_organism") else "model that is not Pythia-70M")
    return (f"[In this {kind} the neurons named here are the seed's Pythia-70M indices: "
            f"arbitrary neurons, expected to show nothing; only {run.get('neuron')} has a "
            "known role.]{.badge}")


def _unplaced_figures(context: Mapping[str, Any]) -> list[dict]:
    placed = {
        step for s in SECTIONS if s.figure_steps and s.included(context) for step in s.figure_steps
    }
    return [f for f in context.get("figures") or [] if f.get("step") not in placed]


# Order is report order.  Later analyses add a Section here plus a template.
SECTIONS: tuple[Section, ...] = (
    Section("Summary", "00_summary.md.j2"),
    Section("Setup", "10_setup.md.j2"),
    Section("Neuron discovery", "15_discovery.md.j2", ("discovery",), ("discovery",)),
    Section(
        "Context neuron activations", "20_activations.md.j2", ("activations",), ("activations",)
    ),
    Section("Single-neuron probes", "30_probes.md.j2", ("probes",), ("probes",), seed_named=True),
    Section("Mean ablation", "40_ablation.md.j2", ("ablation",), ("ablation",), seed_named=True),
    Section("Direct logit attribution and loss by component", "50_dla.md.j2", ("dla",), ("dla",)),
    Section("Tokens boosted by the context layer", "51_l3_tokens.md.j2", ("l3_tokens",),
            ("l3_tokens",)),
    Section("Unigram statistics", "52_unigrams.md.j2", ("unigrams",), ("unigrams",)),
    Section("Probes with the context neuron ablated", "53_probes_ablated.md.j2",
            ("probes_ablated",), ("probes_ablated",), seed_named=True),
    Section("English and French neuron probes", "54_language_probes.md.j2",
            ("probes_english_neurons",), seed_named=True),
    Section("Correlation with the context neuron", "55_correlations.md.j2", ("correlations",),
            ("correlations",)),
    Section("Backup test: pairs of ablated neurons", "56_backup.md.j2", ("backup",)),
    Section("Robustness: null distributions and specification curve", "57_robustness.md.j2",
            ("robustness",), ("robustness",)),
    Section("Contextual n-grams: direct and indirect effects", "58_ngrams.md.j2", ("ngrams",), ("ngrams",)),
    Section("Downstream neurons by activation difference", "60_downstream.md.j2", ("downstream",),
            ("downstream",)),
    Section("Individual downstream neurons", "61_neurons.md.j2", ("neurons",), ("neurons",), seed_named=True),
    Section("L5N1336", "62_l5n1336.md.j2", ("neurons",), ("neurons",),
            when=lambda c: any(e["neuron"] == "L5N1336"
                               for e in c["artifacts"]["neurons"]["result"]["neurons"]),
            seed_named=True),
    Section("Training dynamics", "70_dynamics.md.j2", ("dynamics",), ("dynamics",)),
    Section("The paper's curves and claims", "72_paper.md.j2", ("paper",), ("paper",)),
    Section("Training dynamics across checkpoints and model sizes", "75_sweep.md.j2", (), ("sweep",),
            when=lambda c: c.get("sweep") is not None),
    Section("Neuron cards", "75_cards.md.j2", ("cards",), ("cards",)),
    Section("Other figures", "80_other_figures.md.j2", when=lambda c: bool(_unplaced_figures(c))),
    Section("Provenance", "90_provenance.md.j2"),
    Section("Regression check", "95_regression.md.j2", when=lambda c: c.get("regression") is not None),
)

# The report of a training-dynamics sweep (`german-neuron report --sweep DIR`): no
# single-model artifacts, the sweep's table instead (`context["sweep"]`).
SWEEP_SECTIONS: tuple[Section, ...] = (
    Section("Sweep", "sweep_setup.md.j2"),
    Section("Training dynamics across checkpoints and model sizes", "75_sweep.md.j2", (), ("sweep",)),
    Section("Per training seed", "76_sweep_seeds.md.j2", (), ("sweep_seeds",),
            when=lambda c: bool((c.get("sweep") or {}).get("seeds"))),
    Section("Checkpoints", "sweep_checkpoints.md.j2"),
    Section("Provenance", "sweep_provenance.md.j2"),
)

# Steps in the order their provenance is summarised (others follow alphabetically).
STEP_ORDER = ("discovery", "activations", "probes", "ablation", "backup", "dynamics", "paper", "dla", "l3_tokens", "unigrams", "probes_ablated",
              "ngrams", "probes_english_neurons", "probes_french_neurons", "correlations", "downstream", "neurons",
              "cards")

_CELL_MARKER = re.compile(r"^%%% (markdown|code)[ \t]*$", re.MULTILINE)

# --------------------------------------------------------------------------- jinja


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and not math.isfinite(value):
        return True
    return False


def _check_value(value: Any, what: str) -> Any:
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()  # raises UndefinedError naming the value
    if _is_missing(value):
        raise ReportError(f"{what}: value is {value!r}; refusing to print it in the report")
    return value


def fmt(value: Any, digits: int = 2, sign: bool = False) -> str:
    """Format a number with ``digits`` decimals (``sign``: always show +/-)."""
    _check_value(value, "fmt")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReportError(f"fmt: expected a number, got {value!r}")
    text = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    # -0.00 reads as a sign error; print 0.00 (or +0.00)
    if re.fullmatch(r"-0\.?0*", text):
        text = ("+" if sign else "") + text[1:]
    return text


def ci(interval: Any, digits: int = 2, sign: bool = False) -> str:
    """A 95% interval `[lo, hi]` as `[lo, hi]` text with ``digits`` decimals (``sign``: with
    +/-), for prose beside its value: ``{{ x | fmt(2) }} {{ x_ci | ci(2) }}``.

    Raises:
        ReportError: the interval is missing (None) or not two numbers.
    """
    _check_value(interval, "ci")
    if not isinstance(interval, (list, tuple)) or len(interval) != 2:
        raise ReportError(f"ci: expected [low, high], got {interval!r}")
    return f"[{fmt(interval[0], digits, sign)}, {fmt(interval[1], digits, sign)}]"


def num(value: Any) -> str:
    """Format an integer count with thousands separators."""
    _check_value(value, "num")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ReportError(f"num: expected an integer, got {value!r}")
    return f"{int(value):,}"


def pyrepr(value: Any) -> str:
    """A Python literal for JSON-like data (for code cells)."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return repr(_plain(value))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# Every ``{{ ... }}`` output is bracketed by these two private-use characters while a
# template renders, so that ``_split_cells`` can tell text a template inserted from the
# template's own text; they never reach a notebook cell.
_OPEN, _CLOSE = "\ue000", "\ue001"
_UNMARK = str.maketrans("", "", _OPEN + _CLOSE)
# A line that starts (after indentation and block-quote markers) with inserted digits
# followed by "." or ")": an ordered-list marker in Markdown ("top\n10.\nIts" is a list).
_INSERTED_LIST_MARKER = re.compile(
    rf"[ \t>]*(?P<open>{_OPEN}+)\d{{1,9}}(?P<close>{_CLOSE}*)(?P<punct>[.)])"
)
_FENCE = re.compile(r"[ \t]*(```|~~~)")


def _finalize(value: Any) -> Any:
    # Every ``{{ ... }}`` passes through here: None/NaN must never reach the report.
    if _is_missing(value):
        raise ReportError(f"template printed {value!r}; use fmt/num or handle the missing value")
    return f"{_OPEN}{value}{_CLOSE}"


def _unmark(text: str) -> str:
    return text.translate(_UNMARK)


def _inline_span_at(rest: str) -> bool:
    """True if the innermost inserted span open at the start of ``rest`` closes within it
    (``rest`` is the remainder of one line): the text came from a value, not from a
    multi-line macro whose own template text begins there."""
    depth = 1
    for ch in rest:
        if ch == _OPEN:
            depth += 1
        elif ch == _CLOSE:
            depth -= 1
            if depth == 0:
                return True
    return False


def _protect_markdown(text: str) -> str:
    """Markdown cell text with its insertion marks removed, after escaping every ordered-list
    marker that a template expression put at the start of a line.

    Generated prose is wrapped in the template source, so a number printed by ``{{ ... }}``
    can land at the start of a line ("... not among its top\\n10.\\nIts mean ..."), where
    Markdown reads ``10.`` or ``10)`` followed by a space or the line end as a numbered list
    item: the number vanishes from the text. Such a marker is escaped (``10\\.``), which
    renders as the number and its punctuation. List markers written in the template itself
    (not inserted) are left alone, and so are lines in fenced code blocks."""
    lines = text.split("\n")
    fenced = False
    for i, line in enumerate(lines):
        if _FENCE.match(_unmark(line)):
            fenced = not fenced
            continue
        m = None if fenced else _INSERTED_LIST_MARKER.match(line)
        if m is None:
            continue
        after = _unmark(line[m.end():])
        if after and after[0] not in " \t":
            continue  # "10.5", "3)," ...: not a list marker
        if not m.group("close") and not _inline_span_at(line[m.end("open") :]):
            continue  # the digits are a macro's own template text
        lines[i] = line[: m.start("punct")] + "\\" + line[m.start("punct") :]
    return _unmark("\n".join(lines))


def make_environment(templates_dir: Path | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir or TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(fmt=fmt, num=num, ci=ci, pyrepr=pyrepr, outcome_sentence=outcome_sentence)
    return env


def _template_location(exc: BaseException) -> str:
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(".j2"):
            return f"{Path(frame.filename).name}:{frame.lineno}"
    return ""


def _render(env: jinja2.Environment, name: str, variables: Mapping[str, Any]) -> str:
    try:
        return env.get_template(name).render(**variables)
    except jinja2.UndefinedError as exc:
        where = _template_location(exc) or name
        raise ReportError(f"template {where}: missing value: {exc.message}") from exc
    except ReportError as exc:
        where = _template_location(exc) or name
        raise ReportError(f"template {where}: {exc}") from exc
    except jinja2.TemplateError as exc:
        raise ReportError(f"template {name}: {type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------- notebook


def _split_cells(text: str) -> list[tuple[str, str]]:
    """Split a rendered section template into (kind, source) cells; empty cells are dropped.
    Markdown cells go through ``_protect_markdown``; every cell loses the insertion marks."""
    cells: list[tuple[str, str]] = []
    kind, pos = "markdown", 0
    for m in _CELL_MARKER.finditer(text):
        cells.append((kind, text[pos : m.start()]))
        kind, pos = m.group(1), m.end()
    cells.append((kind, text[pos:]))
    out = []
    for kind, src in cells:
        src = _protect_markdown(src) if kind == "markdown" else _unmark(src)
        src = re.sub(r"\n{3,}", "\n\n", src).strip("\n")
        if src.strip():
            out.append((kind, src))
    return out


def _ordered_steps(artifacts: Mapping[str, Any]) -> list[str]:
    known = [s for s in STEP_ORDER if s in artifacts]
    return known + sorted(s for s in artifacts if s not in STEP_ORDER)


def _check_context(context: Mapping[str, Any]) -> None:
    for key in ("title", "run", "artifacts", "figures"):
        if key not in context:
            raise ReportError(f"context is missing {key!r}")
    if "seed" not in context:
        raise ReportError("context is missing 'seed' (use None when there is no seed reference)")
    for step, art in context["artifacts"].items():
        for key in ("step", "key", "payload_sha256", "result", "provenance"):
            if key not in art:
                raise ReportError(f"artifact {step!r} is missing {key!r}")
        if art["step"] != step:
            raise ReportError(f"artifact under {step!r} says step={art['step']!r}")
    act = context["artifacts"].get("activations")
    neuron = context["run"].get("neuron")
    if act is not None and act["result"].get("context_neuron") != neuron:
        raise ReportError(
            f"run.neuron={neuron!r} but the activations artifact is for "
            f"{act['result'].get('context_neuron')!r}"
        )


SEED_REFERENCE = Path(__file__).resolve().parent.parent / "analysis" / "resources" / "seed_reference.json"


def seed_reference() -> dict:
    """The founding notebook's printed numbers for Pythia-70M (analysis/resources)."""
    return json.loads(SEED_REFERENCE.read_text(encoding="utf-8"))


def _seed_searched() -> dict[str, dict]:
    """For each seed `get_examples_by_neuron` cell (its call text): the seed list entry it
    searched (`top_negative_l5[1]`) and that neuron in Pythia-70M (`L5N213`), so that a
    search run on another neuron can say it is a stand-in."""
    from analysis.families.neurons import SEED_LISTS, SEED_SEARCHES

    out = {}
    for role, searches in SEED_SEARCHES.items():
        name, _, rest = role.partition("[")
        neuron = (f"L{name[-1]}N{SEED_LISTS[name][int(rest.rstrip(']'))]}" if name in SEED_LISTS
                  else role)
        for x in searches:
            out[x.seed_call] = {"role": role, "neuron": neuron}
    return out


def _template_variables(context: Mapping[str, Any]) -> dict[str, Any]:
    artifacts = context["artifacts"]
    figures = list(context["figures"])
    steps = _ordered_steps(artifacts)
    first = artifacts[steps[0]]["provenance"] if steps else None
    data: dict[str, Any] = {}
    for step in steps:
        for role, entry in (artifacts[step]["provenance"].get("data") or {}).items():
            data.setdefault(role, entry)

    def figures_for(*fig_steps: str) -> list[dict]:
        return [f for f in figures if f.get("step") in fig_steps]

    model = first["model"] if first else None
    return {
        # the degeneracy rules, bound to the run's profile's display thresholds (a profile
        # name this version does not know, e.g. an old run's, gets the quick profile's)
        "degenerate": Rules(PROFILES.get(context["run"].get("profile"), PROFILES["quick"])),
        "describe": describe,  # a neuron card's one-line description
        "title": context["title"],
        "run": context["run"],
        # The seed's printed Pythia-70M numbers, shown beside every model's in the verdict
        # (`seed` stays None for other models: the sections compare only like with like).
        "seed_pythia": context["seed"] or seed_reference(),
        "uniform_loss": math.log(model["d_vocab"]) if model and model.get("d_vocab") else None,
        "artifacts": artifacts,
        "figures": figures,
        "seed": context["seed"],
        "regression": context.get("regression"),
        "steps": steps,
        "model": model,
        "libraries": (first.get("libraries") or {}) if first else {},
        "data_files": data,
        "figures_for": figures_for,
        "unplaced_figures": _unplaced_figures(context),
        "sweep": context.get("sweep"),
        "intervals": {"resamples": stats.BOOTSTRAP_RESAMPLES, "seed": stats.BOOTSTRAP_SEED},
        "seed_searched": _seed_searched() if "neurons" in artifacts else {},
        "cards": [c["neuron"] for c in artifacts["cards"]["result"]["cards"]]
        if "cards" in artifacts else [],
    }


def build_notebook(
    context: Mapping[str, Any], templates_dir: Path | None = None,
    sections: tuple[Section, ...] | None = None,
) -> nbformat.NotebookNode:
    """Render the templates into an (unexecuted) report notebook (`sections`: the report's
    sections, default `SECTIONS`; `SWEEP_SECTIONS` for a sweep's report)."""
    _check_context(context)
    env = make_environment(templates_dir)
    variables = _template_variables(context)
    v4 = nbformat.v4
    nb = v4.new_notebook()
    nb.metadata.update(
        {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "title": context["title"],
        }
    )
    # Front matter for quarto (pandoc drops raw cells without a format).
    front = {"title": context["title"], "date": context["run"].get("created") or ""}
    nb.cells.append(
        v4.new_raw_cell(
            "---\n" + "\n".join(f"{k}: {json.dumps(v)}" for k, v in front.items()) + "\n---"
        )
    )
    setup = _unmark(_render(env, "cells/setup.py.j2", variables))
    nb.cells.append(v4.new_code_cell("#| include: false\n" + setup.strip("\n")))
    for section in SECTIONS if sections is None else sections:
        if not section.included(context):
            continue
        cells = _split_cells(_render(env, f"sections/{section.template}", variables))
        heading = f"# {section.heading}"
        badge = seed_named_badge(context["run"]) if section.seed_named else None
        if badge:
            heading += f"\n\n{badge}"
        if cells and cells[0][0] == "markdown":
            cells[0] = ("markdown", f"{heading}\n\n{cells[0][1]}")
        else:
            cells.insert(0, ("markdown", heading))
        for kind, src in cells:
            if kind == "markdown":
                nb.cells.append(v4.new_markdown_cell(src))
            else:
                nb.cells.append(v4.new_code_cell("#| echo: false\n" + src))
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:03d}"  # deterministic (nbformat would pick random ids)
    return nb


def execute_notebook(nb: nbformat.NotebookNode, workdir: Path, timeout_s: int) -> None:
    """Execute ``nb`` in place with the current environment's python3 kernel, cwd ``workdir``."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout_s,
        startup_timeout=min(120, timeout_s),
        resources={"metadata": {"path": str(workdir)}},
        record_timing=False,  # keeps report.ipynb byte-reproducible
    )
    try:
        client.execute()
    except CellExecutionError as exc:
        last = (exc.traceback or str(exc)).strip().splitlines()
        detail = f"{exc.ename}: {exc.evalue}" if getattr(exc, "ename", None) else last[-1]
        raise ReportError(f"a report notebook cell failed: {detail}") from exc
    except (CellTimeoutError, DeadKernelError, TimeoutError, RuntimeError) as exc:
        raise ReportError(f"report notebook execution failed: {type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------- conversion


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise ReportError(f"{what} failed (exit {proc.returncode}): {' | '.join(msg[-3:])}")


def _pandoc_metadata(context: Mapping[str, Any], tmp: Path) -> Path:
    meta = {
        "title": context["title"],
        "date": context["run"].get("created") or "",
        "lang": "en",
        "papersize": "a4",
        "margin": {"x": "2cm", "y": "2.2cm"},
        "fontsize": "10pt",
        "page-numbering": "1",
        "toc-title": "Contents",
    }
    path = tmp / "metadata.yaml"
    path.write_text(json.dumps(meta, indent=1), encoding="utf-8")  # JSON is YAML
    return path


def _pandoc_common(nb_path: Path, meta: Path, templates_dir: Path) -> list[str]:
    import pypandoc

    return [
        pypandoc.get_pandoc_path(),
        str(nb_path),
        # header_attributes: `## L3N669 {#card-L3N669}` (the cards' link targets);
        # raw_attribute: a raw Typst page break before each card (dropped in the HTML)
        # fenced_divs, bracketed_spans: the verdict box, badges and anchors
        "--from=ipynb+table_captions+header_attributes+raw_attribute+fenced_divs+bracketed_spans",
        "--standalone",
        "--toc",
        "--toc-depth=2",
        "--columns=10000",  # never derive relative table widths from source line length
        "--ipynb-output=best",
        f"--metadata-file={meta}",
        f"--lua-filter={templates_dir / 'pandoc' / 'report.lua'}",
    ]


VENDOR_DIR = Path(__file__).resolve().parent / "vendor"
# plotly.js-basic-dist-min (report/vendor/README.md): its trace types, and its hash, so that a
# truncated or edited copy is refused instead of drawing nothing.
BASIC_BUNDLE = VENDOR_DIR / "plotly-basic.min.js"
BASIC_BUNDLE_SHA256 = "99784e3abfb07b142a15e521a439e6d9addceadb3f79553fd24c72774f0649ba"
BASIC_TRACE_TYPES = frozenset({"scatter", "bar", "pie"})


def figure_trace_types(figures: list[dict], base: Path) -> set[str]:
    """The plotly trace types drawn by the report's interactive figures (`figures`: the
    context's figure records; their `plotly` spec paths are relative to `base`)."""
    types: set[str] = set()
    for fig in figures:
        if fig.get("plotly"):
            spec = json.loads((base / fig["plotly"]).read_text(encoding="utf-8"))
            types |= {t.get("type", "scatter") for t in spec.get("data", [])}
    return types


def plotly_js(trace_types: set[str] | None = None) -> tuple[str, str]:
    """plotly.js source to inline and its name: the vendored partial bundle when it draws every
    type in `trace_types` (None: unknown, use the full bundle), else the installed `plotly`
    package's full bundle. Both are offline.

    Raises:
        ReportError: the vendored bundle does not match its recorded hash.
    """
    import hashlib

    if trace_types is not None and trace_types <= BASIC_TRACE_TYPES:
        data = BASIC_BUNDLE.read_bytes()
        if hashlib.sha256(data).hexdigest() != BASIC_BUNDLE_SHA256:
            raise ReportError(f"{BASIC_BUNDLE} does not match its recorded sha256 "
                              "(report/vendor/README.md)")
        return data.decode("utf-8"), "plotly-basic.min.js"
    from plotly.offline import get_plotlyjs

    return get_plotlyjs(), "plotly.js"


def plotly_header(path: Path, templates_dir: Path, trace_types: set[str] | None = None) -> Path:
    """Write the HTML header that makes the report's figures interactive, offline: plotly.js
    (`plotly_js(trace_types)`: the partial bundle when it suffices; inline, once per page) and
    `pandoc/figures.js`, which draws every `<script class="plotly-spec">` into its div.
    Nothing is loaded from the network."""
    js, name = plotly_js(trace_types)
    boot = (templates_dir / "pandoc" / "figures.js").read_text(encoding="utf-8")
    for what, text in ((name, js), ("figures.js", boot)):
        if "</script" in text.lower():
            raise ReportError(f"{what} contains '</script'; it cannot be inlined")
    path.write_text(f'<script type="text/javascript" data-bundle="{name}">{js}</script>\n'
                    f'<script type="text/javascript">{boot}</script>\n', encoding="utf-8")
    return path


def _render_html_pandoc(nb_path: Path, meta: Path, templates_dir: Path, out: Path,
                        trace_types: set[str] | None = None) -> None:
    header = plotly_header(nb_path.parent / "plotly-header.html", templates_dir, trace_types)
    cmd = _pandoc_common(nb_path, meta, templates_dir) + [
        "--to=html5",
        "--embed-resources",
        f"--css={templates_dir / 'pandoc' / 'report.css'}",
        f"--include-in-header={header}",
        f"--output={out}",
    ]
    _run(cmd, nb_path.parent, "pandoc (html)")


def _render_pdf_pandoc(
    nb_path: Path, meta: Path, templates_dir: Path, out: Path, created: str | None
) -> None:
    typ = nb_path.with_suffix(".typ")
    cmd = _pandoc_common(nb_path, meta, templates_dir) + [
        "--to=typst",
        "--extract-media=media",  # relative to cwd (the temp dir), as is the .typ file
        f"--include-in-header={templates_dir / 'pandoc' / 'header.typ'}",
        f"--output={typ.name}",
    ]
    _run(cmd, nb_path.parent, "pandoc (typst)")
    _compile_pdf(typ, out, created)


def _compile_pdf(typ: Path, out: Path, created: str | None) -> None:
    import typst

    kwargs: dict[str, Any] = {}
    stamp = _timestamp(created)
    if stamp is not None:
        kwargs["timestamp"] = stamp  # reproducible PDF metadata
    try:
        typst.compile(str(typ), output=str(out), root=str(typ.parent), **kwargs)
    except Exception as exc:  # typst.TypstError and friends
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReportError(f"typst compile of {typ.name} failed: {first}") from exc


def _timestamp(created: str | None) -> int | None:
    if not created:
        return None
    try:
        return int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def _render_quarto(nb_path: Path, meta: Path, templates_dir: Path, html: Path, pdf: Path,
                   trace_types: set[str] | None = None) -> None:
    quarto = shutil.which("quarto")
    assert quarto is not None
    lua = templates_dir / "pandoc" / "report.lua"
    qmeta = nb_path.parent / "quarto-metadata.yaml"
    base = json.loads(meta.read_text(encoding="utf-8"))
    base.update({"toc": True, "toc-depth": 2, "echo": False, "filters": [str(lua)]})
    qmeta.write_text(json.dumps(base, indent=1), encoding="utf-8")
    common = [quarto, "render", nb_path.name, f"--metadata-file={qmeta.name}"]
    _run(
        common
        + [
            "--to",
            "html",
            "-M",
            "embed-resources:true",
            "-M",
            f"css:{templates_dir / 'pandoc' / 'report.css'}",
            "-M",
            f"include-in-header:{plotly_header(nb_path.parent / 'plotly-header.html', templates_dir, trace_types)}",
            "--output",
            html.name,
        ],
        nb_path.parent,
        "quarto (html)",
    )
    _run(common + ["--to", "typst", "--output", pdf.name], nb_path.parent, "quarto (typst/pdf)")


# --------------------------------------------------------------------------- entry point


def build_report(
    out_dir: Path,
    context: dict,
    renderer: str = "auto",
    timeout_s: int = 600,
    *,
    templates_dir: Path | None = None,
    sections: tuple[Section, ...] | None = None,
) -> dict[str, Path]:
    """Render templates -> report notebook -> execute with nbclient -> report.html + report.pdf in out_dir. Returns {"notebook":..., "html":..., "pdf":...}.

    ``out_dir`` must hold ``artifacts/`` and ``figures/`` (the notebook reads them).
    ``renderer``: "auto" (quarto if on PATH, else pandoc), "quarto" or "pandoc".
    ``timeout_s`` bounds each notebook cell.  Raises ``ReportError``; on any failure the
    previous report.ipynb/html/pdf in ``out_dir`` are left as they were.  ``sections``:
    see ``build_notebook``.
    """
    if renderer not in RENDERERS:
        raise ReportError(f"renderer must be one of {RENDERERS}, got {renderer!r}")
    out_dir = Path(out_dir).resolve()
    if not out_dir.is_dir():
        raise ReportError(f"output directory {out_dir} does not exist")
    templates_dir = Path(templates_dir).resolve() if templates_dir else TEMPLATES_DIR
    use_quarto = renderer == "quarto" or (renderer == "auto" and shutil.which("quarto"))
    if renderer == "quarto" and not shutil.which("quarto"):
        raise ReportError("renderer='quarto' but quarto is not on PATH")

    nb = build_notebook(context, templates_dir, sections)  # template errors surface before any work

    final = {
        "notebook": out_dir / "report.ipynb",
        "html": out_dir / "report.html",
        "pdf": out_dir / "report.pdf",
    }
    tmp = Path(tempfile.mkdtemp(prefix=".report-tmp-", dir=out_dir))
    try:
        execute_notebook(nb, out_dir, timeout_s)
        staged = {k: tmp / p.name for k, p in final.items()}
        nbformat.write(nb, str(staged["notebook"]))
        meta = _pandoc_metadata(context, tmp)
        types = figure_trace_types(list(context["figures"]), out_dir)
        if use_quarto:
            _render_quarto(staged["notebook"], meta, templates_dir, staged["html"], staged["pdf"],
                           types)
        else:
            _render_html_pandoc(staged["notebook"], meta, templates_dir, staged["html"], types)
            _render_pdf_pandoc(
                staged["notebook"],
                meta,
                templates_dir,
                staged["pdf"],
                context["run"].get("created"),
            )
        for path in staged.values():
            if not path.is_file() or path.stat().st_size == 0:
                raise ReportError(f"renderer produced no {path.name}")
        if not staged["pdf"].read_bytes()[:5] == b"%PDF-":
            raise ReportError("renderer produced a report.pdf that is not a PDF")
        for key in ("notebook", "html", "pdf"):
            os.replace(staged[key], final[key])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
