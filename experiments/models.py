"""Experiments and their design (privacy treatments, arms, guardrails, layers, holdout), exposures, outcome events, metric facts and result snapshots."""

import secrets

import pgtrigger
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now

from config.append_only import append_only_model, append_only_queryset
from config.constraints import ConstraintFieldsMixin
from experiments import contracts
from experiments import stats as decision_vocabulary  # the decision vocabulary is the pure engine's


def new_salt() -> str:
    return secrets.token_hex(8)


class PrivacyTreatment(ConstraintFieldsMixin, models.Model):
    """A reusable privacy design that an arm applies to its subjects."""

    # Where each constraint's message shows (config.constraints).
    CONSTRAINT_FIELDS = {
        "treatment_cohort_k_gte_2": "cohort_k",
        "treatment_dp_epsilon_positive": "dp_epsilon",
        "treatment_dp_needs_epsilon": "dp_epsilon",
        "treatment_dp_item_item_needs_epsilon": "dp_epsilon",
        "treatment_retention_positive": "retention_days",
    }

    # The vocabularies live with the contract (experiments.contracts); these names keep the model's spelling.
    ConsentPrompt = contracts.ConsentPrompt
    PersonalizationLevel = contracts.PersonalizationLevel
    SensitivePolicy = contracts.SensitivePolicy

    name = models.CharField(max_length=120, unique=True)
    description = models.TextField(blank=True)
    consent_prompt = models.CharField(max_length=16, choices=ConsentPrompt.choices)
    default_personalization_consent = models.BooleanField(
        default=False,
        help_text="Whether personalization is pre-selected. Pre-ticked consent is not valid "
        "consent (UU PDP Art. 22, GDPR Recital 32).",
    )
    personalization_level = models.CharField(max_length=16, choices=PersonalizationLevel.choices)
    sensitive_category_policy = models.CharField(
        max_length=16, choices=SensitivePolicy.choices, default=SensitivePolicy.EXCLUDE
    )
    cohort_k = models.PositiveIntegerField(
        "cohort size k",
        default=contracts.DEFAULT_COHORT_K,
        help_text="Required by the k-anonymous cohort level: the smallest cohort a recommendation is drawn from "
        "(at least 2; 50 or more is usual).",
    )
    dp_epsilon = models.FloatField(
        "privacy budget ε",
        null=True,
        blank=True,
        help_text="Required by the differentially private levels (popularity, item-item): the privacy budget per "
        "build, a positive number such as 1.0 (smaller is more private). Leave empty for the other levels.",
    )
    retention_days = models.PositiveIntegerField(default=contracts.DEFAULT_RETENTION_DAYS)
    show_explanations = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(cohort_k__gte=2),
                name="treatment_cohort_k_gte_2",
                violation_error_message="A k-anonymous cohort needs at least 2 subjects (k ≥ 2); 50 or more is usual.",
            ),
            models.CheckConstraint(
                condition=Q(dp_epsilon__isnull=True) | Q(dp_epsilon__gt=0),
                name="treatment_dp_epsilon_positive",
                violation_error_message="The privacy budget ε must be a positive number, e.g. 1.0 (smaller is more private).",
            ),
            models.CheckConstraint(
                condition=~Q(personalization_level="dp_popularity") | Q(dp_epsilon__isnull=False),
                name="treatment_dp_needs_epsilon",
                violation_error_message="Differentially private popularity needs a privacy budget per build: enter ε, e.g. 1.0.",
            ),
            models.CheckConstraint(
                condition=~Q(personalization_level="dp_item_item") | Q(dp_epsilon__isnull=False),
                name="treatment_dp_item_item_needs_epsilon",
                violation_error_message="Differentially private item-item needs a privacy budget per build "
                "(dp_epsilon > 0).",
            ),
            models.CheckConstraint(
                condition=Q(retention_days__gte=1),
                name="treatment_retention_positive",
                violation_error_message="Keep data for at least one day.",
            ),
        ]

    # Field → the personalization levels that need it (the admin marks it required when chosen).
    FIELDS_REQUIRED_BY_LEVEL = {
        "dp_epsilon": (PersonalizationLevel.DP_POPULARITY, PersonalizationLevel.DP_ITEM_ITEM),
        "cohort_k": (PersonalizationLevel.COHORT,),
    }

    def __str__(self) -> str:
        return self.name

    def as_contract(self) -> contracts.TreatmentContract:
        """The treatment as the API returns it to the marketplace (``to_dict()`` is the JSON)."""
        return contracts.TreatmentContract(
            name=self.name,
            consent_prompt=contracts.ConsentPrompt(self.consent_prompt),
            default_personalization_consent=self.default_personalization_consent,
            personalization_level=contracts.PersonalizationLevel(self.personalization_level),
            sensitive_category_policy=contracts.SensitivePolicy(self.sensitive_category_policy),
            cohort_k=self.cohort_k,
            dp_epsilon=self.dp_epsilon,
            retention_days=self.retention_days,
            show_explanations=self.show_explanations,
        )



class Surface(models.Model):
    """A place in the marketplace whose privacy treatment the platform decides (docs/surfaces.md).

    Every subject outside an experiment on the surface gets its default treatment;
    with none set, the built-in non-personal fallback (``privacylab_client.surfaces``).
    """

    key = models.SlugField(
        max_length=64, unique=True, help_text="How the marketplace names the surface, e.g. product-recommendations."
    )
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    default_treatment = models.ForeignKey(
        PrivacyTreatment,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="default_for_surfaces",
        help_text="What every subject outside an experiment on this surface gets. Empty: the built-in "
        "non-personal fallback.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class Layer(models.Model):
    """Experiments in one layer own disjoint bucket ranges: a subject is in at most one."""

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    salt = models.CharField(max_length=64, default=new_salt, editable=False)
    description = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.name


def default_layer_id() -> int:
    layer, _ = Layer.objects.get_or_create(
        key="default", defaults={"name": "Default layer", "salt": "default"}
    )
    return layer.pk


class Holdout(ConstraintFieldsMixin, models.Model):
    """The global holdout: a fixed share of subjects kept out of every experiment.

    A single row (id 1). Its salt never changes, and its share may change only
    while no experiment is running, so that nobody moves in or out mid-experiment.
    """

    # Where each constraint's message shows (config.constraints).
    CONSTRAINT_FIELDS = {
        "holdout_share_range": "share",
    }


    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    share = models.FloatField(
        default=0.0, validators=[MinValueValidator(0.0), MaxValueValidator(0.5)]
    )
    salt = models.CharField(max_length=64, default=new_salt, editable=False)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(id=1),
                name="holdout_single_row",
                violation_error_message="There is one global holdout (id 1): change it instead of adding another.",
            ),
            models.CheckConstraint(
                condition=Q(share__gte=0.0) & Q(share__lte=0.5),
                name="holdout_share_range",
                violation_error_message="The holdout share is between 0 and 0.5 (0.05 = 5% of subjects in no experiment).",
            ),
        ]

    def __str__(self) -> str:
        return f"Global holdout ({self.share:.1%})"


