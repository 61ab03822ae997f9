"""lm-evaluation-harness per-sample logs (``--log_samples``) read for the paired gate.

lm-eval writes one ``samples_<task>_<date>.jsonl`` per task, one JSON object per document and filter.
assay reads both kinds of task.

**Multiple-choice tasks** (``output_type: multiple_choice``, scored by the log-likelihood of each choice)
read as :class:`~assay.outputs.Outputs` over the choices (:func:`read_samples`). A line holds, as its
``EvaluationTracker`` writes it::

    {"doc_id": 0, "target": "2", "filtered_resps": [["-7.1", "False"], ["-9.3", "False"], ...],
     "filter": "none", "metrics": ["acc", "acc_norm"], "doc_hash": "...", "acc": 1.0, ...}

with the numbers as strings (its ``sanitize_list``), ``target`` the gold choice's index (or its text), and
``arguments`` the (context, continuation) requests where it keeps them. assay reads the choices'
log-likelihoods as logits over the choices: the probabilities are their softmax, the prediction their
argmax (lm-eval's ``acc``), the label the gold index. Where a line has lm-eval's own ``acc``, assay checks
that its argmax agrees, so a misread target cannot pass silently.

**Generation tasks** (``output_type: generate_until``, scored by exact match or another per-document
metric) read as :class:`GenerationLog` (:func:`read_generation_samples`)::

    {"doc_id": 7, "target": "4", "filtered_resps": ["4"], "filter": "strict-match",
     "metrics": ["exact_match"], "exact_match": 1.0, ...}

Each metric that ``metrics`` names is read per document as lm-eval scored it (its normaliser is the
task's, which the log does not hold), and averaged with its bootstrap interval; a 0/1 metric is paired
with exact McNemar in the gate. Generation logs have no probabilities, so no calibration is measured.

Either way each document becomes one example whose id is its ``doc_id``, so two models' logs of the same
task pair document by document, and ``assay gate A.jsonl B.jsonl`` tests them paired (lm-eval itself
compares two models with an unpaired z-test). A log that holds several filters (gsm8k's ``strict-match``
and ``flexible-extract``) is named with the one to read after a ``#``: ``samples_gsm8k.jsonl#strict-match``.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> lines = [{"doc_id": i, "target": str(i % 2), "filter": "none",
    ...           "filtered_resps": [["-1.0", "True"], [str(-1.0 - (i % 2) * 2 + 1), "False"]]}
    ...          for i in range(3)]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "samples_demo_2026.jsonl"
    ...     _ = path.write_text("".join(json.dumps(x) + "\\n" for x in lines))
    ...     outputs = read_samples(path)
    >>> outputs.ids.tolist(), outputs.labels.tolist(), outputs.preds.tolist()
    (['0', '1', '2'], [0, 1, 0], [1, 0, 1])
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assay.errors import DataError
from assay.llm.choices import choice_outputs
from assay.llm.jsonl import read_objects
from assay.outputs import Outputs, from_arrays

SUFFIX = ".jsonl"
FILTER_MARK = "#"  # FILE.jsonl#FILTER: the lines of one filter
HIT_CLASSES = ["no match", "match"]  # the classes of a generation log's outputs: the document's hit
_TASK = re.compile(r"^samples_(?P<task>.+?)_\d{4}-\d{2}-\d{2}T")


def split_target(path: str | Path) -> tuple[Path, str | None]:
    """``FILE.jsonl#FILTER`` as (the file, the filter); any other path as (itself, None)."""
    text = str(path)
    head, mark, tail = text.rpartition(FILTER_MARK)
    if mark and tail and head.lower().endswith(SUFFIX):
        return Path(head), tail
    return Path(text), None


def names_samples(path: str | Path) -> bool:
    """Does ``path`` name an lm-eval samples file (``.jsonl``, perhaps with ``#FILTER``)."""
    return split_target(path)[0].suffix.lower() == SUFFIX


