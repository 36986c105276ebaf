"""The engine imports nothing from Django or the apps (DESIGN.md)."""

import ast
import subprocess
import sys
from pathlib import Path

import experiments.stats

PACKAGE = Path(experiments.stats.__file__).parent
REPO = PACKAGE.parents[1]
FORBIDDEN = ("django", "rest_framework", "celery", "config", "consent", "recommender")


def test_no_module_of_the_engine_imports_django_or_an_app():
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.name}: use absolute imports"
                names = [node.module or ""]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                assert root not in FORBIDDEN, f"{path.name} imports {name}"
                if root == "experiments":
                    assert name.startswith("experiments.stats"), f"{path.name} imports {name}"


def test_importing_the_engine_loads_no_django():
    # A fresh interpreter: the test process itself has Django loaded.
    code = (
        "import sys, experiments.stats\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{FORBIDDEN!r} or (m.startswith('experiments.') and not m.startswith('experiments.stats')))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
