from django.db import models

from consent.pseudonyms import PSEUDONYM_LENGTH


class Subject(models.Model):
    """A data subject, known only by the keyed-HMAC pseudonym of the marketplace's id.

    Holds the few coarse attributes experiments target and segment on; never a
    name, email or phone number.
    """

    class Platform(models.TextChoices):
        ANDROID = "android"
        IOS = "ios"
        WEB = "web"

    pseudonym = models.CharField(primary_key=True, max_length=PSEUDONYM_LENGTH)
    age_band = models.CharField(max_length=16, blank=True)
    province = models.CharField(max_length=64, blank=True)
    platform = models.CharField(max_length=16, blank=True)
    first_seen = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"subject {self.pseudonym[:12]}…"
