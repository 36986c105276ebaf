"""axe-core in the browser tests: the WCAG violations of a page, as Chromium renders it.

axe-core is vendored under tests/vendor/axe-core (test-only, from npm; see its
README), so nothing is downloaded at test time. It is evaluated through
Playwright, which the pages' Content-Security-Policy does not apply to, so the
pages are checked with their real policy in force.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"
# The standards checked: WCAG 2.1 A and AA (contrast, names, labels, structure).
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
BLOCKING = ("critical", "serious")


@cache
def axe_source() -> str:
    source = AXE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    if digest != AXE_SHA256:
        raise RuntimeError(f"{AXE} is not the vendored axe-core (sha256 {digest}); see its README")
    return source.decode("utf-8")


def axe_violations(page, *, impacts: tuple[str, ...] = BLOCKING) -> list[dict]:
    """The page's axe-core violations of these impacts: rule id, impact, help and the offending elements."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source())
    result = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})", TAGS
    )
    return [
        {
            "id": violation["id"],
            "impact": violation["impact"],
            "help": violation["help"],
            "nodes": [" ".join(node["target"]) if isinstance(node["target"], list) else str(node["target"])
                      for node in violation["nodes"]][:8],
            "summary": violation["nodes"][0].get("failureSummary", "") if violation["nodes"] else "",
        }
        for violation in result["violations"]
        if violation["impact"] in impacts
    ]
