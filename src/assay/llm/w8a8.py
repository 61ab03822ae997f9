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

The kernel is C++ compiled once per machine (:mod:`assay.llm.kernels`: it needs a C++ compiler and
ninja). Layers whose input width is not a multiple of 32 stay float32.

Example:
    >>> import torch
    >>> from torch import nn
    >>> layer = W8A8Linear(nn.Linear(64, 3))
    >>> layer(torch.ones(2, 64)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from assay.errors import UsageError
from assay.llm.int8 import quantize_rows, replace_linears
from assay.llm.kernels import load_kernels

BLOCK = 32  # activation values per scale, as llama.cpp's Q8_0


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


def _product(
    x: torch.Tensor, width: int, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """The rows of ``x`` (``width`` values each, in float32) on the kernel, plus ``bias``: (rows, out)."""
    y = torch.ops.assay.w8a8_linear(x.reshape(-1, width).float(), weight, scales)
    return y if bias is None else y + bias


class W8A8Linear(nn.Module):
    """An ``nn.Linear`` on the kernel: int8 weights per output row, activations int8 in blocks of 32."""

    weight: torch.Tensor  # packed (pack)
    scales: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if linear.in_features % BLOCK:
            raise UsageError(f"W8A8Linear needs in_features a multiple of {BLOCK}, not {linear.in_features}.")
        load_kernels()
        weight, scales = quantize_rows(linear.weight)
        self.register_buffer("weight", pack(weight))
        self.register_buffer("scales", scales)
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().float())
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _product(x, self.in_features, self.weight, self.scales, self.bias)
        return y.reshape(*x.shape[:-1], -1).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, int8 x int8 in blocks of 32"
        )


class FusedW8A8(nn.Module):
    """Sibling :class:`W8A8Linear` layers that read the same input (an attention's q, k and v; an MLP's
    gate and up) as one product over their rows stacked: one kernel call instead of one each.

    The result is the same to the bit: each output row is its own weights times the same rounded
    activations. What it saves is time: each call pays a thread fork and join and restarts the weights'
    stream: SmolLM2-135M's exported decode step, in 121 calls instead of 211, measured 5.56 ms a token
    against 6.21 on a 2-core EPYC (medians, docs/llm.md). The layers become :class:`W8A8Part` views of
    this module: the first part called with an input computes every part's product, and the others take
    theirs while the input is that same tensor; called with another, a part computes the product again.
    (That the tensor is not changed in place between the parts' calls is what :func:`fuse_shared_inputs`
    checks before fusing.)"""

    weight: torch.Tensor  # the layers' packed weights, one after another
    scales: torch.Tensor  # theirs, each zero-padded to its packed rows
    bias: torch.Tensor | None

    def __init__(self, layers: list[W8A8Linear]) -> None:
        super().__init__()
        self.in_features = layers[0].in_features
        self.widths = [layer.out_features for layer in layers]
        self.padded = [layer.weight.shape[0] * 4 for layer in layers]  # pack rounds rows up to fours
        self.register_buffer("weight", torch.cat([layer.weight for layer in layers]))
        scales = [
            torch.cat([layer.scales, layer.scales.new_zeros(p - w)]) for layer, p, w in self._sizes(layers)
        ]
        self.register_buffer("scales", torch.cat(scales))
        biases = [
            torch.zeros(p) if layer.bias is None else torch.cat([layer.bias, layer.bias.new_zeros(p - w)])
            for layer, p, w in self._sizes(layers)
        ]
        has_bias = any(layer.bias is not None for layer in layers)
        self.register_buffer("bias", torch.cat(biases) if has_bias else None)
        self._memo: tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[int, ...]] | None = None

    def _sizes(self, layers: list[W8A8Linear]) -> zip[tuple[W8A8Linear, int, int]]:
        return zip(layers, self.padded, self.widths, strict=True)

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Part ``index``'s product of ``x``: from the last call's when ``x`` was its input and this part
        has not taken it yet (each part takes it once, and the last one frees it)."""
        memo = self._memo
        if memo is None or memo[0] is not x or index not in memo[2]:
            y = _product(x, self.in_features, self.weight, self.scales, self.bias)
            parts = tuple(
                p[:, :w].reshape(*x.shape[:-1], w).to(x.dtype)
                for p, w in zip(y.split(self.padded, dim=1), self.widths, strict=True)
            )
            memo = (x, parts, tuple(range(len(parts))))
        left = tuple(i for i in memo[2] if i != index)
        self._memo = (memo[0], memo[1], left) if left else None
        return memo[1][index]


class W8A8Part(nn.Module):
    """One layer of a :class:`FusedW8A8`, where the layer was: its rows of the fused product."""

    def __init__(self, fused: FusedW8A8, index: int) -> None:
        super().__init__()
        # not a submodule: the fused layer is its parent's child, once, whichever of its parts runs first
        self._fused = (fused,)
        self.index = index
        self.in_features, self.out_features = fused.in_features, fused.widths[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fused[0].part(x, self.index)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, part {self.index} of a "
            "fused w8a8"
        )


def fuse_shared_inputs(model: nn.Module, probe: Callable[[nn.Module], object]) -> nn.Module:
    """``model`` with each set of sibling :class:`W8A8Linear` layers that ``probe`` (a forward pass of the
    model on a small input) shows reading the same input tensor replaced by a :class:`FusedW8A8`, in place.

    Which layers share an input is seen, not assumed from their names: a layer called more than once in
    the probe, beside a sibling that read another tensor (a cross-attention's keys) or the same tensor
    with other values (changed in place between the calls), stays as it is."""
    calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    layers = {name: m for name, m in model.named_modules() if isinstance(m, W8A8Linear)}

    def record(name: str, x: torch.Tensor) -> None:
        calls.setdefault(name, []).append((x, x.clone()))

    hooks = [
        m.register_forward_pre_hook(lambda _m, args, name=name: record(name, args[0]))
        for name, m in layers.items()
    ]
    try:
        with torch.inference_mode():
            probe(model)
    finally:
        for hook in hooks:
            hook.remove()
    groups: dict[tuple[str, int], list[str]] = {}
    for name, inputs in calls.items():
        if len(inputs) == 1:
            groups.setdefault((name.rpartition(".")[0], id(inputs[0][0])), []).append(name)
    for (parent_name, _), names in groups.items():
        seen = [calls[name][0][1] for name in names]
        if len(names) < 2 or not all(torch.equal(seen[0], values) for values in seen[1:]):
            continue
        parent = model.get_submodule(parent_name)
        fused = FusedW8A8([layers[name] for name in names])
        children = [name.rpartition(".")[2] for name in names]
        parent.add_module("fused_" + "_".join(children), fused)
        for index, child in enumerate(children):
            setattr(parent, child, W8A8Part(fused, index))
    return model


def quantize_w8a8(model: nn.Module, probe: Callable[[nn.Module], object] | None = None) -> nn.Module:
    """``model`` with every linear layer whose input width is a multiple of 32 on the kernel and the rest
    in float32, in place (a tied output head is untied, as :func:`~assay.llm.int8.replace_linears` says).
    With ``probe``, a forward pass of the model on a small input, the layers that read one input are then
    fused (:func:`fuse_shared_inputs`): the same outputs, fewer kernel calls."""
    replace_linears(model, lambda linear: W8A8Linear(linear) if linear.in_features % BLOCK == 0 else None)
    model = model.float().eval()
    return model if probe is None else fuse_shared_inputs(model, probe)
