"""What a model costs to run: per 1,000 inferences on this machine (measured) and on the targets of a
catalogue (projected by a stated roofline model), with the energy it takes.

- :mod:`assay.cost.targets`: the catalogue (``targets.toml``), validated;
- :mod:`assay.cost.machine`: this machine's achieved rates (matrix products, read bandwidth);
- :mod:`assay.cost.projection`: a measured call carried to another machine, and its cost per 1,000;
- :mod:`assay.cost.table`: a compression search's models costed on every target.
"""

from assay.cost.projection import Call, Machine, Projection, per_thousand, project
from assay.cost.table import cost_table
from assay.cost.targets import Catalogue, Target, load_catalogue

__all__ = [
    "Call",
    "Catalogue",
    "Machine",
    "Projection",
    "Target",
    "cost_table",
    "load_catalogue",
    "per_thousand",
    "project",
]
