"""Ingest of first exposures that clients assigned locally: validated all or nothing, idempotent per experiment and subject."""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from config.bulk import binary_cursor, column_arrays, unnest_casts
from config.text import text_problem
from consent.models import Subject
from consent.pseudonyms import subject_id_problem, subject_pseudonym
from consent.selectors import subjects_processing_limits
from experiments.assignment import assign, targeting_matches
from experiments.models import Experiment, Exposure, Rollout, RolloutExposure
from experiments.selectors import ExperimentConfig, running_experiment_configs
from experiments.services.assignment import MAX_ATTRIBUTES, SUBJECT_ATTRIBUTES, attribute_max_length
from experiments.services.event_validation import (
    BatchProblems,
    batch_envelope_check,
    timestamp_clean,
)
from privacylab_client.surfaces import RolloutSpec

MAX_EXPOSURES_PER_BATCH = 1000
MAX_KEY_LENGTH = 64  # experiment and arm keys (their columns)
_FIELDS = frozenset({"subject_id", "experiment", "arm", "rollout", "timestamp", "attributes"})
_REQUIRED = ("subject_id", "experiment", "arm", "timestamp")
# A rollout exposure names the ramp instead of an experiment and arm (docs/assignment.md, "Exposures").
_ROLLOUT_REQUIRED = ("subject_id", "rollout", "timestamp")
_ROLLOUT_FIELDS = frozenset({"surface", "salt", "percent", "group"})
_ROLLOUT_GROUPS = ("rollout", "default")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class ExposuresRecorded:
    """What ``exposures_record`` did with a batch."""

    received: int
    recorded: int  # new exposures stored
    duplicates: int  # already stored (their time moved earlier if this one was)
    withheld: int  # not stored: the subject restricted processing or objected (as the server's assignment)


def _attributes_clean(value: object, name: str, problems: BatchProblems) -> dict | None:
    if not isinstance(value, dict):
        problems.add(name, "Must be an object of attribute → text.")
        return None
    if len(value) > MAX_ATTRIBUTES:
        problems.add(name, f"At most {MAX_ATTRIBUTES} attributes.")
        return None
    before = len(problems.errors)
    for attribute, text in value.items():
        # The rules of the assignment request's attributes (experiments.serializers.AttributesField).
        limit = attribute_max_length(attribute)
        if not isinstance(text, str):
            problems.add(f"{name}.{attribute}", "Must be a string (attributes are compared as text).")
        elif len(text) > limit:
            problems.add(f"{name}.{attribute}", f"At most {limit} characters.")
        elif "\x00" in text or _SURROGATE.search(text):
            problems.add(f"{name}.{attribute}", "Must not contain NUL or unpaired surrogate characters.")
    return value if len(problems.errors) == before else None


def _rollout_clean(value: object, name: str, problems: BatchProblems) -> None:
    """The shape of a rollout exposure's ``rollout``: ``{"surface", "salt", "percent", "group"}``."""
    if not isinstance(value, dict):
        problems.add(name, 'Must be an object {"surface", "salt", "percent", "group"}.')
        return
    for unknown in sorted(set(value) - _ROLLOUT_FIELDS, key=str):
        problems.add(f"{name}.{unknown}", "Unknown field.")
    for required in sorted(_ROLLOUT_FIELDS - set(value)):
        problems.add(f"{name}.{required}", "This field is required.")
    for key in ("surface", "salt"):
        if key in value and (issue := text_problem(value[key], max_length=MAX_KEY_LENGTH)) is not None:
            problems.add(f"{name}.{key}", issue)
    percent = value.get("percent")
    if "percent" in value and (isinstance(percent, bool) or not isinstance(percent, int | float)
                               or not 0 < percent <= 100):
        problems.add(f"{name}.percent", "Must be the rollout's percent in the configuration the client assigned "
                     "with: a number above 0, at most 100.")
    if "group" in value and value["group"] not in _ROLLOUT_GROUPS:
        problems.add(f"{name}.group", 'Must be "rollout" (the shipped treatment) or "default" (the previous default).')


