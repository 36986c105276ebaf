"""The built-in database's rows in the warehouse's canonical shape (pseudonymous ids only)."""

from __future__ import annotations

from consent.models import ConsentEvent, Subject
from experiments.models import Exposure, OutcomeEvent

# Per table: the canonical columns (``experiments.warehouse.engine.COLUMNS``) and the
# built-in query path of each. Subjects are keyed by their pseudonym; nothing else identifies them.
_SOURCES = {
    "exposures": (
        Exposure,
        {"experiment_id": "experiment_id", "phase": "phase", "arm": "arm__key", "subject_id": "subject_id",
         "first_exposed_at": "first_exposed_at"},
    ),
    "events": (
        OutcomeEvent,
        {"subject_id": "subject_id", "type": "type", "occurred_at": "occurred_at", "amount": "amount"},
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


def builtin_frames(*, using: str = "default") -> dict:
    """Every row of the four tables as pandas DataFrames with the canonical columns (amounts as floats)."""
    import pandas as pd

    frames = {}
    for name, (model, columns) in _SOURCES.items():
        rows = list(model.objects.using(using).order_by("pk").values_list(*columns.values()))
        frame = pd.DataFrame(rows, columns=list(columns))
        for column in frame.columns:
            if column.endswith("_at"):
                frame[column] = pd.to_datetime(frame[column], utc=True)
        if name == "events":
            frame["amount"] = frame["amount"].astype("float64")
        if name == "consents":
            frame["notice_id"] = frame["notice_id"].astype("Int64")
        frames[name] = frame
    return frames
