"""Warehouse-native analysis: an experiment's metrics computed in the engine that holds its outcome data.

- ``expression``: the metrics as one ibis expression (``metric_statistics_expression``);
- ``engine``: running it on a backend (``warehouse_statistics_compute``, ``warehouse_tables``);
- ``connect``: a data source's URL and backend (``data_source_connect``, chdb in process);
- ``sources``: which source a results run reads (``source_resolve``);
- ``export``: the built-in rows in the canonical shape (``builtin_frames``).

docs/warehouse.md describes the configuration and the engines.
"""

from experiments.warehouse.engine import (
    WarehouseError,
    warehouse_statistics_compute,
    warehouse_tables,
)
from experiments.warehouse.sources import ResolvedSource, source_resolve

__all__ = [
    "ResolvedSource",
    "WarehouseError",
    "source_resolve",
    "warehouse_statistics_compute",
    "warehouse_tables",
]