class Metric(models.TextChoices):
    CONVERSION = "conversion", "Conversion"
    OPT_OUT = "opt_out", "Opt-out rate"
    CONSENT_RATE = "consent_rate", "Consent rate"
    GMV = "gmv", "GMV per subject"
    ORDERS = "orders", "Orders per subject"
    AOV = "aov", "Average order value"
    CTR = "ctr", "Recommendation CTR"


class DataSource(ConstraintFieldsMixin, models.Model):
    """Where an experiment's outcome data lives when it is not the built-in database (docs/warehouse.md).

    The connection URL (with its credentials) is never stored here: ``url_setting`` names
    an environment variable (or a key of ``settings.PRIVACYLAB_WAREHOUSE_URLS``) that holds it.
    ``mapping`` says where the exposures, events, consent decisions and subject attributes
    are: per table ``{"table": name, "columns": {canonical: source column}}``.
    """

    CONSTRAINT_FIELDS = {
        "datasource_engine_valid": "engine",
        "datasource_url_setting_name": "url_setting",
    }

    class Engine(models.TextChoices):
        DUCKDB = "duckdb", "DuckDB (file, or Parquet files)"
        POSTGRES = "postgres", "PostgreSQL"
        CLICKHOUSE = "clickhouse", "ClickHouse (server)"
        CHDB = "chdb", "ClickHouse (chdb, in process)"

    name = models.SlugField(max_length=64, unique=True)
    engine = models.CharField(max_length=16, choices=Engine.choices, default=Engine.DUCKDB)
    url_setting = models.CharField(
        max_length=128,
        help_text="The environment variable (or PRIVACYLAB_WAREHOUSE_URLS key) holding the connection URL, "
        "e.g. WAREHOUSE_URL; the URL itself is never stored.",
    )
    mapping = models.JSONField(
        default=dict,
        blank=True,
        help_text='Per table (exposures, events, consents, subjects): {"table": name, "columns": '
        '{canonical: source column}}; anything not named keeps its canonical name.',
    )
    query_timeout_seconds = models.PositiveIntegerField(
        default=300,
        help_text="Each query's limit in seconds (PostgreSQL statement_timeout, ClickHouse max_execution_time, "
        "a watchdog for DuckDB and Spark); a query past it is retried, then alerted.",
    )
    max_scanned_rows = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Cost guard: refuse a query the engine estimates would scan more rows than this (DuckDB, "
        "PostgreSQL, ClickHouse MergeTree tables); empty: no limit.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(engine__in=["duckdb", "postgres", "clickhouse", "chdb"]),
                name="datasource_engine_valid",
                violation_error_message="Choose an engine: DuckDB, PostgreSQL, ClickHouse or chdb.",
            ),
            models.CheckConstraint(
                condition=Q(url_setting__regex=r"^[A-Za-z_][A-Za-z0-9_]*$"),
                name="datasource_url_setting_name",
                violation_error_message="Name the environment variable that holds the URL (letters, digits, "
                "underscores, e.g. WAREHOUSE_URL), not the URL itself.",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Experiment(ConstraintFieldsMixin, models.Model):
    # Where each constraint's message shows (config.constraints).
    CONSTRAINT_FIELDS = {
        "experiment_layer_range_valid": "layer_end",
        "experiment_coverage_range": "coverage",
        "experiment_alpha_range": "alpha",
        "experiment_schedule_ordered": "scheduled_end",
        "experiment_gmv_cap_percentile_range": "gmv_cap_percentile",
        "experiment_pre_exposure_days_range": "pre_exposure_days",
        "experiment_decision_rule_valid": "decision_rule",
        "experiment_decision_margin_range": "decision_margin",
        "experiment_decision_margin_required": "decision_margin",
        "experiment_testing_mode_valid": "testing_mode",
        "experiment_minimum_runtime_range": "minimum_runtime_days",
        "experiment_plan_power_range": "plan_power",
        "experiment_planned_subjects_positive": "planned_subjects_per_arm",
        "experiment_analysis_engine_valid": "analysis_engine",
        "experiment_bayesian_fixed_horizon": "analysis_engine",
        "experiment_prior_complete": "prior_variance",
        "experiment_prior_variance_positive": "prior_variance",
        "experiment_prior_bayesian_only": "prior_mean",
        "experiment_suspicious_uplift_positive": "suspicious_uplift",
    }

    class DecisionRule(models.TextChoices):
        SUPERIORITY = decision_vocabulary.Rule.SUPERIORITY.value, "Superiority"
        NONINFERIORITY = decision_vocabulary.Rule.NONINFERIORITY.value, "Do no harm (non-inferiority)"
        PRIVACY_FIRST = decision_vocabulary.Rule.PRIVACY_FIRST.value, "Privacy first"

    class TestingMode(models.TextChoices):
        FIXED = decision_vocabulary.Mode.FIXED.value, "Fixed horizon"
        SEQUENTIAL = decision_vocabulary.Mode.SEQUENTIAL.value, "Sequential (always valid)"

    class AnalysisEngine(models.TextChoices):
        FREQUENTIST = "frequentist", "Frequentist (p-values, confidence intervals)"
        BAYESIAN = "bayesian", "Bayesian (chance to win, risk, credible intervals)"

    class Status(models.TextChoices):
        DRAFT = "draft"
        RUNNING = "running"
        PAUSED = "paused"
        STOPPED = "stopped"
        CONCLUDED = "concluded"

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    hypothesis = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_experiments"
    )
    viewers = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="viewable_experiments"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    layer = models.ForeignKey(
        Layer, on_delete=models.PROTECT, related_name="experiments", default=default_layer_id
    )
    surface = models.ForeignKey(
        Surface,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="experiments",
        help_text="Where in the marketplace the arms' treatments apply; the subjects it assigns get the arm's "
        "treatment there instead of the surface's default.",
    )
    layer_start = models.FloatField(default=0.0)
    layer_end = models.FloatField(default=1.0)
    coverage = models.FloatField(
        default=1.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of the layer range's traffic in the experiment; only grows while running.",
    )
    salt = models.CharField(max_length=64, default=new_salt)
    phase = models.PositiveIntegerField(default=1)
    targeting = models.JSONField(
        default=dict,
        blank=True,
        help_text='Who may be assigned: attribute → allowed values, e.g. {"age_band": ["18-24"], "platform": '
        '["android"]}; attributes age_band, platform, province (experiments.targeting). Empty: everyone.',
    )
    scheduled_start = models.DateTimeField(null=True, blank=True)
    scheduled_end = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    primary_metric = models.CharField(max_length=16, choices=Metric.choices, default=Metric.GMV)
    alpha = models.FloatField(default=0.05)
    planned_subjects_per_arm = models.PositiveIntegerField(null=True, blank=True)
    gmv_cap_percentile = models.FloatField(
        null=True,
        blank=True,
        default=0.99,
        help_text="Each subject's GMV is capped at this percentile of the buyers' GMV, computed in "
        "the database on every analysis; empty: no cap.",
    )
    pre_exposure_days = models.PositiveIntegerField(
        default=28,
        help_text="CUPED covariate: a subject's GMV in this many days before first exposure (0 turns "
        "CUPED off). A subject who ordered in that window is a returning customer.",
    )
    data_source = models.ForeignKey(
        DataSource,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="experiments",
        help_text="Where the outcome data is read; empty: the built-in database.",
    )
    compliance_override_reason = models.TextField(
        blank=True,
        help_text="Why the experiment may start despite compliance errors; a data protection officer "
        "must approve it.",
    )
    compliance_override_approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The data protection officer who approved the override.",
    )
    compliance_override_approved_at = models.DateTimeField(null=True, blank=True)
    compliance_override_approved_findings = models.JSONField(
        default=dict,
        blank=True,
        help_text="Arm → the compliance error codes the approval covers; a new error needs a new approval.",
    )
    # --- the decision (experiments.stats.decide; docs/statistics.md §9) ---
    decision_rule = models.CharField(
        max_length=16,
        choices=DecisionRule.choices,
        default=DecisionRule.SUPERIORITY,
        help_text="Superiority: ship the arm that significantly improves the primary metric. Do no harm: ship an "
        "arm whose primary metric stays within the margin. Privacy first: ship the most private design whose "
        "primary metric stays within the margin. Guardrails must pass under every rule.",
    )
    decision_margin = models.FloatField(
        null=True,
        blank=True,
        help_text="Largest tolerated relative loss of the primary metric, e.g. 0.05 = at most 5% worse than the "
        "control. Required by the do-no-harm and privacy-first rules.",
    )
    privacy_order = models.JSONField(
        default=list,
        blank=True,
        help_text='Arm keys, most private first, e.g. ["dp-popularity", "optin-cohort", "control"]. Empty: the '
        "privacy ladder orders the arms by their treatments (docs/statistics.md §9).",
    )
    testing_mode = models.CharField(
        max_length=16,
        choices=TestingMode.choices,
        default=TestingMode.FIXED,
        help_text="Fixed horizon: the verdict is read once, at the planned sample size. Sequential: always-valid "
        "tests, so the verdict may be final at any run after the minimum runtime.",
    )
    minimum_runtime_days = models.PositiveIntegerField(
        default=7, help_text="No verdict before this many days, in whole weeks (weekday and weekend shoppers differ)."
    )
    planned_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Set by the planner: days to reach the planned subjects (whole weeks)."
    )
    plan_daily_subjects = models.FloatField(
        null=True, blank=True, help_text="Plan: new subjects entering the experiment per day (all arms)."
    )
    plan_baseline = models.FloatField(
        null=True,
        blank=True,
        help_text="Plan: the primary metric's expected value in the control (a rate such as 0.08 for "
        "proportions; IDR for GMV).",
    )
    plan_standard_deviation = models.FloatField(
        null=True, blank=True, help_text="Plan: the primary metric's standard deviation per subject (means only)."
    )
    plan_minimum_effect = models.FloatField(
        null=True,
        blank=True,
        help_text="Plan (superiority): the smallest relative improvement worth detecting, e.g. 0.05 = +5%.",
    )
    plan_power = models.FloatField(
        default=0.8, help_text="Plan: the chance that the whole rule ships an arm that is truly as good as planned."
    )
    # --- the engine (experiments.stats; docs/statistics.md "Bayesian engine") ---
    analysis_engine = models.CharField(
        max_length=16,
        choices=AnalysisEngine.choices,
        default=AnalysisEngine.FREQUENTIST,
        help_text="Frequentist: p-values and confidence intervals. Bayesian: chance to win, risk and credible "
        "intervals (GrowthBook's Gaussian model); fixed-horizon testing only.",
    )
    prior_mean = models.FloatField(
        null=True,
        blank=True,
        help_text="Bayesian engine: the prior mean of the relative effect, e.g. 0 for no expected change. Empty "
        "(with the variance): a flat prior.",
    )
    prior_variance = models.FloatField(
        null=True,
        blank=True,
        help_text="Bayesian engine: the prior variance of the relative effect, above 0, e.g. 0.09 (a 30% standard "
        "deviation). Empty (with the mean): a flat prior.",
    )
    # The health check's bound (experiments.stats.health; docs/statistics.md "Health checks").
    suspicious_uplift = models.FloatField(
        default=0.5,
        help_text="Health check: a relative effect beyond ± this fraction is flagged as suspicious (more often a "
        "broken metric than a real effect), e.g. 0.5 for ±50%.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("run_experiment", "Can start, pause, resume, stop and conclude experiments"),
            ("compute_results", "Can compute an experiment's results now"),
            ("approve_compliance_override", "Can approve a compliance override (data protection officer)"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(compliance_override_approved_by__isnull=True, compliance_override_approved_at__isnull=True)
                | Q(compliance_override_approved_by__isnull=False, compliance_override_approved_at__isnull=False),
                name="experiment_override_approval_complete",
                violation_error_message="An override approval records both who approved it and when.",
            ),
            models.CheckConstraint(
                condition=Q(layer_start__gte=0.0) & Q(layer_end__lte=1.0) & Q(layer_start__lt=F("layer_end")),
                name="experiment_layer_range_valid",
                violation_error_message="The layer range is a part of [0, 1): its start is at least 0, its end at most 1, and the start is below the end.",
            ),
            models.CheckConstraint(
                condition=Q(coverage__gte=0.0) & Q(coverage__lte=1.0),
                name="experiment_coverage_range",
                violation_error_message="Coverage is a share of traffic between 0 and 1 (0.1 = 10%).",
            ),
            models.CheckConstraint(
                condition=Q(alpha__gt=0.0) & Q(alpha__lt=0.5),
                name="experiment_alpha_range",
                violation_error_message="Alpha is the false-positive rate, above 0 and below 0.5, e.g. 0.05.",
            ),
            models.CheckConstraint(
                condition=Q(scheduled_end__isnull=True)
                | Q(scheduled_start__isnull=True)
                | Q(scheduled_end__gt=F("scheduled_start")),
                name="experiment_schedule_ordered",
                violation_error_message="The scheduled end must come after the scheduled start.",
            ),
            models.CheckConstraint(
                condition=Q(gmv_cap_percentile__isnull=True)
                | (Q(gmv_cap_percentile__gte=0.5) & Q(gmv_cap_percentile__lte=1.0)),
                name="experiment_gmv_cap_percentile_range",
                violation_error_message="The GMV cap is a percentile between 0.5 and 1, e.g. 0.99; leave it empty for no cap.",
            ),
            models.CheckConstraint(
                condition=Q(pre_exposure_days__lte=365),
                name="experiment_pre_exposure_days_range",
                violation_error_message="Look back at most 365 days before exposure for the CUPED covariate.",
            ),
            models.CheckConstraint(
                condition=Q(decision_rule__in=[rule.value for rule in decision_vocabulary.Rule]),
                name="experiment_decision_rule_valid",
                violation_error_message="Choose a decision rule: superiority, do no harm or privacy first.",
            ),
            models.CheckConstraint(
                condition=Q(decision_margin__isnull=True) | (Q(decision_margin__gt=0) & Q(decision_margin__lt=1)),
                name="experiment_decision_margin_range",
                violation_error_message="The margin is a relative loss between 0 and 1, e.g. 0.05 for at most 5% worse.",
            ),
            models.CheckConstraint(
                condition=Q(decision_rule=decision_vocabulary.Rule.SUPERIORITY.value) | Q(decision_margin__isnull=False),
                name="experiment_decision_margin_required",
                violation_error_message="The do-no-harm and privacy-first rules need a margin: the largest "
                "tolerated relative loss of the primary metric, e.g. 0.05.",
            ),
            models.CheckConstraint(
                condition=Q(testing_mode__in=["fixed", "sequential"]),
                name="experiment_testing_mode_valid",
                violation_error_message="Choose fixed-horizon or sequential testing.",
            ),
            models.CheckConstraint(
                condition=Q(minimum_runtime_days__gte=7) & Q(minimum_runtime_days__lte=364),
                name="experiment_minimum_runtime_range",
                violation_error_message="The minimum runtime is at least one week (7 days) and at most 52 weeks.",
            ),
            models.CheckConstraint(
                condition=Q(plan_power__gt=0.5) & Q(plan_power__lt=1),
                name="experiment_plan_power_range",
                violation_error_message="The planned power is a probability above 0.5 and below 1, e.g. 0.8.",
            ),
            models.CheckConstraint(
                condition=Q(planned_subjects_per_arm__isnull=True) | Q(planned_subjects_per_arm__gte=1),
                name="experiment_planned_subjects_positive",
                violation_error_message="The planned subjects per arm must be at least 1.",
            ),
            models.CheckConstraint(
                condition=Q(analysis_engine__in=["frequentist", "bayesian"]),
                name="experiment_analysis_engine_valid",
                violation_error_message="Choose the frequentist or the Bayesian engine.",
            ),
            models.CheckConstraint(
                # A posterior read at every look ships by chance more often than its threshold says.
                condition=Q(analysis_engine="frequentist") | Q(testing_mode="fixed"),
                name="experiment_bayesian_fixed_horizon",
                violation_error_message="The Bayesian engine reads the verdict once (fixed horizon); use the "
                "frequentist engine for sequential testing.",
            ),
            models.CheckConstraint(
                condition=Q(prior_mean__isnull=True, prior_variance__isnull=True)
                | Q(prior_mean__isnull=False, prior_variance__isnull=False),
                name="experiment_prior_complete",
                violation_error_message="A prior has both a mean and a variance; leave both empty for a flat prior.",
            ),
            models.CheckConstraint(
                condition=Q(prior_variance__isnull=True) | Q(prior_variance__gt=0),
                name="experiment_prior_variance_positive",
                violation_error_message="The prior variance is above 0, e.g. 0.09 for a standard deviation of 0.3 (30 percent).",
            ),
            models.CheckConstraint(
                condition=Q(prior_mean__isnull=True) | Q(analysis_engine="bayesian"),
                name="experiment_prior_bayesian_only",
                violation_error_message="Only the Bayesian engine takes a prior; choose it or leave the prior empty.",
            ),
            models.CheckConstraint(
                condition=Q(suspicious_uplift__gt=0),
                name="experiment_suspicious_uplift_positive",
                violation_error_message="The suspicious-uplift bound is a fraction above 0, e.g. 0.5 for ±50 percent.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from experiments.targeting import targeting_problems
        from experiments.validation import experiment_decision_problems

        problems = experiment_decision_problems(experiment=self)
        if targeting := targeting_problems(targeting=self.targeting):
            problems["targeting"] = targeting
        if problems:
            raise ValidationError(problems)

    @property
    def is_editable(self) -> bool:
        """Arms, weights and salt can change only before the experiment first runs."""
        return self.status == self.Status.DRAFT


class Arm(ConstraintFieldsMixin, models.Model):
    # Where each constraint's message shows (config.constraints).
    CONSTRAINT_FIELDS = {
        "arm_key_unique_per_experiment": "key",
        "arm_one_control_per_experiment": "is_control",
        "arm_weight_positive": "weight",
    }

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="arms")
    key = models.SlugField(max_length=64)
    treatment = models.ForeignKey(PrivacyTreatment, on_delete=models.PROTECT, related_name="arms")
    weight = models.FloatField(default=1.0)
    is_control = models.BooleanField(default=False)

    class Meta:
        ordering = ["experiment", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "key"],
                name="arm_key_unique_per_experiment",
                violation_error_message="Each arm of an experiment has its own key: this one is taken.",
            ),
            models.UniqueConstraint(
                fields=["experiment"], condition=Q(is_control=True),
                name="arm_one_control_per_experiment",
                violation_error_message="An experiment has exactly one control arm: untick the control on the other arm(s).",
            ),
            models.CheckConstraint(
                condition=Q(weight__gt=0),
                name="arm_weight_positive",
                violation_error_message="An arm's weight is a positive number (its share of traffic relative to the other arms), e.g. 1.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.key}/{self.key}"


class Guardrail(ConstraintFieldsMixin, models.Model):
    """A metric that may not get worse than its non-inferiority margin."""

    # Where each constraint's message shows (config.constraints).
    CONSTRAINT_FIELDS = {
        "guardrail_unique_metric": "metric",
        "guardrail_margin_positive": "margin",
    }


    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="guardrails")
    metric = models.CharField(max_length=16, choices=Metric.choices)
    margin = models.FloatField(
        help_text="Largest tolerated harm, absolute (e.g. 0.005 = 0.5 percentage points for opt-out), or a "
        "fraction of the control's value when relative (0.02 = 2%)."
    )
    relative = models.BooleanField(
        default=False, help_text="The margin is a fraction of the control's value instead of the metric's unit."
    )
    plan_baseline = models.FloatField(
        null=True, blank=True, help_text="Plan: the metric's expected value in the control (e.g. 0.03 opt-out rate)."
    )
    plan_standard_deviation = models.FloatField(
        null=True, blank=True, help_text="Plan: the metric's standard deviation per subject (means only)."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "metric"],
                name="guardrail_unique_metric",
                violation_error_message="This metric already has a guardrail in this experiment: one guardrail per metric.",
            ),
            models.CheckConstraint(
                condition=Q(margin__gt=0),
                name="guardrail_margin_positive",
                violation_error_message="The guardrail's margin is the largest tolerated harm: a positive number, e.g. 0.005.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_metric_display()} ≤ {self.margin:g}{' (relative)' if self.relative else ''}"


class Exposure(models.Model):
    """A subject's first exposure to an experiment; its arm is the record of assignment."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="exposures")
    arm = models.ForeignKey(Arm, on_delete=models.CASCADE, related_name="exposures")
    subject = models.ForeignKey("consent.Subject", on_delete=models.CASCADE, related_name="exposures")
    phase = models.PositiveIntegerField(default=1)
    first_exposed_at = models.DateTimeField()
    # The database's clock when the row was written (see OutcomeEvent.stored_at).
    stored_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "subject"],
                name="exposure_unique_subject",
                violation_error_message="This subject already has an exposure in this experiment.",
            ),
        ]
        indexes = [
            models.Index(fields=["experiment", "arm"], name="exposure_experiment_arm"),
            # The metric facts refresh: exposures new to the window, or recorded late.
            models.Index(fields=["experiment", "first_exposed_at"], name="exposure_experiment_time"),
            models.Index(fields=["stored_at"], name="exposure_stored"),
        ]

    def __str__(self) -> str:
        return f"{self.subject_id[:12]}… in {self.arm}"


# --- outcome events --------------------------------------------------------------


class OutcomeEventIsAppendOnly(RuntimeError):
    """Raised on any attempt to change a recorded outcome event."""


_EVENT_NOT_UPDATED = "Outcome events cannot be updated: record a new event instead."
_LINE_NOT_UPDATED = "Order lines cannot be updated: record a new event instead."


@append_only_queryset(error=OutcomeEventIsAppendOnly, update_refused=_EVENT_NOT_UPDATED)
class OutcomeEventQuerySet(models.QuerySet):
    """Rows are inserted and, by an erasure, the retention purge or a cascade, deleted: never changed."""


@append_only_queryset(error=OutcomeEventIsAppendOnly, update_refused=_LINE_NOT_UPDATED)
class OrderLineQuerySet(models.QuerySet):
    """Like their order's: inserted, deleted with it, never changed."""


@append_only_model(error=OutcomeEventIsAppendOnly, update_refused=_EVENT_NOT_UPDATED)
class OutcomeEvent(models.Model):
    """One outcome the marketplace reports: an order, a recommendation impression or a click.

    Append-only (updates refused in Python and, on PostgreSQL, by a trigger);
    rows leave only through a subject's erasure, the retention purge or the
    cascade from ``consent.Subject``. Written by ``experiments.services.events_record``.

    - ``event_id`` is chosen by the client and unique: replaying a batch records nothing twice.
    - ``subject`` is the subject's pseudonym (``consent.Subject``); the raw id never reaches here.
    - ``occurred_at`` is when it happened at the marketplace, ``received_at`` when we stored it.
    - Orders carry ``amount`` (GMV in IDR, ≥ 0) and their ``OrderLine`` rows; impressions
      and clicks carry ``product_id``, ``category`` and optionally the list ``position``.

    The metric queries read ``(subject, type, occurred_at, amount)``, all held in
    the ``outcome_subject_type_time`` index (a covering index on PostgreSQL),
    so the per-experiment aggregate never touches the table heap.
    """

    class Type(models.TextChoices):
        ORDER = "order", "Order"
        REC_IMPRESSION = "rec_impression", "Recommendation impression"
        REC_CLICK = "rec_click", "Recommendation click"

    event_id = models.CharField(max_length=128, unique=True)
    # No index of its own: the (subject, type, occurred_at, amount) index serves every lookup by subject.
    subject = models.ForeignKey(
        "consent.Subject", on_delete=models.CASCADE, related_name="outcome_events", db_index=False
    )
    type = models.CharField(max_length=16, choices=Type.choices)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()
    # The database's clock when the row was written, whatever the caller said:
    # the metric facts refresh finds late and back-dated events by it.
    stored_at = models.DateTimeField(db_default=Now(), editable=False)
    amount = models.DecimalField(
        max_digits=15, decimal_places=2, null=True, blank=True, help_text="Order value in IDR (orders only)."
    )
    product_id = models.CharField(max_length=64, blank=True, help_text="Impressions and clicks: the item shown.")
    category = models.CharField(max_length=64, blank=True)
    position = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Impressions and clicks: 0-based slot in the recommendation list."
    )

    objects = OutcomeEventQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(type__in=["order", "rec_impression", "rec_click"]),
                name="outcome_event_type_valid",
                violation_error_message="An outcome event is an order, a recommendation impression or a recommendation click.",
            ),
            models.CheckConstraint(
                condition=(Q(type="order") & Q(amount__isnull=False) & Q(amount__gte=0))
                | (~Q(type="order") & Q(amount__isnull=True)),
                name="outcome_event_amount_only_on_orders",
                violation_error_message="An order carries its amount (0 or more); impressions and clicks carry none.",
            ),
            models.CheckConstraint(
                condition=Q(type="order") | ~Q(product_id=""),
                name="outcome_event_rec_has_product",
                violation_error_message="A recommendation impression or click names its product.",
            ),
            models.CheckConstraint(
                condition=~Q(event_id=""),
                name="outcome_event_id_not_empty",
                violation_error_message="An outcome event needs its event id.",
            ),
        ]
        indexes = [
            models.Index(fields=["subject", "type", "occurred_at", "amount"], name="outcome_subject_type_time_amt"),
            models.Index(fields=["occurred_at"], name="outcome_event_time"),  # retention, training windows
            models.Index(fields=["stored_at"], name="outcome_event_stored"),  # metric facts refresh
        ]
        triggers = [pgtrigger.Protect(name="append_only", operation=pgtrigger.Update)]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


