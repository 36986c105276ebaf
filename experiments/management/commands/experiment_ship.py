"""``manage.py experiment_ship EXPERIMENT ARM [--reason TEXT]``: start the rollout of a shipped arm (docs/surfaces.md)."""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from experiments import services
from experiments.models import Experiment


def _steps(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError as exc:
        raise CommandError(f"--steps: whole percentages separated by commas, e.g. 10,25,50,100 (not {text!r}).") from exc


class Command(BaseCommand):
    help = (
        "Ship an arm: start its rollout on the experiment's surface, ramped step by step (default 10,25,50,100%) "
        "until it becomes the surface's default. Without the phase's final ship verdict for this arm, --reason "
        "is required."
    )

    def add_arguments(self, parser):
        parser.add_argument("experiment", help="the experiment's key")
        parser.add_argument("arm", help="the arm's key")
        parser.add_argument("--reason", default="", help="why it is shipped (required without a final ship verdict)")
        parser.add_argument("--surface", help="the surface's key (default: the experiment's surface)")
        parser.add_argument("--steps", help="percentages, increasing, ending at 100, e.g. 10,25,50,100")
        parser.add_argument("--hold-hours", type=float, help="how long each step is held (default: the tunable)")
        parser.add_argument("--final-holdback", type=int,
                            help="percent kept on the previous default during the 100%% step's hold (default: the tunable)")
        parser.add_argument("--by", help="the username shipping it (default: the experiment's owner)")

    def handle(self, *args, experiment: str, arm: str, reason: str, surface=None, steps=None, hold_hours=None,
               by=None, final_holdback=None, **options):
        found = Experiment.objects.filter(key=experiment).first()
        if found is None:
            raise CommandError(f"No experiment {experiment!r}.")
        actor = None
        if by:
            actor = get_user_model().objects.filter(username=by).first()
            if actor is None:
                raise CommandError(f"--by: no user {by!r}.")
        try:
            rollout = services.experiment_ship(
                experiment=found, arm_key=arm, reason=reason, surface_key=surface,
                steps=None if steps is None else _steps(steps), hold_hours=hold_hours, final_holdback=final_holdback,
                actor=actor,
            )
        except ValidationError as exc:
            raise CommandError(" ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())) from exc
        self.stdout.write(
            f"Rollout {rollout.pk}: {found.key}/{arm} on {rollout.surface.key}, steps "
            f"{', '.join(f'{s}%' for s in rollout.steps)}, each held {rollout.hold_seconds / 3600:g} h"
            + (f"; at 100%, {rollout.final_holdback}% stay on the previous default until it is promoted."
               if rollout.final_holdback else ".")
        )
