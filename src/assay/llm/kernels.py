"""assay's own CPU operators, compiled on the machine they run on: ``torch.ops.assay.w8a8_linear``
(int8 weights times int8 activations, :mod:`assay.llm.w8a8`) and ``torch.ops.assay.decode_attention`` (a
decode step's attention over its KV cache, :mod:`assay.llm.attention`).

They are C++ (``w8a8_kernel.cpp``, ``decode_attention.cpp``) built into one library with
``torch.utils.cpp_extension`` the first time they are needed (``-O3 -march=native``, about 15 s; cached
under ``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``, keyed by the sources and the
CPU's flags). The build needs a C++ compiler, as ``torch.compile`` on a CPU does, and ninja (the ``llm``
extra installs it).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
from pathlib import Path

import torch

from assay.env import all_cpu_flags
from assay.errors import MissingExtraError, UsageError

SOURCES = [Path(__file__).with_name(name) for name in ("w8a8_kernel.cpp", "decode_attention.cpp")]
# Each operator's C function, as AOTInductor's ``aot_inductor.custom_ops_to_c_shims`` declares it: an
# exported step calls these directly where it would otherwise box every call through its proxy executor
# (0.12 ms of a 5.9 ms SmolLM2-135M token, medians, docs/llm.md). The step's library finds them here,
# which is loaded RTLD_GLOBAL for that (the build for this machine only: the other builds define them too).
C_SHIMS = {
    "w8a8_linear": "AOTITorchError aoti_torch_cpu_w8a8_linear(AtenTensorHandle x, AtenTensorHandle packed, "
    "AtenTensorHandle scales, AtenTensorHandle* ret0)",
    "decode_attention": "AOTITorchError aoti_torch_cpu_decode_attention(AtenTensorHandle q, "
    "AtenTensorHandle k, AtenTensorHandle v, AtenTensorHandle* mask, double scale, AtenTensorHandle* ret0)",
}


@functools.cache
def load_kernels(march: str = "native") -> str:
    """Build (the first time on a machine) and load the operators; the namespace they are registered in,
    ``assay`` for ``march="native"``: ``torch.ops.assay.w8a8_linear(x, packed, scales)``. Another ``march``
    (the tests build ``x86-64-v3``, the AVX2 paths, and ``x86-64``, plain C++) registers under a name of
    its own."""
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
        b"".join(source.read_bytes() for source in SOURCES)
        + f"{march} {_cpu_key()} {torch.__version__}".encode()
    ).hexdigest()[:12]
    try:
        library = cpp_extension.load(
            name=f"{namespace}_kernels_{key}",
            sources=[str(source) for source in SOURCES],
            extra_cflags=["-O3", f"-march={march}", "-fopenmp", f"-DASSAY_KERNELS_NAMESPACE={namespace}"],
            extra_ldflags=["-fopenmp"],  # resolves to the libgomp torch has loaded: one thread pool
            is_python_module=False,
            verbose=False,
        )
    except (RuntimeError, OSError) as error:
        raise UsageError(
            "The w8a8_block32 precision and assay's decode attention compile a small C++ library on this "
            f"machine, and the build failed ({str(error).strip().splitlines()[-1][:300]}). Install a C++ "
            "compiler (Debian: apt-get install g++), or choose int8_weight_only_bf16, which runs on "
            "PyTorch's own kernel (in `assay llm search`, name --precisions without w8a8_block32)."
        ) from None
    if march == "native":
        ctypes.CDLL(library, mode=os.RTLD_GLOBAL | os.RTLD_NOLOAD)  # loaded already: made global

    @torch.library.register_fake(f"{namespace}::w8a8_linear")
    def _(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        return x.new_empty((x.shape[0], scales.shape[0]))

    @torch.library.register_fake(f"{namespace}::decode_attention")
    def _(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
    ) -> torch.Tensor:
        return q.new_empty((q.shape[0], 1, q.shape[1], q.shape[3]))

    return namespace


def c_shims() -> dict[torch._ops.OpOverload, list[str]]:
    """AOTInductor's ``custom_ops_to_c_shims`` for the operators loaded in this process (none where no
    model here runs on them)."""
    return {
        getattr(torch.ops.assay, name).default: [declaration]
        for name, declaration in C_SHIMS.items()
        if hasattr(torch.ops.assay, name)
    }


def _cpu_key() -> str:
    """What a -march=native build depends on: the CPU's flags (its architecture where they are unknown)."""
    return " ".join(sorted(all_cpu_flags())) or platform.machine()