@append_only_model(error=OutcomeEventIsAppendOnly, update_refused=_LINE_NOT_UPDATED)
class OrderLine(models.Model):
    """One line of an order: what was bought, in which category, how many, at what unit price.

    ``subject`` and ``occurred_at`` repeat the order's, so the recommender can
    read purchase history (and the retention purge can age it out) from this
    one table. Append-only like its order; deleted with it.
    """

    event = models.ForeignKey(OutcomeEvent, on_delete=models.CASCADE, related_name="lines")
    subject = models.ForeignKey(
        "consent.Subject", on_delete=models.CASCADE, related_name="order_lines", db_index=False
    )  # served by the (subject, occurred_at) index
    occurred_at = models.DateTimeField()
    product_id = models.CharField(max_length=64)
    category = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField()
    price = models.DecimalField(max_digits=15, decimal_places=2, help_text="Unit price in IDR.")

    objects = OrderLineQuerySet.as_manager()

    class Meta:
        ordering = ["event", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(quantity__gte=1),
                name="order_line_quantity_positive",
                violation_error_message="An order line's quantity is at least 1.",
            ),
            models.CheckConstraint(
                condition=Q(price__gte=0),
                name="order_line_price_not_negative",
                violation_error_message="An order line's price cannot be negative.",
            ),
            models.CheckConstraint(
                condition=~Q(product_id=""),
                name="order_line_product_not_empty",
                violation_error_message="An order line names its product.",
            ),
        ]
        indexes = [
            models.Index(fields=["subject", "occurred_at"], name="order_line_subject_time"),
            models.Index(fields=["occurred_at"], name="order_line_time"),
        ]
        triggers = [pgtrigger.Protect(name="append_only", operation=pgtrigger.Update)]

    def __str__(self) -> str:
        return f"{self.quantity} × {self.product_id}"


