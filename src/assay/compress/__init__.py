"""Compression: cheaper variants of a model, each measured, gated against its parent and registered.

compressors (registered plugins: COMPRESSORS)     quantize.py  onnx_fp32, ort_dynamic_int8,
    source torch model -> new model folder                     ort_static_int8, torch_bf16, torchao
                                                  prune.py     prune_structured, prune_magnitude
                                                  distill.py   distill
text.py     TEXT_COMPRESSORS for Hugging Face text classifiers: onnx_fp32, ort_dynamic_int8 (and the
            "ORT defaults" anchor), ort_static_int8, bf16, torchao
search.py   the accuracy-aware search: plan -> build -> evaluate -> gate -> register, Pareto frontier,
            and the cost of its models per 1,000 inferences on every target (assay.cost)
hardware.py FLOPs and the instruction set's peak ratios, for flagging implausible speedups
"""

from assay.compress import distill, prune, quantize  # noqa: F401 - importing registers the compressors
from assay.compress.base import COMPRESSORS, Built, Context, Skipped
from assay.compress.search import (
    Budget,
    Candidate,
    Search,
    SearchResult,
    compress,
    default_plan,
    latest_search,
    list_variants,
    search_cost,
)

__all__ = [
    "COMPRESSORS",
    "Budget",
    "Built",
    "Candidate",
    "Context",
    "Search",
    "SearchResult",
    "Skipped",
    "compress",
    "default_plan",
    "latest_search",
    "list_variants",
    "search_cost",
]
