"""Duplicates within each split and across splits (leakage): exact, near and perceptual.

Pairs come from the search over all splits stacked (train, val, test, in that order), so a pair's first
row always comes from the same split as its second or an earlier one. Per split, an example is flagged
when it duplicates an earlier example of that split; across two splits, an example of the later split
(test) is flagged when it has a duplicate in the earlier one (train). Each finding lists pairs of ids with
their distance, closest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.data.audit.findings import rate_finding
from assay.data.audit.phash import correlation, hamming, hash_pairs, phash
from assay.data.audit.registry import AuditContext, register
from assay.data.audit.search import Pairs
from assay.measurement import Measurement


@dataclass(frozen=True)
class SplitPairs:
    """The pairs between two splits (or within one): ``later`` rows matched by ``earlier`` rows."""

    earlier: str
    later: str
    pairs: Pairs  # indices into the stacked splits

    def flagged(self) -> np.ndarray:
        """Stacked indices of the later split's rows that have a duplicate."""
        return np.unique(self.pairs.j)

    def matched(self) -> np.ndarray:
        """Stacked indices of the earlier split's rows that some later row duplicates."""
        return np.unique(self.pairs.i)


def by_split(ctx: AuditContext, pairs: Pairs) -> list[SplitPairs]:
    """Group stacked pairs by (earlier split, later split), within-split groups first."""
    a, b = ctx.split_of[pairs.i], ctx.split_of[pairs.j]
    groups = []
    k = len(ctx.order)
    combos = [(s, s) for s in range(k)] + [(s, t) for t in range(k) for s in range(t)]
    for s, t in combos:
        mask = (a == s) & (b == t)
        groups.append(SplitPairs(ctx.order[s], ctx.order[t], pairs.select(mask)))
    return groups


def pair_examples(ctx: AuditContext, pairs: Pairs, **extra: np.ndarray) -> list[dict[str, Any]]:
    """The closest pairs as ``{"id": later id, "match": earlier id, "distance": d, ...}``."""
    order = np.argsort(pairs.distance, kind="stable")[:12]
    return [
        {
            "id": str(ctx.ids[pairs.j[k]]),
            "match": str(ctx.ids[pairs.i[k]]),
            "distance": float(pairs.distance[k]),
            **{name: float(values[k]) for name, values in extra.items()},
        }
        for k in order
    ]


def pair_findings(
    ctx: AuditContext, prefix: str, pairs: Pairs, estimator: str, check: str, **details: Any
) -> list[Measurement]:
    out = []
    for group in by_split(ctx, pairs):
        later_n = ctx.data.splits[group.later].n
        same = group.earlier == group.later
        name = f"{prefix}[{group.later}]" if same else f"{prefix}[{group.later}:{group.earlier}]"
        what = (
            f"share of {group.later} examples that duplicate an earlier {group.later} example"
            if same
            else f"share of {group.later} examples with a duplicate in {group.earlier}"
        )
        out.append(
            rate_finding(
                name,
                len(group.flagged()),
                later_n,
                f"{what}; {estimator}",
                check=check,
                examples=pair_examples(ctx, group.pairs),
                pairs=len(group.pairs),
                matched=len(group.matched()),
                split=group.later,
                against=group.earlier,
                **details,
            )
        )
    return out


@register("exact_duplicates", "identical inputs (content hash, confirmed value by value)")
def exact_duplicates(ctx: AuditContext) -> list[Measurement]:
    what = "raw table values" if ctx.data.kind == "table" else "float32 input bytes"
    return pair_findings(ctx, "exact_duplicates", ctx.exact, f"BLAKE2b-128 of the {what}", "exact_duplicates")


@register("near_duplicates", "inputs within a root-mean-square distance (exact nearest-neighbour search)")
def near_duplicates(ctx: AuditContext) -> list[Measurement]:
    if not ctx.has_features:
        return [Measurement.skipped("near_duplicates", "data", "no numeric columns to compare")]
    _, space = ctx.space
    threshold = ctx.config.image_distance if ctx.data.kind == "image" else ctx.config.table_distance
    return pair_findings(
        ctx,
        "near_duplicates",
        ctx.near,
        f"root-mean-square difference <= {threshold} in {space} (exact search, identical pairs included)",
        "near_duplicates",
        threshold=threshold,
        space=space,
    )


