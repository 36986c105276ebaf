"""The errors a Celery task retries: the database briefly unreachable (a restart, a failover, a dropped connection).

Anything else is a bug or bad data, and retrying would only repeat it. An
app adds its own transient errors to this tuple (consent: the cache down
during an erasure).
"""

from django.db import InterfaceError, OperationalError

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)
