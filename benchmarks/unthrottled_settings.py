"""Production settings with API throttling switched off: the baseline the throttle's cost is read against.

Only ``benchmarks/bench_assignment.py`` uses it, for a gunicorn beside the
production-configured one; nothing deploys it.
"""

from config.settings import *  # noqa: F403
from config.settings import REST_FRAMEWORK

REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": []}
