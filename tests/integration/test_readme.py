"""The README's commands name files that exist: a new user copies them as they are."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_files_the_readme_commands_name_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    named = re.findall(r"--policy (\S+\.toml)", readme) + re.findall(r"assay run (\S+\.toml)", readme)
    assert named, "the README shows no policy or pipeline file any more: update this test"
    missing = sorted({p for p in named if not (ROOT / p).is_file()})
    assert not missing, f"README commands name files that are not in the repository: {missing}"
