"""Benchmark contamination: evaluation examples that also occur in a reference corpus the user points at
(text: shared word 13-grams; images: exact or near duplicates), and text near duplicates within a table."""

from __future__ import annotations

import numpy as np

from assay.data.audit.duplicates import pair_findings
from assay.data.audit.findings import rate_finding
from assay.data.audit.registry import AuditContext, register
from assay.data.audit.search import flat, near_pairs
from assay.data.audit.text import ngram_overlap
from assay.measurement import Measurement


@register(
    "text_duplicates",
    "near-duplicate texts per text column (MinHash LSH, exact Jaccard re-check)",
    ("table",),
)
def text_duplicates(ctx: AuditContext) -> list[Measurement]:
    if not ctx.data.text_columns:
        return [Measurement.skipped("text_duplicates", "data", "no text columns")]
    c = ctx.config
    out = []
    for column, pairs in ctx.text_pairs.items():
        out += pair_findings(
            ctx,
            f"text_duplicates.{column}",
            pairs,
            f"Jaccard of character {c.shingle}-grams >= {c.text_jaccard} "
            f"(MinHash LSH, {c.minhash_permutations} "
            "permutations, every candidate re-checked exactly); distance = 1 - Jaccard",
            "text_duplicates",
            column=column,
            threshold=c.text_jaccard,
        )
    return out


EVAL_SPLIT = "test"


@register(
    "contamination",
    "evaluation examples found in a reference corpus (13-gram overlap, near duplicates)",
    needs="reference",
)
def contamination(ctx: AuditContext) -> list[Measurement]:
    c = ctx.config
    split = ctx.data.splits.get(EVAL_SPLIT)
    if split is None:
        return [Measurement.skipped("contamination", "data", "no test split")]
    out: list[Measurement] = []
    if ctx.reference_texts is not None:
        if not ctx.data.text_columns:
            return [
                Measurement.skipped("contamination", "data", "a text corpus needs text columns to compare")
            ]
        for column in ctx.data.text_columns:
            assert split.frame is not None
            share, hit = ngram_overlap(split.frame[column].tolist(), ctx.reference_texts, c.ngram)
            order = np.argsort(-np.nan_to_num(share, nan=-1.0))[:12]
            out.append(
                rate_finding(
                    f"contamination.{column}[{EVAL_SPLIT}]",
                    int(hit.sum()),
                    split.n,
                    f"share of {EVAL_SPLIT} texts sharing at least one word {c.ngram}-gram "
                    "with the reference corpus",
                    check="contamination",
                    examples=[{"id": str(split.ids[k]), "overlap": float(share[k])} for k in order if hit[k]],
                    flagged_ids=split.ids[hit].tolist(),
                    too_short=int(np.isnan(share).sum()),
                    column=column,
                    split=EVAL_SPLIT,
                )
            )
        return out
    reference = ctx.reference
    assert reference is not None
    ref_x = np.concatenate([flat(s.x) for s in reference.splits.values()])
    ref_ids = np.concatenate([s.ids for s in reference.splits.values()])
    x = flat(split.x)
    if ref_x.shape[1] != x.shape[1]:
        return [
            Measurement.error(
                "contamination",
                "data",
                f"reference rows have {ref_x.shape[1]} values, {EVAL_SPLIT} rows {x.shape[1]}",
            )
        ]
    threshold = c.image_distance if ctx.data.kind == "image" else c.table_distance
    pairs = near_pairs(x, threshold, ref_x, components=c.components, seed=c.seed)
    flagged = np.unique(pairs.i)
    order = np.argsort(pairs.distance, kind="stable")[:12]
    out.append(
        rate_finding(
            f"contamination[{EVAL_SPLIT}]",
            len(flagged),
            split.n,
            f"share of {EVAL_SPLIT} examples within root-mean-square distance {threshold} "
            "of a reference example",
            check="contamination",
            examples=[
                {
                    "id": str(split.ids[pairs.i[k]]),
                    "match": f"reference:{ref_ids[pairs.j[k]]}",
                    "distance": float(pairs.distance[k]),
                }
                for k in order
            ],
            flagged_ids=split.ids[flagged].tolist(),
            split=EVAL_SPLIT,
            threshold=threshold,
        )
    )
    return out
