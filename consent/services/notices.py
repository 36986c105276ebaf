"""Writes of purposes and notices; a notice that consents rest on is frozen."""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import transaction

from consent.models import ConsentEvent, Language, Notice, NoticeText, Purpose
from consent.services.cache import purpose_rules_changed


def purpose_save(*, purpose: Purpose) -> Purpose:
    purpose.full_clean()
    with transaction.atomic():
        purpose.save()
        purpose_rules_changed()
    return purpose


def notice_in_use(*, notice: Notice) -> bool:
    return notice.pk is not None and ConsentEvent.objects.filter(notice_id=notice.pk).exists()


def notice_texts_check(*, notice: Notice, languages: Iterable[str]) -> None:
    """Refuse a notice's texts without one in Bahasa Indonesia (``ValidationError``).

    Subjects in Indonesia are told in their language what they consent to (UU PDP);
    other languages come beside it. A notice that consents rest on is frozen, its
    texts included, so it is not judged again.
    """
    if Language.INDONESIAN not in set(languages) and not notice_in_use(notice=notice):
        raise ValidationError("A notice needs its text in Bahasa Indonesia.")


def notice_save(*, notice: Notice) -> Notice:
    """Create or change a notice version; one that consents rest on is frozen.

    The ledger proves what the subject was shown, so once a grant or withdrawal
    refers to a notice its purpose, version and effective date stay as they were.
    """
    notice.full_clean()
    with transaction.atomic():
        if notice.pk is not None and notice_in_use(notice=notice):
            stored = Notice.objects.get(pk=notice.pk)
            changed = [
                name
                for name in ("purpose_id", "version", "effective_at")
                if getattr(stored, name) != getattr(notice, name)
            ]
            if changed:
                raise ValidationError(
                    {
                        name.removesuffix(
                            "_id"
                        ): "Consents rest on this notice; publish a new version instead."
                        for name in changed
                    }
                )
        notice.save()
        purpose_rules_changed()
    return notice


def notice_text_save(*, text: NoticeText) -> NoticeText:
    text.full_clean()
    with transaction.atomic():
        if text.pk is not None and notice_in_use(notice=text.notice):
            stored = NoticeText.objects.get(pk=text.pk)
            if (stored.language, stored.title, stored.body) != (
                text.language,
                text.title,
                text.body,
            ):
                raise ValidationError(
                    "Consents rest on this notice's text; publish a new version instead."
                )
        text.save()
    return text
