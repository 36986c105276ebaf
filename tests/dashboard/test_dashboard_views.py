"""Dashboard pages and exports: every permission case, real snapshots, and the bad-input pages."""

from __future__ import annotations

import csv
import io
import json
import re
from unittest import mock

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from consent.models import Subject
from experiments.dashboard.pages import STALE_AFTER
from experiments.disclosure import segments_suppress
from experiments.models import Experiment, ExperimentAlert, Guardrail, ResultSnapshot
from experiments.results import compute_results, experiment_monitor
from tests.dashboard.conftest import analyse, login, make_experiment
from tests.experiments.factories import ExperimentFactory, UserFactory
from tests.experiments.pipeline_kit import populate

pytestmark = pytest.mark.django_db

EXPERIMENT_PAGES = ["experiment-detail", "results-json", "export-csv", "export-json", "recompute-status"]
ALLOWED = {"owner": True, "viewer": True, "staff": True, "other": False}


def _url(name: str, experiment: Experiment) -> str:
    return reverse(f"dashboard:{name}", args=[experiment.key])


def _without_csrf(content: bytes) -> str:
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", content.decode())


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


# --- the list page -----------------------------------------------------------------


def test_the_list_row_shows_progress_srm_and_the_verdict(client, analysed, people):
    login(client, people["owner"])
    response = client.get("/")
    row = response.context["rows"][0]
    assert row.arms == ("control", "arm-1", "arm-2")
    assert row.days_running == 10
    assert (row.subjects, row.planned_subjects, row.progress_percent) == (1200, 1200, 100)
    assert row.srm == "ok"
    assert row.verdict == "Ship arm-1 (final)" and row.verdict_tone == "good"
    html = response.content.decode()
    assert "1,200" in html and "SRM ok" in html and "Ship arm-1 (final)" in html


def test_before_the_planned_size_the_list_says_keep_running_however_good_an_arm_looks(client, people):
    from tests.dashboard.conftest import ARMS

    experiment = make_experiment(people["owner"], key="before-plan", planned_subjects_per_arm=1000)
    populate(experiment, ARMS, prefix="plan")
    compute_results(experiment=experiment, monitor=False)
    login(client, people["owner"])
    row = client.get("/").context["rows"][0]
    assert row.progress_percent == 40
    assert row.verdict == "Keep running" and row.verdict_tone == "neutral"


def test_the_list_filters_by_status_and_owner(client, people):
    running = make_experiment(people["owner"], key="running-one")
    paused = make_experiment(people["owner"], key="paused-one")
    Experiment.objects.filter(pk=paused.pk).update(status=Experiment.Status.PAUSED)
    draft = ExperimentFactory(key="draft-one", owner=people["viewer"])
    login(client, people["staff"])

    def keys(**query):
        response = client.get("/", query)
        assert response.status_code == 200
        return {row.experiment.key for row in response.context["rows"]}

    assert keys() == {running.key, paused.key, draft.key}
    assert keys(status="paused") == {paused.key}
    assert keys(owner=people["viewer"].username) == {draft.key}
    assert keys(status="running", owner=people["owner"].username) == {running.key}
    assert keys(status="running", owner=people["viewer"].username) == set()
    owners = {choice for choice, _ in response_owner_choices(client)}
    assert owners == {"", people["owner"].username, people["viewer"].username}


def response_owner_choices(client):
    return list(client.get("/").context["form"].fields["owner"].choices)


def test_the_owner_filter_lists_only_owners_the_user_can_see(client, analysed, people):
    make_experiment(people["other"], key="hidden-from-viewer")
    login(client, people["viewer"])
    owners = {str(value) for value, _ in response_owner_choices(client)}
    assert owners == {"", people["owner"].username}


