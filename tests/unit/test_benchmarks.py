"""Every script in benchmarks/ imports and has a ``main``: the scripts print the figures docs/ quote and
no test runs them whole (minutes each), so a renamed function they import must fail here, not in the
next session that reruns one."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_the_benchmark_imports(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", [*sys.path])  # some scripts add their neighbours to the path
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # module-level code only: main() runs under __main__
    assert callable(getattr(module, "main", None)), f"{path.name} has no main()"
