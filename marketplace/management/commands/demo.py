"""``make demo``: the platform's main job on the embedded default.

1. migrate the database;
2. start a 14-day, 4-arm privacy experiment (backdated) and simulate the
   marketplace through the real services: assignment, consent, daily (or
   ``--build-every hourly``) recommendation builds, every session's list read
   through serving, the clicks and purchases it caused (``marketplace.driver``);
3. compute the results through the Celery tasks (eager in this mode), one
   snapshot per simulated day as the scheduled job would have (the metric
   pipeline, the stats engine, guardrails, the decision rule, a stored
   ``ResultSnapshot`` each), so the effect-over-time chart has 14 points;
4. print the results table;
5. serve the admin (and the dashboard) at http://127.0.0.1:8000/ with a
   printed login, until interrupted (``--no-serve`` stops after step 4), with a
   Celery worker and beat beside the web server (``config.embedded``: kombu's
   file-system transport, no server), so schedules fire as in production.
   ``--no-worker`` serves alone, and the pages then say that nothing scheduled runs.

Steps 1-4 run their tasks eagerly in this process, before any worker exists.
"""

import secrets
import signal
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from config import embedded
from config.celery import app as celery_app
from experiments import services
from experiments.models import Experiment, ResultSnapshot
from marketplace.driver import BUILD_SCHEDULES, simulate, snapshots_daily
from marketplace.experiment import demo_surface_ensure, experiment_setup

DEMO_PREFIX = "privacy-demo"
DAYS = 14


