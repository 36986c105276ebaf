"""``make up`` as the README gives it: web, worker and beat against PostgreSQL and Redis.

Starts the real ``make up`` (honcho running deploy/Procfile) with the virtual
environment *not* on the PATH, as on a fresh machine, in production settings
against the test database and Redis; waits for ``/health/`` to report the
database, the cache and the broker; runs one task through the worker it
started; stops it.
"""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid

import pytest
from django.conf import settings

from config.celery import app as celery_app
from tests.integration.conftest import ROOT, _database_url

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.redis]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _health(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 — our own server on loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture
def make_up(transactional_db):
    port, queue = _free_port(), f"make-up-{uuid.uuid4().hex[:8]}"
    venv_bin = str(ROOT / ".venv" / "bin")
    path = os.pathsep.join(part for part in os.environ.get("PATH", "").split(os.pathsep) if part != venv_bin)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "PRIVACYLAB_", "CELERY_", "GUNICORN_", "VIRTUAL_ENV"))
    }
    env.update(
        PATH=path,
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=_database_url(),
        REDIS_URL=settings.REDIS_URL,
        DJANGO_SECRET_KEY="make-up-test-" + "s" * 40,
        PRIVACYLAB_PSEUDONYM_KEY=settings.PSEUDONYM_KEY,
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="1",
        CELERY_TASK_DEFAULT_QUEUE=queue,  # this run's worker takes only this queue's tasks
    )
    log_path = ROOT / "test-artifacts" / "make-up.log"
    log_path.parent.mkdir(exist_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["make", "up"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield f"http://127.0.0.1:{port}", queue, process, log_path
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_make_up_serves_health_and_runs_a_task(make_up):
    base, queue, process, log_path = make_up
    deadline = time.monotonic() + 120
    status, body = 0, {}
    while time.monotonic() < deadline:
        assert process.poll() is None, f"make up exited:\n{log_path.read_text()[-4000:]}"
        try:
            status, body = _health(f"{base}/health/")
        except OSError:  # not listening yet
            time.sleep(0.5)
            continue
        if status == 200:
            break
        time.sleep(0.5)
    assert status == 200, f"{body}\n{log_path.read_text()[-4000:]}"
    assert body["checks"] == {"database": "ok", "cache": "ok", "broker": "ok"}

    # One task through the worker `make up` started (it consumes this run's queue only).
    result = celery_app.send_task("consent.tasks.dsr_enqueue_open", queue=queue)
    assert result.get(timeout=90) == 0
    log = log_path.read_text()
    assert "not found" not in log  # "/bin/sh: 1: celery: not found" was the bug
    for name in ("web", "worker", "beat"):
        assert f"{name}." in log, f"{name} did not start:\n{log[-4000:]}"
