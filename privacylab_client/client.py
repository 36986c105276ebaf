"""The client: fetch and poll the published configuration, assign in process, send first exposures in batches.

Standard library only (``urllib``, ``threading``): a service can vendor this
package without Django or any HTTP library.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType

from privacylab_client.assignment import (
    ExperimentSpec,
    HoldoutSpec,
    assign,
    in_holdout,
    spec_from_json,
    targeting_matches,
)
from privacylab_client.surfaces import (
    RolloutSpec,
    fallback_treatments,
    rollout_from_json,
    surface_treatments,
)

logger = logging.getLogger("privacylab_client")

CONFIG_FORMAT = 1  # the "format" of GET /api/v1/config this client reads
MAX_BATCH = 1000  # POST /api/v1/exposures takes at most this many
_INDEXED_ERROR = re.compile(r"^exposures\[(\d+)\]")
_NO_ATTRIBUTES: Mapping[str, object] = MappingProxyType({})  # shared, read-only: no dict per call


@dataclass(frozen=True, slots=True)
class LocalExperiment:
    key: str
    phase: int
    targeting: Mapping[str, object]
    spec: ExperimentSpec
    treatments: Mapping[str, dict]


@dataclass(frozen=True, slots=True)
class LocalConfig:
    """A parsed configuration document: what ``local_assignments`` evaluates."""

    version: str
    experiments: tuple[LocalExperiment, ...]
    phases: Mapping[str, int] = field(default_factory=dict)  # experiment key → phase
    surfaces: Mapping[str, dict] = field(default_factory=dict)  # surface key → its default treatment
    experiment_surfaces: Mapping[str, str | None] = field(default_factory=dict)  # experiment key → surface
    rollouts: Mapping[str, RolloutSpec] = field(default_factory=dict)  # surface key → its ramping rollout
    # What ``local_assignments`` walks per subject, derived once per document: (key, targeting or None,
    # spec, treatments) per experiment, so that a call reads tuples instead of attributes.
    _plan: tuple[tuple[str, Mapping[str, object] | None, ExperimentSpec, Mapping[str, dict]], ...] = field(
        init=False, repr=False, compare=False
    )
    _holdout: HoldoutSpec | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.phases:
            object.__setattr__(self, "phases", {experiment.key: experiment.phase for experiment in self.experiments})
        object.__setattr__(self, "_plan", tuple(
            (experiment.key, experiment.targeting or None, experiment.spec, experiment.treatments)
            for experiment in self.experiments
        ))
        object.__setattr__(self, "_holdout", self.experiments[0].spec.holdout if self.experiments else None)

    @property
    def holdout(self) -> HoldoutSpec | None:
        return self._holdout


def config_parse(document: Mapping[str, object]) -> LocalConfig:
    """The document of ``GET /api/v1/config`` as a ``LocalConfig``; ``ValueError`` if it is not one this client reads."""
    if document.get("format") != CONFIG_FORMAT:
        raise ValueError(f"configuration format {document.get('format')!r}; this client reads {CONFIG_FORMAT}")
    holdout = document.get("holdout")
    experiments = []
    experiment_surfaces = {}
    for raw in document["experiments"]:
        experiment_surfaces[str(raw["key"])] = raw.get("surface")
        spec = spec_from_json({name: value for name, value in raw.items() if name != "holdout"}, holdout=holdout)
        experiments.append(
            LocalExperiment(
                key=spec.key,
                phase=int(raw.get("phase", 1)),
                targeting=raw.get("targeting") or {},
                spec=spec,
                treatments={arm["key"]: arm["treatment"] for arm in raw["arms"]},
            )
        )
    surfaces = {str(surface["key"]): dict(surface["default"]) for surface in document.get("surfaces", ())}
    return LocalConfig(
        version=str(document.get("version", "")),
        experiments=tuple(experiments),
        surfaces=surfaces,
        experiment_surfaces=experiment_surfaces,
        rollouts={spec.surface: spec for spec in map(rollout_from_json, document.get("rollouts", ()))},
    )


def local_assignments(config: LocalConfig, subject_id: str, attributes: Mapping[str, object]) -> list[dict]:
    """What ``POST /api/v1/assignments`` answers in ``assignments`` for a subject with no earlier exposure.

    The same order and steps as the server: the global holdout first, then each
    running experiment (by id) whose targeting matches and whose spec assigns an arm.
    """
    plan = config._plan
    if not plan or (config._holdout is not None and in_holdout(config._holdout, subject_id)):
        return []
    result = []
    for key, targeting, spec, treatments in plan:
        if targeting is not None and not targeting_matches(targeting, attributes):
            continue
        arm = assign(spec, subject_id)
        if arm is not None:
            result.append({"experiment": key, "arm": arm, "treatment": treatments[arm]})
    return result


def local_treatments(
    config: LocalConfig, assignments: list[dict], subject_id: str = "", attributes: Mapping[str, object] | None = None
) -> dict[str, dict]:
    """What ``POST /api/v1/assignments`` answers in ``treatments``, given ``local_assignments``' answer."""
    if not config.surfaces:
        return {}  # what surface_treatments answers with no surface, without its walk
    return surface_treatments(
        defaults=config.surfaces, assignments=assignments, experiment_surfaces=config.experiment_surfaces,
        rollouts=config.rollouts, subject_id=subject_id, attributes=attributes,
    )


