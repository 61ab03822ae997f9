"""Run a model over a split once and cache the per-example outputs.

The cache key is (model artifact digest, split fingerprint, predictor name), so a version is never
re-run on data it has already seen, and a changed dataset or model can never hit a stale entry.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.progress import Progress

from assay.data import Split
from assay.errors import DataError
from assay.outputs import Outputs, from_arrays, load_predictions

if TYPE_CHECKING:  # a protocol: any backend's predictor runs here, and this module loads without torch
    from assay.models.predictor import Predictor


def cache_key(model_digest: str, split: Split, predictor: Predictor) -> str:
    return hashlib.sha256(f"{model_digest}|{split.fingerprint()}|{predictor.name}".encode()).hexdigest()[:32]


def infer(
    predictor: Predictor,
    split: Split,
    *,
    batch_size: int = 1000,
    cache_dir: Path | None = None,
    model_digest: str | None = None,
    progress: bool = False,
) -> Outputs:
    path = None
    if cache_dir is not None and model_digest is not None:
        path = cache_dir / f"{cache_key(model_digest, split, predictor)}.npz"
        if path.is_file():
            try:
                return load_predictions(path)
            except DataError:
                path.unlink()  # a corrupt cache entry is recomputed, never trusted
    logits, features = [], []
    with Progress(disable=not progress, transient=True) as bar:
        for start in bar.track(range(0, split.n, batch_size), description="inference"):
            lg, ft = predictor.logits_and_features(split.x[start : start + batch_size])
            logits.append(lg)
            if ft is not None:
                features.append(ft)
    outputs = from_arrays(
        split.y,
        logits=np.concatenate(logits),
        ids=split.ids,
        features=np.concatenate(features) if features else None,
        groups=split.groups,
        source="inference",
    )
    if path is not None:
        outputs.save(path)
    return outputs