def test_a_bad_filter_is_a_400_with_the_reason(client, analysed, people):
    login(client, people["owner"])
    response = client.get("/", {"status": "exploded", "owner": "nobody-at-all"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Select a valid choice" in html
    assert analysed.name in html  # the unfiltered list is still shown


def test_the_list_without_snapshots_says_so(client, people):
    make_experiment(people["owner"], key="fresh")
    login(client, people["owner"])
    row = client.get("/").context["rows"][0]
    assert (row.subjects, row.srm, row.verdict) == (None, "untested", "No results yet")


# --- the detail page -----------------------------------------------------------------


def test_the_detail_page_shows_the_latest_snapshot(client, analysed, people):
    login(client, people["viewer"])
    response = client.get(_url("experiment-detail", analysed))
    page = response.context["page"]
    snapshot = ResultSnapshot.objects.filter(experiment=analysed).order_by("-window_end").first()
    assert page.snapshot == snapshot and page.state.kind == "ok"
    html = response.content.decode()
    # Header: hypothesis, treatments with the compliance review, freshness.
    assert analysed.hypothesis in html
    assert "Compliance review" in html and html.count('class="arm-card') == 3
    findings = {arm.key: [f.code for f in arm.findings] for arm in page.arms}
    assert findings["control"] == [] and findings["arm-2"][0] == "consent_presumed"
    assert "silence or inactivity is not consent" in html and "UU PDP Art. 20(2)(a)" in html
    assert f'datetime="{snapshot.computed_at.isoformat()}"' in html
    # Results table: one row per treatment arm and metric, toned by the direction of good.
    rows = {(row.arm, row.metric): row for arm in page.results for row in arm.rows}
    assert len(rows) == 2 * 7
    assert rows[("arm-1", "gmv")].tone == "good" and rows[("arm-1", "gmv")].cuped
    assert rows[("arm-1", "opt_out")].tone == "good"  # opt-outs went down: good
    assert rows[("arm-2", "opt_out")].tone == "bad"  # opt-outs went up: bad
    assert rows[("arm-1", "consent_rate")].skipped_reason  # nobody consented: not comparable
    comparison = next(
        c for c in snapshot.data["report"]["comparisons"] if c["arm"] == "arm-1" and c["metric"] == "opt_out"
    )
    expected = f"{comparison['absolute']['estimate'] * 100:+.1f} pp".replace("-", "\u2212")
    assert rows[("arm-1", "opt_out")].absolute == expected
    assert 'data-arm="arm-2" data-metric="opt_out" data-tone="bad"' in html
    assert "CUPED" in html
    # Charts with text alternatives.
    for chart_id in ("forest-plot", "tradeoff-chart", "timeline-chart"):
        assert f'class="chart" id="{chart_id}"' in html and f'class="chart" id="{chart_id}-compact"' in html
        assert f'id="{chart_id}-title"' in html and f'id="{chart_id}-desc"' in html
    assert html.count("tradeoff-point") == 4  # two arms, drawn at both widths
    # The decision engine's verdict in words, final (every arm has its planned subjects), rendered as stored.
    verdict = page.tradeoff.verdict
    assert verdict.text == snapshot.data["decision"]["summary"]
    assert verdict.text.startswith("Ship arm-1: it raises GMV per subject by +IDR ")
    assert "its opt-out rate guardrail passes (upper bound −" in verdict.text and "< +1.0 pp)" in verdict.text
    assert verdict.final and 'id="verdict-final">final<' in html
    assert {row.arm for row in verdict.tests} == {"arm-1", "arm-2"}
    # The cumulative effect: three runs per treatment arm.
    assert [len(series.points) for series in page.timeline_series] == [3, 3]


def test_segments_show_benjamini_hochberg_adjusted_p_values(client, analysed, people):
    login(client, people["owner"])
    page = client.get(_url("experiment-detail", analysed), {"segments": "conversion"}).context["page"]
    assert page.segment_metric == "conversion" and page.segment_adjustment == "benjamini-hochberg"
    assert [table.dimension for table in page.segments] == ["age_band", "province", "platform", "customer"]
    snapshot = page.snapshot.data["report"]["segments"]
    android = next(s for s in snapshot if s["segment"] == "platform=android")
    stored = next(c for c in android["comparisons"] if c["arm"] == "arm-1" and c["metric"] == "conversion")
    platform = next(table for table in page.segments if table.dimension == "platform")
    cell = next(row for row in platform.rows if row.value == "android").cells[0]
    assert cell.arm == "arm-1"
    assert cell.p_adjusted == ("< 0.001" if stored["p_value_adjusted"] < 0.001 else f"{stored['p_value_adjusted']:.3f}")
    assert stored["p_value_adjusted"] >= stored["absolute"]["p_value"]  # adjusted, not raw


def test_recommendation_quality_per_arm(client, analysed, people):
    login(client, people["owner"])
    page = client.get(_url("experiment-detail", analysed)).context["page"]
    rows = {row.arm: row for row in page.recommendations}
    stats = page.snapshot.data["statistics"]["arm-1"]["ctr"]
    assert rows["arm-1"].ctr == f"{100 * stats['numerator_sum'] / stats['denominator_sum']:.2f}%"
    assert rows["arm-1"].tone == "good" and rows["arm-2"].tone == "bad"
    # arm-1 subject 0 bought 2 × 100,000 of a product clicked in a recommendation, plus 100,000 of
    # another; subject 1 bought 50,000 of a product never clicked: 200,000 of 350,000.
    assert page.gmv_shares["arm-1"].attributed == 200_000 and page.gmv_shares["arm-1"].total == 350_000
    assert rows["arm-1"].gmv_share == "57.1%"
    assert rows["control"].gmv_share == "—"  # no order lines there


def test_a_metric_choice_that_does_not_exist_falls_back_with_a_message(client, analysed, people):
    login(client, people["owner"])
    response = client.get(_url("experiment-detail", analysed), {"segments": "<b>nope</b>", "timeline": "opt_out"})
    assert response.status_code == 200
    page = response.context["page"]
    assert page.segment_metric == "gmv" and page.timeline_metric == "opt_out"
    html = response.content.decode()
    assert "Select a valid choice" in html and "<b>nope</b>" not in html
    # The opt-out guardrail is drawn on the opt-out timeline.
    assert "guardrail +1.0 pp" in html


def test_no_snapshot_yet_says_so_and_offers_to_compute(client, people, django_capture_on_commit_callbacks):
    experiment = make_experiment(people["owner"], viewers=[people["viewer"]], key="not-yet")
    populate(experiment, {"control": {"n": 30, "conversion": 0.2}, "arm-1": {"n": 30, "conversion": 0.3},
                          "arm-2": {"n": 30, "conversion": 0.1}})
    login(client, people["owner"])
    response = client.get(_url("experiment-detail", experiment))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-state="none"' in html and "No results have been computed" in html
    assert "Compute results now" in html
    assert client.get(_url("export-csv", experiment)).status_code == 409
    assert client.get(_url("export-json", experiment)).status_code == 409
    assert client.get(_url("results-json", experiment)).json()["state"] == "none"
    with django_capture_on_commit_callbacks(execute=True):
        client.post(_url("recompute", experiment))
    assert client.get(_url("results-json", experiment)).json()["state"] == "ok"
    login(client, people["viewer"])
    viewer_page = client.get(_url("experiment-detail", experiment)).content.decode()
    assert "Only the owner and staff can recompute" in viewer_page


def test_a_document_of_an_older_schema_gets_a_clear_message(client, people):
    experiment = make_experiment(people["owner"], key="old-format")
    now = timezone.now()
    # Deliberately hand-written: a document whose own version is not the one the code reads.
    ResultSnapshot.objects.create(
        experiment=experiment, schema_version=1, status="ok", phase=1, window_start=experiment.started_at,
        window_end=now, computed_at=now, subjects=10, data={"schema_version": 0, "effects": {"arm-1": 0.1}},
    )
    login(client, people["owner"])
    response = client.get(_url("experiment-detail", experiment))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-state="old_schema"' in html
    assert "stored in format version 0, and this dashboard reads versions 1, 2 and 3. Recompute" in html
    csv_response = client.get(_url("export-csv", experiment))
    assert csv_response.status_code == 409 and b"format version 0" in csv_response.content


def test_a_snapshot_from_a_newer_pipeline_asks_to_wait_for_the_deploy(client, people):
    experiment = make_experiment(people["owner"], key="new-format")
    now = timezone.now()
    ResultSnapshot.objects.create(
        experiment=experiment, schema_version=ResultSnapshot.SCHEMA_VERSION + 1, status="ok", phase=1,
        window_start=experiment.started_at, window_end=now, computed_at=now, subjects=10,
        data={"schema_version": ResultSnapshot.SCHEMA_VERSION + 1, "something": "new"},
    )
    login(client, people["owner"])
    response = client.get(_url("experiment-detail", experiment))
    assert response.status_code == 200
    assert "newer than the version" in response.content.decode()


def test_a_snapshot_stored_with_an_older_schema_version_is_never_a_500(client, people):
    experiment = make_experiment(people["owner"], key="old-version")
    now = timezone.now()
    ResultSnapshot.objects.create(
        experiment=experiment, schema_version=1, status="ok", phase=1, window_start=experiment.started_at,
        window_end=now, computed_at=now, subjects=10, data={"effects": {"arm-1": 0.1}},
    )
    # schema_version ≥ 1 is a database constraint, so an "older" row is one the code has moved past:
    with mock.patch.object(ResultSnapshot, "SCHEMA_VERSION", 3), \
            mock.patch("experiments.dashboard.pages.SCHEMA_VERSION", 3), \
            mock.patch("experiments.dashboard.pages.READABLE", (2, 3)):
        login(client, people["owner"])
        page = client.get(_url("experiment-detail", experiment))
        assert page.status_code == 200
        assert "stored in format version 1, and this dashboard reads versions 2 and 3" in page.content.decode()
        csv_response = client.get(_url("export-csv", experiment))
        assert csv_response.status_code == 409 and b"format version 1" in csv_response.content
        exported = client.get(_url("export-json", experiment))
        assert exported.status_code == 200
        assert json.loads(exported.content)["data"] == {"effects": {"arm-1": 0.1}}
        payload = client.get(_url("results-json", experiment)).json()
        assert payload["state"] == "old_schema" and "format version 1" in payload["message"]
        row = client.get("/").context["rows"][0]
        assert row.verdict == "Results in an old format: recompute"


def test_a_current_version_snapshot_that_cannot_be_read_is_reported_not_raised(client, people, caplog):
    experiment = make_experiment(people["owner"], key="broken-doc")
    now = timezone.now()
    ResultSnapshot.objects.create(
        experiment=experiment, status="ok", phase=1, window_start=experiment.started_at, window_end=now,
        computed_at=now, subjects=10, data={"schema_version": ResultSnapshot.SCHEMA_VERSION, "arms": []},
    )
    login(client, people["owner"])
    response = client.get(_url("experiment-detail", experiment))
    assert response.status_code == 200
    assert 'data-state="unreadable"' in response.content.decode()
    assert "could not be read" in caplog.text


def test_an_experiment_without_exposures_or_with_an_empty_arm(client, people):
    empty = make_experiment(people["owner"], key="nobody-yet")
    compute_results(experiment=empty, monitor=False)
    partial = make_experiment(people["owner"], key="one-arm-empty")
    populate(partial, {"control": {"n": 40, "conversion": 0.2}, "arm-1": {"n": 40, "conversion": 0.2}})
    compute_results(experiment=partial, monitor=False)
    login(client, people["owner"])
    html = client.get(_url("experiment-detail", empty)).content.decode()
    assert 'data-state="no_exposures"' in html and "No subject has been exposed" in html
    html = client.get(_url("experiment-detail", partial)).content.decode()
    assert 'data-state="arm_without_exposures"' in html and "arm-2" in html and "SRM mismatch" in html
    assert client.get(_url("export-csv", partial)).status_code == 200


def test_stale_results_are_flagged(client, analysed, people):
    ResultSnapshot.objects.filter(experiment=analysed).update(computed_at=timezone.now() - STALE_AFTER * 2)
    login(client, people["owner"])
    response = client.get(_url("experiment-detail", analysed))
    assert response.context["page"].freshness.stale
    assert "Stale:" in response.content.decode()


def test_alerts_and_their_history(client, people):
    experiment = make_experiment(people["owner"], key="alerting")
    Guardrail.objects.create(experiment=experiment, metric="opt_out", margin=0.01)
    populate(experiment, {"control": {"n": 500, "opt_out": 0.02}, "arm-1": {"n": 380, "opt_out": 0.25},
                          "arm-2": {"n": 500, "opt_out": 0.02}})
    first, second = analyse(experiment, runs=2)
    experiment_monitor(snapshot=first)  # not the latest run: no action
    outcome = experiment_monitor(snapshot=second)
    assert outcome["paused"]
    ExperimentAlert.objects.filter(kind="srm").update(acknowledged_at=timezone.now())
    login(client, people["owner"])
    response = client.get(_url("experiment-detail", experiment))
    page = response.context["page"]
    assert {(a.kind, a.action) for a in page.alerts} == {("srm", ""), ("guardrail", "paused")}
    assert len(page.history) == 2 and all(run.srm_flag for run in page.history)
    html = response.content.decode()
    assert "Guardrail breached, experiment paused." in html and "Experiment paused" in html
    assert "acknowledged" in html and "<strong>open</strong>" in html
    assert "Sample-ratio mismatch" in page.tradeoff.verdict.text
    assert any(row.status == "breached" for row in page.guardrails)


# --- exports and the JSON endpoint ----------------------------------------------------


def test_csv_export_has_every_comparison_of_the_latest_snapshot(client, analysed, people):
    # A marketplace attribute that looks like a spreadsheet formula ends up in a segment's name.
    every_third = list(analysed.exposures.order_by("id").values_list("subject_id", flat=True))[::3]
    Subject.objects.filter(pk__in=every_third).update(province="=HYPERLINK(1)")
    snapshot = compute_results(experiment=analysed, monitor=False)
    login(client, people["viewer"])
    response = client.get(_url("export-csv", analysed))
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith(f'attachment; filename="{analysed.key}-results-')
    records = list(csv.DictReader(io.StringIO(response.content.decode())))
    overall = [r for r in records if r["scope"] == "overall" and not r["skipped_reason"]]
    assert len(overall) == len(snapshot.data["report"]["comparisons"])
    segments = [r for r in records if r["scope"] == "segment" and not r["skipped_reason"]]
    assert len(segments) == sum(len(s["comparisons"]) for s in snapshot.data["report"]["segments"])
    gmv = next(r for r in overall if r["arm"] == "arm-1" and r["metric"] == "gmv")
    stored = next(c for c in snapshot.data["report"]["comparisons"] if c["arm"] == "arm-1" and c["metric"] == "gmv")
    assert float(gmv["absolute_estimate"]) == stored["absolute"]["estimate"]
    assert float(gmv["p_value_adjusted"]) == stored["p_value_adjusted"]
    assert gmv["cuped"] == "true" and gmv["adjustment"] == "holm"
    assert {r["adjustment"] for r in segments} == {"benjamini-hochberg"}
    assert any(r["metric"] == "consent_rate" and r["skipped_reason"] for r in records)
    assert any(r["segment"] == "province==HYPERLINK(1)" for r in segments)
    assert not any(value.startswith(("=", "+", "@")) for r in records for value in r.values())
    # Times are local with their offset, as on the pages (Asia/Jakarta: +07:00).
    assert gmv["window_end"] == timezone.localtime(snapshot.window_end).isoformat()
    assert gmv["window_end"].endswith("+07:00") and gmv["computed_at"].endswith("+07:00")
    # Under CUPED the adjusted treatment mean is the control's plus the adjusted difference.
    assert float(gmv["treatment_mean_adjusted"]) == pytest.approx(stored["control_mean"] + stored["absolute"]["estimate"])


def test_csv_export_carries_guardrails_the_sample_ratio_check_and_the_stored_decision(client, analysed, people):
    snapshot = ResultSnapshot.objects.filter(experiment=analysed).order_by("-window_end").first()
    login(client, people["owner"])
    records = list(csv.DictReader(io.StringIO(client.get(_url("export-csv", analysed)).content.decode())))
    guardrails = [r for r in records if r["scope"] == "guardrail"]
    stored = snapshot.data["guardrails"]
    assert [(r["arm"], r["metric"]) for r in guardrails] == [(g["arm"], g["metric"]) for g in stored]
    for row, entry in zip(guardrails, stored, strict=True):
        assert float(row["margin"]) == (-entry["margin"] if entry["higher_is_better"] else entry["margin"])
        assert float(row["bound"]) == entry["noninferiority"]["bound"]
        assert row["detail"] == entry["reason"] and row["status"] in {"non-inferior", "not yet shown", "breached"}
    (srm,) = [r for r in records if r["scope"] == "sample_ratio"]
    assert float(srm["p_value"]) == snapshot.data["srm"]["p_value"]
    assert srm["status"] == ("mismatch" if snapshot.data["srm"]["flag"] else "ok")
    (decision,) = [r for r in records if r["scope"] == "decision"]
    stored_decision = snapshot.data["decision"]
    assert decision["status"] == stored_decision["outcome"] and decision["arm"] == (stored_decision["arm"] or "")
    assert decision["final"] == ("true" if stored_decision["final"] else "false")
    assert decision["detail"].startswith(stored_decision["summary"])


def test_json_export_is_the_stored_snapshot(client, analysed, people):
    login(client, people["staff"])
    response = client.get(_url("export-json", analysed))
    assert response["Content-Disposition"].endswith('.json"')
    body = json.loads(response.content)
    snapshot = ResultSnapshot.objects.get(pk=body["snapshot"]["id"])
    # As stored, with small segment cells suppressed (experiments.disclosure; none is small here).
    assert body["data"] == segments_suppress(snapshot.data) and body["experiment"] == analysed.key
    assert body["data"]["report"]["segments"] == snapshot.data["report"]["segments"]
    assert snapshot == ResultSnapshot.objects.filter(experiment=analysed).order_by("-window_end").first()


def test_the_json_endpoint_carries_the_page_data(client, analysed, people):
    login(client, people["owner"])
    response = client.get(_url("results-json", analysed))
    assert response["Content-Type"] == "application/json"
    payload = response.json()
    snapshot = ResultSnapshot.objects.filter(experiment=analysed).order_by("-window_end").first()
    assert payload["state"] == "ok" and payload["snapshot"]["id"] == snapshot.pk
    assert payload["comparisons"] == snapshot.data["report"]["comparisons"]
    assert payload["segments"] == snapshot.data["report"]["segments"]
    assert payload["decision"]["outcome"] == "ship" and payload["verdict"]["text"].startswith("Ship arm-1:")
    assert [arm["key"] for arm in payload["experiment"]["arms"]] == ["control", "arm-1", "arm-2"]
    assert all("compliance_findings" in arm for arm in payload["experiment"]["arms"])
    quality = {row["arm"]: row for row in payload["recommendation_quality"]}
    assert quality["arm-1"]["gmv_share_from_recommendations"] == pytest.approx(200_000 / 350_000)
    assert payload["alerts"] == []


# --- recompute progress -----------------------------------------------------------------


def test_recompute_status_goes_from_idle_to_queued_to_done(
    client, analysed, people, django_capture_on_commit_callbacks
):
    login(client, people["owner"])
    status_url = _url("recompute-status", analysed)
    assert client.get(status_url).json()["state"] == "idle"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(_url("recompute", analysed), HTTP_ACCEPT="application/json")
    assert response.status_code == 202 and response.json()["state"] == "queued"
    queued = client.get(status_url).json()
    assert queued["state"] == "queued" and queued["task_id"]
    page = client.get(_url("experiment-detail", analysed)).content.decode()
    assert 'data-poll="1"' in page and "Queued" in page
    # A second click while queued joins the same request.
    with django_capture_on_commit_callbacks(execute=False) as again:
        client.post(_url("recompute", analysed))
    assert again == [] and client.get(status_url).json()["task_id"] == queued["task_id"]
    for callback in callbacks:  # the commit: the (eager) task runs
        callback()
    done = client.get(status_url).json()
    assert done["state"] == "done"
    latest = ResultSnapshot.objects.filter(experiment=analysed).order_by("-computed_at").first()
    assert done["snapshot"]["id"] == latest.pk
    assert "Recomputed at" in client.get(_url("experiment-detail", analysed)).content.decode()


def test_a_recompute_that_cannot_run_shows_as_failed(client, analysed, people, django_capture_on_commit_callbacks):
    login(client, people["owner"])
    with mock.patch("experiments.dashboard.recompute.results_compute.apply_async",
                    side_effect=ConnectionError("broker down")), \
            django_capture_on_commit_callbacks(execute=True):
        response = client.post(_url("recompute", analysed))
    assert response.status_code == 302
    status = client.get(_url("recompute-status", analysed)).json()
    assert status["state"] == "failed" and "could not be started" in status["message"]
    page = client.get(_url("experiment-detail", analysed))
    assert page.status_code == 200 and "could not be started" in page.content.decode()
    # A new click tries again.
    with django_capture_on_commit_callbacks(execute=True):
        client.post(_url("recompute", analysed))
    assert client.get(_url("recompute-status", analysed)).json()["state"] == "done"


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


def test_the_detail_page_reads_a_fixed_number_of_queries_however_many_runs(
    client, analysed, people, django_assert_max_num_queries
):
    login(client, people["viewer"])
    client.get(_url("experiment-detail", analysed))  # warms the per-run cache of the GMV share
    with django_assert_max_num_queries(12):
        client.get(_url("experiment-detail", analysed))
    analyse(analysed, runs=6)
    client.get(_url("experiment-detail", analysed))
    with django_assert_max_num_queries(12):
        response = client.get(_url("experiment-detail", analysed))
    assert [len(series.points) for series in response.context["page"].timeline_series] == [9, 9]


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


# --- feedback before and around results ------------------------------------------------


def _recompute_message(client, experiment, django_capture_on_commit_callbacks) -> str:
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(_url("recompute", experiment))
    assert response.status_code == 302
    status = client.get(_url("recompute-status", experiment)).json()
    assert status["state"] == "failed"
    page = client.get(_url("experiment-detail", experiment)).content.decode()
    assert escape(status["message"]) in page and "server log" not in page
    return status["message"]


def test_recompute_says_why_an_experiment_cannot_be_computed(client, people, django_capture_on_commit_callbacks):
    login(client, people["owner"])
    nobody = make_experiment(people["owner"], key="nobody-exposed")
    message = _recompute_message(client, nobody, django_capture_on_commit_callbacks)
    assert message.startswith("Not computed: Nobody has been exposed to this experiment yet")
    assert not ResultSnapshot.objects.filter(experiment=nobody).exists()

    no_control = make_experiment(people["owner"], key="no-control")
    populate(no_control, {"control": {"n": 5}, "arm-1": {"n": 5}, "arm-2": {"n": 5}})
    no_control.arms.update(is_control=False)
    assert "has no control arm" in _recompute_message(client, no_control, django_capture_on_commit_callbacks)

    draft = ExperimentFactory(owner=people["owner"], key="still-a-draft")
    assert "has not started" in _recompute_message(client, draft, django_capture_on_commit_callbacks)

    armless = ExperimentFactory(owner=people["owner"], key="no-arms", arms=0)
    assert "has no arms yet" in _recompute_message(client, armless, django_capture_on_commit_callbacks)


def test_a_refusal_in_words_from_the_run_itself_reaches_the_page(
    client, people, django_capture_on_commit_callbacks
):
    # Passes the checks, then the pipeline refuses (the control arm was removed in between).
    experiment = make_experiment(people["owner"], key="refused-in-run")
    populate(experiment, {"control": {"n": 5}, "arm-1": {"n": 5}, "arm-2": {"n": 5}})
    login(client, people["owner"])
    with mock.patch("experiments.dashboard.recompute.recompute_refusal", return_value=""):
        experiment.arms.update(is_control=False)
        message = _recompute_message(client, experiment, django_capture_on_commit_callbacks)
    assert message == "Not computed: Experiment 'refused-in-run' has no control arm."


def test_exports_are_offered_only_once_there_are_results(client, people, analysed):
    login(client, people["owner"])
    empty = make_experiment(people["owner"], key="no-results-yet")
    html = client.get(_url("experiment-detail", empty)).content.decode()
    assert 'id="exports"' not in html and _url("export-csv", empty) not in html
    html = client.get(_url("experiment-detail", analysed)).content.decode()
    assert _url("export-csv", analysed) in html and _url("export-json", analysed) in html


def test_freshness_and_history_read_as_english(client, people):
    experiment = make_experiment(people["owner"], key="one-run")
    populate(experiment, {"control": {"n": 30, "conversion": 0.2}, "arm-1": {"n": 30, "conversion": 0.3},
                          "arm-2": {"n": 30, "conversion": 0.1}})
    compute_results(experiment=experiment, monitor=False)
    login(client, people["owner"])
    html = client.get(_url("experiment-detail", experiment)).content.decode()
    assert "(just now; data up to" in html and "0 minutes ago" not in html
    assert "Monitor history: the one run so far" in html and "the last 1 runs" not in html
    ResultSnapshot.objects.filter(experiment=experiment).update(computed_at=timezone.now() - timezone.timedelta(minutes=3))
    html = client.get(_url("experiment-detail", experiment)).content.decode()
    assert "(3\xa0minutes ago; data up to" in html


def test_targeting_is_on_the_page_before_any_result(client, people):
    login(client, people["owner"])
    everyone = make_experiment(people["owner"], key="for-everyone")
    assert '<dd id="targeting">Everyone</dd>' in client.get(_url("experiment-detail", everyone)).content.decode()
    targeted = make_experiment(people["owner"], key="targeted", targeting={"age_band": ["18-24", "25-34"],
                                                                          "platform": ["android"]})
    html = client.get(_url("experiment-detail", targeted)).content.decode()
    assert ('<dd id="targeting">Subjects whose age band is one of 18-24, 25-34; and whose platform is android</dd>'
            in html)
    assert "No results yet" in html
def test_the_descriptive_ratio_is_shown_apart_and_schema_2_snapshots_still_render(client, analysed, people):
    """Schema 3 adds the descriptive withdrawals among subjects who granted (never tested) and the
    order cap; a schema-2 document (without them) renders as before."""
    login(client, people["owner"])
    page = client.get(_url("experiment-detail", analysed)).content.decode()
    assert 'id="descriptive-withdrawals_among_granted"' in page
    assert "Withdrawals among subjects who granted" in page and "post-treatment" in page
    latest = ResultSnapshot.objects.filter(experiment=analysed).latest()
    older = dict(latest.data, schema_version=2)
    older.pop("descriptive")
    older["settings"] = {k: v for k, v in older["settings"].items() if k != "order_cap"}
    ResultSnapshot.objects.filter(pk=latest.pk).update(schema_version=2, data=older)
    response = client.get(_url("experiment-detail", analysed))
    assert response.status_code == 200
    content = response.content.decode()
    assert 'id="results-table"' in content and "descriptive-withdrawals_among_granted" not in content
    assert client.get(_url("export-csv", analysed)).status_code == 200
