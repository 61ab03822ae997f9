"""The model in service: one registered version, loaded, warmed, with the monitor of its release.

``load_served`` does every slow step (load the artifact, read or rebuild the release reference,
calibrate the monitor, warm the model up) before anything may route a request to the result, so a swap
never makes a request wait for a load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from assay.data import InputContract
from assay.errors import DataError, UsageError
from assay.inference import infer
from assay.models.loaded import LoadedModel
from assay.models.predictor import Predictor
from assay.models.zoo import input_shape
from assay.outputs import softmax
from assay.release import Workspace, data_for, model_of, version_contract
from assay.serve.drift import MIN_ROWS, REFERENCE_WINDOWS, SMALLEST_WINDOW, calibrate
from assay.serve.monitor import Monitor
from assay.serve.reference import Reference, build_reference
from assay.store.records import VersionInfo

logger = logging.getLogger(__name__)

WARMUP_BATCHES = (1, 8, 64)  # first calls allocate and pick kernels; they are run before serving
DEFAULT_WINDOW = 500  # examples per monitoring window, for a reference of at least 3,000 rows
# The fewest reference rows per window row the chosen window keeps: each half of the reference then holds
# at least three windows (monitoring_window says why).
ROWS_PER_WINDOW_ROW = 6
SMALLEST_CHOSEN_WINDOW = MIN_ROWS  # fewer rows than this would never test the accuracy


@dataclass(frozen=True)
class BatchOutput:
    """What one forward pass returns; ``rows`` is one request's part of it."""

    version: int
    logits: np.ndarray
    probs: np.ndarray
    predictions: np.ndarray  # predicted classes: the answer's, and what feedback labels are compared with
    features: np.ndarray | None

    def rows(self, start: int, stop: int) -> BatchOutput:
        return self.take(slice(start, stop))

    def take(self, part: slice | np.ndarray) -> BatchOutput:
        """The rows ``part`` selects (a slice, a boolean mask or indices)."""
        features = self.features[part] if self.features is not None else None
        return BatchOutput(
            self.version, self.logits[part], self.probs[part], self.predictions[part], features
        )

    def finite_rows(self) -> np.ndarray:
        """Which rows have finite outputs (inputs far outside the training range can overflow)."""
        finite = np.isfinite(self.logits).all(axis=1)
        if self.features is not None:
            finite &= np.isfinite(self.features.reshape(len(finite), -1)).all(axis=1)
        return finite


@dataclass
class Served:
    version: VersionInfo
    model: LoadedModel
    predictor: Predictor  # what answers: see serving_predictor
    input_shape: tuple[int, ...]
    monitor: Monitor | None
    contract: InputContract  # how a client's examples become the model's inputs (a table's statistics)
    shadow: Predictor | None = None  # the parent's, in shadow mode
    monitoring: str = "not monitored"  # one line on the monitor's window, for the log and the CLI

    def run(self, x: np.ndarray) -> BatchOutput:
        logits, features = self.predictor.logits_and_features(x)
        with np.errstate(invalid="ignore"):  # an infinite logit gives NaN; its request is refused (422)
            probs = softmax(logits)
        # one argmax per batch, on the model thread: the event loop only slices it per request
        return BatchOutput(self.version.version, logits, probs, logits.argmax(axis=1), features)


def example_batch(n: int, shape: tuple[int, ...], kind: str | None) -> np.ndarray:
    """A seeded batch of ``n`` inputs the model takes: texts for a text model, uniform floats otherwise."""
    if kind == "text":
        words = np.random.default_rng(0).choice(["the", "model", "is", "served", "warm"], size=(n, 8))
        return np.array([" ".join(w) for w in words], dtype=object)
    return np.random.default_rng(0).random((n, *shape), dtype=np.float32)


def serving_predictor(model: LoadedModel, shape: tuple[int, ...], name: str) -> Predictor:
    """The model's fast predictor (for torch fp32, the inference copy: on 2 cores it doubles the batched
    throughput), once its logits agree with the stored function's on a seeded batch; else the predictor
    itself, with a warning. What the gate measured is what answers."""
    fast = model.fast_predictor()
    if fast is model.predictor:
        return fast
    x = example_batch(16, shape, model.spec.get("input_kind"))
    got, want = fast.logits_and_features(x)[0], model.predictor.logits_and_features(x)[0]
    # The copy differs from the module by float32 rounding (about 1e-7 of the logits here, on every kernel
    # tried): 1e-4 leaves a thousandfold room for another CPU and still catches a wrong fold.
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
    window: int | None = None  # None: monitoring_window chooses one for the reference
    false_alarm_windows: float = 1000.0
    shadow: bool = False
    seed: int = 0


