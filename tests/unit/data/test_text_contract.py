"""The input contract of a text model: what it records, its round trip (old contracts included), and the
refusal of data of another kind."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from assay.data import Dataset, InputContract, load_dataset, parse_data_arg
from tests.conftest import write_bars


def _texts(tmp_path: Path, name: str = "t", classes: str = "ab") -> Dataset:
    lines = [
        json.dumps({"body": f"message {i} of {name}", "topic": classes[i % len(classes)]}) for i in range(60)
    ]
    (tmp_path / f"{name}.jsonl").write_text("\n".join(lines))
    return load_dataset(parse_data_arg(f"jsonl:{tmp_path / name}.jsonl", text="body", target="topic"))


def test_a_text_contract_records_kind_shape_dtype_and_classes_and_no_scale(tmp_path: Path) -> None:
    data = _texts(tmp_path)
    contract = InputContract.of(data, f"jsonl:{tmp_path / 't.jsonl'}")
    assert (contract.kind, contract.shape, contract.dtype, contract.transform) == ("text", (), "str", "none")
    assert contract.class_names == ("a", "b") and contract.scale is None
    assert contract.mean == contract.sd == contract.feature_names == ()
    assert contract.tokenizer is None and contract.max_length is None
    assert contract.fingerprint == data.fingerprint()
    assert contract.fit(data).differences == ()
    assert contract.fit(data).data is data
    assert contract.prepare(data.test.x) is data.test.x  # texts go to the model's tokenizer as they are


def test_round_trip_with_tokenizer_and_max_length_and_old_contracts_load(tmp_path: Path) -> None:
    contract = replace(
        InputContract.of(_texts(tmp_path), "texts"), tokenizer="minilm-l6 sha256:0123abcd", max_length=128
    )
    d = json.loads(json.dumps(contract.to_dict()))
    assert d["scale"] is None and d["tokenizer"] == "minilm-l6 sha256:0123abcd" and d["max_length"] == 128
    assert InputContract.from_dict(d) == contract
    assert contract.describe() == (
        "texts tokenized by minilm-l6 sha256:0123abcd, truncated to 128 tokens, 2 classes, from texts"
    )
    # A contract written before these fields existed (an image or table model's) still loads.
    table = InputContract.of(load_dataset(parse_data_arg("sklearn:wine")), "sklearn:wine")
    old = {
        k: v
        for k, v in json.loads(json.dumps(table.to_dict())).items()
        if k not in ("tokenizer", "max_length")
    }
    assert InputContract.from_dict(old) == table
    assert InputContract.from_dict(old).describe().startswith("table of 13 features")


def test_a_text_model_refuses_images_and_tables_and_they_refuse_texts(tmp_path: Path) -> None:
    texts = _texts(tmp_path)
    table = load_dataset(parse_data_arg("sklearn:wine"))
    images = load_dataset(parse_data_arg(f"npz:{write_bars(tmp_path / 'bars.npz', 60, 30)}"))
    text_contract = InputContract.of(texts, "texts")
    assert text_contract.fit(table).differences == (
        "kind: the model takes text inputs, the data gives table inputs",
    )
    assert text_contract.fit(images).differences == (
        "kind: the model takes text inputs, the data gives image inputs",
    )
    assert InputContract.of(table, "wine").fit(texts).differences == (
        "kind: the model takes table inputs, the data gives text inputs",
    )
    assert InputContract.of(images, "bars").fit(texts).differences == (
        "kind: the model takes image inputs, the data gives text inputs",
    )


def test_other_texts_fit_when_classes_agree_and_not_when_they_differ(tmp_path: Path) -> None:
    contract = InputContract.of(_texts(tmp_path), "texts")
    assert contract.fit(_texts(tmp_path, "other")).differences == ()  # other texts, same classes: no scale
    assert contract.fit(_texts(tmp_path, "three", "abc")).differences == (
        "classes: the model predicts 2 classes, the data has 3",
    )
    renamed = contract.fit(_texts(tmp_path, "renamed", "ac")).differences
    assert renamed == ("classes: the model's are 'b' at position 1, the data has 'c' there",)