def exposures_check(*, exposures: object, now: datetime | None = None) -> list[dict]:
    """Validate a batch's shape and fields without the database: the clean exposures, or a ValidationError.

    Errors are keyed ``exposures[i].field``. The same (experiment, subject) twice
    in a batch is one exposure: the earliest time is kept.
    """
    now = now or timezone.now()
    batch_envelope_check(field="exposures", batch=exposures, limit=MAX_EXPOSURES_PER_BATCH)
    problems = BatchProblems()
    cleaned = []
    for index, exposure in enumerate(exposures):
        prefix = f"exposures[{index}]"
        if not isinstance(exposure, dict):
            problems.add(prefix, "Must be an object.")
            continue
        before = len(problems.errors)
        for unknown in sorted(set(exposure) - _FIELDS, key=str):
            problems.add(f"{prefix}.{unknown}", "Unknown field.")
        of_rollout = "rollout" in exposure
        for required in _ROLLOUT_REQUIRED if of_rollout else _REQUIRED:
            if required not in exposure:
                problems.add(f"{prefix}.{required}", "This field is required.")
        if of_rollout:
            for other in ("experiment", "arm"):
                if other in exposure:
                    problems.add(f"{prefix}.{other}", "A rollout exposure names no experiment nor arm: "
                                 "send either experiment and arm, or rollout.")
            _rollout_clean(exposure["rollout"], f"{prefix}.rollout", problems)
        if "subject_id" in exposure and (issue := subject_id_problem(exposure["subject_id"])) is not None:
            problems.add(f"{prefix}.subject_id", issue)
        for key in ("experiment", "arm"):
            if key in exposure and (issue := text_problem(exposure[key], max_length=MAX_KEY_LENGTH)) is not None:
                problems.add(f"{prefix}.{key}", issue)
        moment = timestamp_clean(exposure["timestamp"], f"{prefix}.timestamp", problems, now) if "timestamp" in exposure else None
        attributes = (
            _attributes_clean(exposure["attributes"], f"{prefix}.attributes", problems) if "attributes" in exposure else {}
        )
        if len(problems.errors) == before:
            cleaned.append({**exposure, "timestamp": moment, "attributes": attributes, "index": index})
    problems.raise_if_any()
    return cleaned


def _assignment_problem(config: ExperimentConfig, exposure: Mapping[str, object]) -> tuple[str, str] | None:
    """Why the server's assignment would not give this subject this arm (field, message), or None."""
    if exposure["arm"] not in config.arms_by_key:
        return "arm", f"Unknown arm of experiment {config.key!r}; its arms are {', '.join(config.arms_by_key)}."
    if not targeting_matches(config.targeting, exposure["attributes"]):
        return "attributes", "Do not match the experiment's targeting: the subject is not in it."
    expected = assign(config.spec, exposure["subject_id"])
    if expected is None:
        return "arm", "The subject is in no arm of this experiment (holdout, layer or coverage)."
    if expected != exposure["arm"]:
        return "arm", f"Not the subject's arm: the algorithm assigns {expected!r} (docs/assignment.md)."
    return None


