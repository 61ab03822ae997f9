"""Datasets: loaders (IDX, .npz, CSV/Parquet tables, CSV/Parquet/JSONL texts, Debian's fortunes,
scikit-learn's bundled sets), seeded splits, fingerprints."""

from assay.data.contract import Fitted, InputContract
from assay.data.dataset import Dataset, Split
from assay.data.sources import DataSpec, load_dataset, parse_data_arg, source_text

__all__ = [
    "DataSpec",
    "Dataset",
    "Fitted",
    "InputContract",
    "Split",
    "load_dataset",
    "parse_data_arg",
    "source_text",
]
