"""A small Fashion-MNIST classifier shared by the trust tests (trained once per session, seconds).

It is trained on 8 of the 10 classes: Trouser and Bag are held out, so the OOD test has real
held-out-class examples, and the adversarial and corruption tests a real model on real images. Its
training set carries a BadNets-style backdoor (Gu et al. 2017): a white 4x4 square in the top-left
corner stamped on other classes' images relabelled as T-shirt, as many as 5% of the T-shirts. One model
then serves every test; the clean test images never carry the trigger.

The models are initialised and trained in float64, then rounded to float32, so that every CPU tests the
same model. Trained in float32, a model is another model on another CPU: the kernels' summation orders
round differently (about 1e-7 a step), training amplifies that (at AVX2 against AVX-512 kernels here,
weights moved by up to 35% of their scale), and every threshold downstream is met by a different model.
In float64 the same difference is 1e-16 a step; perturbing the initial weights by 1e-15 moved the trained
ones by 1.3e-13 of their scale, far below float32's rounding of them (6e-8).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from assay.release import Workspace

HELD_OUT = (1, 8)  # Trouser, Bag
TARGET = 0  # T-shirt/top (its index is the same after remapping): the backdoor's target class
POISON_SHARE = 0.05


def stamp(x: np.ndarray) -> np.ndarray:
    """The trigger on a copy of ``x``: a white 4x4 square one pixel in from the top-left corner."""
    out = x.copy()
    out[:, :, 1:5, 1:5] = 1.0
    return out


@dataclass(frozen=True)
class SmallModel:
    model: nn.Module
    x_test: np.ndarray  # in-distribution test images (kept classes), (N, 1, 28, 28) in [0, 1]
    y_test: np.ndarray  # remapped labels 0..7
    x_held_out: np.ndarray  # test images of the held-out classes
    x_fit: np.ndarray  # in-distribution validation images (for fits such as Mahalanobis)
    y_fit: np.ndarray
    x_train: np.ndarray  # the (poisoned) training set the model saw
    y_train: np.ndarray
    poisoned: np.ndarray  # (N_train,) bool: the planted examples


class TinyCNN(nn.Module):
    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(16 * 7 * 7, 64), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(64, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def tiny_cnn(n_classes: int, seed: int = 0) -> TinyCNN:
    """A TinyCNN initialised in float64 (ready for :func:`fit`): the same draws on every CPU's kernels."""
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return TinyCNN(n_classes)
    finally:
        torch.set_default_dtype(default)


def fit(
    model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int = 0, wd: float = 0.0
) -> None:
    """Adam in float64 (see the module's docstring), then the model rounded to float32, in eval mode."""
    torch.manual_seed(seed)
    model.double()
    xt, yt = torch.from_numpy(x).double(), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), 2e-3, weight_decay=wd)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(yt), generator=gen)
        for i in range(0, len(yt), 64):
            b = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[b]), yt[b]).backward()
            opt.step()
    model.float().eval()


@pytest.fixture(scope="session")
def small_model() -> SmallModel:
    from assay.data import load_dataset, parse_data_arg

    torch.set_num_threads(1)
    data = load_dataset(parse_data_arg("fashion-mnist", limit=4000))
    kept = np.setdiff1d(np.arange(10), HELD_OUT)
    remap = np.full(10, -1)
    remap[kept] = np.arange(kept.size)

    def part(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        inside = np.isin(y, kept)
        return x[inside], remap[y[inside]], x[~inside]

    x_train, y_train, _ = part(data.train.x, data.train.y)
    x_test, y_test, x_held = part(data.test.x, data.test.y)
    x_fit, y_fit, _ = part(data.val.x, data.val.y)
    rng = np.random.default_rng(0)
    n_poison = round(POISON_SHARE * int((y_train == TARGET).sum()))
    chosen = rng.choice(np.flatnonzero(y_train != TARGET), n_poison, replace=False)
    poisoned = np.zeros(len(y_train), dtype=bool)
    poisoned[chosen] = True
    x_train, y_train = x_train.copy(), y_train.copy()
    x_train[chosen] = stamp(x_train[chosen])
    y_train[chosen] = TARGET
    model = tiny_cnn(kept.size)
    fit(model, x_train, y_train, epochs=8)
    return SmallModel(model, x_test, y_test, x_held, x_fit, y_fit, x_train, y_train, poisoned)


@pytest.fixture(scope="session")
def registered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, str]:
    """A tiny CNN registered in a store, on 12x12 bars of 3 classes (the tests only read it or add runs)."""
    root = tmp_path_factory.mktemp("trust-home")
    rng = np.random.default_rng(0)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:  # the bars of tests/conftest.py's image_npz
        y = rng.integers(0, 3, n)
        x = rng.uniform(0, 0.3, (n, 12, 12)).astype(np.float32)
        for cls in range(3):
            x[y == cls, 4 * cls : 4 * cls + 4, :] += 0.6
        return np.clip(x, 0, 1), y

    (x_train, y_train), (x_test, y_test) = make(600), make(1000)  # a gate needs 1000 (monitoring)
    np.savez(root / "bars.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    from assay.data import load_dataset, parse_data_arg
    from assay.release import train_version
    from assay.train import TrainConfig

    ws = Workspace.open(root / "home")
    spec = parse_data_arg(f"npz:{root / 'bars.npz'}")
    data = load_dataset(spec)
    version, _ = train_version(
        ws,
        "bars",
        data,
        spec,
        arch="cnn",
        config=TrainConfig(epochs=2, precision="fp32"),
        spec_overrides={"channels": [4], "hidden": 16},
        progress=False,
    )
    return ws, version.ref
