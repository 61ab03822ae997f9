"""Models: a small zoo built from JSON specs, stored as safetensors + spec (never pickle)."""

from assay.models.io import load_model, save_model
from assay.models.zoo import ZOO, ZooModel, build_model, count_parameters, default_spec

__all__ = ["ZOO", "ZooModel", "build_model", "count_parameters", "default_spec", "load_model", "save_model"]
