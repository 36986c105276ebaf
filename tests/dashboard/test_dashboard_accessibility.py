"""axe-core (WCAG 2.1 A/AA) over every page an experiment owner uses, in headless Chromium.

The dashboard's pages (login, list, an experiment with and without results,
the export-unavailable and not-found pages, at laptop and phone widths) and
the admin's experiment and treatment forms (add and change) must have no
critical or serious violation.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model

from experiments.models import PrivacyTreatment
from tests.accessibility import axe_violations
from tests.dashboard import test_dashboard_browser as browser
from tests.dashboard.conftest import PASSWORD, make_experiment
from tests.dashboard.test_dashboard_browser import ARTIFACTS, LAPTOP, PHONE, _log_in

chromium = browser.chromium  # the browser tests' fixture: Debian's Chromium through Playwright

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def _check(page, url: str, found: dict, label: str | None = None) -> None:
    response = page.goto(url)
    assert response.status in (200, 404, 409), (url, response.status)
    page.wait_for_load_state("networkidle")
    violations = axe_violations(page)
    if violations:
        found[label or url] = violations


def test_no_dashboard_page_has_a_serious_accessibility_violation(chromium, live_server, analysed, people):
    empty = make_experiment(people["owner"], key="no-results-yet", targeting={"platform": ["android"]})
    context = chromium.new_context(viewport=LAPTOP)
    page = context.new_page()
    found: dict = {}
    _check(page, f"{live_server.url}/accounts/login/", found)
    _log_in(page, live_server, people["owner"].username)
    base = live_server.url
    pages = [
        f"{base}/",
        f"{base}/?status=running",
        f"{base}/experiments/{analysed.key}/",
        f"{base}/experiments/{empty.key}/",
        f"{base}/experiments/{empty.key}/export.csv",
        f"{base}/experiments/no-such-experiment/",
    ]
    for url in pages:
        _check(page, url, found)
    page.set_viewport_size(PHONE)
    for url in pages[:4]:
        _check(page, url, found, label=f"{url} (390 px)")
    # The refusal of a recompute, as the owner sees it.
    page.set_viewport_size(LAPTOP)
    page.goto(f"{base}/experiments/{empty.key}/")
    page.click("#recompute-button")
    page.wait_for_load_state("networkidle")
    found.update({f"{empty.key} after a refused recompute": v for v in [axe_violations(page)] if v})
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "axe-dashboard.json").write_text(json.dumps(found, indent=2))
    context.close()
    assert found == {}, json.dumps(found, indent=2)


def test_the_admin_experiment_and_treatment_forms_have_no_serious_accessibility_violation(
    chromium, live_server, analysed
):
    get_user_model().objects.create_superuser("axe-admin", password=PASSWORD)
    treatment = PrivacyTreatment.objects.filter(arms__experiment=analysed).first()
    context = chromium.new_context(viewport=LAPTOP)
    page = context.new_page()
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "axe-admin")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    found: dict = {}
    for path in (
        "/admin/",
        "/admin/experiments/experiment/",
        "/admin/experiments/experiment/add/",
        f"/admin/experiments/experiment/{analysed.pk}/change/",
        "/admin/experiments/privacytreatment/add/",
        f"/admin/experiments/privacytreatment/{treatment.pk}/change/",
    ):
        _check(page, f"{live_server.url}{path}", found)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "axe-admin.json").write_text(json.dumps(found, indent=2))
    context.close()
    assert found == {}, json.dumps(found, indent=2)