class Command(BaseCommand):
    help = "Run the demo: simulate a 14-day privacy experiment, compute and print its results, serve the UI."

    def add_arguments(self, parser):
        parser.add_argument("--subjects", type=int, default=10_000, help="simulated shoppers (default 10,000)")
        parser.add_argument("--seed", type=int, default=20261128)
        parser.add_argument("--build-every", choices=tuple(BUILD_SCHEDULES), default="daily",
                            help="the simulated schedule of the recommendation builds")
        parser.add_argument("--no-serve", action="store_true", help="stop after printing the results")
        parser.add_argument("--addr", default="127.0.0.1:8000")
        parser.add_argument(
            "--no-worker", action="store_true",
            help="serve without the Celery worker and beat: nothing scheduled runs (scheduled starts, periodic results)",
        )

    def handle(self, *args, subjects: int, seed: int, build_every: str, no_serve: bool, addr: str,
               no_worker: bool = False, **options):
        started = time.perf_counter()
        # The simulation and the first computation run here, before a worker exists.
        celery_app.conf.task_always_eager = True
        heading = self.style.MIGRATE_HEADING
        self.stdout.write(heading("1/5 Migrating the database"))
        call_command("migrate", interactive=False, verbosity=0)

        self.stdout.write(heading(f"2/5 Starting a {DAYS}-day privacy experiment"))
        username, password = self._demo_login()
        end = timezone.now().replace(microsecond=0)
        experiment = self._demo_experiment(
            owner=get_user_model().objects.get(username=username), start=end - timedelta(days=DAYS),
            daily_subjects=subjects / DAYS, seed=seed,
        )

        self.stdout.write(heading(f"3/5 Simulating {subjects:,} shoppers over {DAYS} days (assignment, consent, "
                                  "recommendations, orders through the platform's services)"))
        result = simulate(
            experiment=experiment, subjects=subjects, days=DAYS, seed=seed, end=end,
            namespace=f"{experiment.key}-shopper", build_every=build_every, write=self.stdout.write,
        )
        self.stdout.write(
            f"  {result.exposed:,} exposed, {result.events:,} outcome events, {result.consent_decisions:,} consent "
            f"decisions, {result.sessions:,} sessions, {result.builds} build rounds ({build_every}), "
            f"recommendations {result.recommendations}"
        )
        self.stdout.write("  seconds: " + ", ".join(f"{name.strip()} {sec:.1f}" for name, sec in result.seconds.items()))
        if result.agreement:
            self.stdout.write("  the truth's offline lists are the served ones for " + ", ".join(
                f"{arm} {share:.0%}" for arm, share in result.agreement.items() if share is not None
            ) + " of each arm's own sessions")

        self.stdout.write(heading("4/5 Computing the results, one snapshot per simulated day as the scheduled job "
                                  "would (Celery task: metric SQL → stats engine → snapshot)"))
        clock = time.perf_counter()
        snapshots_daily(experiment=experiment, start=result.window_start, end=end, write=self.stdout.write)
        snapshot = ResultSnapshot.objects.filter(experiment=experiment).order_by("-window_end", "-id").first()
        computing = time.perf_counter() - started
        self.stdout.write(f"  snapshots in {time.perf_counter() - clock:.1f}s (the last one {snapshot.compute_seconds:.1f}s); "
                          f"the demo's computing part took {computing:.0f}s")

        self.stdout.write(heading("5/5 Results"))
        self.stdout.write(results_table(snapshot))
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"Login: {username} / {password}"))
        self.stdout.write(f"  Admin:     http://{addr}/admin/")
        dashboard = self._dashboard_path(experiment)
        if dashboard:
            self.stdout.write(f"  Dashboard: http://{addr}{dashboard}")
        self.stdout.write(f"  API docs:  http://{addr}/api/docs/")
        self.stdout.write(f"  Ship:      the winner to {experiment.surface.key}, from the experiment's admin page or "
                          f"manage.py experiment_ship {experiment.key} ARM --reason TEXT (docs/surfaces.md)")
        if no_serve:
            return
        if no_worker or settings.REDIS_URL:
            # With REDIS_URL the worker and beat are `make up`'s (deploy/Procfile), not the demo's.
            celery_app.conf.task_always_eager = settings.CELERY_TASK_ALWAYS_EAGER
            self.stdout.write("Serving until interrupted (Ctrl+C)."
                              + (" No worker or beat: scheduled work does not run." if not settings.REDIS_URL else ""))
            call_command("runserver", addr, use_reloader=False, use_threading=True)
            return
        self._serve_with_worker(addr)

    def _serve_with_worker(self, addr: str) -> None:
        folder = Path(settings.EMBEDDED_CELERY_DIR or embedded.DEFAULT_FOLDER)
        processes = embedded.EmbeddedProcesses(addr=addr, folder=folder)
        self.stdout.write(
            f"Serving with a Celery worker and beat (broker: files in {folder}) until interrupted (Ctrl+C)."
        )

        def terminate(signum, frame):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, terminate)
        try:
            processes.start()
            self.stdout.write(f"  web, worker and beat started: {processes.pids()}")
            stopped = processes.wait()
            names = ", ".join(f"{name} (exit code {code})" for name, code in stopped.items())
            raise CommandError(f"The demo stopped because {names} stopped; its output is above.")
        except KeyboardInterrupt:
            self.stdout.write("Stopping web, worker and beat.")
        finally:
            processes.stop()
            signal.signal(signal.SIGTERM, previous)

    def _demo_login(self) -> tuple[str, str]:
        username, password = "demo", secrets.token_urlsafe(9)
        user, _ = get_user_model().objects.get_or_create(username=username, defaults={"email": ""})
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        return username, password

    def _demo_experiment(self, *, owner, start, daily_subjects: float, seed: int) -> Experiment:
        # Earlier demo runs stop, so the new run owns the layer; their data stays for comparison.
        for previous in Experiment.objects.filter(
            key__startswith=DEMO_PREFIX, status__in=[Experiment.Status.RUNNING, Experiment.Status.PAUSED]
        ):
            services.experiment_stop(experiment=previous)
        number = Experiment.objects.filter(key__startswith=DEMO_PREFIX).count() + 1
        try:
            experiment = experiment_setup(
                key=f"{DEMO_PREFIX}-{number}", owner=owner, start=start, daily_subjects=daily_subjects,
                surface=demo_surface_ensure(),
                # The seed decides the assignment too, so a seed reproduces the run's arms and its history.
                salt=f"{DEMO_PREFIX}-{number}-{seed}",
            )
        except ValidationError as exc:
            raise CommandError("The demo experiment cannot start: " + "; ".join(exc.messages)) from exc
        arms = ", ".join(f"{arm.key} ({arm.treatment.name})" for arm in experiment.arms.order_by("id"))
        self.stdout.write(f"  {experiment.name} [{experiment.key}]: {arms}")
        self.stdout.write(
            f"  Rule: {experiment.get_decision_rule_display()}, GMV per subject within "
            f"−{experiment.decision_margin:.0%} of the control; planned {experiment.planned_subjects_per_arm:,} "
            f"subjects per arm ({experiment.planned_days} days at {daily_subjects:,.0f} shoppers a day)"
        )
        surface = experiment.surface
        self.stdout.write(
            f"  Surface: {surface.key}, default {surface.default_treatment.name if surface.default_treatment else 'the built-in fallback'!r}"
            " (every shopper outside the experiment gets it)"
        )
        return experiment

    @staticmethod
    def _dashboard_path(experiment: Experiment) -> str | None:
        try:
            return reverse("dashboard:experiment-detail", args=[experiment.key])
        except NoReverseMatch:
            return None


