"""Bad input files and odd examples: a clear error, or a counted skip/truncation."""

from __future__ import annotations

import pytest

from analysis.data import read_examples
from analysis.errors import DataError, UsageError


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
    from analysis.config import Neuron, RunConfig, get_profile
    from analysis.data import Corpus
    from analysis.runner import Run

    long_text = "Die Kommission hat einen Vorschlag vorgelegt. " * 400
    corpus = Corpus("t", "german", "t.txt", "0" * 64, ("", "Hallo Welt", long_text))
    cfg = RunConfig(model="tiny", neuron=Neuron(3, 669), profile=get_profile("quick"))
    run = Run(cfg, tiny, None, {"german": corpus}, None, (), lambda s: None)
    toks, rec = run.tokens("german", None)
    assert rec == {"requested": 3, "available": 3, "used": 2, "skipped_empty": 1,
                   "truncated_to_n_ctx": 1}
    assert max(len(t) for t in toks) == tiny.n_ctx == 2048


def test_missing_tokenizer_path_is_a_usage_error(tmp_path):
    from analysis.models import fast_tokenizer

    with pytest.raises(UsageError, match="does not exist"):
        fast_tokenizer(tmp_path / "nope" / "tokenizer.json")
