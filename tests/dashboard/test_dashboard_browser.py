"""Real-browser tests: headless Debian Chromium driven by Playwright against a live server.

Nothing downloads a browser: Chromium is launched by its path. Without it the
tests skip, unless REQUIRE_SERVICES=1 (CI), where a missing browser fails.
Screenshots of the detail page (laptop and phone widths) and the downloaded
CSV are kept in test-artifacts/ for people to look at.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.cache import cache
from django.db import connections
from django.utils import timezone

from experiments.dashboard.recompute import (
    RECOMPUTE_TRACKED_SECONDS,
    RecomputeRequest,
    recompute_cache_key,
)
from experiments.models import ResultSnapshot
from experiments.results import compute_results
from tests.dashboard.conftest import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}

# serialized_rollback: a transactional test flushes the tables, and with them the purposes and
# notices the migrations seed; this puts them back for the next test.
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def chromium_path(path: Path = CHROMIUM, *, required: bool | None = None) -> Path:
    """The browser to launch; a skip (or with REQUIRE_SERVICES=1 a failure) when it is missing."""
    if required is None:
        required = os.environ.get("REQUIRE_SERVICES") == "1"
    if not path.exists():
        reason = f"Chromium is not installed at {path} (Debian package 'chromium'; .ci/run installs it)"
        if required:
            pytest.fail(f"REQUIRE_SERVICES=1, but {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture
def chromium(monkeypatch):
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; the
    # test's own ORM calls (fixtures, assertions) are still plain sync code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            # While Playwright's loop runs, asgiref keeps this thread's database
            # connections apart from the ones pytest-django closes: close them here,
            # or PostgreSQL refuses to drop the test database at the end.
            connections.close_all()
            browser.close()


class PageWatch:
    """Everything a page asked the network for, and what went wrong in its console."""

    def __init__(self, page, origin: str):
        self.origin = origin
        self.foreign: list[str] = []
        self.errors: list[str] = []
        page.on("request", self._request)
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _request(self, request):
        if not request.url.startswith(self.origin) and not request.url.startswith(("data:", "blob:")):
            self.foreign.append(request.url)


def _log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url  # every page needs a login
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(f"{live_server.url}/")


def test_an_owner_reads_recomputes_and_downloads(chromium, live_server, analysed, people):
    ARTIFACTS.mkdir(exist_ok=True)
    context = chromium.new_context(viewport=LAPTOP, accept_downloads=True)
    page = context.new_page()
    watch = PageWatch(page, live_server.url)

    _log_in(page, live_server, people["owner"].username)
    page.screenshot(path=str(ARTIFACTS / "dashboard-list.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(ARTIFACTS / "dashboard-list-phone.png"), full_page=True)
    page.set_viewport_size(LAPTOP)
    page.click(f"text={analysed.name}")
    page.wait_for_url(f"{live_server.url}/experiments/{analysed.key}/")

    # The results table: every treatment arm × metric, arm-1's GMV lift green (significantly better).
    rows = page.locator("#results-table tbody tr[data-metric]")
    assert rows.count() == 2 * 7
    assert page.locator('#results-table tr[data-arm="arm-1"][data-metric="gmv"]').get_attribute("data-tone") == "good"
    opt_out = page.locator('#results-table tr[data-arm="arm-2"][data-metric="opt_out"]')
    assert opt_out.get_attribute("data-tone") == "bad"  # more opt-outs: worse
    assert page.locator("#results-table .badge.cuped").count() >= 1

    # The trade-off chart is drawn: a real SVG of real size with one point per treatment arm.
    chart = page.locator("svg#tradeoff-chart")
    chart.scroll_into_view_if_needed()
    box = chart.bounding_box()
    assert box is not None and box["width"] > 500 and box["height"] > 300
    assert page.locator("svg#tradeoff-chart circle.tradeoff-point").count() == 2
    assert "Ship arm-1:" in page.locator("#tradeoff-verdict").inner_text()
    assert page.locator("#verdict-final").inner_text() == "final"
    assert page.locator("svg#forest-plot").is_visible()
    assert page.locator("svg#timeline-chart polyline").count() == 2  # one line per treatment arm

    page.screenshot(path=str(ARTIFACTS / "dashboard-detail.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(ARTIFACTS / "dashboard-detail-phone.png"), full_page=True)
    # At phone width nothing but the charts and wide tables may scroll sideways.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 1
    page.set_viewport_size(LAPTOP)

    # Recompute now: the task runs (eagerly here) and the page shows the new run's time.
    before = page.get_attribute("#snapshot-time", "datetime")
    runs_before = ResultSnapshot.objects.filter(experiment=analysed).count()
    page.click("#recompute-button")
    page.wait_for_function(
        "before => document.querySelector('#snapshot-time').getAttribute('datetime') !== before", arg=before
    )
    after = page.get_attribute("#snapshot-time", "datetime")
    assert after > before
    assert ResultSnapshot.objects.filter(experiment=analysed).count() == runs_before + 1
    latest = ResultSnapshot.objects.filter(experiment=analysed).order_by("-computed_at").first()
    assert latest.computed_at.isoformat() == after

    # Download the CSV of the latest snapshot.
    with page.expect_download() as download_info:
        page.click("#export-csv")
    download = download_info.value
    assert download.suggested_filename.startswith(f"{analysed.key}-results-")
    content = Path(download.path()).read_text(encoding="utf-8")
    (ARTIFACTS / "dashboard-export.csv").write_text(content, encoding="utf-8")
    records = list(csv.DictReader(io.StringIO(content)))
    overall = [r for r in records if r["scope"] == "overall" and r["arm"] == "arm-1" and r["metric"] == "gmv"]
    assert len(overall) == 1 and overall[0]["window_end"] == timezone.localtime(latest.window_end).isoformat()
    assert any(r["scope"] == "segment" for r in records)

    assert watch.foreign == [], f"the page fetched from the network: {watch.foreign}"
    assert watch.errors == [], f"browser console errors: {watch.errors}"
    context.close()


def test_the_page_follows_a_queued_recompute_until_it_is_done(chromium, live_server, analysed, people):
    """A run queued on a worker: the page polls the status endpoint and reloads when it lands."""
    requested = RecomputeRequest(task_id=str(uuid.uuid4()), requested_at=timezone.now())
    cache.set(recompute_cache_key(analysed.pk), requested.as_cache(), timeout=RECOMPUTE_TRACKED_SECONDS)
    context = chromium.new_context(viewport=LAPTOP)
    page = context.new_page()
    watch = PageWatch(page, live_server.url)
    _log_in(page, live_server, people["viewer"].username)
    page.goto(f"{live_server.url}/experiments/{analysed.key}/")
    progress = page.locator("#recompute-progress")
    assert progress.get_attribute("data-state") == "queued"
    assert "Queued" in progress.inner_text()
    assert page.locator("#recompute-button").count() == 0  # a named viewer reads, does not recompute
    before = page.get_attribute("#snapshot-time", "datetime")

    # The "worker" finishes the run.
    compute_results(experiment=analysed, as_of=timezone.now() + timedelta(seconds=1), monitor=False)

    page.wait_for_function(
        "before => document.querySelector('#snapshot-time').getAttribute('datetime') !== before",
        arg=before,
        timeout=15_000,
    )
    assert "Recomputed at" in page.locator("#recompute-progress").inner_text()
    assert watch.foreign == [] and watch.errors == []
    context.close()


def test_login_page_and_a_hidden_experiment(chromium, live_server, analysed, people):
    ARTIFACTS.mkdir(exist_ok=True)
    context = chromium.new_context(viewport=PHONE)
    page = context.new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.screenshot(path=str(ARTIFACTS / "dashboard-login-phone.png"), full_page=True)
    page.fill("#id_username", people["other"].username)
    page.fill("#id_password", "wrong password")
    page.click("#login-submit")
    assert page.locator(".alert-bad").is_visible()

    _log_in(page, live_server, people["other"].username)
    assert page.locator("#experiment-table").count() == 0  # nothing visible to this user
    response = page.goto(f"{live_server.url}/experiments/{analysed.key}/")
    assert response.status == 404
    assert "No experiment here" in page.content()
    context.close()


@pytest.mark.django_db(transaction=False)
def test_a_missing_browser_skips_unless_services_are_required(tmp_path):
    missing = tmp_path / "no-chromium-here"
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        chromium_path(missing, required=False)
    with pytest.raises(pytest.fail.Exception, match="REQUIRE_SERVICES=1"):
        chromium_path(missing, required=True)
    assert chromium_path(Path(__file__), required=True) == Path(__file__)


_CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective}: ${event.blockedURI || "inline"} (${event.sourceFile}:${event.lineNumber})`);
});
"""