def exposures_record(*, exposures: object, now: datetime | None = None) -> ExposuresRecorded:
    """Record first exposures assigned by a client (``POST /api/v1/exposures``): all or nothing, idempotent.

    Each exposure names a running experiment, the arm the documented algorithm
    assigns the subject (checked: another arm, or a subject the holdout, layer,
    coverage or targeting leaves out, is refused), its time (not before the
    experiment started) and optionally the subject's attributes (stored on a new
    subject, as an assignment stores them; they must match the targeting). Any
    problem raises a ``ValidationError`` keyed ``exposures[i].field`` and writes
    nothing. An exposure already stored is not duplicated: its time becomes the
    earlier of the two when the arm is the same (a subject exposed in an earlier
    phase keeps its row). Subjects who restricted processing or objected get no
    exposure, as the server's own assignment gives them none.
    """
    now = now or timezone.now()
    cleaned = exposures_check(exposures=exposures, now=now)
    configs = {config.key: config for config in running_experiment_configs()}
    problems = BatchProblems()
    started = dict(
        Experiment.objects.filter(id__in=[config.id for config in configs.values()]).values_list("id", "started_at")
    )
    earliest: dict[tuple[int, str], dict] = {}
    rollouts = _RolloutsRamping.load() if any("rollout" in exposure for exposure in cleaned) else None
    earliest_rollout: dict[tuple[int, int, str], dict] = {}
    for exposure in cleaned:
        prefix = f"exposures[{exposure['index']}]"
        if "rollout" in exposure:
            found = rollouts.check(exposure, configs=configs.values(), prefix=prefix, problems=problems)
            if found is not None:
                key = (*found, exposure["subject_id"])
                if key not in earliest_rollout or exposure["timestamp"] < earliest_rollout[key]["timestamp"]:
                    earliest_rollout[key] = {**exposure, "rollout_id": found[0], "step_index": found[1]}
            continue
        config = configs.get(exposure["experiment"])
        if config is None:
            problems.add(f"{prefix}.experiment", "No running experiment has this key.")
            continue
        problem = _assignment_problem(config, exposure)
        if problem is not None:
            problems.add(f"{prefix}.{problem[0]}", problem[1])
            continue
        if started.get(config.id) and exposure["timestamp"] < started[config.id]:
            problems.add(f"{prefix}.timestamp", "Is before the experiment started: it cannot have been exposed then.")
            continue
        key = (config.id, exposure["subject_id"])
        if key not in earliest or exposure["timestamp"] < earliest[key]["timestamp"]:
            earliest[key] = {**exposure, "config": config}
    problems.raise_if_any()
    return _exposures_insert(list(earliest.values()), received=len(cleaned), rollout_exposures=list(earliest_rollout.values()))


class _RolloutsRamping:
    """The ramping rollouts by surface, to check rollout exposures against (the server's own assignment's rules)."""

    def __init__(self, by_surface: dict[str, Rollout]) -> None:
        self.by_surface = by_surface

    @classmethod
    def load(cls) -> "_RolloutsRamping":
        ramping = Rollout.objects.filter(status=Rollout.Status.RAMPING).select_related("surface")
        return cls({rollout.surface.key: rollout for rollout in ramping})

    def check(self, exposure: dict, *, configs, prefix: str, problems: BatchProblems) -> tuple[int, int] | None:
        """The (rollout id, step index) this exposure belongs to, or None with the problem added.

        The step is the latest one so far whose serving percent is the ``percent`` the
        client assigned with (a client a poll behind still reports the step it saw);
        its side must be the one the algorithm gives the subject at that percent, and
        the subject must be one the server compares: matched by the rollout's
        targeting and in no running experiment on the surface.
        """
        given = exposure["rollout"]
        rollout = self.by_surface.get(given["surface"])
        if rollout is None:
            problems.add(f"{prefix}.rollout.surface", "No rollout is ramping on this surface.")
            return None
        if given["salt"] != rollout.salt:
            problems.add(f"{prefix}.rollout.salt", "Not the salt of the surface's ramping rollout (one that ended?).")
            return None
        steps = [index for index in range(rollout.step_index + 1) if rollout.serving_percent(index) == given["percent"]]
        if not steps:
            so_far = ", ".join(str(rollout.serving_percent(index)) for index in range(rollout.step_index + 1))
            problems.add(f"{prefix}.rollout.percent", f"Not a percent the rollout has served so far ({so_far}).")
            return None
        spec = RolloutSpec(surface=rollout.surface.key, experiment="", arm="", salt=rollout.salt,
                           percent=float(given["percent"]), treatment={}, targeting=rollout.targeting or {})
        if not targeting_matches(spec.targeting, exposure["attributes"]):
            problems.add(f"{prefix}.attributes", "Do not match the rollout's targeting: the subject is not in it.")
            return None
        for config in configs:
            if (config.surface == rollout.surface.key and targeting_matches(config.targeting, exposure["attributes"])
                    and assign(config.spec, exposure["subject_id"]) is not None):
                problems.add(f"{prefix}.rollout", f"The subject is in experiment {config.key!r} on this surface: "
                             "they get its arm, not the rollout's comparison.")
                return None
        expected = "rollout" if spec.reaches(exposure["subject_id"], exposure["attributes"]) else "default"
        if given["group"] != expected:
            problems.add(f"{prefix}.rollout.group",
                         f"Not the subject's side: at {given['percent']}% the algorithm gives {expected!r} "
                         "(docs/surfaces.md).")
            return None
        if exposure["timestamp"] < rollout.created_at:
            problems.add(f"{prefix}.timestamp", "Is before the rollout started: it cannot have been exposed then.")
            return None
        return rollout.pk, steps[-1]


