"""Factories and small helpers for the consent tests."""

import uuid
from datetime import timedelta

import factory
from django.utils import timezone

from consent import services
from consent.models import Notice, NoticeText, Purpose, Subject
from consent.pseudonyms import subject_pseudonym


def raw_id() -> str:
    """A fresh marketplace user id, unique per call."""
    return f"user-{uuid.uuid4().hex[:12]}"


class SubjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Subject
        django_get_or_create = ["pseudonym"]

    class Params:
        raw = factory.LazyFunction(raw_id)

    pseudonym = factory.LazyAttribute(lambda o: subject_pseudonym(o.raw))
    age_band = "25-34"
    province = "DKI Jakarta"
    platform = Subject.Platform.ANDROID


class NoticeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Notice
        skip_postgeneration_save = True

    purpose = factory.LazyFunction(lambda: Purpose.objects.get(key=Purpose.PERSONALIZATION))
    version = factory.Sequence(lambda n: f"{n + 2}")
    effective_at = factory.LazyFunction(lambda: timezone.now() - timedelta(minutes=1))
    requires_reconsent = False

    @factory.post_generation
    def texts(self, create, extracted, **kwargs):
        if create:
            NoticeText.objects.create(
                notice=self, language="id", title="Pemberitahuan", body="Isi."
            )
            NoticeText.objects.create(notice=self, language="en", title="Notice", body="Body.")


def grant(subject_id: str, purpose: str = Purpose.PERSONALIZATION, version: str = "1", **kwargs):
    return services.consent_grant(
        subject_id=subject_id, purpose=purpose, notice_version=version, **kwargs
    )


def withdraw(subject_id: str, purpose: str = Purpose.PERSONALIZATION, **kwargs):
    return services.consent_withdraw(subject_id=subject_id, purpose=purpose, **kwargs)


def tombstone_expire(subject_id: str) -> None:
    """Let the tombstone that a write left on the subject's cached state expire (it lives seconds)."""
    from django.core.cache import cache

    from consent.selectors import TOMBSTONE, state_cache_key

    key = state_cache_key(subject_pseudonym(subject_id))
    if cache.get(key) == TOMBSTONE:
        cache.delete(key)
