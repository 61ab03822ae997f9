"""The text demo's loop on a tiny random encoder and a CSV of tiny texts (the real one runs MiniLM on the
fortunes: benchmarks and `make demo-text`): baseline imported and promoted, the fine-tuned candidate its
child, gated on the same examples, promoted exactly when it passed, its report drawn by Chromium."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("transformers")

from assay.data import parse_data_arg
from assay.demo_text import MODEL, run_text_demo
from assay.workspace import Workspace
from tests.integration.browser import CHROMIUM, run_chromium
from tests.unit.models.test_heads import tiny_encoder, tiny_texts


def test_the_text_demo_releases_a_fine_tuned_transformer(tmp_path: Path, isolated_home: Path) -> None:
    texts, labels = tiny_texts(300, seed=0)
    csv = tmp_path / "texts.csv"
    pd.DataFrame({"text": texts, "label": ["negative" if y == 0 else "positive" for y in labels]}).to_csv(
        csv, index=False
    )
    ws = Workspace.open(isolated_home)
    summary = run_text_demo(
        ws,
        data=parse_data_arg(f"csv:{csv}", text="text", target="label"),
        encoder=tiny_encoder(tmp_path / "encoder"),
        finetune={"epochs": 2, "lr": 1e-3, "precision": "fp32"},
        compress=False,
        progress=False,
    )
    baseline, candidate = summary["baseline"]["version"], summary["candidate"]["version"]
    assert (baseline, candidate) == (f"{MODEL}@v1", f"{MODEL}@v2")
    child = ws.store.resolve(candidate)
    assert child.parent == baseline and child.lineage["recipe"]["kind"] == "finetune"
    assert summary["gate"]["baseline"] == baseline
    assert summary["production"] == (candidate if summary["gate"]["passed"] else baseline)
    assert summary["candidate"]["training"]["epochs_run"] >= 1
    report = Path(summary["gate"]["report"])
    assert report.is_file() and summary["compression"] is None
    if CHROMIUM is None:
        pytest.skip("headless Chromium not found; the loop was checked, not the page")
    result = run_chromium(tmp_path, "--dump-dom", report.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert '<section id="gate"' in result.stdout and "<svg" in result.stdout
