"""One settings module, driven by environment variables.

With nothing set it runs the *embedded default*: a SQLite file, Celery tasks run
eagerly in-process and a local-memory cache, so `make demo` works on a bare
machine. With ``DATABASE_URL`` and ``REDIS_URL`` set it runs against PostgreSQL
and Redis (broker and cache) with a real Celery worker and beat: production.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from config.logging import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# The embedded default is for a laptop; the services mode is production and must
# bring its own secrets, whatever DEBUG says.
EMBEDDED = not env("DATABASE_URL", default="") and not env("REDIS_URL", default="")
_DEV_ONLY_SECRET = "embedded-default-not-for-production-" + "x" * 32  # noqa: S105
SECRET_KEY = env("DJANGO_SECRET_KEY", default=_DEV_ONLY_SECRET if EMBEDDED else "")
# Production answers only the hosts it is told (the test client's "testserver" is added by the tests).
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# Keyed-HMAC pseudonymisation of the marketplace's subject ids (see consent.pseudonyms):
# at least 32 bytes (HMAC-SHA256's output size; a shorter key can be guessed offline
# from stored pseudonyms and known ids). docs/operations.md: rotation and compromise.
PSEUDONYM_KEY_MIN_BYTES = 32
PSEUDONYM_KEY = env(
    "PRIVACYLAB_PSEUDONYM_KEY",
    default="embedded-default-pseudonym-key-not-for-production" if EMBEDDED else "",
)
for _name, _value in (("DJANGO_SECRET_KEY", SECRET_KEY), ("PRIVACYLAB_PSEUDONYM_KEY", PSEUDONYM_KEY)):
    if not _value:
        raise ImproperlyConfigured(
            f"{_name} must be set when running against services (DATABASE_URL/REDIS_URL), even with DEBUG."
        )
if len(PSEUDONYM_KEY.encode()) < PSEUDONYM_KEY_MIN_BYTES:
    raise ImproperlyConfigured(
        f"PRIVACYLAB_PSEUDONYM_KEY must be at least {PSEUDONYM_KEY_MIN_BYTES} bytes "
        f"(it has {len(PSEUDONYM_KEY.encode())}); e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))'."
    )

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    # Login lockout for the admin and the dashboard after repeated failures.
    "axes",
    # Object permissions (who may read an experiment's results); loads every app's rules.py.
    "rules.apps.AutodiscoverRulesConfig",
    "pgtrigger",
    "consent",
    "experiments",
    "recommender",
    # Last: the simulated marketplace and the demo, the one app that may import all the others.
    "marketplace",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.content_policy.CSPMiddleware",  # django-csp's, the unchanged policy built once
    # Last, as django-axes asks: it turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "config.context_processors.operations",
            ],
        },
    },
]

REDIS_URL = env("REDIS_URL", default="")
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DJANGO_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# The embedded default with its own worker and beat (``make demo`` while it serves):
# Celery over kombu's file-system transport in this folder, so scheduled work runs
# as in production with no server to install (docs/operations.md, "Embedded mode").
EMBEDDED_CELERY_DIR = env("PRIVACYLAB_EMBEDDED_CELERY_DIR", default="") if not REDIS_URL else ""
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A busy timeout instead of "database is locked" when the demo's server and
    # its workers write at the same time.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    if EMBEDDED_CELERY_DIR:
        # Three processes share the file: readers do not wait for a writer (WAL), and a
        # transaction takes the write lock when it begins, so two writers queue on the busy
        # timeout instead of one failing at once when it upgrades a read lock.
        DATABASES["default"]["OPTIONS"].update(
            init_command="PRAGMA journal_mode=WAL;", transaction_mode="IMMEDIATE"
        )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "privacylab",
            "OPTIONS": {
                # JSON, never pickle: whoever can write to Redis must not be able to
                # run code in the web and worker processes by planting a pickle.
                "SERIALIZER": "config.cache.JSONSerializer",
                "SOCKET_CONNECT_TIMEOUT": 0.5,
                "SOCKET_TIMEOUT": 0.5,
                # A cache outage must never become a 500: reads miss, writes
                # are dropped, and callers that need certainty check for it.
                "IGNORE_EXCEPTIONS": True,
            },
        }
    }
    DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
elif EMBEDDED_CELERY_DIR:
    # Web, worker and beat are separate processes: a withdrawal or a scheduled start in
    # the worker must reach the web's cache, so the cache is shared, in files. (Pickled,
    # unlike Redis's JSON: the folder is as private as the SQLite file beside it.)
    CACHES = {
        "default": {
            "BACKEND": "config.cache.SharedFileCache",
            "LOCATION": str(Path(EMBEDDED_CELERY_DIR) / "cache"),
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }
else:
    # Consent state and recommendations are cached per subject: room for a demo's population.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": env.int("DJANGO_PASSWORD_MIN_LENGTH", default=12)},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first (it refuses a locked-out login before a password is checked),
# then ModelBackend (logins, model permissions); rules answers the per-object
# questions such as "may this user read this experiment's results?".
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "rules.permissions.ObjectPermissionBackend",
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
# Staff and dashboard sessions end after this many hours, whatever the activity.
SESSION_COOKIE_AGE = int(env.float("DJANGO_SESSION_HOURS", default=12) * 3600)
# Lockout (django-axes): after AXES_FAILURE_LIMIT failed logins of one username, or
# from one address, that username (address) cannot log in for the cool-off period.
# Behind a reverse proxy, PRIVACYLAB_TRUSTED_PROXIES says how many proxies append to
# X-Forwarded-For, so the client's address is read past them (config.security).
AXES_FAILURE_LIMIT = env.int("PRIVACYLAB_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("PRIVACYLAB_LOGIN_COOLOFF_HOURS", default=0.25)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_CLIENT_IP_CALLABLE = "config.security.client_ip"
TRUSTED_PROXIES = env.int("PRIVACYLAB_TRUSTED_PROXIES", default=0)
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

# Content-Security-Policy (django-csp): the dashboard, the admin and the API docs
# load scripts, styles and images from this site only; nothing inline, no frames.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "Asia/Jakarta"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env("DJANGO_STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
if EMBEDDED or DEBUG:
    STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise serves from the finders, but wants the folder
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG or EMBEDDED
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# The embedded default serves static files straight from the apps (no collectstatic).
WHITENOISE_USE_FINDERS = DEBUG or EMBEDDED

# Requests are small JSON documents; anything larger is refused before parsing.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("PRIVACYLAB_MAX_REQUEST_BYTES", default=2 * 1024 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["config.authentication.ApiKeyAuthentication"],
    # Every view names the key scope it needs (config.permissions); none named: refused.
    "DEFAULT_PERMISSION_CLASSES": ["config.permissions.ScopeRequired"],
    "DEFAULT_THROTTLE_CLASSES": ["config.throttling.KeyRateThrottle"],
    # Per API key. Serving carries the marketplace's production traffic: its default is
    # far above what one gunicorn host serves (docs/benchmarks.md); the subject
    # endpoints read or erase one person's data and are kept tight.
    "DEFAULT_THROTTLE_RATES": {
        "serving": env("PRIVACYLAB_THROTTLE_SERVING", default="1200000/min"),
        "subjects": env("PRIVACYLAB_THROTTLE_SUBJECTS", default="120/min"),
    },
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["config.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "config.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "PrivacyLab API",
    "DESCRIPTION": "Assignments, consent, recommendations, outcome events and data subject requests.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and the docs are public; every operation in them needs a key.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Fields named "status" and "type" with different choices: each enum its own name.
    "ENUM_NAME_OVERRIDES": {
        "ConsentStatusEnum": ["granted", "withdrawn", "expired", "reconsent_required", "not_set"],
        "RequestStatusEnum": ["received", "completed", "cancelled"],
        "RequestTypeEnum": ["access", "erasure", "restriction", "objection"],
        "EventTypeEnum": ["order", "rec_impression", "rec_click"],
        "TreatmentSourceEnum": ["experiment", "rollout", "default", "fallback"],
    },
    # The consent operation's purposes and notice versions, from the database at schema time.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "consent.schema.consent_schema_postprocess",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Swagger UI's default validator puts a badge from validator.swagger.io on every page served
    # from a public host: nothing on these pages may come from the internet.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

# Data subject requests (consent.services.dsr): an erasure waits this long, cancellable,
# before it runs; it must leave time within the 3 × 24 hour due time.
ERASURE_GRACE_HOURS = env.float("PRIVACYLAB_ERASURE_GRACE_HOURS", default=24.0)
if not 0 <= ERASURE_GRACE_HOURS <= 60:
    raise ImproperlyConfigured("PRIVACYLAB_ERASURE_GRACE_HOURS must be from 0 to 60 (erasures are due in 72 hours).")

# Retention of experiment measurement data (docs/privacy.md): exposures, and the
# per-exposure metric facts derived from them, are deleted this many days after
# their experiment ended; the results (aggregates) stay.
EXPOSURE_RETENTION_DAYS = env.int("PRIVACYLAB_EXPOSURE_RETENTION_DAYS", default=365)
METRIC_FACTS_RETENTION_DAYS = env.int("PRIVACYLAB_METRIC_FACTS_RETENTION_DAYS", default=30)
# Segment results and exports never show a cell of fewer subjects than this.
MIN_CELL_SUBJECTS = env.int("PRIVACYLAB_MIN_CELL_SUBJECTS", default=20)

# Tunables the apps read when their modules are imported (docs/operations.md, "Tunables"),
# each from its environment variable, with the default the app used to carry itself.
# Consent state cache (consent.selectors): an entry's longest life, whatever its invalidation does.
CONSENT_STATE_CACHE_SECONDS = env.int("PRIVACYLAB_CONSENT_STATE_CACHE_SECONDS", default=120)
# How long an invalidation's tombstone holds a subject's consent state entry.
CONSENT_STATE_TOMBSTONE_SECONDS = env.float("PRIVACYLAB_CONSENT_STATE_TOMBSTONE_SECONDS", default=10)
# Recommendations (recommender.services; docs/recommender.md, "Settings"): list length per subject.
RECOMMENDER_TOP_N = env.int("PRIVACYLAB_RECOMMENDER_TOP_N", default=50)
# A shipped arm's rollout (docs/surfaces.md): the default ramp, percent of the surface's traffic per
# step, and how long each step is held before the next.
ROLLOUT_STEPS = tuple(env.list("PRIVACYLAB_ROLLOUT_STEPS", cast=int, default=[10, 25, 50, 100]))
ROLLOUT_HOLD_HOURS = env.float("PRIVACYLAB_ROLLOUT_HOLD_HOURS", default=24)
# At the ramp's 100% step, the percent of the surface's traffic kept on the previous default
# during the final hold, so the health check still compares (0: nothing to compare at 100%).
ROLLOUT_FINAL_HOLDBACK_PERCENT = env.int("PRIVACYLAB_ROLLOUT_FINAL_HOLDBACK_PERCENT", default=5)
# Item-item neighbours kept per item.
RECOMMENDER_NEIGHBOURS = env.int("PRIVACYLAB_RECOMMENDER_NEIGHBOURS", default=50)
# Item-item weighting: cosine or bm25.
RECOMMENDER_WEIGHTING = env("PRIVACYLAB_RECOMMENDER_WEIGHTING", default="cosine")
# Items one subject may contribute to differentially private counts.
RECOMMENDER_DP_CLIP = env.int("PRIVACYLAB_RECOMMENDER_DP_CLIP", default=20)
# The DP mechanism: laplace or gaussian.
RECOMMENDER_DP_MECHANISM = env("PRIVACYLAB_RECOMMENDER_DP_MECHANISM", default="laplace")
# δ of the Gaussian mechanism.
RECOMMENDER_DP_DELTA = env.float("PRIVACYLAB_RECOMMENDER_DP_DELTA", default=1e-6)
# Training window in days (capped by the arm's retention).
RECOMMENDER_HISTORY_DAYS = env.int("PRIVACYLAB_RECOMMENDER_HISTORY_DAYS", default=180)
# Builds per arm whose lists are kept.
RECOMMENDER_KEEP_BUILDS = env.int("PRIVACYLAB_RECOMMENDER_KEEP_BUILDS", default=24)
# Lifetime of a build's cache keys (26 hours).
RECOMMENDER_CACHE_SECONDS = env.int("PRIVACYLAB_RECOMMENDER_CACHE_SECONDS", default=26 * 3600)
# Usable interactions a build needs; with fewer it is not built.
RECOMMENDER_MIN_INTERACTIONS = env.int("PRIVACYLAB_RECOMMENDER_MIN_INTERACTIONS", default=1)
# The metric statement (experiments.metrics; docs/metrics.md): its PostgreSQL work_mem.
PRIVACYLAB_METRICS_WORK_MEM = env("PRIVACYLAB_METRICS_WORK_MEM", default="64MB")
# Above this share of all subjects exposed, the statement's streamed form runs.
PRIVACYLAB_METRICS_STREAM_SHARE = env.float("PRIVACYLAB_METRICS_STREAM_SHARE", default=0.3)
# How long a writing transaction may stay open: its late rows are still found by the next facts refresh.
PRIVACYLAB_METRICS_LATE_MARGIN_MINUTES = env.float("PRIVACYLAB_METRICS_LATE_MARGIN_MINUTES", default=15)

# Celery: JSON only; a task is acknowledged after it ran, and redelivered if the
# worker dies mid-task, so every task must be idempotent.
if REDIS_URL:
    CELERY_BROKER_URL = CELERY_RESULT_BACKEND = REDIS_URL
elif EMBEDDED_CELERY_DIR:
    # Messages are files in one folder that every process both writes and reads;
    # results are files too (celery's file-system backend).
    CELERY_BROKER_URL = "filesystem://"
    CELERY_RESULT_BACKEND = "file://" + str(Path(EMBEDDED_CELERY_DIR).resolve() / "results")
else:
    CELERY_BROKER_URL, CELERY_RESULT_BACKEND = "memory://", "cache+memory://"
# No broker a worker listens on: tasks run in-process, and nothing scheduled runs.
CELERY_TASK_ALWAYS_EAGER = not (REDIS_URL or EMBEDDED_CELERY_DIR)
# Whether beat and a worker run the periodic schedule (config/schedule.py) in this
# deployment; the pages say so when they do not.
SCHEDULED_TASKS_RUN = not CELERY_TASK_ALWAYS_EAGER
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
# Lets the dashboard tell a running recompute from a queued one.
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=30 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=25 * 60)
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Redis redelivers an unacknowledged task after this; it must exceed the longest task.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 600}
if EMBEDDED_CELERY_DIR:
    _messages = str(Path(EMBEDDED_CELERY_DIR).resolve() / "messages")
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": _messages,
        "data_folder_out": _messages,
        "control_folder": str(Path(EMBEDDED_CELERY_DIR).resolve() / "control"),
    }
    for _folder in ("messages", "control", "results", "cache"):
        (Path(EMBEDDED_CELERY_DIR) / _folder).mkdir(parents=True, exist_ok=True)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Production hardening: `manage.py check --deploy` passes with DEBUG off.
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not EMBEDDED)
    SESSION_COOKIE_SECURE = not EMBEDDED
    CSRF_COOKIE_SECURE = not EMBEDDED
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0 if EMBEDDED else 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = not EMBEDDED
    SECURE_HSTS_PRELOAD = not EMBEDDED
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REDIRECT_EXEMPT = [r"^health/$"]
X_FRAME_OPTIONS = "DENY"

LOGGING = logging_config(
    root_level=env("DJANGO_LOG_LEVEL", default="INFO"),
    loggers={
        "django.db.backends": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
        # runserver's request lines (make demo) go through the redaction too.
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
)
# Warehouse data sources (experiments.warehouse; docs/warehouse.md): connection URLs by the
# name a DataSource row gives in url_setting (JSON object), looked up before the environment.
PRIVACYLAB_WAREHOUSE_URLS = env.json("PRIVACYLAB_WAREHOUSE_URLS", default={})
# Where the scheduled export appends exposures and consent decisions (a URL: duckdb:///…,
# postgres://…, parquet:///dir); empty: no export. docs/warehouse.md, "Exports".
PRIVACYLAB_WAREHOUSE_EXPORT_URL = env("PRIVACYLAB_WAREHOUSE_EXPORT_URL", default="")
# A results run from a data source that fails transiently (a refused connection, a query past
# its timeout) is tried this many times in all, waiting backoff × 2^(try − 1) seconds (at most
# the max, with jitter) between tries; then it alerts and keeps the last snapshot.
PRIVACYLAB_WAREHOUSE_RETRY = {
    "attempts": env.int("PRIVACYLAB_WAREHOUSE_RETRY_ATTEMPTS", default=3),
    "backoff_seconds": env.float("PRIVACYLAB_WAREHOUSE_RETRY_BACKOFF", default=5.0),
    "backoff_max_seconds": env.float("PRIVACYLAB_WAREHOUSE_RETRY_BACKOFF_MAX", default=60.0),
}
# The limits of a source given as a URL (compute_results --source URL); a DataSource row has its own.
PRIVACYLAB_WAREHOUSE_QUERY_TIMEOUT = env.float("PRIVACYLAB_WAREHOUSE_QUERY_TIMEOUT", default=300.0)
PRIVACYLAB_WAREHOUSE_MAX_SCANNED_ROWS = env.int("PRIVACYLAB_WAREHOUSE_MAX_SCANNED_ROWS", default=None)
