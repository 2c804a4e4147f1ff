"""Bad input files and odd examples: a clear error, or a counted skip/truncation."""

from __future__ import annotations

import pytest

from analysis.core.data import read_examples
from analysis.core.errors import DataError, UsageError


def test_empty_file_is_an_error(tmp_path):
    p = tmp_path / "x.txt"
    p.write_bytes(b"")
    with pytest.raises(DataError, match="holds no text"):
        read_examples(p)


def test_only_empty_lines_is_an_error(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("\n\n  \n")
    with pytest.raises(DataError, match="holds no text"):
        read_examples(p)


def test_non_utf8_bytes_are_an_error_naming_the_byte(tmp_path):
    p = tmp_path / "x.txt"
    p.write_bytes("Grüße\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_examples(p)


def test_split_on_newline_exactly_keeps_empty_examples(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("eins\n\nzwei")
    assert read_examples(p) == ["eins", "", "zwei"]


def test_empty_and_overlong_examples_are_counted_not_hidden(tiny):
    """Empty examples (no next-token target) are skipped and counted; examples longer than
    the context are truncated to it and counted (the counts go into the artifacts' params
    and the report's Setup table)."""
    from analysis.core.config import Neuron, RunConfig, get_profile
    from analysis.core.data import Corpus
    from analysis.core.runner import Run

    long_text = "Die Kommission hat einen Vorschlag vorgelegt. " * 400
    corpus = Corpus("t", "german", "t.txt", "0" * 64, ("", "Hallo Welt", long_text))
    cfg = RunConfig(model="tiny", neuron=Neuron(3, 669), profile=get_profile("quick"))
    run = Run(cfg, tiny, None, {"german": corpus}, None, (), lambda s: None)
    toks, rec = run.tokens("german", None)
    assert rec == {"requested": 3, "available": 3, "used": 2, "skipped_empty": 1,
                   "truncated_to_n_ctx": 1}
    assert max(len(t) for t in toks) == tiny.n_ctx == 2048


def test_missing_tokenizer_path_is_a_usage_error(tmp_path):
    from analysis.core.models import fast_tokenizer

    with pytest.raises(UsageError, match="does not exist"):
        fast_tokenizer(tmp_path / "nope" / "tokenizer.json")


def test_examples_shorter_than_the_crop_start_are_counted(tiny, tiny_fwd):
    """An example with no position in the crop window (at most `crop_start` tokens, BOS
    included) contributes no activation; the activations artifact counts it, and the
    activation count equals the positions that do fall in the window."""
    from analysis.core.config import Neuron, RunConfig, get_profile
    from analysis.core.data import Corpus
    from analysis.core.runner import Run
    from analysis.families import activations

    profile = get_profile("quick")
    long_de = "Die Kommission hat einen Vorschlag zur Reform der Agrarpolitik vorgelegt. " * 3
    long_en = "The Commission has tabled a proposal on reforming the agricultural policy. " * 3
    corpora = {
        "german": Corpus("t", "german", "de.txt", "0" * 64, ("Hallo Welt", long_de, "Ja")),
        "english": Corpus("t", "english", "en.txt", "1" * 64, (long_en,)),
    }
    cfg = RunConfig(model="tiny", neuron=Neuron(3, 669), profile=profile)

    class _NoStore:
        def load_valid(self, step, key):
            return None

        def save(self, inputs, result, wall, arrays=None, cost=None):
            return {"result": result, "arrays": arrays}

    run = Run(cfg, tiny, tiny_fwd, corpora, _NoStore(), (), lambda s: None,
              show_progress=False)
    art = activations.run_step(run, {})
    res = art["result"]
    lens = {lang: [len(t) for t in run.tokens(lang, profile.activation_examples)[0]]
            for lang in corpora}
    assert lens["german"][0] <= profile.crop_start and lens["german"][2] <= profile.crop_start
    assert lens["german"][1] > profile.crop_start
    assert res["examples_shorter_than_crop"] == {"german": 2, "english": 0}
    assert res["n_activations"]["german"] == min(lens["german"][1], profile.crop_end) - profile.crop_start
