"""Report rendering: templates -> executed notebook -> report.html + report.pdf.

Uses a synthetic output directory (artifacts/*.json + tiny matplotlib PNGs), so no model
and no analysis code is needed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

# report.build, not report: an editable install made before report/__init__.py existed
# maps ``report`` to a namespace package (reinstall with ``pip install -e .`` to fix).
from report import build as report_build
from report.build import SECTIONS, ReportError, build_notebook, build_report

REPO = Path(__file__).resolve().parent.parent
SEED_REFERENCE = REPO / "analysis" / "resources" / "seed_reference.json"

HEADINGS = [
    "Summary",
    "Setup",
    "Context neuron activations",
    "Single-neuron probes",
    "Mean ablation",
    "Provenance",
]

NEURONS = ["L4N482", "L5N1039", "L5N407", "L5N1516", "L5N1336", "L4N326", "L5N250", "L3N669"]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _envelope(step: str, result: dict, upstream: dict | None = None) -> dict:
    payload = json.dumps(result, sort_keys=True, separators=(",", ":"))
    return {
        "schema_version": 1,
        "step": step,
        "key": _sha("key:" + step),
        "payload_sha256": _sha(payload),
        "created": "2026-11-30T16:00:00Z",
        "wall_time_s": 1.25,
        "provenance": {
            "model": {
                "id": "pythia-70m-random",
                "source": "random-init (seed 0)",
                "revision": None,
                "fingerprint": _sha("weights"),
                "n_layers": 6,
                "d_mlp": 2048,
                "d_vocab": 50304,
                "dtype": "float32",
                "attn_implementation": "eager",
                "prepend_bos": True,
                "processing": {
                    "fold_ln": True,
                    "center_writing_weights": True,
                    "center_unembed": True,
                    "fold_value_biases": True,
                },
            },
            "data": {
                "german": {"file": "wmt_german_large.txt", "sha256": _sha("de")},
                "english": {"file": "kde4_english.txt", "sha256": _sha("en")},
            },
            "params": {"profile": "quick"},
            "seed": 0,
            "code": {"module": f"analysis.{step}", "sha256": _sha("code:" + step)},
            "upstream": upstream or {},
            "libraries": {"torch": "2.13.0", "transformer_lens": "4.3.0", "numpy": "2.3.0"},
            "device": "cpu",
            "platform": "Linux-x86_64",
        },
        "result": result,
    }


def _loss(orig: float, abl: float) -> dict:
    pct = (abl - orig) / orig * 100
    return {"original": orig, "ablated": abl, "percent_increase": pct, "n_examples": 60,
            "percent_increase_ci": [pct - 0.5, pct + 0.5],
            "increase_nats_ci": [abl - orig - 0.01, abl - orig + 0.01]}


def make_context(out: Path, *, with_seed: bool = True) -> dict:
    """Write artifacts/ and figures/ into ``out`` and return a matching report context."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "artifacts").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    means_en = {n: round(-0.07 + 0.1 * i, 3) for i, n in enumerate(NEURONS)}
    means_de = {n: round(1.21 - 0.05 * i, 3) for i, n in enumerate(NEURONS)}
    means_de["L3N669"] = 3.82
    activations = _envelope(
        "activations",
        {
            "context_neuron": "L3N669",
            "layers": [3, 4, 5],
            "hook": "mlp.hook_post",
            "crop": [10, 400],
            "n_examples": {"german": 40, "english": 40},
            "n_activations": {"german": 15600, "english": 12200},
            "examples_shorter_than_crop": {"german": 3, "english": 0},
            "context_mean_active": 3.82,
            "context_mean_inactive": -0.07,
            "neurons": NEURONS,
            "english_means": means_en,
            "german_means": means_de,
        },
    )
    probes = _envelope(
        "probes",
        {
            "neurons": NEURONS,
            "n_per_language": 2000,
            "interval": "bootstrap over test points",
            "test_size": 0.2,
            "split_seed": 0,
            "rows": [
                {
                    "neuron": n,
                    "layer": int(n[1]),
                    "index": int(n.split("N")[1]),
                    "train_acc": 0.6 + 0.04 * i,
                    "test_acc": 0.59 + 0.04 * i,
                    "f1": 0.58 + 0.05 * i,
                    "f1_ci": [0.56 + 0.05 * i, 0.60 + 0.05 * i],
                    "test_acc_ci": [0.57 + 0.04 * i, 0.61 + 0.04 * i],
                    "mean_english": means_en[n],
                    "mean_german": means_de[n],
                }
                for i, n in enumerate(NEURONS)
            ],
        },
        upstream={"activations": activations["key"]},
    )
    single = [
        {
            "neuron": n,
            "value": means_en[n],
            "german": _loss(3.18, 3.18 + 0.01 * i),
            "english": _loss(3.96, 3.96 - 0.001 * i),
        }
        for i, n in enumerate(NEURONS)
    ]
    ablation = _envelope(
        "ablation",
        {
            "n_examples": {"german": 60, "english": 60},
            "interval": "paired bootstrap over examples",
            "loss_definition": "mean over examples of the per-example mean next-token cross-entropy (nats)",
            "context": {
                "neuron": "L3N669",
                "value": -0.07,
                "german": _loss(3.18, 3.55),
                "english": _loss(3.96, 3.96),
            },
            "single": single,
            "all_except_context": {
                "intended": {
                    "description": "each German neuron other than L3N669 is set to its own mean English activation, in its own layer",
                    "german": _loss(3.18, 3.23),
                    "english": _loss(3.96, 3.97),
                },
                "seed_literal": {
                    "description": "as the seed's hook did: every listed index in layers 4 and 5 set to one scalar mean",
                    "german": _loss(3.18, 3.24),
                    "english": _loss(3.96, 3.98),
                },
                "filter_fixed": {
                    "description": "the seed's hook with its filter fixed: each layer's listed neurons set to one pooled mean",
                    "german": _loss(3.18, 3.22),
                    "english": _loss(3.96, 3.97),
                },
            },
        },
        upstream={"activations": activations["key"]},
    )
    artifacts = {"activations": activations, "probes": probes, "ablation": ablation}
    for step, art in artifacts.items():
        (out / "artifacts" / f"{step}.json").write_text(json.dumps(art, indent=1))

    figures = []
    for name, step, seed_cell, caption in [
        (
            "activation_hist_L3N669",
            "activations",
            "Check classification accuracy of German neurons",
            "L3N669 activations on English vs German text.",
        ),
        (
            "ablation_bars",
            "ablation",
            "Check loss increase from disabling each German neuron on German data",
            "Loss increase (%) on German and English when each German neuron is mean-ablated.",
        ),
    ]:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar(range(len(NEURONS)), [r["german"]["percent_increase"] for r in single])
        ax.set_title(name)
        fig.tight_layout()
        fig.savefig(out / "figures" / f"{name}.png", dpi=80)
        fig.savefig(out / "figures" / f"{name}.svg")
        plt.close(fig)
        figures.append(
            {
                "name": name,
                "png": f"figures/{name}.png",
                "svg": f"figures/{name}.svg",
                "caption": caption,
                "seed_cell": seed_cell,
                "step": step,
                "artifact_key": artifacts[step]["key"],
                "function": f"figures.plots.{name}",
            }
        )
    return {
        "title": "The German context neuron L3N669 in pythia-70m",
        "run": {
            "model_id": "pythia-70m-random",
            "model_source": "random-init (seed 0)",
            "revision": None,
            "fingerprint": _sha("weights"),
            "is_pythia": False,
            "neuron": "L3N669",
            "profile": "quick",
            "profile_label": "quick",
            "overrides": {},
            "sizes": {
                "activation_examples": 40,
                "probe_samples": 2000,
                "loss_examples": 60,
                "crop_start": 10,
                "crop_end": 400,
            },
            "device": "cpu",
            "created": "2026-11-30T16:00:00Z",
            "command": "german-neuron report --model pythia-70m-random --profile quick --out out",
        },
        "artifacts": artifacts,
        "figures": figures,
        "seed": json.loads(SEED_REFERENCE.read_text()) if with_seed else None,
    }


