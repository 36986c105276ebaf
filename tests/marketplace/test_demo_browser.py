"""The demo's history in a real browser: a simulated 14-day run has 14 points per arm in the effect-over-time chart.

``manage.py demo`` on a small population (the computing part is the same as
``make demo``'s), then the experiment's dashboard page in headless Chromium.
"""

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from experiments.models import Experiment, ResultSnapshot
from tests.dashboard.conftest import PASSWORD
from tests.dashboard.test_dashboard_browser import LAPTOP, PageWatch, _log_in, chromium  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def test_the_demo_shows_fourteen_daily_points_in_the_effect_over_time_chart(chromium, live_server):  # noqa: F811
    call_command("demo", "--subjects", "1500", "--no-serve", stdout=StringIO())
    experiment = Experiment.objects.get(key="privacy-demo-1")
    snapshots = ResultSnapshot.objects.filter(experiment=experiment, status=ResultSnapshot.Status.OK)
    assert snapshots.count() == 14
    user = get_user_model().objects.get(username="demo")
    user.set_password(PASSWORD)
    user.save()

    page = chromium.new_context(viewport=LAPTOP).new_page()
    watch = PageWatch(page, live_server.url)
    _log_in(page, live_server, "demo")
    page.goto(f"{live_server.url}/experiments/{experiment.key}/")
    chart = page.locator("svg#timeline-chart")
    chart.scroll_into_view_if_needed()
    treatment_arms = experiment.arms.filter(is_control=False).count()
    assert page.locator("svg#timeline-chart polyline").count() == treatment_arms
    description = page.locator("svg#timeline-chart desc").text_content()
    assert description.endswith("from 14 runs."), description  # one run per simulated day
    drawn = int(re.search(r"(\d+) points from", description).group(1))
    # Every daily snapshot compares every treatment arm: 14 points per arm, one per simulated day.
    assert page.locator("svg#timeline-chart circle").count() == drawn == 14 * treatment_arms
    points = [line.get_attribute("points").split() for line in page.locator("svg#timeline-chart polyline").all()]
    assert [len(line) for line in points] == [14] * treatment_arms
    assert not watch.errors and not watch.foreign
