"""Assigning a subject to the running experiments' arms and recording first exposures."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from consent.models import Subject
from consent.pseudonyms import subject_pseudonym
from experiments.models import Exposure
from experiments.selectors import arms_matched, running_experiment_configs, surface_defaults
from privacylab_client.surfaces import surface_treatments

SUBJECT_ATTRIBUTES = ("age_band", "province", "platform")


@dataclass(frozen=True)
class Assignment:
    experiment: str
    arm: str
    treatment: dict


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
    treatments = surface_treatments(
        defaults=surfaces.defaults,
        assignments=[{"experiment": a.experiment, "arm": a.arm, "treatment": a.treatment} for a in assignments],
        experiment_surfaces={config.key: config.surface for config in configs},
        personal_allowed=not blocked,
        rollouts=surfaces.rollouts,
        subject_id=subject_id,
        attributes=attributes,
    )
    return SubjectAssignment(assignments=assignments, treatments=treatments)


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
        result.append(Assignment(experiment=config.key, arm=arm.key, treatment=arm.treatment))
    return False, result


def _subject_blocked(pseudonym: str) -> bool:
    """Whether the subject restricted processing or objected (an unknown subject has not)."""
    return Subject.objects.filter(pseudonym=pseudonym).filter(
        Q(restricted_at__isnull=False) | Q(objected_at__isnull=False)
    ).exists()


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
    # The API refuses longer values (400 naming the attribute); other callers are cut to the column.
    subject_fields = {
        name: str(attributes[name])[: Subject._meta.get_field(name).max_length]
        for name in SUBJECT_ATTRIBUTES
        if attributes.get(name) is not None
    }
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
