"""Generated interaction data sets: catalogs, subjects and interactions with real structure.

Pure numpy, no Django: the benchmark and the tests use them directly;
``evaluate_recommenders --synthetic`` and ``--grocery`` reach them through the
recommender's registry (``recommender.datasets``; this app registers them at
start-up). Each returns a ``recommender.datasets.Marketplace``. Two generators:

- ``synthetic_marketplace``: a general marketplace. Subjects have two
  favourite categories, product popularity inside a category is heavy-tailed
  (Pareto), activity per subject is log-normal, and each subject's later
  interactions drift within the same taste, so a time split leaves something
  to predict.
- ``grocery_baskets``: real-shaped grocery baskets (no real basket data can be
  downloaded here): a few staples that nearly everyone buys every week, a
  Zipf-tailed catalog, each shopper's repertoire of regulars re-bought visit
  after visit (about two thirds of a basket), and new items tried from the
  shopper's tastes, some of which become regulars. This is the shape that
  makes item-item neighbourhoods hard (a staple co-occurs with most of the
  catalog) and that rewards "buy again".
"""

from __future__ import annotations

import numpy as np

from marketplace.catalog import REPEATABLE_KEYS, categories_repeat
from marketplace.population import attributes_draw
from recommender.datasets import Marketplace

TASTE_CLUSTERS = 5


def synthetic_marketplace(
    *,
    subjects: int = 2000,
    products: int = 500,
    interactions: int = 40_000,
    categories: int = 11,
    days: float = 90.0,
    seed: int = 0,
) -> Marketplace:
    """A general marketplace: favourite categories, Pareto popularity, log-normal activity, taste clusters."""
    rng = np.random.default_rng(seed)
    keys, names, sensitive = categories_repeat(categories)
    item_category = rng.integers(0, categories, products)
    popularity = rng.pareto(1.2, products) + 1.0
    activity = np.maximum(1.0, rng.lognormal(2.5, 0.9, subjects))
    share = activity * interactions / activity.sum()
    per_subject = np.floor(share).astype(np.int64)
    # The largest remainders get one more, so the total is exactly ``interactions``.
    per_subject[np.argsort(per_subject - share)[: interactions - int(per_subject.sum())]] += 1
    subject_of = np.repeat(np.arange(subjects), per_subject)
    total = subject_of.size
    favourites = rng.integers(0, categories, (subjects, 2))
    # Sensitive categories are rarer favourites, as on a real marketplace.
    favourites = np.where(sensitive[favourites] & (rng.random((subjects, 2)) < 0.6),
                          rng.integers(0, categories, (subjects, 2)), favourites)
    loyal = rng.random(total) < 0.8
    pick = rng.integers(0, 2, total)
    category_of = np.where(loyal, favourites[subject_of, pick], rng.integers(0, categories, total))
    # Inside a category each subject leans to one "taste" cluster of products: the
    # co-occurrence structure item-item neighbours learn and popularity cannot.
    item_cluster = rng.integers(0, TASTE_CLUSTERS, products)
    tastes = rng.integers(0, TASTE_CLUSTERS, (subjects, 2))
    in_taste = loyal & (rng.random(total) < 0.6)
    cluster_of = np.where(in_taste, tastes[subject_of, pick], -1)
    items = np.zeros(total, dtype=np.int64)
    for c in range(categories):
        for cluster in range(-1, TASTE_CLUSTERS):
            chosen = (category_of == c) & (cluster_of == cluster)
            if not chosen.any():
                continue
            members = np.flatnonzero((item_category == c) & ((item_cluster == cluster) | (cluster < 0)))
            if members.size == 0:
                members = np.flatnonzero(item_category == c)
            if members.size == 0:
                members = np.arange(products)
            weights = popularity[members] / popularity[members].sum()
            items[chosen] = rng.choice(members, int(chosen.sum()), p=weights)
    times = rng.random(total) * days * 86400.0
    weights = np.where(rng.random(total) < 0.4, 1.0, 0.5).astype(np.float32)
    attributes = attributes_draw(rng, subjects)
    skus = tuple(f"P{i:06d}" for i in range(products))
    return Marketplace(
        category_keys=keys,
        category_names=names,
        category_sensitive=sensitive,
        item_category=item_category,
        item_skus=skus,
        attributes=attributes,
        subjects=subject_of,
        items=items,
        times=times,
        weights=weights,
        category_repeatable=np.array([key.split("-")[0] in REPEATABLE_KEYS for key in keys], dtype=bool),
    )


# --- real-shaped grocery baskets ----------------------------------------------------------

GROCERY_DEPARTMENTS = (
    # key, name, sensitive, repeatable (a consumable bought again)
    ("produce", "Fresh produce", False, True),
    ("dairy-eggs", "Dairy & eggs", False, True),
    ("bakery", "Bakery", False, True),
    ("meat-seafood", "Meat & seafood", False, True),
    ("pantry", "Pantry staples", False, True),
    ("rice-noodles", "Rice & noodles", False, True),
    ("spices-sauces", "Spices & sauces", False, True),
    ("snacks", "Snacks", False, True),
    ("beverages", "Beverages", False, True),
    ("coffee-tea", "Coffee & tea", False, True),
    ("frozen", "Frozen food", False, True),
    ("breakfast", "Breakfast & cereal", False, True),
    ("canned", "Canned goods", False, True),
    ("deli", "Deli & ready meals", False, True),
    ("baby", "Baby care", False, True),
    ("pet", "Pet supplies", False, True),
    ("household", "Household & cleaning", False, True),
    ("personal-care", "Personal care", False, True),
    ("health", "Health & pharmacy", True, True),
    ("kitchen", "Kitchen & dining", False, False),
    ("seasonal", "Seasonal & gifts", False, False),
    ("stationery", "Stationery", False, False),
)
GROCERY_SEGMENTS = 12  # tastes: families with babies, pet owners, home cooks, snackers, …


