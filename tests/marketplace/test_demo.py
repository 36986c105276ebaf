"""``manage.py demo --no-serve``: the main job end to end on a small population, and its printed table."""

import re
from datetime import timedelta
from io import StringIO
from itertools import pairwise

import pytest
from django.core.management import call_command

from experiments.models import Experiment, ResultSnapshot
from recommender.models import ModelBuild

# Committed transactions, as in the real command (configuration changes are announced on commit);
# serialized_rollback restores the seeded purposes and notices for the next test.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_the_demo_simulates_computes_and_prints_the_results_table():
    out = StringIO()
    call_command("demo", "--subjects", "400", "--no-serve", stdout=out)
    text = out.getvalue()

    experiment = Experiment.objects.get(key="privacy-demo-1")
    assert experiment.status == Experiment.Status.RUNNING
    # One snapshot per simulated day, as the scheduled job would have computed them; the table is the last one's.
    snapshots = ResultSnapshot.objects.filter(experiment=experiment).order_by("window_end")
    assert snapshots.count() == 14
    assert [s.window_end for s in snapshots] == sorted({s.window_end for s in snapshots})
    snapshot = snapshots.last()
    assert snapshot.status == ResultSnapshot.Status.OK and snapshot.subjects == 400

    for step in ("1/5", "2/5", "3/5", "4/5", "5/5"):
        assert step in text
    header = next(line for line in text.splitlines() if "subjects" in line and "GMV lift" in line)
    for column in ("arm", "treatment", "conversion", "opt-out", "consent", "GMV/subject", "95% interval", "p-value"):
        assert column in header
    rows = {line.split()[0]: line for line in text.splitlines() if re.match(r"\s+(control|optin-cohort|dp-popularity|no-sensitive)\s", line)}
    assert set(rows) == {"control", "optin-cohort", "dp-popularity", "no-sensitive"}
    by_arm = {arm["key"]: arm["subjects"] for arm in snapshot.data["arms"]}
    for arm, line in rows.items():
        assert f"{by_arm[arm]:,}" in line
        if arm != "control":
            # lift, interval [low, high] and p-value come from the stored snapshot's comparison
            gmv = next(c for c in snapshot.data["report"]["comparisons"] if c["arm"] == arm and c["metric"] == "gmv")
            assert f"{gmv['relative']['estimate'] * 100:.1f}%" in line
            assert re.search(r"\[-?\d+\.\d%, -?\d+\.\d%\]", line)
            assert f"{gmv['absolute']['p_value']:.3g}" in line
    srm = snapshot.data["srm"]
    assert f"Sample-ratio check: chi² = {srm['chi2']:.2f}, p = {srm['p_value']:.3g}" in text
    assert "Guardrail:" in text and "Decision rule: Privacy first:" in text
    assert text.rstrip().splitlines()[-7].startswith("  Decision (not final yet): Keep running: ")  # the verdict in words ends the table
    assert re.search(r"Login: demo / \S+", text)
    assert "http://127.0.0.1:8000/admin/" in text

    # The experiment runs on the seeded surface, whose default is the control's design; its winner can be shipped.
    surface = experiment.surface
    assert surface.key == "product-recommendations"
    assert surface.default_treatment == experiment.arms.get(key="control").treatment
    assert f"Surface: product-recommendations, default '{surface.default_treatment.name}'" in text
    assert "manage.py experiment_ship privacy-demo-1 ARM" in text
    from experiments.services import subject_assign

    treatments = subject_assign(subject_id="after-the-demo", attributes={}).treatments
    assert treatments["product-recommendations"]["source"] in {"experiment", "default"}
    call_command("experiment_ship", experiment.key, "optin-cohort", "--reason", "The PM ships the opt-in design.",
                 stdout=StringIO())
    assert surface.rollouts.get().status == "ramping"

    # The DP arm is rebuilt as often as its budget sustains (every 3 days at ε = 1 and 10 per 30 days):
    # none of its builds over the 14 days is refused, and what they spent stays within the budget.
    dp_builds = ModelBuild.objects.filter(arm__experiment=experiment, arm__key="dp-popularity").order_by("started_at")
    assert not dp_builds.filter(error="PrivacyBudgetExhausted").exists()
    started = [b.started_at for b in dp_builds.filter(status=ModelBuild.Status.SUCCEEDED)]
    assert len(started) >= 4 and all(later - earlier >= timedelta(days=3) for earlier, later in pairwise(started))
    assert sum(b.epsilon_spent or 0 for b in dp_builds) <= 10
    assert "refused" not in text


def test_running_the_demo_again_starts_a_fresh_experiment():
    call_command("demo", "--subjects", "120", "--no-serve", stdout=StringIO())
    call_command("demo", "--subjects", "120", "--no-serve", stdout=StringIO())
    first, second = Experiment.objects.get(key="privacy-demo-1"), Experiment.objects.get(key="privacy-demo-2")
    assert first.status == Experiment.Status.STOPPED and second.status == Experiment.Status.RUNNING
    assert first.surface == second.surface  # the surface is seeded once
    assert ResultSnapshot.objects.filter(experiment=second).order_by("window_end").last().subjects == 120
