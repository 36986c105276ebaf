"""The catalog, model builds and the record of precomputed recommendations.

A build is one run of one arm's strategy (or of the platform-wide popularity
list, ``arm`` empty) under that arm's privacy rules. What it computed is kept
as ``RecommendationList`` rows: per subject (personal data, registered with the
consent app's registry so access and erasure requests reach it), per cohort,
per item (the neighbours the session strategy scores from) and one fallback
list. Serving reads the same lists from Redis; these rows are the record of
what was served and the fallback when the cache cannot answer.
"""

from django.db import models
from django.db.models import Q

from experiments.contracts import PersonalizationLevel
from experiments.models import Arm


class BuildStatus(models.TextChoices):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# A build's strategy is the personalization level it serves: the one vocabulary of the treatment
# contract (labels derived from the names, as a TextChoices without labels has them).
BuildStrategy = models.TextChoices("BuildStrategy", [(level.name, level.value) for level in PersonalizationLevel])
DP_STRATEGIES = (BuildStrategy.DP_POPULARITY.value, BuildStrategy.DP_ITEM_ITEM.value)  # spend a privacy budget


class Category(models.Model):
    """A product category; ``sensitive`` marks specific personal data (health, financial products)."""

    key = models.CharField(
        max_length=64, unique=True, help_text="As the marketplace's events name it, e.g. 'home & living'."
    )
    name = models.CharField(max_length=120)
    sensitive = models.BooleanField(
        default=False,
        help_text="Specific personal data under UU PDP Art. 4(2) (health, financial products): "
        "a subject's interest in it is used only with the explicit sensitive_profiling consent.",
    )
    repeatable = models.BooleanField(
        default=False,
        help_text="Consumables shoppers buy again (groceries, toiletries): full-history arms list the "
        "subject's own re-buys of them beside new items.",
    )

    class Meta:
        ordering = ["key"]
        verbose_name_plural = "categories"
        constraints = [models.CheckConstraint(condition=~Q(key=""), name="category_key_not_empty")]

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    sku = models.CharField(max_length=64, unique=True, help_text="The marketplace's product id.")
    name = models.CharField(max_length=200)
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="products")
    price = models.DecimalField(max_digits=15, decimal_places=2, null=True, blank=True, help_text="IDR.")
    active = models.BooleanField(default=True, help_text="Inactive products are never recommended.")
    repeatable = models.BooleanField(
        null=True, blank=True, help_text="Bought again? Empty: as its category says."
    )

    class Meta:
        ordering = ["sku"]
        constraints = [
            models.CheckConstraint(condition=~Q(sku=""), name="product_sku_not_empty"),
            models.CheckConstraint(
                condition=Q(price__isnull=True) | Q(price__gte=0), name="product_price_not_negative"
            ),
        ]
        indexes = [models.Index(fields=["category", "active"], name="product_category_active")]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"


class ModelBuild(models.Model):
    """One build of one arm's recommendations; unique per arm and build key, so a rerun is a no-op."""

    Status = BuildStatus
    Strategy = BuildStrategy

    arm = models.ForeignKey(
        "experiments.Arm",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="recommendation_builds",
        help_text="Empty: the platform-wide popularity list served to subjects outside experiments.",
    )
    build_key = models.CharField(
        max_length=64, help_text="The scheduled hour (or 'manual-…'): the same key never builds twice."
    )
    strategy = models.CharField(max_length=16, choices=Strategy.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    attempts = models.PositiveIntegerField(default=0)
    params = models.JSONField(default=dict, blank=True, help_text="The strategy's parameters.")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(
        null=True, blank=True, help_text="When serving switched to this build; empty while it never served."
    )
    subjects_trained = models.PositiveIntegerField(default=0)
    interactions_trained = models.PositiveIntegerField(default=0)
    lists_written = models.PositiveIntegerField(default=0)
    epsilon_spent = models.FloatField(
        null=True,
        blank=True,
        help_text="Differential-privacy budget this build spent (ε), charged when it started to compute: "
        "a build that fails afterwards has spent it too.",
    )
    delta_spent = models.FloatField(null=True, blank=True, help_text="δ of an (ε, δ) mechanism.")
    duration_seconds = models.FloatField(null=True, blank=True)
    error = models.CharField(
        max_length=200, blank=True, help_text="The failure's class only: messages may quote data."
    )

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["arm", "build_key"], name="build_unique_key_per_arm"),
            models.UniqueConstraint(
                fields=["build_key"], condition=Q(arm__isnull=True), name="build_unique_key_platform"
            ),
            models.CheckConstraint(
                condition=Q(status__in=BuildStatus.values), name="build_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(strategy__in=BuildStrategy.values),
                name="build_strategy_valid",
                violation_error_message="A build's strategy is one of the personalization levels.",
            ),
            models.CheckConstraint(
                condition=Q(published_at__isnull=True) | Q(status=BuildStatus.SUCCEEDED.value),
                name="build_only_succeeded_publishes",
            ),
            models.CheckConstraint(
                condition=Q(epsilon_spent__isnull=True) | Q(epsilon_spent__gt=0),
                name="build_epsilon_positive",
            ),
            models.CheckConstraint(
                condition=Q(delta_spent__isnull=True) | (Q(delta_spent__gte=0) & Q(delta_spent__lt=1)),
                name="build_delta_range",
            ),
            models.CheckConstraint(
                condition=~Q(strategy__in=list(DP_STRATEGIES))
                | ~Q(status=BuildStatus.SUCCEEDED.value)
                | Q(epsilon_spent__isnull=False),
                name="build_dp_records_budget",
                violation_error_message="A succeeded differentially private build records the ε it spent.",
            ),
        ]
        indexes = [
            models.Index(fields=["arm", "status", "published_at"], name="build_arm_published"),
        ]

    def __str__(self) -> str:
        return f"{self.arm or 'platform'} {self.strategy} {self.build_key}"


