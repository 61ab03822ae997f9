"""The release reference: input summaries against direct formulas, build, and the file round-trip."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import logsumexp
from scipy.special import softmax as scipy_softmax

from assay.errors import DataError, UsageError
from assay.serve.reference import IMAGE_STATISTICS, Reference, build_reference, input_summaries
from tests.unit.serve import table_rows


def test_image_statistics_match_direct_formulas() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((5, 1, 7, 9)).astype(np.float32)
    x[0, 0, :2] = 1.0  # saturated rows
    names, s = input_summaries(x)
    assert names == IMAGE_STATISTICS
    for i, img in enumerate(x[:, 0].astype(np.float64)):
        lap = ndimage.laplace(img)[1:-1, 1:-1]  # x[i±1] + x[j±1] − 4x: the same magnitude, opposite sign
        grad = np.abs(np.diff(img, axis=1)).mean() + np.abs(np.diff(img, axis=0)).mean()
        expect = [img.mean(), img.std(), img.min(), img.max(), grad, np.abs(lap).mean(),
                  np.mean(img == img.min()), np.mean(img == img.max())]  # fmt: skip
        np.testing.assert_allclose(s[i], expect, rtol=1e-5, atol=1e-6)
    assert s[0, IMAGE_STATISTICS.index("frac_at_max")] == pytest.approx(18 / 63)


def test_image_layouts_and_tables() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((4, 6, 6))
    np.testing.assert_array_equal(input_summaries(x)[1], input_summaries(x[:, None])[1])
    rgb_names, rgb = input_summaries(rng.random((4, 3, 6, 6)))
    assert rgb_names[-3:] == ("mean_c0", "mean_c1", "mean_c2") and rgb.shape == (4, 11)
    table = rng.normal(size=(4, 3))
    names, s = input_summaries(table, ["a", "b", "c"])
    assert names == ("a", "b", "c")
    np.testing.assert_array_equal(s, table)
    assert input_summaries(table)[0] == ("x0", "x1", "x2")
    with pytest.raises(UsageError, match="2 column names"):
        input_summaries(table, ["a", "b"])
    with pytest.raises(UsageError, match="texts"):
        input_summaries(rng.random(4))
    texts = np.array(["a short one", "", "three words here"], dtype=object)
    names, s = input_summaries(texts)
    assert names == ("length_chars", "length_words")
    np.testing.assert_array_equal(s, [[11, 3], [0, 0], [16, 3]])


def test_build_reference_probs_ood_and_subsampling() -> None:
    x, logits, features, labels = table_rows(300, seed=0)
    ref = build_reference(x, logits, features, labels, agreement=0.9)
    assert ref.kind == "table" and ref.n == 300 and ref.n_classes == 4
    np.testing.assert_allclose(ref.probs, scipy_softmax(logits, axis=1), rtol=1e-12)
    np.testing.assert_allclose(ref.ood, -logsumexp(logits, axis=1), rtol=1e-12)  # higher = more OOD
    small = build_reference(x, logits, features, labels, max_rows=100, seed=3)
    assert small.n == 100
    assert small.digest() == build_reference(x, logits, features, labels, max_rows=100, seed=3).digest()
    rows = [np.flatnonzero((x == r).all(1))[0] for r in small.inputs]
    assert rows == sorted(rows)  # a subset, in the original order
    with pytest.raises(UsageError, match="rows"):
        build_reference(x[:-1], logits)


def test_save_load_round_trip(tmp_path: Path) -> None:
    x, logits, features, labels = table_rows(200, seed=1)
    ref = build_reference(x, logits, features, labels, agreement=0.93, column_names=list("abcd"))
    path = ref.save(tmp_path / "sub" / "reference.npz")
    assert [p.name for p in path.parent.iterdir()] == ["reference.npz"]  # no temporary left behind
    back = Reference.load(path)
    assert back.digest() == ref.digest()
    assert back.feature_names == ("a", "b", "c", "d") and back.agreement == 0.93
    assert back.embeddings is not None and back.labels is not None
    np.testing.assert_array_equal(back.probs, ref.probs)
    bare = build_reference(x, logits).save(tmp_path / "bare.npz")
    loaded = Reference.load(bare)
    assert loaded.embeddings is None and loaded.labels is None and loaded.agreement is None


def test_bad_files_raise_data_errors(tmp_path: Path) -> None:
    x, logits, *_ = table_rows(50, seed=2)
    good = build_reference(x, logits).save(tmp_path / "good.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(DataError, match="not a readable assay reference"):
        Reference.load(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(DataError, match="not an assay reference"):
        Reference.load(foreign)
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(DataError, match="not a readable"):
        Reference.load(text)
    with pytest.raises(DataError, match="No reference file"):
        Reference.load(tmp_path / "missing.npz")
    other = tmp_path / "other.npz"
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(other, "w") as out:
        for name in z.namelist():
            data = z.read(name)
            if name == "meta.npy":
                data = data.replace(b"assay.reference/1", b"assay.reference/9")
            out.writestr(name, data)
    with pytest.raises(DataError, match=r"format 'assay\.reference/9'"):
        Reference.load(other)


def test_inconsistent_reference_is_refused() -> None:
    x, logits, *_ = table_rows(20, seed=3)
    ref = build_reference(x, logits)
    with pytest.raises(DataError, match="probs"):
        Reference(ref.kind, 4, ref.feature_names, ref.inputs, ref.probs[:5], ref.ood, None, None)
    with pytest.raises(DataError, match="NaN"):
        Reference(ref.kind, 4, ref.feature_names, ref.inputs, ref.probs, ref.ood * np.nan, None, None)