# --- metric facts ----------------------------------------------------------------


class MetricFacts(models.Model):
    """One exposure's per-subject metric values, as of its experiment's facts cutoff.

    Derived data, kept up to date by ``experiments.metrics.metric_facts_refresh``
    (which rewrites only the exposures whose data changed since the last run),
    so that a results run aggregates a million of these rows instead of joining
    every raw event again. Deleted with the exposure (an erasure reaches it).
    """

    # No foreign-key constraints in the database (the ORM still cascades the deletes): the
    # rows are written only by the refresh, from the exposures they name, and a rebuild
    # writes a million of them; PostgreSQL checks each row's three keys one by one at
    # commit, which cost about as much as computing the facts (docs/benchmarks.md).
    exposure = models.OneToOneField(
        Exposure, primary_key=True, on_delete=models.CASCADE, related_name="facts", db_constraint=False
    )
    # Indexed with the exposure below: an experiment's facts are read in exposure order.
    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    arm = models.ForeignKey(Arm, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False)
    age_band = models.CharField(max_length=16)
    province = models.CharField(max_length=64)
    platform = models.CharField(max_length=16)
    customer = models.CharField(max_length=9)  # new | returning
    orders = models.BigIntegerField()
    gmv = models.FloatField()
    pre_gmv = models.FloatField()
    # Orders in the pre-exposure window: CUPED++'s second covariate (docs/metrics.md).
    pre_orders = models.BigIntegerField(default=0)
    impressions = models.BigIntegerField()
    clicks = models.BigIntegerField()
    opted_out = models.PositiveSmallIntegerField()
    consented = models.PositiveSmallIntegerField()
    # Held a personalization grant at some time after exposure (the descriptive
    # "withdrawals among subjects who granted" divides by it; docs/metrics.md).
    granted = models.PositiveSmallIntegerField(default=0)

    class Meta:
        verbose_name = "metric facts"
        verbose_name_plural = "metric facts"  # not "metric factss" (the delete confirmation lists them)
        constraints = [
            models.CheckConstraint(
                condition=Q(opted_out__in=[0, 1]),
                name="metric_facts_opted_out_flag",
                violation_error_message="The opted-out flag is 0 or 1.",
            ),
            models.CheckConstraint(
                condition=Q(consented__in=[0, 1]),
                name="metric_facts_consented_flag",
                violation_error_message="The consented flag is 0 or 1.",
            ),
            models.CheckConstraint(
                condition=Q(granted__in=[0, 1]) & Q(opted_out__lte=F("granted")),
                name="metric_facts_granted_flag",
                violation_error_message="Granted is a 0/1 flag, and only a subject who held a grant opts out.",
            ),
            models.CheckConstraint(
                condition=Q(customer__in=["new", "returning"]),
                name="metric_facts_customer",
                violation_error_message="A subject is a new or a returning customer.",
            ),
        ]
        indexes = [
            models.Index(fields=["experiment", "exposure"], name="metric_facts_experiment"),
            # The buyers' GMV, for the cap's percentile.
            models.Index(fields=["experiment", "gmv"], condition=Q(gmv__gt=0), name="metric_facts_buyers"),
        ]

    def __str__(self) -> str:
        return f"metric facts of exposure {self.exposure_id}"


