"""Dashboard views: every permission case, login and logout, and what the pages say about scheduled work."""

from __future__ import annotations

import pytest
from django.urls import reverse

from experiments.models import ResultSnapshot
from tests.dashboard.conftest import ALLOWED, login, make_experiment
from tests.dashboard.conftest import page_url as _url
from tests.dashboard.conftest import without_csrf as _without_csrf
from tests.experiments.factories import UserFactory

pytestmark = pytest.mark.django_db

EXPERIMENT_PAGES = ["experiment-detail", "results-json", "export-csv", "export-json", "recompute-status"]


# --- permissions -----------------------------------------------------------------


@pytest.mark.parametrize("name", EXPERIMENT_PAGES)
def test_experiment_pages_answer_only_to_owner_viewers_and_staff(client, analysed, people, name):
    for who, allowed in ALLOWED.items():
        login(client, people[who])
        response = client.get(_url(name, analysed))
        if allowed:
            assert response.status_code == 200, (who, response.content[:500])
        else:
            assert response.status_code == 404, who
            assert b"No experiment here" in response.content


def test_anonymous_visitors_are_sent_to_the_login_page(client, analysed):
    for url in ["/", *(_url(name, analysed) for name in EXPERIMENT_PAGES)]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"] == f"/accounts/login/?next={url}"


def test_staff_who_may_see_it_in_the_admin_get_a_link_there(client, analysed, people):
    from django.contrib.auth.models import Permission

    admin_url = reverse("admin:experiments_experiment_change", args=[analysed.pk])
    for who in ("owner", "viewer", "staff"):  # the staff member has no admin permission on experiments yet
        login(client, people[who])
        assert admin_url not in client.get(_url("experiment-detail", analysed)).content.decode(), who
    people["staff"].user_permissions.add(Permission.objects.get(codename="view_experiment"))
    login(client, people["staff"])
    page = client.get(_url("experiment-detail", analysed)).content.decode()
    assert f'<a id="admin-link" href="{admin_url}">Open in the admin</a>' in page
    assert client.get(admin_url).status_code == 200


def test_a_hidden_experiment_looks_exactly_like_a_missing_one(client, analysed, people):
    login(client, people["other"])
    hidden = client.get(_url("experiment-detail", analysed))
    missing = client.get("/experiments/no-such-experiment/")
    assert hidden.status_code == missing.status_code == 404
    assert _without_csrf(hidden.content) == _without_csrf(missing.content)
    assert analysed.name.encode() not in hidden.content


@pytest.mark.parametrize(("who", "status"), [("owner", 302), ("staff", 302), ("viewer", 403), ("other", 404)])
def test_only_owner_and_staff_can_recompute(client, analysed, people, who, status, django_capture_on_commit_callbacks):
    login(client, people[who])
    runs = ResultSnapshot.objects.filter(experiment=analysed).count()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(_url("recompute", analysed))
    assert response.status_code == status
    added = ResultSnapshot.objects.filter(experiment=analysed).count() - runs
    assert added == (1 if status == 302 else 0)
    if status == 403:
        assert b"Only the experiment&#x27;s owner and staff" in response.content


def test_recompute_is_post_only_and_anonymous_posts_go_to_login(client, analysed, people):
    assert client.post(_url("recompute", analysed)).status_code == 302
    login(client, people["owner"])
    assert client.get(_url("recompute", analysed)).status_code == 405


def test_the_list_shows_each_user_what_they_may_open(client, analysed, people):
    other_owned = make_experiment(people["other"], key="others-test", name="Someone else's test")
    expected = {
        "owner": {analysed.key},
        "viewer": {analysed.key},
        "staff": {analysed.key, other_owned.key},
        "other": {other_owned.key},
    }
    for who, keys in expected.items():
        login(client, people[who])
        response = client.get("/")
        assert response.status_code == 200
        listed = {row.experiment.key for row in response.context["rows"]}
        assert listed == keys, who


# --- login and logout -------------------------------------------------------------------


def test_login_page_is_the_dashboards_and_logs_in(client, people):
    page = client.get("/accounts/login/?next=/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "dashboard/dashboard.css" in html and 'id="login-submit"' in html
    response = client.post("/accounts/login/", {"username": people["owner"].username,
                                                 "password": "correct horse battery staple", "next": "/"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_logout_returns_to_the_login_page(client, people):
    login(client, people["owner"])
    response = client.post("/accounts/logout/", {"next": "/accounts/login/"})
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert client.get("/").status_code == 302


# --- whether scheduled work runs ------------------------------------------------------


def test_without_a_worker_and_beat_every_page_says_scheduled_work_does_not_run(client, people, settings):
    settings.SCHEDULED_TASKS_RUN = False
    experiment = make_experiment(people["owner"], key="unscheduled")
    login(client, UserFactory(username="sam-superuser", is_staff=True, is_superuser=True))
    for url in (reverse("dashboard:experiment-list"), _url("experiment-detail", experiment),
                reverse("admin:experiments_experiment_changelist")):
        page = client.get(url).content.decode()
        assert "Scheduled work does not run on this server." in page, url
    detail = client.get(_url("experiment-detail", experiment)).content.decode()
    assert "Nothing computes them on a schedule here (no Celery worker or beat runs)" in detail
    assert "every few minutes" not in detail


def test_with_a_worker_and_beat_the_page_gives_the_schedule(client, people, settings):
    settings.SCHEDULED_TASKS_RUN = True
    experiment = make_experiment(people["owner"], key="scheduled")
    login(client, people["owner"])
    detail = client.get(_url("experiment-detail", experiment)).content.decode()
    assert "Scheduled work does not run" not in detail
    assert "Results are computed every 15 minutes while the experiment runs" in detail