def _visible_text(html: str) -> str:
    """HTML without embedded data URIs, styles and scripts (base64 can contain 'nan')."""
    html = re.sub(r"data:[^\"')\s]+", "", html)
    return re.sub(r"<(style|script)\b.*?</\1>", "", html, flags=re.S)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    context = make_context(out)
    paths = build_report(out, context, renderer="pandoc", timeout_s=120)
    return out, context, paths


def test_build_produces_notebook_html_pdf(built):
    out, _, paths = built
    assert set(paths) == {"notebook", "html", "pdf"}
    assert paths == {
        "notebook": out / "report.ipynb",
        "html": out / "report.html",
        "pdf": out / "report.pdf",
    }
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0
    assert not list(out.glob(".report-tmp-*"))


def test_html_has_every_section_and_no_leftovers(built):
    _, _, paths = built
    html = paths["html"].read_text(encoding="utf-8")
    text = _visible_text(html)
    positions = []
    for heading in HEADINGS:
        m = re.search(rf"<h1[^>]*>{re.escape(heading)}</h1>", html)
        assert m, heading
        positions.append(m.start())
    assert positions == sorted(positions), "sections out of order"
    for bad in ("{{", "}}", "{%", "%}", "%%% "):
        assert bad not in text, bad
    for bad in (r"\bNone\b", r"\bnan\b", r"\bNaN\b", r"\binf\b"):
        assert not re.search(bad, text), bad
    assert "IPython.core.display" not in text
    # code stays in the notebook, not in the report
    assert "show_table(" not in text and "import pandas" not in text
    # non-Pythia model is flagged as a pipeline check
    assert "not Pythia-70M" in text
    # prose numbers come from the artifacts
    assert "+11.64%" in text  # (3.55 - 3.18) / 3.18
    assert "3.82" in text and "-0.07" in text
    # examples skipped by the crop window are reported, not hidden
    assert re.search(r"3 German and 0 English\s+examples</strong>\s+have no more than\s+10 tokens",
                     html), "examples shorter than the crop start not reported"
    # tables rendered (with seed columns) and figures embedded with seed-cell captions
    assert "<table" in html
    # the summary's three numbers, probes, single, all-but
    assert len(re.findall(r"<th[^>]*>seed</th>", html)) == 1 + 5 + 2 + 2
    assert len(re.findall(r"<img[^>]+src=\"data:image/png;base64,", html)) == 2
    assert html.count("<figcaption") == 2
    assert "Check classification accuracy of German neurons" in text
    assert "layer == layer" in text