class MetricOrderFacts(models.Model):
    """One order an exposure's metrics count (placed after first exposure, before the cutoff): its amount.

    The average order value caps each order, at a percentile of these amounts
    computed when reading (docs/metrics.md, "Capping"); kept in step with the
    exposure's ``MetricFacts`` by the same refresh. Deleted with the exposure.
    """

    # No foreign-key constraints in the database, as ``MetricFacts`` (written only by the refresh).
    exposure = models.ForeignKey(
        Exposure, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    amount = models.FloatField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gte=0),
                name="metric_order_facts_amount_not_negative",
                violation_error_message="An order's amount is not negative.",
            ),
        ]
        indexes = [
            # The experiment's order amounts in order: the percentile, and the few orders above the cap.
            models.Index(fields=["experiment", "amount"], name="metric_order_facts_amount"),
            # A refresh rewrites the orders of the exposures it rewrites.
            models.Index(fields=["exposure"], name="metric_order_facts_exposure"),
        ]

    def __str__(self) -> str:
        return f"an order of exposure {self.exposure_id}"


class MetricFactsState(models.Model):
    """What an experiment's ``MetricFacts`` are exact for, and when they were last refreshed."""

    experiment = models.OneToOneField(
        Experiment, primary_key=True, on_delete=models.CASCADE, related_name="metric_facts_state"
    )
    phase = models.PositiveIntegerField(null=True)
    window_start = models.DateTimeField(null=True)
    cutoff = models.DateTimeField(null=True, help_text="The facts count what happened before this time.")
    pre_exposure_days = models.PositiveIntegerField(null=True)
    refreshed_at = models.DateTimeField(null=True, help_text="Wall-clock time the last refresh began reading.")
    # The personalization notices whose grants counted at the cutoff (consent.selectors.PurposeRule):
    # a refresh rewrites the subjects whose grant's notice left or joined that set.
    counting_notices = models.JSONField(null=True, help_text="Notice ids whose grants counted at the cutoff.")

    def __str__(self) -> str:
        return f"metric facts of experiment {self.experiment_id} as of {self.cutoff}"


