"""``manage.py evaluate_recommenders``: the privacy/utility table (see docs/recommender.md).

By default it reads consenting subjects' orders and clicks (as a build would,
under the given sensitive-category policy); ``--interactions FILE.csv
[--catalog FILE.csv]`` reads an export of the marketplace's own orders
instead, so a PM can produce the table on the real history without loading it
into the platform (nothing from the file is stored); ``--synthetic`` and
``--grocery`` evaluate on generated marketplaces. It splits the interactions
in time, trains every strategy on the past and scores its top-k against what
each subject chose later: new items, and whole baskets.
"""

import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from experiments.contracts import SensitivePolicy as Policy
from recommender import evaluation
from recommender.datasets import dataset_generate


def _floats(text: str) -> list[float]:
    values = [float(part) for part in text.split(",") if part.strip()]
    if any(value <= 0 for value in values):
        raise ValueError("must be positive")
    return values


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


class Command(BaseCommand):
    help = "Offline evaluation of every strategy: recall@k, NDCG@k (new items and whole baskets), coverage."

    def add_arguments(self, parser):
        parser.add_argument("--k", type=int, default=20, help="list length evaluated (default 20)")
        parser.add_argument("--split", type=float, default=0.8, help="time quantile of the train/test cutoff")
        parser.add_argument("--epsilon", type=_floats, default=[0.1, 0.5, 1.0, 2.0, 5.0], help="ε values, e.g. 0.5,1,2")
        parser.add_argument("--cohort-k", type=_ints, default=[5, 20, 50, 100], help="cohort sizes, e.g. 10,50")
        parser.add_argument("--min-support", type=int, default=5, help="support threshold m (default 5)")
        parser.add_argument("--buy-again-share", type=float, default=0.5,
                            help="share of a full-history list for re-buys (default 0.5)")
        parser.add_argument("--policy", choices=Policy.values, default=Policy.EXCLUDE.value)
        parser.add_argument("--seed", type=int, default=0, help="seed of the DP noise (and the generated data)")
        parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--interactions", metavar="FILE.csv",
                            help="orders exported from the marketplace: subject,product,time[,category]")
        source.add_argument("--synthetic", action="store_true", help="evaluate on a generated marketplace")
        source.add_argument("--grocery", action="store_true", help="evaluate on generated grocery baskets")
        parser.add_argument("--catalog", metavar="FILE.csv",
                            help="with --interactions: product,category[,sensitive][,repeatable]")
        parser.add_argument("--sensitive", type=_names, default=[],
                            help="with --interactions: categories that are sensitive, e.g. health,finance")
        parser.add_argument("--repeatable", type=_names, default=[],
                            help="with --interactions: categories bought again ('*': all)")
        parser.add_argument("--subjects", type=int, default=20_000, help="synthetic: subjects")
        parser.add_argument("--customers", type=int, default=600, help="grocery: customers")
        parser.add_argument("--products", type=int, default=5_000, help="synthetic: products")
        parser.add_argument("--interactions-count", dest="interaction_count", type=int, default=400_000,
                            help="synthetic: interactions")

    def handle(self, *args, **options):
        k = options["k"]
        if not 1 <= k <= 100:
            raise CommandError("--k must be 1..100")
        if not 0.0 <= options["buy_again_share"] <= 1.0:
            raise CommandError("--buy-again-share must be 0..1")
        if options["min_support"] < 1:
            raise CommandError("--min-support must be at least 1")
        if options["catalog"] and not options["interactions"]:
            raise CommandError("--catalog goes with --interactions")
        try:
            split = self._split(options)
        except evaluation.OrdersFileError as exc:
            raise CommandError(str(exc)) from exc
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if split.subjects.size == 0 and split.basket_subjects.size == 0:
            raise CommandError("No subject has history both before and after the cutoff: nothing to evaluate.")
        bar = tqdm(desc="strategies", unit="strategy", file=sys.stderr, disable=not sys.stderr.isatty())
        results = evaluation.evaluate(
            split,
            k=k,
            cohort_ks=options["cohort_k"],
            epsilons=options["epsilon"],
            include_sensitive=options["policy"] != Policy.EXCLUDE,
            min_support=options["min_support"],
            buy_again_share=options["buy_again_share"],
            seed=options["seed"],
            progress=lambda label: (bar.set_postfix_str(label), bar.update(1)),
        )
        bar.close()
        self.stdout.write(
            f"{split.subjects.size:,} subjects evaluated on new items, {split.basket_subjects.size:,} on whole "
            f"baskets; {split.train.interactions.nnz:,} training pairs, {split.train.n_items:,} products; cutoff at "
            f"the {options['split']:.0%} time quantile.\n"
        )
        self.stdout.write(evaluation.render(results, markdown=options["markdown"], k=k))

    def _split(self, options) -> evaluation.Split:
        market = None
        if options["interactions"]:
            market = evaluation.orders_read(options["interactions"], catalog=options["catalog"],
                                            sensitive=options["sensitive"], repeatable=options["repeatable"])
        elif options["synthetic"]:
            market = dataset_generate(
                name="synthetic", subjects=options["subjects"], products=options["products"],
                interactions=options["interaction_count"], seed=options["seed"],
            )
        elif options["grocery"]:
            market = dataset_generate(name="grocery", customers=options["customers"], seed=options["seed"])
        if market is not None:
            return evaluation.time_split(
                subjects=market.subjects, items=market.items, times=market.times, weights=market.weights,
                n_subjects=market.n_subjects, item_category=market.item_category,
                category_sensitive=market.category_sensitive, attributes=market.attributes,
                category_names=market.category_keys, item_repeatable=market.item_repeatable,
                quantile=options["split"],
            )
        from recommender.conf import HISTORY_DAYS
        from recommender.selectors import training_load

        training = training_load(policy=options["policy"], history_days=HISTORY_DAYS)
        subjects, items, times, weights = training.raw
        return evaluation.time_split(
            subjects=subjects, items=items, times=times, weights=weights, n_subjects=training.data.n_subjects,
            item_category=training.catalog.item_category, category_sensitive=training.catalog.category_sensitive,
            attributes=training.data.attributes, category_names=tuple(training.catalog.category_keys),
            item_repeatable=training.catalog.item_repeatable, quantile=options["split"],
        )
