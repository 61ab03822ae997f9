"""lm-evaluation-harness per-sample logs (``--log_samples``) read as :class:`~assay.outputs.Outputs`.

lm-eval writes one ``samples_<task>_<date>.jsonl`` per task, one JSON object per document. For a
multiple-choice task (``output_type: multiple_choice``, scored by the log-likelihood of each choice) a
line holds, as its ``EvaluationTracker`` writes it::

    {"doc_id": 0, "target": "2", "filtered_resps": [["-7.1", "False"], ["-9.3", "False"], ...],
     "filter": "none", "metrics": ["acc", "acc_norm"], "doc_hash": "...", "acc": 1.0, ...}

with the numbers as strings (its ``sanitize_list``), ``target`` the gold choice's index (or its text), and
``arguments`` the (context, continuation) requests where it keeps them. assay reads the choices'
log-likelihoods as logits over the choices: the probabilities are their softmax, the prediction their
argmax (lm-eval's ``acc``), the label the gold index. Each document becomes one example whose id is its
``doc_id``, so two models' logs of the same task pair document by document, and ``assay gate A.jsonl
B.jsonl`` tests their accuracies with exact McNemar (lm-eval itself compares two models with an unpaired
z-test) and the rest with the paired bootstrap.

Where a line has lm-eval's own ``acc``, assay checks that its argmax agrees, so a misread target cannot
pass silently. Generation tasks (``generate_until``, scored by exact match) have no choice
log-likelihoods and are refused with that reason, as are logs that mix several filters.

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
from pathlib import Path
from typing import Any

import numpy as np

from assay.errors import DataError
from assay.llm.choices import choice_outputs
from assay.llm.jsonl import read_objects
from assay.outputs import Outputs

SUFFIX = ".jsonl"


def read_samples(path: str | Path) -> Outputs:
    """One lm-eval samples file of a multiple-choice task as outputs over its choices (see the module)."""
    path = Path(path)
    rows = _lines(path)
    filters = sorted({str(r.get("filter", "none")) for r in rows})
    if len(filters) > 1:
        raise DataError(
            f"{path}: holds samples for {len(filters)} filters ({', '.join(filters)}); give assay the "
            "lines of one filter (multiple-choice tasks have only 'none')."
        )
    ids, labels, scores = [], [], []
    for number, row in enumerate(rows, start=1):
        where = f"{path}, line {number}"
        if "doc_id" not in row:
            raise DataError(f"{where}: no 'doc_id'; is this an lm-eval samples file (--log_samples)?")
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


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"Samples file not found: {path}.")
    return [row for _, row in read_objects(path, "a sample")]


def _choice_loglikelihoods(resps: Any, where: str) -> np.ndarray:
    """``filtered_resps`` of a multiple-choice document: one ``[loglikelihood, is_greedy]`` per choice."""
    generation = DataError(
        f"{where}: 'filtered_resps' is not one [log-likelihood, is_greedy] pair per choice, so this is not "
        "a multiple-choice task scored by log-likelihood; generation tasks (exact match) are not read yet."
    )
    if not isinstance(resps, list) or len(resps) < 2:
        raise generation
    values = []
    for choice in resps:
        if not isinstance(choice, list | tuple) or len(choice) != 2:
            raise generation
        try:
            value = float(choice[0])
        except (TypeError, ValueError):
            raise generation from None
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
