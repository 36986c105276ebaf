"""The generated data sets: reproducible by seed, well-formed, and reached by name through the recommender's registry."""

import numpy as np
import pytest

from marketplace.datasets import grocery_baskets, synthetic_marketplace
from recommender.datasets import dataset_generate


def test_the_registry_serves_the_marketplaces_generators():
    by_name = dataset_generate(name="synthetic", subjects=50, products=30, interactions=400, seed=3)
    direct = synthetic_marketplace(subjects=50, products=30, interactions=400, seed=3)
    assert np.array_equal(by_name.items, direct.items) and by_name.attributes == direct.attributes
    grocery = dataset_generate(name="grocery", customers=10, products=200, weeks=4, seed=1)
    assert np.array_equal(grocery.items, grocery_baskets(customers=10, products=200, weeks=4, seed=1).items)


def test_an_unknown_data_set_is_a_lookup_error_naming_it():
    with pytest.raises(LookupError, match="'nope'"):
        dataset_generate(name="nope")


def test_a_synthetic_marketplace_has_exactly_the_interactions_asked_for_over_repeated_categories():
    market = synthetic_marketplace(subjects=80, products=60, interactions=1000, categories=13, seed=0)
    assert market.subjects.size == market.items.size == market.times.size == 1000
    assert market.n_subjects == 80 and market.subjects.max() < 80 and market.items.max() < 60
    # Past the 11 base categories, the list starts again, numbered.
    assert market.category_keys[11:] == ("fashion-2", "electronics-2")
    assert market.category_names[11] == "Fashion 2"
    assert market.category_sensitive.tolist() == [False] * 9 + [True, True] + [False, False]
