"""GrowthBook's gbstats 0.8.0 in a throwaway environment, for tests and benchmarks.

gbstats is not a dependency of PrivacyLab. ``gbstats_site()`` installs the
gbstats 0.8.0 wheel and its small pure dependencies (pydantic) with pip into a
cache folder outside the project (``$PRIVACYLAB_CACHE`` or
``~/.cache/privacylab``), once per machine, from the package index pip is
configured with; numpy and scipy come from the running interpreter.
``run_gbstats(request)`` runs ``benchmarks/gbstats_runner.py`` in a
subprocess with that folder on its path and returns its JSON answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

GBSTATS_VERSION = "0.8.0"
_PACKAGES = (
    f"gbstats=={GBSTATS_VERSION}",
    "pydantic>=2,<3",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
)
RUNNER = Path(__file__).with_name("gbstats_runner.py")


class GbstatsUnavailable(RuntimeError):
    """gbstats could not be installed (no package index reachable)."""


def _cache() -> Path:
    root = os.environ.get("PRIVACYLAB_CACHE") or Path.home() / ".cache" / "privacylab"
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    return Path(root) / f"gbstats-{GBSTATS_VERSION}-{tag}"


def gbstats_site() -> Path:
    """The folder holding gbstats 0.8.0 (installed on first use; ~10 s)."""
    target = _cache()
    stamp = target / ".complete"
    if stamp.exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--upgrade",
        "--target",
        str(target),
        *_PACKAGES,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if completed.returncode != 0:
        raise GbstatsUnavailable(
            f"pip could not install gbstats {GBSTATS_VERSION}: {completed.stderr.strip()[-2000:]}"
        )
    stamp.write_text("ok\n")
    return target


def run_gbstats(request: dict, *, timeout: float = 600) -> dict:
    """Run the gbstats runner on ``request`` (see gbstats_runner.py) and return its answer."""
    site = gbstats_site()
    environment = dict(os.environ, PYTHONPATH=str(site))
    completed = subprocess.run(
        [sys.executable, str(RUNNER)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the gbstats runner failed: {completed.stderr.strip()[-2000:]}")
    return json.loads(completed.stdout)
