"""A fine-tuning run's checkpoint folder: every finished epoch, so that a run started again continues.

    CHECKPOINT/
      latest.json              {"epoch": 3, "folder": "epoch-0003"}: written last, so it names a whole epoch
      epoch-0003/
        model.safetensors      the weights after epoch 3
        training.pt            the optimizer's and the scheduler's state and torch's random generator
                               (tensors, numbers and lists only: read back with ``weights_only=True``)
        state.json             what the run was started with (identity), the epoch, the best epoch and its
                               validation loss, whether early stopping ended it, the history, the energy so
                               far, Python's and NumPy's random generators
      epoch-0002/              kept while epoch 2 holds the best validation loss (its weights are returned)

An epoch's folder is written under a temporary name and renamed whole, then ``latest.json`` replaced
(:func:`assay.atomic.replacing`); older folders are removed after. An interruption anywhere leaves
``latest.json`` naming a complete epoch, or no ``latest.json`` (a fresh start).
"""

from __future__ import annotations

import copy
import json
import random
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from assay.atomic import replacing
from assay.errors import DataError, UsageError
from assay.train.energy import EnergyReading

LATEST = "latest.json"
WEIGHTS = "model.safetensors"
TRAINING = "training.pt"
STATE = "state.json"
HISTORY_KEYS = ("train_loss", "val_loss", "val_accuracy", "lr", "grad_norm", "clipped_share")


@dataclass
class RunState:
    """Where a run stands after its last finished epoch."""

    epoch: int = 0
    best_epoch: int = 0
    best_loss: float = float("inf")
    stopped: bool = False  # early stopping ended the run
    history: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in HISTORY_KEYS})
    energy: EnergyReading | None = None  # of the sessions before this one
    best_weights: dict[str, torch.Tensor] | None = None
    resumed_from: int = 0


def combined(before: EnergyReading | None, now: EnergyReading) -> EnergyReading:
    """Two sessions' readings as one: times and energy added; 'measured' only if both were."""
    if before is None:
        return now
    both = before.method == now.method == "measured"
    return EnergyReading(
        joules=before.joules + now.joules,
        method="measured" if both else "estimated",
        source=now.source if before.source == now.source else f"{before.source}; then {now.source}",
        wall_seconds=before.wall_seconds + now.wall_seconds,
        cpu_seconds=before.cpu_seconds + now.cpu_seconds,
        co2_grams=before.co2_grams + now.co2_grams,
        grid_g_per_kwh=now.grid_g_per_kwh,
    )


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    # clones: safetensors refuses tensors that share storage (tied embeddings)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


class Checkpoint:
    """The folder of one run; ``identity`` (starting weights, data, settings) must match to resume."""

    def __init__(self, folder: Path, identity: dict[str, Any]) -> None:
        self.folder, self.identity = Path(folder), json.loads(json.dumps(identity))
        if self.folder.exists() and not self.folder.is_dir():
            raise UsageError(f"--checkpoint {self.folder}: is a file; give a folder (new or a run's own).")

    def resume(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: LRScheduler,
    ) -> RunState | None:
        """Load the last finished epoch into ``model``, ``optimizer``, ``scheduler`` and the random
        generators and return where the run stands; None where the folder holds no finished epoch."""
        from safetensors.torch import load_file

        latest = self.folder / LATEST
        if not latest.is_file():
            return None
        pointer = self._json(latest)
        here = self.folder / str(pointer["folder"])
        saved = self._json(here / STATE)
        if saved["identity"] != self.identity:
            differs = sorted(_differences(saved["identity"], self.identity))
            raise UsageError(
                f"--checkpoint {self.folder}: was written by a run with other "
                f"{', '.join(differs)}; resume with the same model, data and settings, or give a new folder."
            )
        model.load_state_dict(load_file(str(here / WEIGHTS)))
        training = torch.load(here / TRAINING, weights_only=True)
        optimizer.load_state_dict(training["optimizer"])
        scheduler.load_state_dict(training["scheduler"])
        torch.set_rng_state(training["torch_rng"])
        version, inner, gauss = saved["python_rng"]
        random.setstate((version, tuple(inner), gauss))
        name, keys, pos, has_gauss, cached = saved["numpy_rng"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        best_epoch = int(saved["best_epoch"])
        if best_epoch == int(saved["epoch"]):
            best = copy.deepcopy(model.state_dict())
        else:
            best = load_file(str(self.folder / _name(best_epoch) / WEIGHTS))
        return RunState(
            epoch=int(saved["epoch"]),
            best_epoch=best_epoch,
            best_loss=float(saved["best_loss"]),
            stopped=bool(saved["stopped"]),
            history={k: [float(v) for v in saved["history"].get(k, [])] for k in HISTORY_KEYS},
            energy=EnergyReading(**saved["energy"]),
            best_weights=best,
            resumed_from=int(saved["epoch"]),
        )

    def save(
        self,
        state: RunState,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: LRScheduler,
        *,
        energy: EnergyReading,
    ) -> None:
        """Write the epoch ``state.epoch`` has just finished, whole, then point ``latest.json`` at it."""
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        name = _name(state.epoch)
        tmp = self.folder / f".{name}.{secrets.token_hex(8)}.tmp"
        tmp.mkdir()
        try:
            save_file(_state_dict(model), str(tmp / WEIGHTS), metadata={"format": "pt"})
            training = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
            }
            torch.save(training, tmp / TRAINING)
            version, inner, gauss = random.getstate()
            numpy_name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
            saved = {
                "identity": self.identity,
                "epoch": state.epoch,
                "best_epoch": state.best_epoch,
                "best_loss": state.best_loss,
                "stopped": state.stopped,
                "history": state.history,
                "energy": energy.to_dict(),
                "python_rng": [version, list(inner), gauss],
                "numpy_rng": [numpy_name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)],
            }
            (tmp / STATE).write_text(json.dumps(saved, indent=1))
            shutil.rmtree(self.folder / name, ignore_errors=True)  # a copy left by an interrupted save
            tmp.rename(self.folder / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        with replacing(self.folder / LATEST) as path:
            path.write_text(json.dumps({"epoch": state.epoch, "folder": name}) + "\n")
        keep = {name, _name(state.best_epoch)}
        for old in self.folder.glob("epoch-*"):
            if old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def _json(path: Path) -> dict[str, Any]:
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: not a readable checkpoint file ({e}); give a new folder.") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}: not a checkpoint file; give a new folder.")
        return obj


def _name(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested dicts."""
    keys = set(a) | set(b)
    out: list[str] = []
    for k in keys:
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}")
    return out
