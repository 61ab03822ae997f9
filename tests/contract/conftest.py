"""Fixtures the contract tests share with the unit tests of each plugin kind (imported, not copied):
a tiny registered CNN for the trust families, planted images for the audit checks, and a tiny trained
CNN with its data and compression context for the compressors."""

from tests.unit.compress.conftest import bars_data, bars_spec, ctx, tiny_cnn
from tests.unit.data.audit.conftest import planted
from tests.unit.trust.conftest import registered

__all__ = ["bars_data", "bars_spec", "ctx", "planted", "registered", "tiny_cnn"]
