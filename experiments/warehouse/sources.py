"""Which engine a results run reads: the experiment's data source, one named on the command line, or a URL."""

from __future__ import annotations

from dataclasses import dataclass, field

from experiments.models import DataSource, Experiment
from experiments.warehouse.engine import WarehouseError, warehouse_statistics_compute


@dataclass(frozen=True)
class ResolvedSource:
    """A data source ready to connect: its name (or the URL's scheme), engine, URL and table mapping."""

    name: str
    engine: str
    url: str = field(repr=False)  # may carry credentials: never stored, never shown
    mapping: dict = field(default_factory=dict)
    timeout_seconds: int | None = None

    def describe(self) -> dict:
        """What a snapshot records of its source: the name and engine, never the URL."""
        return {"name": self.name, "engine": self.engine}

    def statistics(self, *, experiment: Experiment, as_of=None):
        from experiments.warehouse.connect import backend_connect

        backend = backend_connect(url=self.url, timeout_seconds=self.timeout_seconds)
        return warehouse_statistics_compute(experiment=experiment, backend=backend, mapping=self.mapping, as_of=as_of)


def _engine_of(url: str) -> str:
    scheme = url.split(":", 1)[0].lower()
    return {"postgresql": "postgres"}.get(scheme, scheme)


def source_resolve(*, experiment: Experiment | None = None, source: str | None = None) -> ResolvedSource | None:
    """``source``: a DataSource name or a URL (``scheme://…``); default the experiment's; ``None``: built-in."""
    from experiments.warehouse.connect import data_source_url

    if source:
        if "://" in source:
            return ResolvedSource(name=_engine_of(source), engine=_engine_of(source), url=source)
        row = DataSource.objects.filter(name=source).first()
        if row is None:
            raise WarehouseError(f"no data source named {source!r}")
    else:
        row = experiment.data_source if experiment is not None else None
        if row is None:
            return None
    return ResolvedSource(
        name=row.name, engine=row.engine, url=data_source_url(source=row), mapping=row.mapping,
        timeout_seconds=row.query_timeout_seconds,
    )
