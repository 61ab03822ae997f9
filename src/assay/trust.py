"""The trust suite: corruption and adversarial robustness, OOD detection, fairness, privacy and backdoor
checks on one model and one dataset, as measurements in the schema.

    run_trust(model, data)            every check; each family in its own try, so one failure is an
                                      ``error`` measurement and the rest still run
    assay.trust_runs.trust_version    the same on a registered version, reading and writing the
                                      per-example outputs cache, optionally against its parent

Where the numbers come from (each measurement's ``details`` says it again):

    robustness   metrics/robustness.py  corrupted copies of the split (or a seeded subset), predicted
                                        by the model's own backend; CE against a baseline model if given
                 text_robustness.py     texts: typos, keyboard swaps, casing, punctuation, word deletion
                                        and repetition at 5 severities on a seeded subset, measured and
                                        named as corruptions (``corruption_accuracy[text_typo@3]``)
    adversarial  metrics/adversarial.py white-box FGSM/PGD on a seeded subset when the backend has
                                        gradients (torch fp32); otherwise transfer from the fp32 parent
                                        and the score-based Square attack, and the details say which
                 text_attack.py         texts: the greedy character attack within an edit budget, by the
                                        model's probabilities, on a seeded subset (pixel attacks skipped)
    ood          metrics/ood.py         the split is in-distribution; OOD: noise, inverted and rotated
                                        copies of a seeded subset, and scikit-learn's digits at 28x28;
                                        Mahalanobis is fitted on the validation split's features
                 text_ood.py            texts: the same scores against standard-library docstrings,
                                        word-shuffled copies of a seeded subset, and the data's
                                        held-out classes where it has them (fortunes' small files)
    fairness     metrics/fairness.py    per-group metrics where the split has groups (any kind); slice
                                        discovery on table features
    privacy      metrics/privacy.py     loss-threshold membership inference: a seeded subset of the
                                        training split (members) against as many held-out examples
    security     metrics/backdoor.py    spectral signatures and activation clustering on the
                                        penultimate features of the whole training split (any kind
                                        whose backend gives features)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assay import catalogue
from assay.compare import PerExample
from assay.data import Dataset, Split
from assay.errors import UsageError
from assay.executor import Executor, LocalExecutor
from assay.inference import infer
from assay.measurement import Measurement
from assay.metrics import (
    adversarial,
    backdoor,
    fairness,
    ood,
    privacy,
    robustness,
    text_attack,
    text_ood,
    text_robustness,
)
from assay.models.loaded import LoadedModel
from assay.outputs import Outputs, from_arrays
from assay.plugins import Registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrustConfig:
    """What the suite runs and on how many examples; the defaults are the documented threat models."""

    families: tuple[str, ...] = field(default_factory=lambda: FAMILIES)  # default: the built-ins
    adversarial_n: int = 1000  # seeded subset for FGSM/PGD
    norms: tuple[catalogue.Norm, ...] = catalogue.NORMS  # threat models attacked
    linf_eps: tuple[float, ...] = catalogue.DEFAULT_EPS["linf"]
    l2_eps: tuple[float, ...] = catalogue.DEFAULT_EPS["l2"]
    pgd_steps: int = 20
    restarts: int = 1
    # Square (black box): None runs it on variants without gradients only; True on every model, so that
    # a variant can be gated against its fp32 parent on the same attack.
    square: bool | None = None
    square_n: int = 200  # black-box attack budget
    square_queries: int = 200
    # None: the whole split (50 corrupted copies: 50 inference passes); a number: a seeded subset.
    corruption_n: int | None = None
    corruptions: tuple[str, ...] | None = None  # None: every corruption for the data's kind
    ood_n: int = 2000  # size of each synthetic OOD set
    # Texts: a transformer scores tens of texts a second on 2 cores, so the suite runs on seeded subsets
    # (docs/trust.md has the time each takes on MiniLM).
    text_perturbation_n: int | None = 150  # 6 perturbations x 5 severities: 30 passes; None: the split
    text_attack_n: int = 40
    text_attack_budget: int = catalogue.TEXT_EDIT_BUDGET  # character edits per text, at most
    text_attack_fraction: float = 0.1  # and at most this share of the text's characters
    text_ood_n: int = 300  # size of each text OOD set
    membership_n: int = 5000
    backdoor_epsilon: float = 0.05
    n_boot: int = 1000
    seed: int = 0


@dataclass
class TrustResult:
    """Measurements in the schema; ``per_example``: in memory only, the evidence behind the ones a gate
    rule can name (:func:`assay.catalogue.trust_entries`), so that two models can be compared in pairs."""

    measurements: list[Measurement]
    plots: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    per_example: dict[str, PerExample] = field(default_factory=dict)


def _subset(n: int, size: int | None, seed: int) -> np.ndarray:
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


# Inference batch: small CNNs on CPU run fastest around 256 (activations stay in cache); batches of 1000
# took twice as long on the demo CNN at 2 threads, with bit-identical outputs. Texts go to the predictor
# in larger chunks: a text predictor sorts each chunk by length and pads within its own sub-batches, so
# a larger chunk pads less (MiniLM on the fortunes test split: 20.6 against 16.7 texts/s in chunks of
# 256, 2 contended cores).
_BATCH = 256
_TEXT_BATCH = 2048


def _batches(x: np.ndarray) -> Iterable[np.ndarray]:
    """``x`` in inference batches: float32 and contiguous for arrays, as they are for texts."""
    if x.dtype == object:
        yield from (x[i : i + _TEXT_BATCH] for i in range(0, len(x), _TEXT_BATCH))
        return
    for i in range(0, len(x), _BATCH):
        yield np.ascontiguousarray(x[i : i + _BATCH], dtype=np.float32)


def _logits_fn(model: LoadedModel) -> Callable[[np.ndarray], np.ndarray]:
    """Inputs -> float64 logits, in batches of :data:`_BATCH`.

    The model's ``fast_predictor``: a torch fp32 model runs as its inference copy (BatchNorm folded,
    channels-last; the caller's module is left alone), about 2x faster on the demo CNN, logits equal to
    float32 rounding (a test checks them against the predictor's). Other backends run their predictor.
    """
    predictor = model.fast_predictor()

    def run(batch: np.ndarray) -> np.ndarray:
        return predictor.logits_and_features(batch)[0]

    def logits(x: np.ndarray) -> np.ndarray:
        return np.concatenate([run(batch) for batch in _batches(x)]).astype(np.float64)

    return logits


def _run_outputs(
    model: LoadedModel, x: np.ndarray, labels: np.ndarray, source: str, split: Split | None = None
) -> Outputs:
    """The model's outputs on ``x``; with the ``split`` they are of, its ids and groups (fairness)."""
    logits, features = [], []
    for batch in _batches(x):
        lg, ft = model.predictor.logits_and_features(batch)
        logits.append(lg)
        if ft is not None:
            features.append(ft)
    return from_arrays(
        labels,
        logits=np.concatenate(logits),
        features=np.concatenate(features) if features else None,
        ids=None if split is None else split.ids,
        groups=None if split is None else split.groups,
        source=source,
    )


def has_gradients(model: LoadedModel) -> bool:
    """White-box attacks need the very function that is deployed to be differentiable in torch fp32: a
    zoo model as stored, or an imported one that exposes its network (torch modules, export programs)."""
    return model.differentiable is not None


@dataclass
class TrustContext:
    """What a family runner receives: the model and its outputs on the evaluated split, the dataset,
    the configuration, a way to get outputs on any other split, the models to attack through or
    compare against, and where to keep plot data and per-example evidence for the gate."""

    model: LoadedModel
    data: Dataset
    split: Split
    outputs: Outputs
    config: TrustConfig
    outputs_of: Callable[[Split], Outputs]
    parent: LoadedModel | None
    baseline: LoadedModel | None
    plots: dict[str, Any] = field(default_factory=dict)
    per_example: dict[str, PerExample] = field(default_factory=dict)

    def keep(
        self, measurements: Sequence[Measurement], ids: np.ndarray, values: dict[str, np.ndarray]
    ) -> None:
        """Keep per-example ``values`` (their mean is the measurement of the same name) for the gate."""
        by_name = {m.name: m for m in measurements if m.status == "ok" and m.value is not None}
        for name, v in values.items():
            if name in by_name:
                self.per_example[name] = PerExample.mean(by_name[name], ids, v)


def _robustness(ctx: TrustContext) -> list[Measurement]:
    if ctx.data.kind == "text":
        return _text_robustness(ctx)
    cfg = ctx.config
    idx = _subset(ctx.split.n, cfg.corruption_n, cfg.seed)
    x, y = ctx.split.x[idx], ctx.split.y[idx]
    names = list(cfg.corruptions) if cfg.corruptions else robustness.names_for(ctx.data.kind)
    input_range = ctx.data.input_range if ctx.data.kind == "image" else None
    predict = _logits_fn(ctx.model)

    def labels(model_logits: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
        return lambda batch: model_logits(batch).argmax(1)

    result = robustness.evaluate_corruptions(
        labels(predict), x, y, names, seed=cfg.seed, input_range=input_range
    )
    base = None
    if ctx.baseline is not None:
        base = robustness.evaluate_corruptions(
            labels(_logits_fn(ctx.baseline)), x, y, names, seed=cfg.seed, input_range=input_range
        )
    ctx.plots["corruption_accuracy"] = {
        "clean": float(result.clean.mean()),
        "severities": list(robustness.SEVERITIES),
        "accuracy": {name: c.mean(axis=1).tolist() for name, c in result.corrupted.items()},
    }
    subset = {"n": int(idx.size), "seed": cfg.seed, "of": ctx.split.n}
    out = robustness.corruption_measurements(
        result, base, n_boot=cfg.n_boot, seed=cfg.seed, details={"subset": subset}
    )
    ctx.keep(out, ctx.split.ids[idx], robustness.per_example(result))
    return out


def _text_robustness(ctx: TrustContext) -> list[Measurement]:
    """The text perturbations on a seeded subset, paired with the baseline's on the same texts; the
    image and table corruptions are ``skipped``."""
    cfg = ctx.config
    idx = _subset(ctx.split.n, cfg.text_perturbation_n, cfg.seed)
    x, y = ctx.split.x[idx], ctx.split.y[idx]
    names = list(cfg.corruptions) if cfg.corruptions else list(catalogue.TEXT_PERTURBATIONS)

    def labels(model: LoadedModel) -> Callable[[np.ndarray], np.ndarray]:
        logits = _logits_fn(model)
        return lambda texts: logits(texts).argmax(1)

    result = text_robustness.evaluate_perturbations(labels(ctx.model), x, y, names, seed=cfg.seed)
    base = None
    if ctx.baseline is not None:
        base = text_robustness.evaluate_perturbations(labels(ctx.baseline), x, y, names, seed=cfg.seed)
    ctx.plots["corruption_accuracy"] = {
        "clean": float(result.clean.mean()),
        "severities": list(robustness.SEVERITIES),
        "accuracy": {name: c.mean(axis=1).tolist() for name, c in result.corrupted.items()},
    }
    subset = {"n": int(idx.size), "seed": cfg.seed, "of": ctx.split.n}
    out = text_robustness.perturbation_measurements(
        result, base, n_boot=cfg.n_boot, seed=cfg.seed, details={"subset": subset}
    )
    ctx.keep(out, ctx.split.ids[idx], robustness.per_example(result))
    pixels = "image and table corruptions do not apply to texts; the text perturbations ran instead"
    return [*out, Measurement.skipped("corruption_accuracy[image]", "robustness", pixels)]


def _eps(cfg: TrustConfig) -> dict[catalogue.Norm, tuple[float, ...]]:
    """The eps levels of every norm (attacked or not)."""
    return {"linf": cfg.linf_eps, "l2": cfg.l2_eps}


def _norms(cfg: TrustConfig) -> list[tuple[catalogue.Norm, tuple[float, ...]]]:
    """The attacked norms with their eps levels."""
    return [(norm, _eps(cfg)[norm]) for norm in cfg.norms]


def _adversarial(ctx: TrustContext) -> list[Measurement]:
    cfg = ctx.config
    if ctx.data.kind == "text":
        return _text_adversarial(ctx)
    if ctx.data.kind != "image" or ctx.data.input_range is None:
        return [
            Measurement.skipped("adv_accuracy", "adversarial", "attacks are defined on images in a range")
        ]
    idx = _subset(ctx.split.n, cfg.adversarial_n, cfg.seed)
    x, y = torch.from_numpy(ctx.split.x[idx]), torch.from_numpy(ctx.split.y[idx])
    input_range = ctx.data.input_range
    subset = {"subset": {"n": int(idx.size), "seed": cfg.seed, "of": ctx.split.n}}
    out: list[Measurement] = []
    if has_gradients(ctx.model):
        assert ctx.model.differentiable is not None
        module = ctx.model.differentiable.eval()
        curves: dict[str, Any] = {}
        for norm, eps in _norms(cfg):
            curve = adversarial.robustness_curve(
                module,
                x,
                y,
                norm=norm,
                eps=eps,
                input_range=input_range,
                steps=cfg.pgd_steps,
                restarts=cfg.restarts,
                seed=cfg.seed,
            )
            curves[norm] = {
                "eps": list(curve.eps),
                **{attack: [float(c.mean()) for c in cs] for attack, cs in curve.correct.items()},
            }
            measured = adversarial.curve_measurements(
                curve,
                n_classes=ctx.data.n_classes,
                input_range=input_range,
                steps=cfg.pgd_steps,
                restarts=cfg.restarts,
                details=subset,
            )
            ctx.keep(measured, ctx.split.ids[idx], adversarial.curve_per_example(curve))
            out.extend(measured)
        if curves:
            ctx.plots["adversarial_curves"] = curves
        return [*out, *_square(ctx, x.numpy(), y.numpy(), idx)] if cfg.square else out
    note = f"the {ctx.model.backend} backend exposes no gradients: attacked by transfer and by Square"
    if ctx.parent is not None and ctx.parent.module is not None:
        for norm, eps in _norms(cfg):
            out.extend(
                adversarial.transfer_measurements(
                    ctx.parent.module.eval(),
                    _logits_fn(ctx.model),
                    x,
                    y,
                    norm=norm,
                    eps=eps,
                    input_range=input_range,
                    steps=cfg.pgd_steps,
                    seed=cfg.seed,
                )
            )
    else:
        out.append(Measurement.skipped("adv_accuracy[transfer]", "adversarial", "no fp32 parent to craft on"))
    out.extend(_square(ctx, x.numpy(), y.numpy(), idx))
    return [replace(m, details={**m.details, "note": note}) for m in out]


def _text_adversarial(ctx: TrustContext) -> list[Measurement]:
    """The greedy character attack on a seeded subset; FGSM, PGD and Square (pixels) are ``skipped``."""
    cfg = ctx.config
    idx = _subset(ctx.split.n, cfg.text_attack_n, cfg.seed)
    logits = _logits_fn(ctx.model)

    def probs(texts: np.ndarray) -> np.ndarray:
        z = logits(texts)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return np.asarray(e / e.sum(axis=1, keepdims=True))

    result = text_attack.char_greedy_attack(
        probs, ctx.split.x[idx], ctx.split.y[idx], budget=cfg.text_attack_budget,
        fraction=cfg.text_attack_fraction, seed=cfg.seed,
    )  # fmt: skip
    subset = {"subset": {"n": int(idx.size), "seed": cfg.seed, "of": ctx.split.n}}
    out = text_attack.attack_measurements(result, n_boot=cfg.n_boot, seed=cfg.seed, details=subset)
    ctx.keep(out, ctx.split.ids[idx], text_attack.per_example(result))
    pixels = "FGSM, PGD and Square perturb pixels in a range; texts get the character-level attack"
    return [*out, Measurement.skipped("adv_accuracy[pixels]", "adversarial", pixels)]


def _square(ctx: TrustContext, x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> list[Measurement]:
    """Square on a seeded subset of the attacked examples ``x``, ``y`` (split positions ``idx``)."""
    cfg = ctx.config
    assert ctx.data.input_range is not None
    small = _subset(len(idx), cfg.square_n, cfg.seed)
    runs = adversarial.square_runs(
        _logits_fn(ctx.model), x[small], y[small], eps=cfg.linf_eps, input_range=ctx.data.input_range,
        queries=cfg.square_queries, seed=cfg.seed,
    )  # fmt: skip
    measured = adversarial.square_measurements(
        runs, input_range=ctx.data.input_range, queries=cfg.square_queries
    )
    hits = {
        catalogue.adversarial_accuracy(catalogue.SQUARE, "linf", eps): correct
        for eps, (correct, _) in runs.items()
    }
    ctx.keep(measured, ctx.split.ids[idx[small]], hits)
    return measured


def _ood(ctx: TrustContext) -> list[Measurement]:
    cfg = ctx.config
    if ctx.data.kind not in ("image", "text"):
        return [Measurement.skipped("ood", "ood", "the built-in OOD sets are of images and texts")]
    if ctx.outputs.logits is None:
        return [Measurement.skipped("ood", "ood", "the outputs have no logits")]
    val = ctx.outputs_of(ctx.data.val)
    maha = None
    if val.features is not None and ctx.outputs.features is not None:
        maha = ood.fit_mahalanobis(val.features, val.labels)
    details = {
        "in_distribution": f"{ctx.data.name} {ctx.split.n} examples",
        "mahalanobis_fitted_on": "validation split features",
    }
    skipped: list[Measurement] = []
    if ctx.data.kind == "text":
        idx = _subset(ctx.split.n, cfg.text_ood_n, cfg.seed)
        foreign = text_ood.docstring_texts()
        sets = {
            "docstrings": foreign[_subset(len(foreign), cfg.text_ood_n, cfg.seed)],
            "shuffled": text_ood.word_shuffled(ctx.split.x[idx], seed=cfg.seed),
        }
        source_ids = {"shuffled": ctx.split.ids[idx]}  # each shuffled text is of an ID example
        details["docstrings"] = f"Python {text_ood.python_release()} standard-library docstrings"
        held_out = ctx.data.held_out
        if held_out is not None and len(held_out):
            sets["held_out_classes"] = held_out[_subset(len(held_out), cfg.text_ood_n, cfg.seed)]
            details["held_out_classes"] = f"{len(held_out)} texts of classes {ctx.data.name} holds unlabelled"
        else:
            reason = f"{ctx.data.name} holds no texts of classes beyond its labels (fortunes does)"
            skipped.append(Measurement.skipped("ood[held_out_classes]", "ood", reason))
        pixels = "noise, inverted, rotated and digits are image sets; texts get docstrings and shuffled"
        skipped.append(Measurement.skipped("ood[images]", "ood", pixels))
    else:
        idx = _subset(ctx.split.n, cfg.ood_n, cfg.seed)
        sets = {
            shift: ood.synthetic_shift(ctx.split.x[idx], shift, seed=cfg.seed)
            for shift in catalogue.OOD_SHIFTS
        }
        shape = ctx.split.x.shape[1:]
        if shape[0] == 1 and shape[1] == shape[2]:
            sets["digits"] = ood.digits_as_images(size=shape[1])
        source_ids = {shift: ctx.split.ids[idx] for shift in catalogue.OOD_SHIFTS}  # copies of ID examples
    return [*_ood_sets(ctx, sets, source_ids, maha, details), *skipped]


def _ood_sets(
    ctx: TrustContext,
    sets: dict[str, np.ndarray],
    source_ids: dict[str, np.ndarray],
    maha: ood.Mahalanobis | None,
    details: dict[str, Any],
) -> list[Measurement]:
    """Every score and detection metric of the evaluated split against each OOD set, with the pooled
    per-example evidence for the gate (``source_ids``: the ID example each OOD one was made from)."""
    cfg = ctx.config
    assert ctx.outputs.logits is not None
    id_scores = ood.scores_of(ctx.outputs.logits, ctx.outputs.features, maha)
    out: list[Measurement] = []
    for name, x_ood in sets.items():
        o = _run_outputs(ctx.model, x_ood, np.zeros(len(x_ood), dtype=np.int64), f"ood set {name}")
        assert o.logits is not None
        measured = ood.ood_measurements(
            ctx.outputs.logits,
            o.logits,
            ood_set=name,
            id_features=ctx.outputs.features,
            ood_features=o.features,
            mahalanobis=maha,
            n_boot=cfg.n_boot,
            seed=cfg.seed,
            details=details,
        )
        out.extend(measured)
        # For the gate: the pooled examples (ID ids, then the OOD set's own) and each metric's replicates.
        ood_ids = np.array([f"{name}:{i}" for i in source_ids.get(name, np.arange(len(x_ood)).astype(str))])
        pooled = np.concatenate([ctx.outputs.ids, ood_ids])
        by_name = {m.name: m for m in measured if m.status == "ok" and m.value is not None}
        for score, scores in ood.scores_of(o.logits, o.features, maha).items():
            for metric in catalogue.OOD_METRICS:
                key = catalogue.ood_metric(metric, name, score)
                if key in by_name:
                    replicates = ood.detection_replicates(id_scores[score], scores, metric)
                    ctx.per_example[key] = PerExample(by_name[key], pooled, replicates)
    return out


def _fairness(ctx: TrustContext) -> list[Measurement]:
    cfg = ctx.config
    out: list[Measurement] = []
    if ctx.outputs.groups is not None:
        out.extend(
            fairness.fairness_measurements(
                ctx.outputs.labels, ctx.outputs.preds, ctx.outputs.groups, n_boot=cfg.n_boot, seed=cfg.seed
            )
        )
    else:
        out.append(Measurement.skipped("fairness", "fairness", "the split has no group column"))
    if ctx.data.kind == "table":
        out.append(
            fairness.slice_measurement(ctx.split.x, ctx.outputs.correct, ctx.data.feature_names or None)
        )
    return out


def _privacy(ctx: TrustContext) -> list[Measurement]:
    cfg = ctx.config
    n = min(cfg.membership_n, ctx.data.train.n, ctx.split.n)
    # The whole training split's outputs (the cache holds them), then the seeded subset: a subset is
    # another split to the cache, and a transformer would score its texts again.
    train = ctx.outputs_of(ctx.data.train)
    members = _subset(ctx.data.train.n, n, cfg.seed)
    held = _subset(ctx.split.n, n, cfg.seed + 1)
    out = privacy.loss_attack_measurements(
        train.probs[members],
        train.labels[members],
        ctx.outputs.probs[held],
        ctx.outputs.labels[held],
        n_boot=cfg.n_boot,
        seed=cfg.seed,
    )
    where = {"members": "training split, seeded subset", "nonmembers": "evaluated split, seeded subset"}
    return [replace(m, details={**m.details, **where}) for m in out]


def _security(ctx: TrustContext) -> list[Measurement]:
    train = ctx.outputs_of(ctx.data.train)
    if train.features is None:
        return [Measurement.skipped("backdoor", "security", "the backend gives no penultimate features")]
    return backdoor.backdoor_measurements(
        train.features,
        train.labels,
        ids=train.ids,
        epsilon=ctx.config.backdoor_epsilon,
        class_names=ctx.data.class_names,
    )


Family = Callable[[TrustContext], list[Measurement]]
# Each family's runner: measurements of its own family; one that cannot apply says why (``skipped``).
# Plugins add families with TRUST_FAMILIES.add(name, runner) or the entry-point group
# ``assay.trust_family``; tests/contract/test_trust_families.py runs every one.
TRUST_FAMILIES: Registry[Family] = Registry("trust_family")
_BUILTIN: tuple[tuple[str, Family], ...] = (
    ("robustness", _robustness),
    ("adversarial", _adversarial),
    ("ood", _ood),
    ("fairness", _fairness),
    ("privacy", _privacy),
    ("security", _security),
)
for _name, _runner in _BUILTIN:
    TRUST_FAMILIES.add(_name, _runner)
FAMILIES: tuple[str, ...] = tuple(name for name, _ in _BUILTIN)  # the suite's order, and its default


def run_trust(
    model: LoadedModel,
    data: Dataset,
    *,
    split: str = "test",
    config: TrustConfig | None = None,
    outputs_of: Callable[[Split], Outputs] | None = None,
    parent: LoadedModel | None = None,
    baseline: LoadedModel | None = None,
    executor: Executor | None = None,
) -> TrustResult:
    """Every family in ``config.families`` on ``model`` and ``data.split(split)``.

    ``outputs_of`` runs (or reads from a cache) the model on a split; by default it runs it. ``parent``
    is the fp32 model that gradient-free variants are attacked through; ``baseline`` the model CE is
    relative to. Never raises for a failing check: it becomes an ``error`` measurement. Each family is one
    unit of ``executor`` (default: run here, one after another); every family seeds its own subsets and
    attacks from ``config.seed``, so the result is the same whichever executor ran them, in whatever order.
    """
    config = config or TrustConfig()
    unknown = [family for family in config.families if family not in TRUST_FAMILIES]
    if unknown:
        known = ", ".join(TRUST_FAMILIES.in_order())
        raise UsageError(f"Unknown trust families {unknown}. Known: {known}.")
    executor = executor or LocalExecutor()
    run = outputs_of or (lambda s: _run_outputs(model, s.x, s.y, "trust", s))
    target = data.split(split)
    ctx = executor.share(TrustContext(model, data, target, run(target), config, run, parent, baseline))
    result = TrustResult(measurements=[])
    families = list(config.families)
    for family, found in zip(
        families, executor.map(_family, [(ctx, f) for f in families], families), strict=True
    ):
        result.measurements.extend(found.measurements)
        result.plots.update(found.plots)
        result.per_example.update(found.per_example)
        result.seconds[family] = found.seconds[family]
    return result


def _family(ctx: TrustContext, family: str) -> TrustResult:
    """One family on ``ctx``: its measurements, and the plot data and per-example evidence it added."""
    plots, kept = set(ctx.plots), set(ctx.per_example)
    start = time.perf_counter()
    try:
        found = TRUST_FAMILIES.get(family)(ctx)
    except Exception as e:  # one failing family must not stop the suite, and must say so
        logger.warning("trust family %s failed", family, exc_info=True)
        found = [Measurement.error(family, family, f"{type(e).__name__}: {e}")]
    return TrustResult(
        measurements=found,
        plots={k: v for k, v in ctx.plots.items() if k not in plots},
        seconds={family: time.perf_counter() - start},
        per_example={k: v for k, v in ctx.per_example.items() if k not in kept},
    )


def cached_outputs(
    model: LoadedModel, cache_dir: Path | None, digest: str | None
) -> Callable[[Split], Outputs]:
    """Outputs of ``model`` on a split through the per-example cache (the one ``assay eval`` fills)."""
    return lambda split: infer(model.predictor, split, cache_dir=cache_dir, model_digest=digest)


def gate_ready(measurements: Sequence[Measurement]) -> list[str]:
    """Names of the trust measurements a policy can name (``extra_metrics``) — those with a value."""
    return [m.name for m in measurements if m.status == "ok" and m.value is not None]


def families_for(metrics: Iterable[str]) -> tuple[str, ...]:
    """The trust families that produce ``metrics`` (in suite order); names outside
    :func:`assay.catalogue.trust_entries` are ignored."""
    known = catalogue.trust_entries()
    wanted = {known[m].family for m in metrics if m in known}
    return tuple(f for f in FAMILIES if f in wanted)


def gate_config(metrics: Iterable[str], *, n_boot: int, seed: int) -> TrustConfig | None:
    """What the suite runs to gate under rules on ``metrics``: only the families they name, white-box
    attacks only in the norms named, and Square on every model when a rule names it (a gradient-free
    variant and its fp32 parent then face the same attack), with the policy's ``n_boot`` and ``seed``
    (so two models gated against each other are measured on the same examples). None when no metric is
    one of the suite's."""
    named = set(metrics)
    families = families_for(named)
    if not families:
        return None
    config = TrustConfig(families=families, n_boot=n_boot, seed=seed)
    eps = _eps(config)
    norms = tuple(
        norm
        for norm in catalogue.NORMS
        if named & catalogue.attack_names(catalogue.WHITE_BOX_ATTACKS, norm, eps[norm])
    )
    square = bool(named & catalogue.attack_names([catalogue.SQUARE], "linf", eps["linf"])) or None
    return replace(config, norms=norms, square=square)