def _percent(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"


def _ordinal(fraction: float) -> str:
    number = round(fraction * 100, 1)
    text = f"{number:g}"
    if number != int(number):
        return text + "th"
    suffix = "th" if 10 <= int(number) % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(int(number) % 10, "th")
    return text + suffix


def _idr(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def results_table(snapshot: ResultSnapshot) -> str:
    """The snapshot as the demo prints it: one line per arm, then the checks and the decision."""
    data = snapshot.data
    window = data["window"]
    lines = [
        f"{data['experiment']['name']} [{data['experiment']['key']}], window {window['start'][:16]} → {window['end'][:16]}"
    ]
    if snapshot.status != ResultSnapshot.Status.OK:
        lines.append(f"  {data['message']}")
        return "\n".join(lines)
    report = data["report"] or {"comparisons": []}
    by = {(c["arm"], c["metric"]): c for c in report["comparisons"]}
    statistics = data["statistics"]

    def mean(arm: str, metric: str) -> float | None:
        stat = statistics[arm][metric]
        n = stat["n"]
        if not n:
            return None
        return (stat["successes"] if "successes" in stat else stat["sum"]) / n

    header = (
        f"  {'arm':<15} {'treatment':<52} {'subjects':>8} {'conversion':>10} {'opt-out':>8} {'consent':>8} "
        f"{'GMV/subject':>12} {'GMV lift':>9} {'95% interval':>19} {'p-value':>8}"
    )
    lines += [header, "  " + "-" * (len(header) - 2)]
    for arm in data["arms"]:
        key = arm["key"]
        gmv = by.get((key, "gmv"))
        if arm["is_control"]:
            lift, interval, p = "control", "", ""
        elif gmv is None:
            lift, interval, p = "n/a", "", ""
        else:
            relative = gmv["relative"]
            lift = _percent(relative["estimate"])
            interval = f"[{_percent(relative['ci'][0])}, {_percent(relative['ci'][1])}]" if relative["ci"] else "—"
            p = f"{gmv['absolute']['p_value']:.3g}"
        lines.append(
            f"  {key:<15} {arm['treatment'][:52]:<52} {arm['subjects']:>8,} {_percent(mean(key, 'conversion')):>10} "
            f"{_percent(mean(key, 'opt_out'), 2):>8} {_percent(mean(key, 'consent_rate')):>8} "
            f"{_idr(mean(key, 'gmv')):>12} {lift:>9} {interval:>19} {p:>8}"
        )
    settings = data["settings"]
    cap = settings["gmv_cap"]
    gmv_rows = [c for c in report["comparisons"] if c["metric"] == "gmv"]
    reduction = [c["variance_reduction"] for c in gmv_rows if c.get("variance_reduction") is not None]
    lines.append(
        "  GMV per subject in IDR"
        + (f", capped at the {_ordinal(settings['gmv_cap_percentile'])} percentile of buyers ({_idr(cap)} IDR)" if cap else ", uncapped")
        + (
            f"; lift is CUPED-adjusted with {settings['pre_exposure_days']} days of pre-exposure GMV "
            f"(variance reduced {min(reduction):.0%}–{max(reduction):.0%})"
            if settings["cuped"] and reduction
            else ""
        )
        + "; p-values two-sided Welch, intervals for the relative lift (delta method)."
    )
    srm = data["srm"]
    verdict = "MISMATCH — do not trust the effects" if srm["flag"] else "ok"
    lines.append(
        f"  Sample-ratio check: chi² = {srm['chi2']:.2f}, p = {srm['p_value']:.3g} → {verdict} "
        f"(flagged below p = {srm['threshold']:g})"
    )
    for entry in data["guardrails"]:
        lines.append(f"  Guardrail: {entry['reason']}")
    for skipped in data["skipped_metrics"]:
        lines.append(f"  Not compared: {skipped['metric']} ({skipped['reason']})")
    decision = data["decision"]
    if decision:
        for reason in decision.get("reasons") or ():
            lines.append(f"  {reason}")
        if decision.get("rule_text"):
            lines.append(f"  Decision rule: {decision['rule_text']}")
        if decision.get("earliest_decision_date") and not decision.get("final"):
            lines.append(f"  Earliest decision date: {decision['earliest_decision_date'][:10]}")
        state = "final" if decision.get("final") else "not final yet"
        lines.append(f"  Decision ({state}): {decision['summary']}")
    return "\n".join(lines)