def test_the_content_security_policy_is_sent_and_no_page_breaks_it(chromium, live_server, analysed, people):
    """Dashboard, login, admin and API docs pages under the real browser: the policy is there, nothing violates it."""
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("csp-admin", password=PASSWORD)
    context = chromium.new_context(viewport=LAPTOP)
    context.add_init_script(_CSP_WATCH)
    page = context.new_page()
    watch = PageWatch(page, live_server.url)
    missing = []
    page.on("response", lambda r: r.status == 404 and missing.append(r.url))
    response = page.goto(f"{live_server.url}/accounts/login/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    _log_in(page, live_server, "csp-admin")
    paths = [
        "/",
        f"/experiments/{analysed.key}/",
        "/admin/",
        "/admin/experiments/experiment/",
        f"/admin/experiments/experiment/{analysed.pk}/change/",
        "/admin/experiments/resultsnapshot/",
        "/admin/consent/subject/",
        "/admin/consent/datasubjectrequest/",
        "/admin/rest_framework_api_key/apikey/add/",
        "/api/docs/",
    ]
    violations = {}
    for path in paths:
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, path
        assert response.headers.get("content-security-policy"), path
        page.wait_for_load_state("networkidle")
        found = page.evaluate("window.__cspViolations")
        if found:
            violations[path] = found
    # The API docs really render (their script comes from the server's own URL).
    assert page.locator("#swagger-ui .opblock").count() >= 5
    assert violations == {}, violations
    assert watch.foreign == [], watch.foreign
    assert watch.errors == [], (watch.errors, missing)
    context.close()