def monitoring_window(
    n_reference: int, requested: int | None, ref: str, smallest: int = SMALLEST_CHOSEN_WINDOW
) -> tuple[int, str]:
    """The monitor's window for a release reference of ``n_reference`` rows, and one line saying how it
    came about: ``requested`` (--window) when the reference can calibrate it, else 500, or a sixth of a
    reference under 3,000 rows, if that is ``smallest`` or more (a classifier's default, the fewest
    labelled rows the accuracy detector tests; a reference without labels may go down to the
    detectors' own smallest window). A refusal names the flag and value to pass.

    Why a sixth. The calibration splits the reference into a comparison half and a calibration half, and
    scores windows drawn from the calibration half against the comparison half
    (:func:`~assay.serve.drift.calibrate`). Both halves are samples, so the thresholds carry the luck of
    the split as well as a window's own noise: for a mean-like statistic, a window of w rows deviates from
    a comparison half of m rows with variance 1/w + 1/m, and a resampled window, drawn from a calibration
    half of c rows, with 1/w + 1/m + 1/c. With n >= 6w each half holds three windows or more, and the
    reference's share stays at most 2/3 of the window's own. Measured (docs/monitoring.md#window-size) on
    30 references of 360 rows: at a sixth, every server kept its false-alarm rate within twice its budget
    (0.66 of it on average); at a quarter 17% of the servers exceeded twice the budget, at a half 27% (1.7
    times it on average). An explicit --window is honoured up to the hard bound of one window a half
    (n >= 2w), with a warning past a sixth in its line, and never changed.
    """
    if requested is not None:
        if requested * REFERENCE_WINDOWS > n_reference:
            raise UsageError(
                f"--window {requested} is too large for {ref}: its release reference has {n_reference} rows, "
                f"and calibrating windows of {requested} needs {REFERENCE_WINDOWS * requested} (a "
                f"comparison and a calibration half of a window each). Pass {_window_flag(n_reference)}, "
                "or leave --window out to let assay choose."
            )
        if requested * ROWS_PER_WINDOW_ROW > n_reference:
            return requested, (
                f"windows of {requested} examples (--window; more than a sixth of the {n_reference} "
                "reference rows: false alarms may exceed their budget)"
            )
        return requested, f"windows of {requested} examples (--window)"
    window = min(DEFAULT_WINDOW, n_reference // ROWS_PER_WINDOW_ROW)
    if window >= smallest:
        if window == DEFAULT_WINDOW:
            return window, f"windows of {window} examples (the default; --window to choose)"
        return window, (
            f"windows of {window} examples (a sixth of {ref}'s release reference of {n_reference} rows; "
            "--window to choose)"
        )
    why = (
        " (the fewest labelled rows the accuracy detector tests)"
        if smallest == SMALLEST_CHOSEN_WINDOW
        else ""
    )
    raise UsageError(
        f"{ref}'s release reference has {n_reference} rows, too few for the smallest window assay chooses, "
        f"{smallest} examples{why}, which needs {ROWS_PER_WINDOW_ROW * smallest} ({ROWS_PER_WINDOW_ROW} "
        f"reference rows a window row). Pass {_window_flag(n_reference, smallest)}; or gate the version on "
        "a larger test split."
    )


def _window_flag(n_reference: int, smallest: int = SMALLEST_CHOSEN_WINDOW) -> str:
    """What to pass to serve a reference of ``n_reference`` rows: the window assay would choose, else the
    largest window that keeps a sixth (too small for the accuracy detector), else no monitoring."""
    sixth = min(DEFAULT_WINDOW, n_reference // ROWS_PER_WINDOW_ROW)
    if sixth >= smallest:
        return f"--window {sixth}"
    if sixth >= SMALLEST_WINDOW:
        return (
            f"--window {sixth} (windows too small for the accuracy detector, which needs "
            f"{SMALLEST_CHOSEN_WINDOW} labelled rows; the other detectors run), or --no-monitor to serve "
            "without monitoring"
        )
    return "--no-monitor to serve without monitoring"


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
    monitoring = "not monitored (--no-monitor)"
    if settings is not None:
        reference, source = release_reference(ws, version, model)
        if settings.shadow and version.parent:
            parent_version = ws.store.resolve(version.parent)
            parent = model_of(ws, parent_version)
            reference = replace(reference, agreement=_agreement(ws, version, model, parent, parent_version))
            shadow = serving_predictor(parent, input_shape(parent.spec), parent_version.ref)
        window, monitoring = monitoring_window(reference.n, settings.window, version.ref)
        calibration = calibrate(
            reference,
            window=window,
            false_alarm_windows=settings.false_alarm_windows,
            seed=settings.seed,
        )
        monitor = Monitor(reference, calibration, seed=settings.seed)
        logger.info("monitoring %s against its release reference (%s) in %s", version.ref, source, monitoring)
    shape = input_shape(model.spec)
    predictor = serving_predictor(model, shape, version.ref)
    served = Served(version, model, predictor, shape, monitor, version_contract(version), shadow, monitoring)
    for size in WARMUP_BATCHES:
        out = served.run(example_batch(size, served.input_shape, model.spec.get("input_kind")))
        if not np.isfinite(out.logits).all():
            raise DataError(
                f"{version.ref} gives non-finite outputs on a warm-up batch; it cannot be served."
            )
    return served
