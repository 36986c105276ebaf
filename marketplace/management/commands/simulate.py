"""``manage.py simulate``: a marketplace running a privacy experiment, through the real services."""

import json
import secrets
from datetime import timedelta
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from experiments.models import Experiment
from marketplace.driver import BUILD_SCHEDULES, RECOMMENDATION_MODES, simulate, snapshots_daily
from marketplace.experiment import experiment_setup


class Command(BaseCommand):
    help = (
        "Simulate shoppers arriving over the last DAYS days of a privacy experiment: assignment, order "
        "history, consent, recommendations and outcome events all go through the platform's services. "
        "Creates the experiment (four privacy arms and an opt-out guardrail) when it does not exist."
    )

    def add_arguments(self, parser):
        parser.add_argument("--experiment", default="privacy-sim", help="experiment key (created if missing)")
        parser.add_argument("--subjects", type=int, default=10_000)
        parser.add_argument("--days", type=float, default=14.0)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument(
            "--cap-percentile",
            type=float,
            default=0.99,
            help="GMV cap percentile for a new experiment; 0 turns capping off (use 0 to compare with --truth)",
        )
        parser.add_argument("--truth", type=Path, help="write the ground truth (true effects) as JSON here")
        parser.add_argument(
            "--recommendations", choices=RECOMMENDATION_MODES, default="served",
            help="what the recommendation slot shows: the lists the platform serves, or uniformly random items "
            "in every arm (the placebo: personalization effects vanish)",
        )
        parser.add_argument(
            "--no-recommendations", action="store_true",
            help="the same as --recommendations random: nothing is built, the slot shows random items",
        )
        parser.add_argument("--build-every", choices=tuple(BUILD_SCHEDULES), default="daily",
                            help="the simulated schedule of the recommendation builds")
        parser.add_argument("--daily-snapshots", action="store_true",
                            help="compute a results snapshot for each simulated day, as the scheduled job would")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **options):
        if options["subjects"] < 1:
            raise CommandError(f"--subjects must be a positive number of shoppers, not {options['subjects']}.")
        if options["days"] <= 0:
            raise CommandError(f"--days must be positive, not {options['days']:g}.")
        end = timezone.now().replace(microsecond=0)
        experiment = experiment_for(
            key=options["experiment"],
            start=end - timedelta(days=options["days"]),
            cap_percentile=options["cap_percentile"] or None,
        )
        result = simulate(
            experiment=experiment,
            subjects=options["subjects"],
            days=options["days"],
            seed=options["seed"],
            end=end,
            namespace=f"{experiment.key}-{secrets.token_hex(3)}",
            recommendations="random" if options["no_recommendations"] else options["recommendations"],
            build_every=options["build_every"],
            progress=False if options["no_progress"] else None,
            write=self.stdout.write,
        )
        self.stdout.write(
            f"Simulated {result.subjects:,} shoppers ({result.exposed:,} exposed: "
            + ", ".join(f"{arm} {n:,}" for arm, n in result.by_arm.items())
            + f"), {result.events:,} events, {result.consent_decisions:,} consent decisions; "
            f"recommendations: {result.recommendations}, {result.sessions:,} sessions, {result.builds} build rounds."
        )
        if options["daily_snapshots"]:
            snapshots_daily(experiment=experiment, start=result.window_start, end=result.window_end, write=self.stdout.write)
        self.stdout.write("Seconds per phase: " + ", ".join(f"{name} {sec:.1f}" for name, sec in result.seconds.items()))
        if options["truth"]:
            options["truth"].write_text(json.dumps(result.truth, indent=2))
            self.stdout.write(f"Ground truth written to {options['truth']}.")


def experiment_for(*, key: str, start, cap_percentile: float | None) -> Experiment:
    """The running experiment ``key``, or a new demo experiment started at ``start``."""
    experiment = Experiment.objects.filter(key=key).first()
    if experiment is None:
        owner, _ = get_user_model().objects.get_or_create(username="simulator", defaults={"is_active": False})
        return experiment_setup(key=key, owner=owner, start=start, gmv_cap_percentile=cap_percentile)
    if experiment.status != Experiment.Status.RUNNING:
        raise CommandError(f"Experiment {key!r} is {experiment.status}; the simulator needs it running.")
    return experiment