def test_pdf_is_a_pdf_with_pages_and_images(built):
    _, _, paths = built
    data = paths["pdf"].read_bytes()
    assert data.startswith(b"%PDF-")
    assert len(data) > 20_000
    assert b"%%EOF" in data[-1024:]
    # typst writes page objects and image XObjects uncompressed in their dictionaries
    assert len(re.findall(rb"/Type\s*/Page\b", data)) >= 1
    assert len(re.findall(rb"/Subtype\s*/Image\b", data)) >= 2


def test_notebook_is_executed_and_keeps_code(built):
    import nbformat

    _, _, paths = built
    nb = nbformat.read(str(paths["notebook"]), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code)
    assert any("show_table(" in c.source for c in code)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors


def test_missing_value_names_it(tmp_path):
    context = make_context(tmp_path)
    del context["artifacts"]["activations"]["result"]["context_mean_active"]
    with pytest.raises(ReportError, match="context_mean_active"):
        build_report(tmp_path, context)
    assert not list(tmp_path.glob("report.*"))
    assert not list(tmp_path.glob(".report-tmp-*"))


def test_template_with_missing_value_fails(tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(report_build.TEMPLATES_DIR, templates)
    bad = templates / "sections" / "10_setup.md.j2"
    bad.write_text(bad.read_text() + "\nTokenizer: {{ run.tokenizer_name }}\n")
    context = make_context(tmp_path / "out")
    with pytest.raises(ReportError, match=r"10_setup\.md\.j2.*tokenizer_name"):
        build_notebook(context, templates_dir=templates)


def test_none_and_nan_are_refused(tmp_path):
    context = make_context(tmp_path)
    context["artifacts"]["ablation"]["result"]["context"]["german"]["percent_increase"] = float(
        "nan"
    )
    with pytest.raises(ReportError, match="nan"):
        build_notebook(context)
    context = make_context(tmp_path)
    context["run"]["profile_label"] = None
    with pytest.raises(ReportError, match="None"):
        build_notebook(context)
    with pytest.raises(ReportError):
        report_build.fmt(None, 2)
    assert report_build.fmt(-0.001, 2) == "0.00"
    assert report_build.fmt(0.6, 2, sign=True) == "+0.60"


def test_sections_follow_artifacts(tmp_path):
    context = make_context(tmp_path, with_seed=False)
    del context["artifacts"]["ablation"]
    nb = build_notebook(context)
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "# Single-neuron probes" in md and "# Mean ablation" not in md
    # the ablation figure has no section now: it is still shown, under "Other figures"
    assert "# Other figures" in md and "show_figure('ablation_bars')" in code
    assert "*seed*" not in md and "SEED = None" in code
    assert {s.heading for s in SECTIONS} >= set(HEADINGS)


def test_failure_keeps_previous_report(tmp_path, monkeypatch):
    context = make_context(tmp_path)
    old = {
        "report.html": b"<html>previous report</html>",
        "report.pdf": b"%PDF-1.7 previous",
        "report.ipynb": b"{}",
    }
    for name, data in old.items():
        (tmp_path / name).write_bytes(data)

    def boom(*args, **kwargs):
        raise ReportError("typst exploded")

    monkeypatch.setattr(report_build, "_compile_pdf", boom)
    with pytest.raises(ReportError, match="typst exploded"):
        build_report(tmp_path, context, renderer="pandoc", timeout_s=120)
    for name, data in old.items():
        assert (tmp_path / name).read_bytes() == data
    assert not list(tmp_path.glob(".report-tmp-*"))


def test_changed_artifact_fails_execution(tmp_path):
    context = make_context(tmp_path)
    stale = copy.deepcopy(context)
    stale["artifacts"]["probes"]["payload_sha256"] = _sha("something else")
    with pytest.raises(ReportError, match="changed since the report text was rendered"):
        build_report(tmp_path, stale, renderer="pandoc", timeout_s=120)
    assert not (tmp_path / "report.html").exists()


@pytest.mark.skipif(shutil.which("quarto") is None, reason="quarto not installed")
def test_quarto_renderer(tmp_path):
    context = make_context(tmp_path)
    paths = build_report(tmp_path, context, renderer="quarto", timeout_s=120)
    assert paths["pdf"].read_bytes().startswith(b"%PDF-")
    assert "Mean ablation" in paths["html"].read_text(encoding="utf-8")


def test_quarto_renderer_requires_quarto(tmp_path, monkeypatch):
    monkeypatch.setattr(report_build.shutil, "which", lambda name: None)
    with pytest.raises(ReportError, match="quarto"):
        build_report(tmp_path, make_context(tmp_path), renderer="quarto")


def test_context_must_be_consistent(tmp_path):
    context = make_context(tmp_path)
    context["run"]["neuron"] = "L5N1336"
    with pytest.raises(ReportError, match="run.neuron"):
        build_notebook(context)
    context = make_context(tmp_path)
    del context["seed"]
    with pytest.raises(ReportError, match="seed"):
        build_notebook(context)


# ------------------------------------------------------------------ numbers in the prose

# A number as the templates print it: fmt ("+0.60", "-0.07", "3.82") or num ("1,000").
_NUMBER = re.compile(r"(?<![\w.,])[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w]|[.,]\d)")


class _Text(HTMLParser):
    """The text of an HTML page without style and script; with ``skip_class``, also without
    the text inside elements whose class list contains it (``"output"``: code-cell output)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
            "source", "track", "wbr"}

    def __init__(self, skip_class: str | None = None):
        super().__init__(convert_charrefs=True)
        self.skip, self.stack, self.parts = skip_class, [], []

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        classes = (dict(attrs).get("class") or "").split()
        self.stack.append((tag, tag in ("style", "script") or (self.skip in classes)))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        if not any(skip for _, skip in self.stack):
            self.parts.append(data)

    @classmethod
    def of(cls, html: str, skip_class: str | None = None) -> str:
        p = cls(skip_class)
        p.feed(html)
        return " ".join(" ".join(p.parts).split())


def _pandoc_html(nb, context: dict, templates: Path, tmp: Path) -> str:
    import nbformat

    nb_path = tmp / "report.ipynb"
    nbformat.write(nb, str(nb_path))
    meta = report_build._pandoc_metadata(context, tmp)
    report_build._render_html_pandoc(nb_path, meta, templates, tmp / "report.html")
    return (tmp / "report.html").read_text(encoding="utf-8")


def test_a_number_printed_at_the_start_of_a_line_stays_in_the_text(tmp_path):
    """Markdown reads a line starting with `10.` or `10)` as a numbered-list item: a number a
    template prints there (the summary's "... not among its top\\n{{ n }}.\\nIts mean ...")
    vanished into an `<ol>`. Every such number reaches the HTML text as written; a list
    the template itself writes is still a list."""
    templates = tmp_path / "templates"
    shutil.copytree(report_build.TEMPLATES_DIR, templates)
    (templates / "sections" / "00_summary.md.j2").write_text(
        "The context neuron is not among its top\n{{ 50 | num }}.\nIts mean activation is\n"
        "{{ 3.14159 | fmt(2) }} and\n{{ 7 }}) of\n{{ 1000 | num }}) with\n{{ 12 }}.\n\n"
        "> quoted\n> {{ 4 }}. item\n\n{% macro m() %}\n1. first\n2. second\n{% endmacro %}"
        "A list the template writes:\n\n{{ m() }}\n", encoding="utf-8")
    out = tmp_path / "out"
    context = make_context(out)
    nb = build_notebook(context, templates)
    md = nb.cells[2].source
    assert "\ue000" not in md and "\ue001" not in md
    assert all("\ue000" not in c.source for c in nb.cells)
    html = _pandoc_html(nb, context, templates, tmp_path)
    text = _Text.of(html)
    assert ("not among its top 50. Its mean activation is 3.14 and 7) of 1,000) with 12. "
            "quoted 4. item") in text, text[:600]
    assert re.search(r"<ol[^>]*>\s*<li>\s*(<p>)?first", html)  # the template's own list
    assert html.count("<ol") == 1


def test_every_number_the_templates_print_reaches_the_html_text(tiny_report, monkeypatch):
    """Every number the templates print into prose (through `fmt`, `num` or a bare
    `{{ number }}`) appears, as written, in the text of the tiny report's report.html outside
    the code-cell outputs (parsed with html.parser, counted token by token: a number that
    Markdown swallowed, e.g. as a list marker, is missing)."""
    from collections import Counter

    res, _, _ = tiny_report
    printed: list[str] = []
    for name in ("fmt", "num"):
        real = getattr(report_build, name)

        def record(*args, _real=real, **kwargs):
            text = _real(*args, **kwargs)
            printed.append(text)
            return text

        monkeypatch.setattr(report_build, name, record)
    real_finalize = report_build._finalize

    def finalize(value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            printed.append(str(value))
        return real_finalize(value)

    monkeypatch.setattr(report_build, "_finalize", finalize)
    nb = build_notebook(res["context"])
    assert printed
    prose = Counter(_NUMBER.findall("\n".join(c.source for c in nb.cells if c.cell_type == "markdown")))
    printed_n = Counter(t for p in printed for t in _NUMBER.findall(p))
    expected = Counter({t: min(n, prose[t]) for t, n in printed_n.items() if prose[t]})
    assert sum(expected.values()) > 50
    html = (res["out"] / "report.html").read_text(encoding="utf-8")
    found = Counter(_NUMBER.findall(_Text.of(html, skip_class="output")))
    missing = {t: (n, found[t]) for t, n in expected.items() if found[t] < n}
    assert not missing, f"printed into prose (times) but not in the HTML text (times): {missing}"
