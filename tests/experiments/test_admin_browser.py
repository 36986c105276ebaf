"""The product manager's journey through the admin in a real browser (Debian Chromium, Playwright).

Three treatments (one with a mistake, one with a compliance error), an experiment with arms, a guardrail, a plan, targeting
and a bad input or two, then Start with its confirmation. Each bad input gives its message in words and
saves nothing; the pages run no inline script and fetch nothing from elsewhere, and axe-core finds no
critical or serious violation on any page the journey visits.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from experiments.models import Arm, Experiment, PrivacyTreatment
from tests.accessibility import axe_violations
from tests.dashboard.test_dashboard_browser import LAPTOP, PageWatch, chromium  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]
PASSWORD = "pm-password-123-long"


def _add_treatment(page, base, name, level, **options):
    page.goto(f"{base}/admin/experiments/privacytreatment/add/")
    page.get_by_label("Name:").fill(name)
    page.get_by_label("Consent prompt:").select_option("banner")
    page.get_by_label("Personalization level:").select_option(level)
    for label, value in options.items():
        field = page.get_by_label(label)
        field.check() if value is True else field.fill(value)
    page.get_by_role("button", name="Save", exact=True).click()


def test_a_pm_creates_treatments_and_an_experiment_and_starts_it(chromium, live_server):  # noqa: F811
    get_user_model().objects.create_superuser("pm", password=PASSWORD)
    context = chromium.new_context(viewport=LAPTOP)
    page = context.new_page()
    watch = PageWatch(page, live_server.url)
    base = live_server.url
    violations = {}

    def audit(what):
        """axe-core over the page as it is now (each visited page, with its error messages shown)."""
        before = len(watch.errors)
        found = axe_violations(page)
        if found:
            violations[f"{what}: {page.url}"] = found
        # axe probes elements with inline styles, which the page's own policy blocks and reports: those
        # reports are axe's, not the page's.
        page.wait_for_timeout(100)
        watch.errors[before:] = [e for e in watch.errors[before:] if "Applying inline style violates" not in e]

    page.goto(f"{base}/admin/login/")
    audit("login")
    page.fill("#id_username", "pm")
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/admin/")

    # A treatment: the DP level marks ε required as soon as it is chosen, and its absence is named on the field.
    page.goto(f"{base}/admin/experiments/privacytreatment/add/")
    epsilon_label = page.locator('label[for="id_dp_epsilon"]')
    assert "required" not in (epsilon_label.get_attribute("class") or "")
    page.get_by_label("Personalization level:").select_option("dp_popularity")
    assert "required" in epsilon_label.get_attribute("class")
    _add_treatment(page, base, "DP popularity", "dp_popularity")
    error = page.locator(".field-dp_epsilon .errorlist")
    assert "needs a privacy budget per build" in error.inner_text()
    audit("treatment with an error")
    assert not PrivacyTreatment.objects.exists()
    page.get_by_label("Privacy budget ε:").fill("1.0")
    page.get_by_role("button", name="Save", exact=True).click()
    assert "was added successfully" in page.locator(".messagelist .success").inner_text()

    _add_treatment(page, base, "Banner, full history", "full")
    # Pre-ticked consent: saved, with a warning that names the finding instead of a plain success.
    _add_treatment(page, base, "Pre-ticked", "full", **{"Default personalization consent": True})
    assert "compliance review has an error" in page.locator(".messagelist .warning").inner_text()
    assert page.locator(".messagelist .success").count() == 0

    # The experiment: two controls is a message on the row, not a 500; nothing is saved.
    page.goto(f"{base}/admin/experiments/experiment/add/")
    page.get_by_label("Key:").fill("dp-vs-banner")
    page.get_by_label("Name:", exact=True).fill("DP popularity against the banner")
    page.get_by_role("group", name="Platform").get_by_label("android").check()
    page.get_by_label("Arm key").nth(0).fill("control")
    page.get_by_label("Arm treatment").nth(0).select_option(label="Banner, full history")
    page.get_by_label("Arm is control").nth(0).check()
    page.get_by_label("Arm key").nth(1).fill("dp")
    page.get_by_label("Arm treatment").nth(1).select_option(label="DP popularity")
    page.get_by_label("Arm is control").nth(1).check()
    page.get_by_label("Coverage:").fill("0.5")
    page.get_by_label("Scheduled start: date").fill("2031-01-02")
    page.get_by_label("Scheduled start: time").fill("10:00:00")
    page.get_by_label("Scheduled end: date").fill("2031-01-01")
    page.get_by_label("Scheduled end: time").fill("10:00:00")
    page.get_by_role("button", name="Save and continue editing").click()
    assert "exactly one control arm" in page.locator("#arms-group .errorlist").inner_text()
    assert "must come after the scheduled start" in page.locator(".field-scheduled_end .errorlist").inner_text()
    assert "is violated" not in page.content()
    assert not Experiment.objects.exists()
    audit("experiment with errors")

    page.get_by_label("Arm is control").nth(1).uncheck()
    for label in ("Scheduled start: date", "Scheduled start: time", "Scheduled end: date", "Scheduled end: time"):
        page.get_by_label(label).fill("")
    # A guardrail on opt-outs and a plan: the planner sizes the experiment on save.
    page.locator("#guardrails-group .add-row a").click()
    page.get_by_label("Guardrail metric").nth(0).select_option("opt_out")
    page.get_by_label("Guardrail margin").nth(0).fill("0.02")
    page.get_by_label("Guardrail plan baseline").nth(0).fill("0.05")
    page.get_by_label("Plan daily subjects:").fill("2000")
    page.get_by_label("Plan baseline:").fill("150000")  # GMV per subject (IDR), the default primary metric
    page.get_by_label("Plan standard deviation:").fill("400000")
    page.get_by_label("Plan minimum effect:").fill("0.1")
    page.get_by_role("button", name="Save and continue editing").click()
    assert "was added successfully" in page.locator(".messagelist").inner_text(), page.content()[:3000]
    experiment = Experiment.objects.get(key="dp-vs-banner")
    assert list(experiment.guardrails.values_list("metric", "margin")) == [("opt_out", 0.02)]
    assert experiment.planned_subjects_per_arm and experiment.planned_days
    assert experiment.targeting == {"platform": ["android"]}
    assert set(Arm.objects.filter(experiment=experiment).values_list("key", "is_control")) == {
        ("control", True), ("dp", False)}

    # Start asks first, showing the compliance review and the plan, then starts it.
    page.get_by_role("link", name="Start…").click()
    assert "Compliance review" in page.content() and "Plan" in page.content()
    audit("start confirmation")
    assert Experiment.objects.get(pk=experiment.pk).status == "draft"
    page.get_by_role("button", name="Yes, start it").click()
    assert "started" in page.locator(".messagelist").inner_text()
    assert Experiment.objects.get(pk=experiment.pk).status == "running"
    # Running: pause and stop are buttons; the analysis and the delete link are gone; the dashboard is linked.
    assert page.get_by_role("button", name="Pause").is_visible()
    assert page.locator('select[name="primary_metric"]').count() == 0
    assert page.get_by_role("link", name="Delete", exact=True).count() == 0
    assert "Only draft experiments can be deleted" in page.content()
    assert page.get_by_role("link", name="Results on the dashboard").get_attribute("href") == (
        "/experiments/dp-vs-banner/")

    audit("running experiment")

    # Ramp coverage up (allowed while running); down is refused in words.
    assert Experiment.objects.get(pk=experiment.pk).coverage == 0.5
    page.get_by_label("Coverage:").fill("1.0")
    page.get_by_role("button", name="Save and continue editing").click()
    assert "changed successfully" in page.locator(".messagelist").inner_text()
    assert Experiment.objects.get(pk=experiment.pk).coverage == 1.0
    page.get_by_label("Coverage:").fill("0.5")
    page.get_by_role("button", name="Save and continue editing").click()
    assert "only grow" in page.locator(".errorlist").first.inner_text()
    assert Experiment.objects.get(pk=experiment.pk).coverage == 1.0
    audit("coverage refused")
    page.goto(f"{base}/admin/experiments/experiment/{experiment.pk}/change/")

    # A new phase: pause, new weights (exposed subjects keep their arm), recorded in the history; resume.
    page.get_by_role("button", name="Pause").click()
    page.get_by_role("link", name="New phase…").click()
    page.get_by_label("Weight of arm dp").fill("0")
    page.get_by_role("button", name="Start phase 2").click()
    assert "positive" in page.locator(".errorlist").first.inner_text()
    audit("new phase with an error")
    page.get_by_label("Weight of arm dp").fill("3")
    page.get_by_role("button", name="Start phase 2").click()
    assert "phase 2 set up" in page.locator(".messagelist").inner_text()
    page.get_by_role("button", name="Resume").click()
    stored = Experiment.objects.get(pk=experiment.pk)
    assert (stored.status, stored.phase) == ("running", 2)
    page.get_by_role("link", name="History", exact=True).click()
    assert "New phase 2: weights control 1, dp 3" in page.content()
    audit("history")

    # And through to its dashboard page.
    page.goto(f"{base}/admin/experiments/experiment/{experiment.pk}/change/")
    page.get_by_role("link", name="Results on the dashboard").click()
    page.wait_for_url(f"{base}/experiments/dp-vs-banner/")
    assert "DP popularity against the banner" in page.content()
    audit("dashboard")
    # ... and back to the admin.
    page.get_by_role("link", name="Open in the admin").click()
    page.wait_for_url(f"{base}/admin/experiments/experiment/{experiment.pk}/change/")

    assert violations == {}, violations

    assert watch.errors == [], f"browser console errors: {watch.errors}"
    assert watch.foreign == []
    context.close()
