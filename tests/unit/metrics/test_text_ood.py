"""The offline text OOD sets (assay.metrics.text_ood): standard-library docstrings as prose, and
word-shuffled copies that keep each text's words and whitespace."""

from __future__ import annotations

import re

import numpy as np

from assay.metrics import text_ood


def test_docstrings_are_deduplicated_prose_in_a_fixed_order() -> None:
    texts = text_ood.docstring_texts()
    assert len(texts) > 500 and len(set(texts.tolist())) == len(texts)
    assert list(texts) == list(text_ood.docstring_texts())
    for text in texts:
        assert ">>>" not in text and "\n" not in text and len(text.split()) >= 6
    assert text_ood.python_release().count(".") == 2


def test_a_shuffled_text_has_the_same_words_and_whitespace() -> None:
    texts = np.array(["one two  three\nfour five", "single", "  lead and trail  "], dtype=object)
    out = text_ood.word_shuffled(texts, seed=1)
    for before, after in zip(texts, out, strict=True):
        assert sorted(before.split()) == sorted(after.split())
        assert re.sub(r"\S+", "w", before) == re.sub(r"\S+", "w", after)
    assert out[0] != texts[0] and out[1] == "single"
    assert list(out) == list(text_ood.word_shuffled(texts, seed=1))
    assert list(out) != list(text_ood.word_shuffled(texts, seed=2))