def perceptual_pairs(ctx: AuditContext) -> Pairs:
    """Pairs within ``phash_bits`` of each other whose pixels correlate at least ``phash_correlation``."""
    if "perceptual_pairs" in ctx.extra:
        pairs: Pairs = ctx.extra["perceptual_pairs"]
        return pairs
    hashes = phash(ctx.images)
    candidates = hash_pairs(hashes, ctx.config.phash_bits)
    rows = ctx.space[0]
    r = correlation(rows[candidates.i], rows[candidates.j])
    pairs = candidates.select(r >= ctx.config.phash_correlation)
    ctx.extra["perceptual_pairs"] = pairs
    ctx.extra["perceptual_correlation"] = r[r >= ctx.config.phash_correlation]
    return pairs


@register(
    "perceptual_duplicates",
    "copies with changed brightness or contrast (pHash + pixel correlation)",
    ("image",),
)
def perceptual_duplicates(ctx: AuditContext) -> list[Measurement]:
    pairs = perceptual_pairs(ctx)
    c = ctx.config
    return pair_findings(
        ctx,
        "perceptual_duplicates",
        pairs,
        f"64-bit DCT pHash within {c.phash_bits} bits and pixel correlation >= {c.phash_correlation}; "
        "distance in bits",
        "perceptual_duplicates",
        phash_bits=c.phash_bits,
        correlation=c.phash_correlation,
    )


def leaked_pairs(ctx: AuditContext) -> Pairs:
    """Exact, near, perceptual (images) and near-duplicate text (tables) pairs together. The distance is the
    near-duplicate one (root-mean-square; 0 for exact copies; a perceptual-only pair keeps its RMS too),
    or 1 - Jaccard for a pair found in a text column alone."""
    parts = [ctx.exact, ctx.near, *ctx.text_pairs.values()]
    if ctx.data.kind == "image":
        perceptual = perceptual_pairs(ctx)
        rows = ctx.space[0]
        if len(perceptual):
            d = rows[perceptual.i].astype(np.float64) - rows[perceptual.j]
            parts.append(Pairs(perceptual.i, perceptual.j, np.sqrt((d * d).mean(axis=1))))
    i = np.concatenate([p.i for p in parts])
    j = np.concatenate([p.j for p in parts])
    d = np.concatenate([p.distance for p in parts])
    order = np.lexsort((d, j, i))
    i, j, d = i[order], j[order], d[order]
    first = np.r_[True, (i[1:] != i[:-1]) | (j[1:] != j[:-1])] if len(i) else np.zeros(0, bool)
    return Pairs(i[first], j[first], d[first])


@register(
    "leakage",
    "examples of a later split (val, test) with an exact, near or perceptual copy in an earlier one",
)
def leakage(ctx: AuditContext) -> list[Measurement]:
    pairs = leaked_pairs(ctx)
    out = []
    for group in by_split(ctx, pairs):
        if group.earlier == group.later:
            continue
        bits = None
        if ctx.data.kind == "image" and len(group.pairs):
            h = phash(ctx.images[np.r_[group.pairs.i, group.pairs.j]])
            bits = hamming(h[: len(group.pairs)], h[len(group.pairs) :]).astype(np.float64)
        out.append(
            rate_finding(
                f"leakage[{group.later}:{group.earlier}]",
                len(group.flagged()),
                ctx.data.splits[group.later].n,
                f"share of {group.later} examples with an exact, near, perceptual or text duplicate "
                f"in {group.earlier}",
                check="leakage",
                examples=pair_examples(
                    ctx, group.pairs, **({"phash_bits": bits} if bits is not None else {})
                ),
                pairs=len(group.pairs),
                matched=len(group.matched()),
                split=group.later,
                against=group.earlier,
                policy_threshold=ctx.config.max_leakage,
            )
        )
    return out
