"""Runtime modes, production settings, /health/ and the deploy files."""

import os
import re
import shlex
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/privacylab",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "DJANGO_SECRET_KEY": "kX9#mQ2$vL7@pR4!wZ8^nB3&cF6*hJ1(tY5)dG0_sA-eU+iO=qW~xC",
    "PRIVACYLAB_PSEUDONYM_KEY": "a-long-random-pseudonym-key-of-at-least-32-bytes",
    "DJANGO_ALLOWED_HOSTS": "privacylab.example.com",
}


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PRIVACYLAB_", "DATABASE_URL", "REDIS_URL"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean | env, capture_output=True, text=True, timeout=120
    )


def test_production_settings_pass_check_deploy_without_warnings():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "PRIVACYLAB_PSEUDONYM_KEY"])
def test_production_refuses_to_start_without_its_secrets(missing):
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != missing}
    result = _manage("check", env=env)
    assert result.returncode != 0
    assert missing in result.stderr


def test_embedded_default_needs_no_environment():
    result = _manage("diffsettings", "--all", env={"DJANGO_SETTINGS_MODULE": "config.settings"})
    assert result.returncode == 0, result.stderr
    assert "sqlite3" in result.stdout
    assert re.search(r"CELERY_TASK_ALWAYS_EAGER = True", result.stdout)
    assert "LocMemCache" in result.stdout


# --- /health/ ------------------------------------------------------------------------


@pytest.mark.django_db
def test_health_reports_every_part(client):
    response = client.get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "cache", "broker"}


@pytest.mark.django_db
def test_health_is_503_when_the_cache_is_down(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:6390/0"
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": settings.REDIS_URL,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "IGNORE_EXCEPTIONS": True},
        }
    }
    response = client.get("/health/")
    assert response.status_code == 503
    assert response.json()["checks"]["cache"].startswith("error")
    assert response.json()["checks"]["database"] == "ok"


@pytest.mark.redis
@pytest.mark.django_db
def test_health_against_the_real_services(client):
    body = client.get("/health/").json()
    assert body["checks"]["cache"] == "ok"
    assert body["checks"]["broker"] in {"ok", "eager"}


# --- deploy/ ----------------------------------------------------------------------------


def _command_exists(command: str) -> None:
    """Every program and module a deploy command names exists in the project."""
    words = shlex.split(command)
    if words[:2] == ["sh", "-c"]:
        for part in words[2].split("&&"):
            _command_exists(part.strip())
        return
    program = words[0]
    if program == "python":
        assert words[1] == "manage.py" and (ROOT / "manage.py").exists()
        from django.core.management import get_commands

        assert words[2] in get_commands(), f"manage.py has no command {words[2]!r}"
    elif program == "gunicorn":
        module, _, attribute = words[1].partition(":")
        assert hasattr(import_module(module), attribute)
        config = words[words.index("--config") + 1]
        assert (ROOT / config).exists()
    elif program == "celery":
        app_module = words[words.index("-A") + 1]
        assert hasattr(import_module(app_module), "celery_app")
        assert words[3] in {"worker", "beat"}
        if "--scheduler" in words:
            module, _, cls = words[words.index("--scheduler") + 1].partition(":")
            assert hasattr(import_module(module), cls)
    else:
        raise AssertionError(f"unexpected program {program!r} in {command!r}")


def test_compose_file_names_every_service_and_their_commands_exist():
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"web", "worker", "beat", "postgres", "redis"} <= set(services)
    for name in ("web", "worker", "beat"):
        _command_exists(services[name]["command"])
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "/health/" in " ".join(services["web"]["healthcheck"]["test"])
    assert (ROOT / "deploy" / "Dockerfile").exists()


def test_procfile_runs_web_worker_and_beat():
    entries = dict(
        line.split(":", 1) for line in (ROOT / "deploy" / "Procfile").read_text().splitlines() if line.strip()
    )
    assert set(entries) == {"web", "worker", "beat"}
    for command in entries.values():
        _command_exists(command.strip())


def test_beat_schedule_entries_name_real_tasks_and_expire():
    from config.celery import app
    from config.schedule import BEAT_SCHEDULE

    app.loader.import_default_modules()
    for name, entry in BEAT_SCHEDULE.items():
        assert entry["task"] in app.tasks, f"{name}: unknown task {entry['task']}"
        assert entry["options"]["expires"] > 0, f"{name} has no expires"


def test_celery_is_configured_for_safe_redelivery():
    from config.celery import app

    conf = app.conf
    assert conf.task_serializer == "json" and conf.result_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert 0 < conf.task_soft_time_limit < conf.task_time_limit
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.beat_scheduler == "django_celery_beat.schedulers:DatabaseScheduler"


def test_gunicorn_access_lines_are_redacted_like_the_apps():
    import logging
    import runpy

    config = runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))["logconfig_dict"]
    assert config["handlers"]["console"]["filters"] == ["redact_subject_ids"]
    from config.logging import RedactSubjectIds

    record = logging.LogRecord(
        "gunicorn.access", logging.INFO, __file__, 1,
        '%s "GET /api/v1/recommendations/%s?limit=5 HTTP/1.1" 200', ("127.0.0.1", "user-123"), None,
    )
    RedactSubjectIds().filter(record)
    assert "user-123" not in record.getMessage()
    assert "/api/v1/recommendations/<subject>?limit=5" in record.getMessage()


def test_the_image_copies_every_package_the_project_installs_and_its_templates():
    """A package the image lacks (as ``marketplace`` once was) stops every process at Django's start."""
    import tomllib

    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \./", dockerfile, flags=re.MULTILINE))
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    needed = packages | {"templates", "manage.py"}
    assert packages and needed <= copied, f"the image does not copy {sorted(needed - copied)}"


def test_the_dev_extra_holds_every_optional_extra_with_the_same_pins():
    """The tests run every engine, so ``dev`` repeats each optional extra's pins (pip-tools cannot lock a
    self-referencing ``privacylab[warehouse]`` without writing this checkout's path into the lock)."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    dev = set(extras["dev"])
    # Spark is a 430 MB download and a JVM: its test (test_spark.py) runs where the extra is installed.
    outside_dev = {"dev", "spark"}
    for name, requirements in extras.items():
        if name not in outside_dev:
            missing = set(requirements) - dev
            assert not missing, f"the dev extra lacks {sorted(missing)} of the {name!r} extra"