# --- results ---------------------------------------------------------------------


class ResultSnapshot(models.Model):
    """One analysis run of an experiment: metrics, effects and decisions over a time window.

    Written by ``experiments.results.compute_results``; one row per run, and a
    run is identified by its window (``window_end`` is the analysis time), so a
    redelivered task rewrites its own row instead of adding one. ``data`` is the
    JSON document described in docs/metrics.md; ``schema_version`` says which
    shape it has (readers must check it: older rows keep their old shape).
    """

    # 2: a typed, versioned decision (experiments.stats.decide.Decision); 3: the order cap
    # (settings.order_cap) and the descriptive ratios (descriptive); 4: the experiment's engine
    # (engine) and, with the Bayesian one, its report (bayesian_report). Older ones still render.
    SCHEMA_VERSION = 5
    READABLE_SCHEMA_VERSIONS = (1, 2, 3, 4, 5)

    class Status(models.TextChoices):
        OK = "ok", "Analysed"
        NO_EXPOSURES = "no_exposures", "No exposures yet"
        ARM_WITHOUT_EXPOSURES = "arm_without_exposures", "An arm has no exposures"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="snapshots")
    schema_version = models.PositiveSmallIntegerField(default=SCHEMA_VERSION)
    status = models.CharField(max_length=24, choices=Status.choices)
    phase = models.PositiveIntegerField()
    window_start = models.DateTimeField(help_text="The experiment's start: the earliest exposure counted.")
    window_end = models.DateTimeField(help_text="The analysis time: nothing at or after it is counted.")
    computed_at = models.DateTimeField()
    compute_seconds = models.FloatField(default=0.0)
    subjects = models.PositiveIntegerField(default=0)
    srm_flag = models.BooleanField(null=True, help_text="Sample-ratio mismatch; empty when untestable.")
    guardrail_breached = models.BooleanField(default=False)
    monitored_at = models.DateTimeField(
        null=True, blank=True, help_text="When the monitor acted on this run (alerts, guardrail pause)."
    )
    data = models.JSONField()

    class Meta:
        ordering = ["experiment", "-window_end"]
        get_latest_by = "window_end"
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "phase", "window_end"],
                name="snapshot_one_per_window",
                violation_error_message="This phase already has a results run for this analysis time.",
            ),
            models.CheckConstraint(
                condition=Q(window_end__gte=F("window_start")),
                name="snapshot_window_ordered",
                violation_error_message="A results run's window ends at or after its start.",
            ),
            models.CheckConstraint(
                condition=Q(schema_version__gte=1),
                name="snapshot_schema_version_positive",
                violation_error_message="A results document's schema version is at least 1.",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["ok", "no_exposures", "arm_without_exposures"]),
                name="snapshot_status_valid",
                violation_error_message="A results run is analysed, has no exposures yet, or has an arm without exposures.",
            ),
        ]
        indexes = [models.Index(fields=["experiment", "-window_end"], name="snapshot_experiment_latest")]

    def __str__(self) -> str:
        return f"{self.experiment.key} results at {self.window_end:%Y-%m-%d %H:%M}"


