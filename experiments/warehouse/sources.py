"""Which engine a results run reads: the experiment's data source, one named on the command line, or a URL."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

from experiments.models import DataSource, Experiment
from experiments.warehouse.engine import WarehouseError, warehouse_statistics_compute
from experiments.warehouse.guard import transient_retry


@dataclass(frozen=True)
class ResolvedSource:
    """A data source ready to connect: its name (or the URL's scheme), engine, URL, table mapping and limits.

    ``timeout_seconds`` and ``max_scanned_rows`` (None: no cost guard) are the source's, or
    for a URL given directly ``PRIVACYLAB_WAREHOUSE_QUERY_TIMEOUT`` and
    ``PRIVACYLAB_WAREHOUSE_MAX_SCANNED_ROWS``.
    """

    name: str
    engine: str
    url: str = field(repr=False)  # may carry credentials: never stored, never shown
    mapping: dict = field(default_factory=dict)
    timeout_seconds: float | None = None
    max_scanned_rows: int | None = None

    def describe(self) -> dict:
        """What a snapshot records of its source: the name and engine, never the URL."""
        return {"name": self.name, "engine": self.engine}

    def statistics(self, *, experiment: Experiment, as_of=None, sleep=None):
        """The experiment's statistics from this source: connect and compute, retried while it fails transiently.

        ``PRIVACYLAB_WAREHOUSE_RETRY`` bounds the tries and their backoff; ``sleep`` replaces
        ``time.sleep`` between them (tests).
        """
        policy = settings.PRIVACYLAB_WAREHOUSE_RETRY
        return transient_retry(
            run=lambda: self._statistics_once(experiment=experiment, as_of=as_of),
            attempts=policy["attempts"],
            backoff_seconds=policy["backoff_seconds"],
            backoff_max_seconds=policy["backoff_max_seconds"],
            **({"sleep": sleep} if sleep is not None else {}),
        )

    def _statistics_once(self, *, experiment: Experiment, as_of=None):
        from experiments.warehouse.connect import backend_connect

        backend = backend_connect(url=self.url, timeout_seconds=self.timeout_seconds)
        try:
            return warehouse_statistics_compute(
                experiment=experiment, backend=backend, mapping=self.mapping, as_of=as_of,
                timeout_seconds=self.timeout_seconds, max_scanned_rows=self.max_scanned_rows,
            )
        finally:
            disconnect = getattr(backend, "disconnect", None)
            if disconnect is not None:
                disconnect()


def _engine_of(url: str) -> str:
    scheme = url.split(":", 1)[0].lower()
    return {"postgresql": "postgres"}.get(scheme, scheme)


def source_resolve(*, experiment: Experiment | None = None, source: str | None = None) -> ResolvedSource | None:
    """``source``: a DataSource name or a URL (``scheme://…``); default the experiment's; ``None``: built-in."""
    from experiments.warehouse.connect import data_source_url

    if source:
        if "://" in source:
            return ResolvedSource(
                name=_engine_of(source), engine=_engine_of(source), url=source,
                timeout_seconds=settings.PRIVACYLAB_WAREHOUSE_QUERY_TIMEOUT,
                max_scanned_rows=settings.PRIVACYLAB_WAREHOUSE_MAX_SCANNED_ROWS,
            )
        row = DataSource.objects.filter(name=source).first()
        if row is None:
            raise WarehouseError(f"no data source named {source!r}")
    else:
        row = experiment.data_source if experiment is not None else None
        if row is None:
            return None
    return ResolvedSource(
        name=row.name, engine=row.engine, url=data_source_url(source=row), mapping=row.mapping,
        timeout_seconds=row.query_timeout_seconds, max_scanned_rows=row.max_scanned_rows,
    )