def _exposures_insert(exposures: list[dict], *, received: int, rollout_exposures: list[dict] = ()) -> ExposuresRecorded:
    pseudonyms = {exposure["subject_id"]: subject_pseudonym(exposure["subject_id"])
                  for exposure in [*exposures, *rollout_exposures]}
    with transaction.atomic():
        blocked = _blocked_subjects(sorted(set(pseudonyms.values())))
        allowed = [exposure for exposure in exposures if pseudonyms[exposure["subject_id"]] not in blocked]
        allowed_rollout = [exposure for exposure in rollout_exposures if pseudonyms[exposure["subject_id"]] not in blocked]
        subjects = {}
        for exposure in [*allowed, *allowed_rollout]:
            attributes = exposure["attributes"]
            subjects.setdefault(pseudonyms[exposure["subject_id"]], tuple(
                str(attributes[name]) if attributes.get(name) is not None else "" for name in SUBJECT_ATTRIBUTES
            ))
        _subjects_insert(subjects)
        rows = [
            (
                exposure["config"].id,
                exposure["config"].arms_by_key[exposure["arm"]].id,
                pseudonyms[exposure["subject_id"]],
                exposure["config"].phase,
                exposure["timestamp"],
            )
            for exposure in allowed
        ]
        existing = _exposures_upsert(rows)
        rollout_rows = [
            (exposure["rollout_id"], exposure["step_index"], pseudonyms[exposure["subject_id"]],
             exposure["rollout"]["group"], exposure["timestamp"])
            for exposure in allowed_rollout
        ]
        existing += _rollout_exposures_upsert(rollout_rows)
    stored = len(rows) + len(rollout_rows)
    return ExposuresRecorded(
        received=received, recorded=stored - existing, duplicates=existing,
        withheld=len(exposures) + len(rollout_exposures) - len(allowed) - len(allowed_rollout),
    )


def _blocked_subjects(pseudonyms: list[str]) -> set[str]:
    """The subjects among these who restricted processing or objected."""
    return {pseudonym for pseudonym, limit in subjects_processing_limits(pseudonyms=pseudonyms).items() if limit}


def _subjects_insert(subjects: dict[str, tuple[str, ...]]) -> None:
    """Create the subjects not yet known, with their attributes (an existing subject is left as it is)."""
    if not subjects:
        return
    if connection.vendor == "postgresql":
        quote = connection.ops.quote_name
        table = quote(Subject._meta.db_table)
        names = ", ".join(quote(Subject._meta.get_field(name).column) for name in SUBJECT_ATTRIBUTES)
        aliases = ", ".join(f"a{i}" for i in range(len(SUBJECT_ATTRIBUTES)))
        with binary_cursor() as cursor:
            # The ORM's bulk_create prepared every value through its field: most of a batch's time.
            cursor.execute(
                f"INSERT INTO {table} (pseudonym, {names}, first_seen) "  # noqa: S608 — our identifiers
                f"SELECT p, {aliases}, STATEMENT_TIMESTAMP() "
                f"FROM unnest({unnest_casts(Subject, ['pseudonym', *SUBJECT_ATTRIBUTES])}) AS n(p, {aliases}) "
                "ON CONFLICT (pseudonym) DO NOTHING",
                column_arrays([(pseudonym, *values) for pseudonym, values in subjects.items()]),
            )
        return
    Subject.objects.bulk_create(
        [Subject(pseudonym=pseudonym, **dict(zip(SUBJECT_ATTRIBUTES, values, strict=True)))
         for pseudonym, values in subjects.items()],
        ignore_conflicts=True,
    )


# Rows per statement on SQLite: a batch at most (5 parameters a row, within its 32,766).
_SQLITE_ROWS = MAX_EXPOSURES_PER_BATCH


