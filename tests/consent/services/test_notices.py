"""The notice service's rules: the Bahasa Indonesia text a new notice needs."""

import pytest
from django.core.exceptions import ValidationError

from consent.models import Notice, Purpose
from consent.services.notices import notice_texts_check
from tests.consent.factories import NoticeFactory, grant, raw_id

pytestmark = pytest.mark.django_db


def test_a_new_notice_without_indonesian_text_is_refused():
    notice = Notice(purpose=Purpose.objects.get(key="marketing"), version="9")
    with pytest.raises(ValidationError, match="Bahasa Indonesia"):
        notice_texts_check(notice=notice, languages={"en"})
    with pytest.raises(ValidationError, match="Bahasa Indonesia"):
        notice_texts_check(notice=notice, languages=[])


def test_indonesian_text_beside_others_is_enough():
    notice = NoticeFactory()
    notice_texts_check(notice=notice, languages=["en", "id"])
    notice_texts_check(notice=notice, languages={"id"})


def test_a_notice_that_consents_rest_on_is_not_judged_again():
    grant(raw_id())  # under version "1" of the personalization notice
    notice = Notice.objects.get(purpose="personalization", version="1")
    notice_texts_check(notice=notice, languages={"en"})
