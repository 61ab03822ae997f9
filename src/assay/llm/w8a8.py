"""Int8 weights times int8 activations in blocks of 32, on a kernel assay builds for the machine it runs on.

A decode step at batch 1 reads every weight once, so its speed is how fast the weights stream in.
PyTorch's CPU kernel for int8 weights (``aten::_weight_int8pack_mm``, :mod:`assay.llm.int8`) converts each
weight to a float before its multiply-add, and measured 10-13 GB/s over a step's weights on a 2-core EPYC
where a plain read streams 25-33 GB/s. llama.cpp's answer, taken here: round the activations to int8 too,
in blocks of 32 with one scale each (its Q8_0 blocks), and multiply int8 by int8, 64 products summed in
one instruction with AVX-512 VNNI (32 with AVX2's ``maddubs``, and a plain loop elsewhere), the weights
packed so that each thread reads one stream, prefetched ahead.

The arithmetic (``w8a8_kernel.cpp``, the same on every instruction set)::

    d[b] = max|x[32b : 32b + 32]| / 127        q = round(x / d[b])  (half to even; q = 0 where d = 0)
    y[n] = scale[n] * sum_b d[b] * sum_{i in b} q[i] * w[n, i]       w int8, scale = max|W[n]| / 127

The block sums are exact in int32; only the sum over blocks is float32. Rounding the activations is a
change of the model's numbers, so ``w8a8_block32`` is a variant gated like any other, and the gate scores
it on this kernel: what is measured is what decodes.

The kernel is C++ compiled once per machine with ``torch.utils.cpp_extension`` (``-O3 -march=native``,
about 10 s; cached under ``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``, keyed by
its source and the CPU's flags). It needs a C++ compiler, as ``torch.compile`` on a CPU does, and ninja
(the ``llm`` extra installs it). Layers whose input width is not a multiple of 32 stay float32.

Example:
    >>> import torch
    >>> from torch import nn
    >>> layer = W8A8Linear(nn.Linear(64, 3))
    >>> layer(torch.ones(2, 64)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
from pathlib import Path

import torch
from torch import nn

from assay.env import all_cpu_flags
from assay.errors import MissingExtraError, UsageError
from assay.llm.int8 import quantize_rows, replace_linears

BLOCK = 32  # activation values per scale, as llama.cpp's Q8_0
SOURCE = Path(__file__).with_name("w8a8_kernel.cpp")


@functools.cache
def load_kernel(march: str = "native") -> str:
    """Build (the first time on a machine) and load the kernel; the namespace of its op, ``assay`` for
    ``march="native"``: ``torch.ops.assay.w8a8_linear(x, packed, scales)``. Another ``march`` (the tests
    build ``x86-64-v3``, the AVX2 path, and ``x86-64``, plain C++) registers under a name of its own."""
    from torch.utils import cpp_extension

    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            raise MissingExtraError("ninja", "llm") from None
        # torch's builder looks for ninja on PATH; the PyPI package's binary is not there unless the
        # virtual environment is activated
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    namespace = "assay" if march == "native" else "assay_" + march.replace("-", "_")
    key = hashlib.sha256(
        SOURCE.read_bytes() + f"{march} {_cpu_key()} {torch.__version__}".encode()
    ).hexdigest()[:12]
    try:
        cpp_extension.load(
            name=f"{namespace}_w8a8_{key}",
            sources=[str(SOURCE)],
            extra_cflags=["-O3", f"-march={march}", "-fopenmp", f"-DASSAY_W8A8_NAMESPACE={namespace}"],
            extra_ldflags=["-fopenmp"],  # resolves to the libgomp torch has loaded: one thread pool
            is_python_module=False,
            verbose=False,
        )
    except (RuntimeError, OSError) as error:
        raise UsageError(
            f"The w8a8_block32 precision compiles a small C++ kernel on this machine, and the build failed "
            f"({str(error).strip().splitlines()[-1][:300]}). Install a C++ compiler (Debian: apt-get "
            "install g++), or choose int8_weight_only_bf16, which runs on PyTorch's own kernel "
            "(in `assay llm search`, name --precisions without w8a8_block32)."
        ) from None

    @torch.library.register_fake(f"{namespace}::w8a8_linear")
    def _(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        return x.new_empty((x.shape[0], scales.shape[0]))

    return namespace


def _cpu_key() -> str:
    """What a -march=native build depends on: the CPU's flags (its architecture where they are unknown)."""
    return " ".join(sorted(all_cpu_flags())) or platform.machine()


def pack(weight: torch.Tensor) -> torch.Tensor:
    """Int8 ``weight`` (out, in) in the kernel's layout, ``(ceil(out / 4), 4 * in)``: rows in groups of
    four (zero rows pad the last), each group's rows cut in chunks of 64 values (the last one 32 where 64
    does not divide ``in``), the four rows' bytes of a chunk side by side, so a group reads front to back.

    Example:
        >>> w = torch.tensor([[1] * 96, [2] * 96], dtype=torch.int8)  # two rows of 96: chunks of 64, 32
        >>> p = pack(w)
        >>> p.shape, p[0, 63].item(), p[0, 64].item(), p[0, 4 * 64].item(), p[0, 4 * 64 + 32].item()
        (torch.Size([1, 384]), 1, 2, 1, 2)
    """
    out, width = weight.shape
    groups = -(-out // 4)
    rows = torch.zeros(groups * 4, width, dtype=torch.int8)
    rows[:out] = weight
    rows = rows.reshape(groups, 4, width)
    whole = width - width % 64
    parts = [rows[:, :, :whole].reshape(groups, 4, whole // 64, 64).permute(0, 2, 1, 3).reshape(groups, -1)]
    if whole < width:
        parts.append(rows[:, :, whole:].reshape(groups, -1))
    return torch.cat(parts, dim=1).contiguous()


class W8A8Linear(nn.Module):
    """An ``nn.Linear`` on the kernel: int8 weights per output row, activations int8 in blocks of 32."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if linear.in_features % BLOCK:
            raise UsageError(f"W8A8Linear needs in_features a multiple of {BLOCK}, not {linear.in_features}.")
        load_kernel()
        weight, scales = quantize_rows(linear.weight)
        self.register_buffer("weight", pack(weight))
        self.register_buffer("scales", scales)
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().float())
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()
        y = torch.ops.assay.w8a8_linear(rows, self.weight, self.scales).reshape(*x.shape[:-1], -1)
        return (y if self.bias is None else y + self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, int8 x int8 in blocks of 32"
        )


def quantize_w8a8(model: nn.Module) -> nn.Module:
    """``model`` with every linear layer whose input width is a multiple of 32 on the kernel and the rest
    in float32, in place (a tied output head is untied, as :func:`~assay.llm.int8.replace_linears` says)."""
    return (
        replace_linears(model, lambda linear: W8A8Linear(linear) if linear.in_features % BLOCK == 0 else None)
        .float()
        .eval()
    )
