"""Mixture-of-experts accounting from a Hugging Face config: parameters in total and active per token,
bytes a decode step reads at batch B, and the bandwidth roofline that follows.

A routed layer holds E experts and sends each token to k of them. Under uniform routing a token leaves a
given expert untouched with probability 1 - k/E, so a batch of B tokens touches on average

    E x (1 - (1 - k/E)^B)

distinct experts per layer: k at B = 1, all E as B grows. A decode step reads the weights every token
shares (attention, norms, router, shared experts, dense layers, the output head; of the embedding table
only the B rows it looks up, left out) once, plus every touched expert once. At batch 1 an MoE reads
little more than a dense model of its active size; at large batches it reads nearly all of itself.

Served, the router's choices are a monitored statistic: :func:`expert_shares` gives, per prompt and
routed layer, the share of its tokens' k choices each expert took (``assay.serve.llm_monitor``).

Families: Mixtral (``num_local_experts``), OLMoE and Qwen-MoE (``num_experts``; Qwen's shared expert and
its gate, dense layers by ``decoder_sparse_step`` and ``mlp_only_layers``). Expert MLPs are gated
(gate, up and down projections, no biases).

Example (Mixtral-8x7B's published config; its model card says 46.7 B parameters, 12.9 B active):
    >>> shape = MoEShape.from_config(MIXTRAL_8X7B)
    >>> round(shape.total() / 1e9, 1), round(shape.active() / 1e9, 1)
    (46.7, 12.9)
    >>> [round(expected_experts(8, 2, b), 2) for b in (1, 4, 32)]
    [2.0, 5.47, 8.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from assay.errors import UsageError

# The published config.json of mistralai/Mixtral-8x7B-v0.1 (the fields the accounting reads).
MIXTRAL_8X7B: dict[str, Any] = {
    "model_type": "mixtral",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "tie_word_embeddings": False,
}


def expected_experts(experts: int, top_k: int, batch: int) -> float:
    """Distinct experts of ``experts`` that ``batch`` tokens routed uniformly to ``top_k`` each touch, on
    average: E x (1 - (1 - k/E)^B)."""
    return experts * (1.0 - (1.0 - top_k / experts) ** batch)


@dataclass(frozen=True)
class MoEShape:
    """The sizes of a decoder-only MoE language model that its parameter count and traffic follow."""

    family: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    experts: int
    top_k: int
    expert_intermediate: int
    moe_layers: int
    shared_intermediate: int = 0  # Qwen-MoE's shared expert, every token through it
    dense_intermediate: int = 0  # the MLP of the layers that are not routed
    qkv_bias: bool = False
    qk_norm: bool = False  # OLMoE normalises queries and keys

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MoEShape:
        """The shape of a config.json's fields (a ``PretrainedConfig.to_dict()`` works too)."""
        family = str(config.get("model_type", ""))
        experts = int(config.get("num_local_experts") or config.get("num_experts") or 0)
        if experts < 2 or not config.get("num_experts_per_tok"):
            raise UsageError(
                f"This {family or 'model'} config names no routed experts (num_local_experts or num_experts, "
                "and num_experts_per_tok): it is not a mixture of experts."
            )
        if family not in ("mixtral", "olmoe", "qwen2_moe"):
            raise UsageError(
                f"MoE accounting knows Mixtral, OLMoE and Qwen-MoE configs; {family!r} lays its weights out "
                "in ways it would miscount."
            )
        heads, layers = int(config["num_attention_heads"]), int(config["num_hidden_layers"])
        hidden = int(config["hidden_size"])
        if family == "qwen2_moe":
            sparse_step = int(config.get("decoder_sparse_step") or 1)
            dense = set(config.get("mlp_only_layers") or [])
            moe_layers = sum(1 for i in range(layers) if i not in dense and (i + 1) % sparse_step == 0)
            expert_intermediate = int(config["moe_intermediate_size"])
        else:
            moe_layers, expert_intermediate = layers, int(config["intermediate_size"])
        return cls(
            family=family,
            hidden=hidden,
            layers=layers,
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            vocab=int(config["vocab_size"]),
            tied=bool(config.get("tie_word_embeddings", False)),
            experts=experts,
            top_k=int(config["num_experts_per_tok"]),
            expert_intermediate=expert_intermediate,
            moe_layers=moe_layers,
            shared_intermediate=int(config.get("shared_expert_intermediate_size") or 0),
            dense_intermediate=int(config.get("intermediate_size") or 0) if family == "qwen2_moe" else 0,
            qkv_bias=bool(config.get("qkv_bias", family == "qwen2_moe") or config.get("attention_bias")),
            qk_norm=family == "olmoe",
        )

    # -- parameters ---------------------------------------------------------------------------------

    def expert(self) -> int:
        """One routed expert: gate, up and down projections."""
        return 3 * self.hidden * self.expert_intermediate

    def attention(self) -> int:
        """One layer's attention: the four projections, their biases, OLMoE's query and key norms."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        weights = self.hidden * q + 2 * self.hidden * kv + q * self.hidden
        biases = q + 2 * kv if self.qkv_bias else 0
        norms = self.hidden + kv if self.qk_norm else 0
        return weights + biases + norms

    def routed_layer_shared(self) -> int:
        """What every token of a routed layer reads besides its experts: the router, Qwen's shared
        expert and its gate."""
        shared = 3 * self.hidden * self.shared_intermediate + self.hidden if self.shared_intermediate else 0
        return self.hidden * self.experts + shared

    def embedding(self) -> int:
        return self.vocab * self.hidden

    def head(self) -> int:
        return 0 if self.tied else self.vocab * self.hidden

    def shared(self) -> int:
        """Every parameter outside the routed experts, the embedding table included."""
        per_layer = self.attention() + 2 * self.hidden  # two norms
        dense = (self.layers - self.moe_layers) * 3 * self.hidden * self.dense_intermediate
        routed = self.moe_layers * self.routed_layer_shared()
        return self.embedding() + self.head() + self.layers * per_layer + self.hidden + dense + routed

    def total(self) -> int:
        return self.shared() + self.moe_layers * self.experts * self.expert()

    def active(self) -> int:
        """Parameters one token computes with: the shared ones and k experts per routed layer."""
        return self.shared() + self.moe_layers * self.top_k * self.expert()

    # -- traffic ------------------------------------------------------------------------------------

    def bytes_per_step(self, batch: int, bytes_per_parameter: float) -> float:
        """Weight bytes a decode step of ``batch`` sequences reads: the shared weights less the embedding
        table (only ``batch`` rows of it are looked up), plus the expected distinct experts per layer."""
        shared = self.shared() - self.embedding() + (self.embedding() if self.tied else 0)
        touched = self.moe_layers * expected_experts(self.experts, self.top_k, batch) * self.expert()
        return (shared + touched) * bytes_per_parameter

    def kv_bytes(self, context: int, batch: int, bytes_per_value: float) -> float:
        """Keys and values a step reads at ``context`` tokens for ``batch`` sequences."""
        return 2.0 * self.layers * self.kv_heads * self.head_dim * context * batch * bytes_per_value

    def roofline(
        self, batch: int, bandwidth_gb_s: float, bytes_per_parameter: float, context: int = 0
    ) -> dict[str, Any]:
        """Tokens per second the bandwidth allows at ``batch``, with the bytes behind it (KV cache in the
        weights' precision)."""
        weights = self.bytes_per_step(batch, bytes_per_parameter)
        step = weights + self.kv_bytes(context, batch, bytes_per_parameter)
        return {
            "batch": batch,
            "expected_experts_per_layer": expected_experts(self.experts, self.top_k, batch),
            "weight_bytes_per_step": weights,
            "bytes_per_token": step / batch,
            "limit_tokens_per_second": bandwidth_gb_s * 1e9 * batch / step,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total(), "active": self.active(), "expert": self.expert()}


# -- the router's load, as served -------------------------------------------------------------------


def routing(model: Any) -> tuple[int, int] | None:
    """``(experts, top_k)`` of a loaded transformers MoE model, None for a dense one."""
    config = getattr(model, "config", None)
    experts = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None)
    top_k = getattr(config, "num_experts_per_tok", None)
    return (int(experts), int(top_k)) if experts and top_k and int(experts) > 1 else None