def _utc_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Client:
    """Local assignment against one PrivacyLab server.

    ``assign(subject_id, attributes)`` returns ``{"assignments": [...]}``, as
    ``POST /api/v1/assignments`` does for the same subject, without a request: the
    configuration is fetched once (synchronously, at construction) and polled every
    ``poll_interval`` seconds with ``If-None-Match``. A failed fetch keeps the last
    good copy. With no copy at all ``assign`` returns no assignments, every surface
    named in ``surfaces`` on the built-in non-personal fallback (``source:
    "fallback"``), and ``config_status`` says ``"missing"``;
    it is ``"fresh"`` after a successful poll and ``"stale"`` while polls fail.

    Each first assignment of a subject to an experiment is queued as an exposure
    (and, during a ramping rollout, the side of the ramp a compared subject is on,
    once per step: the rollout's health check counts them) and sent in the background in batches of up to ``batch_size`` every
    ``flush_interval`` seconds, retried with exponential backoff on network errors,
    429 and 5xx. The queue holds at most ``max_buffer`` exposures: beyond that new
    ones are dropped and counted in ``exposures_dropped`` (the server's own
    assignment would have recorded them; they are lost, and logged). A 400 names
    the bad exposures by index: those are dropped (``exposures_rejected``), the
    rest sent again. ``close()`` flushes what is queued.

    What local evaluation cannot see: a subject exposed in an earlier phase keeps
    the arm the server recorded (the server answers with it; locally the current
    phase's arm is computed), and a subject who restricted processing or objected
    gets no assignment from the server (locally they are assigned; their exposure
    is withheld by the server). docs/assignment.md, "Local evaluation".
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        poll_interval: float = 30.0,
        flush_interval: float = 1.0,
        batch_size: int = MAX_BATCH,
        max_buffer: int = 100_000,
        timeout: float = 5.0,
        max_retries: int = 5,
        start: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        surfaces: tuple[str, ...] = (),
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be from 1 to {MAX_BATCH}")
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Api-Key {api_key}", "Accept": "application/json"}
        self.poll_interval = poll_interval
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.timeout = timeout
        self.max_retries = max_retries
        self._sleep = sleep
        # The surfaces the service serves: with no configuration at all, each gets the built-in fallback.
        self._fallback = fallback_treatments(surfaces)
        self.config: LocalConfig | None = None
        self.config_status = "missing"
        self._etag: str | None = None
        self._queue: deque[dict] = deque()
        self._max_buffer = max_buffer
        # The (experiment, phase, subject) triples already queued (for a rollout: ("rollout:" + salt, percent,
        # subject), once per step): a returning subject queues nothing.
        # Bounded, oldest forgotten first; a forgotten one is sent again and the server deduplicates it.
        self._seen: OrderedDict[tuple[str, float, str], None] = OrderedDict()
        self._seen_limit = max(max_buffer, 10_000) * 4
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self.exposures_sent = 0
        self.exposures_dropped = 0
        self.exposures_rejected = 0
        self._threads: list[threading.Thread] = []
        if start:
            self.refresh()
            for target, name in ((self._poll_loop, "privacylab-config"), (self._flush_loop, "privacylab-exposures")):
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)

    # --- assignment ------------------------------------------------------------------

    def assign(self, subject_id: str, attributes: Mapping[str, object] | None = None) -> dict:
        """``{"assignments": [...], "treatments": {...}}`` for this subject, as the server answers; queues first exposures.

        With no configuration (``config_status == "missing"``) there are no
        assignments and every surface given as ``surfaces=`` gets the built-in
        non-personal fallback, ``source: "fallback"``.
        """
        if not isinstance(subject_id, str) or not subject_id:
            raise ValueError("subject_id must be a non-empty string")
        if not attributes:
            attributes = _NO_ATTRIBUTES
        config = self.config
        if config is None:
            return {"assignments": [], "treatments": {key: dict(value) for key, value in self._fallback.items()}}
        assignments = local_assignments(config, subject_id, attributes)
        if assignments:
            seen = self._seen
            phases = config.phases
            # The returning subject's path: a dict lookup per assignment, no lock, no clock.
            new = [a for a in assignments if (a["experiment"], phases[a["experiment"]], subject_id) not in seen]
            if new:
                self._expose(subject_id, attributes, [
                    ((a["experiment"], phases[a["experiment"]], subject_id), {"experiment": a["experiment"], "arm": a["arm"]})
                    for a in new
                ])
        # local_treatments' own shortcut, without its call: no surface, no treatments
        treatments = local_treatments(config, assignments, subject_id, attributes) if config.surfaces else {}
        if config.rollouts:
            self._expose_rollouts(config, subject_id, attributes, treatments)
        return {"assignments": assignments, "treatments": treatments}

    def _expose_rollouts(self, config: LocalConfig, subject_id: str, attributes: Mapping[str, object],
                         treatments: Mapping[str, dict]) -> None:
        """Queue, once per step, which side of each ramping rollout the subject is on, as the server records it.

        Compared are the subjects the rollout could reach: its targeting matches and no
        experiment on the surface assigned them (docs/surfaces.md, "The health check").
        """
        new = []
        for surface, spec in config.rollouts.items():
            source = treatments[surface]["source"]
            if source == "rollout" or (source == "default" and targeting_matches(spec.targeting, attributes)):
                seen = ("rollout:" + spec.salt, spec.percent, subject_id)
                if seen not in self._seen:
                    new.append((seen, {"rollout": {"surface": surface, "salt": spec.salt, "percent": spec.percent,
                                                   "group": "rollout" if source == "rollout" else "default"}}))
        if new:
            self._expose(subject_id, attributes, new)

    def _expose(self, subject_id: str, attributes: Mapping[str, object], items: list[tuple[tuple, dict]]) -> None:
        """Queue each ``(seen key, exposure fields)`` not queued before, with the subject, time and attributes."""
        timestamp = _utc_now()
        sent_attributes = {name: str(value) for name, value in attributes.items() if value is not None}
        with self._lock:
            for seen, fields in items:
                if seen in self._seen:
                    continue
                if len(self._queue) >= self._max_buffer:
                    self.exposures_dropped += 1
                    if self.exposures_dropped in (1, 10, 100) or self.exposures_dropped % 1000 == 0:
                        logger.warning("exposure buffer full (%d): %d exposures dropped", self._max_buffer,
                                       self.exposures_dropped)
                    continue
                self._seen[seen] = None
                if len(self._seen) > self._seen_limit:
                    self._seen.popitem(last=False)
                self._queue.append({
                    "subject_id": subject_id,
                    **fields,
                    "timestamp": timestamp,
                    "attributes": sent_attributes,
                })
            full = len(self._queue) >= self.batch_size
        if full and not self._wake.is_set():  # set() takes the event's lock: once until the sender wakes
            self._wake.set()

    @property
    def exposures_pending(self) -> int:
        return len(self._queue)

    # --- configuration -----------------------------------------------------------------

    def refresh(self) -> bool:
        """Fetch the configuration now (conditionally); True if this client has one afterwards."""
        headers = dict(self._headers)
        if self._etag and self.config is not None:
            headers["If-None-Match"] = self._etag
        try:
            status, body, response_headers = self._request("GET", "/api/v1/config", headers=headers)
            if status == 304:
                self.config_status = "fresh"
                return True
            if status != 200:
                raise OSError(f"GET /api/v1/config answered {status}")
            config = config_parse(json.loads(body))
        except (OSError, ValueError, KeyError, TypeError) as error:
            self.config_status = "stale" if self.config is not None else "missing"
            logger.warning(
                "privacylab configuration not fetched (%s): %s", error,
                "keeping the last good copy" if self.config is not None else "no assignments until it is",
            )
            return self.config is not None
        self.config, self._etag, self.config_status = config, response_headers.get("etag"), "fresh"
        return True

    def _poll_loop(self) -> None:
        while not self._stopped.wait(self.poll_interval):
            self.refresh()

    # --- exposures ---------------------------------------------------------------------

    def flush(self) -> None:
        """Send every queued exposure now (in batches), retrying as the background sender does.

        Stops at the first batch that could not be sent (it is queued again, for the next flush).
        """
        while True:
            with self._lock:
                batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            if not batch or not self._send(batch):
                return

    def _flush_loop(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            self.flush()

    def _send(self, batch: list[dict]) -> bool:
        """Send one batch; False if it had to be queued again."""
        delay = 0.5
        for attempt in range(self.max_retries + 1):
            try:
                status, body, headers = self._request(
                    "POST", "/api/v1/exposures", body=json.dumps({"exposures": batch}).encode(),
                    headers={**self._headers, "Content-Type": "application/json"},
                )
            except OSError as error:
                status, body, headers = None, str(error).encode(), {}
            if status is not None and 200 <= status < 300:
                self.exposures_sent += len(batch)
                return True
            if status == 400:
                batch = self._without_rejected(batch, body)
                if not batch:
                    return True
                continue
            if status is not None and status not in (408, 429) and status < 500:
                # 401/403/413 …: sending again cannot help.
                self.exposures_rejected += len(batch)
                logger.error("POST /api/v1/exposures answered %s: %d exposures dropped", status, len(batch))
                return True
            if attempt == self.max_retries:
                break
            retry_after = headers.get("retry-after")
            wait = float(retry_after) if retry_after and retry_after.isdigit() else delay
            self._sleep(min(wait, 60.0))
            delay = min(delay * 2, 30.0)
        with self._lock:
            # Back to the front of the queue (within the bound): the next flush tries again.
            room = self._max_buffer - len(self._queue)
            kept = batch[:max(room, 0)]
            self._queue.extendleft(reversed(kept))
            self.exposures_dropped += len(batch) - len(kept)
        logger.warning("POST /api/v1/exposures failed %d times (last: %s); %d exposures kept for later",
                       self.max_retries + 1, status, len(kept))
        return False

    def _without_rejected(self, batch: list[dict], body: bytes) -> list[dict]:
        """The batch without the exposures a 400 names (``exposures[i]…``); empty if it names none."""
        try:
            errors = json.loads(body)
        except ValueError:
            errors = {}
        bad = {int(match.group(1)) for name in errors if (match := _INDEXED_ERROR.match(str(name)))}
        if not bad:
            self.exposures_rejected += len(batch)
            logger.error("POST /api/v1/exposures refused a batch of %d: %s", len(batch), body[:500])
            return []
        self.exposures_rejected += len(bad)
        logger.warning("POST /api/v1/exposures refused %d exposures: %s", len(bad), body[:500])
        return [exposure for index, exposure in enumerate(batch) if index not in bad]

    # --- transport and lifetime --------------------------------------------------------

    def _request(self, method: str, path: str, *, headers: dict, body: bytes | None = None):
        request = urllib.request.Request(self.base_url + path, data=body, headers=headers, method=method)  # noqa: S310 — the configured server
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return response.status, response.read(), {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as error:
            return error.code, error.read(), {k.lower(): v for k, v in error.headers.items()}

    def close(self) -> None:
        """Stop polling and send what is queued."""
        self._stopped.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout * (self.max_retries + 2))
        self.flush()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
