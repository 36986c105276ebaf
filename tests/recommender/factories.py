"""Factories and helpers for the recommender tests: a catalog, an experiment, subjects, history."""

import uuid
from datetime import timedelta

import factory
from django.test import TestCase
from django.utils import timezone

from consent import services as consent_services
from consent.models import Purpose, Subject
from consent.pseudonyms import subject_pseudonym
from experiments.models import Arm, Exposure, Layer, PrivacyTreatment
from experiments.services import events_record, experiment_start
from recommender.models import Category, Product
from tests.experiments.factories import ExperimentFactory, override_approved


class CategoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Category
        django_get_or_create = ["key"]

    key = factory.Sequence(lambda n: f"category-{n}")
    name = factory.LazyAttribute(lambda o: o.key.title())
    sensitive = False


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product
        django_get_or_create = ["sku"]

    sku = factory.Sequence(lambda n: f"P{n:05d}")
    name = factory.LazyAttribute(lambda o: f"Product {o.sku}")
    category = factory.SubFactory(CategoryFactory)


def raw_id() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def catalog(spec: dict[str, list[str]], *, sensitive: tuple[str, ...] = ()) -> dict[str, Product]:
    """``{"fashion": ["F1", "F2"], "health": ["H1"]}`` → products by sku."""
    products = {}
    for key, skus in spec.items():
        category = CategoryFactory(key=key, sensitive=key in sensitive)
        for sku in skus:
            products[sku] = ProductFactory(sku=sku, category=category, name=f"Product {sku}")
    return products


# The catalog the consent tests share: an ordinary category and a sensitive one.
FASHION_AND_HEALTH: dict[str, list[str]] = {"fashion": ["F1", "F2", "F3", "F4"], "health": ["H1", "H2"]}


def catalog_with_health() -> dict[str, Product]:
    """``FASHION_AND_HEALTH``, health marked sensitive."""
    return catalog(FASHION_AND_HEALTH, sensitive=("health",))


# Four shoppers' purchases over fashion and home that overlap enough for item-item neighbours.
FOUR_HISTORIES: list[tuple[str, ...]] = [("F1", "F2"), ("F1", "F2", "F3"), ("F2", "F3", "H1"), ("F1", "H2")]


def fashion_and_home_arm() -> tuple[Arm, list[str]]:
    """A full-history arm whose four exposed subjects bought ``FOUR_HISTORIES``: (arm, raw ids)."""
    catalog({"fashion": ["F1", "F2", "F3", "F4"], "home": ["H1", "H2"]})
    arm = experiment_with(treatment("full"))[0]
    raws = [subject(arm=arm) for _ in range(4)]
    for raw, skus in zip(raws, FOUR_HISTORIES, strict=True):
        bought(raw, *skus)
    return arm, raws


def fashion_arm_of_three() -> tuple[Arm, list[str]]:
    """A full-history arm over four fashion items, three exposed subjects: (arm, raw ids)."""
    catalog({"fashion": ["F1", "F2", "F3", "F4"]})
    arm = experiment_with(treatment("full"))[0]
    raws = [subject(arm=arm) for _ in range(3)]
    for raw, skus in zip(raws, [("F1", "F2"), ("F1", "F3"), ("F2", "F3", "F4")], strict=True):
        bought(raw, *skus)
    return arm, raws


def treatment(level: str, **fields) -> PrivacyTreatment:
    defaults = {
        "name": f"{level} {uuid.uuid4().hex[:6]}",
        "consent_prompt": "banner",
        "personalization_level": level,
        "sensitive_category_policy": "exclude",
        "cohort_k": 2,
        "dp_epsilon": 1.0 if level in ("dp_popularity", "dp_item_item") else None,
        "show_explanations": True,
        "retention_days": 90,
    }
    defaults.update(fields)
    return PrivacyTreatment.objects.create(**defaults)


def experiment_with(*treatments: PrivacyTreatment) -> list[Arm]:
    """A running experiment whose arms (control first) apply ``treatments``; returns the arms."""
    # A layer of its own, so that several experiments can run side by side in one test.
    layer = Layer.objects.create(key=f"layer-{uuid.uuid4().hex[:8]}", name="Recommender tests")
    # Some tests exercise treatments the compliance review refuses (``include`` on a personal
    # level): the recommender must hold the line itself, so they run with an override.
    experiment = ExperimentFactory(
        arms=0, layer=layer, compliance_override_reason="Recommender tests exercise every policy."
    )
    arms = [
        Arm.objects.create(experiment=experiment, key=f"arm-{i}", treatment=t, is_control=i == 0)
        for i, t in enumerate(treatments)
    ]
    if len(arms) == 1:  # an experiment needs two arms to start
        arms.append(Arm.objects.create(experiment=experiment, key="other", treatment=treatments[0]))
    experiment = override_approved(experiment)  # a data protection officer signs the override off
    with TestCase.captureOnCommitCallbacks(execute=True):
        experiment_start(experiment=experiment)
    return arms


def subject(raw: str | None = None, *, arm: Arm | None = None, consent: bool = True, sensitive: bool = False,
            age_band: str = "25-34", province: str = "DKI Jakarta", platform: str = "android") -> str:
    """A subject (returns the raw id), optionally exposed to ``arm`` and consenting."""
    raw = raw or raw_id()
    pseudonym = subject_pseudonym(raw)
    Subject.objects.update_or_create(
        pseudonym=pseudonym, defaults={"age_band": age_band, "province": province, "platform": platform}
    )
    if arm is not None:
        Exposure.objects.get_or_create(
            experiment=arm.experiment, subject_id=pseudonym,
            defaults={"arm": arm, "first_exposed_at": timezone.now()},
        )
    if consent:
        grant(raw)
    if sensitive:
        grant(raw, Purpose.SENSITIVE_PROFILING)
    return raw


def grant(raw: str, purpose: str = Purpose.PERSONALIZATION):
    return consent_services.consent_grant(subject_id=raw, purpose=purpose, notice_version="1")


def withdraw(raw: str, purpose: str = Purpose.PERSONALIZATION):
    return consent_services.consent_withdraw(subject_id=raw, purpose=purpose)


def bought(raw: str, *skus: str, days_ago: float = 1.0, clicks: tuple[str, ...] = ()) -> None:
    """Record orders (one line each) and recommendation clicks through the events service."""
    when = timezone.now() - timedelta(days=days_ago)
    products = {p.sku: p for p in Product.objects.select_related("category").filter(sku__in=[*skus, *clicks])}
    events = [
        {
            "event_id": f"o-{uuid.uuid4().hex}",
            "subject_id": raw,
            "type": "order",
            "timestamp": when,
            "amount": "100000",
            "lines": [{"product_id": sku, "category": products[sku].category.key, "quantity": 1, "price": 100000}],
        }
        for sku in skus
    ] + [
        {
            "event_id": f"c-{uuid.uuid4().hex}",
            "subject_id": raw,
            "type": "rec_click",
            "timestamp": when,
            "product_id": sku,
            "category": products[sku].category.key,
        }
        for sku in clicks
    ]
    if events:
        events_record(events=events)


def build(arm: Arm | None, key: str = "k", **kwargs):
    """Run a build as a task would: its publish step runs when the transaction commits."""
    from recommender.services.builds import recommendations_build

    with TestCase.captureOnCommitCallbacks(execute=True):
        return recommendations_build(arm_id=arm.pk if arm is not None else None, build_key=key, **kwargs)
