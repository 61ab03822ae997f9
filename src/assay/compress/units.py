"""The compression search's units of work, as an executor runs them (in this process, or in a Ray worker):
build a candidate, assess a model, measure the machine. None writes the store: the search registers,
gates and records what they return (:class:`assay.compress.search.Search`), so a unit that fails or is
cancelled leaves nothing behind.

Each unit is a module-level function of picklable arguments. Models reach a worker as their files (a
:class:`~assay.models.loaded.LoadedModel` or a :class:`~assay.compress.text.TextSource` pickles as its
folder), the built model comes back as its files, and the timing notes are taken where the timing is.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assay.compress.base import COMPRESSORS, Built, Context
from assay.compress.text import TEXT_COMPRESSORS, TextContext, TextSource
from assay.cost import Machine
from assay.cost.machine import measure_machine
from assay.evaluate import Assessment
from assay.executor import PackedFolder
from assay.models import ZooModel
from assay.models.loaded import LoadedModel
from assay.release import assess_model
from assay.store.records import VersionInfo


def busy_machine() -> str:
    """A note when other work competes for the cores: timings taken then are inflated, often wildly
    (threads waiting for each other), and comparisons with timings from a quiet moment mislead."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load <= cores:
        return ""
    return f"timed on a busy machine (load {load:.1f} on {cores} cores): latencies may be inflated"


def build(
    method: str, params: dict[str, Any], source: ZooModel | TextSource, ctx: Context | TextContext
) -> tuple[Built, PackedFolder]:
    """``method`` on ``source``: what the compressor reports, and the folder it wrote as its files."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        if isinstance(source, TextSource):
            assert isinstance(ctx, TextContext)
            built = TEXT_COMPRESSORS.get(method)(source, ctx, out, dict(params))
        else:
            assert isinstance(ctx, Context)
            built = COMPRESSORS.get(method)(source, ctx, out, dict(params))
        return built, PackedFolder.of(out)


@dataclass(frozen=True)
class Assessed:
    """A model's assessment on the test split, and a note if its timings were taken on a busy machine."""

    assessment: Assessment
    busy: str


def assess(
    model: LoadedModel,
    version: VersionInfo,
    ctx: Context | TextContext,
    n_boot: int,
    seed: int,
    cache_dir: Path | None,
) -> Assessed:
    """``model`` (registered as ``version``) on the test split of ``ctx``'s data, with its efficiency."""
    busy = busy_machine()
    assessment = assess_model(
        model, version, ctx.data, "test", cache_dir=cache_dir, n_boot=n_boot, seed=seed, progress=ctx.progress
    )
    return Assessed(assessment, busy)


def machine() -> Machine:
    """The rates of the machine the unit runs on, which the cost table projects its timings with."""
    return measure_machine()
