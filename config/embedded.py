"""The embedded default's processes: web server, Celery worker and beat, with no server to install.

``make demo`` serves through this: the three run as child processes over
kombu's file-system transport in one folder (``PRIVACYLAB_EMBEDDED_CELERY_DIR``,
see config.settings), so a draft scheduled a minute ahead starts, results are
recomputed on the schedule, and "Recompute now" runs on a worker as in
production. The children die with the parent (Linux's parent-death signal,
and terminated on the way out), so an interrupted demo leaves nothing running.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDER_VARIABLE = "PRIVACYLAB_EMBEDDED_CELERY_DIR"
DEFAULT_FOLDER = ROOT / ".embedded-celery"
# The folders that hold one run's queue, results and cache: emptied at start, so a
# new demo does not run the tasks, or read the cache, of a database it replaced.
RUN_FOLDERS = ("messages", "control", "results", "cache")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def embedded_commands(*, addr: str, folder: Path, web: bool = True) -> dict[str, list[str]]:
    """The processes by name: what each runs (this interpreter, from the project's root)."""
    python = sys.executable
    commands = {
        # Two processes: a recompute asked for on the dashboard need not wait behind a build.
        "worker": [
            python, "-m", "celery", "-A", "config", "worker", "--pool=prefork", "--concurrency=2",
            "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
        ],
        "beat": [
            python, "-m", "celery", "-A", "config", "beat", "--loglevel=INFO",
            "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler",
            "--pidfile", str(folder / "beat.pid"),
        ],
    }
    if web:
        commands["web"] = [python, "manage.py", "runserver", addr, "--noreload"]
    return commands


@dataclass
class EmbeddedProcesses:
    """Starts web, worker and beat as children; ``wait`` returns when one stops; ``stop`` ends them all."""

    addr: str = "127.0.0.1:8000"
    folder: Path = DEFAULT_FOLDER
    web: bool = True
    env: dict[str, str] = field(default_factory=dict)
    stdout: object = None  # where the children write (default: this process's terminal)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self) -> None:
        self.folder = Path(self.folder).resolve()
        for name in RUN_FOLDERS:
            shutil.rmtree(self.folder / name, ignore_errors=True)
            (self.folder / name).mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, FOLDER_VARIABLE: str(self.folder)}
        env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        try:
            for name, command in embedded_commands(addr=self.addr, folder=self.folder, web=self.web).items():
                self.processes[name] = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                    command, cwd=ROOT, env=env, stdout=self.stdout, stderr=subprocess.STDOUT if self.stdout else None,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads started yet in a management command
                )
        except BaseException:
            self.stop()
            raise

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.processes.items()}

    def exited(self) -> dict[str, int]:
        """The children that have stopped, with their exit codes."""
        return {name: code for name, process in self.processes.items() if (code := process.poll()) is not None}

    def wait(self, *, poll_seconds: float = 0.5, until: Callable[[], bool] | None = None) -> dict[str, int]:
        """Block until a child stops (or ``until()`` is true); returns the stopped ones."""
        while not (stopped := self.exited()):
            if until is not None and until():
                return {}
            time.sleep(poll_seconds)
        return stopped

    def stop(self, *, timeout: float = 20) -> None:
        """SIGTERM to every child (Celery's warm shutdown), SIGKILL to any still running after ``timeout``."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