class ExperimentDecision(models.Model):
    """An experiment phase's final verdict: recorded once, by the run whose tests made it final.

    Later runs still compute and show the numbers, but carry this verdict
    unchanged (``experiments.results``), so a verdict never flips back.
    """

    class Outcome(models.TextChoices):
        SHIP = decision_vocabulary.Outcome.SHIP.value, "Ship an arm"
        KEEP_CONTROL = decision_vocabulary.Outcome.KEEP_CONTROL.value, "Keep the control"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="decisions")
    phase = models.PositiveIntegerField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    arm = models.CharField(max_length=64, blank=True)
    window_end = models.DateTimeField(help_text="The analysis time of the run that made the verdict final.")
    snapshot = models.ForeignKey(
        ResultSnapshot, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    document = models.JSONField(help_text="The decision as that run stored it (docs/metrics.md).")
    decided_at = models.DateTimeField()

    class Meta:
        ordering = ["experiment", "phase"]
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "phase"],
                name="decision_one_per_phase",
                violation_error_message="This phase of the experiment already has its final verdict.",
            ),
            models.CheckConstraint(
                condition=(Q(outcome=decision_vocabulary.Outcome.SHIP.value) & ~Q(arm=""))
                | (Q(outcome=decision_vocabulary.Outcome.KEEP_CONTROL.value) & Q(arm="")),
                name="decision_arm_matches_outcome",
                violation_error_message="A ship verdict names its arm; keeping the control names none.",
            ),
        ]

    def __str__(self) -> str:
        verdict = f"ship {self.arm}" if self.outcome == self.Outcome.SHIP else "keep the control"
        return f"{self.experiment.key} phase {self.phase}: {verdict}"


class ExperimentAlert(models.Model):
    """Something the monitor found: a sample-ratio mismatch or a breached guardrail, and what it did.

    At most one open (unacknowledged) alert per experiment, kind, arm and
    metric, so a monitor that runs every few minutes records a problem once.
    """

    class Kind(models.TextChoices):
        SRM = "srm", "Sample-ratio mismatch"
        GUARDRAIL = "guardrail", "Guardrail breached"
        DATA_SOURCE = "data_source", "Data source unavailable"

    class Action(models.TextChoices):
        NONE = "", "None"
        PAUSED = "paused", "Experiment paused"
        ROLLED_BACK = "rolled_back", "Rollout rolled back"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    arm = models.CharField(max_length=64, blank=True)
    metric = models.CharField(max_length=16, blank=True)
    snapshot = models.ForeignKey(
        ResultSnapshot, on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts"
    )
    message = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    action = models.CharField(max_length=16, choices=Action.choices, blank=True, default="")
    created_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("acknowledge_experimentalert", "Can acknowledge experiment alerts")]
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "kind", "arm", "metric"],
                condition=Q(acknowledged_at__isnull=True),
                name="alert_one_open_per_problem",
                violation_error_message="This problem already has an open alert: acknowledge it first.",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["srm", "guardrail", "data_source"]),
                name="alert_kind_valid",
                violation_error_message="An alert is a sample-ratio mismatch, a breached guardrail or an "
                "unavailable data source.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.experiment.key}"



