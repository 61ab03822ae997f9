"""Out-of-distribution sets for text classifiers, made offline (nothing downloaded):

    docstrings   paragraphs of prose from the docstrings of a fixed list of Python standard-library
                 modules (:data:`MODULES`): a foreign corpus every Python has, English about software.
                 Each paragraph is joined into one line; kept when it has at least 6 words, mostly
                 letters, and no doctest or table; duplicates dropped. The texts depend on the Python
                 release (its docstrings), which ``details`` records.
    shuffled     each in-distribution text with its words in a seeded random order (whitespace between
                 words kept in place): the vocabulary of the data without its syntax, a near-OOD set a
                 bag-of-words model cannot tell apart and a sequence model should.

The scores and detection metrics are :mod:`assay.metrics.ood`'s.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import warnings

import numpy as np

# Pure-Python modules with long prose docstrings that import without side effects on every platform.
MODULES = (
    "argparse", "ast", "asyncio", "calendar", "collections", "concurrent.futures", "configparser",
    "contextlib", "csv", "dataclasses", "datetime", "decimal", "difflib", "email.message", "enum",
    "fractions", "ftplib", "functools", "gettext", "heapq", "http.client", "http.server", "imaplib",
    "inspect", "ipaddress", "json", "logging", "mailbox", "multiprocessing", "optparse", "pathlib",
    "pickle", "pprint", "queue", "random", "shutil", "smtplib", "socket", "statistics", "string",
    "subprocess", "tarfile", "tempfile", "textwrap", "threading", "typing",
    "unittest", "urllib.parse", "urllib.request", "uuid", "zipfile",
)  # fmt: skip
_MIN_WORDS = 6
_LETTERS = re.compile(r"[A-Za-z]")


def _docstrings(name: str) -> list[str]:
    """The docstrings of module ``name`` and its own public classes, functions and methods, in name
    order; empty when the module does not import here (a Python built without it)."""
    try:
        module = importlib.import_module(name)
    except Exception:  # a module this Python lacks only shrinks the corpus
        return []
    found = [inspect.getdoc(module) or ""]
    for attr, value in sorted(vars(module).items()):
        if attr.startswith("_") or inspect.ismodule(value):
            continue
        with warnings.catch_warnings():  # typing's deprecated aliases warn when read
            warnings.simplefilter("ignore", DeprecationWarning)
            if getattr(value, "__module__", None) != module.__name__:
                continue
            found.append(inspect.getdoc(value) or "")
        if inspect.isclass(value):
            for member, method in sorted(vars(value).items()):
                if not member.startswith("_") and inspect.isfunction(method):
                    found.append(inspect.getdoc(method) or "")
    return found


def _prose(paragraph: str) -> str | None:
    """One line of prose from a docstring paragraph, or None for code, tables and fragments."""
    if ">>>" in paragraph or "|" in paragraph or "::" in paragraph or "==" in paragraph:
        return None
    text = " ".join(paragraph.split())
    if len(text.split()) < _MIN_WORDS or len(_LETTERS.findall(text)) < 0.7 * len(text):
        return None
    return text


def docstring_texts() -> np.ndarray:
    """Every prose paragraph of :data:`MODULES`' docstrings, deduplicated, in a fixed order."""
    seen: dict[str, None] = {}
    for name in MODULES:
        for doc in _docstrings(name):
            for paragraph in re.split(r"\n\s*\n", doc):
                text = _prose(paragraph)
                if text is not None:
                    seen.setdefault(text, None)
    out = np.empty(len(seen), dtype=object)
    out[:] = list(seen)
    return out


def python_release() -> str:
    """The Python whose docstrings :func:`docstring_texts` read."""
    return ".".join(map(str, sys.version_info[:3]))


def word_shuffled(texts: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each text's words in a random order (seeded per text), the whitespace between them in place."""
    out = np.empty(len(texts), dtype=object)
    for i, text in enumerate(texts):
        text = str(text)
        words = re.findall(r"\S+", text)
        gaps = re.split(r"\S+", text)  # len(words) + 1 pieces of whitespace, first and last maybe empty
        order = np.random.default_rng([seed, i]).permutation(len(words))
        out[i] = gaps[0] + "".join(words[j] + gaps[k + 1] for k, j in enumerate(order))
    return out
