"""What the service benchmarks share: the environment of a production-mode run and a gunicorn."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def service_env(
    *, database: str = "privacylab_bench", redis_db: int = 15, database_variable: str = "BENCH_DATABASE_URL"
) -> dict[str, str]:
    """Production settings against a benchmark database and Redis DB.

    ``database_variable`` (default ``BENCH_DATABASE_URL``) and ``BENCH_REDIS_URL``
    override them with full URLs.
    """
    return {
        **os.environ,
        "DATABASE_URL": os.environ.get(database_variable, f"postgres://postgres@127.0.0.1:5432/{database}"),
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", f"redis://127.0.0.1:6379/{redis_db}"),
        "DJANGO_SECRET_KEY": "bench-" + "b" * 40,
        "PRIVACYLAB_PSEUDONYM_KEY": "bench-pseudonyms-" + "k" * 32,
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_LOG_LEVEL": "WARNING",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gunicorn(*, workers: int, env: dict[str, str], timeout: float = 60) -> Iterator[int]:
    """A gunicorn serving the project on a free local port; yields the port once it accepts."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "config.wsgi:application",
            "--config", "deploy/gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
            "--workers", str(workers), "--access-logfile", "/dev/null", "--timeout", "120",
        ],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)
