"""``manage.py compute_results EXPERIMENT [--source NAME_OR_URL]``: one results run, now."""

from django.core.management.base import BaseCommand, CommandError

from experiments.models import Experiment
from experiments.results import snapshots
from experiments.warehouse import WarehouseError


class Command(BaseCommand):
    help = (
        "Compute and store an experiment's results now. --source reads the outcomes from a data source "
        "(its name, or a URL such as duckdb:///path/file.duckdb) instead of the experiment's own."
    )

    def add_arguments(self, parser):
        parser.add_argument("experiment", help="the experiment's key")
        parser.add_argument("--source", help="a data source's name or a URL (default: the experiment's)")

    def handle(self, *args, experiment: str, source: str | None = None, **options):
        row = Experiment.objects.filter(key=experiment).first()
        if row is None:
            raise CommandError(f"No experiment with key {experiment!r}.")
        if row.started_at is None:
            raise CommandError(f"Experiment {experiment!r} has not started: nothing to analyse.")
        try:
            snapshot = snapshots.compute_results(experiment=row, source=source, raise_source_errors=True)
        except WarehouseError as error:
            raise CommandError(f"{error} (an alert is raised; the last snapshot is kept)") from error
        self.stdout.write(
            f"{row.key}: {snapshot.status} over {snapshot.subjects} subjects, window ending "
            f"{snapshot.window_end.isoformat()} ({snapshot.compute_seconds:.2f}s)"
        )