class RecommendationList(models.Model):
    """One precomputed list of a build: for a subject, a cohort, an item's neighbours, or the fallback.

    ``items`` is a list of ``[sku, category, score, sensitive, reason,
    sensitive_evidence]``: ``sensitive_evidence`` records whether one of the
    subject's items in a sensitive category contributed to the entry (its rank
    or its reason). A subject row of a cohort build holds no items: its
    ``key`` names the subject's cohort, whose list is the cohort row (no
    individual profile is kept).
    """

    class Kind(models.TextChoices):
        SUBJECT = "subject"
        COHORT = "cohort"
        ITEM = "item"
        FALLBACK = "fallback"

    build = models.ForeignKey(ModelBuild, on_delete=models.CASCADE, related_name="lists")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    subject = models.ForeignKey(
        "consent.Subject", on_delete=models.CASCADE, null=True, blank=True, related_name="recommendations"
    )
    key = models.CharField(max_length=200, blank=True, help_text="Cohort key, or the item's sku.")
    size = models.PositiveIntegerField(null=True, blank=True, help_text="Cohort rows: members.")
    items = models.JSONField(default=list, blank=True)
    without_sensitive = models.JSONField(
        null=True,
        blank=True,
        help_text="Subject rows whose list used sensitive evidence: the same list computed without it "
        "({'items': …} or {'cohort': …}; {} when nothing is left), served while the subject holds no "
        "sensitive_profiling consent. Empty: no sensitive evidence contributed.",
    )
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["build", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=["subject", "cohort", "item", "fallback"]), name="reco_list_kind_valid"
            ),
            models.CheckConstraint(
                condition=(Q(kind="subject") & Q(subject__isnull=False))
                | (~Q(kind="subject") & Q(subject__isnull=True)),
                name="reco_list_subject_iff_subject_kind",
            ),
            models.UniqueConstraint(
                fields=["build", "subject"], condition=Q(subject__isnull=False), name="reco_list_one_per_subject"
            ),
            models.UniqueConstraint(
                fields=["build", "kind", "key"], condition=Q(subject__isnull=True), name="reco_list_one_per_key"
            ),
            models.CheckConstraint(
                condition=Q(without_sensitive__isnull=True) | Q(kind="subject"),
                name="reco_list_variant_only_for_subjects",
                violation_error_message="Only a subject's list has a variant without sensitive evidence.",
            ),
        ]
        indexes = [models.Index(fields=["subject", "created_at"], name="reco_list_subject_time")]

    def __str__(self) -> str:
        return f"{self.kind} list of build {self.build_id}"


class ArmRecommendations(Arm):
    """Experiment arms in the recommender's admin, where PMs start a build by hand."""

    class Meta:
        proxy = True
        verbose_name = "arm recommendations"
        verbose_name_plural = "arm recommendations"
        permissions = [("build_recommendations", "Can build an arm's recommendations now")]
