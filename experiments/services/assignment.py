"""Assigning a subject to the running experiments' arms and recording first exposures."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from consent.models import Subject
from consent.pseudonyms import subject_pseudonym
from consent.selectors import subjects_processing_limits
from experiments.assignment import targeting_matches
from experiments.contracts import TreatmentContract
from experiments.models import Exposure, RolloutExposure
from experiments.selectors import arms_matched, running_experiment_configs, surface_defaults
from privacylab_client.surfaces import surface_treatments

SUBJECT_ATTRIBUTES = ("age_band", "province", "platform")
# A subject's attributes, as the assignment request and the exposure ingest both accept them:
# the ones the Subject row keeps at most their column's length, any other at most MAX_ATTRIBUTE_LENGTH.
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_LENGTH = 128
STORED_ATTRIBUTES = {name: Subject._meta.get_field(name).max_length for name in SUBJECT_ATTRIBUTES}


def attribute_max_length(name: str) -> int:
    """The longest text an attribute may hold."""
    return STORED_ATTRIBUTES.get(name) or MAX_ATTRIBUTE_LENGTH


@dataclass(frozen=True)
class Assignment:
    experiment: str
    arm: str
    treatment: TreatmentContract


@dataclass(frozen=True)
class SubjectAssignment:
    assignments: list[Assignment]
    treatments: dict[str, dict]  # surface → {"treatment", "source", "experiment", "arm"}


def subject_assign(
    *, subject_id: str, attributes: Mapping[str, object], now: datetime | None = None
) -> SubjectAssignment:
    """The subject's experiment arms (``assignments_for_subject``) and, per surface, the treatment they get and why.

    A subject who restricted processing or objected is in no experiment and gets no
    personal treatment: a surface whose default is personal serves them the built-in
    fallback (privacylab_client.surfaces). Their restriction is looked up only when
    it can change the answer: some experiment matched, or some default is personal.
    """
    configs = running_experiment_configs()
    surfaces = surface_defaults()
    blocked, assignments = _assign(configs, subject_id, attributes, now)
    if blocked is None and surfaces.any_personal:
        blocked = _subject_blocked(subject_pseudonym(subject_id))
    treatments = subject_treatments(
        configs=configs, surfaces=surfaces, assignments=assignments, subject_id=subject_id, attributes=attributes,
        personal_allowed=not blocked,
    )
    if surfaces.rollouts and not blocked:
        _record_rollout_exposures(subject_id, attributes, surfaces, treatments, now)
    return SubjectAssignment(assignments=assignments, treatments=treatments)


def subject_treatments(
    *, configs, surfaces, assignments: list[Assignment], subject_id: str, attributes: Mapping[str, object],
    personal_allowed: bool = True,
) -> dict[str, dict]:
    """Per surface, the treatment the subject gets and why, from the server's configuration (no write)."""
    return surface_treatments(
        defaults=surfaces.defaults,
        assignments=[{"experiment": a.experiment, "arm": a.arm, "treatment": a.treatment.to_dict()} for a in assignments],
        experiment_surfaces={config.key: config.surface for config in configs},
        personal_allowed=personal_allowed,
        rollouts=surfaces.rollouts,
        subject_id=subject_id,
        attributes=attributes,
    )


def _record_rollout_exposures(subject_id, attributes, surfaces, treatments, now) -> None:
    """Record, once per step, which side of each ramping rollout the subject is on (its health check compares them).

    Only the subjects the rollout could reach (its targeting; not in an experiment on
    the surface) are compared: the shipped treatment against the previous default.
    """
    rows = []
    for surface, spec in surfaces.rollouts.items():
        source = treatments[surface]["source"]
        if source == "rollout" or (source == "default" and targeting_matches(spec.targeting, attributes)):
            rollout_id, step_index = surfaces.rollout_steps[surface]
            rows.append((rollout_id, step_index, RolloutExposure.Group.ROLLOUT if source == "rollout"
                         else RolloutExposure.Group.DEFAULT))
    if not rows:
        return
    pseudonym = subject_pseudonym(subject_id)
    now = now or timezone.now()
    with transaction.atomic():
        Subject.objects.bulk_create([Subject(pseudonym=pseudonym, **_subject_fields(attributes))], ignore_conflicts=True)
        RolloutExposure.objects.bulk_create(
            [RolloutExposure(rollout_id=rollout_id, step_index=step_index, subject_id=pseudonym, group=group,
                             first_exposed_at=now) for rollout_id, step_index, group in rows],
            ignore_conflicts=True,
        )