def read_log(path: str | Path) -> Outputs | GenerationLog:
    """One lm-eval samples file of either kind, told by its first document's ``filtered_resps`` (one
    ``[log-likelihood, is_greedy]`` pair per choice, or the generated text): a multiple-choice task's as
    outputs over its choices, a generation task's as its per-document metrics."""
    rows = _rows(path)
    if _generated(rows[0][1].get("filtered_resps")) is not None:
        return _generation_log(path, rows)
    return _choice_outputs(path, rows)


def read_samples(path: str | Path) -> Outputs:
    """One lm-eval samples file of a multiple-choice task as outputs over its choices (see the module)."""
    return _choice_outputs(path, _rows(path))


def read_generation_samples(path: str | Path) -> GenerationLog:
    """One lm-eval samples file of a generation task (see the module)."""
    return _generation_log(path, _rows(path))


def _choice_outputs(path: str | Path, rows: list[tuple[str, dict[str, Any]]]) -> Outputs:
    ids, labels, scores = [], [], []
    for where, row in rows:
        lls = _choice_loglikelihoods(row.get("filtered_resps"), where)
        gold = _gold(row, lls, where)
        if "acc" in row and bool(float(row["acc"])) != (int(np.argmax(lls)) == gold):
            raise DataError(
                f"{where}: lm-eval scored acc={row['acc']} but the choices' log-likelihoods and target "
                f"{row.get('target')!r} give {int(np.argmax(lls)) == gold}; the target is not the gold "
                "choice's index or text."
            )
        ids.append(str(row["doc_id"]))
        labels.append(gold)
        scores.append(lls)
    return choice_outputs(ids, labels, scores, str(path))


@dataclass(frozen=True)
class GenerationLog:
    """A generation task's log: per document, each metric lm-eval scored it by."""

    task: str
    filter: str
    ids: np.ndarray  # (N,) str, the doc_ids
    scores: dict[str, np.ndarray]  # metric -> (N,) values, in the order of the log's ``metrics``
    source: str

    @property
    def primary(self) -> str:
        """The metric the outputs hold: ``exact_match`` where scored, else the first 0/1 metric."""
        binary = [name for name, values in self.scores.items() if np.isin(values, (0.0, 1.0)).all()]
        if not binary:
            raise DataError(
                f"{self.source}: none of its metrics ({', '.join(self.scores)}) is 0 or 1 per document, so "
                "assay cannot pair its documents' outcomes; log a 0/1 metric such as exact_match."
            )
        return "exact_match" if "exact_match" in binary else binary[0]

    def outputs(self) -> Outputs:
        """Each document as an example over two classes, "no match" and "match", labelled "match": the
        prediction is the primary metric's hit, so accuracy is its share and churn the share of
        documents whose outcome changed."""
        hit = self.scores[self.primary].astype(np.int64)
        probs = np.eye(2)[hit]
        return from_arrays(np.ones(len(hit), dtype=np.int64), probs=probs, ids=self.ids, source=self.source)


def _generation_log(path: str | Path, rows: list[tuple[str, dict[str, Any]]]) -> GenerationLog:
    file, _ = split_target(path)
    names = _metric_names(*rows[0])
    ids, values = [], []
    for where, row in rows:
        if _generated(row.get("filtered_resps")) is None:
            raise DataError(f"{where}: 'filtered_resps' is not generated text, as a generation task's is.")
        scored_by = _metric_names(where, row)
        if scored_by != names:
            raise DataError(f"{where}: scored by {scored_by}, the first line by {names}.")
        ids.append(str(row["doc_id"]))
        values.append([_number(row.get(name), f"{where}: {name!r}") for name in names])
    match = _TASK.match(file.name)
    task = match["task"] if match else file.stem
    table = np.asarray(values, dtype=np.float64)
    scores = {name: table[:, i] for i, name in enumerate(names)}
    return GenerationLog(task, str(rows[0][1].get("filter", "none")), np.asarray(ids).astype(str), scores,
                         str(path))  # fmt: skip


