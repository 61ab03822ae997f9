"""assay: evaluate deep learning models with uncertainty, gate releases with paired statistics.

The verbs are in :mod:`assay.api`: ``import_model``, ``load_model``, ``evaluate``, ``gate``, ``promote``,
``rollback``, on the store ``open_workspace`` opens; those whose names no module of assay takes are here too.
"""

from assay.errors import (
    AssayError,
    ConfigError,
    DataError,
    MissingExtraError,
    NotFoundError,
    RefusedError,
    TrainingError,
    UsageError,
)
from assay.measurement import Comparison, Measurement
from assay.outputs import Outputs, load_predictions

__version__ = "0.1.0"

# The verbs load on first use: ``import assay`` stays light (no store, no report, no torch), and the API
# module may import the rest of assay, which reads ``assay.__version__``.
_API = ("import_model", "load_model", "promote", "rollback", "open_workspace", "cost")


def __getattr__(name: str) -> object:
    if name in _API:
        from assay import api

        return getattr(api, name)
    raise AttributeError(f"module 'assay' has no attribute {name!r}")


__all__ = [
    "AssayError",
    "Comparison",
    "ConfigError",
    "DataError",
    "Measurement",
    "MissingExtraError",
    "NotFoundError",
    "Outputs",
    "RefusedError",
    "TrainingError",
    "UsageError",
    "__version__",
    "import_model",
    "load_model",
    "load_predictions",
    "open_workspace",
    "promote",
    "rollback",
]
