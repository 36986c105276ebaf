"""Rebuild the derived consent state from the ledger and report any difference."""

from django.core.management.base import BaseCommand, CommandError

from consent.services.state import consent_state_rebuild


class Command(BaseCommand):
    help = (
        "Replay the consent ledger into the current-state table and report every difference "
        "(missing, extra or mismatched rows). With --check nothing is changed and differences "
        "make the command fail."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--check", action="store_true", help="report only; exit 1 on any difference"
        )
        parser.add_argument("--batch-size", type=int, default=500, help="subjects per transaction")

    def handle(self, *args, check: bool, batch_size: int, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be positive")
        report = consent_state_rebuild(apply=not check, batch_size=batch_size)
        for example in report.examples:
            self.stdout.write(f"  {example}")
        self.stdout.write(
            f"{report.subjects} subjects, {report.pairs} subject-purpose decisions in the ledger; "
            f"differences: {report.missing} missing, {report.extra} extra, {report.mismatched} mismatched"
            + (" — corrected" if report.applied and report.differences else "")
        )
        if check and report.differences:
            raise CommandError(
                f"{report.differences} differences between the ledger and the state table"
            )
        if not report.differences:
            self.stdout.write(self.style.SUCCESS("The state table matches the ledger."))