def _rows(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """The lines of the log, of its one filter or of the filter ``path`` names; each with a doc_id, none
    twice."""
    file, wanted = split_target(path)
    if not file.is_file():
        raise DataError(f"Samples file not found: {file}.")
    rows = read_objects(file, "a sample")
    filters = sorted({str(r.get("filter", "none")) for _, r in rows})
    if wanted is not None:
        rows = [(w, r) for w, r in rows if str(r.get("filter", "none")) == wanted]
        if not rows:
            raise DataError(f"{file}: no lines of filter {wanted!r}; it holds {', '.join(filters)}.")
    elif len(filters) > 1:
        raise DataError(
            f"{file}: holds samples for {len(filters)} filters ({', '.join(filters)}); name the one to "
            f"read after a '#', as in {file}{FILTER_MARK}{filters[0]}."
        )
    seen: set[str] = set()
    for where, row in rows:
        if "doc_id" not in row:
            raise DataError(f"{where}: no 'doc_id'; is this an lm-eval samples file (--log_samples)?")
        if str(row["doc_id"]) in seen:
            raise DataError(f"{where}: doc_id {row['doc_id']!r} appears twice for the same filter.")
        seen.add(str(row["doc_id"]))
    return rows


def _generated(resps: Any) -> str | None:
    """The generated text of a generation task's ``filtered_resps`` (``["text"]``, or ``[["text"]]`` as
    some versions write it), else None."""
    if isinstance(resps, list) and len(resps) == 1:
        first = resps[0]
        if isinstance(first, list) and len(first) == 1:
            first = first[0]
        if isinstance(first, str):
            return first
    return None


def _metric_names(where: str, row: dict[str, Any]) -> list[str]:
    names = row.get("metrics")
    if names is None and "exact_match" in row:
        return ["exact_match"]  # logs of lm-eval versions that did not list the metrics
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError(f"{where}: no 'metrics' list naming what lm-eval scored the document by.")
    return names


def _number(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where} is {value!r}, not a number.") from None
    if not math.isfinite(number):
        raise DataError(f"{where} is {value!r}.")
    return number


def _choice_loglikelihoods(resps: Any, where: str) -> np.ndarray:
    """``filtered_resps`` of a multiple-choice document: one ``[loglikelihood, is_greedy]`` per choice."""
    if _generated(resps) is not None:
        raise DataError(
            f"{where}: this is a generation task's log (its 'filtered_resps' is generated text), which has "
            "no predictions over classes; evaluate it alone (assay eval LOG) or gate it against another "
            "model's log of the same task (assay gate LOG_A LOG_B)."
        )
    not_choices = DataError(
        f"{where}: 'filtered_resps' is not one [log-likelihood, is_greedy] pair per choice, so this is not "
        "a multiple-choice task scored by log-likelihood."
    )
    if not isinstance(resps, list) or len(resps) < 2:
        raise not_choices
    values = []
    for choice in resps:
        if not isinstance(choice, list | tuple) or len(choice) != 2:
            raise not_choices
        try:
            value = float(choice[0])
        except (TypeError, ValueError):
            raise not_choices from None
        if not math.isfinite(value):
            raise DataError(f"{where}: a choice's log-likelihood is {choice[0]!r}.")
        values.append(value)
    return np.array(values)


def _gold(row: dict[str, Any], lls: np.ndarray, where: str) -> int:
    """The gold choice: ``target`` as an index, else the choice whose continuation is its text."""
    target = str(row.get("target", "")).strip()
    if target.lstrip("-").isdigit():
        gold = int(target)
        if not 0 <= gold < len(lls):
            raise DataError(f"{where}: target {gold} is out of range for {len(lls)} choices.")
        return gold
    arguments = row.get("arguments")
    requests = list(arguments.values()) if isinstance(arguments, dict) else []
    continuations = [str(r.get("arg_1", "")).strip() for r in requests if isinstance(r, dict)]
    if len(continuations) == len(lls) and continuations.count(target) == 1:
        return continuations.index(target)
    raise DataError(
        f"{where}: target {target!r} is neither a choice's index nor the text of exactly one choice."
    )
