"""The byte-level BPE tokenizer of the `tiny` model, trained from the package's fixture text.

Deterministic: the same fixture bytes and vocabulary size give the same merges.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "resources" / "fixtures"
SPECIAL_TOKENS = ["<|endoftext|>", "<|padding|>"]  # ids 0 and 1, as in GPT-NeoX-20B


@lru_cache(maxsize=4)
def _trained_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = [p.read_text(encoding="utf-8") for p in sorted(FIXTURES.glob("*.txt"))]
    tok.train_from_iterator(texts, trainer=trainer)
    return tok.to_str()


def train_fixture_tokenizer(vocab_size: int = 512):
    """A `PreTrainedTokenizerFast` with BOS/EOS `<|endoftext|>` (id 0), pad `<|padding|>` (id 1)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_trained_json(vocab_size))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|padding|>",
    )
