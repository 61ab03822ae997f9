"""The model in service: one registered version, loaded, warmed, with the monitor of its release.

``load_served`` does every slow step (load the artifact, read or rebuild the release reference,
calibrate the monitor, warm the model up) before anything may route a request to the result, so a swap
never makes a request wait for a load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from assay.errors import DataError
from assay.inference import infer
from assay.models.backends import LoadedModel
from assay.models.predictor import Predictor
from assay.models.zoo import input_shape
from assay.outputs import softmax
from assay.release import Workspace, data_for, model_of
from assay.serve.drift import calibrate
from assay.serve.monitor import Monitor
from assay.serve.reference import Reference, build_reference
from assay.store.records import VersionInfo

logger = logging.getLogger(__name__)

WARMUP_BATCHES = (1, 8, 64)  # first calls allocate and pick kernels; they are run before serving


@dataclass(frozen=True)
class BatchOutput:
    """What one forward pass returns; ``rows`` is one request's part of it."""

    version: int
    logits: np.ndarray
    probs: np.ndarray
    predictions: np.ndarray  # predicted classes: the answer's, and what feedback labels are compared with
    features: np.ndarray | None

    def rows(self, start: int, stop: int) -> BatchOutput:
        part = slice(start, stop)
        features = self.features[part] if self.features is not None else None
        return BatchOutput(
            self.version, self.logits[part], self.probs[part], self.predictions[part], features
        )


@dataclass
class Served:
    version: VersionInfo
    model: LoadedModel
    predictor: Predictor  # what answers: see serving_predictor
    input_shape: tuple[int, ...]
    monitor: Monitor | None
    shadow: Predictor | None = None  # the parent's, in shadow mode

    def run(self, x: np.ndarray) -> BatchOutput:
        logits, features = self.predictor.logits_and_features(x)
        # one argmax per batch, on the model thread: the event loop only slices it per request
        return BatchOutput(self.version.version, logits, softmax(logits), logits.argmax(axis=1), features)


def serving_predictor(model: LoadedModel, shape: tuple[int, ...], name: str) -> Predictor:
    """The model's fast predictor (for torch fp32, the inference copy: on 2 cores it doubles the batched
    throughput), once its logits agree with the stored function's on a seeded batch; else the predictor
    itself, with a warning. What the gate measured is what answers."""
    fast = model.fast_predictor()
    if fast is model.predictor:
        return fast
    x = np.random.default_rng(0).random((16, *shape), dtype=np.float32)
    got, want = fast.logits_and_features(x)[0], model.predictor.logits_and_features(x)[0]
    if np.allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max()))):
        return fast
    logger.warning(
        "%s: the inference copy's logits differ from the model's by up to %.3g; serving the model as stored",
        name,
        float(np.abs(got - want).max()),
    )
    return model.predictor


@dataclass(frozen=True)
class MonitorSettings:
    window: int = 500
    false_alarm_windows: float = 1000.0
    shadow: bool = False
    seed: int = 0


def release_reference(ws: Workspace, version: VersionInfo, model: LoadedModel) -> tuple[Reference, str]:
    """The reference statistics stored when the version was gated (else evaluated), and where they came
    from. A version recorded before references existed gets one rebuilt from its test split, through the
    outputs cache."""
    runs = ws.store.runs_for(version.ref)
    ordered = sorted(runs, key=lambda r: (r.id != version.gate_run_id, -r.id))  # the gate run first
    for info in ordered:
        document = ws.store.get_run(info.id).document or {}
        stored = document.get("monitoring")
        if stored and ws.store.artifacts.exists(stored["reference"]):
            path = ws.store.artifacts.path(stored["reference"])
            return Reference.load(path), f"run {info.id}"
    data, _ = data_for(version)
    outputs = infer(
        model.predictor,
        data.test,
        cache_dir=ws.cache_dir,
        model_digest=version.artifact_digest,
    )
    logger.info("%s has no stored monitoring reference; rebuilt from its test split", version.ref)
    assert outputs.logits is not None  # inference always keeps the logits
    reference = build_reference(data.test.x, outputs.logits, outputs.features, outputs.labels)
    return reference, "rebuilt from the test split"


def _agreement(
    ws: Workspace, version: VersionInfo, model: LoadedModel, parent: LoadedModel, parent_ref: VersionInfo
) -> float:
    """Share of the test split on which the version and its parent predict the same class."""
    data, _ = data_for(version)
    mine = infer(model.predictor, data.test, cache_dir=ws.cache_dir, model_digest=version.artifact_digest)
    theirs = infer(
        parent.predictor, data.test, cache_dir=ws.cache_dir, model_digest=parent_ref.artifact_digest
    )
    return float(np.mean(mine.preds == theirs.preds))


def load_served(ws: Workspace, version: VersionInfo, settings: MonitorSettings | None) -> Served:
    model = model_of(ws, version)
    monitor = None
    shadow = None
    if settings is not None:
        reference, source = release_reference(ws, version, model)
        if settings.shadow and version.parent:
            parent_version = ws.store.resolve(version.parent)
            parent = model_of(ws, parent_version)
            reference = replace(reference, agreement=_agreement(ws, version, model, parent, parent_version))
            shadow = serving_predictor(parent, input_shape(parent.spec), parent_version.ref)
        calibration = calibrate(
            reference,
            window=settings.window,
            false_alarm_windows=settings.false_alarm_windows,
            seed=settings.seed,
        )
        monitor = Monitor(reference, calibration, seed=settings.seed)
        logger.info("monitoring %s against its release reference (%s)", version.ref, source)
    shape = input_shape(model.spec)
    served = Served(version, model, serving_predictor(model, shape, version.ref), shape, monitor, shadow)
    for size in WARMUP_BATCHES:
        out = served.run(np.zeros((size, *served.input_shape), dtype=np.float32))
        if not np.isfinite(out.logits).all():
            raise DataError(
                f"{version.ref} gives non-finite outputs on a warm-up batch; it cannot be served."
            )
    return served
