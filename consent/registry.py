"""Where every app declares the personal data it holds, so data subject requests reach it.

``consent`` imports no other app (DESIGN.md), yet an access request must export
everything held about a subject and an erasure must remove it everywhere. So
each app that stores subject-keyed data registers it here from its
``AppConfig.ready()``::

    from consent.registry import personal_data_register

    personal_data_register(
        label="experiments.exposure",
        model=Exposure,
        subject_field="subject",
        timestamp_field="first_exposed_at",
    )

A table source is exported with ``values()``, erased with a queryset delete,
and — when it names a ``purpose`` and a ``timestamp_field`` — purged by the
daily retention job once its rows are older than the purpose's retention
period. A source whose retention follows another rule (experiment data: some
time after the experiment ended) passes ``purge(now=, batch_size=)``, which
deletes one batch and returns how many rows it deleted (0 when none are left).
Anything that is not one table (a file store, a search index) passes
``export`` and ``erase`` callables instead. Cache entries keyed by the
subject register with ``personal_cache_register`` so an erasure deletes them.
"""

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import models

from config.jsonsafe import json_safe

Exporter = Callable[[str], list[dict]]
Eraser = Callable[[str], int]
Purger = Callable[..., int]  # (*, now: datetime, batch_size: int) -> rows deleted
CacheKeys = Callable[[str], Iterable[str]]


@dataclass(frozen=True)
class PersonalDataSource:
    """One place that holds personal data about subjects, keyed by pseudonym."""

    label: str
    model: type[models.Model] | None = None
    subject_field: str = "subject"
    timestamp_field: str | None = None
    purpose: str | None = None
    exporter: Exporter | None = field(default=None, repr=False)
    eraser: Eraser | None = field(default=None, repr=False)
    purger: Purger | None = field(default=None, repr=False)

    @property
    def has_retention(self) -> bool:
        return self.purger is not None or (self.purpose is not None and self.timestamp_field is not None)

    def export(self, pseudonym: str) -> list[dict]:
        if self.exporter is not None:
            return self.exporter(pseudonym)
        rows = self._queryset(pseudonym).order_by("pk").values()
        return [json_safe(row) for row in rows]

    def erase(self, pseudonym: str) -> int:
        if self.eraser is not None:
            return self.eraser(pseudonym)
        deleted, _ = self._queryset(pseudonym).delete()
        return deleted

    def purge(self, *, older_than: datetime, batch_size: int) -> int:
        """Delete one batch of rows older than ``older_than``; 0 when none are left."""
        if self.model is None or self.timestamp_field is None:
            return 0
        manager = self.model._default_manager
        pks = list(
            manager.filter(**{f"{self.timestamp_field}__lt": older_than})
            .order_by(self.timestamp_field)
            .values_list("pk", flat=True)[:batch_size]
        )
        if not pks:
            return 0
        deleted, _ = manager.filter(pk__in=pks).delete()
        return deleted

    @property
    def subject_column(self) -> str:
        """The lookup that compares the subject's pseudonym in a query."""
        assert self.model is not None
        field_ = self.model._meta.get_field(self.subject_field)
        return field_.attname if field_.is_relation else field_.name

    def _queryset(self, pseudonym: str) -> models.QuerySet:
        if self.model is None:
            raise ValueError(
                f"personal data source {self.label!r} has neither a model nor callables"
            )
        return self.model._default_manager.filter(**{self.subject_column: pseudonym})


@dataclass(frozen=True)
class PersonalCacheSource:
    """Cache entries keyed by a subject (e.g. precomputed recommendations)."""

    label: str
    keys: CacheKeys = field(repr=False)


_lock = threading.Lock()
_sources: dict[str, PersonalDataSource] = {}
_cache_sources: dict[str, PersonalCacheSource] = {}


def personal_data_register(
    *,
    label: str,
    model: type[models.Model] | None = None,
    subject_field: str = "subject",
    timestamp_field: str | None = None,
    purpose: str | None = None,
    export: Exporter | None = None,
    erase: Eraser | None = None,
    purge: Purger | None = None,
) -> PersonalDataSource:
    """Declare personal data held by an app. Registering a label again replaces it."""
    if model is None and (export is None or erase is None):
        raise ValueError("register either a model or both an export and an erase callable")
    if model is not None:
        model._meta.get_field(subject_field)  # fail at start-up, not during a request
        if timestamp_field is not None:
            model._meta.get_field(timestamp_field)
    if purpose is not None and timestamp_field is None and model is not None:
        raise ValueError("a source with a retention purpose needs a timestamp_field")
    if purpose is not None and purge is not None:
        raise ValueError("a source is purged by its purpose's retention or by its own purge, not both")
    source = PersonalDataSource(
        label=label,
        model=model,
        subject_field=subject_field,
        timestamp_field=timestamp_field,
        purpose=purpose,
        exporter=export,
        eraser=erase,
        purger=purge,
    )
    with _lock:
        _sources[label] = source
    return source


def personal_cache_register(*, label: str, keys: CacheKeys) -> PersonalCacheSource:
    """Declare cache keys that hold a subject's data: ``keys(pseudonym)`` lists them."""
    source = PersonalCacheSource(label=label, keys=keys)
    with _lock:
        _cache_sources[label] = source
    return source


def personal_data_unregister(*, label: str) -> None:
    with _lock:
        _sources.pop(label, None)
        _cache_sources.pop(label, None)


def personal_data_sources() -> tuple[PersonalDataSource, ...]:
    with _lock:
        return tuple(_sources[label] for label in sorted(_sources))


def personal_cache_sources() -> tuple[PersonalCacheSource, ...]:
    with _lock:
        return tuple(_cache_sources[label] for label in sorted(_cache_sources))