def grocery_baskets(
    *,
    customers: int = 600,
    products: int = 14_000,
    weeks: int = 52,
    staples: int = 25,
    visits_per_week: float = 0.6,
    seed: int = 0,
) -> Marketplace:
    """Real-shaped grocery baskets: staples, a Zipf tail, repertoires re-bought, new items tried.

    The defaults give the shape of a public grocery sample of 600 customers
    and 14,000 products over a year: about 30,000 baskets of about 12 lines,
    roughly two thirds of each basket re-bought, the top staple in most
    customers' baskets and co-bought with most of the catalog.

    - Items belong to a department (``GROCERY_DEPARTMENTS``) and a taste
      segment; popularity is Zipf (exponent 1.05) over a shuffled catalog, and
      the ``staples`` most popular items are bought by nearly everyone.
    - Each customer has one or two taste segments (items of their segments are
      eight times as attractive), a visit rate (log-normal around
      ``visits_per_week``) and a repertoire of regulars, each bought on a
      visit with its own probability.
    - Each visit buys a Bernoulli draw of the repertoire plus a few items
      tried (Poisson, mean 3.5) from the customer's preferences; a tried item
      joins the repertoire with probability 0.3, so what one tries today is a
      re-buy tomorrow — and what similar customers tried before is a good
      recommendation.
    """
    rng = np.random.default_rng(seed)
    n_departments = len(GROCERY_DEPARTMENTS)
    keys = tuple(d[0] for d in GROCERY_DEPARTMENTS)
    names = tuple(d[1] for d in GROCERY_DEPARTMENTS)
    sensitive = np.array([d[2] for d in GROCERY_DEPARTMENTS], dtype=bool)
    repeatable = np.array([d[3] for d in GROCERY_DEPARTMENTS], dtype=bool)
    # Departments differ in size: produce and pantry are large, stationery small.
    department_share = rng.dirichlet(np.full(n_departments, 2.0))
    item_category = rng.choice(n_departments, products, p=department_share)
    # Tastes show in departments: half of a department's items belong to its own segment
    # (baby care to families with babies), the rest to any.
    home_segment = np.arange(n_departments) % GROCERY_SEGMENTS
    item_segment = np.where(rng.random(products) < 0.5, home_segment[item_category],
                            rng.integers(0, GROCERY_SEGMENTS, products))
    popularity = 1.0 / np.arange(1, products + 1) ** 0.9
    popularity = popularity[rng.permutation(products)]
    staple_items = np.argsort(-popularity)[:staples]
    is_staple = np.zeros(products, dtype=bool)
    is_staple[staple_items] = True
    # Non-consumables are rarely bought twice: they stay out of repertoires.
    repeat_ok = repeatable[item_category]

    seconds = weeks * 7 * 86400.0
    out_subjects, out_items, out_times = [], [], []
    for customer in range(customers):
        segments = rng.choice(GROCERY_SEGMENTS, 1 + int(rng.random() < 0.5), replace=False)
        preference = popularity * np.where(np.isin(item_segment, segments), 8.0, 1.0)
        cdf = np.cumsum(preference)
        cdf /= cdf[-1]
        # Regulars are brand choices: flatter than what is tried (one shopper's milk is not another's).
        regular_cdf = np.cumsum(preference ** 0.6)
        regular_cdf /= regular_cdf[-1]
        visits = rng.poisson(weeks * visits_per_week * rng.lognormal(0.0, 0.5))
        if visits == 0:
            continue
        times = np.sort(rng.random(visits) * seconds)
        # Repertoire: staples (each bought by most customers), then regulars by preference.
        staple_keep = staple_items[rng.random(staples) < 0.3]
        size = int(rng.integers(5, 30))
        regulars = np.searchsorted(regular_cdf, rng.random(size * 2))
        regulars = np.unique(np.concatenate([staple_keep, regulars[repeat_ok[regulars]][:size]]))
        repertoire = dict(zip(regulars.tolist(), np.where(is_staple[regulars], rng.beta(2, 4, regulars.size),
                                                          rng.beta(1, 4, regulars.size)).tolist(), strict=True))
        for when in times:
            items = np.array(list(repertoire), dtype=np.int64)
            bought = items[rng.random(items.size) < np.array(list(repertoire.values()))]
            tried = np.searchsorted(cdf, rng.random(rng.poisson(4.0)))
            basket = np.unique(np.concatenate([bought, tried]))
            if basket.size == 0:
                continue
            for item in tried.tolist():
                if item not in repertoire and repeat_ok[item] and rng.random() < 0.1:
                    repertoire[item] = float(rng.beta(1.5, 4))
            out_subjects.append(np.full(basket.size, customer, dtype=np.int64))
            out_items.append(basket)
            out_times.append(np.full(basket.size, when))
    subjects = np.concatenate(out_subjects)
    items = np.concatenate(out_items)
    times = np.concatenate(out_times)
    attributes = attributes_draw(rng, customers)
    return Marketplace(
        category_keys=keys,
        category_names=names,
        category_sensitive=sensitive,
        item_category=item_category,
        item_skus=tuple(f"G{i:06d}" for i in range(products)),
        attributes=attributes,
        subjects=subjects,
        items=items,
        times=times,
        weights=np.ones(subjects.size, dtype=np.float32),
        category_repeatable=repeatable,
    )