def _subject_fields(attributes) -> dict:
    # The API refuses longer values (400 naming the attribute); other callers are cut to the column.
    return {
        name: str(attributes[name])[: Subject._meta.get_field(name).max_length]
        for name in SUBJECT_ATTRIBUTES
        if attributes.get(name) is not None
    }


def assignments_for_subject(
    *, subject_id: str, attributes: Mapping[str, object], now: datetime | None = None
) -> list[Assignment]:
    """Every running experiment the subject falls into, with its arm; records first exposures.

    The arm comes from the deterministic hash of the id the client sent; the
    first exposure is inserted ignoring conflicts and read back, so concurrent
    first requests all answer with the one stored arm. ``now`` (default: the
    clock) is the first exposure's time; the simulator replays a past fortnight.
    """
    return _assign(running_experiment_configs(), subject_id, attributes, now)[1]


def _assign(configs, subject_id, attributes, now) -> tuple[bool | None, list[Assignment]]:
    """Whether the subject is blocked (None: not looked up, no experiment matched) and their assignments."""
    matched = arms_matched(configs=configs, subject_id=subject_id, attributes=attributes)
    if not matched:
        return None, []
    pseudonym = subject_pseudonym(subject_id)
    blocked, stored = _subject_arms(pseudonym, list(matched))
    if blocked:
        # Restricted processing or an objection: the subject is in no experiment and gets the
        # surface's default (docs/privacy.md, "Legal basis of experiment measurement").
        return True, []
    missing = [experiment_id for experiment_id in matched if experiment_id not in stored]
    if missing:
        stored.update(_record_first_exposures(pseudonym, attributes, missing, matched, now))
    result = []
    for experiment_id, (config, _) in matched.items():
        arm = config.arms_by_id.get(stored[experiment_id])
        if arm is None:  # an arm removed since: cannot happen while running, but never 500
            continue
        result.append(Assignment(experiment=config.key, arm=arm.key, treatment=arm.contract))
    return False, result


def _subject_blocked(pseudonym: str) -> bool:
    """Whether the subject restricted processing or objected (an unknown subject has not)."""
    return bool(subjects_processing_limits(pseudonyms=[pseudonym]).get(pseudonym))


def _subject_arms(pseudonym: str, experiment_ids: list[int]) -> tuple[bool, dict[int, int]]:
    """Whether the subject restricted processing or objected, and their recorded arms.

    One statement, the subject's row joined with their exposures among these
    experiments: every request asks it, so the check costs no round trip.
    """
    subject = connection.ops.quote_name(Subject._meta.db_table)
    exposure = connection.ops.quote_name(Exposure._meta.db_table)
    placeholders = ", ".join(["%s"] * len(experiment_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT s.restricted_at IS NOT NULL OR s.objected_at IS NOT NULL, e.experiment_id, e.arm_id "  # noqa: S608 — our tables, placeholders only
            f"FROM {subject} s LEFT JOIN {exposure} e "
            f"ON e.subject_id = s.pseudonym AND e.experiment_id IN ({placeholders}) "
            "WHERE s.pseudonym = %s",
            [*experiment_ids, pseudonym],
        )
        rows = cursor.fetchall()
    blocked = any(row[0] for row in rows)
    return blocked, {row[1]: row[2] for row in rows if row[1] is not None}


def _stored_arms(pseudonym: str, experiment_ids: list[int]) -> dict[int, int]:
    """``{experiment_id: arm_id}`` of the subject's recorded exposures among these experiments.

    Plain SQL: this is every returning subject's request, and building the
    ORM query cost more than running it.
    """
    table = connection.ops.quote_name(Exposure._meta.db_table)
    placeholders = ", ".join(["%s"] * len(experiment_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT experiment_id, arm_id FROM {table} "  # noqa: S608 — our table, placeholders only
            f"WHERE subject_id = %s AND experiment_id IN ({placeholders})",
            [pseudonym, *experiment_ids],
        )
        return dict(cursor.fetchall())


def _record_first_exposures(pseudonym, attributes, experiment_ids, matched, now=None) -> dict[int, int]:
    now = now or timezone.now()
    subject_fields = _subject_fields(attributes)
    with transaction.atomic():
        Subject.objects.bulk_create([Subject(pseudonym=pseudonym, **subject_fields)], ignore_conflicts=True)
        Exposure.objects.bulk_create(
            [
                Exposure(
                    experiment_id=experiment_id,
                    arm_id=matched[experiment_id][0].arms_by_key[matched[experiment_id][1]].id,
                    subject_id=pseudonym,
                    phase=matched[experiment_id][0].phase,
                    first_exposed_at=now,
                )
                for experiment_id in experiment_ids
            ],
            ignore_conflicts=True,
        )
    return _stored_arms(pseudonym, experiment_ids)
