"""Every threshold an audit uses, in one validated place, with its default and its unit.

The defaults are documented in docs/data-audit.md; a TOML or JSON file (``assay data audit --config``) or
keyword arguments override any of them.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assay.config import validation_message
from assay.errors import ConfigError


class AuditConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Near duplicates: root-mean-square difference per input value. Images in [0, 1] (0.02 is about 5 grey
    # levels of 255 on average); tables in standard deviations of the training split.
    image_distance: float = Field(0.02, ge=0.0)
    table_distance: float = Field(0.05, ge=0.0)
    # Candidate search: an orthonormal projection never lengthens a distance, so a candidate search in
    # this many principal components misses no pair; every candidate is re-checked in the full space.
    components: int = Field(64, ge=1)
    # Images above this many values per example are compared on a 32x32 area-averaged thumbnail.
    max_pixels: int = Field(4096, ge=16)
    # Perceptual hash (64-bit DCT pHash): pairs within this Hamming distance whose pixels correlate at
    # least this much (the check aimed at copies with changed brightness or contrast).
    phash_bits: int = Field(2, ge=0, le=16)
    phash_correlation: float = Field(0.99, gt=0.0, le=1.0)
    # Text near duplicates: MinHash LSH on character shingles, every candidate re-checked by exact Jaccard.
    text_jaccard: float = Field(0.8, gt=0.0, le=1.0)
    shingle: int = Field(5, ge=1)
    minhash_permutations: int = Field(128, ge=16)
    # Contamination: word n-grams shared with the reference corpus (13 as in GPT-3's analysis).
    ngram: int = Field(13, ge=1)
    # Label issues: confident learning on out-of-fold probabilities of a quick model.
    label_folds: int = Field(3, ge=2)
    # ... and the bar below which its findings are marked unreliable: the share of a no-information model's
    # disagreements with the labels (1 - the majority rate) that the model must remove, read at the 95%
    # Wilson lower bound of its out-of-fold accuracy. Why 0.5: docs/data-audit.md ("Label issues").
    label_min_lift: float = Field(0.5, ge=0.0, lt=1.0)
    # Outliers: squared Mahalanobis distance in principal components above this quantile of train's own.
    outlier_quantile: float = Field(0.999, gt=0.5, lt=1.0)
    # Schema drift: a numeric column drifts when its two-sample KS p-value is below this (Holm-adjusted).
    drift_alpha: float = Field(0.01, gt=0.0, lt=1.0)
    # Leakage policy: the share of test examples with a copy in train above which a release is refused.
    max_leakage: float = Field(0.0, ge=0.0, le=1.0)
    seed: int = 0

    @classmethod
    def from_file(cls, path: Path) -> AuditConfig:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"Cannot read audit config {path}: {e.strerror}.") from None
        try:
            raw = json.loads(text) if Path(path).suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: not valid {Path(path).suffix.lstrip('.') or 'TOML'} ({e}).") from None
        raw = raw.get("audit", raw) if isinstance(raw, dict) else raw
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise ConfigError(validation_message(f"audit config {path}", e)) from None
