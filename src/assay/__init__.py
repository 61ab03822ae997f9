"""assay: evaluate deep learning models with uncertainty, gate releases with paired statistics."""

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
    "load_predictions",
]
