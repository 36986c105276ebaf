"""``manage.py demo`` (``make demo``) serves with a real Celery worker and beat over kombu's file-system transport.

No server: the demo runs on a SQLite file and a broker folder of its own (the
test gives it temporary ones through DATABASE_URL and
PRIVACYLAB_EMBEDDED_CELERY_DIR, so the developer's db.sqlite3 is untouched;
with DATABASE_URL set the settings want secrets and no HTTPS redirect, which
the test passes). While it serves, a draft scheduled a minute ago is started
by beat's ``experiments-apply-schedule`` through the worker, the periodic-task
list holds the schedule, ``/health/`` reports the broker, and stopping the
demo stops its three children.
"""

import ast
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.integration.conftest import ROOT

pytestmark = [pytest.mark.integration]

CREATE_SCHEDULED_DRAFT = """
from datetime import timedelta
from django.utils import timezone
from experiments.models import Layer
from tests.experiments.factories import ExperimentFactory
layer = Layer.objects.create(key="scheduled", name="Scheduled")  # the demo's experiment holds the default layer
ExperimentFactory(key="scheduled-draft", layer=layer, scheduled_start=timezone.now() - timedelta(minutes=1))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _query(db, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(db, timeout=20) as connection:
        return connection.execute(sql, params).fetchall()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def demo_serving(tmp_path):
    port, db = _free_port(), tmp_path / "demo.sqlite3"
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "PRIVACYLAB_", "CELERY_", "REDIS_URL", "DATABASE_URL"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=f"sqlite:///{db}",
        PRIVACYLAB_EMBEDDED_CELERY_DIR=str(tmp_path / "celery"),
        DJANGO_SECRET_KEY="embedded-worker-test-" + "s" * 40,
        PRIVACYLAB_PSEUDONYM_KEY="embedded-worker-test-pseudonym-" + "p" * 32,
        DJANGO_SECURE_SSL_REDIRECT="0",
    )
    log_path = ROOT / "test-artifacts" / "demo-embedded-worker.log"
    log_path.parent.mkdir(exist_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "demo", "--subjects", "60", "--addr", f"127.0.0.1:{port}"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        yield process, env, db, port, log_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_demo_serves_with_a_worker_and_beat_that_fire_a_scheduled_start(demo_serving):
    process, env, db, port, log_path = demo_serving
    deadline = time.monotonic() + 180
    pids = None
    while time.monotonic() < deadline and pids is None:
        assert process.poll() is None, f"the demo exited:\n{log_path.read_text()[-4000:]}"
        found = re.search(r"web, worker and beat started: (\{.*\})", log_path.read_text())
        pids = ast.literal_eval(found.group(1)) if found else None
        time.sleep(0.5)
    assert pids and set(pids) == {"web", "worker", "beat"}, log_path.read_text()[-4000:]

    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", CREATE_SCHEDULED_DRAFT],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
    )
    assert _query(db, "SELECT status FROM experiments_experiment WHERE key = 'scheduled-draft'") == [("draft",)]

    # Beat sends experiments-apply-schedule every minute; the worker starts the draft.
    deadline = time.monotonic() + 150
    status = "draft"
    while time.monotonic() < deadline and status == "draft":
        assert process.poll() is None, f"the demo exited:\n{log_path.read_text()[-4000:]}"
        time.sleep(2)
        status = _query(db, "SELECT status FROM experiments_experiment WHERE key = 'scheduled-draft'")[0][0]
    log = log_path.read_text()
    assert status == "running", log[-4000:]
    assert "experiments.tasks.experiments_apply_schedule" in log and "succeeded" in log

    names = {row[0] for row in _query(db, "SELECT name FROM django_celery_beat_periodictask")}
    assert {"experiments-apply-schedule", "experiments-results", "experiments-monitor"} <= names
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/", timeout=10) as response:  # noqa: S310 - loopback
        assert json.loads(response.read())["checks"]["broker"] == "ok"

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, log_path.read_text()[-4000:]
    assert "Stopping web, worker and beat." in log_path.read_text()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids.values()):
        time.sleep(0.2)
    assert not [name for name, pid in pids.items() if _alive(pid)]
