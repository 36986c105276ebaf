"""The consent operation's request schema, stated from the purposes and notices in the database.

Which purposes a decision may name, and which notice version a grant or a
withdrawal may cite, are data an administrator changes (``Purpose``,
``Notice``), so no static serializer can state them. A drf-spectacular
postprocessing hook rewrites ``ConsentEventIn`` each time the schema is
generated into alternatives by action and purpose, each with exactly the
notice versions ``services.ledger.consent_events_check`` accepts at that moment: a
grant names a version in effect and not superseded by one that requires
re-consent; a withdrawal names any version of the purpose's notice, or none.
The schema is therefore true as of when it was fetched; a client that caches it
fetches it again after a notice changes (docs/operations.md, "The API contract").
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from datetime import datetime

from django.db import DatabaseError
from django.utils import timezone

from consent.models import ConsentEvent
from consent.selectors import PurposeRule, purpose_rules_load

Action = ConsentEvent.Action
logger = logging.getLogger(__name__)


def consent_event_alternatives(
    *, base: Mapping, rules: Mapping[str, PurposeRule], now: datetime
) -> list[dict]:
    """One object schema per action and set of notice versions, built on ``base`` (the serializer's).

    Purposes that accept the same versions share an alternative (a purpose enum):
    the same rules, in as few alternatives as they need (each one multiplies the
    cases a schema-driven test generates).
    """
    common = {name: base["properties"][name] for name in ("event_id", "subject_id", "source") if name in base["properties"]}
    notice_help = base["properties"].get("notice_version", {}).get("description", "")
    groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for key in sorted(rules):
        rule = rules[key]
        grantable = tuple(
            notice.version
            for notice in rule.notices
            if notice.effective_at <= now and rule.version_counts(notice.version, now)
        )
        if grantable:  # else no notice a grant could cite yet: no grant of this purpose is accepted
            groups.setdefault((Action.GRANT.value, grantable), []).append(key)
        groups.setdefault((Action.WITHDRAW.value, tuple(notice.version for notice in rule.notices)), []).append(key)
    alternatives = []
    for (action, versions), purposes in groups.items():
        grant = action == Action.GRANT.value
        properties = {
            **copy.deepcopy(common),
            "purpose": {"type": "string", "enum": purposes},
            "action": {"type": "string", "enum": [action]},
        }
        if versions:
            properties["notice_version"] = {"type": "string", "enum": list(versions), "description": notice_help}
        alternatives.append(
            {
                "title": f"{action}: {', '.join(purposes)}",
                "type": "object",
                "properties": properties,
                "required": ["subject_id", "purpose", "action", *(["notice_version"] if grant else [])],
                "additionalProperties": False,
            }
        )
    return alternatives


def consent_schema_postprocess(result, generator, request, public):
    """drf-spectacular postprocessing hook: ``ConsentEventIn`` as the database has it now."""
    schemas = result.get("components", {}).get("schemas", {})
    base = schemas.get("ConsentEventIn")
    if base is None or "properties" not in base:
        return result
    try:
        rules = purpose_rules_load()
    except DatabaseError:
        # No database to read (``manage.py check`` on an unmigrated one runs drf-spectacular's
        # own check, which builds the schema): the serializer's looser shape, said so.
        logger.warning("consent schema: purposes not readable; ConsentEventIn left unenumerated")
        return result
    alternatives = consent_event_alternatives(base=base, rules=rules, now=timezone.now())
    schemas["ConsentEventIn"] = {
        "description": "One consent decision. The alternatives are the purposes and the notice versions "
        "the server accepts as of when this schema was generated (they are data an administrator "
        "changes): a grant cites a version in effect and not superseded by one requiring re-consent; "
        "a withdrawal cites any version of the purpose's notice, or none.",
        # No alternative at all (no purposes configured) accepts nothing.
        **({"oneOf": alternatives} if alternatives else {"not": {}}),
    }
    return result