def _exposures_upsert(rows: list[tuple]) -> int:
    """Insert the exposures, keeping the earlier time of one already stored with the same arm; how many were stored.

    One statement (PostgreSQL: arrays per column through ``unnest``, bound
    server-side, as the events' insert does). A row whose time moves earlier has
    its ``stored_at`` moved to now, so the metric facts refresh, which looks for
    rows recorded late, reads it again.
    """
    if not rows:
        return 0
    quote = connection.ops.quote_name
    table = quote(Exposure._meta.db_table)
    columns = ("experiment_id", "arm_id", "subject_id", "phase", "first_exposed_at")
    column_list = ", ".join(quote(column) for column in columns)
    # The database's clock, as the column's default (Now()) writes it on each backend.
    db_now = "STATEMENT_TIMESTAMP()" if connection.vendor == "postgresql" else "STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW')"
    conflict = (
        f"ON CONFLICT (experiment_id, subject_id) DO UPDATE SET first_exposed_at = excluded.first_exposed_at, "
        f"stored_at = {db_now} WHERE {table}.arm_id = excluded.arm_id "
        f"AND {table}.first_exposed_at > excluded.first_exposed_at"
    )
    pairs_existing = 0
    if connection.vendor == "postgresql":
        # One statement, one round trip, each column's array sent once: the rows, how many of them
        # were already stored (counted on the statement's snapshot, i.e. before the insert), the upsert.
        with binary_cursor() as cursor:
            cursor.execute(
                f"WITH n ({column_list}) AS (SELECT * FROM unnest({unnest_casts(Exposure, columns)})), "  # noqa: S608 — our identifiers
                f"stored AS (INSERT INTO {table} ({column_list}) SELECT * FROM n {conflict}) "
                f"SELECT count(*) FROM {table} e JOIN n "
                "ON e.experiment_id = n.experiment_id AND e.subject_id = n.subject_id",
                column_arrays(rows),
            )
            return cursor.fetchone()[0]
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _SQLITE_ROWS):
            chunk = rows[start : start + _SQLITE_ROWS]
            pairs = ", ".join(["(%s, %s)"] * len(chunk))
            cursor.execute(
                f"SELECT count(*) FROM {table} WHERE (experiment_id, subject_id) IN (VALUES {pairs})",  # noqa: S608
                [value for row in chunk for value in (row[0], row[2])],
            )
            pairs_existing += cursor.fetchone()[0]
            values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(chunk))
            cursor.execute(
                f"INSERT INTO {table} ({column_list}) VALUES {values} {conflict}",  # noqa: S608
                [value for row in chunk for value in (*row[:4], adapt(row[4]))],
            )
    return pairs_existing


def _rollout_exposures_upsert(rows: list[tuple]) -> int:
    """Insert rollout exposures ``(rollout, step, subject, group, time)``, keeping the earlier time of one already
    stored on the same side; how many were already stored. (A few per batch: plain parameter lists.)"""
    if not rows:
        return 0
    quote = connection.ops.quote_name
    table = quote(RolloutExposure._meta.db_table)
    group = quote(RolloutExposure._meta.get_field("group").column)
    adapt = connection.ops.adapt_datetimefield_value
    existing = 0
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _SQLITE_ROWS):
            chunk = rows[start : start + _SQLITE_ROWS]
            keys = " OR ".join(["(rollout_id = %s AND step_index = %s AND subject_id = %s)"] * len(chunk))
            cursor.execute(
                f"SELECT count(*) FROM {table} WHERE {keys}",  # noqa: S608 — our identifiers
                [value for row in chunk for value in row[:3]],
            )
            existing += cursor.fetchone()[0]
            values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(chunk))
            cursor.execute(
                f"INSERT INTO {table} (rollout_id, step_index, subject_id, {group}, first_exposed_at) "  # noqa: S608
                f"VALUES {values} ON CONFLICT (rollout_id, step_index, subject_id) DO UPDATE SET "
                f"first_exposed_at = excluded.first_exposed_at WHERE {table}.{group} = excluded.{group} "
                f"AND {table}.first_exposed_at > excluded.first_exposed_at",
                [value for row in chunk for value in (*row[:4], adapt(row[4]))],
            )
    return existing
