"""The built-in database's rows in the warehouse's canonical shape (pseudonymous ids only), and the export.

``warehouse_export`` appends the exposures and consent decisions PrivacyLab made since the
last export to a data source's tables or to Parquet files: the watermark is the target's
own (the highest exported id in it), so a rerun, or a run after a crash, adds nothing twice.
"""

from __future__ import annotations

from pathlib import Path

from consent.models import ConsentEvent, Subject
from experiments.models import Exposure, OrderLine, OutcomeEvent

# Per table: the canonical columns (``experiments.warehouse.engine.COLUMNS``) and the
# built-in query path of each. Subjects are keyed by their pseudonym; nothing else identifies them.
_SOURCES = {
    "exposures": (
        Exposure,
        {"exposure_id": "id", "experiment_id": "experiment_id", "phase": "phase", "arm": "arm__key",
         "subject_id": "subject_id", "first_exposed_at": "first_exposed_at"},
    ),
    "events": (
        OutcomeEvent,
        {"subject_id": "subject_id", "type": "type", "occurred_at": "occurred_at", "amount": "amount",
         "product_id": "product_id"},
    ),
    "order_lines": (
        OrderLine,
        {"subject_id": "subject_id", "occurred_at": "occurred_at", "product_id": "product_id",
         "quantity": "quantity", "price": "price"},
    ),
    "consents": (
        ConsentEvent,
        {"ledger_id": "id", "subject_id": "subject_id", "purpose": "purpose_id", "action": "action",
         "recorded_at": "recorded_at", "expires_at": "expires_at", "notice_id": "notice_id"},
    ),
    "subjects": (
        Subject,
        {"subject_id": "pseudonym", "age_band": "age_band", "province": "province", "platform": "platform",
         "restricted_at": "restricted_at"},
    ),
}


# What the export appends, and the id column that is its watermark.
EXPORTED = {"exposures": "exposure_id", "consents": "ledger_id"}


def builtin_frames(*, using: str = "default", tables=None, after: dict | None = None) -> dict:
    """The rows of the tables as pandas DataFrames with the canonical columns (amounts as floats).

    ``tables``: which (default all four); ``after``: per table, only ids above this watermark.
    """
    import pandas as pd

    frames = {}
    after = after or {}
    for name, (model, columns) in _SOURCES.items():
        if tables is not None and name not in tables:
            continue
        queryset = model.objects.using(using).order_by("pk")
        if after.get(name) is not None:
            queryset = queryset.filter(pk__gt=after[name])
        rows = list(queryset.values_list(*columns.values()))
        frame = pd.DataFrame(rows, columns=list(columns))
        for column in frame.columns:
            if column.endswith("_at"):
                frame[column] = pd.to_datetime(frame[column], utc=True)
        if name == "events":
            frame["amount"] = frame["amount"].astype("float64")
        if name == "order_lines":
            frame["price"] = frame["price"].astype("float64")
            frame["quantity"] = frame["quantity"].astype("int64")
        if name == "consents":
            frame["notice_id"] = frame["notice_id"].astype("Int64")
        frames[name] = frame
    return frames


def _parquet_watermark(directory: Path, name: str) -> int | None:
    # Files are <table>-<first id>-<last id>.parquet: the last id of the newest is the watermark.
    ends = [int(path.stem.rsplit("-", 1)[1]) for path in directory.glob(f"{name}-*-*.parquet")]
    return max(ends) if ends else None


def warehouse_export(*, to: str, using: str = "default") -> dict[str, int]:
    """Append the exposures and consent decisions not yet in ``to``; per table, the rows appended.

    ``to``: a URL an engine opens (``duckdb:///path/file.duckdb``, ``postgres://…``) whose
    tables ``exposures`` and ``consents`` receive the rows (created on the first export), or
    ``parquet:///path/dir`` for one Parquet file per table and run. Only pseudonymous ids
    leave: subject pseudonyms, arm keys, experiment and ledger ids.
    """
    from experiments.warehouse.connect import backend_connect
    from experiments.warehouse.engine import WarehouseError

    appended: dict[str, int] = {}
    if to.startswith("parquet://"):
        directory = Path(to.removeprefix("parquet://"))
        directory.mkdir(parents=True, exist_ok=True)
        for name, id_column in EXPORTED.items():
            frame = builtin_frames(using=using, tables=[name], after={name: _parquet_watermark(directory, name)})[name]
            if len(frame):
                first, last = int(frame[id_column].min()), int(frame[id_column].max())
                # Written under a temporary name, then renamed: a crash leaves no half file counted.
                partial = directory / f".{name}-{first}-{last}.parquet.partial"
                frame.to_parquet(partial, index=False)
                partial.rename(directory / f"{name}-{first}-{last}.parquet")
            appended[name] = len(frame)
        return appended
    backend = backend_connect(url=to)
    try:
        existing = set(backend.list_tables())
        for name, id_column in EXPORTED.items():
            watermark = None
            if name in existing:
                table = backend.table(name)
                value = backend.execute(table[id_column].max())
                watermark = None if value is None or value != value else int(value)
            frame = builtin_frames(using=using, tables=[name], after={name: watermark})[name]
            if len(frame):
                if name in existing:
                    backend.insert(name, frame)
                else:
                    backend.create_table(name, frame)
            appended[name] = len(frame)
    except WarehouseError:
        raise
    except Exception as error:  # the engine's own kinds: one kind for the caller
        raise WarehouseError(f"export to {to.split('://', 1)[0]}: {type(error).__name__}: {error}") from error
    finally:
        disconnect = getattr(backend, "disconnect", None)
        if disconnect is not None:
            disconnect()
    return appended
