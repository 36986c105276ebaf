"""A value held in-process and reloaded when its version moves: configuration every request reads, loaded once.

The version lives in the shared cache (a token each write replaces), so one
round trip tells every process whether its copy is current. Reads that hit
take no lock; a miss loads under the lock. ``max_age_seconds`` bounds how long
a copy lives even if the version never moves (e.g. while the cache is down
and every reader sees the same ``None``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class _Held(Generic[T]):
    version: object
    loaded_at: float
    value: T


class VersionedMemo(Generic[T]):
    """One value, its version and when it was loaded (``time.monotonic``)."""

    def __init__(self, *, max_age_seconds: float | None = None) -> None:
        self.max_age_seconds = max_age_seconds
        self._lock = threading.Lock()
        self._held: _Held[T] | None = None

    def get(
        self,
        version: object,
        load: Callable[[], T],
        *,
        held_as: Callable[[object], object] | None = None,
    ) -> T:
        """The held value if it was loaded under ``version`` (and is young enough), else ``load()``'s.

        ``held_as`` turns ``version`` into the version to hold the new value
        under, after it is loaded (consent: a missing token is created then).
        """
        held = self._held
        if (
            held is not None
            and held.version == version
            and (self.max_age_seconds is None or time.monotonic() - held.loaded_at < self.max_age_seconds)
        ):
            return held.value
        with self._lock:
            value = load()
            kept_as = held_as(version) if held_as is not None else version
            self._held = _Held(version=kept_as, loaded_at=time.monotonic(), value=value)
        return value

    @property
    def last(self) -> T | None:
        """The value last loaded, however old (``None`` before the first load): what to serve
        when a reload fails and a stale answer beats none."""
        held = self._held
        return None if held is None else held.value

    def forget(self) -> None:
        """Drop the held value: the next ``get`` loads."""
        with self._lock:
            self._held = None