def expert_shares(router_logits: Sequence[Any], top_k: int, mask: Any) -> np.ndarray:
    """``(batch, routed layers, experts)``: per sequence and layer, the share of its tokens' ``top_k``
    choices that went to each expert (each row sums to 1). ``router_logits``: transformers'
    ``output_router_logits`` (one ``(batch x length, experts)`` tensor per routed layer); ``mask``:
    ``(batch, length)``, 1 on real tokens, so padding routes nothing."""
    import torch

    batch, width = mask.shape
    weights = mask.to(torch.float64)[..., None]
    out = []
    for logits in router_logits:
        chosen = logits.view(batch, width, -1).topk(top_k, dim=-1).indices  # softmax keeps the order
        counts = torch.zeros(batch, width, logits.shape[-1], dtype=torch.float64).scatter_(2, chosen, 1.0)
        out.append((counts * weights).sum(dim=1) / (weights.sum(dim=1) * top_k))
    return torch.stack(out, dim=1).numpy()


def batch_expert_shares(model: Any, sequences: Sequence[Sequence[int]]) -> np.ndarray:
    """:func:`expert_shares` of a right-padded batch of ``sequences`` through ``model`` (an MoE)."""
    import torch

    from assay.llm.perplexity import right_padded  # torch: only when a model is there to run

    route = routing(model)
    if route is None:
        raise UsageError("expert shares need a mixture-of-experts model; this one is dense.")
    ids, mask = right_padded(sequences)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, output_router_logits=True)
    return expert_shares(out.router_logits, route[1], mask)
