"""Every error the public API raises.

    AssayError                      base class; the CLI turns it into a one-line message and exit 2
    ├── UsageError(ValueError)      a bad argument: wrong value, wrong combination
    ├── ConfigError(ValueError)     a policy or pipeline file that is malformed or invalid
    ├── DataError(ValueError)       a dataset or predictions file that is missing, corrupt or inconsistent
    ├── NotFoundError(LookupError)  an unknown model, version, alias, metric or plugin name
    ├── RefusedError(RuntimeError)  a state change the rules forbid (promoting a version whose gate failed)
    ├── TrainingError(RuntimeError) training diverged (a non-finite loss); nothing was registered
    ├── OverloadedError(RuntimeError)  the server's queue is full; the request was not accepted (HTTP 503)
    └── MissingExtraError(ImportError)  an optional dependency is absent; the message says how to install it

Each also inherits the matching built-in, so callers who catch ``ValueError`` keep working.
Messages say what was wrong, with the value, and what to do.
"""

from __future__ import annotations


class AssayError(Exception):
    """Base class of every error assay raises on purpose."""


class UsageError(AssayError, ValueError):
    """A bad argument value or combination."""


class ConfigError(AssayError, ValueError):
    """A malformed or invalid policy or pipeline file."""


class DataError(AssayError, ValueError):
    """A dataset or predictions file that is missing, corrupt or inconsistent."""


class NotFoundError(AssayError, LookupError):
    """An unknown name: model, version, alias, metric, plugin."""


class RefusedError(AssayError, RuntimeError):
    """A state change the rules forbid unless forced."""


class TrainingError(AssayError, RuntimeError):
    """Training produced no usable model (the loss became NaN or infinite)."""


class OverloadedError(AssayError, RuntimeError):
    """The server cannot take the request now (its queue is full); retrying later may succeed."""


class MissingExtraError(AssayError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"This feature needs the package '{package}'. Install it with: pip install 'assay[{extra}]'"
        )
