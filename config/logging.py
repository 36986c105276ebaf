"""Keep raw subject ids out of logs.

Subject ids travel in some URL paths (``/api/v1/subjects/<id>/...``,
``/api/v1/recommendations/<id>``) and Django and gunicorn log paths of failed
requests. This filter rewrites every record so those path segments read
``<subject>`` before any handler formats it — however the path is written:
repeated slashes (``//api/v1//subjects/…``), percent-encoded slashes
(``%2F``), any letter case (a request that misses a route is logged too).
"""

import logging
import re

_SLASH = r"(?:/|%2f)+"
_SUBJECT_IN_PATH = re.compile(
    rf"({_SLASH}api{_SLASH}v\d+{_SLASH}(?:subjects|recommendations){_SLASH})(?:%(?!2f)|[^/?#%\s\"'])+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    return _SUBJECT_IN_PATH.sub(r"\1<subject>", text)


class RedactSubjectIds(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logged as it is
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def logging_config(*, loggers: dict, root_level: str | None = None) -> dict:
    """A dictConfig whose one handler writes to stdout through the redaction filter.

    Shared by Django's LOGGING and gunicorn's logconfig_dict, so both redact alike.
    """
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact_subject_ids": {"()": "config.logging.RedactSubjectIds"}},
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "filters": ["redact_subject_ids"],
            }
        },
        "loggers": loggers,
    }
    if root_level is not None:
        config["root"] = {"handlers": ["console"], "level": root_level}
    return config
