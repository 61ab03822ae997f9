"""The built wheel is what a user installs: it must hold the package data and work without the checkout.

The wheel is built from the working tree with hatchling (the build backend, from the test extra) without
build isolation, so building needs no network. The clean venv then resolves the wheel's own requirements
under constraints.txt: from PyPI, and torch from the CPU wheel that lies on these machines (pip's
find-links), as ``make setup`` does.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from assay.store.migrate import head_revision

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "assay"
INSTALL_TIMEOUT_S = 900  # a fresh venv takes about a minute here; a slow mirror gets room, a hang does not
RUN_TIMEOUT_S = 300


def run(
    *command: str | Path,
    timeout: float = RUN_TIMEOUT_S,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``command`` with its output captured as text; the caller asserts on the exit status."""
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
        check=False,
    )


def build_wheel(out: Path) -> Path:
    pytest.importorskip("hatchling", reason="building the wheel needs hatchling (pip install -e '.[test]')")
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", out, ROOT)
    assert built.returncode == 0, built.stderr
    (wheel,) = out.glob("assay-*.whl")
    return wheel


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment (pip's configuration included) less what would lead back to the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return env | extra


def test_wheel_holds_every_package_file(tmp_path: Path) -> None:
    with zipfile.ZipFile(build_wheel(tmp_path)) as z:
        names = set(z.namelist())
    # The files assay reads from its own folder at run time, named so a glob gone wrong cannot pass.
    for needed in (
        "assay/store/migrations/env.py",
        "assay/store/migrations/script.py.mako",
        "assay/store/migrations/versions/0001_initial.py",
        "assay/report/templates/report.html.j2",
        "assay/report/templates/style.css",
        "assay/serve/templates/dashboard.html.j2",
        "assay/data/audit/templates/audit.html.j2",
        "assay/cost/targets.toml",
        "assay/governance.toml",
    ):
        assert needed in names
    in_tree = {
        f"assay/{path.relative_to(PACKAGE).as_posix()}"
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert in_tree - names == set()


@pytest.mark.slow
def test_wheel_installs_in_a_clean_venv_and_evaluates(tmp_path: Path, isolated_home: Path) -> None:
    wheel = build_wheel(tmp_path / "dist")
    venv = tmp_path / "venv"
    # Without pip of its own: this interpreter's pip installs into it (--python), which saves ensurepip.
    assert run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    installed = run(
        *(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-compile"),
        *("-c", ROOT / "constraints.txt", wheel),
        timeout=INSTALL_TIMEOUT_S,
        env=clean_env(),
    )
    assert installed.returncode == 0, installed.stderr[-4000:]

    # 50 examples, 3 classes; the first 35 put their largest probability on the label, the rest on the next
    # class, so the accuracy is 0.7 by construction.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 50)
    top = np.where(np.arange(50) < 35, labels, (labels + 1) % 3)
    probs = np.full((50, 3), 0.15)
    probs[np.arange(50), top] = 0.7
    predictions = tmp_path / "predictions.npz"
    np.savez(predictions, label=labels, probs=probs)

    assay = venv / "bin" / "assay"
    env = clean_env(ASSAY_HOME=str(isolated_home))
    helped = run(assay, "--help", env=env, cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "eval" in helped.stdout and "gate" in helped.stdout
    evaluated = run(assay, "eval", predictions, "--json", env=env, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    doc = json.loads(evaluated.stdout)

    (accuracy,) = (m for m in doc["measurements"] if m["name"] == "accuracy")
    assert accuracy["value"] == pytest.approx(0.7) and accuracy["n"] == 50
    assert accuracy["ci_low"] < 0.7 < accuracy["ci_high"]
    # Nothing leads the venv back to the checkout (no PYTHONPATH, run from tmp), so the report came from the
    # wheel's templates and the registry from its migrations, up to the newest one in the tree.
    site = next((venv / "lib").glob("python3.*/site-packages"))
    assert (site / "assay" / "report" / "templates" / "report.html.j2").is_file()
    assert Path(doc["report"]).is_file() and "<html" in Path(doc["report"]).read_text().lower()
    with sqlite3.connect(isolated_home / "assay.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(head_revision(),)]
    shutil.rmtree(venv)  # 1.3 GB, and pytest keeps the last three runs' folders; a failing run keeps it
