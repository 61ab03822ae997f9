"""Data audit: duplicates, train/test leakage, contamination, label issues, balance, PII, a datasheet.

Each check is a registered plugin (:data:`CHECKS`) built on pure functions on arrays; each finding is a
:class:`~assay.measurement.Measurement` whose value is a rate with its Wilson interval and whose details
hold the count and example ids. :func:`audit` runs them; :func:`write_audit` writes the JSON document, the
HTML report and the Croissant file atomically.
"""

from assay.data.audit import balance, contamination, duplicates, labels, pii  # noqa: F401  (registers checks)
from assay.data.audit.config import AuditConfig
from assay.data.audit.inputs import AuditData, AuditSplit, from_dataset, load_audit_data
from assay.data.audit.registry import CHECKS, AuditCheck, AuditContext
from assay.data.audit.run import AuditResult, clean_scores, run_audit

__all__ = [
    "CHECKS",
    "AuditCheck",
    "AuditConfig",
    "AuditContext",
    "AuditData",
    "AuditResult",
    "AuditSplit",
    "clean_scores",
    "from_dataset",
    "load_audit_data",
    "run_audit",
]
