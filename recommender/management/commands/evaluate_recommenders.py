"""``manage.py evaluate_recommenders``: the privacy/utility table (see docs/recommender.md).

Reads consenting subjects' orders and clicks (as a build would, under the
given sensitive-category policy), splits them in time, trains every strategy
on the past and scores its top-k against what each subject chose later.
``--synthetic`` evaluates on a generated marketplace instead (no database).
"""

from django.core.management.base import BaseCommand, CommandError

from recommender import evaluation
from recommender.simulation import synthetic_marketplace


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


class Command(BaseCommand):
    help = "Offline evaluation of every strategy: recall@k, NDCG@k, coverage (per ε and per k)."

    def add_arguments(self, parser):
        parser.add_argument("--k", type=int, default=20, help="list length evaluated (default 20)")
        parser.add_argument("--split", type=float, default=0.8, help="time quantile of the train/test cutoff")
        parser.add_argument("--epsilon", type=_floats, default=[0.1, 0.5, 1.0, 2.0, 5.0], help="ε values, e.g. 0.5,1,2")
        parser.add_argument("--cohort-k", type=_ints, default=[5, 20, 50, 100], help="cohort sizes, e.g. 10,50")
        parser.add_argument("--policy", choices=["exclude", "explicit_consent", "include"], default="exclude")
        parser.add_argument("--seed", type=int, default=0, help="seed of the DP noise (and the synthetic data)")
        parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
        parser.add_argument("--synthetic", action="store_true", help="evaluate on a generated marketplace")
        parser.add_argument("--subjects", type=int, default=20_000, help="synthetic: subjects")
        parser.add_argument("--products", type=int, default=5_000, help="synthetic: products")
        parser.add_argument("--interactions", type=int, default=400_000, help="synthetic: interactions")

    def handle(self, *args, **options):
        k = options["k"]
        if not 1 <= k <= 100:
            raise CommandError("--k must be 1..100")
        try:
            split = self._split(options)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if split.subjects.size == 0:
            raise CommandError("No subject has history both before and after the cutoff: nothing to evaluate.")
        results = evaluation.evaluate(
            split,
            k=k,
            cohort_ks=options["cohort_k"],
            epsilons=options["epsilon"],
            include_sensitive=options["policy"] != "exclude",
            seed=options["seed"],
        )
        self.stdout.write(
            f"{split.subjects.size:,} subjects evaluated; {split.train.interactions.nnz:,} training pairs, "
            f"{split.train.n_items:,} products; cutoff at the {options['split']:.0%} time quantile.\n"
        )
        self.stdout.write(evaluation.render(results, markdown=options["markdown"], k=k))

    def _split(self, options) -> evaluation.Split:
        if options["synthetic"]:
            market = synthetic_marketplace(
                subjects=options["subjects"], products=options["products"], interactions=options["interactions"],
                seed=options["seed"],
            )
            return evaluation.time_split(
                subjects=market.subjects, items=market.items, times=market.times, weights=market.weights,
                n_subjects=market.n_subjects, item_category=market.item_category,
                category_sensitive=market.category_sensitive, attributes=market.attributes,
                category_names=market.category_keys, quantile=options["split"],
            )
        from recommender.services import HISTORY_DAYS, training_load

        training = training_load(policy=options["policy"], history_days=HISTORY_DAYS)
        subjects, items, times, weights = training.raw
        return evaluation.time_split(
            subjects=subjects, items=items, times=times, weights=weights, n_subjects=training.data.n_subjects,
            item_category=training.catalog.item_category, category_sensitive=training.catalog.category_sensitive,
            attributes=training.data.attributes, category_names=tuple(training.catalog.category_keys),
            quantile=options["split"],
        )
