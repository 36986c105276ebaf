"""The snapshot document (docs/metrics.md, "ResultSnapshot"): a versioned dataclass over the stored JSON.

JSON stays the stored form (``ResultSnapshot.data``): ``from_dict`` reads any readable
schema version (1 to 5) and ``to_dict`` gives the stored form back key for key. Keys a
version lacks (schema 2 has no ``descriptive``, older schema 3 runs no
``recommendation_gmv``, schema 4 no ``adjustment``, ``heterogeneity`` nor ``health``) stay
absent, and keys this module does not know (a newer writer's) are kept, so a document
round-trips unchanged whoever wrote it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from experiments.models import ResultSnapshot

SCHEMA_VERSION = ResultSnapshot.SCHEMA_VERSION
READABLE_SCHEMA_VERSIONS = ResultSnapshot.READABLE_SCHEMA_VERSIONS


class UnreadableDocument(ValueError):
    """Not a snapshot document of a schema version this code reads."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotDocument:
    """One run's results; the nested parts are the stats and decision engines' own ``to_dict`` forms."""

    schema_version: int
    experiment: dict = field(default_factory=dict)  # {key, name, phase, primary_metric, alpha}
    window: dict = field(default_factory=dict)  # {start, end}, ISO 8601
    source: dict | None = None  # {name, engine} of a data source; absent for the built-in database
    settings: dict = field(default_factory=dict)
    arms: list = field(default_factory=list)  # [{key, treatment, personalization_level, consent_prompt, ...}]
    metrics: dict = field(default_factory=dict)
    statistics: dict = field(default_factory=dict)
    descriptive: dict | None = None  # schema 3
    recommendation_gmv: dict | None = None  # later schema 3 runs
    srm: dict | None = None
    report: dict | None = None  # the frequentist report, whichever the engine (pages and older runs read it)
    engine: str | None = None  # schema 4: "frequentist" | "bayesian"
    bayesian_report: dict | None = None  # schema 4, Bayesian engine only
    adjustment: dict | None = None  # schema 5: per metric the variance adjustment used and what it removed
    heterogeneity: dict | None = None  # schema 5: interaction tests per dimension, effect by exposure day
    health: dict | None = None  # schema 5: the health checks' flags with their reasons
    skipped_metrics: list = field(default_factory=list)
    guardrails: list = field(default_factory=list)
    decision: dict | None = None
    message: str = ""
    status: str | None = None
    # Known keys the stored document lacks (left out of ``to_dict``), and unknown keys it has (kept).
    absent: frozenset[str] = frozenset()
    extra: dict = field(default_factory=dict)

    # --- reading and writing -----------------------------------------------------------

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The document's keys in their stored order."""
        return tuple(f.name for f in fields(cls) if f.name not in ("absent", "extra"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SnapshotDocument:
        """The document over a stored mapping; check ``readable`` before trusting its shape."""
        if not isinstance(data, Mapping) or not isinstance(data.get("schema_version"), int):
            raise UnreadableDocument("not a snapshot document (no integer schema_version)")
        known = cls.field_names()
        return cls(
            **{key: data[key] for key in known if key in data},
            absent=frozenset(key for key in known if key not in data),
            extra={key: value for key, value in data.items() if key not in known},
        )

    def to_dict(self) -> dict:
        document = {key: getattr(self, key) for key in self.field_names() if key not in self.absent}
        document.update(self.extra)
        return document

    def with_values(self, **values: Any) -> SnapshotDocument:
        """A copy with these keys set (and present)."""
        return replace(self, absent=self.absent - values.keys(), **values)

    # --- what readers ask of it --------------------------------------------------------

    @property
    def readable(self) -> bool:
        """Whether this code knows the document's schema version (a newer writer's may differ)."""
        return self.schema_version in READABLE_SCHEMA_VERSIONS

    @property
    def subjects(self) -> int:
        return sum(arm["subjects"] for arm in self.arms)

    @property
    def srm_flag(self) -> bool | None:
        """Whether the sample-ratio test flagged a mismatch; None when it could not run."""
        return None if self.srm is None else bool(self.srm["flag"])

    @property
    def guardrail_breached(self) -> bool:
        return any(entry["breached"] for entry in self.guardrails)

    @property
    def breached_guardrails(self) -> list[dict]:
        return [entry for entry in self.guardrails if entry["breached"]]

    @property
    def comparisons(self) -> list[dict]:
        return list((self.report or {}).get("comparisons", []))

    @property
    def primary_metric(self) -> str:
        return self.experiment["primary_metric"]
