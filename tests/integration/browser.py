"""Headless Chromium for the browser tests: Debian's package, found on PATH or at /usr/bin/chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

TIMEOUT_S = 120


def _find_chromium() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


CHROMIUM = _find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not found (/usr/bin/chromium or `chromium` on PATH); apt install chromium",
)


def run_chromium(tmp_path: Path, *args: str, height: int = 4000) -> subprocess.CompletedProcess[str]:
    """Chromium on ``args`` in a 1280 px wide window ``height`` px tall (a screenshot's size)."""
    assert CHROMIUM is not None
    profile = tmp_path / "chromium-profile"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size=1280,{height}",
        *args,
    ]
    # HOME in the temporary folder: Chromium writes caches and crash reports there, never in the real home.
    env = {**os.environ, "HOME": str(tmp_path)}
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False)


def near(image: np.ndarray, hex_colour: str, tolerance: float = 0.03) -> int:
    """How many pixels are within ``tolerance`` (0-1 per channel) of the colour."""
    target = np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(image[..., :3] - target) <= tolerance).all(axis=-1).sum())
