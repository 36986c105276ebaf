"""The dashboard pages (``experiments.dashboard.pages``): the list and the detail page, from real snapshots."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from django.utils import timezone

from experiments.dashboard.pages import STALE_AFTER
from experiments.models import Experiment, ExperimentAlert, Guardrail, ResultSnapshot
from experiments.results import compute_results, experiment_monitor
from tests.dashboard.conftest import analyse, login, make_experiment
from tests.dashboard.conftest import page_url as _url
from tests.experiments.factories import ExperimentFactory
from tests.experiments.pipeline_kit import populate

pytestmark = pytest.mark.django_db


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
    assert "stored in format version 0, and this dashboard reads versions 1, 2, 3, 4 and 5. Recompute" in html
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


# --- feedback before and around results ------------------------------------------------


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


def test_a_rolled_back_rollout_shows_its_alert(client, people):
    from django.test import TestCase

    from experiments import services

    experiment = make_experiment(people["owner"], key="shipped")
    with TestCase.captureOnCommitCallbacks(execute=True):
        surface = services.surface_create(key="product-recommendations", name="Product recommendations")
    experiment.surface = surface
    experiment.save(update_fields=["surface"])
    rollout = services.experiment_ship(experiment=experiment, arm_key="arm-1", reason="PM decision")
    services.rollout_roll_back(rollout=rollout, reason="conversion breached its margin at 10%", kind="guardrail",
                               details={"metric": "conversion"})
    login(client, people["owner"])
    response = client.get(_url("experiment-detail", experiment))
    assert {(a.kind, a.action) for a in response.context["page"].alerts} == {("guardrail", "rolled_back")}
    html = response.content.decode()
    assert "Rollout rolled back" in html and "conversion breached its margin at 10%" in html


def test_a_bayesian_experiment_shows_chance_to_win_risk_and_credible_intervals(client, people):
    from tests.dashboard.conftest import ARMS

    experiment = make_experiment(people["owner"], key="bayes-reco", planned_subjects_per_arm=400,
                                 analysis_engine="bayesian", prior_mean=0.0, prior_variance=0.09)
    populate(experiment, ARMS, prefix="bayes")
    snapshot = compute_results(experiment=experiment, monitor=False)
    assert snapshot.schema_version == ResultSnapshot.SCHEMA_VERSION == 5
    login(client, people["owner"])
    response = client.get(_url("experiment-detail", experiment))
    page = response.context["page"]
    stored = snapshot.data["bayesian_report"]["comparisons"]
    assert page.engine == "bayesian" and len(page.bayesian) == len(stored) > 0
    first = next(c for c in stored if (c["arm"], c["metric"]) == (page.bayesian[0].arm, page.bayesian[0].metric))
    effect = first["relative"] if first["relative"]["chance_to_win"] is not None else first["absolute"]
    assert page.bayesian[0].chance_to_win == f"{100 * effect['chance_to_win']:.1f}%"
    html = response.content.decode()
    assert 'id="bayesian"' in html and "Chance to win" in html and "Gaussian prior" in html
    exported = json.loads(client.get(_url("export-json", experiment)).content)
    assert exported["data"]["bayesian_report"]["prior"] == {"mean": 0.0, "variance": 0.09}


def test_a_frequentist_snapshot_has_no_bayesian_table(client, analysed, people):
    login(client, people["viewer"])
    response = client.get(_url("experiment-detail", analysed))
    assert response.context["page"].bayesian == [] and 'id="bayesian"' not in response.content.decode()


def test_a_schema_3_snapshot_without_an_engine_still_renders_as_frequentist(client, analysed, people):
    latest = ResultSnapshot.objects.filter(experiment=analysed).latest()
    older = dict(latest.data, schema_version=3)
    older.pop("engine")
    ResultSnapshot.objects.filter(pk=latest.pk).update(schema_version=3, data=older)
    login(client, people["owner"])
    response = client.get(_url("experiment-detail", analysed))
    assert response.status_code == 200 and 'id="results-table"' in response.content.decode()
    page = response.context["page"]
    assert page.engine == "frequentist" and page.bayesian == []


def test_the_page_says_which_adjustment_each_metric_used_and_the_variance_it_removed(client, analysed, people):
    snapshot = ResultSnapshot.objects.filter(experiment=analysed).latest()
    stored = snapshot.data["adjustment"]
    login(client, people["viewer"])
    response = client.get(_url("experiment-detail", analysed))
    page = response.context["page"]
    assert {row.metric for row in page.adjustments} == set(stored)
    gmv = next(row for row in page.adjustments if row.metric == "gmv")
    assert gmv.method == {"cuped++": "CUPED++", "cuped": "CUPED", "stratification": "Post-stratification"}[
        stored["gmv"]["method"]
    ]
    from experiments.dashboard.formatting import percent

    reduction = stored["gmv"]["variance_reduction"]["arm-1"]
    assert f"arm-1: {percent(reduction, 0)}" in gmv.removed  # negative: Lin's small-sample cost
    html = response.content.decode()
    assert 'id="adjustments"' in html and "Variance removed" in html and gmv.used in html and gmv.method in html


def test_health_flags_are_shown_with_their_reason_and_exported_in_the_json(client, people):
    from tests.dashboard.conftest import ARMS

    experiment = make_experiment(people["owner"], key="health-reco", suspicious_uplift=1e-4)
    populate(experiment, ARMS, prefix="health")
    snapshot = compute_results(experiment=experiment, monitor=False)
    flags = snapshot.data["health"]["flags"]
    assert any(flag["check"] == "suspicious_uplift" for flag in flags)
    login(client, people["owner"])
    response = client.get(_url("experiment-detail", experiment))
    page = response.context["page"]
    assert not page.health.healthy and len(page.health.flags) == len(flags)
    html = response.content.decode()
    assert 'id="health-flags"' in html and "Suspicious uplift" in html
    assert flags[0]["reason"].split(":")[0] in html
    exported = json.loads(client.get(_url("export-json", experiment)).content)
    assert exported["data"]["health"]["flags"] == flags


def test_each_segment_table_opens_with_its_interaction_test_and_the_effect_by_exposure_day_follows(
    client, analysed, people
):
    snapshot = ResultSnapshot.objects.filter(experiment=analysed).latest()
    tests = [t for t in snapshot.data["heterogeneity"]["interaction_tests"] if t["metric"] == "gmv"]
    login(client, people["viewer"])
    response = client.get(_url("experiment-detail", analysed) + "?segments=gmv")
    page = response.context["page"]
    assert tests
    for table in page.segments:
        expected = [t for t in tests if t["dimension"] == table.dimension]
        assert [summary.arm for summary in table.interaction] == [t["arm"] for t in expected]
        assert all("χ²" in summary.text for summary in table.interaction)
    html = response.content.decode()
    assert html.count('class="small interaction-tests"') == sum(1 for table in page.segments if table.interaction) > 0
    assert html.index('class="small interaction-tests"') < html.index('class="data-table segment-table')
    days = snapshot.data["heterogeneity"]["exposure_days"]
    if days is not None:  # the seeded history spans a few days
        assert page.exposure_days is not None and 'id="exposure-day-table"' in html
        assert [row.day for row in page.exposure_days.rows] == [
            entry["day"] for entry in days["days"] if any(c["metric"] == "gmv" for c in entry["comparisons"])
        ]
    exported = json.loads(client.get(_url("export-json", analysed)).content)
    assert exported["data"]["heterogeneity"]["interaction_tests"] == snapshot.data["heterogeneity"]["interaction_tests"]


def test_a_schema_4_snapshot_without_adjustment_health_or_heterogeneity_still_renders(client, analysed, people):
    latest = ResultSnapshot.objects.filter(experiment=analysed).latest()
    older = {key: value for key, value in latest.data.items() if key not in ("adjustment", "health", "heterogeneity")}
    older["schema_version"] = 4
    ResultSnapshot.objects.filter(pk=latest.pk).update(schema_version=4, data=older)
    login(client, people["owner"])
    response = client.get(_url("experiment-detail", analysed))
    assert response.status_code == 200
    page = response.context["page"]
    assert page.adjustments == [] and page.health is None and page.exposure_days is None
    assert all(table.interaction == () for table in page.segments)
    html = response.content.decode()
    assert 'id="results-table"' in html and 'id="adjustments"' not in html and 'id="health"' not in html