class Rollout(ConstraintFieldsMixin, models.Model):
    """A shipped arm's treatment ramped up on its surface, step by step, until it becomes the default (docs/surfaces.md)."""

    CONSTRAINT_FIELDS = {
        "rollout_one_ramping_per_surface": "surface",
        "rollout_step_index_nonnegative": "step_index",
        "rollout_hold_positive": "hold_seconds",
        "rollout_final_holdback_range": "final_holdback",
    }

    class Status(models.TextChoices):
        RAMPING = "ramping", "Ramping"
        COMPLETED = "completed", "Completed: the surface's default"
        ROLLED_BACK = "rolled_back", "Rolled back"

    experiment = models.ForeignKey(Experiment, on_delete=models.PROTECT, related_name="rollouts")
    arm = models.ForeignKey("Arm", on_delete=models.PROTECT, related_name="rollouts")
    surface = models.ForeignKey(Surface, on_delete=models.PROTECT, related_name="rollouts")
    treatment = models.ForeignKey(PrivacyTreatment, on_delete=models.PROTECT, related_name="rollouts")
    previous_default = models.ForeignKey(
        PrivacyTreatment, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
        help_text="The surface's default when the rollout started (empty: the built-in fallback).",
    )
    salt = models.CharField(max_length=64, default=new_salt, editable=False)
    steps = models.JSONField(help_text="Percent of the surface's traffic per step, increasing, the last 100.")
    step_index = models.PositiveIntegerField(default=0)
    step_started_at = models.DateTimeField()
    hold_seconds = models.PositiveIntegerField()
    final_holdback = models.PositiveSmallIntegerField(
        default=0,
        help_text="At the 100% step, the percent of the traffic kept on the previous default during the final "
        "hold, so the health check still compares (docs/surfaces.md, \"At 100%\").",
    )
    targeting = models.JSONField(
        default=dict, blank=True, help_text="Who the rollout reaches (as an experiment's targeting); empty: everyone."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RAMPING)
    reason = models.TextField(blank=True, help_text="Why it was shipped (required without a final ship verdict).")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    finish_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["surface"],
                condition=Q(status="ramping"),
                name="rollout_one_ramping_per_surface",
                violation_error_message="This surface already has a rollout ramping: let it finish or roll it back.",
            ),
            models.CheckConstraint(
                condition=Q(step_index__gte=0),
                name="rollout_step_index_nonnegative",
                violation_error_message="The step index cannot be negative.",
            ),
            models.CheckConstraint(
                condition=Q(hold_seconds__gte=1),
                name="rollout_hold_positive",
                violation_error_message="Each step must be held for at least a second.",
            ),
            models.CheckConstraint(
                condition=Q(final_holdback__lt=50),
                name="rollout_final_holdback_range",
                violation_error_message="The final holdback is a percent from 0 to 49 of the traffic.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.key}/{self.arm.key} on {self.surface.key}"

    @property
    def percent(self) -> int:
        """The current step's percent, as the ramp names it (10, 25, 50, 100)."""
        return int(self.steps[min(self.step_index, len(self.steps) - 1)])

    def serving_percent(self, step_index: int | None = None) -> int:
        """The percent of the traffic that gets the shipped treatment at a step (default: the current one).

        A step's own percent, except at 100%: the final holdback stays on the previous default.
        """
        step = int(self.steps[min(self.step_index if step_index is None else step_index, len(self.steps) - 1)])
        return step - self.final_holdback if step == 100 else step


class RolloutExposure(models.Model):
    """A subject first seen on a ramping rollout's surface during one step, and which side of the ramp they were on.

    The rollout's health check compares, per step, the subjects who got the new
    treatment with those who got the previous default (docs/surfaces.md).
    """

    class Group(models.TextChoices):
        ROLLOUT = "rollout", "The shipped treatment"
        DEFAULT = "default", "The previous default"

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="exposures")
    step_index = models.PositiveIntegerField()
    subject = models.ForeignKey("consent.Subject", on_delete=models.CASCADE, related_name="rollout_exposures")
    group = models.CharField(max_length=8, choices=Group.choices)
    first_exposed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["rollout", "step_index", "subject"],
                name="rollout_exposure_unique_subject",
                violation_error_message="This subject is already recorded in this step of the rollout.",
            ),
        ]

    def __str__(self) -> str:
        return f"rollout {self.rollout_id} step {self.step_index}: {self.group}"

# --- API keys --------------------------------------------------------------------


class ApiKeyScopes(models.Model):
    """What one API key may do (``config.permissions``): one flag per scope.

    The keys themselves are djangorestframework-api-key's (stored hashed); a
    key without a row here has the default scopes (never ``consent:read`` or
    ``dsr``), so a key created before scopes existed keeps its serving access
    and nothing more.
    """

    api_key = models.OneToOneField(
        "rest_framework_api_key.APIKey", primary_key=True, on_delete=models.CASCADE, related_name="scopes"
    )
    assign = models.BooleanField(default=True, help_text="POST /api/v1/assignments")
    recommend = models.BooleanField(default=True, help_text="GET /api/v1/recommendations/<subject_id>")
    events = models.BooleanField(default=True, help_text="POST /api/v1/events")
    consent = models.BooleanField(default=True, help_text="POST /api/v1/consents")
    consent_read = models.BooleanField(
        "consent:read", default=False, help_text="GET /api/v1/subjects/<subject_id>/consents: a subject's history."
    )
    dsr = models.BooleanField(
        default=False,
        help_text="/api/v1/subjects/<subject_id>/requests: file, read and cancel data subject requests "
        "(an access request's answer holds everything about the subject).",
    )

    # Scope name (config.permissions.SCOPES) → field.
    FIELDS = {
        "assign": "assign",
        "recommend": "recommend",
        "events": "events",
        "consent": "consent",
        "consent:read": "consent_read",
        "dsr": "dsr",
    }

    class Meta:
        verbose_name = "API key scopes"
        verbose_name_plural = "API key scopes"

    def __str__(self) -> str:
        return ", ".join(sorted(self.scope_names)) or "no scopes"

    @property
    def scope_names(self) -> frozenset[str]:
        return frozenset(scope for scope, name in self.FIELDS.items() if getattr(self, name))

    def set_scopes(self, scopes) -> None:
        for scope, name in self.FIELDS.items():
            setattr(self, name, scope in scopes)
