"""Writes of the consent app, one module per sub-domain; every public name is re-exported here.

- ``cache``: invalidating the subjects' cached consent state and the purposes' rules
- ``ledger``: recording grants and withdrawals (inputs, checks, the batch)
- ``ledger_writes``: the ledger's rows and the SQL that writes them, the state and the tallies
- ``state``: rebuilding the derived state from the ledger
- ``notices``: purposes and notices
- ``dsr``: data subject requests
- ``subjects``: one subject's export and erasure, in every app
- ``retention``: the retention purge

``from consent.services import X`` keeps working for callers outside the app;
inside it, import from the module that defines the name.
"""

from consent.services.cache import (
    consent_cache_invalidate,
    consent_cache_invalidations_retry,
    purpose_rules_changed,
)
from consent.services.dsr import (
    DSR_DUE_AFTER,
    CacheUnavailable,
    RequestNotCancellable,
    dsr_cancel,
    dsr_enqueue,
    dsr_enqueue_open,
    dsr_file,
    dsr_note_failure,
    dsr_process,
    erasure_grace,
    subject_processing_resume,
)
from consent.services.ledger import (
    MAX_BATCH_EVENTS,
    ConsentEventInput,
    ConsentEventsInvalid,
    ConsentSource,
    RecordedConsent,
    consent_events_check,
    consent_grant,
    consent_record,
    consent_withdraw,
)
from consent.services.ledger_writes import LEDGER_COLUMNS, STATE_FIELDS
from consent.services.notices import (
    notice_in_use,
    notice_save,
    notice_text_save,
    notice_texts_check,
    purpose_save,
)
from consent.services.retention import DSR_RECORD_KEPT_FOR, EXPORT_KEPT_FOR, consent_retention_purge
from consent.services.state import RebuildReport, consent_state_rebuild
from consent.services.subjects import ErasureSummary, subject_erase, subject_export

__all__ = [
    "DSR_DUE_AFTER",
    "DSR_RECORD_KEPT_FOR",
    "EXPORT_KEPT_FOR",
    "LEDGER_COLUMNS",
    "MAX_BATCH_EVENTS",
    "STATE_FIELDS",
    "CacheUnavailable",
    "ConsentEventInput",
    "ConsentEventsInvalid",
    "ConsentSource",
    "ErasureSummary",
    "RebuildReport",
    "RecordedConsent",
    "RequestNotCancellable",
    "consent_cache_invalidate",
    "consent_cache_invalidations_retry",
    "consent_events_check",
    "consent_grant",
    "consent_record",
    "consent_retention_purge",
    "consent_state_rebuild",
    "consent_withdraw",
    "dsr_cancel",
    "dsr_enqueue",
    "dsr_enqueue_open",
    "dsr_file",
    "dsr_note_failure",
    "dsr_process",
    "erasure_grace",
    "notice_in_use",
    "notice_save",
    "notice_text_save",
    "notice_texts_check",
    "purpose_rules_changed",
    "purpose_save",
    "subject_erase",
    "subject_export",
    "subject_processing_resume",
]
