"""Save and load models as a folder: ``weights.safetensors`` + ``spec.json``. No pickle anywhere.

Saving writes into a temporary sibling folder and renames it into place, so an interrupted save never
leaves a half-written model where a loader would find it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from assay.errors import DataError
from assay.models.zoo import ZooModel, build_model

WEIGHTS, SPEC = "weights.safetensors", "spec.json"


def save_model(model: ZooModel, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS))
        (tmp / SPEC).write_text(json.dumps({"spec": model.spec, **(extra or {})}, indent=2, sort_keys=True))
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_model(directory: str | Path) -> ZooModel:
    directory = Path(directory)
    weights, spec_file = directory / WEIGHTS, directory / SPEC
    if not weights.is_file() or not spec_file.is_file():
        raise DataError(f"{directory}: not a model folder (needs {WEIGHTS} and {SPEC}).")
    try:
        spec = json.loads(spec_file.read_text())["spec"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{spec_file}: unreadable model spec ({e}).") from None
    model = build_model(spec)
    try:
        state = load_file(str(weights))
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as e:
        raise DataError(f"{weights}: weights do not load into a '{spec.get('arch')}' model ({e}).") from None
    return model.eval()
